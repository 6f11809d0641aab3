// The tollgate command: `serve`, the ledger's commands, the pricing tools
// and a demo.
#include "admin_input.hpp"
#include "master_key.hpp"
#include "secrets.hpp"
#include "tollgate/ledger/ledger.hpp"
#include "tollgate/pricing/catalog.hpp"
#include "tollgate/pricing/cost.hpp"
#include "tollgate/pricing/tokens.hpp"
#include "tollgate/proxy/config.hpp"
#include "tollgate/proxy/server.hpp"

#include <fmt/format.h>

#include <charconv>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <memory>
#include <optional>
#include <iterator>
#include <map>
#include <unistd.h>
#include <cstring>
#include <string>
#include <vector>

namespace {

namespace ledger = tollgate::ledger;
namespace pricing = tollgate::pricing;
namespace proxy = tollgate::proxy;

std::optional<std::string> flag_value(const std::vector<std::string>& args, const std::string& flag) {
    for (std::size_t i = 0; i + 1 < args.size(); ++i) {
        if (args[i] == flag) return args[i + 1];
    }
    return std::nullopt;
}

std::string json_string(std::string_view text) {
    std::string out = "\"";
    for (const char c : text) {
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            default:
                if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", c);
                else out += c;
        }
    }
    return out + "\"";
}

std::optional<std::string> read_file(const std::string& path) {
    std::FILE* f = std::fopen(path.c_str(), "rb");
    if (!f) return std::nullopt;
    std::string text;
    char buffer[65536];
    for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, f)) > 0;) text.append(buffer, n);
    std::fclose(f);
    return text;
}

std::shared_ptr<const pricing::catalog> load_catalog(const std::string& path, bool litellm = false) {
    const auto text = read_file(path);
    if (!text) {
        fmt::print(stderr, "tollgate: cannot read {}\n", path);
        return nullptr;
    }
    auto parsed = litellm ? pricing::parse_litellm_prices(*text) : pricing::parse_openrouter_models(*text);
    if (parsed.status != pricing::catalog_status::ok) {
        fmt::print(stderr, "tollgate: {}: {} ({})\n", path, parsed.message, pricing::to_string(parsed.status));
        return nullptr;
    }
    return parsed.value;
}

int run_catalog_inspect(const std::vector<std::string>& args) {
    const auto format = flag_value(args, "--format").value_or("openrouter");
    if (args.size() < 3 || args[1] != "inspect" || (format != "openrouter" && format != "litellm")) {
        fmt::print(stderr, "usage: tollgate catalog inspect FILE [--format openrouter|litellm]\n");
        return 2;
    }
    const auto c = load_catalog(args[2], format == "litellm");
    if (!c) return 1;
    std::size_t free = 0, unpriced = 0, with_overrides = 0;
    for (const auto& m : c->models()) {
        free += m.free;
        unpriced += m.unpriced;
        with_overrides += !m.overrides.empty();
    }
    fmt::print("{{\"models\": {}, \"free\": {}, \"unpriced\": {}, \"with_overrides\": {}, \"content_hash\": {}}}\n",
               c->models().size(), free, unpriced, with_overrides, json_string(c->content_hash()));
    return 0;
}

std::optional<std::int64_t> count_flag(const std::vector<std::string>& args, const std::string& flag, bool required) {
    const auto v = flag_value(args, flag);
    if (!v) return required ? std::nullopt : std::optional<std::int64_t>(0);
    std::int64_t n = 0;
    const auto [end, ec] = std::from_chars(v->data(), v->data() + v->size(), n);
    if (ec != std::errc() || end != v->data() + v->size() || n < 0) return std::nullopt;
    return n;
}

