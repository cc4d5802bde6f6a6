-- Appended to every script of the bench (scripts/bench/load.py): wrk calls `done` once, at the
-- end, and this prints one machine-readable line, latencies in microseconds, that load.py
-- parses (the BENCH_RESULT marker is load.RESULT_MARKER).
done = function(summary, latency, requests)
  local seconds = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format(
    "BENCH_RESULT requests=%d rps=%.2f p50_us=%d p99_us=%d status_errors=%d socket_errors=%d\n",
    summary.requests, summary.requests / seconds,
    math.floor(latency:percentile(50)), math.floor(latency:percentile(99)),
    e.status, e.connect + e.read + e.write + e.timeout))
end
