// Reading admin API requests (proxy/src/admin_input.cpp): times, query
// parameters and the typed reading of JSON bodies.
#include "admin_input.hpp"

#include <catch2/catch.hpp>

#include <limits>

using namespace tollgate::proxy::admin;

TEST_CASE("parse_time: RFC 3339 times and dates, as Unix ms UTC") {
    CHECK(parse_time("1970-01-01") == 0);
    CHECK(parse_time("2026-11-24") == 1'795'478'400'000);
    CHECK(parse_time("2026-11-24T00:00:00Z") == 1'795'478'400'000);
    CHECK(parse_time("2026-11-24t10:30:15z") == 1'795'478'400'000 + (10 * 3600 + 30 * 60 + 15) * 1000LL);
    CHECK(parse_time("2026-11-24T10:30:15.5Z") == 1'795'478'400'000 + (10 * 3600 + 30 * 60 + 15) * 1000LL + 500);
    CHECK(parse_time("2026-11-24T10:30:15.123456789Z") ==
          1'795'478'400'000 + (10 * 3600 + 30 * 60 + 15) * 1000LL + 123);
    CHECK(parse_time("2026-11-24T02:00:00+02:00") == 1'795'478'400'000);
    CHECK(parse_time("2026-11-23T22:00:00-02:00") == 1'795'478'400'000);
    CHECK(parse_time("2024-02-29") == 1'709'164'800'000);  // a leap day
    CHECK(parse_time("2000-02-29").has_value());           // divisible by 400: leap
    CHECK(parse_time("9999-12-31T23:59:59Z").has_value());
}

TEST_CASE("parse_time: refuses what is not a valid time") {
    for (const char* bad : {"", "2026", "2026-11", "2026-13-01", "2026-00-10", "2026-11-31", "2023-02-29",
                            "1900-02-29", "1969-12-31", "2026-11-24T", "2026-11-24T24:00:00Z", "2026-11-24T10:60:00Z",
                            "2026-11-24T10:00:60Z", "2026-11-24T10:00:00", "2026-11-24T10:00:00.Z",
                            "2026-11-24T10:00:00+2:00", "2026-11-24T10:00:00+24:00", "2026-11-24T10:00:00Zjunk",
                            "2026-11-24junk", "2026/11/24", "-2026-11-24", "２０２６-11-24", "2026-1a-24"}) {
        INFO(bad);
        CHECK_FALSE(parse_time(bad).has_value());
    }
}

TEST_CASE("rfc3339 and day_of write what parse_time reads") {
    for (const std::int64_t ms : {0LL, 1'795'478'400'000LL, 1'795'516'215'123LL, 253'402'300'799'999LL}) {
        CHECK(parse_time(rfc3339(ms)) == ms);
        CHECK(parse_time(day_of(ms)) == ms - ms % 86'400'000);
    }
    CHECK(rfc3339(1'795'516'215'123) == "2026-11-24T10:30:15.123Z");
}

TEST_CASE("query_param: finds a parameter and percent-decodes it") {
    const std::string_view t = "/api/v1/x?user_id=12&from=2026-11-24T10%3A00%3A00%2B02%3A00&empty=&q=a+b&bad=%zz%4";
    CHECK(query_param(t, "user_id") == "12");
    CHECK(query_param(t, "from") == "2026-11-24T10:00:00+02:00");
    CHECK(query_param(t, "empty").empty());
    CHECK(query_param(t, "missing").empty());
    CHECK(query_param(t, "q") == "a+b");  // a plus is a plus (a time's offset), not a space
    CHECK(query_param(t, "bad") == "%zz%4");  // not an escape: kept as it is
    CHECK(query_param("/api/v1/x", "user_id").empty());
    CHECK(query_param("/api/v1/x?user_id", "user_id").empty());
}

