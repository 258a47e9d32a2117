//! An operation's cost: what it may return, priced on the document before anything runs
//! (`extensions.cost`), and the probe that validates it without a per-field extension.
//!
//! **The price** ([`price`]) is the number of values the response can hold: every field
//! counts 1 (aliases separately, `__typename` included), an object counts 1 more, and a
//! list of objects counts its length times what each element holds. A connection's
//! `edges`/`nodes` are as long as its page (`first`/`last`, at most `--max-page-size`, the
//! default page size when neither is given), `nodes(ids:)` as long as `ids`, any other list
//! of objects `--max-page-size`. Named and inline fragments are priced where they are spread,
//! as if written inline (each fragment priced once and reused, so nesting cannot make the
//! pricing itself expensive; cycles are refused by validation first). Type conditions are
//! all added up, so the price is an upper bound. Since every object selects at least one
//! field, a price of `N` means at most `N / 2` objects: the default budget of 4,000
//! (`--max-complexity`) admits no query that can return more than 2,000.
//!
//! **Counts** are priced by what they may read. A `totalCount` that counters hold (the
//! unfiltered conversation list, one `channel` or one `participant` alone, a principal
//! acting for one inbox; a thread without a filter) costs what any field does. Any other
//! counts matching rows, at most `--max-count-rows` of them, and adds that limit over
//! [`COUNT_ROWS_PER_UNIT`] (1,000 at the default 10,000) to the price, once per connection
//! whether it selects `totalCount`, `totalCountIsExact` or both (they share one count). So
//! a document cannot ask for many row counts (aliases, or counts nested in a list, each
//! priced per element) within the budget. Which kind a count is, is decided from the
//! arguments (literals or variables, with the operation's defaults) and the request's
//! viewer, by the rule the resolver follows (`service::query::count_reads_counters`).
//!
//! As soon as a schema has one extension, async-graphql runs every field of every object
//! through the extension chain, even when the extension only looks at validation (as its
//! own `Analyzer` does): a boxed future, a `ResolveInfo` and two registry look-ups per
//! field. On a page of 50 conversations that was about a fifth of the server's CPU per
//! request (BENCHMARKS.md, "What the profile shows", item 4). So an operation is first prepared by
//! a *probe* schema (the same types and limits, with [`Probe`]): it parses and validates,
//! keeps the parsed document and the validation result, and stops before execution. The
//! operation then runs on the schema without extensions, reusing the parsed document, and
//! the cost is added to its response as the Analyzer would have added it ([`run`]).
//!
//! **Documents seen before** ([`DocumentCache`], kept in the probe schema's data): clients
//! send the same few documents over and over, so once a document has been parsed and has
//! passed validation, it is remembered by its text and operation name (a bounded LRU map).
//! The next request with the same text reuses the parsed document (no parse), and when the
//! document uses no variables, nothing of its validation can differ from the first time, so
//! the probe is skipped altogether: only the price (cheap, and it reads the variables) and
//! the `Int` range check run again. A document with variables skips the probe too: the only
//! part of validation its variables can change (each argument that uses them, substituted
//! and checked against the argument's type) runs again per request, with the same errors
//! ([`super::variables`]). Refused documents are never remembered, so every error is
//! produced exactly as before.
use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::{
    DocumentOperations, ExecutableDocument, OperationType, Selection, SelectionSet,
};
use async_graphql::{
    ErrorExtensionValues, InputType, Name, ObjectType, Request, Response, Schema, SchemaEnv,
    ServerError, ServerResult, SubscriptionType, ValidationResult, Value, Variables,
};
use service::normalize::Region;
use service::{Limits, Viewer};

use super::shape::{self, Shape};
use super::types::filter::{ConversationFilter, MessageFilter};
use super::variables::{InputTypes, VariableChecks};
use crate::config::AppConfig;
use crate::error::code;

