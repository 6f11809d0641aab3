// The OpenAPI document of the admin API (proxy/openapi.json), embedded into
// the binary; TOLLGATE_OPENAPI_JSON is its path, set by proxy/CMakeLists.txt.
#include "tollgate/pricing/incbin.hpp"

#include "admin.hpp"

TOLLGATE_INCBIN(tollgate_openapi_json, TOLLGATE_OPENAPI_JSON);

namespace tollgate::proxy::admin {

std::string_view openapi_json() {
    return TOLLGATE_INCBIN_VIEW(tollgate_openapi_json);
}

}  // namespace tollgate::proxy::admin
