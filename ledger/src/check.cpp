// check_ledger: proves SPEC section 4 against the committed database, in one
// read transaction (a consistent snapshot, safe beside a live writer).
#include "impl.hpp"

#include <fmt/format.h>

namespace tollgate::ledger {

namespace {
constexpr std::size_t max_problems_reported = 100;

void problem(check_report& r, std::string text) {
    r.ok = false;
    if (r.problems.size() < max_problems_reported) r.problems.push_back(std::move(text));
}
}  // namespace

check_report run_check(sql::database& db) {
    check_report r;
    db.exec("BEGIN");
    struct end_read {
        sql::database& db;
        ~end_read() {
            try {
                db.exec("COMMIT");
            } catch (const sql::error&) {
            }
        }
    } guard{db};

    // 1. Per user: the sum of signed amounts is the balance; the sum of debt
    //    deltas is the debt; balance = remaining grants - debt; reserved is
    //    the sum of open holds.
    {
        auto s = db.prepare(
            "WITH t AS (SELECT user_id, SUM(amount_micros) a, SUM(debt_delta_micros) d, COUNT(*) n "
            "           FROM credit_transactions GROUP BY user_id), "
            "g AS (SELECT user_id, SUM(remaining_micros) r FROM credit_grants GROUP BY user_id), "
            "h AS (SELECT user_id, SUM(amount_micros) s FROM reservations WHERE state = 'held' GROUP BY user_id) "
            "SELECT c.user_id, c.balance_micros, c.debt_micros, c.reserved_micros, IFNULL(t.a, 0), IFNULL(t.d, 0), "
            "IFNULL(g.r, 0), IFNULL(h.s, 0), IFNULL(t.n, 0) FROM user_credits c "
            "LEFT JOIN t ON t.user_id = c.user_id LEFT JOIN g ON g.user_id = c.user_id "
            "LEFT JOIN h ON h.user_id = c.user_id");
        while (s->step()) {
            const auto user = s->int64(0), balance = s->int64(1), debt = s->int64(2), reserved = s->int64(3);
            const auto sum_amount = s->int64(4), sum_debt = s->int64(5), remaining = s->int64(6), held = s->int64(7);
            ++r.users_checked;
            r.transactions_checked += s->int64(8);
            if (sum_amount != balance)
                problem(r, fmt::format("user {}: transactions sum to {} but balance is {}", user, sum_amount, balance));
            if (sum_debt != debt)
                problem(r, fmt::format("user {}: debt deltas sum to {} but debt is {}", user, sum_debt, debt));
            if (remaining - debt != balance)
                problem(r, fmt::format("user {}: remaining grants {} - debt {} != balance {}", user, remaining, debt,
                                       balance));
            if (held != reserved)
                problem(r, fmt::format("user {}: open holds sum to {} but reserved is {}", user, held, reserved));
            if (debt < 0) problem(r, fmt::format("user {}: negative debt {}", user, debt));
        }
    }
    if (const auto missing = db.scalar("SELECT COUNT(*) FROM users WHERE id NOT IN (SELECT user_id FROM user_credits)"))
        problem(r, fmt::format("{} users have no credit record", missing));

    // 2. Per grant: granted = consumed + expired + remaining, where every
    //    row touching the grant moves it by amount + debt delta, and the one
    //    row that created it carries exactly the granted amount.
    {
        auto s = db.prepare(
            "WITH t AS (SELECT grant_id, SUM(amount_micros + debt_delta_micros) moved, "
            "           SUM(CASE WHEN type IN ('grant', 'refund', 'reconcile') AND amount_micros > 0 "
            "               THEN amount_micros ELSE 0 END) created, "
            "           SUM(CASE WHEN type IN ('grant', 'refund', 'reconcile') AND amount_micros > 0 "
            "               THEN 1 ELSE 0 END) creations "
            "           FROM credit_transactions WHERE grant_id IS NOT NULL GROUP BY grant_id) "
            "SELECT g.id, g.user_id, g.amount_micros, g.remaining_micros, IFNULL(t.moved, 0), IFNULL(t.created, 0), "
            "IFNULL(t.creations, 0) FROM credit_grants g LEFT JOIN t ON t.grant_id = g.id");
        while (s->step()) {
            const auto id = s->int64(0), amount = s->int64(2), remaining = s->int64(3), moved = s->int64(4),
                       created = s->int64(5), creations = s->int64(6);
            ++r.grants_checked;
            if (creations != 1 || created != amount)
                problem(r, fmt::format("grant {}: created by {} rows totalling {}, granted {}", id, creations, created,
                                       amount));
            if (moved != remaining)
                problem(r, fmt::format("grant {}: granted - consumed - expired = {} but remaining is {}", id, moved,
                                       remaining));
        }
    }
    if (const auto orphan = db.scalar(
            "SELECT COUNT(*) FROM credit_transactions t WHERE t.grant_id IS NULL "
            "AND NOT ((t.type = 'debt' OR t.type = 'reconcile') AND t.amount_micros = -t.debt_delta_micros)"))
        problem(r, fmt::format("{} transactions without a grant are not debt charges", orphan));
    if (const auto foreign = db.scalar(
            "SELECT COUNT(*) FROM credit_transactions t JOIN credit_grants g ON g.id = t.grant_id "
            "WHERE g.user_id <> t.user_id"))
        problem(r, fmt::format("{} transactions touch another user's grant", foreign));

    // 3. Every usage event is charged exactly: its rows sum to -charged.
    {
        auto s = db.prepare(
            "SELECT e.id, e.charged_micros, IFNULL(SUM(t.amount_micros), 0) FROM usage_events e "
            "LEFT JOIN credit_transactions t ON t.usage_event_id = e.id AND t.type IN ('charge', 'deduct', 'debt') "
            "GROUP BY e.id HAVING IFNULL(SUM(t.amount_micros), 0) <> -e.charged_micros LIMIT 100");
        while (s->step())
            problem(r, fmt::format("usage event {}: charged {} but its transactions sum to {}", s->int64(0),
                                   s->int64(1), s->int64(2)));
    }

    // 4. Refunds of one charge never add up to more than it.
    {
        auto s = db.prepare(
            "SELECT e.id, e.charged_micros, SUM(g.amount_micros) FROM credit_grants g "
            "JOIN usage_events e ON e.id = g.refund_of_event_id GROUP BY e.id "
            "HAVING SUM(g.amount_micros) > e.charged_micros LIMIT 100");
        while (s->step())
            problem(r, fmt::format("usage event {}: refunds {} exceed the charge {}", s->int64(0), s->int64(2),
                                   s->int64(1)));
    }

    // 5. The daily rollups agree with the events they summarise, and with
    //    the corrections posted to them.
    {
        auto s = db.prepare(
            "WITH e AS (SELECT user_id, COUNT(*) n, SUM(charged_micros) + IFNULL((SELECT SUM(r.delta_micros) "
            "           FROM reconciliations r WHERE r.user_id = usage_events.user_id), 0) c "
            "           FROM usage_events GROUP BY user_id), "
            "d AS (SELECT user_id, SUM(requests) n, SUM(charged_micros) c FROM usage_daily GROUP BY user_id) "
            "SELECT IFNULL(e.user_id, d.user_id), IFNULL(e.n, 0), IFNULL(e.c, 0), IFNULL(d.n, 0), IFNULL(d.c, 0) "
            "FROM e FULL OUTER JOIN d ON d.user_id = e.user_id "
            "WHERE IFNULL(e.n, 0) <> IFNULL(d.n, 0) OR IFNULL(e.c, 0) <> IFNULL(d.c, 0) LIMIT 100");
        while (s->step())
            problem(r, fmt::format("user {}: usage events {} / {} micros but rollups {} / {} micros", s->int64(0),
                                   s->int64(1), s->int64(2), s->int64(3), s->int64(4)));
    }

    // 6. Every correction is posted exactly: its reconcile rows sum to
    //    minus its delta, and it names an estimated call.
    {
        auto s = db.prepare(
            "SELECT r.usage_event_id, r.delta_micros, IFNULL(SUM(t.amount_micros), 0), e.price_source "
            "FROM reconciliations r JOIN usage_events e ON e.id = r.usage_event_id "
            "LEFT JOIN credit_transactions t ON t.usage_event_id = r.usage_event_id AND t.type = 'reconcile' "
            "GROUP BY r.id HAVING IFNULL(SUM(t.amount_micros), 0) <> -r.delta_micros "
            "OR e.price_source <> 'estimated' LIMIT 100");
        while (s->step())
            problem(r, fmt::format("usage event {}: reconciled by {} but its reconcile rows sum to {} ({})",
                                   s->int64(0), s->int64(1), s->int64(2), s->text(3)));
    }
    if (const auto stray = db.scalar(
            "SELECT COUNT(*) FROM credit_transactions t WHERE t.type = 'reconcile' AND t.usage_event_id IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM reconciliations r WHERE r.usage_event_id = t.usage_event_id)"))
        problem(r, fmt::format("{} reconcile transactions name no reconciliation", stray));
    return r;
}

}  // namespace tollgate::ledger