/// What the probe keeps of one operation.
#[derive(Default)]
struct Prepared {
    /// The parsed document, for the run that executes it.
    document: Option<ExecutableDocument>,
    /// Complexity and depth.
    validation: Option<ValidationResult>,
    /// The schema that validated it (its registry types the variables' checks).
    env: Option<SchemaEnv>,
}

/// Where the probe leaves what it kept: put in the probe request's data.
#[derive(Clone, Default)]
struct Slot(Arc<Mutex<Prepared>>);

impl Slot {
    fn with<T>(&self, f: impl FnOnce(&mut Prepared) -> T) -> T {
        // A panic while holding this lock cannot leave a half-written value behind:
        // every write is one assignment, so a poisoned lock is still usable.
        let mut guard = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard)
    }
}

/// The probe's extension: keeps the document and the validation result, and answers an
/// empty response instead of executing.
pub struct Probe;

impl ExtensionFactory for Probe {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ProbeExtension)
    }
}

struct ProbeExtension;

#[async_graphql::async_trait::async_trait]
impl Extension for ProbeExtension {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        if let Some(slot) = ctx.data_opt::<Slot>() {
            slot.with(|p| p.document = Some(document.clone()));
        }
        Ok(document)
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        let result = next.run(ctx).await?;
        if let Some(slot) = ctx.data_opt::<Slot>() {
            slot.with(|p| {
                p.validation = Some(result);
                p.env = Some(ctx.schema_env.clone());
            });
        }
        Ok(result)
    }

    async fn execute(
        &self,
        _ctx: &ExtensionContext<'_>,
        _operation_name: Option<&str>,
        _next: NextExecute<'_>,
    ) -> Response {
        Response::default()
    }
}

/// How many validated documents a [`DocumentCache`] remembers.
pub const DOCUMENT_CACHE_SIZE: usize = 512;

/// Documents that parsed and passed validation, by the hash of their text and operation
/// name (see the module doc). Put in the probe schema's data.
pub struct DocumentCache {
    known: Mutex<lru::LruCache<u64, Arc<Known>>>,
    hasher: std::collections::hash_map::RandomState,
    /// The probe schema's input types, for the variables' checks (copied the first time a
    /// document is remembered).
    inputs: std::sync::OnceLock<Arc<InputTypes>>,
}

impl Default for DocumentCache {
    fn default() -> Self {
        DocumentCache {
            known: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(DOCUMENT_CACHE_SIZE).expect("non-zero"),
            )),
            hasher: Default::default(),
            inputs: Default::default(),
        }
    }
}

/// One remembered document.
struct Known {
    query: String,
    operation_name: Option<String>,
    document: ExecutableDocument,
    /// The selection depth validation measured.
    depth: usize,
    /// The arguments whose values use variables, checked against each request's values
    /// (`None`: the schema was not kept, so the probe validates every request).
    checks: Option<VariableChecks>,
}

impl DocumentCache {
    fn key(&self, query: &str, operation_name: Option<&str>) -> u64 {
        let mut h = self.hasher.build_hasher();
        query.hash(&mut h);
        operation_name.hash(&mut h);
        h.finish()
    }

    fn get(&self, key: u64, query: &str, operation_name: Option<&str>) -> Option<Arc<Known>> {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let hit = known.get(&key)?;
        (hit.query == query && hit.operation_name.as_deref() == operation_name).then(|| hit.clone())
    }

    fn put(&self, key: u64, known: Known) {
        let mut map = self.known.lock().unwrap_or_else(|e| e.into_inner());
        map.put(key, Arc::new(known));
    }
}

/// What [`prepare`] found: the request's price and the budget it was checked against,
/// and the depth validation measured.
#[derive(Debug, Clone, Copy)]
pub struct Cost {
    /// The price of the selected operation (see the module doc).
    pub requested: u64,
    /// The budget (`--max-complexity`).
    pub maximum: u64,
    /// The selection depth.
    pub depth: usize,
}

