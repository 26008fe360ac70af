//! What one plugin instance's store holds: its WASI context (no files, no environment, granted network only), the
//! HTTP hook that enforces grants, its memory cap, and the budget for what it may log.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::bindings::{Level, selfmon};
use super::grants::Grants;

/// Records one call may write through the `host.log` import; the rest are counted and dropped.
pub const LOG_RECORDS_PER_CALL: usize = 100;
/// Longest message kept from one record.
const LOG_MESSAGE_BYTES: usize = 2048;
/// What is kept of a call's stdout and stderr (panic messages arrive there).
pub const OUTPUT_BYTES: usize = 16 * 1024;

/// Who a call runs for, attached to everything it logs.
#[derive(Debug, Clone)]
pub struct CallLabels {
    pub plugin: Arc<str>,
    pub check: Option<Arc<str>>,
}

pub struct PluginState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: GrantHooks,
    pub(super) memory: MemoryCap,
    pub(super) log: LogBudget,
}

impl PluginState {
    pub fn new(
        labels: CallLabels,
        grants: Arc<Grants>,
        memory_limit: usize,
        timeout: Duration,
        output: &Output,
    ) -> Self {
        let mut wasi = WasiCtx::builder();
        wasi.stdout(output.stdout.clone()).stderr(output.stderr.clone());
        if !grants.is_empty() {
            let check_grants = grants.clone();
            let check_labels = labels.clone();
            wasi.allow_tcp(true).allow_ip_name_lookup(grants.names_hosts()).socket_addr_check(move |address, usage| {
                let grants = check_grants.clone();
                let labels = check_labels.clone();
                Box::pin(async move {
                    match usage {
                        // The implicit bind before a connect asks about the wildcard address.
                        SocketAddrUse::TcpBind => address.ip().is_unspecified() && address.port() == 0,
                        SocketAddrUse::TcpConnect => {
                            let allowed = grants.allows_socket(address).await;
                            if !allowed {
                                tracing::warn!(plugin = %labels.plugin, check = labels.check.as_deref(), %address, "Refused a TCP connection the check is not granted");
                            }
                            allowed
                        }
                        _ => false,
                    }
                })
            });
        }
        Self {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: GrantHooks { grants, labels: labels.clone(), timeout },
            memory: MemoryCap { limit: memory_limit, requested: None },
            log: LogBudget { labels, written: 0, dropped: 0 },
        }
    }
}

/// A call's captured stdout and stderr.
#[derive(Clone)]
pub struct Output {
    pub stdout: MemoryOutputPipe,
    pub stderr: MemoryOutputPipe,
}

impl Output {
    pub fn new() -> Self {
        Self { stdout: MemoryOutputPipe::new(OUTPUT_BYTES), stderr: MemoryOutputPipe::new(OUTPUT_BYTES) }
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Decides each outgoing HTTP request against the check's grants, and bounds its timeouts by the call's.
struct GrantHooks {
    grants: Arc<Grants>,
    labels: CallLabels,
    timeout: Duration,
}

type BoxedFuture<T> = Box<dyn Future<Output = T> + Send>;
type SendResult = Result<
    (http::Response<wasmtime_wasi_http::WasiBody>, BoxedFuture<wasmtime_wasi_http::Result<()>>),
    wasmtime_wasi_http::Error,
>;

impl WasiHttpHooks for GrantHooks {
    fn send_request(
        &mut self,
        request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _: BoxedFuture<wasmtime_wasi_http::Result<()>>,
    ) -> BoxedFuture<SendResult> {
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri.port_u16().unwrap_or(if uri.scheme() == Some(&http::uri::Scheme::HTTPS) { 443 } else { 80 });
        if !self.grants.allows(&host, port) {
            tracing::warn!(plugin = %self.labels.plugin, check = self.labels.check.as_deref(), host, port, "Refused an HTTP request the check is not granted");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        // wasi:http waits 600 s by default; never longer than the call may take.
        let cap = |t: Option<Duration>| Some(t.map_or(self.timeout, |t| t.min(self.timeout)));
        let options = wasmtime_wasi_http::RequestOptions {
            connect_timeout: cap(options.and_then(|o| o.connect_timeout)),
            first_byte_timeout: cap(options.and_then(|o| o.first_byte_timeout)),
            between_bytes_timeout: cap(options.and_then(|o| o.between_bytes_timeout)),
        };
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, Some(options)).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as BoxedFuture<_>))
        })
    }
}

/// Caps an instance's linear memory. Growing past the cap traps the call with [`MemoryCapExceeded`].
pub struct MemoryCap {
    limit: usize,
    pub requested: Option<usize>,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
            self.requested = Some(desired);
            return Err(MemoryCapExceeded { limit: self.limit, requested: desired }.into());
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 100_000)
    }
}

/// A plugin asked for more memory than its cap.
#[derive(Debug)]
pub struct MemoryCapExceeded {
    pub limit: usize,
    pub requested: usize,
}

impl fmt::Display for MemoryCapExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "memory cap of {} exceeded (the plugin asked for {})", mib(self.limit), mib(self.requested))
    }
}

impl std::error::Error for MemoryCapExceeded {}

fn mib(bytes: usize) -> String {
    format!("{:.0} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// How much a call has logged.
pub struct LogBudget {
    pub labels: CallLabels,
    written: usize,
    pub dropped: usize,
}

impl selfmon::plugin::types::Host for PluginState {}

impl selfmon::plugin::host::Host for PluginState {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        let budget = &mut self.log;
        if budget.written >= LOG_RECORDS_PER_CALL {
            budget.dropped += 1;
            return;
        }
        budget.written += 1;
        let message = truncate(&message, LOG_MESSAGE_BYTES);
        let fields = serde_json::to_string(&fields.into_iter().collect::<std::collections::BTreeMap<_, _>>())
            .unwrap_or_default();
        let plugin = &*budget.labels.plugin;
        let check = budget.labels.check.as_deref();
        macro_rules! emit {
            ($level:expr) => {
                tracing::event!(target: "selfmon::plugin", $level, plugin, check, fields, "{message}")
            };
        }
        match level {
            Level::Trace => emit!(tracing::Level::TRACE),
            Level::Debug => emit!(tracing::Level::DEBUG),
            Level::Info | Level::Audit => emit!(tracing::Level::INFO),
            Level::Warning | Level::Security => emit!(tracing::Level::WARN),
            Level::Error | Level::Critical => emit!(tracing::Level::ERROR),
        }
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}
