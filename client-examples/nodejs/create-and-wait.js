// Create one GPU instance and wait until it is ready (its ports answer).
//
//   SERVICE_URL=http://127.0.0.1:8080 SERVICE_API_KEY=... node create-and-wait.js
//
// Environment: SERVICE_URL, SERVICE_API_KEY (required); INSTANCE_NAME, PRODUCT_NAME
// (default "RTX 4090 24GB"), TEMPLATE_ID (default 212), REGION, WEBHOOK_URL, WAIT_FOR
// (default ready; `running` skips the readiness probe), WAIT_TIMEOUT (seconds, default 900),
// POLL_MAX_DELAY (longest gap between polls, seconds, default 5), DELETE_AFTER=true.
// Progress on stderr, the final instance as one JSON line on stdout. Exit code 0 when the
// status was reached, 1 failed or timed out, 2 configuration error, 3 refused/unreachable,
// 4 stopped by Ctrl-C or SIGTERM (the instance as last seen is printed; it keeps going).

import { randomBytes } from 'node:crypto';
import { LifecycleClient, ServiceAPIError, TransportError, WaitError } from './lib/client.js';
import { env, optional, truthy } from './lib/env.js';

const client = new LifecycleClient(env('SERVICE_URL', 'http://127.0.0.1:8080'), env('SERVICE_API_KEY'), {
  backoff: { maxMs: Number(env('POLL_MAX_DELAY', '5')) * 1000 },
});
const name = env('INSTANCE_NAME', `example-${randomBytes(4).toString('hex')}`);
const waitFor = env('WAIT_FOR', 'ready');
const fields = {
  name,
  productName: env('PRODUCT_NAME', 'RTX 4090 24GB'),
  templateId: env('TEMPLATE_ID', '212'),
  region: optional('REGION'),
  webhookUrl: optional('WEBHOOK_URL'),
};

let seen = null;
let last = null; // the instance as last seen: what a stop reports
const onPoll = (instance) => {
  last = instance;
  if (instance.status !== seen) console.error(`  ${new Date().toISOString()} ${instance.id} is ${(seen = instance.status)}`);
};
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    if (last) {
      console.error(`interrupted: ${last.id} is ${last.status} (it keeps going)`);
      console.log(JSON.stringify(last));
    } else {
      console.error('interrupted before the instance was created');
    }
    process.exit(4);
  });
}

try {
  // The name doubles as the idempotency key: rerunning after a lost answer is safe.
  const created = await client.create(JSON.parse(JSON.stringify(fields)), { idempotencyKey: `create-${name}` });
  last = created;
  console.error(`created ${created.id} (${name}); waiting until ${waitFor}`);
  const instance = await client.waitUntil(created.id, waitFor, {
    timeoutMs: Number(env('WAIT_TIMEOUT', '900')) * 1000,
    onPoll,
  });
  console.error(`${instance.id} is ${instance.status}: ${JSON.stringify(instance.portMappings)}`);
  console.log(JSON.stringify(instance));
  if (truthy('DELETE_AFTER')) {
    const deleted = await client.delete(instance.id);
    console.error(`delete requested: ${deleted.id} is ${deleted.status}`);
  }
} catch (error) {
  if (error instanceof WaitError) {
    console.error(`gave up: ${error.message}`);
    if (error.instance) console.log(JSON.stringify(error.instance));
    process.exitCode = 1;
  } else if (error instanceof ServiceAPIError) {
    console.error(`the service refused: ${error.status} ${error.code}: ${error.message} (request ${error.requestId})`);
    process.exitCode = 3;
  } else if (error instanceof TransportError) {
    console.error(`cannot reach the service: ${error.message}`);
    process.exitCode = 3;
  } else {
    throw error;
  }
}
