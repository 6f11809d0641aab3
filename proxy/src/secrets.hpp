// Secrets tollgate makes and keeps: the master key file, tollgate keys
// (`tg_…`, 256 random bits, stored only as a keyed BLAKE2b hash) and the
// admin token. libsodium does the cryptography.
#pragma once

#include <array>
#include <optional>
#include <string>
#include <string_view>

namespace tollgate::proxy {

class secrets {
public:
    // Reads the 32-byte master key file, creating it (mode 0600) when it is
    // missing. nullopt with `error` set when it cannot.
    static std::optional<secrets> open(const std::string& master_key_file, std::string& error);

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

private:
    std::array<unsigned char, 32> hash_key_{};
    std::array<unsigned char, 32> seal_key_{};
};

// Constant-time comparison of two byte strings of the same length.
bool equal_secret(std::string_view a, std::string_view b);

}  // namespace tollgate::proxy
