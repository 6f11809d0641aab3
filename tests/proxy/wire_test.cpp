// SSE framing (sse_parser): real OpenRouter and LiteLLM streams split at
// every byte boundary, in 1-byte pieces, at random and all at once, with LF,
// CRLF and CR line ends; comments, other fields, multi-line data, a byte
// order mark, oversized events and streams cut mid-event.
#include "tollgate/proxy/wire.hpp"

#include <catch2/catch.hpp>

#include <random>
#include <string>
#include <vector>

using namespace tollgate::proxy;

namespace {

struct seen_event {
    std::string raw;
    std::string data;
    bool has_data;
    bool operator==(const seen_event&) const = default;
};

struct run_result {
    std::vector<seen_event> events;
    std::string pending;
    bool overflowed = false;
    std::size_t most_buffered = 0;
};

// Feeds `stream` cut at `cuts` (ascending offsets), draining after each feed.
run_result run(std::string_view stream, const std::vector<std::size_t>& cuts, std::size_t max_event_bytes = 1 << 20) {
    sse_parser parser(max_event_bytes);
    run_result out;
    std::size_t from = 0;
    auto feed_to = [&](std::size_t to) {
        parser.feed(stream.substr(from, to - from));
        from = to;
        out.most_buffered = std::max(out.most_buffered, parser.buffered());
        while (auto ev = parser.next()) out.events.push_back({std::string(ev->raw), std::string(ev->data), ev->has_data});
    };
    for (const auto cut : cuts) feed_to(cut);
    feed_to(stream.size());
    out.pending = std::string(parser.pending());
    out.overflowed = parser.overflowed();
    return out;
}

run_result run_pieces(std::string_view stream, std::size_t piece) {
    std::vector<std::size_t> cuts;
    for (std::size_t at = piece; at < stream.size(); at += piece) cuts.push_back(at);
    return run(stream, cuts);
}

// A CRLF split between two feeds gives the LF back alone (wire.hpp): fold it
// into the event it ends, so every split can be compared with one feed.
std::vector<seen_event> folded(const std::vector<seen_event>& events) {
    std::vector<seen_event> out;
    for (const auto& e : events) {
        if (e.raw == "\n" && !e.has_data && !out.empty() && out.back().raw.back() == '\r') {
            out.back().raw += '\n';
            continue;
        }
        out.push_back(e);
    }
    return out;
}

std::string concatenated(const run_result& r) {
    std::string all;
    for (const auto& e : r.events) all += e.raw;
    return all + r.pending;
}

std::string with_line_ends(std::string_view lf_text, std::string_view line_end) {
    std::string out;
    for (const char c : lf_text) {
        if (c == '\n') out += line_end;
        else out += c;
    }
    return out;
}

// Shapes from ../shared/upstream-apis.md (composed, not captured).
const std::string or_chunk_1 =
    R"({"id":"gen-1764031697-vqvW","object":"chat.completion.chunk","created":1764031697,"model":"openai/gpt-4o-mini","provider":"OpenAI","choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"},"finish_reason":null,"native_finish_reason":null,"logprobs":null}]})";
const std::string or_chunk_2 =
    R"({"id":"gen-1764031697-vqvW","object":"chat.completion.chunk","created":1764031697,"model":"openai/gpt-4o-mini","provider":"OpenAI","choices":[{"index":0,"delta":{"content":"lo: \"data: x\\n\\n\""},"finish_reason":null,"native_finish_reason":null,"logprobs":null}]})";
const std::string or_chunk_stop =
    R"({"id":"gen-1764031697-vqvW","object":"chat.completion.chunk","created":1764031697,"model":"openai/gpt-4o-mini","provider":"OpenAI","choices":[{"index":0,"delta":{"content":""},"finish_reason":"stop","native_finish_reason":"stop","logprobs":null}]})";
const std::string or_chunk_usage =
    R"({"id":"gen-1764031697-vqvW","object":"chat.completion.chunk","created":1764031697,"model":"openai/gpt-4o-mini","provider":"OpenAI","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"native_finish_reason":null,"logprobs":null}],"usage":{"prompt_tokens":42,"completion_tokens":7,"total_tokens":49,"cost":0.000123,"is_byok":false,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0},"cost_details":{"upstream_inference_cost":null,"upstream_inference_prompt_cost":0.00008,"upstream_inference_completions_cost":0.000043}}})";

