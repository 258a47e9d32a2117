//! What each scenario sends: GraphQL request bodies over the seeded data, and how an answer
//! is checked.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::db::{AGENT, customer};

const RECORD: &str = "mutation R($i: RecordMessageInput!) { recordMessage(input: $i) { conversationCreated duplicate message { id } conversation { messageCount } } }";
const LIST: &str =
    "{ conversations(first: 50) { nodes { participants messageCount snippet lastMessageAt } } }";
const THREAD: &str = "query T($id: ID!) { conversation(id: $id) { messages(last: 50) { nodes { id body sentAt direction } } } }";
const SEARCH: &str = "query S($q: String!) { searchMessages(query: $q, first: 20) { edges { highlight node { id sentAt direction body } } pageInfo { hasNextPage endCursor } } }";
const EDGES: &str = "{ conversations(first: 50) { edges { cursor node { id channel participants messageCount snippet lastMessageAt } } pageInfo { endCursor hasNextPage } } }";

/// The same three reads in PostGraphile 4's schema (the `--peer` run): the same order
/// (activity, newest first; a thread's last 50 oldest first), the same columns, global ids
/// as `nodeId`.
const PEER_LIST: &str = "{ allConversations(first: 50, orderBy: [LAST_MESSAGE_AT_DESC, ID_DESC]) { nodes { participants messageCount snippet lastMessageAt } } }";
const PEER_EDGES: &str = "{ allConversations(first: 50, orderBy: [LAST_MESSAGE_AT_DESC, ID_DESC]) { edges { cursor node { nodeId channel participants messageCount snippet lastMessageAt } } pageInfo { endCursor hasNextPage } } }";
const PEER_THREAD: &str = "query T($id: BigInt!) { conversationById(id: $id) { messagesByConversationId(last: 50, orderBy: [SENT_AT_ASC, ID_ASC]) { nodes { nodeId body sentAt direction } } } }";

/// The mix of operations a run sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mix {
    /// recordMessage; `new_percent` of them start a new conversation, the rest go to a
    /// random seeded one (or, with `hot`, to one of the first `hot` conversations).
    Record {
        /// Share of requests that start a conversation.
        new_percent: u64,
        /// Only this many (seeded) conversations receive messages.
        hot: Option<u64>,
    },
    /// The first page of 50 conversations.
    List,
    /// The last 50 messages of a random seeded conversation.
    Thread,
    /// `List` with `edges { cursor node { id channel ... } }` and `pageInfo`.
    Edges,
    /// `List`, `Edges` or `Thread` in PostGraphile's schema (the `--peer` run).
    Peer(ReadShape),
    /// `write_percent` record (20% new), the rest list and thread, half each.
    Mixed {
        /// Share of writes.
        write_percent: u64,
    },
    /// The first page of 20 of `searchMessages(query: term)` over the search corpus
    /// (`crate::search`): as the client's principal, or with [`Workload::with_inboxes`] as
    /// a principal acting for one customer, picked at random per request. Each answer must
    /// hold exactly the page the corpus says.
    Search {
        /// The word searched for.
        term: &'static str,
    },
}

/// One of the three read shapes the `--peer` run compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReadShape {
    /// The first page of 50 conversations, `nodes`.
    List,
    /// The same with edges, cursors and `pageInfo`.
    Edges,
    /// The last 50 messages of a random conversation.
    Thread,
}

impl ReadShape {
    /// All of them, in report order.
    pub const ALL: [ReadShape; 3] = [ReadShape::List, ReadShape::Edges, ReadShape::Thread];

    /// Its name in tables.
    pub fn name(self) -> &'static str {
        match self {
            ReadShape::List => "list",
            ReadShape::Edges => "edges",
            ReadShape::Thread => "thread",
        }
    }

    /// The query PostGraphile is sent.
    pub fn peer_query(self) -> &'static str {
        match self {
            ReadShape::List => PEER_LIST,
            ReadShape::Edges => PEER_EDGES,
            ReadShape::Thread => PEER_THREAD,
        }
    }

    /// parley's mix for this shape.
    pub fn parley_mix(self) -> Mix {
        match self {
            ReadShape::List => Mix::List,
            ReadShape::Edges => Mix::Edges,
            ReadShape::Thread => Mix::Thread,
        }
    }
}

/// One request to send and what its answer must say.
#[derive(Debug, Clone)]
pub struct Request {
    /// The JSON body.
    pub body: String,
    /// For a record request: whether the answer must say `conversationCreated: true`.
    pub expect_created: Option<bool>,
    /// For a search request: how many results the page must hold.
    pub expect_results: Option<usize>,
    /// A bearer token for this request alone (the client's default otherwise).
    pub bearer: Option<String>,
}

