// What the proxy reads from (and the few things it changes in) the bytes it
// relays: the client's request body, the upstream's SSE stream and JSON
// answers. Pure parsing, no I/O and no Beast, so it is tested byte by byte
// and fuzzed (tests/proxy, tests/fuzz). Money figures are parsed from their
// decimal text (pricing::parse_usd_pico), never through double.
#pragma once

#include "tollgate/pricing/cost.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::proxy {

// ---- the client's request ------------------------------------------------

// What the proxy needs from an OpenAI-style request body, read once.
struct request_facts {
    bool json_ok = false;  // the body is a JSON object
    std::string model;     // empty when absent or not a string
    std::vector<std::string> fallback_models;  // OpenRouter's `models` list
    bool stream = false;
    bool include_usage = false;             // stream_options.include_usage is true
    std::optional<std::int64_t> max_tokens;  // max_completion_tokens, else max_tokens
    std::int64_t n = 1;
    // Chat messages' text, for the o200k count (string contents; the text
    // parts of array contents joined).
    std::vector<std::string> message_roles;
    std::vector<std::string> message_texts;
    std::int64_t input_images = 0;  // image_url parts in the messages
    std::string prompt_text;        // `prompt` of /v1/completions, `input` of embeddings (strings joined with '\n')
    std::string tts_input;          // `input` of /v1/audio/speech
    std::string bad_param;          // set when a field has the wrong type: which one (the first found)
};

// The body is read as the upstreams read it: a key given twice counts by its
// last value (Python's json and JavaScript's JSON.parse do so), and escaped
// keys ("mod\u0065l") are the keys they spell. A string `input` lands in both
// prompt_text and tts_input (the route decides which one is used); token
// arrays (`prompt`/`input` of integers) add no text. `null` is the same as an
// absent field. Wrong types (`"max_tokens": -1`, `"n": 0`, `"stream": "yes"`,
// a message that is not an object...) set bad_param and leave the field at
// its default; json_ok stays true. json_ok is false for what is not one
// object, or when a member that is read is malformed (members skipped unread
// are not checked: the upstream judges those).
request_facts inspect_request(std::string_view body);

// The body with `stream_options.include_usage` forced to true (SPEC 5),
// every other byte unchanged: adds `"stream_options":{"include_usage":true}`
// when there is none, adds or replaces `include_usage` inside an existing
// object. Returns nullopt when the body is not a valid JSON object. Added
// members go last (`,"stream_options":{...}` after the last member's value);
// a `stream_options` that is null or not an object is replaced whole; a key
// given twice is edited every time it appears, so the result never has a
// duplicate key the body did not have, and whichever value a parser keeps
// asks for usage.
std::optional<std::string> force_include_usage(std::string_view body);

// ---- server-sent events --------------------------------------------------

// One event as it crossed the wire. The raws of all events, then pending(),
// are exactly the bytes fed, in order.
struct sse_event {
    std::string_view raw;   // its bytes exactly as received, through the blank line that ends it
    std::string_view data;  // its data lines joined with '\n' ("data:" and one following space removed)
    bool has_data = false;  // false: only comments (": OPENROUTER PROCESSING") or other fields
};

// Incremental SSE framing (WHATWG rules: lines end in CRLF, LF or CR; an
// empty line ends an event; lines starting with ':' are comments; a byte
// order mark opening the stream is ignored). Bytes are fed as they arrive,
// split anywhere; each byte is scanned once. After each feed(), call next()
// until it gives nullopt.
//
// A CR that ends an event and is the last byte fed ends the event at once (no
// waiting for the next read). If the next byte is the LF of that CRLF, it
// comes back alone as an event with raw "\n" and no data: relay it like the
// others.
class sse_parser {
public:
    explicit sse_parser(std::size_t max_event_bytes = 1 << 20);

    void feed(std::string_view bytes);
    // The next complete event, or nullopt until more bytes arrive. `raw`
    // stays valid until the next feed(), `data` until the next next().
    std::optional<sse_event> next();
    // An event grew past max_event_bytes without ending: the stream is
    // malformed and is aborted (the parser's memory stays bounded).
    bool overflowed() const { return overflowed_; }
    // Bytes of an event not yet ended (at the end of a stream: relay them).
    std::string_view pending() const;
    // Bytes buffered now (the bound a slow reader cannot grow).
    std::size_t buffered() const { return buffer_.size(); }

private:
    sse_event finish_event(std::size_t end);

