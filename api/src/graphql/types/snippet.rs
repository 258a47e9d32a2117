//! The `length` argument that both `snippet` fields (`Conversation`, `Message`) take.

use async_graphql::{Context, Result};
use service::snippet;

use crate::config::AppConfig;

/// The snippet length a `length` argument asks for, validated (1..=4096), or the default.
pub(crate) fn snippet_length(ctx: &Context<'_>, length: Option<i32>) -> Result<(usize, bool)> {
    let configured = ctx.data::<AppConfig>()?.settings.snippet_length;
    match length {
        None => Ok((configured, false)),
        Some(n) if (1..=snippet::MAX_SNIPPET_LENGTH as i32).contains(&n) => Ok((n as usize, true)),
        Some(n) => Err(crate::error::bad_input(
            "length",
            format!(
                "length must be between 1 and {} (got {n})",
                snippet::MAX_SNIPPET_LENGTH
            ),
        )),
    }
}
