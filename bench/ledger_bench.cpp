// ledger_bench: what the ledger costs a metered request, and how fast a usage
// summary is with many events. Prints figures; asserts nothing.
//
//   ledger_bench [--requests N] [--concurrency C] [--events N] [--dir PATH]
//                [--sync normal|full] [--users 1|10000] [--naive off]
//
// 1. reserve -> await durable -> settle -> await durable, as the proxy does,
//    with C requests in flight driven by durability callbacks, for WAL
//    synchronous NORMAL and FULL, one hot user and 10,000 users. Compared in
//    the same run with the obvious alternative: one SQLite transaction per
//    step, each admission a conditional UPDATE.
// 2. A 30-day usage summary for one user with N usage events in the database,
//    from the daily rollups, compared with the same totals from raw events.
#include "tollgate/ledger/ledger.hpp"

#include <sqlite3.h>

#include <fmt/format.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdlib>
#include <deque>
#include <filesystem>
#include <mutex>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

namespace {

namespace ledger = tollgate::ledger;
using clock_type = std::chrono::steady_clock;

double micros_since(clock_type::time_point t) {
    return std::chrono::duration<double, std::micro>(clock_type::now() - t).count();
}

double percentile(std::vector<double>& v, double p) {
    if (v.empty()) return 0;
    const auto k = static_cast<std::size_t>(p * static_cast<double>(v.size() - 1));
    std::nth_element(v.begin(), v.begin() + static_cast<std::ptrdiff_t>(k), v.end());
    return v[k];
}

// Two worker threads standing in for the proxy's I/O threads: durability
// callbacks post the next step here instead of running it on the writer.
class executor {
public:
    explicit executor(int threads) {
        for (int i = 0; i < threads; ++i) workers_.emplace_back([this] { run(); });
    }
    ~executor() {
        {
            std::lock_guard lock(mu_);
            stop_ = true;
        }
        cv_.notify_all();
        for (auto& w : workers_) w.join();
    }
    void post(std::function<void()> fn) {
        {
            std::lock_guard lock(mu_);
            queue_.push_back(std::move(fn));
        }
        cv_.notify_one();
    }

private:
    void run() {
        for (;;) {
            std::function<void()> fn;
            {
                std::unique_lock lock(mu_);
                cv_.wait(lock, [&] { return stop_ || !queue_.empty(); });
                if (queue_.empty()) return;
                fn = std::move(queue_.front());
                queue_.pop_front();
            }
            fn();
        }
    }
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> queue_;
    std::vector<std::thread> workers_;
    bool stop_ = false;
};

struct run_result {
    double settled_per_s = 0;
    double hold_p50_us = 0, hold_p99_us = 0, settle_p50_us = 0, settle_p99_us = 0;
    double avg_batch = 0;
    std::uint64_t largest_batch = 0;
    std::int64_t refused = 0;
    double writer_busy = 0;  // share of the run the writer spent writing
};

run_result run_ledger(const std::string& path, ledger::durability sync, int users, int requests, int concurrency) {
    std::filesystem::remove(path);
    auto opened = ledger::ledger::open({.path = path, .sync = sync});
    if (!opened.value) {
        fmt::print(stderr, "open failed: {}\n", opened.message);
        std::exit(1);
    }
    auto& l = *opened.value;
    std::vector<std::int64_t> ids;
    for (int i = 0; i < users; ++i) {
        const auto u = l.create_user({.email = fmt::format("u{}@bench", i), .tier = "starter"});
        l.grant({.user_id = u.user_id, .kind = ledger::grant_kind::purchased, .amount_micros = 1'000'000'000'000});
        ids.push_back(u.user_id);
    }
    l.flush();
    const auto before = l.stats();

    std::vector<double> hold_us(static_cast<std::size_t>(requests)), settle_us(static_cast<std::size_t>(requests));
    std::atomic<int> next{0}, done{0};
    std::atomic<std::int64_t> refused{0};
    std::mutex done_mu;
    std::condition_variable done_cv;
    executor pool(2);

    std::function<void()> start_one;
    start_one = [&] {
        const int i = next.fetch_add(1);
        if (i >= requests) return;
        const auto user = ids[static_cast<std::size_t>(i) % ids.size()];
        const auto t0 = clock_type::now();
        const auto hold = l.reserve(user, 20'000, fmt::format("req-{:012}", i));
        if (hold.code != ledger::result::ok) {
            ++refused;
            if (done.fetch_add(1) + 1 == requests) done_cv.notify_all();
            pool.post(start_one);
            return;
        }
        l.on_durable(hold.seq, [&, i, t0, hold_id = hold.hold_id](bool) {
            hold_us[static_cast<std::size_t>(i)] = micros_since(t0);
            pool.post([&, i, hold_id] {
                const auto t1 = clock_type::now();
                const auto s = l.settle(hold_id, 1234 + i % 1000,
                                        {.model = "openai/gpt-4o-mini", .prompt_tokens = 900, .completion_tokens = 120,
                                         .provider_cost_micros = 1122, .markup_micros = 112});
                l.on_durable(s.seq, [&, i, t1](bool) {
                    settle_us[static_cast<std::size_t>(i)] = micros_since(t1);
                    if (done.fetch_add(1) + 1 == requests) {
                        std::lock_guard lock(done_mu);
                        done_cv.notify_all();
                    }
                    pool.post(start_one);
                });
            });
        });
    };
    const auto t_start = clock_type::now();
    for (int c = 0; c < concurrency; ++c) pool.post(start_one);
    {
        std::unique_lock lock(done_mu);
        done_cv.wait(lock, [&] { return done.load() >= requests; });
    }
    const double seconds = micros_since(t_start) / 1e6;
    const auto after = l.stats();
    const auto report = l.check();
    if (!report.ok) {
        fmt::print(stderr, "ledger check FAILED after the run: {}\n", report.problems.front());
        std::exit(1);
    }

    run_result r;
    r.settled_per_s = static_cast<double>(requests - refused.load()) / seconds;
    r.hold_p50_us = percentile(hold_us, 0.50);
    r.hold_p99_us = percentile(hold_us, 0.99);
    r.settle_p50_us = percentile(settle_us, 0.50);
    r.settle_p99_us = percentile(settle_us, 0.99);
    const auto commits = after.commits - before.commits;
    r.avg_batch = commits ? static_cast<double>(after.operations - before.operations) / static_cast<double>(commits) : 0;
    r.largest_batch = after.largest_batch;
    r.refused = refused.load();
    r.writer_busy = static_cast<double>(after.busy_micros - before.busy_micros) / (seconds * 1e6);
    return r;
}

// The obvious alternative: every step its own SQLite transaction, admission
// by a conditional UPDATE (what a multi-instance PostgreSQL backend does).
double run_naive(const std::string& path, ledger::durability sync, int users, int requests) {
    std::filesystem::remove(path);
    {
        // Same schema: let the ledger create it and the users.
        auto opened = ledger::ledger::open({.path = path, .sync = sync});
        auto& l = *opened.value;
        for (int i = 0; i < users; ++i) {
            const auto u = l.create_user({.email = fmt::format("u{}@bench", i), .tier = "starter"});
            l.grant({.user_id = u.user_id, .kind = ledger::grant_kind::purchased, .amount_micros = 1'000'000'000'000});
        }
        l.flush();
    }
    sqlite3* db = nullptr;
    sqlite3_open(path.c_str(), &db);
    sqlite3_exec(db, "PRAGMA journal_mode=WAL", nullptr, nullptr, nullptr);
    sqlite3_exec(db, sync == ledger::durability::full ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL",
                 nullptr, nullptr, nullptr);
    auto prep = [&](const char* sql) {
        sqlite3_stmt* s = nullptr;
        sqlite3_prepare_v2(db, sql, -1, &s, nullptr);
        return s;
    };
    sqlite3_stmt* hold = prep(
        "UPDATE user_credits SET reserved_micros = reserved_micros + ?2 WHERE user_id = ?1 "
        "AND balance_micros + overage_limit_micros - reserved_micros >= ?2");
    sqlite3_stmt* hold_row = prep(
        "INSERT INTO reservations (user_id, request_id, amount_micros, state, created_at_ms, expires_at_ms) "
        "VALUES (?1, ?2, ?3, 'held', 0, 1)");
    sqlite3_stmt* settle_credits = prep(
        "UPDATE user_credits SET reserved_micros = reserved_micros - ?2, balance_micros = balance_micros - ?3 "
        "WHERE user_id = ?1");
    sqlite3_stmt* settle_hold = prep("UPDATE reservations SET state = 'settled' WHERE id = ?1");
    sqlite3_stmt* event = prep(
        "INSERT INTO usage_events (request_id, user_id, service, model, charged_micros, created_at_ms) "
        "VALUES (?1, ?2, 'chat', 'm', ?3, 0)");
    auto run = [](sqlite3_stmt* s) {
        sqlite3_step(s);
        sqlite3_reset(s);
    };
    const auto t0 = clock_type::now();
    for (int i = 0; i < requests; ++i) {
        const std::int64_t user = i % users + 1;
        const auto request = fmt::format("req-{:012}", i);
        sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
        sqlite3_bind_int64(hold, 1, user);
        sqlite3_bind_int64(hold, 2, 20'000);
        run(hold);
        sqlite3_bind_int64(hold_row, 1, user);
        sqlite3_bind_text(hold_row, 2, request.c_str(), -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(hold_row, 3, 20'000);
        run(hold_row);
        const auto hold_id = sqlite3_last_insert_rowid(db);
        sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
        sqlite3_exec(db, "BEGIN IMMEDIATE", nullptr, nullptr, nullptr);
        sqlite3_bind_int64(settle_credits, 1, user);
        sqlite3_bind_int64(settle_credits, 2, 20'000);
        sqlite3_bind_int64(settle_credits, 3, 1234);
        run(settle_credits);
        sqlite3_bind_int64(settle_hold, 1, hold_id);
        run(settle_hold);
        sqlite3_bind_text(event, 1, request.c_str(), -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(event, 2, user);
        sqlite3_bind_int64(event, 3, 1234);
        run(event);
        sqlite3_exec(db, "COMMIT", nullptr, nullptr, nullptr);
    }
    const double seconds = micros_since(t0) / 1e6;
    for (auto* s : {hold, hold_row, settle_credits, settle_hold, event}) sqlite3_finalize(s);
    sqlite3_close(db);
    return requests / seconds;
}

void bench_summary(const std::string& path, std::int64_t events) {
    constexpr int users = 1000;
    constexpr std::int64_t base_ms = 1735689600000;  // 2025-01-01
    constexpr std::int64_t year_ms = 365LL * 86'400'000;
    std::filesystem::remove(path);
    {
        auto opened = ledger::ledger::open({.path = path});
        for (int i = 0; i < users; ++i) opened.value->create_user({.email = fmt::format("u{}@bench", i)});
        opened.value->flush();
    }
    fmt::print("\n== usage summary with {} usage events ({} users, one year) ==\n", events, users);
    const auto t_fill = clock_type::now();
    {
        sqlite3* db = nullptr;
        sqlite3_open(path.c_str(), &db);
        sqlite3_exec(db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=OFF; PRAGMA cache_size=-262144", nullptr,
                     nullptr, nullptr);
        // Events with charged_micros 0 need no transactions to satisfy the
        // ledger check; the costs still give the summary something to add.
        const auto sql = fmt::format(
            "BEGIN; "
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < {0}) "
            "INSERT INTO usage_events (request_id, user_id, service, model, prompt_tokens, completion_tokens, "
            "provider_cost_micros, markup_micros, charged_micros, created_at_ms) "
            "SELECT 'r' || i, i % {1} + 1, CASE i % 3 WHEN 0 THEN 'chat' WHEN 1 THEN 'embedding' ELSE 'search' END, "
            "'model-' || (i % 20), 100 + i % 900, i % 300, 1 + i % 5000, i % 500, 0, "
            "{2} + (i * {3}) / {0} FROM n; "
            "INSERT INTO usage_daily (user_id, day, service, model, requests, prompt_tokens, completion_tokens, "
            "provider_cost_micros, markup_micros, charged_micros) "
            "SELECT user_id, strftime('%Y-%m-%d', created_at_ms / 1000, 'unixepoch'), service, model, COUNT(*), "
            "SUM(prompt_tokens), SUM(completion_tokens), SUM(provider_cost_micros), SUM(markup_micros), "
            "SUM(charged_micros) FROM usage_events GROUP BY 1, 2, 3, 4; COMMIT;",
            events, users, base_ms, year_ms);
        char* err = nullptr;
        if (sqlite3_exec(db, sql.c_str(), nullptr, nullptr, &err) != SQLITE_OK) {
            fmt::print(stderr, "fill failed: {}\n", err ? err : "?");
            std::exit(1);
        }
        sqlite3_exec(db, "PRAGMA wal_checkpoint(TRUNCATE)", nullptr, nullptr, nullptr);
        sqlite3_close(db);
    }
    fmt::print("filled in {:.1f} s\n", micros_since(t_fill) / 1e6);

    const auto t_open = clock_type::now();
    auto opened = ledger::ledger::open({.path = path});
    if (!opened.value) {
        fmt::print(stderr, "open failed: {}\n", opened.message);
        std::exit(1);
    }
    fmt::print("ledger open, including the full conservation check: {:.2f} s\n", micros_since(t_open) / 1e6);
    auto& l = *opened.value;

    std::vector<double> rollup_us, raw_us;
    ledger::usage_summary s;
    for (int i = 0; i < 200; ++i) {
        const auto t = clock_type::now();
        s = l.summarize_usage(1 + i % users, "2025-06-01", "2025-06-30");
        rollup_us.push_back(micros_since(t));
    }
    sqlite3* db = nullptr;
    sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr);
    sqlite3_stmt* raw = nullptr;
    sqlite3_prepare_v2(db,
                       "SELECT service, COUNT(*), SUM(prompt_tokens), SUM(charged_micros) FROM usage_events "
                       "WHERE user_id = ?1 AND created_at_ms >= ?2 AND created_at_ms < ?3 GROUP BY service",
                       -1, &raw, nullptr);
    std::int64_t raw_requests = 0;
    for (int i = 0; i < 20; ++i) {
        const auto t = clock_type::now();
        sqlite3_bind_int64(raw, 1, 1 + i % users);
        sqlite3_bind_int64(raw, 2, 1748736000000);  // 2025-06-01
        sqlite3_bind_int64(raw, 3, 1751328000000);  // 2025-07-01
        raw_requests = 0;
        while (sqlite3_step(raw) == SQLITE_ROW) raw_requests += sqlite3_column_int64(raw, 1);
        sqlite3_reset(raw);
        raw_us.push_back(micros_since(t));
    }
    sqlite3_finalize(raw);
    sqlite3_close(db);
    const double rollup_p50 = percentile(rollup_us, 0.5), raw_p50 = percentile(raw_us, 0.5);
    fmt::print("30-day summary from rollups: p50 {:.0f} us, p99 {:.0f} us ({} requests in the last one)\n", rollup_p50,
               percentile(rollup_us, 0.99), s.total.requests);
    fmt::print("same totals from raw events: p50 {:.0f} us ({} requests)  -> rollups {:.1f}x faster\n", raw_p50,
               raw_requests, raw_p50 / rollup_p50);
}

}  // namespace

int main(int argc, char** argv) {
    int requests = 200'000;
    std::vector<int> concurrencies = {1024, 4096};
    std::int64_t events = 10'000'000;
    std::string dir = std::filesystem::temp_directory_path().string();
    std::string only_sync;   // normal or full; empty: both
    int only_users = 0;      // 1 or 10000; 0: both
    bool naive = true;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string flag = argv[i];
        if (flag == "--requests") requests = std::atoi(argv[i + 1]);
        else if (flag == "--concurrency") {
            concurrencies.clear();
            for (std::string list = argv[i + 1]; !list.empty();) {
                const auto comma = list.find(',');
                concurrencies.push_back(std::atoi(list.substr(0, comma).c_str()));
                list = comma == std::string::npos ? "" : list.substr(comma + 1);
            }
        }
        else if (flag == "--events") events = std::atoll(argv[i + 1]);
        else if (flag == "--dir") dir = argv[i + 1];
        else if (flag == "--sync") only_sync = argv[i + 1];
        else if (flag == "--users") only_users = std::atoi(argv[i + 1]);
        else if (flag == "--naive") naive = std::string(argv[i + 1]) != "off";
    }
    const std::string path = (std::filesystem::path(dir) / "tollgate-ledger-bench.db").string();
    fmt::print("ledger_bench: {} requests per run, {} hardware threads\n", requests,
               std::thread::hardware_concurrency());
    fmt::print("settled/s: reserve -> durable -> settle -> durable, with N requests in flight; hold/settle: time to\n"
               "durability; writer: share of the run the writer spent writing; naive: one transaction per step\n\n");
    fmt::print("{:<8} {:>7} {:>6} | {:>10} {:>10} {:>10} {:>11} {:>11} {:>9} {:>7} | {:>11} {:>7}\n", "sync",
               "users", "N", "settled/s", "hold p50", "hold p99", "settle p50", "settle p99", "avg batch", "writer",
               "naive rq/s", "ratio");
    for (const auto sync : {ledger::durability::normal, ledger::durability::full}) {
        const char* sync_name = sync == ledger::durability::full ? "full" : "normal";
        if (!only_sync.empty() && only_sync != sync_name) continue;
        for (const int users : {1, 10'000}) {
            if (only_users != 0 && only_users != users) continue;
            const double naive_per_s = naive ? run_naive(path, sync, users, std::min(requests, 20'000)) : 0.0;
            for (const int concurrency : concurrencies) {
                const auto r = run_ledger(path, sync, users, requests, concurrency);
                fmt::print(
                    "{:<8} {:>7} {:>6} | {:>10.0f} {:>8.1f}ms {:>8.1f}ms {:>9.1f}ms {:>9.1f}ms {:>9.1f} {:>6.0f}% | "
                    "{:>11.0f} {:>6.1f}x\n",
                    sync_name, users, concurrency, r.settled_per_s, r.hold_p50_us / 1000, r.hold_p99_us / 1000,
                    r.settle_p50_us / 1000, r.settle_p99_us / 1000, r.avg_batch, r.writer_busy * 100, naive_per_s,
                    naive ? r.settled_per_s / naive_per_s : 0.0);
                std::fflush(stdout);
            }
        }
    }
    if (events > 0) bench_summary(path, events);
    for (const char* suffix : {"", "-wal", "-shm", ".lock"}) std::filesystem::remove(path + suffix);
    return 0;
}
