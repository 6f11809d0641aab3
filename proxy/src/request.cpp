// The client's request body: the facts admission needs (inspect_request) and
// the one edit the proxy makes to it (force_include_usage).
#include "tollgate/proxy/wire.hpp"

#include "json_text.hpp"

#include <algorithm>

namespace tollgate::proxy {

namespace {

using simdjson::ondemand::array;
using simdjson::ondemand::json_type;
using simdjson::ondemand::object;
using simdjson::ondemand::value;

// How reading one field went: `malformed` is broken JSON (the body is not
// usable at all); `wrong_type` is well-formed JSON of the wrong type.
enum class read_status : std::uint8_t { ok, wrong_type, malformed };

struct reader {
    request_facts& facts;
    std::string prompt_part;  // from `prompt`
    std::string input_part;   // from `input`
    std::optional<std::int64_t> max_completion_tokens;
    std::optional<std::int64_t> max_tokens;

    // Marks `name` as the first field of the wrong type.
    read_status wrong(std::string_view name) {
        if (facts.bad_param.empty()) facts.bad_param = std::string(name);
        return read_status::wrong_type;
    }
};

// A non-negative integer count (`null` is absent).
read_status read_count(value v, std::optional<std::int64_t>& out, std::int64_t min, std::string_view name,
                       reader& r) {
    json_type type;
    if (v.type().get(type)) return read_status::malformed;
    if (type == json_type::null) {
        out.reset();
        return read_status::ok;
    }
    if (type == json_type::number && json_text::number_text(v).empty()) return read_status::malformed;
    std::int64_t n = 0;
    if (type != json_type::number || v.get_int64().get(n) || n < min) {
        out.reset();
        return r.wrong(name);
    }
    out = n;
    return read_status::ok;
}

read_status read_bool(value v, bool& out, std::string_view name, reader& r) {
    json_type type;
    if (v.type().get(type)) return read_status::malformed;
    out = false;
    if (type == json_type::null) return read_status::ok;
    if (type != json_type::boolean) return r.wrong(name);
    return v.get_bool().get(out) ? read_status::malformed : read_status::ok;
}

// `prompt` or `input`: a string, or an array of strings and token arrays
// (which add no text). Strings are joined with '\n'.
read_status read_text_or_list(value v, std::string& out, std::string* whole_string, std::string_view name,
                              reader& r) {
    out.clear();
    if (whole_string) whole_string->clear();
    json_type type;
    if (v.type().get(type)) return read_status::malformed;
    switch (type) {
        case json_type::null: return read_status::ok;
        case json_type::string: {
            std::string_view s;
            if (v.get_string().get(s)) return read_status::malformed;
            out = std::string(s);
            if (whole_string) *whole_string = out;
            return read_status::ok;
        }
        case json_type::array: {
            array list;
            if (v.get_array().get(list)) return read_status::malformed;
            bool first = true;
            read_status status = read_status::ok;
            for (auto item_result : list) {
                value item;
                if (item_result.get(item) || item.type().get(type)) return read_status::malformed;
                if (type == json_type::string) {
                    std::string_view s;
                    if (item.get_string().get(s)) return read_status::malformed;
                    if (!first) out += '\n';
                    out.append(s);
                    first = false;
                } else if (type != json_type::number && type != json_type::array) {
                    status = r.wrong(name);  // keep reading: the rest may be malformed
                }
            }
            return status;
        }
        default: return r.wrong(name);
    }
}

// One chat message: role, and the text of a string content or of the parts
// of an array content (joined with '\n'); image_url parts are counted.
read_status read_message(value v, reader& r) {
    auto& f = r.facts;
    object message;
    json_type type;
    if (v.type().get(type)) return read_status::malformed;
    if (type != json_type::object) return r.wrong("messages");
    if (v.get_object().get(message)) return read_status::malformed;
    std::string role, text;
    std::int64_t images = 0;
    read_status status = read_status::ok;
    for (auto field : message) {
        std::string_view key;
        value fv;
        if (field.unescaped_key().get(key) || field.value().get(fv) || fv.type().get(type))
            return read_status::malformed;
        if (key == "role") {
            role.clear();
            if (type == json_type::string) {
                std::string_view s;
                if (fv.get_string().get(s)) return read_status::malformed;
                role = std::string(s);
            } else if (type != json_type::null) {
                status = r.wrong("messages");
            }
        } else if (key == "content") {
            text.clear();
            images = 0;
            if (type == json_type::string) {
                std::string_view s;
                if (fv.get_string().get(s)) return read_status::malformed;
                text = std::string(s);
            } else if (type == json_type::array) {
                array parts;
                if (fv.get_array().get(parts)) return read_status::malformed;
                bool first = true;
                for (auto part_result : parts) {
                    value part_value;
                    object part;
                    if (part_result.get(part_value) || part_value.type().get(type)) return read_status::malformed;
                    if (type != json_type::object) {
                        status = r.wrong("messages");
                        continue;
                    }
                    if (part_value.get_object().get(part)) return read_status::malformed;
                    std::string part_type;
                    std::optional<std::string> part_text;
                    for (auto pf : part) {
                        std::string_view pk;
                        value pv;
                        if (pf.unescaped_key().get(pk) || pf.value().get(pv) || pv.type().get(type))
                            return read_status::malformed;
                        if ((pk == "type" || pk == "text") && type == json_type::string) {
                            std::string_view s;
                            if (pv.get_string().get(s)) return read_status::malformed;
                            if (pk == "type") part_type = std::string(s);
                            else part_text = std::string(s);
                        }
                    }
                    if (part_type == "image_url") {
                        ++images;
                    } else if (part_text) {  // "text", and other text-bearing parts
                        if (!first) text += '\n';
                        text += *part_text;
                        first = false;
                    }
                }
            } else if (type != json_type::null) {
                status = r.wrong("messages");
            }
        }
    }
    f.message_roles.push_back(std::move(role));
    f.message_texts.push_back(std::move(text));
    f.input_images += images;
    return status;
}

read_status read_field(std::string_view key, value v, reader& r) {
    auto& f = r.facts;
    json_type type;
    if (key == "model") {
        if (v.type().get(type)) return read_status::malformed;
        f.model.clear();
        if (type == json_type::null) return read_status::ok;
        if (type != json_type::string) return r.wrong("model");
        std::string_view s;
        if (v.get_string().get(s)) return read_status::malformed;
        f.model = std::string(s);
        return read_status::ok;
    }
    if (key == "models") {
        if (v.type().get(type)) return read_status::malformed;
        f.fallback_models.clear();
        if (type == json_type::null) return read_status::ok;
        if (type != json_type::array) return r.wrong("models");
        array list;
        if (v.get_array().get(list)) return read_status::malformed;
        read_status status = read_status::ok;
        for (auto item_result : list) {
            value item;
            if (item_result.get(item) || item.type().get(type)) return read_status::malformed;
            if (type != json_type::string) {
                status = r.wrong("models");
                continue;
            }
            std::string_view s;
            if (item.get_string().get(s)) return read_status::malformed;
            f.fallback_models.emplace_back(s);
        }
        return status;
    }
    if (key == "stream") return read_bool(v, f.stream, "stream", r);
    if (key == "stream_options") {
        if (v.type().get(type)) return read_status::malformed;
        f.include_usage = false;
        if (type == json_type::null) return read_status::ok;
        if (type != json_type::object) return r.wrong("stream_options");
        object options;
        if (v.get_object().get(options)) return read_status::malformed;
        read_status status = read_status::ok;
        for (auto field : options) {
            std::string_view k;
            value ov;
            if (field.unescaped_key().get(k) || field.value().get(ov)) return read_status::malformed;
            if (k == "include_usage") {
                const auto s = read_bool(ov, f.include_usage, "stream_options.include_usage", r);
                if (s == read_status::malformed) return s;
                if (s == read_status::wrong_type) status = s;
            }
        }
        return status;
    }
    if (key == "max_completion_tokens") return read_count(v, r.max_completion_tokens, 0, key, r);
    if (key == "max_tokens") return read_count(v, r.max_tokens, 0, key, r);
    if (key == "n") {
        std::optional<std::int64_t> n;
        const auto status = read_count(v, n, 1, "n", r);
        f.n = n.value_or(1);
        return status;
    }
    if (key == "messages") {
        if (v.type().get(type)) return read_status::malformed;
        f.message_roles.clear();
        f.message_texts.clear();
        f.input_images = 0;
        if (type == json_type::null) return read_status::ok;
        if (type != json_type::array) return r.wrong("messages");
        array list;
        if (v.get_array().get(list)) return read_status::malformed;
        read_status status = read_status::ok;
        for (auto item_result : list) {
            value item;
            if (item_result.get(item)) return read_status::malformed;
            const auto s = read_message(item, r);
            if (s == read_status::malformed) return s;
            if (s == read_status::wrong_type) status = s;
        }
        return status;
    }
    if (key == "prompt") return read_text_or_list(v, r.prompt_part, nullptr, "prompt", r);
    if (key == "input") return read_text_or_list(v, r.input_part, &f.tts_input, "input", r);
    return read_status::ok;  // any other field: skipped unread
}

}  // namespace

request_facts inspect_request(std::string_view body) {
    request_facts facts;
    reader r{facts, {}, {}, {}, {}};
    const bool ok = json_text::each_root_member(
        body, [&](std::string_view key, value v) { return read_field(key, v, r) != read_status::malformed; });
    if (!ok) return request_facts{};

    facts.max_tokens = r.max_completion_tokens ? r.max_completion_tokens : r.max_tokens;
    facts.prompt_text = std::move(r.prompt_part);
    if (!r.input_part.empty()) {
        if (!facts.prompt_text.empty()) facts.prompt_text += '\n';
        facts.prompt_text += r.input_part;
    }
    facts.json_ok = true;
    return facts;
}

// ---- force_include_usage ---------------------------------------------------

namespace {

struct edit {
    std::size_t at;       // where the replaced bytes begin
    std::size_t removed;  // how many bytes are replaced
    std::string_view inserted;
};

std::string apply(std::string_view text, std::vector<edit>& edits) {
    std::sort(edits.begin(), edits.end(), [](const edit& a, const edit& b) { return a.at < b.at; });
    std::size_t grown = 0;
    for (const auto& e : edits) grown += e.inserted.size();
    std::string out;
    out.reserve(text.size() + grown);
    std::size_t copied = 0;
    for (const auto& e : edits) {
        out.append(text.substr(copied, e.at - copied));
        out.append(e.inserted);
        copied = e.at + e.removed;
    }
    out.append(text.substr(copied));
    return out;
}

// Adds a member as the object's last: `member_text` into an empty object,
// `comma_text` (the same with a leading comma) after the last value.
void add_member(const json_text::object_span& object, std::string_view member_text, std::string_view comma_text,
                std::vector<edit>& edits) {
    if (object.members.empty()) {
        edits.push_back({object.open + 1, 0, member_text});
    } else {
        edits.push_back({object.members.back().value_end, 0, comma_text});
    }
}

}  // namespace

std::optional<std::string> force_include_usage(std::string_view body) {
    using namespace json_text;
    if (!is_json_object(body)) return std::nullopt;
    object_span root;
    if (!scan_object(body, skip_space(body, 0), root)) return std::nullopt;  // cannot happen after the check

    std::vector<edit> edits;
    bool found = false;
    for (const auto& m : root.members) {
        if (!key_is(body, m, "stream_options")) continue;
        found = true;
        object_span options;
        if (body[m.value_begin] != '{') {  // null, or not an object at all
            edits.push_back({m.value_begin, m.value_end - m.value_begin, R"({"include_usage":true})"});
            continue;
        }
        if (!scan_object(body, m.value_begin, options)) return std::nullopt;
        bool has = false;
        for (const auto& o : options.members) {
            if (!key_is(body, o, "include_usage")) continue;
            has = true;
            if (body.substr(o.value_begin, o.value_end - o.value_begin) != "true")
                edits.push_back({o.value_begin, o.value_end - o.value_begin, "true"});
        }
        if (!has) add_member(options, R"("include_usage":true)", R"(,"include_usage":true)", edits);
    }
    if (!found)
        add_member(root, R"("stream_options":{"include_usage":true})", R"(,"stream_options":{"include_usage":true})",
                   edits);
    return apply(body, edits);
}

}  // namespace tollgate::proxy
