//! Live updates (SPEC section 13): every committed message is announced to every server
//! process, and each subscriber receives the messages it may see in sequence order,
//! resuming after a disconnect without a gap or a duplicate.
//!
//! - **Announcing.** On PostgreSQL the record transaction sends `NOTIFY parley_live` with
//!   the conversation id, message id and sequence (ids only: a payload is limited to 8,000
//!   bytes). PostgreSQL delivers it to every listener when, and only if, the transaction
//!   commits, in commit order. On SQLite (one process) the record path publishes the
//!   committed rows in process after its commit.
//! - **Listening.** A process keeps at most one [`Hub`] per database. On PostgreSQL its one
//!   dedicated connection LISTENs (not one per subscriber), loads each announced message
//!   and its conversation once, and broadcasts them to the process's subscribers. When
//!   that connection breaks it reconnects by itself and then tells every subscriber to
//!   [`Signal::Resync`]: announcements sent meanwhile are lost, so subscribers read what
//!   they missed from the database. The hub starts with its first subscriber and stops
//!   with its last.
//! - **Resuming.** A [`MessageFeed`] of one conversation subscribes first, then reads the
//!   stored messages numbered after the client's last one, then follows the live ones,
//!   skipping numbers it already delivered and reading any gap from the database. The
//!   position is the conversation's own gap-free sequence, assigned under its row lock:
//!   never a global sequence or timestamp, which commit out of order and make "everything
//!   after N" skip a row that commits late (hasura/graphql-engine#8632).
//! - **Bounds.** The broadcast holds the last [`LiveOptions::buffer`] changes; a
//!   subscriber that falls further behind gets [`FeedItem::Lagged`] (with the last
//!   sequence it was given, to resume from) and its feed ends.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use futures::Stream;
use sea_orm::sqlx::postgres::{PgListener, PgPoolOptions};
use sea_orm::{DatabaseConnection, DbBackend};
use tokio::sync::{Notify, broadcast, watch};

use crate::access::Viewer;
use crate::error::{Error, Result};
use crate::normalize::{self, Region};
use crate::query::{self, ConversationFilter};
use crate::sql::Sql;
use crate::types::Channel;
use crate::{conversation, message};

/// The PostgreSQL notification channel.
pub const CHANNEL: &str = "parley_live";

/// Messages a catching-up subscriber reads per statement.
const PAGE: u64 = 100;

/// Conversations a feed over several conversations remembers the last sequence of (to
/// tell a duplicate and a gap); past that it starts over.
const REMEMBERED: usize = 10_000;

/// Announcements the listener loads in one go.
const BATCH: usize = 256;

/// Tuning of live updates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveOptions {
    /// Changes the process keeps for its subscribers; one that falls further behind is
    /// ended with [`FeedItem::Lagged`]. Default 1024.
    pub buffer: usize,
    /// How long a new subscriber waits for the listener to be listening. Default 5 s.
    pub ready_timeout: Duration,
}

impl Default for LiveOptions {
    fn default() -> Self {
        LiveOptions {
            buffer: 1024,
            ready_timeout: Duration::from_secs(5),
        }
    }
}

/// A message committed to a conversation, with the conversation as loaded after the commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The message (its `sequence` is set: it is assigned).
    pub message: message::Model,
    /// Its conversation.
    pub conversation: conversation::Model,
}

impl Committed {
    fn sequence(&self) -> i64 {
        self.message.sequence.unwrap_or(0)
    }
}

/// What a hub broadcasts to its subscribers.
#[derive(Debug, Clone)]
pub enum Signal {
    /// A message was committed.
    Recorded(Arc<Committed>),
    /// Announcements may have been lost (the listener reconnected, or could not load
    /// them): read what you missed from the database.
    Resync,
}

/// The process's live updates of one database (see the module docs).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    key: String,
    topics: Arc<Topics>,
    ready: watch::Receiver<bool>,
    stop: Arc<Notify>,
}

/// Where changes go: one channel for the feeds over many conversations, and one per
/// conversation that a feed follows, so a change wakes only the subscribers that may want
/// it (not every subscriber of the process for every message).
struct Topics {
    all: broadcast::Sender<Signal>,
    conversations: Mutex<HashMap<i64, broadcast::Sender<Signal>>>,
    buffer: usize,
}

