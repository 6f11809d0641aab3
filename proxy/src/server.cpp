// The listener, one coroutine per connection (on its own strand), the
// router, health and metrics, and the graceful shutdown.
#include "tollgate/proxy/server.hpp"

#include "calls.hpp"
#include "master_key.hpp"
#include "provisioning.hpp"

#include <boost/asio/ssl/context.hpp>
#include <fmt/format.h>
#include <sodium.h>

#include <array>
#include <thread>

namespace tollgate::proxy {

using namespace net;

namespace {

// "req_" and 32 hex digits: 8 random bytes drawn once per thread, then a
// per-thread count. Unique (the ledger keys holds by it) without a system
// call and a dozen formatted strings per request.
std::string new_request_id() {
    struct id_source {
        std::uint64_t prefix = 0;
        std::uint64_t count = 0;
        id_source() { randombytes_buf(&prefix, sizeof prefix); }
    };
    thread_local id_source source;
    const std::uint64_t parts[2] = {source.prefix, source.count++};
    constexpr std::string_view digits = "0123456789abcdef";
    std::string out = "req_";
    out.reserve(4 + 32);
    for (const auto part : parts) {
        for (int i = 15; i >= 0; --i) out += digits[(part >> (4 * i)) & 0xf];
    }
    return out;
}

// At namespace scope: GCC 12 miscompiles C arrays kept in coroutine frames.
struct metered_route {
    std::string_view path;
    service kind;
    route_label label;
};
constexpr std::array<metered_route, 4> metered_routes{{
    {"/chat/completions", service::chat, route_label::chat},
    {"/completions", service::completion, route_label::completions},
    {"/embeddings", service::embedding, route_label::embeddings},
    {"/audio/speech", service::tts, route_label::speech},
}};

awaitable<void> dispatch(exchange& x) {
    auto& a = x.a;
    std::string_view target(x.req.target().data(), x.req.target().size());
    const auto path = target.substr(0, target.find('?'));
    const auto method = x.req.method();
    // The OpenAI SDK appends paths to OPENAI_BASE_URL as given: accept /v1/… and bare paths.
    std::string_view api = path;
    if (api.starts_with("/v1/")) api.remove_prefix(3);

    if (method == http::verb::post) {
        for (const auto& r : metered_routes) {
            if (api == r.path) {
                x.route = r.label;
                co_await metered_call(x, r.kind);
                co_return;
            }
        }
    }
    if (method == http::verb::get && api == "/models") {
        x.route = route_label::models;
        co_await models_list(x);
        co_return;
    }
    if (method == http::verb::get && (path == "/healthz" || path == "/readyz")) {
        x.route = route_label::health;
        if (path == "/healthz") {
            co_await reply(x, 200, R"({"status":"ok"})", "application/json");
            co_return;
        }
        const auto cats = a.catalog.get();
        const bool ready = !a.ledger.failed() && cats->openrouter && !a.draining;
        // Built before the co_await: GCC 12 destroys temporaries of a
        // conditional expression inside a co_await statement twice.
        const std::string litellm_source = x.w.litellm ? cats->litellm_source : std::string("off");
        std::string body =
            fmt::format(R"({{"status":"{}","ledger":"{}","catalog":{{"openrouter":"{}","litellm":"{}"}}}})",
                        ready ? "ready" : "not_ready", a.ledger.failed() ? "failed" : "open", cats->openrouter_source,
                        litellm_source);
        const unsigned status = ready ? 200 : 503;
        co_await reply(x, status, std::move(body), "application/json");
        co_return;
    }
    if (method == http::verb::get && path == "/metrics") {
        x.route = route_label::metrics;
        co_await reply(x, 200, a.stats.render(), "text/plain; version=0.0.4");
        co_return;
    }
    if (path.starts_with("/api/v1/")) {
        x.route = route_label::admin;
        co_await admin_call(x);
        co_return;
    }
    for (std::size_t i = 0; i < a.settings.routes.size(); ++i) {
        const auto& prefix = a.settings.routes[i].prefix;
        if (path.starts_with(prefix) && (path.size() == prefix.size() || path[prefix.size()] == '/')) {
            x.route = route_label::prefix;
            co_await prefix_call(x, i);
            co_return;
        }
    }
    co_await reply_error(x, 404, "not_found", fmt::format("No route for {} {}", std::string(x.req.method_string()), path));
}

awaitable<void> session(app& a, worker& w, tcp::socket socket) {
    client_conn client(std::move(socket));
    // This connection's thread: one io_context per thread, so work posted
    // here never runs beside the session's own code.
    const auto executor = co_await asio::this_coro::executor;
    const auto id = a.next_session++;
    exchange* current = nullptr;
    {
        std::lock_guard lock(a.cancel_mu);
        a.cancellers.emplace(id, [&client, &current, executor] {
            asio::post(executor, [&client, &current] {
                beast::error_code ignored;
                if (current && current->upstream) close_hard(*current->upstream);
                client.socket.shutdown(tcp::socket::shutdown_both, ignored);
                client.socket.close(ignored);
            });
        });
    }
    a.stats.open_connections++;
    // Requests are read one at a time: pipelined requests wait in this
    // buffer, which is bounded, so a pipelining client cannot grow it.
    beast::flat_buffer buffer(a.settings.max_header_bytes + a.settings.max_body_bytes + 65536);
    bool first = true;
    for (;;) {
        http::request_parser<http::string_body> parser;
        parser.header_limit(static_cast<std::uint32_t>(a.settings.max_header_bytes));
        parser.body_limit(a.settings.max_body_bytes);
        client.deadline.expires_after(first ? a.settings.header_timeout : a.settings.keepalive_timeout);
        first = false;
        beast::error_code ec;
        co_await http::async_read(client.socket, buffer, parser, asio::redirect_error(use_awaitable, ec));
        client.deadline.expires_never();
        if (ec == http::error::body_limit || ec == http::error::header_limit || ec == http::error::buffer_overflow) {
            request req;
            exchange x{.a = a, .w = w, .client = client, .req = req, .request_id = new_request_id(), .keep_alive = false};
            const auto message = fmt::format("The request is larger than the limit ({} bytes of body, {} of headers)",
                                             a.settings.max_body_bytes, a.settings.max_header_bytes);
            co_await reply_error(x, 413, "request_too_large", message);
            a.stats.count_request(route_label::other, 413, 0);
            break;
        }
        if (ec == http::error::bad_target || ec == http::error::bad_method || ec == http::error::bad_version ||
            ec == http::error::bad_field || ec == http::error::bad_value || ec == http::error::bad_content_length ||
            ec == http::error::bad_chunk || ec == http::error::bad_line_ending) {
            request req;
            exchange x{.a = a, .w = w, .client = client, .req = req, .request_id = new_request_id(), .keep_alive = false};
            const auto message = fmt::format("Malformed HTTP request: {}", ec.message());
            co_await reply_error(x, 400, "bad_request", message);
            break;
        }
        if (ec) break;  // closed, reset or timed out between requests
        // Two credentials or two Idempotency-Keys in one request: which one
        // counts would be a guess (an injected header could pick it), so
        // the request is refused whole.
        if (const auto& h = parser.get(); h.count(http::field::authorization) > 1 || h.count("idempotency-key") > 1) {
            request req;
            exchange x{.a = a, .w = w, .client = client, .req = req, .request_id = new_request_id(), .keep_alive = false};
            co_await reply_error(x, 400, "bad_request",
                                 "A request may carry at most one Authorization and one Idempotency-Key header");
            a.stats.count_request(route_label::other, 400, 0);
            break;
        }
        const auto started = std::chrono::steady_clock::now();
        auto req = parser.release();
        exchange x{.a = a, .w = w, .client = client, .req = req, .request_id = new_request_id()};
        x.keep_alive = req.keep_alive() && !a.draining;
        current = &x;
        a.stats.in_flight++;
        co_await dispatch(x);
        a.stats.in_flight--;
        current = nullptr;
        const auto micros =
            std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started).count();
        a.stats.count_request(x.route, x.status, micros);
        if (!x.keep_alive || a.draining) break;
    }
    {
        std::lock_guard lock(a.cancel_mu);
        a.cancellers.erase(id);
    }
    beast::error_code ignored;
    client.deadline.stop();
    client.socket.shutdown(tcp::socket::shutdown_send, ignored);
    a.stats.open_connections--;
}

// Connections are dealt to the I/O threads in turn.
awaitable<void> listen(app& a, tcp::acceptor& acceptor) {
    for (std::size_t next = 0;; next = (next + 1) % a.workers.size()) {
        beast::error_code ec;
        auto& w = a.workers[next];
        auto socket = co_await acceptor.async_accept(w.io->get_executor(), asio::redirect_error(use_awaitable, ec));
        if (ec == asio::error::operation_aborted || !acceptor.is_open()) co_return;
        if (ec) continue;  // e.g. too many open files: keep serving the others
        socket.set_option(tcp::no_delay(true), ec);
        asio::co_spawn(*w.io, session(a, w, std::move(socket)), asio::detached);
    }
}

awaitable<void> refresh_loop(app& a, std::shared_ptr<std::atomic<bool>> first_done) {
    asio::steady_timer timer(*a.workers.front().io);
    for (;;) {
        co_await refresh_catalogs(a);
        first_done->store(true);
        timer.expires_after(a.settings.catalog_refresh);
        beast::error_code ec;
        co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
        if (ec || a.draining) co_return;
    }
}

// Every maintenance interval (a minute by default): sweeps expired holds
// (their calls died without settling) and rolls the billing periods whose
// boundary has passed (each user's are also rolled whenever the ledger
// looks at them, so a balance is never read stale; this keeps idle users'
// history in step).
awaitable<void> maintenance_loop(app& a) {
    asio::steady_timer timer(*a.workers.front().io);
    for (;;) {
        timer.expires_after(a.settings.maintenance_interval);
        beast::error_code ec;
        co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
        if (ec || a.draining) co_return;
        a.ledger.expire_holds();
        if (const auto rolled = a.ledger.roll_periods(); rolled.count > 0) a.keys.invalidate_all();
    }
}

// OpenRouter's share of the maintenance, on its own loop so a slow or
// failing OpenRouter never delays the hold sweep: pending provisioning
// retried, every key synced when a sync is due, calls billed on an
// estimate reconciled.
awaitable<void> openrouter_loop(app& a) {
    auto& w = a.workers.front();
    asio::steady_timer timer(*w.io);
    auto last_sync = std::chrono::steady_clock::now();
    for (;;) {
        timer.expires_after(a.settings.maintenance_interval);
        beast::error_code ec;
        co_await timer.async_wait(asio::redirect_error(use_awaitable, ec));
        if (ec || a.draining) co_return;
        const auto now = std::chrono::steady_clock::now();
        const bool sync_due = now - last_sync >= a.settings.openrouter_sync;
        if (sync_due) last_sync = now;
        co_await openrouter::maintain(a, w, sync_due);
    }
}

std::string admin_token_setup(const config& settings, ledger::ledger& l, const secrets& s) {
    constexpr const char* name = "admin_token_hash";
    if (!settings.admin_token.empty()) {
        const auto hash = s.hash(settings.admin_token);
        if (l.setting(name) != hash) {
            const auto out = l.put_setting(name, hash);
            if (out.code != ledger::result::ok || !l.wait_durable(out.seq)) return {};
        }
        return hash;
    }
    if (auto stored = l.setting(name)) return *stored;
    const auto token = secrets::generate("tga_");
    const auto hash = s.hash(token);
    const auto out = l.put_setting(name, hash);
    if (out.code != ledger::result::ok || !l.wait_durable(out.seq)) return {};
    fmt::print("admin token (shown once, store it now): {}\n", token);
    return hash;
}

}  // namespace

