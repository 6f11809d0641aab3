// pricing_bench: catalog parse time for every fixture, and cost computations
// per second. Prints figures; asserts nothing.
//
//   pricing_bench [--fixtures DIR]
#include "tollgate/pricing/catalog.hpp"
#include "tollgate/pricing/cost.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <vector>

namespace {

namespace pricing = tollgate::pricing;
using clock_type = std::chrono::steady_clock;

std::string read(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
}

double median_ms(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
    std::string dir = TOLLGATE_FIXTURES_DIR;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (std::string(argv[i]) == "--fixtures") dir = argv[i + 1];
    }
    fmt::print("== catalog parse (median of 20) ==\n");
    std::shared_ptr<const pricing::catalog> largest;
    for (const char* name : {"openrouter-models-madviking-2025-05-23.json", "openrouter-models-sinkers-aiscanner-2026-05-07.json",
                             "openrouter-models-anuran-roy-2026-08-19-default.json",
                             "openrouter-models-anuran-roy-2026-08-19-all-modalities.json", "litellm-model-prices.json"}) {
        const std::string text = read(dir + "/" + name);
        const bool litellm = std::string(name).rfind("litellm", 0) == 0;
        std::vector<double> times;
        std::size_t models = 0;
        for (int i = 0; i < 20; ++i) {
            const auto t0 = clock_type::now();
            auto r = litellm ? pricing::parse_litellm_prices(text) : pricing::parse_openrouter_models(text);
            times.push_back(std::chrono::duration<double, std::milli>(clock_type::now() - t0).count());
            if (r.status != pricing::catalog_status::ok) {
                fmt::print(stderr, "{}: {}\n", name, r.message);
                return 1;
            }
            models = r.value->models().size();
            if (std::string(name).find("all-modalities") != std::string::npos) largest = r.value;
        }
        const double ms = median_ms(times);
        fmt::print("{:<62} {:>5} models {:>7.2f} KB {:>7.2f} ms  {:>7.1f} MB/s\n", name, models,
                   static_cast<double>(text.size()) / 1024, ms, static_cast<double>(text.size()) / 1e6 / (ms / 1e3));
    }

    fmt::print("\n== cost computations (catalog_cost + price_call) ==\n");
    std::vector<const pricing::model*> priced;
    for (const auto& m : largest->models()) {
        if (!m.unpriced) priced.push_back(&m);
    }
    std::mt19937_64 rng(1);
    std::vector<pricing::usage> usages(4096);
    for (auto& u : usages) {
        u.prompt_tokens = static_cast<std::int64_t>(rng() % 100'000);
        u.completion_tokens = static_cast<std::int64_t>(rng() % 4'000);
        u.cached_tokens = u.prompt_tokens / 3;
        u.reasoning_tokens = u.completion_tokens / 4;
    }
    const auto& tier = pricing::default_tier_policies()[1];
    constexpr int calls = 5'000'000;
    std::int64_t sink = 0;
    const auto t0 = clock_type::now();
    for (int i = 0; i < calls; ++i) {
        const auto& m = *priced[static_cast<std::size_t>(i) % priced.size()];
        const auto& u = usages[static_cast<std::size_t>(i) % usages.size()];
        const auto cost = pricing::catalog_cost(m.prices_for(u.prompt_tokens, 1200), u);
        sink += pricing::price_call(cost.provider_cost_pico, m.free, u.prompt_tokens + u.completion_tokens, tier, false)
                    .charged_micros;
    }
    const double seconds = std::chrono::duration<double>(clock_type::now() - t0).count();
    fmt::print("{} calls over {} priced models: {:.1f} M/s ({:.0f} ns each; checksum {})\n", calls, priced.size(),
               calls / seconds / 1e6, seconds / calls * 1e9, sink);
    return 0;
}
