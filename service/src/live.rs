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
//! - **Resuming a feed over many conversations.** Sequences count within one conversation,
//!   and a global id or timestamp assigned at insert commits out of order, so a feed over
//!   many conversations ([`MessageFeed::open_tracked`]) gives each message a [`Position`]
//!   instead: a [`Horizon`] (what the database had committed at one moment: on PostgreSQL
//!   a snapshot, `xmin:xmax:xip`, on SQLite the highest message id, since its serialized
//!   writers assign ids in commit order) plus the ids delivered since that the horizon
//!   does not see. Every message not visible in the horizon belongs to a transaction that
//!   had not started or was in progress when it was taken; on PostgreSQL all of them have
//!   `txid >= xmin`, however late they commit. Resuming reads, in one snapshot, the
//!   messages the position does not cover (see [`FeedCursor`]), then follows the live
//!   ones, dropping those the new snapshot saw. The position's id list is kept short:
//!   each PostgreSQL listener announces a snapshot every [`MARK_EVERY`] while messages
//!   flow and such feeds listen (a NOTIFY sent after the snapshot is taken reaches every
//!   listener after the announcements of every transaction the snapshot sees), and a
//!   feed whose list still grows past [`DELIVERED_MAX`] reads a new horizon itself.
//! - **Resuming a feed of conversations.** A [`ConversationFeed::open_tracked`] keeps the
//!   same position over messages (a change is a committed message: read state, archiving
//!   and delivery status announce nothing). Its replay gives each conversation with an
//!   uncovered message once, as loaded after the replay's snapshot, with the position of
//!   its last such message; a live change that a conversation already delivered shows is
//!   added to the position without being sent again. On PostgreSQL backfill's attaching
//!   counts as writing (`messages.txid` is set to its transaction, and it announces), so
//!   cursors replay backfilled messages; SQLite cursors, by message id, do not.
//! - **Bounds.** The broadcast holds the last [`LiveOptions::buffer`] changes; a
//!   subscriber that falls further behind gets [`FeedItem::Lagged`] (with the last
//!   sequence it was given, to resume from) and its feed ends.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::Duration;

use futures::Stream;
use sea_orm::sqlx::postgres::{PgListener, PgPoolOptions};
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DbBackend, IsolationLevel, Statement,
    TransactionOptions, TransactionTrait,
};
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

/// Messages a resume may have to replay: a cursor further behind is refused (subscribe
/// without one, and reload what you show).
pub const REPLAY_MAX: usize = 100_000;

/// Ids a feed's position lists beyond its horizon before the feed reads a new horizon
/// (one statement).
pub const DELIVERED_MAX: usize = 256;

/// How often a PostgreSQL listener announces a snapshot while messages are announced and
/// feeds over many conversations listen.
pub const MARK_EVERY: Duration = Duration::from_millis(250);

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
    /// PostgreSQL: the transaction that wrote the message (`messages.txid`), when known.
    pub txid: Option<u64>,
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
    /// PostgreSQL: every message of a transaction this snapshot sees was announced before
    /// this signal (sent to the feeds that keep a position only).
    Horizon(Arc<Horizon>),
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

/// Where changes go: one channel for the feeds over many conversations, one for those of
/// them that keep a position (they also receive the announced snapshots), and one per
/// conversation that a feed follows, so a change wakes only the subscribers that may want
/// it (not every subscriber of the process for every message).
struct Topics {
    all: broadcast::Sender<Signal>,
    tracked: broadcast::Sender<Signal>,
    conversations: Mutex<HashMap<i64, broadcast::Sender<Signal>>>,
    buffer: usize,
}

impl Topics {
    fn new(buffer: usize) -> Topics {
        Topics {
            all: broadcast::channel(buffer).0,
            tracked: broadcast::channel(buffer).0,
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
            + self.tracked.receiver_count()
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
        if self.tracked.receiver_count() > 0 {
            let _ = self.tracked.send(Signal::Recorded(committed.clone()));
        }
        if self.all.receiver_count() > 0 {
            let _ = self.all.send(Signal::Recorded(committed));
        }
    }

    /// Tells the feeds that keep a position that `horizon` is complete.
    fn send_horizon(&self, horizon: Horizon) {
        if self.tracked.receiver_count() > 0 {
            let _ = self.tracked.send(Signal::Horizon(Arc::new(horizon)));
        }
    }

    /// Tells every subscriber to resync.
    fn send_resync(&self) {
        let mut conversations = self.conversations();
        conversations.retain(|_, tx| tx.send(Signal::Resync).is_ok());
        let _ = self.all.send(Signal::Resync);
        let _ = self.tracked.send(Signal::Resync);
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
        self.ready(self.inner.topics.subscribe(conversation), ready_timeout)
            .await
    }

    /// [`Hub::subscribe`] for a feed that keeps a position: all conversations, and the
    /// snapshots the listeners announce.
    pub async fn subscribe_tracked(
        &self,
        ready_timeout: Duration,
    ) -> Result<broadcast::Receiver<Signal>> {
        self.ready(self.inner.topics.tracked.subscribe(), ready_timeout)
            .await
    }

    /// `rx` once the listener is listening.
    async fn ready(
        &self,
        rx: broadcast::Receiver<Signal>,
        ready_timeout: Duration,
    ) -> Result<broadcast::Receiver<Signal>> {
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
/// transaction commits. The payload carries ids only, `conversation:message:sequence:txid`
/// (see [`parse_payload`]). The statement must read `n` (a `SELECT` in `WITH` runs only
/// when read); it yields one row when `m` has one. SQLite publishes after the commit
/// instead ([`publish_committed`]).
pub(crate) fn push_announce_cte(sql: &mut Sql) {
    sql.push(", n AS (SELECT pg_notify(").bind(CHANNEL).push(
        ", format('%s:%s:%s:%s', m.conversation_id, m.id, m.sequence, pg_current_xact_id())) \
         AS notified FROM m)",
    );
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
            txid: None,
        };
        hub.topics.send_recorded(Arc::new(committed));
    }
}

/// What one notification announces.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Announced {
    /// A committed message: `conversation:message:sequence`, optionally `:txid` (the
    /// writing transaction, `pg_current_xact_id()`).
    Message {
        conversation: i64,
        message: i64,
        sequence: i64,
        txid: Option<u64>,
    },
    /// `s:xmin:xmax:xip`: a snapshot every announced transaction of which was announced
    /// before (see [`mark`]).
    Horizon(Horizon),
}

