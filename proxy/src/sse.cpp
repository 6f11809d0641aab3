// Server-sent events framing (WHATWG HTML, "event stream interpretation"),
// incremental. buffer_ holds the events not yet returned; the front of the
// buffer is dropped on feed(), when no view handed out by next() is alive.
// Each byte is scanned once for line ends: scanned_ and line_start_ say where
// the scan of the current event stopped, so an event arriving in many small
// pieces costs no rescans.
#include "tollgate/proxy/wire.hpp"

#include <algorithm>
#include <cstring>

namespace tollgate::proxy {

namespace {

constexpr std::string_view byte_order_mark = "\xEF\xBB\xBF";

// The first CR or LF in p[from, to), else `to`. memchr runs a word or a
// vector at a time; most streams have no CR at all, and the second search
// then covers only the line the first one found.
std::size_t find_line_end(const char* p, std::size_t from, std::size_t to) {
    if (from >= to) return to;
    const auto* lf = static_cast<const char*>(std::memchr(p + from, '\n', to - from));
    const std::size_t lf_at = lf ? static_cast<std::size_t>(lf - p) : to;
    const auto* cr = static_cast<const char*>(std::memchr(p + from, '\r', lf_at - from));
    return cr ? static_cast<std::size_t>(cr - p) : lf_at;
}

}  // namespace

sse_parser::sse_parser(std::size_t max_event_bytes) : max_event_bytes_(max_event_bytes) {}

void sse_parser::feed(std::string_view bytes) {
    if (overflowed_) {  // aborted: keep nothing (views from next() die here, as documented)
        std::string().swap(buffer_);
        start_ = 0;
        return;
    }
    if (start_ > 0) {
        buffer_.erase(0, start_);
        start_ = 0;
    }
    buffer_.append(bytes);
}

std::string_view sse_parser::pending() const {
    if (overflowed_) return {};
    return std::string_view(buffer_).substr(start_);
}

std::optional<sse_event> sse_parser::next() {
    if (overflowed_) return std::nullopt;
    const char* const p = buffer_.data();
    const std::size_t size = buffer_.size();
    std::size_t pos = start_ + scanned_;

    if (at_stream_start_) {
        // The mark may itself arrive split: decide once three bytes (or a
        // byte that differs from it) are here.
        const std::size_t have = std::min(size, byte_order_mark.size());
        if (std::string_view(p, have) == byte_order_mark.substr(0, have)) {
            if (have < byte_order_mark.size()) return std::nullopt;
            skip_bom_ = true;
            pos = line_start_ = scanned_ = byte_order_mark.size();
        }
        at_stream_start_ = false;
    }

    while (pos < size) {
        if (cr_ended_) {
            cr_ended_ = false;
            if (p[pos] == '\n') {  // the LF of a CRLF split over two feeds
                if (pos == start_) {
                    // The CR ended the previous event, which is gone: this
                    // byte stands alone (see wire.hpp).
                    start_ = pos + 1;
                    return sse_event{std::string_view(p + pos, 1), {}, false};
                }
                ++pos;
                line_start_ = pos - start_;
                continue;
            }
        }
        pos = find_line_end(p, pos, size);
        if (pos == size) break;
        const bool empty_line = pos - start_ == line_start_;
        std::size_t after = pos + 1;
        if (p[pos] == '\r') {
            if (after == size) {
                cr_ended_ = true;
            } else if (p[after] == '\n') {
                ++after;
            }
        }
        if (empty_line) {
            if (after - start_ > max_event_bytes_) {
                overflowed_ = true;
                return std::nullopt;
            }
            return finish_event(after);
        }
        line_start_ = after - start_;
        pos = after;
    }
    scanned_ = pos - start_;
    if (size - start_ > max_event_bytes_) overflowed_ = true;
    return std::nullopt;
}

// The event is buffer_[start_, end): collect its data lines.
sse_event sse_parser::finish_event(std::size_t end) {
    const std::string_view raw(buffer_.data() + start_, end - start_);
    sse_event event{raw, {}, false};
    std::size_t i = skip_bom_ ? byte_order_mark.size() : 0;
    skip_bom_ = false;
    bool joined = false;  // data is in joined_data_, not a view of raw
    while (i < raw.size()) {
        const std::size_t eol = find_line_end(raw.data(), i, raw.size());
        const std::string_view line = raw.substr(i, eol - i);
        if (line.empty()) break;  // the blank line that ends the event
        if (line.front() != ':') {  // not a comment
            const std::size_t colon = line.find(':');
            const std::string_view field = line.substr(0, colon);
            if (field == "data") {
                std::string_view value = colon == std::string_view::npos ? std::string_view{} : line.substr(colon + 1);
                if (!value.empty() && value.front() == ' ') value.remove_prefix(1);
                if (!event.has_data) {
                    event.data = value;  // one data line, the usual case: no copy
                } else {
                    if (!joined) {
                        joined_data_.assign(event.data);
                        joined = true;
                    }
                    joined_data_ += '\n';
                    joined_data_.append(value);
                    event.data = joined_data_;
                }
                event.has_data = true;
            }
            // event:, id:, retry: and unknown fields stay in raw only.
        }
        i = eol + 1;
        if (raw[eol] == '\r' && i < raw.size() && raw[i] == '\n') ++i;
    }
    start_ = end;
    scanned_ = 0;
    line_start_ = 0;
    return event;
}

}  // namespace tollgate::proxy
