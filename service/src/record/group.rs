//! Group commit of one conversation's writers (issue 17).
//!
//! A process's writers to one conversation queue here, holding no pooled connection, and
//! one task per conversation (the drain) stores them: the writers that queued while it
//! stored the previous group are stored together, in queue order, in one transaction (at
//! most [`crate::Settings::record_group_max`] a group). Each message still gets its own sequence, its own
//! idempotency check and its own answer, exactly as if the group's messages had been
//! recorded one after another: the group takes the conversation's row lock once and
//! commits (and flushes the log) once, instead of once per message.
//!
//! When a message of a group fails, or turns out to be a replay of a stored provider id,
//! the group's transaction is rolled back and the group is stored again around it (see
//! [`store`]), so a failing message fails alone and a replay is answered with the original
//! as ever. A failure to reach the database (an outage, a pool timeout) is shared instead:
//! every writer queued when it happened is answered with it at once, rather than each
//! waiting its own acquire timeout in turn.
//!
//! Without the queue, every writer to a busy conversation would take a pooled connection
//! and then wait on the conversation's row lock with it, and a few hundred writers to one
//! conversation would drain the pool for everyone (issue 11). Writers of different
//! processes are still ordered by the database's row lock.
//!
//! The map holds one entry per conversation with a writer in flight; an entry leaves with
//! its last writer. The drain is a task of its own, so a writer whose request is dropped
//! (its client went away) neither cancels the others' transaction nor leaves the queue
//! without a drain.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{LazyLock, Mutex, MutexGuard};

use sea_orm::DatabaseConnection;
use tokio::sync::oneshot;

use super::{MessageRow, Stored, store_assigned};
use crate::error::{Error, Result};
use crate::headers::EmailHeaders;
use crate::normalize::Participants;
use crate::types::Kind;
use crate::{db, live};

/// The most messages one transaction stores, by default
/// ([`crate::Settings::record_group_max`], `--record-group-max`). A group updates its conversation's row once
/// per message, and PostgreSQL walks the row's versions of the same transaction on each
/// update, so a group's cost grows faster than its size: 64 keeps a group's transaction
/// short while a burst of writers still commits a few times a second per conversation.
pub const MAX_GROUP: usize = 64;

/// One message to store, owned (the drain outlives the writer's borrow).
pub(super) struct Pending {
    pub(super) input: super::NewMessage,
    pub(super) kind: Kind,
    pub(super) sent_at: chrono::DateTime<chrono::Utc>,
    pub(super) recorded_at: chrono::DateTime<chrono::Utc>,
    pub(super) participants: Participants,
    /// The participants' key ([`crate::normalize::participants_key`]).
    pub(super) key: String,
    pub(super) snippet: String,
    pub(super) headers: EmailHeaders,
}

impl Pending {
    fn row(&self) -> MessageRow<'_> {
        MessageRow {
            input: &self.input,
            kind: self.kind,
            sent_at: self.sent_at,
            recorded_at: self.recorded_at,
            assignment: Ok(&self.participants),
            headers: &self.headers,
        }
    }
}

type Waiter = (Pending, oneshot::Sender<Result<Stored>>);

/// One conversation's queue.
struct Queue {
    waiting: VecDeque<Waiter>,
    /// The most messages of a group ([`crate::Settings::record_group_max`]).
    max: usize,
}

type Queues = HashMap<String, Queue>;

fn queues() -> MutexGuard<'static, Queues> {
    static QUEUES: LazyLock<Mutex<Queues>> = LazyLock::new(Default::default);
    // Every critical section is a push, a pop or a removal: a poisoned map is still sound.
    QUEUES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Stores `pending` with the other messages queued for its conversation, at most `max` a
