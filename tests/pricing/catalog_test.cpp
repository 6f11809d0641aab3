// Every model of every OpenRouter fixture in ../shared/fixtures parses;
// counts and exact prices are checked against the file text (expected values
// computed from the decimal strings with Python's Decimal, quoted beside).
#include "tollgate/pricing/catalog.hpp"

#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>

using namespace tollgate::pricing;

namespace {

std::string fixture(const std::string& name) {
    const std::string path = std::string(TOLLGATE_FIXTURES_DIR) + "/" + name;
    std::ifstream in(path, std::ios::binary);
    INFO("fixture " << path);
    REQUIRE(in);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

std::shared_ptr<const catalog> load(const std::string& name) {
    auto r = parse_openrouter_models(fixture(name));
    INFO(r.message);
    REQUIRE(r.status == catalog_status::ok);
    return r.value;
}

std::int64_t price(const catalog& c, const char* id, price_key key) {
    const model* m = c.find(id);
    INFO(id);
    REQUIRE(m);
    const auto v = m->base.get(key);
    INFO(to_string(key));
    REQUIRE(v);
    return *v;
}

struct counts {
    std::size_t models = 0, free = 0, unpriced = 0, with_overrides = 0;
};

counts count(const catalog& c) {
    counts n;
    for (const auto& m : c.models()) {
        ++n.models;
        n.free += m.free;
        n.unpriced += m.unpriced;
        n.with_overrides += !m.overrides.empty();
    }
    return n;
}

}  // namespace

TEST_CASE("every fixture parses: model, free, unpriced and override counts", "[pricing][catalog]") {
    struct expectation {
        const char* file;
        std::size_t models, free, unpriced, with_overrides;
    };
    // Counted from the files by an independent script (Python, Decimal).
    const expectation all[] = {
        {"openrouter-models-madviking-2025-05-23.json", 321, 69, 1, 0},
        {"openrouter-models-sinkers-aiscanner-2026-05-07.json", 368, 27, 5, 0},
        {"openrouter-models-anuran-roy-2026-08-19-default.json", 414, 18, 7, 61},
        {"openrouter-models-anuran-roy-2026-08-19-all-modalities.json", 549, 23, 65, 61},
    };
    for (const auto& e : all) {
        CAPTURE(e.file);
        const auto c = load(e.file);
        const auto n = count(*c);
        CHECK(n.models == e.models);
        CHECK(n.free == e.free);
        CHECK(n.unpriced == e.unpriced);
        CHECK(n.with_overrides == e.with_overrides);
        CHECK(c->content_hash().rfind("fnv1a64:", 0) == 0);
    }
}

TEST_CASE("exact prices of a dozen models, from their decimal text", "[pricing][catalog]") {
    const auto may25 = load("openrouter-models-madviking-2025-05-23.json");
    CHECK(price(*may25, "openai/gpt-4o-mini", price_key::prompt) == 150'000);            // "0.00000015"
    CHECK(price(*may25, "openai/gpt-4o-mini", price_key::completion) == 600'000);        // "0.0000006"
    CHECK(price(*may25, "openai/gpt-4o-mini", price_key::image) == 217'000'000);         // "0.000217"
    CHECK(price(*may25, "openai/gpt-4o-mini", price_key::input_cache_read) == 75'000);   // "0.000000075"
    CHECK(price(*may25, "anthropic/claude-3.7-sonnet", price_key::prompt) == 3'000'000);  // "0.000003"
    CHECK(price(*may25, "anthropic/claude-3.7-sonnet", price_key::image) == 4'800'000'000);          // "0.0048"
    CHECK(price(*may25, "anthropic/claude-3.7-sonnet", price_key::input_cache_write) == 3'750'000);  // "0.00000375"
    CHECK(price(*may25, "anthropic/claude-3.7-sonnet", price_key::request) == 0);                    // "0"
    const model* router = may25->find("openrouter/auto");
    REQUIRE(router);
    CHECK(router->base.has_unknown);  // "-1"
    CHECK(router->unpriced);
    CHECK_FALSE(router->free);
    CHECK_FALSE(router->max_completion_tokens);  // null in the file
    CHECK(*may25->find("anthropic/claude-3.7-sonnet")->max_completion_tokens == 64'000);

    const auto may26 = load("openrouter-models-sinkers-aiscanner-2026-05-07.json");
    CHECK(price(*may26, "~google/gemini-flash-latest", price_key::input_cache_write) == 83'333);  // "0.00000008333333333333334"
    CHECK(price(*may26, "~google/gemini-flash-latest", price_key::web_search) == 14'000'000'000);  // "0.014"
    CHECK(price(*may26, "~google/gemini-flash-latest", price_key::audio) == 1'000'000);            // "0.000001"
    CHECK_FALSE(may26->find("~google/gemini-flash-latest")->base.get(price_key::request));  // left out: no charge
    CHECK(may26->find("baidu/cobuddy:free")->free);

    const auto aug26 = load("openrouter-models-anuran-roy-2026-08-19-all-modalities.json");
    CHECK(price(*aug26, "google/gemini-3.7-flash", price_key::input_cache_write) == 20'833);  // "0.0000000208333333333333"
    CHECK(price(*aug26, "google/gemini-3.7-flash", price_key::input_audio_cache) == 37'500);  // "0.0000000375"
    CHECK(price(*aug26, "google/gemini-3.7-flash:batch", price_key::prompt) == 187'500);     // "0.0000001875"
    CHECK(price(*aug26, "bytedance-seed/seedream-5-0-lite", price_key::image_token) == 8'383'234);  // "0.00000838323353293413"
    CHECK(price(*aug26, "bytedance-seed/seedream-5-0-pro", price_key::image) == 3'000'000'000);     // "0.003"
    CHECK(price(*aug26, "~deepseek/deepseek-v4-flash-latest", price_key::input_cache_read) == 15'719);  // "0.0000000157192"
    CHECK(price(*aug26, "x-ai/grok-4.6", price_key::web_search) == 5'000'000'000);  // "0.005"
    // Zero token prices on an image model mean "priced per unit elsewhere".
    CHECK(aug26->find("bytedance-seed/seedream-5-0-lite")->unpriced);
    CHECK_FALSE(aug26->find("bytedance-seed/seedream-5-0-lite")->free);
    CHECK(aug26->find("qwen/qwen3-reranker-8b")->unpriced);
    CHECK(aug26->find("deepgram/flux-tts:free")->free);  // ":free" decides
}

TEST_CASE("overrides: strictly more prompt tokens, UTC windows that wrap, key by key", "[pricing][catalog]") {
    const auto aug26 = load("openrouter-models-anuran-roy-2026-08-19-default.json");
    // Four windows: [10:00, 01:00) wraps midnight at the base price; 01:00-04:00 double.
    const model* ds = aug26->find("deepseek/deepseek-v4-pro-0813");
    REQUIRE(ds);
    REQUIRE(ds->overrides.size() == 4);
    CHECK(ds->prices_for(10, 1200).get(price_key::prompt) == 660'000);
    CHECK(ds->prices_for(10, 30).get(price_key::prompt) == 660'000);    // 00:30, inside the wrapped window
    CHECK(ds->prices_for(10, 100).get(price_key::prompt) == 1'320'000);  // 01:00: end excluded, next starts
    CHECK(ds->prices_for(10, 359).get(price_key::input_cache_read) == 44'000);
    CHECK(ds->prices_for(10, 400).get(price_key::prompt) == 660'000);
    CHECK(ds->prices_for(10, 959).get(price_key::completion) == 3'960'000);

    // A min_prompt_tokens tier, found in the same snapshot.
    const model* tiered = nullptr;
    for (const auto& m : aug26->models()) {
        if (!m.overrides.empty() && m.overrides[0].min_prompt_tokens && !m.overrides[0].utc_start_hhmm) {
            tiered = &m;
            break;
        }
    }
    REQUIRE(tiered);
    const auto threshold = *tiered->overrides[0].min_prompt_tokens;
    const auto base_prompt = tiered->base.get(price_key::prompt);
    CHECK(tiered->prices_for(threshold, 0).get(price_key::prompt) == base_prompt);  // not strictly greater
    CHECK(tiered->prices_for(threshold + 1, 0).get(price_key::prompt) == tiered->overrides[0].prices.get(price_key::prompt));
}

TEST_CASE("a later override wins per key; keys it does not name keep the base", "[pricing][catalog]") {
    const char* json = R"({"data":[{"id":"a/b","pricing":{"prompt":"0.000001","completion":"0.000002",
        "input_cache_read":"0.0000001","overrides":[
          {"min_prompt_tokens":100,"prompt":"0.000003","completion":"0.000004"},
          {"min_prompt_tokens":1000,"prompt":"0.000005"},
          {"utc_start":2200,"utc_end":200,"completion":"0.000009"}]}}]})";
    const auto r = parse_openrouter_models(json);
    REQUIRE(r.status == catalog_status::ok);
    const model& m = *r.value->find("a/b");
    auto p = m.prices_for(5000, 1200);
    CHECK(p.get(price_key::prompt) == 5'000'000);
    CHECK(p.get(price_key::completion) == 4'000'000);
    CHECK(p.get(price_key::input_cache_read) == 100'000);
    p = m.prices_for(500, 2300);
    CHECK(p.get(price_key::prompt) == 3'000'000);
    CHECK(p.get(price_key::completion) == 9'000'000);
    p = m.prices_for(50, 159);
    CHECK(p.get(price_key::prompt) == 1'000'000);
    CHECK(p.get(price_key::completion) == 9'000'000);
    CHECK(m.prices_for(50, 200).get(price_key::completion) == 2'000'000);
}

TEST_CASE("malformed catalogs are named errors", "[pricing][catalog]") {
    CHECK(parse_openrouter_models("").status == catalog_status::invalid_json);
    CHECK(parse_openrouter_models("{").status != catalog_status::ok);
    CHECK(parse_openrouter_models(R"({"models":[]})").status == catalog_status::missing_data);
    CHECK(parse_openrouter_models(R"({"data":[{"name":"no id"}]})").status == catalog_status::invalid_model);
    const auto bad_price = parse_openrouter_models(R"({"data":[{"id":"x","pricing":{"prompt":"cheap"}}]})");
    CHECK(bad_price.status == catalog_status::invalid_model);
    CHECK(bad_price.message.find("x") != std::string::npos);
    CHECK(bad_price.message.find("prompt") != std::string::npos);
    CHECK(parse_openrouter_models(R"({"data":[{"id":"x","pricing":{"prompt":"1e400"}}]})").status ==
          catalog_status::invalid_model);
    CHECK(parse_openrouter_models(R"({"data":[{"id":"x","pricing":{"prompt":"1","overrides":[{"utc_start":2575}]}}]})")
              .status == catalog_status::invalid_model);
    const auto empty = parse_openrouter_models(R"({"data":[]})");
    REQUIRE(empty.status == catalog_status::ok);
    CHECK(empty.value->models().empty());
    // A model missing completion is unpriced, never free.
    const auto half = parse_openrouter_models(R"({"data":[{"id":"x","pricing":{"prompt":"0"}}]})");
    REQUIRE(half.status == catalog_status::ok);
    CHECK(half.value->find("x")->unpriced);
    CHECK_FALSE(half.value->find("x")->free);
}

TEST_CASE("the bundled snapshots ship inside the binary and parse", "[pricing][catalog]") {
    // Byte for byte the 2026-08 all-modalities fixture and LiteLLM's map.
    CHECK(bundled_openrouter_models() == fixture("openrouter-models-anuran-roy-2026-08-19-all-modalities.json"));
    const auto openrouter = parse_openrouter_models(bundled_openrouter_models());
    REQUIRE(openrouter.status == catalog_status::ok);
    CHECK(openrouter.value->models().size() == 549);
    CHECK(openrouter.value->find("openrouter/auto-beta"));
    const auto litellm = parse_litellm_prices(bundled_litellm_prices());
    REQUIRE(litellm.status == catalog_status::ok);
    CHECK(litellm.value->models().size() == 2982);
    // A refresh swaps the live catalog whole.
    catalog_store store(openrouter.value);
    const auto before = store.get();
    store.replace(load("openrouter-models-madviking-2025-05-23.json"));
    CHECK(store.get()->models().size() == 321);
    CHECK(before->models().size() == 549);  // a reader's snapshot outlives the swap
}
