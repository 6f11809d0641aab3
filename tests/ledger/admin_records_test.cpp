// What the admin API reads and writes beside the hot path: tracked events
// (deduct with usage), idempotency claims, user pages, the audit log,
// service tokens, tier changes, and usage breakdowns checked against the
// raw events. Each scenario ends with the conservation check.
#include "test_support.hpp"

#include <fmt/format.h>
#include <sqlite3.h>

#include <map>
#include <set>

using namespace tollgate;
using namespace tollgate::testing;
using ledger::result;

namespace {

ledger::deduct_request tracked(std::int64_t user, std::string event_id, std::int64_t amount, std::string model) {
    ledger::deduct_request r;
    r.user_id = user;
    r.amount_micros = amount;
    r.event_id = std::move(event_id);
    r.usage = ledger::usage_event{};
    r.usage->service = "search";
    r.usage->model = std::move(model);
    r.usage->units = 3;
    r.usage->provider_cost_micros = amount;
    r.usage->price_source = "fixed";
    r.allow_debt = true;
    return r;
}

// Totals per key straight from usage_events, the raw rows the rollups sum.
std::map<std::string, ledger::usage_totals> raw_totals(const std::string& path, std::int64_t user,
                                                       const char* key_sql) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
    const auto sql = fmt::format(
        "SELECT {}, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens), SUM(provider_cost_micros), "
        "SUM(markup_micros), SUM(charged_micros) FROM usage_events WHERE user_id = ?1 GROUP BY 1",
        key_sql);
    sqlite3_stmt* s = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
    sqlite3_bind_int64(s, 1, user);
    std::map<std::string, ledger::usage_totals> out;
    while (sqlite3_step(s) == SQLITE_ROW) {
        out[reinterpret_cast<const char*>(sqlite3_column_text(s, 0))] = {
            sqlite3_column_int64(s, 1), sqlite3_column_int64(s, 2), sqlite3_column_int64(s, 3),
            sqlite3_column_int64(s, 4), sqlite3_column_int64(s, 5), sqlite3_column_int64(s, 6), 0};
    }
    sqlite3_finalize(s);
    sqlite3_close(db);
    return out;
}

bool same_usage(const ledger::usage_totals& a, const ledger::usage_totals& b) {
    return a.requests == b.requests && a.prompt_tokens == b.prompt_tokens &&
           a.completion_tokens == b.completion_tokens && a.provider_cost_micros == b.provider_cost_micros &&
           a.markup_micros == b.markup_micros && a.charged_micros == b.charged_micros;
}

}  // namespace

TEST_CASE("a tracked event is recorded with its usage and charged in full, beyond the balance as debt", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "free");  // $10 of monthly credits
    auto r = tracked(user, "ev-1", 12'000'000, "m");
    const auto first = l->deduct(r);
    REQUIRE(first.code == result::ok);
    CHECK(first.charged_micros == 12'000'000);
    CHECK(first.balance_micros == -2'000'000);
    const auto b = l->get_balance(user);
    REQUIRE(b);
    CHECK(b->debt_micros == 2'000'000);

    SECTION("the same event id replays the first answer; another body is a conflict") {
        const auto again = l->deduct(r);
        CHECK(again.code == result::ok);
        CHECK(again.replayed);
        CHECK(again.usage_event_id == first.usage_event_id);
        CHECK(again.balance_micros == first.balance_micros);
        r.usage->units = 4;
        CHECK(l->deduct(r).code == result::idempotency_conflict);
    }
    SECTION("a plain deduct is refused instead") {
        ledger::deduct_request plain{.user_id = user, .amount_micros = 1, .event_id = "d-1"};
        const auto refused = l->deduct(plain);
        CHECK(refused.code == result::insufficient_credits);
        CHECK(refused.available_micros == -2'000'000);
    }
    SECTION("a free event costs nothing and writes no transaction") {
        const auto free = l->deduct(tracked(user, "ev-free", 0, "m"));
        REQUIRE(free.code == result::ok);
        CHECK(free.first_transaction_id == 0);
        CHECK(free.charged_micros == 0);
        ledger::deduct_request plain{.user_id = user, .amount_micros = 0, .event_id = "d-0"};
        CHECK(l->deduct(plain).code == result::invalid_amount);  // without usage, zero is refused
    }
    SECTION("occurred_at places the event on its day") {
        auto earlier = tracked(user, "ev-old", 5, "m");
        earlier.occurred_at_ms = test_epoch_ms - 3 * day_ms;
        REQUIRE(l->deduct(earlier).code == result::ok);
        l->flush();
        CHECK(l->summarize_usage(user, "2026-01-12", "2026-01-12").total.charged_micros == 5);
    }
    SECTION("usage the database would refuse is refused first") {
        auto bad = tracked(user, "ev-bad", 5, "m");
        bad.usage->prompt_tokens = -1;
        CHECK(l->deduct(bad).code == result::invalid_argument);
        bad = tracked(user, "ev-bad", 5, "m");
        bad.usage->service.clear();
        CHECK(l->deduct(bad).code == result::invalid_argument);
    }
    require_ledger_ok(*l);
}

