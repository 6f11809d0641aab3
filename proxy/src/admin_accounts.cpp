// Users, their tollgate keys and service tokens (SPEC 6). A secret is
// generated here, shown once in the answer and stored only as a keyed hash.
#include "admin.hpp"
#include "provisioning.hpp"

#include <fmt/format.h>

#include <charconv>
#include <limits>

namespace tollgate::proxy::admin {

using namespace net;

namespace {

std::optional<std::int64_t> id_of(std::string_view text) {
    std::int64_t v = 0;
    const auto* end = text.data() + text.size();
    auto [p, ec] = std::from_chars(text.data(), end, v);
    if (text.empty() || ec != std::errc() || p != end || v < 1) return std::nullopt;
    return v;
}

std::string user_json(ledger::ledger& l, const ledger::user_record& u, const std::string& tier) {
    const auto b = l.get_balance(u.id).value_or(ledger::balance{});
    return fmt::format(
        R"({{"id":{},"email":"{}","name":"{}","tier":"{}","status":"{}","created_at":"{}","balance_micros":{},"available_micros":{},"debt_micros":{},"overage_limit_micros":{}}})",
        u.id, json_escape(u.email), json_escape(u.name), json_escape(tier), json_escape(u.status),
        rfc3339(u.created_at_ms), b.balance_micros, b.available_micros, b.debt_micros, b.overage_limit_micros);
}

std::string key_json(const ledger::key_record& k) {
    return fmt::format(
        R"({{"id":{},"user_id":{},"prefix":"{}","name":"{}","rpm_limit":{},"created_at":"{}","revoked_at":{}}})", k.id,
        k.user_id, json_escape(k.key_prefix), json_escape(k.name), k.rpm_limit, rfc3339(k.created_at_ms),
        k.revoked_at_ms ? fmt::format("\"{}\"", rfc3339(*k.revoked_at_ms)) : std::string("null"));
}

// The `{id}` of /users/{id} as a known user; on nullopt the answer is sent.
awaitable<std::optional<ledger::user_record>> named_user(call& c) {
    const auto id = id_of(c.path_id);
    const auto user = id ? c.x.a.ledger.find_user(*id) : std::nullopt;
    if (!user) {
        co_await reply_error(c.x, 404, "user_not_found", "No such user", "id");
        co_return std::nullopt;
    }
    c.audit_target = fmt::format("user:{}", user->id);
    co_return user;
}

std::string tier_of(ledger::ledger& l, std::int64_t user_id) {
    const auto sub = l.find_subscription(user_id);
    return sub ? sub->tier : std::string();
}

// A new tollgate key for `user_id`; the secret, or "" when it was not stored.
std::string issue_key(app& a, std::int64_t user_id, const std::string& name, std::int64_t rpm_limit,
                      ledger::key_outcome& out) {
    auto secret = secrets::generate("tg_");
    out = a.ledger.create_key({.user_id = user_id,
                               .key_hash = a.keys_secret.hash(secret),
                               .key_prefix = secrets::display_prefix(secret),
                               .name = name,
                               .rpm_limit = rpm_limit});
    return out.code == ledger::result::ok ? secret : std::string();
}

}  // namespace

awaitable<void> create_user(call& c) {
    body b(c.x.req.body());
    const auto email = b.text("email", true, 254);
    const auto name = b.text("name", false, 256);
    const auto tier = b.text("tier", false, 64);
    if (email && (email->find('@') == std::string::npos || email->find_first_of("\r\n") != std::string::npos)) {
        b.refuse("email", "'email' must be an email address");
    }
    if (b.failed()) co_return co_await answer_refusal(c.x, b);
    if (!co_await claim_idempotency_key(c)) co_return;
    ledger::new_user nu;
    nu.email = *email;
    nu.name = name.value_or("");
    if (tier) nu.tier = *tier;
    nu.actor = c.p.name();
    const auto created = c.x.a.ledger.create_user(nu);
    if (created.code == ledger::result::user_exists) {
        co_await reply_error(c.x, 409, "user_exists", "A user with this email exists", "email");
        co_return;
    }
    if (created.code != ledger::result::ok) co_return co_await answer_ledger_error(c, created.code, "tier");
    c.audit_target = fmt::format("user:{}", created.user_id);
    ledger::key_outcome key;
    const auto secret = issue_key(c.x.a, created.user_id, "default", c.x.a.settings.default_rpm_limit, key);
    if (secret.empty() || !co_await durable(c.x.a, created.seq)) {
        co_await reply_error(c.x, 500, "storage_failed", "The user was not stored");
        co_return;
    }
    const auto user = c.x.a.ledger.find_user(created.user_id);
    // With provisioning on, the user's OpenRouter key is made now; when
    // OpenRouter fails, the user exists all the same and the key stays
    // pending, retried by the maintenance job.
    std::string openrouter = "null";
    if (openrouter::provisioning_enabled(c.x.a)) {
        const auto provisioned = co_await openrouter::provision(c.x.a, c.x.w, created.user_id);
        if (provisioned.account) openrouter = openrouter::account_json(*provisioned.account);
    }
    co_await answer_json(
        c, 201,
        fmt::format(
            R"({{"user":{{"id":{},"email":"{}","name":"{}","tier":"{}","created_at":"{}"}},"api_key":"{}","openrouter":{}}})",
            created.user_id, json_escape(nu.email), json_escape(nu.name),
            json_escape(tier_of(c.x.a.ledger, created.user_id)), rfc3339(user ? user->created_at_ms : 0), secret,
            openrouter));
}

awaitable<void> list_users(call& c) {
    const auto page = co_await read_page(c);
    if (!page) co_return;
    const auto users = c.x.a.ledger.list_users(page->after_id, page->limit);
    std::string out = R"({"data":[)";
    for (std::size_t i = 0; i < users.rows.size(); ++i) {
        if (i) out += ',';
        out += user_json(c.x.a.ledger, users.rows[i].user, users.rows[i].tier);
    }
    out += fmt::format(R"(],"next_cursor":{}}})", json_int_or_null(users.next_cursor));
    co_await answer_json(c, 200, std::move(out));
}

awaitable<void> get_user(call& c) {
    const auto user = co_await named_user(c);
    if (!user) co_return;
    co_await answer_json(c, 200, user_json(c.x.a.ledger, *user, tier_of(c.x.a.ledger, user->id)));
}

// Each field given is applied in turn; the first refusal stops the rest
// (the fields before it stay applied, as the answer's user shows).
awaitable<void> patch_user(call& c) {
    const auto user = co_await named_user(c);
    if (!user) co_return;
    body b(c.x.req.body());
    const auto tier = b.text("tier", false, 64);
    const auto overage = b.integer("overage_limit_micros", false, 0, ledger::max_amount_micros);
    const auto status = b.text("status", false, 16);
    if (status && *status != "active" && *status != "suspended" && *status != "deleted") {
        b.refuse("status", "'status' must be active, suspended or deleted");
    }
    if (tier && !c.x.a.ledger.find_tier(*tier)) b.refuse("tier", fmt::format("No tier '{}'", *tier));
    if (b.failed()) co_return co_await answer_refusal(c.x, b);
    auto& l = c.x.a.ledger;
    ledger::commit_seq seq = 0;
    if (tier) {
        const auto out = l.set_tier(user->id, *tier);
        if (out.code != ledger::result::ok) co_return co_await answer_ledger_error(c, out.code, "tier");
        seq = out.seq;
    }
    if (overage) {
        const auto out = l.set_overage_limit(user->id, *overage);
        if (out.code != ledger::result::ok) co_return co_await answer_ledger_error(c, out.code, "overage_limit_micros");
        seq = out.seq;
    }
    if (status) {
        const auto out = l.set_user_status(user->id, *status);
        if (out.code != ledger::result::ok) co_return co_await answer_ledger_error(c, out.code, "status");
        seq = out.seq;
    }
    if (!co_await durable(c.x.a, seq)) {
        co_await reply_error(c.x, 500, "storage_failed", "The change was not stored");
        co_return;
    }
    // A suspended user's keys and a new tier take effect at once.
    c.x.a.keys.invalidate_all();
    if (tier || status) openrouter::follow_user(c.x.a, c.x.w, user->id);
    const auto now = l.find_user(user->id);
    co_await answer_json(c, 200, user_json(l, now.value_or(*user), tier_of(l, user->id)));
}

awaitable<void> create_key(call& c) {
    body b(c.x.req.body());
    const auto user_id = b.integer("user_id", false, 1, std::numeric_limits<std::int64_t>::max());
    const auto name = b.text("name", false, 256);
    const auto rpm = b.integer("rpm_limit", false, 1, 1'000'000'000);
    if (b.failed()) co_return co_await answer_refusal(c.x, b);
    // A user may not raise their own rate limit above the default.
    if (rpm && c.p.who == role::user && *rpm > c.x.a.settings.default_rpm_limit) {
        b.refuse("rpm_limit", fmt::format("'rpm_limit' may be at most {} (an admin may set more)",
                                          c.x.a.settings.default_rpm_limit));
        co_return co_await answer_refusal(c.x, b);
    }
    const auto user = co_await subject(c, user_id);
    if (!user) co_return;
    if (!co_await claim_idempotency_key(c)) co_return;
    ledger::key_outcome key;
    const auto secret = issue_key(c.x.a, *user, name.value_or(""), rpm.value_or(c.x.a.settings.default_rpm_limit), key);
    if (secret.empty()) co_return co_await answer_ledger_error(c, key.code);
    ledger::key_record shown;
    for (const auto& k : c.x.a.ledger.list_keys(*user)) {
        if (k.id == key.key_id) shown = k;
    }
    co_await answer_json(c, 201, fmt::format(R"({{"key":{},"api_key":"{}"}})", key_json(shown), secret));
}

awaitable<void> list_keys(call& c) {
    const auto user = co_await subject(c);
    if (!user) co_return;
    std::string out = R"({"data":[)";
    bool first = true;
    for (const auto& k : c.x.a.ledger.list_keys(*user)) {
        if (k.kind != "user") continue;
        if (!first) out += ',';
        out += key_json(k);
        first = false;
    }
    out += "]}";
    co_await answer_json(c, 200, std::move(out));
}

// Revoking a key takes effect at once: the key cache forgets every entry.
// A user may revoke only their own keys; another's is "not found" to them.
awaitable<void> revoke_key(call& c) {
    const auto id = id_of(c.path_id);
    bool allowed = id.has_value() && c.p.who == role::admin;
    if (id && c.p.who == role::user) {
        for (const auto& k : c.x.a.ledger.list_keys(c.p.user_id)) allowed = allowed || k.id == *id;
    }
    if (!allowed) {
        co_await reply_error(c.x, 404, "key_not_found", "No such key of yours", "id");
        co_return;
    }
    c.audit_target = fmt::format("key:{}", *id);
    const auto out = c.x.a.ledger.revoke_key(*id);
    if (out.code != ledger::result::ok) co_return co_await answer_ledger_error(c, out.code, "id");
    if (!co_await durable(c.x.a, out.seq)) {
        co_await reply_error(c.x, 500, "storage_failed", "The key was not revoked");
        co_return;
    }
    c.x.a.keys.invalidate_all();
    co_await answer_json(c, 200, fmt::format(R"({{"id":{},"revoked":true}})", *id));
}

namespace {

// ["meter","billing"] from "meter billing".
std::string scopes_json(std::string_view joined) {
    std::string out;
    for (std::string_view rest = joined; !rest.empty();) {
        const auto space = rest.find(' ');
        if (!out.empty()) out += ',';
        out += fmt::format("\"{}\"", json_escape(rest.substr(0, space)));
        if (space == std::string_view::npos) break;
        rest.remove_prefix(space + 1);
    }
    return "[" + out + "]";
}
}  // namespace

// `scopes`: "meter" (metering/track, credits/deduct), "billing" (upgrades
// through tiers/switch).
awaitable<void> create_service_token(call& c) {
    body b(c.x.req.body());
    const auto name = b.text("name", true, 256);
    const auto scopes = b.string_list("scopes", true);
    std::string joined;
    if (scopes) {
        for (const auto& s : *scopes) {
            if (s != "meter" && s != "billing") {
                b.refuse("scopes", "'scopes' may hold only \"meter\" and \"billing\"");
                break;
            }
            if (joined.find(s) == std::string::npos) joined += joined.empty() ? s : " " + s;
        }
        if (scopes->empty()) b.refuse("scopes", "'scopes' must name at least one of \"meter\" and \"billing\"");
    }
    if (b.failed()) co_return co_await answer_refusal(c.x, b);
    if (!co_await claim_idempotency_key(c)) co_return;
    const auto secret = secrets::generate("tgs_");
    const auto out = c.x.a.ledger.create_service_token({.id = 0,
                                                        .token_hash = c.x.a.keys_secret.hash(secret),
                                                        .token_prefix = secrets::display_prefix(secret),
                                                        .name = *name,
                                                        .scopes = joined,
                                                        .created_at_ms = 0,
                                                        .revoked_at_ms = std::nullopt});
    if (out.code != ledger::result::ok) co_return co_await answer_ledger_error(c, out.code);
    c.audit_target = fmt::format("service:{}", out.key_id);
    co_await answer_json(c, 201,
                         fmt::format(R"({{"id":{},"token":"{}","name":"{}","scopes":{}}})", out.key_id, secret,
                                     json_escape(*name), scopes_json(joined)));
}

// Every token, newest first, revoked ones included; never the secret.
awaitable<void> list_service_tokens(call& c) {
    std::string out = R"({"data":[)";
    bool first = true;
    for (const auto& t : c.x.a.ledger.service_tokens()) {
        if (!first) out += ',';
        first = false;
        std::string revoked = "null";
        if (t.revoked_at_ms) revoked = fmt::format("\"{}\"", rfc3339(*t.revoked_at_ms));
        out += fmt::format(R"({{"id":{},"name":"{}","prefix":"{}","scopes":{},"created_at":"{}","revoked_at":{}}})",
                           t.id, json_escape(t.name), json_escape(t.token_prefix), scopes_json(t.scopes),
                           rfc3339(t.created_at_ms), revoked);
    }
    out += "]}";
    co_await answer_json(c, 200, std::move(out));
}

awaitable<void> revoke_service_token(call& c) {
    const auto id = id_of(c.path_id);
    const auto out = id ? c.x.a.ledger.revoke_service_token(*id) : ledger::simple_outcome{ledger::result::unknown_key};
    if (out.code == ledger::result::unknown_key) {
        co_await reply_error(c.x, 404, "token_not_found", "No such service token", "id");
        co_return;
    }
    if (out.code != ledger::result::ok || !co_await durable(c.x.a, out.seq)) {
        co_await reply_error(c.x, 500, "storage_failed", "The service token was not revoked");
        co_return;
    }
    c.audit_target = fmt::format("service:{}", *id);
    co_await answer_json(c, 200, fmt::format(R"({{"id":{},"revoked":true}})", *id));
}

}  // namespace tollgate::proxy::admin
