// Opening a ledger: lock, migrate, rebuild the book, recover, check.
#include "impl.hpp"
#include "migrations.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace tollgate::ledger {

int schema_version_of_binary() { return static_cast<int>(all_migrations().size()); }

int acquire_lock(const std::string& path, std::string& message) {
    // flock on a side file: released by the kernel when the process dies
    // (even by SIGKILL), independent of SQLite's own fcntl locks.
    const std::string lock_path = path + ".lock";
    const int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        message = fmt::format("cannot open lock file {}: {}", lock_path, std::strerror(errno));
        return -2;
    }
    if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
        ::close(fd);
        message = fmt::format(
            "database {} is in use by a running tollgate server (lock {} is held); stop it first or use "
            "the admin API",
            path, lock_path);
        return -1;
    }
    return fd;
}

void configure_connection(sql::database& db, durability sync, bool writer) {
    db.exec("PRAGMA foreign_keys = ON");
    if (writer) {
        // 2 KiB pages: every commit writes each page it dirtied to the WAL,
        // checksummed, and a metered call dirties about a dozen leaves for a
        // few hundred bytes of rows. Half the page, about half the bytes
        // written and checksummed (bench/README.md). Takes effect only on a
        // new database (before WAL mode); an existing one keeps its size.
        db.exec("PRAGMA page_size = 2048");
        db.exec("PRAGMA journal_mode = WAL");
        db.exec(sync == durability::full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
        // Bigger pages in memory: the hot tables' upper B-tree levels stay
        // cached across batches.
        db.exec("PRAGMA cache_size = -65536");
    }
}

migrate_result apply_migrations(sql::database& db) {
    migrate_result out;
    out.from_version = static_cast<int>(db.scalar("PRAGMA user_version"));
    const int binary = schema_version_of_binary();
    out.to_version = out.from_version;
    if (out.from_version > binary) {
        out.error = open_error::schema_too_new;
        out.message = fmt::format(
            "database schema version {} is newer than this tollgate (knows up to {}); upgrade tollgate",
            out.from_version, binary);
        return out;
    }
    for (const auto& m : all_migrations()) {
        if (m.version <= out.from_version) continue;
        try {
            sql::write_transaction txn(db);
            db.exec(m.sql);
            db.exec(fmt::format("PRAGMA user_version = {}", m.version));
            // A migration may edit sqlite_schema directly (0003), which does
            // not tell other connections, nor this one, to reread the schema.
            const auto schema_version = db.scalar("PRAGMA schema_version");
            db.exec(fmt::format("PRAGMA schema_version = {}", schema_version + 1));
            txn.commit();
        } catch (const sql::error& e) {
            out.error = e.is_corruption() ? open_error::not_a_database : open_error::migration_failed;
            out.message = fmt::format("migration {} failed: {}", m.name, e.what());
            return out;
        }
        out.to_version = m.version;
    }
    return out;
}

migrate_result migrate(const std::string& path) {
    migrate_result out;
    std::string message;
    const int fd = acquire_lock(path, message);
    if (fd < 0) {
        out.error = fd == -1 ? open_error::locked : open_error::io_error;
        out.message = message;
        return out;
    }
    try {
        sql::database db(path, sql::database::mode::read_write_create);
        configure_connection(db, durability::full, true);
        out = apply_migrations(db);
    } catch (const sql::error& e) {
        out.error = e.is_corruption() ? open_error::not_a_database : open_error::io_error;
        out.message = e.what();
    }
    ::close(fd);
    return out;
}

check_report check_database(const std::string& path) {
    try {
        sql::database db(path, sql::database::mode::read_only);
        db.exec("PRAGMA query_only = ON");
        return run_check(db);
    } catch (const sql::error& e) {
        check_report report;
        report.ok = false;
        report.problems.push_back(e.what());
        return report;
    }
}

void ledger::impl::load() {
    auto& db = *writer_db;
    {
        auto s = db.prepare(
            "SELECT id, name, price_micros, monthly_credits_micros, models, markup_paid_bps, "
            "markup_free_micros_per_token, byok_available, rollover_percent, default_overage_limit_micros FROM tiers");
        while (s->step()) {
            tier t;
            t.id = s->text(0);
            t.name = s->text(1);
            t.price_micros = s->int64(2);
            t.monthly_credits_micros = s->int64(3);
            t.models = s->text(4);
            t.markup_paid_bps = s->int64(5);
            t.markup_free_micros_per_token = s->int64(6);
            t.byok_available = s->int64(7) != 0;
            t.rollover_percent = static_cast<int>(s->int64(8));
            t.default_overage_limit_micros = s->int64(9);
            tiers_by_id.emplace(t.id, std::move(t));
        }
    }
    {
        auto s = db.prepare(
            "SELECT u.id, u.email, u.name, u.status, u.created_at_ms, c.balance_micros, c.reserved_micros, "
            "c.debt_micros, c.overage_limit_micros FROM users u JOIN user_credits c ON c.user_id = u.id");
        while (s->step()) {
            user_book u;
            u.id = s->int64(0);
            u.record = user_record{u.id, s->text(1), s->text(2), s->text(3), s->int64(4)};
            u.balance_micros = s->int64(5);
            u.reserved_micros = s->int64(6);
            u.debt_micros = s->int64(7);
            u.overage_limit_micros = s->int64(8);
            user_by_email.emplace(u.record.email, u.id);
            users.emplace(u.id, std::move(u));
        }
    }
    {
        auto s = db.prepare(
            "SELECT user_id, tier, option, anchor_ms, period_start_ms, period_end_ms, pending_tier, discount_percent, "
            "discount_periods_left, period_waived, waive_next_period, revert_tier, revert_at_ms FROM subscriptions");
        while (s->step()) {
            const auto it = users.find(s->int64(0));
            if (it == users.end()) continue;
            subscription_state sub{s->text(1), s->text(2), s->int64(3), s->int64(4), s->int64(5), std::nullopt};
            if (!s->is_null(6)) sub.pending_tier = s->text(6);
            sub.discount_percent = static_cast<int>(s->int64(7));
            sub.discount_periods_left = static_cast<int>(s->int64(8));
            sub.period_waived = s->int64(9) != 0;
            sub.waive_next_period = s->int64(10) != 0;
            if (!s->is_null(11)) sub.revert_tier = s->text(11);
            sub.revert_at_ms = s->optional_int64(12);
            it->second.sub = std::move(sub);
        }
    }
    {
        auto s = db.prepare(
            "SELECT code, kind, amount_micros, credit_expires_days, percent_off, duration_months, tier, max_uses, "
            "per_user_limit, uses, expires_at_ms, active, created_at_ms FROM coupon_codes");
        while (s->step()) {
            coupon c;
            c.code = s->text(0);
            c.kind = parse_coupon_kind(s->text(1)).value_or(coupon_kind::credit);
            c.amount_micros = s->optional_int64(2);
            c.credit_expires_days = s->optional_int64(3);
            c.percent_off = s->optional_int64(4);
            c.duration_months = s->optional_int64(5);
            if (!s->is_null(6)) c.tier = s->text(6);
            c.max_uses = s->optional_int64(7);
            c.per_user_limit = s->int64(8);
            c.uses = s->int64(9);
            c.expires_at_ms = s->optional_int64(10);
            c.active = s->int64(11) != 0;
            c.created_at_ms = s->int64(12);
            coupons_by_code.emplace(c.code, std::move(c));
        }
    }
    {
        auto s = db.prepare("SELECT code, user_id, COUNT(*) FROM coupon_redemptions GROUP BY code, user_id");
        while (s->step()) redemptions_by_code_user[{s->text(0), s->int64(1)}] = s->int64(2);
    }
    {
        auto s = db.prepare(
            "SELECT id, user_id, kind, priority, remaining_micros, expires_at_ms, created_at_ms FROM credit_grants "
            "WHERE remaining_micros > 0");
        while (s->step()) {
            const auto it = users.find(s->int64(1));
            if (it == users.end()) continue;
            grant_state g;
            g.id = s->int64(0);
            g.kind = parse_grant_kind(s->text(2)).value_or(grant_kind::bonus);
            g.priority = static_cast<int>(s->int64(3));
            g.remaining_micros = s->int64(4);
            g.expires_at_ms = s->optional_int64(5);
            g.created_at_ms = s->int64(6);
            it->second.grants.push_back(g);
        }
        for (auto& [id, u] : users) std::sort(u.grants.begin(), u.grants.end(), draws_before);
    }
    {
        auto s = db.prepare("SELECT id, key_hash FROM api_keys");
        while (s->step()) {
            key_ids.insert(s->int64(0));
            key_hashes.insert(s->blob(1));
        }
    }
    {
        // One set for both: a secret's hash names one credential.
        auto s = db.prepare("SELECT token_hash FROM service_tokens");
        while (s->step()) key_hashes.insert(s->blob(0));
    }
    next_user_id = db.scalar("SELECT IFNULL(MAX(id), 0) + 1 FROM users");
    next_grant_id = db.scalar("SELECT IFNULL(MAX(id), 0) + 1 FROM credit_grants");
    next_txn_id = db.scalar("SELECT IFNULL(MAX(id), 0) + 1 FROM credit_transactions");
    next_hold_id = db.scalar("SELECT IFNULL(MAX(id), 0) + 1 FROM reservations");
    next_event_id = db.scalar("SELECT IFNULL(MAX(id), 0) + 1 FROM usage_events");
    next_key_id = db.scalar("SELECT IFNULL(MAX(id), 0) + 1 FROM api_keys");
    next_service_token_id = db.scalar("SELECT IFNULL(MAX(id), 0) + 1 FROM service_tokens");
    next_redemption_id = db.scalar("SELECT IFNULL(MAX(id), 0) + 1 FROM coupon_redemptions");
}

void ledger::impl::release_orphaned_holds() {
    // SPEC 4.2: holds whose call never settled (the process died) are
    // released, like an expired card authorisation, and audit-logged.
    auto& db = *writer_db;
    sql::write_transaction txn(db);
    const time_ms at = now();
    std::int64_t released = 0;
    {
        auto s = db.prepare("SELECT id, user_id, request_id, amount_micros FROM reservations WHERE state = 'held'");
        std::vector<std::tuple<std::int64_t, std::int64_t, std::string, std::int64_t>> open;
        while (s->step()) open.emplace_back(s->int64(0), s->int64(1), s->text(2), s->int64(3));
        s->reset();
        for (const auto& [id, user_id, request_id, amount] : open) {
            auto audit = db.prepare(
                "INSERT INTO admin_audit (actor, action, target, detail, created_at_ms) "
                "VALUES ('tollgate', 'hold.orphan_released', ?1, ?2, ?3)");
            audit->bind(1, fmt::format("hold:{}", id))
                .bind(2, fmt::format("user {} request {} amount_micros {}", user_id, request_id, amount))
                .bind(3, at);
            audit->run();
            ++released;
        }
    }
    if (released > 0) {
        auto s = db.prepare("UPDATE reservations SET state = 'released', closed_at_ms = ?1 WHERE state = 'held'");
        s->bind(1, at);
        s->run();
    }
    db.exec("UPDATE user_credits SET reserved_micros = 0 WHERE reserved_micros <> 0");
    txn.commit();
    orphans_released = released;
}

open_result ledger::open(options opts) {
    open_result out;
    auto m = std::make_unique<impl>();
    m->opts = std::move(opts);
    if (m->opts.take_lock) {
        std::string message;
        m->lock_fd = acquire_lock(m->opts.path, message);
        if (m->lock_fd < 0) {
            out.error = m->lock_fd == -1 ? open_error::locked : open_error::io_error;
            out.message = message;
            return out;
        }
    }
    try {
        m->writer_db = std::make_unique<sql::database>(m->opts.path, sql::database::mode::read_write_create);
        configure_connection(*m->writer_db, m->opts.sync, true);
        auto migrated = apply_migrations(*m->writer_db);
        if (migrated.error != open_error::none) {
            out.error = migrated.error;
            out.message = migrated.message;
            return out;
        }
        m->release_orphaned_holds();
        m->load();
        const check_report report = run_check(*m->writer_db);
        if (!report.ok) {
            out.error = open_error::check_failed;
            out.message = fmt::format("ledger check failed; refusing to serve. First problem: {} ({} in all)",
                                      report.problems.front(), report.problems.size());
            return out;
        }
    } catch (const sql::error& e) {
        out.error = e.is_corruption() ? open_error::not_a_database : open_error::io_error;
        out.message = fmt::format("{}: {}", m->opts.path, e.what());
        return out;
    }
    impl* raw = m.get();
    m->writer_db->exec("PRAGMA wal_autocheckpoint = 0");  // the checkpointer thread does it
    m->writer = std::thread([raw] { raw->run_writer(); });
    m->checkpointer = std::thread([raw] { raw->run_checkpointer(); });
    out.value = std::unique_ptr<ledger>(new ledger(std::move(m)));
    return out;
}

std::int64_t ledger::orphaned_holds_released() const { return impl_->orphans_released; }

}  // namespace tollgate::ledger
