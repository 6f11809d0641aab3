// The coupon engine (SPEC 3) through a real SQLite file: each kind's effect,
// the refusal reasons in their order, atomic redemption under concurrency,
// and what coupons leave on a subscription across period rolls. Each
// scenario ends with the conservation check.
#include "test_support.hpp"

#include <fmt/format.h>
#include <sqlite3.h>

#include <atomic>
#include <thread>

using namespace tollgate;
using namespace tollgate::testing;
using ledger::coupon;
using ledger::coupon_kind;
using ledger::coupon_refusal;
using ledger::result;

namespace Catch {
template <>
struct StringMaker<ledger::coupon_refusal> {
    static std::string convert(ledger::coupon_refusal r) { return std::string(ledger::to_string(r)); }
};
}  // namespace Catch

namespace {

coupon credit(std::string code, std::int64_t amount) {
    coupon c;
    c.code = std::move(code);
    c.kind = coupon_kind::credit;
    c.amount_micros = amount;
    return c;
}

std::int64_t balance(ledger::ledger& l, std::int64_t user) {
    const auto b = l.get_balance(user);
    REQUIRE(b);
    return b->balance_micros;
}

std::int64_t scalar(const std::string& path, const char* sql) {
    sqlite3* db = nullptr;
    REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
    sqlite3_stmt* s = nullptr;
    REQUIRE(sqlite3_prepare_v2(db, sql, -1, &s, nullptr) == SQLITE_OK);
    REQUIRE(sqlite3_step(s) == SQLITE_ROW);
    const auto v = sqlite3_column_int64(s, 0);
    sqlite3_finalize(s);
    sqlite3_close(db);
    return v;
}

}  // namespace

TEST_CASE("coupons are created only well-formed, codes upper-cased", "[ledger][coupons]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    CHECK(l->create_coupon(credit("welcome10", 10'000'000)).code == result::ok);
    REQUIRE(l->find_coupon("WELCOME10"));
    CHECK(l->find_coupon("Welcome10")->code == "WELCOME10");
    CHECK(l->create_coupon(credit("WELCOME10", 1)).code == result::coupon_exists);
    for (const char* bad : {"AB", "HAS SPACE", "EMOJI😀", "SEMI;COLON", "0123456789012345678901234567890123"}) {
        INFO(bad);
        CHECK(l->create_coupon(credit(bad, 1)).code == result::invalid_argument);
    }
    CHECK(l->create_coupon(credit("ZERO", 0)).code == result::invalid_argument);
    auto c = credit("NOAMOUNT", 1);
    c.amount_micros.reset();
    CHECK(l->create_coupon(c).code == result::invalid_argument);
    coupon p;
    p.code = "HALF";
    p.kind = coupon_kind::percent_off;
    p.percent_off = 101;
    p.duration_months = 3;
    CHECK(l->create_coupon(p).code == result::invalid_argument);
    p.percent_off = 50;
    p.duration_months.reset();
    CHECK(l->create_coupon(p).code == result::invalid_argument);
    p.duration_months = 3;
    p.amount_micros = 5;  // a field of another kind
    CHECK(l->create_coupon(p).code == result::invalid_argument);
    coupon f;
    f.code = "TRIAL";
    f.kind = coupon_kind::free_month;
    f.tier = "platinum";
    CHECK(l->create_coupon(f).code == result::unknown_tier);
    auto past = credit("PAST", 1);
    past.expires_at_ms = test_epoch_ms - 1;
    CHECK(l->create_coupon(past).code == result::grant_expired);
    require_ledger_ok(*l);
}