std::string openrouter_stream() {
    return ": OPENROUTER PROCESSING\n\n"
           ": OPENROUTER PROCESSING\n\n"
           "data: " + or_chunk_1 + "\n\n"
           ": OPENROUTER PROCESSING\n\n"
           "data: " + or_chunk_2 + "\n\n"
           "data: " + or_chunk_stop + "\n\n"
           "data: " + or_chunk_usage + "\n\n"
           "data: [DONE]\n\n";
}

const std::string litellm_chunk_1 =
    R"({"id":"chatcmpl-9f2","created":1764031697,"model":"gpt-4o-mini","object":"chat.completion.chunk","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{"content":"Hi","role":"assistant"}}],"usage":null})";
const std::string litellm_chunk_stop =
    R"({"id":"chatcmpl-9f2","created":1764031697,"model":"gpt-4o-mini","object":"chat.completion.chunk","system_fingerprint":"fp_1","choices":[{"finish_reason":"stop","index":0,"delta":{}}],"usage":null})";
const std::string litellm_chunk_usage =
    R"({"id":"chatcmpl-9f2","created":1764031697,"model":"gpt-4o-mini","object":"chat.completion.chunk","system_fingerprint":"fp_1","choices":[{"index":0,"delta":{}}],"usage":{"completion_tokens":2,"prompt_tokens":9,"total_tokens":11,"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":null},"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":null},"cost":7.1e-05}})";

std::string litellm_stream() {
    return "data: " + litellm_chunk_1 + "\n\n"
           "data: " + litellm_chunk_stop + "\n\n"
           "data: " + litellm_chunk_usage + "\n\n"
           "data: [DONE]\n\n";
}

// Everything else the framing has: a comment inside an event, other fields,
// multi-line data (one leading space removed per line, not more), "data"
// without a colon, a field-only event, an empty-data event.
const std::string features_stream =
    ": before everything\n"
    "\n"
    "event: message\n"
    ": a comment inside the event\n"
    "id: 7\n"
    "data: {\"a\":\n"
    "data:  1}\n"
    "retry: 3000\n"
    "\n"
    "data:no-space\n"
    "data\n"
    "data: last\n"
    "\n"
    "event: ping\n"
    "\n"
    "data:\n"
    "\n"
    "data: tail";  // cut off: pending

void check_every_split(const std::string& stream, const std::vector<seen_event>& expected, std::string_view pending) {
    const auto once = run(stream, {});
    REQUIRE(once.events == expected);
    REQUIRE(once.pending == pending);
    REQUIRE_FALSE(once.overflowed);
    for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
        const auto r = run(stream, {cut});
        INFO("cut at byte " << cut);
        REQUIRE(folded(r.events) == expected);
        REQUIRE(r.pending == pending);
        REQUIRE(concatenated(r) == stream);
    }
    for (const std::size_t piece : {1, 2, 3, 7, 64}) {
        INFO("pieces of " << piece);
        const auto r = run_pieces(stream, piece);
        REQUIRE(folded(r.events) == expected);
        REQUIRE(r.pending == pending);
        REQUIRE(concatenated(r) == stream);
    }
    std::mt19937 rng(20260823);
    for (int round = 0; round < 200; ++round) {
        std::vector<std::size_t> cuts;
        std::uniform_int_distribution<std::size_t> at(0, stream.size());
        for (int k = 0; k < 12; ++k) cuts.push_back(at(rng));
        std::sort(cuts.begin(), cuts.end());
        const auto r = run(stream, cuts);
        REQUIRE(folded(r.events) == expected);
        REQUIRE(concatenated(r) == stream);
    }
}

std::vector<seen_event> expect(const std::vector<std::pair<std::string, std::optional<std::string>>>& lf_events,
                               std::string_view line_end) {
    std::vector<seen_event> out;
    for (const auto& [raw, data] : lf_events) out.push_back({with_line_ends(raw, line_end), data.value_or(""), data.has_value()});
    return out;
}

}  // namespace

