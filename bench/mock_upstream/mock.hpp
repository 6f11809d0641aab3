// mock_upstream's pure parts: exact money, JSON text helpers, the two price
// catalogs, request-body readers and the in-memory stores (keys,
// generations). No Asio here; mock_upstream.cpp owns the network side.
//
// Contracts that hold throughout:
// - Money is integer pico-USD (1e-12 USD), parsed from decimal text and
//   rendered back exactly; a double never touches a price or a cost.
// - Request readers never throw and never crash on hostile input: they
//   return false with a short message meant for a 400 body.
// - string_views a reader hands out point into the json_parser's buffers and
//   stay valid until that parser reads the next body.
// - The stores are thread-safe (one mutex each, held only for map work).
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <unordered_map>
#include <unordered_set>
#include <vector>

namespace mock {

// ---------------------------------------------------------------- money

inline constexpr std::int64_t pico_per_usd = 1'000'000'000'000;
// Largest price, cost or limit accepted ($1,000,000), so sums stay in int64.
inline constexpr std::int64_t max_pico = 1'000'000'000'000'000'000;

enum class price_status : std::uint8_t {
    ok,
    negative,      // "-1": OpenRouter's "priced by the router" sentinel
    invalid,       // not a JSON-style decimal number
    out_of_range,  // above max_pico
};

struct parsed_price {
    price_status status = price_status::invalid;
    std::int64_t pico = 0;
};

// Decimal USD text ("0.00000015", "1.5e-07", "0", "-1") to pico-USD. Digits
// past the 12th decimal round half-up once (as tollgate's pricing does).
parsed_price parse_usd_pico(std::string_view text);

// How a cost is printed. All three are exact renderings of the pico value.
enum class cost_style : std::uint8_t {
    plain,     // 0.000123456 (trailing zeros trimmed; "0" for zero)
    exponent,  // 1.23456e-04 (always exponent form; "0" for zero)
    python,    // what Python's str(float) gives: exponent below 1e-4, "0.0", "1.0"
};
void append_usd(std::string& out, std::int64_t pico, cost_style style);

// count x price, saturating at max_pico (counts are small, prices bounded).
std::int64_t mul_pico(std::int64_t count, std::int64_t price_pico);

// ---------------------------------------------------------------- text

// Appends `text` as a quoted JSON string. Invalid UTF-8 bytes become U+FFFD,
// so the output is always valid JSON.
void append_json_string(std::string& out, std::string_view text);
// Words separated by ASCII whitespace.
std::int64_t count_words(std::string_view text);
// Unicode code points that are not whitespace (Python's str.isspace), the
// way LiteLLM counts TTS characters.
std::int64_t count_tts_characters(std::string_view utf8);
void append_base64(std::string& out, const unsigned char* data, std::size_t size);
void append_iso8601(std::string& out, std::int64_t unix_seconds);  // 2026-08-19T10:30:00Z
bool ascii_iequals(std::string_view a, std::string_view b);

struct string_hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const noexcept { return std::hash<std::string_view>{}(s); }
};
template <class V>
using string_map = std::unordered_map<std::string, V, string_hash, std::equal_to<>>;

// ---------------------------------------------------------------- prices

// Per-unit prices a call is charged with. Absent means "no such charge"
// (cache reads fall back to `prompt`, reasoning to `completion`).
struct token_prices {
    std::optional<std::int64_t> prompt;
    std::optional<std::int64_t> completion;
    std::optional<std::int64_t> request;
    std::optional<std::int64_t> input_cache_read;
    std::optional<std::int64_t> internal_reasoning;
};

// Token counts of one call; cached is part of prompt, reasoning part of
// completion (callers clamp them).
struct token_counts {
    std::int64_t prompt = 0;
    std::int64_t completion = 0;
    std::int64_t cached = 0;
    std::int64_t reasoning = 0;
};

// (prompt-cached) x prompt + cached x input_cache_read + (completion-reasoning)
// x completion + reasoning x internal_reasoning + request.
std::int64_t token_cost_pico(const token_prices& prices, const token_counts& counts);

// ---------------------------------------------------------------- OpenRouter catalog

struct price_override {
    std::optional<std::int64_t> min_prompt_tokens;  // applies when prompt tokens are strictly greater
    std::optional<int> utc_start_hhmm;
    std::optional<int> utc_end_hhmm;  // the window may wrap past midnight
    token_prices prices;              // only the keys the entry sets
};

struct openrouter_model {
    std::string id;
    bool dynamic_price = false;  // priced "-1" (routers): answered as the fallback model
    token_prices base;
    std::vector<price_override> overrides;

