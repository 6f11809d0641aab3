// The hold estimate is a bound for admission: never below the actual charge
// of a text-only, n = 1 request that respects its max_tokens, when the prompt
// is counted with the same tokenizer. Checked over every priced model of the
// 2026-08 catalog (with its overrides at random times) and LiteLLM's map.
#include "tollgate/pricing/catalog.hpp"
#include "tollgate/pricing/cost.hpp"

#include <catch2/catch.hpp>

#include <fstream>
#include <random>
#include <sstream>

using namespace tollgate::pricing;

namespace {

std::string read(const std::string& name) {
    std::ifstream in(std::string(TOLLGATE_FIXTURES_DIR) + "/" + name, std::ios::binary);
    REQUIRE(in);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

const tier_policy& tier(const std::string& id) {
    for (const auto& t : default_tier_policies()) {
        if (t.id == id) return t;
    }
    throw std::runtime_error("no tier " + id);
}

}  // namespace

TEST_CASE("the hold covers the actual charge of any request within its limits", "[pricing][hold]") {
    const auto openrouter = parse_openrouter_models(read("openrouter-models-anuran-roy-2026-08-19-all-modalities.json"));
    const auto litellm = parse_litellm_prices(read("litellm-model-prices.json"));
    REQUIRE(openrouter.status == catalog_status::ok);
    REQUIRE(litellm.status == catalog_status::ok);
    const hold_policy policy;
    std::mt19937_64 rng(7);
    const auto below = [&](std::int64_t n) { return n <= 0 ? 0 : static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(n)); };
    std::int64_t checked = 0, tight = 0;
    for (const auto* c : {openrouter.value.get(), litellm.value.get()}) {
        for (const auto& m : c->models()) {
            if (m.unpriced || !m.base.get(price_key::prompt)) continue;
            for (int round = 0; round < 20; ++round) {
                const std::int64_t prompt = below(300'000);
                hold_request request{.prompt_tokens_counted = prompt};
                if (below(4) != 0) request.max_tokens = below(20'000);
                const std::int64_t limit = request.max_tokens.value_or(
                    std::min(m.max_completion_tokens.value_or(policy.completion_cap_tokens), policy.completion_cap_tokens));
                usage u;
                u.prompt_tokens = prompt;  // the same tokenizer counted it
                u.completion_tokens = below(limit + 1);
                u.cached_tokens = below(prompt + 1);
                u.cache_write_tokens = below(prompt - u.cached_tokens + 1);
                u.reasoning_tokens = below(u.completion_tokens + 1);
                const int hhmm = static_cast<int>(below(24)) * 100 + static_cast<int>(below(60));
                const auto& t = m.free ? tier(below(2) ? "free" : "starter")
                                       : tier(std::vector<std::string>{"starter", "professional", "enterprise"}[below(3)]);
                const auto cost = catalog_cost(m.prices_for(u.prompt_tokens, hhmm), u);
                REQUIRE(cost.status == cost_status::ok);
                const auto actual = price_call(cost.provider_cost_pico, m.free, u.prompt_tokens + u.completion_tokens, t, false);
                const auto hold = hold_estimate(m, request, t, policy);
                INFO(m.id << " prompt " << prompt << " completion " << u.completion_tokens << " at " << hhmm);
                REQUIRE(hold.status == cost_status::ok);
                REQUIRE(hold.hold_micros >= actual.charged_micros);
                ++checked;
                if (actual.charged_micros > 0 && hold.hold_micros <= 2 * actual.charged_micros) ++tight;
            }
        }
    }
    CHECK(checked > 40'000);
    CHECK(tight > 0);  // the bound is not absurdly loose everywhere
}

TEST_CASE("hold estimate: routers at the cap, limits, n, images, bad input", "[pricing][hold]") {
    const auto c = parse_openrouter_models(read("openrouter-models-madviking-2025-05-23.json"));
    REQUIRE(c.status == catalog_status::ok);
    const hold_policy policy;
    const auto& starter = tier("starter");
    CHECK(hold_estimate(*c.value->find("openrouter/auto"), {.prompt_tokens_counted = 10}, starter, policy).hold_micros ==
          1'000'000);

    const model& mini = *c.value->find("openai/gpt-4o-mini");  // 150000 / 600000 pico, max completion 16384
    // prompt 1000 -> 1000 * 1.1 + 16 + 1 = 1117 tokens at the highest input price (150000);
    // 100 completion tokens at 600000; +10% markup; rounded up.
    const auto h = hold_estimate(mini, {.prompt_tokens_counted = 1000, .max_tokens = 100}, starter, policy);
    CHECK(h.hold_micros == (1117LL * 150'000 + 100 * 600'000) * 11 / 10 / 1'000'000 + 1);  // 250.305 -> 251
    // No max_tokens: the model's limit (16384), under the tier cap.
    const auto unlimited = hold_estimate(mini, {.prompt_tokens_counted = 0}, starter, policy);
    CHECK(unlimited.hold_micros == ((17 * 150'000 + 16'384LL * 600'000) * 11 / 10 + 999'999) / 1'000'000);
    // n choices multiply the tokens; images add their price.
    const auto two = hold_estimate(mini, {.prompt_tokens_counted = 1000, .max_tokens = 100, .n = 2}, starter, policy);
    CHECK(two.hold_micros >= 2 * h.hold_micros - 1);
    const auto image = hold_estimate(mini, {.prompt_tokens_counted = 1000, .max_tokens = 100, .input_images = 1},
                                     starter, policy);
    CHECK(image.hold_micros - h.hold_micros >= 217 * 11 / 10 - 1);  // 217000000 pico = 217 micros, +10%
    CHECK(hold_estimate(mini, {.prompt_tokens_counted = -1}, starter, policy).status == cost_status::invalid_usage);
    CHECK(hold_estimate(mini, {.prompt_tokens_counted = 1, .n = 0}, starter, policy).status == cost_status::invalid_usage);
    CHECK(hold_estimate(mini, {.prompt_tokens_counted = max_count + 1}, starter, policy).status ==
          cost_status::out_of_range);
}
