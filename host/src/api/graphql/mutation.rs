//! The GraphQL mutations: each needs an admin key (or an API without keys) and does what its REST twin does. Rule,
//! alert and silence changes are SECURITY records of selfmon's own log, an erasure is an AUDIT record, and `reload`
//! asks for a reload as `POST /v1/reload` does.

use async_graphql::{Context, Object};

use super::{admin, error, queries};
use crate::alerting::alert::Alert;
use crate::alerting::api_rules::{Rule, RuleRequest};
use crate::alerting::silences::{Silence, SilenceRequest};
use crate::analytics::events::Erased;
use crate::api::error::QueryError;
use crate::ops::reload::handle::{Outcome, Trigger};

pub struct MutationRoot;

#[Object]
impl MutationRoot {
    /// Create an alert rule; refused with every problem named when it is not valid.
    async fn create_alert_rule(&self, ctx: &Context<'_>, rule: RuleRequest) -> async_graphql::Result<Rule> {
        let caller = admin(ctx, "createAlertRule")?;
        queries(ctx).create_rule(rule, caller).await.map_err(error)
    }

    /// Delete an alert rule; true when it existed.
    async fn delete_alert_rule(&self, ctx: &Context<'_>, name: String) -> async_graphql::Result<bool> {
        let caller = admin(ctx, "deleteAlertRule")?;
        match queries(ctx).delete_rule(&name, caller.as_deref()).await {
            Ok(()) => Ok(true),
            Err(QueryError::NotFound { .. }) => Ok(false),
            Err(other) => Err(error(other)),
        }
    }

    /// Acknowledge an active alert: escalation stops, the alert stays visible.
    async fn acknowledge_alert(
        &self,
        ctx: &Context<'_>,
        id: i64,
        #[graphql(default)] comment: String,
    ) -> async_graphql::Result<Alert> {
        let caller = admin(ctx, "acknowledgeAlert")?;
        queries(ctx).acknowledge(id, caller, comment).await.map_err(error)
    }

    /// Silence the alerts whose labels match, for a while; refused with every problem named when it is not valid.
    async fn create_silence(&self, ctx: &Context<'_>, silence: SilenceRequest) -> async_graphql::Result<Silence> {
        let caller = admin(ctx, "createSilence")?;
        queries(ctx).create_silence(silence, caller).await.map_err(error)
    }

    /// End a silence now.
    async fn expire_silence(&self, ctx: &Context<'_>, id: i64) -> async_graphql::Result<Silence> {
        let caller = admin(ctx, "expireSilence")?;
        queries(ctx).expire_silence(id, caller.as_deref()).await.map_err(error)
    }

    /// Erase every event, span and log record of a user (admin); what was removed.
    async fn erase_user_data(&self, ctx: &Context<'_>, user_id: String) -> async_graphql::Result<Erased> {
        let caller = admin(ctx, "eraseUserData")?;
        queries(ctx).erase_user(&user_id, caller.as_deref()).await.map_err(error)
    }

    /// Read the config file and the plugins folder again and put them in place if all of it is valid (admin), as
    /// `SIGHUP` does: what changed. A refused reload is an error naming every problem; everything runs as before.
    async fn reload(&self, ctx: &Context<'_>) -> async_graphql::Result<Outcome> {
        admin(ctx, "reload")?;
        let outcome = queries(ctx)
            .reloads
            .reload(Trigger::GraphQl)
            .await
            .ok_or_else(|| async_graphql::Error::new("selfmon is stopping"))?;
        if outcome.applied {
            return Ok(outcome);
        }
        Err(async_graphql::Error::new(format!(
            "the reload was refused, everything runs as before: {}",
            outcome.errors.join("; ")
        )))
    }
}
