// The client's request: the facts admission reads (inspect_request) and the
// include_usage edit (force_include_usage), checked by parsing its result.
#include "tollgate/proxy/wire.hpp"

#define SIMDJSON_EXCEPTIONS 0
#include <catch2/catch.hpp>
#include <simdjson.h>

#include <string>

using namespace tollgate::proxy;

namespace {

// The result parses as one JSON object whose every `stream_options` is an
// object whose every `include_usage` is true; returns how many
// stream_options keys it has.
int check_forced(std::string_view json) {
    simdjson::dom::parser parser;
    simdjson::dom::object root;
    REQUIRE_FALSE(parser.parse(simdjson::padded_string(json)).get(root));
    int options = 0;
    for (auto [key, value] : root) {
        if (key != "stream_options") continue;
        ++options;
        simdjson::dom::object o;
        REQUIRE_FALSE(value.get(o));
        int flags = 0;
        for (auto [k, v] : o) {
            if (k != "include_usage") continue;
            ++flags;
            bool b = false;
            REQUIRE_FALSE(v.get(b));
            CHECK(b);
        }
        CHECK(flags >= 1);  // more only when the body gave it twice
    }
    return options;
}

// How many top-level members are called `key`.
int count_key(std::string_view json, std::string_view key) {
    simdjson::dom::parser parser;
    simdjson::dom::object root;
    REQUIRE_FALSE(parser.parse(simdjson::padded_string(json)).get(root));
    int n = 0;
    for (auto [k, v] : root) n += k == key ? 1 : 0;
    return n;
}

}  // namespace

TEST_CASE("a chat request's facts", "[proxy][request]") {
    const auto f = inspect_request(R"({
        "model": "openai/gpt-4o-mini",
        "models": ["anthropic/claude-3.5-sonnet", "gryphe/mythomax-l2-13b"],
        "stream": true,
        "stream_options": {"include_usage": true, "include_obfuscation": false},
        "max_tokens": 50,
        "max_completion_tokens": 100,
        "n": 2,
        "temperature": 0.7,
        "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this image?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "low"}},
                {"type": "text", "text": "And \"this\" one?\n"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "c", "content": "42"}
        ]
    })");
    REQUIRE(f.json_ok);
    CHECK(f.bad_param.empty());
    CHECK(f.model == "openai/gpt-4o-mini");
    CHECK(f.fallback_models == std::vector<std::string>{"anthropic/claude-3.5-sonnet", "gryphe/mythomax-l2-13b"});
    CHECK(f.stream);
    CHECK(f.include_usage);
    CHECK(f.max_tokens == 100);  // max_completion_tokens wins, wherever it stands
    CHECK(f.n == 2);
    CHECK(f.message_roles == std::vector<std::string>{"system", "user", "assistant", "tool"});
    CHECK(f.message_texts ==
          std::vector<std::string>{"You are terse.", "What is in this image?\nAnd \"this\" one?\n", "", "42"});
    CHECK(f.input_images == 2);
    CHECK(f.prompt_text.empty());
    CHECK(f.tts_input.empty());
}

TEST_CASE("defaults, null fields and max_tokens alone", "[proxy][request]") {
    auto f = inspect_request(R"({"model":"m","messages":[{"role":"user","content":"hi"}]})");
    REQUIRE(f.json_ok);
    CHECK_FALSE(f.stream);
    CHECK_FALSE(f.include_usage);
    CHECK_FALSE(f.max_tokens);
    CHECK(f.n == 1);
    CHECK(f.fallback_models.empty());

    f = inspect_request(R"({"model":"m","max_tokens":0})");
    CHECK(f.max_tokens == 0);
    f = inspect_request(R"({"max_tokens":300,"max_completion_tokens":null})");
    CHECK(f.max_tokens == 300);

    f = inspect_request(
        R"({"model":null,"models":null,"stream":null,"stream_options":null,"max_tokens":null,"max_completion_tokens":null,"n":null,"messages":null,"prompt":null,"input":null})");
    REQUIRE(f.json_ok);
    CHECK(f.bad_param.empty());
    CHECK(f.model.empty());
    CHECK_FALSE(f.max_tokens);
    CHECK(f.n == 1);

    f = inspect_request(R"({"stream":true,"stream_options":{"include_usage":false}})");
    CHECK(f.stream);
    CHECK_FALSE(f.include_usage);
    f = inspect_request(R"({"stream_options":{}})");
    CHECK_FALSE(f.include_usage);
}

