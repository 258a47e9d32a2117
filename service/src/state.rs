//! Per-(conversation, inbox) messaging state (SPEC section 14): the read horizon with its
//! O(1) unread count, and the archive flag.
//!
//! An inbox is a participant address of the conversation. A principal sets and reads the
//! state of the inboxes it acts for (`admin`: any participant); it may leave the inbox out
//! when it acts for exactly one participant of the conversation.

use std::collections::HashMap;

use sea_orm::{ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter};

use crate::access::{Inboxes, Principal};
use crate::error::{Error, Result};
use crate::normalize::{self, Region};
use crate::query::{self, MAX_IDS_PER_STATEMENT};
use crate::record::now;
use crate::sql::Sql;
use crate::types::Direction;
use crate::{conversation, db, message};

pub use entity::conversation_state;

thread_local! {
    /// The last inbox normalized on this thread: a page of 50 conversations names the same
    /// inbox 50 times, and normalizing an address (IDNA for email) is most of the cost of
    /// `viewerState`. Normalization is a pure function of these inputs.
    static LAST_INBOX: std::cell::RefCell<Option<(crate::types::Channel, Region, String, String)>> =
        const { std::cell::RefCell::new(None) };
}

/// [`normalize::normalize_address`], remembering the last answer on this thread.
fn normalize_inbox(
    channel: crate::types::Channel,
    raw: &str,
    region: Region,
) -> std::result::Result<String, String> {
    let hit = LAST_INBOX.with_borrow(|last| {
        last.as_ref()
            .filter(|(c, r, s, _)| *c == channel && *r == region && s == raw)
            .map(|(_, _, _, address)| address.clone())
    });
    if let Some(address) = hit {
        return Ok(address);
    }
    let address = normalize::normalize_address(channel, raw, region).map_err(|e| e.to_string())?;
    LAST_INBOX.with_borrow_mut(|last| {
        *last = Some((channel, region, raw.to_owned(), address.clone()));
    });
    Ok(address)
}

/// The inbox whose state `principal` reads or sets in `conversation`: `inbox` normalized
/// on the conversation's channel, which must be a participant the principal acts for
/// (`admin`: any participant); or, when `inbox` is `None`, the one participant the
/// principal acts for. Errors name the argument `field`.
pub fn resolve_inbox(
    principal: &Principal,
    conversation: &conversation::Model,
    inbox: Option<&str>,
    region: Region,
    field: &str,
) -> Result<String> {
    let Some(raw) = inbox else {
        let participants = normalize::split_participants_key(&conversation.participants_key);
        let mine: Vec<&String> = match &principal.inboxes {
            Inboxes::All => Vec::new(),
            Inboxes::Only(_) => participants
                .iter()
                .filter(|p| principal.inboxes.acts_for(p))
                .collect(),
        };
        return match mine.as_slice() {
            [one] if !matches!(principal.inboxes, Inboxes::All) => Ok((*one).clone()),
            _ => Err(Error::invalid(
                field,
                format!(
                    "name the {field}: it may be left out only when you act for exactly one participant of the conversation (you act for {})",
                    match &principal.inboxes {
                        Inboxes::All => "every address".to_owned(),
                        Inboxes::Only(_) => format!("{} of them", mine.len()),
                    }
                ),
            )),
        };
    };
    let address =
        normalize_inbox(conversation.channel, raw, region).map_err(|e| Error::invalid(field, e))?;
    check_inbox(principal, conversation, &address, field)?;
    Ok(address)
}

/// The checks of [`resolve_inbox`] for an inbox already normalized (on the conversation's
/// channel): it must be a participant of `conversation` that `principal` acts for
/// (`admin`: any participant). Errors name the argument `field`. Allocates nothing when
/// the inbox passes, so a page of conversations can check one normalized inbox against
/// each of them cheaply.
pub fn check_inbox(
    principal: &Principal,
    conversation: &conversation::Model,
    address: &str,
    field: &str,
) -> Result<()> {
    if !normalize::participants_key_contains(&conversation.participants_key, address) {
        return Err(Error::invalid(
            field,
            format!("{field} is not a participant of the conversation"),
        ));
    }
    if !principal.scopes.admin && !principal.inboxes.acts_for(address) {
        return Err(Error::forbidden(
            field,
            format!("{field} is not one of your inboxes"),
        ));
    }
    Ok(())
}

