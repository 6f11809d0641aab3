// Tier switches and billing periods (SPEC 3) through a real SQLite file,
// with a clock the test moves: a year lived in milliseconds. Every balance
// is checked against figures worked out by hand in the comments, and the
// conservation check runs after every step.
#include "test_support.hpp"

#include <fmt/format.h>

#include <thread>

using namespace tollgate;
using namespace tollgate::testing;
using ledger::coupon;
using ledger::coupon_kind;
using ledger::coupon_refusal;
using ledger::result;
using ledger::switch_kind;

namespace {

// UTC midnight of a date (1970..2099), as Unix ms, worked out apart from
// the ledger's own calendar.
ledger::time_ms day(int year, int month, int d) {
    static constexpr int cumulative[] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    const bool leap = year % 4 == 0;  // enough for 1970..2099
    const std::int64_t days =
        (year - 1970) * 365 + (year - 1969) / 4 + cumulative[month - 1] + (leap && month > 2 ? 1 : 0) + d - 1;
    return days * day_ms;
}

struct stepper {
    ledger::ledger& l;
    manual_clock& clock;
    std::int64_t user;
    // Moves the clock, applies what is due, and checks the balance and the ledger.
    void at(ledger::time_ms t, std::int64_t expected_balance, const char* what) {
        clock.set(t);
        const auto b = l.get_balance(user);
        REQUIRE(b);
        INFO(what);
        CHECK(b->balance_micros == expected_balance);
        require_ledger_ok(l);
    }
};

ledger::switch_outcome switch_to(ledger::ledger& l, std::int64_t user, const char* tier, bool admin,
                                 const char* option = "credits", std::string key = {}) {
    return l.switch_tier({.user_id = user, .tier = tier, .option = option, .may_upgrade = admin,
                          .actor = admin ? "admin" : "user", .idempotency_key = std::move(key)});
}

void charge(ledger::ledger& l, std::int64_t user, std::int64_t amount, const std::string& request) {
    const auto hold = l.reserve(user, 1, request);
    REQUIRE(hold.code == result::ok);
    REQUIRE(l.settle(hold.hold_id, amount, {.model = "m"}).code == result::ok);
}

}  // namespace

TEST_CASE("day() is the calendar", "[ledger][periods]") {
    CHECK(day(2026, 1, 15) == test_epoch_ms);
    CHECK(day(2027, 3, 1) - day(2027, 2, 1) == 28 * day_ms);
    CHECK(day(2028, 3, 1) - day(2028, 2, 1) == 29 * day_ms);
}

