// Issue #7 in the ledger: provisioned OpenRouter accounts, re-encrypting
// every sealed blob at once (master key rotation), and the reconciliation
// of calls billed on an estimate. Each scenario ends with the conservation
// check, which also proves the corrections add up.
#include <sqlite3.h>

#include <set>

#include "test_support.hpp"

using namespace tollgate;
using namespace tollgate::testing;
using ledger::result;

namespace {

// A metered call billed on an estimate (its stream broke before usage came).
std::int64_t estimated_call(ledger::ledger& l, std::int64_t user, const std::string& request_id, std::int64_t charged,
                            const std::string& generation_id, const std::string& price_source = "estimated") {
    const auto hold = l.reserve(user, 1'000'000, request_id);
    REQUIRE(hold.code == result::ok);
    ledger::usage_event ev;
    ev.request_id = request_id;
    ev.upstream = "openrouter";
    ev.model = "openai/gpt-4o-mini";
    ev.prompt_tokens = 10;
    ev.completion_tokens = 7;
    ev.provider_cost_micros = charged;
    ev.price_source = price_source;
    ev.generation_id = generation_id;
    const auto settled = l.settle(hold.hold_id, charged, ev);
    REQUIRE(settled.code == result::ok);
    REQUIRE(l.wait_durable(settled.seq));
    return settled.usage_event_id;
}

ledger::reconcile_request correction(std::int64_t user, std::int64_t event, const std::string& generation_id,
                                     std::int64_t charged) {
    ledger::reconcile_request r;
    r.usage_event_id = event;
    r.user_id = user;
    r.generation_id = generation_id;
    r.provider_cost_micros = charged;
    r.charged_micros = charged;
    r.prompt_tokens = 10;
    r.completion_tokens = 3;
    return r;
}

std::int64_t sum_of(ledger::ledger& l, std::int64_t user, const std::string& type) {
    ledger::transaction_query q;
    q.user_id = user;
    q.type = type;
    q.limit = 200;
    std::int64_t sum = 0;
    for (const auto& t : l.transactions(q).rows) sum += t.amount_micros;
    return sum;
}

std::int64_t scalar(const std::string& path, const std::string& sql) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
    sqlite3_stmt* s = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(s) == SQLITE_ROW);
    const auto v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

void execute(const std::string& path, const std::string& sql) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    char* error = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &error);
    INFO((error ? error : ""));
    sqlite3_free(error);
    sqlite3_close(db);
    REQUIRE(rc == SQLITE_OK);
}

}  // namespace

