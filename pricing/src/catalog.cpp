#include "tollgate/pricing/catalog.hpp"

#include <fmt/format.h>
// No exceptions: every simdjson result must be checked with .get(), so
// hostile input can only ever give a named error.
#define SIMDJSON_EXCEPTIONS 0
#include <simdjson.h>

#include <algorithm>
#include <map>

namespace tollgate::pricing {

namespace {

constexpr std::array<std::string_view, price_key_count> price_key_names = {
    "prompt",       "completion",         "request",          "image",
    "image_token",  "image_output",       "web_search",       "internal_reasoning",
    "input_cache_read", "input_cache_write", "input_cache_write_1h", "audio",
    "audio_output", "input_audio_cache"};

// FNV-1a, 64 bits: identifies the catalog text a price came from.
std::string content_hash_of(std::string_view text) {
    std::uint64_t h = 1469598103934665603ULL;
    for (const unsigned char c : text) {
        h ^= c;
        h *= 1099511628211ULL;
    }
    return fmt::format("fnv1a64:{:016x}", h);
}

bool in_window(int t, int start, int end) {
    if (start <= end) return start <= t && t < end;
    return t >= start || t < end;  // wraps past midnight
}

using simdjson::ondemand::object;
using simdjson::ondemand::value;

// Reads one price value (OpenRouter sends decimal strings; accept a bare
// number too) into `table`. Unknown keys (and `discount`) are ignored.
bool read_price(std::string_view key, value v, price_table& table, std::string& error) {
    const auto k = parse_price_key(key);
    if (!k) return true;
    std::string_view text;
    simdjson::ondemand::json_type type;
    if (v.type().get(type)) {
        error = fmt::format("price {} is not JSON", key);
        return false;
    }
    if (type == simdjson::ondemand::json_type::string) {
        if (v.get_string().get(text)) {
            error = fmt::format("price {} is not a valid string", key);
            return false;
        }
    } else if (type == simdjson::ondemand::json_type::number) {
        text = v.raw_json_token();
        while (!text.empty() && (text.back() == ' ' || text.back() == '\n' || text.back() == '\r' || text.back() == '\t'))
            text.remove_suffix(1);
    } else if (type == simdjson::ondemand::json_type::null) {
        return true;
    } else {
        error = fmt::format("price {} is neither a string nor a number", key);
        return false;
    }
    const pico_price p = parse_usd_pico(text);
    switch (p.status) {
        case price_status::ok: table.set(*k, p.pico); return true;
        case price_status::unknown: table.has_unknown = true; return true;
        case price_status::invalid: error = fmt::format("price {} is not a decimal: \"{}\"", key, text); return false;
        case price_status::out_of_range: error = fmt::format("price {} is out of range: \"{}\"", key, text); return false;
    }
    return false;
}

std::optional<std::int64_t> read_optional_int(value v) {
    std::int64_t n = 0;
    if (v.get_int64().get(n)) return std::nullopt;
    return n;
}

bool read_prices(object pricing, model& m, std::string& error) {
    for (auto field : pricing) {
        std::string_view key;
        if (field.unescaped_key().get(key)) return false;
        value v;
        if (field.value().get(v)) return false;
        if (key == "overrides") {
            simdjson::ondemand::json_type type;
            if (v.type().get(type)) return false;
            if (type == simdjson::ondemand::json_type::null) continue;
            simdjson::ondemand::array list;
            if (v.get_array().get(list)) {
                error = "overrides is not an array";
                return false;
            }
            for (auto entry_value : list) {
                object entry;
                if (entry_value.get_object().get(entry)) {
                    error = "an override is not an object";
                    return false;
                }
                price_override o;
                for (auto f : entry) {
                    std::string_view k;
                    if (f.unescaped_key().get(k)) return false;
                    value fv;
                    if (f.value().get(fv)) return false;
                    if (k == "min_prompt_tokens") {
                        o.min_prompt_tokens = read_optional_int(fv);
                    } else if (k == "utc_start" || k == "utc_end") {
                        const auto hhmm = read_optional_int(fv);
                        if (hhmm && (*hhmm < 0 || *hhmm > 2400 || *hhmm % 100 >= 60)) {
                            error = fmt::format("override {} is not HHMM: {}", k, *hhmm);
                            return false;
                        }
                        (k == "utc_start" ? o.utc_start_hhmm : o.utc_end_hhmm) =
                            hhmm ? std::optional<int>(static_cast<int>(*hhmm)) : std::nullopt;
                    } else if (!read_price(k, fv, o.prices, error)) {
                        return false;
                    }
                }
                m.overrides.push_back(std::move(o));
            }
            continue;
        }
        if (!read_price(key, v, m.base, error)) return false;
    }
    return true;
}

void read_strings(value v, std::vector<std::string>& out) {
    simdjson::ondemand::array list;
    if (v.get_array().get(list)) return;
    for (auto item : list) {
        std::string_view s;
        if (!item.get_string().get(s)) out.emplace_back(s);
    }
}

// SPEC 3: free and unpriced.
void classify(model& m) {
    const auto& p = m.base;
    const bool ends_free = m.id.size() >= 5 && m.id.compare(m.id.size() - 5, 5, ":free") == 0;
    bool all_zero = true;
    for (const auto& price : p.pico) {
        if (price && *price != 0) all_zero = false;
    }
    bool text_like = !m.output_modalities.empty();
    for (const auto& mod : m.output_modalities) {
        if (mod != "text" && mod != "embeddings") text_like = false;
    }
    if (m.output_modalities.empty()) text_like = true;  // the 2025 snapshots predate the field: text models
    // A TTS model is priced per character instead of per token.
    const bool missing_token_price =
        (!p.get(price_key::prompt) || !p.get(price_key::completion)) && !m.input_pico_per_character;
    // Zero token prices on an image, audio, video or rerank model mean "priced
    // per unit elsewhere", whatever per-unit keys the model lists.
    const bool zero_token_prices = p.get(price_key::prompt).value_or(0) == 0 &&
                                   p.get(price_key::completion).value_or(0) == 0 &&
                                   m.input_pico_per_character.value_or(0) == 0;
    m.free = ends_free || (all_zero && zero_token_prices && !p.has_unknown && !missing_token_price && text_like);
    m.unpriced = !m.free && (p.has_unknown || missing_token_price || (zero_token_prices && !text_like));
}

}  // namespace

std::string_view to_string(price_key key) { return price_key_names[static_cast<std::size_t>(key)]; }

std::optional<price_key> parse_price_key(std::string_view text) {
    for (std::size_t i = 0; i < price_key_count; ++i) {
        if (price_key_names[i] == text) return static_cast<price_key>(i);
    }
    return std::nullopt;
}

std::string_view to_string(catalog_status status) {
    switch (status) {
        case catalog_status::ok: return "ok";
        case catalog_status::invalid_json: return "invalid_json";
        case catalog_status::missing_data: return "missing_data";
        case catalog_status::invalid_model: return "invalid_model";
    }
    return "unknown";
}

price_table model::prices_for(std::int64_t prompt_tokens, int utc_hhmm) const {
    price_table out = base;
    for (const auto& o : overrides) {
        if (o.min_prompt_tokens && !(prompt_tokens > *o.min_prompt_tokens)) continue;
        if (o.utc_start_hhmm || o.utc_end_hhmm) {
            const int start = o.utc_start_hhmm.value_or(0), end = o.utc_end_hhmm.value_or(2400);
            if (!in_window(utc_hhmm, start, end)) continue;
        }
        for (std::size_t k = 0; k < price_key_count; ++k) {
            if (o.prices.pico[k]) out.pico[k] = o.prices.pico[k];
        }
        out.has_unknown = out.has_unknown || o.prices.has_unknown;
    }
    return out;
}

catalog::catalog(std::vector<model> models, std::string content_hash)
    : models_(std::move(models)), content_hash_(std::move(content_hash)) {
    for (std::size_t i = 0; i < models_.size(); ++i) by_id_.emplace(models_[i].id, i);
}

const model* catalog::find(std::string_view id) const {
    const auto it = by_id_.find(id);
    return it == by_id_.end() ? nullptr : &models_[it->second];
}

catalog_result parse_openrouter_models(std::string_view json) {
    catalog_result out;
    simdjson::ondemand::parser parser;
    const simdjson::padded_string padded(json);
    simdjson::ondemand::document doc;
    if (parser.iterate(padded).get(doc)) return {catalog_status::invalid_json, "not JSON", nullptr};
    simdjson::ondemand::array data;
    if (doc["data"].get_array().get(data)) return {catalog_status::missing_data, "no \"data\" array", nullptr};

    std::vector<model> models;
    std::size_t index = 0;
    for (auto item : data) {
        object o;
        if (item.get_object().get(o)) return {catalog_status::invalid_model, fmt::format("data[{}] is not an object", index), nullptr};
        model m;
        std::string error;
        bool ok = true;
        for (auto field : o) {
            std::string_view key;
            value v;
            if (field.unescaped_key().get(key) || field.value().get(v)) {
                ok = false;
                break;
            }
            if (key == "id") {
                std::string_view id;
                if (!v.get_string().get(id)) m.id = std::string(id);
            } else if (key == "name") {
                std::string_view name;
                if (!v.get_string().get(name)) m.name = std::string(name);
            } else if (key == "context_length") {
                m.context_length = read_optional_int(v);
            } else if (key == "architecture") {
                object arch;
                if (v.get_object().get(arch)) continue;
                for (auto af : arch) {
                    std::string_view ak;
                    value av;
                    if (af.unescaped_key().get(ak) || af.value().get(av)) break;
                    if (ak == "input_modalities") read_strings(av, m.input_modalities);
                    else if (ak == "output_modalities") read_strings(av, m.output_modalities);
                }
            } else if (key == "top_provider") {
                object top;
                if (v.get_object().get(top)) continue;
                for (auto tf : top) {
                    std::string_view tk;
                    value tv;
                    if (tf.unescaped_key().get(tk) || tf.value().get(tv)) break;
                    if (tk == "max_completion_tokens") m.max_completion_tokens = read_optional_int(tv);
                }
            } else if (key == "pricing") {
                object pricing;
                if (v.get_object().get(pricing) || !read_prices(pricing, m, error)) {
                    ok = false;
                    break;
                }
            }
        }
        if (!ok || m.id.empty()) {
            return {catalog_status::invalid_model,
                    fmt::format("data[{}] ({}): {}", index, m.id.empty() ? "no id" : m.id,
                                error.empty() ? "malformed" : error),
                    nullptr};
        }
        classify(m);
        models.push_back(std::move(m));
        ++index;
    }
    out.value = std::make_shared<const catalog>(std::move(models), content_hash_of(json));
    return out;
}


namespace {

// LiteLLM key -> our price key; `*_above_<N>k_tokens` variants of these
// become overrides.
struct litellm_key {
    std::string_view name;
    price_key key;
};
constexpr litellm_key litellm_keys[] = {
    {"input_cost_per_token", price_key::prompt},
    {"output_cost_per_token", price_key::completion},
    {"cache_read_input_token_cost", price_key::input_cache_read},
    {"cache_creation_input_token_cost", price_key::input_cache_write},
    {"output_cost_per_reasoning_token", price_key::internal_reasoning},
};

std::optional<price_key> litellm_price_key(std::string_view name) {
    for (const auto& k : litellm_keys) {
        if (k.name == name) return k.key;
    }
    return std::nullopt;
}

// "input_cost_per_token_above_200k_tokens" -> ("input_cost_per_token", 200000)
std::optional<std::pair<std::string_view, std::int64_t>> split_above(std::string_view name) {
    constexpr std::string_view marker = "_above_", suffix = "_tokens";
    const auto at = name.find(marker);
    if (at == std::string_view::npos || name.size() < suffix.size() ||
        name.substr(name.size() - suffix.size()) != suffix) {
        return std::nullopt;
    }
    std::string_view number = name.substr(at + marker.size(), name.size() - suffix.size() - at - marker.size());
    std::int64_t multiplier = 1;
    if (!number.empty() && (number.back() == 'k' || number.back() == 'K')) {
        multiplier = 1000;
        number.remove_suffix(1);
    }
    if (number.empty() || number.size() > 9) return std::nullopt;
    std::int64_t n = 0;
    for (const char c : number) {
        if (c < '0' || c > '9') return std::nullopt;
        n = n * 10 + (c - '0');
    }
    return std::pair{name.substr(0, at), n * multiplier};
}

std::vector<std::string> modalities_of_mode(std::string_view mode) {
    if (mode == "chat" || mode == "completion" || mode == "responses" || mode == "realtime") return {"text"};
    if (mode == "embedding") return {"embeddings"};
    if (mode == "audio_speech") return {"speech"};
    if (mode.empty()) return {};
    return {std::string(mode)};
}

}  // namespace

catalog_result parse_litellm_prices(std::string_view json) {
    simdjson::ondemand::parser parser;
    const simdjson::padded_string padded(json);
    simdjson::ondemand::document doc;
    object root;
    if (parser.iterate(padded).get(doc) || doc.get_object().get(root))
        return {catalog_status::invalid_json, "not a JSON object", nullptr};
    std::vector<model> models;
    for (auto entry : root) {
        std::string_view id;
        value v;
        if (entry.unescaped_key().get(id) || entry.value().get(v))
            return {catalog_status::invalid_json, "malformed entry", nullptr};
        // Documentation and routing rules, not models.
        if (id == "sample_spec" || id == "fallback_generalizations") continue;
        object o;
        if (v.get_object().get(o)) continue;  // not a model (e.g. a list of generalizations)
        model m;
        m.id = std::string(id);
        m.name = m.id;
        std::string mode;
        std::string error;
        std::map<std::int64_t, price_table> tiers;  // min_prompt_tokens -> replacement prices
        for (auto field : o) {
            std::string_view key;
            value fv;
            if (field.unescaped_key().get(key) || field.value().get(fv))
                return {catalog_status::invalid_json, fmt::format("{}: malformed field", id), nullptr};
            if (key == "mode") {
                std::string_view text;
                if (!fv.get_string().get(text)) mode = std::string(text);
            } else if (key == "max_input_tokens") {
                m.context_length = read_optional_int(fv);
            } else if (key == "max_output_tokens") {
                m.max_completion_tokens = read_optional_int(fv);
            } else if (key == "input_cost_per_character") {
                price_table one;
                if (!read_price("prompt", fv, one, error))
                    return {catalog_status::invalid_model, fmt::format("{}: {}", id, error), nullptr};
                m.input_pico_per_character = one.get(price_key::prompt);
            } else if (const auto k = litellm_price_key(key)) {
                if (!read_price(to_string(*k), fv, m.base, error))
                    return {catalog_status::invalid_model, fmt::format("{}: {}", id, error), nullptr};
            } else if (const auto above = split_above(key)) {
                const auto base_key = litellm_price_key(above->first);
                if (!base_key) continue;  // tiers of prices we do not model (audio seconds, images)
                if (!read_price(to_string(*base_key), fv, tiers[above->second], error))
                    return {catalog_status::invalid_model, fmt::format("{}: {}", id, error), nullptr};
            }
        }
        for (auto& [threshold, prices] : tiers) {  // ascending: a higher tier is a later entry and wins
            price_override tier;
            tier.min_prompt_tokens = threshold;
            tier.prices = prices;
            m.overrides.push_back(std::move(tier));
        }
        m.output_modalities = modalities_of_mode(mode);
        classify(m);
        models.push_back(std::move(m));
    }
    return {catalog_status::ok, "", std::make_shared<const catalog>(std::move(models), content_hash_of(json))};
}

namespace {
// Python's str.isspace: Unicode White_Space with bidi class WS, B or S, or
// category Zs.
bool is_python_space(std::uint32_t c) {
    return (c >= 0x09 && c <= 0x0d) || (c >= 0x1c && c <= 0x20) || c == 0x85 || c == 0xa0 || c == 0x1680 ||
           (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f || c == 0x205f || c == 0x3000;
}
}  // namespace

std::int64_t count_tts_characters(std::string_view utf8) {
    std::int64_t count = 0;
    std::size_t i = 0;
    const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(utf8[k]); };
    while (i < utf8.size()) {
        const unsigned char b = byte(i);
        std::size_t length = b < 0x80 ? 1 : (b >> 5) == 0x6 ? 2 : (b >> 4) == 0xe ? 3 : (b >> 3) == 0x1e ? 4 : 0;
        std::uint32_t c = length == 1 ? b : length == 2 ? (b & 0x1fu) : length == 3 ? (b & 0x0fu) : (b & 0x07u);
        bool valid = length != 0 && i + length <= utf8.size();
        for (std::size_t k = 1; valid && k < length; ++k) {
            if ((byte(i + k) & 0xc0) != 0x80) valid = false;
            c = (c << 6) | (byte(i + k) & 0x3fu);
        }
        if (!valid) {  // an invalid byte is one character
            ++count;
            ++i;
            continue;
        }
        if (!is_python_space(c)) ++count;
        i += length;
    }
    return count;
}

}  // namespace tollgate::pricing
