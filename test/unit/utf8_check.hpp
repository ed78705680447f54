// Shared by the unit tests and the fuzz target: whether bytes are
// well-formed UTF-8 as PostgreSQL reads it (no overlong forms, no
// surrogates, nothing above U+10FFFF, no cut sequences).
#pragma once

#include <cstddef>
#include <string>

namespace dfend_test {

inline bool is_valid_utf8(const std::string &s)
{
    std::size_t i = 0;
    while (i < s.size()) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        std::size_t n = c < 0x80 ? 1 : (c >= 0xC2 && c <= 0xDF) ? 2 : (c >> 4) == 14 ? 3
                                   : (c >= 0xF0 && c <= 0xF4) ? 4 : 0;
        if (n == 0 || i + n > s.size())
            return false;
        unsigned long value = n == 1 ? c : c & (0x7F >> n);
        for (std::size_t k = 1; k < n; ++k) {
            unsigned char next = static_cast<unsigned char>(s[i + k]);
            if ((next & 0xC0) != 0x80)
                return false;
            value = (value << 6) | (next & 0x3F);
        }
        if ((n == 3 && value < 0x800) || (n == 4 && (value < 0x10000 || value > 0x10FFFF)) ||
            (value >= 0xD800 && value <= 0xDFFF))
            return false;
        i += n;
    }
    return true;
}

} // namespace dfend_test
