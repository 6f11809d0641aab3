// What the upstream's answers say (inspect_answer) for every usage shape in
// ../shared/upstream-apis.md, the usage splice (remove_usage_member, exact
// bytes) and LiteLLM's cost header.
#include "tollgate/proxy/wire.hpp"

#define SIMDJSON_EXCEPTIONS 0
#include <catch2/catch.hpp>
#include <simdjson.h>

#include <string>

using namespace tollgate::proxy;

namespace {

constexpr std::int64_t pico_per_usd = 1'000'000'000'000;

// The data of a one-event stream, as a client reads it.
std::string data_of(std::string_view event) {
    sse_parser parser;
    parser.feed(event);
    auto ev = parser.next();
    REQUIRE(ev);
    return std::string(ev->data);
}

bool valid_object(std::string_view json) {
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    if (parser.parse(simdjson::padded_string(json)).get(root)) return false;
    return root.type() == simdjson::dom::element_type::OBJECT;
}

}  // namespace

TEST_CASE("OpenRouter's final stream chunk: usage with cost, choices empty or not", "[proxy][answer]") {
    const std::string usage =
        R"("usage":{"prompt_tokens":42,"completion_tokens":7,"total_tokens":49,"cost":0.000123,"is_byok":false,"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},"completion_tokens_details":{"reasoning_tokens":0},"cost_details":{"upstream_inference_cost":null,"upstream_inference_prompt_cost":0.00008,"upstream_inference_completions_cost":0.000043}})";
    const std::string empty_choices =
        R"({"id":"gen-1","object":"chat.completion.chunk","created":1,"model":"openai/gpt-4o-mini","provider":"OpenAI","choices":[],)" +
        usage + "}";
    const std::string one_choice =
        R"({"id":"gen-1","object":"chat.completion.chunk","created":1,"model":"openai/gpt-4o-mini","provider":"OpenAI","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null,"native_finish_reason":null,"logprobs":null}],)" +
        usage + "}";
    for (const auto& chunk : {empty_choices, one_choice}) {
        const auto f = inspect_answer(chunk);
        REQUIRE(f.json_ok);
        REQUIRE(f.usage == member_state::value);
        CHECK(f.reported.tokens.prompt_tokens == 42);
        CHECK(f.reported.tokens.completion_tokens == 7);
        CHECK(f.reported.total_tokens == 49);
        CHECK(f.reported.tokens.cached_tokens == 0);
        CHECK(f.reported.tokens.reasoning_tokens == 0);
        CHECK(f.reported.cost_pico == 123'000'000);
        CHECK_FALSE(f.reported.upstream_inference_cost_pico);
        CHECK_FALSE(f.reported.is_byok);
        CHECK(f.model == "openai/gpt-4o-mini");
        CHECK(f.generated_text.empty());
        CHECK_FALSE(f.error);
    }
}

TEST_CASE("OpenRouter's non-stream answer: usage and the generated text", "[proxy][answer]") {
    const auto f = inspect_answer(
        R"({"id":"gen-1764031697-vqvW","provider":"Anthropic","model":"anthropic/claude-sonnet-4","object":"chat.completion","created":1764031697,
            "choices":[{"logprobs":null,"finish_reason":"stop","native_finish_reason":"end_turn","index":0,
                        "message":{"role":"assistant","content":"Hello there","refusal":null,"reasoning":"thinking...","reasoning_details":[]}}],
            "system_fingerprint":null,
            "usage":{"prompt_tokens":1200,"completion_tokens":80,"total_tokens":1280,"cost":0.00042,"is_byok":false,
                     "prompt_tokens_details":{"cached_tokens":1000,"cache_write_tokens":150,"audio_tokens":0,"video_tokens":0},
                     "completion_tokens_details":{"reasoning_tokens":30,"audio_tokens":null,"accepted_prediction_tokens":null,"rejected_prediction_tokens":null},
                     "server_tool_use_details":{"web_search_requests":2,"tool_calls_requested":null,"tool_calls_executed":null},
                     "cost_details":{"upstream_inference_cost":null,"upstream_inference_prompt_cost":0.0003,"upstream_inference_completions_cost":0.00012}}})");
    REQUIRE(f.json_ok);
    REQUIRE(f.usage == member_state::value);
    const auto& t = f.reported.tokens;
    CHECK(t.prompt_tokens == 1200);
    CHECK(t.completion_tokens == 80);
    CHECK(t.cached_tokens == 1000);
    CHECK(t.cache_write_tokens == 150);
    CHECK(t.reasoning_tokens == 30);
    CHECK(t.web_search_calls == 2);
    CHECK(t.input_images == 0);  // a request fact, never read from an answer
    CHECK(f.reported.total_tokens == 1280);
    CHECK(f.reported.cost_pico == 420'000'000);
    CHECK(f.model == "anthropic/claude-sonnet-4");
    CHECK(f.generated_text == "Hello therethinking...");
}

