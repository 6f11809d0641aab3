// Byte-pair encoding over OpenAI's rank files.
//
// count(text):
//   1. make the text valid UTF-8 (invalid subsequences become U+FFFD; the
//      common, valid case copies nothing);
//   2. split it into pieces with the encoding's pre-tokenization pattern;
//   3. for each piece: if its bytes are one token, that is the token (most
//      English words); otherwise start from single bytes and repeatedly merge
//      the adjacent pair whose concatenation has the lowest rank (leftmost on
//      ties) until no adjacent pair is a token.
//
// Ranks live in an open-addressing hash table keyed by the token's bytes,
// which point into one arena, so a lookup takes a string_view and allocates
// nothing. Pieces up to long_piece_bytes merge with a linear scan over a
// small array (what the data nearly always holds); longer ones (a megabyte
// without a space, say) with a heap, so hostile input costs O(n log n), not
// O(n^2).
#include "tollgate/pricing/tokens.hpp"

#include "rank_data.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <functional>
#include <limits>
#include <mutex>
#include <stdexcept>
#include <string>

namespace tollgate::pricing {

namespace {

constexpr std::uint32_t no_rank = std::numeric_limits<std::uint32_t>::max();
// Longer pieces merge through the heap (see the top of the file).
constexpr std::size_t long_piece_bytes = 256;
// The longest token in either file is 128 bytes; a longer line is corrupt.
constexpr std::size_t max_token_bytes = 1024;

// tiktoken's patterns (tiktoken_ext/openai_public.py), verbatim.
constexpr const char* cl100k_pattern =
    R"re('(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}++|\p{N}{1,3}+| ?[^\s\p{L}\p{N}]++[\r\n]*+|\s++$|\s*[\r\n]|\s+(?!\S)|\s)re";
constexpr const char* o200k_pattern =
    R"re([^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?)re"
    R"re(|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?)re"
    R"re(|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+)re";

std::uint64_t load_le(const unsigned char* p, std::size_t n) {
    std::uint64_t v = 0;
    std::memcpy(&v, p, n);  // little-endian hosts only; any order would hash fine
    return v;
}

std::uint64_t hash_bytes(std::string_view s) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    std::size_t n = s.size();
    std::uint64_t h = 0x9e3779b97f4a7c15ULL ^ (n * 0xff51afd7ed558ccdULL);
    while (n >= 8) {
        h = (h ^ load_le(p, 8)) * 0xc4ceb9fe1a85ec53ULL;
        h ^= h >> 32;
        p += 8;
        n -= 8;
    }
    if (n > 0) h = (h ^ load_le(p, n)) * 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ULL;
    h ^= h >> 32;
    return h;
}

int base64_value(char c) {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

// Appends the decoded bytes of `text` to `out`; false on anything but
// padded base64.
bool base64_decode(std::string_view text, std::string& out) {
    if (text.empty() || text.size() % 4 != 0) return false;
    for (std::size_t i = 0; i < text.size(); i += 4) {
        int v[4];
        int pad = 0;
        for (int k = 0; k < 4; ++k) {
            const char c = text[i + k];
            if (c == '=' && i + 4 == text.size() && k >= 2) {
                v[k] = 0;
                ++pad;
            } else if (pad > 0 || (v[k] = base64_value(c)) < 0) {
                return false;
            }
        }
        const std::uint32_t bits = (std::uint32_t(v[0]) << 18) | (std::uint32_t(v[1]) << 12) |
                                   (std::uint32_t(v[2]) << 6) | std::uint32_t(v[3]);
        out.push_back(static_cast<char>(bits >> 16));
        if (pad < 2) out.push_back(static_cast<char>((bits >> 8) & 0xff));
        if (pad < 1) out.push_back(static_cast<char>(bits & 0xff));
    }
    return true;
}

// Length of the longest valid UTF-8 prefix of `s`, and, when it stops early,
// how many bytes the ill-formed subsequence there spans (the maximal subpart
// of Unicode 3.9 / the WHATWG decoder: a truncated but so-far valid sequence
// is one error, any other bad byte is one error by itself).
struct utf8_scan {
    std::size_t valid_bytes;
    std::size_t bad_bytes;  // 0 when the whole input is valid
};

utf8_scan scan_utf8(std::string_view s, std::size_t from) {
    const auto* p = reinterpret_cast<const unsigned char*>(s.data());
    const std::size_t n = s.size();
    std::size_t i = from;
    while (i < n) {
        if (i + 8 <= n && (load_le(p + i, 8) & 0x8080808080808080ULL) == 0) {
            i += 8;
            continue;
        }
        const unsigned char b = p[i];
        if (b < 0x80) {
            ++i;
            continue;
        }
        std::size_t need = 0;
        unsigned char lo = 0x80, hi = 0xbf;
        if (b >= 0xc2 && b <= 0xdf) {
            need = 1;
        } else if (b >= 0xe0 && b <= 0xef) {
            need = 2;
            if (b == 0xe0) lo = 0xa0;
            if (b == 0xed) hi = 0x9f;
        } else if (b >= 0xf0 && b <= 0xf4) {
            need = 3;
            if (b == 0xf0) lo = 0x90;
            if (b == 0xf4) hi = 0x8f;
        } else {
            return {i - from, 1};
        }
        std::size_t k = 1;
        for (; k <= need; ++k) {
            if (i + k >= n) return {i - from, k};
            const unsigned char c = p[i + k];
            if (c < lo || c > hi) return {i - from, k};
            lo = 0x80;
            hi = 0xbf;
        }
        i += k;
    }
    return {i - from, 0};
}

struct pcre2_code_deleter {
    void operator()(pcre2_code* c) const { pcre2_code_free(c); }
};
struct pcre2_match_data_deleter {
    void operator()(pcre2_match_data* m) const { pcre2_match_data_free(m); }
};

}  // namespace

// The ranks and the compiled pattern; immutable after construction.
struct tokenizer::impl {
    struct slot {
        std::uint32_t offset = 0;  // into arena
        std::uint32_t length = 0;  // 0: empty slot
        std::uint32_t rank = no_rank;
    };
    std::string arena;  // every token's bytes, back to back
    std::vector<slot> slots;
    std::uint64_t mask = 0;
    std::size_t token_count = 0;
    std::unique_ptr<pcre2_code, pcre2_code_deleter> pattern;

