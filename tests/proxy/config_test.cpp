// Configuration (SPEC 7): the environment and the TOML file, validated at
// start, every refusal naming the bad setting.
#include "tollgate/proxy/config.hpp"

#include <catch2/catch.hpp>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <unistd.h>

using tollgate::proxy::config_result;
using tollgate::proxy::load_config;

namespace {

struct toml_file {
    explicit toml_file(const std::string& text) {
        path = (std::filesystem::temp_directory_path() / ("tollgate-config-" + std::to_string(::getpid()) + "-" +
                                                           std::to_string(counter++) + ".toml"))
                   .string();
        std::ofstream(path) << text;
    }
    ~toml_file() { std::remove(path.c_str()); }
    std::string path;
    static inline int counter = 0;
};

config_result with_file(const std::string& text) {
    toml_file f(text);
    return load_config({{"TOLLGATE_CONFIG", f.path}});
}

}  // namespace

TEST_CASE("defaults follow SPEC section 7", "[config]") {
    const auto r = load_config({});
    REQUIRE(r.value);
    const auto& c = *r.value;
    CHECK(c.listen_host == "127.0.0.1");
    CHECK(c.listen_port == "8080");
    CHECK(c.db_path == "./tollgate.db");
    CHECK_FALSE(c.durability_full);
    CHECK(c.master_key_file == "./tollgate.key");
    CHECK(c.openrouter.tls);
    CHECK(c.openrouter.host == "openrouter.ai");
    CHECK(c.openrouter.port == "443");
    CHECK(c.openrouter.base_path == "/api/v1");
    CHECK_FALSE(c.litellm);
    CHECK(c.max_body_bytes == 8u << 20);
    CHECK(c.stream_deadline == std::chrono::minutes(10));
    CHECK(c.io_threads >= 1);
    CHECK(c.routes.empty());
}

TEST_CASE("the environment sets listen, database, durability and upstreams", "[config]") {
    const auto r = load_config({{"TOLLGATE_LISTEN", "0.0.0.0:9090"},
                                {"TOLLGATE_DB", "/tmp/x.db"},
                                {"TOLLGATE_DURABILITY", "full"},
                                {"TOLLGATE_OPENROUTER_URL", "http://127.0.0.1:7000/api/v1/"},
                                {"TOLLGATE_LITELLM_URL", "http://litellm:4000"},
                                {"TOLLGATE_LITELLM_KEY", "sk-1"},
                                {"TOLLGATE_IO_THREADS", "3"}});
    REQUIRE(r.value);
    CHECK(r.value->listen_host == "0.0.0.0");
    CHECK(r.value->listen_port == "9090");
    CHECK(r.value->db_path == "/tmp/x.db");
    CHECK(r.value->durability_full);
    CHECK_FALSE(r.value->openrouter.tls);
    CHECK(r.value->openrouter.port == "7000");
    CHECK(r.value->openrouter.base_path == "/api/v1");
    REQUIRE(r.value->litellm);
    CHECK(r.value->litellm->host == "litellm");
    CHECK(r.value->litellm->port == "4000");
    CHECK(r.value->litellm->base_path.empty());
    CHECK(r.value->io_threads == 3);
}

TEST_CASE("bad environment values are refused with the setting's name", "[config]") {
    struct bad {
        const char* name;
        const char* value;
    };
    const bad cases[] = {{"TOLLGATE_LISTEN", "8080"},
                         {"TOLLGATE_LISTEN", "127.0.0.1:99999"},
                         {"TOLLGATE_LISTEN", "127.0.0.1:http"},
                         {"TOLLGATE_DURABILITY", "sometimes"},
                         {"TOLLGATE_ADMIN_TOKEN", "short"},
                         {"TOLLGATE_OPENROUTER_URL", "ftp://openrouter.ai"},
                         {"TOLLGATE_OPENROUTER_URL", "https://"},
                         {"TOLLGATE_OPENROUTER_URL", "https://user@host/api"},
                         {"TOLLGATE_LITELLM_URL", "litellm:4000"},
                         {"TOLLGATE_IO_THREADS", "0"},
                         {"TOLLGATE_IO_THREADS", "many"}};
    for (const auto& c : cases) {
        INFO(c.name << "=" << c.value);
        const auto r = load_config({{c.name, c.value}});
        CHECK_FALSE(r.value);
        CHECK(r.error.find(c.name) != std::string::npos);
    }
    const auto key_only = load_config({{"TOLLGATE_LITELLM_KEY", "sk"}});
    CHECK_FALSE(key_only.value);
    CHECK(key_only.error.find("TOLLGATE_LITELLM_URL") != std::string::npos);
}

