// mock_upstream: a fast, deterministic stand-in for OpenRouter (/api/v1/…)
// and a LiteLLM proxy (/v1/… and the bare paths) on one loopback port, for
// tollgate's end-to-end tests and benchmarks. README.md lists every route,
// x-mock-* header and fault.
//
// A connection, top to bottom in this file: accept_loop → connection::run
// (read one request with a header limit, a body limit and a deadline) →
// dispatch (route by path) → one handler (validation as a flat list of early
// returns, each a `rejection` with its HTTP status, then the answer) → write;
// keep-alive or close. Requests on a connection are handled strictly in
// order, so pipelining works. Streams are chunked SSE written by
// stream_answer; their faults fire after a given number of content chunks.
//
// Responses are serialized by hand (status line, headers, body as one
// gathered write) rather than with Beast's serializer: the faults need byte
// control (malformed chunks, non-HTTP bytes, resets), and the static bodies
// (the models file) are written straight from memory without a copy.
//
// GCC 12 destroys some temporaries of a co_await full-expression twice (a
// std::string inside a braced temporary was a double free here), so every
// rejection is a named local before it is awaited on.

#include "tollgate/proxy/asio.hpp"

#include "mock.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <bit>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <random>
#include <thread>

#include <sys/socket.h>  // recv(MSG_PEEK): has the peer closed?

namespace {

using namespace tollgate::net;
using error_code = boost::system::error_code;
using request = http::request<http::string_body>;
using steady_clock = std::chrono::steady_clock;

// ---------------------------------------------------------------- limits

constexpr std::uint64_t max_body_bytes = 16 * 1024 * 1024;
constexpr std::uint32_t max_header_bytes = 64 * 1024;
constexpr auto idle_timeout = std::chrono::seconds(75);  // between requests on a keep-alive connection
constexpr auto write_timeout = std::chrono::seconds(30);
constexpr auto stall_timeout = std::chrono::seconds(60);
constexpr auto drain_timeout = std::chrono::seconds(2);  // reading what a peer still sends before close
constexpr std::size_t max_drain_bytes = 1024 * 1024;
constexpr std::int64_t max_connections = 10'000;
constexpr std::size_t stream_flush_bytes = 16 * 1024;  // coalesced SSE bytes per write when there is no delay
constexpr std::int64_t max_delay_ms = 60'000;
constexpr std::int64_t max_generation_visible_after_ms = 600'000;
constexpr std::int64_t max_mock_tokens = 100'000;
constexpr std::int64_t max_mock_count = 1'000'000'000;
constexpr std::int64_t default_fault_after_chunks = 2;
constexpr std::int64_t default_completion_tokens = 16;
constexpr std::size_t speech_bytes_per_input_byte = 32;
constexpr int max_threads = 64;
constexpr std::string_view router_fallback_model = "openai/gpt-4o-mini";
constexpr std::string_view total_credits_usd = "1000";

// ---------------------------------------------------------------- settings and shared state

struct settings {
    std::string listen = "127.0.0.1:0";
    int threads = 2;
    std::string openrouter_models = MOCK_FIXTURES_DIR "/openrouter-models-anuran-roy-2026-08-19-all-modalities.json";
    std::string litellm_prices = MOCK_FIXTURES_DIR "/litellm-model-prices.json";
    std::vector<std::string> litellm_models = {"gpt-4o-mini", "text-embedding-3-small", "tts-1"};
    std::string management_key = "mock-management-key";
    std::optional<std::string> litellm_key;        // unset: any non-empty key
    std::int64_t generation_visible_after_ms = 0;  // /generation is 404 this long after a call is recorded
};

struct server_stats {
    std::atomic<std::uint64_t> requests{0};
    std::atomic<std::int64_t> open_connections{0};
    std::atomic<std::int64_t> open_streams{0};
    std::atomic<std::uint64_t> streams_completed{0};
    std::atomic<std::uint64_t> streams_aborted_by_peer{0};
};

// The last request an inference route received, for GET /mock/last-request.
// Taken on every inference call, so it is packed: all headers in one string.
struct recorded_request {
    std::string method;
    std::string target;
    std::string headers;  // "name\0value\0" pairs, names lowercased (field values cannot hold NUL)
    std::string body;
};

class last_request_store {
public:
    void store(std::shared_ptr<const recorded_request> r) {
        std::unique_lock lock(mu_);
        last_.swap(r);
        lock.unlock();  // the previous record is freed outside the lock
    }
    std::shared_ptr<const recorded_request> load() const {
        const std::lock_guard lock(mu_);
        return last_;
    }

private:
    mutable std::mutex mu_;
    std::shared_ptr<const recorded_request> last_;
};

struct server_state {
    const settings& config;
    const mock::openrouter_catalog& openrouter;
    const mock::litellm_catalog& litellm;
    mock::key_store keys;
    mock::generation_store generations;
    last_request_store last_request;
    server_stats stats;
    mock::management_faults management_faults;  // armed by POST /mock/management-faults
};

// ---------------------------------------------------------------- wire vocabulary

enum class upstream : std::uint8_t { openrouter, litellm };
enum class next_step : std::uint8_t { keep_alive, close };  // what the connection does after an answer

enum class fault : std::uint8_t {
    none,
    status_500,
    status_402,
    status_429,
    midstream_error,
    reset,
    stall,
    no_usage,
    garbage,
    not_http,
    slow_headers,
};
enum class usage_shape : std::uint8_t { empty, choice };

// The x-mock-* request headers.
struct mock_options {
    std::optional<std::int64_t> tokens;
    std::int64_t cached_tokens = 0;
    std::int64_t reasoning_tokens = 0;
    std::int64_t delay_ms = 0;
    std::int64_t keepalive_every = 0;
    std::int64_t fault_after_chunks = default_fault_after_chunks;
    std::optional<mock::cost_style> cost_format;
    std::optional<usage_shape> shape;
    bool crlf = false;
    fault injected = fault::none;
};

// A refused request: status, message and OpenRouter's metadata.error_type
// (none when empty). LiteLLM's `type` follows from the status.
struct rejection {
    unsigned status = 400;
    std::string message;
    std::string_view kind = {};
    bool retry_after = false;
};

std::string_view litellm_type_for(unsigned status) {
    switch (status) {
        case 400: return "invalid_request_error";
        case 401: return "auth_error";
        case 402: return "budget_exceeded";
        case 403: return "permission_denied";
        case 404: return "not_found_error";
        case 405: return "invalid_request_error";
        case 413: return "invalid_request_error";
        case 429: return "rate_limit_error";
        default: return status >= 500 ? "internal_server_error" : "None";
    }
}

// The one error body writer: OpenRouter's {"error":{"code":<int>,…}} or
// LiteLLM's {"error":{"message","type","param","code":"<status>"}}.
void append_error(std::string& out, upstream up, const rejection& r) {
    if (up == upstream::openrouter) {
        fmt::format_to(std::back_inserter(out), "{{\"error\":{{\"code\":{},\"message\":", r.status);
        mock::append_json_string(out, r.message);
        if (!r.kind.empty()) {
            out += ",\"metadata\":{\"error_type\":";
            mock::append_json_string(out, r.kind);
            out += '}';
        }
        out += "}}";
        return;
    }
    out += "{\"error\":{\"message\":";
    mock::append_json_string(out, r.message);
    out += ",\"type\":";
    mock::append_json_string(out, litellm_type_for(r.status));
    fmt::format_to(std::back_inserter(out), ",\"param\":\"None\",\"code\":\"{}\"}}}}", r.status);
}

std::string_view to_sv(beast::string_view s) {
    return {s.data(), s.size()};
}

std::optional<std::int64_t> parse_int(std::string_view text) {
    std::int64_t v = 0;
    const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
    if (ec != std::errc{} || end != text.data() + text.size() || text.empty()) return std::nullopt;
    return v;
}

std::string_view header_value(const request& req, std::string_view name) {
    const auto it = req.find(beast::string_view(name.data(), name.size()));
    if (it == req.end()) return {};
    return to_sv(it->value());
}

std::optional<rejection> read_int_header(const request& req, std::string_view name, std::int64_t min, std::int64_t max,
                                         std::optional<std::int64_t>& out) {
    const std::string_view text = header_value(req, name);
    if (text.empty()) return std::nullopt;
    const auto v = parse_int(text);
    if (!v || *v < min || *v > max)
        return rejection{400, fmt::format("{} must be an integer in {}..{}", name, min, max), "invalid_request"};
    out = *v;
    return std::nullopt;
}

// Validates every x-mock-* header; a typo in a test is a 400, not a silent default.
std::optional<rejection> read_options(const request& req, mock_options& o) {
    std::optional<std::int64_t> v;
    if (auto r = read_int_header(req, "x-mock-tokens", 0, max_mock_tokens, o.tokens)) return r;
    if (auto r = read_int_header(req, "x-mock-cached-tokens", 0, max_mock_count, v)) return r;
    o.cached_tokens = v.value_or(0);
    v.reset();
    if (auto r = read_int_header(req, "x-mock-reasoning-tokens", 0, max_mock_count, v)) return r;
    o.reasoning_tokens = v.value_or(0);
    v.reset();
    if (auto r = read_int_header(req, "x-mock-delay-ms", 0, max_delay_ms, v)) return r;
    o.delay_ms = v.value_or(0);
    v.reset();
    if (auto r = read_int_header(req, "x-mock-keepalive-every", 1, max_mock_tokens, v)) return r;
    o.keepalive_every = v.value_or(0);
    v.reset();
    if (auto r = read_int_header(req, "x-mock-fault-after", 0, max_mock_tokens, v)) return r;
    o.fault_after_chunks = v.value_or(default_fault_after_chunks);

    if (const auto shape = header_value(req, "x-mock-usage-shape"); !shape.empty()) {
        if (shape == "empty")
            o.shape = usage_shape::empty;
        else if (shape == "choice")
            o.shape = usage_shape::choice;
        else
            return rejection{400, "x-mock-usage-shape must be empty or choice", "invalid_request"};
    }
    if (const auto ending = header_value(req, "x-mock-line-ending"); !ending.empty()) {
        if (ending != "crlf" && ending != "lf")
            return rejection{400, "x-mock-line-ending must be crlf or lf", "invalid_request"};
        o.crlf = ending == "crlf";
    }
    if (const auto format = header_value(req, "x-mock-cost-format"); !format.empty()) {
        if (format == "exponent")
            o.cost_format = mock::cost_style::exponent;
        else if (format == "plain")
            o.cost_format = mock::cost_style::plain;
        else if (format == "python")
            o.cost_format = mock::cost_style::python;
        else
            return rejection{400, "x-mock-cost-format must be exponent, plain or python", "invalid_request"};
    }
    if (const auto name = header_value(req, "x-mock-fault"); !name.empty()) {
        static constexpr std::array<std::pair<std::string_view, fault>, 10> faults = {{
            {"500", fault::status_500},
            {"402", fault::status_402},
            {"429", fault::status_429},
            {"midstream-error", fault::midstream_error},
            {"reset", fault::reset},
            {"stall", fault::stall},
            {"no-usage", fault::no_usage},
            {"garbage", fault::garbage},
            {"not-http", fault::not_http},
            {"slow-headers", fault::slow_headers},
        }};
        const auto it = std::find_if(faults.begin(), faults.end(), [&](const auto& f) { return f.first == name; });
        if (it == faults.end())
            return rejection{400, fmt::format("unknown x-mock-fault '{}'", name), "invalid_request"};
        o.injected = it->second;
    }
    return std::nullopt;
}

// "Bearer <token>" (scheme case-insensitive); empty when absent.
std::string_view bearer_token(std::string_view authorization) {
    constexpr std::string_view scheme = "bearer ";
    if (authorization.size() < scheme.size() || !mock::ascii_iequals(authorization.substr(0, scheme.size()), scheme))
        return {};
    std::string_view token = authorization.substr(scheme.size());
    while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
    while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
    return token;
}

std::string_view query_param(std::string_view query, std::string_view name) {
    while (!query.empty()) {
        const auto amp = query.find('&');
        const std::string_view pair = query.substr(0, amp);
        const auto eq = pair.find('=');
        if (pair.substr(0, eq) == name) return eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
        if (amp == std::string_view::npos) break;
        query.remove_prefix(amp + 1);
    }
    return {};
}

// A steady clock in ms (generation visibility).
std::int64_t steady_now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now().time_since_epoch()).count();
}