TEST_CASE("BYOK: cost_details.upstream_inference_cost is read exactly", "[proxy][answer]") {
    const auto f = inspect_answer(
        R"({"choices":[],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15,"cost":0.0000021,"is_byok":true,
            "cost_details":{"upstream_inference_cost":0.00042,"upstream_inference_prompt_cost":0.0003,"upstream_inference_completions_cost":0.00012}}})");
    REQUIRE(f.usage == member_state::value);
    CHECK(f.reported.is_byok);
    CHECK(f.reported.cost_pico == 2'100'000);
    CHECK(f.reported.upstream_inference_cost_pico == 420'000'000);
}

TEST_CASE("costs in exponent form are exact; null, absent or junk costs are unknown", "[proxy][answer]") {
    auto cost = [](std::string_view value) {
        const auto f = inspect_answer(std::string(R"({"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2,"cost":)") +
                                      std::string(value) + "}}");
        REQUIRE(f.usage == member_state::value);
        return f.reported.cost_pico;
    };
    CHECK(cost("7.1e-05") == 71'000'000);
    CHECK(cost("7.1E-05 ") == 71'000'000);
    CHECK(cost("1e-12") == 1);
    CHECK(cost("0") == 0);
    CHECK(cost("0.00000008333333333333334") == 83'333);  // half-up at the 12th decimal
    CHECK(cost("12") == 12 * pico_per_usd);
    CHECK_FALSE(cost("null"));
    CHECK_FALSE(cost("-0.5"));
    CHECK_FALSE(cost("1e400"));
    CHECK_FALSE(cost(R"("0.001")"));
    CHECK_FALSE(cost("true"));
    CHECK_FALSE(inspect_answer(R"({"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}})").reported.cost_pico);
}

TEST_CASE("LiteLLM: a usage chunk that still carries choices, and usage:null chunks", "[proxy][answer]") {
    auto f = inspect_answer(
        R"({"id":"chatcmpl-9f2","created":1,"model":"gpt-4o-mini","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"!"}}],
            "usage":{"completion_tokens":2,"prompt_tokens":9,"total_tokens":11,"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":null},
                     "prompt_tokens_details":{"cached_tokens":3,"audio_tokens":null},"cost":7.1e-05}})");
    REQUIRE(f.usage == member_state::value);
    CHECK(f.reported.tokens.prompt_tokens == 9);
    CHECK(f.reported.tokens.completion_tokens == 2);
    CHECK(f.reported.tokens.cached_tokens == 3);
    CHECK(f.reported.cost_pico == 71'000'000);
    CHECK(f.generated_text == "!");

    f = inspect_answer(
        R"({"id":"chatcmpl-9f2","created":1,"model":"gpt-4o-mini","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"Hi","role":"assistant"}}],"usage":null})");
    REQUIRE(f.json_ok);
    CHECK(f.usage == member_state::null);
    CHECK(f.generated_text == "Hi");

    f = inspect_answer(R"({"id":"x","choices":[{"index":0,"delta":{"content":"Hi"}}]})");
    CHECK(f.usage == member_state::absent);
}

TEST_CASE("OpenAI include_usage: the last chunk has choices [] and the totals", "[proxy][answer]") {
    const auto f = inspect_answer(
        R"({"id":"chatcmpl-B9","object":"chat.completion.chunk","created":1,"model":"gpt-4o-2024-08-06","system_fingerprint":"fp_x","choices":[],
            "usage":{"prompt_tokens":19,"completion_tokens":10,"total_tokens":29,
                     "prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},
                     "completion_tokens_details":{"reasoning_tokens":4,"audio_tokens":0,"accepted_prediction_tokens":0,"rejected_prediction_tokens":0}}})");
    REQUIRE(f.usage == member_state::value);
    CHECK(f.reported.tokens.prompt_tokens == 19);
    CHECK(f.reported.tokens.reasoning_tokens == 4);
    CHECK(f.reported.total_tokens == 29);
    CHECK_FALSE(f.reported.cost_pico);
}

