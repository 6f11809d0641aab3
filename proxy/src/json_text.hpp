// Where an object's members sit in JSON text, for the two byte-preserving
// edits the proxy makes (force_include_usage, remove_usage_member). The text
// is first checked whole by simdjson (is_json_object); the scanner then only
// finds where keys and values begin and end, so every byte it does not edit
// stays as it was. It never recurses (nesting costs no stack) and, given
// text that is not JSON after all, returns false instead of reading past it.
#pragma once

// No exceptions: every simdjson result is checked (see pricing/src/catalog.cpp).
#define SIMDJSON_EXCEPTIONS 0
#include <simdjson.h>

#include <cstddef>
#include <cstring>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::proxy::json_text {

inline constexpr std::size_t npos = std::string_view::npos;

// simdjson's own check: well-formed JSON (UTF-8, numbers, escapes, nesting up
// to simdjson's depth limit) whose root is an object. Copies into padding.
inline bool is_json_object(std::string_view text) {
    simdjson::dom::parser parser;
    const simdjson::padded_string padded(text);
    simdjson::dom::element root;
    if (parser.parse(padded).get(root)) return false;
    return root.type() == simdjson::dom::element_type::OBJECT;
}

constexpr bool is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

inline std::size_t skip_space(std::string_view s, std::size_t i) {
    while (i < s.size() && is_space(s[i])) ++i;
    return i;
}

// s[i] is the opening quote; returns the index past the closing one.
inline std::size_t skip_string(std::string_view s, std::size_t i) {
    for (++i; i < s.size(); ++i) {
        if (s[i] == '\\') {
            ++i;
        } else if (s[i] == '"') {
            return i + 1;
        }
    }
    return npos;
}

// JSON's number grammar: -?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?
// (On-Demand hands out a number's raw text, and fails get_int64() alike for
// 1.5 and 12x, without telling them apart).
inline bool is_json_number(std::string_view t) {
    std::size_t i = 0;
    auto digits = [&] {
        const std::size_t from = i;
        while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i;
        return i > from;
    };
    if (i < t.size() && t[i] == '-') ++i;
    if (i < t.size() && t[i] == '0') {
        ++i;
    } else if (!digits()) {
        return false;
    }
    if (i < t.size() && t[i] == '.') {
        ++i;
        if (!digits()) return false;
    }
    if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
        ++i;
        if (i < t.size() && (t[i] == '+' || t[i] == '-')) ++i;
        if (!digits()) return false;
    }
    return i == t.size();
}

// A number value's own text, checked; empty when it is malformed.
inline std::string_view number_text(simdjson::ondemand::value& v) {
    std::string_view text = v.raw_json_token();
    while (!text.empty() && is_space(text.back())) text.remove_suffix(1);
    return is_json_number(text) ? text : std::string_view{};
}

// Calls fn(key, value) for each member of `v` when it is an object (any
// other type is skipped). False on malformed JSON or when fn says so.
template <class F>
bool each_member(simdjson::ondemand::value v, F&& fn) {
    simdjson::ondemand::json_type type;
    if (v.type().get(type)) return false;
    if (type != simdjson::ondemand::json_type::object) return true;
    simdjson::ondemand::object o;
    if (v.get_object().get(o)) return false;
    for (auto field : o) {
        std::string_view key;
        simdjson::ondemand::value fv;
        if (field.unescaped_key().get(key) || field.value().get(fv) || !fn(key, fv)) return false;
    }
    return true;
}

// Parses `text` as one JSON object and calls fn(key, value) for each of its
// members, in order. False when the text is not exactly one object (trailing
// bytes included), is malformed, or fn says so.
template <class F>
bool each_root_member(std::string_view text, F&& fn) {
    // A stream parses every event: one parser and one padded copy per
    // thread, kept, instead of two allocations per call. Large texts (a big
    // request body) and a call from inside fn (none today) get their own, so
    // what a thread keeps stays small.
    struct scratch {
        simdjson::ondemand::parser parser;
        std::string padded;
        bool in_use = false;
    };
    thread_local scratch shared;
    scratch own;
    constexpr std::size_t kept_up_to = 64 * 1024;
    scratch& s = shared.in_use || text.size() > kept_up_to ? own : shared;
    s.in_use = true;
    struct release {
        scratch& s;
        ~release() { s.in_use = false; }
    } releasing{s};

    s.padded.resize(text.size() + simdjson::SIMDJSON_PADDING);
    if (!text.empty()) std::memcpy(s.padded.data(), text.data(), text.size());
    const simdjson::padded_string_view padded(s.padded.data(), text.size(), s.padded.size());
    simdjson::ondemand::document doc;
    simdjson::ondemand::object root;
    if (s.parser.iterate(padded).get(doc) || doc.get_object().get(root)) return false;
    for (auto field : root) {
        std::string_view key;
        simdjson::ondemand::value v;
        if (field.unescaped_key().get(key) || field.value().get(v) || !fn(key, v)) return false;
    }
    // Anything after the object (`{} {}`) makes it something else than one
    // object: a location past it means there is more.
    const char* trailing = nullptr;
    return doc.current_location().get(trailing) != simdjson::SUCCESS;
}