// POST /mock/management-faults?fault=F&count=N&delay_ms=M into `out`; the
// 400 message when a parameter is missing, unknown or out of range.
std::optional<std::string> read_management_fault_query(std::string_view query, mock::armed_fault& out) {
    std::optional<std::string_view> name, count_text, delay_text;
    while (!query.empty()) {
        const auto amp = query.find('&');
        const std::string_view pair = query.substr(0, amp);
        query.remove_prefix(amp == std::string_view::npos ? query.size() : amp + 1);
        if (pair.empty()) continue;
        const auto eq = pair.find('=');
        const std::string_view key = pair.substr(0, eq);
        const std::string_view value = eq == std::string_view::npos ? std::string_view{} : pair.substr(eq + 1);
        if (key == "fault")
            name = value;
        else if (key == "count")
            count_text = value;
        else if (key == "delay_ms")
            delay_text = value;
        else
            return fmt::format("unknown parameter '{}' (fault, count, delay_ms)", key);
    }
    if (!name) return std::string("fault is required: 500, 502, 503, 429, 401, 402, stall, slow, reset or none");
    const auto kind = mock::parse_management_fault(*name);
    if (!kind)
        return fmt::format("unknown fault '{}': 500, 502, 503, 429, 401, 402, stall, slow, reset or none", *name);
    out = {*kind, 1, 0};
    if (count_text) {
        const auto n = parse_int(*count_text);
        if (!n || *n < 0 || *n > mock::management_faults::max_count)
            return fmt::format("count must be an integer in 0..{}", mock::management_faults::max_count);
        out.count = *n;
    }
    if (delay_text) {
        if (*kind != mock::management_fault::slow) return std::string("delay_ms applies only to fault=slow");
        const auto ms = parse_int(*delay_text);
        if (!ms || *ms < 0 || *ms > max_delay_ms)
            return fmt::format("delay_ms must be an integer in 0..{}", max_delay_ms);
        out.delay_ms = *ms;
    } else if (*kind == mock::management_fault::slow) {
        out.delay_ms = mock::management_faults::default_slow_ms;
    }
    return std::nullopt;
}

// {"fault":"F","count":N} (plus "delay_ms" for slow): what is pending.
void append_armed_fault(std::string& out, const mock::armed_fault& f) {
    fmt::format_to(std::back_inserter(out), "{{\"fault\":\"{}\",\"count\":{}", mock::management_fault_name(f.kind),
                   f.count);
    if (f.kind == mock::management_fault::slow) fmt::format_to(std::back_inserter(out), ",\"delay_ms\":{}", f.delay_ms);
    out += '}';
}

int utc_hhmm_now() {
    const std::time_t t = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&t, &tm);
    return tm.tm_hour * 100 + tm.tm_min;
}

std::string_view audio_content_type(std::string_view format) {
    if (format == "mp3") return "audio/mpeg";
    if (format == "pcm") return "audio/pcm";
    if (format == "opus") return "audio/opus";
    if (format == "aac") return "audio/aac";
    if (format == "flac") return "audio/flac";
    return "audio/wav";
}

// Everything an answer to one inference call needs, fixed before the first
// byte is written.
struct call_plan {
    upstream up = upstream::openrouter;
    mock::completion_kind kind = mock::completion_kind::chat;
    bool stream = false;
    bool include_usage = false;  // LiteLLM streams: usage only when asked
    bool keep_alive = true;
    std::string model;  // as answered
    std::string id;     // gen-… (OpenRouter) or chatcmpl-… (LiteLLM)
    std::string call_id;
    std::int64_t created = 0;
    mock::token_prices prices;
    mock::token_counts counts;
    mock_options options;
    std::string_view api_key;  // OpenRouter key charged (points into the request)
    steady_clock::time_point started;
};

mock::cost_style cost_style_of(const call_plan& p) {
    return p.options.cost_format.value_or(p.up == upstream::openrouter ? mock::cost_style::plain
                                                                       : mock::cost_style::python);
}

// ---------------------------------------------------------------- answer bodies

// A key starting with this stands for a user's own provider key (BYOK):
// OpenRouter then reports its fee (5% of the inference cost) as `cost`, the
// provider's cost in cost_details.upstream_inference_cost, and is_byok.
constexpr std::string_view byok_key_prefix = "sk-or-byok-";

void append_usage(std::string& out, const call_plan& p, const mock::token_counts& c) {
    const std::int64_t cost = mock::token_cost_pico(p.prices, c);
    if (p.up == upstream::openrouter) {
        const bool byok = p.api_key.starts_with(byok_key_prefix);
        fmt::format_to(std::back_inserter(out),
                       "{{\"prompt_tokens\":{},\"completion_tokens\":{},\"total_tokens\":{},\"cost\":", c.prompt,
                       c.completion, c.prompt + c.completion);
        mock::append_usd(out, byok ? cost / 20 : cost, cost_style_of(p));
        fmt::format_to(std::back_inserter(out),
                       ",\"is_byok\":{},\"prompt_tokens_details\":{{\"cached_tokens\":{},\"audio_tokens\":0}}"
                       ",\"cost_details\":{{\"upstream_inference_cost\":",
                       byok ? "true" : "false", c.cached);
        if (byok) {
            mock::append_usd(out, cost, cost_style_of(p));
        } else {
            out += "null";
        }
        fmt::format_to(std::back_inserter(out),
                       ",\"upstream_inference_prompt_cost\":0,\"upstream_inference_completions_cost\":0}}"
                       ",\"completion_tokens_details\":{{\"reasoning_tokens\":{},\"image_tokens\":0}}}}",
                       c.reasoning);
        return;
    }
    fmt::format_to(std::back_inserter(out),
                   "{{\"completion_tokens\":{},\"prompt_tokens\":{},\"total_tokens\":{}"
                   ",\"completion_tokens_details\":{{\"accepted_prediction_tokens\":0,\"audio_tokens\":0"
                   ",\"reasoning_tokens\":{},\"rejected_prediction_tokens\":0}}"
                   ",\"prompt_tokens_details\":{{\"audio_tokens\":0,\"cached_tokens\":{}}},\"cost\":",
                   c.completion, c.prompt, c.prompt + c.completion, c.reasoning, c.cached);
    mock::append_usd(out, cost, cost_style_of(p));
    out += '}';
}

void append_words(std::string& out, std::int64_t from, std::int64_t to) {
    for (std::int64_t i = from; i < to; ++i) fmt::format_to(std::back_inserter(out), "tok{} ", i);
}

constexpr std::string_view openrouter_midstream_error =
    "{\"code\":502,\"message\":\"Provider returned error\","
    "\"metadata\":{\"error_type\":\"provider_unavailable\",\"provider_name\":\"Mock\"}}";

