// The handlers behind the routes (server.cpp dispatches to them).
#pragma once

#include "exchange.hpp"

namespace tollgate::proxy {

enum class service : std::uint8_t { chat, completion, embedding, tts };

// The caller of a metered route: their key (401 invalid_api_key otherwise)
// within its rpm limit (429 rate_limited with Retry-After otherwise). On
// nullopt the answer has been sent.
net::awaitable<std::optional<caller>> admit_caller(exchange& x);

// POST /v1/chat/completions, /v1/completions, /v1/embeddings, /v1/audio/speech.
net::awaitable<void> metered_call(exchange& x, service kind);
// GET /v1/models: the catalog, filtered to the caller's tier.
net::awaitable<void> models_list(exchange& x);
// A configured prefix route (`/center-deep/…`): a fixed price per request.
net::awaitable<void> prefix_call(exchange& x, std::size_t route_index);

// /api/v1/…: the admin API (admin token, or a user's own key).
net::awaitable<void> admin_call(exchange& x);

// Fetches the upstreams' model lists into the live catalogs; false when
// neither answered (the bundled snapshots stay).
net::awaitable<bool> refresh_catalogs(app& a);

}  // namespace tollgate::proxy