    std::uint32_t rank_of(std::string_view bytes) const {
        for (std::uint64_t i = hash_bytes(bytes) & mask;; i = (i + 1) & mask) {
            const slot& s = slots[i];
            if (s.length == 0) return no_rank;
            if (s.length == bytes.size() && std::memcmp(arena.data() + s.offset, bytes.data(), bytes.size()) == 0)
                return s.rank;
        }
    }

    void insert(std::uint32_t offset, std::uint32_t length, std::uint32_t rank) {
        const std::string_view bytes(arena.data() + offset, length);
        for (std::uint64_t i = hash_bytes(bytes) & mask;; i = (i + 1) & mask) {
            slot& s = slots[i];
            if (s.length == 0) {
                s = {offset, length, rank};
                return;
            }
            if (s.length == length && std::memcmp(arena.data() + s.offset, bytes.data(), length) == 0)
                throw std::runtime_error("tokenizer: a token appears twice in the rank file");
        }
    }
};

namespace {

// Scratch space reused by every piece of one count() or encode() call.
struct workspace {
    struct part {
        std::uint32_t start;
        std::uint32_t rank;  // of this part merged with the next one
    };
    std::vector<part> parts;
    // Heap merge (long pieces): node i starts at byte i while alive.
    std::vector<std::uint32_t> next, prev, pair_rank;
    std::vector<std::pair<std::uint32_t, std::uint32_t>> heap;  // (rank, node), min first
};

// Calls emit(rank) for each token of `piece`, in order.
template <typename Emit>
void byte_pair_merge(const tokenizer::impl& t, std::string_view piece, workspace& w, Emit&& emit) {
    const auto n = static_cast<std::uint32_t>(piece.size());
    if (n == 0) return;
    if (const std::uint32_t whole = t.rank_of(piece); whole != no_rank) {
        emit(whole);
        return;
    }
    const auto span_rank = [&](std::uint32_t from, std::uint32_t to) { return t.rank_of(piece.substr(from, to - from)); };

    if (n <= long_piece_bytes) {
        auto& parts = w.parts;
        parts.clear();
        for (std::uint32_t i = 0; i <= n; ++i) parts.push_back({i, no_rank});
        // parts[i].rank: the rank of parts i and i+1 merged; the last two have none.
        for (std::size_t i = 0; i + 2 < parts.size(); ++i) parts[i].rank = span_rank(parts[i].start, parts[i + 2].start);
        const auto refresh = [&](std::size_t i) {
            parts[i].rank = i + 2 < parts.size() ? span_rank(parts[i].start, parts[i + 2].start) : no_rank;
        };
        for (;;) {
            std::size_t best = 0;
            std::uint32_t best_rank = no_rank;
            for (std::size_t i = 0; i + 2 < parts.size(); ++i) {
                if (parts[i].rank < best_rank) {
                    best_rank = parts[i].rank;
                    best = i;
                }
            }
            if (best_rank == no_rank) break;
            parts.erase(parts.begin() + static_cast<std::ptrdiff_t>(best) + 1);
            refresh(best);
            if (best > 0) refresh(best - 1);
        }
        for (std::size_t i = 0; i + 1 < parts.size(); ++i) emit(span_rank(parts[i].start, parts[i + 1].start));
        return;
    }

    // Long piece: a doubly linked list of parts and a min-heap of candidate
    // merges. A heap entry is stale when its node's pair rank changed since;
    // the same rank means the same bytes, so such an entry is still right.
    // Popping (rank, node) in order reproduces the linear scan's choice: the
    // lowest rank, leftmost first.
    w.next.resize(n);
    w.prev.resize(n);
    w.pair_rank.assign(n, no_rank);
    w.heap.clear();
    const auto greater = std::greater<std::pair<std::uint32_t, std::uint32_t>>();
    const auto push = [&](std::uint32_t node) {
        if (w.pair_rank[node] == no_rank) return;
        w.heap.emplace_back(w.pair_rank[node], node);
        std::push_heap(w.heap.begin(), w.heap.end(), greater);
    };
    for (std::uint32_t i = 0; i < n; ++i) {
        w.next[i] = i + 1;
        w.prev[i] = i == 0 ? no_rank : i - 1;
    }
    // The rank of node i merged with its successor j, if it has one: the
    // bytes from i to the end of j.
    const auto merged_rank = [&](std::uint32_t i) {
        const std::uint32_t j = w.next[i];
        return j < n ? span_rank(i, w.next[j]) : no_rank;
    };
    for (std::uint32_t i = 0; i < n; ++i) {
        w.pair_rank[i] = merged_rank(i);
        push(i);
    }
    while (!w.heap.empty()) {
        std::pop_heap(w.heap.begin(), w.heap.end(), greater);
        const auto [rank, i] = w.heap.back();
        w.heap.pop_back();
        if (w.pair_rank[i] != rank) continue;
        const std::uint32_t j = w.next[i];  // absorbed into i
        w.next[i] = w.next[j];
        if (w.next[j] < n) w.prev[w.next[j]] = i;
        w.pair_rank[j] = no_rank;
        w.pair_rank[i] = merged_rank(i);
        push(i);
        if (const std::uint32_t p = w.prev[i]; p != no_rank) {
            w.pair_rank[p] = merged_rank(p);
            push(p);
        }
    }
    for (std::uint32_t i = 0; i < n; i = w.next[i]) emit(span_rank(i, w.next[i]));
}

}  // namespace

tokenizer::tokenizer(encoding e) : encoding_(e), impl_(std::make_unique<impl>()) {
    impl& t = *impl_;
    const std::string_view file = detail::rank_file(e);
    // Pass 1: decode every line into the arena, remembering (offset, length, rank).
    std::vector<impl::slot> tokens;
    tokens.reserve(file.size() / 12);
    t.arena.reserve(file.size() / 2);
    std::size_t pos = 0;
    while (pos < file.size()) {
        std::size_t eol = file.find('\n', pos);
        if (eol == std::string_view::npos) eol = file.size();
        const std::string_view line = file.substr(pos, eol - pos);
        pos = eol + 1;
        if (line.empty()) continue;
        const std::size_t space = line.find(' ');
        if (space == std::string_view::npos) throw std::runtime_error("tokenizer: a rank line has no space");
        const auto offset = static_cast<std::uint32_t>(t.arena.size());
        if (!base64_decode(line.substr(0, space), t.arena))
            throw std::runtime_error("tokenizer: a rank line is not base64");
        const std::size_t length = t.arena.size() - offset;
        std::uint64_t rank = 0;
        const std::string_view digits = line.substr(space + 1);
        if (digits.empty() || digits.size() > 9) throw std::runtime_error("tokenizer: a rank is not a number");
        for (const char c : digits) {
            if (c < '0' || c > '9') throw std::runtime_error("tokenizer: a rank is not a number");
            rank = rank * 10 + static_cast<std::uint64_t>(c - '0');
        }
        if (length == 0 || length > max_token_bytes) throw std::runtime_error("tokenizer: a token has a bad length");
        tokens.push_back({offset, static_cast<std::uint32_t>(length), static_cast<std::uint32_t>(rank)});
    }
    if (tokens.size() < 256) throw std::runtime_error("tokenizer: the rank file is truncated");
    // Pass 2: a table at most half full.
    std::size_t capacity = 1;
    while (capacity < tokens.size() * 2) capacity <<= 1;
    t.slots.assign(capacity, impl::slot{});
    t.mask = capacity - 1;
    for (const auto& tok : tokens) t.insert(tok.offset, tok.length, tok.rank);
    t.token_count = tokens.size();
    // Every single byte must be a token, or a piece could be left unencoded.
    for (int b = 0; b < 256; ++b) {
        const char c = static_cast<char>(b);
        if (t.rank_of(std::string_view(&c, 1)) == no_rank) throw std::runtime_error("tokenizer: a byte has no rank");
    }

    const char* pattern = e == encoding::o200k_base ? o200k_pattern : cl100k_pattern;
    int error = 0;
    PCRE2_SIZE error_offset = 0;
    // DOLLAR_ENDONLY: `$` is the end of the text, as in the Rust regex tiktoken uses.
    t.pattern.reset(pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                                  PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY, &error, &error_offset, nullptr));
    if (!t.pattern) {
        PCRE2_UCHAR message[256];
        pcre2_get_error_message(error, message, sizeof message);
        throw std::runtime_error("tokenizer: the pattern does not compile: " +
                                 std::string(reinterpret_cast<const char*>(message)));
    }
    // Without a JIT (an unsupported CPU) pcre2_match interprets: slower, same result.
    (void)pcre2_jit_compile(t.pattern.get(), PCRE2_JIT_COMPLETE);
}

