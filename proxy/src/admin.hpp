// The admin API's inside (SPEC 6): who is calling, the request an endpoint
// handler gets, and the helpers every handler shares to read its input and
// write its answer. admin.cpp holds the route table: the one place that
// decides which role may call what.
#pragma once

#include "admin_input.hpp"
#include "exchange.hpp"

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::proxy::admin {

enum class role : std::uint8_t { none, admin, user, service };

struct principal {
    role who = role::none;
    std::int64_t user_id = 0;   // role::user
    std::int64_t key_id = 0;    // role::user: their key; role::service: the token's id
    std::string scopes;         // role::service, space-separated
    // "admin", "user:<id>", "service:<id>": the audit log's actor and the
    // scope of Idempotency-Keys.
    std::string name() const;
};

// What an Idempotency-Key means on a route (SPEC 4.3).
enum class idempotency : std::uint8_t {
    ignored,
    replayed,  // the handler passes the scoped key to the ledger, which replays the first answer
    required,  // required; claimed once the body is valid: the event id replays, another body conflicts
    secret,    // claimed once the body is valid, never replayed: a repeated key is a conflict
};

// One call of an endpoint.
struct call {
    exchange& x;
    const principal& p;
    std::string_view target;  // path and query
    std::string_view path_id;  // the `{id}` or `{code}` segment, if the route has one
    idempotency idem;
    std::string idempotency_key;  // the header, validated; empty when absent
    std::string audit_target;     // set by a handler: "user:12", "key:3"
};

// --- input -------------------------------------------------------------------

// Reading the request: admin_input.hpp.
// A refusal `b.failed()` recorded, answered as 400 with its `param`.
net::awaitable<void> answer_refusal(exchange& x, const body& b);

// The user an endpoint acts on: an admin names one (`user_id` in the query,
// or `body_user_id` when the body named it), a user is themselves and may
// name nobody else (403). On nullopt the answer has been sent.
net::awaitable<std::optional<std::int64_t>> subject(call& c, std::optional<std::int64_t> body_user_id = {});

// A `limit` and `cursor` pair; on nullopt the answer has been sent.
struct page_request {
    int limit = 50;
    std::optional<std::int64_t> after_id;
};
net::awaitable<std::optional<page_request>> read_page(call& c);

// For `required` and `secret` routes, called once the request is found
// valid (a refused request does not use up its key): records the key, or
// answers 409 when it was used before with another request (`secret`: at
// all). True when the call may go on.
net::awaitable<bool> claim_idempotency_key(call& c);

// --- output ------------------------------------------------------------------

std::string json_int_or_null(const std::optional<std::int64_t>& v);
std::string transaction_json(const ledger::transaction& t);
net::awaitable<void> answer_json(call& c, unsigned status, std::string body);
// A ledger refusal as the API's error (404 user_not_found, 402, 409, ...).
net::awaitable<void> answer_ledger_error(call& c, ledger::result code, std::string_view param = {});

// The route table as text, for the test that holds it against
// proxy/openapi.json: "POST /api/v1/users" and who may call it ("admin",
// "user", "service", "service:meter", "service:billing", or "anyone": no
// credentials needed).
struct operation {
    std::string method;
    std::string path;
    std::vector<std::string> roles;
};
std::vector<operation> operations();

// proxy/openapi.json, embedded (openapi.cpp).
std::string_view openapi_json();

// --- handlers, one per endpoint (admin_accounts.cpp, admin_credits.cpp,
// admin_metering.cpp, admin_coupons.cpp, admin_subscriptions.cpp,
// admin_openrouter.cpp) ---------------------------------------------------------
net::awaitable<void> create_user(call& c);
net::awaitable<void> list_users(call& c);
net::awaitable<void> get_user(call& c);
net::awaitable<void> patch_user(call& c);
net::awaitable<void> create_key(call& c);
net::awaitable<void> list_keys(call& c);
net::awaitable<void> revoke_key(call& c);
net::awaitable<void> create_service_token(call& c);
net::awaitable<void> list_service_tokens(call& c);
net::awaitable<void> revoke_service_token(call& c);
net::awaitable<void> balance(call& c);
net::awaitable<void> balance_stream(call& c);
net::awaitable<void> allocate(call& c);
net::awaitable<void> transactions(call& c);
net::awaitable<void> deduct(call& c);
net::awaitable<void> refund(call& c);
net::awaitable<void> track(call& c);
net::awaitable<void> usage_summary(call& c);
net::awaitable<void> usage_by_model(call& c);
net::awaitable<void> usage_by_date(call& c);
net::awaitable<void> free_tier(call& c);
net::awaitable<void> compare_tiers(call& c);
net::awaitable<void> switch_tier(call& c);
net::awaitable<void> roll_periods(call& c);
net::awaitable<void> create_coupon(call& c);
net::awaitable<void> redeem_coupon(call& c);
net::awaitable<void> validate_coupon(call& c);
net::awaitable<void> list_coupons(call& c);
net::awaitable<void> deactivate_coupon(call& c);
net::awaitable<void> audit_log(call& c);
// admin_openrouter.cpp
net::awaitable<void> create_openrouter_account(call& c);
net::awaitable<void> get_openrouter_account(call& c);
net::awaitable<void> sync_openrouter_balance(call& c);
net::awaitable<void> delete_openrouter_account(call& c);
net::awaitable<void> rotate_master_key(call& c);

}  // namespace tollgate::proxy::admin
