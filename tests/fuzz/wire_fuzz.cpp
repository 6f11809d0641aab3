// libFuzzer target: the wire parsers (proxy/include/tollgate/proxy/wire.hpp)
// on any bytes never crash, and keep their promises:
// - sse_parser: the same events whether the bytes come in one feed or two
//   (cut where the first input byte says), the raws and pending() give back
//   every byte fed, and a small limit only ever cuts the stream short;
// - remove_usage_member: on an event whose data is a valid JSON object, the
//   result's data is a valid JSON object with the same members but `usage`;
// - force_include_usage: an answer exactly for JSON objects, and that answer
//   parses with every stream_options.include_usage true;
// - the facts stay in range (counts non-negative, money within max_pico).
#include "tollgate/pricing/money.hpp"
#include "tollgate/proxy/wire.hpp"

#define SIMDJSON_EXCEPTIONS 0
#include <simdjson.h>

#include <cstdlib>
#include <string>
#include <vector>

using namespace tollgate::proxy;

namespace {

void check(bool ok) {
    if (!ok) std::abort();
}

struct seen {
    std::string raw, data;
    bool has_data;
    bool operator==(const seen&) const = default;
};

struct parsed {
    std::vector<seen> events;
    std::string pending;
    bool overflowed = false;
};

parsed parse(std::string_view text, std::size_t cut, std::size_t max_event_bytes) {
    sse_parser parser(max_event_bytes);
    parsed out;
    for (const auto piece : {text.substr(0, cut), text.substr(cut)}) {
        parser.feed(piece);
        check(parser.buffered() <= max_event_bytes + text.size());
        while (auto ev = parser.next()) {
            // A CRLF cut between feeds: its LF comes back alone (wire.hpp).
            if (ev->raw == "\n" && !ev->has_data && !out.events.empty() && out.events.back().raw.back() == '\r') {
                out.events.back().raw += '\n';
                continue;
            }
            out.events.push_back({std::string(ev->raw), std::string(ev->data), ev->has_data});
        }
    }
    out.pending = std::string(parser.pending());
    out.overflowed = parser.overflowed();
    return out;
}

// Top-level member names of a valid JSON object, or nullopt.
std::optional<std::vector<std::string>> object_keys(std::string_view json) {
    simdjson::dom::parser parser;
    simdjson::dom::object root;
    if (parser.parse(simdjson::padded_string(json)).get(root)) return std::nullopt;
    std::vector<std::string> keys;
    for (auto [key, value] : root) keys.emplace_back(key);
    return keys;
}

// The data of the event that opens `event` (ended by the end of the text
// if no blank line ends it, as remove_usage_member reads it).
std::string data_of(std::string_view event) {
    sse_parser parser;
    parser.feed(event);
    parser.feed("\n\n");
    auto ev = parser.next();
    return ev ? std::string(ev->data) : std::string();
}

void check_usage(const answer_facts& f) {
    if (f.usage != member_state::value) return;
    const auto& t = f.reported.tokens;
    check(t.prompt_tokens >= 0 && t.completion_tokens >= 0 && t.cached_tokens >= 0 && t.cache_write_tokens >= 0 &&
          t.reasoning_tokens >= 0 && t.web_search_calls >= 0 && f.reported.total_tokens >= 0);
    for (const auto& cost : {f.reported.cost_pico, f.reported.upstream_inference_cost_pico}) {
        if (cost) check(*cost >= 0 && *cost <= tollgate::pricing::max_pico);
    }
}

void check_splice(std::string_view raw, std::string_view data) {
    const auto out = remove_usage_member(raw);
    const auto before = object_keys(data);
    if (!before) {
        check(!out);  // not a JSON object: nothing to cut
        return;
    }
    std::vector<std::string> kept;
    for (const auto& k : *before) {
        if (k != "usage") kept.push_back(k);
    }
    check(out.has_value() == (kept.size() != before->size()));
    if (!out) return;
    const auto after = object_keys(data_of(*out));
    check(after && *after == kept);
}

void check_force(std::string_view text) {
    const auto out = force_include_usage(text);
    const bool is_object = object_keys(text).has_value();
    check(out.has_value() == is_object);
    if (!out) return;
    simdjson::dom::parser parser;
    simdjson::dom::object root;
    check(!parser.parse(simdjson::padded_string(*out)).get(root));
    bool any = false;
    for (auto [key, value] : root) {
        if (key != "stream_options") continue;
        any = true;
        simdjson::dom::object options;
        check(!value.get(options));
        bool flag_seen = false;
        for (auto [k, v] : options) {
            if (k != "include_usage") continue;
            bool flag = false;
            check(!v.get(flag) && flag);
            flag_seen = true;
        }
        check(flag_seen);
    }
    check(any);
    // Forcing twice changes nothing more.
    check(force_include_usage(*out) == *out);
    const auto facts = inspect_request(*out);
    if (facts.json_ok) check(facts.include_usage);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* bytes, std::size_t size) {
    if (size == 0) return 0;
    const std::string_view text(reinterpret_cast<const char*>(bytes) + 1, size - 1);
    const std::size_t cut = text.empty() ? 0 : bytes[0] % (text.size() + 1);

    // Framing: one feed or two, the same events; every byte accounted for.
    const auto whole = parse(text, text.size(), 1 << 20);
    const auto halves = parse(text, cut, 1 << 20);
    check(!whole.overflowed && !halves.overflowed);
    check(whole.events == halves.events && whole.pending == halves.pending);
    std::string all;
    for (const auto& e : whole.events) all += e.raw;
    check(all + whole.pending == text);
    // A small limit stops the stream early, never changes an event.
    const auto limited = parse(text, cut, 48);
    check(limited.events.size() <= whole.events.size());
    for (std::size_t i = 0; i < limited.events.size(); ++i) check(limited.events[i] == whole.events[i]);
    if (!limited.overflowed) check(limited.events == whole.events);

    for (std::size_t i = 0; i < whole.events.size(); ++i) {
        const auto& e = whole.events[i];
        if (!e.has_data) continue;
        check_usage(inspect_answer(e.data));
        // A byte order mark is one only where the stream starts.
        if (i > 0 && e.raw.starts_with("\xEF\xBB\xBF")) continue;
        check_splice(e.raw, e.data);
    }
    check_splice(text, data_of(text));

    // The request side.
    const auto facts = inspect_request(text);
    check(facts.n >= 1 && facts.max_tokens.value_or(0) >= 0 && facts.input_images >= 0);
    check(facts.message_roles.size() == facts.message_texts.size());
    if (!facts.json_ok) check(facts.model.empty() && facts.bad_param.empty());
    check_force(text);

    // The answer side.
    const auto answer = inspect_answer(text);
    check_usage(answer);
    if (!answer.json_ok) check(answer.usage == member_state::absent && !answer.error);
    const auto cost = parse_cost_header(text);
    if (cost) check(*cost >= 0 && *cost <= tollgate::pricing::max_pico);
    return 0;
}
