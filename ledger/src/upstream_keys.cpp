// A user's own upstream key (BYOK), kept sealed in openrouter_accounts
// (status `byok`): the proxy seals it with the master key before it gets
// here and opens it after reading; the database holds only the blob.
#include "impl.hpp"

namespace tollgate::ledger {

void ledger::impl::stage_byok_key(std::int64_t user_id, const std::string& sealed, time_ms at) {
    pending.statements.push_back([user_id, sealed, at](sql::database& db) {
        auto s = db.prepare(
            "INSERT INTO openrouter_accounts (user_id, label, key_ciphertext, status, created_at_ms) "
            "VALUES (?1, 'byok', ?2, 'byok', ?3) ON CONFLICT (user_id) DO UPDATE SET label = 'byok', "
            "key_ciphertext = excluded.key_ciphertext, key_nonce = NULL, status = 'byok'");
        s->bind(1, user_id).bind_blob(2, sealed).bind(3, at);
        s->run();
    });
}

std::optional<std::string> ledger::byok_key(std::int64_t user_id) {
    try {
        auto db = impl_->reader();
        auto s = db->prepare(
            "SELECT key_ciphertext FROM openrouter_accounts WHERE user_id = ?1 AND status = 'byok' "
            "AND key_ciphertext IS NOT NULL");
        s->bind(1, user_id);
        if (!s->step()) return std::nullopt;
        return s->blob(0);
    } catch (const sql::error&) {
        return std::nullopt;
    }
}

}  // namespace tollgate::ledger