    std::string buffer_;
    std::string joined_data_;     // data of an event with several data lines
    std::size_t start_ = 0;       // first byte of the event being assembled
    std::size_t scanned_ = 0;     // bytes of it already scanned for a line end
    std::size_t line_start_ = 0;  // where its current line starts (from start_)
    std::size_t max_event_bytes_;
    bool overflowed_ = false;
    bool cr_ended_ = false;        // the last byte scanned is a CR that ended a line: an LF next is its CRLF
    bool at_stream_start_ = true;  // no byte looked at yet (the byte order mark check)
    bool skip_bom_ = false;        // the event being assembled starts with a byte order mark
};

// ---- usage and the upstream's answers ------------------------------------

// A `usage` object as OpenRouter, LiteLLM or OpenAI report it.
// Token counts absent or null are 0; a count that is negative, fractional,
// beyond int64 or not a number (or a *_details member that is neither an
// object nor null) makes the whole usage `invalid`. total_tokens absent or
// null is prompt + completion. A cost that is not a number, is negative or
// is out of range (pricing::max_pico) is nullopt: the catalog prices the call.
struct reported_usage {
    pricing::usage tokens;  // prompt, completion, cached, cache_write, reasoning, web_search_calls
    std::int64_t total_tokens = 0;
    std::optional<std::int64_t> cost_pico;  // usage.cost, exact from its text
    std::optional<std::int64_t> upstream_inference_cost_pico;  // cost_details.upstream_inference_cost (BYOK)
    bool is_byok = false;
};

enum class member_state : std::uint8_t { absent, null, value, invalid };

// What one JSON answer (a non-stream body, or one stream event's data) says.
// Leading and trailing whitespace is allowed; anything else that is not one
// JSON object gives json_ok false and nothing else. (Parsing is simdjson
// On-Demand: members that are read must be well-formed, members skipped
// unread are not checked.) A key given twice counts by its last value.
struct answer_facts {
    bool json_ok = false;                      // parsed as a JSON object
    member_state usage = member_state::absent;
    reported_usage reported;                   // meaningful when usage == value
    // A top-level `error` that is truthy as openai-node sees it (not null,
    // false, 0 or ""): the SDK throws on such a chunk.
    bool error = false;
    std::string error_message;                 // its `message` if a string, or the error itself if a string
    std::string model;                         // top-level `model`, if a string
    // Text the upstream generated in this answer, concatenated: of every
    // choice, delta (stream) or message (non-stream) .content (a string, or
    // the text of its parts), .reasoning, .reasoning_content, .refusal and
    // .tool_calls[].function.arguments (.function_call.arguments), and the
    // choice's .text (/v1/completions); counted when no usage is reported.
    std::string generated_text;
};

answer_facts inspect_answer(std::string_view json);

// False when `json` cannot hold a top-level `usage` or `error` member: its
// text contains neither key in quotes nor a \u escape (which could spell
// one). A stream inspects such events only if it needs their text.
bool may_hold_usage_or_error(std::string_view json);

// `raw` is one SSE event whose data is a JSON object with a top-level
// `usage` member (an object or null). Returns the event with that member
// (key, value and one adjoining comma) removed and every other byte
// unchanged; nullopt when there is no such member or the data is not a
// valid JSON object. The member that follows keeps its place: its key moves
// up to where `usage` began (`{"a":1, "usage":null, "b":2}` -> `{"a":1,
// "b":2}`); a last member takes the comma and space before it along. Nested
// `usage` keys and "usage" inside strings are never touched; an escaped key
// spelling usage is usage; a `usage` given twice goes twice.
// Data split over several `data:` lines is read joined, as a client reads
// it; the bytes cut are mapped back to the raw event, so a member spanning
// lines takes the line breaks inside it along (and any comment line between
// them). A byte order mark opening `raw` is skipped, as sse_parser skips it
// at the start of a stream.
std::optional<std::string> remove_usage_member(std::string_view raw);

// LiteLLM's `x-litellm-response-cost` header (a Python float's str(), e.g.
// "7.1e-05") as pico-USD; nullopt when absent, "None", negative, invalid
// ("inf", "nan") or out of range. Surrounding spaces and tabs are ignored.
std::optional<std::int64_t> parse_cost_header(std::string_view value);

// A micro-USD amount as USD decimal text, exact, sign kept: "12.345678"
// (the API's *_usd strings, and OpenRouter's key limits as JSON numbers).
std::string usd_text(std::int64_t micros);

}  // namespace tollgate::proxy
