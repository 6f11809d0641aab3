// OpenRouter's key management and /generation answers (openrouter_wire.cpp),
// in the shapes upstream-apis.md §1c gives: money from each number's own
// text, exact; anything malformed refused rather than half read.
#include "openrouter_wire.hpp"

#include <catch2/catch.hpp>

#include "tollgate/proxy/wire.hpp"

using namespace tollgate::proxy::openrouter;

namespace {

// upstream-apis.md §1c's KeyObject.
constexpr const char* key_object =
    R"({"hash":"f01d0000000000000000000000000000000000000000000000000000000000aa","name":"tollgate-user-7",)"
    R"("label":"sk-or-v1-0e6...1c96","disabled":false,"limit":100,"limit_remaining":74.5,"limit_reset":"monthly",)"
    R"("include_byok_in_limit":false,"usage":25.5,"usage_daily":25.5,"usage_weekly":25.5,"usage_monthly":25.5,)"
    R"("byok_usage":0,"byok_usage_daily":0,"byok_usage_weekly":0,"byok_usage_monthly":0,)"
    R"("created_at":"2025-08-24T10:30:00Z","updated_at":null,"expires_at":null,"creator_user_id":"user_1",)"
    R"("workspace_id":"0b7d"})";

std::string wrap(const std::string& inner) {
    return R"({"data":)" + inner + "}";
}

}  // namespace

TEST_CASE("a KeyObject's figures are read exactly") {
    const auto k = parse_key_answer(wrap(key_object));
    REQUIRE(k);
    CHECK(k->hash.size() == 64);
    CHECK(k->name == "tollgate-user-7");
    CHECK(k->label == "sk-or-v1-0e6...1c96");
    CHECK_FALSE(k->disabled);
    CHECK(k->limit_micros == 100'000'000);
    CHECK(k->usage_micros == 25'500'000);

    // Usage far below a micro rounds half up, as charges do; exponents too.
    auto tiny = parse_key_answer(wrap(R"({"hash":"h","usage":0.0000004999,"limit":null,"disabled":true})"));
    REQUIRE(tiny);
    CHECK(tiny->usage_micros == 0);
    CHECK_FALSE(tiny->limit_micros);
    CHECK(tiny->disabled);
    tiny = parse_key_answer(wrap(R"({"hash":"h","usage":5e-7,"limit":6E+1})"));
    REQUIRE(tiny);
    CHECK(tiny->usage_micros == 1);
    CHECK(tiny->limit_micros == 60'000'000);
    // 0.1 + 0.2 as decimal text, never as double.
    CHECK(parse_key_answer(wrap(R"({"hash":"h","usage":0.30000000000000004})"))->usage_micros == 300'000);
}

TEST_CASE("a created key carries the key string, once") {
    const auto c =
        parse_created_key(R"({"data":)" + std::string(key_object) +
                          R"(,"key":"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"})");
    REQUIRE(c);
    CHECK(c->key.starts_with("sk-or-v1-"));
    CHECK(c->info.limit_micros == 100'000'000);
    CHECK_FALSE(parse_created_key(wrap(key_object)));                       // no key: not a creation answer
    CHECK_FALSE(parse_created_key(R"({"data":{"name":"x"},"key":"sk"})"));  // no hash
}

TEST_CASE("a key list") {
    const auto list = parse_key_list(R"({"data":[)" + std::string(key_object) + R"(,{"hash":"b","name":"other"}]})");
    REQUIRE(list);
    REQUIRE(list->size() == 2);
    CHECK((*list)[1].name == "other");
    CHECK(parse_key_list(R"({"data":[]})")->empty());
    CHECK_FALSE(parse_key_list(R"({"data":{}})"));
    CHECK_FALSE(parse_key_list(R"({"data":[{"name":"no hash"}]})"));
    CHECK_FALSE(parse_key_list(R"({"error":{"code":500}})"));
}

TEST_CASE("a generation's cost and tokens") {
    const auto g = parse_generation(
        R"({"data":{"id":"gen-1","total_cost":0.00000465,"usage":0.00000465,"upstream_inference_cost":null,)"
        R"("tokens_prompt":12,"tokens_completion":3,"native_tokens_prompt":12,"is_byok":false,"cancelled":true,)"
        R"("provider_responses":[{"status":200}],"latency":120}})");
    REQUIRE(g);
    CHECK(g->id == "gen-1");
    CHECK(g->total_cost_pico == 4'650'000);
    CHECK_FALSE(g->upstream_inference_cost_pico);
    CHECK(g->prompt_tokens == 12);
    CHECK(g->completion_tokens == 3);
    CHECK_FALSE(g->is_byok);

    CHECK_FALSE(parse_generation(R"({"data":{"id":"gen-1","total_cost":null}})"));  // no cost yet
    CHECK_FALSE(parse_generation(R"({"data":{"id":"gen-1","total_cost":"0.1"}})"));
    CHECK_FALSE(parse_generation(R"({"data":{"id":"gen-1","total_cost":-0.1}})"));
    CHECK_FALSE(parse_generation(R"({"data":{"total_cost":0.1,"tokens_prompt":-1}})"));
    CHECK_FALSE(parse_generation(R"({"data":{"total_cost":0.1}} trailing)"));
    CHECK_FALSE(parse_generation(R"({"error":{"code":404,"message":"Generation gen-1 not found"}})"));
}

TEST_CASE("malformed answers are refused, whole") {
    for (const char* bad : {"", "{", "[]", "null", R"({"data":null})", R"({"data":{"hash":1}})",
                            R"({"data":{"hash":"h","limit":"100"}})", R"({"data":{"hash":"h","usage":-1}})",
                            R"({"data":{"hash":"h","disabled":"no"}})", R"({"data":{"hash":"h","usage":1e999}})",
                            R"({"data":{"hash":"h"}} {})", R"({"data":{"hash":"h","x":[1,]}})"}) {
        INFO(bad);
        CHECK_FALSE(parse_key_answer(bad));
    }
}

TEST_CASE("error messages, USD numbers and masked keys") {
    CHECK(error_message(R"({"error":{"code":401,"message":"Invalid management key"}})") == "Invalid management key");
    CHECK(error_message("not json").empty());
    CHECK(tollgate::proxy::usd_text(60'000'000) == "60.000000");
    CHECK(tollgate::proxy::usd_text(1) == "0.000001");
    CHECK(tollgate::proxy::usd_text(0) == "0.000000");
    CHECK(tollgate::proxy::usd_text(-1'500'000) == "-1.500000");
    const std::string key = "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";
    const auto masked = mask_key(key);
    CHECK(masked == "sk-or-v1-001…1c96");
    CHECK(masked.find("2233") == std::string::npos);  // nothing of the middle
    CHECK(mask_key("short-key") == "shor…");
}
