//! GraphQL at `/graphql`: the [query layer](crate::api::query) again, for tools that want to choose their fields:
//! [`query`], [`mutation`] and [`subscription`] roots.
//! Queries and mutations are POSTed; subscriptions use the `graphql-transport-ws` protocol over a WebSocket on the
//! same path and are fed by the [event bus](crate::events).
//!
//! A request larger, deeper or costlier than [`limits`] allows is refused before anything runs. Mutations
//! need an admin key (or an API without keys). `selfmon graphql-schema` prints the schema; the repository keeps a
//! copy in `schema.graphql`, which a test holds to the code.

pub mod limits;
pub mod mutation;
pub mod query;
pub mod subscription;

use std::sync::Arc;

use async_graphql::{Context, ErrorExtensions};
use async_graphql_axum::{GraphQLProtocol, GraphQLRequest, GraphQLResponse, GraphQLWebSocket};
use axum::Extension;
use axum::extract::{State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};

use crate::api::access::Caller;
use crate::api::error::QueryError;
use crate::api::query::Queries;
use mutation::MutationRoot;
use query::QueryRoot;
use subscription::SubscriptionRoot;

/// The largest WebSocket message a subscriber may send.
const MAX_MESSAGE: usize = 64 << 10;

/// The most items one list field returns.
const MAX_LIMIT: i32 = 1000;

pub type Schema = async_graphql::Schema<QueryRoot, MutationRoot, SubscriptionRoot>;

/// The schema, serving `queries`.
pub fn schema(queries: Arc<Queries>) -> Schema {
    builder().data(queries).finish()
}

/// The schema in SDL, as `selfmon graphql-schema` prints it.
pub fn sdl() -> String {
    builder().finish().sdl()
}

fn builder() -> async_graphql::SchemaBuilder<QueryRoot, MutationRoot, SubscriptionRoot> {
    Schema::build(QueryRoot, MutationRoot, SubscriptionRoot).extension(limits::Limits)
}

/// A GraphQL error with the REST API's code in its extensions.
fn error(error: QueryError) -> async_graphql::Error {
    let code = match &error {
        QueryError::NotFound { code, .. } => code,
        QueryError::Invalid(_) | QueryError::Rejected(_) => "bad_request",
        QueryError::Conflict(_) => "conflict",
        QueryError::Busy | QueryError::Unavailable(_) => "busy",
        QueryError::Full => "storage_full",
        QueryError::Storage(detail) => {
            tracing::error!(detail, "A GraphQL query failed in storage");
            return async_graphql::Error::new("the data could not be read")
                .extend_with(|_, e| e.set("code", "storage"));
        }
    };
    async_graphql::Error::new(error.to_string()).extend_with(|_, e| e.set("code", code.to_string()))
}

fn limit(value: i32) -> async_graphql::Result<u32> {
    if (1..=MAX_LIMIT).contains(&value) {
        Ok(value.unsigned_abs())
    } else {
        Err(async_graphql::Error::new(format!("`limit` must be between 1 and {MAX_LIMIT}")))
    }
}

fn offset(value: i32) -> async_graphql::Result<u64> {
    u64::try_from(value).map_err(|_| async_graphql::Error::new("`offset` must not be negative"))
}

fn queries<'a>(ctx: &Context<'a>) -> &'a Arc<Queries> {
    ctx.data_unchecked::<Arc<Queries>>()
}

/// The caller's key name when it may change things; a refusal is counted and logged like the REST API's.
fn admin(ctx: &Context<'_>, what: &str) -> async_graphql::Result<Option<String>> {
    match ctx.data_opt::<Caller>() {
        Some(caller) if caller.is_admin() => Ok(caller.name.clone()),
        caller => {
            queries(ctx).access.refused_inside("forbidden", caller.and_then(|c| c.name.as_deref()), what);
            Err(async_graphql::Error::new("this needs a key with the admin role")
                .extend_with(|_, e| e.set("code", "forbidden")))
        }
    }
}

/// `POST /graphql`.
pub async fn execute(
    State(schema): State<Schema>,
    Extension(caller): Extension<Caller>,
    request: GraphQLRequest,
) -> Response {
    // Only JSON reaches here: `access::same_site` refuses anything else.
    GraphQLResponse::from(schema.execute(request.into_inner().data(caller)).await).into_response()
}

/// `GET /graphql` with a WebSocket upgrade: subscriptions over `graphql-transport-ws` (or the older
/// `graphql-ws`). The caller's key was checked on the upgrade request.
pub async fn subscribe(
    State(schema): State<Schema>,
    Extension(caller): Extension<Caller>,
    protocol: GraphQLProtocol,
    upgrade: WebSocketUpgrade,
) -> Response {
    upgrade
        .max_message_size(MAX_MESSAGE)
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .on_upgrade(move |stream| {
            let mut data = async_graphql::Data::default();
            data.insert(caller);
            GraphQLWebSocket::new(stream, schema, protocol).with_data(data).serve()
        })
        .into_response()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_checked_in_schema_matches_the_code() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../schema.graphql");
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == super::sdl(),
            "schema.graphql differs from the schema the code serves: run `cargo run -- graphql-schema > schema.graphql`"
        );
    }
}