/// The conversation `principal` may see, for a state change; `NotFound` otherwise (an
/// invisible id answers like an unknown one).
async fn visible_conversation(
    db: &impl query::Reader,
    principal: &Principal,
    conversation_id: i64,
) -> Result<conversation::Model> {
    principal.require_read()?;
    query::find_conversation(db, &principal.viewer(), conversation_id)
        .await?
        .ok_or_else(|| Error::NotFound {
            what: "conversation",
            id: conversation_id.to_string(),
        })
}

/// Archives (or unarchives) `conversation_id` for an inbox (see [`resolve_inbox`]); a new
/// inbound message to that inbox unarchives it again. Returns the conversation and the
/// inbox.
pub async fn set_archived(
    db: &DatabaseConnection,
    principal: &Principal,
    region: Region,
    conversation_id: i64,
    inbox: Option<&str>,
    archived: bool,
) -> Result<(conversation::Model, String)> {
    let conversation = visible_conversation(db, principal, conversation_id).await?;
    let inbox = resolve_inbox(principal, &conversation, inbox, region, "inbox")?;
    let txn = db::begin_write(db).await?;
    let mut upsert = Sql::new(
        "INSERT INTO conversation_states (conversation_id, inbox, read_up_to, sent_after, \
         archived, updated_at) VALUES (",
    );
    upsert
        .bind(conversation.id)
        .push(", ")
        .bind(inbox.as_str())
        .push(", 0, 0, ")
        .bind(archived)
        .push(", ")
        .bind(now())
        .push(
            ") ON CONFLICT (conversation_id, inbox) DO UPDATE SET archived = excluded.archived, \
             updated_at = excluded.updated_at",
        );
    txn.execute_raw(upsert.build(db::backend(&*txn))).await?;
    txn.commit().await?;
    Ok((conversation, inbox))
}

/// The state rows of `keys` (absent: the inbox has no state yet: nothing read, nothing
/// archived). One statement per chunk of conversations.
pub async fn states(
    db: &impl ConnectionTrait,
    keys: &[(i64, String)],
) -> Result<HashMap<(i64, String), conversation_state::Model>> {
    use conversation_state::Column;
    let mut out = HashMap::with_capacity(keys.len());
    for chunk in keys.chunks(MAX_IDS_PER_STATEMENT / 2) {
        let mut inboxes: Vec<&str> = chunk.iter().map(|k| k.1.as_str()).collect();
        inboxes.sort_unstable();
        inboxes.dedup();
        let rows = conversation_state::Entity::find()
            .filter(Column::ConversationId.is_in(chunk.iter().map(|k| k.0)))
            .filter(Column::Inbox.is_in(inboxes.iter().map(|s| s.to_string())))
            .all(db)
            .await?;
        for r in rows {
            let key = (r.conversation_id, r.inbox.clone());
            if chunk.contains(&key) {
                out.insert(key, r);
            }
        }
    }
    Ok(out)
}

