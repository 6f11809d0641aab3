// tollgate's money core: users, keys, credit grants, holds, charges, usage
// events and billing periods. See ledger/README.md for the tables, the
// invariants and the concurrency model.
//
// The interface is storage-neutral: nothing here names SQLite, so another
// backend (PostgreSQL, for several instances) can be added inside ledger/src/
// without touching callers.
//
// Contract shared by every mutating call: the decision (admission, draw-down,
// idempotency) is made at once, in memory, exactly; the returned `commit_seq`
// names the group commit that will persist it. `wait_durable(seq)` blocks
// until it is on disk and `on_durable(seq, fn)` calls back instead. A caller
// must not act on a result outside tollgate (forward a call upstream, send a
// charge header) before it is durable.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::ledger {

using time_ms = std::int64_t;  // Unix milliseconds, UTC
using commit_seq = std::uint64_t;

// Largest amount one operation may move ($1e9), and the largest magnitude a
// balance or debt may reach: sums stay far from int64 overflow.
inline constexpr std::int64_t max_amount_micros = 1'000'000'000'000'000;
inline constexpr std::int64_t max_balance_micros = 1'000'000'000'000'000'000;
// Largest token, character or unit count one usage event may carry: keeps
// the daily rollups' sums far from overflow.
inline constexpr std::int64_t max_usage_count = 1'000'000'000;

enum class grant_kind : std::uint8_t { refund = 0, bonus = 1, allocated = 2, purchased = 3 };
inline constexpr int grant_kind_count = 4;
std::string_view to_string(grant_kind kind);
std::optional<grant_kind> parse_grant_kind(std::string_view text);
int default_priority(grant_kind kind);

enum class durability : std::uint8_t { normal, full };

enum class result : std::uint8_t {
    ok,
    unknown_user,
    user_exists,
    unknown_tier,
    invalid_argument,
    invalid_amount,        // zero, negative or above max_amount_micros
    amount_overflow,       // the operation would push a balance past the int64-safe range
    insufficient_credits,
    grant_expired,         // an expiry at or before now
    unknown_hold,
    hold_closed,           // already settled, released or expired
    duplicate_request,     // a hold with this request id is open
    idempotency_conflict,  // key or event id seen with a different request
    unknown_charge,        // refund target not found or not this user's
    refund_exceeds_charge,
    unknown_key,
    key_exists,            // a key with this hash is already stored
    coupon_exists,         // a coupon with this code exists (deactivated ones included)
    upgrade_not_allowed,   // a user asked for a dearer tier: an admin or a billing token makes it
    option_not_available,  // byok on a tier without it
    unknown_coupon,
    storage_failed,        // a commit failed: the ledger stops accepting work
};
std::string_view to_string(result code);

struct tier {
    std::string id;
    std::string name;
    std::int64_t price_micros = 0;
    std::int64_t monthly_credits_micros = 0;
    std::string models;  // "free" or "all"
    std::int64_t markup_paid_bps = 0;
    std::int64_t markup_free_micros_per_token = 0;
    bool byok_available = false;
    int rollover_percent = 0;
    std::int64_t default_overage_limit_micros = 0;
};

struct balance {
    std::int64_t user_id = 0;
    std::int64_t balance_micros = 0;  // remaining grants - debt
    std::int64_t reserved_micros = 0;
    std::int64_t available_micros = 0;  // balance + overage limit - reserved
    std::int64_t debt_micros = 0;
    std::int64_t overage_limit_micros = 0;
    std::array<std::int64_t, grant_kind_count> by_kind_micros{};  // indexed by grant_kind
};

struct user_record {
    std::int64_t id = 0;
    std::string email;
    std::string name;
    std::string status;  // active, suspended, deleted
    time_ms created_at_ms = 0;
};

struct subscription {
    std::int64_t user_id = 0;
    std::string tier;
    std::string option;  // credits or byok
    time_ms anchor_ms = 0;
    time_ms period_start_ms = 0;
    time_ms period_end_ms = 0;
    std::optional<std::string> pending_tier;
    // Coupon effects (SPEC 3): a percent_off discount for this and the next
    // discount_periods_left - 1 periods; the current period's price waived,
    // or the next one's; a free-month trial that returns to `revert_tier`
    // at `revert_at_ms`.
    int discount_percent = 0;
    int discount_periods_left = 0;
    bool period_waived = false;
    bool waive_next_period = false;
    std::optional<std::string> revert_tier;
    std::optional<time_ms> revert_at_ms;
};

