// One request on a client connection, and the ways to answer it.
#pragma once

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "app.hpp"
#include "lazy_deadline.hpp"
#include "tollgate/proxy/asio.hpp"
#include "tollgate/proxy/wire.hpp"

namespace tollgate::proxy {

using request = net::http::request<net::http::string_body>;
using header_list = std::vector<std::pair<std::string, std::string>>;

// A client's connection: its socket, and the deadline its reads and writes
// run under (lazy_deadline.hpp; setting it costs no timer operation).
struct client_conn {
    explicit client_conn(net::tcp::socket s)
        : socket(std::move(s)), deadline(socket.get_executor(), [this] {
              net::beast::error_code ignored;
              socket.cancel(ignored);
          }) {}
    net::tcp::socket socket;
    lazy_deadline deadline;
};

struct exchange {
    app& a;
    worker& w;  // the I/O thread this connection lives on
    client_conn& client;
    request& req;
    std::string request_id;
    bool keep_alive = true;
    route_label route = route_label::other;
    unsigned status = 0;                // what was answered (for /metrics)
    upstream_conn* upstream = nullptr;  // while one is lent: closed by a shutdown cut-off
};

// OpenAI's error shape: {"error": {"message", "type", "code", "param"}}.
std::string error_json(std::string_view message, std::string_view type, std::string_view code,
                       std::string_view param = {});
std::string json_escape(std::string_view text);

// The answer's common headers: x-request-id, keep-alive, nosniff.
template <class Message>
void common_headers(exchange& x, Message& m) {
    m.set("x-request-id", x.request_id);
    m.set(net::http::field::server, "tollgate");
    m.set("x-content-type-options", "nosniff");
    m.keep_alive(x.keep_alive);
}

// Runs `op(socket)`, an awaitable write to the client, under write_ms: a
// client that does not take the bytes in time is beast::error::timeout.
template <class Op>
net::awaitable<void> client_write(exchange& x, net::beast::error_code& ec, Op op) {
    x.client.deadline.expires_after(x.a.settings.write_timeout);
    co_await op(x.client.socket);
    x.client.deadline.expires_never();
    if (ec && x.client.deadline.expired()) ec = net::beast::error::timeout;
}

// Sends a whole answer under write_ms and records its status; a failed
// write ends the connection after this exchange.
net::awaitable<void> send_answer(exchange& x, net::http::response<net::http::string_body>& res);

net::awaitable<void> reply(exchange& x, unsigned status, std::string body, std::string_view content_type,
                           const header_list& extra = {});
net::awaitable<void> reply_error(exchange& x, unsigned status, std::string_view code, std::string_view message,
                                 std::string_view param = {}, const header_list& extra = {});

// A Retry-After header. (Built outside coroutines: GCC 12 cannot keep an
// initializer list's array in a coroutine frame.)
header_list retry_after(std::int64_t seconds);

// Waits, without blocking the thread, until the ledger has committed `seq`.
net::awaitable<bool> durable(app& a, ledger::commit_seq seq);

// The bearer token of an Authorization header ("" when there is none).
std::string_view bearer_of(const request& r);

}  // namespace tollgate::proxy
