// Admission under contention: many threads reserving against one balance
// must admit exactly what it covers. Runs under TSan in CI.
#include "test_support.hpp"

#include <fmt/format.h>

#include <random>
#include <thread>

using namespace tollgate;
using namespace tollgate::testing;
using ledger::result;

TEST_CASE("8 threads x 10,000 equal holds on one user admit exactly N", "[ledger][concurrency]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = l->create_user({.email = "hot@example.com", .tier = "free"}).user_id;  // $10
    REQUIRE(l->grant({.user_id = user, .kind = ledger::grant_kind::purchased, .amount_micros = 20'000'000})
                .code == result::ok);

    constexpr int threads = 8;
    constexpr int attempts_per_thread = 10'000;
    constexpr std::int64_t hold_micros = 1'000;
    constexpr std::int64_t expected_admitted = 30'000'000 / hold_micros;  // exactly N = 30,000

    std::vector<std::vector<std::int64_t>> admitted(threads);
    std::vector<int> refused(threads, 0);
    std::vector<int> other(threads, 0);
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            for (int i = 0; i < attempts_per_thread; ++i) {
                const auto h = l->reserve(user, hold_micros, fmt::format("t{}-{}", t, i));
                if (h.code == result::ok) {
                    admitted[t].push_back(h.hold_id);
                } else if (h.code == result::insufficient_credits) {
                    ++refused[t];
                } else {
                    ++other[t];
                }
            }
        });
    }
    for (auto& w : workers) w.join();

    std::int64_t total_admitted = 0, total_refused = 0, total_other = 0;
    for (int t = 0; t < threads; ++t) {
        total_admitted += static_cast<std::int64_t>(admitted[t].size());
        total_refused += refused[t];
        total_other += other[t];
    }
    CHECK(total_other == 0);
    CHECK(total_admitted == expected_admitted);
    CHECK(total_refused == threads * attempts_per_thread - expected_admitted);
    auto b = l->get_balance(user);
    CHECK(b->reserved_micros == expected_admitted * hold_micros);
    CHECK(b->available_micros == 0);
    require_ledger_ok(*l);  // the holds are durable and reserved matches them

    // Settle them all, concurrently, at random actual costs (some above the
    // hold: the excess becomes debt).
    std::vector<std::int64_t> charged(threads, 0);
    workers.clear();
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            std::mt19937_64 rng(static_cast<std::uint64_t>(t) + 1);
            std::uniform_int_distribution<std::int64_t> cost(0, 2 * hold_micros);
            for (const auto hold : admitted[t]) {
                const std::int64_t c = cost(rng);
                const auto s = l->settle(hold, c, {.model = "m", .prompt_tokens = 3});
                if (s.code == result::ok) charged[t] += c;
                else ++other[t];
            }
        });
    }
    for (auto& w : workers) w.join();
    std::int64_t total_charged = 0;
    for (int t = 0; t < threads; ++t) {
        total_charged += charged[t];
        CHECK(other[t] == 0);
    }
    b = l->get_balance(user);
    CHECK(b->reserved_micros == 0);
    CHECK(b->balance_micros == 30'000'000 - total_charged);
    CHECK(l->open_hold_count() == 0);
    require_ledger_ok(*l);
}

