// Verifying the service's notifications with node:crypto, over the raw body bytes.
//
// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64
// HMAC-SHA256(key, "{id}.{timestamp}.{body}")>` (several space-separated entries allowed);
// key = base64-decoded part of `whsec_...`. Legacy, used only when the standard headers are
// absent: `X-Webhook-Signature: sha256=<hex HMAC-SHA256(secret as written, body)>` +
// `X-Webhook-Timestamp` (the decoded key is accepted too).
// Always verify the bytes as received: re-serialised JSON does not match the signature.

import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import {
  InvalidSignatureError,
  MalformedWebhookError,
  StaleTimestampError,
  WebhookVerificationError,
} from './errors.js';

export const DEFAULT_TOLERANCE_SEC = 300;

export function decodeSecret(secret) {
  const text = secret.trim().replace(/^whsec_/, '');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(text)) throw new TypeError('a webhook secret is whsec_ followed by base64');
  return Buffer.from(text, 'base64');
}

// node:http gives lower-case keys (values may be arrays); fetch gives a Headers object.
function header(headers, name) {
  const value = typeof headers.get === 'function' ? headers.get(name) : headers[name];
  return Array.isArray(value) ? value[0] : value ?? null;
}

function safeEqual(given, expected) {
  const a = Buffer.from(given);
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

function timestampOf(value, name) {
  if (value == null || !/^\d+$/.test(value.trim())) throw new MalformedWebhookError(`${name} must be unix seconds`);
  return Number(value.trim());
}

function checkFresh(timestamp, nowSec, toleranceSec) {
  const skew = nowSec - timestamp;
  if (Math.abs(skew) > toleranceSec) {
    throw new StaleTimestampError(`the webhook timestamp is ${Math.round(Math.abs(skew))}s ${skew > 0 ? 'old' : 'in the future'}`);
  }
}

/**
 * Verify one delivery; returns `{id, type, data, payload, sentAt, scheme}` or throws a
 * WebhookVerificationError. `secrets`: one `whsec_` secret or an array (rotation).
 */
export function verifyWebhook(headers, rawBody, secrets, { toleranceSec = DEFAULT_TOLERANCE_SEC, nowSec = Date.now() / 1000, acceptLegacy = true } = {}) {
  const body = Buffer.isBuffer(rawBody) ? rawBody : Buffer.from(rawBody);
  const keys = [].concat(secrets).map(decodeSecret);
  if (keys.length === 0) throw new TypeError('at least one webhook secret is required');
  let id, timestamp, scheme;
  const signatures = header(headers, 'webhook-signature');
  const messageId = header(headers, 'webhook-id');
  if (signatures != null || messageId != null) {
    if (!signatures || !messageId) throw new MalformedWebhookError('webhook-id and webhook-signature are both required');
    timestamp = timestampOf(header(headers, 'webhook-timestamp'), 'webhook-timestamp');
    const signed = Buffer.concat([Buffer.from(`${messageId}.${timestamp}.`), body]);
    const expected = keys.map((key) => createHmac('sha256', key).update(signed).digest('base64'));
    const ok = signatures.split(' ').some((entry) => {
      const comma = entry.indexOf(',');
      if (comma < 0 || entry.slice(0, comma) !== 'v1') return false;
      // Compare against every key (no early exit), so timing does not tell which one matched.
      return expected.map((e) => safeEqual(entry.slice(comma + 1), e)).includes(true);
    });
    if (!ok) throw new InvalidSignatureError('no signature matches');
    [id, scheme] = [messageId, 'standard'];
  } else if (acceptLegacy && header(headers, 'x-webhook-signature') != null) {
    const [kind, given] = header(headers, 'x-webhook-signature').split('=', 2);
    if (kind !== 'sha256' || !given) throw new MalformedWebhookError('X-Webhook-Signature is not sha256=<hex>');
    timestamp = timestampOf(header(headers, 'x-webhook-timestamp'), 'X-Webhook-Timestamp');
    // Keyed with each secret as written (the earlier service), or its decoded key (this
    // service's first releases).
    const legacyKeys = [].concat(secrets).map((s) => Buffer.from(String(s).trim())).concat(keys);
    const expected = legacyKeys.map((key) => createHmac('sha256', key).update(body).digest('hex'));
    if (!expected.map((e) => safeEqual(given.toLowerCase(), e)).includes(true)) throw new InvalidSignatureError('no signature matches');
    [id, scheme] = [`sha256:${createHash('sha256').update(body).digest('hex')}`, 'legacy'];
  } else {
    throw new MalformedWebhookError('no webhook-signature header');
  }
  checkFresh(timestamp, nowSec, toleranceSec);
  let payload;
  try {
    payload = JSON.parse(body.toString('utf8'));
  } catch {
    throw new MalformedWebhookError('the body is not JSON');
  }
  if (typeof payload?.type !== 'string' || typeof payload?.data !== 'object' || payload.data === null) {
    throw new MalformedWebhookError('the body has no `type` string and `data` object');
  }
  return { id, type: payload.type, data: payload.data, payload, sentAt: new Date(timestamp * 1000), scheme };
}

/** Ids seen lately: at most `maxSize` (oldest forgotten first), each for `ttlMs`. */
export class RecentIds {
  #expiry = new Map();

  constructor({ maxSize = 10_000, ttlMs = 86_400_000, now = () => Date.now() } = {}) {
    Object.assign(this, { maxSize, ttlMs, now });
  }

  /** Remember `id`; false if it was already remembered (a duplicate). */
  add(id) {
    const now = this.now();
    for (const [old, expiresAt] of this.#expiry) {
      if (expiresAt > now) break; // insertion order is expiry order
      this.#expiry.delete(old);
    }
    if (this.#expiry.has(id)) return false;
    this.#expiry.set(id, now + this.ttlMs);
    while (this.#expiry.size > this.maxSize) this.#expiry.delete(this.#expiry.keys().next().value);
    return true;
  }

  delete(id) {
    this.#expiry.delete(id);
  }
}

/**
 * A node:http request handler: verifies, drops duplicates, awaits `onEvent(event)`.
 * 200 for new and duplicate events, 400 malformed, 401 bad signature or stale, 413 too
 * large, 500 if onEvent throws (the id is forgotten, so the service's retry is processed).
 */
export function createWebhookHandler({ secrets, onEvent, toleranceSec, recent = new RecentIds(), maxBodyBytes = 1 << 20, onReject = () => {} }) {
  return async (req, res) => {
    const reply = (status, text) => res.writeHead(status, { 'Content-Type': 'text/plain' }).end(text);
    const chunks = [];
    let size = 0;
    for await (const chunk of req) {
      size += chunk.length;
      if (size > maxBodyBytes) return reply(413, 'too large');
      chunks.push(chunk);
    }
    let event;
    try {
      event = verifyWebhook(req.headers, Buffer.concat(chunks), secrets, { toleranceSec });
    } catch (error) {
      if (!(error instanceof WebhookVerificationError)) throw error;
      onReject(error);
      return reply(error instanceof MalformedWebhookError ? 400 : 401, error.message);
    }
    if (!recent.add(event.id)) return reply(200, 'duplicate');
    try {
      await onEvent(event);
    } catch (error) {
      recent.delete(event.id);
      console.error('webhook callback failed:', error);
      return reply(500, 'callback failed');
    }
    return reply(200, 'ok');
  };
}
