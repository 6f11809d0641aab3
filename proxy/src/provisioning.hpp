// A provisioned OpenRouter key per user (SPEC 6 and 7, issue #7): created
// through OpenRouter's key management API with the provisioning key, kept
// sealed in the ledger, used for the user's managed traffic, synced, and
// revoked. Also the reconciliation of calls billed on an estimate.
#pragma once

#include <optional>
#include <string>

#include "app.hpp"

namespace tollgate::proxy::openrouter {

// Why a management call failed, for the admin API and the account's
// last_error. Never holds a key.
struct failure {
    enum class kind : std::uint8_t { upstream, busy, storage };
    kind what = kind::upstream;  // busy: another attempt for this user runs; storage: the ledger failed
    unsigned status = 0;         // OpenRouter's HTTP status; 0 when no answer came
    bool timed_out = false;
    std::string message;
};

struct account_result {
    std::optional<ledger::openrouter_account> account;  // as stored afterwards
    std::optional<failure> error;                       // set when OpenRouter refused or failed
};

bool provisioning_enabled(const app& a);

// This database's prefix of its keys' names ("tollgate-1a2b3c4d"), made
// once and kept in the settings; empty when it cannot be stored.
std::string key_name_prefix(ledger::ledger& l);

// The key's safety limit (SPEC 7): twice the monthly credits of the user's
// tier, reset monthly.
std::optional<std::int64_t> key_limit_for(app& a, std::int64_t user_id);

// Creates the user's key. A failure leaves the account `pending` with the
// error and a time for the next attempt. A retry first deletes keys an
// earlier attempt may have created without tollgate seeing the answer
// (same name), so a user never holds two.
net::awaitable<account_result> provision(app& a, worker& w, std::int64_t user_id);
// Reads usage, limit and state from OpenRouter; puts the limit right when
// the tier changed, and the key's state when the user's did.
net::awaitable<account_result> sync(app& a, worker& w, std::int64_t user_id);
// Deletes the key upstream (already gone counts as done) and forgets it.
net::awaitable<account_result> revoke(app& a, worker& w, std::int64_t user_id);
// After a tier or status change: the key's limit follows the tier, and the
// key is disabled while the user is suspended or deleted (enabled again
// when they are active), in the background. A failure waits for the next
// sync; a downgrade at a period's end is put right by the periodic sync.
void follow_user(app& a, worker& w, std::int64_t user_id);

// The periodic job: pending accounts whose retry is due, every account
// when `sync_due`, and estimated calls OpenRouter can now price.
net::awaitable<void> maintain(app& a, worker& w, bool sync_due);

// The account as the admin API shows it (SPEC 6).
std::string account_json(const ledger::openrouter_account& account);

}  // namespace tollgate::proxy::openrouter
