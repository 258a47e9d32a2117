//! The read side: lookups by id and by participants, and keyset pages (never OFFSET) of
//! conversations and of messages, in both directions, with exact has-more flags.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::{ConnectionTrait, EntityTrait, FromQueryResult};

use crate::cursor::{Cursor, CursorKind, decode_cursor, encode_cursor};
use crate::error::{Error, Result};
use crate::normalize::{self, Region};
use crate::settings::Limits;
use crate::sql::Sql;
use crate::types::{Channel, Direction, Kind};
use crate::{conversation, db, message};

/// Relay-style page arguments, as the caller gave them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct PageRequest {
    /// Page forward: at most this many items after `after`.
    pub first: Option<i64>,
    /// Opaque cursor to start after.
    pub after: Option<String>,
    /// Page backward: at most this many items before `before`.
    pub last: Option<i64>,
    /// Opaque cursor to end before.
    pub before: Option<String>,
}

/// A validated page request: a direction, a size and the cursor bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    /// `true` for `first`/`after` (list order), `false` for `last`/`before`.
    pub forward: bool,
    /// Page size, within the configured limits.
    pub size: u64,
    /// Exclusive lower bound in list order.
    pub after: Option<Cursor>,
    /// Exclusive upper bound in list order.
    pub before: Option<Cursor>,
}

impl Window {
    /// Validates page arguments for a list whose cursors are of `kind`.
    pub fn new(kind: CursorKind, req: &PageRequest, limits: &Limits) -> Result<Window> {
        let check = |field: &str, n: i64| {
            if n < 1 || n as u64 > limits.max_page_size {
                Err(Error::invalid(
                    field,
                    format!(
                        "{field} must be between 1 and {} (got {n}); page through longer lists with cursors",
                        limits.max_page_size
                    ),
                ))
            } else {
                Ok(n as u64)
            }
        };
        let (forward, size) = match (req.first, req.last) {
            (Some(_), Some(_)) => {
                return Err(Error::invalid(
                    "last",
                    "pass either first (to page forward) or last (to page backward), not both",
                ));
            }
            (Some(n), None) => (true, check("first", n)?),
            (None, Some(n)) => (false, check("last", n)?),
            (None, None) => (req.before.is_none(), limits.default_page_size),
        };
        let after = req
            .after
            .as_deref()
            .map(|c| decode_cursor(kind, c))
            .transpose()?;
        let before = req
            .before
            .as_deref()
            .map(|c| decode_cursor(kind, c))
            .transpose()?;
        Ok(Window {
            forward,
            size,
            after,
            before,
        })
    }
}

/// One page of a list, in list order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page<T> {
    /// The items, in list order.
    pub items: Vec<T>,
    /// More items follow the last one (exact when paging forward; when paging backward,
    /// true when a `before` cursor was given).
    pub has_next_page: bool,
    /// More items precede the first one (exact when paging backward; when paging forward,
    /// true when an `after` cursor was given).
    pub has_previous_page: bool,
}

impl<T> Page<T> {
    fn from_probe(mut items: Vec<T>, window: &Window) -> Self {
        let more = items.len() as u64 > window.size;
        items.truncate(window.size as usize);
        if window.forward {
            Page {
                items,
                has_next_page: more,
                has_previous_page: window.after.is_some(),
            }
        } else {
            items.reverse();
            Page {
                items,
                has_next_page: window.before.is_some(),
                has_previous_page: more,
            }
        }
    }
}

/// The cursor of a conversation in `conversations`.
pub fn conversation_cursor(c: &conversation::Model) -> String {
    encode_cursor(
        CursorKind::Conversation,
        Cursor {
            at: c.last_message_at,
            id: c.id,
        },
    )
}

/// The cursor of a message in a thread or in the unassigned list.
pub fn message_cursor(m: &message::Model) -> String {
    encode_cursor(
        CursorKind::Message,
        Cursor {
            at: m.sent_at,
            id: m.id,
        },
    )
}

