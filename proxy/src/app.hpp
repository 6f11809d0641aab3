// Everything a request handler needs, built once by serve() and shared by
// every I/O thread. Members are either immutable after start, internally
// synchronised, or atomics.
#pragma once

#include "keys.hpp"
#include "metrics.hpp"
#include "secrets.hpp"
#include "tollgate/ledger/ledger.hpp"
#include "tollgate/pricing/catalog.hpp"
#include "tollgate/proxy/asio.hpp"
#include "tollgate/proxy/config.hpp"
#include "upstream.hpp"

#include <atomic>
#include <memory>
#include <functional>
#include <unordered_map>
#include <shared_mutex>
#include <string>
#include <unordered_set>

namespace tollgate::proxy {

// The live model catalogs: OpenRouter's, and LiteLLM's with the set of
// models LiteLLM lists. Replaced whole by a refresh.
struct catalogs {
    std::shared_ptr<const pricing::catalog> openrouter;
    std::shared_ptr<const pricing::catalog> litellm;           // from LiteLLM's /model/info
    std::shared_ptr<const pricing::catalog> litellm_fallback;  // the bundled LiteLLM price map
    std::shared_ptr<const std::unordered_set<std::string>> litellm_models;  // what LiteLLM's /v1/models lists
    std::string openrouter_source = "bundled";  // "live" once fetched
    std::string litellm_source = "bundled";
};

// A model free of charge upstream, by the catalog that lists it (SPEC 3).
inline bool model_is_free(const catalogs& live, const std::string& model) {
    if (model.ends_with(":free")) return true;
    for (const auto* cat : {live.openrouter.get(), live.litellm.get()}) {
        if (!cat) continue;
        if (const auto* m = cat->find(model)) return m->free;
    }
    return false;
}

class catalog_holder {
public:
    std::shared_ptr<const catalogs> get() const {
        std::shared_lock lock(mu_);
        return current_;
    }
    void replace(std::shared_ptr<const catalogs> next) {
        std::unique_lock lock(mu_);
        current_.swap(next);
    }

private:
    mutable std::shared_mutex mu_;
    std::shared_ptr<const catalogs> current_;
};

// One I/O thread: its own io_context (so a connection never needs a strand)
// and its own upstream pools (a pooled connection stays on the thread that
// opened it).
struct worker {
    std::unique_ptr<net::asio::io_context> io;
    std::unique_ptr<upstream_pool> openrouter;
    std::unique_ptr<upstream_pool> litellm;              // null without LiteLLM
    std::vector<std::unique_ptr<upstream_pool>> routes;  // parallel to settings.routes
};

struct app {
    const config& settings;
    ledger::ledger& ledger;
    secrets keys_secret;
    std::vector<worker> workers;
    metrics stats;
    key_cache keys;
    rate_limiter limits;
    failure_throttle auth_failures;  // the admin API's, per client address
    catalog_holder catalog;
    std::unique_ptr<net::asio::ssl::context> tls;
    std::string admin_token_hash;
    std::string openrouter_key_prefix;  // provisioned keys are named "<prefix>-user-<id>"
    // Users whose OpenRouter key is being provisioned or revoked now.
    std::mutex provisioning_mu;
    std::unordered_set<std::int64_t> provisioning_busy;
    // Where the reconciliation's next pass starts (its loop's own state).
    std::int64_t reconcile_cursor = 0;
    // One master key rotation at a time.
    std::mutex rotation_mu;

    std::atomic<bool> draining{false};  // shutting down: no new connections, no keep-alive
    std::atomic<bool> cut_off{false};   // the grace period is over: calls stop, no drains
    // Calls in flight, cut off through these when the grace period ends.
    std::mutex cancel_mu;
    std::unordered_map<std::uint64_t, std::function<void()>> cancellers;
    std::atomic<std::uint64_t> next_session{1};
};

}  // namespace tollgate::proxy
