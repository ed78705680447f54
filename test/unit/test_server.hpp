// An in-process HTTP server on 127.0.0.1 for the HTTP and client tests.
// Every request to /identity is recorded (method, path, body, headers, client
// port) before the test's handler runs, so tests can count attempts and
// inspect what was sent. Handlers that must outlast a timeout call
// wait_released(), which returns as soon as the test ends, so TearDown never
// waits for a sleeper.
//
// cpp-httplib 0.11.4 reads a request body only for POST/PUT/PATCH/DELETE, but
// DFend's GET /identity carries a JSON body. So FramingServer reads each
// request (head + Content-Length body) from the socket itself, hands it to
// cpp-httplib's process_request() through an in-memory stream, and gives the
// body of a GET to the handler as req.body. Responses are written straight to
// the socket, so streamed and broken responses reach the client as written.
// (test/emulator/emulator.cpp does the same, with TLS and fault injection.)
#pragma once

#include <httplib.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <condition_variable>
#include <functional>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace dfend_test {

struct Recorded {
    std::string method;
    std::string path;
    std::string body;
    httplib::Headers headers;
    int remote_port = -1;

    std::string header(const std::string &name) const
    {
        auto it = headers.find(name); // httplib compares names case-insensitively
        return it == headers.end() ? std::string() : it->second;
    }
    bool has_header(const std::string &name) const { return headers.count(name) > 0; }
};

class FramingServer : public httplib::Server {
  private:
    // One framed request in, responses straight out to the socket.
    class Stream : public httplib::Stream {
      public:
        Stream(int fd, std::string input) : fd_(fd), in_(std::move(input)) {}
        using httplib::Stream::write;
        bool is_readable() const override { return pos_ < in_.size(); }
        bool is_writable() const override { return true; }
        ssize_t read(char *ptr, size_t size) override
        {
            size_t n = std::min(size, in_.size() - pos_);
            std::memcpy(ptr, in_.data() + pos_, n);
            pos_ += n;
            return static_cast<ssize_t>(n);
        }
        ssize_t write(const char *ptr, size_t size) override
        {
            size_t sent = 0;
            while (sent < size) {
                ssize_t n = ::send(fd_, ptr + sent, size - sent, MSG_NOSIGNAL);
                if (n <= 0)
                    return -1;
                sent += static_cast<size_t>(n);
            }
            return static_cast<ssize_t>(size);
        }
        void get_remote_ip_and_port(std::string &ip, int &port) const override
        {
            address(false, ip, port);
        }
        void get_local_ip_and_port(std::string &ip, int &port) const override
        {
            address(true, ip, port);
        }
        socket_t socket() const override { return fd_; }

      private:
        void address(bool local, std::string &ip, int &port) const
        {
            sockaddr_in a{};
            socklen_t length = sizeof a;
            int r = local ? ::getsockname(fd_, reinterpret_cast<sockaddr *>(&a), &length)
                          : ::getpeername(fd_, reinterpret_cast<sockaddr *>(&a), &length);
            if (r != 0)
                return;
            char text[INET_ADDRSTRLEN] = {0};
            ::inet_ntop(AF_INET, &a.sin_addr, text, sizeof text);
            ip = text;
            port = ntohs(a.sin_port);
        }
        int fd_;
        std::string in_;
        size_t pos_ = 0;
    };

    // Appends bytes from the socket; false on EOF, error, idle timeout or stop.
    bool fill(int fd, std::string &buffer, bool idle)
    {
        const auto start = std::chrono::steady_clock::now();
        while (svr_sock_ != INVALID_SOCKET) {
            pollfd p{fd, POLLIN, 0};
            int ready = ::poll(&p, 1, 20);
            if (ready < 0)
                return false;
            if (ready > 0) {
                char chunk[65536];
                ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
                if (n <= 0)
                    return false;
                buffer.append(chunk, static_cast<size_t>(n));
                return true;
            }
            auto waited = std::chrono::steady_clock::now() - start;
            if (waited > std::chrono::seconds(idle ? keep_alive_timeout_sec_ : 5))
                return false;
        }
        return false;
    }

