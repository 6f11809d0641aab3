// Every ledger operation through a real SQLite file. Each scenario ends with
// the conservation check.
#include "test_support.hpp"

#include <fmt/format.h>
#include <sqlite3.h>

#include <future>
#include <limits>

using namespace tollgate;
using namespace tollgate::testing;
using ledger::grant_kind;
using ledger::result;

namespace {

ledger::balance balance_of(ledger::ledger& l, std::int64_t user) {
    const auto b = l.get_balance(user);
    REQUIRE(b);
    return *b;
}

std::int64_t grant(ledger::ledger& l, std::int64_t user, grant_kind kind, std::int64_t amount,
                   std::optional<ledger::time_ms> expires = std::nullopt) {
    const auto r = l.grant({.user_id = user, .kind = kind, .amount_micros = amount, .expires_at_ms = expires});
    REQUIRE(r.code == result::ok);
    return r.grant_id;
}

// Grants a charge touched, in order, with the amount each gave.
std::vector<std::pair<std::int64_t, std::int64_t>> draws_of(ledger::ledger& l, std::int64_t user,
                                                            std::int64_t usage_event_id) {
    l.flush();
    std::vector<std::pair<std::int64_t, std::int64_t>> out;
    const auto page = l.transactions({.user_id = user, .limit = 200});
    for (auto it = page.rows.rbegin(); it != page.rows.rend(); ++it) {
        if (it->usage_event_id == usage_event_id && (it->type == "charge" || it->type == "deduct"))
            out.emplace_back(*it->grant_id, -it->amount_micros);
    }
    return out;
}

std::int64_t charge(ledger::ledger& l, std::int64_t user, std::int64_t amount, const std::string& request) {
    const auto hold = l.reserve(user, std::max<std::int64_t>(amount, 1), request);
    REQUIRE(hold.code == result::ok);
    const auto settled = l.settle(hold.hold_id, amount, {.model = "m"});
    REQUIRE(settled.code == result::ok);
    return settled.usage_event_id;
}

}  // namespace

TEST_CASE("a new user starts a period with the tier's monthly credits", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto free_user = make_user(*l, "free@example.com", "free");
    const auto ent_user = make_user(*l, "ent@example.com", "enterprise");

    auto b = balance_of(*l, free_user);
    CHECK(b.balance_micros == 10'000'000);
    CHECK(b.by_kind_micros[int(grant_kind::allocated)] == 10'000'000);
    CHECK(b.overage_limit_micros == 0);
    CHECK(b.available_micros == 10'000'000);

    b = balance_of(*l, ent_user);
    CHECK(b.balance_micros == 100'000'000);
    CHECK(b.overage_limit_micros == 100'000'000);
    CHECK(b.available_micros == 200'000'000);

    const auto sub = l->find_subscription(free_user);
    REQUIRE(sub);
    CHECK(sub->tier == "free");
    CHECK(sub->period_start_ms == test_epoch_ms);
    CHECK(sub->period_end_ms == test_epoch_ms + 31 * day_ms);  // Jan 15 -> Feb 15

    CHECK(l->create_user({.email = "free@example.com"}).code == result::user_exists);
    CHECK(l->create_user({.email = "x@example.com", .tier = "platinum"}).code == result::unknown_tier);
    CHECK(l->create_user({.email = ""}).code == result::invalid_argument);
    require_ledger_ok(*l);
}

