// The upstream client: a keep-alive connection pool per upstream, plain TCP
// or TLS (OpenSSL, certificate and host name verified, SNI). Connections
// are lent to one call at a time and given back only when their last answer
// was read to its end.
#pragma once

#include "metrics.hpp"
#include "tollgate/proxy/asio.hpp"
#include "tollgate/proxy/config.hpp"

#include <chrono>
#include <memory>
#include <mutex>
#include <vector>

namespace boost::asio::ssl {
class context;
}

namespace tollgate::proxy {

struct upstream_conn;
struct upstream_conn_deleter {
    void operator()(upstream_conn* c) const;
};
using upstream_conn_ptr = std::unique_ptr<upstream_conn, upstream_conn_deleter>;

using response_parser = net::http::response_parser<net::http::buffer_body>;

class upstream_pool {
public:
    upstream_pool(net::asio::any_io_executor executor, upstream_url url, const config& settings,
                  net::asio::ssl::context* tls);

    // A pooled connection when one is idle and alive, else a new one. On
    // failure `failure` says what kind (connect, tls, timeout).
    net::awaitable<upstream_conn_ptr> acquire(net::beast::error_code& ec, upstream_failure& failure);
    // Back to the pool: only a connection whose answer was read to the end
    // and that the upstream keeps alive.
    void give_back(upstream_conn_ptr c);
    const upstream_url& url() const { return url_; }
    std::string host_header() const;

private:
    net::asio::any_io_executor executor_;
    upstream_url url_;
    const config& settings_;
    net::asio::ssl::context* tls_;
    std::mutex mu_;
    std::vector<std::pair<upstream_conn_ptr, std::chrono::steady_clock::time_point>> idle_;
};

// One exchange on a lent connection. expire_after sets the deadline of the
// operations that follow (lazy_deadline.hpp: setting it costs no timer
// operation, so set it before every read).
void expire_after(upstream_conn& c, std::chrono::milliseconds timeout);
void close_hard(upstream_conn& c);
net::awaitable<void> send_request(upstream_conn& c, net::http::request<net::http::string_body>& request,
                                  net::beast::error_code& ec);
net::awaitable<void> read_header(upstream_conn& c, net::beast::flat_buffer& buffer, response_parser& parser,
                                 net::beast::error_code& ec);
// Reads what comes next and parses it into `parser`, whose buffer_body the
// caller points at its chunk buffer; returns once body bytes arrived, the
// body buffer is full, or the message ended. http::async_read_some would do
// the same through a composed operation: on a stream of small events that
// cost more than the parse itself (bench/README.md).
net::awaitable<void> read_body_some(upstream_conn& c, net::beast::flat_buffer& buffer, response_parser& parser,
                                    net::beast::error_code& ec);

// A TLS client context that verifies certificates against the system store.
std::unique_ptr<net::asio::ssl::context> make_client_tls_context();

}  // namespace tollgate::proxy

namespace tollgate::proxy {

struct fetched {
    unsigned status = 0;
    std::string body;
    std::string retry_after;  // the header, when the upstream sent one
};
// One GET on a pooled connection, body bounded by `limit`: for catalogs and
// other small answers. nullopt when no valid answer came.
net::awaitable<std::optional<fetched>> fetch(upstream_pool& pool, const std::string& target,
                                             const std::string& bearer, std::size_t limit,
                                             std::chrono::milliseconds timeout);

// A small JSON exchange of any method (the OpenRouter management API).
struct json_call {
    net::http::verb method = net::http::verb::get;
    std::string target;
    std::string bearer;
    std::string body;  // sent as application/json when not empty
};
struct json_answer {
    std::optional<fetched> answer;  // nullopt: no valid answer came
    // Some of the request went out: repeating it might repeat its effect.
    bool request_sent = false;
    bool timed_out = false;
};
net::awaitable<json_answer> exchange_json(upstream_pool& pool, const json_call& call, std::size_t limit,
                                          std::chrono::milliseconds timeout);

}  // namespace tollgate::proxy

namespace tollgate::proxy {
// Reads a whole answer (header and body) into `parser`.
net::awaitable<void> read_whole(upstream_conn& c, net::beast::flat_buffer& buffer,
                                net::http::response_parser<net::http::string_body>& parser,
                                net::beast::error_code& ec);
}  // namespace tollgate::proxy
