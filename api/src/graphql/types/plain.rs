//! A page's `nodes` and `edges` resolved without async-graphql's future per item and per
//! field.
//!
//! The executor resolves a list of 50 conversations as 50 item futures. Each item then
//! runs a boxed future per selected field, with a context and a path node for each, and
//! merges the results one by one. For the fields a list usually asks for (scalars read
//! from the row, and the state the page prefetched), none of that machinery is needed.
//! Here the selection is read **once per list** into a plan, and the plan is applied to
//! each row as a plain function call.
//!
//! The plan covers plain fields, aliases, `__typename`, and fragments (named or inline)
//! that apply to the type. `@skip`/`@include` are gone before execution. The list falls
//! back to the executor, and so answers as before, whenever a plan cannot be made or a
//! row cannot be answered from what is at hand:
//! - another directive;
//! - a field that loads (`lastMessage`, `messages`, `subject`, a message's status or
//!   headers, `conversation`);
//! - an argument that does not validate;
//! - an inbox whose state the page did not prefetch, or that the principal may not read.
//!
//! In all of these cases the executor then produces the error or the load, with its path.
//! The fields planned here cannot fail, so both paths give the same answer. The test
//! `paging::a_page_resolves_alike_planned_and_through_the_executor` holds them to it.

use std::borrow::Cow;
use std::sync::Arc;

use async_graphql::indexmap::IndexMap;
use async_graphql::indexmap::map::Entry;
use async_graphql::parser::types::{Field, Selection, SelectionSet};
use async_graphql::registry::Registry;
use async_graphql::resolver_utils::enum_value;
use async_graphql::{
    ContextSelectionSet, Name, OutputType, Positioned, ScalarType, ServerResult, Value,
};
use chrono::{DateTime, Utc};
use service::{Principal, conversation, message, normalize, query, snippet};

use super::enums::{Channel, Direction, MessageKind};
use super::node::{Conversation, ConversationEdge, Message, MessageEdge};
use super::snippet::snippet_length;
use super::state::ViewerState;
use crate::graphql::ids::{NodeType, encode_id};
use crate::graphql::prefetch::Prefetched;

/// The fields of `set` that apply to the object type `ty`, in selection order, with
/// fragments flattened; `None` when a directive is left (only custom ones are, and they
/// need the executor).
fn collect<'a>(
    ctx: &ContextSelectionSet<'a>,
    set: &'a Positioned<SelectionSet>,
    ty: &str,
    out: &mut Vec<&'a Positioned<Field>>,
) -> Option<()> {
    for item in &set.node.items {
        let (condition, inner) = match &item.node {
            Selection::Field(field) => {
                if !field.node.directives.is_empty() {
                    return None;
                }
                out.push(field);
                continue;
            }
            Selection::FragmentSpread(spread) => {
                if !spread.node.directives.is_empty() {
                    return None;
                }
                let fragment = ctx
                    .query_env
                    .fragments
                    .get(&spread.node.fragment_name.node)?;
                if !fragment.node.directives.is_empty() {
                    return None;
                }
                (
                    Some(fragment.node.type_condition.node.on.node.as_str()),
                    &fragment.node.selection_set,
                )
            }
            Selection::InlineFragment(fragment) => {
                if !fragment.node.directives.is_empty() {
                    return None;
                }
                (
                    fragment
                        .node
                        .type_condition
                        .as_ref()
                        .map(|c| c.node.on.node.as_str()),
                    &fragment.node.selection_set,
                )
            }
        };
        // As the executor: a fragment applies on its own type, on an interface the type
        // implements, or without a condition.
        let applies = condition.is_none_or(|c| {
            c == ty
                || ctx
                    .schema_env
                    .registry
                    .implements
                    .get(ty)
                    .is_some_and(|interfaces| interfaces.contains(c))
        });
        if applies {
            collect(ctx, inner, ty, out)?;
        }
    }
    Some(())
}

/// Adds `value` under `name` as the executor does: a key selected again merges into the
/// objects (and lists of objects) already there; a scalar already there stands. One hash
/// per key (the entry), where the executor's own version looks a key up, then inserts it.
fn insert_value(target: &mut IndexMap<Name, Value>, name: Name, value: Value) {
    match target.entry(name) {
        Entry::Vacant(slot) => {
            slot.insert(value);
        }
        Entry::Occupied(mut slot) => merge(slot.get_mut(), value),
    }
}

