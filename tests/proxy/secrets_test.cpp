// Secrets at rest (proxy/src/secrets.cpp): keyed hashes of tollgate keys
// and sealed upstream keys, with a real master key file.
#include "keys.hpp"
#include "master_key.hpp"
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

// --- the master key beside a ledger (proxy/src/master_key.cpp) -------------


namespace {

std::string file_bytes(const std::filesystem::path& p) {
    std::ifstream in(p, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

std::unique_ptr<tollgate::ledger::ledger> open_db(const std::filesystem::path& p) {
    auto r = tollgate::ledger::ledger::open({.path = p.string()});
    INFO(r.message);
    REQUIRE(r.value);
    return std::move(r.value);
}

tollgate::proxy::secrets open_with(const std::filesystem::path& key, tollgate::ledger::ledger& l) {
    std::string error;
    auto s = tollgate::proxy::open_secrets(key.string(), l, error);
    INFO(error);
    REQUIRE(s);
    return *s;
}

}  // namespace

TEST_CASE("rotating the master key re-seals every upstream key and keeps every key hash") {
    using namespace tollgate;
    key_dir dir;
    const auto db = dir.path / "t.db";
    const auto key_file = dir.path / "master.key";
    const std::string upstream_key = "sk-or-v1-0123456789abcdef-plaintext-upstream-key";
    auto l = open_db(db);
    auto s = open_with(key_file, *l);
    const auto user = l->create_user({.email = "k@example.com", .name = "", .tier = "starter", .actor = "test"});
    REQUIRE(user.code == ledger::result::ok);
    ledger::openrouter_account account;
    account.user_id = user.user_id;
    account.label = "tollgate-user-1";
    account.status = "active";
    account.sealed_key = s.seal(upstream_key, proxy::owner_context(user.user_id));
    REQUIRE(l->put_openrouter_account(account).code == ledger::result::ok);
    l->flush();
    const auto hash_before = s.hash("tg_some-user-key");
    const auto old_key_bytes = file_bytes(key_file);

    const auto done = proxy::rotate_master_key(key_file.string(), *l, s);
    INFO(done.error);
    REQUIRE(done.ok);
    CHECK(done.resealed == 2);  // the provisioned key and the key-hashing key
    CHECK(file_bytes(key_file) != old_key_bytes);
    CHECK(file_bytes(key_file).size() == 32);
    struct stat st {};
    REQUIRE(::stat(key_file.c_str(), &st) == 0);
    CHECK((st.st_mode & 0777) == 0600);
    CHECK_FALSE(std::filesystem::exists(key_file.string() + ".new"));

    const auto sealed = *l->find_openrouter_account(user.user_id)->sealed_key;
    CHECK(sealed != *account.sealed_key);
    CHECK(s.open_sealed(sealed, proxy::owner_context(user.user_id)) == upstream_key);
    CHECK(s.hash("tg_some-user-key") == hash_before);

    // What the old key file opens: nothing any more.
    std::filesystem::create_directory(dir.path / "old");
    {
        std::ofstream out(dir.path / "old" / "master.key", std::ios::binary);
        out << old_key_bytes;
    }
    std::filesystem::permissions(dir.path / "old" / "master.key", std::filesystem::perms::owner_read);
    std::string error;
    const auto old = secrets::open((dir.path / "old" / "master.key").string(), error);
    REQUIRE(old);
    CHECK_FALSE(old->open_sealed(sealed, proxy::owner_context(user.user_id)));

    // A restart with the new file: the same hashes, the key opens.
    l.reset();
    l = open_db(db);
    {
        auto again = open_with(key_file, *l);
        CHECK(again.hash("tg_some-user-key") == hash_before);
        CHECK(again.open_sealed(sealed, proxy::owner_context(user.user_id)) == upstream_key);
    }
    // The old key file is refused for this database, with the reason.
    {
        const auto refused = proxy::open_secrets((dir.path / "old" / "master.key").string(), *l, error);
        CHECK_FALSE(refused);
        CHECK(error.find("does not open this database") != std::string::npos);
    }
    CHECK(l->check().ok);

    // The plaintext key is in no file of the database (db, -wal, -shm).
    l->flush();
    for (const auto& entry : std::filesystem::directory_iterator(dir.path)) {
        if (!entry.is_regular_file()) continue;
        INFO(entry.path());
        CHECK(file_bytes(entry.path()).find(upstream_key) == std::string::npos);
    }
}

TEST_CASE("a rotation cut short is finished, or undone, at the next open") {
    using namespace tollgate;
    key_dir dir;
    const auto db = dir.path / "t.db";
    const auto key_file = dir.path / "master.key";
    auto l = open_db(db);
    auto s = open_with(key_file, *l);
    const auto hash_before = s.hash("tg_x");
    const auto old_key_bytes = file_bytes(key_file);

    SECTION("committed but not renamed: the new key is taken") {
        REQUIRE(proxy::rotate_master_key(key_file.string(), *l, s).ok);
        const auto new_key_bytes = file_bytes(key_file);
        // Put the files back as they were before the rename.
        std::filesystem::rename(key_file, key_file.string() + ".new");
        {
            std::ofstream out(key_file, std::ios::binary);
            out << old_key_bytes;
        }
        std::filesystem::permissions(key_file, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
        auto again = open_with(key_file, *l);
        CHECK(file_bytes(key_file) == new_key_bytes);
        CHECK_FALSE(std::filesystem::exists(key_file.string() + ".new"));
        CHECK(again.hash("tg_x") == hash_before);
    }
    SECTION("committed and renamed, then lost by the database: the kept old key comes back") {
        l.reset();  // closed: everything is in the database file
        std::filesystem::copy_file(db, dir.path / "before.db");
        l = open_db(db);
        auto live = open_with(key_file, *l);
        REQUIRE(proxy::rotate_master_key(key_file.string(), *l, live).ok);
        REQUIRE(file_bytes(key_file) != old_key_bytes);
        l.reset();
        // As after a power cut that lost the re-encryption's commit.
        for (const char* suffix : {"", "-wal", "-shm"}) std::filesystem::remove(db.string() + suffix);
        std::filesystem::copy_file(dir.path / "before.db", db);
        l = open_db(db);
        auto again = open_with(key_file, *l);
        CHECK(file_bytes(key_file) == old_key_bytes);
        CHECK(again.hash("tg_x") == hash_before);
    }
    SECTION("never committed: the stray new file is removed, the old key stays") {
        {
            std::ofstream out(key_file.string() + ".new", std::ios::binary);
            out << std::string(32, '\x5a');
        }
        std::filesystem::permissions(key_file.string() + ".new", std::filesystem::perms::owner_read);
        auto again = open_with(key_file, *l);
        CHECK(file_bytes(key_file) == old_key_bytes);
        CHECK_FALSE(std::filesystem::exists(key_file.string() + ".new"));
        CHECK(again.hash("tg_x") == hash_before);
    }
}
