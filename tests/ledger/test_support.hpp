// Shared helpers for ledger tests: a fresh database in a temp dir, a clock
// the test moves by hand, and the conservation check every scenario ends with.
#pragma once

#include "tollgate/ledger/ledger.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <filesystem>
#include <string>

namespace Catch {
template <>
struct StringMaker<tollgate::ledger::result> {
    static std::string convert(tollgate::ledger::result r) { return std::string(tollgate::ledger::to_string(r)); }
};
}  // namespace Catch

namespace tollgate::testing {

class temp_dir {
public:
    temp_dir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "tollgate-test-XXXXXX").string();
        path_ = ::mkdtemp(pattern.data());
    }
    ~temp_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path_, ec);
    }
    std::string file(const std::string& name) const { return (std::filesystem::path(path_) / name).string(); }

private:
    std::string path_;
};

// 2026-01-15T00:00:00Z
inline constexpr ledger::time_ms test_epoch_ms = 1768435200000;
inline constexpr ledger::time_ms day_ms = 86'400'000;

struct manual_clock {
    std::shared_ptr<std::atomic<ledger::time_ms>> now = std::make_shared<std::atomic<ledger::time_ms>>(test_epoch_ms);
    void advance(ledger::time_ms ms) { *now += ms; }
    void set(ledger::time_ms ms) { *now = ms; }
    std::function<ledger::time_ms()> fn() const {
        return [n = now] { return n->load(); };
    }
};

inline std::unique_ptr<ledger::ledger> open_ledger(const std::string& path, const manual_clock& clock,
                                                   ledger::durability sync = ledger::durability::normal) {
    ledger::options o;
    o.path = path;
    o.sync = sync;
    o.clock = clock.fn();
    auto r = ledger::ledger::open(std::move(o));
    INFO(r.message);
    REQUIRE(r.value);
    return std::move(r.value);
}

inline std::int64_t make_user(ledger::ledger& l, const std::string& email, const std::string& tier) {
    const auto r = l.create_user({.email = email, .name = "", .tier = tier, .actor = "test"});
    REQUIRE(r.code == ledger::result::ok);
    return r.user_id;
}

inline void require_ledger_ok(ledger::ledger& l) {
    const auto report = l.check();
    for (const auto& p : report.problems) UNSCOPED_INFO(p);
    REQUIRE(report.ok);
}

}  // namespace tollgate::testing
