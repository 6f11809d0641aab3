// The rank files of the encodings, embedded by rank_data.cpp.
#pragma once

#include "tollgate/pricing/tokens.hpp"

#include <string_view>

namespace tollgate::pricing::detail {

// The `.tiktoken` text of an encoding: one "base64(token bytes) rank" line
// per ordinary token, as OpenAI publishes it.
std::string_view rank_file(encoding e);

}  // namespace tollgate::pricing::detail
