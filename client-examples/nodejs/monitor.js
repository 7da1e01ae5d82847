// Watch every instance and print what changes: new instances, status moves, removals.
//
//   SERVICE_URL=http://127.0.0.1:8080 SERVICE_API_KEY=... node monitor.js
//
// Environment: SERVICE_URL, SERVICE_API_KEY (required); MONITOR_INTERVAL (seconds, default
// 5), MONITOR_DURATION (stop after that many seconds; default: until Ctrl-C / SIGTERM),
// LABEL (KEY:VALUE filter). Lines: `+ <id> <name> <status>` first seen,
// `~ <id> <name> <from> -> <to> (<reason>)` status change, `- <id> <name>` no longer listed.

import { LifecycleClient, LifecycleClientError } from './lib/client.js';
import { env, stopSignal } from './lib/env.js';

const baseUrl = env('SERVICE_URL', 'http://127.0.0.1:8080');
const client = new LifecycleClient(baseUrl, env('SERVICE_API_KEY'));
const intervalMs = Number(env('MONITOR_INTERVAL', '5')) * 1000;
const labels = {};
if (process.env.LABEL) {
  const [key, ...rest] = process.env.LABEL.split(':');
  labels[key] = rest.join(':');
}

const stamp = () => new Date().toISOString().slice(11, 19);
let stopping = false;
const stop = stopSignal(Number(process.env.MONITOR_DURATION || 0) * 1000).then(() => (stopping = true));
let known = new Map();
let first = true;

console.error(`watching ${baseUrl} every ${intervalMs / 1000}s`);
while (!stopping) {
  try {
    const seen = new Map();
    for await (const instance of client.list({ labels })) seen.set(instance.id, instance);
    for (const [id, instance] of seen) {
      const before = known.get(id);
      if (!before) {
        if (!(first && instance.status === 'deleted')) console.log(`${stamp()} + ${id} ${instance.name} ${instance.status}`);
      } else if (before.status !== instance.status) {
        const reason = instance.statusReason ? ` (${instance.statusReason})` : '';
        console.log(`${stamp()} ~ ${id} ${instance.name} ${before.status} -> ${instance.status}${reason}`);
      }
    }
    for (const [id, instance] of known) if (!seen.has(id)) console.log(`${stamp()} - ${id} ${instance.name}`);
    known = seen;
    first = false;
  } catch (error) {
    if (!(error instanceof LifecycleClientError)) throw error;
    console.error(`sweep failed: ${error.message}`);
  }
  let timer;
  await Promise.race([stop, new Promise((resolve) => (timer = setTimeout(resolve, intervalMs)))]);
  clearTimeout(timer);
}
console.error(`stopped; ${known.size} instance(s) known`);
process.exit(0);
