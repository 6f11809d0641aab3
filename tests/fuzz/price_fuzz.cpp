// libFuzzer target: parse_usd_pico never crashes, never leaves its range, and
// agrees with itself when a trailing fractional zero is appended.
#include "tollgate/pricing/money.hpp"

#include <cstdlib>
#include <string>

extern "C" int LLVMFuzzerTestOneInput(const unsigned char* data, std::size_t size) {
    using namespace tollgate::pricing;
    const std::string text(reinterpret_cast<const char*>(data), size);
    const auto p = parse_usd_pico(text);
    if (p.status == price_status::ok && (p.pico < 0 || p.pico > max_pico)) std::abort();
    if (p.status == price_status::ok && text.find('.') != std::string::npos &&
        text.find_first_of("eE") == std::string::npos) {
        const auto q = parse_usd_pico(text + "0");
        if (q.status != p.status || q.pico != p.pico) std::abort();
    }
    return 0;
}
