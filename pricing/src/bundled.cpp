// The bundled snapshots (pricing/data/), embedded into the binary.
// TOLLGATE_BUNDLED_OPENROUTER and TOLLGATE_BUNDLED_LITELLM are the files'
// paths as string literals, set by pricing/CMakeLists.txt.
#include "tollgate/pricing/incbin.hpp"
#include "tollgate/pricing/catalog.hpp"

TOLLGATE_INCBIN(tollgate_bundled_openrouter, TOLLGATE_BUNDLED_OPENROUTER);
TOLLGATE_INCBIN(tollgate_bundled_litellm, TOLLGATE_BUNDLED_LITELLM);

namespace tollgate::pricing {

std::string_view bundled_openrouter_models() { return TOLLGATE_INCBIN_VIEW(tollgate_bundled_openrouter); }

std::string_view bundled_litellm_prices() { return TOLLGATE_INCBIN_VIEW(tollgate_bundled_litellm); }

}  // namespace tollgate::pricing