TEST_CASE("wrong types name the field in bad_param", "[proxy][request]") {
    struct wrong {
        const char* body;
        const char* param;
    };
    for (const auto& w : std::initializer_list<wrong>{
             {R"({"max_tokens":"100"})", "max_tokens"},
             {R"({"max_tokens":-1})", "max_tokens"},
             {R"({"max_tokens":1.5})", "max_tokens"},
             {R"({"max_tokens":100.0})", "max_tokens"},
             {R"({"max_tokens":1e3})", "max_tokens"},
             {R"({"max_tokens":99999999999999999999})", "max_tokens"},
             {R"({"max_completion_tokens":true})", "max_completion_tokens"},
             {R"({"n":0})", "n"},
             {R"({"n":"2"})", "n"},
             {R"({"stream":"yes"})", "stream"},
             {R"({"stream":1})", "stream"},
             {R"({"stream_options":true})", "stream_options"},
             {R"({"stream_options":{"include_usage":"true"}})", "stream_options.include_usage"},
             {R"({"model":5})", "model"},
             {R"({"model":["a"]})", "model"},
             {R"({"models":"a"})", "models"},
             {R"({"models":["a",1]})", "models"},
             {R"({"messages":"hi"})", "messages"},
             {R"({"messages":[1]})", "messages"},
             {R"({"messages":[{"role":1,"content":"x"}]})", "messages"},
             {R"({"messages":[{"role":"user","content":5}]})", "messages"},
             {R"({"messages":[{"role":"user","content":["x"]}]})", "messages"},
             {R"({"prompt":{}})", "prompt"},
             {R"({"prompt":["a",{}]})", "prompt"},
             {R"({"input":true})", "input"},
             {R"({"input":[null]})", "input"},
             // the first wrong field is named
             {R"({"n":-1,"max_tokens":"x"})", "n"},
         }) {
        INFO(w.body);
        const auto f = inspect_request(w.body);
        CHECK(f.json_ok);
        CHECK(f.bad_param == w.param);
    }
    const auto f = inspect_request(R"({"max_tokens":"100","n":0})");
    CHECK_FALSE(f.max_tokens);
    CHECK(f.n == 1);
}

TEST_CASE("prompts, embeddings input and TTS input", "[proxy][request]") {
    auto f = inspect_request(R"({"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test"})");
    CHECK(f.prompt_text == "Say this is a test");
    f = inspect_request(R"({"prompt":["one","two"]})");
    CHECK(f.prompt_text == "one\ntwo");
    f = inspect_request(R"({"prompt":[1212, 318, 257]})");
    CHECK(f.json_ok);
    CHECK(f.bad_param.empty());
    CHECK(f.prompt_text.empty());
    f = inspect_request(R"({"input":[[1,2],[3]]})");
    CHECK(f.bad_param.empty());
    CHECK(f.prompt_text.empty());

    f = inspect_request(R"({"model":"text-embedding-3-small","input":["The food was delicious","and the waiter..."],"encoding_format":"base64"})");
    CHECK(f.prompt_text == "The food was delicious\nand the waiter...");
    CHECK(f.tts_input.empty());

    // A string input serves both: the route says which it is.
    f = inspect_request(R"({"model":"tts-1","input":"Hello  world\u00e9","voice":"alloy","response_format":"mp3"})");
    CHECK(f.tts_input == "Hello  world\xC3\xA9");
    CHECK(f.prompt_text == "Hello  world\xC3\xA9");

    f = inspect_request(R"({"prompt":"a","input":"b"})");
    CHECK(f.prompt_text == "a\nb");
}

TEST_CASE("keys are read as the upstream reads them: escapes, last duplicate wins", "[proxy][request]") {
    auto f = inspect_request(R"({"model":"cheap","model":"expensive","max_tokens":1,"max_tokens":9})");
    CHECK(f.model == "expensive");
    CHECK(f.max_tokens == 9);
    f = inspect_request(R"({"mod\u0065l":"x","stre\u0061m":true})");
    CHECK(f.model == "x");
    CHECK(f.stream);
    f = inspect_request(R"({"messages":[{"role":"user","content":"a"}],"messages":[{"role":"user","content":"b"}]})");
    CHECK(f.message_texts == std::vector<std::string>{"b"});
    f = inspect_request(R"({"messages":[{"role":"user","content":[{"type":"image_url","image_url":{}}],"content":"x"}]})");
    CHECK(f.input_images == 0);
    CHECK(f.message_texts == std::vector<std::string>{"x"});
}

TEST_CASE("what is not a JSON object", "[proxy][request]") {
    for (const char* bad : {"", "   ", "[]", "\"model\"", "null", "{", "{\"model\":\"m\"", R"({"model":"m"} x)",
                            R"({"model":"m"}{})", R"({"model":"m",})", R"({"model":"\q"})", "{\"model\":\"\xff\"}",
                            R"({"max_tokens":12x})"}) {
        INFO(bad);
        const auto f = inspect_request(bad);
        CHECK_FALSE(f.json_ok);
        CHECK(f.model.empty());
        CHECK_FALSE(force_include_usage(bad));
    }
    CHECK(inspect_request(" \n{\"model\":\"m\"}\n ").json_ok);
}