/// The record transaction's part, under the conversation's row lock: the sender's own
/// message moves its horizon to that message (you have read what you wrote; the message
/// is the conversation's latest, so nothing of the sender's lies after it), and an INBOUND
/// message unarchives the conversation for its recipients (every participant but the
/// sender). SQLite, in process, two statements; PostgreSQL writes the same as part of the
/// record statement ([`push_fold_ctes`]).
pub(crate) async fn fold_message(
    conn: &impl ConnectionTrait,
    conversation_id: i64,
    message: &message::Model,
) -> Result<()> {
    let backend = db::backend(conn);
    if message.direction == Direction::Inbound {
        let mut sql = Sql::new("UPDATE conversation_states SET archived = ");
        sql.bind(false)
            .push(", updated_at = ")
            .bind(message.recorded_at)
            .push(" WHERE conversation_id = ")
            .bind(conversation_id)
            .push(" AND archived = ")
            .bind(true);
        if let Some(from) = &message.from_address {
            sql.push(" AND inbox <> ").bind(from.as_str());
        }
        conn.execute_raw(sql.build(backend)).await?;
    }
    let (Some(from), Some(sequence)) = (&message.from_address, message.sequence) else {
        return Ok(());
    };
    let mut sql = Sql::new(
        "INSERT INTO conversation_states (conversation_id, inbox, read_up_to, sent_after, \
         archived, updated_at) VALUES (",
    );
    sql.bind_all([
        conversation_id.into(),
        from.as_str().into(),
        sequence.into(),
        0i64.into(),
        false.into(),
        message.recorded_at.into(),
    ])
    .push(
        ") ON CONFLICT (conversation_id, inbox) DO UPDATE SET read_up_to = excluded.read_up_to, \
         sent_after = 0, updated_at = excluded.updated_at",
    );
    conn.execute_raw(sql.build(backend)).await?;
    Ok(())
}

/// PostgreSQL: [`fold_message`] as data-modifying `WITH` items of the record statement
/// ([`crate::statements::insert_and_fold`]), reading the message from `m`, the row that
/// statement inserts, so the state costs no round trip of its own. Nothing is written when
/// `m` is empty (a replayed provider id). `inbound`: the message's direction.
pub(crate) fn push_fold_ctes(sql: &mut Sql, inbound: bool) {
    sql.push(
        ", s AS (INSERT INTO conversation_states (conversation_id, inbox, read_up_to, \
         sent_after, archived, updated_at) SELECT m.conversation_id, m.from_address, \
         m.sequence, 0, false, m.recorded_at FROM m WHERE m.from_address IS NOT NULL \
         AND m.sequence IS NOT NULL ON CONFLICT (conversation_id, inbox) DO UPDATE SET \
         read_up_to = excluded.read_up_to, sent_after = 0, updated_at = excluded.updated_at)",
    );
    if inbound {
        sql.push(
            ", u AS (UPDATE conversation_states SET archived = false, updated_at = \
             m.recorded_at FROM m WHERE conversation_states.conversation_id = \
             m.conversation_id AND conversation_states.archived AND \
             conversation_states.inbox IS DISTINCT FROM m.from_address)",
        );
    }
}

/// How the horizon moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mark {
    /// `markConversationRead`: forward only, up to this sequence (the latest when `None`).
    ReadUpTo(Option<i64>),
    /// `markConversationUnread`: back to just before this sequence (never forward).
    UnreadFrom(i64),
}

