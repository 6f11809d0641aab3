// libFuzzer target: any bytes given as an OpenRouter /models answer or a
// LiteLLM price map give a catalog or a named error, never a crash; every
// parsed price is in range.
#include "tollgate/pricing/catalog.hpp"

#include <cstdlib>
#include <string_view>

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
    using namespace tollgate::pricing;
    const std::string_view text(reinterpret_cast<const char*>(data), size);
    for (const auto& r : {parse_openrouter_models(text), parse_litellm_prices(text)}) {
        if (r.status != catalog_status::ok) continue;
        for (const auto& m : r.value->models()) {
            for (const auto& price : m.base.pico) {
                if (price && (*price < 0 || *price > max_pico)) std::abort();
            }
            (void)m.prices_for(1000, 1200);
        }
    }
    (void)count_tts_characters(text);
    return 0;
}
