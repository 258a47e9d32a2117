// The trusted-documents mode with the maps graphql-codegen's client preset
// (src/gql/persisted-documents.json, `sha256:` keys) and Relay's persisted queries
// (../relay/persisted-queries.json, bare hex keys) wrote: against a parley started with
// `--trusted-documents` on both, a listed document runs by its id and any other text is
// refused with 403 FORBIDDEN. Usage: node codegen/trusted.mjs URL
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';

const url = process.argv[2];
const documents = JSON.parse(
  readFileSync(new URL('./src/gql/persisted-documents.json', import.meta.url), 'utf8'),
);
const relay = JSON.parse(
  readFileSync(new URL('../relay/persisted-queries.json', import.meta.url), 'utf8'),
);
const inbox = Object.keys(documents).find((id) => documents[id].startsWith('query CodegenInbox'));
assert.ok(inbox, 'codegen listed CodegenInbox');
const ask = (body) =>
  fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' },
    body: JSON.stringify(body),
  });
const listed = await ask({ documentId: inbox, variables: { first: 2 } });
assert.equal(listed.status, 200);
const data = await listed.json();
assert.equal(typeof data.data.conversations.totalCount, 'number', JSON.stringify(data));
const relayInbox = Object.keys(relay).find((id) => relay[id].startsWith('query InboxQuery'));
assert.ok(relayInbox, 'Relay persisted InboxQuery');
const byRelayId = await ask({ documentId: relayInbox, variables: { channel: 'SMS' } });
assert.equal(byRelayId.status, 200);
const relayData = await byRelayId.json();
assert.equal(relayData.errors, undefined, JSON.stringify(relayData));
assert.ok(Array.isArray(relayData.data.conversations.edges), JSON.stringify(relayData));
const other = await ask({ query: '{ conversations(first: 100) { totalCount } }' });
assert.equal(other.status, 403);
assert.equal((await other.json()).errors[0].extensions.code, 'FORBIDDEN');
const unknown = await ask({ documentId: `sha256:${'0'.repeat(64)}` });
assert.equal((await unknown.json()).errors[0].extensions.code, 'PERSISTED_QUERY_NOT_FOUND');
console.log(
  `trusted documents: ${Object.keys(documents).length} from codegen, ${Object.keys(relay).length} from Relay; listed run, others refused`,
);