/// A deterministic stream of requests.
#[derive(Debug, Clone)]
pub struct Workload {
    mix: Mix,
    conversations: u64,
    tag: String,
    seq: u64,
    rng: Rng,
    /// `Search` as one-inbox principals: each customer's conversation and its token.
    inboxes: Vec<(u64, String)>,
}

impl Workload {
    /// A stream over `conversations` seeded conversations; `tag` keeps new addresses and
    /// provider ids unique across runs on one database.
    pub fn new(mix: Mix, conversations: u64, tag: &str, seed: u64) -> Self {
        Workload {
            mix,
            conversations: conversations.max(1),
            tag: tag.to_owned(),
            seq: 0,
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            inboxes: Vec::new(),
        }
    }

    /// `Search` requests as the principals of `inboxes` (conversation, bearer token), one
    /// picked at random per request.
    pub fn with_inboxes(mut self, inboxes: Vec<(u64, String)>) -> Self {
        self.inboxes = inboxes;
        self
    }

    /// The next request.
    pub fn next_request(&mut self) -> Request {
        self.seq += 1;
        match self.mix {
            Mix::Record { new_percent, hot } => self.record(new_percent, hot),
            Mix::List => Request {
                body: format!(r#"{{"query":"{LIST}"}}"#),
                expect_created: None,
                expect_results: None,
                bearer: None,
            },
            Mix::Thread => self.thread(),
            Mix::Edges => Request {
                body: format!(r#"{{"query":"{EDGES}"}}"#),
                expect_created: None,
                expect_results: None,
                bearer: None,
            },
            Mix::Peer(ReadShape::Thread) => {
                let id = 1 + self.rng.below(self.conversations);
                Request {
                    body: format!(r#"{{"query":"{PEER_THREAD}","variables":{{"id":"{id}"}}}}"#),
                    expect_created: None,
                    expect_results: None,
                    bearer: None,
                }
            }
            Mix::Peer(shape) => Request {
                body: format!(r#"{{"query":"{}"}}"#, shape.peer_query()),
                expect_created: None,
                expect_results: None,
                bearer: None,
            },
            Mix::Search { term } => self.search(term),
            Mix::Mixed { write_percent } => {
                let roll = self.rng.below(100);
                if roll < write_percent {
                    self.record(20, None)
                } else if roll.is_multiple_of(2) {
                    Request {
                        body: format!(r#"{{"query":"{LIST}"}}"#),
                        expect_created: None,
                        expect_results: None,
                        bearer: None,
                    }
                } else {
                    self.thread()
                }
            }
        }
    }

    fn record(&mut self, new_percent: u64, hot: Option<u64>) -> Request {
        let seq = self.seq;
        let new = hot.is_none() && self.rng.below(100) < new_percent;
        let user = if new {
            format!("n-{}-{seq}@bench.example", self.tag)
        } else {
            let range = hot
                .unwrap_or(self.conversations)
                .clamp(1, self.conversations);
            customer(1 + self.rng.below(range))
        };
        let (direction, from, to) = if self.rng.below(2) == 0 {
            ("INBOUND", user.as_str(), AGENT)
        } else {
            ("OUTBOUND", AGENT, user.as_str())
        };
        let tag = &self.tag;
        Request {
            body: format!(
                r#"{{"query":"{RECORD}","variables":{{"i":{{"channel":"EMAIL","direction":"{direction}","from":"{from}","to":["{to}"],"body":"Bench load message {seq} of run {tag}","providerMessageId":"b-{tag}-{seq}"}}}}}}"#
            ),
            expect_created: Some(new),
            expect_results: None,
            bearer: None,
        }
    }

    fn search(&mut self, term: &str) -> Request {
        let body = format!(r#"{{"query":"{SEARCH}","variables":{{"q":"{term}"}}}}"#);
        let (bearer, matches) = if self.inboxes.is_empty() {
            (None, crate::search::matches(term, 1..=self.conversations))
        } else {
            let (c, token) = &self.inboxes[self.rng.below(self.inboxes.len() as u64) as usize];
            (Some(token.clone()), crate::search::matches(term, *c..=*c))
        };
        Request {
            body,
            expect_created: None,
            expect_results: Some(matches.min(20) as usize),
            bearer,
        }
    }

    fn thread(&mut self) -> Request {
        let id = 1 + self.rng.below(self.conversations);
        let gid = URL_SAFE_NO_PAD.encode(format!("Conversation:{id}"));
        Request {
            body: format!(r#"{{"query":"{THREAD}","variables":{{"id":"{gid}"}}}}"#),
            expect_created: None,
            expect_results: None,
            bearer: None,
        }
    }
}

/// Checks one answer: HTTP 200, no GraphQL `errors`, and for record requests the
/// expected `conversationCreated`. `Err` carries a short reason.
pub fn check(request: &Request, status: u16, body: &[u8]) -> Result<(), String> {
    if status != 200 {
        return Err(format!("HTTP {status}: {}", excerpt(body)));
    }
    if contains(body, br#""errors""#) || !contains(body, br#""data""#) {
        return Err(format!("GraphQL error: {}", excerpt(body)));
    }
    if let Some(n) = request.expect_results {
        let got = count(body, br#""highlight""#);
        if got != n {
            return Err(format!(
                "expected {n} results, got {got}: {}",
                excerpt(body)
            ));
        }
    }
    if let Some(created) = request.expect_created {
        let want: &[u8] = if created {
            br#""conversationCreated":true"#
        } else {
            br#""conversationCreated":false"#
        };
        if !contains(body, want) {
            return Err(format!(
                "expected conversationCreated: {created}: {}",
                excerpt(body)
            ));
        }
    }
    Ok(())
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn excerpt(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned()
}

/// xorshift64*: small, fast, and good enough to pick conversations.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (n >= 1), up to a negligible bias.
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_requests_are_valid_json_with_unique_provider_ids() {
        let mut w = Workload::new(
            Mix::Record {
                new_percent: 20,
                hot: None,
            },
            100,
            "t",
            1,
        );
        let mut ids = std::collections::HashSet::new();
        let mut new = 0;
        for _ in 0..1000 {
            let r = w.next_request();
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
            let pid = v["variables"]["i"]["providerMessageId"].as_str().unwrap();
            assert!(ids.insert(pid.to_owned()));
            if r.expect_created == Some(true) {
                new += 1;
            }
        }
        assert!((120..280).contains(&new), "{new} new of 1000");
    }

    #[test]
    fn hot_records_stay_in_their_conversations() {
        let mut w = Workload::new(
            Mix::Record {
                new_percent: 20,
                hot: Some(1),
            },
            100,
            "t",
            2,
        );
        for _ in 0..100 {
            let r = w.next_request();
            assert_eq!(r.expect_created, Some(false));
            assert!(r.body.contains("u1@bench.example"));
        }
    }

    #[test]
    fn thread_and_list_requests_are_valid_json() {
        let peer = ReadShape::ALL.map(Mix::Peer);
        for mix in [
            Mix::List,
            Mix::Thread,
            Mix::Edges,
            Mix::Mixed { write_percent: 10 },
            Mix::Search { term: "order" },
        ]
        .into_iter()
        .chain(peer)
        {
            let mut w = Workload::new(mix, 10, "t", 3);
            for _ in 0..50 {
                let r = w.next_request();
                serde_json::from_str::<serde_json::Value>(&r.body).unwrap();
            }
        }
    }

    #[test]
    fn search_requests_expect_the_corpus_page() {
        crate::search::set_per(100);
        let mut w = Workload::new(Mix::Search { term: "zephyr" }, 10_000, "t", 4);
        assert_eq!(w.next_request().expect_results, Some(20));
        assert_eq!(w.next_request().bearer, None);
        // Conversation 1 holds message 7 ("zephyr"), conversation 2 none.
        let mut w = Workload::new(Mix::Search { term: "zephyr" }, 10_000, "t", 4)
            .with_inboxes(vec![(1, "a".into())]);
        let r = w.next_request();
        assert_eq!(
            (r.expect_results, r.bearer.as_deref()),
            (Some(1), Some("a"))
        );
        let mut w = Workload::new(Mix::Search { term: "zephyr" }, 10_000, "t", 4)
            .with_inboxes(vec![(2, "b".into())]);
        assert_eq!(w.next_request().expect_results, Some(0));
        let page = br#"{"data":{"searchMessages":{"edges":[{"highlight":"x"}]}}}"#;
        let want = |n| Request {
            body: String::new(),
            expect_created: None,
            expect_results: Some(n),
            bearer: None,
        };
        assert!(check(&want(1), 200, page).is_ok());
        assert!(check(&want(0), 200, page).is_err());
    }

    #[test]
    fn check_rejects_errors_and_wrong_creation() {
        let rec = Request {
            body: String::new(),
            expect_created: Some(false),
            expect_results: None,
            bearer: None,
        };
        let ok = br#"{"data":{"recordMessage":{"conversationCreated":false}}}"#;
        assert!(check(&rec, 200, ok).is_ok());
        assert!(check(&rec, 503, ok).is_err());
        assert!(check(&rec, 200, br#"{"data":null,"errors":[{}]}"#).is_err());
        let created = br#"{"data":{"recordMessage":{"conversationCreated":true}}}"#;
        assert!(check(&rec, 200, created).is_err());
    }
}
