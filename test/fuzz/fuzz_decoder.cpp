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


} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t *data, std::size_t size)
{
    const std::string_view body(reinterpret_cast<const char *>(data), size);

    try {
        dfend::RegisterResult result = dfend::decode_register_response(body);
        // What the decoder promises about an accepted reply.
        check(!result.id.empty());
        check(result.id.size() <= 256);
        check(result.id.find('\0') == std::string::npos);
        check(dfend_test::is_valid_utf8(result.id));
    } catch (const dfend::Error &e) {
        check(e.kind() == dfend::ErrorKind::BadResponse);
    }

    try {
        std::string kept = dfend::decode_identity_response(body);
        // Kept byte for byte, and storable as PostgreSQL text.
        check(kept == body);
        check(kept.find('\0') == std::string::npos);
        check(dfend_test::is_valid_utf8(kept));
    } catch (const dfend::Error &e) {
        check(e.kind() == dfend::ErrorKind::BadResponse);
    }

    try {
        std::string message = dfend::extract_error_message(body);
        // Bounded, printable, whole characters.
        check(message.size() <= 300 + 3 + 3);
        check(dfend_test::is_valid_utf8(message));
        for (char c : message)
            check(static_cast<unsigned char>(c) >= 0x20 && c != 0x7f);
    } catch (const dfend::Error &) {
        // Allowed by the contract, though extract_error_message never throws.
    }
    return 0;
}
