// The OpenRouter account endpoints (SPEC 6): a user's provisioned key,
// created, shown masked, synced and revoked; and the admin's master key
// rotation.
#include <fmt/format.h>

#include <limits>

#include "admin.hpp"
#include "master_key.hpp"
#include "provisioning.hpp"

namespace tollgate::proxy::admin {

using namespace net;

namespace {

constexpr std::int64_t max_id = std::numeric_limits<std::int64_t>::max();

awaitable<void> answer_failure(call& c, const openrouter::failure& f) {
    using kind = openrouter::failure::kind;
    if (f.what == kind::busy) co_return co_await reply_error(c.x, 409, "provisioning_in_progress", f.message);
    if (f.what == kind::storage) co_return co_await reply_error(c.x, 500, "storage_failed", f.message);
    if (f.timed_out) co_return co_await reply_error(c.x, 504, "upstream_timeout", f.message);
    co_await reply_error(c.x, 502, "upstream_error", f.message);
}

awaitable<bool> require_provisioning(call& c) {
    if (openrouter::provisioning_enabled(c.x.a)) co_return true;
    co_await reply_error(c.x, 409, "provisioning_disabled",
                         "OpenRouter key provisioning is off: set TOLLGATE_OPENROUTER_PROVISIONING_KEY");
    co_return false;
}

awaitable<void> account_not_found(call& c) {
    co_await reply_error(c.x, 404, "account_not_found", "This user has no provisioned OpenRouter key", "user_id");
}

}  // namespace

awaitable<void> create_openrouter_account(call& c) {
    body b(c.x.req.body());
    const auto user_id = b.integer("user_id", true, 1, max_id);
    if (b.failed()) co_return co_await answer_refusal(c.x, b);
    const auto user = co_await subject(c, user_id);
    if (!user) co_return;
    if (!c.x.a.ledger.find_user(*user)) co_return co_await answer_ledger_error(c, ledger::result::unknown_user);
    if (!co_await require_provisioning(c)) co_return;
    const auto before = c.x.a.ledger.find_openrouter_account(*user);
    const bool existed = before && (before->status == "active" || before->status == "disabled");
    auto done = co_await openrouter::provision(c.x.a, c.x.w, *user);
    if (done.error) co_return co_await answer_failure(c, *done.error);
    co_await answer_json(c, existed ? 200 : 201, openrouter::account_json(*done.account));
}

awaitable<void> get_openrouter_account(call& c) {
    const auto user = co_await subject(c);
    if (!user) co_return;
    const auto account = c.x.a.ledger.find_openrouter_account(*user);
    if (!account) co_return co_await account_not_found(c);
    co_await answer_json(c, 200, openrouter::account_json(*account));
}

awaitable<void> sync_openrouter_balance(call& c) {
    // A user syncing their own key may send no body at all.
    body b(c.x.req.body().empty() ? std::string("{}") : c.x.req.body());
    const auto user_id = b.integer("user_id", false, 1, max_id);
    if (b.failed()) co_return co_await answer_refusal(c.x, b);
    const auto user = co_await subject(c, user_id);
    if (!user) co_return;
    if (!c.x.a.ledger.find_openrouter_account(*user)) co_return co_await account_not_found(c);
    if (!co_await require_provisioning(c)) co_return;
    auto done = co_await openrouter::sync(c.x.a, c.x.w, *user);
    if (done.error) co_return co_await answer_failure(c, *done.error);
    co_await answer_json(c, 200, openrouter::account_json(*done.account));
}

awaitable<void> delete_openrouter_account(call& c) {
    const auto user = co_await subject(c);
    if (!user) co_return;
    if (!c.x.a.ledger.find_openrouter_account(*user)) co_return co_await account_not_found(c);
    if (!co_await require_provisioning(c)) co_return;
    auto done = co_await openrouter::revoke(c.x.a, c.x.w, *user);
    if (done.error) co_return co_await answer_failure(c, *done.error);
    co_await answer_json(c, 200, openrouter::account_json(*done.account));
}

awaitable<void> rotate_master_key(call& c) {
    auto& a = c.x.a;
    std::unique_lock lock(a.rotation_mu, std::try_to_lock);
    if (!lock.owns_lock()) {
        co_return co_await reply_error(c.x, 409, "rotation_in_progress", "A master key rotation is running");
    }
    const auto done = proxy::rotate_master_key(a.settings.master_key_file, a.ledger, a.keys_secret);
    lock.unlock();
    if (!done.ok) co_return co_await reply_error(c.x, 500, "rotation_failed", done.error);
    a.keys.invalidate_all();
    co_await answer_json(
        c, 200, fmt::format(R"({{"resealed":{},"rotated_at":"{}"}})", done.resealed, rfc3339(a.ledger.now_ms())));
}

}  // namespace tollgate::proxy::admin
