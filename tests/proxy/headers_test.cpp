// Header rewriting (SPEC 5 transparency): what crosses tollgate each way.
#include "tollgate/proxy/headers.hpp"

#include <catch2/catch.hpp>

using namespace tollgate::net;
using tollgate::proxy::copy_answer_headers;
using tollgate::proxy::copy_request_headers;

TEST_CASE("a client's request reaches the upstream without its credential and hop-by-hop headers", "[headers]") {
    http::fields from;
    from.set("Authorization", "Bearer tg_secret");
    from.set("x-litellm-api-key", "sk-client");
    from.set("Host", "tollgate.local");
    from.set("Connection", "keep-alive, x-custom-hop");
    from.set("Keep-Alive", "timeout=5");
    from.set("Transfer-Encoding", "chunked");
    from.set("Content-Length", "17");
    from.set("Accept-Encoding", "gzip, br");
    from.set("TE", "trailers");
    from.set("Upgrade", "h2c");
    from.set("Expect", "100-continue");
    from.set("Proxy-Authorization", "Basic x");
    from.set("Content-Type", "application/json");
    from.set("User-Agent", "OpenAI/JS 6.9.0");
    from.set("X-Stainless-Retry-Count", "0");
    from.set("HTTP-Referer", "https://app.example");
    from.set("X-Title", "My app");
    from.set("x-mock-tokens", "3");
    from.insert("X-Repeated", "a");
    from.insert("X-Repeated", "b");

    http::fields to;
    copy_request_headers(from, to);
    for (const char* gone : {"Authorization", "x-litellm-api-key", "Host", "Connection", "Keep-Alive",
                             "Transfer-Encoding", "Content-Length", "Accept-Encoding", "TE", "Upgrade", "Expect",
                             "Proxy-Authorization"}) {
        INFO(gone);
        CHECK(to.find(gone) == to.end());
    }
    CHECK(to["Content-Type"] == "application/json");
    CHECK(to["User-Agent"] == "OpenAI/JS 6.9.0");
    CHECK(to["X-Stainless-Retry-Count"] == "0");
    CHECK(to["HTTP-Referer"] == "https://app.example");
    CHECK(to["X-Title"] == "My app");
    CHECK(to["x-mock-tokens"] == "3");
    CHECK(to.count("X-Repeated") == 2);
}

TEST_CASE("an upstream's answer reaches the client without hop-by-hop headers; its request id is kept aside",
          "[headers]") {
    http::fields from;
    from.set("Content-Type", "text/event-stream");
    from.set("Transfer-Encoding", "chunked");
    from.set("Content-Length", "5");
    from.set("Connection", "close");
    from.set("Server", "cloudflare");
    from.set("Date", "Tue, 24 Nov 2026 08:00:00 GMT");
    from.set("x-request-id", "upstream-123");
    from.set("X-Generation-Id", "gen-abc");
    from.set("x-litellm-response-cost", "7.1e-05");
    from.set("X-RateLimit-Remaining", "10");
    from.set("Cache-Control", "no-cache");

    http::fields to;
    copy_answer_headers(from, to);
    for (const char* gone : {"Transfer-Encoding", "Content-Length", "Connection", "Server", "Date", "x-request-id"}) {
        INFO(gone);
        CHECK(to.find(gone) == to.end());
    }
    CHECK(to["x-upstream-request-id"] == "upstream-123");
    CHECK(to["Content-Type"] == "text/event-stream");
    CHECK(to["X-Generation-Id"] == "gen-abc");
    CHECK(to["x-litellm-response-cost"] == "7.1e-05");
    CHECK(to["X-RateLimit-Remaining"] == "10");
    CHECK(to["Cache-Control"] == "no-cache");
}