    // Cuts one request (head and Content-Length body) off the front of `buffer`.
    bool read_request(int fd, std::string &buffer, std::string &request, std::string &body)
    {
        std::size_t head_end;
        while ((head_end = buffer.find("\r\n\r\n")) == std::string::npos)
            if (buffer.size() > 65536 || !fill(fd, buffer, buffer.empty()))
                return false;
        head_end += 4;
        std::size_t length = 0;
        std::string head = buffer.substr(0, head_end);
        std::string lower = head;
        for (char &c : lower)
            c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        std::size_t at = lower.find("\r\ncontent-length:");
        if (at != std::string::npos)
            length = std::strtoul(head.c_str() + at + 17, nullptr, 10);
        while (buffer.size() < head_end + length)
            if (!fill(fd, buffer, false))
                return false;
        request = buffer.substr(0, head_end + length);
        body = buffer.substr(head_end, length);
        buffer.erase(0, head_end + length);
        return true;
    }

    bool process_and_close_socket(socket_t sock) override
    {
        std::string buffer, request, body;
        for (std::size_t count = keep_alive_max_count_; count > 0; --count) {
            if (!read_request(sock, buffer, request, body))
                break;
            Stream stream(sock, request);
            bool closed = false;
            bool ok = process_request(stream, count == 1, closed, [&body](httplib::Request &req) {
                if (req.method == "GET" || req.method == "HEAD" || req.method == "OPTIONS")
                    req.body = body;
            });
            if (!ok || closed)
                break;
        }
        ::shutdown(sock, SHUT_RDWR);
        ::close(sock);
        return true;
    }
};

class TestServer {
  public:
    using Handler = std::function<void(const httplib::Request &, httplib::Response &)>;

    TestServer()
    {
        server_.set_keep_alive_timeout(5);
        server_.set_keep_alive_max_count(100);
    }

    ~TestServer() { stop(); }

    httplib::Server &server() { return server_; }

    // Routes both methods the client uses to one handler, recording each
    // request first.
    void on_identity(Handler handler)
    {
        auto recording = [this, handler](const httplib::Request &req, httplib::Response &res) {
            {
                std::lock_guard<std::mutex> lock(mutex_);
                requests_.push_back(
                    Recorded{req.method, req.path, req.body, req.headers, req.remote_port});
            }
            handler(req, res);
        };
        server_.Post("/identity", recording);
        server_.Get("/identity", recording);
    }

    void start()
    {
        port_ = server_.bind_to_any_port("127.0.0.1");
        if (port_ <= 0)
            throw std::runtime_error("could not bind the test server");
        thread_ = std::thread([this] { server_.listen_after_bind(); });
        for (int i = 0; i < 500 && !server_.is_running(); ++i)
            std::this_thread::sleep_for(std::chrono::milliseconds(2));
    }

    void stop()
    {
        release();
        if (thread_.joinable()) {
            server_.stop();
            thread_.join();
        }
    }

    // Lets every handler blocked in wait_released() return.
    void release()
    {
        std::lock_guard<std::mutex> lock(mutex_);
        released_ = true;
        cv_.notify_all();
    }

    // Blocks a handler for up to `limit`, or until the test releases it.
    void wait_released(std::chrono::milliseconds limit)
    {
        std::unique_lock<std::mutex> lock(mutex_);
        cv_.wait_for(lock, limit, [this] { return released_; });
    }

    int port() const { return port_; }
    std::string base_url() const { return "http://127.0.0.1:" + std::to_string(port_); }

    std::vector<Recorded> requests()
    {
        std::lock_guard<std::mutex> lock(mutex_);
        return requests_;
    }
    std::size_t request_count()
    {
        std::lock_guard<std::mutex> lock(mutex_);
        return requests_.size();
    }

  private:
    FramingServer server_;
    std::thread thread_;
    int port_ = -1;
    std::mutex mutex_;
    std::condition_variable cv_;
    bool released_ = false;
    std::vector<Recorded> requests_;
};

// A port on 127.0.0.1 that nothing listens on (bound, then closed).
inline int closed_port()
{
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    address.sin_port = 0;
    socklen_t length = sizeof address;
    if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof address) != 0 ||
        ::getsockname(fd, reinterpret_cast<sockaddr *>(&address), &length) != 0)
        throw std::runtime_error("could not find a free port");
    ::close(fd);
    return ntohs(address.sin_port);
}

} // namespace dfend_test
