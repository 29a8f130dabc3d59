-- wrk script for the benchmark: a POST with a small JSON body; at the end,
-- one machine-readable line (prefixed BENCH) with the counts and latencies.
wrk.method = "POST"
wrk.body = '{"user":"bench","order":1234,"items":["a","b","c"],"note":"small json body"}'
wrk.headers["Content-Type"] = "application/json"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}\n',
    summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    e.connect, e.read, e.write, e.status, e.timeout))
end