impl Topics {
    fn new(buffer: usize) -> Topics {
        Topics {
            all: broadcast::channel(buffer).0,
            conversations: Mutex::new(HashMap::new()),
            buffer,
        }
    }

    fn conversations(&self) -> std::sync::MutexGuard<'_, HashMap<i64, broadcast::Sender<Signal>>> {
        // Every critical section is a map lookup, insert or removal: a poisoned map is sound.
        self.conversations
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A receiver of the changes of `conversation`, or of all of them.
    fn subscribe(&self, conversation: Option<i64>) -> broadcast::Receiver<Signal> {
        match conversation {
            None => self.all.subscribe(),
            Some(id) => self
                .conversations()
                .entry(id)
                .or_insert_with(|| broadcast::channel(self.buffer).0)
                .subscribe(),
        }
    }

    fn receivers(&self) -> usize {
        self.all.receiver_count()
            + self
                .conversations()
                .values()
                .map(broadcast::Sender::receiver_count)
                .sum::<usize>()
    }

    /// Sends a change to the feeds of all conversations and to those of its own; a
    /// conversation channel nobody receives any more is dropped.
    fn send_recorded(&self, committed: Arc<Committed>) {
        let id = committed.conversation.id;
        {
            let mut conversations = self.conversations();
            if let Some(tx) = conversations.get(&id) {
                if tx.receiver_count() == 0 {
                    conversations.remove(&id);
                } else {
                    let _ = tx.send(Signal::Recorded(committed.clone()));
                }
            }
        }
        if self.all.receiver_count() > 0 {
            let _ = self.all.send(Signal::Recorded(committed));
        }
    }

    /// Tells every subscriber to resync.
    fn send_resync(&self) {
        let mut conversations = self.conversations();
        conversations.retain(|_, tx| tx.send(Signal::Resync).is_ok());
        let _ = self.all.send(Signal::Resync);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.notify_one();
        let mut hubs = hubs();
        if hubs.get(&self.key).is_some_and(|w| w.strong_count() == 0) {
            hubs.remove(&self.key);
        }
    }
}

