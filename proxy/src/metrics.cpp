#include "metrics.hpp"

#include <fmt/format.h>

namespace tollgate::proxy {

std::string_view to_string(route_label r) {
    static constexpr std::array<std::string_view, route_label_count> names{
        "chat", "completions", "embeddings", "speech", "models", "prefix", "health", "metrics", "admin", "other"};
    return names[static_cast<std::size_t>(r)];
}

std::string_view to_string(upstream_failure f) {
    static constexpr std::array<std::string_view, upstream_failure_count> names{
        "connect", "tls", "timeout", "reset", "malformed", "http_error", "key_limit", "stream_error"};
    return names[static_cast<std::size_t>(f)];
}

void metrics::count_request(route_label route, unsigned status, std::int64_t micros) {
    std::size_t s = statuses.size() - 1;  // "other"
    for (std::size_t i = 0; i + 1 < statuses.size(); ++i) {
        if (statuses[i] == status) s = i;
    }
    const auto r = static_cast<std::size_t>(route);
    by_status_[r][s].fetch_add(1, std::memory_order_relaxed);
    std::size_t b = 0;
    while (b < bucket_us.size() && micros > bucket_us[b]) ++b;
    latency_[r][b].fetch_add(1, std::memory_order_relaxed);
    latency_sum_us_[r].fetch_add(static_cast<std::uint64_t>(micros), std::memory_order_relaxed);
}

void metrics::count_charge(std::int64_t charged_micros, std::int64_t shortfall_micros) {
    charges_.fetch_add(1, std::memory_order_relaxed);
    charged_micros_.fetch_add(static_cast<std::uint64_t>(charged_micros), std::memory_order_relaxed);
    if (shortfall_micros > 0) shortfall_micros_.fetch_add(static_cast<std::uint64_t>(shortfall_micros));
}

std::string metrics::render() const {
    fmt::memory_buffer out;
    auto line = [&]<class... A>(fmt::format_string<A...> format, A&&... args) {
        fmt::format_to(std::back_inserter(out), format, std::forward<A>(args)...);
    };
    line("# HELP tollgate_requests_total Requests answered, by route and status.\n"
         "# TYPE tollgate_requests_total counter\n");
    for (std::size_t r = 0; r < route_label_count; ++r) {
        for (std::size_t s = 0; s < statuses.size(); ++s) {
            const auto n = by_status_[r][s].load(std::memory_order_relaxed);
            if (n == 0) continue;
            const auto status = statuses[s] ? fmt::format("{}", statuses[s]) : std::string("other");
            line("tollgate_requests_total{{route=\"{}\",status=\"{}\"}} {}\n", to_string(route_label(r)), status, n);
        }
    }
    line("# HELP tollgate_request_duration_seconds Time from request read to response end.\n"
         "# TYPE tollgate_request_duration_seconds histogram\n");
    for (std::size_t r = 0; r < route_label_count; ++r) {
        std::uint64_t cumulative = 0;
        for (std::size_t b = 0; b <= bucket_us.size(); ++b) cumulative += latency_[r][b].load();
        if (cumulative == 0) continue;
        cumulative = 0;
        const auto name = to_string(route_label(r));
        for (std::size_t b = 0; b < bucket_us.size(); ++b) {
            cumulative += latency_[r][b].load(std::memory_order_relaxed);
            line("tollgate_request_duration_seconds_bucket{{route=\"{}\",le=\"{}\"}} {}\n", name,
                 fmt::format("{}.{:06}", bucket_us[b] / 1'000'000, bucket_us[b] % 1'000'000), cumulative);
        }
        cumulative += latency_[r][bucket_us.size()].load(std::memory_order_relaxed);
        line("tollgate_request_duration_seconds_bucket{{route=\"{}\",le=\"+Inf\"}} {}\n", name, cumulative);
        const auto sum = latency_sum_us_[r].load(std::memory_order_relaxed);
        line("tollgate_request_duration_seconds_sum{{route=\"{}\"}} {}.{:06}\n", name, sum / 1'000'000,
             sum % 1'000'000);
        line("tollgate_request_duration_seconds_count{{route=\"{}\"}} {}\n", name, cumulative);
    }
    line("# HELP tollgate_upstream_failures_total Upstream calls that failed, by kind.\n"
         "# TYPE tollgate_upstream_failures_total counter\n");
    for (std::size_t f = 0; f < upstream_failure_count; ++f) {
        line("tollgate_upstream_failures_total{{kind=\"{}\"}} {}\n", to_string(upstream_failure(f)),
             upstream_failures_[f].load(std::memory_order_relaxed));
    }
    line("# HELP tollgate_credits_charged_micros_total Micro-USD charged to users by metered calls.\n"
         "# TYPE tollgate_credits_charged_micros_total counter\n"
         "tollgate_credits_charged_micros_total {}\n",
         charged_micros_.load());
    line("# HELP tollgate_charges_total Metered calls settled.\n# TYPE tollgate_charges_total counter\n"
         "tollgate_charges_total {}\n",
         charges_.load());
    line("# HELP tollgate_charge_above_hold_micros_total Micro-USD charged beyond the calls' holds (a hold never "
         "caps a charge; the excess may become debt).\n# TYPE tollgate_charge_above_hold_micros_total counter\n"
         "tollgate_charge_above_hold_micros_total {}\n",
         shortfall_micros_.load());
    line("# HELP tollgate_reconciliations_total Calls billed on an estimate, priced again from OpenRouter's "
         "/generation.\n# TYPE tollgate_reconciliations_total counter\ntollgate_reconciliations_total {}\n",
         reconciliations_.load());
    line("# HELP tollgate_reconciled_micros Micro-USD the reconciliations added (negative: gave back).\n"
         "# TYPE tollgate_reconciled_micros gauge\ntollgate_reconciled_micros {}\n",
         reconciled_delta_micros_.load());
    line("# HELP tollgate_holds_refused_total Calls refused for insufficient credits.\n"
         "# TYPE tollgate_holds_refused_total counter\ntollgate_holds_refused_total {}\n",
         holds_refused.load());
    line("# HELP tollgate_rate_limited_total Calls refused by a key's rpm limit.\n"
         "# TYPE tollgate_rate_limited_total counter\ntollgate_rate_limited_total {}\n",
         rate_limited.load());
    line("# HELP tollgate_open_streams Streams being relayed now.\n# TYPE tollgate_open_streams gauge\n"
         "tollgate_open_streams {}\n",
         open_streams.load());
    line("# HELP tollgate_drain_slots_in_use Streams drained after their client left.\n"
         "# TYPE tollgate_drain_slots_in_use gauge\ntollgate_drain_slots_in_use {}\n",
         drain_slots_in_use.load());
    line("# HELP tollgate_drains_total Drains started, and refused for want of a slot.\n"
         "# TYPE tollgate_drains_total counter\ntollgate_drains_total{{outcome=\"drained\"}} {}\n"
         "tollgate_drains_total{{outcome=\"refused\"}} {}\n",
         drains_.load(), drains_refused_.load());
    line("# HELP tollgate_open_connections Client connections open now.\n"
         "# TYPE tollgate_open_connections gauge\ntollgate_open_connections {}\n",
         open_connections.load());
    line("# HELP tollgate_stream_buffer_high_water_bytes Most bytes one stream held at once.\n"
         "# TYPE tollgate_stream_buffer_high_water_bytes gauge\ntollgate_stream_buffer_high_water_bytes {}\n",
         stream_buffer_high_water.load());
    return fmt::to_string(out);
}

}  // namespace tollgate::proxy
