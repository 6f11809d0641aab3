#include <fmt/format.h>
#include <unistd.h>

#include <algorithm>
#include <cassert>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <limits>

#include "civil_time.hpp"
#include "impl.hpp"

namespace tollgate::ledger {

namespace {

bool valid_amount(std::int64_t amount_micros) {
    return amount_micros > 0 && amount_micros <= max_amount_micros;
}

// Limit on text a caller may store (reasons, names, ids): bounded rows.
constexpr std::size_t max_text_bytes = 4096;
bool valid_text(std::string_view text) {
    return text.size() <= max_text_bytes;
}

bool valid_count(std::int64_t n) {
    return n >= 0 && n <= max_usage_count;
}

// Everything the writer will store must be valid here: a row the database
// refuses inside a batch would stop the ledger for every caller.
bool valid_usage(const usage_event& u) {
    const bool known_source = u.price_source == "upstream" || u.price_source == "catalog" ||
                              u.price_source == "estimated" || u.price_source == "fixed";
    return known_source && valid_text(u.model) && valid_text(u.service) && !u.service.empty() &&
           valid_text(u.upstream) && valid_text(u.status) && valid_text(u.catalog_hash) && valid_text(u.request_id) &&
           valid_count(u.prompt_tokens) && valid_count(u.completion_tokens) && valid_count(u.cached_tokens) &&
           valid_count(u.reasoning_tokens) && valid_count(u.units) && u.provider_cost_micros >= 0 &&
           u.provider_cost_micros <= max_amount_micros && u.markup_micros >= 0 &&
           u.markup_micros <= max_amount_micros && valid_count(u.latency_ms) &&
           (!u.generation_id || valid_text(*u.generation_id));
}

constexpr std::size_t max_pending_operations = 1 << 18;

}  // namespace

std::string_view to_string(grant_kind kind) {
    switch (kind) {
        case grant_kind::refund: return "refund";
        case grant_kind::bonus: return "bonus";
        case grant_kind::allocated: return "allocated";
        case grant_kind::purchased: return "purchased";
    }
    return "bonus";
}

std::optional<grant_kind> parse_grant_kind(std::string_view text) {
    for (int i = 0; i < grant_kind_count; ++i) {
        const auto kind = static_cast<grant_kind>(i);
        if (to_string(kind) == text) return kind;
    }
    return std::nullopt;
}

int default_priority(grant_kind kind) {
    switch (kind) {
        case grant_kind::refund: return 0;
        case grant_kind::bonus: return 10;
        case grant_kind::allocated: return 20;
        case grant_kind::purchased: return 30;
    }
    return 10;
}

std::string_view to_string(result code) {
    switch (code) {
        case result::ok: return "ok";
        case result::unknown_user: return "unknown_user";
        case result::user_exists: return "user_exists";
        case result::unknown_tier: return "unknown_tier";
        case result::invalid_argument: return "invalid_argument";
        case result::invalid_amount: return "invalid_amount";
        case result::amount_overflow: return "amount_overflow";
        case result::insufficient_credits: return "insufficient_credits";
        case result::grant_expired: return "grant_expired";
        case result::unknown_hold: return "unknown_hold";
        case result::hold_closed: return "hold_closed";
        case result::duplicate_request: return "duplicate_request";
        case result::idempotency_conflict: return "idempotency_conflict";
        case result::unknown_charge: return "unknown_charge";
        case result::refund_exceeds_charge: return "refund_exceeds_charge";
        case result::unknown_key: return "unknown_key";
        case result::key_exists: return "key_exists";
        case result::coupon_exists: return "coupon_exists";
        case result::upgrade_not_allowed: return "upgrade_not_allowed";
        case result::option_not_available: return "option_not_available";
        case result::unknown_coupon: return "unknown_coupon";
        case result::storage_failed: return "storage_failed";
    }
    return "unknown";
}

std::string_view to_string(open_error error) {
    switch (error) {
        case open_error::none: return "none";
        case open_error::locked: return "locked";
        case open_error::not_a_database: return "not_a_database";
        case open_error::schema_too_new: return "schema_too_new";
        case open_error::migration_failed: return "migration_failed";
        case open_error::check_failed: return "check_failed";
        case open_error::io_error: return "io_error";
    }
    return "unknown";
}

time_ms ledger::impl::system_now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
        .count();
}

void ledger::impl::stage_idempotency(const std::string& key, const std::string& fingerprint,
                                     const grant_outcome& first, time_ms at) {
    if (key.empty()) return;
    for (auto it = pending.transactions.rbegin(); it != pending.transactions.rend(); ++it) {
        if (it->id == first.transaction_id) {
            it->idempotency_key = key;
            break;
        }
    }
    stage_answer(key, fingerprint, {first.grant_id, first.transaction_id, first.balance_micros}, at);
}

void ledger::impl::stage_answer(const std::string& key, const std::string& fingerprint,
                                std::initializer_list<std::int64_t> numbers, time_ms at) {
    pending.idempotency.push_back(idempotency_row{"ledger", key, fingerprint, fmt::format("{}", fmt::join(numbers, " ")),
                                                  at});
}

std::optional<ledger::impl::stored_answer> ledger::impl::stored_answer_of(sql::database& db, const std::string& key,
                                                                          const std::string& fingerprint,
                                                                          std::size_t count) {
    auto s = db.prepare("SELECT fingerprint, result FROM idempotency_keys WHERE scope = 'ledger' AND key = ?1");
    s->bind(1, key);
    if (!s->step()) return std::nullopt;
    stored_answer out;
    if (s->text(0) != fingerprint) {
        out.conflict = true;
        return out;
    }
    out.numbers.assign(count, 0);
    const std::string text = s->text(1);
    const char* p = text.data();
    const char* const end = text.data() + text.size();
    for (auto& n : out.numbers) {
        while (p < end && *p == ' ') ++p;
        p = std::from_chars(p, end, n).ptr;
    }
    return out;
}

void ledger::impl::wait_for_space(std::unique_lock<std::mutex>& lock) {
    if (pending.operations >= max_pending_operations) refuse_on_writer_thread("a ledger call waiting for room");
    space_cv.wait(lock, [&] { return pending.operations < max_pending_operations || stopping; });
}

