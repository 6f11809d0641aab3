// Prefix routes (SPEC 5): `/center-deep/…` searches and `/brigade/…` agent
// invocations, forwarded with the prefix stripped and charged a fixed price
// per request when the service answers 2xx.
#include "calls.hpp"
#include "tollgate/proxy/headers.hpp"

#include <fmt/format.h>

namespace tollgate::proxy {

using namespace net;

awaitable<void> prefix_call(exchange& x, std::size_t index) {
    auto& a = x.a;
    const auto& route = a.settings.routes[index];
    auto& pool = *x.w.routes[index];
    const auto who = co_await admit_caller(x);
    if (!who) co_return;
    const auto started = std::chrono::steady_clock::now();
    const auto held = a.ledger.reserve(who->user_id, route.price_micros, x.request_id);
    if (held.code == ledger::result::insufficient_credits) {
        a.stats.holds_refused++;
        co_await reply_error(x, 402, "insufficient_credits",
                             fmt::format("Insufficient credits: this call costs ${} and ${} is available",
                                         usd_text(route.price_micros),
                                         usd_text(std::max<std::int64_t>(0, held.available_micros))));
        co_return;
    }
    if (held.code != ledger::result::ok || !co_await durable(a, held.seq)) {
        if (held.code == ledger::result::ok) a.ledger.release(held.hold_id);
        co_await reply_error(x, 503, "ledger_unavailable", "The ledger cannot take holds right now");
        co_return;
    }
    std::string_view target(x.req.target().data(), x.req.target().size());
    target.remove_prefix(route.prefix.size());
    http::request<http::string_body> up{x.req.method(), pool.url().base_path + std::string(target.empty() ? "/" : target),
                                        11};
    copy_request_headers(x.req.base(), up.base());
    up.set(http::field::host, pool.host_header());
    if (!route.key.empty()) up.set(http::field::authorization, "Bearer " + route.key);
    up.body() = x.req.body();
    up.prepare_payload();
    beast::error_code ec;
    upstream_failure failure{};
    auto conn = co_await pool.acquire(ec, failure);
    http::response_parser<http::string_body> parser;
    parser.body_limit(32u << 20);
    beast::flat_buffer buffer;
    if (conn) {
        expire_after(*conn, a.settings.first_byte_timeout);
        co_await send_request(*conn, up, ec);
        if (!ec) {
            // Whole answers only: these services answer JSON, not streams.
            co_await read_whole(*conn, buffer, parser, ec);
        }
    }
    if (!conn || ec) {
        a.ledger.release(held.hold_id);
        a.stats.count_upstream_failure(conn ? upstream_failure::reset : failure);
        if (conn) close_hard(*conn);
        const bool timeout = ec == beast::error::timeout;
        co_await reply_error(x, timeout ? 504 : 502, timeout ? "upstream_timeout" : "upstream_error",
                             fmt::format("The {} service did not answer: {}", route.service, ec.message()));
        co_return;
    }
    if (parser.get().keep_alive()) pool.give_back(std::move(conn));
    const unsigned status = parser.get().result_int();
    std::optional<ledger::charge_outcome> charged;
    if (status >= 200 && status < 300) {
        ledger::usage_event ev;
        ev.request_id = x.request_id;
        ev.key_id = who->key_id;
        ev.service = route.service;
        ev.upstream = route.prefix.substr(1);
        ev.model = route.service;
        ev.units = 1;
        ev.provider_cost_micros = route.price_micros;
        ev.price_source = "fixed";
        ev.latency_ms =
            std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - started).count();
        const auto out = a.ledger.settle(held.hold_id, route.price_micros, ev);
        if (out.code != ledger::result::ok || !co_await durable(a, out.seq)) {
            co_await reply_error(x, 500, "ledger_unavailable", "The call ran but its charge could not be recorded");
            co_return;
        }
        a.stats.count_charge(out.charged_micros, 0);
        charged = out;
    } else {
        a.ledger.release(held.hold_id);
        a.stats.count_upstream_failure(upstream_failure::http_error);
    }
    http::response<http::string_body> res{static_cast<http::status>(status), x.req.version()};
    copy_answer_headers(parser.get().base(), res.base());
    common_headers(x, res);
    if (charged) {
        res.set("x-tollgate-charged-micros", std::to_string(charged->charged_micros));
        res.set("x-tollgate-balance-micros", std::to_string(charged->balance_micros));
    }
    res.body() = std::move(parser.get().body());
    res.prepare_payload();
    co_await send_answer(x, res);
}

}  // namespace tollgate::proxy