TEST_CASE("a starter user's year: coupon, debt, upgrade, discount, downgrade, rollover", "[ledger][periods]") {
    temp_dir dir;
    manual_clock clock;  // 2026-01-15
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = l->create_user({.email = "year@example.com", .tier = "starter"}).user_id;
    stepper s{*l, clock, user};
    s.at(day(2026, 1, 15), 30'000'000, "Jan 15: starter's $30");

    REQUIRE(l->create_coupon({.code = "WELCOME10", .kind = coupon_kind::credit, .amount_micros = 10'000'000})
                .code == result::ok);
    REQUIRE(l->redeem_coupon(user, "WELCOME10", "user").refusal == coupon_refusal::none);
    s.at(day(2026, 1, 15), 40'000'000, "WELCOME10: a $10 bonus");

    clock.set(day(2026, 1, 20));
    charge(*l, user, 5'000'000, "jan");
    s.at(day(2026, 1, 20), 35'000'000, "Jan 20: $5 drawn from the bonus first (priority 10 before 20)");

    // Feb 15: the untouched $30 allocation expires (starter: no rollover), $30 new; the $5 bonus stays.
    s.at(day(2026, 2, 15), 35'000'000, "Feb 15 roll");

    clock.set(day(2026, 2, 20));
    charge(*l, user, 40'000'000, "feb");  // beyond everything: $5 bonus + $30 allocation, $5 debt
    s.at(day(2026, 2, 20), -5'000'000, "Feb 20: $40 charged in full, $5 of debt");
    CHECK(l->get_balance(user)->debt_micros == 5'000'000);

    s.at(day(2026, 3, 15), 25'000'000, "Mar 15 roll: $30 new, the debt paid first");

    // Mar 30: a user may not upgrade; an admin does, with (50 - 30) * 16 / 31 days = $10.322580 (rounded down).
    clock.set(day(2026, 3, 30));
    CHECK(switch_to(*l, user, "professional", false).code == result::upgrade_not_allowed);
    const auto up = switch_to(*l, user, "professional", true, "credits", "admin up-1");
    REQUIRE(up.code == result::ok);
    CHECK(up.kind == switch_kind::upgrade);
    CHECK(up.granted_micros == 10'322'580);
    const auto again = switch_to(*l, user, "professional", true, "credits", "admin up-1");
    CHECK(again.replayed);
    CHECK(again.granted_micros == 10'322'580);
    CHECK(l->find_subscription(user)->tier == "professional");
    s.at(day(2026, 3, 30), 35'322'580, "Mar 30: upgraded at once, the prorated difference granted once");

    // Apr 15: unused allocation $25 + $10.322580 = $35.322580; professional keeps 25% of $50 = $12.50; + $50.
    s.at(day(2026, 4, 15), 62'500'000, "Apr 15 roll: rollover capped at $12.50");

    clock.set(day(2026, 4, 20));
    REQUIRE(l->create_coupon({.code = "EARLYBIRD", .kind = coupon_kind::percent_off, .percent_off = 20,
                              .duration_months = 3})
                .code == result::ok);
    REQUIRE(l->redeem_coupon(user, "EARLYBIRD", "user").refusal == coupon_refusal::none);
    CHECK(l->find_subscription(user)->discount_periods_left == 3);

    clock.set(day(2026, 5, 1));
    const auto down = switch_to(*l, user, "starter", false);
    REQUIRE(down.code == result::ok);
    CHECK(down.kind == switch_kind::downgrade);
    CHECK(l->find_subscription(user)->tier == "professional");  // until the period ends
    CHECK(l->find_subscription(user)->pending_tier == "starter");
    s.at(day(2026, 5, 1), 62'500'000, "May 1: the downgrade waits for the period end");

    // May 15: professional ends: $12.50 rollover + $50 unused, keeps $12.50; starter's $30.
    s.at(day(2026, 5, 15), 42'500'000, "May 15 roll: downgraded, rollover kept once");
    CHECK(l->find_subscription(user)->tier == "starter");
    CHECK(l->find_subscription(user)->discount_periods_left == 2);

    // Jun 15: starter keeps nothing: $30 only (rollover never compounds).
    s.at(day(2026, 6, 15), 30'000'000, "Jun 15 roll");
    CHECK(l->find_subscription(user)->discount_percent == 20);
    s.at(day(2026, 7, 15), 30'000'000, "Jul 15 roll: the discount's third period is over");
    CHECK(l->find_subscription(user)->discount_percent == 0);

    // The rest of the year at once: missed boundaries roll one by one.
    s.at(day(2027, 1, 15), 30'000'000, "Jan 15 2027: six boundaries in one look");
    const auto sub = l->find_subscription(user);
    CHECK(sub->period_start_ms == day(2027, 1, 15));
    CHECK(sub->period_end_ms == day(2027, 2, 15));
    CHECK(l->roll_periods().count == 0);  // rolling again changes nothing
}

TEST_CASE("every tier through a year of monthly usage, with a coupon", "[ledger][periods]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    REQUIRE(l->create_coupon({.code = "YEAR2", .kind = coupon_kind::credit, .amount_micros = 2'000'000}).code ==
            result::ok);
    struct plan {
        const char* tier;
        std::int64_t monthly;
        int rollover_percent;
    };
    for (const plan p : {plan{"free", 10'000'000, 0}, plan{"starter", 30'000'000, 0},
                         plan{"professional", 50'000'000, 25}, plan{"enterprise", 100'000'000, 100}}) {
        INFO(p.tier);
        clock.set(test_epoch_ms);
        const auto user = l->create_user({.email = fmt::format("{}@example.com", p.tier), .tier = p.tier}).user_id;
        // Each month the user spends $4 and the rest of the allocation is either kept (up to the
        // rollover cap, counted on the monthly credits) or lost.
        std::int64_t expected = p.monthly;
        const std::int64_t cap = p.monthly * p.rollover_percent / 100;
        for (int month = 0; month < 12; ++month) {
            clock.set(l->find_subscription(user)->period_start_ms + 5 * day_ms);
            if (month == 0) {
                // $2 of bonus, spent before the allocation: none of it rolls over.
                REQUIRE(l->redeem_coupon(user, "YEAR2", "user").refusal == coupon_refusal::none);
                expected += 2'000'000;
            }
            charge(*l, user, 4'000'000, fmt::format("{}-{}", p.tier, month));
            expected -= 4'000'000;
            REQUIRE(l->get_balance(user)->balance_micros == expected);
            clock.set(l->find_subscription(user)->period_end_ms);
            // What is left is all allocation (the rollover grant included; the
            // bonus went first): keep up to the cap.
            expected = std::min(expected, cap) + p.monthly;
            REQUIRE(l->get_balance(user)->balance_micros == expected);
            require_ledger_ok(*l);
        }
    }
}

