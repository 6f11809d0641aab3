// `tollgate serve`: the proxy and (later) the admin API on one listener.
#pragma once

#include "tollgate/proxy/config.hpp"

namespace tollgate::proxy {

// Runs until SIGTERM or SIGINT, then drains (SPEC 5/7): stops accepting,
// lets calls in flight finish up to the grace period, cuts off the rest
// (billing what they relayed), flushes the ledger. Returns the exit code.
int serve(const config& settings);

}  // namespace tollgate::proxy
