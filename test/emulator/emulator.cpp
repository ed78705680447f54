// dfend-emulator: a local emulator of the DFend Identity API for tests, demos
// and benchmarks.  See README.md in this directory.
//
// Built on cpp-httplib 0.11.4 (Debian's shared-library build) and nlohmann/json.
//
// Why there is a framing layer below cpp-httplib
// ----------------------------------------------
// cpp-httplib 0.11.4 only reads a request body for POST/PUT/PATCH/DELETE/PRI.
// For "GET /identity" with a JSON body (which is how the DFend API is
// documented) the body is never read: req.body is empty, and the body bytes are
// either discarded together with the per-request read buffer or, if they arrive
// in a later TCP segment, parsed as the start of the next request.  So this
// server overrides Server::process_and_close_socket (a virtual) and runs its own
// keep-alive loop: it reads one complete request (headers + Content-Length or
// chunked body) from the socket or TLS session itself, hands the bytes to
// cpp-httplib's process_request() through an in-memory Stream (routing, handler
// dispatch, response formatting stay cpp-httplib's), keeps the body of GET-like
// requests aside for the handler (thread_local), buffers the response and sends
// it with one write.  The same layer implements connection drops (fault
// injection) by closing the socket instead of sending the buffered response.

#include <httplib.h>
#include <nlohmann/json.hpp>

#include <openssl/err.h>
#include <openssl/ssl.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>
#include <vector>

using json = nlohmann::ordered_json;