bool ledger::impl::lock_for_change(std::unique_lock<std::mutex>& lock) {
    lock.lock();
    wait_for_space(lock);
    return !stopping;
}

user_book* ledger::impl::current_user(std::int64_t user_id, time_ms at) {
    const auto it = users.find(user_id);
    if (it == users.end()) return nullptr;
    bring_up_to_date(it->second, at);
    return &it->second;
}

void ledger::impl::refuse_on_writer_thread(const char* what) const {
    if (std::this_thread::get_id() == writer_id) {
        std::fprintf(stderr, "tollgate ledger: %s from an on_durable callback would wait for itself; aborting\n", what);
        std::abort();
    }
}

ledger::impl::reader_lease::~reader_lease() {
    if (!db) return;
    std::lock_guard lock(owner->readers_mu);
    owner->idle_readers.push_back(std::move(db));
}

ledger::impl::reader_lease ledger::impl::reader() {
    {
        std::lock_guard lock(readers_mu);
        if (!idle_readers.empty()) {
            auto db = std::move(idle_readers.back());
            idle_readers.pop_back();
            return reader_lease{this, std::move(db)};
        }
    }
    auto db = std::make_unique<sql::database>(opts.path, sql::database::mode::read_only);
    configure_connection(*db, opts.sync, false);
    return reader_lease{this, std::move(db)};
}

// ---------------------------------------------------------------------------

ledger::ledger(std::unique_ptr<impl> p) : impl_(std::move(p)) {}

ledger::~ledger() {
    {
        std::lock_guard lock(impl_->mu);
        impl_->stopping = true;
    }
    impl_->work_cv.notify_all();
    if (impl_->writer.joinable()) impl_->writer.join();
    {
        std::lock_guard lock(impl_->checkpoint_mu);
        impl_->checkpoint_stop = true;
    }
    impl_->checkpoint_cv.notify_all();
    if (impl_->checkpointer.joinable()) impl_->checkpointer.join();
}

ledger::impl::~impl() {
    idle_readers.clear();
    writer_db.reset();
    if (lock_fd >= 0) ::close(lock_fd);
}

time_ms ledger::now_ms() const {
    return impl_->now();
}

bool ledger::wait_durable(commit_seq seq) {
    if (seq == 0) return true;
    impl_->refuse_on_writer_thread("wait_durable");
    std::unique_lock lock(impl_->durable_mu);
    impl_->durable_cv.wait(lock, [&] { return impl_->durable_seq >= seq || impl_->failed; });
    return impl_->durable_seq >= seq;
}

void ledger::on_durable(commit_seq seq, std::function<void(bool)> fn) {
    bool durable = false;
    {
        std::lock_guard lock(impl_->durable_mu);
        durable = seq <= impl_->durable_seq;
        if (!durable && !impl_->failed) {
            impl_->callbacks.emplace_back(seq, std::move(fn));
            return;
        }
    }
    fn(durable);
}

void ledger::flush() {
    commit_seq seq = 0;
    {
        std::lock_guard lock(impl_->mu);
        seq = impl_->pending.empty() ? impl_->pending_seq - 1 : impl_->pending_seq;
    }
    (void)wait_durable(seq);  // flush has nothing to act on; failed() tells
}

bool ledger::failed() const {
    std::lock_guard lock(impl_->durable_mu);
    return impl_->failed;
}

// --- users ------------------------------------------------------------------

user_outcome ledger::create_user(const new_user& request) {
    if (request.email.empty() || !valid_text(request.email) || !valid_text(request.name)) {
        return {result::invalid_argument};
    }
    auto& m = *impl_;
    std::unique_lock lock(m.mu, std::defer_lock);
    if (!m.lock_for_change(lock)) return {result::storage_failed};
    const auto tier_it = m.tiers_by_id.find(request.tier);
    if (tier_it == m.tiers_by_id.end()) return {result::unknown_tier};
    if (m.user_by_email.count(request.email)) return {result::user_exists};
    const tier& t = tier_it->second;
    const time_ms at = m.now();

    user_book u;
    u.id = m.next_user_id++;
    u.overage_limit_micros = t.default_overage_limit_micros;
    u.record = user_record{u.id, request.email, request.name, "active", at};
    subscription_state sub{t.id, "credits", at, at, civil::add_months_clamped(at, 1), std::nullopt};
    u.sub = sub;
    m.pending.statements.push_back([u_record = u.record, sub, overage = u.overage_limit_micros](sql::database& db) {
        {
            auto s =
                db.prepare("INSERT INTO users (id, email, name, status, created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5)");
            s->bind(1, u_record.id).bind(2, u_record.email).bind(3, u_record.name).bind(4, u_record.status);
            s->bind(5, u_record.created_at_ms);
            s->run();
        }
        {
            auto s = db.prepare(
                "INSERT INTO user_credits (user_id, balance_micros, reserved_micros, debt_micros, "
                "overage_limit_micros) VALUES (?1, 0, 0, 0, ?2)");
            s->bind(1, u_record.id).bind(2, overage);
            s->run();
        }
        {
            auto s = db.prepare(
                "INSERT INTO subscriptions (user_id, tier, option, anchor_ms, period_start_ms, period_end_ms) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6)");
            s->bind(1, u_record.id).bind(2, sub.tier).bind(3, sub.option).bind(4, sub.anchor_ms);
            s->bind(5, sub.period_start_ms).bind(6, sub.period_end_ms);
            s->run();
        }
    });
    m.stage();
    auto& book = m.users.emplace(u.id, std::move(u)).first->second;
    m.user_by_email.emplace(request.email, book.id);
    m.stage_credits(book);
    if (t.monthly_credits_micros > 0) {
        grant_row row;
        row.kind = grant_kind::allocated;
        row.amount_micros = t.monthly_credits_micros;
        row.priority = default_priority(grant_kind::allocated);
        row.effective_at_ms = at;
        row.expires_at_ms = sub.period_end_ms;
        row.source = "period";
        row.created_at_ms = at;
        m.add_grant(book, row, "grant", request.actor, "monthly credits", std::nullopt);
    }
    return {result::ok, book.id, m.stage()};
}

std::optional<user_record> ledger::find_user(std::int64_t user_id) {
    std::lock_guard lock(impl_->mu);
    const auto it = impl_->users.find(user_id);
    if (it == impl_->users.end()) return std::nullopt;
    return it->second.record;
}

