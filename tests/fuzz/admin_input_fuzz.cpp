// libFuzzer target: reading admin API requests (proxy/src/admin_input.hpp)
// on any bytes never crashes, and keeps its promises:
// - body: a refusal always names a code, and a value read is within the
//   bounds asked for (integers in range, texts no longer than allowed);
// - parse_time: every time it accepts is written back by rfc3339 as a time
//   it reads to the same instant (to the millisecond);
// - query_param: never longer than the query it came from.
#include "admin_input.hpp"

#include <cstdlib>
#include <string>

using namespace tollgate::proxy::admin;

namespace {

void check(bool ok) {
    if (!ok) std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const std::string text(reinterpret_cast<const char*>(data), size);

    body b(text);
    const auto amount = b.integer("amount_micros", false, 1, 1'000'000'000'000'000);
    check(!amount || (*amount >= 1 && *amount <= 1'000'000'000'000'000));
    const auto reason = b.text("reason", false, 64);
    check(!reason || reason->size() <= 64);
    const auto scopes = b.string_list("scopes", false);
    check(!scopes || scopes->size() <= 16);
    const auto at = b.time("expires_at", false);
    check(!at || *at >= 0);
    check(!b.failed() || !b.code().empty());
    check(b.failed() || b.code().empty());

    if (const auto ms = parse_time(text)) {
        check(*ms >= -86'400'000);  // an offset may reach back before 1970-01-01
        if (*ms >= 0 && *ms < 253'402'300'800'000) check(parse_time(rfc3339(*ms)) == *ms);
    }
    const auto value = query_param(text, "user_id");
    check(value.size() <= text.size());
    return 0;
}
