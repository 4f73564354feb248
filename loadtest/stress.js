// k6 stress test for bucket: a ramp of virtual users calling `GET /` as random users from a fixed pool, the way the
// seed's stress test did. It checks that the service stays fast under load and that it really limits: both a
// share of 429s that is too high and one that is too low fail the run.
//
//   k6 run loadtest/stress.js
//   k6 run -e TARGET=http://127.0.0.1:8080 -e USERS=1000 -e MAX_VUS=200 -e P95_MS=50 loadtest/stress.js
//
// Expected 429 share, for tuning: each virtual user sends about 1 / PAUSE_S requests per second, spread over USERS
// users, each of whom may spend its refill rate (1/s by default) plus a first burst (capacity 10). With the
// defaults (200 VUs at the peak, 0.1 s pause, 1000 users) a user asks about 2/s against 1/s refilled, so roughly
// half the requests are refused once the bursts are spent.

import http from 'k6/http';
import { check, sleep } from 'k6';
import { Rate } from 'k6/metrics';

const TARGET = __ENV.TARGET || 'http://127.0.0.1:8080';
const USERS = parseInt(__ENV.USERS || '1000', 10);
const MAX_VUS = parseInt(__ENV.MAX_VUS || '200', 10);
const PAUSE_S = parseFloat(__ENV.PAUSE_S || '0.1');
const P95_MS = parseInt(__ENV.P95_MS || '50', 10);
const MIN_DENIED = parseFloat(__ENV.MIN_DENIED || '0.05');
const MAX_DENIED = parseFloat(__ENV.MAX_DENIED || '0.95');
// A fresh prefix per run, so runs never share buckets.
const RUN = __ENV.RUN_ID || `stress-${Date.now()}`;

// Share of answers that were 429: the limiter's verdict, not an error.
const denied = new Rate('bucket_denied');

export const options = {
  scenarios: {
    stress: {
      executor: 'ramping-vus',
      startVUs: 0,
      stages: [
        { duration: '30s', target: Math.ceil(MAX_VUS / 4) },
        { duration: '30s', target: MAX_VUS },
        { duration: '1m', target: MAX_VUS },
        { duration: '30s', target: 0 },
      ],
      gracefulRampDown: '10s',
    },
  },
  thresholds: {
    http_req_duration: [`p(95)<${P95_MS}`],
    // 429 is an expected answer (see setResponseCallback below); anything else failing is an error.
    http_req_failed: ['rate<0.01'],
    bucket_denied: [`rate>${MIN_DENIED}`, `rate<${MAX_DENIED}`],
    checks: ['rate>0.99'],
  },
};

http.setResponseCallback(http.expectedStatuses(200, 429));

export default function () {
  const user = `${RUN}-${Math.floor(Math.random() * USERS)}`;
  const res = http.get(`${TARGET}/`, { headers: { 'X-User-ID': user }, tags: { name: 'GET /' } });
  denied.add(res.status === 429);
  check(res, {
    'status is 200 or 429': (r) => r.status === 200 || r.status === 429,
    'has X-RateLimit-Remaining': (r) => r.headers['X-Ratelimit-Remaining'] !== undefined,
    '429 has Retry-After': (r) => r.status !== 429 || r.headers['Retry-After'] !== undefined,
  });
  sleep(PAUSE_S);
}
