// k6 soak test for bucket: moderate, constant load from many users plus one hot user for a long time (30 minutes
// by default), to catch what only time shows: latency creeping up, memory or connection leaks, a write queue that
// never drains, Redis keys or PostgreSQL rows piling up. Watch the Grafana dashboard (or Prometheus) while it runs.
//
//   k6 run loadtest/soak.js
//   k6 run -e TARGET=http://127.0.0.1:8080 -e DURATION=2h -e RPS=200 -e P95_MS=50 loadtest/soak.js
//
// Expected 429 shares, for tuning: RPS requests per second spread over USERS users is RPS / USERS per user
// (0.02/s with the defaults), far below the refill rate (1/s by default), so the crowd is almost never refused.
// The hot user asks HOT_RPS per second against that 1/s refill, so nearly all of its requests are 429s.

import http from 'k6/http';
import { check } from 'k6';
import { Rate } from 'k6/metrics';

const TARGET = __ENV.TARGET || 'http://127.0.0.1:8080';
const DURATION = __ENV.DURATION || '30m';
const USERS = parseInt(__ENV.USERS || '5000', 10);
const RPS = parseInt(__ENV.RPS || '100', 10);
const HOT_RPS = parseInt(__ENV.HOT_RPS || '10', 10);
const P95_MS = parseInt(__ENV.P95_MS || '50', 10);
const P99_MS = parseInt(__ENV.P99_MS || '200', 10);
const MIN_HOT_DENIED = parseFloat(__ENV.MIN_HOT_DENIED || '0.8');
const MAX_CROWD_DENIED = parseFloat(__ENV.MAX_CROWD_DENIED || '0.01');
// A fresh prefix per run, so runs never share buckets.
const RUN = __ENV.RUN_ID || `soak-${Date.now()}`;

const crowdDenied = new Rate('bucket_crowd_denied');
const hotDenied = new Rate('bucket_hot_denied');

export const options = {
  scenarios: {
    crowd: {
      executor: 'constant-arrival-rate',
      exec: 'crowd',
      rate: RPS,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: Math.max(10, Math.ceil(RPS / 10)),
      maxVUs: Math.max(50, RPS),
    },
    hot_user: {
      executor: 'constant-arrival-rate',
      exec: 'hot',
      rate: HOT_RPS,
      timeUnit: '1s',
      duration: DURATION,
      preAllocatedVUs: Math.max(2, Math.ceil(HOT_RPS / 10)),
    },
  },
  thresholds: {
    // Both a percentile and a tail: a soak's failure is usually a slow drift that p95 hides for a while.
    http_req_duration: [`p(95)<${P95_MS}`, `p(99)<${P99_MS}`],
    http_req_failed: ['rate<0.001'],
    // The arrival-rate executor could not keep up: the service (or this machine) is saturated, not soaking.
    dropped_iterations: ['count<100'],
    bucket_hot_denied: [`rate>${MIN_HOT_DENIED}`],
    bucket_crowd_denied: [`rate<${MAX_CROWD_DENIED}`],
    checks: ['rate>0.999'],
  },
};

http.setResponseCallback(http.expectedStatuses(200, 429));

function call(user, kind) {
  const res = http.get(`${TARGET}/`, { headers: { 'X-User-ID': user }, tags: { name: 'GET /', caller: kind } });
  check(res, {
    'status is 200 or 429': (r) => r.status === 200 || r.status === 429,
    'has X-RateLimit-Remaining': (r) => r.headers['X-Ratelimit-Remaining'] !== undefined,
  });
  return res;
}

export function crowd() {
  const res = call(`${RUN}-user-${Math.floor(Math.random() * USERS)}`, 'crowd');
  crowdDenied.add(res.status === 429);
}

export function hot() {
  const res = call(`${RUN}-hot`, 'hot');
  hotDenied.add(res.status === 429);
}
