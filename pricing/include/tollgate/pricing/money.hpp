// Exact money arithmetic for prices. Upstream prices are USD per unit as
// decimal text ("0.000000075", "7.1e-05", "-1"); they become integer pico-USD
// (1e-12 USD) here, never through double. Charges are micro-USD.
#pragma once

#include <cstdint>
#include <string_view>

namespace tollgate::pricing {

// 128-bit integers for exact intermediate products (GCC and Clang).
__extension__ typedef __int128 int128;
__extension__ typedef unsigned __int128 uint128;

inline constexpr std::int64_t pico_per_micro = 1'000'000;
inline constexpr std::int64_t pico_per_usd = 1'000'000'000'000;
// The largest price or cost accepted: $1,000,000 (1e18 pico), so sums of a
// few such values stay inside int64.
inline constexpr std::int64_t max_pico = 1'000'000'000'000'000'000;

enum class price_status : std::uint8_t {
    ok,
    unknown,       // negative ("-1"): priced by the router, known only from usage.cost
    invalid,       // not a decimal number
    out_of_range,  // above max_pico
};

struct pico_price {
    price_status status = price_status::invalid;
    std::int64_t pico = 0;  // meaningful when status is ok
};

// Parses USD decimal text, with an optional exponent ("7.1e-05") as JSON
// numbers have it, into pico-USD. Digits beyond the 12th decimal are rounded
// half-up once ("0.00000008333333333333334" -> 83333; "0.0000000000005" -> 1).
// A leading '+' or whitespace is invalid; "-0" is zero.
pico_price parse_usd_pico(std::string_view text);

// round_half_up(pico / 1e6) for a non-negative amount: the one rounding a
// charge goes through (SPEC section 2).
constexpr std::int64_t pico_to_micros_half_up(std::int64_t pico) { return (pico + pico_per_micro / 2) / pico_per_micro; }

}  // namespace tollgate::pricing
