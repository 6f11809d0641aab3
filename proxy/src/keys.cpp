#include "keys.hpp"

#include <fmt/format.h>

#include <cmath>

namespace tollgate::proxy {

pricing::tier_policy to_policy(const ledger::tier& t) {
    pricing::tier_policy p;
    p.id = t.id;
    p.free_models_only = t.models == "free";
    p.markup_paid_bps = t.markup_paid_bps;
    p.markup_free_micros_per_token = t.markup_free_micros_per_token;
    p.monthly_credits_micros = t.monthly_credits_micros;
    p.price_micros = t.price_micros;
    p.rollover_percent = t.rollover_percent;
    p.default_overage_limit_micros = t.default_overage_limit_micros;
    p.byok_available = t.byok_available;
    return p;
}

std::optional<pricing::tier_policy> key_cache::policy(const std::string& tier_id) {
    const auto now = std::chrono::steady_clock::now();
    {
        std::lock_guard lock(mu_);
        if (now < policies_expire_) {
            const auto it = policies_.find(tier_id);
            if (it != policies_.end()) return it->second;
            return std::nullopt;
        }
    }
    std::unordered_map<std::string, pricing::tier_policy> fresh;
    for (const auto& t : ledger_.tiers()) fresh.emplace(t.id, to_policy(t));
    std::lock_guard lock(mu_);
    policies_ = std::move(fresh);
    policies_expire_ = now + ttl_;
    const auto it = policies_.find(tier_id);
    if (it != policies_.end()) return it->second;
    return std::nullopt;
}

std::string owner_context(std::int64_t user_id) {
    return fmt::format("user:{}", user_id);
}

std::optional<caller> key_cache::find(std::string_view secret) {
    if (secret.empty() || secret.size() > 256) return std::nullopt;
    const auto hash = secrets_.hash(secret);
    const auto now = std::chrono::steady_clock::now();
    {
        std::lock_guard lock(mu_);
        const auto it = by_hash_.find(hash);
        if (it != by_hash_.end() && now < it->second.expires) return it->second.who;
    }
    // Unknown keys are not cached: a flood of wrong keys must not grow memory.
    const auto key = ledger_.find_key_by_hash(hash);
    if (!key || key->revoked_at_ms || key->kind != "user") return std::nullopt;
    const auto user = ledger_.find_user(key->user_id);
    if (!user || user->status != "active") return std::nullopt;
    const auto sub = ledger_.find_subscription(key->user_id);
    if (!sub) return std::nullopt;
    auto p = policy(sub->tier);
    if (!p) return std::nullopt;
    caller who{.user_id = key->user_id,
               .key_id = key->id,
               .rpm_limit = key->rpm_limit,
               .tier = sub->tier,
               .byok = sub->option == "byok",
               .byok_key = {},
               .openrouter_key = {},
               .policy = std::move(*p)};
    if (who.byok) {
        // Opened here, kept only in memory (and only for the cache's TTL).
        const auto sealed = ledger_.byok_key(key->user_id);
        if (sealed) who.byok_key = secrets_.open_sealed(*sealed, owner_context(key->user_id)).value_or("");
    }
    // The key provisioned for this user (issue #7) carries their managed
    // OpenRouter traffic; without one (not provisioned, pending, revoked)
    // the platform key does. A key disabled at OpenRouter is still the
    // one used (OpenRouter refuses it): falling back to the platform key
    // would lift the key's safety limit.
    if (const auto account = ledger_.find_openrouter_account(key->user_id);
        account && (account->status == "active" || account->status == "disabled") && account->sealed_key) {
        who.openrouter_key = secrets_.open_sealed(*account->sealed_key, owner_context(key->user_id)).value_or("");
    }
    std::lock_guard lock(mu_);
    if (by_hash_.size() > 100'000) by_hash_.clear();  // bounded; refilled on demand
    by_hash_[hash] = entry{who, now + ttl_};
    return who;
}

void key_cache::invalidate_all() {
    std::lock_guard lock(mu_);
    by_hash_.clear();
    policies_expire_ = {};
}

std::int64_t rate_limiter::admit(std::int64_t key_id, std::int64_t rpm) {
    const auto now = std::chrono::steady_clock::now();
    const double capacity = static_cast<double>(rpm);
    const double per_second = capacity / 60.0;
    std::lock_guard lock(mu_);
    auto [it, fresh] = buckets_.try_emplace(key_id, bucket{capacity, now});
    auto& b = it->second;
    if (!fresh) {
        const double elapsed = std::chrono::duration<double>(now - b.at).count();
        b.tokens = std::min(capacity, b.tokens + elapsed * per_second);
        b.at = now;
    }
    if (b.tokens >= 1.0) {
        b.tokens -= 1.0;
        return 0;
    }
    return std::max<std::int64_t>(1, static_cast<std::int64_t>(std::ceil((1.0 - b.tokens) / per_second)));
}

std::int64_t failure_throttle::blocked_for(const std::string& address, std::int64_t per_minute) {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(mu_);
    const auto it = by_address_.find(address);
    if (it == by_address_.end()) return 0;
    const auto age = now - it->second.start;
    if (age >= std::chrono::minutes(1)) {
        by_address_.erase(it);
        return 0;
    }
    if (it->second.failures < per_minute) return 0;
    return std::max<std::int64_t>(
        1, std::chrono::duration_cast<std::chrono::seconds>(std::chrono::minutes(1) - age).count());
}

void failure_throttle::record_failure(const std::string& address) {
    const auto now = std::chrono::steady_clock::now();
    std::lock_guard lock(mu_);
    // Bounded: a flood from many addresses forgets windows that are over.
    if (by_address_.size() > 100'000) {
        std::erase_if(by_address_, [&](const auto& e) { return now - e.second.start >= std::chrono::minutes(1); });
    }
    auto [it, fresh] = by_address_.try_emplace(address, window{now, 0});
    if (!fresh && now - it->second.start >= std::chrono::minutes(1)) it->second = window{now, 0};
    it->second.failures++;
}

}  // namespace tollgate::proxy