enum class coupon_kind : std::uint8_t { credit, percent_off, free_month };
std::string_view to_string(coupon_kind kind);
std::optional<coupon_kind> parse_coupon_kind(std::string_view text);

struct coupon {
    std::string code;  // upper case, [A-Z0-9_-]{3,32}
    coupon_kind kind = coupon_kind::credit;
    std::optional<std::int64_t> amount_micros;        // credit
    std::optional<std::int64_t> credit_expires_days;  // credit
    std::optional<std::int64_t> percent_off;          // percent_off: 1..100
    std::optional<std::int64_t> duration_months;      // percent_off: periods, the current one first
    std::optional<std::string> tier;                  // free_month on the free tier: where to (default starter)
    std::optional<std::int64_t> max_uses;
    std::int64_t per_user_limit = 1;
    std::int64_t uses = 0;
    std::optional<time_ms> expires_at_ms;
    bool active = true;
    time_ms created_at_ms = 0;
};

// Why a coupon cannot be redeemed, in the order they are checked (SPEC 3).
enum class coupon_refusal : std::uint8_t {
    none,
    not_found,
    inactive,
    expired,
    exhausted,         // max_uses reached
    already_redeemed,  // per_user_limit reached
    not_applicable,
};
std::string_view to_string(coupon_refusal refusal);

struct redemption {
    result code = result::ok;
    coupon_refusal refusal = coupon_refusal::none;  // code is ok; see refusal
    coupon redeemed;              // as it is after this redemption
    std::int64_t redemption_id = 0;
    std::optional<std::int64_t> grant_id;  // credit, free_month on the free tier
    std::int64_t amount_micros = 0;        // what the grant gave
    std::optional<time_ms> until_ms;       // the effect's end: a credit's expiry, a trial's end
    std::int64_t balance_micros = 0;
    bool replayed = false;
    commit_seq seq = 0;
};

// A tier switch (SPEC 3): an upgrade (a dearer tier) at once with the
// prorated difference of the monthly credits; a downgrade scheduled for the
// period end; a change of option (credits or byok) within the tier at once.
struct switch_request {
    std::int64_t user_id = 0;
    std::string tier;
    std::string option = "credits";
    bool may_upgrade = false;  // an admin or a billing service token; not the user
    // The user's own key for option byok, sealed by the caller: stored with
    // the switch, only when the switch is allowed.
    std::optional<std::string> sealed_byok_key;
    std::string actor;
    std::string idempotency_key;  // empty: none; else scoped by the caller
};

enum class switch_kind : std::uint8_t { none, upgrade, downgrade, option };
std::string_view to_string(switch_kind kind);

struct switch_outcome {
    result code = result::ok;
    switch_kind kind = switch_kind::none;
    std::optional<std::int64_t> grant_id;  // an upgrade's prorated grant
    std::int64_t granted_micros = 0;
    bool replayed = false;
    commit_seq seq = 0;
};

struct key_record {
    std::int64_t id = 0;
    std::int64_t user_id = 0;
    std::string key_hash;  // bytes of the keyed hash; the secret is never stored
    std::string key_prefix;
    std::string name;
    std::string kind = "user";  // user or service
    std::string scopes;
    std::int64_t rpm_limit = 600;
    time_ms created_at_ms = 0;
    std::optional<time_ms> revoked_at_ms;
};

struct transaction {
    std::int64_t id = 0;
    std::int64_t user_id = 0;
    std::string type;  // grant, charge, deduct, expire, refund, reconcile, debt
    std::optional<grant_kind> kind;
    std::int64_t amount_micros = 0;  // signed effect on the balance
    std::int64_t debt_delta_micros = 0;
    std::int64_t balance_after_micros = 0;
    std::optional<std::int64_t> grant_id;
    std::string actor;
    std::string reason;
    std::optional<std::int64_t> usage_event_id;
    time_ms created_at_ms = 0;
};