fn hubs() -> std::sync::MutexGuard<'static, HashMap<String, Weak<Inner>>> {
    static HUBS: LazyLock<Mutex<HashMap<String, Weak<Inner>>>> = LazyLock::new(Default::default);
    // Every critical section is a map lookup, insert or removal: a poisoned map is sound.
    HUBS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Which database `db` is, for the process-wide hub map: the file for SQLite (every pool
/// on one file shares one hub; an in-memory database is its pool's own), host, port and
/// name for PostgreSQL.
fn database_key(db: &DatabaseConnection) -> String {
    match db.get_database_backend() {
        DbBackend::Postgres => {
            let opts = db.get_postgres_connection_pool().connect_options();
            format!(
                "postgres:{}:{}/{}",
                opts.get_host(),
                opts.get_port(),
                opts.get_database().unwrap_or_default()
            )
        }
        _ => {
            let opts = db.get_sqlite_connection_pool().connect_options();
            let file = opts.get_filename();
            let name = file.to_string_lossy();
            if name.is_empty() || name == ":memory:" || name.starts_with("file:") {
                format!("sqlite-memory:{:p}", Arc::as_ptr(&opts))
            } else {
                format!("sqlite:{name}")
            }
        }
    }
}

impl Hub {
    /// The hub of `db`'s database in this process, started if none runs. On PostgreSQL
    /// starting it spawns the listener task.
    pub fn of(db: &DatabaseConnection, options: LiveOptions) -> Hub {
        let key = database_key(db);
        let mut hubs = hubs();
        if let Some(inner) = hubs.get(&key).and_then(Weak::upgrade) {
            return Hub { inner };
        }
        hubs.retain(|_, w| w.strong_count() > 0);
        let topics = Arc::new(Topics::new(options.buffer.max(1)));
        let postgres = db.get_database_backend() == DbBackend::Postgres;
        let (ready_tx, ready) = watch::channel(!postgres);
        let stop = Arc::new(Notify::new());
        if postgres {
            tokio::spawn(listen(db.clone(), topics.clone(), ready_tx, stop.clone()));
        }
        let inner = Arc::new(Inner {
            key: key.clone(),
            topics,
            ready,
            stop,
        });
        hubs.insert(key, Arc::downgrade(&inner));
        Hub { inner }
    }

    /// A receiver of the changes of `conversation` (or of all conversations) from now on,
    /// once the listener is listening (so whatever commits after this returns is announced
    /// to it, and whatever committed before is in the database). `Unavailable` when the
    /// listener cannot connect within `ready_timeout`.
    pub async fn subscribe(
        &self,
        conversation: Option<i64>,
        ready_timeout: Duration,
    ) -> Result<broadcast::Receiver<Signal>> {
        let rx = self.inner.topics.subscribe(conversation);
        let mut ready = self.inner.ready.clone();
        match tokio::time::timeout(ready_timeout, ready.wait_for(|r| *r)).await {
            Ok(Ok(_)) => Ok(rx),
            _ => Err(Error::Unavailable(
                "the live-update listener is not connected to the database".into(),
            )),
        }
    }

    /// How many subscribers this process's hub has.
    pub fn subscribers(&self) -> usize {
        self.inner.topics.receivers()
    }
}

/// PostgreSQL: announces the message the record statement inserts to every process: a
/// `WITH` item named `n` of that statement ([`crate::statements::insert_and_fold`]),
/// reading the message from `m`, whose NOTIFY is delivered when, and only if, the
/// transaction commits. The payload carries ids only (`conversation:message:sequence`).
/// The statement must read `n` (a `SELECT` in `WITH` runs only when read); it yields one
/// row when `m` has one. SQLite publishes after the commit instead ([`publish_committed`]).
pub(crate) fn push_announce_cte(sql: &mut Sql) {
    sql.push(", n AS (SELECT pg_notify(")
        .bind(CHANNEL)
        .push(", format('%s:%s:%s', m.conversation_id, m.id, m.sequence)) AS notified FROM m)");
}

/// SQLite: hands a committed message to this process's subscribers, if there are any.
/// PostgreSQL announces inside the transaction instead ([`push_announce_cte`]).
pub(crate) fn publish_committed(
    db: &DatabaseConnection,
    message: &message::Model,
    conversation: &conversation::Model,
) {
    if db.get_database_backend() == DbBackend::Postgres {
        return;
    }
    let hub = {
        let hubs = hubs();
        if hubs.is_empty() {
            return;
        }
        hubs.get(&database_key(db)).and_then(Weak::upgrade)
    };
    if let Some(hub) = hub {
        let committed = Committed {
            message: message.clone(),
            conversation: conversation.clone(),
        };
        hub.topics.send_recorded(Arc::new(committed));
    }
}

/// One announcement: `conversation:message:sequence`.
fn parse_payload(payload: &str) -> Option<(i64, i64, i64)> {
    let mut parts = payload.split(':').map(str::parse::<i64>);
    let (Some(Ok(c)), Some(Ok(m)), Some(Ok(s)), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return None;
    };
    Some((c, m, s))
}

/// The listener task of a PostgreSQL hub: one dedicated connection (its own pool of one,
/// so it never takes a request's connection), LISTEN, load and broadcast; on a broken
/// connection reconnect with a growing pause (up to 5 s) and then broadcast
/// [`Signal::Resync`]. Ends when the hub is dropped.
async fn listen(
    db: DatabaseConnection,
    topics: Arc<Topics>,
    ready: watch::Sender<bool>,
    stop: Arc<Notify>,
) {
    let options = db
        .get_postgres_connection_pool()
        .connect_options()
        .as_ref()
        .clone()
        .application_name("parley-live");
    let mut connected_before = false;
    let mut pause = Duration::from_millis(100);
    loop {
        let connect = async {
            let pool = PgPoolOptions::new()
                .max_connections(1)
                .min_connections(0)
                .acquire_timeout(Duration::from_secs(5))
                .idle_timeout(None)
                .max_lifetime(None)
                .connect_lazy_with(options.clone());
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            Ok::<_, sea_orm::sqlx::Error>(listener)
        };
        let mut listener = tokio::select! {
            connected = connect => match connected {
                Ok(listener) => listener,
                Err(e) => {
                    tracing::warn!(error = %e, "live updates: cannot LISTEN; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = stop.notified() => return,
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            },
            () = stop.notified() => return,
        };
        pause = Duration::from_millis(100);
        if connected_before {
            tracing::info!("live updates: listening again; subscribers resync");
            metrics::counter!("parley_live_listener_reconnects_total").increment(1);
            topics.send_resync();
        }
        connected_before = true;
        ready.send_replace(true);
        loop {
            let received = tokio::select! {
                received = listener.try_recv() => received,
                () = stop.notified() => return,
            };
            match received {
                Ok(Some(first)) => {
                    let mut batch = vec![first];
                    while batch.len() < BATCH {
                        match listener.next_buffered() {
                            Some(n) => batch.push(n),
                            None => break,
                        }
                    }
                    let payloads: Vec<&str> = batch.iter().map(|n| n.payload()).collect();
                    deliver(&db, &topics, &payloads).await;
                }
                // The connection broke and the listener reconnected and listens again;
                // what was announced meanwhile is lost.
                Ok(None) => {
                    tracing::info!("live updates: listener reconnected; subscribers resync");
                    metrics::counter!("parley_live_listener_reconnects_total").increment(1);
                    topics.send_resync();
                }
                Err(e) => {
                    tracing::warn!(error = %e, "live updates: listener connection lost");
                    ready.send_replace(false);
                    break;
                }
            }
        }
    }
}

/// Loads the announced messages and their conversations (two statements per batch,
/// however many subscribers) and broadcasts them in announcement order. When they cannot
/// be loaded, subscribers are told to resync instead.
async fn deliver(db: &DatabaseConnection, topics: &Topics, payloads: &[&str]) {
    if topics.receivers() == 0 {
        return;
    }
    let changes: Vec<(i64, i64, i64)> = payloads.iter().filter_map(|p| parse_payload(p)).collect();
    let message_ids: Vec<i64> = changes.iter().map(|c| c.1).collect();
    let mut conversation_ids: Vec<i64> = changes.iter().map(|c| c.0).collect();
    conversation_ids.sort_unstable();
    conversation_ids.dedup();
    let loaded = async {
        let messages = query::messages_by_ids(db, &Viewer::Everyone, &message_ids).await?;
        let conversations =
            query::conversations_by_ids(db, &Viewer::Everyone, &conversation_ids).await?;
        Ok::<_, Error>((messages, conversations))
    }
    .await;
    let (mut messages, conversations) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::warn!(error = %e, "live updates: cannot load announced messages; subscribers resync");
            topics.send_resync();
            return;
        }
    };
    for (conversation_id, message_id, _) in changes {
        let (Some(message), Some(conversation)) = (
            messages.remove(&message_id),
            conversations.get(&conversation_id),
        ) else {
            continue;
        };
        let committed = Committed {
            message,
            conversation: conversation.clone(),
        };
        topics.send_recorded(Arc::new(committed));
    }
}

/// Which messages (or conversations) a feed delivers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedFilter {
    /// Only this conversation.
    pub conversation_id: Option<i64>,
    /// Only this channel.
    pub channel: Option<Channel>,
    /// Only conversations with this participant (any accepted spelling).
    pub participant: Option<String>,
}