namespace {

// ---------------------------------------------------------------------------
// Limits
// ---------------------------------------------------------------------------
constexpr size_t kMaxHeaderBytes = 16 * 1024;
constexpr size_t kMaxBodyBytes = 1024 * 1024;
constexpr size_t kMaxJsonDepth = 64;
constexpr size_t kMaxUserIdChars = 256;
constexpr int kReadTimeoutMs = 5000;
constexpr int kIoTimeoutSec = 5;
constexpr int64_t kMaxDelayMs = 24LL * 3600 * 1000;

// ---------------------------------------------------------------------------
// Shutdown: a flag plus a condition variable so that sleeps end promptly.
// ---------------------------------------------------------------------------
std::atomic<bool> g_stopping{false};
std::mutex g_stop_mu;
std::condition_variable g_stop_cv;

// Sleeps ms milliseconds or until shutdown starts.
void interruptible_sleep_ms(int64_t ms) {
  if (ms <= 0) return;
  std::unique_lock<std::mutex> lk(g_stop_mu);
  g_stop_cv.wait_for(lk, std::chrono::milliseconds(ms),
                     [] { return g_stopping.load(); });
}

int64_t now_unix_ms() {
  using namespace std::chrono;
  return duration_cast<milliseconds>(system_clock::now().time_since_epoch())
      .count();
}

std::string dump(const json &j) {
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

// ---------------------------------------------------------------------------
// PRNG (seeded, mutex-guarded)
// ---------------------------------------------------------------------------
class Rng {
 public:
  void seed(uint64_t s) {
    std::lock_guard<std::mutex> lk(mu_);
    gen_.seed(s);
  }
  double uniform() {  // [0, 1)
    std::lock_guard<std::mutex> lk(mu_);
    return std::uniform_real_distribution<double>(0.0, 1.0)(gen_);
  }
  int64_t uniform_int(int64_t lo, int64_t hi) {  // [lo, hi]
    std::lock_guard<std::mutex> lk(mu_);
    return std::uniform_int_distribution<int64_t>(lo, hi)(gen_);
  }
  std::string hex(size_t nchars) {
    static const char digits[] = "0123456789abcdef";
    std::lock_guard<std::mutex> lk(mu_);
    std::string s;
    s.reserve(nchars);
    while (s.size() < nchars) {
      uint64_t v = gen_();
      for (int i = 0; i < 16 && s.size() < nchars; i++, v >>= 4)
        s.push_back(digits[v & 0xf]);
    }
    return s;
  }

 private:
  std::mutex mu_;
  std::mt19937_64 gen_;
};
Rng g_rng;

// ---------------------------------------------------------------------------
// Fault / latency configuration
// ---------------------------------------------------------------------------
struct Config {
  int64_t latency_ms = 0;
  int64_t jitter_ms = 0;
  double rate_5xx = 0;
  double rate_429 = 0;
  int64_t retry_after = 1;
  double rate_drop = 0;
  bool drop_after_commit = false;
  std::string drop_mode = "empty";  // "empty" | "partial"
  double rate_hang = 0;
  int64_t hang_ms = 30000;
  // The account's rate limit: a token bucket per API key, shared by every
  // connection; 0 = no limit (see "Account rate limit" in the README).
  double account_rate = 0;
  int64_t account_burst = 1;
  std::vector<std::string> fail_user_ids;
  std::unordered_set<std::string> fail_set;
  // The status those user ids get: one of the 4xx that blame the data.
  int64_t fail_status = 400;
  bool error_echo_key = false;
  // Replies that attack the client's handling of reply text (see README):
  // "none" | "escaped_key" | "split_key" | "invalid_utf8_error" |
  // "invalid_utf8_success" | "unicode_error".
  std::string reply_fault = "none";
  // Deterministic faults: "the next N requests fail". Parsed here, then moved
  // into the g_next_* counters when a config update is committed; -1 = keep.
  int64_t fail_next_5xx = -1;
  int64_t fail_next_429 = -1;
  int64_t drop_next = -1;
  int64_t hang_next = -1;
};

std::atomic<int64_t> g_next_5xx{0}, g_next_429{0}, g_next_drop{0}, g_next_hang{0};

// Takes one from a "next N requests" counter; false when it is zero.
bool take_one(std::atomic<int64_t> &counter) {
  int64_t v = counter.load();
  while (v > 0)
    if (counter.compare_exchange_weak(v, v - 1)) return true;
  return false;
}

json config_to_json(const Config &c) {
  json j = json::object();
  j["latency_ms"] = c.latency_ms;
  j["jitter_ms"] = c.jitter_ms;
  j["rate_5xx"] = c.rate_5xx;
  j["rate_429"] = c.rate_429;
  j["retry_after"] = c.retry_after;
  j["rate_drop"] = c.rate_drop;
  j["drop_after_commit"] = c.drop_after_commit;
  j["drop_mode"] = c.drop_mode;
  j["rate_hang"] = c.rate_hang;
  j["hang_ms"] = c.hang_ms;
  j["account_rate"] = c.account_rate;
  j["account_burst"] = c.account_burst;
  j["fail_user_ids"] = c.fail_user_ids;
  j["fail_status"] = c.fail_status;
  j["error_echo_key"] = c.error_echo_key;
  j["reply_fault"] = c.reply_fault;
  j["fail_next_5xx"] = g_next_5xx.load();
  j["fail_next_429"] = g_next_429.load();
  j["drop_next"] = g_next_drop.load();
  j["hang_next"] = g_next_hang.load();
  return j;
}

// Applies the fields of j (an object) to c.  On error returns a message and c
// may be partially modified (callers apply to a copy).
std::string apply_config(Config &c, const json &j) {
  if (!j.is_object()) return "config must be a JSON object";
  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string &k = it.key();
    const json &v = it.value();
    auto get_int = [&](int64_t lo, int64_t hi, int64_t &out) -> std::string {
      if (!v.is_number_integer())
        return k + " must be an integer";
      if (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t(hi))
        return k + " out of range";
      int64_t x = v.get<int64_t>();
      if (x < lo || x > hi)
        return k + " must be between " + std::to_string(lo) + " and " +
               std::to_string(hi);
      out = x;
      return "";
    };
    auto get_rate = [&](double &out) -> std::string {
      if (!v.is_number()) return k + " must be a number";
      double x = v.get<double>();
      if (!(x >= 0.0 && x <= 1.0)) return k + " must be between 0 and 1";
      out = x;
      return "";
    };
    auto get_bool = [&](bool &out) -> std::string {
      if (!v.is_boolean()) return k + " must be a boolean";
      out = v.get<bool>();
      return "";
    };
    std::string err;
    if (k == "latency_ms") err = get_int(0, kMaxDelayMs, c.latency_ms);
    else if (k == "jitter_ms") err = get_int(0, kMaxDelayMs, c.jitter_ms);
    else if (k == "hang_ms") err = get_int(0, kMaxDelayMs, c.hang_ms);
    else if (k == "retry_after") err = get_int(0, 86400, c.retry_after);
    else if (k == "fail_next_5xx") err = get_int(0, 1000000, c.fail_next_5xx);
    else if (k == "fail_next_429") err = get_int(0, 1000000, c.fail_next_429);
    else if (k == "drop_next") err = get_int(0, 1000000, c.drop_next);
    else if (k == "hang_next") err = get_int(0, 1000000, c.hang_next);
    else if (k == "rate_5xx") err = get_rate(c.rate_5xx);
    else if (k == "rate_429") err = get_rate(c.rate_429);
    else if (k == "rate_drop") err = get_rate(c.rate_drop);
    else if (k == "rate_hang") err = get_rate(c.rate_hang);
    else if (k == "account_burst") err = get_int(1, 1000000, c.account_burst);
    else if (k == "fail_status") {
      int64_t status = 0;
      err = get_int(400, 499, status);
      if (err.empty() && status != 400 && status != 409 && status != 413 && status != 422)
        err = "fail_status must be 400, 409, 413 or 422";
      if (err.empty()) c.fail_status = status;
    }
    else if (k == "account_rate") {
      if (!v.is_number() || !(v.get<double>() >= 0.0 && v.get<double>() <= 1e6))
        err = "account_rate must be a number between 0 and 1000000";
      else
        c.account_rate = v.get<double>();
    }
    else if (k == "drop_after_commit") err = get_bool(c.drop_after_commit);
    else if (k == "error_echo_key") err = get_bool(c.error_echo_key);
    else if (k == "reply_fault") {
      static const std::unordered_set<std::string> kModes = {
          "none", "escaped_key", "split_key", "invalid_utf8_error", "invalid_utf8_success",
          "unicode_error"};
      if (!v.is_string() || !kModes.count(v.get<std::string>()))
        err = "reply_fault must be \"none\", \"escaped_key\", \"split_key\", "
              "\"invalid_utf8_error\", \"invalid_utf8_success\" or \"unicode_error\"";
      else
        c.reply_fault = v.get<std::string>();
    } else if (k == "drop_mode") {
      if (!v.is_string() ||
          (v.get<std::string>() != "empty" && v.get<std::string>() != "partial"))
        err = "drop_mode must be \"empty\" or \"partial\"";
      else
        c.drop_mode = v.get<std::string>();
    } else if (k == "fail_user_ids") {
      if (!v.is_array()) {
        err = "fail_user_ids must be an array of strings";
      } else {
        std::vector<std::string> ids;
        for (const auto &e : v) {
          if (!e.is_string()) {
            err = "fail_user_ids must be an array of strings";
            break;
          }
          ids.push_back(e.get<std::string>());
        }
        if (err.empty()) {
          c.fail_user_ids = std::move(ids);
          c.fail_set = std::unordered_set<std::string>(c.fail_user_ids.begin(),
                                                       c.fail_user_ids.end());
        }
      }
    } else {
      err = "unknown config field: " + k;
    }
    if (!err.empty()) return err;
  }
  return "";
}

std::mutex g_config_mu;
std::shared_ptr<const Config> g_config = std::make_shared<Config>();
std::shared_ptr<const Config> g_startup_config = std::make_shared<Config>();

std::shared_ptr<const Config> config_snapshot() {
  std::lock_guard<std::mutex> lk(g_config_mu);
  return g_config;
}

// ---------------------------------------------------------------------------
// API keys (never printed)
// ---------------------------------------------------------------------------
std::unordered_set<std::string> g_keys;

// ---------------------------------------------------------------------------
// Identity store
// ---------------------------------------------------------------------------
struct Identity {
  std::string id;
  uint64_t seq = 0;
  std::vector<std::string> userIds, names, emails, phones;
  json metadata = json::object();
  int64_t time_ms = 0;
};

struct Store {
  std::mutex mu;
  uint64_t next_seq = 0;
  std::unordered_map<std::string, std::shared_ptr<Identity>> by_user;
  std::unordered_map<std::string, std::shared_ptr<Identity>> by_id;
};
Store g_store;

void add_unique(std::vector<std::string> &v, const std::string &s) {
  if (std::find(v.begin(), v.end(), s) == v.end()) v.push_back(s);
}

json identity_to_json(const Identity &idn) {
  json j = json::object();
  j["id"] = idn.id;
  j["account"] = "acc_emulator";
  j["identifiers"] = {{"userIds", idn.userIds},
                      {"names", idn.names},
                      {"emails", idn.emails},
                      {"phones", idn.phones}};
  j["ips"] = json::array();
  j["devices"] = json::array();
  j["locations"] = json::array();
  j["vpns"] = json::array();
  j["carriers"] = json::array();
  j["tor"] = json::object();
  j["metadata"] = idn.metadata;
  j["time"] = idn.time_ms;
  j["optedIn"] = false;
  j["optedOut"] = false;
  return j;
}

// ---------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------
struct Stats {
  std::mutex mu;
  uint64_t requests = 0, dropped = 0, hung = 0, posts = 0, gets = 0,
           created = 0, merged = 0, existing = 0, account_limited = 0;
  std::map<int, uint64_t> by_status;
};
Stats g_stats;
std::atomic<int64_t> g_in_flight{0};
std::atomic<int64_t> g_max_in_flight{0};

// ---------------------------------------------------------------------------
// Account rate limit: one token bucket per key. A bucket starts full
// (account_burst tokens) and gains account_rate tokens per second up to the
// burst; a request takes one token or is answered 429. Buckets are dropped
// (so start full again) when the limit is reconfigured and at /admin/reset.
// ---------------------------------------------------------------------------
struct Bucket {
  double tokens = 0;
  std::chrono::steady_clock::time_point at;
};
std::mutex g_bucket_mu;
std::unordered_map<std::string, Bucket> g_buckets;

void clear_buckets() {
  std::lock_guard<std::mutex> lk(g_bucket_mu);
  g_buckets.clear();
}

// True when the key's bucket has a token for this request (and takes it).
bool account_admits(const Config &cfg, const std::string &key) {
  if (cfg.account_rate <= 0) return true;
  const auto now = std::chrono::steady_clock::now();
  const double burst = double(cfg.account_burst);
  std::lock_guard<std::mutex> lk(g_bucket_mu);
  auto [it, fresh] = g_buckets.try_emplace(key, Bucket{burst, now});
  Bucket &b = it->second;
  if (!fresh) {
    const double elapsed = std::chrono::duration<double>(now - b.at).count();
    b.tokens = std::min(burst, b.tokens + elapsed * cfg.account_rate);
    b.at = now;
  }
  if (b.tokens < 1) return false;
  b.tokens -= 1;
  return true;
}

struct InFlightGuard {
  InFlightGuard() {
    int64_t now = ++g_in_flight;
    int64_t prev = g_max_in_flight.load();
    while (now > prev && !g_max_in_flight.compare_exchange_weak(prev, now)) {
    }
  }
  ~InFlightGuard() { --g_in_flight; }
};

// ---------------------------------------------------------------------------
// Per-connection context shared between the framing layer and the handlers
// (same thread: cpp-httplib calls handlers synchronously in process_request).
// ---------------------------------------------------------------------------
enum class DropMode { None, Empty, Partial };
struct ConnCtx {
  std::string side_body;  // body of a GET-like request (cpp-httplib ignores it)
  bool has_side_body = false;
  DropMode drop = DropMode::None;
  void reset() {
    side_body.clear();
    has_side_body = false;
    drop = DropMode::None;
  }
};
thread_local ConnCtx *t_ctx = nullptr;

const std::string &request_body(const httplib::Request &req) {
  if (req.body.empty() && t_ctx && t_ctx->has_side_body) return t_ctx->side_body;
  return req.body;
}

bool g_verbose = false;
bool g_quiet = false;
std::mutex g_log_mu;

// ---------------------------------------------------------------------------
// Validation helpers
// ---------------------------------------------------------------------------
size_t utf8_length(const std::string &s) {
  size_t n = 0;
  for (unsigned char c : s)
    if ((c & 0xC0) != 0x80) n++;
  return n;
}

bool valid_email(const std::string &s) {
  if (s.empty() || s.size() > 254) return false;
  size_t at = s.find('@');
  if (at == std::string::npos || s.find('@', at + 1) != std::string::npos)
    return false;
  for (unsigned char c : s)
    if (c <= 0x20 || c == 0x7f) return false;  // no spaces / control chars
  std::string local = s.substr(0, at), domain = s.substr(at + 1);
  if (local.empty() || local.size() > 64) return false;
  if (domain.find('.') == std::string::npos) return false;
  size_t start = 0;
  while (true) {
    size_t dot = domain.find('.', start);
    std::string label = domain.substr(
        start, dot == std::string::npos ? std::string::npos : dot - start);
    if (label.empty()) return false;
    for (unsigned char c : label)
      if (!(std::isalnum(c) || c == '-')) return false;
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return true;
}

bool valid_e164(const std::string &s) {  // ^\+[1-9][0-9]{1,14}$
  if (s.size() < 3 || s.size() > 16 || s[0] != '+') return false;
  if (s[1] < '1' || s[1] > '9') return false;
  for (size_t i = 2; i < s.size(); i++)
    if (s[i] < '0' || s[i] > '9') return false;
  return true;
}

// Maximum nesting depth of a JSON text (strings skipped); guards the recursive
// serializer against stack exhaustion.
size_t json_depth(const std::string &s) {
  size_t depth = 0, max_depth = 0;
  bool in_str = false, esc = false;
  for (char c : s) {
    if (in_str) {
      if (esc) esc = false;
      else if (c == '\\') esc = true;
      else if (c == '"') in_str = false;
      continue;
    }
    if (c == '"') in_str = true;
    else if (c == '{' || c == '[') max_depth = std::max(max_depth, ++depth);
    else if ((c == '}' || c == ']') && depth > 0) depth--;
  }
  return max_depth;
}

// Parses a JSON object body.  Returns an error message or "".
std::string parse_object_body(const std::string &body, json &out) {
  if (json_depth(body) > kMaxJsonDepth) return "request body is nested too deeply";
  out = json::parse(body, nullptr, false);
  if (out.is_discarded()) return "request body is not valid JSON";
  if (!out.is_object()) return "request body must be a JSON object";
  return "";
}

// Optional field: absent or null -> nullptr.
const json *opt_field(const json &j, const char *name) {
  auto it = j.find(name);
  if (it == j.end() || it->is_null()) return nullptr;
  return &*it;
}

// ---------------------------------------------------------------------------
// Responses
// ---------------------------------------------------------------------------
void set_json(httplib::Response &res, int status, const json &body) {
  res.status = status;
  res.set_content(dump(body), "application/json");
}

std::string status_text(int status) {
  switch (status) {
    case 400: return "bad request";
    case 401: return "unauthorized";
    case 403: return "forbidden";
    case 404: return "not found";
    case 405: return "method not allowed";
    case 413: return "payload too large";
    case 414: return "URI too long";
    case 416: return "range not satisfiable";
    case 500: return "internal error";
    default: return "HTTP " + std::to_string(status);
  }
}

void set_error(httplib::Response &res, int status, const std::string &msg) {
  set_json(res, status, json{{"error", msg}});
}

// ---------------------------------------------------------------------------
// /identity
// ---------------------------------------------------------------------------
struct ReqInfo {
  std::shared_ptr<const Config> cfg;
  bool has_key = false;
  std::string key;
};

// 4xx error, with the client's key echoed when error_echo_key is on.
void client_error(const ReqInfo &ri, httplib::Response &res, int status,
                  const std::string &msg) {
  if (ri.cfg->error_echo_key && ri.has_key) {
    if (status == 400)
      set_error(res, status, "invalid request for key " + ri.key + ": " + msg);
    else
      set_error(res, status, msg + " for key " + ri.key);
  } else {
    set_error(res, status, msg);
  }
}

// --- reply_fault: replies built to slip the key or bad text past a client.
// Bodies are spliced as text, since nlohmann would neither escape the key
// nor write invalid UTF-8.

// "sk_x" -> "\u0073\u006b\u005f\u0078": every character JSON-escaped.
std::string escape_all(const std::string &text) {
  std::string out;
  char buf[8];
  for (unsigned char c : text) {
    std::snprintf(buf, sizeof buf, "\\u%04x", c);
    out += buf;
  }
  return out;
}

// The key with a control character (JSON-escaped) after each character but
// the last: \u0001, NUL, newline, tab, ESC, DEL, CR, a C1 (U+0085), in turn.
std::string split_key(const std::string &key) {
  static const char *const kSeparators[] = {"\\u0001", "\\u0000", "\\n", "\\t",
                                            "\\u001b", "\\u007f", "\\r", "\\u0085"};
  std::string out;
  for (std::size_t i = 0; i < key.size(); ++i) {
    out += key[i];
    if (i + 1 < key.size()) out += kSeparators[i % 8];
  }
  return out;
}

// Splices `fields` (text of JSON members, ending with a comma) in front of
// the first member of an object body.
void splice_fields(httplib::Response &res, const std::string &fields) {
  std::string body = res.body;
  if (body.size() < 2 || body[0] != '{') return;
  body.insert(1, body[1] == '}' ? fields.substr(0, fields.size() - 1) : fields);
  res.set_content(body, "application/json");
}

// True when the fault answered the request instead of the store.
bool reply_fault_before(const ReqInfo &ri, httplib::Response &res) {
  const std::string &mode = ri.cfg->reply_fault;
  if (mode == "split_key") {
    res.status = 400;
    res.set_content("{\"error\":\"invalid request for key " + split_key(ri.key) + "\"}",
                    "application/json");
    return true;
  }
  if (mode == "unicode_error") {
    res.status = 400;
    res.set_content("{\"error\":\"requ\u00eate refus\u00e9e \u2713 \u20ac5\"}", "application/json");
    return true;
  }
  if (mode == "invalid_utf8_error") {
    res.status = 400;
    res.set_content("{\"error\":\"rejected: caf\xe9 \xff\xfe \xc3(\"}", "application/json");
    return true;
  }
  return false;
}

// Rewrites a successful reply.
void reply_fault_after(const ReqInfo &ri, bool is_get, httplib::Response &res) {
  const std::string &mode = ri.cfg->reply_fault;
  if (res.status < 200 || res.status >= 300) return;
  if (mode == "escaped_key" && is_get) {
    // Three spellings: the first character escaped, every character
    // escaped (as a field name), one character in the middle escaped.
    const std::string &k = ri.key;
    std::string middle = k.size() > 3 ? k.substr(0, 3) + escape_all(k.substr(3, 1)) + k.substr(4)
                                      : escape_all(k);
    splice_fields(res, "\"note\":\"key " + escape_all(k.substr(0, 1)) + k.substr(1) +
                           " in a note\",\"" + escape_all(k) +
                           "\":\"the key as a field name\",\"spelled\":[\"" + middle + "\"],");
  } else if (mode == "invalid_utf8_success") {
    splice_fields(res, "\"note\":\"caf\xe9 \xff\xfe\",");
  }
}

std::string new_identity_id_locked() {
  for (;;) {
    std::string id = "idn_" + g_rng.hex(24);
    if (!g_store.by_id.count(id)) return id;
  }
}

void handle_post(const httplib::Request &req, httplib::Response &res,
                 const ReqInfo &ri) {
  json j;
  std::string err = parse_object_body(request_body(req), j);
  if (!err.empty()) return client_error(ri, res, 400, err);

  auto uit = j.find("userId");
  if (uit == j.end() || uit->is_null())
    return client_error(ri, res, 400, "userId is required");
  if (!uit->is_string()) return client_error(ri, res, 400, "userId must be a string");
  const std::string user_id = uit->get<std::string>();
  if (user_id.empty()) return client_error(ri, res, 400, "userId must not be empty");
  if (utf8_length(user_id) > kMaxUserIdChars)
    return client_error(ri, res, 400, "userId must be at most 256 characters");

  std::string email, phone, name;
  bool has_email = false, has_phone = false, has_name = false, merge = false;
  const json *metadata = nullptr;
  if (const json *e = opt_field(j, "email")) {
    if (!e->is_string()) return client_error(ri, res, 400, "email must be a string");
    email = e->get<std::string>();
    if (!valid_email(email))
      return client_error(ri, res, 400, "email must be a valid email address");
    has_email = true;
  }
  if (const json *p = opt_field(j, "phone")) {
    if (!p->is_string()) return client_error(ri, res, 400, "phone must be a string");
    phone = p->get<std::string>();
    if (!valid_e164(phone))
      return client_error(ri, res, 400, "phone must be in E.164 format");
    has_phone = true;
  }
  if (const json *m = opt_field(j, "merge")) {
    if (!m->is_boolean()) return client_error(ri, res, 400, "merge must be a boolean");
    merge = m->get<bool>();
  }
  if (const json *md = opt_field(j, "metadata")) {
    if (!md->is_object())
      return client_error(ri, res, 400, "metadata must be an object");
    metadata = md;
  }
  if (const json *n = opt_field(j, "name")) {
    if (!n->is_string()) return client_error(ri, res, 400, "name must be a string");
    name = n->get<std::string>();
    has_name = true;
  }
  if (ri.cfg->fail_set.count(user_id))
    return client_error(ri, res, static_cast<int>(ri.cfg->fail_status), "rejected by emulator");

  std::string id;
  bool created = false, merged = false;
  {
    std::lock_guard<std::mutex> lk(g_store.mu);
    auto it = g_store.by_user.find(user_id);
    if (it == g_store.by_user.end()) {
      auto idn = std::make_shared<Identity>();
      idn->id = new_identity_id_locked();
      idn->seq = g_store.next_seq++;
      idn->userIds.push_back(user_id);
      if (has_name) idn->names.push_back(name);
      if (has_email) idn->emails.push_back(email);
      if (has_phone) idn->phones.push_back(phone);
      if (metadata) idn->metadata = *metadata;
      idn->time_ms = now_unix_ms();
      g_store.by_user.emplace(user_id, idn);
      g_store.by_id.emplace(idn->id, idn);
      id = idn->id;
      created = true;
    } else {
      Identity &idn = *it->second;
      id = idn.id;
      if (merge) {
        if (has_name) add_unique(idn.names, name);
        if (has_email) add_unique(idn.emails, email);
        if (has_phone) add_unique(idn.phones, phone);
        if (metadata)
          for (auto m = metadata->begin(); m != metadata->end(); ++m)
            idn.metadata[m.key()] = m.value();
        merged = true;
      }
    }
  }
  {
    std::lock_guard<std::mutex> lk(g_stats.mu);
    if (created) g_stats.created++;
    else if (merged) g_stats.merged++;
    else g_stats.existing++;
  }
  set_json(res, 200, json{{"id", id}, {"created", created}, {"merged", merged}});
}

void handle_get(const httplib::Request &req, httplib::Response &res,
                const ReqInfo &ri) {
  json j;
  std::string err = parse_object_body(request_body(req), j);
  if (!err.empty()) return client_error(ri, res, 400, err);
  const json *uid = opt_field(j, "userId");
  const json *iid = opt_field(j, "id");
  if ((uid == nullptr) == (iid == nullptr))
    return client_error(ri, res, 400, "exactly one of userId or id is required");
  const json *f = uid ? uid : iid;
  const char *fname = uid ? "userId" : "id";
  if (!f->is_string())
    return client_error(ri, res, 400, std::string(fname) + " must be a string");
  const std::string v = f->get<std::string>();
  if (v.empty())
    return client_error(ri, res, 400, std::string(fname) + " must not be empty");

  json out;
  {
    std::lock_guard<std::mutex> lk(g_store.mu);
    auto &m = uid ? g_store.by_user : g_store.by_id;
    auto it = m.find(v);
    if (it == m.end()) return client_error(ri, res, 404, "identity not found");
    out = identity_to_json(*it->second);
  }
  set_json(res, 200, out);
}

// Bumped by /admin/reset: a request that started before a reset and is
// still sleeping (latency, hang) must not touch the new store or counters,
// or a test's counts would depend on timing.
std::atomic<uint64_t> g_generation{0};

void handle_identity(const httplib::Request &req, httplib::Response &res) {
  InFlightGuard inflight;
  const uint64_t generation = g_generation.load();
  auto stale = [generation] { return generation != g_generation.load(); };
  ReqInfo ri;
  ri.cfg = config_snapshot();
  ri.has_key = req.has_header("x-api-key");
  if (ri.has_key) ri.key = req.get_header_value("x-api-key");
  const bool is_post = req.method == "POST";
  const bool is_get = req.method == "GET";
  {
    std::lock_guard<std::mutex> lk(g_stats.mu);
    g_stats.requests++;
    if (is_post) g_stats.posts++;
    if (is_get) g_stats.gets++;
  }
  bool dropped = false, hung = false, account_limited = false;

  if (!is_post && !is_get) {
    res.set_header("Allow", "GET, POST");
    set_error(res, 405, "method not allowed");
  } else {
    const Config &cfg = *ri.cfg;
    int64_t delay = cfg.latency_ms;
    if (cfg.jitter_ms > 0) delay += g_rng.uniform_int(0, cfg.jitter_ms);
    interruptible_sleep_ms(delay);

    if (stale()) {
      set_error(res, 503, "emulator was reset");
    } else if (!ri.has_key || !g_keys.count(ri.key)) {
      client_error(ri, res, 401, "invalid API key");
    } else {
      // Deterministic faults ("the next N requests") first, then one roll
      // over cumulative ranges: 5xx, 429, drop, hang (at most one fault).
      enum class Fault { None, Unavailable, RateLimited, Drop, Hang } fault = Fault::None;
      // The account's limit comes first, as a gateway in front of the API:
      // a request it refuses takes no token and no fault.
      const bool over_limit = !account_admits(cfg, ri.key);
      if (over_limit) fault = Fault::RateLimited;
      else if (take_one(g_next_5xx)) fault = Fault::Unavailable;
      else if (take_one(g_next_429)) fault = Fault::RateLimited;
      else if (take_one(g_next_drop)) fault = Fault::Drop;
      else if (take_one(g_next_hang)) fault = Fault::Hang;
      else if (cfg.rate_5xx + cfg.rate_429 + cfg.rate_drop + cfg.rate_hang > 0) {
        double u = g_rng.uniform();
        double edge = cfg.rate_5xx;
        if (u < edge) fault = Fault::Unavailable;
        else if (u < (edge += cfg.rate_429)) fault = Fault::RateLimited;
        else if (u < (edge += cfg.rate_drop)) fault = Fault::Drop;
        else if (u < (edge += cfg.rate_hang)) fault = Fault::Hang;
      }
      account_limited = over_limit;
      bool do_drop = fault == Fault::Drop;
      if (fault == Fault::Unavailable) {
        set_error(res, 503, "service unavailable");
      } else if (fault == Fault::RateLimited) {
        if (cfg.retry_after > 0)
          res.set_header("Retry-After", std::to_string(cfg.retry_after));
        client_error(ri, res, 429, "rate limited");
      } else {
        if (fault == Fault::Hang) {
          hung = true;
          interruptible_sleep_ms(cfg.hang_ms);
        }
        if (stale()) {
          set_error(res, 503, "emulator was reset");
        } else if (do_drop && !(is_post && cfg.drop_after_commit)) {
          set_error(res, 503, "dropped");  // never sent
        } else if (reply_fault_before(ri, res)) {
          // answered by the fault; the store is untouched
        } else {
          if (is_post)
            handle_post(req, res, ri);
          else
            handle_get(req, res, ri);
          reply_fault_after(ri, is_get, res);
        }
        if (do_drop) {
          dropped = true;
          if (t_ctx)
            t_ctx->drop = cfg.drop_mode == "partial" ? DropMode::Partial
                                                     : DropMode::Empty;
        }
      }
    }
  }

  std::lock_guard<std::mutex> lk(g_stats.mu);
  if (stale()) return;  // counted in a generation that no longer exists
  if (dropped) g_stats.dropped++;
  else g_stats.by_status[res.status]++;
  if (hung) g_stats.hung++;
  if (account_limited) g_stats.account_limited++;
}

// ---------------------------------------------------------------------------
// /admin
// ---------------------------------------------------------------------------
json stats_json() {
  json j = json::object();
  {
    std::lock_guard<std::mutex> lk(g_stats.mu);
    j["requests"] = g_stats.requests;
    json bs = json::object();
    for (const auto &kv : g_stats.by_status) bs[std::to_string(kv.first)] = kv.second;
    j["by_status"] = bs;
    j["dropped"] = g_stats.dropped;
    j["hung"] = g_stats.hung;
    j["posts"] = g_stats.posts;
    j["gets"] = g_stats.gets;
    j["created"] = g_stats.created;
    j["merged"] = g_stats.merged;
    j["existing"] = g_stats.existing;
    j["account_limited"] = g_stats.account_limited;
  }
  {
    std::lock_guard<std::mutex> lk(g_store.mu);
    j["identities"] = g_store.by_user.size();
  }
  j["in_flight"] = g_in_flight.load();
  j["max_in_flight"] = g_max_in_flight.load();
  return j;
}

void register_routes(httplib::Server &svr) {
  svr.Get("/identity", handle_identity);
  svr.Post("/identity", handle_identity);
  svr.Put("/identity", handle_identity);
  svr.Patch("/identity", handle_identity);
  svr.Delete("/identity", handle_identity);
  svr.Options("/identity", handle_identity);

  svr.Get("/admin/health", [](const httplib::Request &, httplib::Response &res) {
    set_json(res, 200, json{{"ok", true}});
  });
  svr.Get("/admin/config", [](const httplib::Request &, httplib::Response &res) {
    set_json(res, 200, config_to_json(*config_snapshot()));
  });
  svr.Post("/admin/config", [](const httplib::Request &req, httplib::Response &res) {
    json j;
    std::string err = parse_object_body(req.body, j);
    if (!err.empty()) return set_error(res, 400, err);
    std::lock_guard<std::mutex> lk(g_config_mu);
    auto next = std::make_shared<Config>(*g_config);
    err = apply_config(*next, j);
    if (!err.empty()) return set_error(res, 400, err);
    for (auto [field, counter] : {std::pair{&next->fail_next_5xx, &g_next_5xx},
                                  std::pair{&next->fail_next_429, &g_next_429},
                                  std::pair{&next->drop_next, &g_next_drop},
                                  std::pair{&next->hang_next, &g_next_hang}}) {
      if (*field >= 0) counter->store(*field);
      *field = -1;
    }
    if (j.contains("account_rate") || j.contains("account_burst")) clear_buckets();
    g_config = next;
    set_json(res, 200, config_to_json(*next));
  });
  svr.Get("/admin/stats", [](const httplib::Request &, httplib::Response &res) {
    set_json(res, 200, stats_json());
  });
  svr.Post("/admin/reset", [](const httplib::Request &req, httplib::Response &res) {
    bool reset_config = false;
    if (!req.body.empty()) {
      json j;
      std::string err = parse_object_body(req.body, j);
      if (!err.empty()) return set_error(res, 400, err);
      if (const json *c = opt_field(j, "config")) {
        if (!c->is_boolean()) return set_error(res, 400, "config must be a boolean");
        reset_config = c->get<bool>();
      }
    }
    {
      std::lock_guard<std::mutex> lk(g_store.mu);
      g_generation++;
      g_store.by_user.clear();
      g_store.by_id.clear();
      g_store.next_seq = 0;
    }
    {
      std::lock_guard<std::mutex> lk(g_stats.mu);
      g_stats.requests = g_stats.dropped = g_stats.hung = g_stats.posts = 0;
      g_stats.gets = g_stats.created = g_stats.merged = g_stats.existing = 0;
      g_stats.account_limited = 0;
      g_stats.by_status.clear();
    }
    g_max_in_flight = g_in_flight.load();
    clear_buckets();
    json cfg;
    {
      std::lock_guard<std::mutex> lk(g_config_mu);
      if (reset_config) {
        g_config = g_startup_config;
        for (auto *counter : {&g_next_5xx, &g_next_429, &g_next_drop, &g_next_hang})
          counter->store(0);
      }
      cfg = config_to_json(*g_config);
    }
    set_json(res, 200, json{{"ok", true}, {"config", cfg}});
  });
  svr.Get("/admin/identities", [](const httplib::Request &, httplib::Response &res) {
    std::vector<std::shared_ptr<Identity>> all;
    {
      std::lock_guard<std::mutex> lk(g_store.mu);
      all.reserve(g_store.by_user.size());
      for (const auto &kv : g_store.by_user) all.push_back(kv.second);
    }
    std::sort(all.begin(), all.end(),
              [](const auto &a, const auto &b) { return a->seq < b->seq; });
    json arr = json::array();
    for (const auto &p : all)
      arr.push_back(json{{"userId", p->userIds.empty() ? "" : p->userIds[0]},
                         {"id", p->id}, {"time", p->time_ms}});
    set_json(res, 200, arr);
  });

  // Fills in a JSON body for errors produced by cpp-httplib itself (404 for
  // unknown paths, 400 for unparsable requests, ...).  Handler bodies are kept.
  httplib::Server::HandlerWithResponse on_error =
      [](const httplib::Request &, httplib::Response &res) {
        if (!res.body.empty()) return httplib::Server::HandlerResponse::Unhandled;
        set_error(res, res.status, status_text(res.status));
        return httplib::Server::HandlerResponse::Handled;
      };
  svr.set_error_handler(on_error);
  svr.set_exception_handler(
      [](const httplib::Request &, httplib::Response &res, std::exception_ptr ep) {
        std::string what = "unknown";
        try {
          if (ep) std::rethrow_exception(ep);
        } catch (const std::exception &e) {
          what = e.what();
        } catch (...) {
        }
        {
          std::lock_guard<std::mutex> lk(g_log_mu);
          std::fprintf(stderr, "dfend-emulator: handler exception: %s\n", what.c_str());
        }
        set_error(res, 500, "internal error");
      });
  if (g_verbose) {
    svr.set_logger([](const httplib::Request &req, const httplib::Response &res) {
      // Never log headers (they carry the API key) or bodies.
      const char *drop = (t_ctx && t_ctx->drop != DropMode::None) ? " (dropped)" : "";
      std::lock_guard<std::mutex> lk(g_log_mu);
      std::fprintf(stderr, "%s %s -> %d%s\n", req.method.c_str(), req.path.c_str(),
                   res.status, drop);
    });
  }
}

// ---------------------------------------------------------------------------
// Transport: plain socket or TLS session, blocking with poll()-based waits.
// ---------------------------------------------------------------------------
struct Transport {
  int fd = -1;
  SSL *ssl = nullptr;

  // 1 readable, 0 timeout/stopping, -1 error.  Waits in short slices so that
  // shutdown is noticed quickly.
  int wait_readable(int timeout_ms, const std::atomic<socket_t> &svr_sock) {
    if (ssl && SSL_pending(ssl) > 0) return 1;
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    for (;;) {
      if (g_stopping || svr_sock == INVALID_SOCKET) return 0;
      auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
                      deadline - std::chrono::steady_clock::now()).count();
      if (left <= 0) return 0;
      pollfd p{fd, POLLIN, 0};
      int r = ::poll(&p, 1, int(std::min<int64_t>(left, 100)));
      if (r > 0) return 1;
      if (r < 0 && errno != EINTR) return -1;
    }
  }

  // >0 bytes, 0 EOF, -1 error.
  ssize_t recv_some(char *buf, size_t n) {
    if (ssl) {
      int r = SSL_read(ssl, buf, int(std::min<size_t>(n, INT32_MAX)));
      if (r > 0) return r;
      int e = SSL_get_error(ssl, r);
      ERR_clear_error();
      return e == SSL_ERROR_ZERO_RETURN ? 0 : -1;
    }
    for (;;) {
      ssize_t r = ::recv(fd, buf, n, 0);
      if (r < 0 && errno == EINTR) continue;
      return r;
    }
  }

  bool send_all(const char *p, size_t n) {
    while (n > 0) {
      if (ssl) {
        int r = SSL_write(ssl, p, int(std::min<size_t>(n, 1 << 30)));
        if (r <= 0) {
          ERR_clear_error();
          return false;
        }
        p += r;
        n -= size_t(r);
      } else {
        ssize_t r = ::send(fd, p, n, MSG_NOSIGNAL);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        p += r;
        n -= size_t(r);
      }
    }
    return true;
  }
};

// In-memory Stream handed to cpp-httplib's process_request: reads come from
// exactly one framed request, writes are buffered and sent in one go.
class MemStream : public httplib::Stream {
 public:
  explicit MemStream(int fd) : fd_(fd) {}
  using httplib::Stream::write;