/// Parses one notification payload; `None` for one this version does not know.
fn parse_payload(payload: &str) -> Option<Announced> {
    if let Some(snapshot) = payload.strip_prefix("s:") {
        return Horizon::parse_snapshot(snapshot).map(Announced::Horizon);
    }
    let mut parts = payload.split(':');
    let mut int = || parts.next().and_then(|p| p.parse::<i64>().ok());
    let (Some(conversation), Some(message), Some(sequence)) = (int(), int(), int()) else {
        return None;
    };
    let txid = match parts.next() {
        None => None,
        Some(t) => Some(t.parse::<u64>().ok()?),
    };
    if parts.next().is_some() {
        return None;
    }
    Some(Announced::Message {
        conversation,
        message,
        sequence,
        txid,
    })
}

/// Announces a snapshot to every listener: NOTIFY is queued at commit, after the snapshot
/// of its statement was taken, and every transaction that snapshot sees queued its own
/// notifications before committing; the queue is delivered in order, so a listener
/// receives this after every announcement of a transaction the snapshot sees.
async fn mark(db: &DatabaseConnection) {
    let sent = db
        .execute_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT pg_notify($1, 's:' || pg_current_snapshot()::text)",
            [CHANNEL.into()],
        ))
        .await;
    if let Err(e) = sent {
        tracing::debug!(error = %e, "live updates: cannot announce a snapshot");
    }
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
        let mut marks = tokio::time::interval(MARK_EVERY);
        marks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut announced = false;
        loop {
            let received = tokio::select! {
                received = listener.try_recv() => received,
                _ = marks.tick() => {
                    // Feeds over many conversations move their horizon on these (their
                    // positions stay short); none is needed while nothing is announced.
                    if announced && topics.tracked.receiver_count() > 0 {
                        announced = false;
                        let db = db.clone();
                        tokio::spawn(async move { mark(&db).await });
                    }
                    continue;
                }
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
                    announced |= payloads.iter().any(|p| !p.starts_with("s:"));
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
/// however many subscribers; a third for the writing transactions of messages whose
/// payload did not carry it) and broadcasts them, and the announced snapshots, in
/// announcement order. When they cannot be loaded, subscribers are told to resync instead.
async fn deliver(db: &DatabaseConnection, topics: &Topics, payloads: &[&str]) {
    if topics.receivers() == 0 {
        return;
    }
    let changes: Vec<Announced> = payloads.iter().filter_map(|p| parse_payload(p)).collect();
    let mut message_ids = Vec::with_capacity(changes.len());
    let mut conversation_ids = Vec::with_capacity(changes.len());
    let mut unknown_txids = Vec::new();
    for change in &changes {
        if let Announced::Message {
            conversation,
            message,
            txid,
            ..
        } = change
        {
            message_ids.push(*message);
            conversation_ids.push(*conversation);
            if txid.is_none() {
                unknown_txids.push(*message);
            }
        }
    }
    conversation_ids.sort_unstable();
    conversation_ids.dedup();
    // Only the feeds that keep a position look at transactions.
    if topics.tracked.receiver_count() == 0 {
        unknown_txids.clear();
    }
    let loaded = async {
        let (messages, conversations) = if message_ids.is_empty() {
            (HashMap::new(), HashMap::new())
        } else {
            (
                query::messages_by_ids(db, &Viewer::Everyone, &message_ids).await?,
                query::conversations_by_ids(db, &Viewer::Everyone, &conversation_ids).await?,
            )
        };
        let txids = load_txids(db, &unknown_txids).await?;
        Ok::<_, Error>((messages, conversations, txids))
    }
    .await;
    let (mut messages, conversations, txids) = match loaded {
        Ok(loaded) => loaded,
        Err(e) => {
            tracing::warn!(error = %e, "live updates: cannot load announced messages; subscribers resync");
            topics.send_resync();
            return;
        }
    };
    for change in changes {
        match change {
            Announced::Message {
                conversation: conversation_id,
                message: message_id,
                txid,
                ..
            } => {
                let (Some(message), Some(conversation)) = (
                    messages.remove(&message_id),
                    conversations.get(&conversation_id),
                ) else {
                    continue;
                };
                let committed = Committed {
                    message,
                    conversation: conversation.clone(),
                    txid: txid.or_else(|| txids.get(&message_id).copied()),
                };
                topics.send_recorded(Arc::new(committed));
            }
            Announced::Horizon(horizon) => topics.send_horizon(horizon),
        }
    }
}

/// PostgreSQL: the writing transaction of each of the messages `ids`.
async fn load_txids(db: &DatabaseConnection, ids: &[i64]) -> Result<HashMap<i64, u64>> {
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(1000) {
        let list = chunk
            .iter()
            .map(i64::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let rows = db
            .query_all_raw(Statement::from_string(
                DbBackend::Postgres,
                format!(
                    "SELECT id, txid::text AS txid FROM messages \
                     WHERE id IN ({list}) AND txid IS NOT NULL"
                ),
            ))
            .await?;
        for row in rows {
            let id: i64 = row.try_get("", "id")?;
            let txid: String = row.try_get("", "txid")?;
            if let Ok(txid) = txid.parse() {
                found.insert(id, txid);
            }
        }
    }
    Ok(found)
}

/// What a database had committed at one moment: a message committed then is visible in
/// it, one committed later (or still in progress then) is not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Horizon {
    /// SQLite: the highest message id. SQLite has one writer at a time: a write
    /// transaction holds the database's write lock from its first write (or from `BEGIN
    /// IMMEDIATE`, [`crate::db::begin_write`]) to its commit, and `messages.id` is
    /// `AUTOINCREMENT`, assigned under that lock and never reused, so ids are in commit
    /// order and "id <= n" is exactly "committed when id n was the last".
    Ids(i64),
    /// PostgreSQL: a snapshot (`pg_current_snapshot()`). Transaction ids below `xmin` had
    /// ended, those from `xmax` on had not started, those in `xip` were in progress.
    Snapshot {
        /// The oldest transaction still in progress (or `xmax`).
        xmin: u64,
        /// The first transaction id not yet assigned.
        xmax: u64,
        /// The transactions in progress, ascending.
        xip: Vec<u64>,
    },
}

/// Transactions in progress a snapshot may list (a cursor with more is refused).
const XIP_MAX: usize = 10_000;

impl Horizon {
    /// Parses PostgreSQL's `xmin:xmax:xip,xip` (validated as PostgreSQL does).
    fn parse_snapshot(text: &str) -> Option<Horizon> {
        let mut parts = text.splitn(3, ':');
        let xmin: u64 = parts.next()?.parse().ok()?;
        let xmax: u64 = parts.next()?.parse().ok()?;
        let list = parts.next()?;
        let mut xip = Vec::new();
        if !list.is_empty() {
            for x in list.split(',') {
                let x: u64 = x.parse().ok()?;
                if x < xmin || x >= xmax || xip.last().is_some_and(|&last| x <= last) {
                    return None;
                }
                xip.push(x);
                if xip.len() > XIP_MAX {
                    return None;
                }
            }
        }
        (xmin >= 1 && xmin <= xmax && xmax < i64::MAX as u64).then_some(Horizon::Snapshot {
            xmin,
            xmax,
            xip,
        })
    }

    /// `xmin:xmax:xip,xip` (PostgreSQL) or the id (SQLite).
    fn text(&self) -> String {
        match self {
            Horizon::Ids(n) => n.to_string(),
            Horizon::Snapshot { xmin, xmax, xip } => {
                let xip: Vec<String> = xip.iter().map(u64::to_string).collect();
                format!("{xmin}:{xmax}:{}", xip.join(","))
            }
        }
    }

    /// Whether transaction `x` is visible in this snapshot (`pg_visible_in_snapshot`).
    fn sees_transaction(&self, x: u64) -> bool {
        match self {
            Horizon::Ids(_) => false,
            Horizon::Snapshot { xmin, xmax, xip } => {
                x < *xmin || (x < *xmax && xip.binary_search(&x).is_err())
            }
        }
    }

    /// Whether `c` was committed at this horizon (`false` when its transaction is unknown).
    fn sees(&self, c: &Committed) -> bool {
        match self {
            Horizon::Ids(n) => c.message.id <= *n,
            Horizon::Snapshot { .. } => c.txid.is_some_and(|x| self.sees_transaction(x)),
        }
    }

    /// Whether this horizon sees everything `older` sees (it was taken later).
    fn covers(&self, older: &Horizon) -> bool {
        match (self, older) {
            (Horizon::Ids(a), Horizon::Ids(b)) => a >= b,
            (
                Horizon::Snapshot { xmax, xip, .. },
                Horizon::Snapshot {
                    xmin: old_xmin,
                    xmax: old_xmax,
                    xip: old_xip,
                },
            ) => {
                // What `older` sees is below its xmax and not in its xip; this one sees it
                // unless it lists it as in progress.
                xmax >= old_xmax
                    && xip
                        .iter()
                        .take_while(|&&x| x < *old_xmax)
                        .all(|x| *x >= *old_xmin && old_xip.binary_search(x).is_ok())
            }
            _ => false,
        }
    }

    /// SQL: message `m` is visible at this horizon.
    fn sql_sees(&self) -> String {
        match self {
            Horizon::Ids(n) => format!("m.id <= {n}"),
            Horizon::Snapshot { .. } => format!(
                "pg_visible_in_snapshot(m.txid, '{}'::pg_snapshot)",
                self.text()
            ),
        }
    }

    /// SQL: message `m` is not visible at this horizon (an index range, then a check).
    fn sql_misses(&self) -> String {
        match self {
            Horizon::Ids(n) => format!("m.id > {n}"),
            Horizon::Snapshot { xmin, .. } => {
                format!("m.txid >= '{xmin}'::xid8 AND NOT {}", self.sql_sees())
            }
        }
    }

    /// The database's horizon now (on `conn`: inside a transaction, its snapshot's).
    async fn current(conn: &impl ConnectionTrait) -> Result<Horizon> {
        match conn.get_database_backend() {
            DbBackend::Postgres => {
                let row = conn
                    .query_one_raw(Statement::from_string(
                        DbBackend::Postgres,
                        "SELECT pg_current_snapshot()::text AS h",
                    ))
                    .await?
                    .ok_or_else(|| Error::Internal("no snapshot".into()))?;
                let text: String = row.try_get("", "h")?;
                Horizon::parse_snapshot(&text)
                    .ok_or_else(|| Error::Internal(format!("unreadable snapshot {text}")))
            }
            backend => {
                let row = conn
                    .query_one_raw(Statement::from_string(
                        backend,
                        "SELECT COALESCE(MAX(id), 0) AS h FROM messages",
                    ))
                    .await?
                    .ok_or_else(|| Error::Internal("no highest id".into()))?;
                Ok(Horizon::Ids(row.try_get("", "h")?))
            }
        }
    }
}

/// A decoded resume position of a feed over many conversations: it covers every message
/// visible at `base`, the `delivered` ids, and, when `partial` is `(target, c, s)`, the
/// messages visible at `target` up to `(conversation_id, sequence) <= (c, s)` (a resume
/// replays in that order, so a position in the middle of a replay is its last key).
/// Resuming delivers, in order, the messages it does not cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedCursor {
    /// Everything visible here was delivered (or came before the feed).
    pub base: Horizon,
    /// Delivered since `base`.
    pub delivered: Vec<i64>,
    /// A replay in progress: its horizon and the last (conversation, sequence) delivered.
    pub partial: Option<(Horizon, i64, i64)>,
}

/// Ids a cursor may list (more is refused).
const CURSOR_IDS_MAX: usize = 10_000;

impl FeedCursor {
    const TAG: &'static str = "f1";

    /// URL-safe base64 of `f1/ENGINE/BASE/IDS[/TARGET/C/S]`.
    pub fn encode(&self) -> String {
        use base64::Engine;
        let engine = match self.base {
            Horizon::Ids(_) => "s",
            Horizon::Snapshot { .. } => "p",
        };
        let ids: Vec<String> = self.delivered.iter().map(i64::to_string).collect();
        let mut text = format!(
            "{}/{engine}/{}/{}",
            Self::TAG,
            self.base.text(),
            ids.join(",")
        );
        if let Some((target, c, s)) = &self.partial {
            text.push_str(&format!("/{}/{c}/{s}", target.text()));
        }
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    }

    /// Decodes a cursor given by a feed of `backend`; anything else is `InvalidInput` on
    /// `field`.
    pub fn decode(cursor: &str, backend: DbBackend, field: &str) -> Result<FeedCursor> {
        use base64::Engine;
        let bad = |why: &str| Error::invalid(field, format!("not a feed cursor: {why}"));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| bad("not base64"))?;
        let text = String::from_utf8(bytes).map_err(|_| bad("not text"))?;
        let parts: Vec<&str> = text.split('/').collect();
        if parts.first() != Some(&Self::TAG) || !(parts.len() == 4 || parts.len() == 7) {
            return Err(bad("unknown format"));
        }
        let postgres = match parts[1] {
            "p" => true,
            "s" => false,
            _ => return Err(bad("unknown engine")),
        };
        if postgres != (backend == DbBackend::Postgres) {
            return Err(bad("given by a server on another database engine"));
        }
        let horizon = |text: &str| -> Result<Horizon> {
            if postgres {
                Horizon::parse_snapshot(text).ok_or_else(|| bad("bad snapshot"))
            } else {
                match text.parse::<i64>() {
                    Ok(n) if n >= 0 => Ok(Horizon::Ids(n)),
                    _ => Err(bad("bad position")),
                }
            }
        };
        let base = horizon(parts[2])?;
        let mut delivered = Vec::new();
        if !parts[3].is_empty() {
            for id in parts[3].split(',') {
                delivered.push(id.parse::<i64>().map_err(|_| bad("bad id"))?);
                if delivered.len() > CURSOR_IDS_MAX {
                    return Err(bad("too many ids"));
                }
            }
        }
        let partial = if parts.len() == 7 {
            let target = horizon(parts[4])?;
            if !target.covers(&base) {
                return Err(bad("inconsistent"));
            }
            let c = parts[5].parse::<i64>().map_err(|_| bad("bad key"))?;
            let s = parts[6].parse::<i64>().map_err(|_| bad("bad key"))?;
            Some((target, c, s))
        } else {
            None
        };
        Ok(FeedCursor {
            base,
            delivered,
            partial,
        })
    }
}

