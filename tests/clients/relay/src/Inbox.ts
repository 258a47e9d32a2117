// A Relay fixture the way an inbox app would write it; relay-compiler validates and compiles
// it against schema.graphql (tests/clients/run.sh). Never executed: the compiler reads the
// graphql tags.
declare function graphql(strings: TemplateStringsArray): unknown;

// The conversation list: a paginated, refetchable fragment on the root.
export const inboxList = graphql`
  fragment InboxList_query on Query
  @argumentDefinitions(
    count: { type: "Int", defaultValue: 10 }
    cursor: { type: "String" }
    channel: { type: "Channel" }
  )
  @refetchable(queryName: "InboxListPaginationQuery") {
    conversations(first: $count, after: $cursor, filter: { channel: $channel })
      @connection(key: "InboxList_conversations", filters: ["filter"]) {
      __id
      totalCount
      edges {
        node {
          id
          ...ConversationRow_conversation
        }
      }
    }
  }
`;

export const conversationRow = graphql`
  fragment ConversationRow_conversation on Conversation {
    id
    channel
    participants
    snippet
    lastMessageAt
    messageCount
  }
`;

// A thread: the newest 20 messages, paging backward.
export const thread = graphql`
  fragment Thread_conversation on Conversation
  @argumentDefinitions(count: { type: "Int", defaultValue: 20 }, cursor: { type: "String" })
  @refetchable(queryName: "ThreadPaginationQuery") {
    id
    messages(last: $count, before: $cursor) @connection(key: "Thread_messages") {
      __id
      edges {
        node {
          id
          direction
          from
          body
          sentAt
        }
      }
    }
  }
`;

export const inboxQuery = graphql`
  query InboxQuery($channel: Channel) {
    ...InboxList_query @arguments(channel: $channel)
  }
`;

// A node refetch: a conversation by global id.
export const conversationQuery = graphql`
  query ConversationQuery($id: ID!) {
    node(id: $id) {
      ...ConversationRow_conversation @alias
      ...Thread_conversation @alias
    }
  }
`;

// Sending a message: the new message is appended to the cached thread, and its
// conversation moved to the top of the cached list.
export const send = graphql`
  mutation SendMessageMutation(
    $input: RecordMessageInput!
    $threads: [ID!]!
    $lists: [ID!]!
  ) {
    recordMessage(input: $input) {
      duplicate
      messageEdge @appendEdge(connections: $threads) {
        cursor
        node {
          id
          body
          sentAt
        }
      }
      conversationEdge @prependEdge(connections: $lists) {
        cursor
        node {
          ...ConversationRow_conversation
        }
      }
    }
  }
`;
