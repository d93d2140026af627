-- wrk script for bench/bench_proxy.py: POST a small chat-completions request.
--   wrk -t1 -c32 -d10s -s bench/wrk/chat.lua URL               (non-stream)
--   wrk -t1 -c32 -d10s -s bench/wrk/chat.lua URL -- stream 20 1 (stream: chunks, gap ms)
-- The client key is only for the direct runs (the simulator wants a non-empty Bearer); the
-- proxy strips it. done() prints one machine-readable line, prefixed BENCH_JSON.

local req

function init(args)
  local headers = {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer bench-key",
  }
  local body
  if args[1] == "stream" then
    body = '{"model":"glm-4.6","stream":true,"messages":[{"role":"user","content":"Say hello in one short sentence."}]}'
    headers["x-sim-chunks"] = args[2] or "20"
    headers["x-sim-chunk-gap-ms"] = args[3] or "1"
  else
    body = '{"model":"glm-4.6","messages":[{"role":"user","content":"Say hello in one short sentence."}]}'
  end
  req = wrk.format("POST", nil, headers, body)
end

function request()
  return req
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d,"lat_max_us":%d,"lat_mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
