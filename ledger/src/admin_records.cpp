// What the admin API keeps beside the money: service tokens and the audit
// log. Written through the batch like every other row.
#include "impl.hpp"

#include <algorithm>
#include <limits>

namespace tollgate::ledger {

namespace {
bool valid_audit_text(std::string_view text) {
    return text.size() <= 4096;
}
}  // namespace

key_outcome ledger::create_service_token(service_token token) {
    if (token.token_hash.empty() || !valid_audit_text(token.token_hash) || token.name.empty() ||
        !valid_audit_text(token.name) || !valid_audit_text(token.scopes) || !valid_audit_text(token.token_prefix)) {
        return {result::invalid_argument, 0};
    }
    auto& m = *impl_;
    commit_seq seq = 0;
    {
        std::unique_lock lock(m.mu, std::defer_lock);
        if (!m.lock_for_change(lock)) return {result::storage_failed, 0};
        if (m.key_hashes.count(token.token_hash)) return {result::key_exists, 0};
        m.key_hashes.insert(token.token_hash);
        token.id = m.next_service_token_id++;
        token.created_at_ms = m.now();
        m.pending.statements.push_back([token](sql::database& db) {
            auto s = db.prepare(
                "INSERT INTO service_tokens (id, token_hash, token_prefix, name, scopes, created_at_ms) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
            s->bind(1, token.id).bind_blob(2, token.token_hash).bind(3, token.token_prefix).bind(4, token.name);
            s->bind(5, token.scopes).bind(6, token.created_at_ms);
            s->run();
        });
        seq = m.stage();
    }
    if (!wait_durable(seq)) return {result::storage_failed, 0};
    return {result::ok, token.id};
}

std::optional<service_token> ledger::find_service_token_by_hash(std::string_view token_hash) {
    try {
        auto db = impl_->reader();
        auto s = db->prepare(
            "SELECT id, token_hash, token_prefix, name, scopes, created_at_ms, revoked_at_ms FROM service_tokens "
            "WHERE token_hash = ?1");
        s->bind_blob(1, token_hash);
        if (!s->step()) return std::nullopt;
        return service_token{s->int64(0), s->blob(1), s->text(2), s->text(3), s->text(4), s->int64(5),
                             s->optional_int64(6)};
    } catch (const sql::error&) {
        return std::nullopt;
    }
}

std::vector<service_token> ledger::service_tokens() {
    std::vector<service_token> out;
    try {
        auto db = impl_->reader();
        auto s = db->prepare(
            "SELECT id, token_hash, token_prefix, name, scopes, created_at_ms, revoked_at_ms FROM service_tokens "
            "ORDER BY id DESC");
        while (s->step()) {
            out.push_back({s->int64(0), s->blob(1), s->text(2), s->text(3), s->text(4), s->int64(5),
                           s->optional_int64(6)});
        }
    } catch (const sql::error&) {
        out.clear();
    }
    return out;
}

simple_outcome ledger::revoke_service_token(std::int64_t token_id) {
    auto& m = *impl_;
    std::unique_lock lock(m.mu, std::defer_lock);
    if (!m.lock_for_change(lock)) return {result::storage_failed};
    if (token_id < 1 || token_id >= m.next_service_token_id) return {result::unknown_key};
    m.pending.statements.push_back([token_id, at = m.now()](sql::database& db) {
        auto s = db.prepare("UPDATE service_tokens SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL");
        s->bind(1, token_id).bind(2, at);
        s->run();
    });
    return {result::ok, m.stage()};
}

simple_outcome ledger::record_audit(audit_entry entry) {
    if (entry.actor.empty() || entry.action.empty() || !valid_audit_text(entry.actor) ||
        !valid_audit_text(entry.action) || !valid_audit_text(entry.target) || !valid_audit_text(entry.detail) ||
        !valid_audit_text(entry.client_address)) {
        return {result::invalid_argument};
    }
    auto& m = *impl_;
    std::unique_lock lock(m.mu, std::defer_lock);
    if (!m.lock_for_change(lock)) return {result::storage_failed};
    entry.created_at_ms = m.now();
    m.pending.statements.push_back([e = std::move(entry)](sql::database& db) {
        auto s = db.prepare(
            "INSERT INTO admin_audit (actor, action, target, detail, client_address, created_at_ms) "
            "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
        s->bind(1, e.actor).bind(2, e.action).bind(3, e.target).bind(4, e.detail).bind(5, e.client_address);
        s->bind(6, e.created_at_ms);
        s->run();
    });
    return {result::ok, m.stage()};
}

audit_page ledger::audit_log(std::optional<std::int64_t> after_id, int limit) {
    limit = std::clamp(limit, 1, 200);
    audit_page page;
    try {
        auto db = impl_->reader();
        auto s = db->prepare(
            "SELECT id, actor, action, target, detail, client_address, created_at_ms FROM admin_audit "
            "WHERE id < ?1 ORDER BY id DESC LIMIT ?2");
        s->bind(1, after_id.value_or(std::numeric_limits<std::int64_t>::max())).bind(2, limit + 1);
        while (s->step()) {
            if (static_cast<int>(page.rows.size()) == limit) {
                page.next_cursor = page.rows.back().id;
                break;
            }
            page.rows.push_back(
                {s->int64(0), s->text(1), s->text(2), s->text(3), s->text(4), s->text(5), s->int64(6)});
        }
    } catch (const sql::error&) {
        page = audit_page{};
        page.code = result::storage_failed;
    }
    return page;
}

}  // namespace tollgate::ledger
