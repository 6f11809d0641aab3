// Book-keeping under impl::mu: every helper here decides a change to the
// in-memory book and stages the rows that persist it, in the same critical
// section, so the order of rows in the database is the order of decisions.
#include "civil_time.hpp"
#include "impl.hpp"

#include <algorithm>
#include <cassert>
#include <limits>

namespace tollgate::ledger {

bool draws_before(const grant_state& a, const grant_state& b) {
    if (a.priority != b.priority) return a.priority < b.priority;
    if (a.expires_at_ms != b.expires_at_ms) {
        if (!a.expires_at_ms) return false;  // never-expiring last
        if (!b.expires_at_ms) return true;
        return *a.expires_at_ms < *b.expires_at_ms;
    }
    if (a.created_at_ms != b.created_at_ms) return a.created_at_ms < b.created_at_ms;
    return a.id < b.id;
}

void write_batch::clear() {
    statements.clear();
    grants.clear();
    holds.clear();
    usage.clear();
    transactions.clear();
    grant_remaining.clear();
    credits.clear();
    rollups.clear();
    idempotency.clear();
    late_statements.clear();
    operations = 0;
}

commit_seq ledger::impl::stage() {
    ++pending.operations;
    work_cv.notify_one();
    return pending_seq;
}

void ledger::impl::stage_credits(const user_book& u) {
    pending.credits[u.id] = credits_row{u.balance_micros, u.reserved_micros, u.debt_micros, u.overage_limit_micros};
}

void ledger::impl::stage_grant_remaining(const grant_state& g) { pending.grant_remaining[g.id] = g.remaining_micros; }

std::int64_t ledger::impl::stage_txn(user_book& u, const char* type, std::int64_t amount_micros,
                                     std::int64_t debt_delta_micros, std::optional<std::int64_t> grant_id,
                                     const std::string& actor, const std::string& reason,
                                     std::optional<std::int64_t> usage_event_id, time_ms at) {
    txn_row row;
    row.id = next_txn_id++;
    row.user_id = u.id;
    row.type = type;
    row.amount_micros = amount_micros;
    row.debt_delta_micros = debt_delta_micros;
    row.balance_after_micros = u.balance_micros;
    row.grant_id = grant_id;
    row.actor = actor;
    row.reason = reason;
    row.usage_event_id = usage_event_id;
    row.created_at_ms = at;
    pending.transactions.push_back(std::move(row));
    return pending.transactions.back().id;
}

std::pair<std::int64_t, std::int64_t> ledger::impl::add_grant(user_book& u, const grant_row& row_in,
                                                               const char* txn_type, const std::string& actor,
                                                               const std::string& reason,
                                                               std::optional<std::int64_t> usage_event_id) {
    grant_row row = row_in;
    row.id = next_grant_id++;
    row.user_id = u.id;
    pending.grants.push_back(row);

    grant_state g{row.id, row.kind, row.priority, row.amount_micros, row.expires_at_ms, row.created_at_ms};
    u.balance_micros += row.amount_micros;
    const std::int64_t txn_id =
        stage_txn(u, txn_type, row.amount_micros, 0, row.id, actor, reason, usage_event_id, row.created_at_ms);

    // SPEC 3: debt is paid first by the next grants. Balance does not move
    // (remaining and debt fall together), so the row's amount is 0.
    if (u.debt_micros > 0) {
        const std::int64_t paid = std::min(u.debt_micros, g.remaining_micros);
        g.remaining_micros -= paid;
        u.debt_micros -= paid;
        stage_txn(u, "debt", 0, -paid, row.id, actor, "debt paid from grant", std::nullopt, row.created_at_ms);
    }
    stage_grant_remaining(g);
    if (g.remaining_micros > 0) {
        u.grants.insert(std::upper_bound(u.grants.begin(), u.grants.end(), g, draws_before), g);
    }
    stage_credits(u);
    return {row.id, txn_id};
}

std::int64_t ledger::impl::draw(user_book& u, std::int64_t amount_micros, const char* type, const std::string& actor,
                                const std::string& reason, std::int64_t usage_event_id, time_ms at) {
    std::int64_t left = amount_micros;
    std::int64_t first_txn = 0;
    std::size_t used_up = 0;
    for (auto& g : u.grants) {
        if (left == 0) break;
        const std::int64_t take = std::min(left, g.remaining_micros);
        g.remaining_micros -= take;
        left -= take;
        u.balance_micros -= take;
        const std::int64_t id = stage_txn(u, type, -take, 0, g.id, actor, reason, usage_event_id, at);
        if (first_txn == 0) first_txn = id;
        stage_grant_remaining(g);
        if (g.remaining_micros == 0) ++used_up;
    }
    // Exhausted grants are at the front: draw-down takes grants in order.
    u.grants.erase(u.grants.begin(), u.grants.begin() + static_cast<std::ptrdiff_t>(used_up));
    if (left > 0) {
        u.debt_micros += left;
        u.balance_micros -= left;
        // A correction's shortfall stays a correction: the check sums an
        // event's charge rows and its reconcile rows apart.
        const char* debt_type = std::string_view(type) == "reconcile" ? "reconcile" : "debt";
        const std::int64_t id = stage_txn(u, debt_type, -left, left, std::nullopt, actor, reason, usage_event_id, at);
        if (first_txn == 0) first_txn = id;
    }
    stage_credits(u);
    return first_txn;
}

void ledger::impl::expire_due_grants(user_book& u, time_ms at, bool include_period_allocation) {
    const time_ms period_end = u.sub ? u.sub->period_end_ms : std::numeric_limits<time_ms>::min();
    bool changed = false;
    for (auto it = u.grants.begin(); it != u.grants.end();) {
        const bool due = it->expires_at_ms && *it->expires_at_ms <= at;
        // The period's allocation (allocated credit expiring at the period
        // end) is the roll's to expire: it decides what rolls over first.
        const bool period_allocation =
            it->kind == grant_kind::allocated && it->expires_at_ms && *it->expires_at_ms == period_end;
        if (due && (include_period_allocation || !period_allocation)) {
            u.balance_micros -= it->remaining_micros;
            stage_txn(u, "expire", -it->remaining_micros, 0, it->id, "tollgate", "grant expired", std::nullopt,
                      *it->expires_at_ms);
            it->remaining_micros = 0;
            stage_grant_remaining(*it);
            it = u.grants.erase(it);
            changed = true;
        } else {
            ++it;
        }
    }
    if (changed) {
        stage_credits(u);
        stage();  // counted on its own: the call that got here may yet be refused
    }
}

void ledger::impl::roll_one_boundary(user_book& u) {
    auto& sub = *u.sub;
    const time_ms boundary = sub.period_end_ms;
    const auto ending_tier = tiers_by_id.find(sub.tier);

    // 1. Grants past their expiry, other than the period's allocation.
    expire_due_grants(u, boundary, false);

    // 2. Rollover: of the unused allocation, keep up to rollover_percent of
    // the ending tier's monthly credits; the rest expires. Computed from the
    // monthly credits, not from what rolled over before: never compounds.
    std::int64_t unused_micros = 0;
    for (auto it = u.grants.begin(); it != u.grants.end();) {
        if (it->kind == grant_kind::allocated && it->expires_at_ms == boundary) {
            unused_micros += it->remaining_micros;
            u.balance_micros -= it->remaining_micros;
            stage_txn(u, "expire", -it->remaining_micros, 0, it->id, "tollgate", "period ended", std::nullopt,
                      boundary);
            it->remaining_micros = 0;
            stage_grant_remaining(*it);
            it = u.grants.erase(it);
        } else {
            ++it;
        }
    }
    stage_credits(u);
    std::int64_t cap_micros = 0;
    if (ending_tier != tiers_by_id.end()) {
        cap_micros = ending_tier->second.monthly_credits_micros * ending_tier->second.rollover_percent / 100;
    }
    const std::int64_t keep_micros = std::min(unused_micros, cap_micros);

    // 3. A scheduled downgrade takes effect, or the end of a free-month
    // trial; 4. the new period begins, with what coupons left on it.
    const std::string tier_before = sub.tier;
    if (sub.pending_tier) {
        sub.tier = *sub.pending_tier;
        sub.pending_tier.reset();
    }
    if (sub.revert_at_ms && *sub.revert_at_ms <= boundary) {
        if (sub.revert_tier) sub.tier = *sub.revert_tier;
        sub.revert_tier.reset();
        sub.revert_at_ms.reset();
    }
    if (sub.tier != tier_before) {
        // A cheaper tier: BYOK ends where it has none, and an overage limit
        // left at the old tier's default follows the new tier's.
        const auto lower = tiers_by_id.find(sub.tier);
        if (lower != tiers_by_id.end()) {
            if (!lower->second.byok_available) sub.option = "credits";
            if (ending_tier != tiers_by_id.end() &&
                u.overage_limit_micros == ending_tier->second.default_overage_limit_micros) {
                u.overage_limit_micros = lower->second.default_overage_limit_micros;
                stage_credits(u);
            }
        }
    }
    sub.period_start_ms = boundary;
    sub.period_end_ms = civil::next_boundary_after(sub.anchor_ms, boundary);
    if (sub.discount_periods_left > 0 && --sub.discount_periods_left == 0) sub.discount_percent = 0;
    sub.period_waived = sub.waive_next_period;
    sub.waive_next_period = false;

    grant_row row;
    row.kind = grant_kind::allocated;
    row.priority = default_priority(grant_kind::allocated);
    row.effective_at_ms = boundary;
    row.expires_at_ms = sub.period_end_ms;
    row.created_at_ms = boundary;
    if (keep_micros > 0) {
        row.amount_micros = keep_micros;
        row.source = "rollover";
        add_grant(u, row, "grant", "tollgate", "rollover", std::nullopt);
    }
    const auto new_tier = tiers_by_id.find(sub.tier);
    if (new_tier != tiers_by_id.end() && new_tier->second.monthly_credits_micros > 0) {
        row.amount_micros = new_tier->second.monthly_credits_micros;
        row.source = "period";
        add_grant(u, row, "grant", "tollgate", "monthly credits", std::nullopt);
    }

    stage_subscription(u);
    stage();
}

void ledger::impl::stage_subscription(const user_book& u) {
    const subscription_state snapshot = *u.sub;
    const std::int64_t user_id = u.id;
    pending.statements.push_back([snapshot, user_id](sql::database& db) {
        auto s = db.prepare(
            "UPDATE subscriptions SET tier = ?2, option = ?3, period_start_ms = ?4, period_end_ms = ?5, "
            "pending_tier = ?6, discount_percent = ?7, discount_periods_left = ?8, period_waived = ?9, "
            "waive_next_period = ?10, revert_tier = ?11, revert_at_ms = ?12 WHERE user_id = ?1");
        s->bind(1, user_id).bind(2, snapshot.tier).bind(3, snapshot.option).bind(4, snapshot.period_start_ms);
        s->bind(5, snapshot.period_end_ms).bind(6, snapshot.pending_tier);
        s->bind(7, std::int64_t{snapshot.discount_percent}).bind(8, std::int64_t{snapshot.discount_periods_left});
        s->bind(9, std::int64_t{snapshot.period_waived}).bind(10, std::int64_t{snapshot.waive_next_period});
        s->bind(11, snapshot.revert_tier).bind(12, snapshot.revert_at_ms);
        s->run();
    });
}

void ledger::impl::bring_up_to_date(user_book& u, time_ms at) {
    // Missed boundaries are rolled one by one, in order.
    while (u.sub && u.sub->period_end_ms <= at) roll_one_boundary(u);
    expire_due_grants(u, at, true);
}

void ledger::impl::close_hold(hold_state& h, const char* state, time_ms at) {
    auto& u = users.at(h.user_id);
    u.reserved_micros -= h.amount_micros;
    assert(u.reserved_micros >= 0);
    stage_credits(u);
    pending.holds[h.id] =
        hold_row{h.user_id, h.request_id, h.amount_micros, state, h.created_at_ms, h.expires_at_ms, at};
    // An expired hold settled late no longer owns its request id.
    if (const auto r = hold_by_request.find(h.request_id); r != hold_by_request.end() && r->second == h.id) {
        hold_by_request.erase(r);
    }
    holds.erase(h.id);
}

void ledger::impl::stage_usage(usage_row row) {
    rollup_delta& r = pending.rollups[rollup_key{row.user_id, civil::format_day(row.created_at_ms),
                                                 row.usage.service, row.usage.model}];
    r.requests += 1;
    r.prompt_tokens += row.usage.prompt_tokens;
    r.completion_tokens += row.usage.completion_tokens;
    r.provider_cost_micros += row.usage.provider_cost_micros;
    r.markup_micros += row.usage.markup_micros;
    r.charged_micros += row.charged_micros;
    pending.usage.push_back(std::move(row));
}

}  // namespace tollgate::ledger