/// Moves the read horizon of `conversation_id` for an inbox (see [`resolve_inbox`]):
/// `ReadUpTo` only ever moves it forward, `UnreadFrom` only ever back. Returns the
/// conversation (as of the change) and the inbox.
pub async fn mark(
    db: &DatabaseConnection,
    principal: &Principal,
    region: Region,
    conversation_id: i64,
    inbox: Option<&str>,
    mark: Mark,
) -> Result<(conversation::Model, String)> {
    let conversation = visible_conversation(db, principal, conversation_id).await?;
    let inbox = resolve_inbox(principal, &conversation, inbox, region, "inbox")?;
    let txn = db::begin_write(db).await?;
    // The conversation's row lock orders this change with the record path (which takes it
    // first too, then the state row) and with concurrent marks: each reads the horizon the
    // previous one left, so concurrent marks keep it monotonic. SQLite's write transaction
    // is exclusive already.
    let mut locked = conversation::Entity::find_by_id(conversation.id);
    if db::backend(&*txn) == sea_orm::DbBackend::Postgres {
        locked = sea_orm::QuerySelect::lock_exclusive(locked);
    }
    let conversation = locked.one(&*txn).await?.ok_or_else(|| Error::NotFound {
        what: "conversation",
        id: conversation_id.to_string(),
    })?;
    let last = conversation.last_sequence;
    let current = conversation_state::Entity::find_by_id((conversation.id, inbox.clone()))
        .one(&*txn)
        .await?;
    let (horizon, sent_after) = current
        .as_ref()
        .map(|s| (s.read_up_to, s.sent_after))
        .unwrap_or((0, 0));
    let target = match mark {
        Mark::ReadUpTo(up_to) => {
            let up_to = up_to.unwrap_or(last);
            if !(0..=last).contains(&up_to) {
                return Err(Error::invalid(
                    "upToSequence",
                    format!(
                        "upToSequence must be between 0 and the last sequence, {last} (got {up_to})"
                    ),
                ));
            }
            horizon.max(up_to)
        }
        Mark::UnreadFrom(from) => {
            if !(1..=last.max(1)).contains(&from) {
                return Err(Error::invalid(
                    "fromSequence",
                    format!(
                        "fromSequence must be between 1 and the last sequence, {last} (got {from})"
                    ),
                ));
            }
            horizon.min(from - 1)
        }
    };
    if current.is_some() && target == horizon {
        txn.commit().await?;
        return Ok((conversation, inbox));
    }
    // The inbox's own messages after the new horizon: none when there were none after the
    // old one and the horizon moved forward; counted otherwise (a range of the
    // `(conversation_id, sequence)` index).
    let sent_after = if target >= horizon && sent_after == 0 {
        0
    } else {
        sea_orm::PaginatorTrait::count(
            message::Entity::find()
                .filter(message::Column::ConversationId.eq(conversation.id))
                .filter(message::Column::Sequence.gt(target))
                .filter(message::Column::FromAddress.eq(inbox.as_str())),
            &*txn,
        )
        .await? as i64
    };
    let mut upsert = Sql::new(
        "INSERT INTO conversation_states (conversation_id, inbox, read_up_to, sent_after, \
         archived, updated_at) VALUES (",
    );
    upsert
        .bind(conversation.id)
        .push(", ")
        .bind(inbox.as_str())
        .push(", ")
        .bind(target)
        .push(", ")
        .bind(sent_after)
        .push(", ")
        .bind(false)
        .push(", ")
        .bind(now())
        .push(
            ") ON CONFLICT (conversation_id, inbox) DO UPDATE SET read_up_to = excluded.read_up_to, \
             sent_after = excluded.sent_after, updated_at = excluded.updated_at",
        );
    txn.execute_raw(upsert.build(db::backend(&*txn))).await?;
    txn.commit().await?;
    Ok((conversation, inbox))
}

/// The unread count of an inbox whose horizon is `read_up_to` with `sent_after` of its own
/// messages after it: the messages after the horizon that it did not send. O(1).
pub fn unread_count(conversation: &conversation::Model, read_up_to: i64, sent_after: i64) -> i64 {
    (last_sequence(conversation) - read_up_to - sent_after).max(0)
}

/// The highest message sequence of the conversation.
fn last_sequence(conversation: &conversation::Model) -> i64 {
    conversation.last_sequence
}