tokenizer::~tokenizer() = default;

std::shared_ptr<const tokenizer> tokenizer::get(encoding e) {
    // The one exception to "no globals": the rank tables are constants of the
    // program that cost ~0.1 s to build, so each is built once and shared.
    static std::once_flag once[2];
    static std::shared_ptr<const tokenizer> built[2];
    const auto index = static_cast<std::size_t>(e);
    std::call_once(once[index], [&] { built[index] = std::shared_ptr<const tokenizer>(new tokenizer(e)); });
    return built[index];
}

std::size_t tokenizer::vocabulary_size() const { return impl_->token_count; }

namespace {

// Splits valid UTF-8 `text` into pieces and byte-pair encodes each.
template <typename Emit>
void encode_valid(const tokenizer::impl& t, std::string_view text, workspace& w, Emit&& emit) {
    std::unique_ptr<pcre2_match_data, pcre2_match_data_deleter> match(
        pcre2_match_data_create_from_pattern(t.pattern.get(), nullptr));
    if (!match) throw std::bad_alloc();
    const auto* subject = reinterpret_cast<PCRE2_SPTR>(text.data());
    std::size_t offset = 0;
    while (offset < text.size()) {
        // The text was validated once; PCRE2 would otherwise re-check it from
        // `offset` to the end on every call, O(n^2) in total.
        const int rc = pcre2_match(t.pattern.get(), subject, text.size(), offset, PCRE2_NO_UTF_CHECK, match.get(),
                                   nullptr);
        if (rc == PCRE2_ERROR_NOMATCH) break;  // the patterns match any character; tiktoken skips unmatched text too
        if (rc < 0) {
            // Resource limits (JIT stack) on pathological input: encode the
            // rest as one piece rather than fail the count.
            byte_pair_merge(t, text.substr(offset), w, emit);
            return;
        }
        const PCRE2_SIZE* ovector = pcre2_get_ovector_pointer(match.get());
        const std::size_t begin = ovector[0], end = ovector[1];
        if (end <= offset) {  // an empty match cannot happen with these patterns; never loop on one
            offset = offset + 1;
            while (offset < text.size() && (static_cast<unsigned char>(text[offset]) & 0xc0) == 0x80) ++offset;
            continue;
        }
        byte_pair_merge(t, text.substr(begin, end - begin), w, emit);
        offset = end;
    }
}

template <typename Emit>
void encode_text(const tokenizer::impl& t, std::string_view text, Emit&& emit) {
    workspace w;
    utf8_scan scan = scan_utf8(text, 0);
    if (scan.bad_bytes == 0) {
        encode_valid(t, text, w, emit);
        return;
    }
    std::string clean;
    clean.reserve(text.size() + 16);
    std::size_t pos = 0;
    for (;;) {
        clean.append(text.substr(pos, scan.valid_bytes));
        pos += scan.valid_bytes;
        if (scan.bad_bytes == 0) break;
        clean.append("\xEF\xBF\xBD");  // U+FFFD
        pos += scan.bad_bytes;
        scan = scan_utf8(text, pos);
    }
    encode_valid(t, clean, w, emit);
}

}  // namespace

std::size_t tokenizer::count(std::string_view text) const {
    std::size_t n = 0;
    encode_text(*impl_, text, [&](std::uint32_t) { ++n; });
    return n;
}

std::vector<std::uint32_t> tokenizer::encode(std::string_view text) const {
    std::vector<std::uint32_t> ids;
    encode_text(*impl_, text, [&](std::uint32_t id) { ids.push_back(id); });
    return ids;
}

std::size_t tokenizer::count_chat(std::span<const chat_message> messages) const {
    std::size_t n = chat_reply_priming_tokens;
    for (const auto& m : messages) {
        n += chat_tokens_per_message + count(m.role) + count(m.content);
        if (m.name) n += chat_tokens_per_name + count(*m.name);
    }
    return n;
}

std::string_view to_string(encoding e) {
    switch (e) {
        case encoding::o200k_base: return "o200k_base";
        case encoding::cl100k_base: return "cl100k_base";
    }
    return "unknown";
}

std::optional<encoding> parse_encoding(std::string_view name) {
    if (name == "o200k_base") return encoding::o200k_base;
    if (name == "cl100k_base") return encoding::cl100k_base;
    return std::nullopt;
}

}  // namespace tollgate::pricing