    // Base prices with every applicable override laid over them, later wins.
    token_prices prices_for(std::int64_t prompt_tokens, int utc_hhmm) const;
};

// A GET /api/v1/models document: its bytes, served as they are, and the
// prices of every model in it.
class openrouter_catalog {
public:
    // Throws std::runtime_error (startup only) when the file is unreadable
    // or not a models document.
    static std::unique_ptr<openrouter_catalog> load(const std::string& path);

    std::string_view bytes() const { return bytes_; }
    const openrouter_model* find(std::string_view id) const;
    std::size_t size() const { return models_.size(); }

private:
    std::string bytes_;
    string_map<openrouter_model> models_;
};

// ---------------------------------------------------------------- LiteLLM catalog

struct litellm_model {
    std::string name;  // the model group clients send
    token_prices prices;
    std::optional<std::int64_t> input_pico_per_character;
};

// The configured LiteLLM model groups, priced from the LiteLLM price map,
// and the two listing bodies rendered once at load.
class litellm_catalog {
public:
    // Throws std::runtime_error when the file is unreadable or a name is not
    // in the price map.
    static std::unique_ptr<litellm_catalog> load(const std::string& path, const std::vector<std::string>& names);

    const litellm_model* find(std::string_view name) const;
    std::string_view models_json() const { return models_json_; }          // GET /v1/models
    std::string_view model_info_json() const { return model_info_json_; }  // GET /model/info

private:
    std::vector<litellm_model> models_;
    std::string models_json_;
    std::string model_info_json_;
};

// ---------------------------------------------------------------- request bodies

// One simdjson on-demand parser, reused for every body a connection reads.
class json_parser {
public:
    json_parser();
    ~json_parser();
    json_parser(const json_parser&) = delete;
    json_parser& operator=(const json_parser&) = delete;
    struct impl;
    impl& get() { return *impl_; }

private:
    std::unique_ptr<impl> impl_;
};

enum class completion_kind : std::uint8_t { chat, text };  // /chat/completions, /completions

struct completion_request {
    std::string_view model;
    bool stream = false;
    bool include_usage = false;              // stream_options.include_usage
    std::optional<std::int64_t> max_tokens;  // max_completion_tokens, else max_tokens
    // Words of every message's text (or of `prompt`) plus 3 per message, >= 1.
    std::int64_t prompt_tokens = 1;
};

struct embedding_request {
    std::string_view model;
    bool base64 = false;
    std::int64_t dimensions = 8;
    std::vector<std::uint64_t> input_seeds;  // one per input, from its content
    std::int64_t prompt_tokens = 0;          // words (or tokens) per input, >= 1 each
};

struct speech_request {
    std::string_view model;
    std::string_view input;
    std::string_view voice;
    std::string_view response_format = "mp3";
};

// The fields of POST /keys and PATCH /keys/{hash}. Outer optional: present
// in the body; inner optional: null.
struct key_fields {
    std::optional<std::string_view> name;
    std::optional<std::optional<std::int64_t>> limit_pico;
    std::optional<std::optional<std::string_view>> limit_reset;
    std::optional<bool> include_byok_in_limit;
    std::optional<std::optional<std::string_view>> expires_at;
    std::optional<bool> disabled;
};

inline constexpr std::int64_t max_embedding_inputs = 2048;
inline constexpr std::int64_t max_embedding_dimensions = 3072;
inline constexpr std::int64_t max_embedding_floats = 1 << 21;  // inputs x dimensions
inline constexpr std::int64_t max_speech_characters = 4096;

// Each reader pads `body` in place for simdjson (capacity only) and fills
// `out`; on false, `error` says what is wrong.
bool read_completion(json_parser& parser, std::string& body, completion_kind kind, completion_request& out,
                     std::string& error);
bool read_embedding(json_parser& parser, std::string& body, embedding_request& out, std::string& error);
bool read_speech(json_parser& parser, std::string& body, speech_request& out, std::string& error);
bool read_key_fields(json_parser& parser, std::string& body, key_fields& out, std::string& error);

// `size` deterministic bytes derived from `input` (the mock's "audio").
void append_audio_bytes(std::string& out, std::string_view input, std::size_t size);

// The deterministic embedding value of component `index` for an input's seed:
// k/512 for k in [-512, 512], exact in float32 and in decimal.
float embedding_value(std::uint64_t seed, std::int64_t index);

// ---------------------------------------------------------------- stores

// OpenRouter keys: created ones (POST /keys) with their limits, and the usage
// of every inference key seen. `usage` only grows while the mock runs.
class key_store {
public:
    enum class admission : std::uint8_t { ok, disabled, limit_exceeded };
    static constexpr std::size_t max_ad_hoc_keys = 100'000;  // inference keys tracked without POST /keys

