// The life of one metered call (SPEC section 5, DESIGN "the life of one
// metered call"): authenticate, limit, read the body once, route by model,
// check the tier, hold the estimate (committed before anything goes
// upstream), forward, relay, read the usage, settle, and only then send the
// charge headers.
#include "calls.hpp"
#include "tollgate/proxy/headers.hpp"
#include "tollgate/proxy/wire.hpp"

#include "tollgate/pricing/tokens.hpp"

#include <fmt/format.h>

#include <array>
#include <chrono>
#include <ctime>
#include <limits>
#include <memory>

namespace tollgate::proxy {

using namespace net;

namespace {

using clock = std::chrono::steady_clock;

// Which upstream a model goes to, and at what price.
struct target {
    upstream_pool* pool = nullptr;
    bool litellm = false;
    const pricing::model* model = nullptr;  // in `cat`
    std::shared_ptr<const pricing::catalog> cat;
    std::string upstream_model;  // the id the upstream knows ("litellm/" stripped)
};

std::optional<target> route_model(worker& w, const catalogs& cats, const std::string& id) {
    target t;
    std::string name = id;
    bool forced_litellm = false;
    if (name.starts_with("litellm/")) {
        name = name.substr(8);
        forced_litellm = true;
    }
    if (w.litellm && cats.litellm_models && (forced_litellm || cats.litellm_models->count(name))) {
        t.pool = w.litellm.get();
        t.litellm = true;
        t.cat = cats.litellm;
        t.model = cats.litellm ? cats.litellm->find(name) : nullptr;
        if (t.model == nullptr && cats.litellm_fallback) {
            t.cat = cats.litellm_fallback;
            t.model = cats.litellm_fallback->find(name);
        }
        t.upstream_model = name;
        return t;  // an unpriced LiteLLM model is refused by the caller
    }
    if (forced_litellm) return std::nullopt;
    if (cats.openrouter) {
        if (const auto* m = cats.openrouter->find(name)) {
            t.pool = w.openrouter.get();
            t.cat = cats.openrouter;
            t.model = m;
            t.upstream_model = name;
            return t;
        }
    }
    return std::nullopt;
}

int utc_hhmm_now() {
    const std::time_t now = std::time(nullptr);
    std::tm tm{};
    gmtime_r(&now, &tm);
    return tm.tm_hour * 100 + tm.tm_min;
}

std::int64_t count_prompt(const request_facts& f, service kind) {
    const auto tok = pricing::tokenizer::get(pricing::encoding::o200k_base);
    if (kind == service::chat && !f.message_texts.empty()) {
        std::vector<pricing::chat_message> messages;
        messages.reserve(f.message_texts.size());
        for (std::size_t i = 0; i < f.message_texts.size(); ++i) {
            messages.push_back({.role = i < f.message_roles.size() ? std::string_view(f.message_roles[i]) : "user",
                                .content = f.message_texts[i],
                                .name = std::nullopt});
        }
        return static_cast<std::int64_t>(tok->count_chat(messages));
    }
    return static_cast<std::int64_t>(tok->count(f.prompt_text));
}

std::string_view service_name(service kind) {
    switch (kind) {
        case service::chat: return "chat";
        case service::completion: return "completion";
        case service::embedding: return "embedding";
        case service::tts: return "tts";
    }
    return "chat";
}

std::string_view upstream_suffix(service kind) {
    switch (kind) {
        case service::chat: return "/chat/completions";
        case service::completion: return "/completions";
        case service::embedding: return "/embeddings";
        case service::tts: return "/audio/speech";
    }
    return "/chat/completions";
}

// Replaces the top-level "model" value when the client named a model
// "litellm/…": the upstream knows it without the prefix. Only the string
// token right after the first top-level "model" key is touched.
std::string strip_litellm_prefix(const std::string& body, const std::string& requested) {
    const std::string needle = "\"" + json_escape(requested) + "\"";
    const auto pos = body.find(needle);
    if (pos == std::string::npos) return body;
    return body.substr(0, pos) + "\"" + json_escape(requested.substr(8)) + "\"" + body.substr(pos + needle.size());
}

// The cost of what the call used, by the first source SPEC 2 allows.
struct metered {
    pricing::charge ch;
    std::string price_source = "catalog";
    std::int64_t prompt = 0;
    std::int64_t completion = 0;
    std::int64_t cached = 0;
    std::int64_t reasoning = 0;
    std::int64_t units = 0;
    std::string model;
    std::string catalog_hash;
};

struct call_state {
    exchange& x;
    const caller& who;
    service kind;
    target tgt;
    request_facts facts;
    std::int64_t prompt_counted = 0;
    std::int64_t hold_id = 0;
    std::int64_t hold_micros = 0;
    // BYOK (SPEC 3): the user's own OpenRouter key pays upstream, so no
    // hold, metered at the upstream inference cost, charged 0.
    bool byok = false;
    clock::time_point started = clock::now();
    // What the answer told us.
    std::optional<reported_usage> usage;
    std::optional<std::int64_t> header_cost_pico;  // LiteLLM's x-litellm-response-cost
    std::string answer_model;
    std::string generation_id;  // OpenRouter's X-Generation-Id: reconciles a call billed on an estimate
    std::int64_t generated_tokens = 0;  // counted from relayed text (o200k)
};

metered compute(call_state& s) {
    metered out;
    const pricing::model* m = s.tgt.model;
    std::string model_name = s.tgt.upstream_model;
    if (!s.answer_model.empty() && s.tgt.cat) {
        if (const auto* named = s.tgt.cat->find(s.answer_model); named && (m == nullptr || m->unpriced)) {
            m = named;  // a router or fallback answered with this model
            model_name = s.answer_model;
        }
    }
    out.model = model_name;
    if (s.kind == service::tts) {
        out.units = pricing::count_tts_characters(s.facts.tts_input);
    }
    pricing::usage u;
    if (s.usage) {
        u = s.usage->tokens;
        out.price_source = "catalog";
    } else {
        u.prompt_tokens = s.prompt_counted;
        u.completion_tokens = s.generated_tokens;
        u.input_images = s.facts.input_images;
        out.price_source = s.kind == service::tts ? "catalog" : "estimated";
    }
    out.prompt = u.prompt_tokens;
    out.completion = u.completion_tokens;
    out.cached = u.cached_tokens;
    out.reasoning = u.reasoning_tokens;

    std::optional<std::int64_t> provider_pico;
    if (s.byok && s.usage && s.usage->upstream_inference_cost_pico) {
        provider_pico = *s.usage->upstream_inference_cost_pico;  // usage.cost is only OpenRouter's BYOK fee
        out.price_source = "upstream";
    } else if (s.usage && s.usage->cost_pico) {
        provider_pico = *s.usage->cost_pico;
        out.price_source = "upstream";
    } else if (s.header_cost_pico) {
        provider_pico = *s.header_cost_pico;
        out.price_source = "upstream";
    } else if (m != nullptr && !m->unpriced) {
        const auto cost = s.kind == service::tts ? pricing::tts_cost(*m, out.units)
                                                 : pricing::catalog_cost(m->prices_for(u.prompt_tokens, utc_hhmm_now()), u);
        if (cost.status == pricing::cost_status::ok) {
            provider_pico = cost.provider_cost_pico;
            out.catalog_hash = s.tgt.cat->content_hash();
        }
    }
    const bool model_free = m != nullptr && m->free;
    const std::int64_t total_tokens = u.prompt_tokens + u.completion_tokens;
    if (!provider_pico) {
        // Nothing prices it (a router that reported no cost): the hold is
        // the bound the call was admitted at; never bill generated tokens 0.
        out.price_source = "estimated";
        out.ch = pricing::price_call(0, false, total_tokens, s.who.policy, false);
        out.ch.charged_micros = s.hold_micros;
        out.ch.provider_cost_micros = s.hold_micros;
        return out;
    }
    out.ch = pricing::price_call(*provider_pico, model_free, total_tokens, s.who.policy, s.byok);
    return out;
}

// Settles the hold with what the call used; false when the ledger failed.
awaitable<std::optional<ledger::charge_outcome>> settle(call_state& s, const std::string& status) {
    auto& a = s.x.a;
    const auto m = compute(s);
    ledger::usage_event ev;
    ev.request_id = s.x.request_id;
    ev.key_id = s.who.key_id;
    ev.service = std::string(service_name(s.kind));
    ev.upstream = s.tgt.litellm ? "litellm" : "openrouter";
    ev.model = m.model;
    ev.prompt_tokens = m.prompt;
    ev.completion_tokens = m.completion;
    ev.cached_tokens = m.cached;
    ev.reasoning_tokens = m.reasoning;
    ev.units = m.units;
    ev.provider_cost_micros = m.ch.provider_cost_micros;
    ev.markup_micros = m.ch.markup_micros;
    ev.price_source = m.price_source;
    ev.catalog_hash = m.catalog_hash;
    ev.status = status;
    ev.latency_ms = std::chrono::duration_cast<std::chrono::milliseconds>(clock::now() - s.started).count();
    if (!s.generation_id.empty()) ev.generation_id = s.generation_id;
    if (s.byok) {
        ev.markup_micros = 0;
        const auto out = a.ledger.record_usage(s.who.user_id, ev);
        if (out.code != ledger::result::ok || !co_await durable(a, out.seq)) co_return std::nullopt;
        co_return out;
    }
    const auto out = a.ledger.settle(s.hold_id, m.ch.charged_micros, ev);
    s.hold_id = 0;
    if (out.code != ledger::result::ok) co_return std::nullopt;
    a.stats.count_charge(out.charged_micros, std::max<std::int64_t>(0, out.charged_micros - s.hold_micros));
    if (!co_await durable(a, out.seq)) co_return std::nullopt;
    co_return out;
}

void release(call_state& s) {
    if (s.hold_id == 0) return;
    s.x.a.ledger.release(s.hold_id);
    s.hold_id = 0;
}

http::request<http::string_body> upstream_request(call_state& s, std::string body) {
    auto& a = s.x.a;
    http::request<http::string_body> r{http::verb::post,
                                       s.tgt.pool->url().base_path + (s.tgt.litellm ? "/v1" : "") +
                                           std::string(upstream_suffix(s.kind)),
                                       11};
    copy_request_headers(s.x.req.base(), r.base());
    r.set(http::field::host, s.tgt.pool->host_header());
    const std::string& managed = s.who.openrouter_key.empty() ? a.settings.openrouter_key : s.who.openrouter_key;
    const auto& key = s.byok ? s.who.byok_key : s.tgt.litellm ? a.settings.litellm_key : managed;
    if (!key.empty()) r.set(http::field::authorization, "Bearer " + key);
    r.keep_alive(true);
    r.body() = std::move(body);
    r.prepare_payload();
    return r;
}

std::optional<std::int64_t> header_cost(const response_parser::value_type& res) {
    const auto it = res.find("x-litellm-response-cost");
    if (it == res.end()) return std::nullopt;
    return parse_cost_header(std::string_view(it->value().data(), it->value().size()));
}

// Reads the rest of an answer body into `out` (bounded).
awaitable<bool> read_body(upstream_conn& c, beast::flat_buffer& buffer, response_parser& parser, std::string& out,
                          std::size_t limit, std::chrono::milliseconds idle, beast::error_code& ec) {
    std::array<char, 16384> chunk;  // a std::array: GCC 12 cannot keep C arrays in coroutine frames
    while (!parser.is_done()) {
        parser.get().body().data = chunk.data();
        parser.get().body().size = chunk.size();
        expire_after(c, idle);
        co_await read_body_some(c, buffer, parser, ec);
        if (ec) co_return false;
        const auto got = chunk.size() - parser.get().body().size;
        if (out.size() + got > limit) {
            ec = http::error::body_limit;
            co_return false;
        }
        out.append(chunk.data(), got);
    }
    co_return true;
}

upstream_failure failure_of(const beast::error_code& ec) {
    if (ec == beast::error::timeout) return upstream_failure::timeout;
    if (ec == asio::error::connection_reset || ec == asio::error::eof || ec == http::error::end_of_stream ||
        ec == http::error::partial_message || ec == asio::error::broken_pipe) {
        return upstream_failure::reset;
    }
    return upstream_failure::malformed;
}

// The data of relayed events not parsed yet: their generated text is needed
// only if the stream ends without usage. Kept small (8 KiB, about 30 chunks),
// since every open stream holds it: a longer answer is parsed as it goes,
// 8 KiB at a time, and only a short one skips the parsing entirely.
class uninspected_events {
public:
    void defer(std::string_view data) {
        data_.append(data);
        ends_.push_back(data_.size());
    }
    bool full() const { return data_.size() > 8192; }
    // Appends the generated text of every deferred event to `text`.
    void inspect(std::string& text) {
        std::size_t begin = 0;
        for (const auto end : ends_) {
            text += inspect_answer(std::string_view(data_).substr(begin, end - begin)).generated_text;
            begin = end;
        }
        data_.clear();
        ends_.clear();
    }

private:
    std::string data_;
    std::vector<std::size_t> ends_;
};

// Streams (SPEC 5): events relayed as they arrive, one read ahead at most,
// so a slow reader slows the upstream instead of growing tollgate.
awaitable<void> relay_stream(call_state& s, upstream_conn_ptr& conn, beast::flat_buffer& buffer,
                             response_parser& parser) {
    auto& x = s.x;
    auto& a = x.a;
    http::response<http::empty_body> head{static_cast<http::status>(parser.get().result_int()), x.req.version()};
    copy_answer_headers(parser.get().base(), head.base());
    common_headers(x, head);
    head.chunked(true);
    x.status = head.result_int();
    http::response_serializer<http::empty_body> sr{head};
    beast::error_code ec;
    co_await client_write(x, ec, [&](auto& socket) -> awaitable<void> {
        co_await http::async_write_header(socket, sr, asio::redirect_error(use_awaitable, ec));
    });
    bool client_alive = !ec;

    a.stats.open_streams++;
    const bool splice_usage = !s.facts.include_usage && s.tgt.litellm;
    const auto tok = pricing::tokenizer::get(pricing::encoding::o200k_base);
    sse_parser events(1 << 20);
    std::array<char, 16384> chunk;
    bool upstream_broken = false;
    bool stream_error = false;
    bool draining = false;
    bool drain_slot = false;
    const auto deadline = s.started + a.settings.stream_deadline;
    std::string edited;
    std::string pending_text;  // relayed text not yet counted
    beast::error_code client_ec;

    // Every complete event of one read goes out in one write (one chunk, one
    // system call), as a proxy that copies what it read would: a read holds
    // at most the 16 KiB of `chunk` plus the unfinished event before it.
    // `out` starts with room for the chunk's size line, written in once
    // the size is known: one buffer, one write.
    constexpr std::size_t size_line_room = 18;  // 16 hex digits, CRLF
    std::string out;
    auto relay = [&](std::string_view relayed) {
        if (client_alive) out.append(relayed);
    };

    // Text is counted only if the upstream reports no usage: kept as text,
    // folded into a count every 64 KiB so memory stays bounded.
    uninspected_events uninspected;
    auto fold_pending_text = [&](bool all) {
        if (pending_text.size() > 65536 || (all && !pending_text.empty())) {
            s.generated_tokens += static_cast<std::int64_t>(tok->count(pending_text));
            pending_text.clear();
        }
    };
    auto take_events = [&]() -> awaitable<void> {
        out.assign(size_line_room, '\0');
        while (auto ev = events.next()) {
            std::string_view relayed = ev->raw;
            if (ev->has_data && ev->data != "[DONE]") {
                if (!s.answer_model.empty() && !may_hold_usage_or_error(ev->data)) {
                    // Most events: only their text matters, and only if no
                    // usage comes. Parsed later, if at all.
                    uninspected.defer(ev->data);
                    if (uninspected.full()) {
                        uninspected.inspect(pending_text);
                        fold_pending_text(false);
                    }
                    relay(ev->raw);
                    continue;
                }
                const auto facts = inspect_answer(ev->data);
                if (facts.usage == member_state::value) s.usage = facts.reported;
                if (!facts.model.empty()) s.answer_model = facts.model;
                pending_text += facts.generated_text;
                fold_pending_text(false);
                if (facts.error) {
                    stream_error = true;
                    a.stats.count_upstream_failure(upstream_failure::stream_error);
                }
                if (splice_usage && facts.usage != member_state::absent) {
                    if (auto cut = remove_usage_member(ev->raw)) {
                        edited = std::move(*cut);
                        relayed = edited;
                    }
                }
            }
            relay(relayed);
        }
        const std::size_t size = out.size() - size_line_room;
        if (!client_alive || size == 0) co_return;
        a.stats.note_stream_buffer(static_cast<std::int64_t>(events.buffered() + buffer.size() + out.size()));
        const auto size_line = fmt::format("{:x}\r\n", size);
        const std::size_t begin = size_line_room - size_line.size();
        out.replace(begin, size_line.size(), size_line);
        out += "\r\n";
        // The client's errors have their own code: a client gone is a
        // drain, not an upstream failure.
        co_await client_write(x, client_ec, [&](auto& socket) -> awaitable<void> {
            co_await asio::async_write(socket, asio::buffer(out.data() + begin, out.size() - begin),
                                       asio::redirect_error(use_awaitable, client_ec));
        });
        if (client_ec) client_alive = false;
    };

    while (!parser.is_done()) {
        if (!client_alive && !draining) {
            // The client left: drain the upstream to its usage if a slot is
            // free, else stop here and bill what was relayed.
            draining = true;
            if (!a.cut_off && a.stats.drain_slots_in_use.fetch_add(1) < static_cast<std::int64_t>(a.settings.drain_slots)) {
                drain_slot = true;
                a.stats.count_drain(true);
            } else {
                if (!a.cut_off) a.stats.drain_slots_in_use--;
                a.stats.count_drain(false);
                upstream_broken = true;
                break;
            }
        }
        parser.get().body().data = chunk.data();
        parser.get().body().size = chunk.size();
        const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - clock::now());
        expire_after(*conn, std::min(a.settings.idle_timeout, std::max(left, std::chrono::milliseconds(1))));
        co_await read_body_some(*conn, buffer, parser, ec);
        const auto got = chunk.size() - parser.get().body().size;
        if (got) events.feed(std::string_view(chunk.data(), got));
        a.stats.note_stream_buffer(static_cast<std::int64_t>(events.buffered() + buffer.size()));
        co_await take_events();
        if (events.overflowed()) {
            a.stats.count_upstream_failure(upstream_failure::malformed);
            upstream_broken = true;
            break;
        }
        if (ec) {
            a.stats.count_upstream_failure(failure_of(ec));
            upstream_broken = true;
            break;
        }
    }
    if (drain_slot) a.stats.drain_slots_in_use--;
    a.stats.open_streams--;

