#include "engine.hpp"

#include <algorithm>

namespace dfend {

struct RequestEngine::Pending {
    std::uint64_t tag;
    std::string body;
    bool lookup = false;       // GET /identity instead of POST
    int attempts = 0;          // sent so far
    int counted_retries = 0;   // retries that count against max_retries
    Clock::time_point ready_at{};
    Millis wait{0};            // how long the retry had to wait when it was decided
    Clock::time_point sent_at{};  // the last request's start, for the limiter
    std::optional<Error> last_error; // while waiting for a retry
    std::vector<DroppedField> dropped;
};

struct RequestEngine::Slot {
    CURL *easy = nullptr;
    std::unique_ptr<Transfer> transfer;
    Pending pending;
    bool busy = false;
    ~Slot() { curl_easy_cleanup(easy); }
};

RequestEngine::RequestEngine(ClientSettings client, EngineSettings engine, RateLimiter *limiter)
    : client_(std::move(client)), engine_(engine), limiter_(limiter), rng_(std::random_device{}())
{
    if (!limiter_) {
        own_limiter_ = std::make_unique<LocalRateLimiter>();
        limiter_ = own_limiter_.get();
    }
    check_settings(client_);
    ensure_curl_initialized();
    engine_.concurrency = std::clamp(engine_.concurrency, 1, 1024);
    transfer_options_.api_key = client_.api_key;
    transfer_options_.ca_file = client_.ca_file;
    transfer_options_.connect_timeout_ms = client_.connect_timeout_ms;
    transfer_options_.timeout_ms = client_.request_timeout_ms;
    url_ = identity_url(client_.api_url);
    multi_ = curl_multi_init();
    if (!multi_)
        throw Error(ErrorKind::Internal, "could not create a libcurl multi handle");
    // Keep one connection per slot alive between requests.
    curl_multi_setopt(multi_, CURLMOPT_MAXCONNECTS, static_cast<long>(engine_.concurrency));
    tokens_at_ = Clock::now();
}

RequestEngine::~RequestEngine()
{
    for (auto &slot : slots_)
        if (slot->busy)
            curl_multi_remove_handle(multi_, slot->easy);
    slots_.clear();
    curl_multi_cleanup(multi_);
}

void RequestEngine::submit(Job job)
{
    Pending pending;
    pending.tag = job.tag;
    pending.lookup = job.lookup.has_value();
    try {
        if (!job.lookup && job.drop_invalid_fields)
            pending.dropped = drop_invalid_fields(job.request);
        pending.body = job.lookup ? encode_lookup(job.lookup->key, job.lookup->value)
                                  : encode_register(job.request);
    } catch (Error &error) {
        // Only the user id (or, without drop_invalid_fields, any field).
        JobOutcome outcome;
        outcome.tag = job.tag;
        outcome.error = std::move(error);
        outcome.permanent = true;
        early_.push_back(std::move(outcome));
        return;
    }
    // Ahead of the retries that wait for later (carried from an earlier
    // run): the queue stays ordered by ready time, so those do not hold
    // the new jobs back.
    pending.ready_at = Clock::now();
    enqueue(std::move(pending));
    ++never_sent_;
}

bool RequestEngine::may_send(Clock::time_point now, bool paced)
{
    // max_rate first: it only looks, so a slot is never taken and then
    // left unused because of the cap.
    if (engine_.max_rate > 0) {
        double elapsed = std::chrono::duration<double>(now - tokens_at_).count();
        tokens_at_ = now;
        // A burst of at most a tenth of a second's worth keeps the rate smooth.
        double burst = std::max(1.0, engine_.max_rate / 10);
        tokens_ = std::min(burst, tokens_ + elapsed * engine_.max_rate);
        if (tokens_ < 1)
            return false;
    }
    if (paced) {
        if (!reserved_slot_)
            reserved_slot_ = limiter_->reserve(now);
        if (*reserved_slot_ > now)
            return false;
        reserved_slot_.reset();
    }
    if (engine_.max_rate > 0)
        tokens_ -= 1;
    return true;
}

void RequestEngine::start(Pending pending, Clock::time_point now)
{
    Slot *slot = nullptr;
    for (auto &candidate : slots_)
        if (!candidate->busy) {
            slot = candidate.get();
            break;
        }
    if (!slot) {
        auto created = std::make_unique<Slot>();
        created->easy = curl_easy_init();
        if (!created->easy)
            throw Error(ErrorKind::Internal, "could not create a libcurl handle");
        slot = created.get();
        slots_.push_back(std::move(created));
    }
    HttpRequest request;
    request.method = pending.lookup ? HttpRequest::Method::Get : HttpRequest::Method::Post;
    request.url = url_;
    request.body = pending.body;
    slot->transfer = std::make_unique<Transfer>(std::move(request), transfer_options_, nullptr);
    slot->transfer->attach(slot->easy);
    curl_easy_setopt(slot->easy, CURLOPT_PRIVATE, slot);
    slot->pending = std::move(pending);
    if (slot->pending.attempts == 0)
        --never_sent_;
    slot->pending.attempts++;
    slot->pending.sent_at = now;
    if (curl_multi_add_handle(multi_, slot->easy) != CURLM_OK)
        throw Error(ErrorKind::Internal, "could not start a transfer");
    slot->busy = true;
    ++in_flight_;
    ++stats_.requests;
    stats_.max_in_flight = std::max(stats_.max_in_flight, in_flight_);
}

void RequestEngine::finish(Slot &slot, CURLcode code, Clock::time_point now,
                           std::vector<JobOutcome> &done)
{
    curl_multi_remove_handle(multi_, slot.easy);
    slot.busy = false;
    --in_flight_;
    Pending pending = std::move(slot.pending);

    std::optional<Error> failure;
    JobOutcome outcome;
    try {
        HttpResponse response = slot.transfer->finish(slot.easy, code);
        // A lookup's 404 is an answer (no identity), as for the blocking call.
        failure = classify_response(response, pending.lookup, client_.api_key);
        if (!failure && pending.lookup && response.status == 404)
            outcome.not_found = true;
        else if (!failure && pending.lookup)
            outcome.identity = decode_identity_response(response.body, client_.api_key);
        else if (!failure)
            outcome.result = decode_register_response(response.body, client_.api_key);
    } catch (Error &error) {
        failure = std::move(error);
    }
    slot.transfer.reset();
    limiter_->on_answer(pending.sent_at, now,
                        !failure ? RateSignal::Accepted
                        : failure->kind() == ErrorKind::RateLimited ? RateSignal::Throttled
                                                                    : RateSignal::Neutral);

    if (!failure) {
        outcome.tag = pending.tag;
        outcome.attempts = pending.attempts;
        outcome.dropped = std::move(pending.dropped);
        done.push_back(std::move(outcome));
        return;
    }
    failure->redact(client_.api_key);
    const bool rate_limited = failure->kind() == ErrorKind::RateLimited;
    if (rate_limited)
        ++stats_.rate_limited;
    const long retry_after = failure->retry_after_seconds();
    bool retry = is_transient(failure->kind());
    bool counts = !(rate_limited && engine_.rate_limits_never_fail);
    if (retry && counts && pending.counted_retries >= client_.retry.max_retries)
        retry = false;
    if (retry && counts && retry_after_exceeds_policy(client_.retry, retry_after)) {
        failure->append_detail("DFend asked to retry after " + std::to_string(retry_after) +
                               " s, longer than dfend.retry_max_delay allows.");
        retry = false;
    }
    if (retry) {
        Millis delay = backoff_delay(client_.retry, pending.counted_retries, retry_after, rng_);
        if (rate_limited)
            delay = std::min(delay, engine_.max_rate_limit_wait);
        if (counts)
            pending.counted_retries++;
        // Only this request waits (at least its Retry-After); the limiter has
        // heard the 429 and slows every request down a little instead.
        pending.ready_at = now + delay;
        pending.wait = delay;
        pending.last_error = std::move(failure);
        ++stats_.retries;
        if (transfer_options_.observer)
            transfer_options_.observer->on_retry();
        enqueue(std::move(pending));
        return;
    }
    if (pending.attempts > 1)
        failure->append_detail("Gave up after " + std::to_string(pending.attempts) +
                               " attempts.");
    if (is_transient(failure->kind()))
        failure->set_retry_wait_ms(
            suggested_wait(client_.retry, pending.counted_retries, retry_after).count());
    outcome = JobOutcome{};
    outcome.tag = pending.tag;
    // Only the row's own data can make a request hopeless; a rejected key, a
    // TLS failure or a broken reply are the same for every row and may be
    // fixed later, so they never dead-letter anything.
    outcome.permanent = failure->kind() == ErrorKind::InvalidArgument;
    if (transfer_options_.observer)
        transfer_options_.observer->on_failure(*failure);
    outcome.error = std::move(failure);
    outcome.attempts = pending.attempts;
    outcome.dropped = std::move(pending.dropped);
    done.push_back(std::move(outcome));
}

void RequestEngine::abandon() noexcept
{
    for (auto &slot : slots_)
        if (slot->busy) {
            curl_multi_remove_handle(multi_, slot->easy);
            slot->busy = false;
            slot->transfer->abandoned();
            slot->transfer.reset();
        }
    in_flight_ = 0;
    queue_.clear();
    never_sent_ = 0;
    early_.clear();
    reserved_slot_.reset();
}

std::vector<JobOutcome> RequestEngine::run(AbortCheck should_abort,
                                           std::optional<Clock::time_point> deadline,
                                           RequestObserver *observer)
{
    RunOptions options;
    options.deadline = deadline;
    options.observer = observer;
    return run(should_abort, options);
}

std::vector<JobOutcome> RequestEngine::run(AbortCheck should_abort, const RunOptions &options)
{
    // Only for this run: the engine outlives its callers' observers.
    transfer_options_.observer = options.observer;
    try {
        std::vector<JobOutcome> done = run_all(should_abort, options);
        transfer_options_.observer = nullptr;
        return done;
    } catch (...) {
        // Whatever went wrong, the next run must not see this run's jobs.
        abandon();
        transfer_options_.observer = nullptr;
        throw;
    }
}

void RequestEngine::cut_off(std::vector<JobOutcome> &done)
{
    auto unfinished = [&](std::uint64_t tag, int attempts) {
        JobOutcome outcome;
        outcome.tag = tag;
        outcome.attempts = attempts;
        outcome.unfinished = true;
        outcome.error = Error(ErrorKind::Timeout, "the time budget ran out before DFend answered",
                              attempts > 0 ? "The request was sent; its answer was not awaited."
                                           : "The request was not sent.");
        done.push_back(std::move(outcome));
    };
    for (auto &slot : slots_)
        if (slot->busy)
            unfinished(slot->pending.tag, slot->pending.attempts);
    for (const Pending &pending : queue_)
        unfinished(pending.tag, pending.attempts);
    abandon();
}

void RequestEngine::enqueue(Pending pending)
{
    auto position = std::upper_bound(
        queue_.begin(), queue_.end(), pending.ready_at,
        [](Clock::time_point t, const Pending &p) { return t < p.ready_at; });
    queue_.insert(position, std::move(pending));
}

std::size_t RequestEngine::unfinished() const noexcept
{
    return static_cast<std::size_t>(in_flight_) + queue_.size();
}

bool RequestEngine::may_carry(const RunOptions &options) const
{
    return options.carry_at_most && never_sent_ == 0 && unfinished() <= *options.carry_at_most;
}

bool RequestEngine::only_distant_retries_left(Clock::time_point now, Millis over) const
{
    if (in_flight_ > 0 || queue_.empty())
        return false;
    // The queue is ordered by ready time; a job never sent is ready at once.
    if (queue_.front().ready_at <= now)
        return false;
    // Judged by the wait each retry was given, not by what is left of it: a
    // batch's 429s (Retry-After: 1 s) come due one by one, and waiting for
    // each as it comes within `over` held the batch for up to a second,
    // sending next to nothing, while the other engines of the account took
    // its share.
    return std::all_of(queue_.begin(), queue_.end(),
                       [&](const Pending &pending) { return pending.wait > over; });
}

void RequestEngine::defer_waiting(std::vector<JobOutcome> &done, Clock::time_point now)
{
    for (Pending &pending : queue_) {
        JobOutcome outcome;
        outcome.tag = pending.tag;
        outcome.attempts = pending.attempts;
        outcome.deferred = true;
        outcome.retry_in = std::chrono::duration_cast<Millis>(pending.ready_at - now);
        outcome.error = std::move(pending.last_error);
        if (!outcome.error) // cannot happen: only retries wait
            outcome.error = Error(ErrorKind::Internal, "a job waited without having failed");
        outcome.dropped = std::move(pending.dropped);
        done.push_back(std::move(outcome));
    }
    queue_.clear();
}

std::vector<JobOutcome> RequestEngine::run_all(AbortCheck should_abort, const RunOptions &options)
{
    const std::optional<Clock::time_point> &deadline = options.deadline;
    std::vector<JobOutcome> done = std::move(early_);
    early_.clear();
    // Bounds how late an abort or a due retry is noticed when nothing else
    // wakes the poll (signals interrupt it too).
    constexpr int kMaxPollMs = 50;

    while (!queue_.empty() || in_flight_ > 0) {
        if (should_abort && should_abort())
            throw Error(ErrorKind::Cancelled, "request to DFend was cancelled");
        Clock::time_point now = Clock::now();
        if (deadline && now >= *deadline) {
            cut_off(done);
            break;
        }
        if (options.defer_waits_over && only_distant_retries_left(now, *options.defer_waits_over)) {
            defer_waiting(done, now);
            break;
        }
        while (in_flight_ < engine_.concurrency && !queue_.empty() &&
               queue_.front().ready_at <= now && may_send(now, options.paced)) {
            Pending next = std::move(queue_.front());
            queue_.pop_front();
            start(std::move(next), now);
        }

        int running = 0;
        CURLMcode code = curl_multi_perform(multi_, &running);
        if (code != CURLM_OK)
            throw Error(ErrorKind::Internal, "libcurl multi transfer failed",
                        curl_multi_strerror(code));
        int left = 0;
        while (CURLMsg *message = curl_multi_info_read(multi_, &left)) {
            if (message->msg != CURLMSG_DONE)
                continue;
            Slot *slot = nullptr;
            curl_easy_getinfo(message->easy_handle, CURLINFO_PRIVATE, &slot);
            finish(*slot, message->data.result, Clock::now(), done);
        }

        // After collecting answers, so a run always makes progress.
        if ((queue_.empty() && in_flight_ == 0) || may_carry(options))
            break;
        if (options.defer_waits_over && only_distant_retries_left(Clock::now(),
                                                                  *options.defer_waits_over))
            continue; // deferred at the top of the loop
        // Sleep until a socket is ready, a retry is due or a send slot or
        // token is there (rounded up: never a busy loop for a slot 0.3 ms off).
        now = Clock::now();
        long wait_ms = kMaxPollMs;
        if (!queue_.empty() && in_flight_ < engine_.concurrency) {
            Clock::time_point due = queue_.front().ready_at;
            if (reserved_slot_)
                due = std::max(due, *reserved_slot_);
            long until_due = static_cast<long>(
                std::chrono::ceil<Millis>(due - now).count());
            if (engine_.max_rate > 0 && tokens_ < 1)
                until_due = std::max(until_due,
                                     static_cast<long>((1 - tokens_) * 1000 / engine_.max_rate));
            wait_ms = std::clamp(until_due, 0L, wait_ms);
        }
        if (deadline) {
            long until_deadline = static_cast<long>(
                std::chrono::duration_cast<Millis>(*deadline - now).count());
            wait_ms = std::clamp(until_deadline, 0L, wait_ms);
        }
        if (wait_ms > 0) {
            code = curl_multi_poll(multi_, nullptr, 0, static_cast<int>(wait_ms), nullptr);
            if (code != CURLM_OK)
                throw Error(ErrorKind::Internal, "libcurl multi poll failed",
                            curl_multi_strerror(code));
        }
    }
    return done;
}

} // namespace dfend