/// Runs `request` through the probe schema `probe` and prices it: `Err` with the response
/// to send when it fails before execution (parse, validation, limits, unknown operation,
/// a price over `budget`, the configured `--max-complexity` when `None`, or `check` of the
/// validated document), otherwise the request again, carrying its parsed document, and its
/// cost.
pub async fn prepare<Q, M, S>(
    probe: &Schema<Q, M, S>,
    mut request: Request,
    budget: Option<u64>,
    check: impl FnOnce(&ExecutableDocument, &Request) -> Result<(), ServerError>,
) -> Result<(Request, Cost), Response>
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
    S: SubscriptionType + 'static,
{
    let config = probe.data::<AppConfig>().copied().unwrap_or_default();
    let mut cost = Cost {
        requested: 0,
        maximum: budget.unwrap_or(config.graphql.max_complexity as u64),
        depth: 0,
    };
    let cache = probe.data::<DocumentCache>();
    let key = cache.map(|c| c.key(&request.query, request.operation_name.as_deref()));
    let known = cache
        .zip(key)
        .and_then(|(c, key)| c.get(key, &request.query, request.operation_name.as_deref()));
    if let Some(known) = &known
        && let Some(checks) = &known.checks
    {
        // Validated before with this very text: only the price (the budget may differ),
        // the variables' values where arguments use them, and the checks of our own run
        // again, in the order the probe's run would report them.
        cost.requested = price(
            shape::parley(|| probe.sdl()),
            &known.document,
            request.operation_name.as_deref(),
            &request.variables,
            &config.settings.limits,
            reader(probe, &request, &config),
        );
        if cost.requested > cost.maximum {
            return Err(over_budget(cost));
        }
        if !checks.is_empty() {
            let errors = checks.run(&request.variables);
            if !errors.is_empty() {
                return Err(Response::from_errors(errors));
            }
        }
        cost.depth = known.depth;
        if let Err(err) = check(&known.document, &request) {
            return Err(Response::from_errors(vec![err]));
        }
        request.set_parsed_query(known.document.clone());
        return Ok((request, cost));
    }
    // Priced right after parsing, before validation: async-graphql's validation visits
    // every fragment spread as if inlined, so a document of fragments spreading each other
    // twice would cost 2^n there; the price (linear in the document) refuses it first.
    // A document that does not parse is left to the probe, which reports why.
    let parsed = match &known {
        Some(known) => Some(known.document.clone()),
        None => async_graphql::parser::parse_query(&request.query).ok(),
    };
    if let Some(document) = &parsed {
        cost.requested = price(
            shape::parley(|| probe.sdl()),
            document,
            request.operation_name.as_deref(),
            &request.variables,
            &config.settings.limits,
            reader(probe, &request, &config),
        );
        if cost.requested > cost.maximum {
            return Err(over_budget(cost));
        }
    }
    let slot = Slot::default();
    let mut probed = Request::new(request.query.clone()).data(slot.clone());
    probed.operation_name = request.operation_name.clone();
    probed.variables = request.variables.clone();
    probed.introspection_mode = request.introspection_mode;
    if let Some(document) = parsed {
        probed.set_parsed_query(document);
    }
    let response = probe.execute(probed).await;
    if !response.errors.is_empty() {
        return Err(response);
    }
    let prepared = slot.with(std::mem::take);
    cost.depth = prepared.validation.map_or(0, |v| v.depth);
    if let Some(document) = &prepared.document
        && let Err(err) = check(document, &request)
    {
        return Err(Response::from_errors(vec![err]));
    }
    if let Some(document) = prepared.document {
        if known.is_none()
            && let (Some(cache), Some(key)) = (cache, key)
        {
            let checks = prepared.env.map(|env| {
                let inputs = cache
                    .inputs
                    .get_or_init(|| Arc::new(InputTypes::of(&env.registry)));
                VariableChecks::of(
                    &env.registry,
                    inputs.clone(),
                    &document,
                    request.operation_name.as_deref(),
                )
            });
            cache.put(
                key,
                Known {
                    query: request.query.clone(),
                    operation_name: request.operation_name.clone(),
                    document: document.clone(),
                    depth: cost.depth,
                    checks,
                },
            );
        }
        request.set_parsed_query(document);
    }
    Ok((request, cost))
}