TEST_CASE("many users: concurrent reserve, settle, grants and reads stay consistent", "[ledger][concurrency]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    constexpr int users = 50;
    std::vector<std::int64_t> ids;
    for (int i = 0; i < users; ++i) {
        ids.push_back(l->create_user({.email = fmt::format("u{}@example.com", i), .tier = "starter"}).user_id);
    }

    constexpr int threads = 4;
    std::atomic<bool> stop_readers{false};
    std::atomic<std::int64_t> reads{0};
    std::atomic<std::int64_t> inconsistent_reads{0};  // Catch2 assertions are not thread-safe
    std::thread reader([&] {
        while (!stop_readers) {
            for (const auto id : ids) {
                const auto b = l->get_balance(id);
                if (b && b->available_micros != b->balance_micros + b->overage_limit_micros - b->reserved_micros) {
                    ++inconsistent_reads;
                }
                (void)l->transactions({.user_id = id, .limit = 5});
                ++reads;
            }
        }
    });
    std::vector<std::thread> workers;
    std::vector<std::int64_t> net(threads * users, 0);  // per thread, per user: grants - charges
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            std::mt19937_64 rng(static_cast<std::uint64_t>(t) * 7919 + 3);
            for (int i = 0; i < 5000; ++i) {
                const auto u = static_cast<std::size_t>(rng() % users);
                const auto amount = static_cast<std::int64_t>(rng() % 50'000) + 1;
                if (rng() % 10 == 0) {
                    if (l->grant({.user_id = ids[u], .amount_micros = amount}).code == result::ok)
                        net[t * users + u] += amount;
                    continue;
                }
                const auto h = l->reserve(ids[u], amount, fmt::format("{}-{}", t, i));
                if (h.code != result::ok) continue;
                const auto c = static_cast<std::int64_t>(rng() % static_cast<std::uint64_t>(amount * 2));
                if (l->settle(h.hold_id, c, {.model = "m"}).code == result::ok) net[t * users + u] -= c;
            }
        });
    }
    for (auto& w : workers) w.join();
    stop_readers = true;
    reader.join();
    CHECK(reads > 0);
    CHECK(inconsistent_reads == 0);
    for (int u = 0; u < users; ++u) {
        std::int64_t expected = 30'000'000;
        for (int t = 0; t < threads; ++t) expected += net[t * users + u];
        CHECK(l->get_balance(ids[u])->balance_micros == expected);
    }
    require_ledger_ok(*l);
}

TEST_CASE("concurrent replays: one grant per idempotency key, one event per event id, one claim per key",
          "[ledger][concurrency]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = l->create_user({.email = "replay@example.com", .tier = "free"}).user_id;  // $10
    constexpr int threads = 8;
    constexpr int keys = 20;
    std::vector<std::vector<ledger::grant_outcome>> grants(threads);
    std::vector<std::vector<ledger::charge_outcome>> deducts(threads);
    std::vector<std::vector<ledger::ledger::claim>> claims(threads);
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) {
        workers.emplace_back([&, t] {
            for (int k = 0; k < keys; ++k) {
                grants[t].push_back(l->grant({.user_id = user,
                                              .kind = ledger::grant_kind::purchased,
                                              .amount_micros = 1'000 + k,
                                              .idempotency_key = fmt::format("admin grant-{}", k)}));
                deducts[t].push_back(l->deduct({.user_id = user, .amount_micros = 10, .event_id = fmt::format("ev-{}", k)}));
                claims[t].push_back(l->claim_idempotency_key("service:1", fmt::format("k-{}", k), "same body"));
            }
        });
    }
    for (auto& w : workers) w.join();
    for (int k = 0; k < keys; ++k) {
        int fresh_grants = 0, fresh_deducts = 0, fresh_claims = 0;
        for (int t = 0; t < threads; ++t) {
            const auto& g = grants[t][static_cast<std::size_t>(k)];
            const auto& d = deducts[t][static_cast<std::size_t>(k)];
            REQUIRE(g.code == result::ok);
            REQUIRE(d.code == result::ok);
            fresh_grants += !g.replayed;
            fresh_deducts += !d.replayed;
            fresh_claims += claims[t][static_cast<std::size_t>(k)] == ledger::ledger::claim::fresh;
            CHECK(claims[t][static_cast<std::size_t>(k)] != ledger::ledger::claim::conflict);
            // Every replay answers what the first call did.
            CHECK(g.transaction_id == grants[0][static_cast<std::size_t>(k)].transaction_id);
            CHECK(g.balance_micros == grants[0][static_cast<std::size_t>(k)].balance_micros);
            CHECK(d.usage_event_id == deducts[0][static_cast<std::size_t>(k)].usage_event_id);
        }
        CHECK(fresh_grants == 1);
        CHECK(fresh_deducts == 1);
        CHECK(fresh_claims == 1);
    }
    // $10 of monthly credits + one of each grant - one of each deduct.
    std::int64_t expected = 10'000'000;
    for (int k = 0; k < keys; ++k) expected += 1'000 + k - 10;
    const auto b = l->get_balance(user);
    REQUIRE(b);
    CHECK(b->balance_micros == expected);
    require_ledger_ok(*l);
}
