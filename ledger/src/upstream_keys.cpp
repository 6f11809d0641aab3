// Upstream keys at rest: a user's own key (BYOK, table byok_keys) and the
// key tollgate provisioned for them (openrouter_accounts). The proxy seals
// them with the master key before they get here and opens them after
// reading; the database holds only the blobs.
#include <fmt/format.h>

#include "impl.hpp"

namespace tollgate::ledger {

namespace {

constexpr std::size_t max_account_text = 4096;

bool valid_account(const openrouter_account& a) {
    const bool known_status =
        a.status == "pending" || a.status == "active" || a.status == "disabled" || a.status == "deleted";
    return known_status && a.user_id > 0 && a.label.size() <= max_account_text &&
           a.key_masked.size() <= max_account_text && a.key_hash.size() <= max_account_text &&
           a.last_error.size() <= max_account_text && a.attempts >= 0 && a.usage_micros >= 0 &&
           a.usage_micros <= max_amount_micros &&
           (!a.limit_micros || (*a.limit_micros >= 0 && *a.limit_micros <= max_amount_micros)) &&
           (!a.sealed_key || a.sealed_key->size() <= max_account_text) &&
           (!a.remaining_micros || (*a.remaining_micros >= 0 && *a.remaining_micros <= max_amount_micros));
}

// Statements are cached by their text's address (sqlite.hpp): literals only.
#define TOLLGATE_ACCOUNT_COLUMNS                                                                            \
    "user_id, label, status, key_ciphertext, key_masked, openrouter_key_hash, limit_micros, usage_micros, " \
    "synced_at_ms, last_error, attempts, next_attempt_ms, created_at_ms, remaining_micros"

openrouter_account account_of(sql::statement& s) {
    openrouter_account a;
    a.user_id = s.int64(0);
    a.label = s.text(1);
    a.status = s.text(2);
    if (!s.is_null(3)) a.sealed_key = s.blob(3);
    a.key_masked = s.text(4);
    if (!s.is_null(5)) a.key_hash = s.text(5);
    a.limit_micros = s.optional_int64(6);
    a.usage_micros = s.int64(7);
    a.synced_at_ms = s.optional_int64(8);
    a.last_error = s.text(9);
    a.attempts = s.int64(10);
    a.next_attempt_ms = s.optional_int64(11);
    a.created_at_ms = s.int64(12);
    a.remaining_micros = s.optional_int64(13);
    return a;
}

}  // namespace

void ledger::impl::stage_byok_key(std::int64_t user_id, const std::string& sealed, time_ms at) {
    pending.statements.push_back([user_id, sealed, at](sql::database& db) {
        auto s = db.prepare(
            "INSERT INTO byok_keys (user_id, key_ciphertext, created_at_ms) VALUES (?1, ?2, ?3) "
            "ON CONFLICT (user_id) DO UPDATE SET key_ciphertext = excluded.key_ciphertext");
        s->bind(1, user_id).bind_blob(2, sealed).bind(3, at);
        s->run();
    });
}

std::optional<std::string> ledger::byok_key(std::int64_t user_id) {
    try {
        auto db = impl_->reader();
        auto s = db->prepare("SELECT key_ciphertext FROM byok_keys WHERE user_id = ?1");
        s->bind(1, user_id);
        if (!s->step()) return std::nullopt;
        return s->blob(0);
    } catch (const sql::error&) {
        return std::nullopt;
    }
}

std::optional<openrouter_account> ledger::find_openrouter_account(std::int64_t user_id) {
    try {
        auto db = impl_->reader();
        auto s = db->prepare("SELECT " TOLLGATE_ACCOUNT_COLUMNS " FROM openrouter_accounts WHERE user_id = ?1");
        s->bind(1, user_id);
        if (!s->step()) return std::nullopt;
        return account_of(*s);
    } catch (const sql::error&) {
        return std::nullopt;
    }
}

std::vector<openrouter_account> ledger::openrouter_accounts() {
    std::vector<openrouter_account> out;
    try {
        auto db = impl_->reader();
        auto s = db->prepare("SELECT " TOLLGATE_ACCOUNT_COLUMNS " FROM openrouter_accounts ORDER BY user_id");
        while (s->step()) out.push_back(account_of(*s));
    } catch (const sql::error&) {
        out.clear();
    }
    return out;
}

simple_outcome ledger::put_openrouter_account(const openrouter_account& account) {
    if (!valid_account(account)) return {result::invalid_argument};
    auto& m = *impl_;
    std::unique_lock lock(m.mu, std::defer_lock);
    if (!m.lock_for_change(lock)) return {result::storage_failed};
    if (!m.users.count(account.user_id)) return {result::unknown_user};
    openrouter_account row = account;
    if (row.created_at_ms == 0) row.created_at_ms = m.now();
    m.pending.statements.push_back([row](sql::database& db) {
        auto s = db.prepare("INSERT INTO openrouter_accounts (" TOLLGATE_ACCOUNT_COLUMNS
                            ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14) "
                            "ON CONFLICT (user_id) DO UPDATE SET label = excluded.label, status = excluded.status, "
                            "key_ciphertext = excluded.key_ciphertext, key_masked = excluded.key_masked, "
                            "openrouter_key_hash = excluded.openrouter_key_hash, limit_micros = excluded.limit_micros, "
                            "usage_micros = excluded.usage_micros, synced_at_ms = excluded.synced_at_ms, "
                            "last_error = excluded.last_error, attempts = excluded.attempts, "
                            "next_attempt_ms = excluded.next_attempt_ms, remaining_micros = excluded.remaining_micros");
        s->bind(1, row.user_id).bind(2, row.label).bind(3, row.status);
        if (row.sealed_key) {
            s->bind_blob(4, *row.sealed_key);
        } else {
            s->bind_null(4);
        }
        s->bind(5, row.key_masked);
        if (row.key_hash.empty()) {
            s->bind_null(6);
        } else {
            s->bind(6, row.key_hash);
        }
        s->bind(7, row.limit_micros).bind(8, row.usage_micros).bind(9, row.synced_at_ms).bind(10, row.last_error);
        s->bind(11, row.attempts).bind(12, row.next_attempt_ms).bind(13, row.created_at_ms);
        s->bind(14, row.remaining_micros);
        s->run();
    });
    return {result::ok, m.stage()};
}

