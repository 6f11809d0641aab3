// The ledger's inside. Read ledger/README.md first: it explains who owns
// which piece of state and why admission can be exact without a database
// round trip.
#pragma once

#include "sqlite.hpp"
#include "tollgate/ledger/ledger.hpp"

#include <condition_variable>
#include <map>
#include <mutex>
#include <thread>
#include <unordered_map>
#include <unordered_set>

namespace tollgate::ledger {

// A page rewritten by many commits is copied to the database once per
// checkpoint: fewer checkpoints, less copying, a longer WAL in between.
inline constexpr int checkpoint_interval_ms = 100;

// ---------------------------------------------------------------------------
// The book: the in-memory truth that admission and draw-down decide on.
// Guarded by impl::mu_. Rebuilt from the database at open.

struct grant_state {
    std::int64_t id = 0;
    grant_kind kind = grant_kind::bonus;
    int priority = 0;
    std::int64_t remaining_micros = 0;
    std::optional<time_ms> expires_at_ms;
    time_ms created_at_ms = 0;
};

// SPEC 3 draw-down order: priority ascending, then earliest expiry (never
// last), then creation time, then id.
bool draws_before(const grant_state& a, const grant_state& b);

struct subscription_state {
    std::string tier;
    std::string option = "credits";
    time_ms anchor_ms = 0;
    time_ms period_start_ms = 0;
    time_ms period_end_ms = 0;
    std::optional<std::string> pending_tier;
    int discount_percent = 0;
    int discount_periods_left = 0;
    bool period_waived = false;
    bool waive_next_period = false;
    std::optional<std::string> revert_tier;
    std::optional<time_ms> revert_at_ms;
};

struct user_book {
    std::int64_t id = 0;
    std::vector<grant_state> grants;  // remaining > 0, in draw-down order
    std::int64_t balance_micros = 0;  // sum(remaining) - debt, kept in step
    std::int64_t debt_micros = 0;
    std::int64_t reserved_micros = 0;
    std::int64_t overage_limit_micros = 0;
    std::optional<subscription_state> sub;
    user_record record;

    std::int64_t available_micros() const { return balance_micros + overage_limit_micros - reserved_micros; }
};

struct hold_state {
    std::int64_t id = 0;
    std::int64_t user_id = 0;
    std::int64_t amount_micros = 0;
    time_ms created_at_ms = 0;
    time_ms expires_at_ms = 0;
    std::string request_id;
};

// ---------------------------------------------------------------------------
// The batch: rows decided under mu_ and waiting for the writer. Coalescing
// maps keep only the newest value of a cached row (a grant's remaining, a
// user's figures, a hold's state), so a batch of N calls on one user writes
// that user's row once.

struct txn_row {
    std::int64_t id = 0;
    std::int64_t user_id = 0;
    const char* type = "";
    std::int64_t amount_micros = 0;
    std::int64_t debt_delta_micros = 0;
    std::int64_t balance_after_micros = 0;
    std::optional<std::int64_t> grant_id;
    std::string actor;
    std::string reason;
    std::optional<std::string> idempotency_key;
    std::optional<std::int64_t> usage_event_id;
    time_ms created_at_ms = 0;
};

struct grant_row {
    std::int64_t id = 0;
    std::int64_t user_id = 0;
    grant_kind kind = grant_kind::bonus;
    std::int64_t amount_micros = 0;
    int priority = 0;
    time_ms effective_at_ms = 0;
    std::optional<time_ms> expires_at_ms;
    std::string source;
    std::optional<std::int64_t> refund_of_event_id;
    time_ms created_at_ms = 0;
};

struct hold_row {
    std::int64_t user_id = 0;
    std::string request_id;
    std::int64_t amount_micros = 0;
    const char* state = "held";
    time_ms created_at_ms = 0;
    time_ms expires_at_ms = 0;
    std::optional<time_ms> closed_at_ms;
};

struct usage_row {
    std::int64_t id = 0;
    std::optional<std::int64_t> hold_id;
    std::optional<std::string> event_id;
    std::int64_t user_id = 0;
    usage_event usage;
    std::int64_t charged_micros = 0;
    std::string fingerprint;
    time_ms created_at_ms = 0;
};

struct credits_row {
    std::int64_t balance_micros = 0;
    std::int64_t reserved_micros = 0;
    std::int64_t debt_micros = 0;
    std::int64_t overage_limit_micros = 0;
};

struct rollup_key {
    std::int64_t user_id;
    std::string day;
    std::string service;
    std::string model;
    bool operator<(const rollup_key& o) const {
        return std::tie(user_id, day, service, model) < std::tie(o.user_id, o.day, o.service, o.model);
    }
};

using rollup_delta = usage_totals;  // what one batch adds to a usage_daily row

struct idempotency_row {
    std::string scope;
    std::string key;
    std::string fingerprint;
    std::string result;
    time_ms created_at_ms = 0;
};

struct write_batch {
    // Users, keys, subscriptions, audit: in order, before every row below, so
    // they may name only each other and rows of earlier batches (foreign keys
    // are checked row by row).
    std::vector<std::function<void(sql::database&)>> statements;
    std::vector<grant_row> grants;
    std::unordered_map<std::int64_t, hold_row> holds;
    std::vector<usage_row> usage;
    std::vector<txn_row> transactions;
    std::unordered_map<std::int64_t, std::int64_t> grant_remaining;
    std::unordered_map<std::int64_t, credits_row> credits;
    std::map<rollup_key, rollup_delta> rollups;
    std::vector<idempotency_row> idempotency;
    // Rows that name grants or transactions of this batch (coupon
    // redemptions): written after everything above.
    std::vector<std::function<void(sql::database&)>> late_statements;
    std::size_t operations = 0;