// The UTC time of day (HHMM) of an RFC 3339 timestamp such as
// 2026-08-19T02:00:00Z or 2026-08-19T04:30:00.5+02:30.
std::optional<int> utc_hhmm_of_rfc3339(const std::string& text) {
    int year = 0, month = 0, day = 0, hour = 0, minute = 0, second = 0, consumed = 0;
    if (std::sscanf(text.c_str(), "%4d-%2d-%2d%*1[Tt ]%2d:%2d:%2d%n", &year, &month, &day, &hour, &minute, &second,
                    &consumed) != 6 ||
        month < 1 || month > 12 || day < 1 || day > 31 || hour > 23 || minute > 59 || second > 60) {
        return std::nullopt;
    }
    std::size_t i = static_cast<std::size_t>(consumed);
    if (i < text.size() && text[i] == '.') {
        ++i;
        const std::size_t digits = i;
        while (i < text.size() && text[i] >= '0' && text[i] <= '9') ++i;
        if (i == digits) return std::nullopt;
    }
    int offset_minutes = 0;
    if (i < text.size() && (text[i] == 'Z' || text[i] == 'z')) {
        ++i;
    } else if (i < text.size() && (text[i] == '+' || text[i] == '-')) {
        int oh = 0, om = 0, n = 0;
        if (std::sscanf(text.c_str() + i + 1, "%2d:%2d%n", &oh, &om, &n) != 2 || n != 5 || oh > 23 || om > 59)
            return std::nullopt;
        offset_minutes = (text[i] == '+' ? 1 : -1) * (oh * 60 + om);
        i += 6;
    } else {
        return std::nullopt;
    }
    if (i != text.size()) return std::nullopt;
    const int minutes = ((hour * 60 + minute - offset_minutes) % 1440 + 1440) % 1440;
    return minutes / 60 * 100 + minutes % 60;
}

int quote_error(const char* code, const std::string& message) {
    fmt::print(stderr, "{{\"error\": {{\"code\": \"{}\", \"message\": {}}}}}\n", code, json_string(message));
    return 1;
}

int run_quote(const std::vector<std::string>& args) {
    const auto catalog_path = flag_value(args, "--catalog");
    const auto model_id = flag_value(args, "--model");
    const auto tier_id = flag_value(args, "--tier");
    const auto prompt = count_flag(args, "--prompt-tokens", true);
    const auto completion = count_flag(args, "--completion-tokens", true);
    const auto cached = count_flag(args, "--cached-tokens", false);
    const auto reasoning = count_flag(args, "--reasoning-tokens", false);
    if (!catalog_path || !model_id || !tier_id || !prompt || !completion || !cached || !reasoning) {
        fmt::print(stderr, "usage: tollgate quote --catalog FILE --model ID --tier TIER --prompt-tokens N "
                           "--completion-tokens N [--cached-tokens N] [--reasoning-tokens N] "
                           "[--upstream-cost DECIMAL] [--at RFC3339-TIME]\n");
        return 2;
    }
    const pricing::tier_policy* tier = nullptr;
    for (const auto& t : pricing::default_tier_policies()) {
        if (t.id == *tier_id) tier = &t;
    }
    if (!tier) return quote_error("unknown_tier", fmt::format("no tier named {}", *tier_id));
    int hhmm = 0;
    if (const auto at = flag_value(args, "--at")) {
        const auto parsed = utc_hhmm_of_rfc3339(*at);
        if (!parsed) return quote_error("invalid_time", "--at takes an RFC 3339 time, e.g. 2026-08-19T02:00:00Z");
        hhmm = *parsed;
    } else {
        const std::time_t now = std::time(nullptr);
        std::tm utc{};
        gmtime_r(&now, &utc);
        hhmm = utc.tm_hour * 100 + utc.tm_min;
    }
    const auto format = flag_value(args, "--format").value_or("openrouter");
    const auto c = load_catalog(*catalog_path, format == "litellm");
    if (!c) return 1;
    const pricing::model* m = c->find(*model_id);
    if (!m) return quote_error("model_not_found", fmt::format("{} is not in the catalog", *model_id));
    if (tier->free_models_only && !m->free)
        return quote_error("model_not_allowed", fmt::format("the {} tier may use free models only", tier->id));

    std::int64_t cost_pico = 0;
    const char* source = "catalog";
    if (const auto upstream = flag_value(args, "--upstream-cost")) {
        const auto parsed = pricing::parse_usd_pico(*upstream);
        if (parsed.status != pricing::price_status::ok)
            return quote_error("invalid_upstream_cost", fmt::format("--upstream-cost {} is not a price", *upstream));
        cost_pico = parsed.pico;
        source = "upstream";
    } else {
        const pricing::usage u{.prompt_tokens = *prompt, .completion_tokens = *completion, .cached_tokens = *cached,
                               .reasoning_tokens = *reasoning};
        // TTS models are priced per character of the input (--characters).
        const auto characters = count_flag(args, "--characters", false);
        if (!characters) return quote_error("invalid_usage", "--characters takes a count");
        const auto cost = m->input_pico_per_character ? pricing::tts_cost(*m, *characters)
                                                      : pricing::catalog_cost(m->prices_for(*prompt, hhmm), u);
        if (cost.status == pricing::cost_status::unpriced)
            return quote_error("unpriced_model", fmt::format("{} is priced by the router: pass --upstream-cost", m->id));
        if (cost.status != pricing::cost_status::ok)
            return quote_error(std::string(pricing::to_string(cost.status)).c_str(), "the usage cannot be priced");
        cost_pico = cost.provider_cost_pico;
    }
    const auto charge = pricing::price_call(cost_pico, m->free, *prompt + *completion, *tier, false);
    if (charge.status != pricing::cost_status::ok)
        return quote_error(std::string(pricing::to_string(charge.status)).c_str(), "the cost is out of range");
    fmt::print("{{\"model\": {}, \"free\": {}, \"provider_cost_pico\": {}, \"markup_pico\": {}, "
               "\"charged_micros\": {}, \"price_source\": \"{}\"}}\n",
               json_string(m->id), m->free, charge.provider_cost_pico, charge.markup_pico, charge.charged_micros,
               source);
    return 0;
}

