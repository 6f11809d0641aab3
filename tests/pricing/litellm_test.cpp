// LiteLLM's price map: every model of the fixture, exact prices from JSON
// number text (checked against the file), above-N-tokens tiers, TTS.
#include "tollgate/pricing/catalog.hpp"
#include "tollgate/pricing/cost.hpp"

#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

using namespace tollgate::pricing;

namespace {

std::shared_ptr<const catalog> load_litellm() {
    std::ifstream in(std::string(TOLLGATE_FIXTURES_DIR) + "/litellm-model-prices.json", std::ios::binary);
    REQUIRE(in);
    std::stringstream s;
    s << in.rdbuf();
    auto r = parse_litellm_prices(s.str());
    INFO(r.message);
    REQUIRE(r.status == catalog_status::ok);
    return r.value;
}

std::int64_t price(const catalog& c, const char* id, price_key key) {
    const model* m = c.find(id);
    INFO(id);
    REQUIRE(m);
    REQUIRE(m->base.get(key));
    return *m->base.get(key);
}

}  // namespace

TEST_CASE("LiteLLM: every model parses, non-models are skipped", "[pricing][litellm]") {
    const auto c = load_litellm();
    std::size_t free = 0, unpriced = 0, tiered = 0;
    for (const auto& m : c->models()) {
        free += m.free;
        unpriced += m.unpriced;
        tiered += !m.overrides.empty();
    }
    // Counted from the file by an independent script (Python, Decimal).
    CHECK(c->models().size() == 2982);
    CHECK(free == 95);
    CHECK(unpriced == 490);
    CHECK(tiered == 111);
    CHECK_FALSE(c->find("sample_spec"));
    CHECK_FALSE(c->find("fallback_generalizations"));
}

TEST_CASE("LiteLLM: exact prices from number text, tiers above N tokens, TTS", "[pricing][litellm]") {
    const auto c = load_litellm();
    CHECK(price(*c, "gpt-4o", price_key::prompt) == 2'500'000);                 // 2.5e-06
    CHECK(price(*c, "gpt-4o", price_key::completion) == 10'000'000);            // 1e-05
    CHECK(price(*c, "gpt-4o", price_key::input_cache_read) == 1'250'000);       // 1.25e-06
    CHECK(price(*c, "text-embedding-3-small", price_key::prompt) == 20'000);    // 2e-08
    CHECK(price(*c, "claude-sonnet-4-5", price_key::input_cache_write) == 3'750'000);  // 3.75e-06
    CHECK(*c->find("gpt-4o")->max_completion_tokens == 16'384);
    CHECK(*c->find("gpt-4o")->context_length == 128'000);
    CHECK(c->find("ollama/llama3")->free);
    CHECK_FALSE(c->find("gpt-4o")->free);

    // claude-sonnet-4-5: 6e-06 / 2.25e-05 above 200k prompt tokens.
    const model& claude = *c->find("claude-sonnet-4-5");
    REQUIRE(claude.overrides.size() == 1);
    CHECK(claude.prices_for(200'000, 0).get(price_key::prompt) == 3'000'000);
    CHECK(claude.prices_for(200'001, 0).get(price_key::prompt) == 6'000'000);
    CHECK(claude.prices_for(200'001, 0).get(price_key::completion) == 22'500'000);
    CHECK(claude.prices_for(200'001, 0).get(price_key::input_cache_read) == 600'000);  // 6e-07
    const model& gemini = *c->find("gemini/gemini-2.5-pro");
    CHECK(gemini.prices_for(300'000, 0).get(price_key::completion) == 15'000'000);  // 1.5e-05

    // TTS: per character, priced though it has no token prices.
    const model& tts = *c->find("azure/tts-1");
    CHECK(tts.input_pico_per_character == 15'000'000);  // 1.5e-05
    CHECK_FALSE(tts.unpriced);
    CHECK_FALSE(tts.free);
    // "Hello, world!" is 12 characters as LiteLLM counts them: 12 x 15,000,000 pico.
    const auto cost = tts_cost(tts, count_tts_characters("Hello, world!"));
    REQUIRE(cost.status == cost_status::ok);
    CHECK(cost.provider_cost_pico == 180'000'000);
    CHECK(price_call(cost.provider_cost_pico, tts.free, 0, default_tier_policies()[1], false).charged_micros == 198);
    CHECK(tts_cost(tts, -1).status == cost_status::invalid_usage);
    CHECK(tts_cost(tts, max_count + 1).status == cost_status::out_of_range);
    CHECK(tts_cost(*c->find("gpt-4o"), 10).status == cost_status::unpriced);
}

TEST_CASE("TTS characters are code points that Python's isspace does not call space", "[pricing][litellm]") {
    CHECK(count_tts_characters("Hello, world!") == 12);
    CHECK(count_tts_characters("") == 0);
    CHECK(count_tts_characters(" \t\n\r\v\f") == 0);
    CHECK(count_tts_characters("a\u00a0b\u3000c\u2028d\u0085e") == 5);
    CHECK(count_tts_characters("\u200b") == 1);  // zero-width space is not whitespace in Python
    CHECK(count_tts_characters("日本語のテキスト") == 8);
    CHECK(count_tts_characters("👍🏽") == 2);
    CHECK(count_tts_characters("\xff\xfe") == 2);      // invalid bytes count one each
    CHECK(count_tts_characters("\xe6\x97") == 2);      // truncated sequence
    CHECK(count_tts_characters("naïve café") == 9);
}

TEST_CASE("LiteLLM: malformed maps are named errors", "[pricing][litellm]") {
    CHECK(parse_litellm_prices("[]").status == catalog_status::invalid_json);
    CHECK(parse_litellm_prices("").status == catalog_status::invalid_json);
    CHECK(parse_litellm_prices(R"({"m": {"input_cost_per_token": "abc"}})").status == catalog_status::invalid_model);
    const auto ok = parse_litellm_prices(R"({"m": {"input_cost_per_token": 1e-06, "output_cost_per_token": 0,
        "input_cost_per_token_above_128k_tokens": 2e-06, "mode": "chat"}, "list": [1, 2]})");
    REQUIRE(ok.status == catalog_status::ok);
    REQUIRE(ok.value->models().size() == 1);
    CHECK(ok.value->find("m")->prices_for(128'001, 0).get(price_key::prompt) == 2'000'000);
}
