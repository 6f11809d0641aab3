// The upstream's answers: what a JSON answer or stream event says
// (inspect_answer), the one edit made to relayed events
// (remove_usage_member), and LiteLLM's cost header.
#include "tollgate/proxy/wire.hpp"

#include "json_text.hpp"
#include "tollgate/pricing/money.hpp"

namespace tollgate::proxy {

namespace {

using simdjson::ondemand::array;
using simdjson::ondemand::json_type;
using simdjson::ondemand::object;
using simdjson::ondemand::value;

// A money figure (USD) from a JSON number's own text, never through double.
// Not a number, negative or out of range: unknown. False: malformed JSON.
bool read_usd(value v, std::optional<std::int64_t>& out) {
    out.reset();
    json_type type;
    if (v.type().get(type)) return false;
    if (type != json_type::number) return true;
    const std::string_view text = json_text::number_text(v);
    if (text.empty()) return false;
    const auto price = pricing::parse_usd_pico(text);
    if (price.status == pricing::price_status::ok) out = price.pico;
    return true;
}

enum class count_status : std::uint8_t { ok, invalid, malformed };

// A token count: absent or null is 0, anything but a non-negative integer
// is invalid.
count_status read_count(value v, std::int64_t& out) {
    out = 0;
    json_type type;
    if (v.type().get(type)) return count_status::malformed;
    if (type == json_type::null) return count_status::ok;
    if (type != json_type::number) return count_status::invalid;
    if (json_text::number_text(v).empty()) return count_status::malformed;
    std::int64_t n = 0;
    if (v.get_int64().get(n) || n < 0) return count_status::invalid;
    out = n;
    return count_status::ok;
}

struct detail_count {
    std::string_view key;
    std::int64_t* out;
};

// An object of counts such as prompt_tokens_details (null: none).
count_status read_details(value v, std::initializer_list<detail_count> wanted) {
    for (const auto& w : wanted) *w.out = 0;
    json_type type;
    if (v.type().get(type)) return count_status::malformed;
    if (type == json_type::null) return count_status::ok;
    if (type != json_type::object) return count_status::invalid;
    object o;
    if (v.get_object().get(o)) return count_status::malformed;
    count_status status = count_status::ok;
    for (auto field : o) {
        std::string_view key;
        value fv;
        if (field.unescaped_key().get(key) || field.value().get(fv)) return count_status::malformed;
        for (const auto& w : wanted) {
            if (key != w.key) continue;
            const auto s = read_count(fv, *w.out);
            if (s == count_status::malformed) return s;
            if (s == count_status::invalid) status = s;
        }
    }
    return status;
}

// The `usage` member. Returns false on malformed JSON.
bool read_usage(value v, answer_facts& facts) {
    facts.reported = reported_usage{};
    json_type type;
    if (v.type().get(type)) return false;
    if (type == json_type::null) {
        facts.usage = member_state::null;
        return true;
    }
    facts.usage = member_state::invalid;
    if (type != json_type::object) return true;
    object o;
    if (v.get_object().get(o)) return false;
    auto& r = facts.reported;
    auto& t = r.tokens;
    bool valid = true;
    std::optional<std::int64_t> total;
    for (auto field : o) {
        std::string_view key;
        value fv;
        if (field.unescaped_key().get(key) || field.value().get(fv)) return false;
        count_status s = count_status::ok;
        if (key == "prompt_tokens") {
            s = read_count(fv, t.prompt_tokens);
        } else if (key == "completion_tokens") {
            s = read_count(fv, t.completion_tokens);
        } else if (key == "total_tokens") {
            if (fv.type().get(type)) return false;
            total.reset();
            if (type != json_type::null) {
                std::int64_t n = 0;
                s = read_count(fv, n);
                total = n;
            }
        } else if (key == "prompt_tokens_details") {
            s = read_details(fv, {{"cached_tokens", &t.cached_tokens}, {"cache_write_tokens", &t.cache_write_tokens}});
        } else if (key == "completion_tokens_details") {
            s = read_details(fv, {{"reasoning_tokens", &t.reasoning_tokens}});
        } else if (key == "server_tool_use_details") {
            s = read_details(fv, {{"web_search_requests", &t.web_search_calls}});
        } else if (key == "cost") {
            if (!read_usd(fv, r.cost_pico)) return false;
        } else if (key == "is_byok") {
            if (fv.type().get(type)) return false;
            r.is_byok = false;
            if (type == json_type::boolean && fv.get_bool().get(r.is_byok)) return false;
        } else if (key == "cost_details") {
            r.upstream_inference_cost_pico.reset();
            const bool ok = json_text::each_member(fv, [&](std::string_view dk, value dv) {
                return dk != "upstream_inference_cost" || read_usd(dv, r.upstream_inference_cost_pico);
            });
            if (!ok) return false;
        }
        if (s == count_status::malformed) return false;
        if (s == count_status::invalid) valid = false;
    }
    if (total) {
        r.total_tokens = *total;
    } else if (__builtin_add_overflow(t.prompt_tokens, t.completion_tokens, &r.total_tokens)) {
        valid = false;
    }
    if (valid) facts.usage = member_state::value;
    return true;
}

// JavaScript truthiness, as openai-node tests a chunk's `error`.
bool read_error(value v, answer_facts& facts) {
    facts.error = false;
    facts.error_message.clear();
    json_type type;
    if (v.type().get(type)) return false;
    switch (type) {
        case json_type::null: return true;
        case json_type::boolean: return !v.get_bool().get(facts.error);
        case json_type::number: {
            const std::string_view text = json_text::number_text(v);
            if (text.empty()) return false;
            // Zero in any spelling (0, -0, 0.0, 0e5) is falsy.
            bool zero = true;
            for (const char c : text) {
                if (c == 'e' || c == 'E') break;
                if (c >= '1' && c <= '9') zero = false;
            }
            facts.error = !zero;
            return true;
        }
        case json_type::string: {
            std::string_view s;
            if (v.get_string().get(s)) return false;
            facts.error = !s.empty();
            facts.error_message = std::string(s);
            return true;
        }
        case json_type::array: facts.error = true; return true;
        case json_type::object: {
            facts.error = true;
            object o;
            if (v.get_object().get(o)) return false;
            for (auto field : o) {
                std::string_view key;
                value fv;
                if (field.unescaped_key().get(key) || field.value().get(fv)) return false;
                if (key != "message") continue;
                if (fv.type().get(type)) return false;
                facts.error_message.clear();
                if (type == json_type::string) {
                    std::string_view s;
                    if (fv.get_string().get(s)) return false;
                    facts.error_message = std::string(s);
                }
            }
            return true;
        }
    }
    return true;
}

// Appends `v` if it is a string, or the `text` of its parts if it is an
// array of parts (content given as parts).
bool append_text(value v, std::string& out) {
    json_type type;
    if (v.type().get(type)) return false;
    if (type == json_type::string) {
        std::string_view s;
        if (v.get_string().get(s)) return false;
        out.append(s);
        return true;
    }
    return json_text::each_element(v, [&](value part) {
        return json_text::each_member(part, [&](std::string_view key, value fv) {
            return key != "text" || append_text(fv, out);
        });
    });
}

// `function` of a tool call, or a legacy `function_call`: its arguments.
bool append_arguments(value v, std::string& out) {
    return json_text::each_member(v, [&](std::string_view key, value fv) {
        if (key != "arguments") return true;
        json_type type;
        if (fv.type().get(type)) return false;
        return type != json_type::string || append_text(fv, out);
    });
}

// A delta (stream) or message (non-stream).
bool append_message(value v, std::string& out) {
    return json_text::each_member(v, [&](std::string_view key, value fv) {
        if (key == "content" || key == "reasoning" || key == "reasoning_content" || key == "refusal") {
            return append_text(fv, out);
        }
        if (key == "function_call") return append_arguments(fv, out);
        if (key != "tool_calls") return true;
        return json_text::each_element(fv, [&](value call) {
            return json_text::each_member(call, [&](std::string_view ck, value cv) {
                return ck != "function" || append_arguments(cv, out);
            });
        });
    });
}

bool read_choices(value v, std::string& out) {
    out.clear();
    json_type type;
    if (v.type().get(type)) return false;
    if (type != json_type::array) return true;
    array choices;
    if (v.get_array().get(choices)) return false;
    for (auto choice_result : choices) {
        value choice;
        if (choice_result.get(choice) || choice.type().get(type)) return false;
        if (type != json_type::object) continue;
        object o;
        if (choice.get_object().get(o)) return false;
        for (auto field : o) {
            std::string_view key;
            value fv;
            if (field.unescaped_key().get(key) || field.value().get(fv)) return false;
            if (key == "delta" || key == "message") {
                if (!append_message(fv, out)) return false;
            } else if (key == "text") {  // /v1/completions
                if (fv.type().get(type)) return false;
                if (type == json_type::string && !append_text(fv, out)) return false;
            }
        }
    }
    return true;
}

}  // namespace

answer_facts inspect_answer(std::string_view json) {
    answer_facts facts;
    const bool ok = json_text::each_root_member(json, [&](std::string_view key, value v) {
        if (key == "usage") return read_usage(v, facts);
        if (key == "error") return read_error(v, facts);
        if (key == "choices") return read_choices(v, facts.generated_text);
        if (key != "model") return true;
        json_type type;
        facts.model.clear();
        if (v.type().get(type)) return false;
        if (type != json_type::string) return true;
        std::string_view s;
        if (v.get_string().get(s)) return false;
        facts.model = std::string(s);
        return true;
    });
    if (!ok) return answer_facts{};
    facts.json_ok = true;
    return facts;
}

bool may_hold_usage_or_error(std::string_view json) {
    return json.find("\"usage\"") != std::string_view::npos || json.find("\"error\"") != std::string_view::npos ||
           json.find("\\u") != std::string_view::npos;
}

// ---- remove_usage_member ---------------------------------------------------

namespace {

// A data line's value: where it sits in the joined data and in the raw event.
struct data_segment {
    std::size_t joined_begin;
    std::size_t raw_begin;
    std::size_t size;
};

// The raw position of joined[x] (x may be the end of a segment: its line end).
std::size_t raw_position(const std::vector<data_segment>& segments, std::size_t x) {
    for (const auto& s : segments) {
        if (x >= s.joined_begin && x <= s.joined_begin + s.size) return s.raw_begin + (x - s.joined_begin);
    }
    return std::string_view::npos;  // cannot happen: every x lies in or right after a segment
}

}  // namespace

std::optional<std::string> remove_usage_member(std::string_view raw) {
    // The event's data, joined as sse_parser (and any client) joins it.
    std::string joined;
    std::vector<data_segment> segments;
    // A byte order mark can only open the stream's first event, where the
    // parser skips it: skip it too.
    std::size_t i = raw.starts_with("\xEF\xBB\xBF") ? 3 : 0;
    while (i < raw.size()) {
        std::size_t eol = i;
        while (eol < raw.size() && raw[eol] != '\n' && raw[eol] != '\r') ++eol;
        const std::string_view line = raw.substr(i, eol - i);
        if (line.empty()) break;
        if (line.front() != ':') {
            const std::size_t colon = line.find(':');
            if (line.substr(0, colon) == "data") {
                std::size_t begin = colon == std::string_view::npos ? eol : i + colon + 1;
                if (begin < eol && raw[begin] == ' ') ++begin;
                if (!segments.empty()) joined += '\n';
                segments.push_back({joined.size(), begin, eol - begin});
                joined.append(raw.substr(begin, eol - begin));
            }
        }
        i = eol + 1;
        if (eol < raw.size() && raw[eol] == '\r' && i < raw.size() && raw[i] == '\n') ++i;
    }
    if (segments.empty()) return std::nullopt;

    using namespace json_text;
    if (!is_json_object(joined)) return std::nullopt;
    object_span root;
    if (!scan_object(joined, skip_space(joined, 0), root)) return std::nullopt;
    const auto& m = root.members;
    std::vector<bool> cut(m.size(), false);
    std::size_t last_kept = npos;
    bool any = false;
    for (std::size_t k = 0; k < m.size(); ++k) {
        cut[k] = key_is(joined, m[k], "usage");
        any = any || cut[k];
        if (!cut[k]) last_kept = k;
    }
    if (!any) return std::nullopt;

    // Spans of `joined` to remove, in order and disjoint: a member before the
    // last kept one goes with everything up to the next key; one after it
    // with everything back to the previous value's end.
    std::vector<std::pair<std::size_t, std::size_t>> spans;
    if (last_kept == npos) {
        spans.emplace_back(m.front().key_begin, m.back().value_end);
    } else {
        for (std::size_t k = 0; k < m.size(); ++k) {
            if (!cut[k]) continue;
            if (k < last_kept) spans.emplace_back(m[k].key_begin, m[k + 1].key_begin);
            else spans.emplace_back(m[k - 1].value_end, m[k].value_end);
        }
    }
    std::string out;
    out.reserve(raw.size());
    std::size_t copied = 0;
    for (const auto& [from, to] : spans) {
        const std::size_t raw_from = raw_position(segments, from), raw_to = raw_position(segments, to);
        if (raw_from == npos || raw_to == npos || raw_from < copied || raw_to < raw_from) return std::nullopt;
        out.append(raw.substr(copied, raw_from - copied));
        copied = raw_to;
    }
    out.append(raw.substr(copied));
    return out;
}

std::optional<std::int64_t> parse_cost_header(std::string_view value) {
    while (!value.empty() && (value.front() == ' ' || value.front() == '\t')) value.remove_prefix(1);
    while (!value.empty() && (value.back() == ' ' || value.back() == '\t')) value.remove_suffix(1);
    if (value.empty() || value == "None") return std::nullopt;
    const auto price = pricing::parse_usd_pico(value);
    if (price.status != pricing::price_status::ok) return std::nullopt;
    return price.pico;
}

}  // namespace tollgate::proxy
