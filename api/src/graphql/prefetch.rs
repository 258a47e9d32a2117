//! Look-ahead prefetching for a page of conversations. When the query asks each
//! conversation of a page for its `lastMessage` or for one page of its `messages`, they
//! are loaded for the whole page in one statement each, right after the page itself. The
//! dataloaders would batch them too, but they batch by a time window: under CPU pressure a
//! window can close early and split a batch. Prefetching makes the statement count of a
//! page a fixed number, and saves the window's wait.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_graphql::{Context, InputType, Lookahead, Result, Value};
use service::cursor::CursorKind;
use service::query::{self, MessageFilter, Page, PageRequest, Window};
use service::{DatabaseConnection, conversation, message};

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
    /// The messaging state of the page's conversations for these inboxes (normalized):
    /// the inboxes, and the rows found (a missing row means no state yet).
    pub states: Option<(HashSet<String>, StateRows)>,
}

/// State rows by (conversation id, inbox).
pub type StateRows = HashMap<(i64, String), service::state::conversation_state::Model>;

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

/// Loads ahead what the selection of a conversation page asks of every conversation.
pub async fn prefetch(
    ctx: &Context<'_>,
    db: &DatabaseConnection,
    page: &[conversation::Model],
) -> Result<Option<Arc<Prefetched>>> {
    let look = ctx.look_ahead();
    prefetch_for(
        ctx,
        db,
        page,
        &[look.field("nodes"), look.field("edges").field("node")],
    )
    .await
}

/// Loads ahead what the selection of one conversation field (`conversation(id:)`) asks for.
pub async fn prefetch_one(
    ctx: &Context<'_>,
    db: &DatabaseConnection,
    conversation: &conversation::Model,
) -> Result<Option<Arc<Prefetched>>> {
    prefetch_for(
        ctx,
        db,
        std::slice::from_ref(conversation),
        &[ctx.look_ahead()],
    )
    .await
}

/// Loads ahead for `page` what the `nodes` selections ask of each conversation.
async fn prefetch_for(
    ctx: &Context<'_>,
    db: &DatabaseConnection,
    page: &[conversation::Model],
    nodes: &[Lookahead<'_>],
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

    let inboxes = state_inboxes(ctx, nodes)?;
    if !inboxes.is_empty() {
        let keys: Vec<(i64, String)> = page
            .iter()
            .flat_map(|c| inboxes.iter().map(|i| (c.id, i.clone())))
            .collect();
        let rows = service::state::states(db, &keys).await.gql(ctx)?;
        out.states = Some((inboxes, rows));
    }

    let threads: Vec<_> = nodes
        .iter()
        .flat_map(|n| n.field("messages").selection_fields())
        .collect();
    // Only when every `messages` selection asks for the same page (aliases with different
    // arguments fall back to the loader); arguments that do not validate are left for the
    // resolver to reject with its proper error.
    let mut wanted: Option<(MessageFilter, Window)> = None;
    for field in threads {
        let Some(args) = field.arguments().ok().and_then(|a| thread_args(ctx, a)) else {
            wanted = None;
            break;
        };
        if wanted.is_some_and(|w| w != args) {
            wanted = None;
            break;
        }
        wanted = Some(args);
    }
    if let Some((filter, window)) = wanted {
        let ids: Vec<i64> = page.iter().map(|c| c.id).collect();
        let pages = query::list_messages_batch(db, &ids, &filter, &window)
            .await
            .gql(ctx)?;
        out.threads = Some((filter, window, pages));
    }
    Ok(Some(Arc::new(out)))
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

/// The inboxes the `viewerState` / `unreadCount` selections of a page may ask for: each
/// `inbox` argument normalized (as an email when it has `@`, else as a phone number), and
/// the principal's own inboxes for a `viewerState` without one. An argument that does not
/// normalize is left out (the resolver reports it).
fn state_inboxes(ctx: &Context<'_>, nodes: &[Lookahead<'_>]) -> Result<HashSet<String>> {
    let mut inboxes = HashSet::new();
    let fields: Vec<_> = nodes
        .iter()
        .flat_map(|n| {
            let mut f = n.field("viewerState").selection_fields();
            f.extend(n.field("unreadCount").selection_fields());
            f
        })
        .collect();
    if fields.is_empty() {
        return Ok(inboxes);
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
                let channel = if raw.contains('@') {
                    service::Channel::Email
                } else {
                    service::Channel::Sms
                };
                if let Ok(a) = service::normalize::normalize_address(channel, &raw, region) {
                    inboxes.insert(a);
                }
            }
            None => {
                if let service::access::Inboxes::Only(list) =
                    &ctx.data::<service::Principal>()?.inboxes
                {
                    inboxes.extend(list.iter().cloned());
                }
            }
        }
    }
    Ok(inboxes)
}