std::optional<subscription> ledger::find_subscription(std::int64_t user_id) {
    std::lock_guard lock(impl_->mu);
    const auto it = impl_->users.find(user_id);
    if (it == impl_->users.end() || !it->second.sub) return std::nullopt;
    const auto& s = *it->second.sub;
    return subscription{user_id,          s.tier,           s.option,
                        s.anchor_ms,      s.period_start_ms, s.period_end_ms,
                        s.pending_tier,   s.discount_percent, s.discount_periods_left,
                        s.period_waived,  s.waive_next_period, s.revert_tier,
                        s.revert_at_ms};
}

simple_outcome ledger::set_overage_limit(std::int64_t user_id, std::int64_t overage_limit_micros) {
    if (overage_limit_micros < 0 || overage_limit_micros > max_amount_micros) return {result::invalid_amount};
    auto& m = *impl_;
    std::unique_lock lock(m.mu, std::defer_lock);
    if (!m.lock_for_change(lock)) return {result::storage_failed};
    const auto it = m.users.find(user_id);
    if (it == m.users.end()) return {result::unknown_user};
    it->second.overage_limit_micros = overage_limit_micros;
    m.stage_credits(it->second);
    return {result::ok, m.stage()};
}

simple_outcome ledger::set_user_status(std::int64_t user_id, const std::string& status) {
    if (status != "active" && status != "suspended" && status != "deleted") return {result::invalid_argument};
    auto& m = *impl_;
    std::unique_lock lock(m.mu, std::defer_lock);
    if (!m.lock_for_change(lock)) return {result::storage_failed};
    const auto it = m.users.find(user_id);
    if (it == m.users.end()) return {result::unknown_user};
    it->second.record.status = status;
    m.pending.statements.push_back([user_id, status](sql::database& db) {
        auto s = db.prepare("UPDATE users SET status = ?2 WHERE id = ?1");
        s->bind(1, user_id).bind(2, status);
        s->run();
    });
    return {result::ok, m.stage()};
}

simple_outcome ledger::set_tier(std::int64_t user_id, const std::string& tier_id) {
    auto& m = *impl_;
    std::unique_lock lock(m.mu, std::defer_lock);
    if (!m.lock_for_change(lock)) return {result::storage_failed};
    const auto tier_it = m.tiers_by_id.find(tier_id);
    if (tier_it == m.tiers_by_id.end()) return {result::unknown_tier};
    // Due boundaries roll under the tier they belong to, before the change.
    user_book* const found = m.current_user(user_id, m.now());
    if (!found || !found->sub) return {result::unknown_user};
    const auto it = m.users.find(user_id);
    // A tier set by hand replaces any scheduled change, a free-month
    // trial's return included.
    it->second.sub->tier = tier_id;
    it->second.sub->pending_tier.reset();
    it->second.sub->revert_tier.reset();
    it->second.sub->revert_at_ms.reset();
    it->second.sub->period_waived = false;
    it->second.sub->waive_next_period = false;
    if (!tier_it->second.byok_available) it->second.sub->option = "credits";
    m.stage_subscription(it->second);
    return {result::ok, m.stage()};
}

user_page ledger::list_users(std::optional<std::int64_t> after_id, int limit) {
    limit = std::clamp(limit, 1, 200);
    user_page page;
    std::lock_guard lock(impl_->mu);
    // The book holds every user; ids only grow, so a page below a cursor
    // never changes when users are added meanwhile.
    std::vector<const user_book*> below;
    const std::int64_t bound = after_id.value_or(std::numeric_limits<std::int64_t>::max());
    for (const auto& [id, u] : impl_->users) {
        if (id < bound) below.push_back(&u);
    }
    const auto take = std::min<std::size_t>(below.size(), static_cast<std::size_t>(limit));
    std::partial_sort(below.begin(), below.begin() + static_cast<std::ptrdiff_t>(take), below.end(),
                      [](const user_book* a, const user_book* b) { return a->id > b->id; });
    for (std::size_t i = 0; i < take; ++i) {
        page.rows.push_back({below[i]->record, below[i]->sub ? below[i]->sub->tier : std::string()});
    }
    if (below.size() > take) page.next_cursor = page.rows.back().user.id;
    return page;
}

std::vector<tier> ledger::tiers() {
    std::lock_guard lock(impl_->mu);
    std::vector<tier> out;
    for (const auto& [id, t] : impl_->tiers_by_id) out.push_back(t);
    std::sort(out.begin(), out.end(), [](const tier& a, const tier& b) { return a.price_micros < b.price_micros; });
    return out;
}

std::optional<tier> ledger::find_tier(const std::string& tier_id) {
    std::lock_guard lock(impl_->mu);
    const auto it = impl_->tiers_by_id.find(tier_id);
    if (it == impl_->tiers_by_id.end()) return std::nullopt;
    return it->second;
}

// --- keys -------------------------------------------------------------------

key_outcome ledger::create_key(key_record key) {
    if (key.key_hash.empty() || !valid_text(key.key_hash) || key.rpm_limit <= 0 || key.rpm_limit > max_usage_count ||
        !valid_text(key.name) || !valid_text(key.scopes) || !valid_text(key.key_prefix) ||
        (key.kind != "user" && key.kind != "service")) {
        return {result::invalid_argument, 0};
    }
    auto& m = *impl_;
    commit_seq seq = 0;
    {
        std::unique_lock lock(m.mu, std::defer_lock);
        if (!m.lock_for_change(lock)) return {result::storage_failed, 0};
        if (!m.users.count(key.user_id)) return {result::unknown_user, 0};
        if (m.key_hashes.count(key.key_hash)) return {result::key_exists, 0};
        key.id = m.next_key_id++;
        m.key_ids.insert(key.id);
        m.key_hashes.insert(key.key_hash);
        key.created_at_ms = m.now();
        m.pending.statements.push_back([key](sql::database& db) {
            auto s = db.prepare(
                "INSERT INTO api_keys (id, user_id, key_hash, key_prefix, name, kind, scopes, rpm_limit, "
                "created_at_ms) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)");
            s->bind(1, key.id).bind(2, key.user_id).bind_blob(3, key.key_hash).bind(4, key.key_prefix);
            s->bind(5, key.name).bind(6, key.kind).bind(7, key.scopes).bind(8, key.rpm_limit);
            s->bind(9, key.created_at_ms);
            s->run();
        });
        seq = m.stage();
    }
    // A key is only usable once it is on disk; callers get it durable.
    if (!wait_durable(seq)) return {result::storage_failed, 0};
    return {result::ok, key.id};  // key_outcome
}