TEST_CASE("a body of several MiB", "[proxy][request]") {
    const std::string text(6 * 1024 * 1024, 'w');
    const std::string body = R"({"model":"m","stream":true,"messages":[{"role":"user","content":")" + text + R"("}]})";
    const auto f = inspect_request(body);
    REQUIRE(f.json_ok);
    REQUIRE(f.message_texts.size() == 1);
    CHECK(f.message_texts[0].size() == text.size());
    const auto forced = force_include_usage(body);
    REQUIRE(forced);
    CHECK(*forced == body.substr(0, body.size() - 1) + R"(,"stream_options":{"include_usage":true}})");
}

TEST_CASE("force_include_usage changes only what it must", "[proxy][request]") {
    struct force_case {
        std::string in;
        std::string out;
    };
    const std::vector<force_case> cases = {
        {R"({"model":"m","stream":true})", R"({"model":"m","stream":true,"stream_options":{"include_usage":true}})"},
        {R"({})", R"({"stream_options":{"include_usage":true}})"},
        {"{ \n }", "{\"stream_options\":{\"include_usage\":true} \n }"},
        {"  {\n  \"model\": \"m\",\n  \"stream\": true\n}\n",
         "  {\n  \"model\": \"m\",\n  \"stream\": true,\"stream_options\":{\"include_usage\":true}\n}\n"},
        {R"({"stream":true,"stream_options":null})", R"({"stream":true,"stream_options":{"include_usage":true}})"},
        {R"({"stream":true,"stream_options":{}})", R"({"stream":true,"stream_options":{"include_usage":true}})"},
        {R"({"stream_options":{ },"stream":true})", R"({"stream_options":{"include_usage":true },"stream":true})"},
        {R"({"stream_options":{"include_usage":false},"stream":true})",
         R"({"stream_options":{"include_usage":true},"stream":true})"},
        {R"({"stream_options": { "include_usage" : false , "x":1}})",
         R"({"stream_options": { "include_usage" : true , "x":1}})"},
        {R"({"stream_options":{"include_usage":null}})", R"({"stream_options":{"include_usage":true}})"},
        {R"({"stream_options":{"include_obfuscation":false}})",
         R"({"stream_options":{"include_obfuscation":false,"include_usage":true}})"},
        {R"({"stream_options":{"include_usage":"yes"}})", R"({"stream_options":{"include_usage":true}})"},
        {R"({"stream_options":[1,2]})", R"({"stream_options":{"include_usage":true}})"},
        {R"({"stream_options":"x","a":1})", R"({"stream_options":{"include_usage":true},"a":1})"},
        // strings and nested objects that look like the member are left alone
        {R"({"messages":[{"role":"user","content":"say \"stream_options\":{} }"}],"stream":true})",
         R"({"messages":[{"role":"user","content":"say \"stream_options\":{} }"}],"stream":true,"stream_options":{"include_usage":true}})"},
        {R"({"metadata":{"stream_options":null,"include_usage":false},"stream":true})",
         R"({"metadata":{"stream_options":null,"include_usage":false},"stream":true,"stream_options":{"include_usage":true}})"},
        {R"({"stream_options":{"nested":{"include_usage":false}}})",
         R"({"stream_options":{"nested":{"include_usage":false},"include_usage":true}})"},
        {R"({"a":"\\","b":"\"}{","c":[{"d":"]"}]})",
         R"({"a":"\\","b":"\"}{","c":[{"d":"]"}],"stream_options":{"include_usage":true}})"},
        // an escaped key is the key it spells: no duplicate is added
        {R"({"stream\u005foptions":{"include\u005Fusage":false}})",
         R"({"stream\u005foptions":{"include\u005Fusage":true}})"},
        // a key given twice is edited everywhere
        {R"({"stream_options":{},"stream_options":null})",
         R"({"stream_options":{"include_usage":true},"stream_options":{"include_usage":true}})"},
        {R"({"stream_options":{"include_usage":false,"include_usage":false}})",
         R"({"stream_options":{"include_usage":true,"include_usage":true}})"},
    };
    for (const auto& c : cases) {
        INFO(c.in);
        const auto out = force_include_usage(c.in);
        REQUIRE(out);
        CHECK(*out == c.out);
        // One stream_options, or as many as the body already had.
        CHECK(check_forced(*out) == std::max(1, count_key(c.in, "stream_options")));
        CHECK(inspect_request(*out).include_usage);
    }
    // Already asked for: not a byte changes.
    const std::string asked = R"({"stream":true,"stream_options":{"include_usage":true}})";
    CHECK(force_include_usage(asked) == asked);
}