simple_outcome ledger::record_openrouter_sync(const openrouter_sync& sync) {
    const auto money = [](const std::optional<std::int64_t>& v) { return !v || (*v >= 0 && *v <= max_amount_micros); };
    if (sync.key_hash.empty() || sync.key_hash.size() > max_account_text || sync.last_error.size() > max_account_text ||
        (sync.status != "active" && sync.status != "disabled") || !money(sync.limit_micros) ||
        !money(sync.remaining_micros) || sync.usage_micros < 0 || sync.usage_micros > max_amount_micros) {
        return {result::invalid_argument};
    }
    auto& m = *impl_;
    std::unique_lock lock(m.mu, std::defer_lock);
    if (!m.lock_for_change(lock)) return {result::storage_failed};
    m.pending.statements.push_back([sync](sql::database& db) {
        if (sync.failed) {
            auto s = db.prepare(
                "UPDATE openrouter_accounts SET last_error = ?3 WHERE user_id = ?1 AND openrouter_key_hash = ?2 "
                "AND status <> 'deleted' AND status <> 'pending'");
            s->bind(1, sync.user_id).bind(2, sync.key_hash).bind(3, sync.last_error);
            s->run();
            return;
        }
        auto s = db.prepare(
            "UPDATE openrouter_accounts SET limit_micros = ?3, usage_micros = ?4, remaining_micros = ?5, status = ?6, "
            "synced_at_ms = ?7, last_error = ?8 WHERE user_id = ?1 AND openrouter_key_hash = ?2 "
            "AND status <> 'deleted' AND status <> 'pending'");
        s->bind(1, sync.user_id).bind(2, sync.key_hash).bind(3, sync.limit_micros).bind(4, sync.usage_micros);
        s->bind(5, sync.remaining_micros).bind(6, sync.status).bind(7, sync.synced_at_ms).bind(8, sync.last_error);
        s->run();
    });
    return {result::ok, m.stage()};
}