TEST_CASE("embeddings usage with LiteLLM's extra keys", "[proxy][answer]") {
    const auto f = inspect_answer(
        R"({"object":"list","data":[{"object":"embedding","index":0,"embedding":"AACAPwAAAEA="}],"model":"text-embedding-3-small",
            "usage":{"prompt_tokens":5,"total_tokens":5,"completion_tokens":0,"prompt_tokens_details":null,"completion_tokens_details":null}})");
    REQUIRE(f.usage == member_state::value);
    CHECK(f.reported.tokens.prompt_tokens == 5);
    CHECK(f.reported.tokens.completion_tokens == 0);
    CHECK(f.reported.tokens.cached_tokens == 0);
    CHECK(f.reported.total_tokens == 5);
    CHECK(f.generated_text.empty());
    // OpenAI's own has no completion tokens; a missing total is the sum.
    const auto g = inspect_answer(R"({"usage":{"prompt_tokens":8}})");
    REQUIRE(g.usage == member_state::value);
    CHECK(g.reported.total_tokens == 8);
    CHECK(inspect_answer(R"({"usage":{"prompt_tokens":8,"completion_tokens":2,"total_tokens":null}})").reported.total_tokens == 10);
}

TEST_CASE("negative, fractional or non-numeric counts make usage invalid", "[proxy][answer]") {
    for (const char* bad : {
             R"({"usage":{"prompt_tokens":-1,"completion_tokens":1}})",
             R"({"usage":{"prompt_tokens":1.5,"completion_tokens":1}})",
             R"({"usage":{"prompt_tokens":1e3,"completion_tokens":1}})",
             R"({"usage":{"prompt_tokens":"7","completion_tokens":1}})",
             R"({"usage":{"prompt_tokens":99999999999999999999}})",
             R"({"usage":{"prompt_tokens":1,"total_tokens":-2}})",
             R"({"usage":{"prompt_tokens":1,"prompt_tokens_details":{"cached_tokens":-3}}})",
             R"({"usage":{"prompt_tokens":1,"completion_tokens_details":{"reasoning_tokens":true}}})",
             R"({"usage":{"prompt_tokens":1,"prompt_tokens_details":"none"}})",
             R"({"usage":{"prompt_tokens":9223372036854775807,"completion_tokens":1}})",  // the total overflows
             R"({"usage":"none"})",
             R"({"usage":12})",
             R"({"usage":[]})",
         }) {
        INFO(bad);
        const auto f = inspect_answer(bad);
        CHECK(f.json_ok);
        CHECK(f.usage == member_state::invalid);
    }
    // Null details and null counts are zeros.
    const auto f = inspect_answer(
        R"({"usage":{"prompt_tokens":3,"completion_tokens":null,"completion_tokens_details":{"reasoning_tokens":null},"server_tool_use_details":{"web_search_requests":null}}})");
    REQUIRE(f.usage == member_state::value);
    CHECK(f.reported.tokens.completion_tokens == 0);
    CHECK(f.reported.tokens.web_search_calls == 0);
    CHECK(f.reported.total_tokens == 3);
}

TEST_CASE("mid-stream errors: OpenRouter's with an int or string code, LiteLLM's", "[proxy][answer]") {
    auto f = inspect_answer(
        R"({"id":"gen-x","object":"chat.completion.chunk","created":1,"model":"m","provider":"P","error":{"code":502,"message":"Provider disconnected","metadata":{"error_type":"provider_unavailable","provider_code":"ECONNRESET"}},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]})");
    REQUIRE(f.json_ok);
    CHECK(f.error);
    CHECK(f.error_message == "Provider disconnected");
    CHECK(f.usage == member_state::absent);
    CHECK(f.model == "m");

    f = inspect_answer(
        R"({"id":"cmpl-abc123","object":"chat.completion.chunk","created":1,"model":"gpt-3.5-turbo","provider":"openai","error":{"code":"server_error","message":"Provider disconnected unexpectedly"},"choices":[{"index":0,"delta":{"content":""},"finish_reason":"error"}]})");
    CHECK(f.error);
    CHECK(f.error_message == "Provider disconnected unexpectedly");

    f = inspect_answer(R"({"error": {"message": "litellm.RateLimitError: No deployments available", "type": "None", "param": "None", "code": "429"}})");
    CHECK(f.error);
    CHECK(f.error_message == "litellm.RateLimitError: No deployments available");

    // Truthy as openai-node sees it.
    CHECK(inspect_answer(R"({"error":"boom"})").error);
    CHECK(inspect_answer(R"({"error":"boom"})").error_message == "boom");
    CHECK(inspect_answer(R"({"error":true})").error);
    CHECK(inspect_answer(R"({"error":{}})").error);
    CHECK(inspect_answer(R"({"error":[]})").error);
    CHECK(inspect_answer(R"({"error":1})").error);
    CHECK(inspect_answer(R"({"error":{"message":42}})").error_message.empty());
    for (const char* falsy : {R"({"error":null})", R"({"error":false})", R"({"error":0})", R"({"error":-0.0e5})",
                              R"({"error":""})"}) {
        INFO(falsy);
        CHECK_FALSE(inspect_answer(falsy).error);
    }
}

