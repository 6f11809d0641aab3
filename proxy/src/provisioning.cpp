#include "provisioning.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <algorithm>

#include "admin_input.hpp"
#include "exchange.hpp"
#include "keys.hpp"
#include "openrouter_wire.hpp"
#include "tollgate/pricing/cost.hpp"

namespace tollgate::proxy::openrouter {

using namespace net;

namespace {

constexpr int max_attempts = 3;
constexpr std::size_t answer_limit = 4 << 20;
constexpr auto first_backoff = std::chrono::milliseconds(250);
constexpr auto longest_backoff = std::chrono::seconds(5);
// A pending account is tried again after [timeouts] provisioning_retry_ms
// (30 s), doubling up to an hour.
constexpr ledger::time_ms longest_retry_ms = 3'600'000;
// Estimated calls older than this are left as billed: OpenRouter no
// longer has them, or never will.
constexpr ledger::time_ms reconcile_horizon_ms = 24 * 3'600'000;
constexpr int reconcile_batch = 50;

// Named "<this database's prefix>-user-<id>": the clean-up before a retry
// deletes keys by name, and another tollgate sharing the OpenRouter account
// (a staging copy) must never match one of ours.
std::string key_name(const app& a, std::int64_t user_id) {
    return fmt::format("{}-user-{}", a.openrouter_key_prefix, user_id);
}

bool retryable_status(unsigned status) {
    return status == 408 || status == 429 || status == 500 || status == 502 || status == 503 || status == 504 ||
           status == 524 || status == 529;
}

std::chrono::milliseconds backoff(int attempt, const std::string& retry_after) {
    auto wait = first_backoff * (1 << attempt);
    if (!retry_after.empty() && retry_after.size() < 6 &&
        std::all_of(retry_after.begin(), retry_after.end(), [](char c) { return c >= '0' && c <= '9'; })) {
        wait = std::chrono::seconds(std::stoi(retry_after));
    }
    return std::min<std::chrono::milliseconds>(wait, longest_backoff);
}

failure failure_of(const json_answer& got, int attempts) {
    failure f;
    if (!got.answer) {
        f.timed_out = got.timed_out;
        f.message = got.timed_out ? "OpenRouter did not answer in time" : "OpenRouter could not be reached";
        return f;
    }
    f.status = got.answer->status;
    auto said = error_message(got.answer->body);
    if (said.size() > 300) said.resize(300);
    const std::string detail = said.empty() ? "" : fmt::format(": {}", said);
    const std::string times = attempts > 1 ? fmt::format(" {} times", attempts) : "";
    switch (f.status) {
        case 401:
            f.message = fmt::format(
                "OpenRouter refused the provisioning key (401){}; check "
                "TOLLGATE_OPENROUTER_PROVISIONING_KEY",
                detail);
            break;
        case 402: f.message = fmt::format("OpenRouter's account is out of credits (402){}", detail); break;
        case 403: f.message = fmt::format("OpenRouter forbade it (403){}", detail); break;
        case 404: f.message = fmt::format("OpenRouter does not know this key (404){}", detail); break;
        case 429: f.message = fmt::format("OpenRouter rate-limited the management API (429){}{}", times, detail); break;
        default:
            f.message = f.status >= 500 ? fmt::format("OpenRouter failed ({}){}{}", f.status, times, detail)
                                        : fmt::format("OpenRouter answered {}{}", f.status, detail);
    }
    return f;
}

struct management_answer {
    std::optional<fetched> ok;  // a 2xx answer
    failure error;
};

// One management call with retries: 429, 5xx and unreachable are tried
// again with backoff (Retry-After when given); a call that may have taken
// effect (`idempotent` false: bytes sent without an answer, or a 5xx) is
// not.
awaitable<management_answer> call(app& a, worker& w, json_call request, bool idempotent) {
    management_answer out;
    auto ex = co_await asio::this_coro::executor;
    for (int attempt = 0;; ++attempt) {
        auto got =
            co_await exchange_json(*w.openrouter, request, answer_limit, a.settings.openrouter_management_timeout);
        if (got.answer && got.answer->status >= 200 && got.answer->status < 300) {
            out.ok = std::move(got.answer);
            co_return out;
        }
        // A creation OpenRouter answered 5xx may have happened all the same:
        // it is left to the pending retry, which cleans up first.
        const bool again = got.answer ? (idempotent ? retryable_status(got.answer->status) : got.answer->status == 429)
                                      : (idempotent || !got.request_sent);
        if (!again || attempt + 1 >= max_attempts || a.draining) {
            out.error = failure_of(got, attempt + 1);
            co_return out;
        }
        asio::steady_timer timer(ex);
        timer.expires_after(backoff(attempt, got.answer ? got.answer->retry_after : std::string()));
        beast::error_code ec;
        co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
    }
}

std::string management_target(const app& a, std::string_view path) {
    return a.settings.openrouter.base_path + std::string(path);
}

// Percent-encodes an id for a query or a path segment.
std::string encode(std::string_view text) {
    std::string out;
    for (const unsigned char c : text) {
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' || c == '_' ||
            c == '.' || c == '~') {
            out += static_cast<char>(c);
        } else {
            out += fmt::format("%{:02X}", c);
        }
    }
    return out;
}

// Who may provision one user at a time: two concurrent attempts would
// create two keys.
struct busy_guard {
    app& a;
    std::int64_t user_id;
    bool held = false;
    busy_guard(app& app_, std::int64_t id) : a(app_), user_id(id) {
        std::lock_guard lock(a.provisioning_mu);
        held = a.provisioning_busy.insert(id).second;
    }
    ~busy_guard() {
        if (!held) return;
        std::lock_guard lock(a.provisioning_mu);
        a.provisioning_busy.erase(user_id);
    }
};

awaitable<bool> store(app& a, const ledger::openrouter_account& account) {
    const auto out = a.ledger.put_openrouter_account(account);
    if (out.code != ledger::result::ok) co_return false;
    const bool ok = co_await durable(a, out.seq);
    a.keys.invalidate_all();  // the managed credential of this user's calls
    co_return ok;
}

ledger::openrouter_account current_or_new(app& a, std::int64_t user_id) {
    if (auto found = a.ledger.find_openrouter_account(user_id)) return *found;
    ledger::openrouter_account fresh;
    fresh.user_id = user_id;
    fresh.label = key_name(a, user_id);
    fresh.created_at_ms = a.ledger.now_ms();
    return fresh;
}

awaitable<account_result> failed(app& a, ledger::openrouter_account account, failure f, bool schedule_retry) {
    account.last_error = f.message;
    if (schedule_retry) {
        account.attempts += 1;
        const auto shift = std::min<std::int64_t>(account.attempts - 1, 20);
        const ledger::time_ms first_retry_ms = a.settings.provisioning_retry.count();
        account.next_attempt_ms = a.ledger.now_ms() + std::min(first_retry_ms << shift, longest_retry_ms);
    }
    account_result out;
    if (co_await store(a, account)) out.account = account;
    out.error = std::move(f);
    co_return out;
}

void apply(ledger::openrouter_account& account, const key_info& k, ledger::time_ms at) {
    account.key_hash = k.hash;
    account.limit_micros = k.limit_micros;
    account.remaining_micros = k.remaining_micros;
    account.usage_micros = std::min(k.usage_micros, ledger::max_amount_micros);
    account.synced_at_ms = at;
    account.status = k.disabled ? "disabled" : "active";
    account.last_error.clear();
}

std::string limit_body(std::optional<std::int64_t> limit) {
    return limit ? fmt::format(R"("limit":{},"limit_reset":"monthly")", usd_text(*limit)) : R"("limit":null)";
}

}  // namespace