namespace {
key_record read_key(sql::statement& s) {
    key_record k;
    k.id = s.int64(0);
    k.user_id = s.int64(1);
    k.key_hash = s.blob(2);
    k.key_prefix = s.text(3);
    k.name = s.text(4);
    k.kind = s.text(5);
    k.scopes = s.text(6);
    k.rpm_limit = s.int64(7);
    k.created_at_ms = s.int64(8);
    k.revoked_at_ms = s.optional_int64(9);
    return k;
}
}  // namespace

std::optional<key_record> ledger::find_key_by_hash(std::string_view key_hash) {
    try {
        auto db = impl_->reader();
        auto s = db->prepare(
            "SELECT id, user_id, key_hash, key_prefix, name, kind, scopes, rpm_limit, created_at_ms, revoked_at_ms "
            "FROM api_keys WHERE key_hash = ?1");
        s->bind_blob(1, key_hash);
        if (!s->step()) return std::nullopt;
        return read_key(*s);
    } catch (const sql::error&) {
        return std::nullopt;
    }
}

std::vector<key_record> ledger::list_keys(std::int64_t user_id) {
    std::vector<key_record> out;
    try {
        auto db = impl_->reader();
        auto s = db->prepare(
            "SELECT id, user_id, key_hash, key_prefix, name, kind, scopes, rpm_limit, created_at_ms, revoked_at_ms "
            "FROM api_keys WHERE user_id = ?1 ORDER BY id");
        s->bind(1, user_id);
        while (s->step()) out.push_back(read_key(*s));
    } catch (const sql::error&) {
        out.clear();
    }
    return out;
}

simple_outcome ledger::revoke_key(std::int64_t key_id) {
    auto& m = *impl_;
    std::unique_lock lock(m.mu, std::defer_lock);
    if (!m.lock_for_change(lock)) return {result::storage_failed};
    if (!m.key_ids.count(key_id)) return {result::unknown_key};
    const time_ms at = m.now();
    m.pending.statements.push_back([key_id, at](sql::database& db) {
        auto s = db.prepare("UPDATE api_keys SET revoked_at_ms = ?2 WHERE id = ?1 AND revoked_at_ms IS NULL");
        s->bind(1, key_id).bind(2, at);
        s->run();
    });
    return {result::ok, m.stage()};
}

// --- settings ---------------------------------------------------------------

std::optional<std::string> ledger::setting(std::string_view name) {
    try {
        auto db = impl_->reader();
        auto s = db->prepare("SELECT value FROM settings WHERE name = ?1");
        s->bind(1, std::string(name));
        if (!s->step()) return std::nullopt;
        return s->blob(0);
    } catch (const sql::error&) {
        return std::nullopt;
    }
}

simple_outcome ledger::put_setting(const std::string& name, const std::string& value) {
    if (name.empty() || !valid_text(name)) return {result::invalid_argument};
    auto& m = *impl_;
    std::unique_lock lock(m.mu, std::defer_lock);
    if (!m.lock_for_change(lock)) return {result::storage_failed};
    const time_ms at = m.now();
    m.pending.statements.push_back([name, value, at](sql::database& db) {
        auto s = db.prepare(
            "INSERT INTO settings (name, value, updated_at_ms) VALUES (?1, ?2, ?3) "
            "ON CONFLICT (name) DO UPDATE SET value = excluded.value, updated_at_ms = excluded.updated_at_ms");
        s->bind(1, name).bind_blob(2, value).bind(3, at);
        s->run();
    });
    return {result::ok, m.stage()};
}

// --- money ------------------------------------------------------------------

namespace {

// The committed first answer of an idempotent grant or refund with this key
// (written by impl::stage_idempotency): nullopt when the key is new,
// idempotency_conflict when it came with another request.
std::optional<grant_outcome> replay_of(sql::database& db, const std::string& key, const std::string& fingerprint) {
    if (key.empty()) return std::nullopt;
    const auto stored = ledger::impl::stored_answer_of(db, key, fingerprint, 3);
    if (!stored) return std::nullopt;
    if (stored->conflict) return grant_outcome{result::idempotency_conflict};
    grant_outcome out;
    out.grant_id = stored->numbers[0];
    out.transaction_id = stored->numbers[1];
    out.balance_micros = stored->numbers[2];
    out.replayed = true;
    return out;
}

}  // namespace

ledger::claim ledger::claim_idempotency_key(const std::string& scope, const std::string& key,
                                           const std::string& fingerprint) {
    if (scope.empty() || scope == "ledger" || key.empty() || !valid_text(scope) || !valid_text(key) ||
        !valid_text(fingerprint)) {
        return claim::conflict;
    }
    auto& m = *impl_;
    std::unique_lock external(m.external_mu);
    try {
        auto db = m.reader();
        auto s = db->prepare("SELECT fingerprint FROM idempotency_keys WHERE scope = ?1 AND key = ?2");
        s->bind(1, scope).bind(2, key);
        if (s->step()) return s->text(0) == fingerprint ? claim::same : claim::conflict;
    } catch (const sql::error&) {
        return claim::storage_failed;
    }
    commit_seq seq = 0;
    {
        std::unique_lock lock(m.mu, std::defer_lock);
        if (!m.lock_for_change(lock)) return claim::storage_failed;
        m.pending.idempotency.push_back(idempotency_row{scope, key, fingerprint, "", m.now()});
        seq = m.stage();
    }
    return wait_durable(seq) ? claim::fresh : claim::storage_failed;
}