TEST_CASE("may_hold_usage_or_error: never false for an event that has either", "[proxy][answer]") {
    // Every event that inspect_answer finds a usage (even null) or an error
    // member in must pass the cheap test; a plain delta need not.
    const std::vector<std::string> events = {
        R"({"id":"gen-1","model":"m","choices":[{"index":0,"delta":{"content":"Hi"}}]})",
        R"({"id":"gen-1","model":"m","choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2,"cost":0.1}})",
        R"({"choices":[{"delta":{"content":"x"}}],"usage":null})",
        R"({"error":{"code":502,"message":"Provider disconnected"},"choices":[{"finish_reason":"error"}]})",
        R"({"error":"boom"})",
        R"({ "usage" : {"prompt_tokens":1}})",
        R"({"usage":{"prompt_tokens":1,"completion_tokens":1}})",
        R"({"error":{"message":"spelled with an escape"}})",
        R"({"choices":[{"delta":{"content":"the word "usage" in the text"}}]})",
    };
    for (const auto& e : events) {
        INFO(e);
        const auto f = inspect_answer(e);
        if (f.usage != member_state::absent || f.error) CHECK(may_hold_usage_or_error(e));
    }
    CHECK(inspect_answer(events[6]).usage == member_state::value);  // the escaped key is a real usage
    CHECK_FALSE(may_hold_usage_or_error(events[0]));
    CHECK_FALSE(may_hold_usage_or_error(R"({"choices":[{"delta":{"content":"usage, error"}}]})"));
    CHECK(may_hold_usage_or_error(events[8]));  // in doubt (a quoted "usage" in text): inspect it
}

TEST_CASE("generated text: deltas, reasoning, tool-call arguments, completions", "[proxy][answer]") {
    CHECK(inspect_answer(R"({"choices":[{"delta":{"reasoning":"Let me ","reasoning_details":[{"type":"reasoning.text","text":"x"}]}}]})")
              .generated_text == "Let me ");
    CHECK(inspect_answer(R"({"choices":[{"delta":{"reasoning_content":"hmm"}}]})").generated_text == "hmm");
    CHECK(inspect_answer(
              R"({"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"city\":"}}]}}]})")
              .generated_text == "{\"city\":");
    CHECK(inspect_answer(
              R"({"choices":[{"message":{"role":"assistant","content":null,"tool_calls":[{"id":"c","type":"function","function":{"name":"f","arguments":"{}"}}]}}]})")
              .generated_text == "{}");
    CHECK(inspect_answer(R"({"choices":[{"message":{"function_call":{"name":"f","arguments":"[1]"}}}]})").generated_text ==
          "[1]");
    CHECK(inspect_answer(R"({"choices":[{"text":"once upon","index":0,"finish_reason":null}]})").generated_text ==
          "once upon");
    CHECK(inspect_answer(R"({"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}}]})")
              .generated_text == "ab");
    CHECK(inspect_answer(R"({"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}}]})").generated_text == "ab");
    CHECK(inspect_answer(R"({"choices":[{"delta":{"content":"\u00e9\n"}}]})").generated_text == "\xC3\xA9\n");
    // Wrong types are skipped, not fatal.
    const auto f = inspect_answer(R"({"choices":[1,{"delta":5},{"delta":{"content":7,"tool_calls":{}}},{"text":null}]})");
    CHECK(f.json_ok);
    CHECK(f.generated_text.empty());
}