    bool empty() const { return operations == 0; }
    void clear();
};

// ---------------------------------------------------------------------------

struct ledger::impl {
    ~impl();
    options opts;
    std::int64_t orphans_released = 0;
    std::unique_ptr<sql::database> writer_db;
    int lock_fd = -1;

    // --- the book and the pending batch (mu_) ---
    std::mutex mu;
    std::condition_variable work_cv;   // writer waits for work
    std::condition_variable space_cv;  // callers wait while the pending batch is full
    std::unordered_map<std::int64_t, user_book> users;
    std::unordered_map<std::string, std::int64_t> user_by_email;
    std::unordered_map<std::int64_t, hold_state> holds;
    std::unordered_map<std::string, std::int64_t> hold_by_request;
    // Holds closed by expiry, kept for one more TTL so a call that outlived
    // its hold is still charged when it settles.
    std::unordered_map<std::int64_t, hold_state> expired_holds;
    std::unordered_set<std::int64_t> key_ids;
    std::unordered_set<std::string> key_hashes;
    std::unordered_map<std::string, tier> tiers_by_id;
    std::map<std::string, coupon> coupons_by_code;
    std::map<std::pair<std::string, std::int64_t>, std::int64_t> redemptions_by_code_user;
    std::int64_t next_user_id = 1, next_grant_id = 1, next_txn_id = 1, next_hold_id = 1, next_event_id = 1,
                 next_key_id = 1, next_service_token_id = 1, next_redemption_id = 1;
    write_batch pending;
    commit_seq pending_seq = 1;
    bool stopping = false;

    // --- durability (durable_mu) ---
    std::mutex durable_mu;
    std::condition_variable durable_cv;
    commit_seq durable_seq = 0;
    bool failed = false;
    std::string failure;
    std::vector<std::pair<commit_seq, std::function<void(bool)>>> callbacks;
    writer_stats stats;

    // Serialises the calls that must consult committed history before they
    // decide (idempotency keys, external event ids, refund totals). They are
    // admin-rate calls; each waits for its own commit before letting the next
    // one look.
    std::mutex external_mu;

    // --- readers ---
    std::mutex readers_mu;
    std::vector<std::unique_ptr<sql::database>> idle_readers;

    std::thread writer;

    // Checkpoints copy the WAL back into the database file. They run on
    // their own thread and connection so the writer never stalls on them.
    std::mutex checkpoint_mu;
    std::condition_variable checkpoint_cv;
    bool checkpoint_stop = false;
    std::thread checkpointer;
    void run_checkpointer();

