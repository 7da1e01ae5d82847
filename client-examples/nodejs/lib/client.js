// A small client of the novita-lifecycle REST API on Node 20's fetch. Every method returns
// the answer's JSON or throws an error from ./errors.js.
//
//   const client = new LifecycleClient('http://127.0.0.1:8080', process.env.SERVICE_API_KEY);
//   const created = await client.create({ name: 'trainer', productName: 'RTX 4090 24GB',
//                                         templateId: '212' }, { idempotencyKey: 'trainer-1' });
//   const ready = await client.waitUntil(created.id, 'ready', { timeoutMs: 900_000 });

import { setTimeout as sleep } from 'node:timers/promises';
import {
  InstanceFailedError,
  RateLimitedError,
  TerminalStatusError,
  TransportError,
  UnavailableError,
  WaitTimeoutError,
  errorFromResponse,
} from './errors.js';

export const STATUSES = [
  'pending', 'provisioning', 'starting', 'running', 'ready', 'stopping', 'stopped',
  'interrupted', 'deleting', 'deleted', 'failed',
];

/**
 * Delay before poll `attempt` (0 = first wait): exponential, capped, with up to `jitter`
 * of it taken off at random so many waiting clients do not poll in step.
 */
export function backoffDelay(attempt, { initialMs = 500, factor = 2, maxMs = 10_000, jitter = 0.25, random = Math.random } = {}) {
  const base = Math.min(maxMs, initialMs * factor ** Math.min(attempt, 64));
  return base * (1 - jitter * random());
}

const seg = (value) => encodeURIComponent(value);

export class LifecycleClient {
  #apiKey;

  constructor(baseUrl, apiKey, { timeoutMs = 30_000, backoff = {}, sleepMs = (ms) => sleep(ms), now = () => performance.now() } = {}) {
    if (!apiKey) throw new TypeError('apiKey is required');
    this.baseUrl = baseUrl.replace(/\/+$/, '');
    this.#apiKey = apiKey;
    this.timeoutMs = timeoutMs;
    this.backoff = backoff;
    this.sleepMs = sleepMs;
    this.now = now;
  }

  async request(method, path, { query, body, headers } = {}) {
    const url = new URL(this.baseUrl + path);
    for (const [key, value] of query ?? []) url.searchParams.append(key, String(value));
    const init = {
      method,
      headers: { Authorization: `Bearer ${this.#apiKey}`, Accept: 'application/json', ...headers },
      signal: AbortSignal.timeout(this.timeoutMs),
    };
    if (body !== undefined) {
      init.body = JSON.stringify(body);
      init.headers['Content-Type'] = 'application/json';
    }
    let response, text;
    try {
      response = await fetch(url, init);
      text = await response.text();
    } catch (error) {
      throw new TransportError(`${method} ${path}: ${error.cause?.code ?? error.name}: ${error.message}`);
    }
    if (response.status >= 400) throw errorFromResponse(response.status, text, response.headers);
    if (!text) return null;
    return (response.headers.get('content-type') ?? '').includes('json') ? JSON.parse(text) : text;
  }

  /** POST /api/instances: answers the instance, `pending` (202). */
  create(fields, { idempotencyKey } = {}) {
    const headers = idempotencyKey ? { 'Idempotency-Key': idempotencyKey } : {};
    return this.request('POST', '/api/instances', { body: fields, headers });
  }

  get(id) {
    return this.request('GET', `/api/instances/${seg(id)}`);
  }

  /** Every instance matching `{status, region, product, name, labels}`, newest first. */
  async *list({ status, region, product, name, labels = {}, pageSize = 50 } = {}) {
    let cursor = null;
    do {
      const query = [['limit', pageSize]];
      if (status) query.push(['status', [].concat(status).join(',')]);
      for (const [key, value] of Object.entries({ region, product, name })) {
        if (value != null) query.push([key, value]);
      }
      for (const [key, value] of Object.entries(labels)) query.push(['label', `${key}:${value}`]);
      if (cursor) query.push(['cursor', cursor]);
      const page = await this.request('GET', '/api/instances', { query });
      yield* page.items;
      cursor = page.nextCursor;
    } while (cursor);
  }