/// transaction, and answers what storing it did.
pub(super) async fn submit(
    db: &DatabaseConnection,
    max: usize,
    pending: Pending,
) -> Result<Stored> {
    // The conversation's channel and participants' key, within one database: writers of
    // different databases (tests open several) are never grouped.
    let conversation = format!(
        "{:x}/{}:{}",
        db::pool_id(db),
        pending.input.channel,
        pending.key
    );
    let (tx, rx) = oneshot::channel();
    let start_drain = {
        let mut queues = queues();
        match queues.get_mut(&conversation) {
            // A drain is running for this conversation: it takes this writer in turn.
            Some(queue) => {
                queue.waiting.push_back((pending, tx));
                false
            }
            None => {
                let mut queue = Queue {
                    waiting: VecDeque::new(),
                    max: max.max(1),
                };
                queue.waiting.push_back((pending, tx));
                queues.insert(conversation.clone(), queue);
                true
            }
        }
    };
    if start_drain {
        tokio::spawn(drain(db.clone(), conversation));
    }
    rx.await
        .unwrap_or_else(|_| Err(Error::Internal("the commit group's task ended".into())))
}

/// Removes the conversation's entry when the drain ends in any way, answering whoever is
/// still queued (dropping their senders) if it ends by a panic.
struct DrainGuard {
    conversation: String,
    /// Set when the drain removed the entry itself (a later drain may own it by now).
    removed: bool,
}

impl Drop for DrainGuard {
    fn drop(&mut self) {
        if !self.removed {
            queues().remove(&self.conversation);
        }
    }
}

/// Stores the conversation's queue, a group at a time, until it is empty.
async fn drain(db: DatabaseConnection, conversation: String) {
    let mut guard = DrainGuard {
        conversation,
        removed: false,
    };
    loop {
        let group: Vec<Waiter> = {
            let mut queues = queues();
            let Some(queue) = queues.get_mut(&guard.conversation) else {
                return;
            };
            if queue.waiting.is_empty() {
                // Under the map's lock: a writer arriving now starts a new drain.
                queues.remove(&guard.conversation);
                guard.removed = true;
                return;
            }
            let n = queue.waiting.len().min(queue.max);
            queue.waiting.drain(..n).collect()
        };
        metrics::histogram!("parley_record_group_size").record(group.len() as f64);
        let (pendings, senders): (Vec<Pending>, Vec<_>) = group.into_iter().unzip();
        let results = store(&db, &pendings).await;
        let shared = results.iter().find_map(|r| match r {
            Err(e) => unreachable_copy(e),
            Ok(_) => None,
        });
        for (sender, result) in senders.into_iter().zip(results) {
            // A writer that went away no longer waits for its answer.
            let _ = sender.send(result);
        }
        // The database could not be reached: everyone queued meanwhile fails the same way
        // at once, instead of each waiting its own acquire timeout in turn.
        if let Some(err) = shared {
            let waiting: Vec<Waiter> = queues()
                .get_mut(&guard.conversation)
                .map(|q| q.waiting.drain(..).collect())
                .unwrap_or_default();
            for (_, sender) in waiting {
                let _ = sender.send(Err(copy(&err)));
            }
        }
    }
}

/// Stores a group: in one transaction when every message of it can be stored. When one
/// fails or replays a stored provider id, the transaction is rolled back and the messages
/// before it are stored together, it alone (answered as ever: its own error, or the
/// original), and those after it together again. One answer per message, in order.
fn store<'a>(
    db: &'a DatabaseConnection,
    group: &'a [Pending],
) -> Pin<Box<dyn Future<Output = Vec<Result<Stored>>> + Send + 'a>> {
    Box::pin(async move {
        match group {
            [] => return Vec::new(),
            [one] => return vec![store_one(db, one).await],
            _ => {}
        }
        match store_together(db, group).await {
            Ok(stored) => stored.into_iter().map(Ok).collect(),
            // Not even the transaction could be had: every message fails the same way.
            Err(Together::Unreachable(err)) => group.iter().map(|_| Err(copy(&err))).collect(),
            // The commit failed: whether it took effect is unknown, so no message is
            // stored again; each writer is answered with the failure.
            Err(Together::Commit(err)) => {
                metrics::counter!("parley_record_failures_total").increment(group.len() as u64);
                group.iter().map(|_| Err(copy(&err))).collect()
            }
            Err(Together::Split(k)) => {
                metrics::counter!("parley_record_group_splits_total").increment(1);
                let mut results = store(db, &group[..k]).await;
                results.push(store_one(db, &group[k]).await);
                results.extend(store(db, &group[k + 1..]).await);
                results
            }
        }
    })
}

