// Catalog cost, markup and charge: worked examples, then seeded property
// tests (100,000+ cases) against an int128 reference.
#include "tollgate/pricing/cost.hpp"

#include <catch2/catch.hpp>

#include <random>

using namespace tollgate::pricing;

namespace {

const tier_policy& tier(const char* id) {
    for (const auto& t : default_tier_policies()) {
        if (t.id == id) return t;
    }
    FAIL("no tier " << id);
    throw;
}

price_table table(std::int64_t prompt, std::int64_t completion) {
    price_table p;
    p.set(price_key::prompt, prompt);
    p.set(price_key::completion, completion);
    return p;
}

}  // namespace

TEST_CASE("catalog cost follows the SPEC formula with its fallbacks", "[pricing][cost]") {
    // gpt-4o-mini, 2025-05: prompt 150000, completion 600000, cache read 75000.
    auto p = table(150'000, 600'000);
    p.set(price_key::input_cache_read, 75'000);
    const usage u{.prompt_tokens = 1000, .completion_tokens = 200, .cached_tokens = 400};
    // 600 x 150000 + 400 x 75000 + 200 x 600000
    CHECK(catalog_cost(p, u).provider_cost_pico == 90'000'000 + 30'000'000 + 120'000'000);

    // Absent cache-write and reasoning keys fall back to prompt and completion.
    const usage u2{.prompt_tokens = 100, .completion_tokens = 50, .cache_write_tokens = 10, .reasoning_tokens = 20};
    CHECK(catalog_cost(table(3, 7), u2).provider_cost_pico == 100 * 3 + 50 * 7);
    auto p3 = table(3, 7);
    p3.set(price_key::input_cache_write, 5);
    p3.set(price_key::internal_reasoning, 11);
    p3.set(price_key::request, 1000);
    p3.set(price_key::web_search, 100);
    p3.set(price_key::image, 40);
    const usage u3{.prompt_tokens = 100, .completion_tokens = 50, .cache_write_tokens = 10, .reasoning_tokens = 20,
                   .web_search_calls = 2, .input_images = 3};
    CHECK(catalog_cost(p3, u3).provider_cost_pico == 90 * 3 + 10 * 5 + 30 * 7 + 20 * 11 + 1000 + 2 * 100 + 3 * 40);

    price_table unknown = table(1, 1);
    unknown.has_unknown = true;
    CHECK(catalog_cost(unknown, u).status == cost_status::unpriced);
    price_table half;
    half.set(price_key::prompt, 1);
    CHECK(catalog_cost(half, u).status == cost_status::unpriced);
    CHECK(catalog_cost(p, {.prompt_tokens = 10, .cached_tokens = 11}).status == cost_status::invalid_usage);
    CHECK(catalog_cost(p, {.completion_tokens = 1, .reasoning_tokens = 2}).status == cost_status::invalid_usage);
    CHECK(catalog_cost(p, {.prompt_tokens = -1}).status == cost_status::invalid_usage);
    CHECK(catalog_cost(p, {.prompt_tokens = max_count + 1}).status == cost_status::out_of_range);
    CHECK(catalog_cost(table(max_pico, 0), {.prompt_tokens = 2}).status == cost_status::out_of_range);
}

TEST_CASE("markup and charge by tier", "[pricing][cost]") {
    // Paid model, $0.01 provider cost.
    const std::int64_t cost = 10'000'000'000;
    CHECK(price_call(cost, false, 100, tier("starter"), false).markup_pico == 1'000'000'000);  // 10%
    CHECK(price_call(cost, false, 100, tier("starter"), false).charged_micros == 11'000);
    CHECK(price_call(cost, false, 100, tier("professional"), false).charged_micros == 10'500);  // 5%
    CHECK(price_call(cost, false, 100, tier("enterprise"), false).charged_micros == 10'000);
    CHECK(price_call(cost, false, 100, tier("professional"), true).markup_pico == 0);  // BYOK
    // Free model: the free tier pays 1 micro per token; starter pays nothing.
    CHECK(price_call(0, true, 1234, tier("free"), false).charged_micros == 1234);
    CHECK(price_call(0, true, 1234, tier("starter"), false).charged_micros == 0);
    // Half-up once on the sum: 0.4 + 0.1 micro rounds to 1, though each alone rounds to 0.
    const auto c = price_call(400'000, false, 1, {.markup_paid_bps = 2500}, false);
    CHECK(c.markup_pico == 100'000);
    CHECK(c.charged_micros == 1);
    CHECK(c.provider_cost_micros == 0);
    CHECK(c.markup_micros == 0);
    // Markup rounds half-up to a pico: 3 x 5% = 0.15 -> 0; 10 x 5% = 0.5 -> 1.
    CHECK(price_call(3, false, 1, tier("professional"), false).markup_pico == 0);
    CHECK(price_call(10, false, 1, tier("professional"), false).markup_pico == 1);
    CHECK(price_call(-1, false, 1, tier("starter"), false).status == cost_status::invalid_usage);
    CHECK(price_call(max_pico + 1, false, 1, tier("starter"), false).status == cost_status::out_of_range);
}

TEST_CASE("property: 100,000 random calls agree with an int128 reference", "[pricing][cost]") {
    std::mt19937_64 rng(42);
    auto below = [&](std::int64_t n) { return static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(n)); };
    const price_key optional_keys[] = {price_key::input_cache_read, price_key::input_cache_write,
                                       price_key::internal_reasoning, price_key::request, price_key::web_search,
                                       price_key::image};
    int out_of_range = 0;
    for (int i = 0; i < 100'000; ++i) {
        INFO("case " << i);
        // Prices up to $0.1 per unit (1e11 pico), occasionally huge.
        const std::int64_t price_cap = below(50) == 0 ? max_pico : 100'000'000'000;
        price_table p = table(below(price_cap), below(price_cap));
        for (const auto k : optional_keys) {
            if (below(2) == 0) p.set(k, below(price_cap));
        }
        usage u;
        u.prompt_tokens = below(2'000'000);
        u.completion_tokens = below(200'000);
        u.cached_tokens = u.prompt_tokens ? below(u.prompt_tokens + 1) : 0;
        u.cache_write_tokens = below(u.prompt_tokens - u.cached_tokens + 1);
        u.reasoning_tokens = below(u.completion_tokens + 1);
        u.web_search_calls = below(5);
        u.input_images = below(5);

        auto get = [&](price_key k, std::optional<std::int64_t> fallback) -> int128 {
            const auto v = p.get(k);
            return v ? *v : fallback.value_or(0);
        };
        const auto pr = p.get(price_key::prompt), co = p.get(price_key::completion);
        const int128 want = (int128)(u.prompt_tokens - u.cached_tokens - u.cache_write_tokens) * *pr +
                              (int128)u.cached_tokens * get(price_key::input_cache_read, pr) +
                              (int128)u.cache_write_tokens * get(price_key::input_cache_write, pr) +
                              (int128)(u.completion_tokens - u.reasoning_tokens) * *co +
                              (int128)u.reasoning_tokens * get(price_key::internal_reasoning, co) +
                              get(price_key::request, std::nullopt) +
                              (int128)u.web_search_calls * get(price_key::web_search, std::nullopt) +
                              (int128)u.input_images * get(price_key::image, std::nullopt);
        const auto got = catalog_cost(p, u);
        if (want > max_pico) {
            REQUIRE(got.status == cost_status::out_of_range);
            ++out_of_range;
            continue;
        }
        REQUIRE(got.status == cost_status::ok);
        REQUIRE((int128)got.provider_cost_pico == want);

        // Markup: half-up to a pico, monotone in the cost; charge: half-up once.
        const std::int64_t bps = below(10'001);
        const tier_policy t{.markup_paid_bps = bps};
        const auto c = price_call(got.provider_cost_pico, false, 0, t, false);
        REQUIRE(c.status == cost_status::ok);
        const int128 want_markup = ((int128)got.provider_cost_pico * bps * 2 + 10'000) / 20'000;
        REQUIRE((int128)c.markup_pico == want_markup);
        const int128 total = (int128)c.provider_cost_pico + c.markup_pico;
        REQUIRE((int128)c.charged_micros == (total * 2 + 1'000'000) / 2'000'000);
        REQUIRE(c.charged_micros * 1'000'000 - total <= 500'000);
        REQUIRE(total - c.charged_micros * 1'000'000 < 500'000);
        if (got.provider_cost_pico > 0) {
            const auto smaller = price_call(got.provider_cost_pico - 1, false, 0, t, false);
            REQUIRE(smaller.markup_pico <= c.markup_pico);
            REQUIRE(smaller.charged_micros <= c.charged_micros);
        }
        // The free tier on a free model: exactly one micro per token.
        const std::int64_t tokens = u.prompt_tokens + u.completion_tokens;
        REQUIRE(price_call(0, true, tokens, tier("free"), false).charged_micros == tokens);
    }
    CHECK(out_of_range > 0);  // the huge prices reached the named error
}
