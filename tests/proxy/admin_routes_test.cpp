// The admin API's route table (proxy/src/admin.cpp) and its OpenAPI
// document (proxy/openapi.json) describe the same operations with the same
// roles: an endpoint added to one without the other fails here, and the e2e
// roles test (tests/e2e/admin.test.mjs) then calls every operation of the
// document with every role.
#include "admin.hpp"

#include <catch2/catch.hpp>
#include <simdjson.h>

#include <algorithm>
#include <cctype>
#include <map>
#include <set>

using tollgate::proxy::admin::operations;

namespace {

// "POST /api/v1/users" -> its roles, sorted.
using role_table = std::map<std::string, std::vector<std::string>>;

role_table from_route_table() {
    role_table out;
    for (auto op : operations()) {
        std::sort(op.roles.begin(), op.roles.end());
        const bool fresh = out.emplace(op.method + " " + op.path, op.roles).second;
        INFO(op.method << " " << op.path);
        CHECK(fresh);  // one row per operation
    }
    return out;
}

role_table from_document(const std::string& json) {
    role_table out;
    simdjson::dom::parser parser;
    simdjson::dom::element doc = parser.parse(json);
    REQUIRE(std::string_view(doc["openapi"]) .starts_with("3.1"));
    for (auto [path, item] : simdjson::dom::object(doc["paths"])) {
        for (auto [method, op] : simdjson::dom::object(item)) {
            std::string verb(method);
            if (verb != "get" && verb != "post" && verb != "put" && verb != "patch" && verb != "delete") continue;
            std::transform(verb.begin(), verb.end(), verb.begin(), [](unsigned char c) { return std::toupper(c); });
            std::vector<std::string> roles;
            for (auto role : simdjson::dom::array(op["x-roles"])) roles.emplace_back(std::string_view(role));
            std::sort(roles.begin(), roles.end());
            out.emplace(verb + " /api/v1" + std::string(path), roles);
        }
    }
    return out;
}

}  // namespace

TEST_CASE("every route of the table is an operation of the OpenAPI document, with the same roles") {
    const auto table = from_route_table();
    const auto document = from_document(std::string(tollgate::proxy::admin::openapi_json()));
    REQUIRE(table.size() >= 20);
    for (const auto& [operation, roles] : table) {
        INFO(operation << " is in the route table");
        REQUIRE(document.count(operation) == 1);
        CHECK(document.at(operation) == roles);
    }
    for (const auto& [operation, roles] : document) {
        INFO(operation << " is in the OpenAPI document");
        CHECK(table.count(operation) == 1);
    }
}

TEST_CASE("the embedded document is the one in the source tree") {
    // openapi.cpp embeds proxy/openapi.json at build time; a stale build
    // would serve an old document.
    simdjson::padded_string file = simdjson::padded_string::load(TOLLGATE_OPENAPI_JSON).value();
    CHECK(std::string_view(file) == tollgate::proxy::admin::openapi_json());
}
