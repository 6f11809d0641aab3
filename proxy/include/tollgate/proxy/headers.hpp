// Which headers cross tollgate, each way (SPEC 5: transparent except the
// credential). Hop-by-hop headers (RFC 9110 7.6.1) never cross; tollgate
// frames each message itself.
#pragma once

#include "tollgate/proxy/asio.hpp"

namespace tollgate::proxy {

// Client -> upstream: everything but hop-by-hop headers, Host, the client's
// credentials (Authorization, x-litellm-api-key), Accept-Encoding (usage
// must be readable, so answers come uncompressed), Expect and framing.
void copy_request_headers(const net::http::fields& from, net::http::fields& to);

// Upstream -> client: everything but hop-by-hop headers, framing, Server
// and Date; the upstream's x-request-id becomes x-upstream-request-id
// (x-request-id is tollgate's, the id the ledger records).
void copy_answer_headers(const net::http::fields& from, net::http::fields& to);

}  // namespace tollgate::proxy
