// Embeds OpenAI's rank files into the binary (incbin.hpp), so `tollgate
// tokens` and the proxy need no data files at run time. The files come from
// gpt-tokenizer 4.0.0 on npm, installed and checksummed by
// pricing/CMakeLists.txt, which passes their folder as TOLLGATE_RANK_DATA_DIR.
#include "rank_data.hpp"

#include "tollgate/pricing/incbin.hpp"

#ifndef TOLLGATE_RANK_DATA_DIR
#error "TOLLGATE_RANK_DATA_DIR must name the folder of the .tiktoken files"
#endif

TOLLGATE_INCBIN(tollgate_o200k_base, TOLLGATE_RANK_DATA_DIR "/o200k_base.tiktoken");
TOLLGATE_INCBIN(tollgate_cl100k_base, TOLLGATE_RANK_DATA_DIR "/cl100k_base.tiktoken");

namespace tollgate::pricing::detail {

std::string_view rank_file(encoding e) {
    switch (e) {
        case encoding::o200k_base:
            return TOLLGATE_INCBIN_VIEW(tollgate_o200k_base);
        case encoding::cl100k_base:
            return TOLLGATE_INCBIN_VIEW(tollgate_cl100k_base);
    }
    return {};
}

}  // namespace tollgate::pricing::detail