fn merge(into: &mut Value, value: Value) {
    match (into, value) {
        (Value::Object(into), Value::Object(from)) => {
            for (k, v) in from {
                insert_value(into, k, v);
            }
        }
        (Value::List(into), Value::List(from)) => {
            for (idx, v) in from.into_iter().enumerate() {
                if let (Some(Value::Object(into)), Value::Object(from)) = (into.get_mut(idx), v) {
                    for (k, v) in from {
                        insert_value(into, k, v);
                    }
                }
            }
        }
        _ => {}
    }
}

/// An object's value from its entries, as the executor builds it (`null` when empty).
fn object(entries: impl Iterator<Item = (Name, Value)>, len: usize) -> Value {
    let mut map = IndexMap::with_capacity(len);
    for (k, v) in entries {
        insert_value(&mut map, k, v);
    }
    if map.is_empty() {
        Value::Null
    } else {
        Value::Object(map)
    }
}

fn time(t: &DateTime<Utc>) -> Value {
    ScalarType::to_value(t)
}

fn strings(items: Vec<String>) -> Value {
    Value::List(items.into_iter().map(Value::String).collect())
}

fn json_strings(v: &serde_json::Value) -> Value {
    Value::List(
        v.as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|s| s.as_str().map(|s| Value::String(s.to_owned())))
                    .collect()
            })
            .unwrap_or_default(),
    )
}

/// The `length` argument of a `snippet` field, validated as the resolver does: `None`
/// when it is invalid (the executor then answers the error).
fn snippet_arg(ctx: &ContextSelectionSet<'_>, field: &Positioned<Field>) -> Option<(usize, bool)> {
    let ctx = ctx.with_field(field);
    let (_, length) = ctx.param_value::<Option<i32>>("length", None).ok()?;
    snippet_length(&ctx, length).ok()
}

/// A plain field of `ViewerState`.
#[derive(Clone, Copy)]
enum StateField {
    Typename,
    Inbox,
    ReadUpTo,
    UnreadCount,
    Archived,
}

/// A field of `Conversation` that a plan answers from the row (and the page's prefetch).
enum ConversationField {
    Typename,
    Id,
    Channel,
    Participants,
    Key,
    MessageCount,
    LastSequence,
    FirstMessageAt,
    LastMessageAt,
    CreatedAt,
    /// The stored snippet (`None`), or cut to a length asked for.
    Snippet(Option<usize>),
    /// `viewerState(inbox:)` with its plain fields.
    ViewerState(String, Vec<(Name, StateField)>),
    /// `unreadCount(inbox:)`.
    UnreadCount(String),
}

/// A selection on `Conversation`, read once for a whole list.
struct ConversationPlan(Vec<(Name, ConversationField)>);

impl ConversationPlan {
    fn new(ctx: &ContextSelectionSet<'_>, set: &Positioned<SelectionSet>) -> Option<Self> {
        let mut fields = Vec::new();
        collect(ctx, set, "Conversation", &mut fields)?;
        let mut plan = Vec::with_capacity(fields.len());
        for field in fields {
            let key = field.node.response_key().node.clone();
            let planned = match field.node.name.node.as_str() {
                "__typename" => ConversationField::Typename,
                "id" => ConversationField::Id,
                "channel" => ConversationField::Channel,
                "participants" => ConversationField::Participants,
                "key" => ConversationField::Key,
                "messageCount" => ConversationField::MessageCount,
                "lastSequence" => ConversationField::LastSequence,
                "firstMessageAt" => ConversationField::FirstMessageAt,
                "lastMessageAt" => ConversationField::LastMessageAt,
                "createdAt" => ConversationField::CreatedAt,
                "snippet" => {
                    let (length, asked) = snippet_arg(ctx, field)?;
                    ConversationField::Snippet(asked.then_some(length))
                }
                "viewerState" => {
                    let inbox = inbox_arg(ctx, field, "inbox")??;
                    let sub = ctx.with_selection_set(&field.node.selection_set);
                    let mut inner = Vec::new();
                    collect(&sub, &field.node.selection_set, "ViewerState", &mut inner)?;
                    let mut state = Vec::with_capacity(inner.len());
                    for f in inner {
                        let which = match f.node.name.node.as_str() {
                            "__typename" => StateField::Typename,
                            "inbox" => StateField::Inbox,
                            "readUpTo" => StateField::ReadUpTo,
                            "unreadCount" => StateField::UnreadCount,
                            "archived" => StateField::Archived,
                            _ => return None,
                        };
                        state.push((f.node.response_key().node.clone(), which));
                    }
                    ConversationField::ViewerState(inbox, state)
                }
                "unreadCount" => ConversationField::UnreadCount(inbox_arg(ctx, field, "inbox")??),
                _ => return None,
            };
            plan.push((key, planned));
        }
        Some(ConversationPlan(plan))
    }

