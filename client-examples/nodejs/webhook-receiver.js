// Receive the service's notifications, verify their signatures, print each new event.
//
//   WEBHOOK_SECRET=whsec_... RECEIVER_PORT=8000 node webhook-receiver.js
//
// Create instances with webhookUrl = http://<this host>:<port>/webhooks (a service sending
// to loopback or a private network needs ALLOW_PRIVATE_WEBHOOK_TARGETS=true).
// Environment: WEBHOOK_SECRET (required; comma-separated while rotating), RECEIVER_HOST
// (default 127.0.0.1), RECEIVER_PORT (default 8000; 0 = a free one), RECEIVER_PATH (default
// /webhooks), WEBHOOK_TOLERANCE (seconds, default 300), MAX_EVENTS (stop after that many).
// Prints `listening on <url>`, then one line per new event; stops on Ctrl-C / SIGTERM.

import { createServer } from 'node:http';
import { once } from 'node:events';
import { env, stopSignal } from './lib/env.js';
import { createWebhookHandler, decodeSecret } from './lib/webhooks.js';

const secrets = env('WEBHOOK_SECRET').split(',').map((s) => s.trim()).filter(Boolean);
try {
  secrets.forEach(decodeSecret);
} catch (error) {
  console.error(`WEBHOOK_SECRET: ${error.message}`);
  process.exit(2);
}
const host = env('RECEIVER_HOST', '127.0.0.1');
const path = env('RECEIVER_PATH', '/webhooks');
const maxEvents = Number(process.env.MAX_EVENTS || 0);
let received = 0;
let stopNow;
const stopped = new Promise((resolve) => (stopNow = resolve));

const handler = createWebhookHandler({
  secrets,
  toleranceSec: Number(env('WEBHOOK_TOLERANCE', '300')),
  onReject: (error) => console.error(`rejected: ${error.name}: ${error.message}`),
  onEvent: (event) => {
    received += 1;
    console.log(
      `${event.type} instance=${event.data.id} status=${event.data.status} ` +
        `sequence=${event.data.sequence} id=${event.id} scheme=${event.scheme}`,
    );
    if (maxEvents && received >= maxEvents) stopNow();
  },
});

const server = createServer((req, res) => {
  const url = new URL(req.url, 'http://receiver');
  if (req.method !== 'POST' || url.pathname !== path) {
    res.writeHead(404).end();
    return;
  }
  handler(req, res).catch((error) => {
    console.error(error);
    if (!res.headersSent) res.writeHead(500).end();
  });
});
server.listen(Number(env('RECEIVER_PORT', '8000')), host);
await once(server, 'listening');
console.log(`listening on http://${host}:${server.address().port}${path}`);

await Promise.race([stopSignal(), stopped]);
server.closeAllConnections();
server.close();
console.error(`stopped after ${received} event(s)`);