// Listens, runs every I/O thread and returns once they have all stopped.
// Everything bound to an io_context lives in here, so it is gone before
// the io_contexts are.
static int run_threads(app& a) {
    const auto& settings = a.settings;
    auto& io = *a.workers.front().io;  // also runs the acceptor, timers and signals
    tcp::acceptor acceptor(io);
    beast::error_code ec;
    const auto address = asio::ip::make_address(settings.listen_host, ec);
    if (ec) {
        fmt::print(stderr, "tollgate: TOLLGATE_LISTEN host '{}' is not an IP address\n", settings.listen_host);
        return 1;
    }
    const tcp::endpoint endpoint(address, static_cast<unsigned short>(std::stoi(settings.listen_port)));
    acceptor.open(endpoint.protocol(), ec);
    if (!ec) acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
    if (!ec) acceptor.bind(endpoint, ec);
    if (!ec) acceptor.listen(asio::socket_base::max_listen_connections, ec);
    if (ec) {
        fmt::print(stderr, "tollgate: cannot listen on {}:{}: {}\n", settings.listen_host, settings.listen_port,
                   ec.message());
        return 1;
    }
    const auto bound = acceptor.local_endpoint();
    const auto first_refresh = std::make_shared<std::atomic<bool>>(false);
    asio::co_spawn(io, listen(a, acceptor), asio::detached);
    asio::co_spawn(io, refresh_loop(a, first_refresh), asio::detached);
    asio::co_spawn(io, maintenance_loop(a), asio::detached);
    asio::co_spawn(io, openrouter_loop(a), asio::detached);

    // Shutdown: stop accepting, let calls finish within the grace period,
    // then cut off the rest; each cut-off call settles or releases its hold.
    asio::signal_set signals(io, SIGINT, SIGTERM);
    asio::steady_timer grace(io);
    std::function<void()> check;
    signals.async_wait([&](const beast::error_code& e, int) {
        if (e) return;
        fmt::print("tollgate: shutting down (grace {} ms)\n", settings.shutdown_grace.count());
        std::fflush(stdout);
        a.draining = true;
        beast::error_code ignored;
        acceptor.close(ignored);
        const auto deadline = std::chrono::steady_clock::now() + settings.shutdown_grace;
        check = [&, deadline] {
            const auto now = std::chrono::steady_clock::now();
            if (a.stats.in_flight.load() == 0 || now >= deadline + std::chrono::seconds(5)) {
                for (auto& w : a.workers) w.io->stop();  // idle keep-alive connections hold nothing
                return;
            }
            if (now >= deadline && !a.cut_off.exchange(true)) {
                std::lock_guard lock(a.cancel_mu);
                for (auto& [id, cancel] : a.cancellers) cancel();
            }
            grace.expires_after(std::chrono::milliseconds(20));
            grace.async_wait([&check](const beast::error_code& err) {
                if (!err) check();
            });
        };
        check();
    });

    // Wait for the first catalog attempt, so the first calls see the live lists.
    std::vector<std::thread> threads;
    // Each thread runs until stopped, with or without connections.
    std::vector<asio::any_io_executor> keep_running;
    for (auto& w : a.workers) {
        keep_running.push_back(asio::require(w.io->get_executor(), asio::execution::outstanding_work.tracked));
    }
    for (std::size_t i = 1; i < a.workers.size(); ++i) threads.emplace_back([&a, i] { a.workers[i].io->run(); });
    std::thread waiter([&] {
        const auto until = std::chrono::steady_clock::now() + settings.connect_timeout + std::chrono::seconds(30);
        while (!first_refresh->load() && std::chrono::steady_clock::now() < until && !a.draining) {
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
        }
        fmt::print("tollgate listening on http://{}:{}\n", bound.address().to_string(), bound.port());
        std::fflush(stdout);
    });
    io.run();
    waiter.join();
    for (auto& t : threads) t.join();
    return 0;
}