    key_store();

    admission admit(std::string_view key) const;
    void charge(std::string_view key, std::int64_t cost_pico);

    // Each appends a JSON response body; false when `hash` is unknown.
    void create(const key_fields& fields, std::string& out);  // {"data":{…},"key":"sk-or-v1-…"}
    bool get(std::string_view hash, std::string& out) const;  // {"data":{…}}
    bool patch(std::string_view hash, const key_fields& fields, std::string& out);
    bool remove(std::string_view hash);
    void list(bool include_disabled, std::size_t offset, std::string& out) const;  // {"data":[…]}, 100 a page
    void current(std::string_view key, bool management, std::string& out) const;   // GET /key
    std::int64_t total_usage_pico() const;

private:
    struct record {
        std::string key;
        std::string hash;
        std::string name;
        bool managed = false;  // created by POST /keys (listed, limits, hash)
        bool disabled = false;
        std::optional<std::int64_t> limit_pico;
        std::optional<std::string> limit_reset;
        bool include_byok_in_limit = false;
        std::optional<std::string> expires_at;
        std::int64_t usage_pico = 0;
        std::int64_t created_unix = 0;
        std::optional<std::int64_t> updated_unix;
    };
    void render(const record& r, std::string& out) const;
    static std::string label_of(std::string_view key);

    mutable std::mutex mu_;
    string_map<record> by_key_;
    string_map<std::string> key_by_hash_;
    std::vector<std::string> created_order_;  // hashes, oldest first
    std::size_t ad_hoc_count_ = 0;
    std::int64_t total_usage_pico_ = 0;
    std::mt19937_64 rng_;
};

struct generation_record {
    std::string id;
    std::string model;
    std::string_view api_type;       // "completions" | "embeddings" | "tts"
    std::string_view finish_reason;  // "stop" | "error" | "" (none)
    std::int64_t cost_pico = 0;
    token_counts tokens;
    std::int64_t created_unix = 0;
    std::int64_t latency_ms = 0;
    std::int64_t recorded_ms = 0;  // a steady clock in ms, when add() was called (for visible_after_ms)
    bool streamed = false;
    bool cancelled = false;  // the client closed the stream before its end
};

// The last `capacity` generations served, for GET /api/v1/generation?id=.
// A generation becomes visible `visible_after_ms` after it was recorded, as
// OpenRouter's /generation is briefly 404 right after a call (eventual
// consistency); 0 makes it visible at once.
class generation_store {
public:
    static constexpr std::size_t capacity = 10'000;
    explicit generation_store(std::int64_t visible_after_ms = 0) : visible_after_ms_(visible_after_ms) {}
    void add(generation_record record);
    // {"data":{…}}; false when `id` is unknown or was recorded less than
    // visible_after_ms before `now_ms` (same clock as recorded_ms).
    bool render(std::string_view id, std::int64_t now_ms, std::string& out) const;

private:
    const std::int64_t visible_after_ms_;
    mutable std::mutex mu_;
    std::vector<generation_record> ring_;
    std::size_t next_ = 0;
    string_map<std::size_t> index_;
};

// ---------------------------------------------------------------- management-route faults

// What POST /mock/management-faults arms for the next requests to the
// OpenRouter management routes (/keys, /keys/{hash}, /credits, /generation).
enum class management_fault : std::uint8_t {
    none,
    status_500,
    status_502,
    status_503,
    status_429,
    status_401,
    status_402,
    stall,  // read the request, never answer
    slow,   // answer normally after delay_ms
    reset,  // close without answering
};
// "500", "502", "503", "429", "401", "402", "stall", "slow", "reset", "none".
std::optional<management_fault> parse_management_fault(std::string_view name);
std::string_view management_fault_name(management_fault fault);

struct armed_fault {
    management_fault kind = management_fault::none;
    std::int64_t count = 0;     // requests still to get `kind`
    std::int64_t delay_ms = 0;  // slow only
};

// The one pending management fault, shared by every connection thread.
// arm() replaces whatever was pending; take() hands one request its fault.
class management_faults {
public:
    static constexpr std::int64_t max_count = 1000;
    static constexpr std::int64_t default_slow_ms = 2000;

    // Kind none or count <= 0 clears. Counts above max_count are clamped.
    void arm(armed_fault fault);
    // The fault for one request (count 1), counting the pending one down;
    // kind none (count 0) when nothing is pending.
    armed_fault take();
    armed_fault pending() const;

private:
    mutable std::mutex mu_;
    armed_fault armed_;
};

}  // namespace mock
