// Embeds OpenAI's rank files into the binary with the assembler's .incbin, so
// `tollgate tokens` and the proxy need no data files at run time. The files
// come from gpt-tokenizer 4.0.0 on npm, installed and checksummed by
// pricing/CMakeLists.txt, which passes their folder as TOLLGATE_RANK_DATA_DIR.
// (C++26 #embed would say this portably; GCC 12 lacks it.)
#include "rank_data.hpp"

#ifndef TOLLGATE_RANK_DATA_DIR
#error "TOLLGATE_RANK_DATA_DIR must name the folder of the .tiktoken files"
#endif

#define TOLLGATE_INCBIN(symbol, file)                                         \
    __asm__(".pushsection .rodata\n"                                          \
            ".balign 16\n"                                                    \
            ".globl " #symbol "_begin\n" #symbol "_begin:\n"                  \
            ".incbin \"" TOLLGATE_RANK_DATA_DIR "/" file "\"\n"               \
            ".globl " #symbol "_end\n" #symbol "_end:\n"                      \
            ".byte 0\n"                                                       \
            ".popsection\n")

TOLLGATE_INCBIN(tollgate_o200k_base, "o200k_base.tiktoken");
TOLLGATE_INCBIN(tollgate_cl100k_base, "cl100k_base.tiktoken");

extern "C" {
extern const char tollgate_o200k_base_begin[];
extern const char tollgate_o200k_base_end[];
extern const char tollgate_cl100k_base_begin[];
extern const char tollgate_cl100k_base_end[];
}

namespace tollgate::pricing::detail {

std::string_view rank_file(encoding e) {
    switch (e) {
        case encoding::o200k_base:
            return {tollgate_o200k_base_begin,
                    static_cast<std::size_t>(tollgate_o200k_base_end - tollgate_o200k_base_begin)};
        case encoding::cl100k_base:
            return {tollgate_cl100k_base_begin,
                    static_cast<std::size_t>(tollgate_cl100k_base_end - tollgate_cl100k_base_begin)};
    }
    return {};
}

}  // namespace tollgate::pricing::detail