/// The inbox the conversations filter's `archived` and `unread` read, resolved for
/// `principal`: `raw` normalized (an address with `@` as an email, any other as a phone
/// number), which must be one of the principal's inboxes (`admin`: any address); or, when
/// left out, the principal's one inbox. Sets `filter.inbox`; errors name `filter.inbox`.
/// Does nothing when the filter uses neither.
pub fn resolve_filter_inbox(
    principal: &Principal,
    filter: &mut query::ConversationFilter,
    raw: Option<&str>,
    region: Region,
) -> Result<()> {
    const FIELD: &str = "filter.inbox";
    if filter.archived.is_none() && filter.unread.is_none() {
        return Ok(());
    }
    let inbox = match raw {
        Some(raw) => {
            let channel = if raw.contains('@') {
                crate::types::Channel::Email
            } else {
                crate::types::Channel::Sms
            };
            let address = normalize::normalize_address(channel, raw, region)
                .map_err(|e| Error::invalid(FIELD, e.to_string()))?;
            if !principal.scopes.admin && !principal.inboxes.acts_for(&address) {
                return Err(Error::forbidden(
                    FIELD,
                    "filter.inbox is not one of your inboxes",
                ));
            }
            address
        }
        None => match &principal.inboxes {
            Inboxes::Only(list) if list.len() == 1 => list[0].clone(),
            _ => {
                return Err(Error::invalid(
                    FIELD,
                    "name the inbox whose state `archived` and `unread` read: it may be left out only when you act for exactly one inbox",
                ));
            }
        },
    };
    filter.inbox = Some(inbox);
    Ok(())
}

/// `Ok` unless the filter uses `archived` or `unread` without an inbox.
pub(crate) fn check_filter(filter: &query::ConversationFilter) -> Result<()> {
    if filter.inbox.is_none() && (filter.archived.is_some() || filter.unread.is_some()) {
        return Err(Error::invalid(
            "filter.inbox",
            "`archived` and `unread` read one inbox's state: name it",
        ));
    }
    Ok(())
}

/// `cond` and the filter's state predicates: the inbox participates, and its state row
/// (a correlated primary-key lookup) says archived / unread. Unread compares the
/// conversation's last sequence with the horizon plus the inbox's own later messages, so
/// it stays O(1) per row.
pub(crate) fn filter_condition(
    mut cond: sea_orm::Condition,
    filter: &query::ConversationFilter,
) -> sea_orm::Condition {
    use sea_orm::sea_query::{Alias, Expr, ExprTrait, Func, Query};
    let Some(inbox) = &filter.inbox else {
        return cond;
    };
    if filter.archived.is_none() && filter.unread.is_none() {
        return cond;
    }
    use crate::conversation_participant as cp;
    use conversation_state::Column as S;
    let participating = Query::select()
        .column(cp::Column::ConversationId)
        .from(cp::Entity)
        .and_where(cp::Column::Address.eq(inbox.as_str()))
        .to_owned();
    cond = cond.add(conversation::Column::Id.in_subquery(participating));
    let s = Alias::new("inbox_state");
    let state_of = |select: &mut sea_orm::sea_query::SelectStatement| {
        select
            .from_as(conversation_state::Entity, s.clone())
            .and_where(
                Expr::col((s.clone(), S::ConversationId))
                    .equals((conversation::Entity, conversation::Column::Id)),
            )
            .and_where(Expr::col((s.clone(), S::Inbox)).eq(inbox.as_str()));
    };
    if let Some(archived) = filter.archived {
        let mut select = Query::select();
        select.expr(Expr::val(1));
        state_of(&mut select);
        select.and_where(Expr::col((s.clone(), S::Archived)).eq(true));
        let exists = Expr::exists(select.to_owned());
        cond = cond.add(if archived { exists } else { exists.not() });
    }
    if let Some(unread) = filter.unread {
        let mut select = Query::select();
        select.expr(Expr::col((s.clone(), S::ReadUpTo)).add(Expr::col((s.clone(), S::SentAfter))));
        state_of(&mut select);
        let seen = Func::coalesce([Expr::from(select.to_owned()), Expr::val(0i64)]);
        let last = Expr::col((conversation::Entity, LAST_SEQUENCE));
        cond = cond.add(if unread {
            last.gt(seen)
        } else {
            last.lte(seen)
        });
    }
    cond
}

/// The conversation column holding its highest message sequence.
const LAST_SEQUENCE: conversation::Column = conversation::Column::LastSequence;

