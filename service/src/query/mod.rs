//! The read side: lookups by id and by participants, and keyset pages (never OFFSET) of
//! conversations and of messages, in both directions, with exact has-more flags.
//!
//! Every statement is built with SeaORM / sea-query: no SQL text is written by hand. The
//! page statements are built by public functions ([`conversation_page`], [`message_page`],
//! [`message_batch_pages`]) that the listing functions execute, so a test can `EXPLAIN` the
//! very statement that runs. Bulk statements are split under the engines' limits (see
//! [`MAX_IDS_PER_STATEMENT`] and [`MAX_ARMS_PER_STATEMENT`]).

mod conversations;
mod messages;
mod rows;
mod run;
mod search;

pub(crate) use conversations::filter_address;
pub use conversations::{
    ConversationFilter, InboxState, conversation_page, conversation_page_with_state,
    conversation_with_thread, conversations_by_ids, count_conversations, count_reads_counters,
    counted_scope, find_conversation, find_conversation_by_participants,
    find_conversation_with_thread, list_conversations, list_conversations_with_state,
};
pub use messages::{
    MessageFilter, MessageScope, count_messages_batch, count_unassigned, count_unassigned_up_to,
    find_message, list_messages, list_messages_batch, message_batch_pages, message_page,
    messages_after_sequence, messages_after_sequence_page, messages_by_ids,
};
pub use run::{OneConnection, Pool, Reader, WARM_FOR_AT_MOST, WARM_IDLE, Warm, page_statement};
pub use search::{
    FEW_MATCHES, OwnMessages, SearchFilter, VISIBLE_FEW, WALK_SPANS, few_span_matches,
    search_messages, search_page, search_page_keys, search_page_span, search_page_visible_first,
    visible_ids, walk_span,
};

use crate::cursor::{Cursor, CursorKind, decode_cursor, encode_cursor};
use crate::error::{Error, Result};
use crate::settings::Limits;
use crate::{conversation, message};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{EntityTrait, Order, QueryFilter, QueryOrder, QuerySelect, Select};

/// The most ids one statement binds in an `IN` list; longer lists are split into several
/// statements. SQLite accepts at most 32,766 parameters per statement, PostgreSQL 65,535.
pub const MAX_IDS_PER_STATEMENT: usize = 10_000;

/// The most `UNION ALL` arms (one per conversation) one batched thread-page statement
/// holds; more conversations are split into several statements. SQLite accepts at most 500
/// terms in a compound `SELECT` (`SQLITE_MAX_COMPOUND_SELECT`).
pub const MAX_ARMS_PER_STATEMENT: usize = 400;

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

/// A `totalCount`: how many items a list holds, and whether that is all of them.
///
/// Counts read from counters (the conversation counters, a thread's `message_count`) are
/// exact at any size. Counts of matching rows stop at a limit
/// ([`crate::settings::Limits::max_count_rows`]): when more rows match, `n` is the limit
/// and `exact` is false (at least `n` match).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Count {
    /// How many were counted.
    pub n: u64,
    /// Whether `n` is the whole count; false when counting stopped at the limit.
    pub exact: bool,
}

impl Count {
    /// An exact count of `n`.
    pub fn exact(n: u64) -> Count {
        Count { n, exact: true }
    }

    /// A count of rows read with one row past `limit` (`LIMIT limit + 1`): `found` of
    /// them came back.
    pub(crate) fn up_to(found: u64, limit: u64) -> Count {
        if found > limit {
            Count {
                n: limit,
                exact: false,
            }
        } else {
            Count::exact(found)
        }
    }
}

/// The `LIMIT` of a count that stops past `limit` rows: one more, so that "exactly the
/// limit" and "more" can be told apart; kept within a signed 64-bit integer, which both
/// engines take as a `LIMIT`.
pub(crate) fn count_probe(limit: u64) -> u64 {
    std::cmp::min(limit, i64::MAX as u64 - 1) + 1
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

/// The cursor of a message in search results.
pub fn search_cursor(m: &message::Model) -> String {
    encode_cursor(
        CursorKind::SearchResult,
        Cursor {
            at: m.sent_at,
            id: m.id,
        },
    )
}

/// Whether a list runs newest first (`conversations`) or oldest first (threads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ListOrder {
    /// Larger keys first: "after" a cursor means smaller keys.
    Descending,
    /// Smaller keys first: "after" a cursor means larger keys.
    Ascending,
}

impl ListOrder {
    /// The SQL order of a page in `window`'s direction (a backward page runs reversed and
    /// is flipped back by [`Page::from_probe`]).
    pub(super) fn sql_order(self, window: &Window) -> Order {
        match (self == ListOrder::Descending) == window.forward {
            true => Order::Desc,
            false => Order::Asc,
        }
    }
}

/// The keyset part of a page statement: `window`'s cursor bounds as row-value comparisons on
/// `(at, id)` (so the composite index serves them), the order along that key, and the limit
/// of one row past the page (the has-more probe).
pub(super) fn keyset_page<E: EntityTrait>(
    mut select: Select<E>,
    (at, id): (E::Column, E::Column),
    list: ListOrder,
    window: &Window,
) -> Select<E> {
    let key = || Expr::tuple([Expr::col(at), Expr::col(id)]);
    let value = |c: Cursor| Expr::tuple([Expr::val(c.at), Expr::val(c.id)]);
    let descending = list == ListOrder::Descending;
    if let Some(c) = window.after {
        let bound = if descending {
            key().lt(value(c))
        } else {
            key().gt(value(c))
        };
        select = select.filter(bound);
    }
    if let Some(c) = window.before {
        let bound = if descending {
            key().gt(value(c))
        } else {
            key().lt(value(c))
        };
        select = select.filter(bound);
    }
    let order = list.sql_order(window);
    select
        .order_by(at, order.clone())
        .order_by(id, order)
        .limit(window.size + 1)
}
