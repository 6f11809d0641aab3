#include "tollgate/pricing/money.hpp"

namespace tollgate::pricing {

namespace {

constexpr bool is_digit(char c) { return c >= '0' && c <= '9'; }

// Exponents beyond this cannot matter: every accepted value has at most 19
// integer digits and anything below 1e-13 rounds to zero.
constexpr int max_exponent_magnitude = 10'000;

}  // namespace

pico_price parse_usd_pico(std::string_view text) {
    std::size_t i = 0;
    bool negative = false;
    if (i < text.size() && text[i] == '-') {
        negative = true;
        ++i;
    }
    // Mantissa: digits, optionally one '.', at least one digit in all.
    // Significant digits go into `digits` (leading zeros dropped); `scale` is
    // the power of ten of the last digit kept.
    char digits[64];
    int count = 0;
    bool any_digit = false, seen_point = false;
    int exponent10 = 0;  // value = digits * 10^exponent10 (before the explicit exponent)
    for (; i < text.size(); ++i) {
        const char c = text[i];
        if (c == '.') {
            if (seen_point) return {};
            seen_point = true;
            continue;
        }
        if (!is_digit(c)) break;
        any_digit = true;
        if (count == 0 && c == '0') {
            if (seen_point) --exponent10;
            continue;
        }
        if (count < static_cast<int>(sizeof digits)) {
            digits[count++] = c;
            if (seen_point) --exponent10;
        } else if (!seen_point) {
            return {price_status::out_of_range, 0};
        }
        // Significant digits past the 64th are far below a pico: the digit
        // that decides rounding is always among the kept ones.
    }
    if (!any_digit) return {};
    if (i < text.size() && (text[i] == 'e' || text[i] == 'E')) {
        ++i;
        bool exponent_negative = false;
        if (i < text.size() && (text[i] == '+' || text[i] == '-')) exponent_negative = text[i++] == '-';
        if (i == text.size() || !is_digit(text[i])) return {};
        int e = 0;
        for (; i < text.size() && is_digit(text[i]); ++i) {
            if (e < max_exponent_magnitude) e = e * 10 + (text[i] - '0');
        }
        exponent10 += exponent_negative ? -e : e;
    }
    if (i != text.size()) return {};

    if (count == 0) return {price_status::ok, 0};  // zero, including "-0"
    if (negative) return {price_status::unknown, 0};

    // pico = digits * 10^(exponent10 + 12), rounded half-up.
    const int shift = exponent10 + 12;
    if (shift >= 0) {
        if (count + shift > 19) return {price_status::out_of_range, 0};
        uint128 value = 0;
        for (int d = 0; d < count; ++d) value = value * 10 + static_cast<unsigned>(digits[d] - '0');
        for (int s = 0; s < shift; ++s) value *= 10;
        if (value > static_cast<uint128>(max_pico)) return {price_status::out_of_range, 0};
        return {price_status::ok, static_cast<std::int64_t>(value)};
    }
    // Keep the first count + shift digits; the first dropped one decides.
    const int keep = count + shift;
    if (keep < 0) return {price_status::ok, 0};  // below half a pico
    if (keep > 19) return {price_status::out_of_range, 0};
    uint128 value = 0;
    for (int d = 0; d < keep; ++d) value = value * 10 + static_cast<unsigned>(digits[d] - '0');
    if (keep < count && digits[keep] >= '5') ++value;  // half-up: the first dropped digit decides
    if (value > static_cast<uint128>(max_pico)) return {price_status::out_of_range, 0};
    return {price_status::ok, static_cast<std::int64_t>(value)};
}

}  // namespace tollgate::pricing
