// The single writer: takes everything staged since its last commit, writes it
// in one SQLite transaction (group commit), then completes every waiter of
// that batch. It is the only code that writes the database while a ledger is
// open.
#include "impl.hpp"

#include <fmt/format.h>

#include <algorithm>

namespace tollgate::ledger {

void ledger::impl::run_writer() {
    write_batch writing;
    for (;;) {
        commit_seq seq = 0;
        {
            std::unique_lock lock(mu);
            work_cv.wait(lock, [&] { return stopping || !pending.empty(); });
            if (pending.empty()) return;  // stopping, nothing left
            std::swap(pending, writing);
            seq = pending_seq++;
        }
        space_cv.notify_all();

        bool ok = true;
        try {
            write(writing);
        } catch (const std::exception& e) {
            ok = false;
            std::lock_guard lock(durable_mu);
            failed = true;
            failure = e.what();
        }
        const auto batch_operations = writing.operations;
        writing.clear();

        std::vector<std::function<void(bool)>> ready;
        {
            std::lock_guard lock(durable_mu);
            if (ok) {
                durable_seq = seq;
                ++stats.commits;
                stats.operations += batch_operations;
                stats.largest_batch = std::max<std::uint64_t>(stats.largest_batch, batch_operations);
            }
            auto keep = callbacks.begin();
            for (auto& entry : callbacks) {
                if (entry.first <= seq || failed) {
                    ready.push_back(std::move(entry.second));
                } else {
                    *keep++ = std::move(entry);
                }
            }
            callbacks.erase(keep, callbacks.end());
        }
        durable_cv.notify_all();
        for (auto& fn : ready) fn(ok);
        if (!ok) {
            // Memory ran ahead of a commit that failed: the book can no longer
            // be trusted. Stop here; reopening rebuilds it from the database.
            std::lock_guard lock(mu);
            stopping = true;
            pending.clear();
            space_cv.notify_all();
            return;
        }
    }
}

void ledger::impl::write(write_batch& b) {
    auto& db = *writer_db;
    sql::write_transaction txn(db);
    // Rows of one batch reference each other in every direction (a grant's
    // refund event, a transaction's grant); check the keys at commit.
    db.exec("PRAGMA defer_foreign_keys = ON");

    for (auto& statement : b.statements) statement(db);

    for (const auto& g : b.grants) {
        auto s = db.prepare(
            "INSERT INTO credit_grants (id, user_id, kind, amount_micros, remaining_micros, priority, "
            "effective_at_ms, expires_at_ms, source, refund_of_event_id, created_at_ms) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)");
        const auto remaining = b.grant_remaining.find(g.id);
        s->bind(1, g.id).bind(2, g.user_id).bind(3, to_string(g.kind)).bind(4, g.amount_micros);
        s->bind(5, remaining != b.grant_remaining.end() ? remaining->second : g.amount_micros);
        s->bind(6, g.priority).bind(7, g.effective_at_ms).bind(8, g.expires_at_ms).bind(9, g.source);
        s->bind(10, g.refund_of_event_id).bind(11, g.created_at_ms);
        s->run();
        if (remaining != b.grant_remaining.end()) b.grant_remaining.erase(remaining);
    }

    for (const auto& [id, h] : b.holds) {
        auto s = db.prepare(
            "INSERT INTO reservations (id, user_id, request_id, amount_micros, state, created_at_ms, "
            "expires_at_ms, closed_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) "
            "ON CONFLICT (id) DO UPDATE SET state = excluded.state, closed_at_ms = excluded.closed_at_ms");
        s->bind(1, id).bind(2, h.user_id).bind(3, h.request_id).bind(4, h.amount_micros).bind(5, h.state);
        s->bind(6, h.created_at_ms).bind(7, h.expires_at_ms).bind(8, h.closed_at_ms);
        s->run();
    }

    for (const auto& e : b.usage) {
        auto s = db.prepare(
            "INSERT INTO usage_events (id, hold_id, event_id, request_id, user_id, key_id, service, upstream, model, "
            "prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, units, provider_cost_micros, "
            "markup_micros, charged_micros, price_source, catalog_hash, status, latency_ms, fingerprint, "
            "created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, "
            "?18, ?19, ?20, ?21, ?22, ?23)");
        const auto& u = e.usage;
        s->bind(1, e.id).bind(2, e.hold_id).bind(3, e.event_id).bind(4, u.request_id).bind(5, e.user_id);
        s->bind(6, u.key_id).bind(7, u.service).bind(8, u.upstream).bind(9, u.model).bind(10, u.prompt_tokens);
        s->bind(11, u.completion_tokens).bind(12, u.cached_tokens).bind(13, u.reasoning_tokens).bind(14, u.units);
        s->bind(15, u.provider_cost_micros).bind(16, u.markup_micros).bind(17, e.charged_micros);
        s->bind(18, u.price_source).bind(19, u.catalog_hash).bind(20, u.status).bind(21, u.latency_ms);
        s->bind(22, e.fingerprint).bind(23, e.created_at_ms);
        s->run();
    }

    for (const auto& t : b.transactions) {
        auto s = db.prepare(
            "INSERT INTO credit_transactions (id, user_id, type, amount_micros, debt_delta_micros, "
            "balance_after_micros, grant_id, actor, reason, idempotency_key, usage_event_id, created_at_ms) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)");
        s->bind(1, t.id).bind(2, t.user_id).bind(3, t.type).bind(4, t.amount_micros).bind(5, t.debt_delta_micros);
        s->bind(6, t.balance_after_micros).bind(7, t.grant_id).bind(8, t.actor).bind(9, t.reason);
        s->bind(10, t.idempotency_key).bind(11, t.usage_event_id).bind(12, t.created_at_ms);
        s->run();
    }

    for (const auto& [id, remaining] : b.grant_remaining) {
        auto s = db.prepare("UPDATE credit_grants SET remaining_micros = ?2 WHERE id = ?1");
        s->bind(1, id).bind(2, remaining);
        s->run();
    }

    for (const auto& [user_id, c] : b.credits) {
        auto s = db.prepare(
            "UPDATE user_credits SET balance_micros = ?2, reserved_micros = ?3, debt_micros = ?4, "
            "overage_limit_micros = ?5 WHERE user_id = ?1");
        s->bind(1, user_id).bind(2, c.balance_micros).bind(3, c.reserved_micros).bind(4, c.debt_micros);
        s->bind(5, c.overage_limit_micros);
        s->run();
    }

    for (const auto& [k, r] : b.rollups) {
        auto s = db.prepare(
            "INSERT INTO usage_daily (user_id, day, service, model, requests, prompt_tokens, completion_tokens, "
            "provider_cost_micros, markup_micros, charged_micros, refunded_micros) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) "
            "ON CONFLICT (user_id, day, service, model) DO UPDATE SET requests = requests + excluded.requests, "
            "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
            "completion_tokens = completion_tokens + excluded.completion_tokens, "
            "provider_cost_micros = provider_cost_micros + excluded.provider_cost_micros, "
            "markup_micros = markup_micros + excluded.markup_micros, "
            "charged_micros = charged_micros + excluded.charged_micros, "
            "refunded_micros = refunded_micros + excluded.refunded_micros");
        s->bind(1, k.user_id).bind(2, k.day).bind(3, k.service).bind(4, k.model).bind(5, r.requests);
        s->bind(6, r.prompt_tokens).bind(7, r.completion_tokens).bind(8, r.provider_cost_micros);
        s->bind(9, r.markup_micros).bind(10, r.charged_micros).bind(11, r.refunded_micros);
        s->run();
    }

    for (const auto& i : b.idempotency) {
        auto s = db.prepare(
            "INSERT INTO idempotency_keys (scope, key, fingerprint, result, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)");
        s->bind(1, i.scope).bind(2, i.key).bind(3, i.fingerprint).bind(4, i.result).bind(5, i.created_at_ms);
        s->run();
    }

    txn.commit();
}

}  // namespace tollgate::ledger