    // An event cut off by the end of the stream still reaches the client.
    if (!upstream_broken && client_alive && !events.pending().empty()) {
        const auto rest = events.pending();
        co_await client_write(x, ec, [&](auto& socket) -> awaitable<void> {
            co_await asio::async_write(socket, http::make_chunk(asio::buffer(rest.data(), rest.size())),
                                       asio::redirect_error(use_awaitable, ec));
        });
        if (ec) client_alive = false;
    }
    if (upstream_broken) {
        close_hard(*conn);
    } else if (parser.get().keep_alive()) {
        x.upstream = nullptr;
        s.tgt.pool->give_back(std::move(conn));
    }

    if (!s.usage) {
        uninspected.inspect(pending_text);
        fold_pending_text(true);
    }
    const bool generated = s.generated_tokens > 0 || !pending_text.empty() || (s.usage && s.usage->tokens.completion_tokens > 0) ||
                           (s.usage && s.usage->cost_pico.value_or(0) > 0);
    std::string status = "ok";
    if (stream_error) status = "upstream_error";
    else if (upstream_broken) status = "broken";
    else if (!client_alive) status = "client_closed";
    // Only a call that failed and generated nothing goes free.
    if (generated || (!upstream_broken && !stream_error)) {
        const auto settled = co_await settle(s, status);
        if (!settled) a.stats.count_upstream_failure(upstream_failure::malformed);  // ledger failure is logged by it
    } else {
        release(s);
    }
    // The stream ends only once its charge is committed. A broken upstream
    // leaves the client's stream unterminated, so the client sees the break.
    if (client_alive && !upstream_broken) {
        co_await client_write(x, ec, [&](auto& socket) -> awaitable<void> {
            co_await asio::async_write(socket, http::make_chunk_last(), asio::redirect_error(use_awaitable, ec));
        });
        if (ec) client_alive = false;
    }
    if (!client_alive || upstream_broken) {
        x.keep_alive = false;
    }
}

}  // namespace

