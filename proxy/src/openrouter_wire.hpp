// What tollgate reads from OpenRouter's key management API and /generation
// (upstream-apis.md §1c), and writes to it. Pure text in, values out:
// money from each number's own decimal text, never through double.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace tollgate::proxy::openrouter {

// A KeyObject: OpenRouter's view of one key.
struct key_info {
    std::string hash;  // OpenRouter's id of the key
    std::string name;
    std::string label;  // OpenRouter's masked rendering
    bool disabled = false;
    std::optional<std::int64_t> limit_micros;      // null: no limit
    std::optional<std::int64_t> remaining_micros;  // of the limit's period (limit_remaining)
    std::int64_t usage_micros = 0;                 // all-time
};

// `{"data": KeyObject}` (get, update) and `{"data": KeyObject, "key": "sk-or-…"}`
// (create: the only time the key is shown). nullopt when it is not that.
struct created_key {
    key_info info;
    std::string key;
};
std::optional<key_info> parse_key_answer(std::string_view text);
std::optional<created_key> parse_created_key(std::string_view text);
// `{"data": [KeyObject…]}`.
std::optional<std::vector<key_info>> parse_key_list(std::string_view text);

// What /generation says a call cost.
struct generation {
    std::string id;
    std::int64_t total_cost_pico = 0;
    std::optional<std::int64_t> upstream_inference_cost_pico;
    std::int64_t prompt_tokens = 0;
    std::int64_t completion_tokens = 0;
    bool is_byok = false;
};
// `{"data": {...}}` with a number `total_cost`; nullopt otherwise.
std::optional<generation> parse_generation(std::string_view text);

// An error answer's message (`{"error": {"message": …}}`), or "".
std::string error_message(std::string_view text);

// A key as the API may show it: at most its first 12 and last 4 characters.
std::string mask_key(std::string_view key);

}  // namespace tollgate::proxy::openrouter
