#include "tollgate/pricing/cost.hpp"

#include <algorithm>
#include <initializer_list>

namespace tollgate::pricing {

namespace {

using wide = int128;  // sums of products of int64s: exact, checked once at the end

bool in_range(std::int64_t n) { return n >= 0 && n <= max_count; }

wide price_or(const price_table& p, price_key key, std::optional<std::int64_t> fallback) {
    const auto v = p.get(key);
    return v ? *v : fallback.value_or(0);
}

}  // namespace

std::string_view to_string(cost_status status) {
    switch (status) {
        case cost_status::ok: return "ok";
        case cost_status::invalid_usage: return "invalid_usage";
        case cost_status::unpriced: return "unpriced";
        case cost_status::out_of_range: return "out_of_range";
    }
    return "unknown";
}

cost_result catalog_cost(const price_table& prices, const usage& u) {
    if (u.prompt_tokens < 0 || u.completion_tokens < 0 || u.cached_tokens < 0 || u.cache_write_tokens < 0 ||
        u.reasoning_tokens < 0 || u.web_search_calls < 0 || u.input_images < 0) {
        return {cost_status::invalid_usage, 0};
    }
    if (!in_range(u.prompt_tokens) || !in_range(u.completion_tokens) || !in_range(u.web_search_calls) ||
        !in_range(u.input_images)) {
        return {cost_status::out_of_range, 0};
    }
    if (u.cached_tokens + u.cache_write_tokens > u.prompt_tokens || u.reasoning_tokens > u.completion_tokens) {
        return {cost_status::invalid_usage, 0};
    }
    const auto prompt = prices.get(price_key::prompt);
    const auto completion = prices.get(price_key::completion);
    if (prices.has_unknown || !prompt || !completion) return {cost_status::unpriced, 0};

    const wide cost = wide(u.prompt_tokens - u.cached_tokens - u.cache_write_tokens) * *prompt +
                      wide(u.cached_tokens) * price_or(prices, price_key::input_cache_read, prompt) +
                      wide(u.cache_write_tokens) * price_or(prices, price_key::input_cache_write, prompt) +
                      wide(u.completion_tokens - u.reasoning_tokens) * *completion +
                      wide(u.reasoning_tokens) * price_or(prices, price_key::internal_reasoning, completion) +
                      price_or(prices, price_key::request, std::nullopt) +
                      wide(u.web_search_calls) * price_or(prices, price_key::web_search, std::nullopt) +
                      wide(u.input_images) * price_or(prices, price_key::image, std::nullopt);
    if (cost > max_pico) return {cost_status::out_of_range, 0};
    return {cost_status::ok, static_cast<std::int64_t>(cost)};
}

cost_result tts_cost(const model& m, std::int64_t characters) {
    if (characters < 0) return {cost_status::invalid_usage, 0};
    if (characters > max_count) return {cost_status::out_of_range, 0};
    if (!m.input_pico_per_character) return {cost_status::unpriced, 0};
    const wide cost = wide(characters) * *m.input_pico_per_character + m.base.get(price_key::request).value_or(0);
    if (cost > max_pico) return {cost_status::out_of_range, 0};
    return {cost_status::ok, static_cast<std::int64_t>(cost)};
}

const std::vector<tier_policy>& default_tier_policies() {
    static const std::vector<tier_policy> tiers = {
        {"free", true, 0, 1, 10'000'000, 0, 0, 0, false},
        {"starter", false, 1000, 0, 30'000'000, 30'000'000, 0, 0, false},
        {"professional", false, 500, 0, 50'000'000, 50'000'000, 25, 0, true},
        {"enterprise", false, 0, 0, 100'000'000, 99'000'000, 100, 100'000'000, true},
    };
    return tiers;
}

charge price_call(std::int64_t provider_cost_pico, bool model_free, std::int64_t total_tokens,
                  const tier_policy& tier, bool byok) {
    if (provider_cost_pico < 0 || total_tokens < 0) return {cost_status::invalid_usage};
    if (provider_cost_pico > max_pico || total_tokens > 2 * max_count) return {cost_status::out_of_range};
    wide markup = 0;
    if (!byok) {
        if (model_free) {
            markup = wide(total_tokens) * tier.markup_free_micros_per_token * pico_per_micro;
        } else {
            // bps / 10000 of the cost, rounded half-up to a pico.
            markup = (wide(provider_cost_pico) * tier.markup_paid_bps + 5000) / 10000;
        }
    }
    if (markup > max_pico) return {cost_status::out_of_range};
    charge c;
    c.provider_cost_pico = provider_cost_pico;
    c.markup_pico = static_cast<std::int64_t>(markup);
    c.charged_micros = pico_to_micros_half_up(c.provider_cost_pico + c.markup_pico);
    c.provider_cost_micros = pico_to_micros_half_up(c.provider_cost_pico);
    c.markup_micros = pico_to_micros_half_up(c.markup_pico);
    return c;
}

hold_result hold_estimate(const model& m, const hold_request& request, const tier_policy& tier,
                          const hold_policy& policy) {
    if (request.prompt_tokens_counted < 0 || request.n < 1 || request.input_images < 0 ||
        (request.max_tokens && *request.max_tokens < 0)) {
        return {cost_status::invalid_usage, 0};
    }
    if (request.prompt_tokens_counted > max_count || request.n > 128 || request.input_images > max_count ||
        (request.max_tokens && *request.max_tokens > max_count)) {
        return {cost_status::out_of_range, 0};
    }
    if (m.unpriced) return {cost_status::ok, policy.router_cap_micros};

    // The highest price each key can reach, over the base and every override.
    price_table top = m.base;
    for (const auto& o : m.overrides) {
        for (std::size_t k = 0; k < price_key_count; ++k) {
            if (o.prices.pico[k] && (!top.pico[k] || *o.prices.pico[k] > *top.pico[k])) top.pico[k] = o.prices.pico[k];
        }
    }
    const auto highest = [&](std::initializer_list<price_key> keys) {
        std::int64_t best = 0;
        for (const auto k : keys) best = std::max(best, top.get(k).value_or(0));
        return wide(best);
    };
    const wide prompt_tokens = wide(request.prompt_tokens_counted) * (100 + policy.prompt_margin_percent) / 100 +
                               policy.prompt_margin_tokens + 1;
    std::int64_t completion_tokens = policy.completion_cap_tokens;
    if (request.max_tokens) {
        completion_tokens = *request.max_tokens;
    } else if (m.max_completion_tokens) {
        completion_tokens = std::min(*m.max_completion_tokens, policy.completion_cap_tokens);
    }
    // Cached and cache-write tokens can cost more than plain prompt tokens
    // (cache writes do), reasoning more than completion: take the highest.
    const wide per_choice =
        prompt_tokens * highest({price_key::prompt, price_key::input_cache_read, price_key::input_cache_write,
                                 price_key::input_cache_write_1h}) +
        wide(completion_tokens) * highest({price_key::completion, price_key::internal_reasoning});
    const wide cost = per_choice * request.n + highest({price_key::request}) +
                      wide(request.input_images) * highest({price_key::image});
    if (cost > max_pico) return {cost_status::out_of_range, 0};
    const wide tokens = (prompt_tokens + completion_tokens) * request.n;
    if (tokens > 2 * wide(max_count)) return {cost_status::out_of_range, 0};
    const auto priced = price_call(static_cast<std::int64_t>(cost), m.free, static_cast<std::int64_t>(tokens), tier,
                                   false);
    if (priced.status != cost_status::ok) return {priced.status, 0};
    // Round up: the hold must cover the charge, which rounds half-up.
    const std::int64_t total = priced.provider_cost_pico + priced.markup_pico;
    return {cost_status::ok, (total + pico_per_micro - 1) / pico_per_micro};
}

}  // namespace tollgate::pricing