/// `verify`'s check of the state rows of `conversations` (id -> its last sequence as its
/// messages say): each horizon lies within `0..=last sequence`, and each `sent_after` is
/// exactly the number of the inbox's own messages after the horizon. One statement per
/// chunk. Addresses stay out of the report (personal data): a drift names the
/// conversation and the column.
pub(crate) async fn verify_states(
    db: &impl ConnectionTrait,
    conversations: &HashMap<i64, i64>,
) -> Result<Vec<crate::verify::Drift>> {
    #[derive(Debug, sea_orm::FromQueryResult)]
    struct Row {
        conversation_id: i64,
        read_up_to: i64,
        sent_after: i64,
        actual_sent_after: i64,
    }
    let ids: Vec<i64> = conversations.keys().copied().collect();
    let mut drifts = Vec::new();
    for chunk in ids.chunks(MAX_IDS_PER_STATEMENT) {
        if chunk.is_empty() {
            continue;
        }
        let mut sql = Sql::new(
            "SELECT s.conversation_id, s.read_up_to, s.sent_after, (SELECT COUNT(*) FROM \
             messages m WHERE m.conversation_id = s.conversation_id AND m.from_address = \
             s.inbox AND m.sequence > s.read_up_to) AS actual_sent_after FROM \
             conversation_states s WHERE s.conversation_id IN (",
        );
        for (i, id) in chunk.iter().enumerate() {
            if i > 0 {
                sql.push(", ");
            }
            sql.bind(*id);
        }
        sql.push(") ORDER BY s.conversation_id, s.inbox");
        let rows = <Row as sea_orm::FromQueryResult>::find_by_statement(sql.build(db::backend(db)))
            .all(db)
            .await?;
        for r in rows {
            let last = conversations.get(&r.conversation_id).copied().unwrap_or(0);
            if !(0..=last).contains(&r.read_up_to) {
                drifts.push(crate::verify::Drift {
                    conversation_id: r.conversation_id,
                    field: "read_up_to",
                    stored: r.read_up_to.to_string(),
                    actual: format!("within 0..={last}"),
                });
            } else if r.sent_after != r.actual_sent_after {
                drifts.push(crate::verify::Drift {
                    conversation_id: r.conversation_id,
                    field: "sent_after",
                    stored: r.sent_after.to_string(),
                    actual: r.actual_sent_after.to_string(),
                });
            }
        }
    }
    Ok(drifts)
}

/// Part of `refresh_conversations` (backfill, `verify --repair`), after the conversations'
/// last sequences were recomputed, in the same transaction with the rows locked: horizons
/// clamped to the last sequence, then `sent_after` recounted.
pub(crate) async fn repair_states(conn: &impl ConnectionTrait, ids: &[i64]) -> Result<()> {
    let backend = db::backend(conn);
    for chunk in ids.chunks(MAX_IDS_PER_STATEMENT) {
        if chunk.is_empty() {
            continue;
        }
        let in_list = |sql: &mut Sql| {
            sql.push(" WHERE conversation_id IN (");
            for (i, id) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.bind(*id);
            }
            sql.push(")");
        };
        let mut clamp = Sql::new(
            "UPDATE conversation_states SET read_up_to = CASE WHEN read_up_to < 0 THEN 0 \
             WHEN read_up_to > (SELECT c.last_sequence FROM conversations c WHERE c.id = \
             conversation_states.conversation_id) THEN (SELECT c.last_sequence FROM \
             conversations c WHERE c.id = conversation_states.conversation_id) ELSE \
             read_up_to END",
        );
        in_list(&mut clamp);
        conn.execute_raw(clamp.build(backend)).await?;
        let mut recount = Sql::new(
            "UPDATE conversation_states SET sent_after = (SELECT COUNT(*) FROM messages m \
             WHERE m.conversation_id = conversation_states.conversation_id AND \
             m.from_address = conversation_states.inbox AND m.sequence > \
             conversation_states.read_up_to)",
        );
        in_list(&mut recount);
        conn.execute_raw(recount.build(backend)).await?;
    }
    Ok(())
}
