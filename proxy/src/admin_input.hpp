// Reading an admin API request (SPEC 6): query parameters, the JSON body's
// members with their types checked, and times. Pure parsing without
// sockets, so the fuzzers can drive it (tests/fuzz/admin_input_fuzz.cpp).
#pragma once

#include <array>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::proxy::admin {

// A query parameter's value, percent-decoded ("" when absent or empty); a
// '+' stays a '+', so a time's offset may be typed as it is.
std::string query_param(std::string_view target, std::string_view name);

// The JSON body's top-level members, read once. Each getter records the
// first problem (missing, wrong type, out of range) with the field it
// concerns; `failed()` then answers 400 with that `param`. Unknown members
// are ignored (SPEC 6).
class body {
public:
    explicit body(const std::string& text);
    std::optional<std::string> text(std::string_view name, bool required, std::size_t max_size = 4096);
    std::optional<std::int64_t> integer(std::string_view name, bool required, std::int64_t min, std::int64_t max);
    // An array of strings (at most 16 of at most 64 bytes).
    std::optional<std::vector<std::string>> string_list(std::string_view name, bool required);
    // An RFC 3339 time or a YYYY-MM-DD day (midnight UTC), as Unix ms.
    std::optional<std::int64_t> time(std::string_view name, bool required);
    // A problem found by the caller itself, reported the same way.
    void refuse(std::string_view param, std::string message);
    bool failed() const { return !message_.empty(); }
    // The first problem: an error code, the field, a message.
    const std::string& code() const { return code_; }
    const std::string& param() const { return param_; }
    const std::string& message() const { return message_; }

private:
    struct member {
        enum class kind : std::uint8_t { string, integer, number, boolean, null, strings, other } type;
        std::string string;
        std::int64_t integer = 0;
        std::vector<std::string> strings;
    };
    bool parse(const std::string& text);
    const member* find(std::string_view name, bool required);
    std::map<std::string, member, std::less<>> members_;
    std::string code_;
    std::string param_;
    std::string message_;
};

// RFC 3339 (`2026-11-24T10:00:00Z`, `…+02:00`, fractions) or `YYYY-MM-DD`.
std::optional<std::int64_t> parse_time(std::string_view text);
std::string rfc3339(std::int64_t ms);
std::string day_of(std::int64_t ms);  // YYYY-MM-DD, UTC

// The two ends of a time window, in the order they are read. (Outside the
// coroutines: GCC 12 cannot keep a braced list's array in a coroutine frame.)
inline constexpr std::array<std::string_view, 2> window_ends{"from", "to"};

}  // namespace tollgate::proxy::admin
