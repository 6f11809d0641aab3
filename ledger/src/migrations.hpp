#pragma once

#include <string_view>
#include <vector>

namespace tollgate::ledger {

struct migration {
    int version;
    std::string_view name;
    std::string_view sql;
};

// schema/*.sql in order; version N is element N-1.
const std::vector<migration>& all_migrations();

}  // namespace tollgate::ledger
