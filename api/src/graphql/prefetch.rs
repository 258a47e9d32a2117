//! Look-ahead prefetching for a page of conversations. When the query asks each
//! conversation of a page for its `lastMessage` or for one page of its `messages`, they
//! are loaded for the whole page in one statement each, right after the page itself; one
//! inbox's messaging state is read by the page's own statement (more inboxes: one more
//! statement). The
//! dataloaders would batch them too, but they batch by a time window: under CPU pressure a
//! window can close early and split a batch. Prefetching makes the statement count of a
//! page a fixed number, and saves the window's wait.

use std::collections::HashMap;
use std::sync::Arc;

use async_graphql::{Context, InputType, Lookahead, Result, Value};
use service::cursor::CursorKind;
use service::normalize::Region;
use service::query::{
    self, ConversationFilter, InboxState, MessageFilter, Page, PageRequest, Window,
};
use service::{Channel, DatabaseConnection, Viewer, conversation, message};

use super::error::ServiceResultExt;
use super::loaders::ThreadPageKey;
use super::types::filter::MessageFilter as GqlMessageFilter;
use crate::config::AppConfig;

/// What was loaded ahead for every conversation of a page.
#[derive(Debug, Default)]
pub struct Prefetched {
    /// Last messages by message id.
    pub last_messages: HashMap<i64, message::Model>,
    /// One page of each conversation's thread, for one filter and window.
    pub threads: Option<(MessageFilter, Window, HashMap<i64, Page<message::Model>>)>,
    /// The messaging state of the page's conversations, when the selection reads it.
    pub states: Option<PageStates>,
}

impl Prefetched {
    /// The prefetched thread page for `key`, if that is the one that was prefetched.
    pub fn thread_page(&self, key: &ThreadPageKey) -> Option<Page<message::Model>> {
        let (filter, window, pages) = self.threads.as_ref()?;
        if *filter != key.filter || *window != key.window {
            return None;
        }
        pages.get(&key.conversation_id).cloned()
    }
}

/// The messaging state of a page's conversations for the inboxes its `viewerState` and
/// `unreadCount` selections name.
#[derive(Debug, Default)]
pub struct PageStates {
    /// Each `inbox` argument as written, with the channel it was normalized for (email
    /// when it has `@`, else SMS) and its normalized address: the page normalizes an
    /// argument once, not once per conversation.
    arguments: Vec<(String, Channel, String)>,
    /// The inboxes whose rows were loaded (normalized).
    inboxes: Vec<String>,
    /// The rows found, by conversation id and the inbox's position in `inboxes` (a missing
    /// row: no state yet, nothing read, nothing archived).
    rows: HashMap<(i64, usize), InboxState>,
}

impl PageStates {
    /// The normalized address of the `inbox` argument `raw` for a conversation on
    /// `channel`, when the page normalized it for that channel.
    pub fn argument(&self, raw: &str, channel: Channel) -> Option<&str> {
        self.arguments
            .iter()
            .find(|(r, c, _)| *c == channel && r == raw)
            .map(|(_, _, address)| address.as_str())
    }

    /// The state of `inbox` (normalized) in conversation `id`, when the page loaded that
    /// inbox (the default state when it has no row).
    pub fn get(&self, id: i64, inbox: &str) -> Option<InboxState> {
        let i = self.inboxes.iter().position(|x| x == inbox)?;
        Some(self.rows.get(&(id, i)).copied().unwrap_or_default())
    }
}

