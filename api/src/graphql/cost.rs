//! An operation's cost (`extensions.analyzer`: complexity and depth) without a per-field
//! extension.
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
//! A connection field costs its children once per item it may return, by the page sizes
//! the server is configured with (`--max-page-size` and the default page size); see
//! `page_complexity` and [`priced`].

use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{
    ObjectType, Request, Response, Schema, ServerError, ServerResult, SubscriptionType,
    ValidationResult, Variables,
};
use service::Limits;

use crate::config::AppConfig;

tokio::task_local! {
    /// The page sizes of the operation being validated (see [`priced`]).
    static PAGE_LIMITS: Limits;
}

/// What the probe keeps of one operation.
#[derive(Default)]
struct Prepared {
    /// The parsed document, for the run that executes it.
    document: Option<ExecutableDocument>,
    /// Complexity and depth.
    validation: Option<ValidationResult>,
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
            slot.with(|p| p.validation = Some(result));
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

/// Runs `request` through the probe schema `probe`: `Err` with the response to send when
/// it fails before execution (parse, validation, limits, unknown operation, or `check` of
/// the validated document), otherwise the request again, carrying its parsed document, and
/// its cost.
pub async fn prepare<Q, M, S>(
    probe: &Schema<Q, M, S>,
    mut request: Request,
    check: impl FnOnce(&ExecutableDocument, &Request) -> Result<(), ServerError>,
) -> Result<(Request, Option<ValidationResult>), Response>
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
    S: SubscriptionType + 'static,
{
    let slot = Slot::default();
    let mut probed = Request::new(request.query.clone()).data(slot.clone());
    probed.operation_name = request.operation_name.clone();
    probed.variables = request.variables.clone();
    probed.introspection_mode = request.introspection_mode;
    let response = priced(probe, probe.execute(probed)).await;
    if !response.errors.is_empty() {
        return Err(response);
    }
    let prepared = slot.with(std::mem::take);
    if let Some(document) = &prepared.document
        && let Err(err) = check(document, &request)
    {
        return Err(Response::from_errors(vec![err]));
    }
    if let Some(document) = prepared.document {
        request.set_parsed_query(document);
    }
    Ok((request, prepared.validation))
}

/// Prepares `request` on `probe` (with `check`, see [`prepare`]), then runs it on `schema`
/// (the same schema without the probe) with the document the probe parsed, and adds its
/// cost to the response.
pub async fn run<Q, M, S>(
    probe: &Schema<Q, M, S>,
    schema: &Schema<Q, M, S>,
    request: Request,
    check: impl FnOnce(&ExecutableDocument, &Request) -> Result<(), ServerError>,
) -> Response
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
    S: SubscriptionType + 'static,
{
    match prepare(probe, request, check).await {
        Ok((request, cost)) => with_cost(priced(schema, schema.execute(request)).await, cost),
        Err(rejected) => rejected,
    }
}

/// Runs `operation` (an execution on `schema`) with the page sizes configured in
/// `schema`'s [`AppConfig`] as the ones `page_complexity` prices connections by.
/// async-graphql computes complexity with plain functions that cannot reach the schema's
/// data, so the sizes travel in a task-local for the operation's duration.
pub async fn priced<Q, M, S, F>(schema: &Schema<Q, M, S>, operation: F) -> F::Output
where
    Q: ObjectType + 'static,
    M: ObjectType + 'static,
    S: SubscriptionType + 'static,
    F: Future,
{
    let limits = schema
        .data::<AppConfig>()
        .map_or_else(Limits::default, |c| c.settings.limits);
    PAGE_LIMITS.scope(limits, operation).await
}

/// Adds the cost to a response the way async-graphql's `Analyzer` does.
pub fn with_cost(response: Response, cost: Option<ValidationResult>) -> Response {
    match cost {
        Some(v) => response.extension(
            "analyzer",
            async_graphql::value!({
                "complexity": v.complexity,
                "depth": v.depth,
            }),
        ),
        None => response,
    }
}

/// Page-size complexity: a connection costs its children once per item it may return:
/// the `first` or `last` asked for, at most the configured maximum page size, or the
/// configured default page size when neither is given. The sizes are those of the schema
/// the operation runs on (see [`priced`]); outside [`priced`] they are [`Limits`]' defaults.
pub(crate) fn page_complexity(first: Option<i32>, last: Option<i32>, child: usize) -> usize {
    let limits = PAGE_LIMITS.try_with(|l| *l).unwrap_or_default();
    let n = match first.or(last) {
        Some(n) => u64::try_from(n).unwrap_or(0),
        None => limits.default_page_size,
    };
    // `clamp` panics when its bounds cross; a maximum of 0 is refused at start-up anyway.
    let n = n.clamp(1, limits.max_page_size.max(1));
    usize::try_from(n)
        .unwrap_or(usize::MAX)
        .saturating_mul(child)
        .saturating_add(1)
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use serde_json::{Value, json};
    use service::Limits;
    use tower::ServiceExt;

    use crate::config::AppConfig;
    use crate::{AppState, router};

    /// The complexity the server reports for `query` when configured with `limits`.
    async fn complexity(limits: Limits, query: &str) -> Value {
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
        body["extensions"]["analyzer"]["complexity"].clone()
    }

    #[tokio::test]
    async fn connections_are_priced_by_the_configured_page_sizes() {
        let small = Limits {
            max_page_size: 10,
            default_page_size: 5,
            ..Limits::default()
        };
        // 10 conversations × (nodes + id + messages: 5 messages × (nodes + id) + 1) + 1.
        assert_eq!(
            complexity(
                small,
                "{ conversations(first: 10) { nodes { id messages { nodes { id } } } } }"
            )
            .await,
            json!(10 * (1 + 1 + (5 * 2 + 1)) + 1)
        );
        // Over the maximum (which the resolver rejects) is priced at the maximum.
        assert_eq!(
            complexity(small, "{ conversations(last: 50) { nodes { id } } }").await,
            json!(10 * 2 + 1)
        );
        let large = Limits {
            max_page_size: 400,
            default_page_size: 300,
            ..Limits::default()
        };
        assert_eq!(
            complexity(large, "{ conversations(first: 400) { nodes { id } } }").await,
            json!(400 * 2 + 1)
        );
        assert_eq!(
            complexity(large, "{ unassignedMessages { nodes { id } } }").await,
            json!(300 * 2 + 1)
        );
    }

    #[tokio::test]
    async fn the_default_limits_price_as_before() {
        assert_eq!(
            complexity(
                Limits::default(),
                "{ conversations { nodes { messages(last: 3) { nodes { id } } } } }"
            )
            .await,
            json!(20 * (1 + (3 * 2 + 1)) + 1)
        );
    }
}