TEST_CASE("a provisioned account is kept whole per user and replaced by the next put", "[openrouter]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "starter");

    CHECK_FALSE(l->find_openrouter_account(user));
    ledger::openrouter_account pending;
    pending.user_id = user;
    pending.label = "tollgate-user-1";
    pending.last_error = "OpenRouter could not be reached";
    pending.attempts = 1;
    pending.next_attempt_ms = test_epoch_ms + 30'000;
    auto put = l->put_openrouter_account(pending);
    REQUIRE(put.code == result::ok);
    REQUIRE(l->wait_durable(put.seq));
    auto found = l->find_openrouter_account(user);
    REQUIRE(found);
    CHECK(found->status == "pending");
    CHECK(found->last_error == pending.last_error);
    CHECK(found->attempts == 1);
    CHECK(found->next_attempt_ms == pending.next_attempt_ms);
    CHECK_FALSE(found->sealed_key);
    CHECK(found->created_at_ms == test_epoch_ms);  // assigned when unset

    auto active = *found;
    active.status = "active";
    active.sealed_key = std::string("\x01\x02sealed\x00bytes", 14);
    active.key_masked = "sk-or-v1-abc…wxyz";
    active.key_hash = "f01d";
    active.limit_micros = 60'000'000;
    active.usage_micros = 1'234;
    active.synced_at_ms = test_epoch_ms + 5;
    active.last_error.clear();
    active.attempts = 0;
    active.next_attempt_ms.reset();
    put = l->put_openrouter_account(active);
    REQUIRE(put.code == result::ok);
    REQUIRE(l->wait_durable(put.seq));
    found = l->find_openrouter_account(user);
    REQUIRE(found);
    CHECK(found->status == "active");
    CHECK(found->sealed_key == active.sealed_key);  // binary blob, NUL included
    CHECK(found->key_hash == "f01d");
    CHECK(found->limit_micros == 60'000'000);
    CHECK(found->usage_micros == 1'234);
    CHECK_FALSE(found->next_attempt_ms);
    CHECK(found->created_at_ms == test_epoch_ms);  // kept from the first put
    REQUIRE(l->openrouter_accounts().size() == 1);

    SECTION("refused: an unknown user, an unknown status, a negative usage") {
        auto bad = active;
        bad.user_id = 999;
        CHECK(l->put_openrouter_account(bad).code == result::unknown_user);
        bad = active;
        bad.status = "byok";
        CHECK(l->put_openrouter_account(bad).code == result::invalid_argument);
        bad = active;
        bad.usage_micros = -1;
        CHECK(l->put_openrouter_account(bad).code == result::invalid_argument);
    }
    require_ledger_ok(*l);
}

TEST_CASE("a sync records its figures only on the key it read, never over a revocation or a new key", "[openrouter]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "s@example.com", "starter");
    ledger::openrouter_account account;
    account.user_id = user;
    account.label = "tollgate-user-1";
    account.status = "active";
    account.sealed_key = "sealed-new";
    account.key_hash = "hash-1";
    REQUIRE(l->put_openrouter_account(account).code == result::ok);

    ledger::ledger::openrouter_sync sync;
    sync.user_id = user;
    sync.key_hash = "hash-1";
    sync.limit_micros = 60'000'000;
    sync.remaining_micros = 59'000'000;
    sync.usage_micros = 3'000'000;
    sync.status = "disabled";
    sync.synced_at_ms = test_epoch_ms + 7;
    auto out = l->record_openrouter_sync(sync);
    REQUIRE(out.code == result::ok);
    REQUIRE(l->wait_durable(out.seq));
    auto found = l->find_openrouter_account(user);
    CHECK(found->usage_micros == 3'000'000);
    CHECK(found->remaining_micros == 59'000'000);
    CHECK(found->status == "disabled");
    CHECK(found->sealed_key == "sealed-new");  // never written by a sync

    // A failed sync only records why.
    sync.failed = true;
    sync.last_error = "OpenRouter failed (500) 3 times";
    sync.usage_micros = 9;
    REQUIRE(l->wait_durable(l->record_openrouter_sync(sync).seq));
    found = l->find_openrouter_account(user);
    CHECK(found->last_error == sync.last_error);
    CHECK(found->usage_micros == 3'000'000);

    // Revoked meanwhile, or another key: the sync's figures are dropped.
    account = *found;
    account.status = "deleted";
    account.sealed_key.reset();
    REQUIRE(l->wait_durable(l->put_openrouter_account(account).seq));
    sync.failed = false;
    sync.status = "active";
    REQUIRE(l->wait_durable(l->record_openrouter_sync(sync).seq));
    CHECK(l->find_openrouter_account(user)->status == "deleted");
    account.status = "active";
    account.key_hash = "hash-2";
    REQUIRE(l->wait_durable(l->put_openrouter_account(account).seq));
    sync.usage_micros = 5;
    REQUIRE(l->wait_durable(l->record_openrouter_sync(sync).seq));
    CHECK(l->find_openrouter_account(user)->usage_micros == 3'000'000);

    sync.status = "pending";
    CHECK(l->record_openrouter_sync(sync).code == result::invalid_argument);
    require_ledger_ok(*l);
}

TEST_CASE("reseal_all re-encrypts every sealed blob in one commit, or nothing", "[openrouter]") {
    temp_dir dir;
    manual_clock clock;
    const auto path = dir.file("t.db");
    auto l = open_ledger(path, clock);
    const auto pro = make_user(*l, "pro@example.com", "professional");
    const auto starter = make_user(*l, "s@example.com", "starter");
    // A BYOK key (stored with its switch) and a provisioned key.
    ledger::switch_request byok{.user_id = pro,
                                .tier = "professional",
                                .option = "byok",
                                .may_upgrade = false,
                                .sealed_byok_key = std::string("old:byok"),
                                .actor = "test",
                                .idempotency_key = {}};
    REQUIRE(l->switch_tier(byok).code == result::ok);
    ledger::openrouter_account account;
    account.user_id = starter;
    account.label = "tollgate-user-2";
    account.status = "active";
    account.sealed_key = "old:provisioned";
    REQUIRE(l->put_openrouter_account(account).code == result::ok);
    REQUIRE(l->put_setting("sealed.key_hash_key", "old:hash-key").code == result::ok);
    REQUIRE(l->put_setting("admin_token_hash", "not sealed").code == result::ok);
    l->flush();

    SECTION("a blob the old key does not open: nothing changes, and it is named") {
        const auto out = l->reseal_all([&](std::string_view blob, const std::string& context) {
            if (context == "user:" + std::to_string(starter)) return std::optional<std::string>{};
            return std::optional<std::string>("new:" + std::string(blob.substr(4)));
        });
        CHECK(out.code == result::invalid_argument);
        REQUIRE(out.unreadable == std::vector<std::string>{"user:" + std::to_string(starter)});
        l->flush();
        CHECK(*l->byok_key(pro) == "old:byok");
        CHECK(*l->find_openrouter_account(starter)->sealed_key == "old:provisioned");
        CHECK(*l->setting("sealed.key_hash_key") == "old:hash-key");
    }
    SECTION("every blob is re-encrypted with its own context") {
        std::set<std::string> contexts;
        const auto out = l->reseal_all([&](std::string_view blob, const std::string& context) {
            contexts.insert(context);
            if (!blob.starts_with("old:")) return std::optional<std::string>{};
            return std::optional<std::string>("new:" + std::string(blob.substr(4)));
        });
        REQUIRE(out.code == result::ok);
        REQUIRE(l->wait_durable(out.seq));
        CHECK(out.resealed == 3);
        CHECK(contexts == std::set<std::string>{"user:" + std::to_string(pro), "user:" + std::to_string(starter),
                                                "setting:sealed.key_hash_key"});
        CHECK(*l->byok_key(pro) == "new:byok");
        CHECK(*l->find_openrouter_account(starter)->sealed_key == "new:provisioned");
        CHECK(*l->setting("sealed.key_hash_key") == "new:hash-key");
        CHECK(*l->setting("admin_token_hash") == "not sealed");  // not a sealed.* setting
        // Committed: a second ledger on the file sees it after a restart.
        l.reset();
        auto again = open_ledger(path, clock);
        CHECK(*again->byok_key(pro) == "new:byok");
        require_ledger_ok(*again);
        return;
    }
    require_ledger_ok(*l);
}

TEST_CASE("an estimated call is reconciled once, by reconcile rows, history untouched", "[openrouter]") {
    temp_dir dir;
    manual_clock clock;
    const auto path = dir.file("t.db");
    auto l = open_ledger(path, clock);
    const auto user = make_user(*l, "r@example.com", "starter");  // starter: $30 allocated
    const auto start = l->get_balance(user)->balance_micros;

    const auto under = estimated_call(*l, user, "req-under", 500, "gen-under");
    const auto over = estimated_call(*l, user, "req-over", 500, "gen-over");
    const auto exact = estimated_call(*l, user, "req-exact", 500, "gen-exact");
    const auto measured = estimated_call(*l, user, "req-measured", 500, "gen-measured", "upstream");
    clock.advance(20'000);

    const auto due = l->usage_to_reconcile(test_epoch_ms - 1, test_epoch_ms + 10'000, 50);
    std::set<std::int64_t> ids;
    for (const auto& e : due) ids.insert(e.usage_event_id);
    CHECK(ids == std::set<std::int64_t>{under, over, exact});                    // not the call the upstream priced
    CHECK(l->usage_to_reconcile(test_epoch_ms - 1, test_epoch_ms, 50).empty());  // the window's end is exclusive

    // Charged too little: 300 more, drawn like a charge.
    const auto more = l->reconcile_usage(correction(user, under, "gen-under", 800));
    REQUIRE(more.code == result::ok);
    CHECK(more.delta_micros == 300);
    CHECK(more.first_transaction_id > 0);
    CHECK(l->get_balance(user)->balance_micros == start - 2'000 - 300);
    // Charged too much: 400 back, as a refund grant.
    const auto less = l->reconcile_usage(correction(user, over, "gen-over", 100));
    REQUIRE(less.code == result::ok);
    CHECK(less.delta_micros == -400);
    CHECK(l->get_balance(user)->balance_micros == start - 2'000 - 300 + 400);
    CHECK(l->get_balance(user)->by_kind_micros[static_cast<int>(ledger::grant_kind::refund)] == 400);
    // Right all along: recorded, nothing moves.
    const auto same = l->reconcile_usage(correction(user, exact, "gen-exact", 500));
    REQUIRE(same.code == result::ok);
    CHECK(same.delta_micros == 0);
    CHECK(same.first_transaction_id == 0);
    CHECK(sum_of(*l, user, "reconcile") == -300 + 400);

    // Once only; and only an estimated call, with its own generation id.
    CHECK(l->reconcile_usage(correction(user, under, "gen-under", 900)).code == result::idempotency_conflict);
    CHECK(l->reconcile_usage(correction(user, measured, "gen-measured", 900)).code == result::invalid_argument);
    const auto fresh = estimated_call(*l, user, "req-fresh", 500, "gen-fresh");
    CHECK(l->reconcile_usage(correction(user, fresh, "gen-other", 900)).code == result::invalid_argument);
    CHECK(l->reconcile_usage(correction(user + 1, fresh, "gen-fresh", 900)).code == result::unknown_charge);
    CHECK(l->usage_to_reconcile(test_epoch_ms - 1, clock.now->load() + 1, 50).size() == 1);  // only the fresh one

    // History is not edited: the events keep what was billed then.
    l->flush();
    CHECK(scalar(path, "SELECT SUM(charged_micros) FROM usage_events") == 5 * 500);
    // The totals say what the calls finally cost.
    const auto day = std::string("2026-01-15");
    const auto summary = l->summarize_usage(user, day, day);
    CHECK(summary.total.charged_micros == 5 * 500 + 300 - 400);
    CHECK(summary.total.requests == 5);
    require_ledger_ok(*l);

    SECTION("the check notices a correction whose rows do not add up") {
        l.reset();
        execute(path, "UPDATE reconciliations SET delta_micros = delta_micros + 1 WHERE usage_event_id = " +
                          std::to_string(under));
        const auto report = ledger::check_database(path);
        CHECK_FALSE(report.ok);
        bool named = false;
        for (const auto& p : report.problems) named = named || p.find("reconciled by 301") != std::string::npos;
        CHECK(named);
    }
}

TEST_CASE("a correction never gives back more than refunds left of the charge", "[openrouter]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "f@example.com", "starter");
    const auto event = estimated_call(*l, user, "req-1", 1'000, "gen-1");
    // An admin refunds 700 of the 1,000; OpenRouter then says the call cost 100.
    const auto refund = l->refund({.user_id = user,
                                   .amount_micros = 700,
                                   .usage_event_id = event,
                                   .transaction_id = {},
                                   .actor = "admin",
                                   .reason = "goodwill",
                                   .idempotency_key = {}});
    REQUIRE(refund.code == result::ok);
    const auto before = l->get_balance(user)->balance_micros;
    const auto out = l->reconcile_usage(correction(user, event, "gen-1", 100));
    REQUIRE(out.code == result::ok);
    CHECK(out.delta_micros == -300);  // 1,000 charged - 700 refunded: 300 left to give back, not 900
    CHECK(l->get_balance(user)->balance_micros == before + 300);
    require_ledger_ok(*l);

    // All of it refunded already: the correction moves nothing.
    const auto second = estimated_call(*l, user, "req-2", 500, "gen-2");
    REQUIRE(l->refund({.user_id = user,
                       .amount_micros = 500,
                       .usage_event_id = second,
                       .transaction_id = {},
                       .actor = "admin",
                       .reason = "all",
                       .idempotency_key = {}})
                .code == result::ok);
    const auto none = l->reconcile_usage(correction(user, second, "gen-2", 0));
    REQUIRE(none.code == result::ok);
    CHECK(none.delta_micros == 0);
    require_ledger_ok(*l);
}

TEST_CASE("a correction beyond the grants becomes debt, paid first by the next grant", "[openrouter]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "d@example.com", "free");  // $10 allocated
    const auto event = estimated_call(*l, user, "req-1", 1'000, "gen-1");
    const auto balance = l->get_balance(user)->balance_micros;
    const auto out = l->reconcile_usage(correction(user, event, "gen-1", 1'000 + balance + 2'500));
    REQUIRE(out.code == result::ok);
    const auto after = l->get_balance(user);
    CHECK(after->balance_micros == -2'500);
    CHECK(after->debt_micros == 2'500);
    CHECK(sum_of(*l, user, "reconcile") == -(balance + 2'500));
    require_ledger_ok(*l);

    const auto gift = l->grant({.user_id = user, .kind = ledger::grant_kind::bonus, .amount_micros = 4'000});
    REQUIRE(gift.code == result::ok);
    CHECK(l->get_balance(user)->debt_micros == 0);
    CHECK(l->get_balance(user)->balance_micros == 1'500);
    require_ledger_ok(*l);
}