/// What a feed yields.
#[derive(Debug, Clone)]
pub enum FeedItem {
    /// A message, in sequence order within its conversation.
    Message(Arc<Committed>),
    /// The subscriber fell more than [`LiveOptions::buffer`] changes behind; the feed ends
    /// here. Resubscribe with `afterSequence` = `last_sequence` (of `conversation_id`).
    Lagged {
        /// The conversation of a one-conversation feed.
        conversation_id: Option<i64>,
        /// The last sequence the feed delivered in it (or started after).
        last_sequence: Option<i64>,
    },
}

/// What a feed checks each change against: the viewer's visibility, then the filter.
#[derive(Debug, Clone)]
struct Matcher {
    viewer: Viewer,
    conversation_id: Option<i64>,
    channel: Option<Channel>,
    participant: Option<String>,
}

impl Matcher {
    fn new(viewer: Viewer, filter: &FeedFilter, region: Region) -> Result<Matcher> {
        let participant = query::filter_address(
            &ConversationFilter {
                channel: filter.channel,
                participant: filter.participant.clone(),
                ..Default::default()
            },
            region,
        )?;
        Ok(Matcher {
            viewer,
            conversation_id: filter.conversation_id,
            channel: filter.channel,
            participant,
        })
    }

    fn matches(&self, c: &conversation::Model) -> bool {
        self.viewer.sees(&c.participants_key)
            && self.conversation_id.is_none_or(|id| id == c.id)
            && self.channel.is_none_or(|ch| ch == c.channel)
            && self
                .participant
                .as_ref()
                .is_none_or(|p| normalize::split_participants_key(&c.participants_key).contains(p))
    }
}

