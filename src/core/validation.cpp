#include "validation.hpp"

#include "error.hpp"

#include <curl/curl.h>

#include <cstring>
#include <memory>

namespace dfend {

namespace {

Error invalid(std::string message, std::string detail = {}, std::string hint = {})
{
    return Error(ErrorKind::InvalidArgument, std::move(message), std::move(detail),
                 std::move(hint));
}

bool is_ascii_alnum(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool is_atext(char c)
{
    // c != 0: strchr would find the terminator.
    return is_ascii_alnum(c) || (c != '\0' && std::strchr("!#$%&'*+-/=?^_`{|}~", c) != nullptr);
}

bool valid_local_part(std::string_view local)
{
    if (local.empty() || local.size() > kMaxEmailLocalBytes)
        return false;
    if (local.front() == '.' || local.back() == '.')
        return false;
    char prev = 0;
    for (char c : local) {
        if (c == '.') {
            if (prev == '.')
                return false;
        } else if (!is_atext(c)) {
            return false;
        }
        prev = c;
    }
    return true;
}

bool valid_domain(std::string_view domain)
{
    if (domain.empty() || domain.size() > 253)
        return false;
    std::size_t labels = 0;
    std::string_view last;
    while (true) {
        std::size_t dot = domain.find('.');
        std::string_view label = domain.substr(0, dot);
        if (label.empty() || label.size() > 63 || label.front() == '-' ||
            label.back() == '-')
            return false;
        for (char c : label)
            if (!is_ascii_alnum(c) && c != '-')
                return false;
        ++labels;
        last = label;
        if (dot == std::string_view::npos)
            break;
        domain.remove_prefix(dot + 1);
    }
    if (labels < 2 || last.size() < 2)
        return false;
    for (char c : last)
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')))
            return false;
    return true;
}

bool is_loopback_host(std::string_view host)
{
    if (host == "localhost" || host == "[::1]" || host == "::1")
        return true;
    // 127.0.0.0/8 in dotted form (libcurl has normalised the address).
    if (host.substr(0, 4) != "127.")
        return false;
    int dots = 0;
    for (char c : host) {
        if (c == '.')
            ++dots;
        else if (c < '0' || c > '9')
            return false;
    }
    return dots == 3;
}

} // namespace

void validate_user_id(std::string_view user_id)
{
    if (user_id.empty())
        throw invalid("user_id must not be empty");
    if (user_id.size() > kMaxUserIdBytes)
        throw invalid("user_id is too long",
                      "The value is " + std::to_string(user_id.size()) +
                          " bytes; the limit is " + std::to_string(kMaxUserIdBytes) +
                          " bytes.");
}

void validate_email(std::string_view email)
{
    const char *rule =
        "An email address is local@domain with one \"@\", a local part of up to 64 "
        "letters, digits, dots and !#$%&'*+-/=?^_`{|}~, and a domain of two or more "
        "dot-separated labels ending in a word of letters.";
    if (email.size() > kMaxEmailBytes)
        throw invalid("email address is too long",
                      "The value is " + std::to_string(email.size()) +
                          " bytes; the limit is " + std::to_string(kMaxEmailBytes) +
                          " bytes.");
    std::size_t at = email.find('@');
    if (at == std::string_view::npos || email.find('@', at + 1) != std::string_view::npos ||
        !valid_local_part(email.substr(0, at)) || !valid_domain(email.substr(at + 1)))
        throw invalid("invalid email address", rule);
}

void validate_phone(std::string_view phone)
{
    bool ok = phone.size() >= 3 && phone.size() <= 16 && phone[0] == '+' &&
              phone[1] >= '1' && phone[1] <= '9';
    for (std::size_t i = 1; ok && i < phone.size(); ++i)
        ok = phone[i] >= '0' && phone[i] <= '9';
    if (!ok)
        throw invalid("invalid phone number",
                      "A phone number must be in E.164 format: \"+\" followed by 2 to 15 "
                      "digits, the first of them 1 to 9.",
                      "Remove spaces, dashes and parentheses, for example \"+14155550123\".");
}

void validate_identity_id(std::string_view id)
{
    if (id.empty())
        throw invalid("id must not be empty");
    if (id.size() > kMaxUserIdBytes)
        throw invalid("id is too long");
}

std::optional<std::string> api_key_problem(std::string_view key) noexcept
{
    try {
        if (key.size() > 4096)
            return std::string("The key is longer than 4096 bytes.");
        for (unsigned char c : key)
            if (c < 0x21 || c > 0x7e)
                return std::string("The key may contain only printable ASCII characters "
                                   "without spaces.");
        return std::nullopt;
    } catch (...) {
        // noexcept: this runs in GUC check hooks, even in the postmaster.
        return std::nullopt;
    }
}

std::optional<std::string> api_url_problem(std::string_view url) noexcept
{
    try {
        std::unique_ptr<CURLU, decltype(&curl_url_cleanup)> handle(curl_url(),
                                                                   curl_url_cleanup);
        if (!handle)
            return std::string("Out of memory.");
        std::string copy(url);
        if (curl_url_set(handle.get(), CURLUPART_URL, copy.c_str(), 0) != CURLUE_OK)
            return std::string("The value is not a valid absolute URL.");
        auto part = [&](CURLUPart which) -> std::optional<std::string> {
            char *value = nullptr;
            if (curl_url_get(handle.get(), which, &value, 0) != CURLUE_OK || !value)
                return std::nullopt;
            std::string out(value);
            curl_free(value);
            return out;
        };
        std::string scheme = part(CURLUPART_SCHEME).value_or("");
        if (scheme != "http" && scheme != "https")
            return std::string("Only http and https URLs are accepted.");
        if (part(CURLUPART_USER) || part(CURLUPART_PASSWORD))
            return std::string("The URL must not contain credentials.");
        if (part(CURLUPART_QUERY) || part(CURLUPART_FRAGMENT))
            return std::string("The URL must not contain a query or fragment.");
        std::string host = part(CURLUPART_HOST).value_or("");
        if (scheme == "http" && !is_loopback_host(host))
            return std::string("Plain http is accepted only for a loopback host "
                               "(localhost, 127.0.0.0/8 or [::1]); use https.");
        return std::nullopt;
    } catch (...) {
        return std::string("The URL could not be checked.");
    }
}

} // namespace dfend