grant_outcome ledger::grant(const grant_request& r) {
    if (!valid_amount(r.amount_micros)) return {result::invalid_amount};
    if (static_cast<int>(r.kind) >= grant_kind_count) return {result::invalid_argument};
    if (!valid_text(r.reason) || !valid_text(r.source) || !valid_text(r.actor) || !valid_text(r.idempotency_key)) {
        return {result::invalid_argument};
    }
    auto& m = *impl_;
    const std::string fingerprint =
        fmt::format("grant|{}|{}|{}|{}|{}|{}|{}", r.user_id, to_string(r.kind), r.amount_micros,
                    r.expires_at_ms.value_or(-1), r.priority.value_or(default_priority(r.kind)), r.source, r.reason);

    std::unique_lock<std::mutex> external;
    if (!r.idempotency_key.empty()) {
        external = std::unique_lock(m.external_mu);
        try {
            auto db = m.reader();
            if (auto first = replay_of(*db.db, r.idempotency_key, fingerprint)) return *first;
        } catch (const sql::error&) {
            return {result::storage_failed};
        }
    }

    grant_outcome out;
    {
        std::unique_lock lock(m.mu, std::defer_lock);
        if (!m.lock_for_change(lock)) return {result::storage_failed};
        const time_ms at = m.now();
        if (r.expires_at_ms && *r.expires_at_ms <= at) return {result::grant_expired};
        user_book* const found = m.current_user(r.user_id, at);
        if (!found) return {result::unknown_user};
        auto& u = *found;
        if (u.balance_micros + r.amount_micros > max_balance_micros) return {result::amount_overflow};

        grant_row row;
        row.kind = r.kind;
        row.amount_micros = r.amount_micros;
        row.priority = r.priority.value_or(default_priority(r.kind));
        row.effective_at_ms = at;
        row.expires_at_ms = r.expires_at_ms;
        row.source = r.source;
        row.created_at_ms = at;
        const auto [grant_id, txn_id] = m.add_grant(u, row, "grant", r.actor, r.reason, std::nullopt);
        out = {result::ok, grant_id, txn_id, u.balance_micros, false, 0};
        m.stage_idempotency(r.idempotency_key, fingerprint, out, at);
        out.seq = m.stage();
    }
    if (external.owns_lock()) {
        // The next caller with this key must find it committed.
        if (!wait_durable(out.seq)) return {result::storage_failed};
    }
    return out;
}

hold_outcome ledger::reserve(std::int64_t user_id, std::int64_t max_micros, std::string_view request_id) {
    if (!valid_amount(max_micros)) return {result::invalid_amount};
    if (request_id.empty() || !valid_text(request_id)) return {result::invalid_argument};
    auto& m = *impl_;
    std::unique_lock lock(m.mu, std::defer_lock);
    if (!m.lock_for_change(lock)) return {result::storage_failed};
    const time_ms at = m.now();
    user_book* const found = m.current_user(user_id, at);
    if (!found) return {result::unknown_user};
    auto& u = *found;
    std::string request(request_id);
    if (m.hold_by_request.count(request)) return {result::duplicate_request};
    const std::int64_t available = u.available_micros();
    if (available < max_micros) return {result::insufficient_credits, 0, available, 0};

    hold_state h{m.next_hold_id++, user_id, max_micros, at, at + m.opts.hold_ttl_ms, std::move(request)};
    u.reserved_micros += max_micros;
    m.stage_credits(u);
    m.pending.holds[h.id] = hold_row{user_id, h.request_id, max_micros, "held", at, h.expires_at_ms, std::nullopt};
    m.hold_by_request.emplace(h.request_id, h.id);
    const std::int64_t hold_id = h.id;
    m.holds.emplace(hold_id, std::move(h));
    return {result::ok, hold_id, available - max_micros, m.stage()};
}

charge_outcome ledger::settle(std::int64_t hold_id, std::int64_t charged_micros, const usage_event& usage) {
    if (charged_micros < 0 || charged_micros > max_amount_micros) return {result::invalid_amount};
    if (!valid_usage(usage)) return {result::invalid_argument};
    auto& m = *impl_;
    std::unique_lock lock(m.mu, std::defer_lock);
    if (!m.lock_for_change(lock)) return {result::storage_failed};
    if (usage.key_id && !m.key_ids.count(*usage.key_id)) return {result::unknown_key};
    auto it = m.holds.find(hold_id);
    if (it == m.holds.end()) {
        // A call that outlived its hold is still charged in full.
        const auto expired = m.expired_holds.find(hold_id);
        if (expired == m.expired_holds.end()) {
            return {hold_id > 0 && hold_id < m.next_hold_id ? result::hold_closed : result::unknown_hold};
        }
        auto& reopened = m.users.at(expired->second.user_id);
        reopened.reserved_micros += expired->second.amount_micros;  // close_hold releases it again
        it = m.holds.emplace(hold_id, std::move(expired->second)).first;
        m.expired_holds.erase(expired);
    }
    auto& u = m.users.at(it->second.user_id);
    if (u.debt_micros + charged_micros > max_balance_micros) return {result::amount_overflow};
    const time_ms at = m.now();

    usage_row row;
    row.id = m.next_event_id++;
    row.hold_id = hold_id;
    row.user_id = u.id;
    row.usage = usage;
    row.usage.request_id = it->second.request_id;
    row.charged_micros = charged_micros;
    row.created_at_ms = at;

    m.close_hold(it->second, "settled", at);
    m.bring_up_to_date(u, at);
    charge_outcome out;
    out.usage_event_id = row.id;
    out.charged_micros = charged_micros;
    out.first_transaction_id = m.draw(u, charged_micros, "charge", "proxy", "", row.id, at);
    out.balance_micros = u.balance_micros;
    out.available_micros = u.available_micros();
    m.stage_usage(std::move(row));
    out.seq = m.stage();
    return out;
}

simple_outcome ledger::release(std::int64_t hold_id) {
    auto& m = *impl_;
    std::unique_lock lock(m.mu, std::defer_lock);
    if (!m.lock_for_change(lock)) return {result::storage_failed};
    const auto it = m.holds.find(hold_id);
    if (it == m.holds.end()) {
        return {hold_id > 0 && hold_id < m.next_hold_id ? result::hold_closed : result::unknown_hold};
    }
    m.close_hold(it->second, "released", m.now());
    return {result::ok, m.stage()};
}

