// The admin API's spine (SPEC 6): who is calling (admin token or a user's
// own key), and the first endpoints: users, credits/allocate,
// credits/balance, credits/transactions. The rest of SPEC 6 plugs in here.
#include "calls.hpp"

#define SIMDJSON_EXCEPTIONS 0
#include <simdjson.h>

#include <fmt/format.h>

#include <array>
#include <charconv>
#include <map>
#include <span>
#include <ctime>

namespace tollgate::proxy {

using namespace net;

namespace {

struct principal {
    enum class role : std::uint8_t { none, admin, user } who = role::none;
    std::int64_t user_id = 0;  // role::user
};

principal authenticate(exchange& x) {
    const auto bearer = bearer_of(x.req);
    if (bearer.empty()) return {};
    if (equal_secret(x.a.keys_secret.hash(bearer), x.a.admin_token_hash)) return {principal::role::admin, 0};
    if (const auto who = x.a.keys.find(bearer)) return {principal::role::user, who->user_id};
    return {};
}

std::string rfc3339(ledger::time_ms ms) {
    const std::time_t seconds = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&seconds, &tm);
    return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                       tm.tm_hour, tm.tm_min, tm.tm_sec, ms % 1000);
}

template <class T>
std::string json_int_or_null(const std::optional<T>& v) {
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

std::string query_param(std::string_view target, std::string_view name) {
    const auto q = target.find('?');
    if (q == std::string_view::npos) return {};
    auto rest = target.substr(q + 1);
    while (!rest.empty()) {
        const auto amp = rest.find('&');
        const auto pair = rest.substr(0, amp);
        const auto eq = pair.find('=');
        if (pair.substr(0, eq) == name) return std::string(eq == std::string_view::npos ? "" : pair.substr(eq + 1));
        if (amp == std::string_view::npos) break;
        rest.remove_prefix(amp + 1);
    }
    return {};
}

std::optional<std::int64_t> parse_int(std::string_view text) {
    std::int64_t v = 0;
    const auto* end = text.data() + text.size();
    auto [p, ec] = std::from_chars(text.data(), end, v);
    if (ec != std::errc() || p != end || text.empty()) return std::nullopt;
    return v;
}

// The user an endpoint acts on: an admin names one (`user_id` in the
// query), a user is themselves and may not name anyone else.
awaitable<std::optional<std::int64_t>> subject(exchange& x, const principal& p, std::string_view target) {
    std::optional<std::int64_t> named;
    if (const auto text = query_param(target, "user_id"); !text.empty()) {
        named = parse_int(text);
        if (!named) {
            co_await reply_error(x, 400, "invalid_value", "'user_id' must be an integer", "user_id");
            co_return std::nullopt;
        }
    }
    if (p.who == principal::role::user) {
        if (named && *named != p.user_id) {
            co_await reply_error(x, 403, "forbidden", "A user key may only act on its own user", "user_id");
            co_return std::nullopt;
        }
        co_return p.user_id;
    }
    if (!named) {
        co_await reply_error(x, 400, "missing_required_parameter", "'user_id' is required", "user_id");
        co_return std::nullopt;
    }
    co_return *named;
}

// A JSON body's fields, read once with their types checked.
struct body_fields {
    std::string error_param;  // a field with the wrong type
    std::string error_message;
    std::map<std::string, std::string, std::less<>> strings;
    std::map<std::string, std::int64_t, std::less<>> ints;
};

// Field lists live outside the coroutines: GCC 12 cannot keep an
// initializer list's array in a coroutine frame.
constexpr std::array<std::string_view, 3> user_string_fields{"email", "name", "tier"};
constexpr std::array<std::string_view, 3> allocate_string_fields{"kind", "reason", "expires_at"};
constexpr std::array<std::string_view, 2> allocate_int_fields{"user_id", "amount_micros"};

body_fields read_fields(const std::string& body, std::span<const std::string_view> string_fields,
                        std::span<const std::string_view> int_fields) {
    body_fields out;
    simdjson::ondemand::parser parser;
    simdjson::padded_string padded(body);
    simdjson::ondemand::document doc;
    simdjson::ondemand::object obj;
    if (parser.iterate(padded).get(doc) || doc.get_object().get(obj)) {
        out.error_message = "The request body must be a JSON object";
        return out;
    }
    for (auto field : obj) {
        std::string_view key;
        if (field.unescaped_key().get(key)) {
            out.error_message = "The request body is not valid JSON";
            return out;
        }
        auto value = field.value();
        for (const auto name : string_fields) {
            if (key != name) continue;
            std::string_view s;
            if (value.get_string().get(s)) {
                out.error_param = std::string(name);
                out.error_message = fmt::format("'{}' must be a string", name);
                return out;
            }
            out.strings.emplace(std::string(name), std::string(s));
        }
        for (const auto name : int_fields) {
            if (key != name) continue;
            std::int64_t v = 0;
            if (value.get_int64().get(v)) {
                out.error_param = std::string(name);
                out.error_message = fmt::format("'{}' must be an integer within int64", name);
                return out;
            }
            out.ints.emplace(std::string(name), v);
        }
    }
    return out;  // unknown fields are ignored (SPEC 6)
}

awaitable<bool> refuse_fields(exchange& x, const body_fields& f) {
    if (f.error_message.empty()) co_return false;
    co_await reply_error(x, 400, f.error_param.empty() ? "invalid_json" : "invalid_type", f.error_message,
                         f.error_param);
    co_return true;
}

awaitable<void> create_user(exchange& x) {
    const auto f = read_fields(x.req.body(), user_string_fields, {});
    if (co_await refuse_fields(x, f)) co_return;
    const auto email = f.strings.find("email");
    if (email == f.strings.end() || email->second.empty() || email->second.find('@') == std::string::npos ||
        email->second.size() > 254) {
        co_await reply_error(x, 400, "invalid_value", "'email' is required and must be an email address", "email");
        co_return;
    }
    ledger::new_user nu;
    nu.email = email->second;
    if (const auto it = f.strings.find("name"); it != f.strings.end()) nu.name = it->second;
    if (const auto it = f.strings.find("tier"); it != f.strings.end()) nu.tier = it->second;
    nu.actor = "admin";
    const auto created = x.a.ledger.create_user(nu);
    if (created.code == ledger::result::user_exists) {
        co_await reply_error(x, 409, "user_exists", "A user with this email exists", "email");
        co_return;
    }
    if (created.code == ledger::result::unknown_tier) {
        co_await reply_error(x, 400, "invalid_value", fmt::format("Unknown tier '{}'", nu.tier), "tier");
        co_return;
    }
    if (created.code != ledger::result::ok) {
        co_await reply_error(x, created.code == ledger::result::invalid_argument ? 400 : 500,
                             std::string(ledger::to_string(created.code)), "The user could not be created");
        co_return;
    }
    const auto secret = secrets::generate("tg_");
    const auto key = x.a.ledger.create_key({.user_id = created.user_id,
                                            .key_hash = x.a.keys_secret.hash(secret),
                                            .key_prefix = secrets::display_prefix(secret),
                                            .name = "default",
                                            .rpm_limit = x.a.settings.default_rpm_limit});
    if (key.code != ledger::result::ok || !co_await durable(x.a, created.seq)) {
        co_await reply_error(x, 500, "storage_failed", "The user was not stored");
        co_return;
    }
    const auto user = x.a.ledger.find_user(created.user_id);
    const auto sub = x.a.ledger.find_subscription(created.user_id);
    const std::string& tier = sub ? sub->tier : nu.tier;
    std::string body =
        fmt::format(R"({{"user":{{"id":{},"email":"{}","name":"{}","tier":"{}","created_at":"{}"}},"api_key":"{}"}})",
                    created.user_id, json_escape(nu.email), json_escape(nu.name), json_escape(tier),
                    rfc3339(user ? user->created_at_ms : 0), secret);
    co_await reply(x, 201, std::move(body), "application/json");
}

awaitable<void> allocate(exchange& x) {
    const auto f = read_fields(x.req.body(), allocate_string_fields, allocate_int_fields);
    if (co_await refuse_fields(x, f)) co_return;
    const auto user = f.ints.find("user_id");
    const auto amount = f.ints.find("amount_micros");
    if (user == f.ints.end()) {
        co_await reply_error(x, 400, "missing_required_parameter", "'user_id' is required", "user_id");
        co_return;
    }
    if (amount == f.ints.end() || amount->second <= 0 || amount->second > ledger::max_amount_micros) {
        co_await reply_error(x, 400, "invalid_value",
                             fmt::format("'amount_micros' must be an integer from 1 to {}", ledger::max_amount_micros),
                             "amount_micros");
        co_return;
    }
    ledger::grant_request g;
    g.user_id = user->second;
    g.amount_micros = amount->second;
    g.kind = ledger::grant_kind::purchased;
    if (const auto it = f.strings.find("kind"); it != f.strings.end()) {
        const auto kind = ledger::parse_grant_kind(it->second);
        if (!kind) {
            co_await reply_error(x, 400, "invalid_value", "'kind' must be refund, bonus, allocated or purchased", "kind");
            co_return;
        }
        g.kind = *kind;
    }
    if (const auto it = f.strings.find("reason"); it != f.strings.end()) g.reason = it->second;
    g.source = "admin";
    g.actor = "admin";
    const auto out = x.a.ledger.grant(g);
    if (out.code == ledger::result::unknown_user) {
        co_await reply_error(x, 404, "user_not_found", fmt::format("No user {}", g.user_id), "user_id");
        co_return;
    }
    if (out.code != ledger::result::ok) {
        co_await reply_error(x, out.code == ledger::result::storage_failed ? 500 : 400,
                             std::string(ledger::to_string(out.code)), "The grant was refused", "amount_micros");
        co_return;
    }
    if (!co_await durable(x.a, out.seq)) {
        co_await reply_error(x, 500, "storage_failed", "The grant was not stored");
        co_return;
    }
    ledger::transaction t;
    t.id = out.transaction_id;
    t.type = "grant";
    t.kind = g.kind;
    t.amount_micros = g.amount_micros;
    t.balance_after_micros = out.balance_micros;
    t.grant_id = out.grant_id;
    t.reason = g.reason;
    t.created_at_ms = x.a.ledger.now_ms();
    co_await reply(x, 201, fmt::format(R"({{"transaction":{},"balance_micros":{}}})", transaction_json(t), out.balance_micros),
                   "application/json");
}

awaitable<void> balance(exchange& x, const principal& p, std::string_view target) {
    const auto user = co_await subject(x, p, target);
    if (!user) co_return;
    const auto b = x.a.ledger.get_balance(*user);
    if (!b) {
        co_await reply_error(x, 404, "user_not_found", fmt::format("No user {}", *user), "user_id");
        co_return;
    }
    const auto& k = b->by_kind_micros;
    co_await reply(
        x, 200,
        fmt::format(
            R"({{"user_id":{},"balance_micros":{},"reserved_micros":{},"available_micros":{},"debt_micros":{},"overage_limit_micros":{},"by_kind":{{"refund":{},"bonus":{},"allocated":{},"purchased":{}}},"balance_usd":"{}"}})",
            b->user_id, b->balance_micros, b->reserved_micros, b->available_micros, b->debt_micros,
            b->overage_limit_micros, k[0], k[1], k[2], k[3], usd_text(b->balance_micros)),
        "application/json");
}

awaitable<void> transactions(exchange& x, const principal& p, std::string_view target) {
    const auto user = co_await subject(x, p, target);
    if (!user) co_return;
    ledger::transaction_query q;
    q.user_id = *user;
    if (const auto text = query_param(target, "limit"); !text.empty()) {
        const auto limit = parse_int(text);
        if (!limit || *limit < 1 || *limit > 200) {
            co_await reply_error(x, 400, "invalid_value", "'limit' must be an integer from 1 to 200", "limit");
            co_return;
        }
        q.limit = static_cast<int>(*limit);
    }
    if (const auto text = query_param(target, "cursor"); !text.empty()) {
        const auto cursor = parse_int(text);
        if (!cursor || *cursor < 1) {
            co_await reply_error(x, 400, "invalid_value", "'cursor' must be a next_cursor this endpoint returned",
                                 "cursor");
            co_return;
        }
        q.after_id = *cursor;
    }
    if (const auto text = query_param(target, "type"); !text.empty()) q.type = text;
    const auto page = x.a.ledger.transactions(q);
    if (page.code != ledger::result::ok) {
        co_await reply_error(x, 500, "storage_failed", "The transactions could not be read");
        co_return;
    }
    std::string out = R"({"data":[)";
    for (std::size_t i = 0; i < page.rows.size(); ++i) {
        if (i) out += ',';
        out += transaction_json(page.rows[i]);
    }
    out += fmt::format(R"(],"next_cursor":{}}})", json_int_or_null(page.next_cursor));
    co_await reply(x, 200, std::move(out), "application/json");
}

std::string key_json(const ledger::key_record& k) {
    return fmt::format(
        R"({{"id":{},"user_id":{},"prefix":"{}","name":"{}","rpm_limit":{},"created_at":"{}","revoked_at":{}}})", k.id,
        k.user_id, json_escape(k.key_prefix), json_escape(k.name), k.rpm_limit, rfc3339(k.created_at_ms),
        k.revoked_at_ms ? fmt::format("\"{}\"", rfc3339(*k.revoked_at_ms)) : std::string("null"));
}

awaitable<void> list_keys(exchange& x, const principal& p, std::string_view target) {
    const auto user = co_await subject(x, p, target);
    if (!user) co_return;
    std::string out = R"({"data":[)";
    bool first = true;
    for (const auto& k : x.a.ledger.list_keys(*user)) {
        if (k.kind != "user") continue;
        if (!first) out += ',';
        out += key_json(k);
        first = false;
    }
    out += "]}";
    co_await reply(x, 200, std::move(out), "application/json");
}

// Revoking a key takes effect at once: the key cache forgets every entry.
awaitable<void> revoke_key(exchange& x, const principal& p, std::string_view id_text) {
    const auto id = parse_int(id_text);
    bool allowed = id.has_value() && p.who == principal::role::admin;
    if (id && p.who == principal::role::user) {
        for (const auto& k : x.a.ledger.list_keys(p.user_id)) allowed = allowed || k.id == *id;
    }
    if (!allowed) {
        co_await reply_error(x, 404, "key_not_found", "No such key of yours", "id");
        co_return;
    }
    const auto out = x.a.ledger.revoke_key(*id);
    if (out.code == ledger::result::unknown_key) {
        co_await reply_error(x, 404, "key_not_found", "No such key", "id");
        co_return;
    }
    if (out.code != ledger::result::ok || !co_await durable(x.a, out.seq)) {
        co_await reply_error(x, 500, "storage_failed", "The key was not revoked");
        co_return;
    }
    x.a.keys.invalidate_all();
    std::string body = fmt::format(R"({{"id":{},"revoked":true}})", *id);
    co_await reply(x, 200, std::move(body), "application/json");
}

}  // namespace

