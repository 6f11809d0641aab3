// A deadline for the I/O on one socket, kept by one timer that rarely wakes.
// Beast's tcp_stream arms a timer before every read or write and cancels it
// after: on a stream of small events that machinery cost more than relaying
// them (bench/README.md). Here setting the deadline only stores a time; the
// timer is re-armed only when a deadline comes nearer than its next wake,
// and when it wakes past the deadline it calls `on_expiry` (which cancels the
// socket, so the pending operation ends with operation_aborted) and
// expired() turns true until the next deadline is set.
#pragma once

#include "tollgate/proxy/asio.hpp"

#include <chrono>
#include <functional>
#include <memory>

namespace tollgate::proxy {

class lazy_deadline {
public:
    using clock = std::chrono::steady_clock;

    lazy_deadline(net::asio::any_io_executor ex, std::function<void()> on_expiry)
        : s_(std::make_shared<state>(std::move(ex), std::move(on_expiry))) {}
    lazy_deadline(const lazy_deadline&) = delete;
    lazy_deadline& operator=(const lazy_deadline&) = delete;
    ~lazy_deadline() { stop(); }

    void expires_after(std::chrono::milliseconds d) { expires_at(clock::now() + d); }
    void expires_at(clock::time_point t) {
        s_->deadline = t;
        s_->expired = false;
        if (t < s_->wakes_at) arm(s_, t);
    }
    void expires_never() {
        s_->deadline = clock::time_point::max();
        s_->expired = false;
    }
    bool expired() const { return s_->expired; }
    // on_expiry is never called after this (a wake already queued does nothing).
    void stop() {
        if (!s_->active) return;
        s_->active = false;
        s_->timer.cancel();
    }

private:
    struct state {
        state(net::asio::any_io_executor ex, std::function<void()> f) : timer(std::move(ex)), on_expiry(std::move(f)) {}
        net::asio::steady_timer timer;
        std::function<void()> on_expiry;
        clock::time_point deadline = clock::time_point::max();
        clock::time_point wakes_at = clock::time_point::max();
        bool active = true;
        bool expired = false;
    };

    static void arm(const std::shared_ptr<state>& s, clock::time_point at) {
        s->wakes_at = at;
        s->timer.expires_at(at);
        s->timer.async_wait([s](const net::beast::error_code& ec) {
            if (!s->active || ec == net::asio::error::operation_aborted) return;
            s->wakes_at = clock::time_point::max();
            if (s->deadline <= clock::now()) {
                s->deadline = clock::time_point::max();
                s->expired = true;
                s->on_expiry();
            } else if (s->deadline != clock::time_point::max()) {
                arm(s, s->deadline);  // moved later since this wake was set
            }
        });
    }

    std::shared_ptr<state> s_;
};

}  // namespace tollgate::proxy