int run_tokens(const std::vector<std::string>& args) {
    const auto name = flag_value(args, "--encoding");
    const auto e = name ? pricing::parse_encoding(*name) : std::nullopt;
    if (!e) {
        fmt::print(stderr, "usage: tollgate tokens --encoding o200k_base|cl100k_base < TEXT\n");
        return 2;
    }
    std::string text;
    char buffer[65536];
    for (std::size_t n; (n = std::fread(buffer, 1, sizeof buffer, stdin)) > 0;) text.append(buffer, n);
    if (std::ferror(stdin)) {
        fmt::print(stderr, "tollgate tokens: cannot read standard input\n");
        return 1;
    }
    fmt::print("{}\n", pricing::tokenizer::get(*e)->count(text));
    return 0;
}

constexpr const char* usage_text = R"(tollgate — a transparent metering proxy for LLM APIs

Usage: tollgate <command> [options]

Commands:
  migrate          apply pending schema migrations (refused while a server holds the database)
  check-ledger     prove the ledger invariants (read-only, safe on a live database)
  roll-periods [--now RFC3339-TIME]
                   roll every billing period whose boundary has passed (by --now), as the server's
                   scheduler does each minute (refused while a server holds the database)
  rotate-master-key
                   replace the master key file with a new random key and re-encrypt every stored
                   upstream key under it (refused while a server holds the database; admins can do it
                   on a running server with POST /api/v1/master-key/rotate)
  serve            run the proxy (configuration from TOLLGATE_* variables, see README)
  demo             create a demo database with a few users and the coupons WELCOME10, FREEMONTH and
                   EARLYBIRD, give each user a new key, print balances
  catalog inspect FILE [--format openrouter|litellm]
                   summarise an OpenRouter /models file (or LiteLLM's price map) as JSON
                   {models, free, unpriced, with_overrides}
  quote --catalog FILE --model ID --tier TIER --prompt-tokens N --completion-tokens N
        [--cached-tokens N] [--reasoning-tokens N] [--characters N] [--upstream-cost DECIMAL]
        [--at RFC3339-TIME] [--format openrouter|litellm]
                   price one call as JSON {model, free, provider_cost_pico, markup_pico,
                   charged_micros, price_source}
  tokens --encoding o200k_base|cl100k_base
                   count the tokens of the UTF-8 text on standard input (invalid bytes count as U+FFFD)
  --version        print the version
  --help           print this help

Options:
  --db PATH        the database (default: $TOLLGATE_DB or ./tollgate.db)

Exit status: 0 on success, 1 when the command failed, 2 on a usage error.
)";