/// The position of a feed over many conversations after one message (see
/// [`FeedCursor`]), cheap to keep: the ids delivered since the horizon are shared with the
/// feed and its other positions, and only encoded when asked.
#[derive(Debug, Clone)]
pub struct Position {
    base: Arc<Horizon>,
    log: Arc<Mutex<Vec<i64>>>,
    len: usize,
    partial: Option<(Arc<Horizon>, i64, i64)>,
}

impl Position {
    /// The position as a cursor.
    pub fn cursor(&self) -> FeedCursor {
        let log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        FeedCursor {
            base: self.base.as_ref().clone(),
            delivered: log[..self.len.min(log.len())].to_vec(),
            partial: self
                .partial
                .as_ref()
                .map(|(t, c, s)| (t.as_ref().clone(), *c, *s)),
        }
    }

    /// The opaque cursor to resume after this message with.
    pub fn encode(&self) -> String {
        self.cursor().encode()
    }
}

/// One message a resume replays.
#[derive(Debug, Clone, Copy)]
struct ReplayRow {
    id: i64,
    conversation_id: i64,
    sequence: i64,
    /// 0: seen by the cursor's partial target (replayed first), 1: seen by the new horizon.
    phase: i32,
}

/// Where the replayed messages of one phase stand: the position of a replayed message is
/// this base, and the phase's target up to its key.
#[derive(Debug, Clone)]
struct Phase {
    base: Arc<Horizon>,
    log: Arc<Mutex<Vec<i64>>>,
    len: usize,
    target: Arc<Horizon>,
}

