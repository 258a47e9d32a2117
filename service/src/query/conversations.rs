//! Conversation reads: by id, by ids, by participants, the filtered count and the keyset
//! page ordered by last activity (newest first).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sea_orm::sea_query::{Alias, Asterisk, Expr, ExprTrait, JoinType, Query, SelectStatement};
use sea_orm::{ColumnTrait, Condition, EntityTrait, QueryFilter, QuerySelect, QueryTrait, Select};

use super::rows::{self, FromRow};
use super::{Count, ListOrder, MAX_IDS_PER_STATEMENT, Page, Reader, Window, keyset_page, run};
use crate::access::Viewer;
use crate::error::{Error, Result};
use crate::normalize::{self, Region};
use crate::search::{AddressPrefix, address_prefixes};
use crate::sql::Sql;
use crate::types::Channel;
use crate::{conversation, conversation_participant, db};

use conversation::Column;

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
    /// The inbox (normalized) whose state `archived` and `unread` read; set by
    /// [`crate::state::resolve_filter_inbox`]. With either of them, only that inbox's
    /// conversations match.
    pub inbox: Option<String>,
    /// Only conversations archived (`true`) or not archived (`false`) for `inbox`.
    pub archived: Option<bool>,
    /// Only conversations with (`true`) or without (`false`) unread messages for `inbox`.
    pub unread: Option<bool>,
    /// Only conversations with a participant whose normalized address starts with this
    /// (phone digits in any spelling, or part of an email address: see
    /// [`crate::search::address_prefixes`]).
    pub participant_prefix: Option<String>,
}

/// A conversation by id; `None` when there is none or `viewer` may not see it (the same
/// answer, so an id's existence does not leak).
pub async fn find_conversation(
    db: &impl Reader,
    viewer: &Viewer,
    id: i64,
) -> Result<Option<conversation::Model>> {
    let select = visible(conversations().filter(Column::Id.eq(id)), viewer);
    Ok(run::one(db, select.into_query()).await?)
}

/// A conversation by id (as [`find_conversation`]) with a page of its thread (as
/// [`super::list_messages_batch`] gives it), in one statement: the lookup, and the page
/// left-joined to it. A thread request is then one round trip to the database, where the
/// lookup and the page one after the other are two. The page is read only when the lookup
/// finds the conversation visible to `viewer`; `None` when it does not.
pub async fn find_conversation_with_thread(
    db: &impl Reader,
    viewer: &Viewer,
    id: i64,
    filter: &super::MessageFilter,
    window: &Window,
) -> Result<Option<(conversation::Model, Page<crate::message::Model>)>> {
    let rows = run::raw(db, conversation_with_thread(viewer, id, filter, window)).await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    rows::check_columns::<conversation::Model>(first)?;
    rows::check_columns_at::<crate::message::Model>(first, rows::CONVERSATION_COLUMNS)?;
    let conversation = conversation::Model::from_row(first)?;
    let mut messages = Vec::with_capacity(rows.len());
    for row in &rows {
        if let Some(m) = rows::message_after_conversation(row)? {
            messages.push(m);
        }
    }
    // A join does not promise the subquery's order.
    let page = super::messages::thread_page(messages, window);
    Ok(Some((conversation, page)))
}

/// The statement of [`find_conversation_with_thread`]: the lookup (one row by primary key,
/// if `viewer` sees it) left-joined to the thread's page ([`super::message_page`], one range
/// of the thread's index); a row per message, or one with the message's columns NULL.
pub fn conversation_with_thread(
    viewer: &Viewer,
    id: i64,
    filter: &super::MessageFilter,
    window: &Window,
) -> SelectStatement {
    let mut lookup = visible(conversations().filter(Column::Id.eq(id)), viewer).into_query();
    lookup.limit(1);
    let page = super::messages::message_page(
        &Viewer::Everyone,
        super::MessageScope::Conversation(id),
        filter,
        window,
    )
    .into_query();
    let (c, m) = (Alias::new("c"), Alias::new("m"));
    Query::select()
        .column((c.clone(), Asterisk))
        .column((m.clone(), Asterisk))
        .from_subquery(lookup, c)
        .join_subquery(JoinType::LeftJoin, page, m, Expr::cust("1 = 1"))
        .to_owned()
}

