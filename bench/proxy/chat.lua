-- wrk script for bench/proxy/run.sh: the same chat completion whatever the
-- target (mock, nginx, tollgate), so the three differ only by the hop.
--   KEY=tg_...   bearer (default: a dummy the mock accepts)
--   STREAM=1     SSE answer instead of JSON
--   TOKENS=N     content chunks / completion tokens (x-mock-tokens, default 16)
--   PACE_MS=D    wait D ms after each answer before the next request on the
--                same connection: a paced rate of about connections / D
--   MAX_REQUESTS=N  each wrk thread stops after N answers (profile.sh)
-- done() prints one machine-readable line that run.sh parses:
--   RESULT requests=… duration_us=… p50_us=… p90_us=… p99_us=… errors=…
local tokens = tonumber(os.getenv("TOKENS") or "16")
local stream = os.getenv("STREAM") == "1"
local pace_ms = tonumber(os.getenv("PACE_MS") or "0")

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. (os.getenv("KEY") or "sk-or-v1-bench")
wrk.headers["x-mock-tokens"] = tostring(tokens)
wrk.body = string.format(
  '{"model":"openai/gpt-4o-mini","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":%d,"stream":%s}',
  tokens, stream and "true" or "false")

-- No request() function: wrk then formats this request once (adding the
-- Host header) and sends the same bytes every time.

if pace_ms > 0 then
  function delay() return pace_ms end
end

-- Without MAX_REQUESTS there is no response(): wrk then skips handing
-- headers and bodies to Lua. Statuses above 399 are still counted in
-- summary.errors.status.
local max_requests = tonumber(os.getenv("MAX_REQUESTS") or "0")
if max_requests > 0 then
  local answered = 0
  function response(status, headers, body)
    answered = answered + 1
    if answered >= max_requests then wrk.thread:stop() end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d p50_us=%d p90_us=%d p99_us=%d errors=%d status_errors=%d\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), e.connect + e.read + e.write + e.timeout, e.status))
end
