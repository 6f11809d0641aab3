// The live catalog is swapped whole: readers on other threads always see a
// complete catalog, old or new, never half of one. Runs under TSan in CI.
#include "tollgate/pricing/catalog.hpp"

#include <catch2/catch.hpp>

#include <atomic>
#include <fmt/format.h>
#include <thread>
#include <vector>

using namespace tollgate::pricing;

namespace {
std::shared_ptr<const catalog> make_catalog(int generation) {
    // Generation g has g + 1 models, each priced g pico per prompt token.
    std::string json = R"({"data":[)";
    for (int i = 0; i <= generation; ++i) {
        json += fmt::format(R"({}{{"id":"m{}","pricing":{{"prompt":"{}e-12","completion":"0"}}}})", i ? "," : "", i,
                            generation);
    }
    json += "]}";
    auto r = parse_openrouter_models(json);
    return r.value;
}
}  // namespace

TEST_CASE("readers never see half a catalog while it is replaced", "[pricing][concurrency]") {
    constexpr int generations = 200;
    std::vector<std::shared_ptr<const catalog>> prepared;
    for (int g = 0; g < generations; ++g) prepared.push_back(make_catalog(g));
    REQUIRE(prepared.back());
    catalog_store store(prepared[0]);
    std::atomic<bool> done{false};
    std::atomic<int> torn{0};
    std::atomic<long> reads{0};
    std::vector<std::thread> readers;
    for (int r = 0; r < 3; ++r) {
        readers.emplace_back([&] {
            while (!done.load()) {
                const auto snapshot = store.get();
                const auto generation = static_cast<std::int64_t>(snapshot->models().size()) - 1;
                for (const auto& m : snapshot->models()) {
                    if (m.base.get(price_key::prompt) != generation) ++torn;
                }
                ++reads;
            }
        });
    }
    for (int g = 1; g < generations; ++g) {
        store.replace(prepared[static_cast<std::size_t>(g)]);
        std::this_thread::yield();
    }
    // Keep reading for a moment after the last swap, bounded by a count.
    while (reads.load() < 1000) std::this_thread::yield();
    done = true;
    for (auto& t : readers) t.join();
    CHECK(torn == 0);
    CHECK(store.get()->models().size() == generations);
}
