#include "openrouter_wire.hpp"

#include <fmt/format.h>

#include "json_text.hpp"
#include "tollgate/pricing/money.hpp"
#include "tollgate/proxy/wire.hpp"

namespace tollgate::proxy::openrouter {

namespace {

using simdjson::ondemand::json_type;
using simdjson::ondemand::value;

// A USD figure as pico-USD from the number's own text; null stays unset.
// False when it is neither, or negative, or too large.
bool read_pico(value v, std::optional<std::int64_t>& out) {
    out.reset();
    json_type type;
    if (v.type().get(type)) return false;
    if (type == json_type::null) return true;
    if (type != json_type::number) return false;
    const auto text = json_text::number_text(v);
    if (text.empty()) return false;
    const auto price = pricing::parse_usd_pico(text);
    if (price.status != pricing::price_status::ok) return false;
    out = price.pico;
    return true;
}

// The same in micro-USD, rounded half up as charges are.
bool read_usd_micros(value v, std::optional<std::int64_t>& out) {
    if (!read_pico(v, out)) return false;
    if (out) out = pricing::pico_to_micros_half_up(*out);
    return true;
}

bool read_string(value v, std::string& out) {
    std::string_view s;
    if (v.get_string().get(s)) return false;
    out.assign(s);
    return true;
}

bool read_count(value v, std::int64_t& out) {
    json_type type;
    if (v.type().get(type)) return false;
    if (type == json_type::null) {
        out = 0;
        return true;
    }
    std::int64_t n = 0;
    if (v.get_int64().get(n) || n < 0) return false;
    out = n;
    return true;
}

// One KeyObject; unknown members are skipped, known ones must have their type.
bool read_key(value v, key_info& k, bool& complete) {
    bool has_hash = false;
    const bool ok = json_text::each_member(v, [&](std::string_view key, value fv) {
        if (key == "hash") return has_hash = read_string(fv, k.hash);
        if (key == "name") return read_string(fv, k.name);
        if (key == "label") return read_string(fv, k.label);
        if (key == "disabled") return !fv.get_bool().get(k.disabled);
        if (key == "limit") return read_usd_micros(fv, k.limit_micros);
        if (key == "limit_remaining") return read_usd_micros(fv, k.remaining_micros);
        if (key == "usage") {
            std::optional<std::int64_t> usage;
            if (!read_usd_micros(fv, usage)) return false;
            k.usage_micros = usage.value_or(0);
            return true;
        }
        return true;
    });
    complete = ok && has_hash && !k.hash.empty();
    return ok;
}

// On Demand steps over what nobody reads without checking it: the whole
// text is checked first, so a malformed answer is refused, not half read.
template <class F>
bool each_checked_member(std::string_view text, F&& fn) {
    return json_text::is_json_object(text) && json_text::each_root_member(text, std::forward<F>(fn));
}

bool is_object(value v) {
    json_type type;
    return !v.type().get(type) && type == json_type::object;
}

}  // namespace

std::optional<key_info> parse_key_answer(std::string_view text) {
    key_info k;
    bool complete = false;
    const bool ok = each_checked_member(text, [&](std::string_view key, value v) {
        if (key != "data") return true;
        return is_object(v) && read_key(v, k, complete);
    });
    if (!ok || !complete) return std::nullopt;
    return k;
}

std::optional<created_key> parse_created_key(std::string_view text) {
    created_key c;
    bool complete = false;
    const bool ok = each_checked_member(text, [&](std::string_view key, value v) {
        if (key == "data") return is_object(v) && read_key(v, c.info, complete);
        if (key == "key") return read_string(v, c.key);
        return true;
    });
    if (!ok || !complete || c.key.empty()) return std::nullopt;
    return c;
}

std::optional<std::vector<key_info>> parse_key_list(std::string_view text) {
    std::vector<key_info> out;
    bool seen = false;
    const bool ok = each_checked_member(text, [&](std::string_view key, value v) {
        if (key != "data") return true;
        json_type type;
        if (v.type().get(type) || type != json_type::array) return false;
        seen = true;
        return json_text::each_element(v, [&](value e) {
            key_info k;
            bool complete = false;
            if (!is_object(e) || !read_key(e, k, complete) || !complete) return false;
            out.push_back(std::move(k));
            return true;
        });
    });
    if (!ok || !seen) return std::nullopt;
    return out;
}

std::optional<generation> parse_generation(std::string_view text) {
    generation g;
    bool has_cost = false;
    const bool ok = each_checked_member(text, [&](std::string_view key, value v) {
        if (key != "data") return true;
        if (!is_object(v)) return false;
        return json_text::each_member(v, [&](std::string_view k, value fv) {
            if (k == "id") return read_string(fv, g.id);
            if (k == "total_cost") {
                std::optional<std::int64_t> cost;
                if (!read_pico(fv, cost)) return false;
                has_cost = cost.has_value();
                g.total_cost_pico = cost.value_or(0);
                return true;
            }
            if (k == "upstream_inference_cost") return read_pico(fv, g.upstream_inference_cost_pico);
            if (k == "tokens_prompt") return read_count(fv, g.prompt_tokens);
            if (k == "tokens_completion") return read_count(fv, g.completion_tokens);
            if (k == "is_byok") {
                json_type type;
                if (fv.type().get(type)) return false;
                return type != json_type::boolean || !fv.get_bool().get(g.is_byok);
            }
            return true;
        });
    });
    if (!ok || !has_cost) return std::nullopt;
    return g;
}

std::string error_message(std::string_view text) {
    std::string message;
    (void)json_text::each_root_member(text, [&](std::string_view key, value v) {
        if (key != "error") return true;
        return json_text::each_member(v, [&](std::string_view k, value fv) {
            if (k == "message") (void)read_string(fv, message);
            return true;
        });
    });
    return message;
}

std::string mask_key(std::string_view key) {
    if (key.size() <= 16) return std::string(key.substr(0, std::min<std::size_t>(key.size(), 4))) + "…";
    return fmt::format("{}…{}", key.substr(0, 12), key.substr(key.size() - 4));
}

}  // namespace tollgate::proxy::openrouter

namespace tollgate::proxy {

std::string usd_text(std::int64_t micros) {
    const bool negative = micros < 0;
    const auto magnitude =
        negative ? -static_cast<unsigned long long>(micros) : static_cast<unsigned long long>(micros);
    return fmt::format("{}{}.{:06}", negative ? "-" : "", magnitude / 1'000'000, magnitude % 1'000'000);
}

}  // namespace tollgate::proxy