charge_outcome ledger::record_usage(std::int64_t user_id, const usage_event& usage) {
    if (!valid_usage(usage)) return {result::invalid_argument};
    auto& m = *impl_;
    std::unique_lock lock(m.mu, std::defer_lock);
    if (!m.lock_for_change(lock)) return {result::storage_failed};
    if (usage.key_id && !m.key_ids.count(*usage.key_id)) return {result::unknown_key};
    const time_ms at = m.now();
    user_book* const u = m.current_user(user_id, at);
    if (!u) return {result::unknown_user};
    usage_row row;
    row.id = m.next_event_id++;
    row.user_id = u->id;
    row.usage = usage;
    row.usage.markup_micros = 0;
    row.charged_micros = 0;
    row.created_at_ms = at;
    charge_outcome out;
    out.usage_event_id = row.id;
    out.balance_micros = u->balance_micros;
    out.available_micros = u->available_micros();
    m.stage_usage(std::move(row));
    out.seq = m.stage();
    return out;
}

charge_outcome ledger::deduct(const deduct_request& r) {
    // A tracked event may cost nothing (a free service); a plain deduct may not.
    const bool free_event = r.usage && r.amount_micros == 0;
    if (!free_event && !valid_amount(r.amount_micros)) return {result::invalid_amount};
    if (r.event_id.empty() || !valid_text(r.event_id) || !valid_text(r.reason) || !valid_text(r.service) ||
        r.service.empty()) {
        return {result::invalid_argument};
    }
    auto& m = *impl_;
    if (r.usage && (!valid_usage(*r.usage) || r.usage->service.empty())) return {result::invalid_argument};
    // What a replay must match: every field the request gave.
    std::string fingerprint = fmt::format("deduct|{}|{}|{}|{}", r.user_id, r.amount_micros, r.service, r.reason);
    if (r.usage) {
        const auto& e = *r.usage;
        fingerprint = fmt::format("track|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}", r.user_id, r.amount_micros, e.service,
                                  e.model, e.prompt_tokens, e.completion_tokens, e.units, e.provider_cost_micros,
                                  e.markup_micros, r.occurred_at_ms.value_or(-1), r.reason);
    }

    // event_id is unique forever: look in committed history, under
    // external_mu so no second call with this id can be deciding meanwhile.
    std::unique_lock external(m.external_mu);
    try {
        auto db = m.reader();
        auto s = db->prepare(
            "SELECT e.id, e.fingerprint, e.charged_micros, "
            "(SELECT MIN(t.id) FROM credit_transactions t WHERE t.usage_event_id = e.id), "
            "(SELECT t.balance_after_micros FROM credit_transactions t WHERE t.usage_event_id = e.id "
            " AND t.type IN ('deduct', 'debt') ORDER BY t.id DESC LIMIT 1) "
            "FROM usage_events e WHERE e.event_id = ?1");
        s->bind(1, r.event_id);
        if (s->step()) {
            if (s->text(1) != fingerprint) return {result::idempotency_conflict};
            charge_outcome out;
            out.usage_event_id = s->int64(0);
            out.charged_micros = s->int64(2);
            out.first_transaction_id = s->int64(3);
            out.balance_micros = s->int64(4);  // the first answer's balance, not today's
            out.replayed = true;
            return out;
        }
    } catch (const sql::error&) {
        return {result::storage_failed};
    }

    charge_outcome out;
    {
        std::unique_lock lock(m.mu, std::defer_lock);
        if (!m.lock_for_change(lock)) return {result::storage_failed};
        const time_ms at = m.now();
        user_book* const found = m.current_user(r.user_id, at);
        if (!found) return {result::unknown_user};
        // A key the database does not hold would fail the batch for everyone.
        if (r.usage && r.usage->key_id && !m.key_ids.count(*r.usage->key_id)) return {result::unknown_key};
        auto& u = *found;
        const std::int64_t available = u.available_micros();
        if (available < r.amount_micros && !r.allow_debt) {
            out.code = result::insufficient_credits;
            out.available_micros = available;
            return out;
        }
        if (r.allow_debt && u.debt_micros + r.amount_micros > max_balance_micros) return {result::amount_overflow};
        usage_row row;
        row.id = m.next_event_id++;
        row.event_id = r.event_id;
        row.user_id = u.id;
        if (r.usage) {
            row.usage = *r.usage;
        } else {
            row.usage.service = r.service;
            row.usage.provider_cost_micros = r.amount_micros;
            row.usage.price_source = "fixed";
        }
        row.usage.request_id = r.event_id;
        row.charged_micros = r.amount_micros;
        row.fingerprint = fingerprint;
        row.created_at_ms = r.occurred_at_ms.value_or(at);
        out.usage_event_id = row.id;
        out.charged_micros = r.amount_micros;
        out.first_transaction_id = m.draw(u, r.amount_micros, "deduct", r.actor, r.reason, row.id, at);
        out.balance_micros = u.balance_micros;
        out.available_micros = u.available_micros();
        m.stage_usage(std::move(row));
        out.seq = m.stage();
    }
    if (!wait_durable(out.seq)) return {result::storage_failed};
    return out;
}