struct transaction_page {
    result code = result::ok;  // storage_failed when the read failed
    std::vector<transaction> rows;
    std::optional<std::int64_t> next_cursor;  // pass back as `after_id`
};

struct transaction_query {
    std::int64_t user_id = 0;
    std::optional<std::int64_t> after_id;  // newest first: rows with id < after_id
    int limit = 50;                        // 1..200
    std::optional<std::string> type;
    std::optional<time_ms> from_ms;  // inclusive
    std::optional<time_ms> to_ms;    // exclusive
};

// What an upstream call (or an external event) used; written with its charge.
struct usage_event {
    std::string request_id;
    std::optional<std::int64_t> key_id;
    std::string service = "chat";
    std::string upstream;
    std::string model;
    std::int64_t prompt_tokens = 0;
    std::int64_t completion_tokens = 0;
    std::int64_t cached_tokens = 0;
    std::int64_t reasoning_tokens = 0;
    std::int64_t units = 0;
    std::int64_t provider_cost_micros = 0;
    std::int64_t markup_micros = 0;
    std::string price_source = "catalog";  // upstream, catalog, estimated or fixed
    std::string catalog_hash;
    std::string status = "ok";
    std::int64_t latency_ms = 0;
    // The upstream's id of the call (OpenRouter's X-Generation-Id): a call
    // billed on an estimate is priced again from it (reconcile_usage).
    std::optional<std::string> generation_id;
};

struct new_user {
    std::string email;
    std::string name;
    std::string tier = "free";
    std::string actor = "admin";
};

struct grant_request {
    std::int64_t user_id = 0;
    grant_kind kind = grant_kind::bonus;
    std::int64_t amount_micros = 0;
    std::optional<time_ms> expires_at_ms;
    std::optional<int> priority;  // default_priority(kind) when unset
    std::string source = "admin";
    std::string actor = "admin";
    std::string reason;
    std::string idempotency_key;  // empty: none; else scoped by the caller
};

struct deduct_request {
    std::int64_t user_id = 0;
    std::int64_t amount_micros = 0;
    std::string event_id;  // required, unique forever
    std::string service = "deduct";
    std::string actor = "admin";
    std::string reason;
    // An external usage event (metering/track): what it used, recorded on
    // its usage event and rollup. Its `service` replaces the one above.
    std::optional<usage_event> usage;
    // When the event happened (its rollup day); now when unset.
    std::optional<time_ms> occurred_at_ms;
    // Usage that already happened is owed whatever the balance: charged in
    // full, the shortfall becoming debt. A plain deduct is refused instead.
    bool allow_debt = false;
};

struct refund_request {
    std::int64_t user_id = 0;
    std::int64_t amount_micros = 0;
    std::optional<std::int64_t> usage_event_id;  // one of these two
    std::optional<std::int64_t> transaction_id;
    std::string actor = "admin";
    std::string reason;
    std::string idempotency_key;
};

struct user_outcome {
    result code = result::ok;
    std::int64_t user_id = 0;
    commit_seq seq = 0;
};

struct grant_outcome {
    result code = result::ok;
    std::int64_t grant_id = 0;
    std::int64_t transaction_id = 0;
    std::int64_t balance_micros = 0;
    bool replayed = false;
    commit_seq seq = 0;
};

struct hold_outcome {
    result code = result::ok;
    std::int64_t hold_id = 0;
    std::int64_t available_micros = 0;  // at the decision; on refusal, what there was
    commit_seq seq = 0;
};

struct charge_outcome {
    result code = result::ok;
    std::int64_t usage_event_id = 0;
    std::int64_t charged_micros = 0;
    std::int64_t first_transaction_id = 0;
    std::int64_t balance_micros = 0;
    std::int64_t available_micros = 0;  // deduct refusals: what there was
    bool replayed = false;
    commit_seq seq = 0;
};

struct key_outcome {
    result code = result::ok;
    std::int64_t key_id = 0;
};

struct simple_outcome {
    result code = result::ok;
    commit_seq seq = 0;
};