awaitable<void> admin_call(exchange& x) {
    std::string_view target(x.req.target().data(), x.req.target().size());
    const auto path = target.substr(0, target.find('?'));
    const auto method = x.req.method();
    const auto p = authenticate(x);
    if (p.who == principal::role::none) {
        co_await reply_error(x, 401, "invalid_api_key", "An admin token or a tollgate key is required");
        co_return;
    }
    const bool admin = p.who == principal::role::admin;
    if (method == http::verb::post && path == "/api/v1/users") {
        if (!admin) {
            co_await reply_error(x, 403, "forbidden", "Only an admin may create users");
            co_return;
        }
        co_await create_user(x);
        co_return;
    }
    if (method == http::verb::post && path == "/api/v1/credits/allocate") {
        if (!admin) {
            co_await reply_error(x, 403, "forbidden", "Only an admin may allocate credits");
            co_return;
        }
        co_await allocate(x);
        co_return;
    }
    if (method == http::verb::get && path == "/api/v1/credits/balance") {
        co_await balance(x, p, target);
        co_return;
    }
    if (method == http::verb::get && path == "/api/v1/credits/transactions") {
        co_await transactions(x, p, target);
        co_return;
    }
    if (method == http::verb::get && path == "/api/v1/keys") {
        co_await list_keys(x, p, target);
        co_return;
    }
    if (method == http::verb::delete_ && path.starts_with("/api/v1/keys/")) {
        co_await revoke_key(x, p, path.substr(std::string_view("/api/v1/keys/").size()));
        co_return;
    }
    co_await reply_error(x, 404, "not_found", fmt::format("No admin endpoint {} {}", std::string(x.req.method_string()),
                                                          std::string(path)));
}

}  // namespace tollgate::proxy