grant_outcome ledger::refund(const refund_request& r) {
    if (!valid_amount(r.amount_micros)) return {result::invalid_amount};
    if (r.usage_event_id.has_value() == r.transaction_id.has_value()) return {result::invalid_argument};
    if (!valid_text(r.reason) || !valid_text(r.actor) || !valid_text(r.idempotency_key)) {
        return {result::invalid_argument};
    }
    auto& m = *impl_;
    const std::string fingerprint = fmt::format("refund|{}|{}|{}|{}|{}", r.user_id, r.amount_micros,
                                                r.usage_event_id.value_or(0), r.transaction_id.value_or(0), r.reason);

    // Refund totals are read from committed history; external_mu keeps two
    // refunds of one charge from both seeing room for themselves.
    std::unique_lock external(m.external_mu);
    flush();  // the charge being refunded may still be in the pending batch
    std::int64_t event_id = 0, charged_micros = 0, refunded_micros = 0;
    std::string service, model;
    try {
        auto db = m.reader();
        if (auto first = replay_of(*db.db, r.idempotency_key, fingerprint)) return *first;
        std::optional<std::int64_t> target = r.usage_event_id;
        if (r.transaction_id) {
            auto s = db->prepare("SELECT usage_event_id FROM credit_transactions WHERE id = ?1 AND user_id = ?2");
            s->bind(1, *r.transaction_id).bind(2, r.user_id);
            if (!s->step() || s->is_null(0)) return {result::unknown_charge};
            target = s->int64(0);
        }
        auto s = db->prepare(
            "SELECT e.id, e.charged_micros, e.service, e.model, "
            "(SELECT IFNULL(SUM(g.amount_micros), 0) FROM credit_grants g WHERE g.refund_of_event_id = e.id) "
            "FROM usage_events e WHERE e.id = ?1 AND e.user_id = ?2");
        s->bind(1, *target).bind(2, r.user_id);
        if (!s->step()) return {result::unknown_charge};
        event_id = s->int64(0);
        charged_micros = s->int64(1);
        service = s->text(2);
        model = s->text(3);
        refunded_micros = s->int64(4);
    } catch (const sql::error&) {
        return {result::storage_failed};
    }
    if (refunded_micros + r.amount_micros > charged_micros) return {result::refund_exceeds_charge};

    grant_outcome out;
    {
        std::unique_lock lock(m.mu, std::defer_lock);
        if (!m.lock_for_change(lock)) return {result::storage_failed};
        const time_ms at = m.now();
        user_book* const found = m.current_user(r.user_id, at);
        if (!found) return {result::unknown_user};
        auto& u = *found;
        grant_row row;
        row.kind = grant_kind::refund;
        row.amount_micros = r.amount_micros;
        row.priority = default_priority(grant_kind::refund);
        row.effective_at_ms = at;
        row.source = "refund";
        row.refund_of_event_id = event_id;
        row.created_at_ms = at;
        const auto [grant_id, txn_id] = m.add_grant(u, row, "refund", r.actor, r.reason, event_id);
        out = {result::ok, grant_id, txn_id, u.balance_micros, false, 0};
        m.stage_idempotency(r.idempotency_key, fingerprint, out, at);
        m.pending.rollups[rollup_key{u.id, civil::format_day(at), service, model}].refunded_micros += r.amount_micros;
        out.seq = m.stage();
    }
    if (!wait_durable(out.seq)) return {result::storage_failed};
    return out;
}

// --- maintenance ------------------------------------------------------------

maintenance_outcome ledger::expire_holds() {
    auto& m = *impl_;
    std::unique_lock lock(m.mu);
    if (m.stopping) return {result::storage_failed};
    const time_ms at = m.now();
    std::vector<std::int64_t> due;
    for (const auto& [id, h] : m.holds) {
        if (h.expires_at_ms <= at) due.push_back(id);
    }
    for (const auto id : due) {
        hold_state kept = m.holds.at(id);
        m.close_hold(m.holds.at(id), "expired", at);
        m.expired_holds.emplace(id, std::move(kept));
    }
    // Past a second TTL no call can still be running for them.
    for (auto e = m.expired_holds.begin(); e != m.expired_holds.end();) {
        e = e->second.expires_at_ms + m.opts.hold_ttl_ms <= at ? m.expired_holds.erase(e) : std::next(e);
    }
    maintenance_outcome out{result::ok, static_cast<std::int64_t>(due.size()), 0};
    if (!due.empty()) out.seq = m.stage();
    return out;
}

maintenance_outcome ledger::expire_grants() {
    auto& m = *impl_;
    std::unique_lock lock(m.mu);
    if (m.stopping) return {result::storage_failed};
    const time_ms at = m.now();
    const std::size_t before = m.pending.transactions.size();
    for (auto& [id, u] : m.users) {
        const bool due = std::any_of(u.grants.begin(), u.grants.end(),
                                     [&](const grant_state& g) { return g.expires_at_ms && *g.expires_at_ms <= at; });
        if (due) m.expire_due_grants(u, at, false);
    }
    const auto count = static_cast<std::int64_t>(m.pending.transactions.size() - before);
    maintenance_outcome out{result::ok, count, 0};
    if (count > 0) out.seq = m.stage();
    return out;
}

maintenance_outcome ledger::roll_periods() {
    auto& m = *impl_;
    std::unique_lock lock(m.mu);
    if (m.stopping) return {result::storage_failed};
    const time_ms at = m.now();
    std::int64_t rolled = 0;
    for (auto& [id, u] : m.users) {
        while (u.sub && u.sub->period_end_ms <= at) {
            m.roll_one_boundary(u);
            ++rolled;
        }
    }
    maintenance_outcome out{result::ok, rolled, 0};
    if (rolled > 0) out.seq = m.stage();
    return out;
}

// --- reads ------------------------------------------------------------------

std::optional<balance> ledger::get_balance(std::int64_t user_id) {
    auto& m = *impl_;
    std::unique_lock lock(m.mu, std::defer_lock);
    if (!m.lock_for_change(lock)) return std::nullopt;  // the book ran ahead of a failed commit: show nothing
    // Due expiries and period rolls first, so balance, available and by_kind
    // all describe the same moment (balance = sum(by_kind) - debt).
    user_book* const found = m.current_user(user_id, m.now());
    if (!found) return std::nullopt;
    auto& u = *found;
    balance b;
    b.user_id = user_id;
    b.balance_micros = u.balance_micros;
    b.reserved_micros = u.reserved_micros;
    b.available_micros = u.available_micros();
    b.debt_micros = u.debt_micros;
    b.overage_limit_micros = u.overage_limit_micros;
    for (const auto& g : u.grants) b.by_kind_micros[static_cast<int>(g.kind)] += g.remaining_micros;
    return b;
}

namespace {
// A credit_transactions row joined with its grant's kind, in the column
// order of the transaction reads below.
transaction read_transaction(sql::statement& s) {
    transaction t;
    t.id = s.int64(0);
    t.user_id = s.int64(1);
    t.type = s.text(2);
    if (!s.is_null(3)) t.kind = parse_grant_kind(s.text(3));
    t.amount_micros = s.int64(4);
    t.debt_delta_micros = s.int64(5);
    t.balance_after_micros = s.int64(6);
    t.grant_id = s.optional_int64(7);
    t.actor = s.text(8);
    t.reason = s.text(9);
    t.usage_event_id = s.optional_int64(10);
    t.created_at_ms = s.int64(11);
    return t;
}
}  // namespace