TEST_CASE("switch rules: options, no-ops, unknowns", "[ledger][periods]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto starter = l->create_user({.email = "s@example.com", .tier = "starter"}).user_id;
    const auto pro = l->create_user({.email = "p@example.com", .tier = "professional"}).user_id;
    CHECK(switch_to(*l, starter, "starter", false, "byok").code == result::option_not_available);
    CHECK(switch_to(*l, starter, "starter", false).kind == switch_kind::none);
    CHECK(switch_to(*l, starter, "platinum", true).code == result::unknown_tier);
    CHECK(switch_to(*l, 999, "starter", true).code == result::unknown_user);
    CHECK(switch_to(*l, starter, "starter", false, "cash").code == result::invalid_argument);
    // A sealed key is stored with an allowed switch only.
    CHECK(l->switch_tier({.user_id = pro, .tier = "enterprise", .option = "byok", .may_upgrade = false,
                          .sealed_byok_key = std::string("sealed-A"), .actor = "user"})
              .code == result::upgrade_not_allowed);
    CHECK_FALSE(l->byok_key(pro));
    const auto byok = l->switch_tier({.user_id = pro, .tier = "professional", .option = "byok", .may_upgrade = false,
                                      .sealed_byok_key = std::string("sealed-B"), .actor = "user"});
    CHECK(byok.kind == switch_kind::option);
    l->flush();
    CHECK(l->byok_key(pro) == "sealed-B");
    CHECK(l->find_subscription(pro)->option == "byok");
    // A downgrade to a tier without BYOK ends BYOK with the period.
    CHECK(switch_to(*l, pro, "starter", false).kind == switch_kind::downgrade);
    CHECK(l->find_subscription(pro)->option == "byok");
    clock.set(l->find_subscription(pro)->period_end_ms);
    REQUIRE(l->get_balance(pro));
    CHECK(l->find_subscription(pro)->tier == "starter");
    CHECK(l->find_subscription(pro)->option == "credits");
    // Choosing the current tier calls a scheduled downgrade off.
    const auto ent = l->create_user({.email = "e@example.com", .tier = "enterprise"}).user_id;
    REQUIRE(switch_to(*l, ent, "professional", false).kind == switch_kind::downgrade);
    CHECK(switch_to(*l, ent, "enterprise", false).kind == switch_kind::option);
    CHECK_FALSE(l->find_subscription(ent)->pending_tier);
    // An upgrade follows the overage limit of the new tier when it was the old default.
    CHECK(switch_to(*l, starter, "enterprise", true).kind == switch_kind::upgrade);
    CHECK(l->get_balance(starter)->overage_limit_micros == 100'000'000);
    require_ledger_ok(*l);
}