  async *events(id, { afterSequence = 0, pageSize = 100 } = {}) {
    let cursor = String(afterSequence);
    do {
      const query = [['limit', pageSize], ['cursor', cursor]];
      const page = await this.request('GET', `/api/instances/${seg(id)}/events`, { query });
      yield* page.items;
      cursor = page.nextCursor;
    } while (cursor);
  }

  start(id) { return this.request('POST', `/api/instances/${seg(id)}/start`); }
  stop(id) { return this.request('POST', `/api/instances/${seg(id)}/stop`); }
  restart(id) { return this.request('POST', `/api/instances/${seg(id)}/restart`); }
  delete(id) { return this.request('DELETE', `/api/instances/${seg(id)}`); }

  touchLastUsed(id, at) {
    const body = at ? { lastUsedAt: at.toISOString() } : {};
    return this.request('PUT', `/api/instances/${seg(id)}/last-used`, { body });
  }

  async *listNotifications({ instanceId, status, type, pageSize = 50 } = {}) {
    let cursor = null;
    do {
      const query = [['limit', pageSize]];
      for (const [key, value] of Object.entries({ instanceId, status, type })) {
        if (value != null) query.push([key, value]);
      }
      if (cursor) query.push(['cursor', cursor]);
      const page = await this.request('GET', '/api/notifications', { query });
      yield* page.items;
      cursor = page.nextCursor;
    } while (cursor);
  }

  getNotification(id) { return this.request('GET', `/api/notifications/${seg(id)}`); }
  redeliver(id) { return this.request('POST', `/api/notifications/${seg(id)}/redeliver`); }

  async redeliverFailedSince(since, { instanceId } = {}) {
    const body = { since: since.toISOString(), ...(instanceId ? { instanceId } : {}) };
    return (await this.request('POST', '/api/notifications/redeliver', { body })).redelivered;
  }

  report(name, params = {}) {
    const query = Object.entries(params)
      .filter(([, value]) => value != null)
      .map(([key, value]) => [key, value instanceof Date ? value.toISOString() : [].concat(value).join(',')]);
    return this.request('GET', `/api/reports/${seg(name)}`, { query });
  }

  /**
   * Poll until the instance has one of `status` (a string or array); `running` is also met
   * by `ready`. Throws InstanceFailedError as soon as it is `failed`, TerminalStatusError
   * if `deleted`, WaitTimeoutError after `timeoutMs`. 503/429 and transport errors are
   * retried until the deadline, no sooner than their Retry-After.
   */
  async waitUntil(id, status, { timeoutMs = 900_000, onPoll } = {}) {
    const wanted = new Set([].concat(status));
    for (const s of wanted) if (!STATUSES.includes(s)) throw new TypeError(`unknown status ${s}`);
    if (wanted.has('running')) wanted.add('ready');
    const deadline = this.now() + timeoutMs;
    let last = null;
    for (let attempt = 0; ; attempt++) {
      let retryAfterMs = 0;
      try {
        last = await this.get(id);
        onPoll?.(last);
        if (wanted.has(last.status)) return last;
        if (last.status === 'failed') {
          throw new InstanceFailedError(`instance ${id} failed: ${last.statusReason ?? 'no reason given'}`, last);
        }
        if (last.status === 'deleted') {
          throw new TerminalStatusError(`instance ${id} is deleted; it will never be ${[...wanted].join(' or ')}`, last);
        }
      } catch (error) {
        if (error instanceof UnavailableError || error instanceof RateLimitedError) {
          retryAfterMs = (error.retryAfter ?? 0) * 1000;
        } else if (!(error instanceof TransportError)) {
          throw error;
        }
      }
      const remaining = deadline - this.now();
      if (remaining <= 0) {
        throw new WaitTimeoutError(`instance ${id} is still ${last?.status ?? 'unknown'} after ${timeoutMs} ms`, last);
      }
      const delay = Math.max(backoffDelay(attempt, this.backoff), retryAfterMs);
      await this.sleepMs(Math.min(delay, remaining));
    }
  }
}

export * from './errors.js';