TEST_CASE("the TOML file sets routes, limits, timeouts and hold policy", "[config]") {
    const auto r = with_file(R"(
[server]
listen = "127.0.0.1:0"
max_body_bytes = 1048576
drain_slots = 4

[timeouts]
first_byte_ms = 1500
stream_deadline_ms = 60000

[hold]
completion_cap_tokens = 4096
router_cap_micros = 500000

[[routes]]
prefix = "/center-deep"
service = "search"
url = "http://127.0.0.1:9001/api"

[[routes]]
prefix = "/brigade"
service = "agent"
url = "https://brigade.example.com"
price_micros = 25000
key = "brigade-secret"
)");
    INFO(r.error);
    REQUIRE(r.value);
    const auto& c = *r.value;
    CHECK(c.listen_port == "0");
    CHECK(c.max_body_bytes == 1048576);
    CHECK(c.drain_slots == 4);
    CHECK(c.first_byte_timeout == std::chrono::milliseconds(1500));
    CHECK(c.stream_deadline == std::chrono::minutes(1));
    CHECK(c.hold.completion_cap_tokens == 4096);
    CHECK(c.hold.router_cap_micros == 500000);
    REQUIRE(c.routes.size() == 2);
    CHECK(c.routes[0].price_micros == 1000);  // SPEC 5 default for searches
    CHECK(c.routes[0].url.base_path == "/api");
    CHECK(c.routes[1].price_micros == 25000);
    CHECK(c.routes[1].url.tls);
    CHECK(c.routes[1].key == "brigade-secret");
}

TEST_CASE("the environment wins over the file", "[config]") {
    toml_file f("[server]\nlisten = \"127.0.0.1:7000\"\n");
    const auto r = load_config({{"TOLLGATE_CONFIG", f.path}, {"TOLLGATE_LISTEN", "127.0.0.1:7001"}});
    REQUIRE(r.value);
    CHECK(r.value->listen_port == "7001");
}

TEST_CASE("bad TOML values are refused with the setting's name", "[config]") {
    struct bad {
        const char* text;
        const char* names;
    };
    const bad cases[] = {
        {"[server]\nmax_body_bytes = -1\n", "server.max_body_bytes"},
        {"[server]\nmax_body_bytes = \"big\"\n", "server.max_body_bytes"},
        {"[server]\nlisten = \"nowhere\"\n", "server.listen"},
        {"[timeouts]\nconnect_ms = 0\n", "timeouts.connect_ms"},
        {"[timeouts]\nstream_deadline_ms = 3600000\n", "stream_deadline_ms"},
        {"[hold]\nrouter_cap_micros = 0\n", "hold.router_cap_micros"},
        {"[[routes]]\nprefix = \"center\"\nservice = \"search\"\nurl = \"http://x\"\n", "routes[0].prefix"},
        {"[[routes]]\nprefix = \"/v1/x\"\nservice = \"search\"\nurl = \"http://x\"\n", "routes[0].prefix"},
        {"[[routes]]\nprefix = \"/x\"\nurl = \"http://x\"\n", "routes[0].service"},
        {"[[routes]]\nprefix = \"/x\"\nservice = \"search\"\nurl = \"x\"\n", "routes[0].url"},
        {"[[routes]]\nprefix = \"/x\"\nservice = \"search\"\nurl = \"http://x\"\nprice_micros = -5\n",
         "routes[0].price_micros"},
        {"[[routes]]\nprefix = \"/x\"\nservice = \"a\"\nurl = \"http://x\"\n[[routes]]\nprefix = \"/x\"\nservice = "
         "\"b\"\nurl = \"http://y\"\n",
         "routes[1].prefix"},
        {"this is = = not toml", "TOLLGATE_CONFIG"},
    };
    for (const auto& c : cases) {
        INFO(c.text);
        const auto r = with_file(c.text);
        CHECK_FALSE(r.value);
        INFO(r.error);
        CHECK(r.error.find(c.names) != std::string::npos);
    }
    const auto missing = load_config({{"TOLLGATE_CONFIG", "/nonexistent/tollgate.toml"}});
    CHECK_FALSE(missing.value);
    CHECK(missing.error.find("TOLLGATE_CONFIG") != std::string::npos);
}