// A non-stream completion. `words` content tokens; `error_choice` is
// OpenRouter's HTTP-200 provider failure (finish_reason "error").
void append_completion_body(std::string& out, const call_plan& p, std::int64_t words, bool error_choice,
                            bool with_usage) {
    const bool chat = p.kind == mock::completion_kind::chat;
    const std::string_view finish = error_choice ? "error" : "stop";
    out += "{\"id\":";
    mock::append_json_string(out, p.id);
    if (p.up == upstream::openrouter) {
        out += ",\"provider\":\"Mock\",\"model\":";
        mock::append_json_string(out, p.model);
        fmt::format_to(std::back_inserter(out), ",\"object\":\"{}\",\"created\":{},\"choices\":[",
                       chat ? "chat.completion" : "text_completion", p.created);
        fmt::format_to(std::back_inserter(out),
                       "{{\"logprobs\":null,\"finish_reason\":\"{}\",\"native_finish_reason\":\"{}\",\"index\":0",
                       finish, finish);
        if (error_choice) {
            out += ",\"error\":";
            out += openrouter_midstream_error;
        }
        out += chat ? ",\"message\":{\"role\":\"assistant\",\"content\":\"" : ",\"text\":\"";
        append_words(out, 0, words);
        out += chat ? "\",\"refusal\":null,\"reasoning\":null}}],\"system_fingerprint\":null"
                    : "\"}],\"system_fingerprint\":null";
    } else {
        fmt::format_to(std::back_inserter(out), ",\"created\":{},\"model\":", p.created);
        mock::append_json_string(out, p.model);
        fmt::format_to(
            std::back_inserter(out),
            ",\"object\":\"{}\",\"system_fingerprint\":null,\"choices\":[{{\"finish_reason\":\"{}\",\"index\":0",
            chat ? "chat.completion" : "text_completion", finish);
        out += chat ? ",\"message\":{\"content\":\"" : ",\"text\":\"";
        append_words(out, 0, words);
        out +=
            chat ? "\",\"role\":\"assistant\",\"tool_calls\":null,\"function_call\":null}}]" : "\",\"logprobs\":null}]";
    }
    if (with_usage) {
        mock::token_counts c = p.counts;
        c.completion = words;
        c.reasoning = std::min(c.reasoning, words);
        out += ",\"usage\":";
        append_usage(out, p, c);
    }
    out += '}';
}

// The start of every stream chunk, up to and including `"choices":[`.
std::string chunk_head_of(const call_plan& p) {
    const std::string_view object = p.kind == mock::completion_kind::chat ? "chat.completion.chunk" : "text_completion";
    std::string head = "{\"id\":";
    mock::append_json_string(head, p.id);
    if (p.up == upstream::openrouter) {
        head += ",\"provider\":\"Mock\",\"model\":";
        mock::append_json_string(head, p.model);
        fmt::format_to(std::back_inserter(head), ",\"object\":\"{}\",\"created\":{},\"choices\":[", object, p.created);
    } else {
        fmt::format_to(std::back_inserter(head), ",\"created\":{},\"model\":", p.created);
        mock::append_json_string(head, p.model);
        fmt::format_to(std::back_inserter(head), ",\"object\":\"{}\",\"system_fingerprint\":null,\"choices\":[",
                       object);
    }
    return head;
}

// One choice of a stream chunk. `content` null: no delta content / text "".
void append_stream_choice(std::string& out, const call_plan& p, std::string_view delta_extra, std::int64_t word,
                          std::string_view finish_reason) {
    const bool chat = p.kind == mock::completion_kind::chat;
    out += "{\"index\":0";
    if (chat) {
        out += ",\"delta\":{";
        out += delta_extra;
        if (word >= 0)
            fmt::format_to(std::back_inserter(out), "{}\"content\":\"tok{} \"", delta_extra.empty() ? "" : ",", word);
        out += '}';
    } else if (word >= 0) {
        fmt::format_to(std::back_inserter(out), ",\"text\":\"tok{} \"", word);
    } else {
        out += ",\"text\":\"\"";
    }
    out += ",\"finish_reason\":";
    out += finish_reason;
    if (p.up == upstream::openrouter) {
        out += ",\"native_finish_reason\":";
        out += finish_reason;
    }
    if (p.up == upstream::openrouter || !chat) out += ",\"logprobs\":null";
    out += '}';
}

// ---------------------------------------------------------------- connection

class connection {
public:
    connection(tcp::socket socket, server_state& state)
        : stream_(std::move(socket)), timer_(stream_.get_executor()), rng_(std::random_device{}()), state_(state) {
        ++state_.stats.open_connections;
    }
    ~connection() { --state_.stats.open_connections; }
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    awaitable<void> run();

private:
    // transport
    awaitable<bool> read_request();
    awaitable<void> answer_read_error(error_code ec);
    template <class Buffers>
    awaitable<bool> write(const Buffers& buffers);
    awaitable<void> sleep_ms(std::int64_t ms);
    awaitable<bool> wait_for_peer_close(bool with_deadline = true);
    awaitable<void> close_gracefully();
    void reset_connection();
    bool peer_has_closed();

    // response head and plain answers
    void begin_head(unsigned status);
    void add_header(std::string_view name, std::string_view value);
    void end_head(std::optional<std::size_t> content_length, bool keep_alive);
    awaitable<next_step> send(std::string_view body, bool keep_alive);
    awaitable<next_step> send_json(unsigned status, std::string_view body, bool keep_alive);
    awaitable<next_step> send_error(upstream up, const rejection& r, bool keep_alive);
    awaitable<next_step> send_raw_and_close(std::string_view bytes);

    // routes
    awaitable<next_step> dispatch(request& req);
    awaitable<next_step> openrouter_route(std::string_view path, std::string_view query, request& req);
    awaitable<next_step> litellm_route(std::string_view path, request& req);
    awaitable<next_step> hooks_route(std::string_view path, std::string_view query, request& req);
    awaitable<std::optional<next_step>> armed_management_fault(bool keep_alive);
    awaitable<next_step> management_route(std::string_view path, std::string_view query, request& req);

    // inference
    void record_last_request(const request& req);
    std::optional<rejection> authenticate(upstream up, const request& req, std::string_view& key) const;
    std::optional<rejection> resolve_model(upstream up, std::string_view requested, std::int64_t prompt_tokens,
                                           call_plan& plan) const;
    awaitable<std::optional<next_step>> pre_response_fault(upstream up, const mock_options& o, bool stream,
                                                           bool keep_alive);
    awaitable<next_step> completion(upstream up, mock::completion_kind kind, request& req);
    awaitable<next_step> complete_answer(call_plan& p);
    awaitable<next_step> stream_answer(call_plan& p);
    awaitable<bool> flush_chunk(bool last);
    awaitable<bool> end_event(const call_plan& p, std::int64_t& events);
    awaitable<next_step> embeddings(upstream up, request& req);
    awaitable<next_step> speech(upstream up, request& req);
    void settle(const call_plan& p, std::string_view api_type, const mock::token_counts& counts, std::int64_t cost_pico,
                std::string_view finish_reason, bool cancelled);
    std::string new_generation_id();
    std::string new_uuid();

    beast::tcp_stream stream_;
    beast::flat_buffer buffer_;
    std::optional<http::request_parser<http::string_body>> parser_;
    asio::steady_timer timer_;
    mock::json_parser json_;
    std::string head_;  // the response head being built, until written
    std::string body_;  // a response body, or the SSE bytes not yet flushed
    std::string scratch_;
    bool http10_ = false;
    std::mt19937_64 rng_;
    server_state& state_;
};

// ---- transport

awaitable<void> connection::run() {
    for (;;) {
        if (!co_await read_request()) break;
        ++state_.stats.requests;
        request& req = parser_->get();
        http10_ = req.version() == 10;
        const next_step step = co_await dispatch(req);
        if (step == next_step::close || !req.keep_alive()) {
            if (stream_.socket().is_open()) co_await close_gracefully();
            break;
        }
    }
}

// Reads the next request into parser_; false when the connection is done
// (after answering a bad request, if it was one).
awaitable<bool> connection::read_request() {
    parser_.emplace();
    parser_->header_limit(max_header_bytes);
    parser_->body_limit(max_body_bytes);
    error_code ec;
    stream_.expires_after(idle_timeout);
    co_await http::async_read_header(stream_, buffer_, *parser_, asio::redirect_error(use_awaitable, ec));
    if (!ec && !parser_->is_done()) {
        // curl waits a second for "100 Continue" before sending a large body.
        if (mock::ascii_iequals(header_value(parser_->get(), "expect"), "100-continue")) {
            constexpr std::string_view go_on = "HTTP/1.1 100 Continue\r\n\r\n";
            if (!co_await write(asio::buffer(go_on.data(), go_on.size()))) co_return false;
        }
        stream_.expires_after(idle_timeout);
        co_await http::async_read(stream_, buffer_, *parser_, asio::redirect_error(use_awaitable, ec));
    }
    if (ec) {
        co_await answer_read_error(ec);
        co_return false;
    }
    co_return true;
}

awaitable<void> connection::answer_read_error(error_code ec) {
    if (ec.category() != http::make_error_code(http::error::bad_target).category() ||
        ec == http::error::end_of_stream || ec == http::error::partial_message)
        co_return;  // the peer closed, reset or went idle: nothing to answer
    const std::string_view target = to_sv(parser_->get().target());
    const upstream up = target.starts_with("/api/") ? upstream::openrouter : upstream::litellm;
    rejection rejected{400, fmt::format("Malformed HTTP request ({})", ec.message()), "invalid_request"};
    if (ec == http::error::body_limit)
        rejected = {413, fmt::format("Request body larger than {} bytes", max_body_bytes), "payload_too_large"};
    else if (ec == http::error::header_limit)
        rejected = {431, "Request headers too large"};
    co_await send_error(up, rejected, false);
    if (stream_.socket().is_open()) co_await close_gracefully();
}

template <class Buffers>
awaitable<bool> connection::write(const Buffers& buffers) {
    stream_.expires_after(write_timeout);
    error_code ec;
    co_await asio::async_write(stream_, buffers, asio::redirect_error(use_awaitable, ec));
    co_return !ec;
}

// A timer wait, never a blocked thread.
awaitable<void> connection::sleep_ms(std::int64_t ms) {
    if (ms <= 0) co_return;
    timer_.expires_after(std::chrono::milliseconds(ms));
    error_code ec;
    co_await timer_.async_wait(asio::redirect_error(use_awaitable, ec));
}

