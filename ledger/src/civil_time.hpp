// Calendar arithmetic on Unix milliseconds (UTC), for period boundaries and
// daily rollups. Days-from-civil after Howard Hinnant's public-domain
// algorithms; exact for the proleptic Gregorian calendar.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>

namespace tollgate::ledger::civil {

inline constexpr std::int64_t ms_per_day = 86'400'000;

struct date {
    std::int64_t year;
    unsigned month;  // 1..12
    unsigned day;    // 1..31
};

constexpr std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
    const auto yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

constexpr date civil_from_days(std::int64_t z) {
    z += 719468;
    const std::int64_t era = (z >= 0 ? z : z - 146096) / 146097;
    const auto doe = static_cast<unsigned>(z - era * 146097);
    const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    const std::int64_t y = static_cast<std::int64_t>(yoe) + era * 400;
    const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    const unsigned mp = (5 * doy + 2) / 153;
    const unsigned d = doy - (153 * mp + 2) / 5 + 1;
    const unsigned m = mp < 10 ? mp + 3 : mp - 9;
    return {y + (m <= 2), m, d};
}

constexpr bool is_leap(std::int64_t y) { return y % 4 == 0 && (y % 100 != 0 || y % 400 == 0); }

constexpr unsigned last_day_of_month(std::int64_t y, unsigned m) {
    constexpr unsigned days[] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap(y) ? 29 : days[m - 1];
}

constexpr std::int64_t floor_div(std::int64_t a, std::int64_t b) { return a / b - ((a % b != 0) && ((a < 0) != (b < 0))); }

// `anchor_ms` moved by `months` calendar months, keeping the time of day and
// clamping the day to the target month's last day (an anchor on the 31st
// gives Feb 28/29, Mar 31, Apr 30, ...). Always computed from the anchor, so
// a clamp never sticks.
constexpr std::int64_t add_months_clamped(std::int64_t anchor_ms, std::int64_t months) {
    const std::int64_t days = floor_div(anchor_ms, ms_per_day);
    const std::int64_t time_of_day_ms = anchor_ms - days * ms_per_day;
    const date a = civil_from_days(days);
    const std::int64_t month_index = a.year * 12 + (a.month - 1) + months;
    const std::int64_t y = floor_div(month_index, 12);
    const auto m = static_cast<unsigned>(month_index - y * 12 + 1);
    const unsigned last = last_day_of_month(y, m);
    const unsigned d = a.day < last ? a.day : last;
    return days_from_civil(y, m, d) * ms_per_day + time_of_day_ms;
}

// The first boundary strictly after `after_ms` on the anchor's monthly grid.
constexpr std::int64_t next_boundary_after(std::int64_t anchor_ms, std::int64_t after_ms) {
    const date a = civil_from_days(floor_div(anchor_ms, ms_per_day));
    const date b = civil_from_days(floor_div(after_ms, ms_per_day));
    std::int64_t n = (b.year - a.year) * 12 + (static_cast<std::int64_t>(b.month) - a.month) - 1;
    if (n < 1) n = 1;
    while (add_months_clamped(anchor_ms, n) <= after_ms) ++n;
    while (n > 1 && add_months_clamped(anchor_ms, n - 1) > after_ms) --n;
    return add_months_clamped(anchor_ms, n);
}

inline std::string format_day(std::int64_t time_ms) {
    const date d = civil_from_days(floor_div(time_ms, ms_per_day));
    char buffer[32];
    const int n = std::snprintf(buffer, sizeof buffer, "%04lld-%02u-%02u", static_cast<long long>(d.year), d.month, d.day);
    return std::string(buffer, static_cast<std::size_t>(n));
}

}  // namespace tollgate::ledger::civil