reseal_outcome ledger::reseal_all(
    const std::function<std::optional<std::string>(std::string_view blob, const std::string& context)>& reseal) {
    auto& m = *impl_;
    // Every blob is opened first, so a key that does not open them all
    // changes nothing. The rows are read with mu held and nothing pending,
    // so no key staged meanwhile can be overwritten by its old blob.
    std::unique_lock external(m.external_mu);
    std::unique_lock lock(m.mu, std::defer_lock);
    for (;;) {
        flush();
        if (!m.lock_for_change(lock)) return {result::storage_failed};
        // Nothing pending, and nothing the writer took and has not
        // committed yet (it writes a batch after letting go of mu).
        bool in_flight = false;
        {
            std::lock_guard durable(m.durable_mu);
            in_flight = m.durable_seq + 1 < m.pending_seq;
        }
        if (m.pending.empty() && !in_flight) break;
        lock.unlock();
    }
    reseal_outcome out;
    struct blob_row {
        std::string table;
        std::string id;  // user id, or the setting's name
        std::string context;
        std::string blob;
    };
    std::vector<blob_row> rows;
    try {
        auto db = m.reader();
        auto s = db->prepare(
            "SELECT 'byok_keys', user_id, key_ciphertext FROM byok_keys "
            "UNION ALL SELECT 'openrouter_accounts', user_id, key_ciphertext FROM openrouter_accounts "
            "WHERE key_ciphertext IS NOT NULL");
        while (s->step()) {
            const auto user = s->int64(1);
            rows.push_back({s->text(0), std::to_string(user), fmt::format("user:{}", user), s->blob(2)});
        }
        auto t = db->prepare("SELECT name, value FROM settings WHERE name LIKE 'sealed.%' ORDER BY name");
        while (t->step()) rows.push_back({"settings", t->text(0), "setting:" + t->text(0), t->blob(1)});
    } catch (const sql::error&) {
        return {result::storage_failed};
    }
    auto fresh = std::make_shared<std::vector<std::string>>();
    for (const auto& r : rows) {
        auto next = reseal(r.blob, r.context);
        if (!next) {
            out.unreadable.push_back(r.context);
            continue;
        }
        fresh->push_back(std::move(*next));
    }
    if (!out.unreadable.empty()) {
        out.code = result::invalid_argument;
        return out;
    }
    const time_ms at = m.now();
    m.pending.statements.push_back([rows = std::move(rows), fresh, at](sql::database& db) {
        for (std::size_t i = 0; i < rows.size(); ++i) {
            const auto& r = rows[i];
            if (r.table == "settings") {
                auto s = db.prepare("UPDATE settings SET value = ?2, updated_at_ms = ?3 WHERE name = ?1");
                s->bind(1, r.id).bind_blob(2, (*fresh)[i]).bind(3, at);
                s->run();
            } else {
                auto s = db.prepare(r.table == "byok_keys"
                                        ? "UPDATE byok_keys SET key_ciphertext = ?2 WHERE user_id = ?1"
                                        : "UPDATE openrouter_accounts SET key_ciphertext = ?2 WHERE user_id = ?1");
                s->bind(1, static_cast<std::int64_t>(std::stoll(r.id))).bind_blob(2, (*fresh)[i]);
                s->run();
            }
        }
    });
    out.resealed = static_cast<std::int64_t>(fresh->size());
    out.seq = m.stage();
    return out;
}

}  // namespace tollgate::ledger