TEST_CASE("body: members read with their types checked, the first problem named") {
    SECTION("well-typed members") {
        body b(R"({"email":"a@b.c","amount_micros":1500000,"scopes":["meter","billing"],"extra":{"x":[1,2]},"n":null})");
        CHECK(b.text("email", true) == "a@b.c");
        CHECK(b.integer("amount_micros", true, 1, 2'000'000) == 1'500'000);
        CHECK(b.string_list("scopes", true) == std::vector<std::string>{"meter", "billing"});
        CHECK_FALSE(b.text("name", false).has_value());  // absent and optional
        CHECK_FALSE(b.text("n", false).has_value());     // null is absent
        CHECK_FALSE(b.failed());
    }
    SECTION("missing required") {
        body b(R"({"amount_micros":1})");
        CHECK_FALSE(b.integer("user_id", true, 1, 10).has_value());
        CHECK(b.failed());
        CHECK(b.code() == "missing_required_parameter");
        CHECK(b.param() == "user_id");
        // Later problems do not overwrite the first.
        CHECK_FALSE(b.integer("amount_micros", true, 5, 10).has_value());
        CHECK(b.param() == "user_id");
    }
    SECTION("wrong type") {
        body b(R"({"amount_micros":"100"})");
        CHECK_FALSE(b.integer("amount_micros", true, 1, 10).has_value());
        CHECK(b.code() == "invalid_type");
        CHECK(b.param() == "amount_micros");
    }
    SECTION("out of range, fractions and numbers beyond int64") {
        for (const char* text : {R"({"a":0})", R"({"a":11})", R"({"a":-1})", R"({"a":1.5})", R"({"a":1e3})",
                                 R"({"a":99999999999999999999})", R"({"a":-99999999999999999999})"}) {
            INFO(text);
            body b(text);
            CHECK_FALSE(b.integer("a", true, 1, 10).has_value());
            CHECK(b.code() == "invalid_value");
            CHECK(b.param() == "a");
        }
        body b(R"({"a":9223372036854775807})");
        CHECK(b.integer("a", true, 0, std::numeric_limits<std::int64_t>::max()) ==
              std::numeric_limits<std::int64_t>::max());
    }
    SECTION("too long a text") {
        body b(R"({"reason":"0123456789"})");
        CHECK_FALSE(b.text("reason", false, 9).has_value());
        CHECK(b.param() == "reason");
    }
    SECTION("a list that is not all strings") {
        body b(R"({"scopes":["meter",1]})");
        CHECK_FALSE(b.string_list("scopes", true).has_value());
        CHECK(b.code() == "invalid_type");
    }
    SECTION("times") {
        body b(R"({"at":"2026-11-24","bad":"2026-02-30"})");
        CHECK(b.time("at", true) == 1'795'478'400'000);
        CHECK_FALSE(b.time("bad", true).has_value());
        CHECK(b.param() == "bad");
    }
    SECTION("escaped keys and values are read unescaped") {
        body b(R"({"\u0065mail":"a\u0040b.c"})");
        CHECK(b.text("email", true) == "a@b.c");
    }
}

TEST_CASE("body: what is not a JSON object is refused as a whole") {
    const std::string deep = "{\"x\":" + std::string(100, '[') + std::string(100, ']') + "}";
    for (const std::string& text :
         {std::string(), std::string("[]"), std::string("12"), std::string("\"x\""), std::string("{"),
          std::string("{\"a\":}"), std::string("{\"a\":1,}"), std::string("nul"), std::string("{\"a\" 1}"),
          // Malformed members nobody reads, trailing content, too deep.
          std::string("{\"a\":1} x"), std::string("{\"a\":1}{}"), std::string("{\"x\":[1 2]}"),
          std::string("{\"x\":{\"a\" 1}}"), std::string("{\"x\":[}"), std::string("{\"x\":[\"s\",tru]}"),
          std::string("{\"x\":01}"), std::string("{\"a\":99999999999999999999,\"x\":[1 2]}"), deep}) {
        INFO(text);
        body b(text);
        CHECK(b.failed());
        CHECK(b.code() == "invalid_json");
        CHECK(b.param().empty());
    }
}