std::string database_path(const std::vector<std::string>& args) {
    for (std::size_t i = 0; i + 1 < args.size(); ++i) {
        if (args[i] == "--db") return args[i + 1];
    }
    if (const char* env = std::getenv("TOLLGATE_DB"); env && *env) return env;
    return "./tollgate.db";
}

std::string usd(std::int64_t micros) {
    const char* sign = micros < 0 ? "-" : "";
    const std::uint64_t magnitude = micros < 0 ? 0 - static_cast<std::uint64_t>(micros) : static_cast<std::uint64_t>(micros);
    return fmt::format("{}${}.{:06}", sign, magnitude / 1'000'000, magnitude % 1'000'000);
}

int run_migrate(const std::string& path) {
    const auto r = ledger::migrate(path);
    if (r.error != ledger::open_error::none) {
        fmt::print(stderr, "tollgate migrate: {} ({})\n", r.message, ledger::to_string(r.error));
        return 1;
    }
    if (r.from_version == r.to_version) {
        fmt::print("{}: schema is at version {}, nothing to do\n", path, r.to_version);
    } else {
        fmt::print("{}: migrated schema from version {} to {}\n", path, r.from_version, r.to_version);
    }
    return 0;
}

int run_check(const std::string& path) {
    const auto r = ledger::check_database(path);
    if (!r.ok) {
        fmt::print(stderr, "tollgate check-ledger: FAILED, {} problem(s):\n", r.problems.size());
        for (const auto& p : r.problems) fmt::print(stderr, "  {}\n", p);
        return 1;
    }
    fmt::print("{}: ledger OK ({} users, {} grants, {} transactions checked)\n", path, r.users_checked,
               r.grants_checked, r.transactions_checked);
    return 0;
}

int run_serve() {
    std::map<std::string, std::string> env;
    for (char** e = environ; *e; ++e) {
        const std::string_view entry(*e);
        const auto eq = entry.find('=');
        if (eq != std::string_view::npos && entry.starts_with("TOLLGATE_")) {
            env.emplace(entry.substr(0, eq), entry.substr(eq + 1));
        }
    }
    auto loaded = proxy::load_config(env);
    if (!loaded.value) {
        fmt::print(stderr, "tollgate serve: {}\n", loaded.error);
        return 2;
    }
    return proxy::serve(*loaded.value);
}

// A new master key, every sealed blob re-encrypted under it (SPEC 7).
int run_rotate_master_key(const std::string& path) {
    auto opened = ledger::ledger::open({.path = path});
    if (!opened.value) {
        fmt::print(stderr, "tollgate rotate-master-key: {} ({})\n", opened.message, ledger::to_string(opened.error));
        return 1;
    }
    auto& l = *opened.value;
    const char* env_file = std::getenv("TOLLGATE_MASTER_KEY_FILE");
    const std::string key_file = env_file && *env_file ? env_file : "./tollgate.key";
    std::string error;
    auto keys = proxy::open_secrets(key_file, l, error);
    if (!keys) {
        fmt::print(stderr, "tollgate rotate-master-key: {}\n", error);
        return 1;
    }
    const auto done = proxy::rotate_master_key(key_file, l, *keys);
    if (!done.ok) {
        fmt::print(stderr, "tollgate rotate-master-key: {}\n", done.error);
        return 1;
    }
    fmt::print("rotated the master key in {}: {} sealed keys re-encrypted\n", key_file, done.resealed);
    return 0;
}