  void set_input(std::string in) {
    in_ = std::move(in);
    pos_ = 0;
    out_.clear();
  }
  std::string &output() { return out_; }

  bool is_readable() const override { return pos_ < in_.size(); }
  // Each cpp-httplib version has its own subset of these pure virtuals
  // (0.11: is_writable; 0.41: wait_readable, wait_writable, duration), so
  // no `override`: each one overrides where its version declares it.
  bool is_writable() const { return true; }
  bool wait_readable() const { return is_readable(); }
  bool wait_writable() const { return true; }
  time_t duration() const { return 0; }
  ssize_t read(char *ptr, size_t size) override {
    size_t k = std::min(size, in_.size() - pos_);
    if (k) std::memcpy(ptr, in_.data() + pos_, k);
    pos_ += k;
    return ssize_t(k);
  }
  ssize_t write(const char *ptr, size_t size) override {
    out_.append(ptr, size);
    return ssize_t(size);
  }
  void get_remote_ip_and_port(std::string &ip, int &port) const override {
    addr_of(false, ip, port);
  }
  void get_local_ip_and_port(std::string &ip, int &port) const override {
    addr_of(true, ip, port);
  }
  socket_t socket() const override { return fd_; }

 private:
  void addr_of(bool local, std::string &ip, int &port) const {
    sockaddr_storage ss{};
    socklen_t len = sizeof(ss);
    int r = local ? getsockname(fd_, reinterpret_cast<sockaddr *>(&ss), &len)
                  : getpeername(fd_, reinterpret_cast<sockaddr *>(&ss), &len);
    if (r != 0) return;
    char buf[INET6_ADDRSTRLEN] = {0};
    if (ss.ss_family == AF_INET) {
      auto *a = reinterpret_cast<sockaddr_in *>(&ss);
      inet_ntop(AF_INET, &a->sin_addr, buf, sizeof(buf));
      port = ntohs(a->sin_port);
    } else if (ss.ss_family == AF_INET6) {
      auto *a = reinterpret_cast<sockaddr_in6 *>(&ss);
      inet_ntop(AF_INET6, &a->sin6_addr, buf, sizeof(buf));
      port = ntohs(a->sin6_port);
    }
    ip = buf;
  }

