// Many registrations in flight at once over libcurl's multi interface, for
// the background worker and for backfills, and many lookups (GET /identity)
// for dfend_get_identities. Each job is retried on transient
// failures with the same policy as a blocking call. Every request takes its
// send slot from a RateLimiter (rate.hpp), whose rate adapts to 429s: a 429
// is a congestion signal, not a stop. The request that got it waits at
// least its own Retry-After; the others go on at the adjusted rate.
// max_rate stays a hard cap of its own, per engine.
#pragma once
#include "pure.hpp"

#include "codec.hpp"
#include "error.hpp"
#include "identity_client.hpp"
#include "rate.hpp"

#include <cstdint>
#include <deque>
#include <memory>
#include <optional>
#include <random>
#include <vector>

namespace dfend {

struct EngineSettings {
    int concurrency = 16;        // transfers in flight at most
    double max_rate = 0;         // requests per second, 0 = no cap
    // Retry 429s without counting them against max_retries: a backfill should
    // slow down for a rate limit, never fail because of one.
    bool rate_limits_never_fail = false;
    Millis max_rate_limit_wait{300000}; // longest Retry-After honoured when never failing

    bool operator==(const EngineSettings &o) const
    {
        return concurrency == o.concurrency && max_rate == o.max_rate &&
               rate_limits_never_fail == o.rate_limits_never_fail &&
               max_rate_limit_wait == o.max_rate_limit_wait;
    }
    bool operator!=(const EngineSettings &o) const { return !(*this == o); }
};

// A retry due later than this is not waited for within a batch of the
// worker or a backfill (a Retry-After of a second, say): the caller settles
// it and sends its next rows. Short backoffs (dfend.retry_base_delay is
// 100 ms) are still waited.
constexpr Millis kLongestWaitInBatch{250};

// How run() treats jobs that wait for a retry (see RequestEngine::run).
struct RunOptions {
    std::optional<Clock::time_point> deadline;
    RequestObserver *observer = nullptr;
    // Return once nothing is in flight and every job left waits for a retry
    // that was given a wait longer than this (and is not due yet), with
    // those jobs `deferred`: the caller commits
    // what is done and sends its next rows instead of waiting (no batch
    // barrier). Unset: wait for every retry.
    std::optional<Millis> defer_waits_over;
    // A pipeline across batches: return as soon as every job has been sent
    // once and at most this many are unanswered (in flight, or waiting for
    // a retry). They stay in the engine, and their outcomes come from a
    // later run(); so the caller can store what is done and submit its next
    // rows while the request window stays full. The caller keeps track of
    // them (their tags) and calls drop_unfinished() when no run is coming
    // for them. Unset: every job gets its outcome in this run.
    std::optional<std::size_t> carry_at_most;
    // Take send slots from the limiter. Work someone waits for (a COMMIT's
    // own rows, lookups) is not paced, so a rate learnt in a storm of 429s
    // cannot hold a signup back; its answers still teach the limiter, and
    // the paced background work (worker, backfill) yields to it.
    bool paced = true;
};

// A GET /identity by user id or DFend id.
struct Lookup {
    LookupKey key = LookupKey::UserId;
    std::string value;
};

struct Job {
    std::uint64_t tag = 0;       // the caller's handle for the row
    RegisterRequest request;
    std::optional<Lookup> lookup; // set: look this up instead of registering `request`
    // Register the user without an email, phone or metadata that fails
    // local validation (drop_invalid_fields) instead of failing the job. A
    // bad user id still fails it.
    bool drop_invalid_fields = false;
};

struct JobOutcome {
    std::uint64_t tag = 0;
    std::optional<RegisterResult> result; // set on a registration's success
    // A lookup's success: the Identity as decode_identity_response wrote it
    // again (key redacted in decoded form, valid UTF-8); unset after a 404
    // (not_found) or a failure (error).
    std::optional<std::string> identity;
    bool not_found = false;               // a lookup that DFend answered 404
    std::optional<Error> error;           // set on failure
    bool permanent = false;  // the row's own data is at fault (InvalidArgument)
    int attempts = 0;        // HTTP requests sent for this job
    bool unfinished = false; // cut off by run()'s deadline, not answered
    // Waiting for a retry when run() returned (RunOptions::defer_waits_over):
    // `error` is the last failure, `retry_in` how long the retry would have
    // waited from then (at least the answer's Retry-After).
    bool deferred = false;
    Millis retry_in{0};
    // Fields left out of the request for drop_invalid_fields; with a result,
    // the user was registered without them.
    std::vector<DroppedField> dropped;
};

struct EngineStats {
    std::uint64_t requests = 0;
    std::uint64_t retries = 0;
    std::uint64_t rate_limited = 0;  // 429 answers seen
    int max_in_flight = 0;
};

class RequestEngine {
  public:
    // `limiter`: where send slots come from, shared with other engines
    // (it must outlive this engine); null: a LocalRateLimiter of its own.
    RequestEngine(ClientSettings client, EngineSettings engine, RateLimiter *limiter = nullptr);
    ~RequestEngine();
    RequestEngine(const RequestEngine &) = delete;
    RequestEngine &operator=(const RequestEngine &) = delete;