TEST_CASE("usage breakdowns by model, day and month equal the raw events", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    const auto path = dir.file("t.db");
    auto l = open_ledger(path, clock);
    const auto user = make_user(*l, "a@example.com", "enterprise");
    const auto other = make_user(*l, "b@example.com", "enterprise");
    const char* models[] = {"openai/gpt-4o", "anthropic/claude", ""};
    int n = 0;
    for (int day = 0; day < 45; day += 4) {  // across a month boundary
        for (int i = 0; i < 3; ++i, ++n) {
            const auto who = n % 5 == 0 ? other : user;
            const auto h = l->reserve(who, 100'000, fmt::format("r{}", n));
            REQUIRE(h.code == result::ok);
            const auto s = l->settle(h.hold_id, 1000 + n,
                                     {.service = "chat", .model = models[(n + day) % 3], .prompt_tokens = n,
                                      .completion_tokens = 2 * n, .provider_cost_micros = 900 + n,
                                      .markup_micros = 100});
            REQUIRE(s.code == result::ok);
        }
        auto t = tracked(user, fmt::format("ev{}", day), 7, models[day % 3]);
        REQUIRE(l->deduct(t).code == result::ok);
        clock.advance(4 * day_ms);
    }
    l->flush();
    const struct {
        ledger::usage_grouping by;
        const char* raw_key;
    } groupings[] = {
        {ledger::usage_grouping::model, "model"},
        {ledger::usage_grouping::day, "date(created_at_ms / 1000, 'unixepoch')"},
        {ledger::usage_grouping::month, "substr(date(created_at_ms / 1000, 'unixepoch'), 1, 7)"},
    };
    for (const auto& g : groupings) {
        INFO(g.raw_key);
        const auto rolled = l->break_down_usage(user, "2026-01-01", "2026-12-31", g.by);
        REQUIRE(rolled.code == result::ok);
        const auto raw = raw_totals(path, user, g.raw_key);
        REQUIRE(rolled.rows.size() == raw.size());
        for (const auto& [key, totals] : rolled.rows) {
            INFO(key);
            REQUIRE(raw.count(key) == 1);
            CHECK(same_usage(totals, raw.at(key)));
        }
    }
    // A window cuts by day, both ends included.
    const auto one_day = l->break_down_usage(user, "2026-01-19", "2026-01-19", ledger::usage_grouping::day);
    REQUIRE(one_day.rows.size() == 1);
    CHECK(one_day.rows[0].first == "2026-01-19");
    const auto months = l->break_down_usage(user, "2026-01-01", "2026-12-31", ledger::usage_grouping::month);
    REQUIRE(months.rows.size() == 2);
    CHECK(months.rows[0].first == "2026-01");
    CHECK(months.rows[1].first == "2026-02");
    require_ledger_ok(*l);
}

TEST_CASE("idempotency claims: first sight, the same request, another request; scoped by caller", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    const auto path = dir.file("t.db");
    using claim = ledger::ledger::claim;
    {
        auto l = open_ledger(path, clock);
        CHECK(l->claim_idempotency_key("admin", "k1", "POST /x\n{}") == claim::fresh);
        CHECK(l->claim_idempotency_key("admin", "k1", "POST /x\n{}") == claim::same);
        CHECK(l->claim_idempotency_key("admin", "k1", "POST /x\n{\"a\":1}") == claim::conflict);
        CHECK(l->claim_idempotency_key("service:1", "k1", "POST /x\n{\"a\":1}") == claim::fresh);
        // The ledger's own scope and empty keys are not for callers.
        CHECK(l->claim_idempotency_key("ledger", "k2", "x") == claim::conflict);
        CHECK(l->claim_idempotency_key("admin", "", "x") == claim::conflict);
    }
    auto l = open_ledger(path, clock);  // kept across restarts
    CHECK(l->claim_idempotency_key("admin", "k1", "POST /x\n{}") == claim::same);
    require_ledger_ok(*l);
}

TEST_CASE("user pages are newest first and stable while users are added", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    for (int i = 0; i < 25; ++i) make_user(*l, fmt::format("u{}@example.com", i), "starter");
    std::vector<std::int64_t> seen;
    std::optional<std::int64_t> cursor;
    int added = 0;
    do {
        const auto page = l->list_users(cursor, 10);
        REQUIRE(page.code == result::ok);
        for (const auto& row : page.rows) {
            seen.push_back(row.user.id);
            CHECK(row.tier == "starter");
        }
        cursor = page.next_cursor;
        make_user(*l, fmt::format("late{}@example.com", added++), "starter");  // never shifts the pages below the cursor
    } while (cursor);
    REQUIRE(seen.size() == 25);
    for (std::size_t i = 0; i < seen.size(); ++i) CHECK(seen[i] == 25 - static_cast<std::int64_t>(i));
    // The limit is clamped to 1..200.
    CHECK(l->list_users(std::nullopt, 0).rows.size() == 1);
    CHECK(l->list_users(std::nullopt, 500).rows.size() == 25 + static_cast<std::size_t>(added));
    require_ledger_ok(*l);
}

TEST_CASE("audit entries, service tokens and tier changes are kept", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    const auto path = dir.file("t.db");
    std::int64_t user = 0;
    {
        auto l = open_ledger(path, clock);
        user = make_user(*l, "a@example.com", "free");
        for (int i = 0; i < 3; ++i) {
            REQUIRE(l->record_audit({.actor = "admin",
                                     .action = "POST /api/v1/credits/allocate",
                                     .target = fmt::format("user:{}", i),
                                     .detail = "status 201",
                                     .client_address = "127.0.0.1"})
                        .code == result::ok);
            clock.advance(1000);
        }
        CHECK(l->record_audit({.actor = "", .action = "x"}).code == result::invalid_argument);
        CHECK(l->record_audit({.actor = "a", .action = std::string(5000, 'x')}).code == result::invalid_argument);

        const auto token = l->create_service_token({.token_hash = "hash-1", .token_prefix = "tgs_ab", .name = "meter",
                                                    .scopes = "meter"});
        REQUIRE(token.code == result::ok);
        CHECK(l->create_service_token({.token_hash = "hash-1", .name = "again"}).code == result::key_exists);
        CHECK(l->create_service_token({.token_hash = "hash-2", .name = ""}).code == result::invalid_argument);

        const auto second = l->create_service_token({.token_hash = "hash-2", .name = "billing", .scopes = "billing"});
        REQUIRE(second.code == result::ok);
        CHECK(l->revoke_service_token(second.key_id).code == result::ok);
        CHECK(l->revoke_service_token(999).code == result::unknown_key);
        CHECK(l->set_tier(user, "professional").code == result::ok);
        CHECK(l->set_tier(user, "nope").code == result::unknown_tier);
        CHECK(l->set_tier(999, "starter").code == result::unknown_user);
        l->flush();
    }
    auto l = open_ledger(path, clock);
    const auto page = l->audit_log(std::nullopt, 2);
    REQUIRE(page.code == result::ok);
    REQUIRE(page.rows.size() == 2);
    CHECK(page.rows[0].target == "user:2");  // newest first
    CHECK(page.rows[1].target == "user:1");
    CHECK(page.rows[0].client_address == "127.0.0.1");
    CHECK(page.rows[0].created_at_ms == test_epoch_ms + 2000);
    REQUIRE(page.next_cursor);
    const auto rest = l->audit_log(page.next_cursor, 2);
    REQUIRE(rest.rows.size() == 1);
    CHECK(rest.rows[0].target == "user:0");
    CHECK_FALSE(rest.next_cursor);

    const auto found = l->find_service_token_by_hash("hash-1");
    REQUIRE(found);
    CHECK(found->name == "meter");
    CHECK(found->scopes == "meter");
    CHECK_FALSE(found->revoked_at_ms);
    CHECK_FALSE(l->find_service_token_by_hash("hash-x"));
    const auto listed = l->service_tokens();
    REQUIRE(listed.size() == 2);
    CHECK(listed[0].name == "billing");  // newest first
    CHECK(listed[0].revoked_at_ms);
    CHECK(l->find_service_token_by_hash("hash-2")->revoked_at_ms);
    CHECK_FALSE(listed[1].revoked_at_ms);
    // A reopened ledger still knows the hash is taken.
    CHECK(l->create_service_token({.token_hash = "hash-1", .name = "again"}).code == result::key_exists);

    const auto sub = l->find_subscription(user);
    REQUIRE(sub);
    CHECK(sub->tier == "professional");
    require_ledger_ok(*l);
}
