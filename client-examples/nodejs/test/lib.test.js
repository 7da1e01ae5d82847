// Unit tests of the Node.js kit (node --test): signatures, staleness, legacy header,
// rotation, duplicates, error mapping and the polling backoff.

import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';
import { backoffDelay } from '../lib/client.js';
import {
  ConflictError,
  InvalidSignatureError,
  MalformedWebhookError,
  ServerError,
  StaleTimestampError,
  UnavailableError,
  ValidationError,
  errorFromResponse,
} from '../lib/errors.js';
import { RecentIds, decodeSecret, verifyWebhook } from '../lib/webhooks.js';

const SECRET = 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw';
const OTHER = 'whsec_b3RoZXItc2VjcmV0LWZvci1yb3RhdGlvbi10ZXN0cw==';
const NOW = 1_800_000_000;
const body = Buffer.from('{"type":"instance.ready","timestamp":"t","data":{"id":"inst_1","status":"ready","sequence":4}}');

function signed(raw, { secret = SECRET, id = 'evt_1', at = NOW } = {}) {
  const mac = createHmac('sha256', decodeSecret(secret)).update(`${id}.${at}.`).update(raw).digest('base64');
  return { 'webhook-id': id, 'webhook-timestamp': String(at), 'webhook-signature': `v1,${mac}` };
}

test('a valid signature verifies and the event is parsed', () => {
  const event = verifyWebhook(signed(body), body, SECRET, { nowSec: NOW });
  assert.deepEqual([event.id, event.type, event.scheme, event.data.sequence], ['evt_1', 'instance.ready', 'standard', 4]);
});

test('any v1 entry of several, and any secret while rotating', () => {
  const headers = signed(body, { secret: OTHER });
  headers['webhook-signature'] = `v1,AAAA ${headers['webhook-signature']}`;
  assert.equal(verifyWebhook(headers, body, [SECRET, OTHER], { nowSec: NOW }).id, 'evt_1');
  assert.throws(() => verifyWebhook(headers, body, SECRET, { nowSec: NOW }), InvalidSignatureError);
});

test('tampering with the body, id or timestamp is detected', () => {
  const headers = signed(body);
  const changed = Buffer.from(body.toString().replace('ready', 'faild'));
  assert.throws(() => verifyWebhook(headers, changed, SECRET, { nowSec: NOW }), InvalidSignatureError);
  assert.throws(() => verifyWebhook({ ...headers, 'webhook-id': 'evt_2' }, body, SECRET, { nowSec: NOW }), InvalidSignatureError);
  assert.throws(() => verifyWebhook({ ...headers, 'webhook-timestamp': String(NOW + 1) }, body, SECRET, { nowSec: NOW }), InvalidSignatureError);
});

test('stale and future timestamps are refused; the tolerance is configurable', () => {
  assert.throws(() => verifyWebhook(signed(body, { at: NOW - 301 }), body, SECRET, { nowSec: NOW }), StaleTimestampError);
  assert.throws(() => verifyWebhook(signed(body, { at: NOW + 301 }), body, SECRET, { nowSec: NOW }), StaleTimestampError);
  assert.throws(() => verifyWebhook(signed(body, { at: NOW - 90 }), body, SECRET, { nowSec: NOW, toleranceSec: 60 }), StaleTimestampError);
});

test('malformed deliveries are refused', () => {
  assert.throws(() => verifyWebhook({}, body, SECRET, { nowSec: NOW }), MalformedWebhookError);
  const raw = Buffer.from('not json');
  assert.throws(() => verifyWebhook(signed(raw), raw, SECRET, { nowSec: NOW }), MalformedWebhookError);
});

test('the legacy header verifies alone', () => {
  // The earlier service keyed it with the secret string as written.
  const hex = createHmac('sha256', Buffer.from(SECRET)).update(body).digest('hex');
  const headers = { 'x-webhook-signature': `sha256=${hex}`, 'x-webhook-timestamp': String(NOW) };
  assert.equal(verifyWebhook(headers, body, SECRET, { nowSec: NOW }).scheme, 'legacy');
  assert.throws(() => verifyWebhook(headers, body, OTHER, { nowSec: NOW }), InvalidSignatureError);
  const decoded = createHmac('sha256', decodeSecret(SECRET)).update(body).digest('hex');
  const old = { 'x-webhook-signature': `sha256=${decoded}`, 'x-webhook-timestamp': String(NOW) };
  assert.equal(verifyWebhook(old, body, SECRET, { nowSec: NOW }).scheme, 'legacy');
});

test('recent ids drop duplicates, forget the oldest and expire', () => {
  let now = 0;
  const recent = new RecentIds({ maxSize: 2, ttlMs: 1000, now: () => now });
  assert.equal(recent.add('a'), true);
  assert.equal(recent.add('a'), false);
  recent.add('b');
  recent.add('c');
  assert.equal(recent.add('a'), true); // forgotten to make room
  now = 1000;
  assert.equal(recent.add('c'), true); // expired
});

test('error answers map to typed errors carrying the service fields', () => {
  const headers = new Headers({ 'retry-after': '7' });
  const text = JSON.stringify({ error: { code: 'ILLEGAL_TRANSITION', message: 'no', details: { a: 1 }, requestId: 'r' } });
  const conflict = errorFromResponse(409, text, headers);
  assert.ok(conflict instanceof ConflictError);
  assert.deepEqual([conflict.status, conflict.code, conflict.requestId, conflict.details], [409, 'ILLEGAL_TRANSITION', 'r', { a: 1 }]);
  const fields = JSON.stringify({ error: { code: 'VALIDATION_ERROR', details: { fields: [{ field: 'name' }] } } });
  assert.deepEqual(errorFromResponse(422, fields, headers).fields, [{ field: 'name' }]);
  assert.ok(errorFromResponse(422, fields, headers) instanceof ValidationError);
  const unavailable = errorFromResponse(503, '<html>', headers);
  assert.ok(unavailable instanceof UnavailableError && unavailable instanceof ServerError);
  assert.deepEqual([unavailable.code, unavailable.retryAfter], ['HTTP_503', 7]);
});

test('backoff grows, is capped and jittered downwards only', () => {
  const fixed = (attempt) => backoffDelay(attempt, { initialMs: 500, maxMs: 4000, jitter: 0 });
  assert.deepEqual([0, 1, 2, 3, 4, 50].map(fixed), [500, 1000, 2000, 4000, 4000, 4000]);
  for (let attempt = 0; attempt < 50; attempt++) {
    const delay = backoffDelay(attempt, { initialMs: 500, maxMs: 4000, jitter: 0.25 });
    const base = Math.min(4000, 500 * 2 ** attempt);
    assert.ok(delay >= 0.75 * base && delay <= base);
  }
});
