// libFuzzer target: any bytes given as an OpenRouter /models answer give a
// catalog or a named error, never a crash; every parsed price is in range.
#include "tollgate/pricing/catalog.hpp"

#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
    using namespace tollgate::pricing;
    const auto r = parse_openrouter_models(std::string_view(reinterpret_cast<const char*>(data), size));
    if (r.status != catalog_status::ok) return 0;
    for (const auto& m : r.value->models()) {
        for (const auto& price : m.base.pico) {
            if (price && (*price < 0 || *price > max_pico)) std::abort();
        }
        (void)m.prices_for(1000, 1200);
    }
    return 0;
}
