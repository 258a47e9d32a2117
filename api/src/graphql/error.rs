//! Service errors as GraphQL errors, through the one [`ClientError`] mapping.

use async_graphql::Context;

use crate::error::ClientError;
use crate::request_id::RequestId;

/// Maps a service error to a GraphQL error, with the request id for internal ones.
/// A pool timeout is told apart (overload or outage) by the schema's pool.
pub(crate) fn gql_err(ctx: &Context<'_>, err: &service::Error) -> async_graphql::Error {
    let rid = ctx.data_opt::<RequestId>().map(|r| r.0.as_str());
    match (err, ctx.data_opt::<service::DatabaseConnection>()) {
        (service::Error::PoolTimeout(detail), Some(db)) => ClientError::from_service(
            &service::Error::PoolTimeout(detail.clone()).in_pool(db),
            rid,
        ),
        _ => ClientError::from_service(err, rid),
    }
    .into_graphql()
}

/// `Result<T, service::Error>` into a GraphQL result.
pub(crate) trait ServiceResultExt<T> {
    fn gql(self, ctx: &Context<'_>) -> async_graphql::Result<T>;
}

impl<T> ServiceResultExt<T> for service::Result<T> {
    fn gql(self, ctx: &Context<'_>) -> async_graphql::Result<T> {
        self.map_err(|e| gql_err(ctx, &e))
    }
}
