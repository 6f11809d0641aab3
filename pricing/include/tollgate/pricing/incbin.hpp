// Files embedded into the binary with the assembler's .incbin (ELF; GCC and
// Clang), so a megabyte of data costs the compiler nothing and the program
// needs no data files at run time. (C++26 #embed would say this portably;
// GCC 12 lacks it.) One way to embed, used by the bundled price
// snapshots, the tokenizer's rank files and the proxy's OpenAPI document.
#pragma once

#include <cstddef>
#include <string_view>

// Defines <symbol>_begin and <symbol>_end around the bytes of `path` (a
// string literal), followed by a NUL that is not part of the data.
#define TOLLGATE_INCBIN(symbol, path)                        \
    __asm__(".pushsection .rodata\n"                         \
            ".balign 16\n"                                   \
            ".globl " #symbol "_begin\n" #symbol "_begin:\n" \
            ".incbin \"" path "\"\n"                         \
            ".globl " #symbol "_end\n" #symbol "_end:\n"     \
            ".byte 0\n"                                      \
            ".popsection\n");                                \
    extern "C" const char symbol##_begin[];                  \
    extern "C" const char symbol##_end[]

#define TOLLGATE_INCBIN_VIEW(symbol) \
    std::string_view(symbol##_begin, static_cast<std::size_t>(symbol##_end - symbol##_begin))
