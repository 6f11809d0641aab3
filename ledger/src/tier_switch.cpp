// Tier switches (SPEC 3). tollgate takes no payments, so who may switch
// where is the rule: an upgrade (a dearer tier) only by an admin or a
// billing system, at once, with the prorated difference of the monthly
// credits; a downgrade by anyone, at the period end; credits and BYOK
// within a tier that offers BYOK, at once.
#include <fmt/format.h>


#include "impl.hpp"

namespace tollgate::ledger {

namespace {
// Credits (up to 1e15 micros) times milliseconds overflow int64.
__extension__ typedef __int128 int128;
}  // namespace

std::string_view to_string(switch_kind kind) {
    switch (kind) {
        case switch_kind::none: return "none";
        case switch_kind::upgrade: return "upgrade";
        case switch_kind::downgrade: return "downgrade";
        case switch_kind::option: return "option";
    }
    return "none";
}

switch_outcome ledger::switch_tier(const switch_request& r) {
    if ((r.option != "credits" && r.option != "byok") || r.actor.size() > 4096 || r.idempotency_key.size() > 4096 ||
        (r.sealed_byok_key && (r.sealed_byok_key->empty() || r.sealed_byok_key->size() > 4096))) {
        return {result::invalid_argument};
    }
    auto& m = *impl_;
    const std::string fingerprint = fmt::format("switch|{}|{}|{}", r.user_id, r.tier, r.option);
    std::unique_lock external(m.external_mu, std::defer_lock);
    if (!r.idempotency_key.empty()) {
        external.lock();
        try {
            auto db = m.reader();
            // <kind> <grant or 0> <granted>
            if (const auto stored = impl::stored_answer_of(*db.db, r.idempotency_key, fingerprint, 3)) {
                if (stored->conflict) return {result::idempotency_conflict};
                const auto& v = stored->numbers;
                switch_outcome first;
                first.kind = static_cast<switch_kind>(v[0]);
                if (v[1]) first.grant_id = v[1];
                first.granted_micros = v[2];
                first.replayed = true;
                return first;
            }
        } catch (const sql::error&) {
            return {result::storage_failed};
        }
    }

    switch_outcome out;
    {
        std::unique_lock lock(m.mu, std::defer_lock);
        if (!m.lock_for_change(lock)) return {result::storage_failed};
        const time_ms at = m.now();
        const auto to_it = m.tiers_by_id.find(r.tier);
        if (to_it == m.tiers_by_id.end()) return {result::unknown_tier};
        user_book* const found = m.current_user(r.user_id, at);
        if (!found || !found->sub) return {result::unknown_user};
        auto& u = *found;
        auto& sub = *u.sub;
        const tier& to = to_it->second;
        const auto from_it = m.tiers_by_id.find(sub.tier);
        if (from_it == m.tiers_by_id.end()) return {result::unknown_tier};
        const tier& from = from_it->second;
        if (r.option == "byok" && !to.byok_available) return {result::option_not_available};

        if (to.id == from.id) {
            // The same tier: the option changes at once; a scheduled
            // downgrade is called off (the user chose to stay). Bought by a
            // billing system or an admin during a free-month trial, the tier
            // is now paid for: the trial ends, with no return.
            out.kind = sub.option != r.option || sub.pending_tier ? switch_kind::option : switch_kind::none;
            if (r.may_upgrade && sub.revert_at_ms) {
                out.kind = switch_kind::upgrade;
                sub.revert_tier.reset();
                sub.revert_at_ms.reset();
                sub.period_waived = false;
                sub.waive_next_period = false;
            }
            sub.option = r.option;
            sub.pending_tier.reset();
        } else if (to.price_micros > from.price_micros || (to.price_micros == from.price_micros && r.may_upgrade)) {
            if (!r.may_upgrade) return {result::upgrade_not_allowed};
            out.kind = switch_kind::upgrade;
            // The prorated difference of the monthly credits for the rest of
            // the period, rounded down to a micro.
            const std::int64_t remaining = std::max<std::int64_t>(0, sub.period_end_ms - at);
            const std::int64_t length = std::max<std::int64_t>(1, sub.period_end_ms - sub.period_start_ms);
            const std::int64_t difference = to.monthly_credits_micros - from.monthly_credits_micros;
            const int128 prorated = static_cast<int128>(difference) * remaining / length;
            if (prorated > 0) {
                grant_row row;
                row.kind = grant_kind::allocated;
                row.amount_micros = static_cast<std::int64_t>(prorated);
                row.priority = default_priority(grant_kind::allocated);
                row.effective_at_ms = at;
                row.expires_at_ms = sub.period_end_ms;
                row.source = "upgrade";
                row.created_at_ms = at;
                out.grant_id =
                    m.add_grant(u, row, "grant", r.actor, fmt::format("upgrade {} to {} (prorated)", from.id, to.id),
                                std::nullopt)
                        .first;
                out.granted_micros = row.amount_micros;
            }
            // An overage limit left at the old tier's default follows the new one.
            if (u.overage_limit_micros == from.default_overage_limit_micros) {
                u.overage_limit_micros = to.default_overage_limit_micros;
                m.stage_credits(u);
            }
            sub.tier = to.id;
            sub.option = r.option;
            sub.pending_tier.reset();
            // A paid upgrade ends a free-month trial: no return, nothing waived.
            if (sub.revert_at_ms) {
                sub.revert_tier.reset();
                sub.revert_at_ms.reset();
                sub.period_waived = false;
                sub.waive_next_period = false;
            }
        } else {
            out.kind = switch_kind::downgrade;
            sub.pending_tier = to.id;
            // BYOK ends with the period when the new tier lacks it (see roll).
        }
        m.stage_subscription(u);
        if (r.sealed_byok_key) m.stage_byok_key(u.id, *r.sealed_byok_key, at);
        if (!r.idempotency_key.empty()) {
            m.stage_answer(r.idempotency_key, fingerprint,
                           {static_cast<std::int64_t>(out.kind), out.grant_id.value_or(0), out.granted_micros}, at);
        }
        out.seq = m.stage();
    }
    if (!r.idempotency_key.empty() && !wait_durable(out.seq)) return {result::storage_failed};
    return out;
}

}  // namespace tollgate::ledger
