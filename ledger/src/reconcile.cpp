// Reconciliation (issue #7): a call billed on an estimate (a stream cut
// before the upstream reported usage) is priced again once the upstream
// can say what it really cost. The usage event keeps what was billed;
// the difference is a new 'reconcile' row, never an edit.
#include <fmt/format.h>

#include "civil_time.hpp"
#include "impl.hpp"

namespace tollgate::ledger {

std::vector<estimated_usage> ledger::usage_to_reconcile(time_ms created_after, time_ms created_before, int limit,
                                                        std::int64_t after_id) {
    std::vector<estimated_usage> out;
    if (limit < 1) return out;
    try {
        auto db = impl_->reader();
        auto s = db->prepare(
            "SELECT e.id, e.user_id, e.generation_id, e.model, e.prompt_tokens, e.completion_tokens, "
            "e.charged_micros, e.created_at_ms FROM usage_events e "
            "WHERE e.price_source = 'estimated' AND e.generation_id IS NOT NULL "
            "AND e.created_at_ms >= ?1 AND e.created_at_ms < ?2 AND e.id > ?4 "
            "AND NOT EXISTS (SELECT 1 FROM reconciliations r WHERE r.usage_event_id = e.id) "
            "ORDER BY e.id LIMIT ?3");
        s->bind(1, created_after).bind(2, created_before).bind(3, limit).bind(4, after_id);
        while (s->step()) {
            estimated_usage e;
            e.usage_event_id = s->int64(0);
            e.user_id = s->int64(1);
            e.generation_id = s->text(2);
            e.model = s->text(3);
            e.prompt_tokens = s->int64(4);
            e.completion_tokens = s->int64(5);
            e.charged_micros = s->int64(6);
            e.created_at_ms = s->int64(7);
            out.push_back(std::move(e));
        }
    } catch (const sql::error&) {
        out.clear();
    }
    return out;
}

reconcile_outcome ledger::reconcile_usage(const reconcile_request& r) {
    const auto in_range = [](std::int64_t v) { return v >= 0 && v <= max_amount_micros; };
    if (!in_range(r.provider_cost_micros) || !in_range(r.markup_micros) || !in_range(r.charged_micros) ||
        r.prompt_tokens < 0 || r.prompt_tokens > max_usage_count || r.completion_tokens < 0 ||
        r.completion_tokens > max_usage_count || r.generation_id.empty() || r.generation_id.size() > 4096 ||
        r.actor.empty() || r.actor.size() > 4096) {
        return {result::invalid_argument};
    }
    auto& m = *impl_;
    // One correction per event: decided against committed history, under
    // external_mu so two correctors cannot both see none.
    std::unique_lock external(m.external_mu);
    std::int64_t charged_before = 0, cost_before = 0, markup_before = 0, refunded = 0;
    time_ms event_at = 0;
    std::string service, model;
    try {
        auto db = m.reader();
        auto s = db->prepare(
            "SELECT e.charged_micros, e.provider_cost_micros, e.markup_micros, e.created_at_ms, e.service, e.model, "
            "e.price_source, e.generation_id, "
            "(SELECT COUNT(*) FROM reconciliations r WHERE r.usage_event_id = e.id), "
            "(SELECT IFNULL(SUM(g.amount_micros), 0) FROM credit_grants g WHERE g.refund_of_event_id = e.id) "
            "FROM usage_events e WHERE e.id = ?1 AND e.user_id = ?2");
        s->bind(1, r.usage_event_id).bind(2, r.user_id);
        if (!s->step()) return {result::unknown_charge};
        if (s->int64(8) > 0) return {result::idempotency_conflict};
        if (s->text(6) != "estimated" || s->is_null(7) || s->text(7) != r.generation_id) {
            return {result::invalid_argument};
        }
        charged_before = s->int64(0);
        cost_before = s->int64(1);
        markup_before = s->int64(2);
        event_at = s->int64(3);
        service = s->text(4);
        model = s->text(5);
        refunded = s->int64(9);
    } catch (const sql::error&) {
        return {result::storage_failed};
    }

    reconcile_outcome out;
    {
        std::unique_lock lock(m.mu, std::defer_lock);
        if (!m.lock_for_change(lock)) return {result::storage_failed};
        const time_ms at = m.now();
        user_book* const found = m.current_user(r.user_id, at);
        if (!found) return {result::unknown_user};
        auto& u = *found;
        // Given back at most what no refund gave back yet: refunds of one
        // charge never exceed it (SPEC 4), whoever made them.
        const std::int64_t delta = std::max(r.charged_micros - charged_before, refunded - charged_before);
        if (delta > 0 && u.debt_micros + delta > max_balance_micros) return {result::amount_overflow};
        const std::string reason = fmt::format("reconciled with generation {}: charged {} then, {} now",
                                               r.generation_id, charged_before, r.charged_micros);
        if (delta > 0) {
            // Owed like any charge: drawn in order, debt beyond the grants.
            out.first_transaction_id = m.draw(u, delta, "reconcile", r.actor, reason, r.usage_event_id, at);
        } else if (delta < 0) {
            grant_row row;
            row.kind = grant_kind::refund;
            row.amount_micros = -delta;
            row.priority = default_priority(grant_kind::refund);
            row.effective_at_ms = at;
            row.source = "reconcile";
            row.refund_of_event_id = r.usage_event_id;
            row.created_at_ms = at;
            out.first_transaction_id = m.add_grant(u, row, "reconcile", r.actor, reason, r.usage_event_id).second;
        }
        out.delta_micros = delta;
        out.balance_micros = u.balance_micros;
        // The event's day carries the correction, so its totals say what
        // the call finally cost.
        auto& roll = m.pending.rollups[rollup_key{u.id, civil::format_day(event_at), service, model}];
        roll.charged_micros += delta;
        roll.provider_cost_micros += r.provider_cost_micros - cost_before;
        roll.markup_micros += r.markup_micros - markup_before;
        m.pending.statements.push_back([r, delta, at](sql::database& db) {
            auto s = db.prepare(
                "INSERT INTO reconciliations (usage_event_id, user_id, generation_id, provider_cost_micros, "
                "charged_micros, delta_micros, prompt_tokens, completion_tokens, created_at_ms) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
            s->bind(1, r.usage_event_id).bind(2, r.user_id).bind(3, r.generation_id).bind(4, r.provider_cost_micros);
            s->bind(5, r.charged_micros).bind(6, delta).bind(7, r.prompt_tokens).bind(8, r.completion_tokens);
            s->bind(9, at);
            s->run();
        });
        out.seq = m.stage();
    }
    if (!wait_durable(out.seq)) return {result::storage_failed};
    return out;
}

}  // namespace tollgate::ledger
