// Browser safety in a real headless Chromium (Debian's `chromium`, driven by playwright-core):
//   1. a page on an allowed origin reads with a bearer token (CORS preflight answered);
//   2. a page on another origin is blocked by CORS, and so is its read without a token;
//   3. cross-site writes that need no preflight store nothing: a `no-cors` text/plain POST, an
//      HTML form POST (text/plain and urlencoded) and a GET mutation through an <img>, all
//      against a development-mode server, where every request that executes acts as admin.
// Usage: node browser/browser.mjs AUTH_URL TOKEN DEV_URL ALLOWED_PORT OTHER_PORT
//   AUTH_URL: /graphql of a server with a JWT secret and --cors-origin http://127.0.0.1:ALLOWED_PORT
//   DEV_URL:  /graphql of a development-mode server (no keys, loopback)
// CHROMIUM overrides the browser (default /usr/bin/chromium).
import assert from 'node:assert/strict';
import http from 'node:http';
import { chromium } from 'playwright-core';

const [authUrl, token, devUrl, allowedPort, otherPort] = process.argv.slice(2);
assert.ok(otherPort, 'usage: node browser/browser.mjs AUTH_URL TOKEN DEV_URL ALLOWED_PORT OTHER_PORT');

// Two origins differ by port: http://127.0.0.1:ALLOWED and http://127.0.0.1:OTHER.
const page = (title) => `<!doctype html><meta charset="utf-8"><title>${title}</title><body></body>`;
const origins = [];
for (const [port, title] of [[allowedPort, 'allowed'], [otherPort, 'other']]) {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end(page(title));
  });
  await new Promise((resolve) => server.listen(Number(port), '127.0.0.1', resolve));
  origins.push(server);
}

// Server-side truth, read outside the browser.
async function gql(url, query, headers = {}) {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: JSON.stringify({ query }),
  });
  return { status: res.status, body: await res.json() };
}
const countQuery = '{ conversations(first: 1) { totalCount } }';
const devCount = async () => (await gql(devUrl, countQuery)).body.data.conversations.totalCount;

const seed = await gql(
  authUrl,
  `mutation { recordMessage(input: { channel: SMS, direction: INBOUND, from: "+12025550100",
     to: ["+12025550199"], body: "seen from the allowed origin" }) { message { id } } }`,
  { authorization: `Bearer ${token}` },
);
assert.equal(seed.status, 200, JSON.stringify(seed.body));
assert.equal(await devCount(), 0);

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

try {
  const context = await browser.newContext();
  const allowed = await context.newPage();
  await allowed.goto(`http://127.0.0.1:${allowedPort}/`);
  const other = await context.newPage();
  await other.goto(`http://127.0.0.1:${otherPort}/`);

  // What a frontend does: fetch with a JSON body and the token (a preflighted request).
  const read = (p, withToken) =>
    p.evaluate(
      async ({ url, auth }) => {
        try {
          const headers = { 'content-type': 'application/json' };
          if (auth) headers.authorization = `Bearer ${auth}`;
          const res = await fetch(url, {
            method: 'POST',
            headers,
            body: JSON.stringify({ query: '{ conversations(first: 5) { totalCount nodes { snippet } } }' }),
          });
          return { status: res.status, body: await res.json() };
        } catch (err) {
          return { blocked: String(err) };
        }
      },
      { url: authUrl, auth: withToken ? token : null },
    );

  await check('a page on the allowed origin reads with its token', async () => {
    const got = await read(allowed, true);
    assert.equal(got.status, 200, JSON.stringify(got));
    assert.equal(got.body.data.conversations.totalCount, 1);
    assert.equal(got.body.data.conversations.nodes[0].snippet, 'seen from the allowed origin');
  });

  await check('the allowed origin sees a typed 401 without a token', async () => {
    const got = await read(allowed, false);
    assert.equal(got.status, 401, JSON.stringify(got));
    assert.equal(got.body.errors[0].extensions.code, 'UNAUTHENTICATED');
  });

  await check('a page on another origin is blocked by CORS, token or not', async () => {
    for (const withToken of [true, false]) {
      const got = await read(other, withToken);
      assert.match(got.blocked ?? '', /TypeError: Failed to fetch/, JSON.stringify(got));
    }
  });

  const write = (n) =>
    `mutation { recordMessage(input: { channel: SMS, direction: INBOUND, from: "+1202555010${n}",
       to: ["+12025550199"], body: "cross-site write ${n}" }) { message { id } } }`;

  await check('a no-cors text/plain POST from another origin stores nothing', async () => {
    const got = await other.evaluate(
      async ({ url, body }) => {
        const res = await fetch(url, {
          method: 'POST',
          mode: 'no-cors',
          headers: { 'content-type': 'text/plain' },
          body,
        });
        return res.type;
      },
      { url: devUrl, body: JSON.stringify({ query: write(1) }) },
    );
    assert.equal(got, 'opaque');
    assert.equal(await devCount(), 0);
  });

  // A form needs no script and no CORS: the classic CSRF. The browser navigates to the answer,
  // so its status is visible here (it must not be a 200 that executed the mutation).
  const submit = async (enctype, name, value) => {
    const done = other.waitForNavigation();
    await other.evaluate(
      ({ url, enctype, name, value }) => {
        const form = document.createElement('form');
        form.method = 'POST';
        form.action = url;
        form.enctype = enctype;
        const input = document.createElement('input');
        input.name = name;
        input.value = value;
        form.appendChild(input);
        document.body.appendChild(form);
        form.submit();
      },
      { url: devUrl, enctype, name, value },
    );
    const res = await done;
    const status = res.status();
    await other.goto(`http://127.0.0.1:${otherPort}/`);
    return status;
  };

  await check('an HTML form POST (text/plain, a JSON-looking body) stores nothing', async () => {
    // Sends `{"query": "...", "x": "=1"}` once the browser joins name, '=' and value.
    const status = await submit('text/plain', `{"query": ${JSON.stringify(write(2))}, "x": "`, '1"}');
    assert.equal(status, 415);
    assert.equal(await devCount(), 0);
  });

  await check('an HTML form POST (urlencoded) stores nothing', async () => {
    const status = await submit('application/x-www-form-urlencoded', 'query', write(3));
    assert.equal(status, 415);
    assert.equal(await devCount(), 0);
  });

  await check('a GET mutation through an <img> stores nothing', async () => {
    await other.evaluate(
      (src) =>
        new Promise((resolve) => {
          const img = new Image();
          img.onload = img.onerror = resolve;
          img.src = src;
        }),
      `${devUrl}?query=${encodeURIComponent(write(4))}`,
    );
    assert.equal(await devCount(), 0);
  });
} finally {
  await browser.close();
  for (const server of origins) server.close();
}
console.log(`browser checks: ${failures} failed`);
process.exit(failures === 0 ? 0 : 1);