TEST_CASE("what is not one JSON object gives nothing", "[proxy][answer]") {
    CHECK(inspect_answer("  \n\t{\"usage\":null}  \r\n").json_ok);  // whitespace around is fine
    CHECK(inspect_answer("  \n\t{\"usage\":null}").usage == member_state::null);
    for (const char* bad : {"", "[DONE]", "[]", "\"x\"", "42", "null", "{", R"({"usage":null} x)", R"({"a":1}{"b":2})",
                            R"({"usage":{"prompt_tokens":1,}})", R"({"usage":{"cost":1.}})",
                            R"({"model":"a)", ": OPENROUTER PROCESSING"}) {
        INFO(bad);
        const auto f = inspect_answer(bad);
        CHECK_FALSE(f.json_ok);
        CHECK(f.usage == member_state::absent);
        CHECK_FALSE(f.error);
    }
}

TEST_CASE("a key given twice counts by its last value", "[proxy][answer]") {
    const auto f = inspect_answer(R"({"usage":{"prompt_tokens":1},"model":"a","usage":{"prompt_tokens":2},"model":"b"})");
    CHECK(f.reported.tokens.prompt_tokens == 2);
    CHECK(f.model == "b");
    CHECK(inspect_answer(R"({"usage":{"prompt_tokens":1},"usage":null})").usage == member_state::null);
    CHECK(inspect_answer(R"({"usage":{"prompt_tokens":1,"prompt_tokens":-1}})").usage == member_state::invalid);
    CHECK(inspect_answer(R"({"us\u0061ge":{"prompt_tokens":4}})").reported.tokens.prompt_tokens == 4);
}

TEST_CASE("remove_usage_member cuts the member and nothing else", "[proxy][splice]") {
    struct splice_case {
        std::string in;
        std::optional<std::string> out;
    };
    const std::vector<splice_case> cases = {
        // last, first, middle, only
        {"data: {\"id\":\"x\",\"choices\":[],\"usage\":null}\n\n", "data: {\"id\":\"x\",\"choices\":[]}\n\n"},
        {"data: {\"usage\":null,\"id\":\"x\"}\n\n", "data: {\"id\":\"x\"}\n\n"},
        {"data: {\"id\":\"x\",\"usage\":{\"prompt_tokens\":1,\"d\":{\"usage\":2}},\"choices\":[]}\n\n",
         "data: {\"id\":\"x\",\"choices\":[]}\n\n"},
        {"data: {\"usage\":null}\n\n", "data: {}\n\n"},
        {"data: { \"usage\" : null }\n\n", "data: {  }\n\n"},
        // whitespace
        {"data: { \"id\": \"x\", \"usage\": null, \"b\": 2 }\r\n\r\n", "data: { \"id\": \"x\", \"b\": 2 }\r\n\r\n"},
        {"data: { \"id\" : \"x\" , \"usage\" : { \"a\" : 1 } }\n\n", "data: { \"id\" : \"x\" }\n\n"},
        {"data: {\"usage\":null ,\t\"id\":1}\n\n", "data: {\"id\":1}\n\n"},
        {"data: {\"a\":[1,{\"b\":\"}\"}],\n\"usage\":null}\n\n", std::nullopt},  // a raw LF ends the line: not JSON
        // line ends and other lines are kept
        {"data: {\"a\":1,\"usage\":null}\r\r", "data: {\"a\":1}\r\r"},
        {": keep\nevent: chunk\ndata: {\"a\":1,\"usage\":null}\nid: 4\n\n", ": keep\nevent: chunk\ndata: {\"a\":1}\nid: 4\n\n"},
        {"data:{\"usage\":null,\"a\":1}\n\n", "data:{\"a\":1}\n\n"},
        // never a nested key, never text in a string; an escaped key is the key it spells
        {"data: {\"choices\":[{\"delta\":{\"usage\":1}}],\"x\":{\"usage\":null}}\n\n", std::nullopt},
        {"data: {\"note\":\"\\\"usage\\\":null\",\"id\":1}\n\n", std::nullopt},
        {"data: {\"note\":\"a \\\"usage\\\": null, here\",\"usage\":null}\n\n",
         "data: {\"note\":\"a \\\"usage\\\": null, here\"}\n\n"},
        {"data: {\"us\\u0061ge\":null,\"a\":1}\n\n", "data: {\"a\":1}\n\n"},
        {"data: {\"usage2\":null,\"Usage\":null}\n\n", std::nullopt},
        // given twice: both go
        {"data: {\"a\":1,\"usage\":null,\"usage\":{}}\n\n", "data: {\"a\":1}\n\n"},
        {"data: {\"usage\":null,\"a\":1,\"usage\":{}}\n\n", "data: {\"a\":1}\n\n"},
        {"data: {\"usage\":null,\"usage\":{}}\n\n", "data: {}\n\n"},
        // nothing to cut, or not a JSON object
        {": OPENROUTER PROCESSING\n\n", std::nullopt},
        {"data: [DONE]\n\n", std::nullopt},
        {"data: {\"usage\":null,}\n\n", std::nullopt},
        {"data: {\"usage\":nul}\n\n", std::nullopt},
        {"data: {\"a\":1}\n\n", std::nullopt},
        {"event: usage\n\n", std::nullopt},
        {"", std::nullopt},
        // multi-line data: read joined, cut mapped back to the raw bytes
        {"data: {\"a\":1,\ndata: \"usage\":null}\n\n", "data: {\"a\":1}\n\n"},
        {"data: {\"usage\":null,\ndata: \"a\":1}\n\n", "data: {\"a\":1}\n\n"},
        {"data: {\ndata: \"a\": 1,\ndata: \"usage\": {\ndata:  \"prompt_tokens\": 1\ndata: }\ndata: }\n\n",
         "data: {\ndata: \"a\": 1\ndata: }\n\n"},
        {"data: {\"a\":1,\n: a comment\ndata: \"usage\":null}\n\n", "data: {\"a\":1}\n\n"},
        {"data: {\"usage\":null,\ndata: \"a\":1}\r\n\r\n", "data: {\"a\":1}\r\n\r\n"},
        {"data: {\"a\":1,\r\ndata:\"usage\":null,\r\ndata:\"b\":2}\r\n\r\n", "data: {\"a\":1,\r\ndata:\"b\":2}\r\n\r\n"},
    };
    for (const auto& c : cases) {
        INFO(c.in);
        const auto out = remove_usage_member(c.in);
        REQUIRE(out.has_value() == c.out.has_value());
        if (!out) continue;
        CHECK(*out == *c.out);
        const auto data = data_of(*out);
        CHECK(valid_object(data));
        CHECK(inspect_answer(data).usage == member_state::absent);
    }
}

