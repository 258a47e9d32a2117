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
//! the cost is added to its response as the Analyzer would have added it.

use std::sync::{Arc, Mutex};

use async_graphql::extensions::{
    Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery, NextValidation,
};
use async_graphql::parser::types::ExecutableDocument;
use async_graphql::{Request, Response, ServerError, ServerResult, ValidationResult, Variables};

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
/// it fails before execution (parse, validation, limits, unknown operation), otherwise the
/// request again, carrying its parsed document, and its cost.
pub async fn prepare<Q, M, S>(
    probe: &async_graphql::Schema<Q, M, S>,
    mut request: Request,
) -> Result<(Request, Option<ValidationResult>), Response>
where
    Q: async_graphql::ObjectType + 'static,
    M: async_graphql::ObjectType + 'static,
    S: async_graphql::SubscriptionType + 'static,
{
    let slot = Slot::default();
    let mut check = Request::new(request.query.clone()).data(slot.clone());
    check.operation_name = request.operation_name.clone();
    check.variables = request.variables.clone();
    check.introspection_mode = request.introspection_mode;
    let response = probe.execute(check).await;
    if !response.errors.is_empty() {
        return Err(response);
    }
    let prepared = slot.with(std::mem::take);
    if let Some(document) = prepared.document {
        request.set_parsed_query(document);
    }
    Ok((request, prepared.validation))
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

/// Page-size complexity: a connection costs its children once per item it may return.
pub(crate) fn page_complexity(first: Option<i32>, last: Option<i32>, child: usize) -> usize {
    let n = first.or(last).unwrap_or(20).clamp(1, 100) as usize;
    n.saturating_mul(child).saturating_add(1)
}