awaitable<void> metered_call(exchange& x, service kind) {
    auto& a = x.a;
    const auto who = co_await admit_caller(x);
    if (!who) co_return;
    call_state s{.x = x, .who = *who, .kind = kind};
    s.facts = inspect_request(x.req.body());
    if (!s.facts.json_ok) {
        co_await reply_error(x, 400, "invalid_json", "The request body must be a JSON object");
        co_return;
    }
    if (!s.facts.bad_param.empty()) {
        co_await reply_error(x, 400, "invalid_type", fmt::format("'{}' has the wrong type", s.facts.bad_param),
                             s.facts.bad_param);
        co_return;
    }
    if (s.facts.model.empty()) {
        co_await reply_error(x, 400, "missing_required_parameter", "'model' is required", "model");
        co_return;
    }
    if (s.facts.stream && kind == service::tts) s.facts.stream = false;

    const auto cats = a.catalog.get();
    auto tgt = route_model(x.w, *cats, s.facts.model);
    if (!tgt || tgt->model == nullptr) {
        co_await reply_error(x, 404, "model_not_found",
                             fmt::format("The model '{}' does not exist or is not priced", s.facts.model), "model");
        co_return;
    }
    s.tgt = *tgt;
    // Fallback candidates: every one must be known; the hold covers the dearest.
    std::vector<const pricing::model*> candidates{s.tgt.model};
    for (const auto& id : s.facts.fallback_models) {
        const auto* m = s.tgt.litellm || !s.tgt.cat ? nullptr : s.tgt.cat->find(id);
        if (!m) {
            co_await reply_error(x, 404, "model_not_found",
                                 fmt::format("The fallback model '{}' does not exist on this upstream", id), "models");
            co_return;
        }
        candidates.push_back(m);
    }
    if (who->policy.free_models_only) {
        for (const auto* m : candidates) {
            if (!m->free) {
                co_await reply_error(x, 403, "model_not_allowed",
                                     fmt::format("The {} tier may use free models only; '{}' is not free", who->tier,
                                                 m->id),
                                     "model");
                co_return;
            }
        }
    }

    // The hold: the most this call can cost (SPEC 5).
    std::int64_t hold = 0;
    if (kind == service::tts) {
        const auto chars = pricing::count_tts_characters(s.facts.tts_input);
        const auto cost = pricing::tts_cost(*s.tgt.model, chars);
        if (cost.status != pricing::cost_status::ok) {
            co_await reply_error(x, 404, "model_not_found",
                                 fmt::format("The model '{}' has no per-character price", s.facts.model), "model");
            co_return;
        }
        hold = pricing::price_call(cost.provider_cost_pico, s.tgt.model->free, 0, who->policy, false).charged_micros;
    } else {
        s.prompt_counted = count_prompt(s.facts, kind);
        pricing::hold_request hr{.prompt_tokens_counted = s.prompt_counted,
                                 .max_tokens = kind == service::embedding ? std::optional<std::int64_t>(0)
                                                                          : s.facts.max_tokens,
                                 .n = std::max<std::int64_t>(1, s.facts.n),
                                 .input_images = s.facts.input_images};
        for (const auto* m : candidates) {
            const auto h = pricing::hold_estimate(*m, hr, who->policy, a.settings.hold);
            if (h.status != pricing::cost_status::ok) {
                co_await reply_error(x, 404, "model_not_found",
                                     fmt::format("The model '{}' cannot be priced ({})", m->id,
                                                 pricing::to_string(h.status)),
                                     "model");
                co_return;
            }
            hold = std::max(hold, h.hold_micros);
        }
    }
    hold = std::max<std::int64_t>(hold, 1);
    s.hold_micros = hold;
    // A BYOK user's OpenRouter calls go out with their own key, admitted
    // whatever the balance (LiteLLM's models still run on credits).
    s.byok = who->byok && !s.tgt.litellm;
    if (s.byok && who->byok_key.empty()) {
        co_await reply_error(x, 500, "byok_key_unavailable",
                             "This user's BYOK key cannot be read; switch the option again with a new key");
        co_return;
    }
    const auto held = s.byok ? ledger::hold_outcome{} : a.ledger.reserve(who->user_id, hold, x.request_id);
    if (held.code == ledger::result::insufficient_credits) {
        a.stats.holds_refused++;
        co_await reply_error(x, 402, "insufficient_credits",
                             fmt::format("Insufficient credits: this call needs up to ${} and ${} is available",
                                         usd_text(hold), usd_text(std::max<std::int64_t>(0, held.available_micros))));
        co_return;
    }
    if (held.code != ledger::result::ok || (!s.byok && !co_await durable(a, held.seq))) {
        if (held.code == ledger::result::ok) a.ledger.release(held.hold_id);
        co_await reply_error(x, 503, "ledger_unavailable", "The ledger cannot take holds right now");
        co_return;
    }
    s.hold_id = held.hold_id;

    // Forward. Only the credential changes, and a stream asks for usage.
    std::string body = x.req.body();
    if (s.facts.model.starts_with("litellm/")) body = strip_litellm_prefix(body, s.facts.model);
    if (s.facts.stream && !s.facts.include_usage) {
        if (auto forced = force_include_usage(body)) body = std::move(*forced);
    }
    auto up = upstream_request(s, std::move(body));
    upstream_conn_ptr conn;
    beast::error_code ec;
    upstream_failure failure = upstream_failure::connect;
    for (int attempt = 0; attempt < 2 && !conn; ++attempt) {
        conn = co_await s.tgt.pool->acquire(ec, failure);  // a retry only when nothing was sent
    }
    if (!conn) {
        release(s);
        a.stats.count_upstream_failure(failure);
        if (failure == upstream_failure::timeout) {
            co_await reply_error(x, 504, "upstream_timeout", "The upstream did not accept a connection in time");
        } else {
            co_await reply_error(x, 502, "upstream_error", fmt::format("The upstream is unreachable: {}", ec.message()));
        }
        co_return;
    }
    x.upstream = conn.get();  // a shutdown cut-off closes it
    expire_after(*conn, a.settings.first_byte_timeout);
    co_await send_request(*conn, up, ec);
    beast::flat_buffer buffer;
    response_parser parser;
    parser.header_limit(64 * 1024);
    // Not boost::none: Beast 1.74 compares a Content-Length against an empty
    // optional as "over the limit". Bodies are bounded where they are read.
    parser.body_limit(std::numeric_limits<std::uint64_t>::max());
    if (!ec) co_await read_header(*conn, buffer, parser, ec);
    if (ec) {
        release(s);
        close_hard(*conn);
        const auto f = failure_of(ec);
        a.stats.count_upstream_failure(f);
        if (f == upstream_failure::timeout) {
            co_await reply_error(x, 504, "upstream_timeout", "The upstream did not answer in time");
        } else {
            co_await reply_error(x, 502, "upstream_error",
                                 fmt::format("The upstream gave no valid HTTP answer: {}", ec.message()));
        }
        co_return;
    }
    const unsigned status = parser.get().result_int();
    if (status >= 400) {
        // Passed through with its status and body; nothing is charged.
        std::string answer;
        const bool whole = co_await read_body(*conn, buffer, parser, answer, 1 << 20, a.settings.idle_timeout, ec);
        release(s);
        a.stats.count_upstream_failure(upstream_failure::http_error);
        if (whole && parser.get().keep_alive()) {
            x.upstream = nullptr;
            s.tgt.pool->give_back(std::move(conn));
        } else {
            close_hard(*conn);
        }
        if (status == 403 && answer.find("Key limit exceeded") != std::string::npos) {
            a.stats.count_upstream_failure(upstream_failure::key_limit);
            auto facts = inspect_answer(answer);
            if (facts.error_message.empty()) facts.error_message = "Key limit exceeded";
            co_await reply_error(x, 502, "upstream_error", facts.error_message);
            co_return;
        }
        http::response<http::string_body> res{static_cast<http::status>(status), x.req.version()};
        copy_answer_headers(parser.get().base(), res.base());
        common_headers(x, res);
        res.body() = std::move(answer);
        res.prepare_payload();
        co_await send_answer(x, res);
        co_return;
    }

    // (Not for BYOK calls: they are charged nothing, so there is nothing
    // to correct, and their generations live in the user's own account.)
    if (!s.tgt.litellm && !s.byok) {
        const auto id = parser.get()["x-generation-id"];
        if (!id.empty() && id.size() <= 256) s.generation_id = std::string(id);
    }
    const auto content_type = parser.get()[http::field::content_type];
    if (s.facts.stream && content_type.starts_with("text/event-stream")) {
        co_await relay_stream(s, conn, buffer, parser);
        co_return;
    }

    // A whole answer: read it, charge it, then answer with the charge.
    std::string answer;
    const std::size_t limit = kind == service::tts ? (64u << 20) : (32u << 20);
    if (!co_await read_body(*conn, buffer, parser, answer, limit, a.settings.idle_timeout, ec)) {
        release(s);
        close_hard(*conn);
        const auto f = failure_of(ec);
        a.stats.count_upstream_failure(f);
        if (f == upstream_failure::timeout) {
            co_await reply_error(x, 504, "upstream_timeout", "The upstream stopped answering");
        } else {
            co_await reply_error(x, 502, "upstream_error", fmt::format("The upstream answer broke off: {}", ec.message()));
        }
        co_return;
    }
    if (parser.get().keep_alive()) {
        x.upstream = nullptr;
        s.tgt.pool->give_back(std::move(conn));
    } else {
        close_hard(*conn);
    }
    s.header_cost_pico = header_cost(parser.get());
    if (kind != service::tts) {
        const auto facts = inspect_answer(answer);
        if (facts.usage == member_state::value) s.usage = facts.reported;
        s.answer_model = facts.model;
        if (!s.usage && !facts.generated_text.empty()) {
            s.generated_tokens =
                static_cast<std::int64_t>(pricing::tokenizer::get(pricing::encoding::o200k_base)->count(facts.generated_text));
        }
    } else {
        s.header_cost_pico.reset();  // TTS is priced by tollgate from the input (SPEC 2)
    }
    const auto settled = co_await settle(s, "ok");
    if (!settled) {
        co_await reply_error(x, 500, "ledger_unavailable", "The call ran but its charge could not be recorded");
        co_return;
    }
    http::response<http::string_body> res{static_cast<http::status>(status), x.req.version()};
    copy_answer_headers(parser.get().base(), res.base());
    common_headers(x, res);
    res.set("x-tollgate-charged-micros", std::to_string(settled->charged_micros));
    res.set("x-tollgate-balance-micros", std::to_string(settled->balance_micros));
    res.body() = std::move(answer);
    res.prepare_payload();
    co_await send_answer(x, res);
}

}  // namespace tollgate::proxy