/// The position-keeping of a feed over many conversations.
struct Tracker {
    /// Everything visible here was delivered (or came before the feed).
    base: Arc<Horizon>,
    /// Delivered since `base` and not known to be visible in it: (id, transaction).
    entries: Vec<(i64, Option<u64>)>,
    /// The ids of `entries`, shared with the positions given out.
    log: Arc<Mutex<Vec<i64>>>,
    /// The partial replay of the cursor the feed resumed from, until replayed.
    partial: Option<(Arc<Horizon>, i64, i64)>,
    /// Messages to replay, in order.
    replay: VecDeque<ReplayRow>,
    /// The phases of the replay in progress.
    phases: Option<[Phase; 2]>,
    /// Announcements may have been lost: read a new horizon.
    refresh: bool,
}

impl Tracker {
    fn new(base: Horizon, delivered: Vec<i64>, partial: Option<(Horizon, i64, i64)>) -> Tracker {
        Tracker {
            base: Arc::new(base),
            entries: delivered.iter().map(|&id| (id, None)).collect(),
            log: Arc::new(Mutex::new(delivered)),
            partial: partial.map(|(t, c, s)| (Arc::new(t), c, s)),
            replay: VecDeque::new(),
            phases: None,
            refresh: false,
        }
    }

    fn cursor(&self) -> FeedCursor {
        FeedCursor {
            base: self.base.as_ref().clone(),
            delivered: self.entries.iter().map(|e| e.0).collect(),
            partial: self
                .partial
                .as_ref()
                .map(|(t, c, s)| (t.as_ref().clone(), *c, *s)),
        }
    }

    /// Notes a delivered live (or caught-up) message; its position.
    fn delivered(&mut self, id: i64, txid: Option<u64>) -> Position {
        self.entries.push((id, txid));
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.push(id);
        Position {
            base: self.base.clone(),
            log: self.log.clone(),
            len: log.len(),
            partial: None,
        }
    }

    /// The position of a replayed message.
    fn replayed(&self, row: &ReplayRow) -> Option<Position> {
        let phase = &self.phases.as_ref()?[usize::from(row.phase != 0)];
        Some(Position {
            base: phase.base.clone(),
            log: phase.log.clone(),
            len: phase.len,
            partial: Some((phase.target.clone(), row.conversation_id, row.sequence)),
        })
    }

    /// A replay is done: everything its horizon sees is delivered.
    fn replay_done(&mut self) {
        if let Some([_, last]) = self.phases.take() {
            self.base = last.target;
            self.entries.clear();
            self.log = Arc::new(Mutex::new(Vec::new()));
            self.partial = None;
        }
    }

    /// A listener announced `horizon`: when it is newer, every message it sees was
    /// received before it, so the position can start from it.
    fn advance(&mut self, horizon: Arc<Horizon>) {
        if self.phases.is_some() || self.partial.is_some() || !horizon.covers(&self.base) {
            return;
        }
        self.entries
            .retain(|(_, txid)| txid.is_none_or(|x| !horizon.sees_transaction(x)));
        self.log = Arc::new(Mutex::new(self.entries.iter().map(|e| e.0).collect()));
        self.base = horizon;
    }
}

/// Reads, in one snapshot, the new horizon and the messages `cursor` does not cover (of
/// conversation `conversation` only, when given) in replay order: those the partial
/// target sees, by (conversation, sequence), then the others.
async fn replay_rows(
    db: &DatabaseConnection,
    cursor: &FeedCursor,
    conversation: Option<i64>,
) -> Result<(Horizon, Vec<ReplayRow>)> {
    let backend = db.get_database_backend();
    let options = if backend == DbBackend::Postgres {
        TransactionOptions {
            isolation_level: Some(IsolationLevel::RepeatableRead),
            access_mode: Some(AccessMode::ReadOnly),
            ..Default::default()
        }
    } else {
        TransactionOptions::default()
    };
    let txn = db.begin_with_options(options).await?;
    // The first statement takes the snapshot the second one reads.
    let horizon = Horizon::current(&txn).await?;
    let found = txn
        .query_all_raw(replay_statement(cursor, conversation, backend))
        .await?;
    txn.commit().await?;
    if found.len() > REPLAY_MAX {
        return Err(Error::invalid(
            "after",
            format!(
                "more than {REPLAY_MAX} messages were recorded since this cursor; \
                 subscribe without `after` and reload what you show"
            ),
        ));
    }
    let mut rows = Vec::with_capacity(found.len());
    for row in found {
        rows.push(ReplayRow {
            id: row.try_get("", "id")?,
            conversation_id: row.try_get("", "conversation_id")?,
            sequence: row.try_get("", "sequence")?,
            phase: row.try_get("", "phase")?,
        });
    }
    Ok((horizon, rows))
}

