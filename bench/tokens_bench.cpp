// Tokens counted per second on English-like text, one core: the figure of
// issue #3 (goal: at least 20 MB/s). The text is words drawn by a fixed-seed
// generator from a paragraph written for this benchmark, with punctuation,
// capitals, numbers and line breaks, so every pattern branch is exercised.
//
//   tokens_bench [--mb N] [--rounds N]
#include "tollgate/pricing/tokens.hpp"

#include <fmt/format.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <string>
#include <string_view>
#include <vector>

namespace {

constexpr std::string_view paragraph =
    "The proxy meters every call it forwards. When the upstream reports no usage, it counts the "
    "tokens itself, so the ledger never has to guess. Operators read the figures in the morning, "
    "compare them with last week's, and decide whether the free tier still pays for itself. "
    "Nobody likes surprises on an invoice: a counter that is exact, quick and boring is worth more "
    "than one that is clever. In 2025 the catalog listed 550 models; by the end of the year it had "
    "grown again, and the prices had changed 37 times. We'll keep counting, they'd say, until "
    "the numbers agree.";

std::string english_like(std::size_t bytes, std::uint64_t seed) {
    std::vector<std::string_view> words;
    for (std::size_t pos = 0; pos < paragraph.size();) {
        const std::size_t space = paragraph.find(' ', pos);
        const std::size_t end = space == std::string_view::npos ? paragraph.size() : space;
        words.push_back(paragraph.substr(pos, end - pos));
        pos = end + 1;
    }
    std::mt19937_64 rng(seed);
    std::string text;
    text.reserve(bytes + 64);
    while (text.size() < bytes) {
        text += words[rng() % words.size()];
        text += rng() % 40 == 0 ? "\n\n" : " ";
    }
    return text;
}

}  // namespace

int main(int argc, char** argv) {
    std::size_t mb = 8;
    int rounds = 3;
    for (int i = 1; i + 1 < argc; i += 2) {
        const std::string_view flag = argv[i];
        if (flag == "--mb") mb = std::strtoul(argv[i + 1], nullptr, 10);
        else if (flag == "--rounds") rounds = std::atoi(argv[i + 1]);
    }
    const std::string text = english_like(mb << 20, 20261124);
    fmt::print("{:<12} {:>10} {:>10} {:>12} {:>10} {:>12}\n", "encoding", "MB", "tokens", "bytes/token", "MB/s",
               "Mtokens/s");
    using clock = std::chrono::steady_clock;
    for (const auto e : {tollgate::pricing::encoding::o200k_base, tollgate::pricing::encoding::cl100k_base}) {
        const auto load_start = clock::now();
        const auto t = tollgate::pricing::tokenizer::get(e);
        const double load_s = std::chrono::duration<double>(clock::now() - load_start).count();
        double best_s = 1e9;
        std::size_t tokens = 0;
        for (int r = 0; r < rounds; ++r) {
            const auto start = clock::now();
            tokens = t->count(text);
            best_s = std::min(best_s, std::chrono::duration<double>(clock::now() - start).count());
        }
        const double megabytes = static_cast<double>(text.size()) / (1 << 20);
        fmt::print("{:<12} {:>10.1f} {:>10} {:>12.2f} {:>10.1f} {:>12.2f}   (tables built in {:.0f} ms)\n",
                   tollgate::pricing::to_string(e), megabytes, tokens,
                   static_cast<double>(text.size()) / static_cast<double>(tokens), megabytes / best_s,
                   static_cast<double>(tokens) / best_s / 1e6, load_s * 1e3);
    }
    return 0;
}