    /// One conversation's value; `None` when the executor must answer it (a state the
    /// page did not prefetch, or one the principal may not read).
    fn value(
        &self,
        c: &conversation::Model,
        prefetched: Option<&Prefetched>,
        principal: &Principal,
    ) -> Option<Value> {
        let mut entries = Vec::with_capacity(self.0.len());
        for (key, field) in &self.0 {
            let value = match field {
                ConversationField::Typename => Value::String("Conversation".to_owned()),
                ConversationField::Id => Value::String(encode_id(NodeType::Conversation, c.id).0),
                ConversationField::Channel => enum_value(Channel::from(c.channel)),
                ConversationField::Participants => {
                    strings(normalize::split_participants_key(&c.participants_key))
                }
                ConversationField::Key => {
                    Value::String(normalize::conversation_key(c.channel, &c.participants_key))
                }
                ConversationField::MessageCount => Value::from(c.message_count),
                ConversationField::LastSequence => Value::from(c.last_sequence),
                ConversationField::FirstMessageAt => time(&c.first_message_at),
                ConversationField::LastMessageAt => time(&c.last_message_at),
                ConversationField::CreatedAt => time(&c.created_at),
                ConversationField::Snippet(None) => Value::String(c.snippet.clone()),
                ConversationField::Snippet(Some(length)) => {
                    Value::String(snippet::snippet(&c.snippet, false, *length))
                }
                ConversationField::ViewerState(inbox, fields) => {
                    let state = viewer_state(c, prefetched?, principal, inbox)?;
                    object(
                        fields.iter().map(|(k, f)| {
                            let v = match f {
                                StateField::Typename => Value::String("ViewerState".to_owned()),
                                StateField::Inbox => Value::String(state.inbox.clone()),
                                StateField::ReadUpTo => Value::from(state.read_up_to),
                                StateField::UnreadCount => Value::from(state.unread_count),
                                StateField::Archived => Value::Boolean(state.archived),
                            };
                            (k.clone(), v)
                        }),
                        fields.len(),
                    )
                }
                ConversationField::UnreadCount(inbox) => {
                    Value::from(viewer_state(c, prefetched?, principal, inbox)?.unread_count)
                }
            };
            entries.push((key.clone(), value));
        }
        let len = entries.len();
        Some(object(entries.into_iter(), len))
    }
}

/// A required or optional `inbox`-like argument: `None` when it does not validate,
/// `Some(None)` when it was left out.
fn inbox_arg(
    ctx: &ContextSelectionSet<'_>,
    field: &Positioned<Field>,
    name: &str,
) -> Option<Option<String>> {
    let ctx = ctx.with_field(field);
    ctx.param_value::<Option<String>>(name, None)
        .ok()
        .map(|(_, v)| v)
}

/// The state of the inbox written `raw` in `c`, from the page's prefetch, when the
/// principal may read it.
fn viewer_state(
    c: &conversation::Model,
    prefetched: &Prefetched,
    principal: &Principal,
    raw: &str,
) -> Option<ViewerState> {
    let states = prefetched.states.as_ref()?;
    let address = states.argument(raw, c.channel)?;
    let state = states.get(c.id, address)?;
    service::state::check_inbox(principal, c, address, "inbox").ok()?;
    Some(ViewerState::new(c, address.to_owned(), state))
}

/// A field of `Message` that a plan answers from the row.
enum MessageField {
    Typename,
    Id,
    Sequence,
    Channel,
    Kind,
    Direction,
    From,
    To,
    FromRaw,
    ToRaw,
    Body,
    Attachments,
    ProviderMessageId,
    SentAt,
    RecordedAt,
    Snippet(usize),
    AssignmentError,
}

/// A selection on `Message`, read once for a whole list.
struct MessagePlan(Vec<(Name, MessageField)>);

impl MessagePlan {
    fn new(ctx: &ContextSelectionSet<'_>, set: &Positioned<SelectionSet>) -> Option<Self> {
        let mut fields = Vec::new();
        collect(ctx, set, "Message", &mut fields)?;
        let mut plan = Vec::with_capacity(fields.len());
        for field in fields {
            let key = field.node.response_key().node.clone();
            let planned = match field.node.name.node.as_str() {
                "__typename" => MessageField::Typename,
                "id" => MessageField::Id,
                "sequence" => MessageField::Sequence,
                "channel" => MessageField::Channel,
                "kind" => MessageField::Kind,
                "direction" => MessageField::Direction,
                "from" => MessageField::From,
                "to" => MessageField::To,
                "fromRaw" => MessageField::FromRaw,
                "toRaw" => MessageField::ToRaw,
                "body" => MessageField::Body,
                "attachments" => MessageField::Attachments,
                "providerMessageId" => MessageField::ProviderMessageId,
                "sentAt" => MessageField::SentAt,
                "recordedAt" => MessageField::RecordedAt,
                "snippet" => MessageField::Snippet(snippet_arg(ctx, field)?.0),
                "assignmentError" => MessageField::AssignmentError,
                _ => return None,
            };
            plan.push((key, planned));
        }
        Some(MessagePlan(plan))
    }

