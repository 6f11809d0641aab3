// The tollgate command. `serve` arrives with the proxy; today it offers the
// ledger's commands and a demo.
#include "tollgate/ledger/ledger.hpp"

#include <fmt/format.h>

#include <cstdlib>
#include <iterator>
#include <cstring>
#include <string>
#include <vector>

namespace {

namespace ledger = tollgate::ledger;

constexpr const char* usage_text = R"(tollgate — a transparent metering proxy for LLM APIs

Usage: tollgate <command> [options]

Commands:
  migrate          apply pending schema migrations (refused while a server holds the database)
  check-ledger     prove the ledger invariants (read-only, safe on a live database)
  demo             create a demo database with a few users and print their balances
  --version        print the version
  --help           print this help

Options:
  --db PATH        the database (default: $TOLLGATE_DB or ./tollgate.db)

Exit status: 0 on success, 1 when the command failed, 2 on a usage error.
)";

std::string database_path(const std::vector<std::string>& args) {
    for (std::size_t i = 0; i + 1 < args.size(); ++i) {
        if (args[i] == "--db") return args[i + 1];
    }
    if (const char* env = std::getenv("TOLLGATE_DB"); env && *env) return env;
    return "./tollgate.db";
}

std::string usd(std::int64_t micros) {
    const char* sign = micros < 0 ? "-" : "";
    const std::uint64_t magnitude = micros < 0 ? 0 - static_cast<std::uint64_t>(micros) : static_cast<std::uint64_t>(micros);
    return fmt::format("{}${}.{:06}", sign, magnitude / 1'000'000, magnitude % 1'000'000);
}

int run_migrate(const std::string& path) {
    const auto r = ledger::migrate(path);
    if (r.error != ledger::open_error::none) {
        fmt::print(stderr, "tollgate migrate: {} ({})\n", r.message, ledger::to_string(r.error));
        return 1;
    }
    if (r.from_version == r.to_version) {
        fmt::print("{}: schema is at version {}, nothing to do\n", path, r.to_version);
    } else {
        fmt::print("{}: migrated schema from version {} to {}\n", path, r.from_version, r.to_version);
    }
    return 0;
}

int run_check(const std::string& path) {
    const auto r = ledger::check_database(path);
    if (!r.ok) {
        fmt::print(stderr, "tollgate check-ledger: FAILED, {} problem(s):\n", r.problems.size());
        for (const auto& p : r.problems) fmt::print(stderr, "  {}\n", p);
        return 1;
    }
    fmt::print("{}: ledger OK ({} users, {} grants, {} transactions checked)\n", path, r.users_checked,
               r.grants_checked, r.transactions_checked);
    return 0;
}

int run_demo(const std::string& path) {
    auto opened = ledger::ledger::open(ledger::options{.path = path});
    if (!opened.value) {
        fmt::print(stderr, "tollgate demo: {} ({})\n", opened.message, ledger::to_string(opened.error));
        return 1;
    }
    auto& l = *opened.value;
    struct demo_user {
        const char* email;
        const char* tier;
    };
    const demo_user demo[] = {{"ada@example.com", "free"},
                              {"grace@example.com", "starter"},
                              {"linus@example.com", "professional"},
                              {"barbara@example.com", "enterprise"}};
    std::vector<std::int64_t> ids;
    for (const auto& d : demo) {
        auto created = l.create_user({.email = d.email, .name = "", .tier = d.tier, .actor = "demo"});
        if (created.code == ledger::result::user_exists) continue;  // a second run reuses the database
        if (created.code != ledger::result::ok) {
            fmt::print(stderr, "tollgate demo: create {}: {}\n", d.email, ledger::to_string(created.code));
            return 1;
        }
        ids.push_back(created.user_id);
    }
    if (ids.size() == std::size(demo)) {  // a fresh database: meter one call, give one bonus
        // One metered call for the starter user: hold, then settle.
        const auto hold = l.reserve(ids[1], 250'000, "demo-request-1");
        if (!l.wait_durable(hold.seq)) {
            fmt::print(stderr, "tollgate demo: the ledger failed to commit\n");
            return 1;
        }
        ledger::usage_event usage{.request_id = "", .model = "openai/gpt-4o-mini", .prompt_tokens = 1200,
                                  .completion_tokens = 300, .provider_cost_micros = 360, .markup_micros = 36};
        const auto settled = l.settle(hold.hold_id, 396, usage);
        const auto bonus = l.grant({.user_id = ids[0], .kind = ledger::grant_kind::bonus, .amount_micros = 5'000'000,
                                    .source = "coupon:WELCOME5", .actor = "demo", .reason = "welcome bonus"});
        if (hold.code != ledger::result::ok || settled.code != ledger::result::ok || bonus.code != ledger::result::ok) {
            fmt::print(stderr, "tollgate demo: {} / {} / {}\n", ledger::to_string(hold.code),
                       ledger::to_string(settled.code), ledger::to_string(bonus.code));
            return 1;
        }
    }
    l.flush();
    fmt::print("demo database: {}\n\n{:<24} {:<14} {:>16} {:>16} {:>16}\n", path, "user", "tier", "balance",
               "reserved", "available");
    for (std::int64_t id = 1;; ++id) {
        const auto user = l.find_user(id);
        if (!user) break;
        const auto b = l.get_balance(id);
        const auto sub = l.find_subscription(id);
        fmt::print("{:<24} {:<14} {:>16} {:>16} {:>16}\n", user->email, sub ? sub->tier : "-", usd(b->balance_micros),
                   usd(b->reserved_micros), usd(b->available_micros));
    }
    const auto report = l.check();
    fmt::print("\nledger check: {} ({} transactions)\n", report.ok ? "OK" : "FAILED", report.transactions_checked);
    return report.ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
        fmt::print("{}", usage_text);
        return args.empty() ? 2 : 0;
    }
    const std::string& command = args[0];
    if (command == "--version") {
        fmt::print("tollgate {} (schema version {})\n", TOLLGATE_VERSION, ledger::schema_version_of_binary());
        return 0;
    }
    const std::string path = database_path(args);
    if (command == "migrate") return run_migrate(path);
    if (command == "check-ledger") return run_check(path);
    if (command == "demo") return run_demo(path);
    fmt::print(stderr, "tollgate: unknown command '{}'\n\n{}", command, usage_text);
    return 2;
}