// Reads and discards until the peer closes (true) or stall_timeout passes
// (false). Without the deadline it waits for the peer alone; a server stop
// destroys the wait with the io_context.
awaitable<bool> connection::wait_for_peer_close(bool with_deadline) {
    std::array<char, 512> sink;
    const auto deadline = steady_clock::now() + stall_timeout;
    for (;;) {
        if (with_deadline)
            stream_.expires_at(deadline);
        else
            stream_.expires_never();
        error_code ec;
        co_await stream_.async_read_some(asio::buffer(sink), asio::redirect_error(use_awaitable, ec));
        if (ec == beast::error::timeout) co_return false;
        if (ec) co_return true;
    }
}

// FIN, then read what the peer still sends (an unread body) for a moment, so
// the close does not turn into a reset that could swallow our answer.
awaitable<void> connection::close_gracefully() {
    error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) co_return;
    std::array<char, 4096> sink;
    const auto deadline = steady_clock::now() + drain_timeout;
    std::size_t drained = 0;
    while (drained < max_drain_bytes) {
        stream_.expires_at(deadline);
        const std::size_t n =
            co_await stream_.async_read_some(asio::buffer(sink), asio::redirect_error(use_awaitable, ec));
        if (ec) break;
        drained += n;
    }
    stream_.socket().close(ec);
}

// SO_LINGER 0 then close: the kernel sends RST, the peer sees a reset.
void connection::reset_connection() {
    error_code ec;
    stream_.socket().set_option(asio::socket_base::linger(true, 0), ec);
    stream_.socket().close(ec);
}