std::string key_name_prefix(ledger::ledger& l) {
    constexpr const char* setting = "openrouter_key_prefix";
    if (auto stored = l.setting(setting)) return *stored;
    unsigned char tag[4];
    randombytes_buf(tag, sizeof tag);
    const auto prefix = fmt::format("tollgate-{:02x}{:02x}{:02x}{:02x}", tag[0], tag[1], tag[2], tag[3]);
    const auto out = l.put_setting(setting, prefix);
    if (out.code != ledger::result::ok || !l.wait_durable(out.seq)) return {};
    return prefix;
}

bool provisioning_enabled(const app& a) {
    return !a.settings.openrouter_provisioning_key.empty();
}

std::optional<std::int64_t> key_limit_for(app& a, std::int64_t user_id) {
    const auto sub = a.ledger.find_subscription(user_id);
    if (!sub) return std::nullopt;
    const auto tier = a.ledger.find_tier(sub->tier);
    if (!tier) return std::nullopt;
    return 2 * tier->monthly_credits_micros;
}

awaitable<account_result> provision(app& a, worker& w, std::int64_t user_id) {
    account_result out;
    busy_guard busy(a, user_id);
    auto account = current_or_new(a, user_id);
    if (!busy.held) {
        out.account = account;
        out.error = failure{failure::kind::busy, 0, false, "A provisioning of this user's key is already running"};
        co_return out;
    }
    if (account.status == "active" || account.status == "disabled") {
        out.account = account;  // already provisioned: nothing to do
        co_return out;
    }
    const auto limit = key_limit_for(a, user_id);
    if (!limit) {
        out.error = failure{failure::kind::storage, 0, false, "No such user or subscription"};
        co_return out;
    }
    // A new key: nothing of a revoked one may show beside it.
    account.status = "pending";
    account.label = key_name(a, user_id);
    account.sealed_key.reset();
    account.key_masked.clear();
    account.key_hash.clear();
    account.limit_micros.reset();
    account.usage_micros = 0;
    account.synced_at_ms.reset();
    const std::string& bearer = a.settings.openrouter_provisioning_key;

    // An earlier attempt may have created a key whose answer never came:
    // such keys carry this user's name; they are deleted first.
    if (account.attempts > 0) {
        constexpr std::size_t page = 100;  // OpenRouter's page size (upstream-apis.md §1c)
        constexpr std::size_t most_pages = 1000;
        std::size_t offset = 0;
        for (std::size_t pages = 0; pages < most_pages; ++pages) {
            json_call list{http::verb::get,
                           management_target(a, fmt::format("/keys?include_disabled=true&offset={}", offset)),
                           bearer,
                           {}};
            auto listed = co_await call(a, w, list, true);
            if (!listed.ok) co_return co_await failed(a, account, listed.error, true);
            const auto keys = parse_key_list(listed.ok->body);
            if (!keys) {
                // Named, not a temporary in the co_await (GCC 12: see metered_call.cpp).
                const failure invalid{failure::kind::upstream, 502, false, "OpenRouter's key list was not valid"};
                co_return co_await failed(a, account, invalid, true);
            }
            std::size_t removed = 0;
            for (const auto& k : *keys) {
                if (k.name != account.label) continue;
                json_call del{http::verb::delete_, management_target(a, "/keys/" + encode(k.hash)), bearer, {}};
                auto deleted = co_await call(a, w, del, true);
                if (!deleted.ok && deleted.error.status != 404) {
                    co_return co_await failed(a, account, deleted.error, true);
                }
                ++removed;
            }
            if (keys->size() < page) break;
            offset += page - removed;  // the keys after the deleted ones moved up
        }
    }

    json_call create{http::verb::post, management_target(a, "/keys"), bearer,
                     fmt::format(R"({{"name":"{}",{}}})", account.label, limit_body(*limit))};
    auto created = co_await call(a, w, create, false);
    if (!created.ok) co_return co_await failed(a, account, created.error, true);
    auto parsed = parse_created_key(created.ok->body);
    if (!parsed) {
        const failure invalid{failure::kind::upstream, 502, false,
                              "OpenRouter's answer to the key creation was not valid"};
        co_return co_await failed(a, account, invalid, true);
    }
    account.sealed_key = a.keys_secret.seal(parsed->key, owner_context(user_id));
    account.key_masked = mask_key(parsed->key);
    sodium_memzero(parsed->key.data(), parsed->key.size());
    apply(account, parsed->info, a.ledger.now_ms());
    account.attempts = 0;
    account.next_attempt_ms.reset();
    if (!co_await store(a, account)) {
        out.error = failure{failure::kind::storage, 0, false, "The provisioned key could not be stored"};
        co_return out;
    }
    out.account = account;
    co_return out;
}