TEST_CASE("reserve admits only what available covers, settle charges and releases the rest", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "free");  // $10

    const auto h1 = l->reserve(user, 6'000'000, "r1");
    REQUIRE(h1.code == result::ok);
    CHECK(h1.available_micros == 4'000'000);
    const auto h2 = l->reserve(user, 4'000'001, "r2");
    CHECK(h2.code == result::insufficient_credits);
    CHECK(h2.available_micros == 4'000'000);
    CHECK(l->reserve(user, 4'000'000, "r1").code == result::duplicate_request);
    const auto h3 = l->reserve(user, 4'000'000, "r3");
    REQUIRE(h3.code == result::ok);
    CHECK(balance_of(*l, user).available_micros == 0);

    const auto s1 = l->settle(h1.hold_id, 1'234'567, {.model = "openai/gpt-4o", .prompt_tokens = 10});
    REQUIRE(s1.code == result::ok);
    CHECK(s1.charged_micros == 1'234'567);
    CHECK(s1.balance_micros == 10'000'000 - 1'234'567);
    auto b = balance_of(*l, user);
    CHECK(b.reserved_micros == 4'000'000);
    CHECK(b.available_micros == 10'000'000 - 1'234'567 - 4'000'000);

    CHECK(l->settle(h1.hold_id, 1, {}).code == result::hold_closed);
    CHECK(l->release(h1.hold_id).code == result::hold_closed);
    CHECK(l->settle(999'999, 1, {}).code == result::unknown_hold);
    REQUIRE(l->release(h3.hold_id).code == result::ok);
    b = balance_of(*l, user);
    CHECK(b.reserved_micros == 0);
    CHECK(b.available_micros == 10'000'000 - 1'234'567);

    CHECK(l->reserve(user, 0, "z").code == result::invalid_amount);
    CHECK(l->reserve(user, -5, "z").code == result::invalid_amount);
    CHECK(l->reserve(user, ledger::max_amount_micros + 1, "z").code == result::invalid_amount);
    CHECK(l->reserve(4242, 5, "z").code == result::unknown_user);
    CHECK(l->reserve(user, 5, "").code == result::invalid_argument);
    CHECK(l->open_hold_count() == 0);
    require_ledger_ok(*l);
}

TEST_CASE("a charge is never capped by its hold: the excess becomes debt", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "free");  // $10, no overage
    const auto hold = l->reserve(user, 1'000'000, "r");
    REQUIRE(hold.code == result::ok);
    const auto s = l->settle(hold.hold_id, 12'500'000, {.model = "m"});
    REQUIRE(s.code == result::ok);
    auto b = balance_of(*l, user);
    CHECK(b.balance_micros == -2'500'000);
    CHECK(b.debt_micros == 2'500'000);
    CHECK(b.available_micros == -2'500'000);
    CHECK(l->reserve(user, 1, "r2").code == result::insufficient_credits);

    // The next grant pays the debt first.
    const auto g = grant(*l, user, grant_kind::purchased, 3'000'000);
    b = balance_of(*l, user);
    CHECK(b.debt_micros == 0);
    CHECK(b.balance_micros == 500'000);
    CHECK(b.by_kind_micros[int(grant_kind::purchased)] == 500'000);
    l->flush();
    const auto page = l->transactions({.user_id = user, .limit = 10});
    REQUIRE(page.rows.size() >= 2);
    CHECK(page.rows[0].type == "debt");
    CHECK(page.rows[0].amount_micros == 0);
    CHECK(page.rows[0].debt_delta_micros == -2'500'000);
    CHECK(page.rows[0].grant_id == g);
    CHECK(page.rows[1].type == "grant");
    CHECK(page.rows[1].amount_micros == 3'000'000);
    CHECK(page.rows[1].balance_after_micros == 500'000);
    require_ledger_ok(*l);
}

TEST_CASE("overage limit extends admission", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "free");
    REQUIRE(l->set_overage_limit(user, 5'000'000).code == result::ok);
    CHECK(l->reserve(user, 15'000'001, "big").code == result::insufficient_credits);
    const auto h = l->reserve(user, 15'000'000, "ok");
    REQUIRE(h.code == result::ok);
    REQUIRE(l->settle(h.hold_id, 15'000'000, {}).code == result::ok);
    const auto b = balance_of(*l, user);
    CHECK(b.balance_micros == -5'000'000);
    CHECK(b.debt_micros == 5'000'000);
    CHECK(b.available_micros == 0);
    CHECK(l->set_overage_limit(user, -1).code == result::invalid_amount);
    CHECK(l->set_overage_limit(99, 1).code == result::unknown_user);
    require_ledger_ok(*l);
}

TEST_CASE("draw-down order: priority, then earliest expiry, then creation, then id", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "free");  // allocated $10 expiring at period end
    const auto allocated = l->transactions({.user_id = user, .limit = 1});
    l->flush();
    const auto alloc_grant = *l->transactions({.user_id = user, .limit = 1}).rows.at(0).grant_id;
    (void)allocated;

    const auto end = test_epoch_ms + 31 * day_ms;
    const auto purchased = grant(*l, user, grant_kind::purchased, 1'000'000);
    clock.advance(1000);
    const auto bonus_never = grant(*l, user, grant_kind::bonus, 1'000'000);
    clock.advance(1000);
    const auto bonus_late = grant(*l, user, grant_kind::bonus, 1'000'000, end);
    clock.advance(1000);
    const auto bonus_early = grant(*l, user, grant_kind::bonus, 1'000'000, end - day_ms);
    const auto bonus_early_twin = grant(*l, user, grant_kind::bonus, 1'000'000, end - day_ms);  // same time: by id
    clock.advance(1000);
    const auto refund_grant = [&] {
        const auto ev = charge(*l, user, 700'000, "to-refund");
        const auto r = l->refund({.user_id = user, .amount_micros = 500'000, .usage_event_id = ev, .reason = "bad"});
        REQUIRE(r.code == result::ok);
        return r.grant_id;
    }();

    // That charge of 0.7 came from the first bonus in order: bonus_early.
    // Now take 0.5 (refund) + 0.3 (rest of bonus_early) + 1 (twin) + 1 (late)
    // + 1 (never) + 10 (allocated) + 0.2 (purchased).
    const auto ev = charge(*l, user, 14'000'000, "big");
    const auto touched = draws_of(*l, user, ev);
    const std::vector<std::pair<std::int64_t, std::int64_t>> expected = {
        {refund_grant, 500'000}, {bonus_early, 300'000}, {bonus_early_twin, 1'000'000}, {bonus_late, 1'000'000},
        {bonus_never, 1'000'000}, {alloc_grant, 10'000'000}, {purchased, 200'000}};
    CHECK(touched == expected);
    const auto b = balance_of(*l, user);
    CHECK(b.balance_micros == 800'000);
    CHECK(b.by_kind_micros[int(grant_kind::purchased)] == 800'000);
    CHECK(b.by_kind_micros[int(grant_kind::bonus)] == 0);
    require_ledger_ok(*l);
}

TEST_CASE("grants: custom priority, expiry in the past, bad amounts", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "free");
    const auto first = l->grant({.user_id = user, .kind = grant_kind::purchased, .amount_micros = 100, .priority = 1});
    REQUIRE(first.code == result::ok);
    const auto ev = charge(*l, user, 60, "r");
    CHECK(draws_of(*l, user, ev) == std::vector<std::pair<std::int64_t, std::int64_t>>{{first.grant_id, 60}});

    CHECK(l->grant({.user_id = user, .amount_micros = 5, .expires_at_ms = clock.now->load()}).code ==
          result::grant_expired);
    CHECK(l->grant({.user_id = user, .amount_micros = 0}).code == result::invalid_amount);
    CHECK(l->grant({.user_id = user, .amount_micros = -1}).code == result::invalid_amount);
    CHECK(l->grant({.user_id = user, .amount_micros = ledger::max_amount_micros + 1}).code == result::invalid_amount);
    CHECK(l->grant({.user_id = 77, .amount_micros = 5}).code == result::unknown_user);
    CHECK(l->grant({.user_id = user, .amount_micros = 5, .reason = std::string(5000, 'x')}).code ==
          result::invalid_argument);
    require_ledger_ok(*l);
}

TEST_CASE("grants expire: lazily on use and by the sweep", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto a = make_user(*l, "a@example.com", "free");
    const auto b = make_user(*l, "b@example.com", "free");
    grant(*l, a, grant_kind::bonus, 2'000'000, test_epoch_ms + day_ms);
    grant(*l, b, grant_kind::bonus, 3'000'000, test_epoch_ms + day_ms);
    CHECK(balance_of(*l, a).balance_micros == 12'000'000);

    clock.advance(day_ms);
    // Admission never counts an expired grant.
    CHECK(l->reserve(a, 10'000'001, "r").code == result::insufficient_credits);
    // Reading a balance applies its due expiry: balance, available and
    // by_kind agree.
    const auto after = balance_of(*l, a);
    CHECK(after.balance_micros == 10'000'000);
    CHECK(after.by_kind_micros[int(grant_kind::bonus)] == 0);
    CHECK(after.available_micros == 10'000'000);

    const auto swept = l->expire_grants();
    CHECK(swept.count == 1);  // only b's grant was still in the book
    CHECK(balance_of(*l, b).balance_micros == 10'000'000);
    CHECK(l->expire_grants().count == 0);
    l->flush();
    const auto rows = l->transactions({.user_id = b, .type = "expire"}).rows;
    REQUIRE(rows.size() == 1);
    CHECK(rows[0].amount_micros == -3'000'000);
    CHECK(rows[0].kind == grant_kind::bonus);
    require_ledger_ok(*l);
}

TEST_CASE("holds expire after their time to live", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "free");
    const auto h = l->reserve(user, 3'000'000, "r");
    REQUIRE(h.code == result::ok);
    clock.advance(15 * 60 * 1000 - 1);
    CHECK(l->expire_holds().count == 0);
    clock.advance(1);
    CHECK(l->expire_holds().count == 1);
    CHECK(balance_of(*l, user).reserved_micros == 0);
    CHECK(l->release(h.hold_id).code == result::hold_closed);
    require_ledger_ok(*l);
}

TEST_CASE("refunds are refund grants linked to the charge and never exceed it", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "free");
    const auto other = make_user(*l, "b@example.com", "free");
    const auto ev = charge(*l, user, 1'000'000, "r");
    l->flush();
    const auto charge_txn = l->transactions({.user_id = user, .limit = 1}).rows.at(0).id;

    auto r1 = l->refund({.user_id = user, .amount_micros = 600'000, .usage_event_id = ev, .reason = "partial"});
    REQUIRE(r1.code == result::ok);
    CHECK(r1.balance_micros == 9'600'000);
    CHECK(l->refund({.user_id = user, .amount_micros = 400'001, .transaction_id = charge_txn}).code ==
          result::refund_exceeds_charge);
    auto r2 = l->refund({.user_id = user, .amount_micros = 400'000, .transaction_id = charge_txn});
    REQUIRE(r2.code == result::ok);
    CHECK(l->refund({.user_id = user, .amount_micros = 1, .usage_event_id = ev}).code ==
          result::refund_exceeds_charge);
    CHECK(l->refund({.user_id = other, .amount_micros = 1, .usage_event_id = ev}).code == result::unknown_charge);
    CHECK(l->refund({.user_id = user, .amount_micros = 1, .usage_event_id = 12345}).code == result::unknown_charge);
    CHECK(l->refund({.user_id = user, .amount_micros = 1}).code == result::invalid_argument);
    CHECK(l->refund({.user_id = user, .amount_micros = 0, .usage_event_id = ev}).code == result::invalid_amount);
    const auto b = balance_of(*l, user);
    CHECK(b.balance_micros == 10'000'000);
    CHECK(b.by_kind_micros[int(grant_kind::refund)] == 1'000'000);
    require_ledger_ok(*l);
}

TEST_CASE("idempotency keys replay the first result and refuse a different request", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "free");
    const ledger::grant_request req{.user_id = user, .kind = grant_kind::purchased, .amount_micros = 5'000'000,
                                    .reason = "top-up", .idempotency_key = "admin:k1"};
    const auto first = l->grant(req);
    REQUIRE(first.code == result::ok);
    CHECK_FALSE(first.replayed);
    const auto again = l->grant(req);
    REQUIRE(again.code == result::ok);
    CHECK(again.replayed);
    CHECK(again.grant_id == first.grant_id);
    CHECK(again.transaction_id == first.transaction_id);
    CHECK(again.balance_micros == first.balance_micros);
    auto changed = req;
    changed.amount_micros = 5'000'001;
    CHECK(l->grant(changed).code == result::idempotency_conflict);
    CHECK(balance_of(*l, user).balance_micros == 15'000'000);

    // deduct: the event id is unique forever.
    const ledger::deduct_request d{.user_id = user, .amount_micros = 2'000'000, .event_id = "ev-1", .reason = "search"};
    const auto d1 = l->deduct(d);
    REQUIRE(d1.code == result::ok);
    const auto d2 = l->deduct(d);
    REQUIRE(d2.code == result::ok);
    CHECK(d2.replayed);
    CHECK(d2.usage_event_id == d1.usage_event_id);
    CHECK(d2.first_transaction_id == d1.first_transaction_id);
    auto d_changed = d;
    d_changed.amount_micros = 1;
    CHECK(l->deduct(d_changed).code == result::idempotency_conflict);
    CHECK(balance_of(*l, user).balance_micros == 13'000'000);

    // refund with a key
    const ledger::refund_request rr{.user_id = user, .amount_micros = 500'000, .usage_event_id = d1.usage_event_id,
                                    .idempotency_key = "admin:r1"};
    const auto r1 = l->refund(rr);
    REQUIRE(r1.code == result::ok);
    const auto r2 = l->refund(rr);
    CHECK(r2.replayed);
    CHECK(r2.grant_id == r1.grant_id);
    CHECK(balance_of(*l, user).balance_micros == 13'500'000);

    // Replays survive a restart.
    l.reset();
    l = open_ledger(dir.file("t.db"), clock);
    CHECK(l->grant(req).replayed);
    CHECK(l->deduct(d).replayed);
    CHECK(l->grant(changed).code == result::idempotency_conflict);
    CHECK(balance_of(*l, user).balance_micros == 13'500'000);
    require_ledger_ok(*l);
}

TEST_CASE("deduct is refused when available does not cover it", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "free");
    const auto h = l->reserve(user, 9'000'000, "r");
    REQUIRE(h.code == result::ok);
    const auto d = l->deduct({.user_id = user, .amount_micros = 1'000'001, .event_id = "e1"});
    CHECK(d.code == result::insufficient_credits);
    CHECK(d.available_micros == 1'000'000);
    CHECK(l->deduct({.user_id = user, .amount_micros = 1'000'000, .event_id = "e1"}).code == result::ok);
    CHECK(l->deduct({.user_id = user, .amount_micros = 1, .event_id = ""}).code == result::invalid_argument);
    CHECK(l->deduct({.user_id = 99, .amount_micros = 1, .event_id = "e9"}).code == result::unknown_user);
    require_ledger_ok(*l);
}

TEST_CASE("transaction history pages newest first with stable cursors and filters", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "free");
    for (int i = 0; i < 25; ++i) {
        clock.advance(1000);
        grant(*l, user, grant_kind::bonus, 1000 + i);
    }
    l->flush();
    std::vector<std::int64_t> seen;
    std::optional<std::int64_t> cursor;
    int pages = 0;
    do {
        const auto page = l->transactions({.user_id = user, .after_id = cursor, .limit = 7});
        for (const auto& t : page.rows) seen.push_back(t.id);
        cursor = page.next_cursor;
        ++pages;
        // A grant arriving between pages does not shift the next page.
        if (pages == 1) grant(*l, user, grant_kind::bonus, 1), l->flush();
    } while (cursor);
    CHECK(pages == 4);
    REQUIRE(seen.size() == 26);  // 25 bonuses + the first period's allocation
    CHECK(std::is_sorted(seen.rbegin(), seen.rend()));
    CHECK(l->transactions({.user_id = user, .type = "grant", .from_ms = test_epoch_ms + 5000,
                           .to_ms = test_epoch_ms + 10'000}).rows.size() == 5);
    CHECK(l->transactions({.user_id = user, .limit = 1000}).rows.size() == 27);  // clamped to 200: all 27 fit
    require_ledger_ok(*l);
}

TEST_CASE("period roll: rollover capped at the tier's share, never compounding", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto pro = make_user(*l, "pro@example.com", "professional");  // $50, 25% rollover = $12.5 cap
    const auto free_user = make_user(*l, "free@example.com", "free");     // 0% rollover
    const auto bonus = grant(*l, pro, grant_kind::bonus, 1'000'000);
    (void)bonus;
    charge(*l, pro, 41'000'000, "use-1");  // 1 from the bonus, 40 from the allocation: $10 unused

    clock.set(test_epoch_ms + 31 * day_ms);  // Feb 15: the boundary
    const auto rolled = l->roll_periods();
    CHECK(rolled.count == 2);
    auto b = balance_of(*l, pro);
    CHECK(b.balance_micros == 10'000'000 + 50'000'000);  // all $10 kept (below the cap)
    CHECK(b.by_kind_micros[int(grant_kind::allocated)] == 60'000'000);
    CHECK(balance_of(*l, free_user).balance_micros == 10'000'000);  // nothing rolls over on free
    auto sub = l->find_subscription(pro);
    CHECK(sub->period_start_ms == test_epoch_ms + 31 * day_ms);
    CHECK(sub->period_end_ms == test_epoch_ms + (31 + 28) * day_ms);  // Mar 15

    // Use nothing for a period: $60 unused, but only $12.5 (25% of $50) rolls.
    clock.set(test_epoch_ms + (31 + 28) * day_ms);
    CHECK(l->roll_periods().count == 2);
    b = balance_of(*l, pro);
    CHECK(b.balance_micros == 12'500'000 + 50'000'000);
    // Rolling again at the same time changes nothing.
    CHECK(l->roll_periods().count == 0);
    CHECK(balance_of(*l, pro).balance_micros == 62'500'000);

    // Missed boundaries are rolled one by one: three months later.
    clock.set(test_epoch_ms + (31 + 28 + 31 + 30 + 31) * day_ms);  // Jun 15
    CHECK(l->roll_periods().count == 6);
    CHECK(balance_of(*l, pro).balance_micros == 62'500'000);
    CHECK(l->find_subscription(pro)->period_end_ms == test_epoch_ms + (31 + 28 + 31 + 30 + 31 + 30) * day_ms);
    require_ledger_ok(*l);
}

TEST_CASE("period roll pays debt from the new allocation; enterprise keeps everything", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto ent = make_user(*l, "e@example.com", "enterprise");  // $100, 100% rollover, $100 overage
    charge(*l, ent, 30'000'000, "a");
    const auto free_user = make_user(*l, "f@example.com", "free");
    const auto h = l->reserve(free_user, 1'000'000, "f");
    REQUIRE(l->settle(h.hold_id, 13'000'000, {}).code == result::ok);  // $3 of debt
    clock.set(test_epoch_ms + 31 * day_ms + 5);
    // A call after the boundary rolls the user's period first.
    const auto h2 = l->reserve(free_user, 7'000'000, "f2");
    REQUIRE(h2.code == result::ok);
    auto b = balance_of(*l, free_user);
    CHECK(b.debt_micros == 0);
    CHECK(b.balance_micros == 7'000'000);
    l->release(h2.hold_id);
    CHECK(l->roll_periods().count == 1);  // only the enterprise user was still due
    b = balance_of(*l, ent);
    CHECK(b.balance_micros == 170'000'000);  // $70 unused (cap $100) + $100
    require_ledger_ok(*l);
}

TEST_CASE("anchors on the 31st clamp to the month's last day without drifting", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    clock.set(1769817600000);  // 2026-01-31T00:00:00Z
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "free");
    CHECK(l->find_subscription(user)->period_end_ms == 1772236800000);  // 2026-02-28
    clock.set(1772236800000);
    l->roll_periods();
    CHECK(l->find_subscription(user)->period_end_ms == 1774915200000);  // 2026-03-31
    clock.set(1774915200000);
    l->roll_periods();
    CHECK(l->find_subscription(user)->period_end_ms == 1777507200000);  // 2026-04-30
    require_ledger_ok(*l);
}

TEST_CASE("keys are stored by hash and can be revoked", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "free");
    const std::string hash("\x01\x02\x00\xff", 4);
    const auto created = l->create_key({.user_id = user, .key_hash = hash, .key_prefix = "tg_abcd", .name = "ci"});
    REQUIRE(created.code == result::ok);
    const auto id = created.key_id;
    const auto found = l->find_key_by_hash(hash);
    REQUIRE(found);
    CHECK(found->id == id);
    CHECK(found->user_id == user);
    CHECK(found->rpm_limit == 600);
    CHECK_FALSE(found->revoked_at_ms);
    CHECK_FALSE(l->find_key_by_hash("nope"));
    CHECK(l->create_key({.user_id = 999, .key_hash = "h"}).code == result::unknown_user);
    CHECK(l->create_key({.user_id = user, .key_hash = ""}).code == result::invalid_argument);
    CHECK(l->create_key({.user_id = user, .key_hash = "h2", .kind = "root"}).code == result::invalid_argument);
    CHECK(l->create_key({.user_id = user, .key_hash = hash}).code == result::key_exists);
    const auto revoked = l->revoke_key(id);
    REQUIRE(revoked.code == result::ok);
    REQUIRE(l->wait_durable(revoked.seq));
    CHECK(l->find_key_by_hash(hash)->revoked_at_ms == clock.now->load());
    CHECK(l->list_keys(user).size() == 1);
    CHECK(l->revoke_key(12345).code == result::unknown_key);
    require_ledger_ok(*l);
}

TEST_CASE("settings are opaque bytes kept across restarts", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    const std::string value("\x00\x01hash\xff", 7);
    {
        auto l = open_ledger(dir.file("t.db"), clock);
        CHECK_FALSE(l->setting("admin_token_hash"));
        CHECK(l->put_setting("", "x").code == result::invalid_argument);
        const auto put = l->put_setting("admin_token_hash", "first");
        REQUIRE(put.code == result::ok);
        const auto replaced = l->put_setting("admin_token_hash", value);
        REQUIRE(l->wait_durable(replaced.seq));
        CHECK(l->setting("admin_token_hash") == value);
        require_ledger_ok(*l);
    }
    auto l = open_ledger(dir.file("t.db"), clock);
    CHECK(l->setting("admin_token_hash") == value);
    CHECK_FALSE(l->setting("other"));
    require_ledger_ok(*l);
}

TEST_CASE("state survives reopening; orphaned holds are released and audited", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    const auto path = dir.file("t.db");
    std::int64_t user = 0;
    {
        auto l = open_ledger(path, clock);
        user = make_user(*l, "a@example.com", "free");
        charge(*l, user, 2'500'000, "done");
        const auto open = l->reserve(user, 4'000'000, "in-flight");
        REQUIRE(open.code == result::ok);
        REQUIRE(l->wait_durable(open.seq));
    }
    auto l = open_ledger(path, clock);
    CHECK(l->orphaned_holds_released() == 1);
    {
        // The release is in the audit log, naming the hold and its request.
        sqlite3* db = nullptr;
        REQUIRE(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) == SQLITE_OK);
        sqlite3_stmt* s = nullptr;
        REQUIRE(sqlite3_prepare_v2(db, "SELECT actor, action, detail FROM admin_audit", -1, &s, nullptr) == SQLITE_OK);
        REQUIRE(sqlite3_step(s) == SQLITE_ROW);
        CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(s, 1))) == "hold.orphan_released");
        CHECK(std::string(reinterpret_cast<const char*>(sqlite3_column_text(s, 2))).find("in-flight") !=
              std::string::npos);
        CHECK(sqlite3_step(s) == SQLITE_DONE);
        sqlite3_finalize(s);
        sqlite3_close(db);
    }
    const auto b = balance_of(*l, user);
    CHECK(b.balance_micros == 7'500'000);
    CHECK(b.reserved_micros == 0);
    CHECK(l->reserve(user, 7'500'000, "again").code == result::ok);
    require_ledger_ok(*l);
}

TEST_CASE("one writer: a second open and migrate refuse while the lock is held", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    const auto path = dir.file("t.db");
    auto l = open_ledger(path, clock);
    auto second = ledger::ledger::open({.path = path});
    CHECK_FALSE(second.value);
    CHECK(second.error == ledger::open_error::locked);
    CHECK(second.message.find("in use") != std::string::npos);
    CHECK(ledger::migrate(path).error == ledger::open_error::locked);
    // check-ledger is read-only and works beside the live writer.
    make_user(*l, "a@example.com", "free");
    l->flush();
    CHECK(ledger::check_database(path).ok);
    l.reset();
    const auto m = ledger::migrate(path);
    CHECK(m.error == ledger::open_error::none);
    CHECK(m.from_version == ledger::schema_version_of_binary());
    CHECK(m.to_version == m.from_version);
}

TEST_CASE("usage events roll up by day, service and model; summaries read the rollups", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "starter");
    const auto settle = [&](const char* service, const char* model, std::int64_t cost, std::int64_t prompt) {
        const auto h = l->reserve(user, 1000, fmt::format("r{}", clock.now->load()));
        REQUIRE(h.code == result::ok);
        const auto s = l->settle(h.hold_id, cost,
                                 {.service = service, .model = model, .prompt_tokens = prompt, .completion_tokens = 2,
                                  .provider_cost_micros = cost - 1, .markup_micros = 1});
        REQUIRE(s.code == result::ok);
        clock.advance(1);
        return s.usage_event_id;
    };
    const auto ev = settle("chat", "a", 100, 10);
    settle("chat", "b", 200, 20);
    settle("search", "", 1000, 0);
    clock.advance(day_ms);  // 2026-01-16
    settle("chat", "a", 50, 5);
    REQUIRE(l->refund({.user_id = user, .amount_micros = 30, .usage_event_id = ev}).code == result::ok);

    const auto both = l->summarize_usage(user, "2026-01-15", "2026-01-16");
    CHECK(both.total.requests == 4);
    CHECK(both.total.charged_micros == 1350);
    CHECK(both.total.provider_cost_micros == 1346);
    CHECK(both.total.markup_micros == 4);
    CHECK(both.total.prompt_tokens == 35);
    CHECK(both.total.completion_tokens == 8);
    CHECK(both.total.refunded_micros == 30);
    REQUIRE(both.by_service.size() == 2);
    CHECK(both.by_service[0].first == "chat");
    CHECK(both.by_service[0].second.charged_micros == 350);
    CHECK(both.by_service[1].first == "search");
    CHECK(both.by_service[1].second.requests == 1);
    const auto first_day = l->summarize_usage(user, "2026-01-15", "2026-01-15");
    CHECK(first_day.total.requests == 3);
    CHECK(first_day.total.refunded_micros == 0);  // refunds count on the day they happen
    CHECK(l->summarize_usage(user, "2026-02-01", "2026-02-28").total.requests == 0);
    CHECK(l->stats().commits > 0);
    require_ledger_ok(*l);
}

TEST_CASE("a call that outlives its hold is still charged in full", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "free");
    const auto h = l->reserve(user, 1'000'000, "slow");
    REQUIRE(h.code == result::ok);
    clock.advance(16 * 60 * 1000);
    CHECK(l->expire_holds().count == 1);
    CHECK(balance_of(*l, user).reserved_micros == 0);
    const auto s = l->settle(h.hold_id, 2'500'000, {.model = "m"});
    REQUIRE(s.code == result::ok);
    CHECK(s.charged_micros == 2'500'000);
    CHECK(balance_of(*l, user).balance_micros == 7'500'000);
    CHECK(balance_of(*l, user).reserved_micros == 0);
    CHECK(l->settle(h.hold_id, 1, {}).code == result::hold_closed);
    // After a second time to live the expired hold is forgotten.
    const auto h2 = l->reserve(user, 1'000, "slower");
    clock.advance(16 * 60 * 1000);
    l->expire_holds();
    clock.advance(16 * 60 * 1000);
    l->expire_holds();
    CHECK(l->settle(h2.hold_id, 1, {}).code == result::hold_closed);
    require_ledger_ok(*l);
}

TEST_CASE("usage the database would refuse is refused before it can stop the writer", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "free");
    const auto h = l->reserve(user, 1000, "r");
    const ledger::usage_event bad[] = {
        {.price_source = "guess"},
        {.prompt_tokens = ledger::max_usage_count + 1},
        {.completion_tokens = -1},
        {.units = std::numeric_limits<std::int64_t>::max()},
        {.provider_cost_micros = -1},
        {.markup_micros = ledger::max_amount_micros + 1},
        {.service = ""},
    };
    for (const auto& usage : bad) CHECK(l->settle(h.hold_id, 10, usage).code == result::invalid_argument);
    CHECK(l->settle(h.hold_id, 10, {.key_id = 4242}).code == result::unknown_key);
    REQUIRE(l->settle(h.hold_id, 10, {.model = "m"}).code == result::ok);
    CHECK_FALSE(l->failed());
    require_ledger_ok(*l);
}

TEST_CASE("a replayed deduct answers with the first result's balance", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "free");
    const ledger::deduct_request d{.user_id = user, .amount_micros = 1'000'000, .event_id = "search-1"};
    const auto first = l->deduct(d);
    REQUIRE(first.code == result::ok);
    CHECK(first.balance_micros == 9'000'000);
    grant(*l, user, grant_kind::purchased, 5'000'000);
    const auto again = l->deduct(d);
    CHECK(again.replayed);
    CHECK(again.balance_micros == 9'000'000);
    CHECK(again.usage_event_id == first.usage_event_id);
    require_ledger_ok(*l);
}

TEST_CASE("on_durable calls back once the commit is done, or at once when it already is", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "free");
    const auto h = l->reserve(user, 1000, "r");
    std::promise<bool> fired;
    auto done = fired.get_future();
    l->on_durable(h.seq, [&](bool ok) { fired.set_value(ok); });
    CHECK(done.get());
    // The hold is on disk: a reader sees it.
    CHECK(ledger::check_database(dir.file("t.db")).ok);
    bool inline_ok = false;
    l->on_durable(h.seq, [&](bool ok) { inline_ok = ok; });
    CHECK(inline_ok);
    require_ledger_ok(*l);
}

TEST_CASE("time-window pages use the same cursor as plain pages", "[ledger]") {
    temp_dir dir;
    manual_clock clock;
    auto l = open_ledger(dir.file("t.db"), clock);
    const auto user = make_user(*l, "a@example.com", "free");
    for (int i = 0; i < 30; ++i) {
        clock.advance(1000);
        grant(*l, user, grant_kind::bonus, 100 + i);
    }
    l->flush();
    const ledger::time_ms from = test_epoch_ms + 10'500, to = test_epoch_ms + 25'500;  // grants 11..25
    std::vector<std::int64_t> amounts;
    std::optional<std::int64_t> cursor;
    do {
        const auto page = l->transactions({.user_id = user, .after_id = cursor, .limit = 4, .from_ms = from, .to_ms = to});
        REQUIRE(page.code == result::ok);
        for (const auto& t : page.rows) amounts.push_back(t.amount_micros);
        cursor = page.next_cursor;
    } while (cursor);
    REQUIRE(amounts.size() == 15);
    CHECK(amounts.front() == 124);
    CHECK(amounts.back() == 110);
    require_ledger_ok(*l);
}