    fn value(&self, m: &message::Model) -> Value {
        let opt = |s: Option<&String>| s.map_or(Value::Null, |s| Value::String(s.clone()));
        let entries = self.0.iter().map(|(key, field)| {
            let value = match field {
                MessageField::Typename => Value::String("Message".to_owned()),
                MessageField::Id => Value::String(encode_id(NodeType::Message, m.id).0),
                MessageField::Sequence => Value::from(m.sequence.unwrap_or(0)),
                MessageField::Channel => enum_value(Channel::from(m.channel)),
                MessageField::Kind => enum_value(MessageKind::from(m.kind)),
                MessageField::Direction => enum_value(Direction::from(m.direction)),
                MessageField::From => {
                    Value::String(m.from_address.as_deref().unwrap_or(&m.from_raw).to_owned())
                }
                MessageField::To => json_strings(m.to_addresses.as_ref().unwrap_or(&m.to_raw)),
                MessageField::FromRaw => Value::String(m.from_raw.clone()),
                MessageField::ToRaw => json_strings(&m.to_raw),
                MessageField::Body => Value::String(m.body.clone()),
                MessageField::Attachments => json_strings(&m.attachments),
                MessageField::ProviderMessageId => opt(m.provider_message_id.as_ref()),
                MessageField::SentAt => time(&m.sent_at),
                MessageField::RecordedAt => time(&m.recorded_at),
                MessageField::Snippet(length) => {
                    Value::String(snippet::message_snippet(m.channel, &m.body, *length))
                }
                MessageField::AssignmentError => opt(m.assignment_error.as_ref()),
            };
            (key.clone(), value)
        });
        object(entries, self.0.len())
    }
}

/// A field of an edge (`ConversationEdge`, `MessageEdge`).
enum EdgeField<P> {
    Typename,
    Cursor,
    Node(P),
}

/// A selection on an edge type, with the plan of its node.
fn edge_plan<P>(
    ctx: &ContextSelectionSet<'_>,
    ty: &str,
    node: impl Fn(&ContextSelectionSet<'_>, &Positioned<SelectionSet>) -> Option<P>,
) -> Option<Vec<(Name, EdgeField<P>)>> {
    let mut fields = Vec::new();
    collect(ctx, ctx.item, ty, &mut fields)?;
    let mut plan = Vec::with_capacity(fields.len());
    for field in fields {
        let key = field.node.response_key().node.clone();
        let planned = match field.node.name.node.as_str() {
            "__typename" => EdgeField::Typename,
            "cursor" => EdgeField::Cursor,
            "node" => {
                let sub = ctx.with_selection_set(&field.node.selection_set);
                EdgeField::Node(node(&sub, &field.node.selection_set)?)
            }
            _ => return None,
        };
        plan.push((key, planned));
    }
    Some(plan)
}

/// An edge's value from its plan.
fn edge_value<P>(
    plan: &[(Name, EdgeField<P>)],
    ty: &'static str,
    cursor: impl Fn() -> String,
    node: impl Fn(&P) -> Option<Value>,
) -> Option<Value> {
    let mut entries = Vec::with_capacity(plan.len());
    for (key, field) in plan {
        let value = match field {
            EdgeField::Typename => Value::String(ty.to_owned()),
            EdgeField::Cursor => Value::String(cursor()),
            EdgeField::Node(p) => node(p)?,
        };
        entries.push((key.clone(), value));
    }
    let len = entries.len();
    Some(object(entries.into_iter(), len))
}

fn principal<'a>(ctx: &ContextSelectionSet<'a>) -> Option<&'a Principal> {
    ctx.data_opt::<Principal>()
}

/// The `OutputType` items other than `resolve` of a list wrapper: its GraphQL type is
/// `[T!]!`, exactly as a `Vec<T>` field's.
macro_rules! as_list_of {
    ($t:ty) => {
        fn type_name() -> Cow<'static, str> {
            <Vec<$t> as OutputType>::type_name()
        }

        fn qualified_type_name() -> String {
            <Vec<$t> as OutputType>::qualified_type_name()
        }

        fn create_type_info(registry: &mut Registry) -> String {
            <Vec<$t> as OutputType>::create_type_info(registry)
        }
    };
}

