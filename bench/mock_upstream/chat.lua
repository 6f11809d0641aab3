-- wrk script: one small chat completion per request against mock_upstream.
--   wrk -t2 -c32 -d5s -s bench/mock_upstream/chat.lua http://127.0.0.1:PORT/api/v1/chat/completions
-- Environment: MODEL (default openai/gpt-4o-mini; gpt-4o-mini for the LiteLLM
-- routes), STREAM=1 for an SSE stream instead of a JSON answer.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-or-v1-bench"
wrk.body = string.format(
  '{"model":"%s","messages":[{"role":"user","content":"Say hello in five words."}],"max_tokens":16,"stream":%s}',
  os.getenv("MODEL") or "openai/gpt-4o-mini", os.getenv("STREAM") == "1" and "true" or "false")

local errors = 0
function response(status, headers, body)
  if status ~= 200 then
    errors = errors + 1
    if errors <= 3 then io.stderr:write("unexpected status ", status, ": ", body, "\n") end
  end
end
