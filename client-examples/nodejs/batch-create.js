// Create N instances with at most C creates in flight, wait for each, summarise.
//
//   SERVICE_URL=http://127.0.0.1:8080 SERVICE_API_KEY=... BATCH_SIZE=5 node batch-create.js
//
// Environment: SERVICE_URL, SERVICE_API_KEY (required); BATCH_SIZE (default 5), CONCURRENCY
// (default 3), BATCH_ID (default random; rerunning with the same id is safe: each create
// carries the idempotency key `<BATCH_ID>-<n>`), PRODUCT_NAME, TEMPLATE_ID, REGION,
// WEBHOOK_URL, WAIT_FOR (default ready; `none` = only create), WAIT_TIMEOUT (seconds per
// instance, default 900), POLL_MAX_DELAY (default 5), DELETE_AFTER=true.
// Per-instance lines on stderr; the summary as one JSON line on stdout:
// {"batch", "requested", "outcomes": {"ready": 5}, "instances": [...]}. Exit 0 if all succeeded;
// Ctrl-C or SIGTERM prints the summary so far (unfinished ones `interrupted`) and exits 4.

import { randomBytes } from 'node:crypto';
import {
  InstanceFailedError,
  LifecycleClient,
  ServiceAPIError,
  TerminalStatusError,
  TransportError,
  WaitTimeoutError,
} from './lib/client.js';
import { env, optional, truthy } from './lib/env.js';

const client = new LifecycleClient(env('SERVICE_URL', 'http://127.0.0.1:8080'), env('SERVICE_API_KEY'), {
  backoff: { maxMs: Number(env('POLL_MAX_DELAY', '5')) * 1000 },
});
const size = Number(env('BATCH_SIZE', '5'));
const concurrency = Number(env('CONCURRENCY', '3'));
const batchId = env('BATCH_ID', `batch-${randomBytes(4).toString('hex')}`);
const waitFor = env('WAIT_FOR', 'ready');
const timeoutMs = Number(env('WAIT_TIMEOUT', '900')) * 1000;
if (!(size >= 1 && concurrency >= 1)) {
  console.error('BATCH_SIZE and CONCURRENCY must be at least 1');
  process.exit(2);
}
const fields = JSON.parse(
  JSON.stringify({
    productName: env('PRODUCT_NAME', 'RTX 4090 24GB'),
    templateId: env('TEMPLATE_ID', '212'),
    region: optional('REGION'),
    webhookUrl: optional('WEBHOOK_URL'),
    labels: { batch: batchId },
  }),
);

// A tiny semaphore: at most `concurrency` creates in flight.
let free = concurrency;
const queue = [];
const acquire = () => (free > 0 ? (free--, Promise.resolve()) : new Promise((resolve) => queue.push(resolve)));
const release = () => (queue.length ? queue.shift()() : free++);

// Every instance's result, filled in as it finishes: what a stop reports.
const results = Array.from({ length: size }, (_, i) => ({ n: i + 1, id: null, outcome: 'interrupted' }));

function summary() {
  const outcomes = {};
  for (const { outcome } of results) outcomes[outcome] = (outcomes[outcome] ?? 0) + 1;
  console.log(JSON.stringify({ batch: batchId, requested: size, outcomes, instances: results }));
  return outcomes;
}

for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    console.error('stopping: summarising what finished');
    summary();
    process.exit(4);
  });
}

async function createOne(n) {
  const result = results[n - 1];
  try {
    await acquire();
    let created;
    try {
      created = await client.create({ ...fields, name: `${batchId}-${n}` }, { idempotencyKey: `${batchId}-${n}` });
    } finally {
      release();
    }
    result.id = created.id;
    if (waitFor === 'none') {
      result.outcome = 'created';
    } else {
      const done = await client.waitUntil(created.id, waitFor, { timeoutMs });
      Object.assign(result, { outcome: waitFor, status: done.status, region: done.region });
    }
  } catch (error) {
    if (error instanceof InstanceFailedError) Object.assign(result, { outcome: 'failed', reason: error.instance?.statusReason });
    else if (error instanceof TerminalStatusError) result.outcome = 'deleted';
    else if (error instanceof WaitTimeoutError) result.outcome = 'timeout';
    else if (error instanceof ServiceAPIError) Object.assign(result, { outcome: `error:${error.code}`, reason: error.message });
    else if (error instanceof TransportError) Object.assign(result, { outcome: 'error:TRANSPORT', reason: error.message });
    else throw error;
  }
  console.error(`#${n} ${result.id}: ${result.outcome}`);
  return result;
}

console.error(`creating ${size} instance(s) as ${batchId}`);
await Promise.all(results.map(({ n }) => createOne(n)));
if (truthy('DELETE_AFTER')) {
  for (const { id } of results.filter((r) => r.id)) {
    await client.delete(id).catch((error) => console.error(`delete ${id}: ${error.message}`));
  }
}
const outcomes = summary();
const wanted = waitFor === 'none' ? 'created' : waitFor;
process.exitCode = Object.keys(outcomes).every((o) => o === wanted) ? 0 : 1;
