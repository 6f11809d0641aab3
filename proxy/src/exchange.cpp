#include "calls.hpp"

#include <fmt/format.h>

namespace tollgate::proxy {

using namespace net;

std::string json_escape(std::string_view text) {
    std::string out;
    out.reserve(text.size() + 2);
    for (const char ch : text) {
        const auto c = static_cast<unsigned char>(ch);
        switch (c) {
            case '"': out += "\\\""; break;
            case '\\': out += "\\\\"; break;
            case '\n': out += "\\n"; break;
            case '\r': out += "\\r"; break;
            case '\t': out += "\\t"; break;
            default:
                if (c < 0x20) {
                    out += fmt::format("\\u{:04x}", c);
                } else {
                    out += ch;
                }
        }
    }
    return out;
}

std::string error_json(std::string_view message, std::string_view type, std::string_view code,
                       std::string_view param) {
    return fmt::format(R"({{"error":{{"message":"{}","type":"{}","code":"{}","param":{}}}}})", json_escape(message),
                       type, code, param.empty() ? std::string("null") : "\"" + json_escape(param) + "\"");
}

namespace {

std::string_view error_type(unsigned status) {
    switch (status) {
        case 401: return "authentication_error";
        case 402: return "insufficient_credits";
        case 403: return "permission_error";
        case 429: return "rate_limit_error";
        case 502:
        case 504: return "upstream_error";
        default: return status >= 500 ? "server_error" : "invalid_request_error";
    }
}

}  // namespace

awaitable<void> reply(exchange& x, unsigned status, std::string body, std::string_view content_type,
                      const header_list& extra) {
    http::response<http::string_body> res{static_cast<http::status>(status), x.req.version()};
    common_headers(x, res);
    res.set(http::field::content_type, std::string(content_type));
    for (const auto& [name, value] : extra) res.set(name, value);
    res.body() = std::move(body);
    res.prepare_payload();
    co_await send_answer(x, res);
}

awaitable<void> send_answer(exchange& x, http::response<http::string_body>& res) {
    x.status = res.result_int();
    beast::error_code ec;
    co_await client_write(x, ec, [&](auto& socket) -> awaitable<void> {
        co_await http::async_write(socket, res, asio::redirect_error(use_awaitable, ec));
    });
    if (ec) x.keep_alive = false;
}

awaitable<void> reply_error(exchange& x, unsigned status, std::string_view code, std::string_view message,
                            std::string_view param, const header_list& extra) {
    co_await reply(x, status, error_json(message, error_type(status), code, param), "application/json", extra);
}

awaitable<bool> durable(app& a, ledger::commit_seq seq) {
    auto executor = co_await asio::this_coro::executor;
    co_return co_await asio::async_initiate<decltype(use_awaitable), void(bool)>(
        [&a, seq, executor](auto handler) {
            // The ledger calls back on its writer thread; the coroutine resumes on its own executor.
            auto shared = std::make_shared<decltype(handler)>(std::move(handler));
            a.ledger.on_durable(seq, [shared, executor](bool ok) {
                asio::post(executor, [shared, ok]() mutable { (*shared)(ok); });
            });
        },
        use_awaitable);
}

header_list retry_after(std::int64_t seconds) {
    header_list h;
    h.emplace_back("retry-after", std::to_string(seconds));
    return h;
}

awaitable<std::optional<caller>> admit_caller(exchange& x) {
    auto who = x.a.keys.find(bearer_of(x.req));
    if (!who) {
        co_await reply_error(x, 401, "invalid_api_key", "Invalid or missing tollgate key (Authorization: Bearer tg_...)");
        co_return std::nullopt;
    }
    if (const auto wait = x.a.limits.admit(who->key_id, who->rpm_limit)) {
        x.a.stats.rate_limited++;
        const auto message =
            fmt::format("This key is limited to {} requests a minute; retry in {} s", who->rpm_limit, wait);
        const auto headers = retry_after(wait);
        co_await reply_error(x, 429, "rate_limited", message, {}, headers);
        co_return std::nullopt;
    }
    co_return who;
}

std::string_view bearer_of(const request& r) {
    const auto it = r.find(http::field::authorization);
    if (it == r.end()) return {};
    std::string_view v(it->value().data(), it->value().size());
    if (v.size() < 7 || !(v.substr(0, 7) == "Bearer " || v.substr(0, 7) == "bearer ")) return {};
    v.remove_prefix(7);
    while (!v.empty() && v.front() == ' ') v.remove_prefix(1);
    while (!v.empty() && v.back() == ' ') v.remove_suffix(1);
    return v;
}

}  // namespace tollgate::proxy
