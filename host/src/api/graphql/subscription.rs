//! The GraphQL subscriptions, fed by the [event bus](crate::events): status changes and alerts as they happen.

use async_graphql::futures_util::{Stream, StreamExt};
use async_graphql::{Context, SimpleObject, Subscription};
use tokio_stream::wrappers::BroadcastStream;

use super::queries;
use crate::alerting::alert::Alert;
use crate::checks::board::HealthChange;
use crate::events::Payload;

pub struct SubscriptionRoot;

/// An alert that fired or resolved.
#[derive(SimpleObject)]
struct AlertEvent {
    /// `alert.fired` or `alert.resolved`.
    event: String,
    alert: Alert,
}

#[Subscription]
impl SubscriptionRoot {
    /// Each change of a check's own status, of every check or of one.
    async fn health_changes(&self, ctx: &Context<'_>, check: Option<String>) -> impl Stream<Item = HealthChange> {
        BroadcastStream::new(queries(ctx).events.subscribe()).filter_map(move |event| {
            let change = match event.as_deref().map(|e| &e.payload) {
                Ok(Payload::HealthChanged(change)) if check.as_ref().is_none_or(|c| *c == change.check) => {
                    Some(change.clone())
                }
                _ => None,
            };
            async move { change }
        })
    }

    /// Alerts as they fire and resolve.
    async fn alerts(&self, ctx: &Context<'_>) -> impl Stream<Item = AlertEvent> {
        BroadcastStream::new(queries(ctx).events.subscribe()).filter_map(|event| {
            let alert = event.ok().and_then(|event| match &event.payload {
                Payload::AlertFired(alert) | Payload::AlertResolved(alert) => {
                    Some(AlertEvent { event: event.name().to_string(), alert: alert.clone() })
                }
                _ => None,
            });
            async move { alert }
        })
    }
}
