#include "mock.hpp"

#include <fmt/format.h>
// No exceptions from simdjson: every result is checked with .get(), so a
// hostile body can only ever produce a 400.
#define SIMDJSON_EXCEPTIONS 0
#include <simdjson.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <ctime>
#include <stdexcept>
#include <utility>

namespace mock {

namespace {

__extension__ typedef __int128 int128;

using simdjson::ondemand::json_type;
using simdjson::ondemand::object;
using simdjson::ondemand::value;

constexpr std::size_t keys_page_size = 100;
constexpr std::string_view workspace_id = "00000000-0000-4000-8000-000000000000";

std::string_view trim_token(std::string_view s) {
    while (!s.empty() && (s.back() == ' ' || s.back() == '\n' || s.back() == '\r' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

bool is_ascii_space(unsigned char c) {
    return c == ' ' || (c >= '\t' && c <= '\r');
}

// Decodes one UTF-8 sequence at s[i]; 0 length when invalid (overlong,
// surrogate, truncated, above U+10FFFF).
std::size_t utf8_decode(std::string_view s, std::size_t i, std::uint32_t& cp) {
    const auto b = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
    const unsigned char c = b(i);
    std::size_t n = 0;
    std::uint32_t min = 0;
    if (c < 0x80) {
        cp = c;
        return 1;
    } else if ((c >> 5) == 0x6) {
        n = 2, cp = c & 0x1fu, min = 0x80;
    } else if ((c >> 4) == 0xe) {
        n = 3, cp = c & 0x0fu, min = 0x800;
    } else if ((c >> 3) == 0x1e) {
        n = 4, cp = c & 0x07u, min = 0x10000;
    } else {
        return 0;
    }
    if (i + n > s.size()) return 0;
    for (std::size_t k = 1; k < n; ++k) {
        if ((b(i + k) & 0xc0) != 0x80) return 0;
        cp = (cp << 6) | (b(i + k) & 0x3fu);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff)) return 0;
    return n;
}

bool is_python_space(std::uint32_t c) {
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}

std::uint64_t splitmix64(std::uint64_t x) {
    x += 0x9e3779b97f4a7c15ULL;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ULL;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebULL;
    return x ^ (x >> 31);
}

std::uint64_t fnv1a(std::string_view text, std::uint64_t h = 1469598103934665603ULL) {
    for (const unsigned char c : text) {
        h ^= c;
        h *= 1099511628211ULL;
    }
    return h;
}

std::string read_error(simdjson::error_code e) {
    return fmt::format("malformed JSON body ({})", simdjson::error_message(e));
}

// Pads `body` for simdjson (capacity only) and opens it as a JSON object.
bool open_object(json_parser& parser, std::string& body, simdjson::ondemand::document& doc, object& root,
                 std::string& error);

}  // namespace

struct json_parser::impl {
    simdjson::ondemand::parser parser;
};
json_parser::json_parser() : impl_(std::make_unique<impl>()) {}
json_parser::~json_parser() = default;

namespace {

bool open_object(json_parser& parser, std::string& body, simdjson::ondemand::document& doc, object& root,
                 std::string& error) {
    body.reserve(body.size() + simdjson::SIMDJSON_PADDING);
    const simdjson::padded_string_view padded(body.data(), body.size(), body.capacity());
    if (const auto e = parser.get().parser.iterate(padded).get(doc)) {
        error = read_error(e);
        return false;
    }
    if (const auto e = doc.get_object().get(root)) {
        error = e == simdjson::INCORRECT_TYPE ? "the request body must be a JSON object" : read_error(e);
        return false;
    }
    return true;
}

// Whole document consumed, nothing after the root value.
bool finish_document(simdjson::ondemand::document& doc, std::string& error) {
    const char* location = nullptr;
    if (doc.current_location().get(location) != simdjson::OUT_OF_BOUNDS) {
        error = "malformed JSON body (trailing content)";
        return false;
    }
    return true;
}

bool get_type(value& v, json_type& type, std::string& error) {
    if (const auto e = v.type().get(type)) {
        error = read_error(e);
        return false;
    }
    return true;
}

bool read_string_field(value v, std::string_view name, std::string_view& out, std::string& error) {
    if (const auto e = v.get_string().get(out)) {
        error = e == simdjson::INCORRECT_TYPE ? fmt::format("'{}' must be a string", name) : read_error(e);
        return false;
    }
    return true;
}

// bool, or null (false).
bool read_bool_field(value v, std::string_view name, bool& out, std::string& error) {
    json_type type;
    if (!get_type(v, type, error)) return false;
    if (type == json_type::null) {
        out = false;
        return true;
    }
    if (const auto e = v.get_bool().get(out)) {
        error = e == simdjson::INCORRECT_TYPE ? fmt::format("'{}' must be a boolean", name) : read_error(e);
        return false;
    }
    return true;
}

// Non-negative integer or null.
bool read_count_field(value v, std::string_view name, std::optional<std::int64_t>& out, std::string& error) {
    json_type type;
    if (!get_type(v, type, error)) return false;
    if (type == json_type::null) {
        out.reset();
        return true;
    }
    std::int64_t n = 0;
    if (v.get_int64().get(n) || n < 0) {
        error = fmt::format("'{}' must be a non-negative integer", name);
        return false;
    }
    out = n;
    return true;
}

// Text of a message `content`: a string, or an array of parts whose `text`
// strings count.
bool count_content_words(value v, std::int64_t& words, std::string& error) {
    json_type type;
    if (!get_type(v, type, error)) return false;
    if (type == json_type::null) return true;
    if (type == json_type::string) {
        std::string_view text;
        if (!read_string_field(v, "content", text, error)) return false;
        words += count_words(text);
        return true;
    }
    if (type != json_type::array) {
        error = "message 'content' must be a string or an array of parts";
        return false;
    }
    simdjson::ondemand::array parts;
    if (const auto e = v.get_array().get(parts)) {
        error = read_error(e);
        return false;
    }
    for (auto part_result : parts) {
        object part;
        if (const auto e = part_result.get_object().get(part)) {
            error = e == simdjson::INCORRECT_TYPE ? "content parts must be objects" : read_error(e);
            return false;
        }
        for (auto field_result : part) {
            simdjson::ondemand::field field;
            std::string_view key;
            if (const auto e = std::move(field_result).get(field)) {
                error = read_error(e);
                return false;
            }
            if (const auto e = field.unescaped_key().get(key)) {
                error = read_error(e);
                return false;
            }
            if (key != "text") continue;
            std::string_view text;
            if (!read_string_field(field.value(), "text", text, error)) return false;
            words += count_words(text);
        }
    }
    return true;
}

bool count_messages(value v, std::int64_t& words, std::int64_t& messages, std::string& error) {
    simdjson::ondemand::array list;
    if (const auto e = v.get_array().get(list)) {
        error = e == simdjson::INCORRECT_TYPE ? "'messages' must be an array" : read_error(e);
        return false;
    }
    for (auto message_result : list) {
        object message;
        if (const auto e = message_result.get_object().get(message)) {
            error = e == simdjson::INCORRECT_TYPE ? "each message must be an object" : read_error(e);
            return false;
        }
        ++messages;
        for (auto field_result : message) {
            simdjson::ondemand::field field;
            std::string_view key;
            if (const auto e = std::move(field_result).get(field)) {
                error = read_error(e);
                return false;
            }
            if (const auto e = field.unescaped_key().get(key)) {
                error = read_error(e);
                return false;
            }
            if (key == "content" && !count_content_words(field.value(), words, error)) return false;
        }
    }
    return true;
}

// /completions `prompt`: a string, an array of strings, a token array or an
// array of token arrays.
bool count_prompt(value v, std::int64_t& tokens, std::string& error) {
    json_type type;
    if (!get_type(v, type, error)) return false;
    if (type == json_type::string) {
        std::string_view text;
        if (!read_string_field(v, "prompt", text, error)) return false;
        tokens += count_words(text);
        return true;
    }
    if (type != json_type::array) {
        error = "'prompt' must be a string or an array";
        return false;
    }
    simdjson::ondemand::array items;
    if (const auto e = v.get_array().get(items)) {
        error = read_error(e);
        return false;
    }
    for (auto item_result : items) {
        value item;
        if (const auto e = std::move(item_result).get(item)) {
            error = read_error(e);
            return false;
        }
        json_type item_type;
        if (!get_type(item, item_type, error)) return false;
        if (item_type == json_type::string) {
            std::string_view text;
            if (!read_string_field(item, "prompt", text, error)) return false;
            tokens += count_words(text);
        } else if (item_type == json_type::number) {
            ++tokens;
        } else if (item_type == json_type::array) {
            simdjson::ondemand::array inner;
            std::size_t n = 0;
            if (item.get_array().get(inner) || inner.count_elements().get(n)) {
                error = "'prompt' token arrays must hold integers";
                return false;
            }
            tokens += static_cast<std::int64_t>(n);
        } else {
            error = "'prompt' items must be strings or token ids";
            return false;
        }
    }
    return true;
}

// A price value from a catalog: a decimal string (OpenRouter) or a number
// (LiteLLM, read as its raw text). Null leaves it absent.
std::optional<std::int64_t> catalog_price(value v, std::string_view model, std::string_view key, bool& dynamic) {
    json_type type;
    if (v.type().get(type)) throw std::runtime_error(fmt::format("{}: price {} is not JSON", model, key));
    std::string_view text;
    if (type == json_type::null) return std::nullopt;
    if (type == json_type::string) {
        if (v.get_string().get(text)) throw std::runtime_error(fmt::format("{}: price {} is a bad string", model, key));
    } else if (type == json_type::number) {
        text = trim_token(v.raw_json_token());
    } else {
        throw std::runtime_error(fmt::format("{}: price {} is neither a string nor a number", model, key));
    }
    const parsed_price p = parse_usd_pico(text);
    switch (p.status) {
        case price_status::ok: return p.pico;
        case price_status::negative: dynamic = true; return std::nullopt;
        case price_status::invalid:
        case price_status::out_of_range: break;
    }
    throw std::runtime_error(fmt::format("{}: price {} is not a usable decimal: \"{}\"", model, key, text));
}

// Sets the token_prices member named `key`, if it is one the mock charges.
void read_openrouter_price(std::string_view key, value v, std::string_view model, token_prices& prices, bool& dynamic) {
    std::optional<std::int64_t>* slot = key == "prompt"               ? &prices.prompt
                                        : key == "completion"         ? &prices.completion
                                        : key == "request"            ? &prices.request
                                        : key == "input_cache_read"   ? &prices.input_cache_read
                                        : key == "internal_reasoning" ? &prices.internal_reasoning
                                                                      : nullptr;
    if (slot == nullptr) return;
    *slot = catalog_price(v, model, key, dynamic);
}

void lay_over(token_prices& base, const token_prices& top) {
    if (top.prompt) base.prompt = top.prompt;
    if (top.completion) base.completion = top.completion;
    if (top.request) base.request = top.request;
    if (top.input_cache_read) base.input_cache_read = top.input_cache_read;
    if (top.internal_reasoning) base.internal_reasoning = top.internal_reasoning;
}

void append_optional_usd(std::string& out, const std::optional<std::int64_t>& pico) {
    if (pico)
        append_usd(out, *pico, cost_style::plain);
    else
        out += "null";
}

void append_optional_string(std::string& out, const std::optional<std::string>& text) {
    if (text)
        append_json_string(out, *text);
    else
        out += "null";
}

}  // namespace

// ---------------------------------------------------------------- money

parsed_price parse_usd_pico(std::string_view t) {
    std::size_t i = 0;
    const bool negative = i < t.size() && t[i] == '-';
    if (negative) ++i;
    // The first significant digits (enough for 19 kept digits and the one
    // that rounds) and the power of ten of the first of them.
    std::array<char, 24> digits{};
    std::size_t n = 0;
    std::int64_t first_power = 0;  // digits[0] is worth 10^first_power USD
    std::int64_t position = 0;     // power of the digit being read
    const auto take = [&](char c) {
        if (n == 0 && c == '0') return;
        if (n == 0) first_power = position;
        if (n < digits.size()) digits[n++] = c;
    };
    const std::size_t int_start = i;
    while (i < t.size() && t[i] >= '0' && t[i] <= '9') ++i;
    const std::size_t int_digits = i - int_start;
    if (int_digits == 0) return {};
    if (int_digits > 1 && t[int_start] == '0') return {};  // JSON: no leading zeros
    if (int_digits > 40) return {price_status::out_of_range, 0};
    position = static_cast<std::int64_t>(int_digits) - 1;
    for (std::size_t k = int_start; k < i; ++k, --position) take(t[k]);
    if (i < t.size() && t[i] == '.') {
        const std::size_t frac_start = ++i;
        for (; i < t.size() && t[i] >= '0' && t[i] <= '9'; ++i, --position) take(t[i]);
        if (i == frac_start) return {};
    }
    std::int64_t exponent = 0;
    if (i < t.size() && (t[i] == 'e' || t[i] == 'E')) {
        ++i;
        bool exp_negative = false;
        if (i < t.size() && (t[i] == '+' || t[i] == '-')) exp_negative = t[i++] == '-';
        const std::size_t exp_start = i;
        for (; i < t.size() && t[i] >= '0' && t[i] <= '9'; ++i)
            if (exponent < 100'000) exponent = exponent * 10 + (t[i] - '0');
        if (i == exp_start) return {};
        if (exp_negative) exponent = -exponent;
    }
    if (i != t.size()) return {};
    if (n == 0) return {price_status::ok, 0};  // zero, "-0" included
    if (negative) return {price_status::negative, 0};
    // Digits worth at least one pico: powers first_power+exponent down to -12.
    const std::int64_t keep = first_power + exponent + 12 + 1;
    if (keep > 19) return {price_status::out_of_range, 0};
    if (keep < 0) return {price_status::ok, 0};
    std::uint64_t v = 0;
    for (std::int64_t k = 0; k < keep; ++k) {
        const auto idx = static_cast<std::size_t>(k);
        v = v * 10 + (idx < n ? static_cast<std::uint64_t>(digits[idx] - '0') : 0);
    }
    if (static_cast<std::size_t>(keep) < n && digits[static_cast<std::size_t>(keep)] >= '5') ++v;  // half-up, once
    if (v > static_cast<std::uint64_t>(max_pico)) return {price_status::out_of_range, 0};
    return {price_status::ok, static_cast<std::int64_t>(v)};
}

void append_usd(std::string& out, std::int64_t pico, cost_style style) {
    if (pico < 0) pico = 0;  // cannot happen: costs are sums of non-negative products
    if (pico == 0) {
        out += style == cost_style::python ? "0.0" : "0";
        return;
    }
    const bool exponent_form =
        style == cost_style::exponent || (style == cost_style::python && pico < pico_per_usd / 10'000);
    if (exponent_form) {
        char buf[24] = {};
        const auto end = std::to_chars(buf, buf + sizeof buf, pico).ptr;
        const auto len = static_cast<std::int64_t>(end - buf);
        const std::int64_t exp10 = len - 1 - 12;
        const char* last = end;
        while (last > buf + 1 && last[-1] == '0') --last;
        out += buf[0];
        if (last > buf + 1) {
            out += '.';
            out.append(buf + 1, static_cast<std::size_t>(last - (buf + 1)));
        }
        fmt::format_to(std::back_inserter(out), "e{}{:02}", exp10 < 0 ? '-' : '+', exp10 < 0 ? -exp10 : exp10);
        return;
    }
    const std::int64_t whole = pico / pico_per_usd;
    const std::int64_t fraction = pico % pico_per_usd;
    fmt::format_to(std::back_inserter(out), "{}", whole);
    if (fraction == 0) {
        if (style == cost_style::python) out += ".0";
        return;
    }
    char buf[13];
    fmt::format_to_n(buf, sizeof buf, "{:012}", fraction);
    std::size_t len = 12;
    while (len > 0 && buf[len - 1] == '0') --len;
    out += '.';
    out.append(buf, len);
}

std::int64_t mul_pico(std::int64_t count, std::int64_t price_pico) {
    if (count <= 0 || price_pico <= 0) return 0;
    const int128 product = static_cast<int128>(count) * price_pico;
    return product > max_pico ? max_pico : static_cast<std::int64_t>(product);
}

std::int64_t token_cost_pico(const token_prices& p, const token_counts& c) {
    const std::int64_t cached = std::clamp<std::int64_t>(c.cached, 0, c.prompt);
    const std::int64_t reasoning = std::clamp<std::int64_t>(c.reasoning, 0, c.completion);
    const std::int64_t prompt = p.prompt.value_or(0);
    const std::int64_t completion = p.completion.value_or(0);
    const int128 sum = static_cast<int128>(mul_pico(c.prompt - cached, prompt)) +
                       mul_pico(cached, p.input_cache_read.value_or(prompt)) +
                       mul_pico(c.completion - reasoning, completion) +
                       mul_pico(reasoning, p.internal_reasoning.value_or(completion)) + p.request.value_or(0);
    return sum > max_pico ? max_pico : static_cast<std::int64_t>(sum);
}

// ---------------------------------------------------------------- text

void append_json_string(std::string& out, std::string_view text) {
    out += '"';
    std::size_t run = 0;  // start of the pending run copied as is
    std::size_t i = 0;
    const auto flush = [&](std::size_t upto) { out.append(text.data() + run, upto - run); };
    while (i < text.size()) {
        const auto c = static_cast<unsigned char>(text[i]);
        if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
            ++i;
            continue;
        }
        if (c >= 0x80) {
            std::uint32_t cp = 0;
            const std::size_t len = utf8_decode(text, i, cp);
            if (len != 0) {
                i += len;
                continue;
            }
            flush(i);
            out += "\\ufffd";
            run = ++i;
            continue;
        }
        flush(i);
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            case '\b': out += "\\b"; break;
            case '\f': out += "\\f"; break;
            default: fmt::format_to(std::back_inserter(out), "\\u{:04x}", c); break;
        }
        run = ++i;
    }
    flush(i);
    out += '"';
}

std::int64_t count_words(std::string_view text) {
    std::int64_t words = 0;
    bool in_word = false;
    for (const char ch : text) {
        const bool space = is_ascii_space(static_cast<unsigned char>(ch));
        if (!space && !in_word) ++words;
        in_word = !space;
    }
    return words;
}

std::int64_t count_tts_characters(std::string_view utf8) {
    std::int64_t count = 0;
    std::size_t i = 0;
    while (i < utf8.size()) {
        std::uint32_t cp = 0;
        const std::size_t len = utf8_decode(utf8, i, cp);
        if (len == 0) {  // an invalid byte counts as one character
            ++count;
            ++i;
            continue;
        }
        if (!is_python_space(cp)) ++count;
        i += len;
    }
    return count;
}

void append_base64(std::string& out, const unsigned char* data, std::size_t size) {
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    out.reserve(out.size() + (size + 2) / 3 * 4);
    std::size_t i = 0;
    for (; i + 3 <= size; i += 3) {
        const std::uint32_t v = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8) | data[i + 2];
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        out += alphabet[(v >> 6) & 63];
        out += alphabet[v & 63];
    }
    if (size - i == 1) {
        const std::uint32_t v = std::uint32_t{data[i]} << 16;
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        out += "==";
    } else if (size - i == 2) {
        const std::uint32_t v = (std::uint32_t{data[i]} << 16) | (std::uint32_t{data[i + 1]} << 8);
        out += alphabet[(v >> 18) & 63];
        out += alphabet[(v >> 12) & 63];
        out += alphabet[(v >> 6) & 63];
        out += '=';
    }
}

void append_iso8601(std::string& out, std::int64_t unix_seconds) {
    const std::time_t t = static_cast<std::time_t>(unix_seconds);
    std::tm tm{};
    gmtime_r(&t, &tm);
    fmt::format_to(std::back_inserter(out), "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", tm.tm_year + 1900, tm.tm_mon + 1,
                   tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

bool ascii_iequals(std::string_view a, std::string_view b) {
    if (a.size() != b.size()) return false;
    for (std::size_t i = 0; i < a.size(); ++i) {
        const auto lower = [](char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; };
        if (lower(a[i]) != lower(b[i])) return false;
    }
    return true;
}

float embedding_value(std::uint64_t seed, std::int64_t index) {
    const std::uint64_t x = splitmix64(seed ^ (static_cast<std::uint64_t>(index) * 0x9e3779b97f4a7c15ULL));
    const int k = static_cast<int>(x % 1025) - 512;
    return static_cast<float>(k) / 512.0f;
}

void append_audio_bytes(std::string& out, std::string_view input, std::size_t size) {
    const std::uint64_t seed = fnv1a(input);
    out.reserve(out.size() + size);
    for (std::size_t i = 0; i < size; i += 8) {
        const std::uint64_t x = splitmix64(seed + i);
        for (std::size_t k = 0; k < 8 && i + k < size; ++k) out += static_cast<char>((x >> (8 * k)) & 0xff);
    }
}

// ---------------------------------------------------------------- OpenRouter catalog

token_prices openrouter_model::prices_for(std::int64_t prompt_tokens, int utc_hhmm) const {
    token_prices prices = base;
    for (const auto& o : overrides) {
        if (o.min_prompt_tokens && !(prompt_tokens > *o.min_prompt_tokens)) continue;
        if (o.utc_start_hhmm || o.utc_end_hhmm) {
            const int start = o.utc_start_hhmm.value_or(0);
            const int end = o.utc_end_hhmm.value_or(2400);
            const bool inside =
                start <= end ? (start <= utc_hhmm && utc_hhmm < end) : (utc_hhmm >= start || utc_hhmm < end);
            if (!inside) continue;
        }
        lay_over(prices, o.prices);
    }
    return prices;
}

std::unique_ptr<openrouter_catalog> openrouter_catalog::load(const std::string& path) {
    auto catalog = std::make_unique<openrouter_catalog>();
    simdjson::padded_string padded;
    if (const auto e = simdjson::padded_string::load(path).get(padded))
        throw std::runtime_error(fmt::format("{}: {}", path, simdjson::error_message(e)));
    catalog->bytes_.assign(padded.data(), padded.size());

    const auto fail = [&](std::string_view what) {
        return std::runtime_error(fmt::format("{}: not an OpenRouter models document ({})", path, what));
    };
    simdjson::ondemand::parser parser;
    simdjson::ondemand::document doc;
    simdjson::ondemand::array data;
    if (parser.iterate(padded).get(doc) || doc["data"].get_array().get(data)) throw fail("no data array");
    for (auto entry : data) {
        object model_object;
        if (entry.get_object().get(model_object)) throw fail("a model is not an object");
        openrouter_model model;
        bool have_id = false;
        for (auto field_result : model_object) {
            simdjson::ondemand::field field;
            std::string_view key;
            if (std::move(field_result).get(field) || field.unescaped_key().get(key)) throw fail("bad model field");
            if (key == "id") {
                std::string_view id;
                if (field.value().get_string().get(id)) throw fail("id is not a string");
                model.id = id;
                have_id = true;
            } else if (key == "pricing") {
                object pricing;
                if (field.value().get_object().get(pricing)) throw fail("pricing is not an object");
                for (auto price_result : pricing) {
                    simdjson::ondemand::field price_field;
                    std::string_view price_key;
                    if (std::move(price_result).get(price_field) || price_field.unescaped_key().get(price_key))
                        throw fail("bad price");
                    if (price_key != "overrides") {
                        read_openrouter_price(price_key, price_field.value(), model.id, model.base,
                                              model.dynamic_price);
                        continue;
                    }
                    simdjson::ondemand::array list;
                    if (price_field.value().get_array().get(list)) throw fail("overrides is not an array");
                    for (auto override_result : list) {
                        object entry_object;
                        if (override_result.get_object().get(entry_object)) throw fail("an override is not an object");
                        price_override o;
                        bool ignored = false;
                        for (auto of_result : entry_object) {
                            simdjson::ondemand::field of;
                            std::string_view ok;
                            if (std::move(of_result).get(of) || of.unescaped_key().get(ok))
                                throw fail("bad override field");
                            std::int64_t n = 0;
                            if (ok == "min_prompt_tokens") {
                                if (of.value().get_int64().get(n)) throw fail("min_prompt_tokens");
                                o.min_prompt_tokens = n;
                            } else if (ok == "utc_start" || ok == "utc_end") {
                                if (of.value().get_int64().get(n) || n < 0 || n > 2400) throw fail("utc window");
                                (ok == "utc_start" ? o.utc_start_hhmm : o.utc_end_hhmm) = static_cast<int>(n);
                            } else {
                                read_openrouter_price(ok, of.value(), model.id, o.prices, ignored);
                            }
                        }
                        model.overrides.push_back(std::move(o));
                    }
                }
            }
        }
        if (!have_id) throw fail("a model has no id");
        std::string id = model.id;
        catalog->models_.insert_or_assign(std::move(id), std::move(model));
    }
    if (catalog->models_.empty()) throw fail("no models");
    return catalog;
}

const openrouter_model* openrouter_catalog::find(std::string_view id) const {
    const auto it = models_.find(id);
    return it == models_.end() ? nullptr : &it->second;
}

// ---------------------------------------------------------------- LiteLLM catalog

std::unique_ptr<litellm_catalog> litellm_catalog::load(const std::string& path, const std::vector<std::string>& names) {
    auto catalog = std::make_unique<litellm_catalog>();
    simdjson::padded_string padded;
    if (const auto e = simdjson::padded_string::load(path).get(padded))
        throw std::runtime_error(fmt::format("{}: {}", path, simdjson::error_message(e)));
    const auto fail = [&](std::string_view what) {
        return std::runtime_error(fmt::format("{}: not a LiteLLM price map ({})", path, what));
    };
    const std::unordered_set<std::string_view> wanted(names.begin(), names.end());
    string_map<std::pair<litellm_model, std::string>> found;  // name -> (prices, model_info entry)

    simdjson::ondemand::parser parser;
    simdjson::ondemand::document doc;
    object root;
    if (parser.iterate(padded).get(doc) || doc.get_object().get(root)) throw fail("not an object");
    for (auto entry_result : root) {
        simdjson::ondemand::field entry;
        std::string_view name;
        if (std::move(entry_result).get(entry) || entry.unescaped_key().get(name)) throw fail("bad entry");
        if (!wanted.contains(name)) continue;
        object fields;
        if (entry.value().get_object().get(fields)) throw fail(fmt::format("{} is not an object", name));

        litellm_model model;
        model.name = name;
        std::string provider = "openai";
        // model_info: the two token prices first (null when absent), then
        // every field of the entry copied as its raw JSON text.
        std::optional<std::string_view> input_raw, output_raw;
        std::string rest;
        for (auto field_result : fields) {
            simdjson::ondemand::field field;
            std::string_view key;
            if (std::move(field_result).get(field) || field.unescaped_key().get(key)) throw fail("bad field");
            value v = field.value();
            json_type type;
            if (v.type().get(type)) throw fail("bad value");
            std::string_view raw;
            if (type == json_type::object) {
                object o;
                if (v.get_object().get(o) || o.raw_json().get(raw)) throw fail("bad object value");
            } else if (type == json_type::array) {
                simdjson::ondemand::array a;
                if (v.get_array().get(a) || a.raw_json().get(raw)) throw fail("bad array value");
            } else {
                raw = trim_token(v.raw_json_token());
            }
            const auto price_of = [&]() -> std::optional<std::int64_t> {
                if (type == json_type::null) return std::nullopt;
                const parsed_price p = parse_usd_pico(raw);
                if (p.status != price_status::ok)
                    throw std::runtime_error(fmt::format("{}: {}.{} is not a usable price: {}", path, name, key, raw));
                return p.pico;
            };
            if (key == "input_cost_per_token") {
                model.prices.prompt = price_of();
                input_raw = raw;
                continue;
            }
            if (key == "output_cost_per_token") {
                model.prices.completion = price_of();
                output_raw = raw;
                continue;
            }
            if (key == "cache_read_input_token_cost") model.prices.input_cache_read = price_of();
            if (key == "output_cost_per_reasoning_token") model.prices.internal_reasoning = price_of();
            if (key == "input_cost_per_character") model.input_pico_per_character = price_of();
            if (key == "litellm_provider" && type == json_type::string) {
                std::string_view p;
                if (v.get_string().get(p)) throw fail("bad provider");
                provider = p;
            }
            rest += ',';
            append_json_string(rest, key);
            rest += ':';
            rest += raw;
        }
        std::string info = "{\"model_name\":";
        append_json_string(info, name);
        info += ",\"litellm_params\":{\"model\":";
        append_json_string(info, fmt::format("{}/{}", provider, name));
        info += "},\"model_info\":{\"id\":";
        append_json_string(info, fmt::format("mock-{}", name));
        info += ",\"key\":";
        append_json_string(info, name);
        info += ",\"input_cost_per_token\":";
        info += input_raw ? *input_raw : "null";
        info += ",\"output_cost_per_token\":";
        info += output_raw ? *output_raw : "null";
        info += rest;
        info += "}}";
        std::string key_copy(name);
        found.insert_or_assign(std::move(key_copy), std::make_pair(std::move(model), std::move(info)));
    }

    catalog->models_json_ = "{\"data\":[";
    catalog->model_info_json_ = "{\"data\":[";
    for (const auto& name : names) {
        const auto it = found.find(name);
        if (it == found.end())
            throw std::runtime_error(fmt::format("{}: model {} is not in the price map", path, name));
        if (!catalog->models_.empty()) {
            catalog->models_json_ += ',';
            catalog->model_info_json_ += ',';
        }
        catalog->models_json_ += "{\"id\":";
        append_json_string(catalog->models_json_, name);
        catalog->models_json_ += ",\"object\":\"model\",\"created\":1677610602,\"owned_by\":\"openai\"}";
        catalog->model_info_json_ += it->second.second;
        catalog->models_.push_back(it->second.first);
    }
    catalog->models_json_ += "],\"object\":\"list\"}";
    catalog->model_info_json_ += "]}";
    return catalog;
}

const litellm_model* litellm_catalog::find(std::string_view name) const {
    for (const auto& m : models_)
        if (m.name == name) return &m;
    return nullptr;
}

// ---------------------------------------------------------------- request bodies

bool read_completion(json_parser& parser, std::string& body, completion_kind kind, completion_request& out,
                     std::string& error) {
    simdjson::ondemand::document doc;
    object root;
    if (!open_object(parser, body, doc, root, error)) return false;
    std::int64_t words = 0, messages = 0;
    bool have_model = false, have_input = false;
    std::optional<std::int64_t> max_tokens, max_completion_tokens;
    for (auto field_result : root) {
        simdjson::ondemand::field field;
        std::string_view key;
        if (const auto e = std::move(field_result).get(field)) return error = read_error(e), false;
        if (const auto e = field.unescaped_key().get(key)) return error = read_error(e), false;
        if (key == "model") {
            if (!read_string_field(field.value(), "model", out.model, error)) return false;
            have_model = true;
        } else if (key == "stream") {
            if (!read_bool_field(field.value(), "stream", out.stream, error)) return false;
        } else if (key == "stream_options") {
            value v = field.value();
            json_type type;
            if (!get_type(v, type, error)) return false;
            if (type == json_type::null) continue;
            object options;
            if (v.get_object().get(options)) return error = "'stream_options' must be an object", false;
            for (auto option_result : options) {
                simdjson::ondemand::field option;
                std::string_view option_key;
                if (const auto e = std::move(option_result).get(option)) return error = read_error(e), false;
                if (const auto e = option.unescaped_key().get(option_key)) return error = read_error(e), false;
                if (option_key == "include_usage" &&
                    !read_bool_field(option.value(), "stream_options.include_usage", out.include_usage, error))
                    return false;
            }
        } else if (key == "max_tokens") {
            if (!read_count_field(field.value(), "max_tokens", max_tokens, error)) return false;
        } else if (key == "max_completion_tokens") {
            if (!read_count_field(field.value(), "max_completion_tokens", max_completion_tokens, error)) return false;
        } else if (key == "messages" && kind == completion_kind::chat) {
            if (!count_messages(field.value(), words, messages, error)) return false;
            have_input = true;
        } else if (key == "prompt" && kind == completion_kind::text) {
            if (!count_prompt(field.value(), words, error)) return false;
            have_input = true;
        }
    }
    if (!finish_document(doc, error)) return false;
    if (!have_model) return error = "'model' is required", false;
    if (!have_input)
        return error = kind == completion_kind::chat ? "'messages' is required" : "'prompt' is required", false;
    out.max_tokens = max_completion_tokens ? max_completion_tokens : max_tokens;
    out.prompt_tokens = std::max<std::int64_t>(1, words + 3 * messages);
    return true;
}

bool read_embedding(json_parser& parser, std::string& body, embedding_request& out, std::string& error) {
    simdjson::ondemand::document doc;
    object root;
    if (!open_object(parser, body, doc, root, error)) return false;
    bool have_model = false, have_input = false;
    out.input_seeds.clear();
    out.prompt_tokens = 0;
    const auto add_text = [&](std::string_view text) {
        out.input_seeds.push_back(fnv1a(text));
        out.prompt_tokens += std::max<std::int64_t>(1, count_words(text));
    };
    for (auto field_result : root) {
        simdjson::ondemand::field field;
        std::string_view key;
        if (const auto e = std::move(field_result).get(field)) return error = read_error(e), false;
        if (const auto e = field.unescaped_key().get(key)) return error = read_error(e), false;
        if (key == "model") {
            if (!read_string_field(field.value(), "model", out.model, error)) return false;
            have_model = true;
        } else if (key == "encoding_format") {
            std::string_view format;
            if (!read_string_field(field.value(), "encoding_format", format, error)) return false;
            if (format != "float" && format != "base64")
                return error = "'encoding_format' must be \"float\" or \"base64\"", false;
            out.base64 = format == "base64";
        } else if (key == "dimensions") {
            std::optional<std::int64_t> dims;
            if (!read_count_field(field.value(), "dimensions", dims, error)) return false;
            if (dims) {
                if (*dims < 1 || *dims > max_embedding_dimensions)
                    return error = fmt::format("'dimensions' must be 1..{}", max_embedding_dimensions), false;
                out.dimensions = *dims;
            }
        } else if (key == "input") {
            have_input = true;
            value v = field.value();
            json_type type;
            if (!get_type(v, type, error)) return false;
            if (type == json_type::string) {
                std::string_view text;
                if (!read_string_field(v, "input", text, error)) return false;
                add_text(text);
                continue;
            }
            simdjson::ondemand::array items;
            if (type != json_type::array || v.get_array().get(items))
                return error = "'input' must be a string, an array of strings or token arrays", false;
            // Strings and token arrays are one input each; bare integers
            // together form a single token-array input.
            std::uint64_t flat_seed = 1469598103934665603ULL;
            std::int64_t flat_tokens = 0;
            for (auto item_result : items) {
                value item;
                if (const auto e = std::move(item_result).get(item)) return error = read_error(e), false;
                json_type item_type;
                if (!get_type(item, item_type, error)) return false;
                if (item_type == json_type::string) {
                    std::string_view text;
                    if (!read_string_field(item, "input", text, error)) return false;
                    add_text(text);
                } else if (item_type == json_type::number) {
                    flat_seed = fnv1a(trim_token(item.raw_json_token()), flat_seed);
                    ++flat_tokens;
                } else if (item_type == json_type::array) {
                    simdjson::ondemand::array inner;
                    std::string_view raw;
                    std::size_t n = 0;
                    if (item.get_array().get(inner) || inner.count_elements().get(n) || inner.raw_json().get(raw))
                        return error = "'input' token arrays must hold integers", false;
                    out.input_seeds.push_back(fnv1a(raw));
                    out.prompt_tokens += std::max<std::int64_t>(1, static_cast<std::int64_t>(n));
                } else {
                    return error = "'input' items must be strings or token arrays", false;
                }
                if (static_cast<std::int64_t>(out.input_seeds.size()) > max_embedding_inputs)
                    return error = fmt::format("at most {} inputs", max_embedding_inputs), false;
            }
            if (flat_tokens > 0) {
                if (!out.input_seeds.empty()) return error = "'input' mixes token ids with other inputs", false;
                out.input_seeds.push_back(flat_seed);
                out.prompt_tokens += flat_tokens;
            }
        }
    }
    if (!finish_document(doc, error)) return false;
    if (!have_model) return error = "'model' is required", false;
    if (!have_input || out.input_seeds.empty()) return error = "'input' must not be empty", false;
    if (static_cast<std::int64_t>(out.input_seeds.size()) * out.dimensions > max_embedding_floats)
        return error = fmt::format("inputs x dimensions must be at most {}", max_embedding_floats), false;
    return true;
}

bool read_speech(json_parser& parser, std::string& body, speech_request& out, std::string& error) {
    simdjson::ondemand::document doc;
    object root;
    if (!open_object(parser, body, doc, root, error)) return false;
    bool have_model = false, have_input = false;
    for (auto field_result : root) {
        simdjson::ondemand::field field;
        std::string_view key;
        if (const auto e = std::move(field_result).get(field)) return error = read_error(e), false;
        if (const auto e = field.unescaped_key().get(key)) return error = read_error(e), false;
        if (key == "model") {
            if (!read_string_field(field.value(), "model", out.model, error)) return false;
            have_model = true;
        } else if (key == "input") {
            if (!read_string_field(field.value(), "input", out.input, error)) return false;
            have_input = true;
        } else if (key == "voice") {
            if (!read_string_field(field.value(), "voice", out.voice, error)) return false;
        } else if (key == "response_format") {
            if (!read_string_field(field.value(), "response_format", out.response_format, error)) return false;
        }
    }
    if (!finish_document(doc, error)) return false;
    if (!have_model) return error = "'model' is required", false;
    if (!have_input) return error = "'input' is required", false;
    constexpr std::array<std::string_view, 6> formats = {"mp3", "opus", "aac", "flac", "wav", "pcm"};
    if (std::find(formats.begin(), formats.end(), out.response_format) == formats.end())
        return error = "'response_format' must be one of mp3, opus, aac, flac, wav, pcm", false;
    std::int64_t code_points = 0;
    for (const char c : out.input) code_points += (static_cast<unsigned char>(c) & 0xc0) != 0x80;
    if (code_points > max_speech_characters)
        return error = fmt::format("'input' is longer than {} characters", max_speech_characters), false;
    return true;
}

bool read_key_fields(json_parser& parser, std::string& body, key_fields& out, std::string& error) {
    simdjson::ondemand::document doc;
    object root;
    if (!open_object(parser, body, doc, root, error)) return false;
    // null or a string
    const auto nullable_string = [&](value v, std::string_view name,
                                     std::optional<std::optional<std::string_view>>& slot) {
        json_type type;
        if (!get_type(v, type, error)) return false;
        if (type == json_type::null) {
            slot.emplace(std::nullopt);
            return true;
        }
        std::string_view text;
        if (!read_string_field(v, name, text, error)) return false;
        slot.emplace(text);
        return true;
    };
    for (auto field_result : root) {
        simdjson::ondemand::field field;
        std::string_view key;
        if (const auto e = std::move(field_result).get(field)) return error = read_error(e), false;
        if (const auto e = field.unescaped_key().get(key)) return error = read_error(e), false;
        value v = field.value();
        if (key == "name") {
            std::string_view name;
            if (!read_string_field(v, "name", name, error)) return false;
            out.name = name;
        } else if (key == "limit") {
            json_type type;
            if (!get_type(v, type, error)) return false;
            if (type == json_type::null) {
                out.limit_pico.emplace(std::nullopt);
                continue;
            }
            if (type != json_type::number) return error = "'limit' must be a number or null", false;
            const parsed_price p = parse_usd_pico(trim_token(v.raw_json_token()));
            if (p.status != price_status::ok) return error = "'limit' must be a non-negative USD amount", false;
            out.limit_pico.emplace(p.pico);
        } else if (key == "limit_reset") {
            if (!nullable_string(v, "limit_reset", out.limit_reset)) return false;
            if (*out.limit_reset && **out.limit_reset != "daily" && **out.limit_reset != "weekly" &&
                **out.limit_reset != "monthly")
                return error = "'limit_reset' must be daily, weekly, monthly or null", false;
        } else if (key == "include_byok_in_limit") {
            bool flag = false;
            if (!read_bool_field(v, "include_byok_in_limit", flag, error)) return false;
            out.include_byok_in_limit = flag;
        } else if (key == "expires_at") {
            if (!nullable_string(v, "expires_at", out.expires_at)) return false;
            if (*out.expires_at && !(**out.expires_at).ends_with('Z'))
                return error = "'expires_at' must be an ISO 8601 UTC time (ending in Z)", false;
        } else if (key == "disabled") {
            bool flag = false;
            if (!read_bool_field(v, "disabled", flag, error)) return false;
            out.disabled = flag;
        }
    }
    return finish_document(doc, error);
}

// ---------------------------------------------------------------- key_store

key_store::key_store() : rng_(std::random_device{}()) {}

key_store::admission key_store::admit(std::string_view key) const {
    const std::lock_guard lock(mu_);
    const auto it = by_key_.find(key);
    if (it == by_key_.end()) return admission::ok;
    const record& r = it->second;
    if (r.disabled) return admission::disabled;
    if (r.limit_pico && r.usage_pico >= *r.limit_pico) return admission::limit_exceeded;
    return admission::ok;
}

void key_store::charge(std::string_view key, std::int64_t cost_pico) {
    const std::lock_guard lock(mu_);
    total_usage_pico_ = std::min(max_pico, total_usage_pico_ + cost_pico);
    auto it = by_key_.find(key);
    if (it == by_key_.end()) {
        if (ad_hoc_count_ >= max_ad_hoc_keys) return;
        ++ad_hoc_count_;
        record r;
        r.key = key;
        r.created_unix = static_cast<std::int64_t>(std::time(nullptr));
        it = by_key_.emplace(std::string(key), std::move(r)).first;
    }
    it->second.usage_pico = std::min(max_pico, it->second.usage_pico + cost_pico);
}

std::string key_store::label_of(std::string_view key) {
    constexpr std::string_view prefix = "sk-or-v1-";
    if (key.starts_with(prefix) && key.size() >= prefix.size() + 7)
        return fmt::format("{}{}...{}", prefix, key.substr(prefix.size(), 3), key.substr(key.size() - 4));
    if (key.size() > 8) return fmt::format("{}...{}", key.substr(0, 3), key.substr(key.size() - 3));
    return "***";
}

void key_store::render(const record& r, std::string& out) const {
    out += "{\"hash\":";
    if (r.managed)
        append_json_string(out, r.hash);
    else
        out += "null";
    out += ",\"name\":";
    append_json_string(out, r.name);
    out += ",\"label\":";
    append_json_string(out, label_of(r.key));
    out += r.disabled ? ",\"disabled\":true" : ",\"disabled\":false";
    out += ",\"limit\":";
    append_optional_usd(out, r.limit_pico);
    out += ",\"limit_remaining\":";
    append_optional_usd(
        out, r.limit_pico ? std::optional(std::max<std::int64_t>(0, *r.limit_pico - r.usage_pico)) : std::nullopt);
    out += ",\"limit_reset\":";
    append_optional_string(out, r.limit_reset);
    out += r.include_byok_in_limit ? ",\"include_byok_in_limit\":true" : ",\"include_byok_in_limit\":false";
    for (const std::string_view period : {"usage", "usage_daily", "usage_weekly", "usage_monthly"}) {
        fmt::format_to(std::back_inserter(out), ",\"{}\":", period);
        append_usd(out, r.usage_pico, cost_style::plain);
    }
    out += ",\"byok_usage\":0,\"byok_usage_daily\":0,\"byok_usage_weekly\":0,\"byok_usage_monthly\":0";
    out += ",\"created_at\":";
    out += '"';
    append_iso8601(out, r.created_unix);
    out += "\",\"updated_at\":";
    if (r.updated_unix) {
        out += '"';
        append_iso8601(out, *r.updated_unix);
        out += '"';
    } else {
        out += "null";
    }
    out += ",\"expires_at\":";
    append_optional_string(out, r.expires_at);
    fmt::format_to(std::back_inserter(out), ",\"creator_user_id\":null,\"workspace_id\":\"{}\"}}", workspace_id);
}

void key_store::create(const key_fields& fields, std::string& out) {
    const std::lock_guard lock(mu_);
    const auto hex64 = [&] {
        std::string s;
        for (int i = 0; i < 4; ++i) fmt::format_to(std::back_inserter(s), "{:016x}", rng_());
        return s;
    };
    record r;
    r.managed = true;
    r.key = "sk-or-v1-" + hex64();
    r.hash = hex64();
    r.name = fields.name.value_or("");
    if (fields.limit_pico) r.limit_pico = *fields.limit_pico;
    if (fields.limit_reset && *fields.limit_reset) r.limit_reset = std::string(**fields.limit_reset);
    r.include_byok_in_limit = fields.include_byok_in_limit.value_or(false);
    if (fields.expires_at && *fields.expires_at) r.expires_at = std::string(**fields.expires_at);
    r.created_unix = static_cast<std::int64_t>(std::time(nullptr));
    out += "{\"data\":";
    render(r, out);
    out += ",\"key\":";
    append_json_string(out, r.key);
    out += '}';
    key_by_hash_.emplace(r.hash, r.key);
    created_order_.push_back(r.hash);
    std::string key = r.key;
    by_key_.insert_or_assign(std::move(key), std::move(r));
}

bool key_store::get(std::string_view hash, std::string& out) const {
    const std::lock_guard lock(mu_);
    const auto h = key_by_hash_.find(hash);
    if (h == key_by_hash_.end()) return false;
    out += "{\"data\":";
    render(by_key_.find(h->second)->second, out);
    out += '}';
    return true;
}

bool key_store::patch(std::string_view hash, const key_fields& fields, std::string& out) {
    const std::lock_guard lock(mu_);
    const auto h = key_by_hash_.find(hash);
    if (h == key_by_hash_.end()) return false;
    record& r = by_key_.find(h->second)->second;
    if (fields.name) r.name = *fields.name;
    if (fields.disabled) r.disabled = *fields.disabled;
    if (fields.limit_pico) r.limit_pico = *fields.limit_pico;
    if (fields.limit_reset)
        r.limit_reset = *fields.limit_reset ? std::optional<std::string>(**fields.limit_reset) : std::nullopt;
    if (fields.include_byok_in_limit) r.include_byok_in_limit = *fields.include_byok_in_limit;
    if (fields.expires_at)
        r.expires_at = *fields.expires_at ? std::optional<std::string>(**fields.expires_at) : std::nullopt;
    r.updated_unix = static_cast<std::int64_t>(std::time(nullptr));
    out += "{\"data\":";
    render(r, out);
    out += '}';
    return true;
}

bool key_store::remove(std::string_view hash) {
    const std::lock_guard lock(mu_);
    const auto h = key_by_hash_.find(hash);
    if (h == key_by_hash_.end()) return false;
    by_key_.erase(h->second);
    created_order_.erase(std::find(created_order_.begin(), created_order_.end(), h->first));
    key_by_hash_.erase(h);
    return true;
}

void key_store::list(bool include_disabled, std::size_t offset, std::string& out) const {
    const std::lock_guard lock(mu_);
    out += "{\"data\":[";
    std::size_t seen = 0, written = 0;
    for (const auto& hash : created_order_) {
        const record& r = by_key_.find(key_by_hash_.find(hash)->second)->second;
        if (r.disabled && !include_disabled) continue;
        if (seen++ < offset) continue;
        if (written == keys_page_size) break;
        if (written++ > 0) out += ',';
        render(r, out);
    }
    out += "]}";
}

void key_store::current(std::string_view key, bool management, std::string& out) const {
    const std::lock_guard lock(mu_);
    const auto it = by_key_.find(key);
    const record* r = it == by_key_.end() ? nullptr : &it->second;
    const std::int64_t usage = r ? r->usage_pico : 0;
    out += "{\"data\":{\"label\":";
    append_json_string(out, label_of(key));
    out += ",\"limit\":";
    const std::optional<std::int64_t> limit = r ? r->limit_pico : std::nullopt;
    append_optional_usd(out, limit);
    out += ",\"limit_remaining\":";
    append_optional_usd(out, limit ? std::optional(std::max<std::int64_t>(0, *limit - usage)) : std::nullopt);
    out += ",\"limit_reset\":";
    append_optional_string(out, r ? r->limit_reset : std::nullopt);
    out += (r && r->include_byok_in_limit) ? ",\"include_byok_in_limit\":true" : ",\"include_byok_in_limit\":false";
    for (const std::string_view period : {"usage", "usage_daily", "usage_weekly", "usage_monthly"}) {
        fmt::format_to(std::back_inserter(out), ",\"{}\":", period);
        append_usd(out, usage, cost_style::plain);
    }
    out += ",\"byok_usage\":0,\"byok_usage_daily\":0,\"byok_usage_weekly\":0,\"byok_usage_monthly\":0";
    out += ",\"is_free_tier\":false";
    out += management ? ",\"is_management_key\":true,\"is_provisioning_key\":true"
                      : ",\"is_management_key\":false,\"is_provisioning_key\":false";
    out += ",\"creator_user_id\":null,\"expires_at\":";
    append_optional_string(out, r ? r->expires_at : std::nullopt);
    out += ",\"rate_limit\":{\"requests\":-1,\"interval\":\"10s\",\"note\":\"deprecated\"}}}";
}

std::int64_t key_store::total_usage_pico() const {
    const std::lock_guard lock(mu_);
    return total_usage_pico_;
}

// ---------------------------------------------------------------- generation_store

void generation_store::add(generation_record record) {
    const std::lock_guard lock(mu_);
    std::size_t slot = 0;
    if (ring_.size() < capacity) {
        slot = ring_.size();
        ring_.push_back(std::move(record));
    } else {
        slot = next_;
        next_ = (next_ + 1) % capacity;
        const auto old = index_.find(ring_[slot].id);
        if (old != index_.end() && old->second == slot) index_.erase(old);  // unless a newer record took the id
        ring_[slot] = std::move(record);
    }
    index_.insert_or_assign(ring_[slot].id, slot);
}

bool generation_store::render(std::string_view id, std::int64_t now_ms, std::string& out) const {
    const std::lock_guard lock(mu_);
    const auto it = index_.find(id);
    if (it == index_.end()) return false;
    const generation_record& g = ring_[it->second];
    if (now_ms - g.recorded_ms < visible_after_ms_) return false;  // not yet visible: 404 like an unknown id
    out += "{\"data\":{\"id\":";
    append_json_string(out, g.id);
    out += ",\"upstream_id\":";
    append_json_string(out, g.id);
    out += ",\"total_cost\":";
    append_usd(out, g.cost_pico, cost_style::plain);
    out += ",\"usage\":";
    append_usd(out, g.cost_pico, cost_style::plain);
    out += ",\"cache_discount\":null,\"upstream_inference_cost\":null,\"is_byok\":false,\"created_at\":\"";
    append_iso8601(out, g.created_unix);
    out += "\",\"model\":";
    append_json_string(out, g.model);
    fmt::format_to(std::back_inserter(out),
                   ",\"provider_name\":\"Mock\",\"api_type\":\"{}\",\"streamed\":{},\"cancelled\":{}"
                   ",\"tokens_prompt\":{},\"tokens_completion\":{},\"native_tokens_prompt\":{}"
                   ",\"native_tokens_completion\":{},\"native_tokens_reasoning\":{},\"native_tokens_cached\":{}"
                   ",\"num_media_prompt\":null,\"num_media_completion\":null,\"num_search_results\":null"
                   ",\"latency\":{},\"generation_time\":{},\"moderation_latency\":null,\"origin\":\"\"",
                   g.api_type, g.streamed, g.cancelled, g.tokens.prompt, g.tokens.completion, g.tokens.prompt,
                   g.tokens.completion, g.tokens.reasoning, g.tokens.cached, g.latency_ms, g.latency_ms);
    out += ",\"finish_reason\":";
    if (g.finish_reason.empty())
        out += "null";
    else
        append_json_string(out, g.finish_reason);
    out += ",\"native_finish_reason\":";
    if (g.finish_reason.empty())
        out += "null";
    else
        append_json_string(out, g.finish_reason);
    out += "}}";
    return true;
}

// ---------------------------------------------------------------- management_faults

namespace {

constexpr std::array<std::pair<std::string_view, management_fault>, 10> management_fault_names = {{
    {"none", management_fault::none},
    {"500", management_fault::status_500},
    {"502", management_fault::status_502},
    {"503", management_fault::status_503},
    {"429", management_fault::status_429},
    {"401", management_fault::status_401},
    {"402", management_fault::status_402},
    {"stall", management_fault::stall},
    {"slow", management_fault::slow},
    {"reset", management_fault::reset},
}};

}  // namespace

std::optional<management_fault> parse_management_fault(std::string_view name) {
    for (const auto& [text, fault] : management_fault_names)
        if (text == name) return fault;
    return std::nullopt;
}

std::string_view management_fault_name(management_fault fault) {
    for (const auto& [text, f] : management_fault_names)
        if (f == fault) return text;
    return "none";
}

void management_faults::arm(armed_fault fault) {
    if (fault.kind == management_fault::none || fault.count <= 0) fault = {};
    fault.count = std::min(fault.count, max_count);
    if (fault.kind != management_fault::slow) fault.delay_ms = 0;
    const std::lock_guard lock(mu_);
    armed_ = fault;
}

armed_fault management_faults::take() {
    const std::lock_guard lock(mu_);
    if (armed_.count <= 0) return {};
    armed_fault one = armed_;
    one.count = 1;
    if (--armed_.count == 0) armed_ = {};
    return one;
}

armed_fault management_faults::pending() const {
    const std::lock_guard lock(mu_);
    return armed_;
}

}  // namespace mock