struct maintenance_outcome {
    result code = result::ok;
    std::int64_t count = 0;  // holds released, grants expired, periods rolled
    commit_seq seq = 0;
};

// Usage totals from the daily rollups (never from raw events).
struct usage_totals {
    std::int64_t requests = 0;
    std::int64_t prompt_tokens = 0;
    std::int64_t completion_tokens = 0;
    std::int64_t provider_cost_micros = 0;
    std::int64_t markup_micros = 0;
    std::int64_t charged_micros = 0;
    std::int64_t refunded_micros = 0;
};

// One user as the admin API lists them.
struct user_listing {
    user_record user;
    std::string tier;
};

struct user_page {
    result code = result::ok;
    std::vector<user_listing> rows;  // newest first
    std::optional<std::int64_t> next_cursor;  // pass back as `after_id`
};

// Who did what, when, from where (SPEC 6, `GET /audit`).
struct audit_entry {
    std::int64_t id = 0;
    std::string actor;   // admin, user:<id>, service:<token id>, system
    std::string action;  // e.g. "POST /api/v1/credits/allocate"
    std::string target;  // e.g. "user:12"
    std::string detail;  // the outcome, never a secret
    std::string client_address;
    time_ms created_at_ms = 0;
};

struct audit_page {
    result code = result::ok;
    std::vector<audit_entry> rows;  // newest first
    std::optional<std::int64_t> next_cursor;
};

// A credential of another system (SPEC 6): scopes `meter` (metering/track,
// credits/deduct) and `billing` (upgrades through tiers/switch).
struct service_token {
    std::int64_t id = 0;
    std::string token_hash;  // keyed hash; the secret is never stored
    std::string token_prefix;
    std::string name;
    std::string scopes;  // space-separated
    time_ms created_at_ms = 0;
    std::optional<time_ms> revoked_at_ms;
};

enum class usage_grouping : std::uint8_t { model, day, month };

struct usage_breakdown {
    result code = result::ok;
    // (model, "YYYY-MM-DD" or "YYYY-MM") and its totals, sorted by that key.
    std::vector<std::pair<std::string, usage_totals>> rows;
};

struct usage_summary {
    result code = result::ok;  // storage_failed when the read failed
    usage_totals total;
    std::vector<std::pair<std::string, usage_totals>> by_service;  // sorted by service
};

// A user's provisioned OpenRouter key (SPEC 6 and 7). The key itself is
// sealed by the proxy; the ledger keeps the blob and what the API shows.
struct openrouter_account {
    std::int64_t user_id = 0;
    std::string label;               // the key's name at OpenRouter
    std::string status = "pending";  // pending, active, disabled, deleted
    std::optional<std::string> sealed_key;
    std::string key_masked;  // at most the first 12 and the last 4 characters
    std::string key_hash;    // OpenRouter's id of the key
    std::optional<std::int64_t> limit_micros;
    std::int64_t usage_micros = 0;                 // all-time, as OpenRouter counts it
    std::optional<std::int64_t> remaining_micros;  // of this limit period (OpenRouter's limit_remaining)
    std::optional<time_ms> synced_at_ms;
    std::string last_error;  // the last failed attempt, for the operator; never a secret
    std::int64_t attempts = 0;
    std::optional<time_ms> next_attempt_ms;  // pending: when to try again
    time_ms created_at_ms = 0;
};

// What re-encrypting every sealed blob did (rotate-master-key).
struct reseal_outcome {
    result code = result::ok;
    std::int64_t resealed = 0;
    std::vector<std::string> unreadable;  // contexts of blobs the old key does not open
    commit_seq seq = 0;
};

// A usage event billed on an estimate that the upstream can price now.
struct estimated_usage {
    std::int64_t usage_event_id = 0;
    std::int64_t user_id = 0;
    std::string generation_id;
    std::string model;
    std::int64_t prompt_tokens = 0;
    std::int64_t completion_tokens = 0;
    std::int64_t charged_micros = 0;
    time_ms created_at_ms = 0;
};