/// The statement [`replay_rows`] reads the messages `cursor` does not cover with (up to
/// [`REPLAY_MAX`] + 1 of them): on PostgreSQL a range of the `messages_txid` index from
/// the horizon's `xmin`, on SQLite of the primary key from its id. The rows are found in a
/// materialized CTE and sorted after: ordered in the query itself, the planner may walk
/// `(conversation_id, sequence)` over every message to skip the sort. Built from the
/// cursor's validated numbers only.
pub fn replay_statement(
    cursor: &FeedCursor,
    conversation: Option<i64>,
    backend: DbBackend,
) -> Statement {
    let mut sql = format!(
        "WITH r AS MATERIALIZED (\
         SELECT m.id, m.conversation_id, m.sequence, {} AS phase FROM messages m \
         WHERE {} AND m.conversation_id IS NOT NULL AND m.sequence IS NOT NULL",
        match &cursor.partial {
            Some((target, _, _)) => format!("CASE WHEN {} THEN 0 ELSE 1 END", target.sql_sees()),
            None => "1".to_owned(),
        },
        cursor.base.sql_misses(),
    );
    if !cursor.delivered.is_empty() {
        let ids: Vec<String> = cursor.delivered.iter().map(i64::to_string).collect();
        sql.push_str(&format!(" AND m.id NOT IN ({})", ids.join(",")));
    }
    if let Some(id) = conversation {
        sql.push_str(&format!(" AND m.conversation_id = {id}"));
    }
    if let Some((target, c, s)) = &cursor.partial {
        sql.push_str(&format!(
            " AND (NOT {} OR m.conversation_id > {c} OR (m.conversation_id = {c} AND m.sequence > {s}))",
            target.sql_sees()
        ));
    }
    sql.push_str(&format!(
        ") SELECT * FROM r ORDER BY phase, conversation_id, sequence LIMIT {}",
        REPLAY_MAX + 1
    ));
    Statement::from_string(backend, sql)
}

