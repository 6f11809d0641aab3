#include "upstream.hpp"

#include "lazy_deadline.hpp"

#include <boost/asio/ssl.hpp>
#include <boost/beast/ssl.hpp>

#include <optional>
#include <sys/socket.h>

namespace tollgate::proxy {

using namespace net;
namespace ssl = boost::asio::ssl;

// tcp's own timer bounds only the connect and the TLS handshake; every
// exchange after that runs on the raw socket (or the TLS stream over it,
// with tcp's timer off) under `deadline`.
struct upstream_conn {
    explicit upstream_conn(asio::any_io_executor ex)
        : tcp(ex), deadline(ex, [this] {
              beast::error_code ignored;
              tcp.socket().cancel(ignored);
          }) {}
    beast::tcp_stream tcp;
    std::optional<ssl::stream<beast::tcp_stream&>> tls;
    lazy_deadline deadline;
};

void upstream_conn_deleter::operator()(upstream_conn* c) const { delete c; }

namespace {

// Runs the operation `op(stream)` on the connection's raw stream, plain or
// TLS, under its deadline: a deadline already passed, or one that passes
// during the operation, is beast::error::timeout.
template <class Op>
awaitable<void> guarded(upstream_conn& c, beast::error_code& ec, Op op) {
    if (c.deadline.expired()) {
        ec = beast::error::timeout;
        co_return;
    }
    if (c.tls) {
        co_await op(*c.tls);
    } else {
        co_await op(c.tcp.socket());
    }
    if (ec && c.deadline.expired()) ec = beast::error::timeout;
}

// An idle keep-alive connection the upstream has closed is readable (EOF)
// or errored; one still usable has nothing to read.
bool still_alive(upstream_conn& c) {
    auto& socket = c.tcp.socket();
    if (!socket.is_open()) return false;
    char byte;
    const auto n = ::recv(socket.native_handle(), &byte, 1, MSG_PEEK | MSG_DONTWAIT);
    return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
}

}  // namespace

upstream_pool::upstream_pool(asio::any_io_executor executor, upstream_url url, const config& settings,
                             ssl::context* tls)
    : executor_(std::move(executor)), url_(std::move(url)), settings_(settings), tls_(tls) {}

std::string upstream_pool::host_header() const {
    const bool default_port = url_.port == (url_.tls ? "443" : "80");
    const bool v6 = url_.host.find(':') != std::string::npos;
    std::string host = v6 ? "[" + url_.host + "]" : url_.host;
    return default_port ? host : host + ":" + url_.port;
}

awaitable<upstream_conn_ptr> upstream_pool::acquire(beast::error_code& ec, upstream_failure& failure) {
    ec = {};
    const auto now = std::chrono::steady_clock::now();
    for (;;) {
        upstream_conn_ptr c;
        {
            std::lock_guard lock(mu_);
            if (idle_.empty()) break;
            auto [conn, since] = std::move(idle_.back());
            idle_.pop_back();
            if (now - since < settings_.idle_timeout) c = std::move(conn);
        }
        if (c && still_alive(*c)) co_return c;
    }
    upstream_conn_ptr c(new upstream_conn(executor_));
    tcp::resolver resolver(executor_);
    auto endpoints = co_await resolver.async_resolve(url_.host, url_.port,
                                                      asio::redirect_error(use_awaitable, ec));
    if (ec) {
        failure = upstream_failure::connect;
        co_return nullptr;
    }
    c->tcp.expires_after(settings_.connect_timeout);
    co_await c->tcp.async_connect(endpoints, asio::redirect_error(use_awaitable, ec));
    if (ec) {
        failure = ec == beast::error::timeout ? upstream_failure::timeout : upstream_failure::connect;
        co_return nullptr;
    }
    c->tcp.socket().set_option(tcp::no_delay(true), ec);
    if (url_.tls) {
        c->tls.emplace(c->tcp, *tls_);
        // SNI, and the certificate must name this host.
        if (!SSL_set_tlsext_host_name(c->tls->native_handle(), url_.host.c_str())) {
            ec = beast::error_code(static_cast<int>(::ERR_get_error()), asio::error::get_ssl_category());
            failure = upstream_failure::tls;
            co_return nullptr;
        }
        c->tls->set_verify_callback(ssl::host_name_verification(url_.host));
        co_await c->tls->async_handshake(ssl::stream_base::client, asio::redirect_error(use_awaitable, ec));
        if (ec) {
            failure = ec == beast::error::timeout ? upstream_failure::timeout : upstream_failure::tls;
            co_return nullptr;
        }
    }
    c->tcp.expires_never();
    co_return c;
}

void upstream_pool::give_back(upstream_conn_ptr c) {
    if (!c) return;
    std::lock_guard lock(mu_);
    if (idle_.size() >= settings_.pool_idle_per_upstream) return;  // closed by its destructor
    c->deadline.expires_never();
    idle_.emplace_back(std::move(c), std::chrono::steady_clock::now());
}

void expire_after(upstream_conn& c, std::chrono::milliseconds timeout) { c.deadline.expires_after(timeout); }

void close_hard(upstream_conn& c) {
    beast::error_code ignored;
    c.tcp.socket().shutdown(tcp::socket::shutdown_both, ignored);
    c.tcp.socket().close(ignored);
}

awaitable<void> send_request(upstream_conn& c, http::request<http::string_body>& request, beast::error_code& ec) {
    co_await guarded(c, ec, [&](auto& stream) -> awaitable<void> {
        co_await http::async_write(stream, request, asio::redirect_error(use_awaitable, ec));
    });
}

awaitable<void> read_header(upstream_conn& c, beast::flat_buffer& buffer, response_parser& parser,
                            beast::error_code& ec) {
    co_await guarded(c, ec, [&](auto& stream) -> awaitable<void> {
        co_await http::async_read_header(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
    });
}

awaitable<void> read_body_some(upstream_conn& c, beast::flat_buffer& buffer, response_parser& parser,
                               beast::error_code& ec) {
    ec = {};
    if (c.deadline.expired()) {
        ec = beast::error::timeout;
        co_return;
    }
    parser.eager(true);  // parse every complete element the buffer holds, not one per call
    const auto room = parser.get().body().size;
    for (;;) {
        if (buffer.size() > 0) {
            const auto used = parser.put(buffer.data(), ec);
            buffer.consume(used);
            if (ec == http::error::need_buffer) {  // the caller's chunk is full
                ec = {};
                co_return;
            }
            if (ec == http::error::need_more) ec = {};
            if (ec || parser.is_done() || parser.get().body().size < room) co_return;
            if (used > 0 && buffer.size() > 0) continue;  // a chunk header went by; more may follow
        }
        constexpr std::size_t read_size = 16384;
        // Unparsed bytes that never make progress (a chunk header without
        // end): bounded like everything else a stream holds.
        if (buffer.size() > 4 * read_size) {
            ec = http::error::buffer_overflow;
            co_return;
        }
        const auto space = buffer.prepare(read_size);
        std::size_t n = 0;
        co_await guarded(c, ec, [&](auto& stream) -> awaitable<void> {
            n = co_await stream.async_read_some(space, asio::redirect_error(use_awaitable, ec));
        });
        buffer.commit(n);
        if (ec == asio::error::eof || ec == ssl::error::stream_truncated) {
            // The upstream closed: the end of a body delimited by the close,
            // or a message cut short (partial_message).
            parser.put_eof(ec);
            if (!ec) co_return;
        }
        if (ec) co_return;
    }
}

std::unique_ptr<ssl::context> make_client_tls_context() {
    auto ctx = std::make_unique<ssl::context>(ssl::context::tls_client);
    ctx->set_default_verify_paths();
    ctx->set_verify_mode(ssl::verify_peer);
    ctx->set_options(ssl::context::no_sslv2 | ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                     ssl::context::no_tlsv1_1);
    return ctx;
}

}  // namespace tollgate::proxy

namespace tollgate::proxy {

awaitable<json_answer> exchange_json(upstream_pool& pool, const json_call& call, std::size_t limit,
                                     std::chrono::milliseconds timeout) {
    json_answer out;
    beast::error_code ec;
    upstream_failure failure{};
    auto conn = co_await pool.acquire(ec, failure);
    if (!conn) {
        out.timed_out = failure == upstream_failure::timeout;
        co_return out;
    }
    http::request<http::string_body> req{call.method, call.target, 11};
    req.set(http::field::host, pool.host_header());
    req.set(http::field::accept, "application/json");
    req.set(http::field::user_agent, "tollgate");
    if (!call.bearer.empty()) req.set(http::field::authorization, "Bearer " + call.bearer);
    if (!call.body.empty()) {
        req.set(http::field::content_type, "application/json");
        req.body() = call.body;
    }
    req.keep_alive(true);
    req.prepare_payload();
    expire_after(*conn, timeout);
    out.request_sent = true;
    co_await send_request(*conn, req, ec);
    if (!ec) {
        beast::flat_buffer buffer;
        http::response_parser<http::string_body> parser;
        parser.body_limit(limit);
        co_await read_whole(*conn, buffer, parser, ec);
        if (!ec) {
            const auto& res = parser.get();
            fetched f{res.result_int(), {}, std::string(res[http::field::retry_after])};
            const bool keep = res.keep_alive();
            f.body = std::move(parser.get().body());
            out.answer = std::move(f);
            if (keep) pool.give_back(std::move(conn));
            co_return out;
        }
    }
    out.timed_out = ec == beast::error::timeout;
    close_hard(*conn);
    co_return out;
}

awaitable<std::optional<fetched>> fetch(upstream_pool& pool, const std::string& target, const std::string& bearer,
                                        std::size_t limit, std::chrono::milliseconds timeout) {
    json_call call;
    call.target = target;
    call.bearer = bearer;
    auto got = co_await exchange_json(pool, call, limit, timeout);
    co_return std::move(got.answer);
}

}  // namespace tollgate::proxy

namespace tollgate::proxy {
awaitable<void> read_whole(upstream_conn& c, beast::flat_buffer& buffer, http::response_parser<http::string_body>& parser,
                           beast::error_code& ec) {
    co_await guarded(c, ec, [&](auto& stream) -> awaitable<void> {
        co_await http::async_read(stream, buffer, parser, asio::redirect_error(use_awaitable, ec));
    });
}
}  // namespace tollgate::proxy
