// Bad input: every refusal is a named result, leaves no partial write, and
// never crashes; damaged database files are named errors at open.
#include "test_support.hpp"

#include <sqlite3.h>

#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <random>

using namespace tollgate;
using namespace tollgate::testing;
using ledger::grant_kind;
using ledger::result;

namespace {

std::int64_t count_rows(const std::string& path, const char* table) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
    sqlite3_stmt* s = nullptr;
    const std::string sql = std::string("SELECT COUNT(*) FROM ") + table;
    REQUIRE(sqlite3_prepare_v2(db, sql.c_str(), -1, &s, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(s) == SQLITE_ROW);
    const auto n = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return n;
}

void exec_sql(const std::string& path, const char* sql) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    char* err = nullptr;
    const int rc = sqlite3_exec(db, sql, nullptr, nullptr, &err);
    INFO((err ? err : ""));
    sqlite3_free(err);
    sqlite3_close(db);
    REQUIRE(rc == SQLITE_OK);
}

std::string make_populated_db(const temp_dir& dir, const manual_clock& clock) {
    const auto path = dir.file("populated.db");
    auto l = open_ledger(path, clock);
    for (int i = 0; i < 200; ++i) {
        const auto u = l->create_user({.email = fmt::format("u{}@example.com", i)}).user_id;
        const auto h = l->reserve(u, 100, fmt::format("r{}", i));
        l->settle(h.hold_id, 77, {.model = "m"});
    }
    require_ledger_ok(*l);
    return path;
}

}  // namespace