// Rolls every period whose boundary is at or before --now (default: now),
// as the server's scheduler would; refused while a server holds the
// database. Running it twice for one time changes nothing.
int run_roll_periods(const std::vector<std::string>& args, const std::string& path) {
    std::optional<ledger::time_ms> now;
    for (std::size_t i = 1; i < args.size(); ++i) {
        if (args[i] != "--now") continue;
        if (i + 1 >= args.size() || !(now = proxy::admin::parse_time(args[i + 1]))) {
            fmt::print(stderr, "tollgate roll-periods: --now needs an RFC 3339 time (2026-12-01T00:00:00Z)\n");
            return 2;
        }
    }
    ledger::options o{.path = path};
    if (now) o.clock = [t = *now] { return t; };
    auto opened = ledger::ledger::open(std::move(o));
    if (!opened.value) {
        fmt::print(stderr, "tollgate roll-periods: {} ({})\n", opened.message, ledger::to_string(opened.error));
        return 1;
    }
    auto& l = *opened.value;
    const auto rolled = l.roll_periods();
    if (rolled.code != ledger::result::ok || !l.wait_durable(rolled.seq)) {
        fmt::print(stderr, "tollgate roll-periods: the ledger failed: {}\n", ledger::to_string(rolled.code));
        return 1;
    }
    const auto report = l.check();
    fmt::print("rolled {} period boundaries up to {}; ledger check: {}\n", rolled.count,
               proxy::admin::rfc3339(l.now_ms()), report.ok ? "OK" : "FAILED");
    return report.ok ? 0 : 1;
}