/// `conversations` as the read side selects it: every column but `participants`, which the
/// decoder builds from `participants_key` (see [`rows`]). Built once and cloned: SeaORM
/// builds `Entity::find()` column by column and then this column list (about 30,000
/// instructions, a tenth of a thread request); the template holds the list as one piece
/// of text ([`run::columns_prebuilt`]), which a clone copies and a build writes as it is.
fn conversations() -> Select<conversation::Entity> {
    static SELECT: std::sync::LazyLock<Select<conversation::Entity>> =
        std::sync::LazyLock::new(|| {
            run::columns_prebuilt(
                conversation::Entity::find()
                    .select_only()
                    .columns(rows::CONVERSATION_READ),
            )
        });
    SELECT.clone()
}

/// `select` restricted to the conversations `viewer` sees.
fn visible(select: Select<conversation::Entity>, viewer: &Viewer) -> Select<conversation::Entity> {
    match viewer.visible(Column::Id) {
        Some(rule) => select.filter(rule),
        None => select,
    }
}

/// Conversations by ids (for batching loaders); missing ids, and those `viewer` may not
/// see, are absent. One statement per [`MAX_IDS_PER_STATEMENT`] ids.
pub async fn conversations_by_ids(
    db: &impl Reader,
    viewer: &Viewer,
    ids: &[i64],
) -> Result<HashMap<i64, conversation::Model>> {
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_IDS_PER_STATEMENT) {
        let select =
            visible(conversations(), viewer).filter(Column::Id.is_in(chunk.iter().copied()));
        let rows: Vec<conversation::Model> = run::all(db, select.into_query()).await?;
        found.extend(rows.into_iter().map(|c| (c.id, c)));
    }
    Ok(found)
}

/// The conversation these participants would share on `channel` (any spelling, any order),
/// if it exists and `viewer` may see it. Rejects addresses that do not normalize, naming
/// `participants[i]`.
pub async fn find_conversation_by_participants(
    db: &impl Reader,
    viewer: &Viewer,
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
    let select = visible(conversations(), viewer)
        .filter(Column::Channel.eq(channel))
        .filter(Column::ParticipantsKey.eq(key));
    Ok(run::one(db, select.into_query()).await?)
}

