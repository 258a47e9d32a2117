// Operations typed by graphql-codegen's client preset; `tsc --strict` must accept them, and
// the type assertions below fail to compile when a type drifts (DateTime must be `string`,
// not `any` or `unknown`).
import type { ResultOf, VariablesOf } from '@graphql-typed-document-node/core';
import { graphql } from './gql';

export const InboxPage = graphql(`
  query CodegenInbox($first: Int, $after: String) {
    conversations(first: $first, after: $after) {
      totalCount
      pageInfo { hasNextPage endCursor }
      edges {
        cursor
        node { id channel participants snippet lastMessageAt messageCount }
      }
    }
  }
`);

export const Thread = graphql(`
  query CodegenThread($id: ID!, $before: String) {
    node(id: $id) {
      __typename
      ... on Conversation {
        id
        messages(last: 20, before: $before) {
          pageInfo { hasPreviousPage startCursor }
          edges { cursor node { id direction kind from to body sentAt attachments } }
        }
      }
    }
  }
`);

export const Send = graphql(`
  mutation CodegenSend($input: RecordMessageInput!) {
    recordMessage(input: $input) {
      duplicate
      conversationCreated
      messageEdge { cursor node { id sentAt } }
      conversationEdge { cursor node { id lastMessageAt } }
    }
  }
`);

type Equals<A, B> =
  (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false;
function assertType<T extends true>(): T | undefined {
  return undefined;
}

type Inbox = ResultOf<typeof InboxPage>;
type InboxNode = Inbox['conversations']['edges'][number]['node'];
assertType<Equals<InboxNode['lastMessageAt'], string>>();
assertType<Equals<InboxNode['channel'], 'EMAIL' | 'SMS'>>();
assertType<Equals<InboxNode['participants'], Array<string>>>();
assertType<Equals<Inbox['conversations']['pageInfo']['endCursor'], string | null>>();
assertType<Equals<VariablesOf<typeof InboxPage>['first'], number | null | undefined>>();

type ThreadNode = NonNullable<ResultOf<typeof Thread>['node']>;
type ThreadConversation = Extract<ThreadNode, { __typename: 'Conversation' }>;
type ThreadMessage = ThreadConversation['messages']['edges'][number]['node'];
assertType<Equals<ThreadMessage['sentAt'], string>>();
assertType<Equals<ThreadMessage['direction'], 'INBOUND' | 'OUTBOUND'>>();

type Sent = ResultOf<typeof Send>['recordMessage'];
assertType<Equals<NonNullable<Sent['messageEdge']>['node']['sentAt'], string>>();
assertType<Equals<Sent['conversationEdge'], { cursor: string; node: { id: string; lastMessageAt: string } } | null>>();
type SendInput = VariablesOf<typeof Send>['input'];
assertType<Equals<SendInput['sentAt'], string | null | undefined>>();
