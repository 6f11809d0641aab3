// The live model catalogs (SPEC 7: fetched at start and periodically, the
// bundled snapshots as the fallback) and GET /v1/models.
#include "calls.hpp"

#define SIMDJSON_EXCEPTIONS 0
#include <simdjson.h>

#include <fmt/format.h>

namespace tollgate::proxy {

using namespace net;

namespace {

// LiteLLM's /model/info answer, {"data": [{"model_name", "model_info": {...}}]},
// rewritten as the price map's shape {name: {...}} from the raw text of each
// model_info (so prices keep their exact decimal text), for
// pricing::parse_litellm_prices.
std::optional<std::string> model_info_as_price_map(const std::string& body) {
    simdjson::ondemand::parser parser;
    simdjson::padded_string padded(body);
    simdjson::ondemand::document doc;
    if (parser.iterate(padded).get(doc)) return std::nullopt;
    simdjson::ondemand::array data;
    if (doc["data"].get_array().get(data)) return std::nullopt;
    std::string out = "{";
    bool first = true;
    for (auto item : data) {
        simdjson::ondemand::object entry;
        if (item.get_object().get(entry)) return std::nullopt;
        std::string_view name;
        std::string_view info;
        for (auto field : entry) {
            std::string_view key;
            if (field.unescaped_key().get(key)) return std::nullopt;
            if (key == "model_name") {
                if (field.value().get_string().get(name)) return std::nullopt;
            } else if (key == "model_info") {
                simdjson::ondemand::object o;
                if (field.value().get_object().get(o)) continue;  // null: no prices
                if (o.raw_json().get(info)) return std::nullopt;
            }
        }
        if (name.empty() || info.empty()) continue;
        out += fmt::format("{}\"{}\":{}", first ? "" : ",", json_escape(name), info);
        first = false;
    }
    out += "}";
    return out;
}

std::optional<std::unordered_set<std::string>> model_ids(const std::string& body) {
    simdjson::ondemand::parser parser;
    simdjson::padded_string padded(body);
    simdjson::ondemand::document doc;
    if (parser.iterate(padded).get(doc)) return std::nullopt;
    simdjson::ondemand::array data;
    if (doc["data"].get_array().get(data)) return std::nullopt;
    std::unordered_set<std::string> ids;
    for (auto item : data) {
        std::string_view id;
        if (item["id"].get_string().get(id)) return std::nullopt;
        ids.emplace(id);
    }
    return ids;
}

}  // namespace

awaitable<bool> refresh_catalogs(app& a) {
    auto& w = a.workers.front();  // the refresh runs on the first I/O thread
    auto next = std::make_shared<catalogs>(*a.catalog.get());
    bool any = false;
    const auto timeout = a.settings.connect_timeout + std::chrono::seconds(30);
    if (auto got = co_await fetch(*w.openrouter, w.openrouter->url().base_path + "/models?output_modalities=all",
                                  a.settings.openrouter_key, 64u << 20, timeout);
        got && got->status == 200) {
        auto parsed = pricing::parse_openrouter_models(got->body);
        if (parsed.status == pricing::catalog_status::ok && !parsed.value->models().empty()) {
            next->openrouter = parsed.value;
            next->openrouter_source = "live";
            any = true;
        } else {
            fmt::print(stderr, "tollgate: OpenRouter's model list was refused ({}: {}); keeping the {} catalog\n",
                       pricing::to_string(parsed.status), parsed.message, next->openrouter_source);
        }
    } else {
        fmt::print(stderr, "tollgate: OpenRouter's model list could not be fetched (status {}); keeping the {} catalog\n",
                   got ? got->status : 0, next->openrouter_source);
    }
    if (w.litellm) {
        const auto& base = w.litellm->url().base_path;
        auto list = co_await fetch(*w.litellm, base + "/v1/models", a.settings.litellm_key, 16u << 20, timeout);
        auto info = co_await fetch(*w.litellm, base + "/model/info", a.settings.litellm_key, 64u << 20, timeout);
        if (list && list->status == 200) {
            if (auto ids = model_ids(list->body)) {
                next->litellm_models = std::make_shared<const std::unordered_set<std::string>>(std::move(*ids));
                any = true;
            }
        }
        if (info && info->status == 200) {
            if (auto map = model_info_as_price_map(info->body)) {
                auto parsed = pricing::parse_litellm_prices(*map);
                if (parsed.status == pricing::catalog_status::ok) {
                    next->litellm = parsed.value;
                    next->litellm_source = "live";
                }
            }
        }
        if (!list || list->status != 200) {
            fmt::print(stderr, "tollgate: LiteLLM's model list could not be fetched; keeping {} models\n",
                       next->litellm_models ? next->litellm_models->size() : 0);
        }
    }
    a.catalog.replace(std::move(next));
    co_return any;
}

awaitable<void> models_list(exchange& x) {
    auto& a = x.a;
    const auto who = co_await admit_caller(x);
    if (!who) co_return;
    const auto cats = a.catalog.get();
    fmt::memory_buffer out;
    fmt::format_to(std::back_inserter(out), R"({{"object":"list","data":[)");
    bool first = true;
    auto add = [&](std::string_view id, std::string_view owner) {
        fmt::format_to(std::back_inserter(out), R"({}{{"id":"{}","object":"model","created":0,"owned_by":"{}"}})",
                       first ? "" : ",", json_escape(id), json_escape(owner));
        first = false;
    };
    if (cats->litellm_models) {
        for (const auto& id : *cats->litellm_models) {
            const pricing::model* m = cats->litellm ? cats->litellm->find(id) : nullptr;
            if (!m && cats->litellm_fallback) m = cats->litellm_fallback->find(id);
            if (!m || (who->policy.free_models_only && !m->free)) continue;
            add(id, "litellm");
        }
    }
    if (cats->openrouter) {
        for (const auto& m : cats->openrouter->models()) {
            if (who->policy.free_models_only && !m.free) continue;
            const auto slash = m.id.find('/');
            add(m.id, slash == std::string::npos ? std::string_view("openrouter") : std::string_view(m.id).substr(0, slash));
        }
    }
    fmt::format_to(std::back_inserter(out), "]}}");
    co_await reply(x, 200, fmt::to_string(out), "application/json");
}

}  // namespace tollgate::proxy