  int fd_;
  std::string in_;
  size_t pos_ = 0;
  std::string out_;
};

// ---------------------------------------------------------------------------
// Request framing
// ---------------------------------------------------------------------------
std::string lower(std::string s) {
  for (auto &c : s) c = char(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string trim(const std::string &s) {
  size_t b = s.find_first_not_of(" \t"), e = s.find_last_not_of(" \t");
  return b == std::string::npos ? std::string() : s.substr(b, e - b + 1);
}

void send_raw_error(Transport &t, int status, const char *reason,
                    const std::string &msg) {
  std::string body = dump(json{{"error", msg}});
  std::string r = "HTTP/1.1 " + std::to_string(status) + " " + reason +
                  "\r\nContent-Type: application/json\r\nContent-Length: " +
                  std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body;
  t.send_all(r.data(), r.size());
}

enum class ReadResult { Ok, Close };

// Appends more bytes to in; false on EOF, error, timeout or shutdown.
bool fill(Transport &t, std::string &in, int timeout_ms,
          const std::atomic<socket_t> &svr_sock) {
  if (t.wait_readable(timeout_ms, svr_sock) != 1) return false;
  char buf[16384];
  ssize_t n = t.recv_some(buf, sizeof(buf));
  if (n <= 0) return false;
  in.append(buf, size_t(n));
  return true;
}

// Reads one complete request from t (leftover bytes stay in `in` for the next
// request).  Produces the bytes to feed cpp-httplib in `out`; for methods whose
// body cpp-httplib does not read, the body goes to ctx.side_body instead.
ReadResult read_request(Transport &t, std::string &in, std::string &out,
                        ConnCtx &ctx, int idle_timeout_ms,
                        const std::atomic<socket_t> &svr_sock) {
  // Header block.
  size_t hdr_end, scan_from = 0;
  for (;;) {
    size_t lead = 0;  // tolerate empty lines before a request line
    while (lead < in.size() && (in[lead] == '\r' || in[lead] == '\n')) lead++;
    if (lead) {
      in.erase(0, lead);
      scan_from = 0;
    }
    hdr_end = in.find("\r\n\r\n", scan_from);
    if (hdr_end != std::string::npos) break;
    if (in.size() > kMaxHeaderBytes) {
      send_raw_error(t, 431, "Request Header Fields Too Large", "request headers too large");
      return ReadResult::Close;
    }
    scan_from = in.size() >= 3 ? in.size() - 3 : 0;
    if (!fill(t, in, in.empty() ? idle_timeout_ms : kReadTimeoutMs, svr_sock))
      return ReadResult::Close;
  }
  const size_t hdr_len = hdr_end + 4;
  if (hdr_len > kMaxHeaderBytes) {
    send_raw_error(t, 431, "Request Header Fields Too Large", "request headers too large");
    return ReadResult::Close;
  }

  // Parse the request line and the headers we need for framing.
  size_t line_end = in.find("\r\n");
  std::string request_line = in.substr(0, line_end);
  std::string method = request_line.substr(0, request_line.find(' '));
  bool has_cl = false, chunked = false, has_te = false, has_expect = false,
       expect_continue = false;
  uint64_t cl = 0;
  std::vector<std::string> kept_lines;  // header lines except CL/TE/Expect
  size_t pos = line_end + 2;
  while (pos < hdr_end + 2) {
    size_t e = in.find("\r\n", pos);
    std::string line = in.substr(pos, e - pos);
    pos = e + 2;
    if (line.empty()) break;
    size_t colon = line.find(':');
    std::string name = colon == std::string::npos ? "" : lower(trim(line.substr(0, colon)));
    std::string value = colon == std::string::npos ? "" : trim(line.substr(colon + 1));
    if (name == "content-length") {
      if (value.empty() || value.size() > 18 ||
          value.find_first_not_of("0123456789") != std::string::npos) {
        send_raw_error(t, 400, "Bad Request", "invalid Content-Length");
        return ReadResult::Close;
      }
      uint64_t v = std::stoull(value);
      if (has_cl && v != cl) {
        send_raw_error(t, 400, "Bad Request", "conflicting Content-Length headers");
        return ReadResult::Close;
      }
      has_cl = true;
      cl = v;
    } else if (name == "transfer-encoding") {
      has_te = true;
      std::string v = lower(value);
      size_t comma = v.rfind(',');
      std::string last = trim(comma == std::string::npos ? v : v.substr(comma + 1));
      chunked = (last == "chunked");
      if (!chunked) {
        send_raw_error(t, 501, "Not Implemented", "unsupported Transfer-Encoding");
        return ReadResult::Close;
      }
    } else if (name == "expect") {
      has_expect = true;
      if (lower(value) == "100-continue") expect_continue = true;
    } else {
      kept_lines.push_back(line);
    }
  }
  if (chunked) has_cl = false;
  if (has_cl && cl > kMaxBodyBytes) {
    send_raw_error(t, 413, "Payload Too Large", "request body too large");
    return ReadResult::Close;
  }

  auto send_continue = [&]() -> bool {
    static const char kContinue[] = "HTTP/1.1 100 Continue\r\n\r\n";
    return t.send_all(kContinue, sizeof(kContinue) - 1);
  };

  // Body.
  std::string body;
  size_t consumed = hdr_len;
  if (chunked) {
    size_t p = hdr_len;
    bool continued = false;
    for (;;) {
      size_t e = in.find("\r\n", p);
      bool need_more = (e == std::string::npos);
      if (!need_more) {
        std::string size_line = in.substr(p, e - p);
        size_t semi = size_line.find(';');
        if (semi != std::string::npos) size_line = size_line.substr(0, semi);
        size_line = trim(size_line);
        if (size_line.empty() || size_line.size() > 8 ||
            size_line.find_first_not_of("0123456789abcdefABCDEF") != std::string::npos) {
          send_raw_error(t, 400, "Bad Request", "invalid chunked encoding");
          return ReadResult::Close;
        }
        size_t sz = std::stoul(size_line, nullptr, 16);
        if (body.size() + sz > kMaxBodyBytes) {
          send_raw_error(t, 413, "Payload Too Large", "request body too large");
          return ReadResult::Close;
        }
        if (sz == 0) {
          // Trailer section ends with an empty line.
          if (in.size() >= e + 4 && in.compare(e + 2, 2, "\r\n") == 0) {
            consumed = e + 4;
            break;
          }
          size_t te = in.find("\r\n\r\n", e + 2);
          if (te != std::string::npos) {
            consumed = te + 4;
            break;
          }
          need_more = true;
        } else if (in.size() >= e + 2 + sz + 2) {
          if (in.compare(e + 2 + sz, 2, "\r\n") != 0) {
            send_raw_error(t, 400, "Bad Request", "invalid chunked encoding");
            return ReadResult::Close;
          }
          body.append(in, e + 2, sz);
          p = e + 2 + sz + 2;
          continue;
        } else {
          need_more = true;
        }
      }
      if (in.size() - hdr_len > kMaxBodyBytes + 64 * 1024) {
        send_raw_error(t, 413, "Payload Too Large", "request body too large");
        return ReadResult::Close;
      }
      if (expect_continue && !continued) {
        continued = true;
        if (!send_continue()) return ReadResult::Close;
      }
      if (!fill(t, in, kReadTimeoutMs, svr_sock)) return ReadResult::Close;
    }
  } else if (has_cl && cl > 0) {
    if (expect_continue && in.size() < hdr_len + cl)
      if (!send_continue()) return ReadResult::Close;
    while (in.size() < hdr_len + cl)
      if (!fill(t, in, kReadTimeoutMs, svr_sock)) return ReadResult::Close;
    body.assign(in, hdr_len, size_t(cl));
    consumed = hdr_len + size_t(cl);
  }

  // Bytes for cpp-httplib.
  const bool httplib_reads_body = method == "POST" || method == "PUT" ||
                                  method == "PATCH" || method == "DELETE" ||
                                  method == "PRI";
  if (has_te || has_expect) {
    out = request_line + "\r\n";
    for (const auto &l : kept_lines) out += l + "\r\n";
    if (httplib_reads_body || !body.empty())
      out += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    out += "\r\n";
  } else {
    out.assign(in, 0, hdr_len);
  }
  // cpp-httplib 0.18 and later read a GET's body too: always pass it on
  // (0.11 leaves it unread in the per-request MemStream).
  out += body;
  if (!httplib_reads_body && !body.empty()) {
    ctx.side_body = std::move(body);
    ctx.has_side_body = true;
  }
  in.erase(0, consumed);
  return ReadResult::Ok;
}

// ---------------------------------------------------------------------------
// Server with our own per-connection loop (plain or TLS).
// ---------------------------------------------------------------------------
template <class Base>
class EmuServer : public Base {
 public:
  using Base::Base;

 private:
  // Newer cpp-httplib (Debian 13 and later) also passes the peer's and our
  // address; the overload that compiles is chosen (int beats long).
  template <class S = Base>
  auto call_process_request(httplib::Stream &strm, bool close, bool &closed, int)
      -> decltype(std::declval<EmuServer<S> &>().process_request(
                      strm, std::string(), 0, std::string(), 0, close, closed,
                      std::function<void(httplib::Request &)>()),
                  bool()) {
    return this->process_request(strm, "127.0.0.1", 0, "127.0.0.1", 0, close, closed,
                                 [](httplib::Request &) {});
  }
  template <class S = Base>
  bool call_process_request(httplib::Stream &strm, bool close, bool &closed, long) {
    return this->process_request(strm, close, closed, [](httplib::Request &) {});
  }

  bool process_and_close_socket(socket_t sock) override {
    int one = 1;
    setsockopt(sock, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    timeval tv{kIoTimeoutSec, 0};
    setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));

    Transport t;
    t.fd = sock;
    bool ok = true;
    if constexpr (std::is_base_of<httplib::SSLServer, Base>::value) {
      if (g_stopping) ok = false;
      if (ok) {
        t.ssl = SSL_new(this->ssl_context());
        if (!t.ssl || SSL_set_fd(t.ssl, sock) != 1 || SSL_accept(t.ssl) != 1) ok = false;
        ERR_clear_error();
      }
    }

    bool dropped = false;
    if (ok) {
      ConnCtx ctx;
      t_ctx = &ctx;
      MemStream strm(sock);
      std::string in, req_bytes;
      size_t count = this->keep_alive_max_count_;
      const int idle_ms = int(this->keep_alive_timeout_sec_ * 1000);
      while (count > 0 && !g_stopping && this->svr_sock_ != INVALID_SOCKET) {
        ctx.reset();
        if (read_request(t, in, req_bytes, ctx, idle_ms, this->svr_sock_) !=
            ReadResult::Ok)
          break;
        strm.set_input(std::move(req_bytes));
        req_bytes.clear();
        bool close_connection = count == 1 || g_stopping;
        bool connection_closed = false;
        bool processed = call_process_request(strm, close_connection, connection_closed, 0);
        if (ctx.drop != DropMode::None) {
          if (ctx.drop == DropMode::Partial) {
            // Status line, headers and half of the body, then close.
            const std::string &o = strm.output();
            size_t he = o.find("\r\n\r\n");
            size_t n = he == std::string::npos ? o.size() / 2
                                               : he + 4 + (o.size() - he - 4) / 2;
            t.send_all(o.data(), n);
          }
          dropped = true;
          break;
        }
        if (!t.send_all(strm.output().data(), strm.output().size())) break;
        if (!processed || connection_closed || close_connection) break;
        count--;
      }
      t_ctx = nullptr;
    }

    if (t.ssl) {
      if (ok && !dropped) SSL_shutdown(t.ssl);
      SSL_free(t.ssl);
      ERR_clear_error();
    }
    ::shutdown(sock, SHUT_RDWR);
    ::close(sock);
    return ok;
  }
};

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------
[[noreturn]] void usage(int code) {
  std::fprintf(code ? stderr : stdout,
               "usage: dfend-emulator [--host 127.0.0.1] [--port N] [--port-file PATH]\n"
               "         [--key K]... [--key-file PATH] [--tls-cert PEM --tls-key PEM]\n"
               "         [--threads N] [--seed N] [--latency-ms N] [--jitter-ms N]\n"
               "         [--rate-5xx R] [--rate-429 R] [--retry-after S] [--rate-drop R]\n"
               "         [--drop-after-commit] [--drop-mode empty|partial]\n"
               "         [--rate-hang R] [--hang-ms N] [--fail-user-id ID]...\n"
               "         [--account-rate R] [--account-burst B]\n"
               "         [--error-echo-key] [--reply-fault MODE] [--quiet] [--verbose]\n");
  std::exit(code);
}

[[noreturn]] void die(const std::string &msg) {
  std::fprintf(stderr, "dfend-emulator: %s\n", msg.c_str());
  std::exit(2);
}

int64_t parse_int(const std::string &flag, const std::string &s) {
  errno = 0;
  char *end = nullptr;
  long long v = std::strtoll(s.c_str(), &end, 10);
  if (s.empty() || errno || *end) die(flag + " expects an integer");
  return v;
}

uint64_t parse_u64(const std::string &flag, const std::string &s) {
  errno = 0;
  char *end = nullptr;
  unsigned long long v = std::strtoull(s.c_str(), &end, 10);
  if (s.empty() || s[0] == '-' || errno || *end) die(flag + " expects a non-negative integer");
  return v;
}

double parse_double(const std::string &flag, const std::string &s) {
  errno = 0;
  char *end = nullptr;
  double v = std::strtod(s.c_str(), &end);
  if (s.empty() || errno || *end || !std::isfinite(v)) die(flag + " expects a number");
  return v;
}

// Accepts 127.0.0.0/8, ::1 and "localhost" (mapped to 127.0.0.1).
bool loopback_host(std::string &host) {
  if (host == "localhost") {
    host = "127.0.0.1";
    return true;
  }
  in_addr a4{};
  if (inet_pton(AF_INET, host.c_str(), &a4) == 1)
    return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6{};
  if (inet_pton(AF_INET6, host.c_str(), &a6) == 1)
    return IN6_IS_ADDR_LOOPBACK(&a6);
  return false;
}

bool write_port_file(const std::string &path, int port) {
  std::string tmp = path + ".tmp." + std::to_string(getpid());
  {
    std::ofstream f(tmp, std::ios::trunc);
    if (!f) return false;
    f << port << "\n";
    f.flush();
    if (!f) return false;
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    std::remove(tmp.c_str());
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char **argv) {
  std::string host = "127.0.0.1", port_file, tls_cert, tls_key;
  int port = 0;
  size_t threads = 256;
  bool have_seed = false;
  uint64_t seed = 0;
  json cfg_flags = json::object();
  std::vector<std::string> fail_ids;

  std::vector<std::string> args(argv + 1, argv + argc);
  for (size_t i = 0; i < args.size(); i++) {
    std::string a = args[i];
    std::string val;
    bool has_inline = false;
    size_t eq = a.find('=');
    if (a.rfind("--", 0) == 0 && eq != std::string::npos) {
      val = a.substr(eq + 1);
      a = a.substr(0, eq);
      has_inline = true;
    }
    auto next = [&]() -> std::string {
      if (has_inline) return val;
      if (i + 1 >= args.size()) die(a + " needs a value");
      return args[++i];
    };
    if (a == "-h" || a == "--help") usage(0);
    else if (a == "--host") host = next();
    else if (a == "--port") {
      int64_t p = parse_int(a, next());
      if (p < 0 || p > 65535) die("--port must be 0..65535");
      port = int(p);
    } else if (a == "--port-file") port_file = next();
    else if (a == "--key") {
      std::string k = next();
      if (k.empty()) die("--key must not be empty");
      g_keys.insert(k);
    } else if (a == "--key-file") {
      std::string path = next();
      std::ifstream f(path);
      if (!f) die("cannot read --key-file");
      std::string line;
      while (std::getline(f, line)) {
        line = trim(line);
        if (!line.empty() && line.back() == '\r') line.pop_back();
        if (!line.empty() && line[0] != '#') g_keys.insert(line);
      }
    } else if (a == "--tls-cert") tls_cert = next();
    else if (a == "--tls-key") tls_key = next();
    else if (a == "--threads") {
      int64_t n = parse_int(a, next());
      if (n < 1 || n > 10000) die("--threads must be 1..10000");
      threads = size_t(n);
    } else if (a == "--seed") {
      seed = parse_u64(a, next());
      have_seed = true;
    } else if (a == "--latency-ms") cfg_flags["latency_ms"] = parse_int(a, next());
    else if (a == "--jitter-ms") cfg_flags["jitter_ms"] = parse_int(a, next());
    else if (a == "--hang-ms") cfg_flags["hang_ms"] = parse_int(a, next());
    else if (a == "--retry-after") cfg_flags["retry_after"] = parse_int(a, next());
    else if (a == "--rate-5xx") cfg_flags["rate_5xx"] = parse_double(a, next());
    else if (a == "--rate-429") cfg_flags["rate_429"] = parse_double(a, next());
    else if (a == "--rate-drop") cfg_flags["rate_drop"] = parse_double(a, next());
    else if (a == "--rate-hang") cfg_flags["rate_hang"] = parse_double(a, next());
    else if (a == "--account-rate") cfg_flags["account_rate"] = parse_double(a, next());
    else if (a == "--account-burst") cfg_flags["account_burst"] = parse_int(a, next());
    else if (a == "--drop-mode") cfg_flags["drop_mode"] = next();
    else if (a == "--drop-after-commit") cfg_flags["drop_after_commit"] = true;
    else if (a == "--error-echo-key") cfg_flags["error_echo_key"] = true;
    else if (a == "--reply-fault") cfg_flags["reply_fault"] = next();
    else if (a == "--fail-user-id") fail_ids.push_back(next());
    else if (a == "--quiet" || a == "-q") g_quiet = true;
    else if (a == "--verbose" || a == "-v") g_verbose = true;
    else {
      std::fprintf(stderr, "dfend-emulator: unknown argument\n");
      usage(2);
    }
    if (has_inline && (a == "--drop-after-commit" || a == "--error-echo-key" ||
                       a == "--quiet" || a == "--verbose"))
      die(a + " takes no value");
  }
  if (!fail_ids.empty()) cfg_flags["fail_user_ids"] = fail_ids;
  {
    auto c = std::make_shared<Config>();
    std::string err = apply_config(*c, cfg_flags);
    if (!err.empty()) die("invalid option: " + err);
    g_config = c;
    g_startup_config = c;
  }
  if (g_keys.empty()) g_keys.insert("sk_test_emulator");
  if (!loopback_host(host)) die("refusing to bind a non-loopback address (use 127.0.0.1 or ::1)");
  if (tls_cert.empty() != tls_key.empty()) die("--tls-cert and --tls-key go together");
  if (!have_seed)
    seed = uint64_t(std::chrono::system_clock::now().time_since_epoch().count()) ^
           (uint64_t(getpid()) << 32);
  g_rng.seed(seed);

  // Signals: handled by a dedicated thread; blocked everywhere else.
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);
  signal(SIGPIPE, SIG_IGN);

  std::unique_ptr<httplib::Server> svr;
  const bool tls = !tls_cert.empty();
  if (tls) {
    auto s = std::make_unique<EmuServer<httplib::SSLServer>>(tls_cert.c_str(), tls_key.c_str());
    if (!s->is_valid() || SSL_CTX_check_private_key(s->ssl_context()) != 1)
      die("cannot load TLS certificate/key");
    SSL_CTX_set_min_proto_version(s->ssl_context(), TLS1_2_VERSION);
    svr = std::move(s);
  } else {
    svr = std::make_unique<EmuServer<httplib::Server>>();
  }
  svr->new_task_queue = [threads] { return new httplib::ThreadPool(threads); };
  svr->set_keep_alive_max_count(100000);
  svr->set_keep_alive_timeout(5);
  svr->set_read_timeout(5, 0);
  svr->set_write_timeout(5, 0);
  svr->set_tcp_nodelay(true);
  svr->set_payload_max_length(kMaxBodyBytes);
  register_routes(*svr);

  int bound = port == 0 ? svr->bind_to_any_port(host) : (svr->bind_to_port(host, port) ? port : -1);
  if (bound <= 0) die("cannot bind " + host + ":" + std::to_string(port));

  std::atomic<bool> listen_done{false};
  std::thread sig_thread([&] {
    int sig = 0;
    sigwait(&sigs, &sig);
    {
      std::lock_guard<std::mutex> lk(g_stop_mu);
      g_stopping = true;
    }
    g_stop_cv.notify_all();
    // stop() is a no-op until listen has started: repeat until it returns.
    while (!listen_done) {
      svr->stop();
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  });

  if (!port_file.empty() && !write_port_file(port_file, bound))
    die("cannot write --port-file");
  if (!g_quiet) {
    std::string shown = host.find(':') != std::string::npos ? "[" + host + "]" : host;
    std::printf("dfend-emulator listening on %s://%s:%d\n", tls ? "https" : "http",
                shown.c_str(), bound);
    std::fflush(stdout);
    std::fprintf(stderr, "dfend-emulator: seed=%llu threads=%zu keys=%zu\n",
                 static_cast<unsigned long long>(seed), threads, g_keys.size());
  }

  bool ok = svr->listen_after_bind();
  listen_done = true;
  if (!g_stopping) {
    // listen failed on its own: wake the signal thread so it can be joined.
    pthread_kill(sig_thread.native_handle(), SIGTERM);
  }
  sig_thread.join();
  if (!g_quiet) {
    std::fprintf(stderr, "dfend-emulator: stopped\n");
  }
  if (!port_file.empty()) std::remove(port_file.c_str());
  return (ok || g_stopping) ? 0 : 1;
}