/// A page of conversations and what its selection asks of each of them, loaded ahead.
/// When the selection reads the state of one inbox (the usual case: one `viewerState` or
/// `unreadCount` argument), the page's own statement reads it (a join on the state's
/// primary key), so state costs no statement of its own. The page and what is loaded ahead
/// (the last messages, say) run one after the other on one connection
/// ([`query::OneConnection`]: each connection given back to the pool costs a round trip).
pub async fn conversation_page(
    ctx: &Context<'_>,
    db: &DatabaseConnection,
    viewer: &Viewer,
    region: Region,
    filter: &ConversationFilter,
    window: &Window,
) -> Result<(Page<conversation::Model>, Option<Arc<Prefetched>>)> {
    let db = &query::OneConnection::warm(db, ctx.data::<Arc<query::Warm>>()?);
    let look = ctx.look_ahead();
    let nodes = [look.field("nodes"), look.field("edges").field("node")];
    let selection = state_selection(ctx, &nodes)?;
    let (page, joined) = match selection.inboxes.as_slice() {
        [inbox] => {
            let page =
                query::list_conversations_with_state(db, viewer, region, filter, window, inbox)
                    .await
                    .gql(ctx)?;
            let mut rows = HashMap::new();
            let mut items = Vec::with_capacity(page.items.len());
            for (c, state) in page.items {
                if let Some(state) = state {
                    rows.insert((c.id, 0), state);
                }
                items.push(c);
            }
            let page = Page {
                items,
                has_next_page: page.has_next_page,
                has_previous_page: page.has_previous_page,
            };
            (page, Some(rows))
        }
        _ => {
            let page = query::list_conversations(db, viewer, region, filter, window)
                .await
                .gql(ctx)?;
            (page, None)
        }
    };
    let prefetched = prefetch_for(ctx, db, &page.items, &nodes, selection, joined, None).await?;
    Ok((page, prefetched))
}

/// Loads ahead what the selection of one conversation field (`conversation(id:)`) asks for;
/// its thread page is `known_page` when it was read with the conversation
/// ([`query::find_conversation_with_thread`] for [`wanted_thread`]).
pub async fn prefetch_one(
    ctx: &Context<'_>,
    db: &impl query::Reader,
    conversation: &conversation::Model,
    known_page: Option<Page<message::Model>>,
) -> Result<Option<Arc<Prefetched>>> {
    let nodes = [ctx.look_ahead()];
    let selection = state_selection(ctx, &nodes)?;
    prefetch_for(
        ctx,
        db,
        std::slice::from_ref(conversation),
        &nodes,
        selection,
        None,
        known_page.map(|p| HashMap::from([(conversation.id, p)])),
    )
    .await
}

