// Live updates in a real headless Chromium: a page on an allowed origin subscribes with the
// `graphql-ws` client library (graphql-transport-ws) and receives a message that another client
// records over HTTP; a page on another origin cannot open the socket at all.
// Usage: node browser/subscription.mjs GRAPHQL_URL TOKEN ALLOWED_PORT OTHER_PORT
//   GRAPHQL_URL: /graphql of a server with a JWT secret and --cors-origin http://127.0.0.1:ALLOWED_PORT
// CHROMIUM overrides the browser (default /usr/bin/chromium).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { chromium } from 'playwright-core';

const [url, token, allowedPort, otherPort] = process.argv.slice(2);
assert.ok(otherPort, 'usage: node browser/subscription.mjs GRAPHQL_URL TOKEN ALLOWED_PORT OTHER_PORT');
const wsUrl = `${url.replace(/^http/, 'ws')}/ws`;

// The package's `exports` hide its UMD build from require.resolve; read it from node_modules.
const client = readFileSync(new URL('../node_modules/graphql-ws/umd/graphql-ws.min.js', import.meta.url));
const origins = [];
for (const port of [allowedPort, otherPort]) {
  const server = http.createServer((req, res) => {
    if (req.url === '/graphql-ws.js') {
      res.writeHead(200, { 'content-type': 'text/javascript' });
      res.end(client);
    } else {
      res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
      res.end('<!doctype html><meta charset="utf-8"><script src="/graphql-ws.js"></script><body></body>');
    }
  });
  await new Promise((resolve) => server.listen(Number(port), '127.0.0.1', resolve));
  origins.push(server);
}

const record = (body) =>
  fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
    body: JSON.stringify({
      query: `mutation($body: String!) { recordMessage(input: { channel: SMS, direction: INBOUND,
        from: "+12025550142", to: ["+12025550199"], body: $body }) { message { id sequence } } }`,
      variables: { body },
    }),
  }).then((r) => r.json());

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox'],
});
let failures = 0;
async function check(name, body) {
  try {
    await body();
    console.log(`ok   ${name}`);
  } catch (err) {
    failures += 1;
    console.log(`FAIL ${name}\n     ${err.message.split('\n').join('\n     ')}`);
  }
}

// In the page: subscribe, resolve with the first event (or the error / close reason).
const subscribe = (page) =>
  page.evaluate(
    ({ wsUrl, token }) => {
      window.received = new Promise((resolve) => {
        const client = graphqlWs.createClient({
          url: wsUrl,
          connectionParams: { Authorization: `Bearer ${token}` },
          retryAttempts: 0,
          on: { connected: () => (window.connected = true) },
        });
        client.subscribe(
          { query: 'subscription { messageRecorded(filter: { participant: "+12025550199" }) { id body sequence } }' },
          {
            next: (value) => resolve({ value }),
            error: (err) => resolve({ error: String(err?.reason ?? err?.message ?? JSON.stringify(err)) }),
            complete: () => resolve({ complete: true }),
          },
        );
      });
      return new Promise((resolve) => {
        const start = Date.now();
        const poll = () => (window.connected || Date.now() - start > 3000 ? resolve(!!window.connected) : setTimeout(poll, 20));
        poll();
      });
    },
    { wsUrl, token },
  );

try {
  const context = await browser.newContext();
  const allowed = await context.newPage();
  await allowed.goto(`http://127.0.0.1:${allowedPort}/`);
  const other = await context.newPage();
  await other.goto(`http://127.0.0.1:${otherPort}/`);

  await check('a page on the allowed origin receives a message recorded by another client', async () => {
    assert.equal(await subscribe(allowed), true, 'the graphql-ws client did not connect');
    const recorded = await record('live in the browser');
    assert.ok(recorded.data, JSON.stringify(recorded));
    const got = await allowed.evaluate(() =>
      Promise.race([window.received, new Promise((r) => setTimeout(() => r({ timeout: true }), 5000))]),
    );
    assert.ok(got.value, JSON.stringify(got));
    assert.equal(got.value.data.messageRecorded.body, 'live in the browser');
    assert.equal(got.value.data.messageRecorded.id, recorded.data.recordMessage.message.id);
    assert.equal(got.value.data.messageRecorded.sequence, recorded.data.recordMessage.message.sequence);
  });

  await check('a page on another origin cannot open the socket', async () => {
    assert.equal(await subscribe(other), false, 'a cross-origin page connected');
  });
} finally {
  await browser.close();
  for (const server of origins) server.close();
}
console.log(`browser subscription checks: ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