namespace {

// Records what a sync learned, or why it failed, on the key it read (and
// only if it is still that key: a revocation or a new key meanwhile wins).
awaitable<account_result> record_sync(app& a, const ledger::openrouter_account& read, const key_info* info,
                                      std::optional<failure> error) {
    account_result out;
    ledger::ledger::openrouter_sync sync;
    sync.user_id = read.user_id;
    sync.key_hash = read.key_hash;
    sync.failed = error.has_value();
    sync.last_error = error ? error->message : std::string();
    if (info) {
        sync.limit_micros = info->limit_micros;
        sync.remaining_micros = info->remaining_micros;
        sync.usage_micros = std::min(info->usage_micros, ledger::max_amount_micros);
        sync.status = info->disabled ? "disabled" : "active";
        sync.synced_at_ms = a.ledger.now_ms();
    }
    const auto staged = a.ledger.record_openrouter_sync(sync);
    const bool stored = staged.code == ledger::result::ok && co_await durable(a, staged.seq);
    a.keys.invalidate_all();
    out.account = a.ledger.find_openrouter_account(read.user_id);
    if (error) {
        out.error = std::move(error);
    } else if (!stored) {
        out.error = failure{failure::kind::storage, 0, false, "The synced figures could not be stored"};
    }
    co_return out;
}

}  // namespace