/// Loads ahead for `page` what the `nodes` selections ask of each conversation; the state
/// rows of `states` come from `joined` when the page's statement read them, and the thread
/// pages ([`wanted_thread`]) from `known_pages` when they were read already.
async fn prefetch_for(
    ctx: &Context<'_>,
    db: &impl query::Reader,
    page: &[conversation::Model],
    nodes: &[Lookahead<'_>],
    states: StateSelection,
    joined: Option<HashMap<(i64, usize), InboxState>>,
    known_pages: Option<HashMap<i64, Page<message::Model>>>,
) -> Result<Option<Arc<Prefetched>>> {
    if page.is_empty() {
        return Ok(None);
    }
    let mut out = Prefetched::default();

    if nodes.iter().any(|n| n.field("lastMessage").exists()) {
        let ids: Vec<i64> = page.iter().filter_map(|c| c.last_message_id).collect();
        let viewer = ctx.data::<service::Viewer>()?;
        out.last_messages = query::messages_by_ids(db, viewer, &ids).await.gql(ctx)?;
    }

    if !states.inboxes.is_empty() {
        let rows = match joined {
            Some(rows) => rows,
            None => {
                let keys: Vec<(i64, String)> = page
                    .iter()
                    .flat_map(|c| states.inboxes.iter().map(|i| (c.id, i.clone())))
                    .collect();
                let found = service::state::states(db, &keys).await.gql(ctx)?;
                found
                    .into_values()
                    .filter_map(|r| {
                        let i = states.inboxes.iter().position(|x| *x == r.inbox)?;
                        let state = InboxState {
                            read_up_to: r.read_up_to,
                            sent_after: r.sent_after,
                            archived: r.archived,
                        };
                        Some(((r.conversation_id, i), state))
                    })
                    .collect()
            }
        };
        out.states = Some(PageStates {
            arguments: states.arguments,
            inboxes: states.inboxes,
            rows,
        });
    }

    if let Some((filter, window)) = wanted_thread(ctx, nodes) {
        let pages = match known_pages {
            Some(pages) => pages,
            None => {
                let ids: Vec<i64> = page.iter().map(|c| c.id).collect();
                query::list_messages_batch(db, &ids, &filter, &window)
                    .await
                    .gql(ctx)?
            }
        };
        out.threads = Some((filter, window, pages));
    }
    Ok(Some(Arc::new(out)))
}

/// The one page of messages every `messages` selection of `nodes` asks for, if they all ask
/// for the same (aliases with different arguments fall back to the loader); arguments that
/// do not validate are left for the resolver to reject with its proper error.
pub fn wanted_thread(
    ctx: &Context<'_>,
    nodes: &[Lookahead<'_>],
) -> Option<(MessageFilter, Window)> {
    let threads: Vec<_> = nodes
        .iter()
        .flat_map(|n| n.field("messages").selection_fields())
        .collect();
    let mut wanted: Option<(MessageFilter, Window)> = None;
    for field in threads {
        let args = field.arguments().ok().and_then(|a| thread_args(ctx, a))?;
        if wanted.is_some_and(|w| w != args) {
            return None;
        }
        wanted = Some(args);
    }
    wanted
}

fn thread_args(
    ctx: &Context<'_>,
    args: Vec<(async_graphql::Name, Value)>,
) -> Option<(MessageFilter, Window)> {
    let config = ctx.data::<AppConfig>().ok()?;
    let mut req = PageRequest::default();
    let mut filter = MessageFilter::default();
    for (name, value) in args {
        match name.as_str() {
            "first" => req.first = <Option<i32>>::parse(Some(value)).ok()?.map(i64::from),
            "last" => req.last = <Option<i32>>::parse(Some(value)).ok()?.map(i64::from),
            "after" => req.after = <Option<String>>::parse(Some(value)).ok()?,
            "before" => req.before = <Option<String>>::parse(Some(value)).ok()?,
            "filter" => {
                filter = <Option<GqlMessageFilter>>::parse(Some(value))
                    .ok()?
                    .unwrap_or_default()
                    .into()
            }
            _ => return None,
        }
    }
    let window = Window::new(CursorKind::Message, &req, &config.settings.limits).ok()?;
    Some((filter, window))
}

/// What the `viewerState` / `unreadCount` selections of a page read.
#[derive(Debug, Default)]
struct StateSelection {
    /// Each `inbox` argument as written, with the channel it was normalized for and its
    /// address (see [`PageStates::arguments`]).
    arguments: Vec<(String, Channel, String)>,
    /// The inboxes they may ask for (normalized, sorted, without duplicates).
    inboxes: Vec<String>,
}

/// The inboxes the `viewerState` / `unreadCount` selections of a page may ask for: each
/// `inbox` argument normalized (as an email when it has `@`, else as a phone number), and
/// the principal's own inboxes for a `viewerState` without one. An argument that does not
/// normalize is left out (the resolver reports it).
fn state_selection(ctx: &Context<'_>, nodes: &[Lookahead<'_>]) -> Result<StateSelection> {
    let mut out = StateSelection::default();
    let fields: Vec<_> = nodes
        .iter()
        .flat_map(|n| {
            let mut f = n.field("viewerState").selection_fields();
            f.extend(n.field("unreadCount").selection_fields());
            f
        })
        .collect();
    if fields.is_empty() {
        return Ok(out);
    }
    let region = ctx.data::<AppConfig>()?.settings.default_region;
    for field in fields {
        let inbox = field
            .arguments()
            .ok()
            .and_then(|args| args.into_iter().find(|(name, _)| name.as_str() == "inbox"))
            .and_then(|(_, v)| <Option<String>>::parse(Some(v)).ok().flatten());
        match inbox {
            Some(raw) => {
                if out.arguments.iter().any(|(r, _, _)| *r == raw) {
                    continue;
                }
                let channel = if raw.contains('@') {
                    Channel::Email
                } else {
                    Channel::Sms
                };
                if let Ok(a) = service::normalize::normalize_address(channel, &raw, region) {
                    out.inboxes.push(a.clone());
                    out.arguments.push((raw, channel, a));
                }
            }
            None => {
                if let service::access::Inboxes::Only(list) =
                    &ctx.data::<service::Principal>()?.inboxes
                {
                    out.inboxes.extend(list.iter().cloned());
                }
            }
        }
    }
    out.inboxes.sort_unstable();
    out.inboxes.dedup();
    Ok(out)
}
