// Secrets at rest (proxy/src/secrets.cpp): keyed hashes of tollgate keys
// and sealed upstream keys, with a real master key file.
#include "secrets.hpp"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sys/stat.h>

using tollgate::proxy::secrets;

namespace {

struct key_dir {
    std::filesystem::path path;
    key_dir() {
        std::string pattern = (std::filesystem::temp_directory_path() / "tollgate-secrets-XXXXXX").string();
        path = ::mkdtemp(pattern.data());
    }
    ~key_dir() {
        std::error_code ec;
        std::filesystem::remove_all(path, ec);
    }
    secrets open(const char* name) const {
        std::string error;
        auto s = secrets::open((path / name).string(), error);
        INFO(error);
        REQUIRE(s);
        return *s;
    }
};

}  // namespace

TEST_CASE("a master key file is created 0600 and gives the same keys when reopened") {
    key_dir dir;
    const auto a = dir.open("master.key");
    struct stat st {};
    REQUIRE(::stat((dir.path / "master.key").c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK(std::filesystem::file_size(dir.path / "master.key") == 32);
    const auto b = dir.open("master.key");
    CHECK(a.hash("tg_secret") == b.hash("tg_secret"));
    const auto sealed = a.seal("sk-or-v1-abc", "user:1");
    CHECK(b.open_sealed(sealed, "user:1") == "sk-or-v1-abc");
}

TEST_CASE("a sealed key opens only with its master key, unaltered, for its owner") {
    key_dir dir;
    const auto s = dir.open("master.key");
    const std::string plain = "sk-or-byok-0123456789abcdef";
    const auto sealed = s.seal(plain, "user:7");
    CHECK(sealed.find(plain) == std::string::npos);
    CHECK(sealed.size() == 24 + plain.size() + 16);  // nonce, ciphertext, tag
    CHECK(s.seal(plain, "user:7") != sealed);  // a fresh nonce each time
    CHECK(s.open_sealed(sealed, "user:7") == plain);
    CHECK_FALSE(s.open_sealed(sealed, "user:8"));  // moved to another user
    for (std::size_t i = 0; i < sealed.size(); i += 7) {
        auto altered = sealed;
        altered[i] = static_cast<char>(altered[i] ^ 0x01);
        INFO("byte " << i);
        CHECK_FALSE(s.open_sealed(altered, "user:7"));
    }
    CHECK_FALSE(s.open_sealed(sealed.substr(0, 39), "user:7"));
    CHECK_FALSE(s.open_sealed("", "user:7"));
    const auto other = dir.open("other.key");
    CHECK_FALSE(other.open_sealed(sealed, "user:7"));
}