// The upstream's real figures for an estimated call: the event keeps what
// was billed; the difference is posted as 'reconcile' transactions.
struct reconcile_request {
    std::int64_t usage_event_id = 0;
    std::int64_t user_id = 0;
    std::string generation_id;
    std::int64_t provider_cost_micros = 0;
    std::int64_t markup_micros = 0;
    std::int64_t charged_micros = 0;  // what the call should have cost the user
    std::int64_t prompt_tokens = 0;
    std::int64_t completion_tokens = 0;
    std::string actor = "system";
};

struct reconcile_outcome {
    result code = result::ok;  // idempotency_conflict: already reconciled
    std::int64_t delta_micros = 0;
    std::int64_t first_transaction_id = 0;  // 0 when nothing moved
    std::int64_t balance_micros = 0;
    commit_seq seq = 0;
};

struct writer_stats {
    std::uint64_t commits = 0;
    std::uint64_t operations = 0;
    std::uint64_t largest_batch = 0;
    std::uint64_t busy_micros = 0;  // time spent writing and committing
};

struct check_report {
    bool ok = true;
    std::int64_t users_checked = 0;
    std::int64_t grants_checked = 0;
    std::int64_t transactions_checked = 0;
    std::vector<std::string> problems;  // empty when ok
};

struct options {
    std::string path = "tollgate.db";
    durability sync = durability::normal;
    // Injectable clock so tests can live through a year in milliseconds.
    std::function<time_ms()> clock;
    std::int64_t hold_ttl_ms = 15 * 60 * 1000;
    // The server holds an exclusive lock on the database; tests that open two
    // ledgers on one file on purpose can turn it off.
    bool take_lock = true;
};

enum class open_error : std::uint8_t {
    none,
    locked,           // another process holds the database
    not_a_database,   // corrupt, truncated or not SQLite
    schema_too_new,   // written by a newer tollgate
    migration_failed,
    check_failed,     // conservation check failed: refuse to serve
    io_error,
};
std::string_view to_string(open_error error);

class ledger;

struct open_result {
    std::unique_ptr<ledger> value;
    open_error error = open_error::none;
    std::string message;  // for the operator: what is wrong and what to do
};

// Schema management without opening a ledger (the `migrate` command).
struct migrate_result {
    open_error error = open_error::none;
    std::string message;
    int from_version = 0;
    int to_version = 0;
};
migrate_result migrate(const std::string& path);
int schema_version_of_binary();

// Read-only conservation check; safe on a live database (another process
// may be writing it). Does not take the lock.
check_report check_database(const std::string& path);

class ledger {
public:
    // Opens (creating and migrating if needed), takes the lock, rebuilds the
    // in-memory book, releases holds a crash left open (audit-logged), and
    // runs the conservation check; refuses when it fails.
    static open_result open(options opts);

    ~ledger();
    ledger(const ledger&) = delete;
    ledger& operator=(const ledger&) = delete;

    time_ms now_ms() const;
    // Holds a previous process left open, released by this open().
    std::int64_t orphaned_holds_released() const;

    // --- durability -------------------------------------------------------
    // Blocks until the batch holding `seq` is committed: true. False when the
    // ledger failed instead (see failed()): the result is not on disk and
    // must not be acted upon. Returns true at once for seq 0.
    [[nodiscard]] bool wait_durable(commit_seq seq);
    // `fn(ok)` runs once the batch holding seq is committed (ok) or failed:
    // on the writer thread, or at once on the caller's thread when that has
    // already happened. It must be short, must not throw, and must not call
    // into the ledger: post to your executor and continue there (a call that
    // waits for a commit from the writer thread would wait for itself; such
    // calls abort with a message rather than hang).
    void on_durable(commit_seq seq, std::function<void(bool ok)> fn);
    void flush();  // waits for everything submitted so far
    bool failed() const;

    // --- users, subscriptions and keys ------------------------------------
    user_outcome create_user(const new_user& request);
    std::optional<user_record> find_user(std::int64_t user_id);
    std::optional<subscription> find_subscription(std::int64_t user_id);
    simple_outcome set_overage_limit(std::int64_t user_id, std::int64_t overage_limit_micros);
    simple_outcome set_user_status(std::int64_t user_id, const std::string& status);
    // An admin's direct tier change: effective at once for admission and the
    // models allowed; the new tier's credits arrive with the next period.
    // (Prorated switches are tiers/switch's.)
    simple_outcome set_tier(std::int64_t user_id, const std::string& tier_id);
    // SPEC 3's switch rules; see switch_request.
    switch_outcome switch_tier(const switch_request& request);
    // Users newest first, `limit` 1..200, ids below `after_id`.
    user_page list_users(std::optional<std::int64_t> after_id, int limit);