/// `ConversationConnection.nodes`: the GraphQL type `[Conversation!]!`.
pub struct ConversationNodes<'a> {
    pub(crate) items: &'a [conversation::Model],
    pub(crate) prefetched: &'a Option<Arc<Prefetched>>,
}

impl ConversationNodes<'_> {
    fn plain(&self, ctx: &ContextSelectionSet<'_>) -> Option<Value> {
        let plan = ConversationPlan::new(ctx, ctx.item)?;
        let principal = principal(ctx)?;
        let prefetched = self.prefetched.as_deref();
        let mut out = Vec::with_capacity(self.items.len());
        for c in self.items {
            out.push(plan.value(c, prefetched, principal)?);
        }
        Some(Value::List(out))
    }
}

impl OutputType for ConversationNodes<'_> {
    as_list_of!(Conversation);

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        if let Some(value) = self.plain(ctx) {
            return Ok(value);
        }
        let nodes: Vec<Conversation> = self
            .items
            .iter()
            .map(|c| Conversation(c.clone(), self.prefetched.clone()))
            .collect();
        OutputType::resolve(&nodes, ctx, field).await
    }
}

/// `ConversationConnection.edges`: the GraphQL type `[ConversationEdge!]!`.
pub struct ConversationEdges<'a> {
    pub(crate) items: &'a [conversation::Model],
    pub(crate) prefetched: &'a Option<Arc<Prefetched>>,
}

impl ConversationEdges<'_> {
    fn plain(&self, ctx: &ContextSelectionSet<'_>) -> Option<Value> {
        let plan = edge_plan(ctx, "ConversationEdge", ConversationPlan::new)?;
        let principal = principal(ctx)?;
        let prefetched = self.prefetched.as_deref();
        let mut out = Vec::with_capacity(self.items.len());
        for c in self.items {
            out.push(edge_value(
                &plan,
                "ConversationEdge",
                || query::conversation_cursor(c),
                |p| p.value(c, prefetched, principal),
            )?);
        }
        Some(Value::List(out))
    }
}

impl OutputType for ConversationEdges<'_> {
    as_list_of!(ConversationEdge);

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        if let Some(value) = self.plain(ctx) {
            return Ok(value);
        }
        let edges: Vec<ConversationEdge> = self
            .items
            .iter()
            .map(|c| ConversationEdge {
                cursor: query::conversation_cursor(c),
                node: Conversation(c.clone(), self.prefetched.clone()),
            })
            .collect();
        OutputType::resolve(&edges, ctx, field).await
    }
}

/// `MessageConnection.nodes`: the GraphQL type `[Message!]!`.
pub struct MessageNodes<'a> {
    pub(crate) items: &'a [message::Model],
    pub(crate) parent: &'a Option<conversation::Model>,
}

impl OutputType for MessageNodes<'_> {
    as_list_of!(Message);

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        if let Some(plan) = MessagePlan::new(ctx, ctx.item) {
            return Ok(Value::List(
                self.items.iter().map(|m| plan.value(m)).collect(),
            ));
        }
        let nodes: Vec<Message> = self
            .items
            .iter()
            .map(|m| Message(m.clone(), self.parent.clone()))
            .collect();
        OutputType::resolve(&nodes, ctx, field).await
    }
}

/// `MessageConnection.edges`: the GraphQL type `[MessageEdge!]!`.
pub struct MessageEdges<'a> {
    pub(crate) items: &'a [message::Model],
    pub(crate) parent: &'a Option<conversation::Model>,
}

impl OutputType for MessageEdges<'_> {
    as_list_of!(MessageEdge);

    async fn resolve(
        &self,
        ctx: &ContextSelectionSet<'_>,
        field: &Positioned<Field>,
    ) -> ServerResult<Value> {
        if let Some(plan) = edge_plan(ctx, "MessageEdge", MessagePlan::new) {
            let values: Option<Vec<Value>> = self
                .items
                .iter()
                .map(|m| {
                    edge_value(
                        &plan,
                        "MessageEdge",
                        || query::message_cursor(m),
                        |p| Some(p.value(m)),
                    )
                })
                .collect();
            if let Some(values) = values {
                return Ok(Value::List(values));
            }
        }
        let edges: Vec<MessageEdge> = self
            .items
            .iter()
            .map(|m| MessageEdge {
                cursor: query::message_cursor(m),
                node: Message(m.clone(), self.parent.clone()),
            })
            .collect();
        OutputType::resolve(&edges, ctx, field).await
    }
}
