// Tiers and periods (SPEC 3, 6): the comparison, switches, and rolling
// the billing periods whose boundary has passed.
#include "admin.hpp"
#include "provisioning.hpp"

#include <fmt/format.h>

#include <limits>

namespace tollgate::proxy::admin {

using namespace net;

namespace {

// The list price less an active percent_off discount (rounded down to a
// micro), or 0 for a period a free_month coupon waived.
std::int64_t effective_price(ledger::ledger& l, const ledger::subscription& sub) {
    const auto tier = l.find_tier(sub.tier);
    const std::int64_t price = tier ? tier->price_micros : 0;
    return sub.period_waived ? 0 : price * (100 - sub.discount_percent) / 100;
}

std::string subscription_json(ledger::ledger& l, const ledger::subscription& s) {
    const auto text_or_null = [](const std::optional<std::string>& v) {
        return v ? fmt::format("\"{}\"", json_escape(*v)) : std::string("null");
    };
    return fmt::format(
        R"({{"user_id":{},"tier":"{}","option":"{}","period_start":"{}","period_end":"{}","pending_tier":{},"discount_percent":{},"discount_periods_left":{},"effective_price_micros":{},"period_waived":{},"revert_tier":{},"revert_at":{}}})",
        s.user_id, json_escape(s.tier), json_escape(s.option), rfc3339(s.period_start_ms), rfc3339(s.period_end_ms),
        text_or_null(s.pending_tier), s.discount_percent, s.discount_periods_left, effective_price(l, s),
        s.period_waived ? "true" : "false", text_or_null(s.revert_tier),
        s.revert_at_ms ? fmt::format("\"{}\"", rfc3339(*s.revert_at_ms)) : std::string("null"));
}

}  // namespace

// Every tier, and the caller's own (an admin may name a user; a service
// token has none). The effective price is the list price less an active
// percent_off discount (rounded down to a micro), or 0 for a period a
// free_month coupon waived.
awaitable<void> compare_tiers(call& c) {
    std::optional<std::int64_t> user;
    if (c.p.who == role::user || !query_param(c.target, "user_id").empty()) {
        user = co_await subject(c);
        if (!user) co_return;
    }
    auto& l = c.x.a.ledger;
    std::string tiers;
    for (const auto& t : l.tiers()) {
        if (!tiers.empty()) tiers += ',';
        tiers += fmt::format(
            R"({{"id":"{}","name":"{}","price_micros":{},"monthly_credits_micros":{},"models":"{}","markup_paid_bps":{},"markup_free_micros_per_token":{},"byok_available":{},"rollover_percent":{}}})",
            json_escape(t.id), json_escape(t.name), t.price_micros, t.monthly_credits_micros, json_escape(t.models),
            t.markup_paid_bps, t.markup_free_micros_per_token, t.byok_available ? "true" : "false",
            t.rollover_percent);
    }
    std::string current = "null";
    if (user) {
        const auto sub = l.find_subscription(*user);
        if (!sub) co_return co_await answer_ledger_error(c, ledger::result::unknown_user);
        current = fmt::format(
            R"({{"tier":"{}","option":"{}","effective_price_micros":{},"discount_percent":{},"period_end":"{}"}})",
            json_escape(sub->tier), json_escape(sub->option), effective_price(l, *sub), sub->discount_percent,
            rfc3339(sub->period_end_ms));
    }
    co_await answer_json(c, 200, fmt::format(R"({{"tiers":[{}],"current":{}}})", tiers, current));
}

// SPEC 3's rules: a user may downgrade (at the period end) or change the
// option within their tier; an upgrade is an admin's or a billing service
// token's, at once, with the prorated difference of the monthly credits.
awaitable<void> switch_tier(call& c) {
    body b(c.x.req.body());
    const auto tier = b.text("tier", true, 64);
    const auto option = b.text("option", false, 16);
    const auto user_id = b.integer("user_id", false, 1, std::numeric_limits<std::int64_t>::max());
    const auto byok_key = b.text("byok_key", false, 512);
    if (option && *option != "credits" && *option != "byok") b.refuse("option", "'option' must be credits or byok");
    if (byok_key) {
        bool printable = !byok_key->empty();
        for (const char ch : *byok_key) printable = printable && ch > 0x20 && ch < 0x7f;
        if (!printable) b.refuse("byok_key", "'byok_key' must be an API key: visible ASCII, no spaces");
    }
    if (tier && !c.x.a.ledger.find_tier(*tier)) b.refuse("tier", fmt::format("No tier '{}'", *tier));
    if (b.failed()) co_return co_await answer_refusal(c.x, b);
    const auto user = co_await subject(c, user_id);
    if (!user) co_return;
    auto& l = c.x.a.ledger;
    const auto before = l.find_subscription(*user);
    if (!before) co_return co_await answer_ledger_error(c, ledger::result::unknown_user);
    ledger::switch_request r;
    r.user_id = *user;
    r.tier = *tier;
    // Without an option the current one stays where the new tier has it.
    const auto target = l.find_tier(*tier);
    r.option = option.value_or(before->option == "byok" && target && target->byok_available ? "byok" : "credits");
    if (r.option == "byok") {
        if (!target || !target->byok_available) {
            co_await reply_error(c.x, 400, "invalid_value", fmt::format("The {} tier has no BYOK option", *tier),
                                 "option");
            co_return;
        }
        if (byok_key) {
            // Sealed with the master key, bound to this user; stored with
            // the switch (only if it is allowed); never logged or answered.
            r.sealed_byok_key = c.x.a.keys_secret.seal(*byok_key, owner_context(*user));
        } else if (!l.byok_key(*user)) {
            co_await reply_error(c.x, 400, "byok_key_required",
                                 "BYOK needs the user's own OpenRouter key in 'byok_key'", "byok_key");
            co_return;
        }
    }
    r.may_upgrade = c.p.who == role::admin || c.p.who == role::service;
    r.actor = c.p.name();
    r.idempotency_key = c.idempotency_key.empty() ? std::string()
                                                  : fmt::format("{} {}", c.p.name(), c.idempotency_key);
    const auto out = l.switch_tier(r);
    if (out.code == ledger::result::upgrade_not_allowed) {
        co_await reply_error(c.x, 403, "forbidden",
                             "An upgrade is made by an admin or by a billing system's service token (scope billing); "
                             "a user may downgrade or change the option within their tier",
                             "tier");
        co_return;
    }
    if (out.code == ledger::result::option_not_available) {
        co_await reply_error(c.x, 400, "invalid_value", fmt::format("The {} tier has no BYOK option", *tier), "option");
        co_return;
    }
    if (out.code != ledger::result::ok) co_return co_await answer_ledger_error(c, out.code, "Idempotency-Key");
    if (!co_await durable(c.x.a, out.seq)) {
        co_await reply_error(c.x, 500, "storage_failed", "The switch was not stored");
        co_return;
    }
    c.x.a.keys.invalidate_all();  // the proxy admits by the new tier at once
    if (out.kind == ledger::switch_kind::upgrade) openrouter::follow_user(c.x.a, c.x.w, *user);
    const auto after = l.find_subscription(*user);
    co_await answer_json(c, 200,
                         fmt::format(R"({{"subscription":{},"change":"{}","granted_micros":{},"grant_id":{}}})",
                                     subscription_json(l, after.value_or(*before)), ledger::to_string(out.kind),
                                     out.granted_micros, json_int_or_null(out.grant_id)));
}

// Rolls every subscription whose boundary has passed (the server's
// scheduler does the same each minute); answers how many boundaries.
awaitable<void> roll_periods(call& c) {
    const auto out = c.x.a.ledger.roll_periods();
    if (out.code != ledger::result::ok) co_return co_await answer_ledger_error(c, out.code);
    if (!co_await durable(c.x.a, out.seq)) {
        co_await reply_error(c.x, 500, "storage_failed", "The roll was not stored");
        co_return;
    }
    c.x.a.keys.invalidate_all();  // downgrades and trial ends change tiers
    co_await answer_json(c, 200, fmt::format(R"({{"rolled":{},"at":"{}"}})", out.count, rfc3339(c.x.a.ledger.now_ms())));
}

}  // namespace tollgate::proxy::admin
