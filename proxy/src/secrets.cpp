#include "secrets.hpp"

#include <fmt/format.h>
#include <sodium.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace tollgate::proxy {

namespace {

constexpr std::size_t master_key_bytes = 32;
// crypto_kdf context and subkey id of the key-hashing key: changing either
// would orphan every stored key hash.
constexpr char kdf_context[crypto_kdf_CONTEXTBYTES + 1] = "tgkeyhsh";
constexpr std::uint64_t kdf_key_hash_id = 1;
// ... and of the key that seals upstream keys.
constexpr char seal_context[crypto_kdf_CONTEXTBYTES + 1] = "tgupkeys";
constexpr std::uint64_t kdf_seal_id = 2;

bool read_exact(int fd, unsigned char* out, std::size_t n) {
    std::size_t got = 0;
    while (got < n) {
        const auto r = ::read(fd, out + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return false;
        got += static_cast<std::size_t>(r);
    }
    unsigned char extra = 0;
    return ::read(fd, &extra, 1) == 0;  // exactly n bytes, nothing after
}

}  // namespace

std::optional<secrets> secrets::open(const std::string& path, std::string& error) {
    if (sodium_init() < 0) {
        error = "libsodium could not be initialised";
        return std::nullopt;
    }
    unsigned char master[master_key_bytes];
    int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0 && errno == ENOENT) {
        // First start: create it with O_EXCL so two starts cannot both write one.
        fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
        if (fd < 0) {
            error = fmt::format("cannot create the master key file {}: {}", path, std::strerror(errno));
            return std::nullopt;
        }
        randombytes_buf(master, sizeof master);
        const bool ok = ::write(fd, master, sizeof master) == static_cast<ssize_t>(sizeof master) && ::fsync(fd) == 0;
        ::close(fd);
        if (!ok) {
            ::unlink(path.c_str());
            error = fmt::format("cannot write the master key file {}", path);
            return std::nullopt;
        }
    } else if (fd < 0) {
        error = fmt::format("cannot read the master key file {}: {}", path, std::strerror(errno));
        return std::nullopt;
    } else {
        struct stat st {};
        if (::fstat(fd, &st) == 0 && (st.st_mode & 077) != 0) {
            ::close(fd);
            error = fmt::format("the master key file {} is readable by others (mode {:o}); chmod 600 it", path,
                                st.st_mode & 0777);
            return std::nullopt;
        }
        const bool ok = read_exact(fd, master, sizeof master);
        ::close(fd);
        if (!ok) {
            error = fmt::format("the master key file {} must hold exactly {} bytes", path, master_key_bytes);
            return std::nullopt;
        }
    }
    std::array<unsigned char, master_key_bytes> bytes{};
    std::memcpy(bytes.data(), master, sizeof master);
    sodium_memzero(master, sizeof master);
    auto s = from_master(bytes);
    sodium_memzero(bytes.data(), bytes.size());
    return s;
}

secrets secrets::from_master(const std::array<unsigned char, 32>& master) {
    if (sodium_init() < 0) std::abort();  // nothing here can work without it
    secrets s;
    crypto_kdf_derive_from_key(s.hash_key_.data(), s.hash_key_.size(), kdf_key_hash_id, kdf_context, master.data());
    static_assert(crypto_aead_xchacha20poly1305_ietf_KEYBYTES == 32);
    crypto_kdf_derive_from_key(s.seal_->current.data(), s.seal_->current.size(), kdf_seal_id, seal_context,
                               master.data());
    return s;
}

bool secrets::adopt_hash_key(const std::optional<std::string>& stored, std::string& to_store, std::string& error) {
    const std::string context = std::string("setting:") + hash_key_setting;
    to_store.clear();
    if (!stored) {
        to_store = seal(std::string_view(reinterpret_cast<const char*>(hash_key_.data()), hash_key_.size()), context);
        return true;
    }
    const auto key = open_sealed(*stored, context);
    if (!key || key->size() != hash_key_.size()) {
        error =
            "the master key file does not open this database's sealed keys: it belongs to another database, or a "
            "rotation replaced it; restore the key file that belongs to this database";
        return false;
    }
    std::memcpy(hash_key_.data(), key->data(), hash_key_.size());
    return true;
}

void secrets::adopt_seal_key(const secrets& next) {
    std::array<unsigned char, 32> fresh;
    {
        std::shared_lock lock(next.seal_->mu);
        fresh = next.seal_->current;
    }
    std::unique_lock lock(seal_->mu);
    seal_->previous = seal_->current;
    seal_->current = fresh;
}

std::string secrets::generate(std::string_view prefix) {
    unsigned char raw[32];
    randombytes_buf(raw, sizeof raw);
    char encoded[sodium_base64_ENCODED_LEN(32, sodium_base64_VARIANT_URLSAFE_NO_PADDING)];
    sodium_bin2base64(encoded, sizeof encoded, raw, sizeof raw, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    sodium_memzero(raw, sizeof raw);
    return std::string(prefix) + encoded;
}

std::string secrets::hash(std::string_view secret) const {
    std::string out(32, '\0');
    crypto_generichash(reinterpret_cast<unsigned char*>(out.data()), out.size(),
                       reinterpret_cast<const unsigned char*>(secret.data()), secret.size(), hash_key_.data(),
                       hash_key_.size());
    return out;
}

std::string secrets::seal(std::string_view plaintext, std::string_view context) const {
    constexpr std::size_t nonce_bytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
    std::string out(nonce_bytes + plaintext.size() + crypto_aead_xchacha20poly1305_ietf_ABYTES, '\0');
    auto* nonce = reinterpret_cast<unsigned char*>(out.data());
    randombytes_buf(nonce, nonce_bytes);
    unsigned long long written = 0;
    std::shared_lock lock(seal_->mu);
    crypto_aead_xchacha20poly1305_ietf_encrypt(
        nonce + nonce_bytes, &written, reinterpret_cast<const unsigned char*>(plaintext.data()), plaintext.size(),
        reinterpret_cast<const unsigned char*>(context.data()), context.size(), nullptr, nonce, seal_->current.data());
    out.resize(nonce_bytes + written);
    return out;
}

std::optional<std::string> secrets::open_sealed(std::string_view sealed, std::string_view context) const {
    constexpr std::size_t nonce_bytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
    constexpr std::size_t tag_bytes = crypto_aead_xchacha20poly1305_ietf_ABYTES;
    if (sealed.size() < nonce_bytes + tag_bytes) return std::nullopt;
    const auto* nonce = reinterpret_cast<const unsigned char*>(sealed.data());
    std::string out(sealed.size() - nonce_bytes - tag_bytes, '\0');
    const auto try_key = [&](const std::array<unsigned char, 32>& key) {
        unsigned long long written = 0;
        if (crypto_aead_xchacha20poly1305_ietf_decrypt(
                reinterpret_cast<unsigned char*>(out.data()), &written, nullptr, nonce + nonce_bytes,
                sealed.size() - nonce_bytes, reinterpret_cast<const unsigned char*>(context.data()), context.size(),
                nonce, key.data()) != 0) {
            return false;
        }
        out.resize(written);
        return true;
    };
    std::shared_lock lock(seal_->mu);
    if (try_key(seal_->current)) return out;
    if (seal_->previous && try_key(*seal_->previous)) return out;
    return std::nullopt;
}

std::string secrets::display_prefix(std::string_view secret) {
    return std::string(secret.substr(0, std::min<std::size_t>(secret.size(), 8)));
}

bool equal_secret(std::string_view a, std::string_view b) {
    return a.size() == b.size() && sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

}  // namespace tollgate::proxy
