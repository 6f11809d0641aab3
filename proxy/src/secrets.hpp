// Secrets tollgate makes and keeps: the master key file, tollgate keys
// (`tg_…`, 256 random bits, stored only as a keyed BLAKE2b hash) and the
// admin token. libsodium does the cryptography.
#pragma once

#include <array>
#include <memory>
#include <optional>
#include <shared_mutex>
#include <string>
#include <string_view>

namespace tollgate::proxy {

class secrets {
public:
    // Reads the 32-byte master key file, creating it (mode 0600) when it is
    // missing. nullopt with `error` set when it cannot.
    static std::optional<secrets> open(const std::string& master_key_file, std::string& error);
    // The keys of a master key given in bytes (a rotation's new key).
    static secrets from_master(const std::array<unsigned char, 32>& master);

    // A new secret with `prefix` ("tg_", "tga_"): 32 random bytes, base64url.
    static std::string generate(std::string_view prefix);
    // What is stored instead of a secret: BLAKE2b-256 keyed with a subkey of
    // the master key (32 bytes).
    std::string hash(std::string_view secret) const;
    // A prefix safe to show ("tg_AbCd…").
    static std::string display_prefix(std::string_view secret);

    // Upstream keys at rest (a user's own OpenRouter key): XChaCha20-Poly1305
    // with another subkey of the master key, a random nonce before the
    // ciphertext. `context` (the owner, "user:12") is the associated data:
    // a blob moved to another user does not open.
    std::string seal(std::string_view plaintext, std::string_view context) const;
    // nullopt when the blob was altered, moved, or sealed under another key.
    std::optional<std::string> open_sealed(std::string_view sealed, std::string_view context) const;

    // The key-hashing key is kept in the database, sealed under the master
    // key (setting "sealed.key_hash_key"), so that a new master key leaves
    // every stored key hash valid. The first time, the one derived from the
    // master key is stored; afterwards the stored one is used. Call once,
    // before serving. False with `error` when the master key does not open
    // it (the wrong key file for this database).
    bool adopt_hash_key(const std::optional<std::string>& stored, std::string& to_store, std::string& error);
    static constexpr const char* hash_key_setting = "sealed.key_hash_key";

    // After a rotation: seals with `next`'s key from now on; blobs sealed
    // with the old key (staged while the rotation ran) still open until
    // the process ends.
    void adopt_seal_key(const secrets& next);

private:
    struct seal_keys {
        std::shared_mutex mu;
        std::array<unsigned char, 32> current{};
        std::optional<std::array<unsigned char, 32>> previous;
    };
    std::array<unsigned char, 32> hash_key_{};
    std::shared_ptr<seal_keys> seal_ = std::make_shared<seal_keys>();
};

// Constant-time comparison of two byte strings of the same length.
bool equal_secret(std::string_view a, std::string_view b);

}  // namespace tollgate::proxy
