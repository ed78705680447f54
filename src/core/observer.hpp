// What the caller may want to count about each HTTP request, without the
// core knowing where the counts go (the PostgreSQL layer writes them to
// shared memory: src/pg/stats.cpp). Every method is noexcept and is called
// from C++ frames, inside libcurl's loop: an implementation must not throw,
// block for long, or call anything that may longjmp.
#pragma once
#include "pure.hpp"

#include "error.hpp"

#include <chrono>
#include <cstddef>

namespace dfend {

class RequestObserver {
  public:
    // A request got an HTTP answer (any status). `latency` runs from the
    // start of the transfer to the end of the body; the byte counts are the
    // request and response bodies.
    virtual void on_response(long status, std::chrono::microseconds latency,
                             std::size_t bytes_sent, std::size_t bytes_received) noexcept = 0;
    // A request got no (complete) answer: ConnectFailed, TlsVerification,
    // ConnectionLost, BadResponse (a body too large), Configuration, Timeout,
    // or Cancelled (the caller, or a time budget, stopped it).
    virtual void on_transport_error(ErrorKind kind) noexcept = 0;
    // A failed request is about to be sent again.
    virtual void on_retry() noexcept = 0;
    // A call (or engine job) failed for good after at least one request,
    // retries included: the Error its caller gets, already redacted.
    virtual void on_failure(const Error &error) noexcept = 0;

  protected:
    ~RequestObserver() = default;
};

} // namespace dfend