/// The messages one subscriber receives (see the module docs). Build it with
/// [`MessageFeed::open`], read it with [`MessageFeed::next`] or as a stream.
pub struct MessageFeed {
    db: DatabaseConnection,
    rx: broadcast::Receiver<Signal>,
    _hub: Hub,
    matcher: Matcher,
    /// The last sequence delivered (or started after), per conversation.
    last: HashMap<i64, i64>,
    /// Conversations whose next messages are read from the database, in turn.
    behind: VecDeque<i64>,
    queued: HashSet<i64>,
    pending: VecDeque<Arc<Committed>>,
    finished: bool,
}

impl MessageFeed {
    /// Subscribes `viewer` to the messages matching `filter`. With a conversation, the
    /// feed starts after `after_sequence` (default: the conversation's last sequence, so
    /// only new messages), first replaying the stored ones. A conversation the viewer
    /// cannot see answers `NotFound`, as an unknown one does.
    pub async fn open(
        db: &DatabaseConnection,
        viewer: Viewer,
        region: Region,
        filter: &FeedFilter,
        after_sequence: Option<i64>,
        options: LiveOptions,
    ) -> Result<MessageFeed> {
        if after_sequence.is_some() && filter.conversation_id.is_none() {
            return Err(Error::invalid(
                "afterSequence",
                "resuming needs filter.conversationId: sequences count within one conversation",
            ));
        }
        if after_sequence.is_some_and(|n| n < 0) {
            return Err(Error::invalid(
                "afterSequence",
                "a sequence is 0 (before the first message) or more",
            ));
        }
        let matcher = Matcher::new(viewer, filter, region)?;
        let hub = Hub::of(db, options);
        // Subscribe before reading the stored messages: whatever commits from now on is
        // delivered to `rx`, whatever committed before is found by the reads.
        let rx = hub
            .subscribe(filter.conversation_id, options.ready_timeout)
            .await?;
        let mut feed = MessageFeed {
            db: db.clone(),
            rx,
            _hub: hub,
            matcher,
            last: HashMap::new(),
            behind: VecDeque::new(),
            queued: HashSet::new(),
            pending: VecDeque::new(),
            finished: false,
        };
        if let Some(id) = filter.conversation_id {
            let found = query::find_conversation(db, &feed.matcher.viewer, id).await?;
            let Some(conversation) = found else {
                return Err(Error::NotFound {
                    what: "conversation",
                    id: id.to_string(),
                });
            };
            let start = after_sequence.unwrap_or(conversation.last_sequence);
            if start > conversation.last_sequence {
                return Err(Error::invalid(
                    "afterSequence",
                    format!(
                        "the conversation's last sequence is {}; resume from one you were given",
                        conversation.last_sequence
                    ),
                ));
            }
            feed.last.insert(id, start);
            if start < conversation.last_sequence {
                feed.fall_behind(id);
            }
        }
        Ok(feed)
    }

