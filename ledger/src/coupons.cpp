// The coupon engine (SPEC 3). Coupons live in the book beside the users, so
// a redemption is decided and applied in one critical section: every check
// (including max_uses and per_user_limit) and every effect happen under
// mu, and the rows that persist them go out in one batch.
#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "civil_time.hpp"
#include "impl.hpp"

namespace tollgate::ledger {

namespace {

constexpr std::int64_t max_coupon_days = 3650;
constexpr std::int64_t max_coupon_months = 120;

bool valid_code(std::string_view code) {
    if (code.size() < 3 || code.size() > 32) return false;
    return std::all_of(code.begin(), code.end(), [](char ch) {
        return (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '_' || ch == '-';
    });
}

std::string upper(std::string_view text) {
    std::string out(text);
    for (auto& ch : out) ch = static_cast<char>(std::toupper(static_cast<unsigned char>(ch)));
    return out;
}

bool in_range(const std::optional<std::int64_t>& v, std::int64_t lo, std::int64_t hi) {
    return !v || (*v >= lo && *v <= hi);
}

}  // namespace

std::string_view to_string(coupon_kind kind) {
    switch (kind) {
        case coupon_kind::credit: return "credit";
        case coupon_kind::percent_off: return "percent_off";
        case coupon_kind::free_month: return "free_month";
    }
    return "credit";
}

std::optional<coupon_kind> parse_coupon_kind(std::string_view text) {
    for (const auto kind : {coupon_kind::credit, coupon_kind::percent_off, coupon_kind::free_month}) {
        if (to_string(kind) == text) return kind;
    }
    return std::nullopt;
}

std::string_view to_string(coupon_refusal refusal) {
    switch (refusal) {
        case coupon_refusal::none: return "none";
        case coupon_refusal::not_found: return "not_found";
        case coupon_refusal::inactive: return "inactive";
        case coupon_refusal::expired: return "expired";
        case coupon_refusal::exhausted: return "exhausted";
        case coupon_refusal::already_redeemed: return "already_redeemed";
        case coupon_refusal::not_applicable: return "not_applicable";
    }
    return "none";
}

simple_outcome ledger::create_coupon(coupon c) {
    c.code = upper(c.code);
    const bool shape_ok =
        valid_code(c.code) && in_range(c.max_uses, 1, max_usage_count) && c.per_user_limit >= 1 &&
        c.per_user_limit <= max_usage_count && (!c.tier || (!c.tier->empty() && c.tier->size() <= 64)) &&
        (c.kind == coupon_kind::credit
             ? c.amount_micros && *c.amount_micros > 0 && *c.amount_micros <= max_amount_micros &&
                   in_range(c.credit_expires_days, 1, max_coupon_days) && !c.percent_off && !c.duration_months
         : c.kind == coupon_kind::percent_off
             ? c.percent_off && in_range(c.percent_off, 1, 100) && c.duration_months &&
                   in_range(c.duration_months, 1, max_coupon_months) && !c.amount_micros && !c.credit_expires_days
             : !c.amount_micros && !c.credit_expires_days && !c.percent_off && !c.duration_months);
    if (!shape_ok) return {result::invalid_argument};
    auto& m = *impl_;
    std::unique_lock lock(m.mu, std::defer_lock);
    if (!m.lock_for_change(lock)) return {result::storage_failed};
    if (c.tier && !m.tiers_by_id.count(*c.tier)) return {result::unknown_tier};
    if (m.coupons_by_code.count(c.code)) return {result::coupon_exists};
    c.uses = 0;
    c.active = true;
    c.created_at_ms = m.now();
    if (c.expires_at_ms && *c.expires_at_ms <= c.created_at_ms) return {result::grant_expired};
    m.coupons_by_code.emplace(c.code, c);
    m.pending.statements.push_back([c](sql::database& db) {
        auto s = db.prepare(
            "INSERT INTO coupon_codes (code, kind, amount_micros, credit_expires_days, percent_off, duration_months, "
            "tier, max_uses, per_user_limit, uses, expires_at_ms, active, created_at_ms) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 0, ?10, 1, ?11)");
        s->bind(1, c.code).bind(2, to_string(c.kind)).bind(3, c.amount_micros).bind(4, c.credit_expires_days);
        s->bind(5, c.percent_off).bind(6, c.duration_months).bind(7, c.tier).bind(8, c.max_uses);
        s->bind(9, c.per_user_limit).bind(10, c.expires_at_ms).bind(11, c.created_at_ms);
        s->run();
    });
    return {result::ok, m.stage()};
}

std::optional<coupon> ledger::find_coupon(const std::string& code) {
    std::lock_guard lock(impl_->mu);
    const auto it = impl_->coupons_by_code.find(upper(code));
    if (it == impl_->coupons_by_code.end()) return std::nullopt;
    return it->second;
}

std::vector<coupon> ledger::coupons() {
    std::lock_guard lock(impl_->mu);
    std::vector<coupon> out;
    for (const auto& [code, c] : impl_->coupons_by_code) out.push_back(c);
    return out;
}

simple_outcome ledger::deactivate_coupon(const std::string& code) {
    auto& m = *impl_;
    std::unique_lock lock(m.mu, std::defer_lock);
    if (!m.lock_for_change(lock)) return {result::storage_failed};
    const auto it = m.coupons_by_code.find(upper(code));
    if (it == m.coupons_by_code.end()) return {result::unknown_coupon};
    it->second.active = false;
    m.pending.statements.push_back([code = it->first](sql::database& db) {
        auto s = db.prepare("UPDATE coupon_codes SET active = 0 WHERE code = ?1");
        s->bind(1, code);
        s->run();
    });
    return {result::ok, m.stage()};
}

namespace {

// The first reason `c` cannot be redeemed by `u` now, in SPEC order.
// Requires mu.
coupon_refusal refusal_of(const ledger::impl& m, const coupon* c, const user_book& u, time_ms at) {
    if (!c) return coupon_refusal::not_found;
    if (!c->active) return coupon_refusal::inactive;
    if (c->expires_at_ms && *c->expires_at_ms <= at) return coupon_refusal::expired;
    if (c->max_uses && c->uses >= *c->max_uses) return coupon_refusal::exhausted;
    const auto used = m.redemptions_by_code_user.find({c->code, u.id});
    if (used != m.redemptions_by_code_user.end() && used->second >= c->per_user_limit) {
        return coupon_refusal::already_redeemed;
    }
    if (!u.sub) return coupon_refusal::not_applicable;
    const auto& sub = *u.sub;
    const auto tier = m.tiers_by_id.find(sub.tier);
    const bool paid_tier = tier != m.tiers_by_id.end() && tier->second.price_micros > 0;
    switch (c->kind) {
        case coupon_kind::credit:
            return coupon_refusal::none;
        case coupon_kind::percent_off:
            // A discount of a price: the free tier and a free-month trial
            // have none to discount; one discount at a time.
            if (!paid_tier || sub.revert_at_ms || sub.discount_periods_left > 0) return coupon_refusal::not_applicable;
            if (c->tier && *c->tier != sub.tier) return coupon_refusal::not_applicable;
            return coupon_refusal::none;
        case coupon_kind::free_month: {
            if (sub.revert_at_ms || sub.waive_next_period) return coupon_refusal::not_applicable;
            if (paid_tier) return coupon_refusal::none;
            const auto to = m.tiers_by_id.find(c->tier.value_or("starter"));
            return to == m.tiers_by_id.end() || to->second.price_micros <= 0 ? coupon_refusal::not_applicable
                                                                              : coupon_refusal::none;
        }
    }
    return coupon_refusal::not_applicable;
}

}  // namespace

coupon_refusal ledger::check_coupon(std::int64_t user_id, const std::string& code) {
    auto& m = *impl_;
    std::unique_lock lock(m.mu, std::defer_lock);
    if (!m.lock_for_change(lock)) return coupon_refusal::not_found;
    const time_ms at = m.now();
    user_book* const u = m.current_user(user_id, at);
    if (!u) return coupon_refusal::not_applicable;
    const auto it = m.coupons_by_code.find(upper(code));
    return refusal_of(m, it == m.coupons_by_code.end() ? nullptr : &it->second, *u, at);
}

redemption ledger::redeem_coupon(std::int64_t user_id, const std::string& code, const std::string& actor,
                                 const std::string& idempotency_key) {
    auto& m = *impl_;
    const std::string normalized = upper(code);
    if (normalized.size() > 64 || actor.size() > 4096 || idempotency_key.size() > 4096) {
        return {result::invalid_argument};
    }
    const std::string fingerprint = fmt::format("redeem|{}|{}", user_id, normalized);

    // A replay answers the first redemption, read back from what committed.
    std::unique_lock external(m.external_mu, std::defer_lock);
    if (!idempotency_key.empty()) {
        external.lock();
        try {
            auto db = m.reader();
            // <redemption> <grant or 0> <amount> <until or 0> <balance>
            if (const auto stored = impl::stored_answer_of(*db.db, idempotency_key, fingerprint, 5)) {
                if (stored->conflict) return {result::idempotency_conflict};
                const auto& v = stored->numbers;
                redemption first;
                first.redemption_id = v[0];
                if (v[1]) first.grant_id = v[1];
                first.amount_micros = v[2];
                if (v[3]) first.until_ms = v[3];
                first.balance_micros = v[4];
                first.redeemed = find_coupon(normalized).value_or(coupon{});
                first.replayed = true;
                return first;
            }
        } catch (const sql::error&) {
            return {result::storage_failed};
        }
    }

    redemption out;
    {
        std::unique_lock lock(m.mu, std::defer_lock);
        if (!m.lock_for_change(lock)) return {result::storage_failed};
        const time_ms at = m.now();
        user_book* const found = m.current_user(user_id, at);
        if (!found) return {result::unknown_user};
        auto& u = *found;
        const auto it = m.coupons_by_code.find(normalized);
        coupon* const c = it == m.coupons_by_code.end() ? nullptr : &it->second;
        out.refusal = refusal_of(m, c, u, at);
        if (out.refusal != coupon_refusal::none) {
            if (c) out.redeemed = *c;
            return out;
        }
        auto& sub = *u.sub;
        std::string effect;
        switch (c->kind) {
            case coupon_kind::credit: {
                grant_row row;
                row.kind = grant_kind::bonus;
                row.amount_micros = *c->amount_micros;
                row.priority = default_priority(grant_kind::bonus);
                row.effective_at_ms = at;
                if (c->credit_expires_days) row.expires_at_ms = at + *c->credit_expires_days * civil::ms_per_day;
                row.source = "coupon";
                row.created_at_ms = at;
                if (u.balance_micros + row.amount_micros > max_balance_micros) return {result::amount_overflow};
                out.grant_id = m.add_grant(u, row, "grant", actor, fmt::format("coupon {}", c->code), std::nullopt)
                                   .first;
                out.amount_micros = row.amount_micros;
                out.until_ms = row.expires_at_ms;
                effect = fmt::format("credit {}", row.amount_micros);
                break;
            }
            case coupon_kind::percent_off:
                sub.discount_percent = static_cast<int>(*c->percent_off);
                sub.discount_periods_left = static_cast<int>(*c->duration_months);
                // The discount's last period ends `duration` boundaries from now.
                out.until_ms = sub.period_end_ms;
                for (int i = 1; i < sub.discount_periods_left; ++i) {
                    out.until_ms = civil::next_boundary_after(sub.anchor_ms, *out.until_ms);
                }
                effect = fmt::format("percent_off {} for {} periods", sub.discount_percent, sub.discount_periods_left);
                m.stage_subscription(u);
                break;
            case coupon_kind::free_month: {
                const auto tier = m.tiers_by_id.find(sub.tier);
                if (tier != m.tiers_by_id.end() && tier->second.price_micros > 0) {
                    // A paid tier: the next period's price is waived.
                    sub.waive_next_period = true;
                    out.until_ms = civil::next_boundary_after(sub.anchor_ms, sub.period_end_ms);
                    effect = "free_month next period waived";
                } else {
                    // The free tier: the coupon's tier at once, for the rest of
                    // this period and one full period, its full monthly credits
                    // granted now; then back to where the user was.
                    const auto& to = m.tiers_by_id.at(c->tier.value_or("starter"));
                    sub.revert_tier = sub.tier;
                    sub.revert_at_ms = civil::next_boundary_after(sub.anchor_ms, sub.period_end_ms);
                    sub.tier = to.id;
                    sub.period_waived = true;  // nothing to pay for the trial's two periods
                    sub.waive_next_period = true;
                    sub.pending_tier.reset();
                    out.until_ms = sub.revert_at_ms;
                    if (to.monthly_credits_micros > 0) {
                        grant_row row;
                        row.kind = grant_kind::allocated;
                        row.amount_micros = to.monthly_credits_micros;
                        row.priority = default_priority(grant_kind::allocated);
                        row.effective_at_ms = at;
                        row.expires_at_ms = sub.period_end_ms;
                        row.source = "coupon";
                        row.created_at_ms = at;
                        out.grant_id =
                            m.add_grant(u, row, "grant", actor, fmt::format("coupon {}: {} month", c->code, to.id),
                                        std::nullopt)
                                .first;
                        out.amount_micros = row.amount_micros;
                    }
                    effect = fmt::format("free_month {}", to.id);
                }
                m.stage_subscription(u);
                break;
            }
        }
        c->uses += 1;
        m.redemptions_by_code_user[{c->code, u.id}] += 1;
        out.redemption_id = m.next_redemption_id++;
        out.balance_micros = u.balance_micros;
        out.redeemed = *c;
        m.pending.statements.push_back([code = c->code, uses = c->uses](sql::database& db) {
            auto s = db.prepare("UPDATE coupon_codes SET uses = ?2 WHERE code = ?1");
            s->bind(1, code).bind(2, uses);
            s->run();
        });
        m.pending.late_statements.push_back(
            [id = out.redemption_id, code = c->code, user = u.id, effect, grant = out.grant_id, at](sql::database& db) {
                auto s = db.prepare(
                    "INSERT INTO coupon_redemptions (id, code, user_id, effect, grant_id, created_at_ms) "
                    "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
                s->bind(1, id).bind(2, code).bind(3, user).bind(4, effect).bind(5, grant).bind(6, at);
                s->run();
            });
        if (!idempotency_key.empty()) {
            m.stage_answer(idempotency_key, fingerprint,
                           {out.redemption_id, out.grant_id.value_or(0), out.amount_micros, out.until_ms.value_or(0),
                            out.balance_micros},
                           at);
        }
        out.seq = m.stage();
    }
    if (!idempotency_key.empty() && !wait_durable(out.seq)) return {result::storage_failed};
    return out;
}

}  // namespace tollgate::ledger
