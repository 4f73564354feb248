// k6 spike test for bucket: steady background traffic from many users, then a sudden jump in virtual users,
// while one hot user hammers the service the whole time. It checks that latency stays bounded through the spike,
// that the hot user is limited (almost all of its requests are 429s) and that the crowd is not (few of theirs are).
//
//   k6 run loadtest/spike.js
//   k6 run -e TARGET=http://127.0.0.1:8080 -e BASE_VUS=20 -e SPIKE_VUS=300 -e P95_MS=100 loadtest/spike.js
//
// Expected 429 shares, for tuning: the hot user sends about HOT_RPS requests per second against a refill of
// 1 token per second (the default policy), so after its first burst of 10 nearly every request is refused
// (> 0.9). The crowd's users each send about 1 / (USERS * PAUSE_S / VUs) per second: with the defaults (up to
// 300 VUs, 1 s pause, 5000 users) that is well under the refill rate, so their 429 share stays under MAX_CROWD_DENIED.

import http from 'k6/http';
import { check, sleep } from 'k6';
import { Rate } from 'k6/metrics';

const TARGET = __ENV.TARGET || 'http://127.0.0.1:8080';
const USERS = parseInt(__ENV.USERS || '5000', 10);
const BASE_VUS = parseInt(__ENV.BASE_VUS || '20', 10);
const SPIKE_VUS = parseInt(__ENV.SPIKE_VUS || '300', 10);
const PAUSE_S = parseFloat(__ENV.PAUSE_S || '1');
const HOT_RPS = parseInt(__ENV.HOT_RPS || '50', 10);
const P95_MS = parseInt(__ENV.P95_MS || '100', 10);
const MIN_HOT_DENIED = parseFloat(__ENV.MIN_HOT_DENIED || '0.9');
const MAX_CROWD_DENIED = parseFloat(__ENV.MAX_CROWD_DENIED || '0.05');
// A fresh prefix per run, so runs never share buckets.
const RUN = __ENV.RUN_ID || `spike-${Date.now()}`;

// Share of 429 answers, per kind of caller: the limiter's verdicts, not errors.
const crowdDenied = new Rate('bucket_crowd_denied');
const hotDenied = new Rate('bucket_hot_denied');

export const options = {
  scenarios: {
    crowd: {
      executor: 'ramping-vus',
      exec: 'crowd',
      startVUs: BASE_VUS,
      stages: [
        { duration: '30s', target: BASE_VUS },
        { duration: '10s', target: SPIKE_VUS }, // the spike
        { duration: '1m', target: SPIKE_VUS },
        { duration: '10s', target: BASE_VUS },
        { duration: '30s', target: BASE_VUS },
      ],
      gracefulRampDown: '5s',
    },
    hot_user: {
      executor: 'constant-arrival-rate',
      exec: 'hot',
      rate: HOT_RPS,
      timeUnit: '1s',
      duration: '2m20s',
      preAllocatedVUs: Math.max(5, Math.ceil(HOT_RPS / 10)),
    },
  },
  thresholds: {
    http_req_duration: [`p(95)<${P95_MS}`],
    // 429 is an expected answer (see setResponseCallback below); anything else failing is an error.
    http_req_failed: ['rate<0.01'],
    bucket_hot_denied: [`rate>${MIN_HOT_DENIED}`],
    bucket_crowd_denied: [`rate<${MAX_CROWD_DENIED}`],
    checks: ['rate>0.99'],
  },
};

http.setResponseCallback(http.expectedStatuses(200, 429));

function call(user, kind) {
  const res = http.get(`${TARGET}/`, { headers: { 'X-User-ID': user }, tags: { name: 'GET /', caller: kind } });
  check(res, {
    'status is 200 or 429': (r) => r.status === 200 || r.status === 429,
    '429 has Retry-After': (r) => r.status !== 429 || r.headers['Retry-After'] !== undefined,
  });
  return res;
}

export function crowd() {
  const res = call(`${RUN}-user-${Math.floor(Math.random() * USERS)}`, 'crowd');
  crowdDenied.add(res.status === 429);
  sleep(PAUSE_S);
}

export function hot() {
  const res = call(`${RUN}-hot`, 'hot');
  hotDenied.add(res.status === 429);
}