// Whether the peer's FIN (or a reset) has already arrived, by a peek that
// never blocks. A stream checks before each write, so it stops at the first
// event its client can no longer read instead of writing into the closed
// socket (which succeeds once, until the peer's RST comes back). Data from
// the peer (a pipelined request) is not a close. A client that half-closes
// its sending side while still reading is taken as gone.
bool connection::peer_has_closed() {
    char byte = 0;
    const auto n = ::recv(stream_.socket().native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n >= 0) return n == 0;
    return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

// ---- response head

void connection::begin_head(unsigned status) {
    head_.clear();
    fmt::format_to(std::back_inserter(head_), "HTTP/1.1 {} {}\r\n", status,
                   to_sv(http::obsolete_reason(static_cast<http::status>(status))));
}

void connection::add_header(std::string_view name, std::string_view value) {
    head_ += name;
    head_ += ": ";
    head_ += value;
    head_ += "\r\n";
}

void connection::end_head(std::optional<std::size_t> content_length, bool keep_alive) {
    if (content_length)
        fmt::format_to(std::back_inserter(head_), "Content-Length: {}\r\n", *content_length);
    else
        head_ += "Transfer-Encoding: chunked\r\n";
    if (!keep_alive)
        head_ += "Connection: close\r\n";
    else if (http10_)
        head_ += "Connection: keep-alive\r\n";
    head_ += "\r\n";
}

awaitable<next_step> connection::send(std::string_view body, bool keep_alive) {
    end_head(body.size(), keep_alive);
    const std::array<asio::const_buffer, 2> buffers{asio::buffer(head_), asio::buffer(body.data(), body.size())};
    const bool ok = co_await write(buffers);
    head_.clear();
    co_return ok&& keep_alive ? next_step::keep_alive : next_step::close;
}

awaitable<next_step> connection::send_json(unsigned status, std::string_view body, bool keep_alive) {
    begin_head(status);
    add_header("Content-Type", "application/json");
    co_return co_await send(body, keep_alive);
}

awaitable<next_step> connection::send_error(upstream up, const rejection& r, bool keep_alive) {
    body_.clear();
    append_error(body_, up, r);
    begin_head(r.status);
    add_header("Content-Type", "application/json");
    if (r.retry_after) add_header("Retry-After", "1");
    if (up == upstream::litellm) add_header("x-litellm-response-cost", "0");
    co_return co_await send(body_, keep_alive);
}

awaitable<next_step> connection::send_raw_and_close(std::string_view bytes) {
    co_await write(asio::buffer(bytes.data(), bytes.size()));
    if (stream_.socket().is_open()) co_await close_gracefully();
    co_return next_step::close;
}

// ---- routes

awaitable<next_step> connection::dispatch(request& req) {
    const std::string_view target = to_sv(req.target());
    const auto q = target.find('?');
    const std::string_view path = target.substr(0, q);
    const std::string_view query = q == std::string_view::npos ? std::string_view{} : target.substr(q + 1);
    if (path.starts_with("/api/v1/")) co_return co_await openrouter_route(path.substr(7), query, req);
    if (path.starts_with("/mock/")) co_return co_await hooks_route(path, query, req);
    std::string_view rest = path;
    if (rest.starts_with("/v1/")) rest.remove_prefix(3);
    co_return co_await litellm_route(rest, req);
}

awaitable<next_step> connection::openrouter_route(std::string_view path, std::string_view query, request& req) {
    const bool keep = req.keep_alive();
    const http::verb method = req.method();
    const rejection wrong_method{405, "Method not allowed", "invalid_request"};
    if (path == "/models") {
        if (method != http::verb::get) co_return co_await send_error(upstream::openrouter, wrong_method, keep);
        co_return co_await send_json(200, state_.openrouter.bytes(), keep);  // the file's bytes, whatever the query
    }
    const auto post_route = [&](std::string_view p) { return path == p; };
    if (post_route("/chat/completions") || post_route("/completions") || post_route("/embeddings") ||
        post_route("/audio/speech")) {
        if (method != http::verb::post) co_return co_await send_error(upstream::openrouter, wrong_method, keep);
        if (path == "/chat/completions")
            co_return co_await completion(upstream::openrouter, mock::completion_kind::chat, req);
        if (path == "/completions")
            co_return co_await completion(upstream::openrouter, mock::completion_kind::text, req);
        if (path == "/embeddings") co_return co_await embeddings(upstream::openrouter, req);
        co_return co_await speech(upstream::openrouter, req);
    }
    if (path == "/keys" || path.starts_with("/keys/") || path == "/credits" || path == "/generation") {
        // A fault armed by POST /mock/management-faults takes the place of the answer.
        if (auto step = co_await armed_management_fault(keep)) co_return *step;
        co_return co_await management_route(path, query, req);
    }
    if (path == "/key" || path == "/auth/key") co_return co_await management_route(path, query, req);
    {
        const rejection rejected{404, "Not Found", "not_found"};
        co_return co_await send_error(upstream::openrouter, rejected, keep);
    }
}

// The next armed management fault, if any, for this request: an error
// answer, a stall, a reset, or (slow) a wait. nullopt: answer normally.
awaitable<std::optional<next_step>> connection::armed_management_fault(bool keep_alive) {
    const upstream up = upstream::openrouter;
    const mock::armed_fault armed = state_.management_faults.take();
    std::optional<rejection> status_fault;
    switch (armed.kind) {
        case mock::management_fault::none: co_return std::nullopt;
        case mock::management_fault::status_500: status_fault = rejection{500, "Internal Server Error"}; break;
        case mock::management_fault::status_502: status_fault = rejection{502, "Bad Gateway"}; break;
        case mock::management_fault::status_503: status_fault = rejection{503, "Service Unavailable"}; break;
        case mock::management_fault::status_429:
            status_fault = rejection{429, "Rate limit exceeded", "rate_limit_exceeded", true};
            break;
        case mock::management_fault::status_401:
            status_fault = rejection{401, "Invalid management key", "authentication"};
            break;
        case mock::management_fault::status_402:
            status_fault = rejection{402, "Insufficient credits. Add more using https://openrouter.ai/credits",
                                     "payment_required"};
            break;
        case mock::management_fault::stall:
            co_await wait_for_peer_close(false);  // the request was read; no answer, ever
            co_return next_step::close;
        case mock::management_fault::slow: co_await sleep_ms(armed.delay_ms); co_return std::nullopt;
        case mock::management_fault::reset: reset_connection(); co_return next_step::close;
    }
    if (!status_fault) co_return std::nullopt;
    co_return co_await send_error(up, *status_fault, keep_alive);
}

// /keys…, /key, /credits and /generation (upstream-apis.md §1c).
awaitable<next_step> connection::management_route(std::string_view path, std::string_view query, request& req) {
    const upstream up = upstream::openrouter;
    const bool keep = req.keep_alive();
    const http::verb method = req.method();
    const std::string_view key = bearer_token(header_value(req, "authorization"));
    const bool management = !key.empty() && key == state_.config.management_key;
    const rejection missing{401, "Missing Authentication header"};
    const rejection wrong_method{405, "Method not allowed", "invalid_request"};
    body_.clear();

    if (path == "/key" || path == "/auth/key") {  // any key: what the caller's own key looks like
        if (method != http::verb::get) co_return co_await send_error(up, wrong_method, keep);
        if (key.empty()) co_return co_await send_error(up, missing, keep);
        if (!management && state_.keys.admit(key) == mock::key_store::admission::disabled) {
            const rejection rejected{401, "Key is disabled", "authentication"};
            co_return co_await send_error(up, rejected, keep);
        }
        state_.keys.current(key, management, body_);
        co_return co_await send_json(200, body_, keep);
    }
    if (path == "/generation") {
        if (method != http::verb::get) co_return co_await send_error(up, wrong_method, keep);
        if (key.empty()) co_return co_await send_error(up, missing, keep);
        const std::string_view id = query_param(query, "id");
        if (id.empty()) {
            const rejection rejected{400, "Query parameter id is required", "invalid_request"};
            co_return co_await send_error(up, rejected, keep);
        }
        if (!state_.generations.render(id, steady_now_ms(), body_)) {  // unknown, or not yet visible
            const rejection rejected{404, fmt::format("Generation {} not found", id), "not_found"};
            co_return co_await send_error(up, rejected, keep);
        }
        co_return co_await send_json(200, body_, keep);
    }

    // The rest needs the management key.
    if (key.empty()) co_return co_await send_error(up, missing, keep);
    if (!management) {
        const rejection rejected{401, "This endpoint requires a management key", "authentication"};
        co_return co_await send_error(up, rejected, keep);
    }

    if (path == "/credits") {
        if (method != http::verb::get) co_return co_await send_error(up, wrong_method, keep);
        fmt::format_to(std::back_inserter(body_),
                       "{{\"data\":{{\"total_credits\":{},\"total_usage\":", total_credits_usd);
        mock::append_usd(body_, state_.keys.total_usage_pico(), mock::cost_style::plain);
        body_ += "}}";
        co_return co_await send_json(200, body_, keep);
    }
    if (path == "/keys") {
        if (method == http::verb::get) {
            const auto offset = parse_int(query_param(query, "offset"));
            if (!query_param(query, "offset").empty() && (!offset || *offset < 0)) {
                const rejection rejected{400, "offset must be a non-negative integer", "invalid_request"};
                co_return co_await send_error(up, rejected, keep);
            }
            state_.keys.list(query_param(query, "include_disabled") == "true",
                             static_cast<std::size_t>(offset.value_or(0)), body_);
            co_return co_await send_json(200, body_, keep);
        }
        if (method != http::verb::post) co_return co_await send_error(up, wrong_method, keep);
        mock::key_fields fields;
        std::string error;
        if (!mock::read_key_fields(json_, req.body(), fields, error)) {
            const rejection rejected{400, error, "invalid_request"};
            co_return co_await send_error(up, rejected, keep);
        }
        if (!fields.name || fields.name->empty()) {
            const rejection rejected{400, "name is required", "invalid_request"};
            co_return co_await send_error(up, rejected, keep);
        }
        if (fields.disabled) {
            const rejection rejected{400, "disabled cannot be set on create", "invalid_request"};
            co_return co_await send_error(up, rejected, keep);
        }
        state_.keys.create(fields, body_);
        co_return co_await send_json(201, body_, keep);
    }
    // /keys/{hash}
    const std::string_view hash = path.substr(std::string_view("/keys/").size());
    const rejection unknown{404, "Key not found", "not_found"};
    if (method == http::verb::get) {
        if (!state_.keys.get(hash, body_)) co_return co_await send_error(up, unknown, keep);
        co_return co_await send_json(200, body_, keep);
    }
    if (method == http::verb::patch) {
        mock::key_fields fields;
        std::string error;
        if (!mock::read_key_fields(json_, req.body(), fields, error)) {
            const rejection rejected{400, error, "invalid_request"};
            co_return co_await send_error(up, rejected, keep);
        }
        if (fields.name && fields.name->empty()) {
            const rejection rejected{400, "name must not be empty", "invalid_request"};
            co_return co_await send_error(up, rejected, keep);
        }
        if (!state_.keys.patch(hash, fields, body_)) co_return co_await send_error(up, unknown, keep);
        co_return co_await send_json(200, body_, keep);
    }
    if (method == http::verb::delete_) {
        if (!state_.keys.remove(hash)) co_return co_await send_error(up, unknown, keep);
        co_return co_await send_json(200, "{\"deleted\":true}", keep);
    }
    co_return co_await send_error(up, wrong_method, keep);
}

awaitable<next_step> connection::litellm_route(std::string_view path, request& req) {
    const upstream up = upstream::litellm;
    const bool keep = req.keep_alive();
    const http::verb method = req.method();
    const rejection wrong_method{405, "Method Not Allowed"};
    if (path == "/models" || path == "/model/info") {
        if (method != http::verb::get) co_return co_await send_error(up, wrong_method, keep);
        std::string_view key;
        if (auto r = authenticate(up, req, key)) co_return co_await send_error(up, *r, keep);
        co_return co_await send_json(
            200, path == "/models" ? state_.litellm.models_json() : state_.litellm.model_info_json(), keep);
    }
    if (path == "/chat/completions" || path == "/completions" || path == "/embeddings" || path == "/audio/speech") {
        if (method != http::verb::post) co_return co_await send_error(up, wrong_method, keep);
        if (path == "/chat/completions") co_return co_await completion(up, mock::completion_kind::chat, req);
        if (path == "/completions") co_return co_await completion(up, mock::completion_kind::text, req);
        if (path == "/embeddings") co_return co_await embeddings(up, req);
        co_return co_await speech(up, req);
    }
    {
        const rejection rejected{404, "Not Found"};
        co_return co_await send_error(up, rejected, keep);
    }
}

awaitable<next_step> connection::hooks_route(std::string_view path, std::string_view query, request& req) {
    const bool keep = req.keep_alive();
    body_.clear();
    if (path == "/mock/management-faults") {
        if (req.method() == http::verb::post) {
            mock::armed_fault armed;
            if (const auto error = read_management_fault_query(query, armed)) {
                body_ += "{\"error\":";
                mock::append_json_string(body_, *error);
                body_ += '}';
                co_return co_await send_json(400, body_, keep);
            }
            state_.management_faults.arm(armed);
        } else if (req.method() != http::verb::get) {
            co_return co_await send_json(405, "{\"error\":\"method not allowed\"}", keep);
        }
        append_armed_fault(body_, state_.management_faults.pending());
        co_return co_await send_json(200, body_, keep);
    }
    if (req.method() != http::verb::get) co_return co_await send_json(405, "{\"error\":\"method not allowed\"}", keep);
    if (path == "/mock/stats") {
        const server_stats& s = state_.stats;
        fmt::format_to(std::back_inserter(body_),
                       "{{\"requests\":{},\"open_connections\":{},\"open_streams\":{},\"streams_completed\":{}"
                       ",\"streams_aborted_by_peer\":{}}}",
                       s.requests.load(), s.open_connections.load(), s.open_streams.load(), s.streams_completed.load(),
                       s.streams_aborted_by_peer.load());
        co_return co_await send_json(200, body_, keep);
    }
    if (path == "/mock/last-request") {
        const auto last = state_.last_request.load();
        if (!last) co_return co_await send_json(404, "{\"error\":\"no inference request yet\"}", keep);
        body_ += "{\"method\":";
        mock::append_json_string(body_, last->method);
        body_ += ",\"target\":";
        mock::append_json_string(body_, last->target);
        body_ += ",\"headers\":{";
        // Split the packed pairs; repeated names are joined with ", " (one JSON key each).
        std::vector<std::pair<std::string_view, std::string_view>> pairs;
        for (std::string_view rest = last->headers; !rest.empty();) {
            const auto name_end = rest.find('\0');
            const auto value_end = rest.find('\0', name_end + 1);
            pairs.emplace_back(rest.substr(0, name_end), rest.substr(name_end + 1, value_end - name_end - 1));
            rest.remove_prefix(value_end + 1);
        }
        bool first = true;
        for (std::size_t i = 0; i < pairs.size(); ++i) {
            const auto& [name, value] = pairs[i];
            bool seen = false;
            for (std::size_t k = 0; k < i && !seen; ++k) seen = pairs[k].first == name;
            if (seen) continue;
            std::string joined(value);
            for (std::size_t k = i + 1; k < pairs.size(); ++k) {
                if (pairs[k].first != name) continue;
                joined += ", ";
                joined += pairs[k].second;
            }
            if (!first) body_ += ',';
            first = false;
            mock::append_json_string(body_, name);
            body_ += ':';
            mock::append_json_string(body_, joined);
        }
        body_ += "},\"body\":";
        mock::append_json_string(body_, last->body);
        body_ += '}';
        co_return co_await send_json(200, body_, keep);
    }
    co_return co_await send_json(404, "{\"error\":\"unknown mock hook\"}", keep);
}

// ---- inference

void connection::record_last_request(const request& req) {
    auto r = std::make_shared<recorded_request>();
    const auto method = req.method_string();
    r->method.assign(method.data(), method.size());
    r->target.assign(req.target().data(), req.target().size());
    std::size_t header_bytes = 0;
    for (const auto& field : req) header_bytes += field.name_string().size() + field.value().size() + 2;
    r->headers.reserve(header_bytes);
    for (const auto& field : req) {
        for (const char c : field.name_string())
            r->headers += c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
        r->headers += '\0';
        r->headers += to_sv(field.value());
        r->headers += '\0';
    }
    r->body = req.body();
    state_.last_request.store(std::move(r));
}

// The inference key. OpenRouter: a non-empty bearer that is not the
// management key, not disabled, not over its limit. LiteLLM: bearer or
// x-litellm-api-key, equal to --litellm-key when one is set.
std::optional<rejection> connection::authenticate(upstream up, const request& req, std::string_view& key) const {
    key = bearer_token(header_value(req, "authorization"));
    if (up == upstream::openrouter) {
        if (key.empty()) return rejection{401, "Missing Authentication header"};
        if (key == state_.config.management_key)
            return rejection{401, "Management keys cannot be used for inference", "authentication"};
        switch (state_.keys.admit(key)) {
            case mock::key_store::admission::ok: return std::nullopt;
            case mock::key_store::admission::disabled: return rejection{401, "Key is disabled", "authentication"};
            case mock::key_store::admission::limit_exceeded:
                return rejection{
                    403, "Key limit exceeded (monthly limit). Manage it using https://openrouter.ai/settings/keys",
                    "permission_denied"};
        }
        return std::nullopt;
    }
    if (key.empty()) {
        key = header_value(req, "x-litellm-api-key");
        if (const auto b = bearer_token(key); !b.empty()) key = b;
    }
    if (key.empty()) return rejection{401, "Authentication Error, No api key passed in."};
    if (state_.config.litellm_key && key != *state_.config.litellm_key)
        return rejection{401, "Authentication Error, Invalid proxy server token passed."};
    return std::nullopt;
}

// Fills plan.model and plan.prices. OpenRouter routers ("-1" prices) answer
// as router_fallback_model, priced like it.
std::optional<rejection> connection::resolve_model(upstream up, std::string_view requested, std::int64_t prompt_tokens,
                                                   call_plan& plan) const {
    if (up == upstream::openrouter) {
        const mock::openrouter_model* m = state_.openrouter.find(requested);
        if (m == nullptr)
            return rejection{404, fmt::format("Model {} not found: no endpoints found for this model", requested),
                             "not_found"};
        if (m->dynamic_price) {
            plan.model = router_fallback_model;
            m = state_.openrouter.find(router_fallback_model);
            plan.prices = m ? m->prices_for(prompt_tokens, utc_hhmm_now()) : mock::token_prices{};
            return std::nullopt;
        }
        plan.model = m->id;
        plan.prices = m->prices_for(prompt_tokens, utc_hhmm_now());
        return std::nullopt;
    }
    const mock::litellm_model* m = state_.litellm.find(requested);
    if (m == nullptr)
        return rejection{400, fmt::format("Invalid model name passed in model={}. Call `/v1/models` to view available "
                                          "models for your key.",
                                          requested)};
    plan.model = m->name;  // LiteLLM answers with the name the client sent
    plan.prices = m->prices;
    return std::nullopt;
}

// Faults that strike before any answer byte; nullopt: carry on (possibly
// after the slow-headers wait).
awaitable<std::optional<next_step>> connection::pre_response_fault(upstream up, const mock_options& o, bool stream,
                                                                   bool keep_alive) {
    const bool openrouter = up == upstream::openrouter;
    std::optional<rejection> status_fault;
    if (o.injected == fault::status_500)
        status_fault =
            rejection{500, openrouter ? "Internal Server Error" : "litellm.InternalServerError: mock", "server"};
    else if (o.injected == fault::status_402)
        status_fault = rejection{402,
                                 openrouter ? "Insufficient credits. Add more using https://openrouter.ai/credits"
                                            : "Budget has been exceeded! Current cost: 1.0, Max budget: 1.0",
                                 "payment_required"};
    else if (o.injected == fault::status_429)
        status_fault = rejection{429, openrouter ? "Rate limit exceeded" : "litellm.RateLimitError: mock rate limit",
                                 "rate_limit_exceeded", true};
    if (status_fault) co_return co_await send_error(up, *status_fault, keep_alive);
    switch (o.injected) {
        case fault::garbage:
            // Valid status line and headers, then a chunk size that is not hex.
            co_return co_await send_raw_and_close(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
                "zz-not-a-chunk-size\r\n{\"garbage\":\r\n");
        case fault::not_http: co_return co_await send_raw_and_close("this is not an HTTP response\r\n\r\n");
        case fault::slow_headers: co_await sleep_ms(o.delay_ms); co_return std::nullopt;
        case fault::reset:
            if (stream) co_return std::nullopt;
            reset_connection();
            co_return next_step::close;
        case fault::stall:
            if (stream) co_return std::nullopt;
            if (co_await wait_for_peer_close()) ++state_.stats.streams_aborted_by_peer;
            co_return next_step::close;
        case fault::status_500:
        case fault::status_402:
        case fault::status_429:  // answered above
        case fault::none:
        case fault::midstream_error:
        case fault::no_usage: co_return std::nullopt;
    }
    co_return std::nullopt;
}

std::string connection::new_generation_id() {
    static constexpr char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    std::string id = fmt::format("gen-{}-", std::time(nullptr));
    for (int i = 0; i < 20; ++i) id += alphabet[rng_() % (sizeof alphabet - 1)];
    return id;
}

std::string connection::new_uuid() {
    const std::uint64_t a = rng_(), b = rng_();
    return fmt::format("{:08x}-{:04x}-4{:03x}-{:x}{:03x}-{:012x}", a >> 32, (a >> 16) & 0xffff, a & 0xfff,
                       8 + ((b >> 62) & 3), (b >> 48) & 0xfff, b & 0xffffffffffffULL);
}

// Bills an OpenRouter call: the key's usage and /generation. LiteLLM calls
// are not recorded.
void connection::settle(const call_plan& p, std::string_view api_type, const mock::token_counts& counts,
                        std::int64_t cost_pico, std::string_view finish_reason, bool cancelled) {
    if (p.up != upstream::openrouter) return;
    state_.keys.charge(p.api_key, cost_pico);
    mock::generation_record g;
    g.id = p.id;
    g.model = p.model;
    g.api_type = api_type;
    g.finish_reason = finish_reason;
    g.cost_pico = cost_pico;
    g.tokens = counts;
    g.created_unix = p.created;
    g.latency_ms = std::chrono::duration_cast<std::chrono::milliseconds>(steady_clock::now() - p.started).count();
    g.recorded_ms = steady_now_ms();
    g.streamed = p.stream;
    g.cancelled = cancelled;
    state_.generations.add(std::move(g));
}

awaitable<next_step> connection::completion(upstream up, mock::completion_kind kind, request& req) {
    record_last_request(req);
    const bool keep = req.keep_alive();
    call_plan p;
    p.up = up;
    p.kind = kind;
    p.keep_alive = keep;
    p.started = steady_clock::now();
    if (auto r = authenticate(up, req, p.api_key)) co_return co_await send_error(up, *r, keep);
    if (auto r = read_options(req, p.options)) co_return co_await send_error(up, *r, keep);
    mock::completion_request body;
    std::string error;
    if (!mock::read_completion(json_, req.body(), kind, body, error)) {
        const rejection rejected{400, error, "invalid_request"};
        co_return co_await send_error(up, rejected, keep);
    }
    if (auto r = resolve_model(up, body.model, body.prompt_tokens, p)) co_return co_await send_error(up, *r, keep);
    if (auto step = co_await pre_response_fault(up, p.options, body.stream, keep)) co_return *step;

    p.stream = body.stream;
    p.include_usage = body.include_usage;
    p.counts.prompt = body.prompt_tokens;
    p.counts.completion = p.options.tokens.value_or(
        std::min(body.max_tokens.value_or(default_completion_tokens), default_completion_tokens));
    p.counts.cached = std::min(p.options.cached_tokens, p.counts.prompt);
    p.counts.reasoning = std::min(p.options.reasoning_tokens, p.counts.completion);
    p.id = up == upstream::openrouter ? new_generation_id() : "chatcmpl-" + new_uuid();
    if (up == upstream::litellm) p.call_id = new_uuid();
    p.created = static_cast<std::int64_t>(std::time(nullptr));
    if (p.stream) co_return co_await stream_answer(p);
    co_return co_await complete_answer(p);
}

awaitable<next_step> connection::complete_answer(call_plan& p) {
    const mock_options& o = p.options;
    if (o.injected == fault::midstream_error && p.up == upstream::litellm) {
        const rejection rejected{500, "litellm.InternalServerError: mock provider failure"};
        co_return co_await send_error(p.up, rejected, p.keep_alive);
    }
    if (o.injected != fault::slow_headers) co_await sleep_ms(o.delay_ms);
    const bool error_choice = o.injected == fault::midstream_error;  // OpenRouter: HTTP 200, finish_reason "error"
    const std::int64_t words = error_choice ? std::min(o.fault_after_chunks, p.counts.completion) : p.counts.completion;
    body_.clear();
    append_completion_body(body_, p, words, error_choice, o.injected != fault::no_usage);

    mock::token_counts billed = p.counts;
    billed.completion = words;
    billed.reasoning = std::min(billed.reasoning, words);
    const std::int64_t cost = mock::token_cost_pico(p.prices, billed);
    settle(p, "completions", billed, cost, error_choice ? "error" : "stop", false);

    begin_head(200);
    add_header("Content-Type", "application/json");
    if (p.up == upstream::openrouter) {
        add_header("X-Generation-Id", p.id);
    } else {
        add_header("x-litellm-call-id", p.call_id);
        add_header("x-litellm-model-group", p.model);
        add_header("x-litellm-version", "mock");
        scratch_.clear();
        mock::append_usd(scratch_, cost, cost_style_of(p));
        add_header("x-litellm-response-cost", scratch_);
    }
    co_return co_await send(body_, p.keep_alive);
}

// Writes head_ (if not yet sent) and the pending SSE bytes as one HTTP chunk;
// `last` adds the terminating zero chunk. False (nothing written, the bytes
// dropped) when the write fails or the peer has already closed.
awaitable<bool> connection::flush_chunk(bool last) {
    if (body_.empty() && head_.empty() && !last) co_return true;
    if (peer_has_closed()) {
        head_.clear();
        body_.clear();
        co_return false;
    }
    std::array<char, 24> size_line{};
    std::size_t size_len = 0;
    if (!body_.empty()) size_len = fmt::format_to_n(size_line.data(), size_line.size(), "{:x}\r\n", body_.size()).size;
    const std::string_view tail = body_.empty() ? (last ? "0\r\n\r\n" : "") : (last ? "\r\n0\r\n\r\n" : "\r\n");
    const std::array<asio::const_buffer, 4> buffers{asio::buffer(head_), asio::buffer(size_line.data(), size_len),
                                                    asio::buffer(body_), asio::buffer(tail.data(), tail.size())};
    const bool ok = co_await write(buffers);
    head_.clear();
    body_.clear();
    co_return ok;
}

// Closes the data event just rendered into body_, adds the keep-alive
// comment when due, and writes when each event must go out on its own.
awaitable<bool> connection::end_event(const call_plan& p, std::int64_t& events) {
    const std::string_view eol = p.options.crlf ? "\r\n" : "\n";
    body_ += eol;
    body_ += eol;
    ++events;
    if (p.options.keepalive_every > 0 && events % p.options.keepalive_every == 0) {
        body_ += ": OPENROUTER PROCESSING";
        body_ += eol;
        body_ += eol;
    }
    const bool each_event = p.options.delay_ms > 0 && p.options.injected != fault::slow_headers;
    if (each_event || body_.size() >= stream_flush_bytes) co_return co_await flush_chunk(false);
    co_return true;
}

awaitable<next_step> connection::stream_answer(call_plan& p) {
    struct open_stream {
        server_stats& s;
        explicit open_stream(server_stats& stats) : s(stats) { ++s.open_streams; }
        ~open_stream() { --s.open_streams; }
    } guard(state_.stats);
    const mock_options& o = p.options;
    const bool openrouter = p.up == upstream::openrouter;
    const bool chat = p.kind == mock::completion_kind::chat;
    const std::string_view eol = o.crlf ? "\r\n" : "\n";
    const std::int64_t delay_ms = o.injected == fault::slow_headers ? 0 : o.delay_ms;
    const std::int64_t n = p.counts.completion;
    const bool stream_fault =
        o.injected == fault::midstream_error || o.injected == fault::reset || o.injected == fault::stall;
    const std::int64_t fault_at = stream_fault ? std::min(o.fault_after_chunks, n) : -1;
    // LiteLLM puts "usage":null on every chunk when usage was asked for.
    const std::string_view chunk_tail = (!openrouter && p.include_usage) ? "],\"usage\":null}" : "]}";
    const std::string chunk_head = chunk_head_of(p);
    // words_sent: content chunks rendered; words_written: those of them whose
    // bytes have been written (a failed or skipped write loses the rest).
    std::int64_t events = 0, words_sent = 0, words_written = 0;
    bool settled = false;  // a stream is billed exactly once, however it ends
    const auto settle_once = [&](std::int64_t words, std::string_view finish_reason, bool cancelled) {
        if (settled) return;
        settled = true;
        mock::token_counts c = p.counts;
        c.completion = words;
        c.reasoning = std::min(c.reasoning, words);
        settle(p, "completions", c, mock::token_cost_pico(p.prices, c), finish_reason, cancelled);
    };
    const auto peer_gone = [&] {  // the client closed the stream: billed for what was written, cancelled
        ++state_.stats.streams_aborted_by_peer;
        settle_once(words_written, "", true);
        return next_step::close;
    };

    begin_head(200);
    add_header("Content-Type", "text/event-stream");
    add_header("Cache-Control", "no-cache");
    if (openrouter) {
        add_header("X-Generation-Id", p.id);
    } else {
        add_header("x-litellm-call-id", p.call_id);
        add_header("x-litellm-model-group", p.model);
        add_header("x-litellm-version", "mock");
    }
    end_head(std::nullopt, p.keep_alive);
    body_.clear();
    if (openrouter) {
        body_ += ": OPENROUTER PROCESSING";
        body_ += eol;
        body_ += eol;
    }
    if (!co_await flush_chunk(false)) co_return peer_gone();

    if (chat) {
        co_await sleep_ms(delay_ms);
        body_ += "data: ";
        body_ += chunk_head;
        append_stream_choice(body_, p, "\"role\":\"assistant\",\"content\":\"\"", -1, "null");
        body_ += chunk_tail;
        if (!co_await end_event(p, events)) co_return peer_gone();
    }
    for (std::int64_t i = 0; i < n && i != fault_at; ++i) {
        co_await sleep_ms(delay_ms);
        body_ += "data: ";
        body_ += chunk_head;
        append_stream_choice(body_, p, "", i, "null");
        body_ += chunk_tail;
        ++words_sent;
        if (!co_await end_event(p, events)) co_return peer_gone();
        if (body_.empty()) words_written = words_sent;  // end_event flushed
    }

    if (fault_at >= 0) {
        if (o.injected == fault::midstream_error) {
            co_await sleep_ms(delay_ms);
            body_ += "data: ";
            if (openrouter) {
                // The chunk head minus its open choices list, then error + the error choice.
                body_.append(chunk_head, 0, chunk_head.size() - std::string_view("\"choices\":[").size());
                body_ += "\"error\":";
                body_ += openrouter_midstream_error;
                body_ += ",\"choices\":[";
                if (chat)
                    body_ +=
                        "{\"index\":0,\"delta\":{\"content\":\"\"},\"finish_reason\":\"error\",\"native_finish_"
                        "reason\":\"error\"}";
                else
                    body_ +=
                        "{\"index\":0,\"text\":\"\",\"finish_reason\":\"error\",\"native_finish_reason\":\"error\"}";
                body_ += "]}";
            } else {
                body_ +=
                    "{\"error\":{\"message\":\"litellm.InternalServerError: mock mid-stream failure\","
                    "\"type\":\"internal_server_error\",\"param\":\"None\",\"code\":\"500\"}}";
            }
            body_ += eol;
            body_ += eol;
            settle_once(words_sent, "error", false);
            if (!co_await flush_chunk(true)) co_return peer_gone();
            ++state_.stats.streams_completed;
            co_return p.keep_alive ? next_step::keep_alive : next_step::close;
        }
        if (!co_await flush_chunk(false)) co_return peer_gone();
        words_written = words_sent;
        if (o.injected == fault::reset) {
            settle_once(words_written, "", false);  // cut by the mock, not by the client
            reset_connection();
            co_return next_step::close;
        }
        // stall: nothing more, until the peer gives up or stall_timeout passes.
        // Recorded now, as the client's cancel that normally ends it.
        settle_once(words_written, "", true);
        if (co_await wait_for_peer_close()) ++state_.stats.streams_aborted_by_peer;
        co_return next_step::close;
    }

    co_await sleep_ms(delay_ms);
    body_ += "data: ";
    body_ += chunk_head;
    append_stream_choice(body_, p, "", -1, "\"stop\"");
    body_ += chunk_tail;
    if (!co_await end_event(p, events)) co_return peer_gone();

    settle_once(n, "stop", false);  // before the last bytes: /generation answers once the client saw the end
    const bool send_usage = o.injected != fault::no_usage && (openrouter || p.include_usage);
    if (send_usage) {
        const usage_shape shape = o.shape.value_or(openrouter ? usage_shape::empty : usage_shape::choice);
        co_await sleep_ms(delay_ms);
        body_ += "data: ";
        body_ += chunk_head;
        if (shape == usage_shape::choice) append_stream_choice(body_, p, "", -1, "null");
        body_ += "],\"usage\":";
        append_usage(body_, p, p.counts);
        body_ += '}';
        if (!co_await end_event(p, events)) co_return peer_gone();
    }
    co_await sleep_ms(delay_ms);
    body_ += "data: [DONE]";
    body_ += eol;
    body_ += eol;
    if (!co_await flush_chunk(true)) co_return peer_gone();
    ++state_.stats.streams_completed;
    co_return p.keep_alive ? next_step::keep_alive : next_step::close;
}

awaitable<next_step> connection::embeddings(upstream up, request& req) {
    record_last_request(req);
    const bool keep = req.keep_alive();
    call_plan p;
    p.up = up;
    p.keep_alive = keep;
    p.started = steady_clock::now();
    if (auto r = authenticate(up, req, p.api_key)) co_return co_await send_error(up, *r, keep);
    if (auto r = read_options(req, p.options)) co_return co_await send_error(up, *r, keep);
    mock::embedding_request body;
    std::string error;
    if (!mock::read_embedding(json_, req.body(), body, error)) {
        const rejection rejected{400, error, "invalid_request"};
        co_return co_await send_error(up, rejected, keep);
    }
    if (auto r = resolve_model(up, body.model, body.prompt_tokens, p)) co_return co_await send_error(up, *r, keep);
    if (auto step = co_await pre_response_fault(up, p.options, false, keep)) co_return *step;
    if (p.options.injected != fault::slow_headers) co_await sleep_ms(p.options.delay_ms);

    p.counts.prompt = body.prompt_tokens;
    p.id = up == upstream::openrouter ? new_generation_id() : new_uuid();
    p.call_id = p.id;
    p.created = static_cast<std::int64_t>(std::time(nullptr));
    const std::int64_t cost = mock::token_cost_pico(p.prices, p.counts);

    body_.clear();
    body_ += "{\"object\":\"list\",\"data\":[";
    for (std::size_t i = 0; i < body.input_seeds.size(); ++i) {
        if (i > 0) body_ += ',';
        fmt::format_to(std::back_inserter(body_), "{{\"object\":\"embedding\",\"index\":{},\"embedding\":", i);
        if (body.base64) {
            // float32, little-endian, as the OpenAI SDK decodes it.
            scratch_.clear();
            for (std::int64_t k = 0; k < body.dimensions; ++k) {
                const auto bits = std::bit_cast<std::uint32_t>(mock::embedding_value(body.input_seeds[i], k));
                for (int byte = 0; byte < 4; ++byte) scratch_ += static_cast<char>((bits >> (8 * byte)) & 0xffu);
            }
            body_ += '"';
            mock::append_base64(body_, reinterpret_cast<const unsigned char*>(scratch_.data()), scratch_.size());
            body_ += '"';
        } else {
            body_ += '[';
            for (std::int64_t k = 0; k < body.dimensions; ++k) {
                if (k > 0) body_ += ',';
                // As a double: k/512 printed exactly, the same number the base64 form decodes to.
                fmt::format_to(std::back_inserter(body_), "{}",
                               static_cast<double>(mock::embedding_value(body.input_seeds[i], k)));
            }
            body_ += ']';
        }
        body_ += '}';
    }
    body_ += "],\"model\":";
    mock::append_json_string(body_, p.model);
    if (up == upstream::openrouter) {
        body_ += ",\"id\":";
        mock::append_json_string(body_, p.id);
    }
    fmt::format_to(std::back_inserter(body_), ",\"usage\":{{\"prompt_tokens\":{},\"total_tokens\":{}", p.counts.prompt,
                   p.counts.prompt);
    if (up == upstream::openrouter) {
        body_ += ",\"cost\":";
        mock::append_usd(body_, cost, cost_style_of(p));
        body_ += ",\"is_byok\":false";
    }
    body_ += "}}";
    settle(p, "embeddings", p.counts, cost, "", false);

    begin_head(200);
    add_header("Content-Type", "application/json");
    if (up == upstream::openrouter) {
        add_header("X-Generation-Id", p.id);
    } else {
        add_header("x-litellm-call-id", p.call_id);
        add_header("x-litellm-model-group", p.model);
        scratch_.clear();
        mock::append_usd(scratch_, cost, cost_style_of(p));
        add_header("x-litellm-response-cost", scratch_);
    }
    co_return co_await send(body_, keep);
}

awaitable<next_step> connection::speech(upstream up, request& req) {
    record_last_request(req);
    const bool keep = req.keep_alive();
    call_plan p;
    p.up = up;
    p.keep_alive = keep;
    p.started = steady_clock::now();
    if (auto r = authenticate(up, req, p.api_key)) co_return co_await send_error(up, *r, keep);
    if (auto r = read_options(req, p.options)) co_return co_await send_error(up, *r, keep);
    mock::speech_request body;
    std::string error;
    if (!mock::read_speech(json_, req.body(), body, error)) {
        const rejection rejected{400, error, "invalid_request"};
        co_return co_await send_error(up, rejected, keep);
    }
    const std::int64_t characters = mock::count_tts_characters(body.input);
    if (auto r = resolve_model(up, body.model, characters, p)) co_return co_await send_error(up, *r, keep);
    if (auto step = co_await pre_response_fault(up, p.options, false, keep)) co_return *step;
    if (p.options.injected != fault::slow_headers) co_await sleep_ms(p.options.delay_ms);

    p.id = up == upstream::openrouter ? new_generation_id() : new_uuid();
    p.created = static_cast<std::int64_t>(std::time(nullptr));
    // OpenRouter prices TTS per input character with the model's `prompt`
    // price (upstream-apis.md §1e); the cost is only visible in /generation.
    p.counts.prompt = characters;
    const std::int64_t cost = mock::token_cost_pico(p.prices, p.counts);
    settle(p, "tts", p.counts, cost, "", false);

    body_.clear();
    mock::append_audio_bytes(body_, body.input,
                             std::max<std::size_t>(1, body.input.size()) * speech_bytes_per_input_byte);
    begin_head(200);
    add_header("Content-Type", audio_content_type(body.response_format));
    if (up == upstream::openrouter)
        add_header("X-Generation-Id", p.id);
    else
        add_header("x-litellm-call-id", p.id);  // no cost header on speech (upstream-apis.md §2)
    co_return co_await send(body_, keep);
}

// ---------------------------------------------------------------- accept, signals, main

awaitable<void> session(tcp::socket socket, server_state& state) {
    connection c(std::move(socket), state);
    co_await c.run();
}

awaitable<void> accept_loop(tcp::acceptor& acceptor, server_state& state) {
    for (;;) {
        // Each connection on its own strand: its coroutine and tcp_stream's
        // deadline timer never run at the same time.
        tcp::socket socket(asio::make_strand(acceptor.get_executor()));
        error_code ec;
        co_await acceptor.async_accept(socket, asio::redirect_error(use_awaitable, ec));
        if (ec == asio::error::operation_aborted) co_return;
        if (ec) {  // e.g. out of file descriptors: back off instead of spinning
            asio::steady_timer pause(acceptor.get_executor(), std::chrono::milliseconds(10));
            co_await pause.async_wait(asio::redirect_error(use_awaitable, ec));
            continue;
        }
        if (state.stats.open_connections.load() >= max_connections) {
            socket.close(ec);
            continue;
        }
        socket.set_option(tcp::no_delay(true), ec);
        const auto executor = socket.get_executor();
        asio::co_spawn(executor, session(std::move(socket), state), asio::detached);
    }
}

awaitable<void> stop_on_signal(asio::io_context& ioc) {
    asio::signal_set signals(co_await asio::this_coro::executor, SIGINT, SIGTERM);
    error_code ec;
    co_await signals.async_wait(asio::redirect_error(use_awaitable, ec));
    ioc.stop();
}

constexpr std::string_view usage_text =
    "usage: mock_upstream [--listen 127.0.0.1:0] [--threads N] [--openrouter-models FILE]\n"
    "                     [--litellm-prices FILE] [--litellm-models a,b,c] [--management-key K]\n"
    "                     [--litellm-key K] [--generation-visible-after-ms N]\n";

// Command line to settings; nullopt (after a message) when it is wrong.
std::optional<settings> parse_command_line(int argc, char** argv) {
    settings s;
    for (int i = 1; i < argc; ++i) {
        const std::string_view arg = argv[i];
        if (arg == "--help" || arg == "-h") {
            fmt::print("{}", usage_text);
            std::exit(0);
        }
        constexpr std::array<std::string_view, 8> options = {
            "--listen",         "--threads",        "--openrouter-models", "--litellm-prices",
            "--litellm-models", "--management-key", "--litellm-key",       "--generation-visible-after-ms"};
        if (std::find(options.begin(), options.end(), arg) == options.end()) {
            fmt::print(stderr, "mock_upstream: unknown option {}\n{}", arg, usage_text);
            return std::nullopt;
        }
        if (i + 1 >= argc) {
            fmt::print(stderr, "mock_upstream: {} needs a value\n{}", arg, usage_text);
            return std::nullopt;
        }
        const std::string_view value = argv[++i];
        if (arg == "--listen") {
            s.listen = value;
        } else if (arg == "--threads") {
            const auto n = parse_int(value);
            if (!n || *n < 1 || *n > max_threads) {
                fmt::print(stderr, "mock_upstream: --threads must be 1..{}\n", max_threads);
                return std::nullopt;
            }
            s.threads = static_cast<int>(*n);
        } else if (arg == "--openrouter-models") {
            s.openrouter_models = value;
        } else if (arg == "--litellm-prices") {
            s.litellm_prices = value;
        } else if (arg == "--litellm-models") {
            s.litellm_models.clear();
            std::string_view rest = value;
            while (!rest.empty()) {
                const auto comma = rest.find(',');
                const std::string_view name = rest.substr(0, comma);
                if (!name.empty()) s.litellm_models.emplace_back(name);
                if (comma == std::string_view::npos) break;
                rest.remove_prefix(comma + 1);
            }
            if (s.litellm_models.empty()) {
                fmt::print(stderr, "mock_upstream: --litellm-models needs at least one name\n");
                return std::nullopt;
            }
        } else if (arg == "--management-key") {
            if (value.empty()) {
                fmt::print(stderr, "mock_upstream: --management-key must not be empty\n");
                return std::nullopt;
            }
            s.management_key = value;
        } else if (arg == "--generation-visible-after-ms") {
            const auto ms = parse_int(value);
            if (!ms || *ms < 0 || *ms > max_generation_visible_after_ms) {
                fmt::print(stderr, "mock_upstream: --generation-visible-after-ms must be 0..{}\n",
                           max_generation_visible_after_ms);
                return std::nullopt;
            }
            s.generation_visible_after_ms = *ms;
        } else {  // --litellm-key
            s.litellm_key = std::string(value);
        }
    }
    return s;
}

// "127.0.0.1:0", "[::1]:8080", "localhost:0": loopback only.
std::optional<tcp::endpoint> loopback_endpoint(std::string_view listen) {
    const auto colon = listen.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    std::string_view host = listen.substr(0, colon);
    const auto port = parse_int(listen.substr(colon + 1));
    if (!port || *port < 0 || *port > 65535) return std::nullopt;
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    if (host == "localhost") host = "127.0.0.1";
    error_code ec;
    const auto address = asio::ip::make_address(std::string(host), ec);
    if (ec || !address.is_loopback()) return std::nullopt;
    return tcp::endpoint(address, static_cast<unsigned short>(*port));
}

}  // namespace