/// Who `request` runs for, for its price: the viewer in its data (the HTTP layer puts the
/// principal's there), else the schema's (the development viewer without authentication).
fn reader<'a, Q, M, S>(
    probe: &'a Schema<Q, M, S>,
    request: &'a Request,
    config: &AppConfig,
) -> Reader<'a>
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
    S: SubscriptionType + 'static,
{
    let viewer = request
        .data
        .get(&std::any::TypeId::of::<Viewer>())
        .and_then(|v| v.downcast_ref::<Viewer>())
        .or_else(|| probe.data::<Viewer>());
    Reader {
        viewer,
        region: config.settings.default_region,
    }
}

/// The `QUERY_TOO_COMPLEX` answer for a price over the budget, with both in
/// `extensions.cost`.
fn over_budget(cost: Cost) -> Response {
    let mut err = ServerError::new(
        format!(
            "the query can return up to {} values; at most {} are allowed (--max-complexity). \
             Ask for smaller pages or fewer fields",
            cost.requested, cost.maximum
        ),
        None,
    );
    let mut ext = ErrorExtensionValues::default();
    ext.set("code", code::QUERY_TOO_COMPLEX);
    ext.set("cost", cost_value(cost));
    err.extensions = Some(ext);
    Response::from_errors(vec![err]).extension("cost", cost_value(cost))
}

fn cost_value(cost: Cost) -> Value {
    async_graphql::value!({ "requested": cost.requested, "maximum": cost.maximum })
}

/// Prepares `request` on `probe` within `budget` and with `check` (see [`prepare`]), then runs it on `schema`
/// (the same schema without the probe) with the document the probe parsed, and adds its
/// cost to the response. Also returns the price the run spent (0 when refused).
pub async fn run<Q, M, S>(
    probe: &Schema<Q, M, S>,
    schema: &Schema<Q, M, S>,
    request: Request,
    budget: Option<u64>,
    check: impl FnOnce(&ExecutableDocument, &Request) -> Result<(), ServerError>,
) -> (Response, u64)
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
    S: SubscriptionType + 'static,
{
    match prepare(probe, request, budget, check).await {
        Ok((request, cost)) => (
            with_cost(schema.execute(request).await, cost),
            cost.requested,
        ),
        Err(rejected) => (rejected, 0),
    }
}

/// Adds the cost to a response: `extensions.cost` (`requested`, `maximum`, and `returned`:
/// the objects the response actually holds, counted in one pass over it) and, as before,
/// `extensions.analyzer` (`complexity`, the same price, and `depth`).
pub fn with_cost(response: Response, cost: Cost) -> Response {
    let returned = objects_in(&response.data).saturating_sub(1);
    let mut value = cost_value(cost);
    if let Value::Object(map) = &mut value {
        map.insert(Name::new("returned"), Value::from(returned));
    }
    response.extension("cost", value).extension(
        "analyzer",
        async_graphql::value!({
            "complexity": cost.requested,
            "depth": cost.depth,
        }),
    )
}

/// How many objects `value` holds, itself included.
fn objects_in(value: &Value) -> u64 {
    match value {
        Value::Object(map) => 1 + map.values().map(objects_in).sum::<u64>(),
        Value::List(items) => items.iter().map(objects_in).sum(),
        _ => 0,
    }
}

/// How many rows a row-counted `totalCount` may read per unit of price: such a count costs
/// `--max-count-rows / COUNT_ROWS_PER_UNIT` (rounded up) on top of its field.
pub const COUNT_ROWS_PER_UNIT: u64 = 10;

/// The price of a `totalCount` that counts rows (see the module doc): its limit over
/// [`COUNT_ROWS_PER_UNIT`], rounded up.
pub fn row_count_price(limits: &Limits) -> u64 {
    limits.max_count_rows.div_ceil(COUNT_ROWS_PER_UNIT)
}