awaitable<account_result> sync(app& a, worker& w, std::int64_t user_id) {
    account_result out;
    auto found = a.ledger.find_openrouter_account(user_id);
    if (!found || found->key_hash.empty() || found->status == "deleted" || found->status == "pending") {
        out.account = found;
        co_return out;
    }
    const auto account = *found;
    const std::string& bearer = a.settings.openrouter_provisioning_key;
    json_call get{http::verb::get, management_target(a, "/keys/" + encode(account.key_hash)), bearer, {}};
    auto got = co_await call(a, w, get, true);
    if (!got.ok) co_return co_await record_sync(a, account, nullptr, got.error);
    auto info = parse_key_answer(got.ok->body);
    if (!info) {
        const failure invalid{failure::kind::upstream, 502, false, "OpenRouter's key answer was not valid"};
        co_return co_await record_sync(a, account, nullptr, invalid);
    }
    // The key follows the tier's limit, and the user's state: a suspended
    // or deleted user's key is disabled, an active user's enabled again.
    const auto limit = key_limit_for(a, user_id);
    const auto user = a.ledger.find_user(user_id);
    const bool should_disable = user && user->status != "active";
    std::string changes;
    if (limit && info->limit_micros != limit) changes = limit_body(*limit);
    if (user && info->disabled != should_disable) {
        if (!changes.empty()) changes += ',';
        changes += should_disable ? R"("disabled":true)" : R"("disabled":false)";
    }
    if (!changes.empty()) {
        json_call patch{http::verb::patch, management_target(a, "/keys/" + encode(account.key_hash)), bearer,
                        fmt::format("{{{}}}", changes)};
        auto patched = co_await call(a, w, patch, true);
        if (!patched.ok) co_return co_await record_sync(a, account, nullptr, patched.error);
        if (auto after = parse_key_answer(patched.ok->body)) info = std::move(after);
    }
    co_return co_await record_sync(a, account, &*info, std::nullopt);
}

awaitable<account_result> revoke(app& a, worker& w, std::int64_t user_id) {
    account_result out;
    busy_guard busy(a, user_id);
    auto found = a.ledger.find_openrouter_account(user_id);
    if (!found) co_return out;
    if (!busy.held) {
        out.account = found;
        out.error = failure{failure::kind::busy, 0, false, "A provisioning of this user's key is running"};
        co_return out;
    }
    auto account = *found;
    if (!account.key_hash.empty() && account.status != "deleted") {
        json_call del{http::verb::delete_,
                      management_target(a, "/keys/" + encode(account.key_hash)),
                      a.settings.openrouter_provisioning_key,
                      {}};
        auto deleted = co_await call(a, w, del, true);
        if (!deleted.ok && deleted.error.status != 404) co_return co_await failed(a, account, deleted.error, false);
    }
    account.status = "deleted";
    account.sealed_key.reset();
    account.last_error.clear();
    account.next_attempt_ms.reset();
    account.synced_at_ms = a.ledger.now_ms();
    if (!co_await store(a, account)) {
        out.error = failure{failure::kind::storage, 0, false, "The revocation could not be stored"};
        co_return out;
    }
    out.account = account;
    co_return out;
}

void follow_user(app& a, worker& w, std::int64_t user_id) {
    if (!provisioning_enabled(a)) return;
    asio::co_spawn(
        *w.io, [&a, &w, user_id]() -> awaitable<void> { (void)co_await sync(a, w, user_id); }, asio::detached);
}