    // Validates and encodes the request now. A job that fails validation gets
    // a permanent outcome at once and sends nothing; with drop_invalid_fields,
    // only a bad user id fails it, and bad optional fields are left out.
    void submit(Job job);
    // Runs until every submitted job has an outcome and returns them in the
    // order they finished. Throws Error(Cancelled) when `should_abort` says so,
    // after aborting every transfer in flight. At `deadline`, if given, every
    // job without an outcome gets a Timeout error (`unfinished` set) and its
    // transfer is aborted: a time budget, not a failure of the row.
    // `observer`, if given, hears of every request of this run (cut off or
    // aborted transfers count as Cancelled), every retry, and every job
    // that failed for good after a request.
    std::vector<JobOutcome> run(AbortCheck should_abort,
                                std::optional<Clock::time_point> deadline = std::nullopt,
                                RequestObserver *observer = nullptr);
    std::vector<JobOutcome> run(AbortCheck should_abort, const RunOptions &options);

    const EngineStats &stats() const noexcept { return stats_; }
    // Jobs without an outcome between runs (see RunOptions::carry_at_most).
    std::size_t unfinished() const noexcept;
    // Forgets them: their transfers are aborted, their outcomes never come.
    void drop_unfinished() noexcept { abandon(); }

  private:
    struct Pending;
    struct Slot;

    std::vector<JobOutcome> run_all(AbortCheck should_abort, const RunOptions &options);
    void cut_off(std::vector<JobOutcome> &done); // the deadline passed
    bool only_distant_retries_left(Clock::time_point now, Millis over) const;
    bool may_carry(const RunOptions &options) const; // see RunOptions::carry_at_most
    void enqueue(Pending pending); // into queue_, which stays ordered by ready time
    void defer_waiting(std::vector<JobOutcome> &done, Clock::time_point now);
    void abandon() noexcept; // drops every job and transfer
    void start(Pending pending, Clock::time_point now);
    void finish(Slot &slot, CURLcode code, Clock::time_point now,
                std::vector<JobOutcome> &done);
    // Takes a send slot from the limiter and a max_rate token (the hard
    // cap): true when the next request may go now.
    bool may_send(Clock::time_point now, bool paced);

    ClientSettings client_;
    EngineSettings engine_;
    TransferOptions transfer_options_;
    std::string url_;
    CURLM *multi_ = nullptr;
    std::vector<std::unique_ptr<Slot>> slots_;  // one easy handle each, reused
    std::deque<Pending> queue_;                 // waiting to start, by ready time
    std::size_t never_sent_ = 0;                // jobs in queue_ not sent yet
    std::vector<JobOutcome> early_;             // outcomes decided at submit
    int in_flight_ = 0;
    std::unique_ptr<LocalRateLimiter> own_limiter_;
    RateLimiter *limiter_ = nullptr;
    // One send slot reserved ahead at most: engines sharing a limiter then
    // take turns instead of one of them booking the next second.
    std::optional<Clock::time_point> reserved_slot_;
    double tokens_ = 1;
    Clock::time_point tokens_at_{};
    std::mt19937_64 rng_;
    EngineStats stats_;
};

} // namespace dfend