TEST_CASE("refused operations write nothing", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    const auto path = dir.file("t.db");
    auto l = open_ledger(path, clock);
    const auto user = l->create_user({.email = "a@example.com"}).user_id;
    l->flush();
    const auto txns_before = count_rows(path, "credit_transactions");
    const auto grants_before = count_rows(path, "credit_grants");
    const auto before = *l->get_balance(user);

    const std::int64_t amounts[] = {0, -1, std::numeric_limits<std::int64_t>::min(),
                                    std::numeric_limits<std::int64_t>::max(), ledger::max_amount_micros + 1};
    for (const auto amount : amounts) {
        CAPTURE(amount);
        CHECK(l->grant({.user_id = user, .amount_micros = amount}).code == result::invalid_amount);
        CHECK(l->reserve(user, amount, "x").code == result::invalid_amount);
        CHECK(l->deduct({.user_id = user, .amount_micros = amount, .event_id = "e"}).code == result::invalid_amount);
        CHECK(l->refund({.user_id = user, .amount_micros = amount, .usage_event_id = 1}).code ==
              result::invalid_amount);
    }
    CHECK(l->settle(1, -5, {}).code == result::invalid_amount);
    CHECK(l->grant({.user_id = 424242, .amount_micros = 5}).code == result::unknown_user);
    CHECK(l->grant({.user_id = -1, .amount_micros = 5}).code == result::unknown_user);
    CHECK(l->grant({.user_id = user, .amount_micros = 5, .expires_at_ms = 0}).code == result::grant_expired);
    CHECK(l->grant({.user_id = user, .amount_micros = 5, .expires_at_ms = clock.now->load() - 1}).code ==
          result::grant_expired);
    CHECK(l->deduct({.user_id = user, .amount_micros = 5, .event_id = std::string(10'000, 'e')}).code ==
          result::invalid_argument);
    CHECK(l->settle(-3, 5, {}).code == result::unknown_hold);
    CHECK(l->release(0).code == result::unknown_hold);
    CHECK(l->set_user_status(user, "banana").code == result::invalid_argument);
    const auto h = l->reserve(user, 10, "h");
    CHECK(l->settle(h.hold_id, 5, {.prompt_tokens = -1}).code == result::invalid_argument);
    l->release(h.hold_id);

    // Overflow: a balance may not grow past max_balance_micros.
    for (int i = 0; i < 999; ++i) {
        REQUIRE(l->grant({.user_id = user, .kind = grant_kind::purchased, .amount_micros = ledger::max_amount_micros})
                    .code == result::ok);
    }
    const auto at_limit = *l->get_balance(user);
    CHECK(l->grant({.user_id = user, .amount_micros = ledger::max_amount_micros}).code == result::amount_overflow);
    CHECK(l->get_balance(user)->balance_micros == at_limit.balance_micros);
    l->flush();
    CHECK(count_rows(path, "credit_transactions") == txns_before + 999);
    CHECK(count_rows(path, "credit_grants") == grants_before + 999);
    CHECK(before.balance_micros + 999 * ledger::max_amount_micros == at_limit.balance_micros);
    require_ledger_ok(*l);
}

TEST_CASE("a file that is not a database is refused by name", "[ledger]") {
    temp_dir dir;
    const auto path = dir.file("garbage.db");
    {
        std::ofstream out(path, std::ios::binary);
        std::mt19937 rng(7);
        for (int i = 0; i < 64 * 1024; ++i) out.put(static_cast<char>(rng()));
    }
    const auto r = ledger::ledger::open({.path = path});
    CHECK_FALSE(r.value);
    CHECK(r.error == ledger::open_error::not_a_database);
    CHECK_FALSE(r.message.empty());
    CHECK(ledger::migrate(path).error == ledger::open_error::not_a_database);
    CHECK_FALSE(ledger::check_database(path).ok);
}

TEST_CASE("a truncated database is refused by name, not served", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    const auto path = make_populated_db(dir, clock);
    const auto size = std::filesystem::file_size(path);
    REQUIRE(size > 8192);
    std::filesystem::resize_file(path, size / 2);
    auto r = ledger::ledger::open({.path = path});
    CHECK_FALSE(r.value);
    CHECK((r.error == ledger::open_error::not_a_database || r.error == ledger::open_error::check_failed));
    CHECK_FALSE(ledger::check_database(path).ok);
}

TEST_CASE("a database from a newer tollgate is refused", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    const auto path = make_populated_db(dir, clock);
    exec_sql(path, "PRAGMA user_version = 999");
    const auto r = ledger::ledger::open({.path = path});
    CHECK_FALSE(r.value);
    CHECK(r.error == ledger::open_error::schema_too_new);
    CHECK(r.message.find("999") != std::string::npos);
    CHECK(ledger::migrate(path).error == ledger::open_error::schema_too_new);
}

TEST_CASE("a ledger whose figures do not add up is refused at open", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    const auto path = make_populated_db(dir, clock);
    exec_sql(path, "UPDATE user_credits SET balance_micros = balance_micros + 1 WHERE user_id = 7");
    const auto report = ledger::check_database(path);
    CHECK_FALSE(report.ok);
    REQUIRE_FALSE(report.problems.empty());
    CHECK(report.problems.front().find("user 7") != std::string::npos);
    const auto r = ledger::ledger::open({.path = path});
    CHECK_FALSE(r.value);
    CHECK(r.error == ledger::open_error::check_failed);
    CHECK(r.message.find("user 7") != std::string::npos);

    exec_sql(path, "UPDATE user_credits SET balance_micros = balance_micros - 1 WHERE user_id = 7");
    exec_sql(path, "UPDATE credit_grants SET remaining_micros = remaining_micros - 5 WHERE id = 3");
    CHECK_FALSE(ledger::check_database(path).ok);
}

TEST_CASE("migrate is idempotent and check-ledger reads a fresh database", "[ledger]") {
    temp_dir dir;
    const auto path = dir.file("fresh.db");
    const auto first = ledger::migrate(path);
    REQUIRE(first.error == ledger::open_error::none);
    CHECK(first.from_version == 0);
    CHECK(first.to_version == ledger::schema_version_of_binary());
    const auto second = ledger::migrate(path);
    CHECK(second.error == ledger::open_error::none);
    CHECK(second.from_version == second.to_version);
    CHECK(count_rows(path, "tiers") == 4);
    {
        // A new database gets 2 KiB pages (less WAL written per commit).
        sqlite3* db = nullptr;
        REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
        sqlite3_stmt* s = nullptr;
        REQUIRE(sqlite3_prepare_v2(db, "PRAGMA page_size", -1, &s, nullptr) == SQLITE_OK);
        REQUIRE(sqlite3_step(s) == SQLITE_ROW);
        CHECK(sqlite3_column_int(s, 0) == 2048);
        sqlite3_finalize(s);
        sqlite3_close(db);
    }
    const auto report = ledger::check_database(path);
    CHECK(report.ok);
    CHECK(report.users_checked == 0);
    CHECK_FALSE(ledger::check_database(dir.file("missing.db")).ok);
}

TEST_CASE("the checks rewritten by migration 0003 refuse what they refused before", "[ledger]") {
    temp_dir dir;
    const auto path = dir.file("checks.db");
    REQUIRE(ledger::migrate(path).error == ledger::open_error::none);
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
    auto run = [&](const std::string& sql) {
        const int rc = sqlite3_exec(db, sql.c_str(), nullptr, nullptr, nullptr);
        return rc & 0xff;
    };
    auto schema_of = [&](const char* table) {
        sqlite3_stmt* s = nullptr;
        REQUIRE(sqlite3_prepare_v2(db, "SELECT sql FROM sqlite_schema WHERE name = ?1", -1, &s, nullptr) == SQLITE_OK);
        sqlite3_bind_text(s, 1, table, -1, SQLITE_STATIC);
        REQUIRE(sqlite3_step(s) == SQLITE_ROW);
        std::string sql = reinterpret_cast<const char*>(sqlite3_column_text(s, 0));
        sqlite3_finalize(s);
        return sql;
    };
    // The IN lists are gone (each one cost a temporary B-tree per statement).
    for (const char* table : {"reservations", "credit_grants", "credit_transactions", "usage_events"}) {
        INFO(table);
        CHECK(schema_of(table).find(" IN (") == std::string::npos);
    }
    // Foreign keys are off on this raw connection: only the CHECKs decide.
    const std::string reservation =
        "INSERT INTO reservations (id, user_id, request_id, amount_micros, state, created_at_ms, expires_at_ms) "
        "VALUES ({}, 1, 'r', 5, '{}', 0, 1)";
    CHECK(run(fmt::format(fmt::runtime(reservation), 1, "held")) == SQLITE_OK);
    CHECK(run(fmt::format(fmt::runtime(reservation), 2, "expired")) == SQLITE_OK);
    CHECK(run(fmt::format(fmt::runtime(reservation), 3, "open")) == SQLITE_CONSTRAINT);
    CHECK(run(fmt::format(fmt::runtime(reservation), 4, "HELD")) == SQLITE_CONSTRAINT);
    const std::string grant =
        "INSERT INTO credit_grants (id, user_id, kind, amount_micros, remaining_micros, priority, effective_at_ms, "
        "source, created_at_ms) VALUES ({}, 1, '{}', 5, 5, 0, 0, 's', 0)";
    CHECK(run(fmt::format(fmt::runtime(grant), 1, "purchased")) == SQLITE_OK);
    CHECK(run(fmt::format(fmt::runtime(grant), 2, "gift")) == SQLITE_CONSTRAINT);
    const std::string txn =
        "INSERT INTO credit_transactions (id, user_id, type, amount_micros, balance_after_micros, actor, reason, "
        "created_at_ms) VALUES ({}, 1, '{}', 5, 5, 'a', 'r', 0)";
    CHECK(run(fmt::format(fmt::runtime(txn), 1, "debt")) == SQLITE_OK);
    CHECK(run(fmt::format(fmt::runtime(txn), 2, "bonus")) == SQLITE_CONSTRAINT);
    const std::string event =
        "INSERT INTO usage_events (id, request_id, user_id, service, upstream, model, charged_micros, price_source, "
        "created_at_ms) "
        "VALUES ({}, 'r', 1, 'llm', 'openrouter', 'm', 0, '{}', 0)";
    CHECK(run(fmt::format(fmt::runtime(event), 1, "fixed")) == SQLITE_OK);
    CHECK(run(fmt::format(fmt::runtime(event), 2, "guessed")) == SQLITE_CONSTRAINT);
    CHECK(run("PRAGMA integrity_check") == SQLITE_OK);
    sqlite3_close(db);
}

TEST_CASE("history tables refuse updates and deletes", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    const auto path = make_populated_db(dir, clock);
    for (const char* sql : {"UPDATE credit_transactions SET amount_micros = 0 WHERE id = 1",
                            "DELETE FROM credit_transactions WHERE id = 1",
                            "UPDATE usage_events SET charged_micros = 0 WHERE id = 1",
                            "DELETE FROM usage_events"}) {
        sqlite3* db = nullptr;
        REQUIRE(sqlite3_open(path.c_str(), &db) == SQLITE_OK);
        char* err = nullptr;
        CHECK(sqlite3_exec(db, sql, nullptr, nullptr, &err) == SQLITE_CONSTRAINT);
        CHECK(std::string(err ? err : "").find("append-only") != std::string::npos);
        sqlite3_free(err);
        sqlite3_close(db);
    }
    CHECK(ledger::check_database(path).ok);
}