TEST_CASE("an OpenRouter stream splits into the same events however it arrives", "[proxy][sse]") {
    const std::string lf = openrouter_stream();
    const std::vector<std::pair<std::string, std::optional<std::string>>> events = {
        {": OPENROUTER PROCESSING\n\n", std::nullopt},
        {": OPENROUTER PROCESSING\n\n", std::nullopt},
        {"data: " + or_chunk_1 + "\n\n", or_chunk_1},
        {": OPENROUTER PROCESSING\n\n", std::nullopt},
        {"data: " + or_chunk_2 + "\n\n", or_chunk_2},
        {"data: " + or_chunk_stop + "\n\n", or_chunk_stop},
        {"data: " + or_chunk_usage + "\n\n", or_chunk_usage},
        {"data: [DONE]\n\n", "[DONE]"},
    };
    for (const std::string_view line_end : {"\n", "\r\n", "\r"}) {
        INFO("line end " << (line_end == "\n" ? "LF" : line_end == "\r\n" ? "CRLF" : "CR"));
        check_every_split(with_line_ends(lf, line_end), expect(events, line_end), "");
    }
}

TEST_CASE("a LiteLLM stream splits into the same events however it arrives", "[proxy][sse]") {
    const std::vector<std::pair<std::string, std::optional<std::string>>> events = {
        {"data: " + litellm_chunk_1 + "\n\n", litellm_chunk_1},
        {"data: " + litellm_chunk_stop + "\n\n", litellm_chunk_stop},
        {"data: " + litellm_chunk_usage + "\n\n", litellm_chunk_usage},
        {"data: [DONE]\n\n", "[DONE]"},
    };
    for (const std::string_view line_end : {"\n", "\r\n", "\r"}) {
        check_every_split(with_line_ends(litellm_stream(), line_end), expect(events, line_end), "");
    }
}

TEST_CASE("comments, other fields and multi-line data follow the WHATWG rules", "[proxy][sse]") {
    const std::vector<std::pair<std::string, std::optional<std::string>>> events = {
        {": before everything\n\n", std::nullopt},
        {"event: message\n: a comment inside the event\nid: 7\ndata: {\"a\":\ndata:  1}\nretry: 3000\n\n",
         "{\"a\":\n 1}"},
        {"data:no-space\ndata\ndata: last\n\n", "no-space\n\nlast"},
        {"event: ping\n\n", std::nullopt},
        {"data:\n\n", ""},
    };
    for (const std::string_view line_end : {"\n", "\r\n", "\r"}) {
        check_every_split(with_line_ends(features_stream, line_end), expect(events, line_end), "data: tail");
    }
}

TEST_CASE("a stream cut mid-event leaves it pending", "[proxy][sse]") {
    const std::string stream = "data: {\"a\":1}\n\ndata: {\"b\"";
    auto r = run(stream, {});
    REQUIRE(r.events.size() == 1);
    CHECK(r.events[0].data == "{\"a\":1}");
    CHECK(r.pending == "data: {\"b\"");

    // A data line whose blank line never came is not an event.
    r = run("data: {\"a\":1}\n", {});
    CHECK(r.events.empty());
    CHECK(r.pending == "data: {\"a\":1}\n");

    // Nothing at all.
    r = run("", {});
    CHECK(r.events.empty());
    CHECK(r.pending.empty());
}

TEST_CASE("a CRLF split across feeds returns its LF alone, without data", "[proxy][sse]") {
    sse_parser parser;
    parser.feed("data: a\r\n\r");
    auto ev = parser.next();
    REQUIRE(ev);
    CHECK(ev->raw == "data: a\r\n\r");
    CHECK(ev->data == "a");
    CHECK_FALSE(parser.next());
    parser.feed("\ndata: b\r\n\r\n");
    ev = parser.next();
    REQUIRE(ev);
    CHECK(ev->raw == "\n");
    CHECK_FALSE(ev->has_data);
    ev = parser.next();
    REQUIRE(ev);
    CHECK(ev->raw == "data: b\r\n\r\n");
    CHECK(ev->data == "b");

    // Inside an event the LF simply completes the line end.
    sse_parser inside;
    inside.feed("data: a\r");
    CHECK_FALSE(inside.next());
    inside.feed("\ndata: b\r\n\r\n");
    ev = inside.next();
    REQUIRE(ev);
    CHECK(ev->raw == "data: a\r\ndata: b\r\n\r\n");
    CHECK(ev->data == "a\nb");

    // A CR-only stream is never kept waiting: its last event comes at once.
    sse_parser cr;
    cr.feed("data: [DONE]\r\r");
    ev = cr.next();
    REQUIRE(ev);
    CHECK(ev->data == "[DONE]");
    CHECK(cr.pending().empty());
}

