// Decimal USD text -> pico-USD: exact, half-up, no double. Checked against an
// int128 reference on 100,000+ seeded random decimals.
#include "tollgate/pricing/money.hpp"

#include <catch2/catch.hpp>

#include <random>
#include <string>

using namespace tollgate::pricing;

namespace {
pico_price p(const char* text) { return parse_usd_pico(text); }
}  // namespace

TEST_CASE("prices parse exactly into pico-USD", "[pricing][money]") {
    CHECK(p("0.000000075").pico == 75'000);
    CHECK(p("0.00000015").pico == 150'000);
    CHECK(p("0.0048").pico == 4'800'000'000);
    CHECK(p("0.014").pico == 14'000'000'000);
    CHECK(p("0").pico == 0);
    CHECK(p("0").status == price_status::ok);
    CHECK(p("0.0").pico == 0);
    CHECK(p("10").pico == 10'000'000'000'000);
    CHECK(p("1000000").pico == max_pico);
    CHECK(p("001.5000").pico == 1'500'000'000'000);
    CHECK(p("5.").pico == 5'000'000'000'000);
    CHECK(p(".5").pico == 500'000'000'000);
}

TEST_CASE("digits beyond the 12th decimal round half-up once", "[pricing][money]") {
    CHECK(p("0.00000008333333333333334").pico == 83'333);  // SPEC section 2
    CHECK(p("0.0000000208333333333333").pico == 20'833);
    CHECK(p("0.00000838323353293413").pico == 8'383'234);
    CHECK(p("0.0000000000005").pico == 1);
    CHECK(p("0.00000000000049999999999").pico == 0);
    CHECK(p("0.0000000000015").pico == 2);
    CHECK(p("0.0000000000025").pico == 3);  // half-up, not to even
    CHECK(p("0.000000000000999").pico == 1);
    CHECK(p("0.00000000000000000000000000000000000000001").pico == 0);
}

TEST_CASE("the exponent form of JSON numbers is exact too", "[pricing][money]") {
    CHECK(p("7.1e-05").pico == 71'000'000);
    CHECK(p("7.1E-05").pico == 71'000'000);
    CHECK(p("1e-12").pico == 1);
    CHECK(p("5e-13").pico == 1);
    CHECK(p("4.9e-13").pico == 0);
    CHECK(p("1.5e+2").pico == 150'000'000'000'000);
    CHECK(p("2e5").pico == 200'000'000'000'000'000);
    CHECK(p("0.00012e3").pico == 120'000'000'000);
    CHECK(p("1e-400").pico == 0);
    CHECK(p("1e-99999999999").status == price_status::ok);
}

TEST_CASE("negative prices mean unknown; junk is invalid; huge is out of range", "[pricing][money]") {
    CHECK(p("-1").status == price_status::unknown);
    CHECK(p("-0.5").status == price_status::unknown);
    CHECK(p("-0").status == price_status::ok);
    CHECK(p("-0").pico == 0);
    for (const char* bad : {"", "-", ".", "abc", "1.2.3", "1e", "1e+", "e5", "+1", " 1", "1 ", "1,5", "0x10", "NaN",
                            "inf", "1..", "--1", "1e5.5"}) {
        CAPTURE(bad);
        CHECK(p(bad).status == price_status::invalid);
    }
    CHECK(p("1000000.000000000001").status == price_status::out_of_range);
    CHECK(p("1000001").status == price_status::out_of_range);
    CHECK(p("1e400").status == price_status::out_of_range);
    CHECK(p("99999999999999999999999999999999999999999999999999999999999999999999999").status ==
          price_status::out_of_range);
    CHECK(p("0.0000000000000000000000000000000000000000000000000000000000000000000000000000001").pico == 0);
}

TEST_CASE("100,000 random decimals agree with an int128 reference", "[pricing][money]") {
    std::mt19937_64 rng(20261124);
    for (int i = 0; i < 120'000; ++i) {
        // value = mantissa / 10^decimals USD, mantissa up to 18 digits.
        const int digits = 1 + static_cast<int>(rng() % 18);
        uint128 mantissa = 0;
        std::string m;
        for (int d = 0; d < digits; ++d) {
            const int c = static_cast<int>(rng() % 10);
            m += static_cast<char>('0' + c);
            mantissa = mantissa * 10 + static_cast<unsigned>(c);
        }
        const int decimals = static_cast<int>(rng() % 26);
        std::string text;
        if (decimals >= digits) {
            text = "0." + std::string(static_cast<std::size_t>(decimals - digits), '0') + m;
        } else if (decimals == 0) {
            text = m;
        } else {
            text = m.substr(0, static_cast<std::size_t>(digits - decimals)) + "." +
                   m.substr(static_cast<std::size_t>(digits - decimals));
        }
        // Reference: round_half_up(mantissa * 10^12 / 10^decimals).
        uint128 want = mantissa;
        if (decimals <= 12) {
            for (int k = 0; k < 12 - decimals; ++k) want *= 10;
        } else {
            uint128 divisor = 1;
            for (int k = 0; k < decimals - 12; ++k) divisor *= 10;
            want = (want + divisor / 2) / divisor;
        }
        const auto got = parse_usd_pico(text);
        INFO("case " << i << ": " << text);
        if (want > static_cast<uint128>(max_pico)) {
            REQUIRE(got.status == price_status::out_of_range);
        } else {
            REQUIRE(got.status == price_status::ok);
            REQUIRE(static_cast<uint128>(got.pico) == want);
        }
        // The same value in exponent form.
        const std::string sci = m + "e-" + std::to_string(decimals);
        const auto got_sci = parse_usd_pico(sci);
        if (want <= static_cast<uint128>(max_pico)) REQUIRE(static_cast<uint128>(got_sci.pico) == want);
    }
}

TEST_CASE("a charge rounds half-up once from pico to micros", "[pricing][money]") {
    CHECK(pico_to_micros_half_up(0) == 0);
    CHECK(pico_to_micros_half_up(499'999) == 0);
    CHECK(pico_to_micros_half_up(500'000) == 1);
    CHECK(pico_to_micros_half_up(1'500'000) == 2);
    CHECK(pico_to_micros_half_up(2'500'000) == 3);
    CHECK(pico_to_micros_half_up(max_pico) == 1'000'000'000'000);
}
