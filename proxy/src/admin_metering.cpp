// Usage from outside the proxy (metering/track), the usage reports (all
// from the daily rollups, never the raw events) and the audit log (SPEC 6).
#include "admin.hpp"
#include "provisioning.hpp"

#include "tollgate/pricing/cost.hpp"

#include <fmt/format.h>

#include <limits>

namespace tollgate::proxy::admin {

using namespace net;

namespace {

constexpr std::int64_t max_id = std::numeric_limits<std::int64_t>::max();
// metering/track's provider cost: up to $1e6 per event, so its pico-USD
// figure (x 1e6) stays far inside int64.
constexpr std::int64_t max_track_cost_micros = 1'000'000'000'000;

bool valid_service_name(std::string_view s) {
    if (s.empty() || s.size() > 32) return false;
    for (const char ch : s) {
        const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
        if (!ok) return false;
    }
    return true;
}

std::string totals_fields(const ledger::usage_totals& t) {
    return fmt::format(
        R"("requests":{},"prompt_tokens":{},"completion_tokens":{},"provider_cost_micros":{},"markup_micros":{},"charged_micros":{},"refunded_micros":{})",
        t.requests, t.prompt_tokens, t.completion_tokens, t.provider_cost_micros, t.markup_micros, t.charged_micros,
        t.refunded_micros);
}

void add(ledger::usage_totals& to, const ledger::usage_totals& t) {
    to.requests += t.requests;
    to.prompt_tokens += t.prompt_tokens;
    to.completion_tokens += t.completion_tokens;
    to.provider_cost_micros += t.provider_cost_micros;
    to.markup_micros += t.markup_micros;
    to.charged_micros += t.charged_micros;
    to.refunded_micros += t.refunded_micros;
}

struct report_window {
    std::int64_t user_id = 0;
    std::string from_day;  // both included
    std::string to_day;
};

// The user and the days a report covers: `from` and `to` as RFC 3339 times
// or dates, each taken as its UTC day; by default this calendar month so far.
awaitable<std::optional<report_window>> read_window(call& c) {
    const auto user = co_await subject(c);
    if (!user) co_return std::nullopt;
    report_window w;
    w.user_id = *user;
    const auto today = day_of(c.x.a.ledger.now_ms());
    w.from_day = today.substr(0, 8) + "01";
    w.to_day = today;
    for (const auto name : window_ends) {
        const auto text = query_param(c.target, name);
        if (text.empty()) continue;
        const auto ms = parse_time(text);
        if (!ms) {
            co_await reply_error(c.x, 400, "invalid_value",
                                 fmt::format("'{}' must be an RFC 3339 time or a YYYY-MM-DD date", name), name);
            co_return std::nullopt;
        }
        (name == "from" ? w.from_day : w.to_day) = day_of(*ms);
    }
    if (w.from_day > w.to_day) {
        co_await reply_error(c.x, 400, "invalid_value", "'from' must not be after 'to'", "from");
        co_return std::nullopt;
    }
    co_return w;
}

std::string window_fields(const report_window& w) {
    return fmt::format(R"("user_id":{},"from":"{}","to":"{}")", w.user_id, w.from_day, w.to_day);
}

}  // namespace

// An external usage event, priced and debited. Usage that happened is owed
// whatever the balance, so it is charged in full (any shortfall becomes
// debt, as with a proxied call that outran its hold).
awaitable<void> track(call& c) {
    body b(c.x.req.body());
    const auto event_id = b.text("event_id", true, 255);
    const auto user_id = b.integer("user_id", true, 1, max_id);
    const auto service = b.text("service", true, 32);
    const auto model = b.text("model", false, 256);
    const auto prompt = b.integer("prompt_tokens", false, 0, ledger::max_usage_count);
    const auto completion = b.integer("completion_tokens", false, 0, ledger::max_usage_count);
    const auto units = b.integer("units", false, 0, ledger::max_usage_count);
    const auto cost = b.integer("provider_cost_micros", false, 0, max_track_cost_micros);
    const auto occurred = b.time("occurred_at", false);
    if (event_id && event_id->empty()) b.refuse("event_id", "'event_id' must not be empty");
    if (service && !valid_service_name(*service)) {
        b.refuse("service", "'service' must be 1 to 32 characters of a-z, 0-9, '_' and '-'");
    }
    const auto now = c.x.a.ledger.now_ms();
    if (occurred && (*occurred > now + 5 * 60'000 || *occurred < now - 400LL * 86'400'000)) {
        b.refuse("occurred_at", "'occurred_at' must lie within the last 400 days and not in the future");
    }
    const auto price = service ? c.x.a.settings.service_prices.find(*service) : c.x.a.settings.service_prices.end();
    if (!b.failed() && !cost && price == c.x.a.settings.service_prices.end()) {
        b.refuse("provider_cost_micros",
                 fmt::format("No price is configured for service '{}': send 'provider_cost_micros'", *service));
    }
    if (b.failed()) co_return co_await answer_refusal(c.x, b);
    const auto user = co_await subject(c, user_id);
    if (!user) co_return;
    const auto sub = c.x.a.ledger.find_subscription(*user);
    const auto policy = sub ? c.x.a.keys.policy(sub->tier) : std::nullopt;
    if (!policy) co_return co_await answer_ledger_error(c, ledger::result::unknown_user);

    ledger::usage_event e;
    e.service = *service;
    e.upstream = "external";
    e.model = model.value_or("");
    e.prompt_tokens = prompt.value_or(0);
    e.completion_tokens = completion.value_or(0);
    e.units = units.value_or(0);
    std::int64_t charged = 0;
    if (cost) {
        // The tier's paid-model markup on the reported cost; the free tier
        // has none (SPEC 6).
        auto tier = *policy;
        if (tier.free_models_only) tier.markup_paid_bps = 0;
        const auto priced =
            pricing::price_call(*cost * 1'000'000, false, e.prompt_tokens + e.completion_tokens, tier, false);
        e.provider_cost_micros = *cost;
        e.markup_micros = priced.charged_micros - *cost;
        e.price_source = "upstream";
        charged = priced.charged_micros;
    } else {
        // A configured price per unit; an event without units is one.
        if (__builtin_mul_overflow(price->second, std::max<std::int64_t>(1, e.units), &charged) ||
            charged > ledger::max_amount_micros) {
            co_await reply_error(c.x, 400, "invalid_value", "'units' times the service's price is too large", "units");
            co_return;
        }
        e.provider_cost_micros = charged;
        e.price_source = "fixed";
    }
    if (!co_await claim_idempotency_key(c)) co_return;
    ledger::deduct_request r;
    r.user_id = *user;
    r.amount_micros = charged;
    r.event_id = *event_id;
    r.service = *service;
    r.actor = c.p.name();
    r.reason = fmt::format("metering/track {}", *service);
    r.usage = e;
    r.occurred_at_ms = occurred;
    r.allow_debt = true;
    const auto out = c.x.a.ledger.deduct(r);
    if (out.code != ledger::result::ok) co_return co_await answer_ledger_error(c, out.code, "event_id");
    std::string transaction = "null";
    if (out.first_transaction_id) {
        const auto t = c.x.a.ledger.find_transaction(*user, out.first_transaction_id);
        if (t) transaction = transaction_json(*t);
    }
    co_await answer_json(
        c, 201,
        fmt::format(
            R"({{"event_id":"{}","usage_event_id":{},"charged_micros":{},"provider_cost_micros":{},"markup_micros":{},"transaction":{},"balance_micros":{}}})",
            json_escape(*event_id), out.usage_event_id, out.charged_micros, e.provider_cost_micros, e.markup_micros,
            transaction, out.balance_micros));
}

awaitable<void> usage_summary(call& c) {
    const auto w = co_await read_window(c);
    if (!w) co_return;
    const auto s = c.x.a.ledger.summarize_usage(w->user_id, w->from_day, w->to_day);
    if (s.code != ledger::result::ok) co_return co_await answer_ledger_error(c, s.code);
    std::string by_service;
    for (const auto& [service, totals] : s.by_service) {
        if (!by_service.empty()) by_service += ',';
        by_service += fmt::format(R"("{}":{{{}}})", json_escape(service), totals_fields(totals));
    }
    co_await answer_json(c, 200,
                         fmt::format(R"({{{},{},"by_service":{{{}}}}})", window_fields(*w), totals_fields(s.total),
                                     by_service));
}

namespace {
awaitable<void> breakdown(call& c, ledger::usage_grouping by) {
    const auto w = co_await read_window(c);
    if (!w) co_return;
    const auto granularity = query_param(c.target, "granularity");
    if (by != ledger::usage_grouping::model) {
        if (granularity == "month") {
            by = ledger::usage_grouping::month;
        } else if (!granularity.empty() && granularity != "day") {
            co_await reply_error(c.x, 400, "invalid_value", "'granularity' must be day or month", "granularity");
            co_return;
        }
    }
    const auto rows = c.x.a.ledger.break_down_usage(w->user_id, w->from_day, w->to_day, by);
    if (rows.code != ledger::result::ok) co_return co_await answer_ledger_error(c, rows.code);
    const char* key = by == ledger::usage_grouping::model ? "model" : "date";
    std::string data;
    for (const auto& [name, totals] : rows.rows) {
        if (!data.empty()) data += ',';
        data += fmt::format(R"({{"{}":"{}",{}}})", key, json_escape(name), totals_fields(totals));
    }
    const auto grouping =
        by == ledger::usage_grouping::model
            ? std::string()
            : fmt::format(R"(,"granularity":"{}")", by == ledger::usage_grouping::month ? "month" : "day");
    co_await answer_json(c, 200, fmt::format(R"({{{}{},"data":[{}]}})", window_fields(*w), grouping, data));
}
}  // namespace

awaitable<void> usage_by_model(call& c) {
    co_await breakdown(c, ledger::usage_grouping::model);
}

awaitable<void> usage_by_date(call& c) {
    co_await breakdown(c, ledger::usage_grouping::day);
}

// Free-model usage and the flat micro-markup paid on it, beside the user's
// provisioned OpenRouter key as last synced (`openrouter`; null without one).
awaitable<void> free_tier(call& c) {
    const auto w = co_await read_window(c);
    if (!w) co_return;
    const auto rows = c.x.a.ledger.break_down_usage(w->user_id, w->from_day, w->to_day, ledger::usage_grouping::model);
    if (rows.code != ledger::result::ok) co_return co_await answer_ledger_error(c, rows.code);
    const auto live = c.x.a.catalog.get();
    ledger::usage_totals total;
    std::string data;
    // OpenRouter's own figures for the user's key, as last synced.
    const auto account = c.x.a.ledger.find_openrouter_account(w->user_id);
    const std::string key_figures = account ? openrouter::account_json(*account) : "null";
    for (const auto& [model, totals] : rows.rows) {
        if (!model_is_free(*live, model)) continue;
        add(total, totals);
        if (!data.empty()) data += ',';
        data += fmt::format(R"({{"model":"{}",{}}})", json_escape(model), totals_fields(totals));
    }
    co_await answer_json(
        c, 200,
        fmt::format(
            R"({{{},"requests":{},"prompt_tokens":{},"completion_tokens":{},"markup_micros":{},"charged_micros":{},"data":[{}],"openrouter":{}}})",
            window_fields(*w), total.requests, total.prompt_tokens, total.completion_tokens, total.markup_micros,
            total.charged_micros, data, key_figures));
}

awaitable<void> audit_log(call& c) {
    const auto page = co_await read_page(c);
    if (!page) co_return;
    const auto rows = c.x.a.ledger.audit_log(page->after_id, page->limit);
    if (rows.code != ledger::result::ok) co_return co_await answer_ledger_error(c, rows.code);
    std::string out = R"({"data":[)";
    for (std::size_t i = 0; i < rows.rows.size(); ++i) {
        const auto& e = rows.rows[i];
        if (i) out += ',';
        out += fmt::format(
            R"({{"id":{},"actor":"{}","action":"{}","target":"{}","detail":"{}","client_address":"{}","created_at":"{}"}})",
            e.id, json_escape(e.actor), json_escape(e.action), json_escape(e.target), json_escape(e.detail),
            json_escape(e.client_address), rfc3339(e.created_at_ms));
    }
    out += fmt::format(R"(],"next_cursor":{}}})", json_int_or_null(rows.next_cursor));
    co_await answer_json(c, 200, std::move(out));
}

}  // namespace tollgate::proxy::admin
