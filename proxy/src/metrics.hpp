// Counters for /metrics (Prometheus text format). Updated from every I/O
// thread with relaxed atomics; /metrics reads them without stopping anyone.
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>

namespace tollgate::proxy {

enum class route_label : std::uint8_t {
    chat,
    completions,
    embeddings,
    speech,
    models,
    prefix,
    health,
    metrics,
    admin,
    other,
};
inline constexpr std::size_t route_label_count = 10;
std::string_view to_string(route_label r);

enum class upstream_failure : std::uint8_t {
    connect,       // refused, unreachable, DNS
    tls,           // handshake or certificate
    timeout,       // connect, first byte or idle
    reset,         // broken mid-answer
    malformed,     // not a valid HTTP answer, oversized event
    http_error,    // answered 4xx/5xx (passed through)
    key_limit,     // OpenRouter "Key limit exceeded"
    stream_error,  // an error event inside a 200 stream
};
inline constexpr std::size_t upstream_failure_count = 8;
std::string_view to_string(upstream_failure f);

class metrics {
public:
    void count_request(route_label route, unsigned status, std::int64_t micros);
    void count_upstream_failure(upstream_failure f) {
        upstream_failures_[static_cast<std::size_t>(f)].fetch_add(1, std::memory_order_relaxed);
    }
    void count_charge(std::int64_t charged_micros, std::int64_t shortfall_micros);
    void count_drain(bool got_slot) { (got_slot ? drains_ : drains_refused_)++; }
    // A call billed on an estimate, priced again from the upstream's figures.
    void count_reconciliation(std::int64_t delta_micros) {
        reconciliations_++;
        reconciled_delta_micros_.fetch_add(delta_micros, std::memory_order_relaxed);
    }

    std::atomic<std::int64_t> open_streams{0};
    std::atomic<std::int64_t> drain_slots_in_use{0};
    std::atomic<std::int64_t> open_connections{0};
    std::atomic<std::int64_t> in_flight{0};
    std::atomic<std::int64_t> stream_buffer_high_water{0};  // most bytes one stream held at once
    std::atomic<std::uint64_t> holds_refused{0};
    std::atomic<std::uint64_t> rate_limited{0};

    void note_stream_buffer(std::int64_t bytes) {
        auto seen = stream_buffer_high_water.load(std::memory_order_relaxed);
        while (bytes > seen && !stream_buffer_high_water.compare_exchange_weak(seen, bytes)) {
        }
    }

    std::string render() const;

private:
    // Latency buckets in microseconds (upper bounds), then +Inf.
    static constexpr std::array<std::int64_t, 12> bucket_us{250,     500,     1'000,     2'500,     5'000,     10'000,
                                                            25'000,  100'000, 500'000,   2'500'000, 10'000'000, 60'000'000};
    static constexpr std::array<unsigned, 15> statuses{200, 201, 400, 401, 402, 403, 404, 409, 413, 429, 500, 502, 503, 504, 0};

    std::array<std::array<std::atomic<std::uint64_t>, statuses.size()>, route_label_count> by_status_{};
    std::array<std::array<std::atomic<std::uint64_t>, bucket_us.size() + 1>, route_label_count> latency_{};
    std::array<std::atomic<std::uint64_t>, route_label_count> latency_sum_us_{};
    std::array<std::atomic<std::uint64_t>, upstream_failure_count> upstream_failures_{};
    std::atomic<std::uint64_t> charged_micros_{0};
    std::atomic<std::uint64_t> charges_{0};
    std::atomic<std::uint64_t> shortfall_micros_{0};
    std::atomic<std::uint64_t> drains_{0};
    std::atomic<std::uint64_t> drains_refused_{0};
    std::atomic<std::uint64_t> reconciliations_{0};
    std::atomic<std::int64_t> reconciled_delta_micros_{0};
};

}  // namespace tollgate::proxy