/// Which conversations `conversations` lists.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConversationFilter {
    /// Only this channel.
    pub channel: Option<Channel>,
    /// Only conversations with this participant (any accepted spelling).
    pub participant: Option<String>,
    /// Only conversations active at or after this time.
    pub active_since: Option<DateTime<Utc>>,
    /// Only conversations whose last activity is before this time.
    pub active_before: Option<DateTime<Utc>>,
}

/// Which messages of a thread are listed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct MessageFilter {
    /// Only this direction.
    pub direction: Option<Direction>,
    /// Only this kind.
    pub kind: Option<Kind>,
}

impl MessageFilter {
    /// Whether the filter lets every message through.
    pub fn is_empty(&self) -> bool {
        self.direction.is_none() && self.kind.is_none()
    }

    fn push(&self, sql: &mut Sql) {
        if let Some(d) = self.direction {
            sql.push(" AND direction = ").bind(d.as_str());
        }
        if let Some(k) = self.kind {
            sql.push(" AND kind = ").bind(k.as_str());
        }
    }
}

/// A conversation by id.
pub async fn find_conversation(
    db: &impl ConnectionTrait,
    id: i64,
) -> Result<Option<conversation::Model>> {
    Ok(conversation::Entity::find_by_id(id).one(db).await?)
}

/// A message by id.
pub async fn find_message(db: &impl ConnectionTrait, id: i64) -> Result<Option<message::Model>> {
    Ok(message::Entity::find_by_id(id).one(db).await?)
}

/// Conversations by ids, in one statement (for batching loaders); missing ids are absent.
pub async fn conversations_by_ids(
    db: &impl ConnectionTrait,
    ids: &[i64],
) -> Result<HashMap<i64, conversation::Model>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut sql = Sql::new("SELECT * FROM conversations WHERE id IN (");
    sql.bind_list(ids.iter().copied()).push(")");
    let rows = conversation::Entity::find()
        .from_raw_sql(sql.build(db::backend(db)))
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|c| (c.id, c)).collect())
}

/// Messages by ids, in one statement (for batching loaders); missing ids are absent.
pub async fn messages_by_ids(
    db: &impl ConnectionTrait,
    ids: &[i64],
) -> Result<HashMap<i64, message::Model>> {
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut sql = Sql::new("SELECT * FROM messages WHERE id IN (");
    sql.bind_list(ids.iter().copied()).push(")");
    let rows = message::Entity::find()
        .from_raw_sql(sql.build(db::backend(db)))
        .all(db)
        .await?;
    Ok(rows.into_iter().map(|m| (m.id, m)).collect())
}

/// The conversation these participants would share on `channel` (any spelling, any order),
/// if it exists. Rejects addresses that do not normalize, naming `participants[i]`.
pub async fn find_conversation_by_participants(
    db: &impl ConnectionTrait,
    region: Region,
    channel: Channel,
    participants: &[String],
) -> Result<Option<conversation::Model>> {
    let (first, rest) = participants
        .split_first()
        .ok_or_else(|| Error::invalid("participants", "give at least one address"))?;
    let p = normalize::participants(channel, first, rest, region).map_err(|e| {
        let field = match e.field.strip_prefix("to[") {
            Some(i) => format!(
                "participants[{}]",
                i.trim_end_matches(']').parse::<usize>().unwrap_or(0) + 1
            ),
            None => "participants[0]".to_owned(),
        };
        Error::invalid(field, e.reason.to_string())
    })?;
    let key = normalize::participants_key(&p.sorted);
    let mut sql = Sql::new("SELECT * FROM conversations WHERE channel = ");
    sql.bind(channel.as_str())
        .push(" AND participants_key = ")
        .bind(key);
    Ok(conversation::Entity::find()
        .from_raw_sql(sql.build(db::backend(db)))
        .one(db)
        .await?)
}