TEST_CASE("a byte order mark opening the stream is ignored, even split", "[proxy][sse]") {
    const std::string stream = "\xEF\xBB\xBF" "data: x\n\ndata: \xEF\xBB\xBF" "y\n\n";
    const std::vector<seen_event> expected = {{"\xEF\xBB\xBF" "data: x\n\n", "x", true},
                                              {"data: \xEF\xBB\xBF" "y\n\n", "\xEF\xBB\xBF" "y", true}};
    check_every_split(stream, expected, "");
    // Only at the very start: later it is part of a field name.
    const auto r = run("data: a\n\n\xEF\xBB\xBF" "data: b\n\n", {});
    REQUIRE(r.events.size() == 2);
    CHECK_FALSE(r.events[1].has_data);
    // A stream that is only part of a mark stays pending.
    CHECK(run("\xEF\xBB", {}).pending == "\xEF\xBB");
}

TEST_CASE("an event longer than the limit aborts the stream with bounded memory", "[proxy][sse]") {
    const std::size_t max = 64;
    const std::string small = "data: ok\n\n";
    const std::string endless = "data: " + std::string(1000, 'x');

    // Arriving in pieces, never ended: the buffer never grows past the limit
    // plus one piece.
    auto r = run(small + endless, {4, 10, 20, 40, 60, 80, 100, 300, 500}, max);
    REQUIRE(r.events.size() == 1);
    CHECK(r.events[0].data == "ok");
    CHECK(r.overflowed);
    CHECK(r.pending.empty());

    std::vector<std::size_t> cuts;
    for (std::size_t at = 1; at < endless.size(); ++at) cuts.push_back(at);
    r = run(endless, cuts, max);
    CHECK(r.overflowed);
    CHECK(r.most_buffered <= max + 1);

    // Complete but too long, all in one feed: the same verdict.
    r = run(small + "data: " + std::string(100, 'y') + "\n\n" + small, {}, max);
    REQUIRE(r.events.size() == 1);
    CHECK(r.overflowed);

    // Exactly at the limit is fine.
    const std::string exact = "data: " + std::string(max - 8, 'z') + "\n\n";
    REQUIRE(exact.size() == max);
    r = run(exact, {}, max);
    REQUIRE(r.events.size() == 1);
    CHECK_FALSE(r.overflowed);

    // After the abort, nothing more is taken in.
    sse_parser parser(max);
    parser.feed(endless);
    CHECK_FALSE(parser.next());
    CHECK(parser.overflowed());
    parser.feed(small);
    CHECK_FALSE(parser.next());
    CHECK(parser.buffered() == 0);
}

TEST_CASE("an event arriving a byte at a time is scanned once", "[proxy][sse]") {
    // 512 KiB in one-byte feeds: quadratic rescanning would take minutes.
    const std::string big = "data: " + std::string(512 * 1024, 'a') + "\n\n";
    sse_parser parser(1 << 20);
    std::size_t events = 0;
    for (const char c : big) {
        parser.feed(std::string_view(&c, 1));
        while (auto ev = parser.next()) {
            ++events;
            CHECK(ev->data.size() == 512 * 1024);
        }
    }
    CHECK(events == 1);
    CHECK(parser.pending().empty());
}

TEST_CASE("the buffer is compacted: consumed events do not pile up", "[proxy][sse]") {
    sse_parser parser(1 << 20);
    const std::string event = "data: " + or_chunk_1 + "\n\n";
    for (int i = 0; i < 10'000; ++i) {
        parser.feed(event);
        while (parser.next()) {
        }
        REQUIRE(parser.buffered() <= event.size());
    }
}
