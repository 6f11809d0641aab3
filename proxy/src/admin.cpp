// The admin API's front door (SPEC 6): who is calling, whether that role
// may call this endpoint (the route table below is the one place that says
// so), Idempotency-Keys, brute-force throttling and the audit log. The
// handlers live in admin_accounts.cpp, admin_credits.cpp and
// admin_metering.cpp.
#include "admin.hpp"

#include "calls.hpp"

#include <fmt/format.h>

#include <array>
#include <charconv>

namespace tollgate::proxy {

using namespace net;

namespace admin {

std::string principal::name() const {
    switch (who) {
        case role::admin: return "admin";
        case role::user: return fmt::format("user:{}", user_id);
        case role::service: return fmt::format("service:{}", key_id);
        case role::none: break;
    }
    return "anonymous";
}

namespace {
std::optional<std::int64_t> parse_int(std::string_view text) {
    std::int64_t v = 0;
    const auto* end = text.data() + text.size();
    auto [p, ec] = std::from_chars(text.data(), end, v);
    if (text.empty() || ec != std::errc() || p != end) return std::nullopt;
    return v;
}
}  // namespace

awaitable<void> answer_refusal(exchange& x, const body& b) {
    co_await reply_error(x, 400, b.code(), b.message(), b.param());
}

awaitable<std::optional<std::int64_t>> subject(call& c, std::optional<std::int64_t> body_user_id) {
    std::optional<std::int64_t> named = body_user_id;
    if (const auto text = query_param(c.target, "user_id"); !text.empty() && !named) {
        named = parse_int(text);
        if (!named) {
            co_await reply_error(c.x, 400, "invalid_value", "'user_id' must be an integer", "user_id");
            co_return std::nullopt;
        }
    }
    if (c.p.who == role::user) {
        if (named && *named != c.p.user_id) {
            co_await reply_error(c.x, 403, "forbidden", "A user key may only act on its own user", "user_id");
            co_return std::nullopt;
        }
        c.audit_target = fmt::format("user:{}", c.p.user_id);
        co_return c.p.user_id;
    }
    if (!named) {
        co_await reply_error(c.x, 400, "missing_required_parameter", "'user_id' is required", "user_id");
        co_return std::nullopt;
    }
    c.audit_target = fmt::format("user:{}", *named);
    co_return *named;
}

awaitable<std::optional<page_request>> read_page(call& c) {
    page_request page;
    if (const auto text = query_param(c.target, "limit"); !text.empty()) {
        const auto limit = parse_int(text);
        if (!limit || *limit < 1 || *limit > 200) {
            co_await reply_error(c.x, 400, "invalid_value", "'limit' must be an integer from 1 to 200", "limit");
            co_return std::nullopt;
        }
        page.limit = static_cast<int>(*limit);
    }
    if (const auto text = query_param(c.target, "cursor"); !text.empty()) {
        const auto cursor = parse_int(text);
        if (!cursor || *cursor < 1) {
            co_await reply_error(c.x, 400, "invalid_value", "'cursor' must be a next_cursor this endpoint returned",
                                 "cursor");
            co_return std::nullopt;
        }
        page.after_id = *cursor;
    }
    co_return page;
}

// --- output ------------------------------------------------------------------

std::string json_int_or_null(const std::optional<std::int64_t>& v) {
    return v ? std::to_string(*v) : "null";
}

std::string transaction_json(const ledger::transaction& t) {
    return fmt::format(
        R"({{"id":{},"type":"{}","kind":{},"amount_micros":{},"balance_after_micros":{},"grant_id":{},"reason":"{}","usage_event_id":{},"created_at":"{}"}})",
        t.id, json_escape(t.type),
        t.kind ? fmt::format("\"{}\"", ledger::to_string(*t.kind)) : std::string("null"), t.amount_micros,
        t.balance_after_micros, json_int_or_null(t.grant_id), json_escape(t.reason), json_int_or_null(t.usage_event_id),
        rfc3339(t.created_at_ms));
}

awaitable<void> answer_json(call& c, unsigned status, std::string body) {
    co_await reply(c.x, status, std::move(body), "application/json");
}

awaitable<void> answer_ledger_error(call& c, ledger::result code, std::string_view param) {
    using ledger::result;
    const auto name = std::string(ledger::to_string(code));
    switch (code) {
        case result::unknown_user:
            co_await reply_error(c.x, 404, "user_not_found", "No such user", "user_id");
            break;
        case result::unknown_tier:
            co_await reply_error(c.x, 400, "invalid_value", "No such tier", "tier");
            break;
        case result::insufficient_credits:
            co_await reply_error(c.x, 402, "insufficient_credits", "The user's available credits do not cover this",
                                 "amount_micros");
            break;
        case result::idempotency_conflict:
            co_await reply_error(c.x, 409, "idempotency_conflict",
                                 "This key or event id was used with a different request", param);
            break;
        case result::unknown_charge:
            co_await reply_error(c.x, 404, "charge_not_found", "No such charge of this user", param);
            break;
        case result::refund_exceeds_charge:
            co_await reply_error(c.x, 409, "refund_exceeds_charge",
                                 "Refunds of this charge would add up to more than it", "amount_micros");
            break;
        case result::unknown_key:
            co_await reply_error(c.x, 404, "key_not_found", "No such key", param.empty() ? "id" : param);
            break;
        case result::storage_failed:
            co_await reply_error(c.x, 500, name, "The ledger could not store this; nothing was changed");
            break;
        default:
            co_await reply_error(c.x, 400, name, fmt::format("Refused by the ledger: {}", name), param);
            break;
    }
}

awaitable<bool> claim_idempotency_key(call& c) {
    if (c.idempotency_key.empty() || (c.idem != idempotency::required && c.idem != idempotency::secret)) {
        co_return true;
    }
    auto& x = c.x;
    // The request as the caller sent it, hashed: bodies of any size compare
    // in 64 hex characters, and the database never holds a body.
    const auto digest = x.a.keys_secret.hash(fmt::format("{} {}\n{}", std::string(x.req.method_string()),
                                                         std::string(c.target), x.req.body()));
    std::string fingerprint;
    for (const unsigned char byte : digest) fingerprint += fmt::format("{:02x}", byte);
    const auto claimed = x.a.ledger.claim_idempotency_key(c.p.name(), c.idempotency_key, fingerprint);
    if (claimed == ledger::ledger::claim::storage_failed) {
        co_await reply_error(x, 500, "storage_failed", "The Idempotency-Key could not be recorded");
        co_return false;
    }
    const bool secret = c.idem == idempotency::secret;
    if (claimed == ledger::ledger::claim::conflict || (claimed == ledger::ledger::claim::same && secret)) {
        co_await reply_error(x, 409, "idempotency_conflict",
                             secret ? "This Idempotency-Key was used before; a secret is never sent twice"
                                    : "This Idempotency-Key was used with a different request",
                             "Idempotency-Key");
        co_return false;
    }
    co_return true;
}

// --- the route table -----------------------------------------------------------

namespace {

// Who may call a route. A service token needs the scope the route names.
enum allowed : unsigned {
    by_admin = 1,
    by_user = 2,
    by_meter = 4,    // a service token with scope `meter`
    by_billing = 8,  // a service token with scope `billing`
    by_service = 16, // any service token
    by_anyone = 32,  // no credentials needed
};

struct route {
    http::verb method;
    std::string_view pattern;  // `{id}`, `{code}`: one path segment
    unsigned who;
    idempotency idem;
    awaitable<void> (*handler)(call&);
};

awaitable<void> openapi_document(call& c);

// Every admin endpoint. tests/proxy/admin_routes_test.cpp checks this table
// against proxy/openapi.json, and the e2e roles test calls every operation
// of that document with every role.
const std::array routes{
    route{http::verb::post, "/api/v1/users", by_admin, idempotency::secret, create_user},
    route{http::verb::get, "/api/v1/users", by_admin, idempotency::ignored, list_users},
    route{http::verb::get, "/api/v1/users/{id}", by_admin, idempotency::ignored, get_user},
    route{http::verb::patch, "/api/v1/users/{id}", by_admin, idempotency::ignored, patch_user},
    route{http::verb::post, "/api/v1/keys", by_admin | by_user, idempotency::secret, create_key},
    route{http::verb::get, "/api/v1/keys", by_admin | by_user, idempotency::ignored, list_keys},
    route{http::verb::delete_, "/api/v1/keys/{id}", by_admin | by_user, idempotency::ignored, revoke_key},
    route{http::verb::post, "/api/v1/service-tokens", by_admin, idempotency::secret, create_service_token},
    route{http::verb::get, "/api/v1/service-tokens", by_admin, idempotency::ignored, list_service_tokens},
    route{http::verb::delete_, "/api/v1/service-tokens/{id}", by_admin, idempotency::ignored, revoke_service_token},
    route{http::verb::get, "/api/v1/credits/balance", by_admin | by_user, idempotency::ignored, balance},
    route{http::verb::get, "/api/v1/credits/balance/stream", by_admin | by_user, idempotency::ignored,
          balance_stream},
    route{http::verb::post, "/api/v1/credits/allocate", by_admin, idempotency::replayed, allocate},
    route{http::verb::get, "/api/v1/credits/transactions", by_admin | by_user, idempotency::ignored, transactions},
    route{http::verb::post, "/api/v1/credits/deduct", by_admin | by_meter, idempotency::required, deduct},
    route{http::verb::post, "/api/v1/credits/refund", by_admin, idempotency::replayed, refund},
    route{http::verb::post, "/api/v1/metering/track", by_admin | by_meter, idempotency::required, track},
    route{http::verb::get, "/api/v1/metering/summary", by_admin | by_user, idempotency::ignored, usage_summary},
    route{http::verb::get, "/api/v1/metering/by-model", by_admin | by_user, idempotency::ignored, usage_by_model},
    route{http::verb::get, "/api/v1/metering/by-date", by_admin | by_user, idempotency::ignored, usage_by_date},
    route{http::verb::get, "/api/v1/metering/free-tier", by_admin | by_user, idempotency::ignored, free_tier},
    route{http::verb::get, "/api/v1/tiers/compare", by_admin | by_user | by_service, idempotency::ignored,
          compare_tiers},
    route{http::verb::post, "/api/v1/coupons/create", by_admin, idempotency::ignored, create_coupon},
    route{http::verb::post, "/api/v1/coupons/redeem", by_admin | by_user, idempotency::replayed, redeem_coupon},
    route{http::verb::get, "/api/v1/coupons/validate", by_admin | by_user, idempotency::ignored, validate_coupon},
    route{http::verb::get, "/api/v1/coupons/list", by_admin, idempotency::ignored, list_coupons},
    route{http::verb::delete_, "/api/v1/coupons/{code}", by_admin, idempotency::ignored, deactivate_coupon},
    route{http::verb::post, "/api/v1/tiers/switch", by_admin | by_user | by_billing, idempotency::replayed,
          switch_tier},
    route{http::verb::post, "/api/v1/periods/roll", by_admin, idempotency::ignored, roll_periods},
    route{http::verb::get, "/api/v1/audit", by_admin, idempotency::ignored, audit_log},
    route{http::verb::post, "/api/v1/openrouter/create-account", by_admin, idempotency::ignored,
          create_openrouter_account},
    route{http::verb::get, "/api/v1/openrouter/account", by_admin | by_user, idempotency::ignored,
          get_openrouter_account},
    route{http::verb::post, "/api/v1/openrouter/sync-balance", by_admin | by_user, idempotency::ignored,
          sync_openrouter_balance},
    route{http::verb::delete_, "/api/v1/openrouter/account", by_admin, idempotency::ignored,
          delete_openrouter_account},
    route{http::verb::post, "/api/v1/master-key/rotate", by_admin, idempotency::ignored, rotate_master_key},
    route{http::verb::get, "/api/v1/openapi.json", by_anyone, idempotency::ignored, openapi_document},
};

// True when `path` fits `pattern`; `id` gets the `{…}` segment.
bool matches(std::string_view pattern, std::string_view path, std::string_view& id) {
    const auto brace = pattern.find('{');
    if (brace == std::string_view::npos) return pattern == path;
    if (!path.starts_with(pattern.substr(0, brace))) return false;
    const auto tail = pattern.substr(pattern.find('}', brace) + 1);
    const auto rest = path.substr(brace);
    const auto slash = rest.find('/');
    const auto segment = rest.substr(0, slash);
    if (segment.empty() || rest.substr(segment.size()) != tail) return false;
    id = segment;
    return true;
}

bool has_scope(std::string_view scopes, std::string_view scope) {
    while (!scopes.empty()) {
        const auto space = scopes.find(' ');
        if (scopes.substr(0, space) == scope) return true;
        if (space == std::string_view::npos) break;
        scopes.remove_prefix(space + 1);
    }
    return false;
}

bool may_call(const route& r, const principal& p) {
    if (r.who & by_anyone) return true;
    switch (p.who) {
        case role::admin: return (r.who & by_admin) != 0;
        case role::user: return (r.who & by_user) != 0;
        case role::service:
            return (r.who & by_service) || ((r.who & by_meter) && has_scope(p.scopes, "meter")) ||
                   ((r.who & by_billing) && has_scope(p.scopes, "billing"));
        case role::none: break;
    }
    return false;
}

principal authenticate(exchange& x) {
    const auto bearer = bearer_of(x.req);
    if (bearer.empty() || bearer.size() > 512) return {};
    const auto hash = x.a.keys_secret.hash(bearer);
    if (equal_secret(hash, x.a.admin_token_hash)) return {role::admin, 0, 0, {}};
    if (const auto who = x.a.keys.find(bearer)) return {role::user, who->user_id, who->key_id, {}};
    if (const auto token = x.a.ledger.find_service_token_by_hash(hash); token && !token->revoked_at_ms) {
        return {role::service, 0, token->id, token->scopes};
    }
    return {};
}

void audit(exchange& x, const principal& p, std::string_view path, const std::string& target,
           const std::string& address) {
    x.a.ledger.record_audit({.id = 0,
                             .actor = p.name(),
                             .action = fmt::format("{} {}", std::string(x.req.method_string()), std::string(path)),
                             .target = target,
                             .detail = fmt::format("status {}", x.status),
                             .client_address = address,
                             .created_at_ms = 0});
}

std::string client_address(exchange& x) {
    beast::error_code ec;
    const auto endpoint = x.client.socket.remote_endpoint(ec);
    return ec ? std::string("unknown") : endpoint.address().to_string();
}

// A key of 1..255 visible ASCII characters (Stripe's limit).
bool valid_idempotency_key(std::string_view key) {
    if (key.empty() || key.size() > 255) return false;
    for (const char ch : key) {
        if (ch < 0x21 || ch > 0x7e) return false;
    }
    return true;
}

awaitable<void> openapi_document(call& c) {
    co_await answer_json(c, 200, std::string(openapi_json()));
}

}  // namespace

std::vector<operation> operations() {
    std::vector<operation> out;
    for (const auto& r : routes) {
        operation op{std::string(http::to_string(r.method)), std::string(r.pattern), {}};
        const std::pair<unsigned, const char*> names[] = {{by_admin, "admin"},
                                                          {by_user, "user"},
                                                          {by_service, "service"},
                                                          {by_meter, "service:meter"},
                                                          {by_billing, "service:billing"},
                                                          {by_anyone, "anyone"}};
        for (const auto& [bit, name] : names) {
            if (r.who & bit) op.roles.emplace_back(name);
        }
        out.push_back(std::move(op));
    }
    return out;
}

}  // namespace admin

awaitable<void> admin_call(exchange& x) {
    using namespace admin;
    const std::string_view target(x.req.target().data(), x.req.target().size());
    const auto path = target.substr(0, target.find('?'));
    const route* found = nullptr;
    bool path_known = false;
    std::string_view id;
    for (const auto& r : routes) {
        std::string_view segment;
        if (!matches(r.pattern, path, segment)) continue;
        path_known = true;
        if (r.method == x.req.method()) {
            found = &r;
            id = segment;
            break;
        }
    }
    if (!found) {
        if (path_known) {
            co_await reply_error(x, 405, "method_not_allowed",
                                 fmt::format("{} is not allowed on {}", std::string(x.req.method_string()),
                                             std::string(path)));
        } else {
            co_await reply_error(x, 404, "not_found", fmt::format("No admin endpoint {}", std::string(path)));
        }
        co_return;
    }

    const auto address = client_address(x);
    principal p;
    if (!(found->who & by_anyone)) {
        if (const auto wait = x.a.auth_failures.blocked_for(address, x.a.settings.auth_failures_per_minute)) {
            co_await reply_error(x, 429, "rate_limited", "Too many failed authentications from this address", {},
                                 retry_after(wait));
            co_return;
        }
        p = authenticate(x);
        if (p.who == role::none) {
            x.a.auth_failures.record_failure(address);
            co_await reply_error(x, 401, "invalid_api_key",
                                 "An admin token, a tollgate key or a service token is required");
            co_return;
        }
        if (!may_call(*found, p)) {
            co_await reply_error(x, 403, "forbidden", "This credential may not call this endpoint");
            if (found->method != http::verb::get) audit(x, p, path, {}, address);
            co_return;
        }
        if (p.who == role::user) {
            const auto rpm = x.a.keys.find(bearer_of(x.req));
            if (const auto wait = x.a.limits.admit(p.key_id, rpm ? rpm->rpm_limit : 1)) {
                co_await reply_error(x, 429, "rate_limited", "This key's request rate limit is reached", {},
                                     retry_after(wait));
                co_return;
            }
        }
    }

    call c{x, p, target, id, found->idem, {}, {}};
    if (const auto header = x.req.find("idempotency-key"); header != x.req.end()) {
        c.idempotency_key = std::string(header->value());
        if (found->idem != idempotency::ignored && !valid_idempotency_key(c.idempotency_key)) {
            co_await reply_error(x, 400, "invalid_value",
                                 "'Idempotency-Key' must be 1 to 255 visible ASCII characters ('!' to '~')", "Idempotency-Key");
            co_return;
        }
    }
    if (found->idem == idempotency::required && c.idempotency_key.empty()) {
        co_await reply_error(x, 400, "idempotency_key_required", "This endpoint needs an Idempotency-Key header",
                             "Idempotency-Key");
        co_return;
    }
    co_await found->handler(c);

    // Every change an authenticated caller asks for is audit-logged, refused
    // or not: who, what, on whom, the status, from where.
    if (found->method != http::verb::get) audit(x, p, path, c.audit_target, address);
}

}  // namespace tollgate::proxy