/// Normalizes the participant filter's address: with the channel's rules when it names
/// one, otherwise as an email when it has an `@` and as a phone number when not.
pub(crate) fn filter_address(
    filter: &ConversationFilter,
    region: Region,
) -> Result<Option<String>> {
    crate::state::check_filter(filter)?;
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

/// The participant prefix filter's ranges (none when it is not given).
fn filter_prefixes(filter: &ConversationFilter, region: Region) -> Result<Vec<AddressPrefix>> {
    match &filter.participant_prefix {
        Some(raw) => address_prefixes(raw, region, "filter.participantPrefix"),
        None => Ok(Vec::new()),
    }
}

/// `SELECT conversation_id FROM conversation_participants WHERE ..` any of `prefixes`:
/// each a range `[prefix, prefix + U+10FFFF)` in byte order (BINARY on SQLite, the C
/// collation of the column on PostgreSQL), which is exactly "starts with" for stored
/// addresses, over an index: the primary key `(address, conversation_id)` for addresses,
/// `conversation_participants_domain_prefix` for email domains.
fn with_prefix(prefixes: &[AddressPrefix]) -> SelectStatement {
    use conversation_participant::Column::Address;
    let mut any = Condition::any();
    for p in prefixes {
        let upper = |prefix: &str| format!("{prefix}\u{10FFFF}");
        any = any.add(match p {
            AddressPrefix::Address(a) => Condition::all()
                .add(Address.gte(a.as_str()))
                .add(Address.lt(upper(a))),
            // Spelled as the index is (literals, not parameters), so both planners match it.
            AddressPrefix::Domain(d) => Condition::all()
                .add(Expr::cust("instr(address, '@') > 0"))
                .add(Expr::cust(DOMAIN).gte(d.as_str()))
                .add(Expr::cust(DOMAIN).lt(upper(d))),
        });
    }
    Query::select()
        .column(conversation_participant::Column::ConversationId)
        .from(conversation_participant::Entity)
        .cond_where(any)
        .to_owned()
}

/// An email address's domain, as `conversation_participants_domain_prefix` indexes it.
const DOMAIN: &str = "substr(address, instr(address, '@') + 1)";

/// The predicate of `filter`, its participant already normalized, and of `viewer`'s
/// visibility. Both are subqueries on `conversation_participants`, so they stay primary-key
/// lookups there.
fn filter_condition(
    viewer: &Viewer,
    filter: &ConversationFilter,
    address: Option<String>,
    prefixes: &[AddressPrefix],
) -> Condition {
    let mut cond = Condition::all();
    if let Some(rule) = viewer.visible(Column::Id) {
        cond = cond.add(rule);
    }
    if let Some(channel) = filter.channel {
        cond = cond.add(Column::Channel.eq(channel));
    }
    if let Some(address) = address {
        let with_participant = Query::select()
            .column(conversation_participant::Column::ConversationId)
            .from(conversation_participant::Entity)
            .and_where(conversation_participant::Column::Address.eq(address))
            .to_owned();
        cond = cond.add(Column::Id.in_subquery(with_participant));
    }
    if !prefixes.is_empty() {
        cond = cond.add(Column::Id.in_subquery(with_prefix(prefixes)));
    }
    if let Some(since) = filter.active_since {
        cond = cond.add(Column::LastMessageAt.gte(since));
    }
    if let Some(before) = filter.active_before {
        cond = cond.add(Column::LastMessageAt.lt(before));
    }
    crate::state::filter_condition(cond, filter)
}

/// The statement of a page of conversations: `filter`, the window's cursor bounds as
/// row-value comparisons on `(last_message_at, id)`, ordered along the
/// `conversations_last_message_at_id` index and limited to one row past the page (the
/// has-more probe), restricted to what `viewer` sees. [`list_conversations`] runs exactly
/// this ([`super::page_statement`]). It selects every column but `participants`, which the
/// page's decoder builds from `participants_key`.
pub fn conversation_page(
    viewer: &Viewer,
    region: Region,
    filter: &ConversationFilter,
    window: &Window,
) -> Result<Select<conversation::Entity>> {
    let address = filter_address(filter, region)?;
    let prefixes = filter_prefixes(filter, region)?;
    let mut select = conversations();
    let cond = filter_condition(viewer, filter, address, &prefixes);
    if !cond.is_empty() {
        select = select.filter(cond);
    }
    Ok(keyset_page(
        select,
        (Column::LastMessageAt, Column::Id),
        ListOrder::Descending,
        window,
    ))
}

/// A page of the conversations `viewer` sees, most recent activity first (ties: higher id
/// first).
pub async fn list_conversations(
    db: &impl Reader,
    viewer: &Viewer,
    region: Region,
    filter: &ConversationFilter,
    window: &Window,
) -> Result<Page<conversation::Model>> {
    let rows = run::all(
        db,
        conversation_page(viewer, region, filter, window)?.into_query(),
    )
    .await?;
    Ok(Page::from_probe(rows, window))
}

/// A page of conversations as [`list_conversations`] reads it, with each conversation's
/// state row for `inbox` (normalized) read in the same statement: a `LEFT JOIN` on the
/// state's primary key, so a page with its states is one statement and one index probe
/// per row. `None` where the inbox has no state row (nothing read, nothing archived).
pub async fn list_conversations_with_state(
    db: &impl Reader,
    viewer: &Viewer,
    region: Region,
    filter: &ConversationFilter,
    window: &Window,
    inbox: &str,
) -> Result<Page<(conversation::Model, Option<InboxState>)>> {
    let select =
        conversation_page_with_state(db::backend(db), viewer, region, filter, window, inbox)?;
    let rows: Vec<WithState> = run::all(db, select.into_query()).await?;
    Ok(Page::from_probe(
        rows.into_iter().map(|r| (r.0, r.1)).collect(),
        window,
    ))
}

/// The statement [`list_conversations_with_state`] runs on `backend`:
/// [`conversation_page`] with the state row of `inbox` joined, its columns as
/// `state_read_up_to`, `state_sent_after`, `state_archived` after the conversation's. SQLite:
/// `LEFT JOIN conversation_states AS viewer_state ON (conversation_id, inbox)`, one
/// primary-key probe per row. PostgreSQL: `LEFT JOIN LATERAL (SELECT .. LIMIT 1) ON TRUE`,
/// which its planner does not flatten into a join, so it probes the primary key once per
/// row of the page too; a plain join was measured to be planned, without statistics, as a
/// scan of all the inbox's state rows for every row of the page.
pub fn conversation_page_with_state(
    backend: sea_orm::DbBackend,
    viewer: &Viewer,
    region: Region,
    filter: &ConversationFilter,
    window: &Window,
    inbox: &str,
) -> Result<Select<conversation::Entity>> {
    use crate::state::conversation_state::{Column as S, Entity as States};
    use sea_orm::JoinType;
    use sea_orm::sea_query::Alias;
    let s = Alias::new("viewer_state");
    let mut select = conversation_page(viewer, region, filter, window)?;
    if backend == sea_orm::DbBackend::Postgres {
        let row = Query::select()
            .columns([S::ReadUpTo, S::SentAfter, S::Archived])
            .from(States)
            .and_where(
                Expr::col((States, S::ConversationId)).equals((conversation::Entity, Column::Id)),
            )
            .and_where(Expr::col((States, S::Inbox)).eq(inbox))
            .limit(1)
            .to_owned();
        QueryTrait::query(&mut select).join_lateral(
            JoinType::LeftJoin,
            row,
            s.clone(),
            Expr::cust("TRUE"),
        );
    } else {
        QueryTrait::query(&mut select).join_as(
            JoinType::LeftJoin,
            States,
            s.clone(),
            Condition::all()
                .add(
                    Expr::col((s.clone(), S::ConversationId))
                        .equals((conversation::Entity, Column::Id)),
                )
                .add(Expr::col((s.clone(), S::Inbox)).eq(inbox)),
        );
    }
    Ok(select
        .expr_as(Expr::col((s.clone(), S::ReadUpTo)), "state_read_up_to")
        .expr_as(Expr::col((s.clone(), S::SentAfter)), "state_sent_after")
        .expr_as(Expr::col((s, S::Archived)), "state_archived"))
}

/// One inbox's state row, as a conversation page reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct InboxState {
    /// The read horizon.
    pub read_up_to: i64,
    /// The inbox's own messages after the horizon.
    pub sent_after: i64,
    /// Archived for the inbox.
    pub archived: bool,
}