transaction_page ledger::transactions(const transaction_query& q) {
    transaction_page page;
    const int limit = std::clamp(q.limit, 1, 200);
    const bool time_window = q.from_ms || q.to_ms;
    try {
        auto db = impl_->reader();
        // Two fixed statements, each with bounds an index can use: newest
        // first by id for plain paging, by time for a window.
        auto s = time_window
                     ? db->prepare(
                           "SELECT t.id, t.user_id, t.type, g.kind, t.amount_micros, t.debt_delta_micros, "
                           "t.balance_after_micros, t.grant_id, t.actor, t.reason, t.usage_event_id, t.created_at_ms "
                           "FROM credit_transactions t INDEXED BY credit_transactions_by_user_time "
                           "LEFT JOIN credit_grants g ON g.id = t.grant_id "
                           "WHERE t.user_id = ?1 AND t.created_at_ms >= ?4 AND t.created_at_ms < ?5 AND t.id < ?2 "
                           "AND (?3 IS NULL OR t.type = ?3) ORDER BY t.id DESC LIMIT ?6")
                     : db->prepare(
                           "SELECT t.id, t.user_id, t.type, g.kind, t.amount_micros, t.debt_delta_micros, "
                           "t.balance_after_micros, t.grant_id, t.actor, t.reason, t.usage_event_id, t.created_at_ms "
                           "FROM credit_transactions t INDEXED BY credit_transactions_by_user_id "
                           "LEFT JOIN credit_grants g ON g.id = t.grant_id "
                           "WHERE t.user_id = ?1 AND t.id < ?2 AND (?3 IS NULL OR t.type = ?3) "
                           "ORDER BY t.id DESC LIMIT ?6");
        s->bind(1, q.user_id).bind(2, q.after_id.value_or(std::numeric_limits<std::int64_t>::max())).bind(3, q.type);
        if (time_window) {
            s->bind(4, q.from_ms.value_or(std::numeric_limits<std::int64_t>::min()));
            s->bind(5, q.to_ms.value_or(std::numeric_limits<std::int64_t>::max()));
        }
        s->bind(6, limit + 1);
        while (s->step()) {
            if (static_cast<int>(page.rows.size()) == limit) {
                page.next_cursor = page.rows.back().id;
                break;
            }
            page.rows.push_back(read_transaction(*s));
        }
    } catch (const sql::error&) {
        page = transaction_page{};
        page.code = result::storage_failed;
    }
    return page;
}

std::optional<transaction> ledger::find_transaction(std::int64_t user_id, std::int64_t transaction_id) {
    try {
        auto db = impl_->reader();
        auto s = db->prepare(
            "SELECT t.id, t.user_id, t.type, g.kind, t.amount_micros, t.debt_delta_micros, t.balance_after_micros, "
            "t.grant_id, t.actor, t.reason, t.usage_event_id, t.created_at_ms FROM credit_transactions t "
            "LEFT JOIN credit_grants g ON g.id = t.grant_id WHERE t.id = ?1 AND t.user_id = ?2");
        s->bind(1, transaction_id).bind(2, user_id);
        if (!s->step()) return std::nullopt;
        return read_transaction(*s);
    } catch (const sql::error&) {
        return std::nullopt;
    }
}

std::int64_t ledger::open_hold_count() {
    std::lock_guard lock(impl_->mu);
    return static_cast<std::int64_t>(impl_->holds.size());
}

usage_summary ledger::summarize_usage(std::int64_t user_id, const std::string& from_day, const std::string& to_day) {
    usage_summary out;
    try {
        auto db = impl_->reader();
        auto s = db->prepare(
            "SELECT service, SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), SUM(provider_cost_micros), "
            "SUM(markup_micros), SUM(charged_micros), SUM(refunded_micros) FROM usage_daily "
            "WHERE user_id = ?1 AND day >= ?2 AND day <= ?3 GROUP BY service ORDER BY service");
        s->bind(1, user_id).bind(2, from_day).bind(3, to_day);
        while (s->step()) {
            usage_totals t{s->int64(1), s->int64(2), s->int64(3), s->int64(4), s->int64(5), s->int64(6), s->int64(7)};
            out.total.requests += t.requests;
            out.total.prompt_tokens += t.prompt_tokens;
            out.total.completion_tokens += t.completion_tokens;
            out.total.provider_cost_micros += t.provider_cost_micros;
            out.total.markup_micros += t.markup_micros;
            out.total.charged_micros += t.charged_micros;
            out.total.refunded_micros += t.refunded_micros;
            out.by_service.emplace_back(s->text(0), t);
        }
    } catch (const sql::error&) {
        out = usage_summary{};
        out.code = result::storage_failed;
    }
    return out;
}

usage_breakdown ledger::break_down_usage(std::int64_t user_id, const std::string& from_day, const std::string& to_day,
                                         usage_grouping by) {
    usage_breakdown out;
    // One fixed statement per grouping: the group key is a column or a
    // prefix of the day, never text pasted into SQL at run time.
#define TOLLGATE_BREAKDOWN(key)                                                                               \
    "SELECT " key ", SUM(requests), SUM(prompt_tokens), SUM(completion_tokens), SUM(provider_cost_micros), " \
    "SUM(markup_micros), SUM(charged_micros), SUM(refunded_micros) FROM usage_daily "                       \
    "WHERE user_id = ?1 AND day >= ?2 AND day <= ?3 GROUP BY " key " ORDER BY " key
    static constexpr const char* statements[] = {TOLLGATE_BREAKDOWN("model"), TOLLGATE_BREAKDOWN("day"),
                                                 TOLLGATE_BREAKDOWN("substr(day, 1, 7)")};
#undef TOLLGATE_BREAKDOWN
    try {
        auto db = impl_->reader();
        auto s = db->prepare(statements[static_cast<int>(by)]);
        s->bind(1, user_id).bind(2, from_day).bind(3, to_day);
        while (s->step()) {
            out.rows.emplace_back(s->text(0), usage_totals{s->int64(1), s->int64(2), s->int64(3), s->int64(4),
                                                           s->int64(5), s->int64(6), s->int64(7)});
        }
    } catch (const sql::error&) {
        out = usage_breakdown{};
        out.code = result::storage_failed;
    }
    return out;
}

writer_stats ledger::stats() {
    std::lock_guard lock(impl_->durable_mu);
    return impl_->stats;
}

check_report ledger::check() {
    flush();
    auto db = impl_->reader();
    return run_check(*db.db);
}

}  // namespace tollgate::ledger
