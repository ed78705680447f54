#include "border.hpp"
#include "sqlstates.hpp"
#include "values.hpp"

#include <new>
#include <tuple>

namespace dfend::pg {

namespace {

void copy_text(char *target, std::size_t size, const char *text) noexcept
{
    strlcpy(target, text ? text : "", size);
}

} // namespace

int sqlstate_for(ErrorKind kind, long http_status) noexcept
{
    switch (kind) {
    case ErrorKind::InvalidArgument:
        return http_status ? ERRCODE_DFEND_DATA_REJECTED       // ID422
                           : ERRCODE_INVALID_PARAMETER_VALUE;  // 22023, nothing was sent
    case ErrorKind::Configuration: return ERRCODE_CONFIG_FILE_ERROR;          // F0000
    case ErrorKind::Unauthorized: return ERRCODE_DFEND_KEY_REJECTED;          // ID401
    case ErrorKind::RateLimited: return ERRCODE_DFEND_RATE_LIMITED;           // ID429
    case ErrorKind::BadResponse: return ERRCODE_DFEND_MALFORMED_REPLY;        // ID502
    case ErrorKind::Upstream:
    case ErrorKind::ConnectFailed:
    case ErrorKind::TlsVerification:
    case ErrorKind::ConnectionLost:
    case ErrorKind::Timeout: return ERRCODE_DFEND_UNAVAILABLE;                // ID503
    case ErrorKind::Cancelled: return ERRCODE_QUERY_CANCELED;                 // 57014
    case ErrorKind::Internal: return ERRCODE_INTERNAL_ERROR;                  // XX000
    }
    return ERRCODE_INTERNAL_ERROR;
}

void capture_current_exception(CapturedError *out) noexcept
{
    out->kind = ErrorKind::Internal;
    out->postgres_error = nullptr;
    out->http_status = 0;
    out->retry_wait_ms = -1;
    out->message[0] = out->detail[0] = out->hint[0] = '\0';
    try {
        throw;
    } catch (const PostgresError &e) {
        out->postgres_error = e.data();
    } catch (const Error &e) {
        out->kind = e.kind();
        out->http_status = e.http_status();
        out->retry_wait_ms = e.retry_wait_ms();
        copy_text(out->message, sizeof out->message, e.message().c_str());
        copy_text(out->detail, sizeof out->detail, e.detail().c_str());
        copy_text(out->hint, sizeof out->hint, e.hint().c_str());
    } catch (const std::bad_alloc &) {
        copy_text(out->message, sizeof out->message, "out of memory");
    } catch (const std::exception &e) {
        copy_text(out->message, sizeof out->message, "unexpected error in dfend");
        copy_text(out->detail, sizeof out->detail, e.what());
    } catch (...) {
        copy_text(out->message, sizeof out->message, "unexpected error in dfend");
    }
}

void raise_captured(const CapturedError *error)
{
    if (error->postgres_error)
        ReThrowError(error->postgres_error);
    if (error->kind == ErrorKind::Cancelled) {
        // The transfer stopped because PostgreSQL wants to cancel or exit:
        // let it raise its own error (57014 with its usual message, or FATAL).
        CHECK_FOR_INTERRUPTS();
    }
    // The core speaks UTF-8, copied byte-wise from longer text: clip at a
    // UTF-8 character, then convert to the server encoding without failing
    // (a conversion error here would hide the real one).
    char *message = nullptr;
    char *detail = nullptr;
    char *hint = nullptr;
    for (auto [target, source, size] : {std::tuple{&message, error->message, sizeof error->message},
                                        std::tuple{&detail, error->detail, sizeof error->detail},
                                        std::tuple{&hint, error->hint, sizeof error->hint}}) {
        int length = strnlen(source, size - 1);
        *target = to_server_lossy(source, pg_encoding_mbcliplen(PG_UTF8, source, length, length));
    }
    bool out_of_memory = strcmp(message, "out of memory") == 0 &&
                         error->kind == ErrorKind::Internal;
    // The wait is added here, after the detail was cut to fit its buffer, so
    // that DETAIL always ends with it: a fixed, untranslated sentence that
    // code can match (README, "Errors").
    if (error->retry_wait_ms >= 0)
        detail = detail[0] ? psprintf("%s Retry after %lld ms.", detail, error->retry_wait_ms)
                           : psprintf("Retry after %lld ms.", error->retry_wait_ms);
    ereport(ERROR,
            (errcode(out_of_memory ? ERRCODE_OUT_OF_MEMORY
                                   : sqlstate_for(error->kind, error->http_status)),
             errmsg_internal("%s", message),
             detail[0] ? errdetail_internal("%s", detail) : 0,
             hint[0] ? errhint("%s", hint) : 0));
    pg_unreachable();
}

} // namespace dfend::pg
