//! The dashboard's WebSocket: every event of the bus and every new log record, as JSON text frames
//! `{"event", "at", "data"}`. The first frame is `hello`; a page that reconnects fetches what it shows again and
//! passes `after` (the last log record it has) so the tail continues where it stopped.
//!
//! Not signed in: the socket opens and closes at once with code 4401. A page of another origin is refused before
//! the upgrade. The socket closes (1001) when selfmon stops and (4401) when the session expires.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::{Dashboard, now_seconds, same_origin};
use crate::api::ApiError;
use crate::logs::Search;

/// Sockets open at once; more are refused (503) until some close.
pub const MAX_SOCKETS: usize = 64;

/// Log records a new socket starts with.
const BACKLOG: u64 = 50;

/// How often an idle socket is pinged, so a dead connection is noticed on both sides.
const PING: Duration = Duration::from_secs(25);

const NOT_SIGNED_IN: u16 = 4401;
const GOING_AWAY: u16 = 1001;

#[derive(Deserialize)]
pub struct SocketParams {
    /// The id of the last log record the page has.
    after: Option<i64>,
}

/// `GET /ws`: the live feed.
pub async fn upgrade(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(params): Query<SocketParams>,
    upgrade: WebSocketUpgrade,
) -> Response {
    if !same_origin(&headers) {
        return ApiError::new(StatusCode::FORBIDDEN, "cross_origin", "the socket is for the dashboard's own page")
            .into_response();
    }
    let Ok(permit) = dashboard.sockets.clone().try_acquire_owned() else {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "too many dashboard sockets are open")
            .into_response();
    };
    let expires = if dashboard.access.is_open() { Some(u64::MAX) } else { dashboard.session_expiry(&headers) };
    upgrade.on_upgrade(move |socket| async move {
        let _permit = permit;
        match expires {
            Some(expires) => feed(socket, &dashboard, params.after, expires).await,
            None => close(socket, NOT_SIGNED_IN, "sign in first").await,
        }
    })
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame { code, reason: reason.into() };
    let _ = socket.send(Message::Close(Some(frame))).await;
}

fn frame(event: &str, data: serde_json::Value) -> Message {
    let at = humantime::format_rfc3339_millis(SystemTime::now()).to_string();
    Message::Text(serde_json::json!({"event": event, "at": at, "data": data}).to_string().into())
}

async fn feed(mut socket: WebSocket, dashboard: &Dashboard, after: Option<i64>, expires: u64) {
    let queries = &dashboard.queries;
    // Subscribed before `hello`: whatever happens after the page's catch-up fetch reaches it.
    let mut events = queries.events.subscribe();
    let hello = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_seconds": queries.started.elapsed().as_secs_f64(),
    });
    if socket.send(frame("hello", hello)).await.is_err() {
        return;
    }
    let mut records = match queries.tail_logs(Search::default(), after, if after.is_some() { 0 } else { BACKLOG }).await
    {
        Ok(records) => Some(records),
        Err(error) => {
            let notice = serde_json::json!({"message": format!("the live tail is not available: {error}")});
            if socket.send(frame("tail.unavailable", notice)).await.is_err() {
                return;
            }
            None
        }
    };
    let session_ends =
        tokio::time::sleep(Duration::from_secs(expires.saturating_sub(now_seconds()).min(u32::MAX.into())));
    let mut session_ends = std::pin::pin!(session_ends);
    let mut ping = tokio::time::interval(PING);
    loop {
        let message = tokio::select! {
            () = queries.stopping.cancelled() => return close(socket, GOING_AWAY, "selfmon is stopping").await,
            () = &mut session_ends => return close(socket, NOT_SIGNED_IN, "the session has expired").await,
            _ = ping.tick() => Message::Ping(Vec::new().into()),
            received = events.recv() => match received {
                Ok(event) => frame(event.name(), event.data()),
                Err(RecvError::Lagged(missed)) => frame("lagged", serde_json::json!({"missed": missed})),
                Err(RecvError::Closed) => return,
            },
            record = async {
                match records.as_mut() {
                    Some(records) => records.recv().await,
                    None => std::future::pending().await,
                }
            } => match record {
                Some(record) => frame("log.record", serde_json::to_value(&record).unwrap_or_default()),
                None => return close(socket, GOING_AWAY, "the log tail ended").await,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                Some(Ok(_)) => continue,
            },
        };
        if socket.send(message).await.is_err() {
            return;
        }
    }
}
