// The five coupon endpoints (SPEC 6): create, redeem, validate, list,
// deactivate. The engine (checks, effects, atomic redemption) is the
// ledger's; a refusal is 409 with its reason as the error code.
#include "admin.hpp"

#include <fmt/format.h>

#include <limits>

namespace tollgate::proxy::admin {

using namespace net;

namespace {

std::string optional_int(const std::optional<std::int64_t>& v) {
    return v ? std::to_string(*v) : "null";
}

std::string optional_text(const std::optional<std::string>& v) {
    return v ? fmt::format("\"{}\"", json_escape(*v)) : "null";
}

std::string optional_time(const std::optional<std::int64_t>& ms) {
    return ms ? fmt::format("\"{}\"", rfc3339(*ms)) : "null";
}

std::string coupon_json(const ledger::coupon& c) {
    return fmt::format(
        R"({{"code":"{}","kind":"{}","amount_micros":{},"credit_expires_days":{},"percent_off":{},"duration_months":{},"tier":{},"max_uses":{},"per_user_limit":{},"uses":{},"expires_at":{},"active":{},"created_at":"{}"}})",
        json_escape(c.code), ledger::to_string(c.kind), optional_int(c.amount_micros),
        optional_int(c.credit_expires_days), optional_int(c.percent_off), optional_int(c.duration_months),
        optional_text(c.tier), optional_int(c.max_uses), c.per_user_limit, c.uses, optional_time(c.expires_at_ms),
        c.active ? "true" : "false", rfc3339(c.created_at_ms));
}

// What a redemption did, one shape for every kind.
std::string effect_json(const ledger::redemption& r, const std::optional<ledger::subscription>& sub) {
    const auto& c = r.redeemed;
    std::optional<std::string> tier;
    if (c.kind == ledger::coupon_kind::free_month && sub) tier = sub->tier;
    return fmt::format(
        R"({{"type":"{}","amount_micros":{},"grant_id":{},"percent_off":{},"periods":{},"tier":{},"until":{}}})",
        ledger::to_string(c.kind), r.amount_micros, optional_int(r.grant_id), optional_int(c.percent_off),
        optional_int(c.duration_months), optional_text(tier), optional_time(r.until_ms));
}

constexpr std::int64_t max_count = 1'000'000'000;

}  // namespace

awaitable<void> create_coupon(call& c) {
    body b(c.x.req.body());
    const auto code = b.text("code", true, 32);
    const auto kind_text = b.text("kind", true, 16);
    const auto amount = b.integer("amount_micros", false, 1, ledger::max_amount_micros);
    const auto expires_days = b.integer("credit_expires_days", false, 1, 3650);
    const auto percent = b.integer("percent_off", false, 1, 100);
    const auto months = b.integer("duration_months", false, 1, 120);
    const auto tier = b.text("tier", false, 64);
    const auto max_uses = b.integer("max_uses", false, 1, max_count);
    const auto per_user = b.integer("per_user_limit", false, 1, max_count);
    const auto expires_at = b.time("expires_at", false);
    const auto kind = kind_text ? ledger::parse_coupon_kind(*kind_text) : std::nullopt;
    if (kind_text && !kind) b.refuse("kind", "'kind' must be credit, percent_off or free_month");
    if (code) {
        bool ok = code->size() >= 3;
        for (const char ch : *code) {
            ok = ok && ((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
                        ch == '_' || ch == '-');
        }
        if (!ok) b.refuse("code", "'code' must be 3 to 32 of A-Z, 0-9, '_' and '-' (case-insensitive)");
    }
    if (kind == ledger::coupon_kind::credit) {
        if (!amount) b.refuse("amount_micros", "A credit coupon needs 'amount_micros'");
        if (percent || months) b.refuse(percent ? "percent_off" : "duration_months", "Only percent_off coupons take it");
    } else if (kind == ledger::coupon_kind::percent_off) {
        if (!percent) b.refuse("percent_off", "A percent_off coupon needs 'percent_off' (1 to 100)");
        if (!months) b.refuse("duration_months", "A percent_off coupon needs 'duration_months'");
        if (amount || expires_days) {
            b.refuse(amount ? "amount_micros" : "credit_expires_days", "Only credit coupons take it");
        }
    } else if (kind == ledger::coupon_kind::free_month) {
        if (amount || expires_days || percent || months) {
            b.refuse(amount ? "amount_micros" : expires_days ? "credit_expires_days" : percent ? "percent_off"
                                                                                            : "duration_months",
                     "A free_month coupon takes only 'tier' besides the limits");
        }
    }
    if (tier) {
        const auto t = c.x.a.ledger.find_tier(*tier);
        if (!t) b.refuse("tier", fmt::format("No tier '{}'", *tier));
        // A free month of the free tier would never apply.
        if (t && kind == ledger::coupon_kind::free_month && t->price_micros <= 0) {
            b.refuse("tier", "A free_month coupon's 'tier' must be a paid tier");
        }
    }
    if (expires_at && *expires_at <= c.x.a.ledger.now_ms()) b.refuse("expires_at", "'expires_at' must be in the future");
    if (b.failed()) co_return co_await answer_refusal(c.x, b);

    ledger::coupon cp;
    cp.code = *code;
    cp.kind = *kind;
    cp.amount_micros = amount;
    cp.credit_expires_days = expires_days;
    cp.percent_off = percent;
    cp.duration_months = months;
    cp.tier = tier;
    cp.max_uses = max_uses;
    cp.per_user_limit = per_user.value_or(1);
    cp.expires_at_ms = expires_at;
    const auto out = c.x.a.ledger.create_coupon(cp);
    if (out.code == ledger::result::coupon_exists) {
        co_await reply_error(c.x, 409, "coupon_exists", "A coupon with this code exists (deactivated ones included)",
                             "code");
        co_return;
    }
    if (out.code != ledger::result::ok) co_return co_await answer_ledger_error(c, out.code, "code");
    if (!co_await durable(c.x.a, out.seq)) {
        co_await reply_error(c.x, 500, "storage_failed", "The coupon was not stored");
        co_return;
    }
    const auto stored = c.x.a.ledger.find_coupon(*code);
    c.audit_target = fmt::format("coupon:{}", stored ? stored->code : *code);
    co_await answer_json(c, 201, fmt::format(R"({{"coupon":{}}})", coupon_json(stored.value_or(cp))));
}

awaitable<void> redeem_coupon(call& c) {
    body b(c.x.req.body());
    const auto code = b.text("code", true, 64);
    const auto user_id = b.integer("user_id", false, 1, std::numeric_limits<std::int64_t>::max());
    if (b.failed()) co_return co_await answer_refusal(c.x, b);
    const auto user = co_await subject(c, user_id);
    if (!user) co_return;
    const auto key = c.idempotency_key.empty() ? std::string()
                                               : fmt::format("{} {}", c.p.name(), c.idempotency_key);
    const auto r = c.x.a.ledger.redeem_coupon(*user, *code, c.p.name(), key);
    if (r.code != ledger::result::ok) co_return co_await answer_ledger_error(c, r.code, "Idempotency-Key");
    if (r.refusal != ledger::coupon_refusal::none) {
        const auto reason = std::string(ledger::to_string(r.refusal));
        co_await reply_error(c.x, 409, reason, fmt::format("The coupon cannot be redeemed: {}", reason), "code");
        co_return;
    }
    if (!co_await durable(c.x.a, r.seq)) {
        co_await reply_error(c.x, 500, "storage_failed", "The redemption was not stored");
        co_return;
    }
    c.x.a.keys.invalidate_all();  // a free month changes the tier the proxy admits by
    co_await answer_json(c, 200,
                         fmt::format(R"({{"coupon":{},"effect":{},"balance_micros":{}}})", coupon_json(r.redeemed),
                                     effect_json(r, c.x.a.ledger.find_subscription(*user)), r.balance_micros));
}

awaitable<void> validate_coupon(call& c) {
    const auto code = query_param(c.target, "code");
    if (code.empty() || code.size() > 64) {
        co_await reply_error(c.x, 400, "missing_required_parameter", "'code' is required", "code");
        co_return;
    }
    const auto user = co_await subject(c);
    if (!user) co_return;
    if (!c.x.a.ledger.find_user(*user)) co_return co_await answer_ledger_error(c, ledger::result::unknown_user);
    const auto refusal = c.x.a.ledger.check_coupon(*user, code);
    const auto found = c.x.a.ledger.find_coupon(code);
    // The coupon's terms are shown only for a code that exists.
    const auto shown = found ? coupon_json(*found) : std::string("null");
    if (refusal == ledger::coupon_refusal::none) {
        co_await answer_json(c, 200, fmt::format(R"({{"valid":true,"reason":null,"coupon":{}}})", shown));
    } else {
        co_await answer_json(c, 200, fmt::format(R"({{"valid":false,"reason":"{}","coupon":{}}})",
                                                 ledger::to_string(refusal), shown));
    }
}

awaitable<void> list_coupons(call& c) {
    std::string out = R"({"data":[)";
    bool first = true;
    for (const auto& cp : c.x.a.ledger.coupons()) {
        if (!first) out += ',';
        out += coupon_json(cp);
        first = false;
    }
    out += "]}";
    co_await answer_json(c, 200, std::move(out));
}

awaitable<void> deactivate_coupon(call& c) {
    const std::string code(c.path_id);
    const auto out = c.x.a.ledger.deactivate_coupon(code);
    if (out.code == ledger::result::unknown_coupon) {
        co_await reply_error(c.x, 404, "coupon_not_found", "No such coupon", "code");
        co_return;
    }
    if (out.code != ledger::result::ok || !co_await durable(c.x.a, out.seq)) {
        co_return co_await answer_ledger_error(c, out.code == ledger::result::ok ? ledger::result::storage_failed
                                                                                 : out.code);
    }
    const auto stored = c.x.a.ledger.find_coupon(code);
    c.audit_target = fmt::format("coupon:{}", stored ? stored->code : code);
    // Built before the co_await: GCC 12 destroys the temporaries of a
    // conditional expression inside a co_await statement twice.
    const std::string shown = stored ? coupon_json(*stored) : std::string("null");
    co_await answer_json(c, 200, fmt::format(R"({{"coupon":{}}})", shown));
}

}  // namespace tollgate::proxy::admin
