// libFuzzer target: reading OpenRouter's key management and /generation
// answers (proxy/src/openrouter_wire.hpp) never crashes, and keeps its
// promises: whatever is accepted is valid JSON, money is never negative,
// a created key is never empty, and a masked key shows at most 16 of the
// key's characters.
#include "openrouter_wire.hpp"

#define SIMDJSON_EXCEPTIONS 0
#include <simdjson.h>

#include <cstdlib>
#include <string>

using namespace tollgate::proxy::openrouter;

namespace {

void check(bool ok) {
    if (!ok) std::abort();
}

bool valid_json(const std::string& text) {
    simdjson::dom::parser parser;
    simdjson::dom::element root;
    return !parser.parse(simdjson::padded_string(text)).get(root);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);
    if (const auto k = parse_key_answer(text)) {
        check(valid_json(text) && !k->hash.empty() && k->usage_micros >= 0);
        check(!k->limit_micros || *k->limit_micros >= 0);
    }
    if (const auto c = parse_created_key(text)) check(valid_json(text) && !c->key.empty());
    if (const auto list = parse_key_list(text)) {
        check(valid_json(text));
        for (const auto& k : *list) check(!k.hash.empty() && k.usage_micros >= 0);
    }
    if (const auto g = parse_generation(text)) {
        check(valid_json(text) && g->total_cost_pico >= 0 && g->prompt_tokens >= 0 && g->completion_tokens >= 0);
    }
    (void)error_message(text);
    const auto masked = mask_key(text);
    check(masked.size() <= 16 + std::string("…").size());
    return 0;
}