/// Who the operation runs for and where, as far as the price depends on it: whether a
/// `totalCount` reads counters or counts rows.
#[derive(Clone, Copy)]
struct Reader<'a> {
    /// The request's viewer (`None`: unknown, every conversation count counts rows).
    viewer: Option<&'a Viewer>,
    /// The region participant filters are normalized with.
    region: Region,
}

/// The price of the operation `operation_name` selects in `document` (see the module
/// doc), with `variables` (and the operation's defaults for those not given) for page
/// sizes, id lists and filters given as variables. Saturates rather than overflows.
fn price(
    shape: &Shape,
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &Variables,
    limits: &Limits,
    reader: Reader<'_>,
) -> u64 {
    let op = match (&document.operations, operation_name) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        (DocumentOperations::Multiple(ops), None) => ops.values().next(),
    };
    let Some(op) = op else { return 0 };
    // A variable the request leaves out takes its default from the operation, as it will
    // when the operation runs: priced with the value it will have.
    let defaults: Vec<_> = op
        .node
        .variable_definitions
        .iter()
        .filter(|d| !variables.contains_key(&d.node.name.node))
        .filter_map(|d| {
            let value = d.node.default_value.as_ref()?;
            Some((d.node.name.node.clone(), value.node.clone()))
        })
        .collect();
    let with_defaults;
    let variables = if defaults.is_empty() {
        variables
    } else {
        let mut all = variables.clone();
        all.extend(defaults);
        with_defaults = all;
        &with_defaults
    };
    let root = shape.root_of(op.node.ty);
    let mut pricer = Pricer {
        shape,
        document,
        variables,
        limits,
        reader,
        memo: HashMap::new(),
        active: HashSet::new(),
    };
    pricer.set(&op.node.selection_set.node, root, None).0
}

struct Pricer<'a> {
    shape: &'a Shape,
    document: &'a ExecutableDocument,
    variables: &'a Variables,
    limits: &'a Limits,
    reader: Reader<'a>,
    /// Fragment prices, and whether they select a count, by name and the page size of the
    /// connection they are spread in.
    memo: HashMap<(Name, Option<u64>), (u64, bool)>,
    /// Fragments being priced (a cycle, refused by validation anyway, prices as infinite).
    active: HashSet<Name>,
}

/// Whether `name`, a field of a connection, is answered by counting the connection.
fn is_count_field(name: &str) -> bool {
    matches!(name, "totalCount" | "totalCountIsExact")
}