    /// The next item; `None` once the feed has ended. Errors (the database failing while
    /// catching up) end the feed too.
    pub async fn next(&mut self) -> Option<Result<FeedItem>> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Some(Ok(FeedItem::Message(c)));
            }
            if self.finished {
                return None;
            }
            if let Some(&id) = self.behind.front() {
                match self.catch_up(id).await {
                    Ok(true) => {
                        self.behind.pop_front();
                        self.queued.remove(&id);
                    }
                    Ok(false) => {}
                    Err(e) => {
                        self.finished = true;
                        return Some(Err(e));
                    }
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(Signal::Recorded(c)) => self.receive(c),
                Ok(Signal::Resync) => {
                    let known: Vec<i64> = self.last.keys().copied().collect();
                    for id in known {
                        self.fall_behind(id);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.finished = true;
                    metrics::counter!("parley_live_lagged_total").increment(1);
                    let conversation_id = self.matcher.conversation_id;
                    return Some(Ok(FeedItem::Lagged {
                        conversation_id,
                        last_sequence: conversation_id.and_then(|id| self.last.get(&id).copied()),
                    }));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The feed as a stream.
    pub fn into_stream(self) -> impl Stream<Item = Result<FeedItem>> + Send {
        futures::stream::unfold(self, |mut feed| async move {
            feed.next().await.map(|item| (item, feed))
        })
    }

    fn fall_behind(&mut self, id: i64) {
        if self.queued.insert(id) {
            self.behind.push_back(id);
        }
    }

    /// A live message: delivered when it is the next of its conversation, skipped when
    /// already delivered, and read from the database with what precedes it when there is
    /// a gap (a lost announcement, or out-of-order publishing on SQLite).
    fn receive(&mut self, c: Arc<Committed>) {
        if !self.matcher.matches(&c.conversation) {
            return;
        }
        let id = c.conversation.id;
        if self.queued.contains(&id) {
            return;
        }
        let sequence = c.sequence();
        match self.last.get(&id) {
            Some(&last) if sequence <= last => {}
            Some(&last) if sequence > last + 1 => self.fall_behind(id),
            _ => {
                if self.last.len() >= REMEMBERED && !self.last.contains_key(&id) {
                    self.last.clear();
                }
                self.last.insert(id, sequence);
                self.pending.push_back(c);
            }
        }
    }

    /// Reads the next page of conversation `id`'s messages after the last one delivered;
    /// `true` once there are no more.
    async fn catch_up(&mut self, id: i64) -> Result<bool> {
        let after = self.last.get(&id).copied().unwrap_or(0);
        let rows =
            query::messages_after_sequence(&self.db, &self.matcher.viewer, id, after, PAGE).await?;
        let Some(last) = rows.last() else {
            return Ok(true);
        };
        let last = last.sequence.unwrap_or(after);
        let found = query::find_conversation(&self.db, &self.matcher.viewer, id).await?;
        // A conversation the filter excludes (a conversationId whose channel or
        // participants the filter does not match) delivers nothing, stored or live.
        let Some(conversation) = found.filter(|c| self.matcher.matches(c)) else {
            return Ok(true);
        };
        let done = (rows.len() as u64) < PAGE;
        for message in rows {
            self.pending.push_back(Arc::new(Committed {
                message,
                conversation: conversation.clone(),
            }));
        }
        self.last.insert(id, last);
        Ok(done)
    }
}

/// The conversations one subscriber receives as they change: each time a message is
/// committed to one it may see that matches the filter, the conversation as loaded after
/// the commit.
pub struct ConversationFeed {
    rx: broadcast::Receiver<Signal>,
    _hub: Hub,
    matcher: Matcher,
    finished: bool,
}

/// What a conversation feed yields.
#[derive(Debug, Clone)]
pub enum ConversationItem {
    /// A conversation after a change.
    Conversation(Arc<Committed>),
    /// The subscriber fell behind; the feed ends here. Resubscribe, and reload the list.
    Lagged,
}

impl ConversationFeed {
    /// Subscribes `viewer` to the changes of the conversations matching `filter` (its
    /// `conversation_id` narrows it to one).
    pub async fn open(
        db: &DatabaseConnection,
        viewer: Viewer,
        region: Region,
        filter: &FeedFilter,
        options: LiveOptions,
    ) -> Result<ConversationFeed> {
        let matcher = Matcher::new(viewer, filter, region)?;
        let hub = Hub::of(db, options);
        let rx = hub.subscribe(None, options.ready_timeout).await?;
        Ok(ConversationFeed {
            rx,
            _hub: hub,
            matcher,
            finished: false,
        })
    }

    /// The next item; `None` once the feed has ended.
    pub async fn next(&mut self) -> Option<ConversationItem> {
        while !self.finished {
            match self.rx.recv().await {
                Ok(Signal::Recorded(c)) if self.matcher.matches(&c.conversation) => {
                    return Some(ConversationItem::Conversation(c));
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.finished = true;
                    metrics::counter!("parley_live_lagged_total").increment(1);
                    return Some(ConversationItem::Lagged);
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
        None
    }

    /// The feed as a stream.
    pub fn into_stream(self) -> impl Stream<Item = ConversationItem> + Send {
        futures::stream::unfold(self, |mut feed| async move {
            feed.next().await.map(|item| (item, feed))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::parse_payload;

    #[test]
    fn payloads_carry_three_ids() {
        assert_eq!(parse_payload("12:345:6"), Some((12, 345, 6)));
        assert_eq!(parse_payload("12:345"), None);
        assert_eq!(parse_payload("12:345:6:7"), None);
        assert_eq!(parse_payload("a:b:c"), None);
    }
}
