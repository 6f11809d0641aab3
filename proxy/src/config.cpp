#include "tollgate/proxy/config.hpp"

#include <fmt/format.h>
#include <toml++/toml.h>

#include <charconv>
#include <thread>

namespace tollgate::proxy {

namespace {

bool parse_port(std::string_view text) {
    unsigned value = 0;
    const auto* end = text.data() + text.size();
    auto [p, ec] = std::from_chars(text.data(), end, value);
    return ec == std::errc() && p == end && value <= 65535 && !text.empty();
}

// "host:port" (IPv6 as "[::1]:8080").
bool split_listen(const std::string& text, std::string& host, std::string& port) {
    const auto colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0) return false;
    host = text.substr(0, colon);
    port = text.substr(colon + 1);
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    return parse_port(port);
}

template <class T>
bool read_positive(const toml::table& table, std::string_view section, std::string_view name, T& out,
                   std::string& error, std::int64_t max = INT64_MAX) {
    const auto* node = table.get(name);
    if (!node) return true;
    const auto value = node->value<std::int64_t>();
    if (!value || *value <= 0 || *value > max) {
        error = fmt::format("{}.{} in TOLLGATE_CONFIG must be a positive integer{}", section, name,
                            max == INT64_MAX ? "" : fmt::format(" up to {}", max));
        return false;
    }
    out = static_cast<T>(*value);
    return true;
}

bool read_ms(const toml::table& table, std::string_view name, std::chrono::milliseconds& out, std::string& error) {
    std::int64_t ms = out.count();
    if (!read_positive(table, "timeouts", name, ms, error, 24LL * 3600 * 1000)) return false;
    out = std::chrono::milliseconds(ms);
    return true;
}

std::int64_t default_service_price(const std::string& service) {
    if (service == "search") return 1'000;  // SPEC 5: Center-Deep searches
    if (service == "agent") return 10'000;  // Brigade agent invocations
    return 0;
}

bool apply_file(const std::string& path, config& c, std::string& error) {
    toml::table root;
    try {
        root = toml::parse_file(path);
    } catch (const toml::parse_error& e) {
        error = fmt::format("TOLLGATE_CONFIG {}: {} (line {})", path, e.description(), e.source().begin.line);
        return false;
    }
    if (const auto* server = root["server"].as_table()) {
        if (const auto listen = (*server)["listen"].value<std::string>()) {
            if (!split_listen(*listen, c.listen_host, c.listen_port)) {
                error = fmt::format("server.listen in TOLLGATE_CONFIG must be host:port, not '{}'", *listen);
                return false;
            }
        }
        if (!read_positive(*server, "server", "io_threads", c.io_threads, error, 256) ||
            !read_positive(*server, "server", "max_body_bytes", c.max_body_bytes, error, 1LL << 30) ||
            !read_positive(*server, "server", "max_header_bytes", c.max_header_bytes, error, 1 << 20) ||
            !read_positive(*server, "server", "drain_slots", c.drain_slots, error, 100'000) ||
            !read_positive(*server, "server", "pool_idle_per_upstream", c.pool_idle_per_upstream, error, 100'000) ||
            !read_positive(*server, "server", "default_rpm_limit", c.default_rpm_limit, error, 1'000'000'000) ||
            !read_positive(*server, "server", "auth_failures_per_minute", c.auth_failures_per_minute, error,
                           1'000'000)) {
            return false;
        }
    }
    if (const auto* t = root["timeouts"].as_table()) {
        if (!read_ms(*t, "connect_ms", c.connect_timeout, error) ||
            !read_ms(*t, "first_byte_ms", c.first_byte_timeout, error) ||
            !read_ms(*t, "idle_ms", c.idle_timeout, error) ||
            !read_ms(*t, "stream_deadline_ms", c.stream_deadline, error) ||
            !read_ms(*t, "header_ms", c.header_timeout, error) ||
            !read_ms(*t, "keepalive_ms", c.keepalive_timeout, error) ||
            !read_ms(*t, "write_ms", c.write_timeout, error) ||
            !read_ms(*t, "shutdown_grace_ms", c.shutdown_grace, error) ||
            !read_ms(*t, "catalog_refresh_ms", c.catalog_refresh, error) ||
            !read_ms(*t, "openrouter_management_ms", c.openrouter_management_timeout, error) ||
            !read_ms(*t, "maintenance_ms", c.maintenance_interval, error) ||
            !read_ms(*t, "openrouter_sync_ms", c.openrouter_sync, error) ||
            !read_ms(*t, "reconcile_after_ms", c.reconcile_after, error) ||
            !read_ms(*t, "provisioning_retry_ms", c.provisioning_retry, error)) {
            return false;
        }
    }
    if (const auto* h = root["hold"].as_table()) {
        if (!read_positive(*h, "hold", "prompt_margin_percent", c.hold.prompt_margin_percent, error, 1000) ||
            !read_positive(*h, "hold", "prompt_margin_tokens", c.hold.prompt_margin_tokens, error, 1'000'000) ||
            !read_positive(*h, "hold", "completion_cap_tokens", c.hold.completion_cap_tokens, error, 10'000'000) ||
            !read_positive(*h, "hold", "router_cap_micros", c.hold.router_cap_micros, error, 1'000'000'000'000)) {
            return false;
        }
    }
    if (const auto* routes = root["routes"].as_array()) {
        for (std::size_t i = 0; i < routes->size(); ++i) {
            const auto* r = (*routes)[i].as_table();
            const auto where = fmt::format("routes[{}]", i);
            if (!r) {
                error = fmt::format("{} in TOLLGATE_CONFIG must be a table ([[routes]])", where);
                return false;
            }
            prefix_route route;
            route.prefix = (*r)["prefix"].value_or(std::string());
            route.service = (*r)["service"].value_or(std::string());
            const auto url = (*r)["url"].value_or(std::string());
            route.key = (*r)["key"].value_or(std::string());
            if (route.prefix.size() < 2 || route.prefix.front() != '/' || route.prefix.back() == '/' ||
                route.prefix.starts_with("/v1") || route.prefix.starts_with("/api")) {
                error = fmt::format("{}.prefix must look like \"/center-deep\" (a leading '/', no trailing '/', "
                                    "not under /v1 or /api)", where);
                return false;
            }
            if (route.service.empty() || route.service.size() > 32) {
                error = fmt::format("{}.service must name the metered service (\"search\", \"agent\", ...)", where);
                return false;
            }
            std::string url_error;
            const auto parsed = parse_upstream_url(url, url_error);
            if (!parsed) {
                error = fmt::format("{}.url: {}", where, url_error);
                return false;
            }
            route.url = *parsed;
            route.price_micros = default_service_price(route.service);
            if (!read_positive(*r, where, "price_micros", route.price_micros, error, 1'000'000'000'000)) return false;
            for (const auto& other : c.routes) {
                if (other.prefix == route.prefix) {
                    error = fmt::format("{}.prefix {} is configured twice", where, route.prefix);
                    return false;
                }
            }
            c.service_prices[route.service] = route.price_micros;
            c.routes.push_back(std::move(route));
        }
    }
    if (const auto* prices = root["service_prices"].as_table()) {
        for (const auto& [name, value] : *prices) {
            const auto price = value.value<std::int64_t>();
            if (name.str().empty() || name.str().size() > 32 || !price || *price < 0 || *price > 1'000'000'000'000) {
                error = fmt::format("service_prices.{} in TOLLGATE_CONFIG must be an integer price in micro-USD "
                                    "from 0 to 1000000000000", name.str());
                return false;
            }
            c.service_prices[std::string(name.str())] = *price;
        }
    }
    return true;
}

}  // namespace

std::optional<upstream_url> parse_upstream_url(const std::string& text, std::string& error) {
    upstream_url u;
    u.text = text;
    std::string_view rest = text;
    if (rest.starts_with("https://")) {
        u.tls = true;
        rest.remove_prefix(8);
    } else if (rest.starts_with("http://")) {
        rest.remove_prefix(7);
    } else {
        error = fmt::format("'{}' is not an http:// or https:// URL", text);
        return std::nullopt;
    }
    const auto slash = rest.find('/');
    std::string_view authority = rest.substr(0, slash);
    std::string_view path = slash == std::string_view::npos ? std::string_view() : rest.substr(slash);
    if (authority.empty() || authority.find('@') != std::string_view::npos ||
        path.find_first_of("?# ") != std::string_view::npos) {
        error = fmt::format("'{}' must be scheme://host[:port][/path] without user, query or fragment", text);
        return std::nullopt;
    }
    const auto colon = authority.rfind(':');
    if (colon != std::string_view::npos && authority.find(']', colon) == std::string_view::npos) {
        u.host = std::string(authority.substr(0, colon));
        u.port = std::string(authority.substr(colon + 1));
        if (!parse_port(u.port)) {
            error = fmt::format("'{}' has an invalid port", text);
            return std::nullopt;
        }
    } else {
        u.host = std::string(authority);
        u.port = u.tls ? "443" : "80";
    }
    if (u.host.size() > 2 && u.host.front() == '[') u.host = u.host.substr(1, u.host.size() - 2);
    if (u.host.empty()) {
        error = fmt::format("'{}' has no host", text);
        return std::nullopt;
    }
    while (!path.empty() && path.back() == '/') path.remove_suffix(1);
    u.base_path = std::string(path);
    return u;
}

config_result load_config(const std::map<std::string, std::string>& env) {
    config c;
    c.service_prices = {{"search", default_service_price("search")}, {"agent", default_service_price("agent")}};
    std::string error;
    auto get = [&](const char* name) -> std::optional<std::string> {
        const auto it = env.find(name);
        if (it == env.end() || it->second.empty()) return std::nullopt;
        return it->second;
    };
    if (const auto file = get("TOLLGATE_CONFIG")) {
        if (!apply_file(*file, c, error)) return {std::nullopt, error};
    }
    if (const auto listen = get("TOLLGATE_LISTEN")) {
        if (!split_listen(*listen, c.listen_host, c.listen_port)) {
            return {std::nullopt, fmt::format("TOLLGATE_LISTEN must be host:port (e.g. 127.0.0.1:8080), not '{}'",
                                              *listen)};
        }
    }
    if (const auto db = get("TOLLGATE_DB")) c.db_path = *db;
    if (const auto d = get("TOLLGATE_DURABILITY")) {
        if (*d != "normal" && *d != "full") {
            return {std::nullopt, fmt::format("TOLLGATE_DURABILITY must be normal or full, not '{}'", *d)};
        }
        c.durability_full = *d == "full";
    }
    if (const auto token = get("TOLLGATE_ADMIN_TOKEN")) {
        if (token->size() < 24) {
            return {std::nullopt, "TOLLGATE_ADMIN_TOKEN must be at least 24 characters (or unset: one is generated)"};
        }
        c.admin_token = *token;
    }
    if (const auto f = get("TOLLGATE_MASTER_KEY_FILE")) c.master_key_file = *f;
    const auto or_url = get("TOLLGATE_OPENROUTER_URL").value_or("https://openrouter.ai/api/v1");
    if (auto u = parse_upstream_url(or_url, error)) {
        c.openrouter = *u;
    } else {
        return {std::nullopt, "TOLLGATE_OPENROUTER_URL: " + error};
    }
    c.openrouter_key = get("TOLLGATE_OPENROUTER_KEY").value_or("");
    c.openrouter_provisioning_key = get("TOLLGATE_OPENROUTER_PROVISIONING_KEY").value_or("");
    if (const auto url = get("TOLLGATE_LITELLM_URL")) {
        auto u = parse_upstream_url(*url, error);
        if (!u) return {std::nullopt, "TOLLGATE_LITELLM_URL: " + error};
        c.litellm = *u;
    }
    c.litellm_key = get("TOLLGATE_LITELLM_KEY").value_or("");
    if (c.litellm_key.size() && !c.litellm) {
        return {std::nullopt, "TOLLGATE_LITELLM_KEY is set but TOLLGATE_LITELLM_URL is not"};
    }
    if (const auto threads = get("TOLLGATE_IO_THREADS")) {
        unsigned n = 0;
        auto [p, ec] = std::from_chars(threads->data(), threads->data() + threads->size(), n);
        if (ec != std::errc() || p != threads->data() + threads->size() || n == 0 || n > 256) {
            return {std::nullopt, fmt::format("TOLLGATE_IO_THREADS must be 1..256, not '{}'", *threads)};
        }
        c.io_threads = n;
    }
    if (c.io_threads == 0) c.io_threads = std::max(1u, std::thread::hardware_concurrency());
    if (c.stream_deadline + std::chrono::minutes(1) > std::chrono::minutes(15)) {
        return {std::nullopt, "timeouts.stream_deadline_ms must stay at least a minute below the 15-minute hold TTL"};
    }
    return {std::move(c), ""};
}

}  // namespace tollgate::proxy
