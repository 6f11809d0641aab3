#include "master_key.hpp"

#include <fcntl.h>
#include <fmt/format.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace tollgate::proxy {

namespace {

std::string pending_path(const std::string& key_file) {
    return key_file + ".new";
}

bool exists(const std::string& path) {
    struct stat st {};
    return ::stat(path.c_str(), &st) == 0;
}

// The directory entry of a rename is durable only once its directory is.
void sync_directory_of(const std::string& path) {
    const auto slash = path.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : slash == 0 ? "/" : path.substr(0, slash);
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)::fsync(fd);
    ::close(fd);
}

bool write_key_file(const std::string& path, const std::array<unsigned char, 32>& master, std::string& error) {
    ::unlink(path.c_str());
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        error = fmt::format("cannot create {}: {}", path, std::strerror(errno));
        return false;
    }
    const bool ok =
        ::write(fd, master.data(), master.size()) == static_cast<ssize_t>(master.size()) && ::fsync(fd) == 0;
    ::close(fd);
    if (!ok) {
        ::unlink(path.c_str());
        error = fmt::format("cannot write {}", path);
    }
    return ok;
}

std::string previous_path(const std::string& key_file) {
    return key_file + ".old";
}

// Whether the key file at `path` opens the database's sealed key-hashing key.
bool opens(const std::string& path, const std::string& stored) {
    if (!exists(path)) return false;
    std::string ignored;
    const auto s = secrets::open(path, ignored);
    return s && s->open_sealed(stored, std::string("setting:") + secrets::hash_key_setting).has_value();
}

bool take_over(const std::string& from, const std::string& key_file, const char* what, std::string& error) {
    if (::rename(from.c_str(), key_file.c_str()) != 0) {
        error = fmt::format("{}: {} cannot replace {}: {}", what, from, key_file, std::strerror(errno));
        return false;
    }
    sync_directory_of(key_file);
    fmt::print("tollgate: {}: {} replaced {}\n", what, from, key_file);
    return true;
}

// A rotation cut short leaves the key file and the database out of step;
// whichever key opens the database is the one:
// - committed but not renamed: `<file>.new` opens it, and takes over;
// - never committed: the key file opens it, and `<file>.new` goes;
// - committed, renamed, and then lost by the database (a power cut
//   before the commit reached the disk): `<file>.old`, kept by the
//   rotation, opens it, and comes back.
// Nothing is touched while the database cannot be read.
bool finish_interrupted_rotation(const std::string& key_file, ledger::ledger& l, std::string& error) {
    const auto stored = l.setting(secrets::hash_key_setting);
    if (!stored) return true;  // a first start, or unreadable: nothing to decide on
    const auto next_path = pending_path(key_file);
    if (exists(next_path)) {
        if (opens(next_path, *stored)) return take_over(next_path, key_file, "finished a master key rotation", error);
        if (opens(key_file, *stored)) ::unlink(next_path.c_str());  // it never committed
        return true;
    }
    const auto old_path = previous_path(key_file);
    if (!opens(key_file, *stored) && opens(old_path, *stored)) {
        return take_over(old_path, key_file, "the database predates the last master key rotation", error);
    }
    return true;
}

}  // namespace

std::optional<secrets> open_secrets(const std::string& key_file, ledger::ledger& l, std::string& error) {
    if (!finish_interrupted_rotation(key_file, l, error)) return std::nullopt;
    auto s = secrets::open(key_file, error);
    if (!s) return std::nullopt;
    std::string to_store;
    if (!s->adopt_hash_key(l.setting(secrets::hash_key_setting), to_store, error)) {
        error = fmt::format("{}: {}", key_file, error);
        return std::nullopt;
    }
    if (!to_store.empty()) {
        const auto out = l.put_setting(secrets::hash_key_setting, to_store);
        if (out.code != ledger::result::ok || !l.wait_durable(out.seq)) {
            error = "could not store the sealed key-hashing key";
            return std::nullopt;
        }
    }
    return s;
}

rotation rotate_master_key(const std::string& key_file, ledger::ledger& l, secrets& live) {
    rotation out;
    std::array<unsigned char, 32> master{};
    randombytes_buf(master.data(), master.size());
    const auto next = secrets::from_master(master);
    const auto next_path = pending_path(key_file);
    const bool written = write_key_file(next_path, master, out.error);
    sodium_memzero(master.data(), master.size());
    if (!written) return out;
    sync_directory_of(next_path);

    const auto resealed = l.reseal_all([&](std::string_view blob, const std::string& context) {
        auto plain = live.open_sealed(blob, context);
        if (!plain) return std::optional<std::string>{};
        auto sealed = next.seal(*plain, context);
        sodium_memzero(plain->data(), plain->size());
        return std::optional<std::string>(std::move(sealed));
    });
    if (resealed.code != ledger::result::ok || !l.wait_durable(resealed.seq)) {
        ::unlink(next_path.c_str());
        out.error =
            resealed.code == ledger::result::invalid_argument
                ? fmt::format(
                      "the current master key does not open {} sealed blob(s) (first: {}); nothing "
                      "was changed",
                      resealed.unreadable.size(), resealed.unreadable.empty() ? "" : resealed.unreadable.front())
                : fmt::format("the ledger could not commit the re-encrypted keys ({}); nothing was changed",
                              ledger::to_string(resealed.code));
        return out;
    }
    // The old key is kept beside it: should the database lose the commit
    // (a power cut before it reached the disk), the next start goes back
    // to it (finish_interrupted_rotation).
    {
        std::array<unsigned char, 32> previous{};
        const int fd = ::open(key_file.c_str(), O_RDONLY | O_CLOEXEC);
        const bool read = fd >= 0 && ::read(fd, previous.data(), previous.size()) == 32;
        if (fd >= 0) ::close(fd);
        std::string ignored;
        if (read) (void)write_key_file(previous_path(key_file), previous, ignored);
        sodium_memzero(previous.data(), previous.size());
    }
    if (::rename(next_path.c_str(), key_file.c_str()) != 0) {
        // Committed: the database now needs the new key, which is in
        // next_path; the next start finishes the rename.
        out.error = fmt::format("re-encrypted, but {} could not replace {}: {} (the next start finishes it)", next_path,
                                key_file, std::strerror(errno));
        live.adopt_seal_key(next);
        return out;
    }
    sync_directory_of(key_file);
    live.adopt_seal_key(next);
    out.ok = true;
    out.resealed = resealed.resealed;
    return out;
}

}  // namespace tollgate::proxy
