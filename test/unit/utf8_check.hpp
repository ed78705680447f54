// Shared by the unit tests and the fuzz target: whether bytes are
// well-formed UTF-8 (lead byte, length, continuation bytes).
#pragma once

#include <cstddef>
#include <string>

namespace dfend_test {

inline bool is_valid_utf8(const std::string &s)
{
    std::size_t i = 0;
    while (i < s.size()) {
        unsigned char c = static_cast<unsigned char>(s[i]);
        std::size_t n = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
        if (n == 0 || i + n > s.size())
            return false;
        for (std::size_t k = 1; k < n; ++k)
            if ((static_cast<unsigned char>(s[i + k]) & 0xC0) != 0x80)
                return false;
        i += n;
    }
    return true;
}

} // namespace dfend_test