    std::vector<tier> tiers();
    std::optional<tier> find_tier(const std::string& tier_id);

    // `key.id` and `created_at_ms` are assigned. Returns once durable: a key
    // is usable as soon as its creator has it.
    key_outcome create_key(key_record key);
    // nullopt when absent or when the read failed (authentication fails closed).
    std::optional<key_record> find_key_by_hash(std::string_view key_hash);
    std::vector<key_record> list_keys(std::int64_t user_id);
    simple_outcome revoke_key(std::int64_t key_id);

    // --- coupons (SPEC 3) -------------------------------------------------------
    // Codes are upper-cased here; `uses` and `created_at_ms` are assigned.
    simple_outcome create_coupon(coupon c);
    std::optional<coupon> find_coupon(const std::string& code);
    std::vector<coupon> coupons();  // by code
    simple_outcome deactivate_coupon(const std::string& code);  // history kept
    // The first refusal reason in SPEC order, or none; changes nothing.
    coupon_refusal check_coupon(std::int64_t user_id, const std::string& code);
    // Atomic: the checks and the effect happen in one critical section, so
    // max_uses and per_user_limit hold under any concurrency. A non-empty
    // idempotency key (scoped by the caller) replays the first redemption.
    redemption redeem_coupon(std::int64_t user_id, const std::string& code, const std::string& actor,
                             const std::string& idempotency_key = {});

    // --- idempotency keys of calls without a ledger-side replay ----------------
    // (deduct and track replay by event id; users, keys and service tokens
    // must never replay a secret.) Records (scope, key) with `fingerprint`
    // on first sight and returns once durable.
    enum class claim { fresh, same, conflict, storage_failed };
    claim claim_idempotency_key(const std::string& scope, const std::string& key, const std::string& fingerprint);

    // --- upstream keys -------------------------------------------------------
    // The user's own OpenRouter key (BYOK), as switch_tier stored it sealed
    // (the ledger never sees it in clear); nullopt when the user has none
    // (or the read failed).
    std::optional<std::string> byok_key(std::int64_t user_id);

    // The user's provisioned OpenRouter key; nullopt when none was ever
    // asked for (or the read failed).
    std::optional<openrouter_account> find_openrouter_account(std::int64_t user_id);
    std::vector<openrouter_account> openrouter_accounts();  // by user id
    // Stores the whole row (insert or replace), staged with the next batch.
    simple_outcome put_openrouter_account(const openrouter_account& account);
    // What a sync read, and only that: the figures, status and error of
    // the account's key, if it is still the key named and not deleted (a
    // sync never writes back a key a rotation or a revocation replaced).
    // With `failed`, only last_error changes.
    struct openrouter_sync {
        std::int64_t user_id = 0;
        std::string key_hash;
        bool failed = false;
        std::optional<std::int64_t> limit_micros;
        std::int64_t usage_micros = 0;
        std::optional<std::int64_t> remaining_micros;
        std::string status = "active";  // active or disabled
        time_ms synced_at_ms = 0;
        std::string last_error;
    };
    simple_outcome record_openrouter_sync(const openrouter_sync& sync);
    // Re-encrypts every sealed blob in one commit: BYOK keys and provisioned
    // keys (context "user:<id>") and settings named "sealed.*" (context
    // "setting:<name>"). `reseal(blob, context)` gives the new blob, nullopt
    // when it cannot open it: then nothing is changed and `unreadable` names
    // what failed.
    reseal_outcome reseal_all(
        const std::function<std::optional<std::string>(std::string_view blob, const std::string& context)>& reseal);

