#include "error.hpp"

namespace dfend {

const char *kind_name(ErrorKind kind) noexcept
{
    switch (kind) {
    case ErrorKind::InvalidArgument: return "invalid argument";
    case ErrorKind::Configuration: return "configuration";
    case ErrorKind::Unauthorized: return "unauthorized";
    case ErrorKind::RateLimited: return "rate limited";
    case ErrorKind::Upstream: return "upstream failure";
    case ErrorKind::BadResponse: return "bad response";
    case ErrorKind::ConnectFailed: return "could not connect";
    case ErrorKind::TlsVerification: return "TLS verification";
    case ErrorKind::ConnectionLost: return "connection lost";
    case ErrorKind::Timeout: return "timeout";
    case ErrorKind::Cancelled: return "cancelled";
    case ErrorKind::Internal: return "internal";
    }
    return "unknown";
}

bool is_transient(ErrorKind kind) noexcept
{
    switch (kind) {
    case ErrorKind::RateLimited:
    case ErrorKind::Upstream:
    case ErrorKind::ConnectFailed:
    case ErrorKind::ConnectionLost:
    case ErrorKind::Timeout:
        return true;
    default:
        return false;
    }
}

} // namespace dfend

namespace dfend {

void Error::append_detail(std::string_view sentence)
{
    if (!detail_.empty())
        detail_ += ' ';
    detail_ += sentence;
}

namespace {

constexpr std::size_t kInvalid = 0;

// Length of the well-formed UTF-8 character at text[at] (and its code point),
// or kInvalid: overlong forms, surrogates, values above U+10FFFF and cut
// sequences are not well-formed (the rules PostgreSQL's pg_utf8_islegal uses).
std::size_t utf8_character(std::string_view text, std::size_t at, char32_t *code_point)
{
    const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(text[at + i]); };
    const unsigned char lead = byte(0);
    std::size_t length;
    char32_t value;
    char32_t minimum;
    if (lead < 0x80) {
        *code_point = lead;
        return 1;
    } else if (lead >= 0xC2 && lead <= 0xDF) {
        length = 2, value = lead & 0x1F, minimum = 0x80;
    } else if (lead >= 0xE0 && lead <= 0xEF) {
        length = 3, value = lead & 0x0F, minimum = 0x800;
    } else if (lead >= 0xF0 && lead <= 0xF4) {
        length = 4, value = lead & 0x07, minimum = 0x10000;
    } else {
        return kInvalid;
    }
    if (text.size() - at < length)
        return kInvalid;
    for (std::size_t i = 1; i < length; ++i) {
        if ((byte(i) & 0xC0) != 0x80)
            return kInvalid;
        value = (value << 6) | (byte(i) & 0x3F);
    }
    if (value < minimum || value > 0x10FFFF || (value >= 0xD800 && value <= 0xDFFF))
        return kInvalid;
    *code_point = value;
    return length;
}

bool is_control(char32_t c)
{
    return c < 0x20 || (c >= 0x7F && c <= 0x9F);
}

// Default-ignorable and bidi format characters: they show as nothing, so
// they can hide inside a key or reorder what a terminal shows.
bool is_invisible(char32_t c)
{
    return c == 0xAD || c == 0x34F || c == 0x61C || c == 0x115F || c == 0x1160 ||
           c == 0x17B4 || c == 0x17B5 || (c >= 0x180B && c <= 0x180F) ||
           (c >= 0x200B && c <= 0x200F) || (c >= 0x202A && c <= 0x202E) ||
           (c >= 0x2060 && c <= 0x206F) || c == 0x3164 || (c >= 0xFE00 && c <= 0xFE0F) ||
           c == 0xFEFF || c == 0xFFA0 || (c >= 0xFFF0 && c <= 0xFFF8) ||
           (c >= 0x1BCA0 && c <= 0x1BCA3) || (c >= 0x1D173 && c <= 0x1D17A) ||
           (c >= 0xE0000 && c <= 0xE0FFF);
}

bool is_blank(char32_t c)
{
    return c == ' ' || c == 0xA0 || c == 0x1680 || (c >= 0x2000 && c <= 0x200A) ||
           c == 0x2028 || c == 0x2029 || c == 0x202F || c == 0x205F || c == 0x3000;
}

// Length of a character at text[at] that a reader would not see between two
// characters of a key, or 0 when there is none there.
std::size_t separator_length(std::string_view text, std::size_t at)
{
    char32_t c = 0;
    std::size_t length = utf8_character(text, at, &c);
    if (length == kInvalid)
        return 1; // a byte that is not UTF-8 shows as U+FFFD at most
    if (is_control(c) || is_invisible(c) || is_blank(c) || c == 0xFFFD)
        return length;
    return 0;
}

// End of a match of `secret` that starts at text[at], or npos.
std::size_t match_end(std::string_view text, std::size_t at, std::string_view secret)
{
    std::size_t matched = 0;
    while (at < text.size()) {
        if (text[at] == secret[matched]) {
            ++at;
            if (++matched == secret.size())
                return at;
            continue;
        }
        std::size_t skip = matched ? separator_length(text, at) : 0;
        if (skip == 0)
            return std::string_view::npos;
        at += skip;
    }
    return std::string_view::npos;
}

void append_cut(std::string &out, const std::string &text, std::size_t cut)
{
    if (text.size() <= cut) {
        out += text;
        return;
    }
    std::size_t end = cut;
    while (end < text.size() && (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80)
        ++end; // finish the character that crosses the limit
    out.append(text, 0, end);
    out += "...";
}

} // namespace

void redact_secret(std::string &text, std::string_view secret)
{
    if (secret.empty())
        return;
    std::string out;
    std::size_t copied = 0;
    for (std::size_t at = 0; at < text.size();) {
        std::size_t end = text[at] == secret[0] ? match_end(text, at, secret)
                                                : std::string_view::npos;
        if (end == std::string_view::npos) {
            ++at;
            continue;
        }
        out.append(text, copied, at - copied);
        out += "[redacted]";
        at = copied = end;
    }
    if (copied == 0)
        return;
    out.append(text, copied, std::string::npos);
    text = std::move(out);
}

std::string safe_reply_text(std::string_view text, std::string_view secret, std::size_t cut)
{
    std::string clean;
    clean.reserve(text.size());
    for (std::size_t at = 0; at < text.size();) {
        char32_t c = 0;
        std::size_t length = utf8_character(text, at, &c);
        if (length == kInvalid) {
            clean += "\xEF\xBF\xBD"; // U+FFFD for each byte that is not UTF-8
            ++at;
            continue;
        }
        if (is_control(c))
            clean += ' ';
        else if (!is_invisible(c))
            clean.append(text.substr(at, length));
        at += length;
    }
    redact_secret(clean, secret);
    if (cut == kNoCut)
        return clean;
    std::string result;
    append_cut(result, clean, cut);
    return result;
}

void Error::redact(std::string_view secret)
{
    for (std::string *text : {&message_, &detail_, &hint_})
        *text = safe_reply_text(*text, secret);
}

} // namespace dfend