/// A row of [`conversation_page_with_state`].
struct WithState(conversation::Model, Option<InboxState>);

impl FromRow for WithState {
    fn columns() -> &'static [String] {
        static NAMES: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
            let mut names = conversation::Model::columns().to_vec();
            names.extend(
                ["state_read_up_to", "state_sent_after", "state_archived"].map(String::from),
            );
            names
        });
        &NAMES
    }

    fn from_row(row: &sea_orm::QueryResult) -> std::result::Result<Self, sea_orm::DbErr> {
        // The state's columns follow the conversation's, in this order (see
        // `conversation_page_with_state`).
        Ok(WithState(
            conversation::Model::from_row(row)?,
            rows::state_at(row)?,
        ))
    }
}

/// How many of the conversations `viewer` sees match `filter`: from the counters the
/// database keeps (`conversation_counts`, a sum of at most 16 rows) when one holds exactly
/// this count ([`counted_scope`]), exact at any size; otherwise by counting the matching
/// rows, at most `limit` of them ([`Count`]: past `limit`, `limit` and not exact).
pub async fn count_conversations(
    db: &impl Reader,
    viewer: &Viewer,
    region: Region,
    filter: &ConversationFilter,
    limit: u64,
) -> Result<Count> {
    let address = filter_address(filter, region)?;
    if let Some(scope) = counted_scope(viewer, filter, address.as_deref()) {
        return counted(db, scope).await.map(Count::exact);
    }
    let prefixes = filter_prefixes(filter, region)?;
    let mut select = conversation::Entity::find()
        .select_only()
        .expr(Expr::cust("1"));
    let cond = filter_condition(viewer, filter, address, &prefixes);
    if !cond.is_empty() {
        select = select.filter(cond);
    }
    Ok(run::count_up_to(db, select.into_query(), limit).await?)
}

