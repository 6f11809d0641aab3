// Balances and the calls that move money by hand (SPEC 6): allocate,
// deduct, refund, and the transaction history. Every answer about a
// transaction is read back from the committed row, so a replay of an
// Idempotency-Key answers exactly what the first call did.
#include "admin.hpp"

#include <fmt/format.h>

#include <limits>

namespace tollgate::proxy::admin {

using namespace net;

namespace {

std::string balance_json(const ledger::balance& b) {
    const auto& k = b.by_kind_micros;
    return fmt::format(
        R"({{"user_id":{},"balance_micros":{},"reserved_micros":{},"available_micros":{},"debt_micros":{},"overage_limit_micros":{},"by_kind":{{"refund":{},"bonus":{},"allocated":{},"purchased":{}}},"balance_usd":"{}"}})",
        b.user_id, b.balance_micros, b.reserved_micros, b.available_micros, b.debt_micros, b.overage_limit_micros,
        k[0], k[1], k[2], k[3], usd_text(b.balance_micros));
}

bool same_figures(const ledger::balance& a, const ledger::balance& b) {
    return a.balance_micros == b.balance_micros && a.reserved_micros == b.reserved_micros &&
           a.available_micros == b.available_micros && a.debt_micros == b.debt_micros &&
           a.overage_limit_micros == b.overage_limit_micros && a.by_kind_micros == b.by_kind_micros;
}

// The ledger's Idempotency-Key for this caller: keys are scoped to who sent them.
std::string scoped_key(const call& c) {
    return c.idempotency_key.empty() ? std::string() : fmt::format("{} {}", c.p.name(), c.idempotency_key);
}

// `{"transaction": …, "balance_micros": …}` from the committed row.
awaitable<void> answer_transaction(call& c, std::int64_t user_id, std::int64_t transaction_id,
                                   std::int64_t balance_micros) {
    const auto t = c.x.a.ledger.find_transaction(user_id, transaction_id);
    if (!t) {
        co_await reply_error(c.x, 500, "storage_failed", "The transaction could not be read back");
        co_return;
    }
    co_await answer_json(c, 201,
                         fmt::format(R"({{"transaction":{},"balance_micros":{}}})", transaction_json(*t), balance_micros));
}

constexpr std::int64_t max_id = std::numeric_limits<std::int64_t>::max();

}  // namespace

awaitable<void> balance(call& c) {
    const auto user = co_await subject(c);
    if (!user) co_return;
    const auto b = c.x.a.ledger.get_balance(*user);
    if (!b) co_return co_await answer_ledger_error(c, ledger::result::unknown_user);
    co_await answer_json(c, 200, balance_json(*b));
}

// Server-sent events: the balance at once, then again whenever one of its
// figures changes (looked at every 200 ms in the in-memory book, so changes
// closer together than that arrive as one event with the newest figures),
// and a comment every 15 s so proxies keep the connection. Ends when the
// client leaves or the server shuts down.
awaitable<void> balance_stream(call& c) {
    const auto user = co_await subject(c);
    if (!user) co_return;
    auto& x = c.x;
    auto last = x.a.ledger.get_balance(*user);
    if (!last) co_return co_await answer_ledger_error(c, ledger::result::unknown_user);

    http::response<http::empty_body> head{http::status::ok, x.req.version()};
    common_headers(x, head);
    head.set(http::field::content_type, "text/event-stream");
    head.set(http::field::cache_control, "no-cache");
    head.chunked(true);
    x.status = 200;
    x.keep_alive = false;  // the stream ends with the connection
    head.keep_alive(false);
    http::response_serializer<http::empty_body> sr{head};
    beast::error_code ec;
    co_await client_write(x, ec, [&](auto& socket) -> awaitable<void> {
        co_await http::async_write_header(socket, sr, asio::redirect_error(use_awaitable, ec));
    });
    std::string event = fmt::format("event: balance\ndata: {}\n\n", balance_json(*last));
    asio::steady_timer tick(x.client.socket.get_executor());
    auto quiet = std::chrono::steady_clock::now();
    while (!ec) {
        if (!event.empty()) {
            co_await client_write(x, ec, [&](auto& socket) -> awaitable<void> {
                co_await asio::async_write(socket, http::make_chunk(asio::buffer(event)),
                                           asio::redirect_error(use_awaitable, ec));
            });
            event.clear();
            quiet = std::chrono::steady_clock::now();
            if (ec) break;
        }
        if (x.a.draining) break;
        tick.expires_after(std::chrono::milliseconds(200));
        co_await tick.async_wait(asio::redirect_error(use_awaitable, ec));
        if (ec) break;
        const auto now = x.a.ledger.get_balance(*user);
        if (!now) break;
        if (!same_figures(*now, *last)) {
            event = fmt::format("event: balance\ndata: {}\n\n", balance_json(*now));
            last = now;
        } else if (std::chrono::steady_clock::now() - quiet > std::chrono::seconds(15)) {
            event = ": keep-alive\n\n";
        }
    }
    if (!ec) {
        co_await client_write(x, ec, [&](auto& socket) -> awaitable<void> {
            co_await asio::async_write(socket, http::make_chunk_last(), asio::redirect_error(use_awaitable, ec));
        });
    }
}

awaitable<void> allocate(call& c) {
    body b(c.x.req.body());
    const auto user_id = b.integer("user_id", true, 1, max_id);
    const auto amount = b.integer("amount_micros", true, 1, ledger::max_amount_micros);
    const auto kind_text = b.text("kind", false, 32);
    const auto expires = b.time("expires_at", false);
    const auto reason = b.text("reason", false);
    std::optional<ledger::grant_kind> kind = ledger::grant_kind::purchased;
    if (kind_text) {
        kind = ledger::parse_grant_kind(*kind_text);
        if (!kind) b.refuse("kind", "'kind' must be refund, bonus, allocated or purchased");
    }
    if (b.failed()) co_return co_await answer_refusal(c.x, b);
    const auto user = co_await subject(c, user_id);
    if (!user) co_return;
    ledger::grant_request g;
    g.user_id = *user;
    g.amount_micros = *amount;
    g.kind = *kind;
    g.expires_at_ms = expires;
    g.reason = reason.value_or("");
    g.source = "admin";
    g.actor = c.p.name();
    g.idempotency_key = scoped_key(c);
    const auto out = c.x.a.ledger.grant(g);
    if (out.code == ledger::result::grant_expired) {
        co_await reply_error(c.x, 400, "invalid_value", "'expires_at' must be in the future", "expires_at");
        co_return;
    }
    if (out.code != ledger::result::ok) co_return co_await answer_ledger_error(c, out.code, "Idempotency-Key");
    if (!co_await durable(c.x.a, out.seq)) {
        co_await reply_error(c.x, 500, "storage_failed", "The grant was not stored");
        co_return;
    }
    co_await answer_transaction(c, *user, out.transaction_id, out.balance_micros);
}

awaitable<void> transactions(call& c) {
    const auto user = co_await subject(c);
    if (!user) co_return;
    const auto page = co_await read_page(c);
    if (!page) co_return;
    ledger::transaction_query q;
    q.user_id = *user;
    q.limit = page->limit;
    q.after_id = page->after_id;
    if (const auto type = query_param(c.target, "type"); !type.empty()) {
        if (type != "grant" && type != "charge" && type != "deduct" && type != "expire" && type != "refund" &&
            type != "reconcile" && type != "debt") {
            co_await reply_error(c.x, 400, "invalid_value",
                                 "'type' must be grant, charge, deduct, expire, refund, reconcile or debt", "type");
            co_return;
        }
        q.type = type;
    }
    for (const auto name : window_ends) {
        const auto text = query_param(c.target, name);
        if (text.empty()) continue;
        const auto ms = parse_time(text);
        if (!ms) {
            co_await reply_error(c.x, 400, "invalid_value",
                                 fmt::format("'{}' must be an RFC 3339 time or a YYYY-MM-DD date", name), name);
            co_return;
        }
        (name == "from" ? q.from_ms : q.to_ms) = *ms;
    }
    const auto rows = c.x.a.ledger.transactions(q);
    if (rows.code != ledger::result::ok) co_return co_await answer_ledger_error(c, rows.code);
    std::string out = R"({"data":[)";
    for (std::size_t i = 0; i < rows.rows.size(); ++i) {
        if (i) out += ',';
        out += transaction_json(rows.rows[i]);
    }
    out += fmt::format(R"(],"next_cursor":{}}})", json_int_or_null(rows.next_cursor));
    co_await answer_json(c, 200, std::move(out));
}

// An immediate debit without a hold (402 when available does not cover
// it). `event_id` is unique forever: a replay answers the first result.
awaitable<void> deduct(call& c) {
    body b(c.x.req.body());
    const auto user_id = b.integer("user_id", true, 1, max_id);
    const auto amount = b.integer("amount_micros", true, 1, ledger::max_amount_micros);
    const auto reason = b.text("reason", false);
    const auto event_id = b.text("event_id", true, 255);
    if (event_id && event_id->empty()) b.refuse("event_id", "'event_id' must not be empty");
    if (b.failed()) co_return co_await answer_refusal(c.x, b);
    const auto user = co_await subject(c, user_id);
    if (!user) co_return;
    if (!co_await claim_idempotency_key(c)) co_return;
    ledger::deduct_request r;
    r.user_id = *user;
    r.amount_micros = *amount;
    r.event_id = *event_id;
    r.actor = c.p.name();
    r.reason = reason.value_or("");
    const auto out = c.x.a.ledger.deduct(r);
    if (out.code != ledger::result::ok) co_return co_await answer_ledger_error(c, out.code, "event_id");
    co_await answer_transaction(c, *user, out.first_transaction_id, out.balance_micros);
}

// A `refund` grant linked to the charge it corrects (a transaction or a
// usage event of this user); refunds of one charge never exceed it.
awaitable<void> refund(call& c) {
    body b(c.x.req.body());
    const auto user_id = b.integer("user_id", true, 1, max_id);
    const auto amount = b.integer("amount_micros", true, 1, ledger::max_amount_micros);
    const auto transaction_id = b.integer("transaction_id", false, 1, max_id);
    const auto usage_event_id = b.integer("usage_event_id", false, 1, max_id);
    const auto reason = b.text("reason", false);
    if (!b.failed() && transaction_id.has_value() == usage_event_id.has_value()) {
        b.refuse("transaction_id", "Name the charge by exactly one of 'transaction_id' and 'usage_event_id'");
    }
    if (b.failed()) co_return co_await answer_refusal(c.x, b);
    const auto user = co_await subject(c, user_id);
    if (!user) co_return;
    ledger::refund_request r;
    r.user_id = *user;
    r.amount_micros = *amount;
    r.transaction_id = transaction_id;
    r.usage_event_id = usage_event_id;
    r.actor = c.p.name();
    r.reason = reason.value_or("");
    r.idempotency_key = scoped_key(c);
    const auto out = c.x.a.ledger.refund(r);
    if (out.code != ledger::result::ok) {
        co_return co_await answer_ledger_error(c, out.code, transaction_id ? "transaction_id" : "usage_event_id");
    }
    if (!co_await durable(c.x.a, out.seq)) {
        co_await reply_error(c.x, 500, "storage_failed", "The refund was not stored");
        co_return;
    }
    co_await answer_transaction(c, *user, out.transaction_id, out.balance_micros);
}

}  // namespace tollgate::proxy::admin
