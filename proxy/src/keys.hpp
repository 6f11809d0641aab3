// Who is calling: a tollgate key resolved to its user, tier and limits
// (keyed-hash lookup, cached briefly and dropped on revoke), and each key's
// requests-per-minute bucket.
#pragma once

#include "secrets.hpp"
#include "tollgate/ledger/ledger.hpp"
#include "tollgate/pricing/cost.hpp"

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace tollgate::proxy {

struct caller {
    std::int64_t user_id = 0;
    std::int64_t key_id = 0;
    std::int64_t rpm_limit = 600;
    std::string tier;
    bool byok = false;
    std::string byok_key;  // the user's own OpenRouter key, opened; "" when it cannot be
    std::string openrouter_key;  // the key provisioned for the user, opened; "": the platform key
    pricing::tier_policy policy;
};

// The associated data a user's sealed upstream key is bound to.
std::string owner_context(std::int64_t user_id);

class key_cache {
public:
    key_cache(ledger::ledger& l, const secrets& s, std::chrono::milliseconds ttl) : ledger_(l), secrets_(s), ttl_(ttl) {}

    // The caller a bearer secret belongs to: nullopt for an unknown or
    // revoked key, or a user who is not active.
    std::optional<caller> find(std::string_view secret);
    // After a revoke, a tier change or a tier edit.
    void invalidate_all();
    // The tier policies as the database has them now.
    std::optional<pricing::tier_policy> policy(const std::string& tier_id);

private:
    struct entry {
        caller who;
        std::chrono::steady_clock::time_point expires;
    };
    ledger::ledger& ledger_;
    const secrets& secrets_;
    std::chrono::milliseconds ttl_;
    std::mutex mu_;
    std::unordered_map<std::string, entry> by_hash_;
    std::unordered_map<std::string, pricing::tier_policy> policies_;
    std::chrono::steady_clock::time_point policies_expire_{};
};

pricing::tier_policy to_policy(const ledger::tier& t);

// Token bucket per key: `rpm` tokens a minute, bursts up to `rpm`.
class rate_limiter {
public:
    // 0 when admitted, else the seconds to wait (Retry-After, at least 1).
    std::int64_t admit(std::int64_t key_id, std::int64_t rpm);

private:
    struct bucket {
        double tokens = 0;  // request counts, not money
        std::chrono::steady_clock::time_point at;
    };
    std::mutex mu_;
    std::unordered_map<std::int64_t, bucket> buckets_;
};

// Failed authentications per client address, in fixed one-minute windows:
// past the limit, the address is refused (429) until its window ends,
// whatever it sends, so guessing the admin token or a key is slow.
class failure_throttle {
public:
    // 0 when the address may try, else the seconds until it may.
    std::int64_t blocked_for(const std::string& address, std::int64_t per_minute);
    void record_failure(const std::string& address);

private:
    struct window {
        std::chrono::steady_clock::time_point start;
        std::int64_t failures = 0;
    };
    std::mutex mu_;
    std::unordered_map<std::string, window> by_address_;
};

}  // namespace tollgate::proxy
