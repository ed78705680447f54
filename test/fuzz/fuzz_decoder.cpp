// libFuzzer target for the response decoders: every byte string DFend (or
// anything impersonating it) could send must yield a value or dfend::Error.
// Any other exception, crash, leak or sanitizer report is a finding.
//
//   make fuzz
//   mkdir -p test/fuzz/corpus-run      # scratch: new inputs land here (make clean removes it)
//   ./test/fuzz/fuzz_decoder -max_total_time=60 test/fuzz/corpus-run test/fuzz/corpus
// The first directory receives new inputs, so the seed corpus stays small.
#include "../unit/utf8_check.hpp"
#include "core/codec.hpp"
#include "core/error.hpp"

#include <nlohmann/json.hpp>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

namespace {

void check(bool condition)
{
    if (!condition)
        std::abort();
}

// Short, so the fuzzer meets it (and its escaped and split forms; see the
// corpus) often.
constexpr std::string_view kSecret = "sk_Fz9";

bool has_secret(const std::string &text)
{
    return text.find(kSecret) != std::string::npos;
}

// What every text the core hands out promises: storable as PostgreSQL text.
void check_safe_text(const std::string &text)
{
    check(dfend_test::is_valid_utf8(text));
    check(!has_secret(text));
    for (char c : text)
        check(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f);
}

void check_error(const dfend::Error &e)
{
    check(e.kind() == dfend::ErrorKind::BadResponse);
    // The decoders' own errors never quote the body.
    for (const std::string *text : {&e.message(), &e.detail(), &e.hint()})
        check_safe_text(*text);
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    const std::string_view body(reinterpret_cast<const char *>(data), size);

    try {
        dfend::RegisterResult result = dfend::decode_register_response(body, kSecret);
        // What the decoder promises about an accepted reply.
        check(!result.id.empty());
        check(result.id.size() <= 256);
        for (char c : result.id)
            check(c >= 0x21 && c <= 0x7e);
        check(!has_secret(result.id));
    } catch (const dfend::Error &e) {
        check_error(e);
    }

    try {
        std::string kept = dfend::decode_identity_response(body, kSecret);
        // Valid JSON text for jsonb: UTF-8, no NUL, no secret however the
        // reply spelled it (the writer escapes only quotes, backslashes and
        // control characters, none of which the secret has).
        check(kept.find('\0') == std::string::npos);
        check(dfend_test::is_valid_utf8(kept));
        check(!has_secret(kept));
        check(nlohmann::json::accept(kept));
        // Written again, it stays the same.
        check(dfend::decode_identity_response(kept, kSecret) == kept);
    } catch (const dfend::Error &e) {
        check_error(e);
    }

    try {
        std::string message = dfend::extract_error_message(body, kSecret);
        // Bounded, printable, whole characters, no secret.
        check(message.size() <= 300 + 3 + 3);
        check_safe_text(message);
    } catch (const dfend::Error &) {
        // Allowed by the contract, though extract_error_message never throws.
    }

    std::string safe = dfend::safe_reply_text(body, kSecret, 300);
    check(safe.size() <= 300 + 3 + 3);
    check_safe_text(safe);
    if (safe.size() <= 300) // not cut: made safe once is made safe for good
        check(dfend::safe_reply_text(safe, kSecret) == safe);
    return 0;
}