/// Normalizes the participant filter's address: with the channel's rules when it names
/// one, otherwise as an email when it has an `@` and as a phone number when not.
fn filter_address(filter: &ConversationFilter, region: Region) -> Result<Option<String>> {
    let Some(raw) = &filter.participant else {
        return Ok(None);
    };
    let channel = filter.channel.unwrap_or(if raw.contains('@') {
        Channel::Email
    } else {
        Channel::Sms
    });
    normalize::normalize_address(channel, raw, region)
        .map(Some)
        .map_err(|e| Error::invalid("filter.participant", e.to_string()))
}

fn push_conversation_filter(sql: &mut Sql, filter: &ConversationFilter, address: Option<String>) {
    if let Some(channel) = filter.channel {
        sql.push(" AND channel = ").bind(channel.as_str());
    }
    if let Some(address) = address {
        sql.push(
            " AND id IN (SELECT conversation_id FROM conversation_participants WHERE address = ",
        )
        .bind(address)
        .push(")");
    }
    if let Some(since) = filter.active_since {
        sql.push(" AND last_message_at >= ").bind(since);
    }
    if let Some(before) = filter.active_before {
        sql.push(" AND last_message_at < ").bind(before);
    }
}

/// A page of conversations, most recent activity first (ties: higher id first).
pub async fn list_conversations(
    db: &impl ConnectionTrait,
    region: Region,
    filter: &ConversationFilter,
    window: &Window,
) -> Result<Page<conversation::Model>> {
    let address = filter_address(filter, region)?;
    let mut sql = Sql::new("SELECT * FROM conversations WHERE 1 = 1");
    push_conversation_filter(&mut sql, filter, address);
    // List order is descending, so "after" means smaller keys.
    if let Some(c) = window.after {
        sql.push(" AND (last_message_at, id) < (")
            .bind(c.at)
            .push(", ")
            .bind(c.id)
            .push(")");
    }
    if let Some(c) = window.before {
        sql.push(" AND (last_message_at, id) > (")
            .bind(c.at)
            .push(", ")
            .bind(c.id)
            .push(")");
    }
    let order = if window.forward { "DESC" } else { "ASC" };
    sql.push(&format!(
        " ORDER BY last_message_at {order}, id {order} LIMIT {}",
        window.size + 1
    ));
    let rows = conversation::Entity::find()
        .from_raw_sql(sql.build(db::backend(db)))
        .all(db)
        .await?;
    Ok(Page::from_probe(rows, window))
}

/// How many conversations match `filter`.
pub async fn count_conversations(
    db: &impl ConnectionTrait,
    region: Region,
    filter: &ConversationFilter,
) -> Result<u64> {
    let address = filter_address(filter, region)?;
    let mut sql = Sql::new("SELECT COUNT(*) AS n FROM conversations WHERE 1 = 1");
    push_conversation_filter(&mut sql, filter, address);
    count(db, sql).await
}

/// Whose messages a message list shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageScope {
    /// One conversation's thread.
    Conversation(i64),
    /// Messages not attached to any conversation.
    Unassigned,
}

fn push_message_page(sql: &mut Sql, scope: MessageScope, filter: &MessageFilter, window: &Window) {
    match scope {
        MessageScope::Conversation(id) => {
            sql.push(" WHERE conversation_id = ").bind(id);
        }
        MessageScope::Unassigned => {
            sql.push(" WHERE conversation_id IS NULL");
        }
    }
    filter.push(sql);
    if let Some(c) = window.after {
        sql.push(" AND (sent_at, id) > (")
            .bind(c.at)
            .push(", ")
            .bind(c.id)
            .push(")");
    }
    if let Some(c) = window.before {
        sql.push(" AND (sent_at, id) < (")
            .bind(c.at)
            .push(", ")
            .bind(c.id)
            .push(")");
    }
    let order = if window.forward { "ASC" } else { "DESC" };
    sql.push(&format!(
        " ORDER BY sent_at {order}, id {order} LIMIT {}",
        window.size + 1
    ));
}