namespace {

// Prices an estimated call again from what OpenRouter says it cost.
awaitable<void> reconcile(app& a, worker& w) {
    const std::string& bearer =
        a.settings.openrouter_key.empty() ? a.settings.openrouter_provisioning_key : a.settings.openrouter_key;
    const auto now = a.ledger.now_ms();
    // Round the queue from where the last pass stopped: calls OpenRouter
    // cannot price yet do not hold back the ones after them.
    const auto due = a.ledger.usage_to_reconcile(now - reconcile_horizon_ms, now - a.settings.reconcile_after.count(),
                                                 reconcile_batch, a.reconcile_cursor);
    a.reconcile_cursor = due.size() < static_cast<std::size_t>(reconcile_batch) ? 0 : due.back().usage_event_id;
    for (const auto& e : due) {
        if (a.draining) co_return;
        json_call get{http::verb::get, management_target(a, "/generation?id=" + encode(e.generation_id)), bearer, {}};
        auto got = co_await call(a, w, get, true);
        if (!got.ok) continue;  // 404 until OpenRouter has it; tried again next time
        const auto g = parse_generation(got.ok->body);
        if (!g || g->is_byok) continue;  // a BYOK call is charged nothing: nothing to correct
        const auto sub = a.ledger.find_subscription(e.user_id);
        const auto policy = sub ? a.keys.policy(sub->tier) : std::nullopt;
        if (!policy) continue;
        const auto live = a.catalog.get();
        const bool free = model_is_free(*live, e.model);
        const auto ch =
            pricing::price_call(g->total_cost_pico, free, g->prompt_tokens + g->completion_tokens, *policy, false);
        if (ch.status != pricing::cost_status::ok) continue;
        ledger::reconcile_request r;
        r.usage_event_id = e.usage_event_id;
        r.user_id = e.user_id;
        r.generation_id = e.generation_id;
        r.provider_cost_micros = ch.provider_cost_micros;
        r.markup_micros = ch.markup_micros;
        r.charged_micros = ch.charged_micros;
        r.prompt_tokens = g->prompt_tokens;
        r.completion_tokens = g->completion_tokens;
        const auto done = a.ledger.reconcile_usage(r);
        if (done.code == ledger::result::ok) a.stats.count_reconciliation(done.delta_micros);
    }
}

}  // namespace

awaitable<void> maintain(app& a, worker& w, bool sync_due) {
    if (provisioning_enabled(a)) {
        const auto now = a.ledger.now_ms();
        for (const auto& account : a.ledger.openrouter_accounts()) {
            if (a.draining) co_return;
            if (account.status == "pending" && account.next_attempt_ms.value_or(0) <= now) {
                const auto user = a.ledger.find_user(account.user_id);
                if (!user || user->status != "active") continue;  // provisioned if they come back
                (void)co_await provision(a, w, account.user_id);
            } else if (sync_due && (account.status == "active" || account.status == "disabled")) {
                (void)co_await sync(a, w, account.user_id);
            }
        }
    }
    co_await reconcile(a, w);
}

std::string account_json(const ledger::openrouter_account& account) {
    // OpenRouter's own figure: the limit resets monthly, usage is all-time.
    const auto remaining =
        account.remaining_micros ? fmt::format("{}", *account.remaining_micros)
        : account.limit_micros
            ? fmt::format("{}", std::max<std::int64_t>(0, *account.limit_micros - account.usage_micros))
            : std::string("null");
    return fmt::format(
        R"({{"user_id":{},"label":"{}","key_masked":{},"key_hash":{},"limit_micros":{},"usage_micros":{},"remaining_micros":{},"status":"{}","synced_at":{},"last_error":{},"created_at":"{}"}})",
        account.user_id, json_escape(account.label),
        account.key_masked.empty() ? "null" : fmt::format("\"{}\"", json_escape(account.key_masked)),
        account.key_hash.empty() ? "null" : fmt::format("\"{}\"", json_escape(account.key_hash)),
        account.limit_micros ? fmt::format("{}", *account.limit_micros) : "null", account.usage_micros, remaining,
        account.status, account.synced_at_ms ? fmt::format("\"{}\"", admin::rfc3339(*account.synced_at_ms)) : "null",
        account.last_error.empty() ? "null" : fmt::format("\"{}\"", json_escape(account.last_error)),
        admin::rfc3339(account.created_at_ms));
}

}  // namespace tollgate::proxy::openrouter
