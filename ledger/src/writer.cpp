// The single writer: takes everything staged since its last commit, writes it
// in one SQLite transaction (group commit), then completes every waiter of
// that batch. It is the only code that writes the database while a ledger is
// open.
#include "impl.hpp"

#include <algorithm>
#include <chrono>

#include <pthread.h>

namespace tollgate::ledger {

void ledger::impl::run_writer() {
    pthread_setname_np(pthread_self(), "tollgate-writer");  // visible in top -H, perf, gdb
    {
        std::lock_guard lock(mu);
        writer_id = std::this_thread::get_id();
    }
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
        const auto started = std::chrono::steady_clock::now();
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
                stats.busy_micros += static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::microseconds>(
                                                                     std::chrono::steady_clock::now() - started)
                                                                     .count());
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

void ledger::impl::run_checkpointer() {
    pthread_setname_np(pthread_self(), "tollgate-ckpt");
    std::unique_ptr<sql::database> db;
    try {
        db = std::make_unique<sql::database>(opts.path, sql::database::mode::read_write_create);
        configure_connection(*db, opts.sync, false);
    } catch (const sql::error&) {
        return;  // the writer's own autocheckpoint stays off; the WAL grows until the next open
    }
    std::unique_lock lock(checkpoint_mu);
    while (!checkpoint_stop) {
        checkpoint_cv.wait_for(lock, std::chrono::milliseconds(checkpoint_interval_ms));
        lock.unlock();
        try {
            // PASSIVE: copies what no reader still needs, never blocks the writer.
            db->exec("PRAGMA wal_checkpoint(PASSIVE)");
        } catch (const sql::error&) {
            // Busy or I/O trouble: the WAL keeps the data; try again later.
        }
        lock.lock();
    }
}

void ledger::impl::write(write_batch& b) {
    auto& db = *writer_db;
    sql::write_transaction txn(db);
    // Foreign keys are checked row by row, so every parent goes in before
    // its children: users and keys (the statements), holds, usage events
    // (which name a hold), grants (a refund names its event), transactions
    // (which name a grant or an event). No batch has a cycle. Deferring the
    // checks instead would take `PRAGMA defer_foreign_keys` per batch, and
    // every flag pragma expires all prepared statements: the writer then
    // spent half its time preparing them again (bench/README.md). Coupon
    // redemptions, which name a grant, come last (late_statements).
    for (auto& statement : b.statements) statement(db);

    // A hold opened and closed within the batch is written once, closed.
    std::vector<std::pair<std::int64_t, const hold_row*>> ordered_holds;
    ordered_holds.reserve(b.holds.size());
    for (const auto& [id, h] : b.holds) ordered_holds.emplace_back(id, &h);
    std::sort(ordered_holds.begin(), ordered_holds.end());
    sql::write_rows(db,
                    "INSERT INTO reservations (id, user_id, request_id, amount_micros, state, created_at_ms, "
                    "expires_at_ms, closed_at_ms) VALUES ",
                    " ON CONFLICT (id) DO UPDATE SET state = excluded.state, closed_at_ms = excluded.closed_at_ms", 8,
                    ordered_holds, [](sql::statement& s, int i, const std::pair<std::int64_t, const hold_row*>& entry) {
                        const hold_row& h = *entry.second;
                        s.bind(i, entry.first).bind(i + 1, h.user_id).bind(i + 2, h.request_id);
                        s.bind(i + 3, h.amount_micros).bind(i + 4, h.state).bind(i + 5, h.created_at_ms);
                        s.bind(i + 6, h.expires_at_ms).bind(i + 7, h.closed_at_ms);
                    });

    sql::write_rows(db,
                    "INSERT INTO usage_events (id, hold_id, event_id, request_id, user_id, key_id, service, upstream, "
                    "model, prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, units, "
                    "provider_cost_micros, markup_micros, charged_micros, price_source, catalog_hash, status, "
                    "latency_ms, fingerprint, created_at_ms, generation_id) VALUES ",
                    "", 24, b.usage, [](sql::statement& s, int i, const usage_row& e) {
                        const auto& u = e.usage;
                        s.bind(i, e.id).bind(i + 1, e.hold_id).bind(i + 2, e.event_id).bind(i + 3, u.request_id);
                        s.bind(i + 4, e.user_id).bind(i + 5, u.key_id).bind(i + 6, u.service);
                        s.bind(i + 7, u.upstream).bind(i + 8, u.model).bind(i + 9, u.prompt_tokens);
                        s.bind(i + 10, u.completion_tokens).bind(i + 11, u.cached_tokens);
                        s.bind(i + 12, u.reasoning_tokens).bind(i + 13, u.units).bind(i + 14, u.provider_cost_micros);
                        s.bind(i + 15, u.markup_micros).bind(i + 16, e.charged_micros).bind(i + 17, u.price_source);
                        s.bind(i + 18, u.catalog_hash).bind(i + 19, u.status).bind(i + 20, u.latency_ms);
                        s.bind(i + 21, e.fingerprint).bind(i + 22, e.created_at_ms).bind(i + 23, u.generation_id);
                    });

    sql::write_rows(db,
                    "INSERT INTO credit_grants (id, user_id, kind, amount_micros, remaining_micros, priority, "
                    "effective_at_ms, expires_at_ms, source, refund_of_event_id, created_at_ms) VALUES ",
                    "", 11, b.grants, [&](sql::statement& s, int i, const grant_row& g) {
                        // A grant born in this batch is inserted with its final remaining.
                        const auto remaining = b.grant_remaining.find(g.id);
                        s.bind(i, g.id).bind(i + 1, g.user_id).bind(i + 2, to_string(g.kind));
                        s.bind(i + 3, g.amount_micros);
                        s.bind(i + 4, remaining != b.grant_remaining.end() ? remaining->second : g.amount_micros);
                        s.bind(i + 5, g.priority).bind(i + 6, g.effective_at_ms).bind(i + 7, g.expires_at_ms);
                        s.bind(i + 8, g.source).bind(i + 9, g.refund_of_event_id).bind(i + 10, g.created_at_ms);
                        if (remaining != b.grant_remaining.end()) b.grant_remaining.erase(remaining);
                    });

    sql::write_rows(db,
                    "INSERT INTO credit_transactions (id, user_id, type, amount_micros, debt_delta_micros, "
                    "balance_after_micros, grant_id, actor, reason, idempotency_key, usage_event_id, created_at_ms) "
                    "VALUES ",
                    "", 12, b.transactions, [](sql::statement& s, int i, const txn_row& t) {
                        s.bind(i, t.id).bind(i + 1, t.user_id).bind(i + 2, t.type).bind(i + 3, t.amount_micros);
                        s.bind(i + 4, t.debt_delta_micros).bind(i + 5, t.balance_after_micros);
                        s.bind(i + 6, t.grant_id).bind(i + 7, t.actor).bind(i + 8, t.reason);
                        s.bind(i + 9, t.idempotency_key).bind(i + 10, t.usage_event_id).bind(i + 11, t.created_at_ms);
                    });

    sql::write_rows(db, "UPDATE credit_grants SET remaining_micros = v.column2 FROM (VALUES ",
                    ") AS v WHERE credit_grants.id = v.column1", 2, b.grant_remaining,
                    [](sql::statement& s, int i, const std::pair<const std::int64_t, std::int64_t>& e) {
                        s.bind(i, e.first).bind(i + 1, e.second);
                    });

    sql::write_rows(db,
                    "INSERT INTO user_credits (user_id, balance_micros, reserved_micros, debt_micros, "
                    "overage_limit_micros) VALUES ",
                    " ON CONFLICT (user_id) DO UPDATE SET balance_micros = excluded.balance_micros, "
                    "reserved_micros = excluded.reserved_micros, debt_micros = excluded.debt_micros, "
                    "overage_limit_micros = excluded.overage_limit_micros",
                    5, b.credits, [](sql::statement& s, int i, const std::pair<const std::int64_t, credits_row>& e) {
                        const auto& c = e.second;
                        s.bind(i, e.first).bind(i + 1, c.balance_micros).bind(i + 2, c.reserved_micros);
                        s.bind(i + 3, c.debt_micros).bind(i + 4, c.overage_limit_micros);
                    });

    sql::write_rows(
        db,
        "INSERT INTO usage_daily (user_id, day, service, model, requests, prompt_tokens, completion_tokens, "
        "provider_cost_micros, markup_micros, charged_micros, refunded_micros) VALUES ",
        " ON CONFLICT (user_id, day, service, model) DO UPDATE SET requests = requests + excluded.requests, "
        "prompt_tokens = prompt_tokens + excluded.prompt_tokens, "
        "completion_tokens = completion_tokens + excluded.completion_tokens, "
        "provider_cost_micros = provider_cost_micros + excluded.provider_cost_micros, "
        "markup_micros = markup_micros + excluded.markup_micros, "
        "charged_micros = charged_micros + excluded.charged_micros, "
        "refunded_micros = refunded_micros + excluded.refunded_micros",
        11, b.rollups, [](sql::statement& s, int i, const std::pair<const rollup_key, rollup_delta>& e) {
            const auto& [k, r] = e;
            s.bind(i, k.user_id).bind(i + 1, k.day).bind(i + 2, k.service).bind(i + 3, k.model);
            s.bind(i + 4, r.requests).bind(i + 5, r.prompt_tokens).bind(i + 6, r.completion_tokens);
            s.bind(i + 7, r.provider_cost_micros).bind(i + 8, r.markup_micros).bind(i + 9, r.charged_micros);
            s.bind(i + 10, r.refunded_micros);
        });

    sql::write_rows(db, "INSERT INTO idempotency_keys (scope, key, fingerprint, result, created_at_ms) VALUES ", "",
                    5, b.idempotency, [](sql::statement& s, int i, const idempotency_row& r) {
                        s.bind(i, r.scope).bind(i + 1, r.key).bind(i + 2, r.fingerprint).bind(i + 3, r.result);
                        s.bind(i + 4, r.created_at_ms);
                    });

    for (auto& statement : b.late_statements) statement(db);

    txn.commit();
}

}  // namespace tollgate::ledger