/// Why a group was not stored in one transaction.
enum Together {
    /// The database could not be reached (nothing was stored).
    Unreachable(Error),
    /// The commit failed.
    Commit(Error),
    /// The message at this index failed or was a replay: rolled back.
    Split(usize),
}

async fn store_together(
    db: &DatabaseConnection,
    group: &[Pending],
) -> std::result::Result<Vec<Stored>, Together> {
    let txn = db::begin_write(db)
        .await
        .map_err(|e| Together::Unreachable(e.into()))?;
    let mut stored = Vec::with_capacity(group.len());
    for (i, pending) in group.iter().enumerate() {
        let row = pending.row();
        // After the first message the conversation's row is this transaction's.
        let locked = match stored.last() {
            Some(Stored::New(recorded)) => recorded.conversation.as_ref(),
            _ => None,
        };
        match store_assigned(
            &txn,
            &row,
            &pending.participants,
            &pending.key,
            &pending.snippet,
            locked,
        )
        .await
        {
            Ok(Stored::New(recorded)) => stored.push(Stored::New(recorded)),
            Err(e) if unreachable_copy(&e).is_some() => {
                let _ = txn.rollback().await;
                return Err(Together::Unreachable(e));
            }
            Ok(Stored::Duplicate) | Err(_) => {
                // Dropping the transaction would roll it back too, but only later.
                let _ = txn.rollback().await;
                return Err(Together::Split(i));
            }
        }
    }
    txn.commit().await.map_err(|e| Together::Commit(e.into()))?;
    metrics::counter!("parley_record_groups_total").increment(1);
    metrics::counter!("parley_record_grouped_messages_total").increment(group.len() as u64);
    publish(db, &stored);
    Ok(stored)
}

/// One message in a transaction of its own: commits what was stored, rolls back a replay.
async fn store_one(db: &DatabaseConnection, pending: &Pending) -> Result<Stored> {
    let txn = db::begin_write(db).await?;
    let stored = match store_assigned(
        &txn,
        &pending.row(),
        &pending.participants,
        &pending.key,
        &pending.snippet,
        None,
    )
    .await
    {
        Ok(stored) => stored,
        Err(e) => {
            metrics::counter!("parley_record_failures_total").increment(1);
            return Err(e);
        }
    }
    .finish(txn)
    .await?;
    publish(db, std::slice::from_ref(&stored));
    Ok(stored)
}

/// SQLite: hands the committed messages to this process's subscribers, in commit order
/// (the drain stores one conversation's messages one group after another). PostgreSQL
/// announced them inside the transaction.
fn publish(db: &DatabaseConnection, stored: &[Stored]) {
    for s in stored {
        if let Stored::New(super::Recorded {
            message,
            conversation: Some(conversation),
            ..
        }) = s
        {
            live::publish_committed(db, message, conversation);
        }
    }
}

/// A copy of `err` when it says the database could not be reached (an outage or a pool
/// timeout): the failures a queued writer shares with the one ahead of it.
fn unreachable_copy(err: &Error) -> Option<Error> {
    match err {
        Error::PoolTimeout(d) => Some(Error::PoolTimeout(d.clone())),
        Error::Unavailable(d) => Some(Error::Unavailable(d.clone())),
        Error::Overloaded(d) => Some(Error::Overloaded(d.clone())),
        _ => None,
    }
}

/// A copy of `err` for each writer of a group (a database error's detail becomes an
/// internal one: neither is shown to clients).
fn copy(err: &Error) -> Error {
    unreachable_copy(err).unwrap_or_else(|| match err {
        Error::InvalidInput { field, reason } => Error::invalid(field.clone(), reason.clone()),
        other => Error::Internal(other.to_string()),
    })
}