/// Whether [`count_conversations`] reads `filter`'s count for `viewer` from the counters
/// (constant time) rather than counting rows: what the price of a `totalCount` depends on,
/// decided before the operation runs. `filter` is as the client gave it (its `inbox` not
/// resolved yet): `archived` and `unread` always count rows, and a filter the resolver
/// will refuse answers `false`.
pub fn count_reads_counters(viewer: &Viewer, filter: &ConversationFilter, region: Region) -> bool {
    if filter.archived.is_some() || filter.unread.is_some() || filter.inbox.is_some() {
        return false;
    }
    match filter_address(filter, region) {
        Ok(address) => counted_scope(viewer, filter, address.as_deref()).is_some(),
        Err(_) => false,
    }
}

/// The `conversation_counts` scope whose sum is exactly the count of `filter` as `viewer`
/// sees it, when there is one: everything (`all`), one channel (`channel:SMS`), or the
/// conversations of one address (`address:+18045551234`), which is also what a viewer
/// acting for exactly one inbox sees. Time bounds, several inboxes (a conversation may hold
/// two of them) and combinations count rows instead. `address` is the filter's participant,
/// normalized.
pub fn counted_scope(
    viewer: &Viewer,
    filter: &ConversationFilter,
    address: Option<&str>,
) -> Option<String> {
    // Destructured so that a new filter field cannot be silently left out of this decision.
    let ConversationFilter {
        channel,
        participant: _,
        active_since,
        active_before,
        inbox: state_inbox,
        archived,
        unread,
        participant_prefix,
    } = filter;
    if active_since.is_some()
        || participant_prefix.is_some()
        || active_before.is_some()
        || state_inbox.is_some()
        || archived.is_some()
        || unread.is_some()
    {
        return None;
    }
    let inbox = match viewer {
        Viewer::Everyone => None,
        Viewer::Inboxes(list) if list.len() == 1 => Some(list[0].as_str()),
        Viewer::Inboxes(_) => return None,
    };
    match (channel, address, inbox) {
        (None, None, None) => Some("all".to_owned()),
        (Some(channel), None, None) => Some(format!("channel:{}", channel.as_str())),
        (None, Some(one), None) | (None, None, Some(one)) => Some(format!("address:{one}")),
        (None, Some(address), Some(inbox)) if address == inbox => {
            Some(format!("address:{address}"))
        }
        _ => None,
    }
}

/// The sum of `scope`'s slots in `conversation_counts` (0 when it has none).
async fn counted(db: &impl Reader, scope: String) -> Result<u64> {
    // CAST: PostgreSQL's sum of bigint is numeric.
    let mut sql =
        Sql::new("SELECT CAST(sum(n) AS bigint) AS n FROM conversation_counts WHERE scope = ");
    sql.bind(scope);
    let row = db
        .query_one_raw(sql.build(db.get_database_backend()))
        .await?;
    let n: Option<i64> = match row {
        Some(row) => row.try_get("", "n")?,
        None => None,
    };
    let n = n.unwrap_or(0);
    u64::try_from(n).map_err(|_| Error::Internal(format!("conversation count {n} is negative")))
}

#[cfg(test)]
mod tests {
    use sea_orm::{DbBackend, EntityTrait, QuerySelect, QueryTrait};

    use super::*;

    /// The cloned template builds exactly the statement it was built from.
    #[test]
    fn the_cached_select_is_the_fresh_one() {
        for backend in [DbBackend::Postgres, DbBackend::Sqlite] {
            for _ in 0..2 {
                assert_eq!(
                    conversations().build(backend).to_string(),
                    conversation::Entity::find()
                        .select_only()
                        .columns(rows::CONVERSATION_READ)
                        .build(backend)
                        .to_string()
                );
            }
        }
    }
}
