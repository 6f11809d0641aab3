// The token counter against gpt-tokenizer 4.0.0: every case of
// tokens/expected.mjs (many scripts, emoji, contractions, whitespace and digit
// runs, code, long pieces, invalid UTF-8) must give the same ids, for both
// encodings. ctest writes the expected file first (fixture tokens_expected).
#include "tollgate/pricing/tokens.hpp"

#include <catch2/catch.hpp>

#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace tollgate::pricing;

namespace {

std::vector<std::string> split(const std::string& s, char sep) {
    std::vector<std::string> out;
    std::size_t pos = 0;
    for (;;) {
        const std::size_t at = s.find(sep, pos);
        out.push_back(s.substr(pos, at == std::string::npos ? std::string::npos : at - pos));
        if (at == std::string::npos) return out;
        pos = at + 1;
    }
}

std::string unhex(const std::string& h) {
    std::string out;
    for (std::size_t i = 0; i + 1 < h.size(); i += 2) out.push_back(static_cast<char>(std::stoi(h.substr(i, 2), nullptr, 16)));
    return out;
}

std::vector<std::vector<std::string>> expected_cases(const char* kind) {
    std::ifstream in(TOLLGATE_TOKENS_EXPECTED);
    REQUIRE(in.good());
    std::vector<std::vector<std::string>> cases;
    for (std::string line; std::getline(in, line);) {
        auto fields = split(line, '\t');
        if (fields.size() >= 4 && fields[0] == kind) cases.push_back(std::move(fields));
    }
    return cases;
}

}  // namespace

TEST_CASE("encodings have their names and vocabularies", "[pricing][tokens]") {
    CHECK(parse_encoding("o200k_base") == encoding::o200k_base);
    CHECK(parse_encoding("cl100k_base") == encoding::cl100k_base);
    CHECK_FALSE(parse_encoding("p50k_base"));
    CHECK(to_string(encoding::o200k_base) == "o200k_base");
    CHECK(tokenizer::get(encoding::o200k_base)->vocabulary_size() == 199'998);
    CHECK(tokenizer::get(encoding::cl100k_base)->vocabulary_size() == 100'256);
    CHECK(tokenizer::get(encoding::o200k_base) == tokenizer::get(encoding::o200k_base));
}

TEST_CASE("token ids match gpt-tokenizer for every case", "[pricing][tokens]") {
    const auto cases = expected_cases("text");
    REQUIRE(cases.size() >= 100);
    std::size_t checked = 0;
    for (const auto& c : cases) {
        REQUIRE(c.size() == 5);
        const auto enc = parse_encoding(c[1]);
        REQUIRE(enc);
        const auto t = tokenizer::get(*enc);
        const std::string text = unhex(c[2]);
        std::vector<std::uint32_t> expected;
        if (!c[4].empty()) {
            for (const auto& id : split(c[4], ',')) expected.push_back(static_cast<std::uint32_t>(std::stoul(id)));
        }
        INFO(c[1] << " text (hex) " << c[2].substr(0, 120));
        CHECK(t->count(text) == std::stoul(c[3]));
        CHECK(t->encode(text) == expected);
        ++checked;
    }
    CHECK(checked == cases.size());
}

TEST_CASE("chat messages carry the cookbook's overhead", "[pricing][tokens]") {
    const auto t = tokenizer::get(encoding::o200k_base);
    CHECK(t->count_chat({}) == 3);
    const chat_message hello[] = {{.role = "user", .content = "Hello!"}};
    CHECK(t->count_chat(hello) == 3 + 3 + t->count("user") + t->count("Hello!"));
    const chat_message named[] = {{.role = "user", .content = "Hello!", .name = "ada"}};
    CHECK(t->count_chat(named) == t->count_chat(hello) + 1 + t->count("ada"));
    const chat_message empty_name[] = {{.role = "user", .content = "", .name = ""}};
    CHECK(t->count_chat(empty_name) == 3 + 3 + 1 + 1);

    // And the same numbers as the cookbook's formula over gpt-tokenizer.
    const auto cases = expected_cases("chat");
    REQUIRE(cases.size() == 8);
    for (const auto& c : cases) {
        const auto enc = parse_encoding(c[1]);
        REQUIRE(enc);
        std::vector<std::string> storage;
        storage.reserve(64);
        std::vector<chat_message> messages;
        if (!c[2].empty()) {
            for (const auto& m : split(c[2], ';')) {
                const auto parts = split(m, ':');
                REQUIRE(parts.size() >= 2);
                chat_message msg;
                msg.role = storage.emplace_back(unhex(parts[0]));
                msg.content = storage.emplace_back(unhex(parts[1]));
                if (parts.size() == 3) msg.name = storage.emplace_back(unhex(parts[2]));
                messages.push_back(msg);
            }
        }
        INFO(c[1] << " " << c[2]);
        CHECK(tokenizer::get(*enc)->count_chat(messages) == std::stoul(c[3]));
    }
}

TEST_CASE("hostile input is counted, not failed, in bounded time", "[pricing][tokens]") {
    for (const auto e : {encoding::o200k_base, encoding::cl100k_base}) {
        const auto t = tokenizer::get(e);
        // 256 KiB pieces of one letter, of whitespace, of invalid bytes, of
        // emoji: one piece each, so the heap merge carries them (a quadratic
        // merge would take minutes). The figures are gpt-tokenizer's on the
        // same input at 20,000 repetitions, scaled: the merges are periodic.
        constexpr std::size_t n = 1 << 18;
        const bool o200k = e == encoding::o200k_base;
        CHECK(t->count(std::string(n, 'a')) == n / 8);
        CHECK(t->count(std::string(n, ' ') + "x") > 0);
        CHECK(t->count(std::string(n, '\xff')) == (o200k ? n / 8 : n / 4));
        std::string emoji;
        for (std::size_t i = 0; i < n / 4; ++i) emoji += "\xF0\x9F\x98\x80";
        CHECK(t->count(emoji) == (o200k ? n / 4 : n / 2));
        CHECK(t->count(std::string("\0\0\0", 3)) > 0);
    }
}
