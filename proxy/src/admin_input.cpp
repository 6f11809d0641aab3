#include "admin_input.hpp"

#define SIMDJSON_EXCEPTIONS 0
#include <simdjson.h>

#include <fmt/format.h>

#include <charconv>
#include <ctime>

namespace tollgate::proxy::admin {

std::string query_param(std::string_view target, std::string_view name) {
    const auto q = target.find('?');
    if (q == std::string_view::npos) return {};
    auto rest = target.substr(q + 1);
    while (!rest.empty()) {
        const auto amp = rest.find('&');
        const auto pair = rest.substr(0, amp);
        const auto eq = pair.find('=');
        if (pair.substr(0, eq) == name) {
            // Percent-decoding: `+02:00` arrives as `%2B02%3A00`.
            const auto raw = eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
            std::string out;
            for (std::size_t i = 0; i < raw.size(); ++i) {
                unsigned v = 0;
                if (raw[i] == '%' && i + 2 < raw.size() &&
                    std::from_chars(raw.data() + i + 1, raw.data() + i + 3, v, 16).ptr == raw.data() + i + 3) {
                    out += static_cast<char>(v);
                    i += 2;
                } else {
                    out += raw[i];  // '+' stays '+': `from=…T10:00:00+02:00` typed as is
                }
            }
            return out;
        }
        if (amp == std::string_view::npos) break;
        rest.remove_prefix(amp + 1);
    }
    return {};
}

namespace {

// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
// days_from_civil, written out).
std::int64_t days_from_civil(std::int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const std::int64_t era = (y >= 0 ? y : y - 399) / 400;
    const auto yoe = static_cast<unsigned>(y - era * 400);
    const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + static_cast<std::int64_t>(doe) - 719468;
}

bool leap(std::int64_t y) {
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

std::optional<unsigned> digits(std::string_view text, std::size_t at, std::size_t n) {
    if (at + n > text.size()) return std::nullopt;
    unsigned v = 0;
    for (std::size_t i = at; i < at + n; ++i) {
        if (text[i] < '0' || text[i] > '9') return std::nullopt;
        v = v * 10 + static_cast<unsigned>(text[i] - '0');
    }
    return v;
}

}  // namespace

std::optional<std::int64_t> parse_time(std::string_view t) {
    const auto year = digits(t, 0, 4), month = digits(t, 5, 2), day = digits(t, 8, 2);
    if (!year || !month || !day || t.size() < 10 || t[4] != '-' || t[7] != '-') return std::nullopt;
    if (*year < 1970 || *month < 1 || *month > 12 || *day < 1) return std::nullopt;
    static constexpr std::array<unsigned, 12> month_days{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    const unsigned last = month_days[*month - 1] + (*month == 2 && leap(*year) ? 1 : 0);
    if (*day > last) return std::nullopt;
    std::int64_t ms = days_from_civil(*year, *month, *day) * 86'400'000;
    if (t.size() == 10) return ms;
    if (t[10] != 'T' && t[10] != 't' && t[10] != ' ') return std::nullopt;
    const auto hour = digits(t, 11, 2), minute = digits(t, 14, 2), second = digits(t, 17, 2);
    if (!hour || !minute || !second || t.size() < 20 || t[13] != ':' || t[16] != ':' || *hour > 23 ||
        *minute > 59 || *second > 59) {
        return std::nullopt;
    }
    ms += (*hour * 3600 + *minute * 60 + *second) * std::int64_t{1000};
    std::size_t at = 19;
    if (t[at] == '.') {
        std::size_t n = 0;
        std::int64_t fraction = 0;
        while (++at < t.size() && t[at] >= '0' && t[at] <= '9') {
            if (n++ < 3) fraction = fraction * 10 + (t[at] - '0');
        }
        if (n == 0) return std::nullopt;
        while (n++ < 3) fraction *= 10;
        ms += fraction;
    }
    const auto zone = t.substr(at);
    if (zone == "Z" || zone == "z") return ms;
    const auto zh = digits(zone, 1, 2), zm = digits(zone, 4, 2);
    if (zone.size() != 6 || (zone[0] != '+' && zone[0] != '-') || zone[3] != ':' || !zh || !zm || *zh > 23 ||
        *zm > 59) {
        return std::nullopt;
    }
    const std::int64_t offset = (*zh * 60 + *zm) * std::int64_t{60'000};
    return zone[0] == '+' ? ms - offset : ms + offset;
}

std::string rfc3339(std::int64_t ms) {
    const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&seconds, &tm);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                       tm.tm_hour, tm.tm_min, tm.tm_sec, ms % 1000);
}

std::string day_of(std::int64_t ms) {
    return rfc3339(ms).substr(0, 10);
}

body::body(const std::string& text) {
    if (!parse(text)) {
        members_.clear();
        code_ = "invalid_json";
        message_ = "The request body must be a JSON object";
    }
}

namespace {

// Reads a value to its end, so On Demand checks all of it (it steps over
// what nobody reads unchecked); nesting deeper than 64 is refused.
bool consume(simdjson::ondemand::value value, int depth) {
    if (depth > 64) return false;
    simdjson::ondemand::json_type type;
    if (value.type().get(type)) return false;
    switch (type) {
        case simdjson::ondemand::json_type::object: {
            simdjson::ondemand::object obj;
            if (value.get_object().get(obj)) return false;
            for (auto field : obj) {
                std::string_view key;
                simdjson::ondemand::value v;
                if (field.unescaped_key().get(key) || field.value().get(v) || !consume(v, depth + 1)) return false;
            }
            return true;
        }
        case simdjson::ondemand::json_type::array: {
            simdjson::ondemand::array items;
            if (value.get_array().get(items)) return false;
            for (auto item : items) {
                simdjson::ondemand::value v;
                if (item.get(v) || !consume(v, depth + 1)) return false;
            }
            return true;
        }
        case simdjson::ondemand::json_type::string: {
            std::string_view ignored;
            return !value.get_string().get(ignored);
        }
        case simdjson::ondemand::json_type::number: {
            double ignored = 0;  // any JSON number reads as a double; no money goes through here
            return !value.get_double().get(ignored);
        }
        case simdjson::ondemand::json_type::boolean: {
            bool ignored = false;
            return !value.get_bool().get(ignored);
        }
        case simdjson::ondemand::json_type::null: {
            bool null = false;
            return !value.is_null().get(null) && null;
        }
    }
    return false;
}

}  // namespace

// On Demand reads the members; every value, read or not, is consumed to
// its end so malformed JSON anywhere is refused. The DOM parser checks the
// text first, trailing content included (it calls a number beyond 64 bits
// a NUMBER_ERROR: that one error is left to the reading below, which reads
// every number).
bool body::parse(const std::string& text) {
    {
        simdjson::dom::parser whole;
        const auto error = whole.parse(text).error();
        if (error && error != simdjson::NUMBER_ERROR) return false;
    }
    simdjson::ondemand::parser parser;
    simdjson::padded_string padded(text);
    simdjson::ondemand::document doc;
    simdjson::ondemand::object obj;
    if (parser.iterate(padded).get(doc) || doc.get_object().get(obj)) return false;
    for (auto field : obj) {
        std::string_view key;
        simdjson::ondemand::value value;
        if (field.unescaped_key().get(key) || field.value().get(value)) return false;
        simdjson::ondemand::json_type type;
        if (value.type().get(type)) return false;
        member m{member::kind::other, {}, 0, {}};
        switch (type) {
            case simdjson::ondemand::json_type::string: {
                std::string_view s;
                if (value.get_string().get(s)) return false;
                m = {member::kind::string, std::string(s), 0, {}};
                break;
            }
            case simdjson::ondemand::json_type::number: {
                std::int64_t v = 0;
                if (!value.get_int64().get(v)) {
                    m = {member::kind::integer, {}, v, {}};
                } else {
                    double ignored = 0;  // only to check and consume the token: not a money value
                    if (value.get_double().get(ignored)) return false;
                    m.type = member::kind::number;
                }
                break;
            }
            case simdjson::ondemand::json_type::boolean: {
                bool b = false;
                if (value.get_bool().get(b)) return false;
                m.type = member::kind::boolean;
                break;
            }
            case simdjson::ondemand::json_type::null: {
                bool null = false;
                if (value.is_null().get(null) || !null) return false;
                m.type = member::kind::null;
                break;
            }
            case simdjson::ondemand::json_type::array: {
                simdjson::ondemand::array items;
                if (value.get_array().get(items)) return false;
                m.type = member::kind::strings;
                for (auto item : items) {
                    simdjson::ondemand::value v;
                    if (item.get(v)) return false;
                    std::string_view s;
                    simdjson::ondemand::json_type item_type;
                    if (v.type().get(item_type)) return false;
                    if (item_type == simdjson::ondemand::json_type::string) {
                        if (v.get_string().get(s)) return false;
                        if (m.type == member::kind::strings) m.strings.emplace_back(s);
                    } else {
                        if (!consume(v, 1)) return false;
                        m.type = member::kind::other;  // not all strings
                        m.strings.clear();
                    }
                }
                break;
            }
            case simdjson::ondemand::json_type::object:
                if (!consume(value, 0)) return false;
                break;
        }
        members_.insert_or_assign(std::string(key), std::move(m));
    }
    return true;
}

const body::member* body::find(std::string_view name, bool required) {
    if (failed()) return nullptr;
    const auto it = members_.find(name);
    if (it == members_.end() || it->second.type == member::kind::null) {
        if (required) refuse(name, fmt::format("'{}' is required", name)), code_ = "missing_required_parameter";
        return nullptr;
    }
    return &it->second;
}

void body::refuse(std::string_view param, std::string message) {
    if (failed()) return;
    code_ = "invalid_value";
    param_ = std::string(param);
    message_ = std::move(message);
}

std::optional<std::string> body::text(std::string_view name, bool required, std::size_t max_size) {
    const auto* m = find(name, required);
    if (!m) return std::nullopt;
    if (m->type != member::kind::string) {
        refuse(name, fmt::format("'{}' must be a string", name));
        code_ = "invalid_type";
        return std::nullopt;
    }
    if (m->string.size() > max_size) {
        refuse(name, fmt::format("'{}' must be at most {} bytes", name, max_size));
        return std::nullopt;
    }
    return m->string;
}

std::optional<std::int64_t> body::integer(std::string_view name, bool required, std::int64_t min, std::int64_t max) {
    const auto* m = find(name, required);
    if (!m) return std::nullopt;
    if (m->type != member::kind::integer) {
        if (m->type == member::kind::number) {
            refuse(name, fmt::format("'{}' must be an integer from {} to {}", name, min, max));
        } else {
            refuse(name, fmt::format("'{}' must be an integer", name));
            code_ = "invalid_type";
        }
        return std::nullopt;
    }
    if (m->integer < min || m->integer > max) {
        refuse(name, fmt::format("'{}' must be an integer from {} to {}", name, min, max));
        return std::nullopt;
    }
    return m->integer;
}

std::optional<std::vector<std::string>> body::string_list(std::string_view name, bool required) {
    const auto* m = find(name, required);
    if (!m) return std::nullopt;
    if (m->type != member::kind::strings) {
        refuse(name, fmt::format("'{}' must be an array of strings", name));
        code_ = "invalid_type";
        return std::nullopt;
    }
    if (m->strings.size() > 16) {
        refuse(name, fmt::format("'{}' may hold at most 16 strings", name));
        return std::nullopt;
    }
    for (const auto& s : m->strings) {
        if (s.size() > 64) {
            refuse(name, fmt::format("'{}' holds a string longer than 64 bytes", name));
            return std::nullopt;
        }
    }
    return m->strings;
}

std::optional<std::int64_t> body::time(std::string_view name, bool required) {
    const auto t = text(name, required, 64);
    if (!t) return std::nullopt;
    const auto ms = parse_time(*t);
    if (!ms) refuse(name, fmt::format("'{}' must be an RFC 3339 time or a YYYY-MM-DD date", name));
    return ms;
}

}  // namespace tollgate::proxy::admin
