//! The dashboard's WebSocket: every event of the bus and every new log record, as JSON text frames
//! `{"event", "at", "data"}`. The first frame is `hello`; a page that reconnects fetches what it shows again and
//! passes `after` (the last log record it has) so the tail continues where it stopped.
//!
//! Not signed in: the socket opens and closes at once with code 4401, as it does when the session expires or is
//! signed out while it is open. It closes (1001) when selfmon stops. A page that stops reading (sends time out, or
//! pings go unanswered) is dropped, so it holds nothing for long.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;

use super::{Dashboard, cookie_value};
use crate::api::error::{ApiError, QueryError};
use crate::events::Event;
use crate::logs::StoredRecord;
use crate::logs::search::Search;
use crate::storage::{rfc3339, to_millis};

/// Sockets open at once; more are refused (503) until some close.
pub const MAX_SOCKETS: usize = 64;

/// Log records a new socket starts with.
const BACKLOG: u64 = 50;

/// How often the socket is pinged; a page that has not answered two pings is gone.
const PING: Duration = Duration::from_secs(20);

/// How often an open socket's session is checked again (expired, signed out, key removed).
const SESSION_CHECK: Duration = Duration::from_secs(2);

/// How long one frame may take to go out before the page counts as gone.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The page sends nothing but control frames; anything larger is refused.
const MAX_INCOMING: usize = 4096;

const NOT_SIGNED_IN: u16 = 4401;
const GOING_AWAY: u16 = 1001;
const POLICY: u16 = 1008;

#[derive(Deserialize)]
pub struct SocketParams {
    /// The id of the last log record the page has.
    after: Option<i64>,
}

/// `GET /ws`: the live feed. (The `Origin` was checked in front of every route.)
pub async fn upgrade(
    State(dashboard): State<Arc<Dashboard>>,
    headers: HeaderMap,
    Query(params): Query<SocketParams>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let Ok(permit) = dashboard.sockets.clone().try_acquire_owned() else {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", "too many dashboard sockets are open")
            .into_response();
    };
    // Open: no session to check. Otherwise the cookie's value, checked now and again while the socket is open.
    let cookie = if dashboard.access.is_open() { Some(None) } else { cookie_value(&headers).map(Some) };
    let signed_in = match &cookie {
        Some(None) => true,
        Some(Some(value)) => dashboard.session_of(value).is_some(),
        None => false,
    };
    upgrade.max_message_size(MAX_INCOMING).max_frame_size(MAX_INCOMING).on_upgrade(move |socket| async move {
        if !signed_in {
            return close(socket, NOT_SIGNED_IN, "sign in first").await;
        }
        let tail = dashboard.queries.tail_logs_holding(
            Search::default(),
            params.after,
            if params.after.is_some() { 0 } else { BACKLOG },
            permit,
        );
        let feed = Feed { dashboard: &dashboard, cookie: cookie.flatten() };
        feed.run(socket, tail.await).await;
    })
}

async fn close(mut socket: WebSocket, code: u16, reason: &'static str) {
    let frame = CloseFrame { code, reason: reason.into() };
    let _ = tokio::time::timeout(SEND_TIMEOUT, socket.send(Message::Close(Some(frame)))).await;
}

fn frame(event: &str, data: serde_json::Value) -> Message {
    let at = rfc3339(to_millis(SystemTime::now()));
    Message::Text(serde_json::json!({"event": event, "at": at, "data": data}).to_string().into())
}

struct Feed<'a> {
    dashboard: &'a Dashboard,
    /// The session cookie's value; `None` when the dashboard is open.
    cookie: Option<String>,
}

impl Feed<'_> {
    fn signed_in(&self) -> bool {
        self.cookie.as_ref().is_none_or(|value| self.dashboard.session_of(value).is_some())
    }

    async fn run(&self, mut socket: WebSocket, tail: Result<tokio::sync::mpsc::Receiver<StoredRecord>, QueryError>) {
        let queries = &self.dashboard.queries;
        // Subscribed before `hello`: whatever happens after the page's catch-up fetch reaches it.
        let mut events = queries.events.subscribe();
        let mut live = queries.events.subscribe_live();
        let hello = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_seconds": queries.started.elapsed().as_secs_f64(),
        });
        let mut outgoing = vec![frame("hello", hello)];
        let mut records = match tail {
            Ok(records) => Some(records),
            Err(error) => {
                let notice = serde_json::json!({"message": format!("the live tail is not available: {error}")});
                outgoing.push(frame("tail.unavailable", notice));
                None
            }
        };
        for message in outgoing {
            if !send(&mut socket, message).await {
                return;
            }
        }
        let mut ping = tokio::time::interval(PING);
        ping.tick().await;
        let mut unanswered = 0u32;
        let mut session_check = tokio::time::interval(SESSION_CHECK);
        loop {
            let message = tokio::select! {
                () = queries.stopping.cancelled() => return close(socket, GOING_AWAY, "selfmon is stopping").await,
                _ = session_check.tick() => {
                    if !self.signed_in() {
                        return close(socket, NOT_SIGNED_IN, "the session has ended").await;
                    }
                    continue;
                }
                _ = ping.tick() => {
                    if unanswered >= 2 {
                        return close(socket, POLICY, "pings went unanswered").await;
                    }
                    unanswered += 1;
                    Some(Message::Ping(Vec::new().into()))
                }
                received = events.recv() => event_frame(received),
                received = live.recv() => event_frame(received),
                record = async {
                    match records.as_mut() {
                        Some(records) => records.recv().await,
                        None => std::future::pending().await,
                    }
                } => match record {
                    Some(record) => Some(frame("log.record", serde_json::to_value(&record).unwrap_or_default())),
                    None => return close(socket, GOING_AWAY, "the log tail ended").await,
                },
                incoming = socket.recv() => match incoming {
                    Some(Ok(Message::Pong(_))) => {
                        unanswered = 0;
                        continue;
                    }
                    Some(Ok(Message::Close(_)) | Err(_)) | None => return,
                    Some(Ok(_)) => continue,
                },
            };
            let Some(message) = message else { return };
            if !send(&mut socket, message).await {
                return;
            }
        }
    }
}

/// A frame for what the bus gave: the event, `lagged` for events missed, nothing when the bus is gone.
fn event_frame(received: Result<Arc<Event>, RecvError>) -> Option<Message> {
    match received {
        Ok(event) => Some(frame(event.name(), event.data())),
        Err(RecvError::Lagged(missed)) => Some(frame("lagged", serde_json::json!({"missed": missed}))),
        Err(RecvError::Closed) => None,
    }
}

/// Send one frame; false when the page is gone or did not take it in time.
async fn send(socket: &mut WebSocket, message: Message) -> bool {
    matches!(tokio::time::timeout(SEND_TIMEOUT, socket.send(message)).await, Ok(Ok(())))
}