int run_demo(const std::string& path) {
    auto opened = ledger::ledger::open(ledger::options{.path = path});
    if (!opened.value) {
        fmt::print(stderr, "tollgate demo: {} ({})\n", opened.message, ledger::to_string(opened.error));
        return 1;
    }
    auto& l = *opened.value;
    struct demo_user {
        const char* email;
        const char* tier;
    };
    const demo_user demo[] = {{"ada@example.com", "free"},
                              {"grace@example.com", "starter"},
                              {"linus@example.com", "professional"},
                              {"barbara@example.com", "enterprise"}};
    std::vector<std::int64_t> ids;
    for (const auto& d : demo) {
        auto created = l.create_user({.email = d.email, .name = "", .tier = d.tier, .actor = "demo"});
        if (created.code == ledger::result::user_exists) continue;  // a second run reuses the database
        if (created.code != ledger::result::ok) {
            fmt::print(stderr, "tollgate demo: create {}: {}\n", d.email, ledger::to_string(created.code));
            return 1;
        }
        ids.push_back(created.user_id);
    }
    // The demo's coupons (SPEC 3's examples); kept when they exist.
    {
        ledger::coupon welcome;
        welcome.code = "WELCOME10";
        welcome.kind = ledger::coupon_kind::credit;
        welcome.amount_micros = 10'000'000;
        ledger::coupon free_month;
        free_month.code = "FREEMONTH";
        free_month.kind = ledger::coupon_kind::free_month;
        free_month.tier = "starter";
        ledger::coupon early;
        early.code = "EARLYBIRD";
        early.kind = ledger::coupon_kind::percent_off;
        early.percent_off = 20;
        early.duration_months = 3;
        for (const auto& c : {welcome, free_month, early}) {
            const auto made = l.create_coupon(c);
            if (made.code != ledger::result::ok && made.code != ledger::result::coupon_exists) {
                fmt::print(stderr, "tollgate demo: coupon {}: {}\n", c.code, ledger::to_string(made.code));
                return 1;
            }
        }
    }
    if (ids.size() == std::size(demo)) {  // a fresh database: meter one call, redeem one coupon
        // One metered call for the starter user: hold, then settle.
        const auto hold = l.reserve(ids[1], 250'000, "demo-request-1");
        if (!l.wait_durable(hold.seq)) {
            fmt::print(stderr, "tollgate demo: the ledger failed to commit\n");
            return 1;
        }
        ledger::usage_event usage{.request_id = "", .model = "openai/gpt-4o-mini", .prompt_tokens = 1200,
                                  .completion_tokens = 300, .provider_cost_micros = 360, .markup_micros = 36};
        const auto settled = l.settle(hold.hold_id, 396, usage);
        const auto bonus = l.redeem_coupon(ids[0], "WELCOME10", "demo");
        if (hold.code != ledger::result::ok || settled.code != ledger::result::ok || bonus.code != ledger::result::ok ||
            bonus.refusal != ledger::coupon_refusal::none) {
            fmt::print(stderr, "tollgate demo: {} / {} / {} {}\n", ledger::to_string(hold.code),
                       ledger::to_string(settled.code), ledger::to_string(bonus.code), ledger::to_string(bonus.refusal));
            return 1;
        }
    }
    l.flush();
    // A new key per demo user on every run: keys are shown only once.
    std::string error;
    const char* key_file = std::getenv("TOLLGATE_MASTER_KEY_FILE");
    auto keys = proxy::open_secrets(key_file && *key_file ? key_file : "./tollgate.key", l, error);
    if (!keys) {
        fmt::print(stderr, "tollgate demo: {}\n", error);
        return 1;
    }
    fmt::print("demo database: {}\n\n{:<24} {:<14} {:>14} {:>14} {:>14}  {}\n", path, "user", "tier", "balance",
               "reserved", "available", "new key (shown once)");
    for (std::int64_t id = 1;; ++id) {
        const auto user = l.find_user(id);
        if (!user) break;
        const auto secret = proxy::secrets::generate("tg_");
        const auto key = l.create_key({.user_id = id, .key_hash = keys->hash(secret),
                                       .key_prefix = proxy::secrets::display_prefix(secret), .name = "demo"});
        const auto b = l.get_balance(id);
        const auto sub = l.find_subscription(id);
        fmt::print("{:<24} {:<14} {:>14} {:>14} {:>14}  {}\n", user->email, sub ? sub->tier : "-",
                   usd(b->balance_micros), usd(b->reserved_micros), usd(b->available_micros),
                   key.code == ledger::result::ok ? secret : std::string(ledger::to_string(key.code)));
    }
    fmt::print("\ncoupons:");
    for (const auto& c : l.coupons()) fmt::print(" {} ({}, {} used)", c.code, ledger::to_string(c.kind), c.uses);
    const auto report = l.check();
    fmt::print("\n\nledger check: {} ({} transactions)\n", report.ok ? "OK" : "FAILED", report.transactions_checked);
    return report.ok ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
    std::vector<std::string> args(argv + 1, argv + argc);
    if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
        fmt::print("{}", usage_text);
        return args.empty() ? 2 : 0;
    }
    const std::string& command = args[0];
    if (command == "--version") {
        fmt::print("tollgate {} (schema version {})\n", TOLLGATE_VERSION, ledger::schema_version_of_binary());
        return 0;
    }
    const std::string path = database_path(args);
    if (command == "migrate") return run_migrate(path);
    if (command == "check-ledger") return run_check(path);
    if (command == "demo") return run_demo(path);
    if (command == "roll-periods") return run_roll_periods(args, path);
    if (command == "rotate-master-key") return run_rotate_master_key(path);
    if (command == "serve") return run_serve();
    if (command == "catalog") return run_catalog_inspect(args);
    if (command == "quote") return run_quote(args);
    if (command == "tokens") return run_tokens(args);
    fmt::print(stderr, "tollgate: unknown command '{}'\n\n{}", command, usage_text);
    return 2;
}
