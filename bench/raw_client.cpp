// The emulator's ceiling for sequential calls, measured outside PostgreSQL:
// POST /identity N times with one reused libcurl handle (keep-alive) or with
// a new connection per call. Prints "calls_per_s p50_us p99_us".
#include <curl/curl.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

static size_t discard(char *, size_t size, size_t count, void *) { return size * count; }

int main(int argc, char **argv)
{
    if (argc != 6) {
        std::fprintf(stderr, "usage: raw_client URL KEY N keepalive|fresh USER_PREFIX\n");
        return 2;
    }
    const std::string url = std::string(argv[1]) + "/identity";
    const std::string key_header = std::string("x-api-key: ") + argv[2];
    const int n = std::atoi(argv[3]);
    const bool fresh = std::string(argv[4]) == "fresh";
    const std::string prefix = argv[5];

    curl_global_init(CURL_GLOBAL_DEFAULT);
    CURL *easy = curl_easy_init();
    curl_slist *headers = nullptr;
    headers = curl_slist_append(headers, key_header.c_str());
    headers = curl_slist_append(headers, "Content-Type: application/json");
    headers = curl_slist_append(headers, "Accept: application/json");
    headers = curl_slist_append(headers, "Expect:");
    std::vector<double> micros;
    micros.reserve(n);
    auto started = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
        std::string body = "{\"userId\":\"" + prefix + std::to_string(i) + "\",\"merge\":false}";
        auto t0 = std::chrono::steady_clock::now();
        curl_easy_setopt(easy, CURLOPT_URL, url.c_str());
        curl_easy_setopt(easy, CURLOPT_HTTPHEADER, headers);
        curl_easy_setopt(easy, CURLOPT_POSTFIELDS, body.c_str());
        curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, discard);
        curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
        curl_easy_setopt(easy, CURLOPT_FRESH_CONNECT, fresh ? 1L : 0L);
        curl_easy_setopt(easy, CURLOPT_FORBID_REUSE, fresh ? 1L : 0L);
        CURLcode code = curl_easy_perform(easy);
        long status = 0;
        curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
        if (code != CURLE_OK || status != 200) {
            std::fprintf(stderr, "request %d failed: %s, HTTP %ld\n", i, curl_easy_strerror(code), status);
            return 1;
        }
        micros.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
    }
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    std::sort(micros.begin(), micros.end());
    std::printf("%.0f %.0f %.0f\n", n / seconds, micros[n / 2], micros[(n * 99) / 100]);
    curl_slist_free_all(headers);
    curl_easy_cleanup(easy);
    return 0;
}