impl Pricer<'_> {
    /// The price of `set` on type `ty`; `page` is the page size when `ty` is a connection.
    /// Also whether `set` selects the connection's count (`totalCount` or
    /// `totalCountIsExact`, directly or through fragments), which the field that returns
    /// the connection prices once.
    fn set(&mut self, set: &SelectionSet, ty: &str, page: Option<u64>) -> (u64, bool) {
        let mut total = 0u64;
        let mut counts = false;
        for item in &set.items {
            let cost = match &item.node {
                Selection::Field(f) => {
                    counts |= page.is_some() && is_count_field(f.node.name.node.as_str());
                    self.field(&f.node, ty, page)
                }
                Selection::InlineFragment(i) => {
                    let on = i
                        .node
                        .type_condition
                        .as_ref()
                        .map_or(ty, |c| c.node.on.node.as_str());
                    let (cost, c) = self.set(&i.node.selection_set.node, on, page);
                    counts |= c;
                    cost
                }
                Selection::FragmentSpread(s) => {
                    let (cost, c) = self.fragment(&s.node.fragment_name.node, page);
                    counts |= c;
                    cost
                }
            };
            total = total.saturating_add(cost);
        }
        (total, counts)
    }

    fn fragment(&mut self, name: &Name, page: Option<u64>) -> (u64, bool) {
        let key = (name.clone(), page);
        if let Some(cost) = self.memo.get(&key) {
            return *cost;
        }
        let Some(fragment) = self.document.fragments.get(name) else {
            return (0, false);
        };
        if !self.active.insert(name.clone()) {
            return (u64::MAX, false);
        }
        let on = fragment.node.type_condition.node.on.node.clone();
        let cost = self.set(&fragment.node.selection_set.node, &on, page);
        self.active.remove(name);
        self.memo.insert(key, cost);
        cost
    }

    fn field(
        &mut self,
        f: &async_graphql::parser::types::Field,
        ty: &str,
        page: Option<u64>,
    ) -> u64 {
        let sub = &f.selection_set.node;
        if sub.items.is_empty() {
            return 1;
        }
        let name = f.name.node.as_str();
        let (child, list) = self.shape.returns(ty, name).unwrap_or_default();
        let arg = |n: &str| {
            f.get_argument(n).and_then(|v| {
                v.node
                    .clone()
                    .into_const_with(|var| self.variables.get(&var).cloned().ok_or(()))
                    .ok()
            })
        };
        let child_page = child.ends_with("Connection").then(|| {
            let asked = arg("first")
                .or_else(|| arg("last"))
                .and_then(|v| match v {
                    Value::Number(n) => n.as_u64(),
                    _ => None,
                })
                .unwrap_or(self.limits.default_page_size);
            asked.clamp(1, self.limits.max_page_size.max(1))
        });
        let count = if child_page.is_some() {
            self.count_price(f, ty, name, child)
        } else {
            0
        };
        let (inner, counts) = self.set(sub, child, child_page);
        let inner = if counts {
            inner.saturating_add(count)
        } else {
            inner
        };
        if !list {
            return inner.saturating_add(2);
        }
        let length = match (name, page) {
            ("edges" | "nodes", Some(page)) => page,
            ("nodes", None) if ty == self.shape.root_of(OperationType::Query) => match arg("ids") {
                Some(Value::List(ids)) => ids.len() as u64,
                _ => self.limits.max_page_size,
            },
            _ => self.limits.max_page_size,
        };
        length
            .saturating_mul(inner.saturating_add(1))
            .saturating_add(1)
    }

    /// What counting the connection field `f` (`name` of `ty`, returning `child`) adds to
    /// the price when its count is selected: nothing when counters hold it (the
    /// unfiltered list, one channel, one participant, a one-inbox principal's list; a
    /// thread without a filter), otherwise [`row_count_price`]. A filter that does not
    /// read as its input type prices as counting rows (validation refuses it anyway).
    fn count_price(
        &self,
        f: &async_graphql::parser::types::Field,
        ty: &str,
        name: &str,
        child: &str,
    ) -> u64 {
        // The filter, its missing variables null (as they run).
        let filter = f.get_argument("filter").map(|v| {
            v.node
                .clone()
                .into_const_with(|var| {
                    Ok::<_, ()>(self.variables.get(&var).cloned().unwrap_or(Value::Null))
                })
                .unwrap_or(Value::Null)
        });
        let counters = match (child, name) {
            ("ConversationConnection", "conversations")
                if ty == self.shape.root_of(OperationType::Query) =>
            {
                match (
                    self.reader.viewer,
                    <Option<ConversationFilter> as InputType>::parse(filter),
                ) {
                    (Some(viewer), Ok(filter)) => service::query::count_reads_counters(
                        viewer,
                        &service::query::ConversationFilter::from(filter.unwrap_or_default()),
                        self.reader.region,
                    ),
                    _ => false,
                }
            }
            ("MessageConnection", "messages") => {
                match <Option<MessageFilter> as InputType>::parse(filter) {
                    Ok(filter) => {
                        service::query::MessageFilter::from(filter.unwrap_or_default()).is_empty()
                    }
                    Err(_) => false,
                }
            }
            ("ConversationConnection" | "MessageConnection", _) => false,
            // Connections without a count.
            _ => true,
        };
        if counters {
            0
        } else {
            row_count_price(self.limits)
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use serde_json::{Value, json};
    use service::Limits;
    use tower::ServiceExt;

    use crate::config::AppConfig;
    use crate::{AppState, router};

    /// The cost the server reports for `query` when configured with `limits`.
    async fn cost(limits: Limits, query: &str) -> Value {
        let mut config = AppConfig::default();
        config.settings.limits = limits;
        let db = crate::database::connect_migrated("sqlite::memory:", &Default::default())
            .await
            .unwrap();
        let request = axum::http::Request::post("/graphql")
            .header("content-type", "application/json")
            .body(Body::from(json!({ "query": query }).to_string()))
            .unwrap();
        let response = router(AppState::new(db, config))
            .oneshot(request)
            .await
            .unwrap();
        let body = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body["extensions"]["analyzer"]["complexity"], body["extensions"]["cost"]["requested"],
            "{body}"
        );
        body["extensions"]["cost"]["requested"].clone()
    }

    #[tokio::test]
    async fn connections_are_priced_by_the_configured_page_sizes() {
        let small = Limits {
            max_page_size: 10,
            default_page_size: 5,
            ..Limits::default()
        };
        // conversations (field + object) + nodes (field + 10 x (object + id + messages
        // (field + object + nodes (field + 5 x (object + id))))).
        assert_eq!(
            cost(
                small,
                "{ conversations(first: 10) { nodes { id messages { nodes { id } } } } }"
            )
            .await,
            json!(2 + 1 + 10 * (1 + 1 + (2 + 1 + 5 * 2)))
        );
        // Over the maximum (which the resolver rejects) is priced at the maximum; pageInfo
        // and totalCount are not multiplied.
        assert_eq!(
            cost(
                small,
                "{ conversations(last: 50) { totalCount pageInfo { hasNextPage } nodes { id } } }"
            )
            .await,
            json!(2 + 1 + 3 + 1 + 10 * 2)
        );
        let large = Limits {
            max_page_size: 400,
            default_page_size: 300,
            ..Limits::default()
        };
        assert_eq!(
            cost(
                large,
                "{ conversations(first: 400) { edges { node { id } } } }"
            )
            .await,
            json!(2 + 1 + 400 * (1 + 3))
        );
        assert_eq!(
            cost(large, "{ unassignedMessages { nodes { id } } }").await,
            json!(2 + 1 + 300 * 2)
        );
    }

    #[tokio::test]
    async fn row_counts_are_priced_by_the_configured_count_limit() {
        let limits = Limits {
            max_count_rows: 95,
            ..Limits::default()
        };
        // conversations (field + object) + totalCount + the count: 95 rows / 10, rounded up.
        assert_eq!(
            cost(
                limits,
                r#"{ conversations(filter: { activeSince: "2026-01-01T00:00:00Z" }) { totalCount } }"#
            )
            .await,
            json!(2 + 1 + 10)
        );
        // Both count fields share one count; a counter-backed count adds nothing.
        assert_eq!(
            cost(
                limits,
                "{ unassignedMessages { totalCount totalCountIsExact } }"
            )
            .await,
            json!(2 + 2 + 10)
        );
        assert_eq!(
            cost(
                limits,
                "{ conversations(filter: { channel: SMS }) { totalCount totalCountIsExact } }"
            )
            .await,
            json!(2 + 2)
        );
        // A count not selected is not priced.
        assert_eq!(
            cost(limits, "{ unassignedMessages(first: 1) { nodes { id } } }").await,
            json!(2 + 1 + 2)
        );
        assert_eq!(super::row_count_price(&Limits::default()), 1000);
    }

    #[tokio::test]
    async fn introspection_is_reported_but_not_priced() {
        let config = AppConfig::default();
        let db = crate::database::connect_migrated("sqlite::memory:", &Default::default())
            .await
            .unwrap();
        let request = axum::http::Request::post("/graphql")
            .header("content-type", "application/json")
            .body(Body::from(
                json!({ "query": "{ __schema { types { name fields { name } } } }" }).to_string(),
            ))
            .unwrap();
        let response = router(AppState::new(db, config))
            .oneshot(request)
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
}