TEST_CASE("remove_usage_member on the real chunks", "[proxy][splice]") {
    // LiteLLM's usage chunk carries a choice: the chunk stays, the member goes.
    const std::string litellm =
        R"(data: {"id":"chatcmpl-9f2","created":1,"model":"gpt-4o-mini","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"!"}}],"usage":{"completion_tokens":2,"prompt_tokens":9,"total_tokens":11,"cost":7.1e-05}})"
        "\n\n";
    auto out = remove_usage_member(litellm);
    REQUIRE(out);
    CHECK(*out ==
          R"(data: {"id":"chatcmpl-9f2","created":1,"model":"gpt-4o-mini","object":"chat.completion.chunk","choices":[{"index":0,"delta":{"content":"!"}}]})"
          "\n\n");
    CHECK(inspect_answer(data_of(*out)).generated_text == "!");

    // OpenAI-style "usage": null on an ordinary chunk (with a space, as Python writes it).
    out = remove_usage_member(
        "data: {\"id\": \"chatcmpl-1\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"Hi\"}}], \"usage\": null}\n\n");
    REQUIRE(out);
    CHECK(*out == "data: {\"id\": \"chatcmpl-1\", \"choices\": [{\"index\": 0, \"delta\": {\"content\": \"Hi\"}}]}\n\n");
}

TEST_CASE("LiteLLM's cost header as pico-USD", "[proxy][answer]") {
    CHECK(parse_cost_header("7.1e-05") == 71'000'000);
    CHECK(parse_cost_header("0.000123") == 123'000'000);
    CHECK(parse_cost_header("0") == 0);
    CHECK(parse_cost_header("0.0") == 0);
    CHECK(parse_cost_header(" 0.5\t") == pico_per_usd / 2);
    CHECK(parse_cost_header("1.2345678901235e-07") == 123'457);
    CHECK_FALSE(parse_cost_header("None"));
    CHECK_FALSE(parse_cost_header(""));
    CHECK_FALSE(parse_cost_header("  "));
    CHECK_FALSE(parse_cost_header("-1"));
    CHECK_FALSE(parse_cost_header("abc"));
    CHECK_FALSE(parse_cost_header("1e400"));
    CHECK_FALSE(parse_cost_header("inf"));
    CHECK_FALSE(parse_cost_header("nan"));
    CHECK_FALSE(parse_cost_header("+1"));
}
