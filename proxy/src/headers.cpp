#include "tollgate/proxy/headers.hpp"

#include <array>

namespace tollgate::proxy {

using namespace net;

namespace {

constexpr std::array<const char*, 11> hop_by_hop{"connection",          "keep-alive",         "proxy-connection",
                                                 "te",                  "trailer",            "transfer-encoding",
                                                 "upgrade",             "proxy-authorization", "proxy-authenticate",
                                                 "content-length",      "expect"};

bool one_of(beast::string_view name, const auto& names) {
    for (const char* n : names) {
        if (beast::iequals(name, n)) return true;
    }
    return false;
}

constexpr std::array<const char*, 4> client_only{"host", "authorization", "x-litellm-api-key", "accept-encoding"};
constexpr std::array<const char*, 2> upstream_only{"server", "date"};

}  // namespace

void copy_request_headers(const http::fields& from, http::fields& to) {
    for (const auto& f : from) {
        const auto name = f.name_string();
        if (one_of(name, hop_by_hop) || one_of(name, client_only)) continue;
        to.insert(name, f.value());
    }
}

void copy_answer_headers(const http::fields& from, http::fields& to) {
    for (const auto& f : from) {
        const auto name = f.name_string();
        if (one_of(name, hop_by_hop) || one_of(name, upstream_only)) continue;
        if (beast::iequals(name, "x-request-id")) {
            to.set("x-upstream-request-id", f.value());
            continue;
        }
        to.insert(name, f.value());
    }
}

}  // namespace tollgate::proxy
