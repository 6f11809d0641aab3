// The bundled snapshots, embedded with the assembler's .incbin so a
// megabyte of JSON costs the compiler nothing.
#include "tollgate/pricing/catalog.hpp"

// TOLLGATE_BUNDLED_OPENROUTER and TOLLGATE_BUNDLED_LITELLM are the files'
// paths as string literals, set by pricing/CMakeLists.txt.
__asm__(".section .rodata\n"
        ".balign 16\n"
        "tollgate_bundled_openrouter_begin:\n"
        ".incbin \"" TOLLGATE_BUNDLED_OPENROUTER "\"\n"
        "tollgate_bundled_openrouter_end:\n"
        ".balign 16\n"
        "tollgate_bundled_litellm_begin:\n"
        ".incbin \"" TOLLGATE_BUNDLED_LITELLM "\"\n"
        "tollgate_bundled_litellm_end:\n"
        ".previous\n");

extern "C" const char tollgate_bundled_openrouter_begin[] __asm__("tollgate_bundled_openrouter_begin");
extern "C" const char tollgate_bundled_openrouter_end[] __asm__("tollgate_bundled_openrouter_end");
extern "C" const char tollgate_bundled_litellm_begin[] __asm__("tollgate_bundled_litellm_begin");
extern "C" const char tollgate_bundled_litellm_end[] __asm__("tollgate_bundled_litellm_end");

namespace tollgate::pricing {

std::string_view bundled_openrouter_models() {
    return {tollgate_bundled_openrouter_begin,
            static_cast<std::size_t>(tollgate_bundled_openrouter_end - tollgate_bundled_openrouter_begin)};
}

std::string_view bundled_litellm_prices() {
    return {tollgate_bundled_litellm_begin,
            static_cast<std::size_t>(tollgate_bundled_litellm_end - tollgate_bundled_litellm_begin)};
}

}  // namespace tollgate::pricing