    // --- service tokens ------------------------------------------------------
    // `id` and `created_at_ms` are assigned; returns once durable.
    key_outcome create_service_token(service_token token);
    // nullopt when absent or when the read failed (authentication fails closed).
    std::optional<service_token> find_service_token_by_hash(std::string_view token_hash);
    std::vector<service_token> service_tokens();  // newest first, revoked ones included
    // Takes effect at once: tokens are looked up on every call, not cached.
    simple_outcome revoke_service_token(std::int64_t token_id);

    // --- audit ---------------------------------------------------------------
    // Staged with the next batch; the entry's id and time are assigned.
    simple_outcome record_audit(audit_entry entry);
    audit_page audit_log(std::optional<std::int64_t> after_id, int limit);

    // --- settings (opaque bytes by name: the admin token's hash) -------------
    std::optional<std::string> setting(std::string_view name);
    simple_outcome put_setting(const std::string& name, const std::string& value);

    // --- money -------------------------------------------------------------
    grant_outcome grant(const grant_request& request);

    // Admission: a hold of `max_micros` is taken only if available covers it.
    hold_outcome reserve(std::int64_t user_id, std::int64_t max_micros, std::string_view request_id);
    // Charges `charged_micros` in full (even above the hold: the rest becomes
    // debt), releases the rest of the hold, writes the usage event and its
    // daily rollup, all in one commit. A hold that expired meanwhile (a call
    // outliving hold_ttl_ms) is still charged in full: money owed is never
    // dropped.
    charge_outcome settle(std::int64_t hold_id, std::int64_t charged_micros, const usage_event& usage);
    simple_outcome release(std::int64_t hold_id);
    // A call that moves no money (BYOK: the user's own key paid upstream):
    // its usage event and rollup, charged 0, no hold.
    charge_outcome record_usage(std::int64_t user_id, const usage_event& usage);

    // Immediate debit with no hold; refused when available does not cover it.
    // `event_id` is unique forever: a replay with the same request returns
    // the first result, a different request is idempotency_conflict.
    charge_outcome deduct(const deduct_request& request);
    // A `refund` grant linked to the charge it corrects; refunds of one charge
    // never add up to more than it.
    grant_outcome refund(const refund_request& request);
    // Calls billed on an estimate with an upstream id and no correction yet,
    // created in [created_after, created_before), by id from `after_id`
    // (a caller that cannot correct some yet passes the last id it saw, so
    // those do not hold back the rest).
    std::vector<estimated_usage> usage_to_reconcile(time_ms created_after, time_ms created_before, int limit,
                                                    std::int64_t after_id = 0);
    // Posts the correction of one estimated call, once: more charged (drawn
    // like a charge, debt beyond the grants) or some given back (a refund
    // grant), as 'reconcile' transactions; its rollup follows.
    reconcile_outcome reconcile_usage(const reconcile_request& request);

    // --- maintenance ---------------------------------------------------------
    // The server runs these periodically (expire_holds at least once a minute):
    maintenance_outcome expire_holds();   // holds past their expiry are released
    maintenance_outcome expire_grants();  // grants past expires_at lose their remainder
    maintenance_outcome roll_periods();   // every subscription whose period ended

    // --- reads ---------------------------------------------------------------
    // Applies the user's due expiries and period rolls first (they are due
    // whoever looks), so balance = sum(by_kind) - debt always holds.
    // nullopt for an unknown user or a failed ledger.
    std::optional<balance> get_balance(std::int64_t user_id);
    transaction_page transactions(const transaction_query& query);
    // One committed transaction of `user_id`; nullopt when absent.
    std::optional<transaction> find_transaction(std::int64_t user_id, std::int64_t transaction_id);
    std::int64_t open_hold_count();
    // Days are UTC `YYYY-MM-DD`, both ends included.
    usage_summary summarize_usage(std::int64_t user_id, const std::string& from_day, const std::string& to_day);
    // The same rollups per model, per day or per month.
    usage_breakdown break_down_usage(std::int64_t user_id, const std::string& from_day, const std::string& to_day,
                                     usage_grouping by);
    writer_stats stats();
    // Proves SPEC section 4 against what is committed (flushes first).
    check_report check();

    struct impl;

private:
    explicit ledger(std::unique_ptr<impl> p);
    std::unique_ptr<impl> impl_;
};

}  // namespace tollgate::ledger