/// A page of messages, oldest first (ties: lower id first).
pub async fn list_messages(
    db: &impl ConnectionTrait,
    scope: MessageScope,
    filter: &MessageFilter,
    window: &Window,
) -> Result<Page<message::Model>> {
    let mut sql = Sql::new("SELECT * FROM messages");
    push_message_page(&mut sql, scope, filter, window);
    let rows = message::Entity::find()
        .from_raw_sql(sql.build(db::backend(db)))
        .all(db)
        .await?;
    Ok(Page::from_probe(rows, window))
}

/// The same page of several conversations' threads, in one statement: a UNION ALL of
/// one index range scan per conversation (portable; PostgreSQL's LATERAL is not in SQLite).
pub async fn list_messages_batch(
    db: &impl ConnectionTrait,
    conversation_ids: &[i64],
    filter: &MessageFilter,
    window: &Window,
) -> Result<HashMap<i64, Page<message::Model>>> {
    if conversation_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut sql = Sql::default();
    for (i, id) in conversation_ids.iter().enumerate() {
        if i > 0 {
            sql.push(" UNION ALL ");
        }
        sql.push("SELECT * FROM (SELECT * FROM messages");
        push_message_page(&mut sql, MessageScope::Conversation(*id), filter, window);
        sql.push(&format!(") AS page{i}"));
    }
    let rows = message::Entity::find()
        .from_raw_sql(sql.build(db::backend(db)))
        .all(db)
        .await?;
    let mut grouped: HashMap<i64, Vec<message::Model>> = conversation_ids
        .iter()
        .map(|id| (*id, Vec::new()))
        .collect();
    for row in rows {
        if let Some(id) = row.conversation_id {
            grouped.entry(id).or_default().push(row);
        }
    }
    // UNION ALL does not promise to keep each branch's order: restore it.
    Ok(grouped
        .into_iter()
        .map(|(id, mut rows)| {
            rows.sort_by_key(|m| (m.sent_at, m.id));
            if !window.forward {
                rows.reverse();
            }
            (id, Page::from_probe(rows, window))
        })
        .collect())
}

/// How many messages of each conversation match `filter`, in one statement.
pub async fn count_messages_batch(
    db: &impl ConnectionTrait,
    conversation_ids: &[i64],
    filter: &MessageFilter,
) -> Result<HashMap<i64, u64>> {
    if conversation_ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut sql =
        Sql::new("SELECT conversation_id, COUNT(*) AS n FROM messages WHERE conversation_id IN (");
    sql.bind_list(conversation_ids.iter().copied()).push(")");
    filter.push(&mut sql);
    sql.push(" GROUP BY conversation_id");
    #[derive(FromQueryResult)]
    struct Row {
        conversation_id: i64,
        n: i64,
    }
    let rows = Row::find_by_statement(sql.build(db::backend(db)))
        .all(db)
        .await?;
    let mut counts: HashMap<i64, u64> = conversation_ids.iter().map(|id| (*id, 0)).collect();
    for r in rows {
        counts.insert(r.conversation_id, r.n as u64);
    }
    Ok(counts)
}

/// How many messages are unassigned.
pub async fn count_unassigned(db: &impl ConnectionTrait) -> Result<u64> {
    count(
        db,
        Sql::new("SELECT COUNT(*) AS n FROM messages WHERE conversation_id IS NULL"),
    )
    .await
}

async fn count(db: &impl ConnectionTrait, sql: Sql) -> Result<u64> {
    let row = db
        .query_one_raw(sql.build(db::backend(db)))
        .await?
        .ok_or_else(|| Error::Unavailable("COUNT returned no row".into()))?;
    Ok(row.try_get::<i64>("", "n")? as u64)
}
