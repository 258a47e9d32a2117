//! A connection field's paging arguments (`first`/`after`/`last`/`before`), validated
//! against the configured limits into a service [`Window`].

use async_graphql::{Context, Result};
use service::cursor::CursorKind;
use service::query::{PageRequest, Window};

use super::error::ServiceResultExt;
use crate::config::AppConfig;

/// Validates a connection field's `first`/`after`/`last`/`before` for a list of `kind`.
pub(crate) fn page_window(
    ctx: &Context<'_>,
    kind: CursorKind,
    first: Option<i32>,
    after: Option<String>,
    last: Option<i32>,
    before: Option<String>,
) -> Result<Window> {
    let config = ctx.data::<AppConfig>()?;
    let req = PageRequest {
        first: first.map(i64::from),
        after,
        last: last.map(i64::from),
        before,
    };
    Window::new(kind, &req, &config.settings.limits).gql(ctx)
}
