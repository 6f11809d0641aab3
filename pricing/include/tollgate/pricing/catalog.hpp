// The model catalog: what each upstream model costs, parsed exactly from
// OpenRouter's `GET /models` answer. Immutable once built; the proxy swaps
// whole catalogs (a shared_ptr<const catalog>), so readers never see half of
// one.
#pragma once

#include "tollgate/pricing/money.hpp"

#include <array>
#include <mutex>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

namespace tollgate::pricing {

// Every price key of OpenRouter's `pricing` object, in USD per unit.
enum class price_key : std::uint8_t {
    prompt,
    completion,
    request,
    image,
    image_token,
    image_output,
    web_search,
    internal_reasoning,
    input_cache_read,
    input_cache_write,
    input_cache_write_1h,
    audio,
    audio_output,
    input_audio_cache,
};
inline constexpr std::size_t price_key_count = 14;
std::string_view to_string(price_key key);
std::optional<price_key> parse_price_key(std::string_view text);

// Prices in pico-USD per unit. Absent keys are nullopt ("no such charge"),
// which is not the same as a declared zero.
struct price_table {
    std::array<std::optional<std::int64_t>, price_key_count> pico{};
    bool has_unknown = false;  // some key was negative ("-1"): priced by the router

    std::optional<std::int64_t> get(price_key k) const { return pico[static_cast<std::size_t>(k)]; }
    void set(price_key k, std::int64_t value) { pico[static_cast<std::size_t>(k)] = value; }
};

// A `pricing.overrides` entry: its prices replace the base prices key by key
// when every condition it names holds.
struct price_override {
    std::optional<std::int64_t> min_prompt_tokens;  // applies when prompt tokens > this
    std::optional<int> utc_start_hhmm;              // applies when start <= t < end (may wrap midnight)
    std::optional<int> utc_end_hhmm;
    price_table prices;
};

struct model {
    std::string id;
    std::string name;
    std::optional<std::int64_t> context_length;
    std::optional<std::int64_t> max_completion_tokens;  // top_provider's; often null
    std::vector<std::string> input_modalities;
    std::vector<std::string> output_modalities;
    price_table base;
    std::vector<price_override> overrides;
    // TTS (LiteLLM's input_cost_per_character): pico-USD per non-whitespace
    // code point of the input text.
    std::optional<std::int64_t> input_pico_per_character;
    bool free = false;      // SPEC 3: ":free", or all prices zero on a text/embeddings model
    bool unpriced = false;  // SPEC 3: "-1", missing prompt/completion, or zero prices on a per-unit model

    // The prices that apply to a call with `prompt_tokens` at `utc_hhmm`
    // (0..2359): base prices with every applicable override laid over them,
    // one key at a time, later entries winning.
    price_table prices_for(std::int64_t prompt_tokens, int utc_hhmm) const;
};

class catalog {
public:
    catalog(std::vector<model> models, std::string content_hash);
    const model* find(std::string_view id) const;
    const std::vector<model>& models() const { return models_; }
    // Hash of the text the catalog was parsed from; usage events record it so
    // every catalog-priced debit can be explained later.
    const std::string& content_hash() const { return content_hash_; }

private:
    std::vector<model> models_;
    std::unordered_map<std::string_view, std::size_t> by_id_;
    std::string content_hash_;
};

enum class catalog_status : std::uint8_t {
    ok,
    invalid_json,
    missing_data,   // no `data` array
    invalid_model,  // a model without id or with a malformed price (message names it)
};
std::string_view to_string(catalog_status status);

struct catalog_result {
    catalog_status status = catalog_status::ok;
    std::string message;
    std::shared_ptr<const catalog> value;
};

// Parses an OpenRouter `/models` answer ({"data": [model, ...]}).
catalog_result parse_openrouter_models(std::string_view json);

// Parses LiteLLM's `model_prices_and_context_window.json` shape: an object of
// model name -> {input_cost_per_token, output_cost_per_token, ...} with JSON
// numbers (read exactly from their text). `*_above_<N>k_tokens` prices become
// overrides with min_prompt_tokens N*1000; `sample_spec` and other non-model
// entries are skipped.
catalog_result parse_litellm_prices(std::string_view json);

// The snapshots shipped inside the binary (pricing/data/): the fallback when
// the upstreams' live lists cannot be reached.
std::string_view bundled_openrouter_models();
std::string_view bundled_litellm_prices();

// Unicode code points of `utf8` that are not whitespace in Python's
// str.isspace sense (how LiteLLM counts TTS characters). An invalid byte
// counts as one character.
std::int64_t count_tts_characters(std::string_view utf8);

// The live catalog: replaced whole by a refresh, read without ever seeing
// half of one. Readers hold their snapshot as long as they need it. A
// refresh parses outside; the lock covers only the pointer exchange (a
// reference-count increment for readers), so readers never wait on a
// refresh. (libstdc++ 12's atomic<shared_ptr> does the same with a lock bit
// that ThreadSanitizer cannot see; a mutex it can.)
class catalog_store {
public:
    explicit catalog_store(std::shared_ptr<const catalog> initial) : current_(std::move(initial)) {}
    std::shared_ptr<const catalog> get() const {
        std::lock_guard lock(mu_);
        return current_;
    }
    void replace(std::shared_ptr<const catalog> next) {
        std::lock_guard lock(mu_);
        current_.swap(next);
        // `next` (the old catalog) is released after the lock, by the last reader holding it.
    }

private:
    mutable std::mutex mu_;
    std::shared_ptr<const catalog> current_;
};

}  // namespace tollgate::pricing