// Calls fn(element) for each element of `v` when it is an array (any other
// type is skipped). False on malformed JSON or when fn says so.
template <class F>
bool each_element(simdjson::ondemand::value v, F&& fn) {
    simdjson::ondemand::json_type type;
    if (v.type().get(type)) return false;
    if (type != simdjson::ondemand::json_type::array) return true;
    simdjson::ondemand::array a;
    if (v.get_array().get(a)) return false;
    for (auto element : a) {
        simdjson::ondemand::value ev;
        if (element.get(ev) || !fn(ev)) return false;
    }
    return true;
}

// Returns the index past the value that starts at s[i].
inline std::size_t skip_value(std::string_view s, std::size_t i) {
    if (i >= s.size()) return npos;
    const char first = s[i];
    if (first == '"') return skip_string(s, i);
    if (first == '{' || first == '[') {
        std::size_t depth = 0;
        while (i < s.size()) {
            const char c = s[i];
            if (c == '"') {
                i = skip_string(s, i);
                if (i == npos) return npos;
                continue;
            }
            if (c == '{' || c == '[') ++depth;
            if (c == '}' || c == ']') {
                if (--depth == 0) return i + 1;
            }
            ++i;
        }
        return npos;
    }
    const std::size_t begin = i;
    while (i < s.size() && !is_space(s[i]) && s[i] != ',' && s[i] != '}' && s[i] != ']') ++i;
    return i == begin ? npos : i;
}

struct member {
    std::size_t key_begin;    // the key's opening quote
    std::size_t key_end;      // past its closing quote
    std::size_t value_begin;  // the value's first byte
    std::size_t value_end;    // past its last byte
};

struct object_span {
    std::size_t open = 0;   // the '{'
    std::size_t close = 0;  // the '}'
    std::vector<member> members;
};

// The members of the object whose '{' is s[open], in order.
inline bool scan_object(std::string_view s, std::size_t open, object_span& out) {
    out = object_span{open, 0, {}};
    if (open >= s.size() || s[open] != '{') return false;
    std::size_t i = skip_space(s, open + 1);
    if (i < s.size() && s[i] == '}') {
        out.close = i;
        return true;
    }
    while (i < s.size()) {
        if (s[i] != '"') return false;
        member m{};
        m.key_begin = i;
        m.key_end = skip_string(s, i);
        if (m.key_end == npos) return false;
        i = skip_space(s, m.key_end);
        if (i >= s.size() || s[i] != ':') return false;
        m.value_begin = skip_space(s, i + 1);
        m.value_end = skip_value(s, m.value_begin);
        if (m.value_end == npos) return false;
        out.members.push_back(m);
        i = skip_space(s, m.value_end);
        if (i >= s.size()) return false;
        if (s[i] == '}') {
            out.close = i;
            return true;
        }
        if (s[i] != ',') return false;
        i = skip_space(s, i + 1);
    }
    return false;
}

constexpr int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

// Whether the key of `m` spells `ascii_name` once unescaped, as a JSON parser
// reads it ("stream\u005foptions" is stream_options). No allocation.
inline bool key_is(std::string_view s, const member& m, std::string_view ascii_name) {
    std::size_t i = m.key_begin + 1;
    const std::size_t end = m.key_end - 1;
    std::size_t k = 0;
    while (i < end) {
        char c = s[i];
        if (c == '\\') {
            if (i + 1 >= end) return false;
            const char e = s[i + 1];
            i += 2;
            switch (e) {
                case '"': c = '"'; break;
                case '\\': c = '\\'; break;
                case '/': c = '/'; break;
                case 'b': c = '\b'; break;
                case 'f': c = '\f'; break;
                case 'n': c = '\n'; break;
                case 'r': c = '\r'; break;
                case 't': c = '\t'; break;
                case 'u': {
                    if (i + 4 > end) return false;
                    int unit = 0;
                    for (int d = 0; d < 4; ++d) {
                        const int h = hex_digit(s[i + d]);
                        if (h < 0) return false;
                        unit = unit * 16 + h;
                    }
                    i += 4;
                    if (unit > 0x7f) return false;  // the names we look for are ASCII
                    c = static_cast<char>(unit);
                    break;
                }
                default: return false;
            }
        } else {
            ++i;
        }
        if (k >= ascii_name.size() || ascii_name[k] != c) return false;
        ++k;
    }
    return k == ascii_name.size();
}

}  // namespace tollgate::proxy::json_text