TEST_CASE("a credit coupon is a bonus grant; refusals come in SPEC order", "[ledger][coupons]") {
    temp_dir dir;
    manual_clock clock;
    const auto path = dir.file("t.db");
    auto l = open_ledger(path, clock);
    const auto a = make_user(*l, "a@example.com", "starter");
    const auto b = make_user(*l, "b@example.com", "starter");
    auto c = credit("WELCOME10", 10'000'000);
    c.credit_expires_days = 30;
    c.max_uses = 1;
    REQUIRE(l->create_coupon(c).code == result::ok);

    CHECK(l->check_coupon(a, "nope") == coupon_refusal::not_found);
    CHECK(l->check_coupon(a, "welcome10") == coupon_refusal::none);
    const auto r = l->redeem_coupon(a, "welcome10", "user:1");
    REQUIRE(r.code == result::ok);
    REQUIRE(r.refusal == coupon_refusal::none);
    REQUIRE(r.grant_id);
    CHECK(r.amount_micros == 10'000'000);
    CHECK(r.until_ms == test_epoch_ms + 30 * day_ms);
    CHECK(r.balance_micros == 40'000'000);
    CHECK(r.redeemed.uses == 1);
    CHECK(l->get_balance(a)->by_kind_micros[static_cast<int>(ledger::grant_kind::bonus)] == 10'000'000);

    CHECK(l->redeem_coupon(a, "WELCOME10", "user:1").refusal == coupon_refusal::exhausted);  // before already_redeemed
    CHECK(l->redeem_coupon(b, "WELCOME10", "user:2").refusal == coupon_refusal::exhausted);
    CHECK(balance(*l, b) == 30'000'000);

    auto twice = credit("TWICE", 1'000);
    twice.per_user_limit = 2;
    REQUIRE(l->create_coupon(twice).code == result::ok);
    CHECK(l->redeem_coupon(b, "twice", "user:2").refusal == coupon_refusal::none);
    CHECK(l->redeem_coupon(b, "twice", "user:2").refusal == coupon_refusal::none);
    CHECK(l->redeem_coupon(b, "twice", "user:2").refusal == coupon_refusal::already_redeemed);

    auto later = credit("SOON", 1'000);
    later.expires_at_ms = test_epoch_ms + day_ms;
    REQUIRE(l->create_coupon(later).code == result::ok);
    REQUIRE(l->deactivate_coupon("soon").code == result::ok);
    CHECK(l->check_coupon(a, "SOON") == coupon_refusal::inactive);  // before expired
    auto expiring = credit("LATER", 1'000);
    expiring.expires_at_ms = test_epoch_ms + day_ms;
    REQUIRE(l->create_coupon(expiring).code == result::ok);
    clock.advance(day_ms);
    CHECK(l->check_coupon(a, "LATER") == coupon_refusal::expired);
    CHECK(l->deactivate_coupon("missing").code == result::unknown_coupon);

    // The bonus expires with its coupon's days.
    clock.advance(29 * day_ms);
    CHECK(balance(*l, a) == 30'000'000);
    l->flush();
    CHECK(scalar(path, "SELECT COUNT(*) FROM coupon_redemptions") == 3);
    CHECK(scalar(path, "SELECT uses FROM coupon_codes WHERE code = 'TWICE'") == 2);
    CHECK(scalar(path, "SELECT active FROM coupon_codes WHERE code = 'SOON'") == 0);
    require_ledger_ok(*l);
}

TEST_CASE("a redemption replays by idempotency key; uses and per-user counts survive a restart", "[ledger][coupons]") {
    temp_dir dir;
    manual_clock clock;
    const auto path = dir.file("t.db");
    std::int64_t a = 0;
    {
        auto l = open_ledger(path, clock);
        a = make_user(*l, "a@example.com", "starter");
        REQUIRE(l->create_coupon(credit("ONCE", 5'000'000)).code == result::ok);
        const auto first = l->redeem_coupon(a, "once", "user:1", "user:1 k1");
        REQUIRE(first.refusal == coupon_refusal::none);
        const auto again = l->redeem_coupon(a, "ONCE", "user:1", "user:1 k1");
        CHECK(again.code == result::ok);
        CHECK(again.replayed);
        CHECK(again.redemption_id == first.redemption_id);
        CHECK(again.grant_id == first.grant_id);
        CHECK(again.balance_micros == first.balance_micros);
        CHECK(l->redeem_coupon(a, "OTHER", "user:1", "user:1 k1").code == result::idempotency_conflict);
    }
    auto l = open_ledger(path, clock);
    CHECK(l->find_coupon("ONCE")->uses == 1);
    CHECK(l->check_coupon(a, "ONCE") == coupon_refusal::already_redeemed);
    CHECK(balance(*l, a) == 35'000'000);
    require_ledger_ok(*l);
}

TEST_CASE("500 users redeeming a code with max_uses 50 at once: exactly 50", "[ledger][coupons][concurrency]") {
    temp_dir dir;
    manual_clock clock;
    const auto path = dir.file("t.db");
    auto l = open_ledger(path, clock);
    std::vector<std::int64_t> users;
    for (int i = 0; i < 500; ++i) users.push_back(make_user(*l, fmt::format("u{}@example.com", i), "free"));
    auto c = credit("RUSH", 1'000'000);
    c.max_uses = 50;
    REQUIRE(l->create_coupon(c).code == result::ok);
    std::atomic<int> granted{0}, exhausted{0}, other{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&, t] {
            for (std::size_t i = static_cast<std::size_t>(t); i < users.size(); i += 8) {
                const auto r = l->redeem_coupon(users[i], "rush", "test");
                if (r.code == result::ok && r.refusal == coupon_refusal::none) ++granted;
                else if (r.refusal == coupon_refusal::exhausted) ++exhausted;
                else ++other;
            }
        });
    }
    for (auto& t : threads) t.join();
    CHECK(granted == 50);
    CHECK(exhausted == 450);
    CHECK(other == 0);
    CHECK(l->find_coupon("RUSH")->uses == 50);
    l->flush();
    CHECK(scalar(path, "SELECT COUNT(*) FROM coupon_redemptions WHERE code = 'RUSH'") == 50);
    CHECK(scalar(path, "SELECT COUNT(*) FROM credit_grants WHERE source = 'coupon'") == 50);
    require_ledger_ok(*l);
}

TEST_CASE("percent_off: one discount at a time, for its periods, the current one first", "[ledger][coupons]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto paid = make_user(*l, "paid@example.com", "starter");
    const auto free = make_user(*l, "free@example.com", "free");
    coupon p;
    p.code = "EARLYBIRD";
    p.kind = coupon_kind::percent_off;
    p.percent_off = 20;
    p.duration_months = 3;
    p.per_user_limit = 5;
    REQUIRE(l->create_coupon(p).code == result::ok);
    CHECK(l->check_coupon(free, "EARLYBIRD") == coupon_refusal::not_applicable);  // no price to discount
    const auto r = l->redeem_coupon(paid, "EARLYBIRD", "user:1");
    REQUIRE(r.refusal == coupon_refusal::none);
    CHECK_FALSE(r.grant_id);
    auto sub = l->find_subscription(paid);
    REQUIRE(sub);
    CHECK(sub->discount_percent == 20);
    CHECK(sub->discount_periods_left == 3);
    CHECK(r.until_ms == test_epoch_ms + (31 + 28 + 31) * day_ms);  // the end of the third period (Jan 15 -> Apr 15)
    CHECK(l->check_coupon(paid, "EARLYBIRD") == coupon_refusal::not_applicable);  // one at a time
    for (int period = 2; period <= 4; ++period) {
        clock.set(l->find_subscription(paid)->period_end_ms);
        REQUIRE(l->get_balance(paid));  // rolls the period
        sub = l->find_subscription(paid);
        INFO("period " << period);
        CHECK(sub->discount_percent == (period <= 3 ? 20 : 0));
        CHECK(sub->discount_periods_left == 4 - period);
    }
    CHECK(l->check_coupon(paid, "EARLYBIRD") == coupon_refusal::none);  // over: another may start
    require_ledger_ok(*l);
}

TEST_CASE("free_month: a paid tier's next period is waived", "[ledger][coupons]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto u = make_user(*l, "pro@example.com", "professional");
    coupon f;
    f.code = "FREEMONTH";
    f.kind = coupon_kind::free_month;
    REQUIRE(l->create_coupon(f).code == result::ok);
    const auto r = l->redeem_coupon(u, "FREEMONTH", "user:1");
    REQUIRE(r.refusal == coupon_refusal::none);
    CHECK_FALSE(r.grant_id);
    CHECK(balance(*l, u) == 50'000'000);  // no credits: the price is what is waived
    auto sub = l->find_subscription(u);
    CHECK(sub->waive_next_period);
    CHECK_FALSE(sub->period_waived);
    clock.set(sub->period_end_ms);
    REQUIRE(l->get_balance(u));
    sub = l->find_subscription(u);
    CHECK(sub->period_waived);
    CHECK_FALSE(sub->waive_next_period);
    CHECK(sub->tier == "professional");
    clock.set(sub->period_end_ms);
    REQUIRE(l->get_balance(u));
    CHECK_FALSE(l->find_subscription(u)->period_waived);
    require_ledger_ok(*l);
}

TEST_CASE("free_month on the free tier: starter now with its full credits, one more period, then free again",
          "[ledger][coupons]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto u = make_user(*l, "free@example.com", "free");  // $10
    coupon f;
    f.code = "FREEMONTH";
    f.kind = coupon_kind::free_month;
    f.per_user_limit = 3;
    REQUIRE(l->create_coupon(f).code == result::ok);
    clock.advance(10 * day_ms);  // not at the start of the period: no proration all the same
    const auto r = l->redeem_coupon(u, "FREEMONTH", "user:1");
    REQUIRE(r.refusal == coupon_refusal::none);
    REQUIRE(r.grant_id);
    CHECK(r.amount_micros == 30'000'000);
    CHECK(balance(*l, u) == 40'000'000);
    auto sub = l->find_subscription(u);
    CHECK(sub->tier == "starter");
    CHECK(sub->revert_tier == "free");
    CHECK(sub->period_waived);  // the trial costs nothing, this period and the next
    CHECK(sub->waive_next_period);
    const auto first_end = sub->period_end_ms;
    CHECK(sub->revert_at_ms == test_epoch_ms + (31 + 28) * day_ms);  // Mar 15: one full period after Feb 15
    CHECK(l->check_coupon(u, "FREEMONTH") == coupon_refusal::not_applicable);  // one trial at a time

    clock.set(first_end);  // Feb 15: a full starter period, starter's credits
    REQUIRE(l->get_balance(u));
    sub = l->find_subscription(u);
    CHECK(sub->tier == "starter");
    CHECK(sub->period_waived);
    CHECK(balance(*l, u) == 30'000'000);  // the allocations expired, the new one granted

    clock.set(sub->period_end_ms);  // Mar 15: back to free, free's credits
    REQUIRE(l->get_balance(u));
    sub = l->find_subscription(u);
    CHECK(sub->tier == "free");
    CHECK_FALSE(sub->revert_at_ms);
    CHECK_FALSE(sub->period_waived);
    CHECK(balance(*l, u) == 10'000'000);
    require_ledger_ok(*l);
}

TEST_CASE("an upgrade during a free-month trial keeps the new tier", "[ledger][coupons]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto u = make_user(*l, "free@example.com", "free");
    coupon f;
    f.code = "FREEMONTH";
    f.kind = coupon_kind::free_month;
    REQUIRE(l->create_coupon(f).code == result::ok);
    REQUIRE(l->redeem_coupon(u, "FREEMONTH", "user:1").refusal == coupon_refusal::none);
    REQUIRE(l->set_tier(u, "professional").code == result::ok);
    for (int i = 0; i < 3; ++i) {
        clock.set(l->find_subscription(u)->period_end_ms);
        REQUIRE(l->get_balance(u));
    }
    CHECK(l->find_subscription(u)->tier == "professional");
    require_ledger_ok(*l);
}