int main(int argc, char** argv) {
    const auto config = parse_command_line(argc, argv);
    if (!config) return 2;
    const auto endpoint = loopback_endpoint(config->listen);
    if (!endpoint) {
        fmt::print(stderr, "mock_upstream: --listen {} is not a loopback address:port; this mock binds only loopback\n",
                   config->listen);
        return 2;
    }

    std::unique_ptr<mock::openrouter_catalog> openrouter;
    std::unique_ptr<mock::litellm_catalog> litellm;
    try {
        openrouter = mock::openrouter_catalog::load(config->openrouter_models);
        litellm = mock::litellm_catalog::load(config->litellm_prices, config->litellm_models);
    } catch (const std::exception& e) {
        fmt::print(stderr, "mock_upstream: {}\n", e.what());
        return 1;
    }

    // Declared before the io_context: coroutine frames destroyed with it
    // still reference the state.
    server_state state{*config, *openrouter, *litellm, {}, mock::generation_store(config->generation_visible_after_ms),
                       {},      {},          {}};
    asio::io_context ioc(config->threads);
    tcp::acceptor acceptor(ioc);
    error_code ec;
    acceptor.open(endpoint->protocol(), ec);
    if (!ec) acceptor.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) acceptor.bind(*endpoint, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
        fmt::print(stderr, "mock_upstream: cannot listen on {}: {}\n", config->listen, ec.message());
        return 1;
    }
    const tcp::endpoint bound = acceptor.local_endpoint();
    const std::string host =
        bound.address().is_v6() ? fmt::format("[{}]", bound.address().to_string()) : bound.address().to_string();
    fmt::print("mock_upstream listening on http://{}:{}\n", host, bound.port());
    std::fflush(stdout);

    asio::co_spawn(ioc, accept_loop(acceptor, state), asio::detached);
    asio::co_spawn(ioc, stop_on_signal(ioc), asio::detached);
    std::vector<std::thread> threads;
    for (int i = 1; i < config->threads; ++i) threads.emplace_back([&ioc] { ioc.run(); });
    ioc.run();
    for (auto& t : threads) t.join();
    return 0;
}