TEST_CASE("redemptions during a period roll: every user gets the new period and the coupon, once",
          "[ledger][periods][concurrency]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    std::vector<std::int64_t> users;
    for (int i = 0; i < 200; ++i) {
        users.push_back(l->create_user({.email = fmt::format("r{}@example.com", i), .tier = "starter"}).user_id);
    }
    REQUIRE(l->create_coupon({.code = "ROLLING", .kind = coupon_kind::credit, .amount_micros = 1'000'000}).code ==
            result::ok);
    clock.set(day(2026, 2, 15));  // every user's boundary
    std::thread roller([&] {
        for (int i = 0; i < 50; ++i) l->roll_periods();
    });
    // Catch's assertions are not thread-safe: each thread counts, the test checks after.
    std::vector<int> refused(4, 0);
    std::vector<std::thread> redeemers;
    for (int t = 0; t < 4; ++t) {
        redeemers.emplace_back([&, t] {
            for (std::size_t i = static_cast<std::size_t>(t); i < users.size(); i += 4) {
                const auto r = l->redeem_coupon(users[i], "ROLLING", "user");
                if (r.code != result::ok || r.refusal != coupon_refusal::none) ++refused[static_cast<std::size_t>(t)];
            }
        });
    }
    roller.join();
    for (auto& r : redeemers) r.join();
    CHECK(refused == std::vector<int>(4, 0));
    for (const auto u : users) {
        const auto b = l->get_balance(u);
        REQUIRE(b);
        CHECK(b->balance_micros == 31'000'000);  // the new $30, and the $1 bonus
        CHECK(l->find_subscription(u)->period_start_ms == day(2026, 2, 15));
    }
    CHECK(l->find_coupon("ROLLING")->uses == 200);
    require_ledger_ok(*l);
}

TEST_CASE("review findings: BYOK never outlives a tier without it; overage follows a downgrade; a paid trial tier stays",
          "[ledger][periods]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);

    // A trial of professional taken to BYOK ends on free, with credits.
    REQUIRE(l->create_coupon({.code = "PROMONTH", .kind = coupon_kind::free_month, .tier = "professional"}).code ==
            result::ok);
    const auto trial = l->create_user({.email = "trial@example.com", .tier = "free"}).user_id;
    REQUIRE(l->redeem_coupon(trial, "PROMONTH", "user").refusal == coupon_refusal::none);
    REQUIRE(l->switch_tier({.user_id = trial, .tier = "professional", .option = "byok", .actor = "user"}).code ==
            result::ok);
    for (int i = 0; i < 2; ++i) {
        clock.set(l->find_subscription(trial)->period_end_ms);
        REQUIRE(l->get_balance(trial));
    }
    CHECK(l->find_subscription(trial)->tier == "free");
    CHECK(l->find_subscription(trial)->option == "credits");

    // set_tier to a tier without BYOK ends it too.
    const auto pro = l->create_user({.email = "pro@example.com", .tier = "professional"}).user_id;
    REQUIRE(switch_to(*l, pro, "professional", false, "byok").code == result::ok);
    REQUIRE(l->set_tier(pro, "starter").code == result::ok);
    CHECK(l->find_subscription(pro)->option == "credits");

    // A downgrade takes the new tier's default overage limit with it.
    const auto ent = l->create_user({.email = "ent@example.com", .tier = "enterprise"}).user_id;
    CHECK(l->get_balance(ent)->overage_limit_micros == 100'000'000);
    REQUIRE(switch_to(*l, ent, "free", false).kind == switch_kind::downgrade);
    clock.set(l->find_subscription(ent)->period_end_ms);
    CHECK(l->get_balance(ent)->overage_limit_micros == 0);

    // A billing system buying the trial's own tier ends the trial: no return to free.
    REQUIRE(l->create_coupon({.code = "STARTMONTH", .kind = coupon_kind::free_month}).code == result::ok);
    const auto bought = l->create_user({.email = "bought@example.com", .tier = "free"}).user_id;
    REQUIRE(l->redeem_coupon(bought, "STARTMONTH", "user").refusal == coupon_refusal::none);
    CHECK(switch_to(*l, bought, "starter", true).kind == switch_kind::upgrade);
    CHECK_FALSE(l->find_subscription(bought)->revert_at_ms);
    for (int i = 0; i < 2; ++i) {
        clock.set(l->find_subscription(bought)->period_end_ms);
        REQUIRE(l->get_balance(bought));
    }
    CHECK(l->find_subscription(bought)->tier == "starter");

    // A tracked event naming a key the database lacks is refused, not written.
    ledger::deduct_request r;
    r.user_id = bought;
    r.amount_micros = 5;
    r.event_id = "bad-key";
    r.usage = ledger::usage_event{};
    r.usage->service = "search";
    r.usage->key_id = 999'999;
    r.allow_debt = true;
    CHECK(l->deduct(r).code == result::unknown_key);
    CHECK_FALSE(l->failed());
    require_ledger_ok(*l);
}