int serve(const config& settings) {
    auto opened = ledger::ledger::open(
        {.path = settings.db_path, .sync = settings.durability_full ? ledger::durability::full : ledger::durability::normal});
    if (!opened.value) {
        fmt::print(stderr, "tollgate: cannot open the ledger {}: {} ({})\n", settings.db_path, opened.message,
                   ledger::to_string(opened.error));
        return 1;
    }
    auto& l = *opened.value;
    std::string error;
    auto keys_secret = open_secrets(settings.master_key_file, l, error);
    if (!keys_secret) {
        fmt::print(stderr, "tollgate: {}\n", error);
        return 1;
    }
    if (const auto orphans = l.orphaned_holds_released()) {
        fmt::print("released {} holds left open by the last run (audit-logged)\n", orphans);
    }

    app a{.settings = settings,
          .ledger = l,
          .keys_secret = *keys_secret,
          .workers = {},
          .stats = {},
          .keys = key_cache(l, a.keys_secret, std::chrono::seconds(10)),
          .limits = {},
          .auth_failures = {},
          .catalog = {},
          .tls = make_client_tls_context(),
          .admin_token_hash = {}};
    a.admin_token_hash = admin_token_setup(settings, l, a.keys_secret);
    if (a.admin_token_hash.empty()) {
        fmt::print(stderr, "tollgate: could not store the admin token\n");
        return 1;
    }
    a.openrouter_key_prefix = openrouter::key_name_prefix(l);
    if (a.openrouter_key_prefix.empty()) {
        fmt::print(stderr, "tollgate: could not store the OpenRouter key name prefix\n");
        return 1;
    }
    for (unsigned i = 0; i < settings.io_threads; ++i) {
        worker w;
        w.io = std::make_unique<asio::io_context>(1);
        const auto ex = w.io->get_executor();
        w.openrouter = std::make_unique<upstream_pool>(ex, settings.openrouter, settings, a.tls.get());
        if (settings.litellm) w.litellm = std::make_unique<upstream_pool>(ex, *settings.litellm, settings, a.tls.get());
        for (const auto& r : settings.routes) {
            w.routes.push_back(std::make_unique<upstream_pool>(ex, r.url, settings, a.tls.get()));
        }
        a.workers.push_back(std::move(w));
    }
    {
        auto initial = std::make_shared<catalogs>();
        initial->openrouter = pricing::parse_openrouter_models(pricing::bundled_openrouter_models()).value;
        initial->litellm_fallback = pricing::parse_litellm_prices(pricing::bundled_litellm_prices()).value;
        a.catalog.replace(std::move(initial));
    }
    const int code = run_threads(a);
    // Calls cut off mid-way are destroyed with their threads' io_contexts,
    // before anything they use goes away.
    a.workers.clear();
    l.flush();
    const auto open_holds = l.open_hold_count();
    fmt::print("tollgate: stopped ({} holds still open; released at the next start)\n", open_holds);
    return code;
}

}  // namespace tollgate::proxy
