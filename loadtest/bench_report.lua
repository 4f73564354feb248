-- The one line every wrk load script of loadtest/ ends with, read by `cargo xtask bench` and the compare scripts:
-- `BENCH {json}` with the request count, errors and latency percentiles (p99.9 included, which `wrk --latency`
-- does not print). Loaded by `dofile` from the scripts beside it.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"non_2xx":%d,"socket_errors":%d,'
      .. '"p50_us":%d,"p99_us":%d,"p999_us":%d,"mean_us":%.1f,"max_us":%d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9), latency.mean, latency.max))
end
