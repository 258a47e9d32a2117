// Apollo Client against a real parley: relayStylePagination (a type policy keyed `Query`)
// merges two pages of `conversations` into 20 unique edges, with the server's pageInfo.
// Usage: node apollo/pagination.mjs http://127.0.0.1:PORT/graphql
import assert from 'node:assert/strict';
import { ApolloClient, HttpLink, InMemoryCache, gql } from '@apollo/client';
import { relayStylePagination } from '@apollo/client/utilities';

const url = process.argv[2];
assert.ok(url, 'usage: node apollo/pagination.mjs URL');

const client = new ApolloClient({
  link: new HttpLink({ uri: url, fetch }),
  cache: new InMemoryCache({
    typePolicies: {
      Query: { fields: { conversations: relayStylePagination(['filter']) } },
    },
  }),
});

// 25 conversations on a channel of their own (email), so other checks' data cannot interfere.
const RECORD = gql`
  mutation Seed($input: RecordMessageInput!) {
    recordMessage(input: $input) {
      conversationEdge { cursor node { id } }
    }
  }
`;
for (let i = 0; i < 25; i += 1) {
  const { data } = await client.mutate({
    mutation: RECORD,
    variables: {
      input: {
        channel: 'EMAIL',
        direction: 'INBOUND',
        from: `contact${i}@example.com`,
        to: ['inbox@example.com'],
        body: `hello ${i}`,
        sentAt: new Date(Date.UTC(2024, 10, 1, 12, i)).toISOString(),
      },
    },
  });
  assert.ok(data.recordMessage.conversationEdge.cursor, 'the payload carries an edge');
}

const PAGE = gql`
  query Page($first: Int!, $after: String, $filter: ConversationFilter) {
    conversations(first: $first, after: $after, filter: $filter) {
      edges { cursor node { id lastMessageAt } }
      pageInfo { hasNextPage hasPreviousPage startCursor endCursor }
    }
  }
`;
const filter = { channel: 'EMAIL' };
const first = await client.query({ query: PAGE, variables: { first: 10, filter } });
assert.equal(first.data.conversations.edges.length, 10);
const after = first.data.conversations.pageInfo.endCursor;
const second = await client.query({
  query: PAGE,
  variables: { first: 10, after, filter },
  fetchPolicy: 'network-only',
});
assert.equal(second.data.conversations.edges.length, 20, 'the cache merged both pages');

// What the cache now holds for the list, and what the server says about page 2.
const merged = client.readQuery({ query: PAGE, variables: { first: 10, filter } });
const edges = merged.conversations.edges;
const ids = new Set(edges.map((e) => e.node.id));
assert.equal(edges.length, 20);
assert.equal(ids.size, 20, '20 unique conversations');
const times = edges.map((e) => e.node.lastMessageAt);
assert.deepEqual([...times].sort().reverse(), times, 'newest activity first across the seam');
const direct = await fetch(url, {
  method: 'POST',
  headers: { 'content-type': 'application/json', accept: 'application/json' },
  body: JSON.stringify({
    query: 'query($after: String) { conversations(first: 10, after: $after, filter: { channel: EMAIL }) { pageInfo { hasNextPage endCursor } } }',
    variables: { after },
  }),
}).then((r) => r.json());
const serverInfo = direct.data.conversations.pageInfo;
assert.equal(merged.conversations.pageInfo.endCursor, serverInfo.endCursor);
assert.equal(merged.conversations.pageInfo.hasNextPage, serverInfo.hasNextPage);
assert.equal(merged.conversations.pageInfo.hasNextPage, true, '25 conversations: more after 20');
assert.equal(merged.conversations.pageInfo.startCursor, first.data.conversations.pageInfo.startCursor);
console.log(
  `Apollo Client relayStylePagination: ${edges.length} unique edges from 2 pages, hasNextPage ${serverInfo.hasNextPage}`,
);
