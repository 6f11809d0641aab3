// tollgate's settings (SPEC section 7): the environment first, then an
// optional TOML file (TOLLGATE_CONFIG) for prefix routes, service prices,
// limits and timeouts. Validated once at start; every refusal names the
// setting and says what is wrong with it.
#pragma once

#include "tollgate/pricing/cost.hpp"

#include <chrono>
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace tollgate::proxy {

// An upstream base URL, split once: `https://openrouter.ai/api/v1` gives
// tls, host "openrouter.ai", port "443", base_path "/api/v1".
struct upstream_url {
    bool tls = false;
    std::string host;
    std::string port;
    std::string base_path;  // no trailing '/'
    std::string text;       // as configured
};

// Parses an http or https URL; nullopt with `error` set otherwise.
std::optional<upstream_url> parse_upstream_url(const std::string& text, std::string& error);

// `/center-deep/…` and `/brigade/…`: forwarded with the prefix stripped to
// `url`, charged a fixed price per request.
struct prefix_route {
    std::string prefix;   // "/center-deep"
    std::string service;  // "search", "agent": the usage event's service
    upstream_url url;
    std::string key;      // sent as the Bearer credential, if set
    std::int64_t price_micros = 0;
};

struct config {
    std::string listen_host = "127.0.0.1";
    std::string listen_port = "8080";
    std::string db_path = "./tollgate.db";
    bool durability_full = false;
    std::string admin_token;  // TOLLGATE_ADMIN_TOKEN; empty: generated at first start
    std::string master_key_file = "./tollgate.key";

    upstream_url openrouter;  // TOLLGATE_OPENROUTER_URL
    std::string openrouter_key;
    std::string openrouter_provisioning_key;
    std::optional<upstream_url> litellm;  // unset: no LiteLLM
    std::string litellm_key;

    std::vector<prefix_route> routes;
    // metering/track's price per request of an event without a provider
    // cost, by service: "search" and "agent" by default, each route's
    // price, and `[service_prices]` in the file.
    std::map<std::string, std::int64_t> service_prices;

    // Server limits.
    unsigned io_threads = 0;  // 0: the core count
    std::size_t max_body_bytes = 8 << 20;
    std::size_t max_header_bytes = 16 << 10;
    std::chrono::milliseconds header_timeout{30'000};
    std::chrono::milliseconds keepalive_timeout{75'000};
    std::chrono::milliseconds write_timeout{60'000};
    std::chrono::milliseconds shutdown_grace{30'000};

    // Upstream client.
    std::chrono::milliseconds connect_timeout{5'000};
    std::chrono::milliseconds first_byte_timeout{120'000};
    std::chrono::milliseconds idle_timeout{120'000};
    std::chrono::milliseconds stream_deadline{600'000};
    std::size_t pool_idle_per_upstream = 256;
    std::size_t drain_slots = 64;  // concurrent drains of streams whose client left
    std::chrono::milliseconds catalog_refresh{600'000};
    // OpenRouter's key management API: each attempt's deadline; how often
    // the maintenance job runs (holds, periods, pending provisioning,
    // reconciliation) and syncs every key; how long after a call billed on
    // an estimate /generation is asked for its real cost.
    std::chrono::milliseconds openrouter_management_timeout{10'000};
    std::chrono::milliseconds maintenance_interval{60'000};
    std::chrono::milliseconds openrouter_sync{600'000};
    std::chrono::milliseconds reconcile_after{10'000};
    // A user whose key could not be provisioned is tried again after this,
    // doubling with each failure up to an hour.
    std::chrono::milliseconds provisioning_retry{30'000};

    pricing::hold_policy hold;
    std::int64_t default_rpm_limit = 600;
    // Failed authentications one client address may make per minute on the
    // admin API before it gets 429 (brute-force throttling).
    std::int64_t auth_failures_per_minute = 20;
};

struct config_result {
    std::optional<config> value;
    std::string error;  // names the bad setting
};

// Reads `env` (name -> value; main passes the process environment) and the
// TOML file it names in TOLLGATE_CONFIG.
config_result load_config(const std::map<std::string, std::string>& env);

}  // namespace tollgate::proxy
