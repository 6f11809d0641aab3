// What a call cost: provider cost from the catalog (or the upstream's own
// figure), the tier's markup, and the one rounding to a micro-USD charge
// (SPEC section 2). Integer arithmetic only.
#pragma once

#include "tollgate/pricing/catalog.hpp"

#include <cstdint>
#include <string>
#include <vector>

namespace tollgate::pricing {

// Token and unit counts as the upstream reports them. cached and cache_write
// are parts of prompt_tokens; reasoning is part of completion_tokens.
struct usage {
    std::int64_t prompt_tokens = 0;
    std::int64_t completion_tokens = 0;
    std::int64_t cached_tokens = 0;
    std::int64_t cache_write_tokens = 0;
    std::int64_t reasoning_tokens = 0;
    std::int64_t web_search_calls = 0;
    std::int64_t input_images = 0;
};

// The accepted range of a count; beyond it a cost is `out_of_range`.
inline constexpr std::int64_t max_count = 1'000'000'000;

enum class cost_status : std::uint8_t {
    ok,
    invalid_usage,  // negative counts, or parts larger than their whole
    unpriced,       // the prices are unknown ("-1") or lack prompt/completion
    out_of_range,   // a count above max_count or a cost above max_pico
};
std::string_view to_string(cost_status status);

struct cost_result {
    cost_status status = cost_status::ok;
    std::int64_t provider_cost_pico = 0;
};

// cost = (prompt - cached - cache_write) x prompt + cached x input_cache_read
//      + cache_write x input_cache_write + (completion - reasoning) x completion
//      + reasoning x internal_reasoning + request + web_search x calls
//      + image x input images.
// Absent cache keys fall back to `prompt`, absent internal_reasoning to
// `completion`, the rest to zero.
cost_result catalog_cost(const price_table& prices, const usage& u);

// TTS (SPEC 2): `characters` (count_tts_characters of the request's
// `input`) x the model's per-character price, plus its per-request price.
// `unpriced` for a model without a per-character price.
cost_result tts_cost(const model& m, std::int64_t characters);

// A tier's pricing policy (SPEC section 3), as data an admin may override.
struct tier_policy {
    std::string id;
    bool free_models_only = false;
    std::int64_t markup_paid_bps = 0;               // on paid models, basis points of the provider cost
    std::int64_t markup_free_micros_per_token = 0;  // flat, on free models
    std::int64_t monthly_credits_micros = 0;
    std::int64_t price_micros = 0;
    int rollover_percent = 0;
    std::int64_t default_overage_limit_micros = 0;
    bool byok_available = false;
};
// The SPEC section 3 defaults: free, starter, professional, enterprise.
const std::vector<tier_policy>& default_tier_policies();

struct charge {
    cost_status status = cost_status::ok;
    std::int64_t provider_cost_pico = 0;
    std::int64_t markup_pico = 0;
    std::int64_t charged_micros = 0;        // round_half_up((cost + markup) / 1e6): what moves money
    std::int64_t provider_cost_micros = 0;  // each rounded on its own, for reporting
    std::int64_t markup_micros = 0;
};

// Markup and charge for a call whose provider cost is known. `byok` calls
// carry no markup (and the ledger charges them 0).
charge price_call(std::int64_t provider_cost_pico, bool model_free, std::int64_t total_tokens,
                  const tier_policy& tier, bool byok);

// The hold estimate (SPEC section 5): the most a request can cost before it
// runs, for admission. A bound, not a cap: the actual cost is charged even
// above it (SPEC section 3).
struct hold_request {
    std::int64_t prompt_tokens_counted = 0;     // counted by tollgate (o200k), before the margin
    std::optional<std::int64_t> max_tokens;     // max_tokens / max_completion_tokens, if the client set one
    std::int64_t n = 1;                         // choices
    std::int64_t input_images = 0;
};

struct hold_policy {
    int prompt_margin_percent = 10;            // the upstream counts with the model's own tokenizer
    std::int64_t prompt_margin_tokens = 16;    // and adds its chat framing
    std::int64_t completion_cap_tokens = 32'768;  // a tier setting: bound when the client sets no max_tokens
    std::int64_t router_cap_micros = 1'000'000;   // routers priced "-1": held at this cap ($1)
};

struct hold_result {
    cost_status status = cost_status::ok;
    std::int64_t hold_micros = 0;  // rounded up: a bound
};

// For an unpriced (router) model the hold is the router cap; for others the
// highest price any override can reach is used for every key, so the bound
// holds at any time of day and any prompt size within the margin.
hold_result hold_estimate(const model& m, const hold_request& request, const tier_policy& tier,
                          const hold_policy& policy);

}  // namespace tollgate::pricing