/// Reads, in one snapshot, what `tracker`'s position does not cover (of conversation
/// `conversation` only, when given), to be replayed before anything live, and sets the
/// phases that give each replayed message its position.
async fn start_replay(
    db: &DatabaseConnection,
    tracker: &mut Tracker,
    conversation: Option<i64>,
) -> Result<()> {
    let (horizon, rows) = replay_rows(db, &tracker.cursor(), conversation).await?;
    let target = Arc::new(horizon);
    let current = Phase {
        base: tracker.base.clone(),
        log: tracker.log.clone(),
        len: tracker.entries.len(),
        target: target.clone(),
    };
    let phases = match &tracker.partial {
        // Phase 0 finishes the cursor's own replay; what its target sees is then all
        // delivered, and phase 1 starts from it.
        Some((partial, _, _)) => [
            Phase {
                target: partial.clone(),
                ..current
            },
            Phase {
                base: partial.clone(),
                log: Arc::new(Mutex::new(Vec::new())),
                len: 0,
                target,
            },
        ],
        None => [current.clone(), current],
    };
    tracker.phases = Some(phases);
    tracker.replay = rows.into();
    if tracker.replay.is_empty() {
        tracker.replay_done();
    }
    Ok(())
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
    /// A message, in sequence order within its conversation, with its position in a
    /// feed opened with [`MessageFeed::open_tracked`].
    Message(Arc<Committed>, Option<Position>),
    /// The subscriber fell more than [`LiveOptions::buffer`] changes behind; the feed ends
    /// here. Resubscribe with `afterSequence` = `last_sequence` (of `conversation_id`).
    Lagged {
        /// The conversation of a one-conversation feed.
        conversation_id: Option<i64>,
        /// The last sequence the feed delivered in it (or started after).
        last_sequence: Option<i64>,
        /// A tracked feed's position after the last message it delivered.
        cursor: Option<FeedCursor>,
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
/// [`MessageFeed::open`] or [`MessageFeed::open_tracked`], read it with
/// [`MessageFeed::next`] or as a stream.
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
    pending: VecDeque<(Arc<Committed>, Option<Position>)>,
    /// The position of a feed opened with [`MessageFeed::open_tracked`].
    track: Option<Tracker>,
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
                "resuming needs filter.conversationId: sequences count within one conversation \
                 (to resume a feed over many conversations, use messageFeed and its cursors)",
            ));
        }
        if after_sequence.is_some_and(|n| n < 0) {
            return Err(Error::invalid(
                "afterSequence",
                "a sequence is 0 (before the first message) or more",
            ));
        }
        let mut feed = MessageFeed::subscribe(db, viewer, region, filter, options, false).await?;
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

    /// Subscribes `viewer` to the messages matching `filter` (any conversations), each
    /// delivered with its [`Position`]. With `after` (a [`FeedCursor`] such a feed gave,
    /// encoded), the messages it does not cover are replayed first, then the live ones
    /// follow, with no gap and no duplicate however the writers' commits interleave;
    /// without it, only messages committed from now on. A cursor that is not one is
    /// `InvalidInput` on `after`, as is one more than [`REPLAY_MAX`] messages behind.
    pub async fn open_tracked(
        db: &DatabaseConnection,
        viewer: Viewer,
        region: Region,
        filter: &FeedFilter,
        after: Option<&str>,
        options: LiveOptions,
    ) -> Result<MessageFeed> {
        let cursor = after
            .map(|a| FeedCursor::decode(a, db.get_database_backend(), "after"))
            .transpose()?;
        let mut feed = MessageFeed::subscribe(db, viewer, region, filter, options, true).await?;
        if let Some(id) = filter.conversation_id
            && query::find_conversation(db, &feed.matcher.viewer, id)
                .await?
                .is_none()
        {
            return Err(Error::NotFound {
                what: "conversation",
                id: id.to_string(),
            });
        }
        // The horizon is read after subscribing: what commits later is received live,
        // what committed before is visible in it.
        let tracker = match cursor {
            Some(FeedCursor {
                base,
                delivered,
                partial,
            }) => {
                let mut tracker = Tracker::new(base, delivered, partial);
                feed.start_replay(&mut tracker).await?;
                tracker
            }
            None => Tracker::new(Horizon::current(db).await?, Vec::new(), None),
        };
        feed.track = Some(tracker);
        Ok(feed)
    }

    async fn subscribe(
        db: &DatabaseConnection,
        viewer: Viewer,
        region: Region,
        filter: &FeedFilter,
        options: LiveOptions,
        tracked: bool,
    ) -> Result<MessageFeed> {
        let matcher = Matcher::new(viewer, filter, region)?;
        let hub = Hub::of(db, options);
        // Subscribe before reading the stored messages: whatever commits from now on is
        // delivered to `rx`, whatever committed before is found by the reads. A tracked
        // feed listens to all conversations: the announced horizons come there.
        let rx = if tracked {
            hub.subscribe_tracked(options.ready_timeout).await?
        } else {
            hub.subscribe(filter.conversation_id, options.ready_timeout)
                .await?
        };
        Ok(MessageFeed {
            db: db.clone(),
            rx,
            _hub: hub,
            matcher,
            last: HashMap::new(),
            behind: VecDeque::new(),
            queued: HashSet::new(),
            pending: VecDeque::new(),
            track: None,
            finished: false,
        })
    }

    /// Reads what `tracker`'s position does not cover, to be replayed before anything live.
    async fn start_replay(&self, tracker: &mut Tracker) -> Result<()> {
        start_replay(&self.db, tracker, self.matcher.conversation_id).await
    }

    /// Delivers the next page of the replay.
    async fn replay_page(&mut self) -> Result<()> {
        let Some(tracker) = self.track.as_mut() else {
            return Ok(());
        };
        let n = tracker.replay.len().min(PAGE as usize);
        let page: Vec<ReplayRow> = tracker.replay.drain(..n).collect();
        let ids: Vec<i64> = page.iter().map(|r| r.id).collect();
        let mut conversation_ids: Vec<i64> = page.iter().map(|r| r.conversation_id).collect();
        conversation_ids.sort_unstable();
        conversation_ids.dedup();
        let viewer = &self.matcher.viewer;
        let mut messages = query::messages_by_ids(&self.db, viewer, &ids).await?;
        let conversations =
            query::conversations_by_ids(&self.db, viewer, &conversation_ids).await?;
        let Some(tracker) = self.track.as_mut() else {
            return Ok(());
        };
        for row in &page {
            let (Some(message), Some(conversation)) = (
                messages.remove(&row.id),
                conversations.get(&row.conversation_id),
            ) else {
                continue;
            };
            if !self.matcher.matches(conversation)
                || self
                    .last
                    .get(&row.conversation_id)
                    .is_some_and(|&last| row.sequence <= last)
            {
                continue;
            }
            remember(&mut self.last, row.conversation_id, row.sequence);
            let position = tracker.replayed(row);
            self.pending.push_back((
                Arc::new(Committed {
                    message,
                    conversation: conversation.clone(),
                    txid: None,
                }),
                position,
            ));
        }
        if tracker.replay.is_empty() {
            tracker.replay_done();
        }
        Ok(())
    }

    /// The next item; `None` once the feed has ended. Errors (the database failing while
    /// catching up) end the feed too.
    pub async fn next(&mut self) -> Option<Result<FeedItem>> {
        loop {
            if let Some((c, position)) = self.pending.pop_front() {
                return Some(Ok(FeedItem::Message(c, position)));
            }
            if self.finished {
                return None;
            }
            if self.track.as_ref().is_some_and(|t| !t.replay.is_empty()) {
                if let Err(e) = self.replay_page().await {
                    self.finished = true;
                    return Some(Err(e));
                }
                continue;
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
            if let Some(mut tracker) = self.track.take() {
                let refresh = tracker.refresh || tracker.entries.len() >= DELIVERED_MAX;
                let started = if refresh {
                    tracker.refresh = false;
                    self.start_replay(&mut tracker).await
                } else {
                    Ok(())
                };
                self.track = Some(tracker);
                if let Err(e) = started {
                    self.finished = true;
                    return Some(Err(e));
                }
                if refresh {
                    continue;
                }
            }
            match self.rx.recv().await {
                Ok(Signal::Recorded(c)) => self.receive(c),
                Ok(Signal::Resync) => match self.track.as_mut() {
                    Some(tracker) => tracker.refresh = true,
                    None => {
                        let known: Vec<i64> = self.last.keys().copied().collect();
                        for id in known {
                            self.fall_behind(id);
                        }
                    }
                },
                Ok(Signal::Horizon(horizon)) => {
                    if let Some(tracker) = self.track.as_mut() {
                        tracker.advance(horizon);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.finished = true;
                    metrics::counter!("parley_live_lagged_total").increment(1);
                    let conversation_id = self.matcher.conversation_id;
                    let last_sequence = match &self.track {
                        Some(_) => None,
                        None => conversation_id.and_then(|id| self.last.get(&id).copied()),
                    };
                    return Some(Ok(FeedItem::Lagged {
                        conversation_id,
                        last_sequence,
                        cursor: self.track.as_ref().map(Tracker::cursor),
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
    /// already delivered (or, in a tracked feed, visible at its horizon: replayed or from
    /// before the feed), and read from the database with what precedes it when there is
    /// a gap (a lost announcement, or out-of-order publishing on SQLite).
    fn receive(&mut self, c: Arc<Committed>) {
        if !self.matcher.matches(&c.conversation) {
            return;
        }
        if self.track.as_ref().is_some_and(|t| t.base.sees(&c)) {
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
                remember(&mut self.last, id, sequence);
                let position = self
                    .track
                    .as_mut()
                    .map(|t| t.delivered(c.message.id, c.txid));
                self.pending.push_back((c, position));
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
            let position = self.track.as_mut().map(|t| t.delivered(message.id, None));
            self.pending.push_back((
                Arc::new(Committed {
                    message,
                    conversation: conversation.clone(),
                    txid: None,
                }),
                position,
            ));
        }
        self.last.insert(id, last);
        Ok(done)
    }
}

/// Notes `sequence` as the last delivered of conversation `id`; past [`REMEMBERED`]
/// conversations the map starts over.
fn remember(last: &mut HashMap<i64, i64>, id: i64, sequence: i64) {
    if last.len() >= REMEMBERED && !last.contains_key(&id) {
        last.clear();
    }
    last.insert(id, sequence);
}

/// The conversations one subscriber receives as they change: each time a message is
/// committed to one it may see that matches the filter, the conversation as loaded after
/// the commit.
///
/// A feed opened with [`ConversationFeed::open_tracked`] gives each conversation a
/// [`Position`] and resumes from one exactly. A change is a committed message (read
/// state, archiving and delivery status do not announce one), so its position is the
/// same as [`MessageFeed::open_tracked`]'s, over messages: a [`Horizon`] plus the ids
/// delivered since. Resuming replays, once each and by conversation id, every matching
/// conversation with a message the position does not cover, as it is when replayed
/// (which includes every message the replay's snapshot sees), then the live changes the
/// replay's snapshot did not see. A live change already shown by a conversation
/// delivered before (the replay, or an earlier live change whose conversation was loaded
/// after both) is not delivered again, but its position covers it.
pub struct ConversationFeed {
    db: DatabaseConnection,
    rx: broadcast::Receiver<Signal>,
    _hub: Hub,
    matcher: Matcher,
    /// A tracked feed: the last sequence each conversation was delivered with (what the
    /// subscriber's copy reflects); past [`REMEMBERED`] conversations it starts over (at
    /// worst a conversation is delivered again, unchanged).
    shown: HashMap<i64, i64>,
    pending: VecDeque<ConversationItem>,
    /// The position of a feed opened with [`ConversationFeed::open_tracked`].
    track: Option<Tracker>,
    finished: bool,
}

/// What a conversation feed yields.
#[derive(Debug, Clone)]
pub enum ConversationItem {
    /// A conversation after a change, with its position in a feed opened with
    /// [`ConversationFeed::open_tracked`].
    Conversation(Arc<conversation::Model>, Option<Position>),
    /// The subscriber fell behind; the feed ends here. Resubscribe (a tracked feed: from
    /// `cursor`), or reload the list.
    Lagged {
        /// A tracked feed's position after the last conversation it delivered.
        cursor: Option<FeedCursor>,
    },
}

impl ConversationFeed {
    /// Subscribes `viewer` to the changes of the conversations matching `filter` (its
    /// `conversation_id` narrows it to one), from now on.
    pub async fn open(
        db: &DatabaseConnection,
        viewer: Viewer,
        region: Region,
        filter: &FeedFilter,
        options: LiveOptions,
    ) -> Result<ConversationFeed> {
        ConversationFeed::subscribe(db, viewer, region, filter, options, false).await
    }

    /// Subscribes `viewer` to the changes of the conversations matching `filter`, each
    /// delivered with its [`Position`]. With `after` (a [`FeedCursor`] such a feed gave,
    /// encoded; one of [`MessageFeed::open_tracked`] means the same), every matching
    /// conversation changed since is replayed first, once, then the live changes follow,
    /// with no gap however the writers' commits interleave; without it, only changes
    /// committed from now on. A cursor that is not one is `InvalidInput` on `after`, as is
    /// one more than [`REPLAY_MAX`] messages behind.
    pub async fn open_tracked(
        db: &DatabaseConnection,
        viewer: Viewer,
        region: Region,
        filter: &FeedFilter,
        after: Option<&str>,
        options: LiveOptions,
    ) -> Result<ConversationFeed> {
        let cursor = after
            .map(|a| FeedCursor::decode(a, db.get_database_backend(), "after"))
            .transpose()?;
        let mut feed =
            ConversationFeed::subscribe(db, viewer, region, filter, options, true).await?;
        // The horizon is read after subscribing: what commits later is received live,
        // what committed before is visible in it.
        let tracker = match cursor {
            Some(FeedCursor {
                base,
                delivered,
                partial,
            }) => {
                let mut tracker = Tracker::new(base, delivered, partial);
                start_replay(db, &mut tracker, feed.matcher.conversation_id).await?;
                tracker
            }
            None => Tracker::new(Horizon::current(db).await?, Vec::new(), None),
        };
        feed.track = Some(tracker);
        Ok(feed)
    }

    async fn subscribe(
        db: &DatabaseConnection,
        viewer: Viewer,
        region: Region,
        filter: &FeedFilter,
        options: LiveOptions,
        tracked: bool,
    ) -> Result<ConversationFeed> {
        let matcher = Matcher::new(viewer, filter, region)?;
        let hub = Hub::of(db, options);
        let rx = if tracked {
            hub.subscribe_tracked(options.ready_timeout).await?
        } else {
            hub.subscribe(None, options.ready_timeout).await?
        };
        Ok(ConversationFeed {
            db: db.clone(),
            rx,
            _hub: hub,
            matcher,
            shown: HashMap::new(),
            pending: VecDeque::new(),
            track: None,
            finished: false,
        })
    }

    /// Delivers the next page of the replay: up to [`PAGE`] conversations, each once (the
    /// replay lists their messages by phase, conversation and sequence; a conversation is
    /// given the position of its last one).
    async fn replay_page(&mut self) -> Result<()> {
        let Some(tracker) = self.track.as_mut() else {
            return Ok(());
        };
        let mut page: Vec<ReplayRow> = Vec::new();
        while let Some(row) = tracker.replay.pop_front() {
            let full = page.len() == PAGE as usize;
            match page.last_mut() {
                Some(last)
                    if last.phase == row.phase && last.conversation_id == row.conversation_id =>
                {
                    *last = row;
                }
                _ if full => {
                    tracker.replay.push_front(row);
                    break;
                }
                _ => page.push(row),
            }
        }
        let mut ids: Vec<i64> = page.iter().map(|r| r.conversation_id).collect();
        ids.sort_unstable();
        ids.dedup();
        // Loaded after the replay's snapshot: each conversation shows at least every
        // message of it that snapshot sees.
        let conversations =
            query::conversations_by_ids(&self.db, &self.matcher.viewer, &ids).await?;
        let Some(tracker) = self.track.as_mut() else {
            return Ok(());
        };
        for row in &page {
            let Some(conversation) = conversations.get(&row.conversation_id) else {
                continue;
            };
            // Phase 1 of a conversation phase 0 delivered: that copy shows it already.
            if !self.matcher.matches(conversation)
                || self
                    .shown
                    .get(&row.conversation_id)
                    .is_some_and(|&shown| row.sequence <= shown)
            {
                continue;
            }
            remember(
                &mut self.shown,
                conversation.id,
                conversation.last_sequence.max(row.sequence),
            );
            self.pending.push_back(ConversationItem::Conversation(
                Arc::new(conversation.clone()),
                tracker.replayed(row),
            ));
        }
        if tracker.replay.is_empty() {
            tracker.replay_done();
        }
        Ok(())
    }

    /// A live change of a tracked feed: skipped when its horizon sees it, noted (its
    /// position covers it) but not delivered when a conversation delivered before shows
    /// it, delivered otherwise.
    fn receive_tracked(&mut self, c: Arc<Committed>) {
        let Some(tracker) = self.track.as_mut() else {
            return;
        };
        if !self.matcher.matches(&c.conversation) || tracker.base.sees(&c) {
            return;
        }
        let id = c.conversation.id;
        let sequence = c.sequence();
        let position = tracker.delivered(c.message.id, c.txid);
        if self.shown.get(&id).is_some_and(|&shown| sequence <= shown) {
            return;
        }
        remember(
            &mut self.shown,
            id,
            c.conversation.last_sequence.max(sequence),
        );
        self.pending.push_back(ConversationItem::Conversation(
            Arc::new(c.conversation.clone()),
            Some(position),
        ));
    }

    /// The next item; `None` once the feed has ended. Errors (the database failing while
    /// replaying) end the feed too.
    pub async fn next(&mut self) -> Option<Result<ConversationItem>> {
        loop {
            if let Some(item) = self.pending.pop_front() {
                return Some(Ok(item));
            }
            if self.finished {
                return None;
            }
            if self.track.as_ref().is_some_and(|t| !t.replay.is_empty()) {
                if let Err(e) = self.replay_page().await {
                    self.finished = true;
                    return Some(Err(e));
                }
                continue;
            }
            if let Some(tracker) = self.track.as_mut()
                && (tracker.refresh || tracker.entries.len() >= DELIVERED_MAX)
            {
                tracker.refresh = false;
                if let Err(e) = start_replay(&self.db, tracker, self.matcher.conversation_id).await
                {
                    self.finished = true;
                    return Some(Err(e));
                }
                continue;
            }
            match self.rx.recv().await {
                Ok(Signal::Recorded(c)) => {
                    if self.track.is_some() {
                        self.receive_tracked(c);
                    } else if self.matcher.matches(&c.conversation) {
                        return Some(Ok(ConversationItem::Conversation(
                            Arc::new(c.conversation.clone()),
                            None,
                        )));
                    }
                }
                Ok(Signal::Resync) => {
                    if let Some(tracker) = self.track.as_mut() {
                        tracker.refresh = true;
                    }
                }
                Ok(Signal::Horizon(horizon)) => {
                    if let Some(tracker) = self.track.as_mut() {
                        tracker.advance(horizon);
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    self.finished = true;
                    metrics::counter!("parley_live_lagged_total").increment(1);
                    return Some(Ok(ConversationItem::Lagged {
                        cursor: self.track.as_ref().map(Tracker::cursor),
                    }));
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// The feed as a stream.
    pub fn into_stream(self) -> impl Stream<Item = Result<ConversationItem>> + Send {
        futures::stream::unfold(self, |mut feed| async move {
            feed.next().await.map(|item| (item, feed))
        })
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::DbBackend;

    use super::{Announced, FeedCursor, Horizon, parse_payload};

    fn snapshot(xmin: u64, xmax: u64, xip: &[u64]) -> Horizon {
        Horizon::Snapshot {
            xmin,
            xmax,
            xip: xip.to_vec(),
        }
    }

    #[test]
    fn payloads_carry_ids_and_the_transaction_or_a_snapshot() {
        let message = |txid| Announced::Message {
            conversation: 12,
            message: 345,
            sequence: 6,
            txid,
        };
        assert_eq!(parse_payload("12:345:6"), Some(message(None)));
        assert_eq!(parse_payload("12:345:6:789"), Some(message(Some(789))));
        assert_eq!(parse_payload("12:345"), None);
        assert_eq!(parse_payload("12:345:6:7:8"), None);
        assert_eq!(parse_payload("12:345:6:x"), None);
        assert_eq!(parse_payload("a:b:c"), None);
        assert_eq!(
            parse_payload("s:10:14:11,13"),
            Some(Announced::Horizon(snapshot(10, 14, &[11, 13])))
        );
        assert_eq!(
            parse_payload("s:10:10:"),
            Some(Announced::Horizon(snapshot(10, 10, &[])))
        );
        // As PostgreSQL validates a snapshot: in-progress ids within [xmin, xmax), ascending.
        for bad in [
            "s:10:14:9",
            "s:10:14:14",
            "s:10:14:13,11",
            "s:14:10:",
            "s:10:14",
        ] {
            assert_eq!(parse_payload(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_snapshot_sees_what_ended_before_it() {
        let s = snapshot(10, 14, &[11, 13]);
        let sees: Vec<u64> = (5..20).filter(|&x| s.sees_transaction(x)).collect();
        assert_eq!(sees, [5, 6, 7, 8, 9, 10, 12]);
    }

    #[test]
    fn a_later_snapshot_covers_an_earlier_one() {
        let s = snapshot(10, 14, &[11, 13]);
        assert!(s.covers(&s));
        assert!(snapshot(11, 16, &[11, 15]).covers(&s));
        assert!(snapshot(16, 16, &[]).covers(&s));
        // 12 ended before `s`: a snapshot listing it in progress is older.
        assert!(!snapshot(10, 14, &[11, 12, 13]).covers(&s));
        assert!(!snapshot(10, 13, &[11]).covers(&s));
        assert!(!s.covers(&snapshot(11, 16, &[11, 15])));
        assert!(Horizon::Ids(5).covers(&Horizon::Ids(5)));
        assert!(!Horizon::Ids(4).covers(&Horizon::Ids(5)));
        assert!(!Horizon::Ids(5).covers(&s));
    }

    #[test]
    fn cursors_round_trip_and_anything_else_is_refused() {
        for (cursor, backend) in [
            (
                FeedCursor {
                    base: snapshot(10, 14, &[11, 13]),
                    delivered: vec![7, 9],
                    partial: Some((snapshot(12, 20, &[13]), 4, 2)),
                },
                DbBackend::Postgres,
            ),
            (
                FeedCursor {
                    base: Horizon::Ids(41),
                    delivered: vec![],
                    partial: None,
                },
                DbBackend::Sqlite,
            ),
        ] {
            let text = cursor.encode();
            assert_eq!(FeedCursor::decode(&text, backend, "after").unwrap(), cursor);
            let other = if backend == DbBackend::Sqlite {
                DbBackend::Postgres
            } else {
                DbBackend::Sqlite
            };
            assert!(FeedCursor::decode(&text, other, "after").is_err());
        }
        use base64::Engine;
        let encode = |t: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(t);
        for bad in [
            "not base64!".to_owned(),
            encode("f1/s/x/"),
            encode("f1/s/-1/"),
            encode("f2/s/1/"),
            encode("f1/s/1/a"),
            encode("f1/s/1//2/3"),
            // A partial target older than the base.
            encode("f1/s/5//4/1/1"),
        ] {
            let err = FeedCursor::decode(&bad, DbBackend::Sqlite, "after").unwrap_err();
            assert!(
                matches!(&err, crate::error::Error::InvalidInput { field, .. } if field == "after"),
                "{bad}: {err:?}"
            );
        }
    }
}