    time_ms now() const { return opts.clock ? opts.clock() : system_now_ms(); }
    static time_ms system_now_ms();

    // Writer side.
    void run_writer();
    void write(write_batch& batch);

    // Book side: every helper below requires mu held. Each appends the rows
    // its change needs to `pending` and returns the sequence number of the
    // batch that will hold them.
    commit_seq stage();  // counts an operation in the pending batch
    void stage_credits(const user_book& u);
    void stage_grant_remaining(const grant_state& g);
    std::int64_t stage_txn(user_book& u, const char* type, std::int64_t amount_micros, std::int64_t debt_delta_micros,
                           std::optional<std::int64_t> grant_id, const std::string& actor, const std::string& reason,
                           std::optional<std::int64_t> usage_event_id, time_ms at);
    // Adds a grant, pays debt from it first, returns (grant id, txn id).
    std::pair<std::int64_t, std::int64_t> add_grant(user_book& u, const grant_row& row, const char* txn_type,
                                                    const std::string& actor, const std::string& reason,
                                                    std::optional<std::int64_t> usage_event_id);
    // Draws `amount_micros` in draw-down order; beyond the grants it becomes
    // debt. Returns the first transaction id (0 when amount is 0).
    std::int64_t draw(user_book& u, std::int64_t amount_micros, const char* type, const std::string& actor,
                      const std::string& reason, std::int64_t usage_event_id, time_ms at);
    // Rolls due periods and expires due grants for one user.
    void bring_up_to_date(user_book& u, time_ms at);
    void expire_due_grants(user_book& u, time_ms at, bool include_period_allocation);
    void roll_one_boundary(user_book& u);
    void stage_subscription(const user_book& u);  // the whole row, as the book has it
    void stage_byok_key(std::int64_t user_id, const std::string& sealed, time_ms at);
    void close_hold(hold_state& h, const char* state, time_ms at);
    void stage_usage(usage_row row);
    // Records an idempotent grant's or refund's first answer under `key`
    // (nothing when the key is empty), in the batch that holds the grant.
    void stage_idempotency(const std::string& key, const std::string& fingerprint, const grant_outcome& first,
                           time_ms at);

    // The first answer of a call replayed by a `ledger`-scope idempotency key
    // (grants, refunds, coupon redemptions, tier switches) is kept as its
    // numbers. Staged with the batch that holds the call's rows:
    void stage_answer(const std::string& key, const std::string& fingerprint,
                      std::initializer_list<std::int64_t> numbers, time_ms at);
    // ... and read back: nullopt when the key is new; `conflict` when it came
    // with another request; else the numbers (missing ones 0). Throws
    // sql::error when the read fails.
    struct stored_answer {
        bool conflict = false;
        std::vector<std::int64_t> numbers;
    };
    static std::optional<stored_answer> stored_answer_of(sql::database& db, const std::string& key,
                                                         const std::string& fingerprint, std::size_t count);

    // Waiting for space keeps the pending batch bounded.
    void wait_for_space(std::unique_lock<std::mutex>& lock);
    // The start of every change: takes mu (deferred `lock`), waits for room
    // in the pending batch; false when the ledger has stopped.
    bool lock_for_change(std::unique_lock<std::mutex>& lock);
    // A user with due periods rolled and grants expired; nullptr if unknown.
    // Requires mu.
    user_book* current_user(std::int64_t user_id, time_ms at);
    // Waiting for a commit on the writer thread would wait forever: abort.
    void refuse_on_writer_thread(const char* what) const;
    std::thread::id writer_id;

    // Readers.
    struct reader_lease {
        impl* owner;
        std::unique_ptr<sql::database> db;
        ~reader_lease();
        sql::database* operator->() { return db.get(); }
    };
    reader_lease reader();

    // Open.
    void load();
    void release_orphaned_holds();
};

// Schema management shared by open() and migrate().
migrate_result apply_migrations(sql::database& db);
void configure_connection(sql::database& db, durability sync, bool writer);
check_report run_check(sql::database& db);
int acquire_lock(const std::string& path, std::string& message);  // -1 when held

}  // namespace tollgate::ledger
