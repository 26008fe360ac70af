//! What one plugin instance's store holds: its WASI context (no files, no environment, granted network only), the
//! hooks that enforce grants, its memory cap, and the budget for what it may log. It also answers what a plugin
//! calls: its log records (within that budget) and a rule's queries (from the sandbox's `RuleData`).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::sockets::{SocketAddrUse, WasiSocketsCtxView};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::bindings::rule::selfmon::plugin::query;
use super::bindings::{Level, selfmon};
use super::grants::Grants;
use super::lookup::GrantedLookup;
use super::output::CappedOutput;
use super::reach::Reach;
use super::redact::Redactor;
use super::send::{Timeouts, TlsConfig, send};

/// Records one call may write through the `host.log` import; the rest are counted and dropped.
pub const LOG_RECORDS_PER_CALL: usize = 100;
/// Queries one rule evaluation may ask; later ones are answered as if there were no data, and a warning is logged.
pub const QUERIES_PER_CALL: usize = 256;
/// Longest message, and longest field value, kept from one record.
const LOG_TEXT_BYTES: usize = 2048;
/// Fields kept from one record.
const LOG_FIELDS: usize = 16;
/// What is kept of a call's stdout and stderr (panic messages arrive there).
pub const OUTPUT_BYTES: usize = 16 * 1024;
/// HTTP requests one call may make.
const REQUESTS_PER_CALL: usize = 32;
/// Resources (sockets, streams, requests, ...) one call may hold at once.
const RESOURCES_PER_CALL: usize = 1024;

/// Who a call runs for, attached to everything it logs.
#[derive(Debug, Clone)]
pub struct CallLabels {
    pub plugin: Arc<str>,
    pub check: Option<Arc<str>>,
}

/// What a call is confined to, shared by its store's hooks.
pub(super) struct Confinement {
    pub(super) labels: CallLabels,
    pub(super) grants: Arc<Grants>,
    redactor: Redactor,
    pub(super) tls: TlsConfig,
    pub(super) timeout: Duration,
}

pub struct PluginState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: GrantHooks,
    pub(super) memory: MemoryCap,
    pub(super) log: LogBudget,
    /// What a rule's queries read, and how many it has asked.
    data: Option<Arc<dyn super::RuleData>>,
    queries: usize,
    /// TLS handshakes the call has asked the host for.
    handshakes: usize,
    /// DNS lookups the call has asked the host for.
    lookups: usize,
}

impl PluginState {
    pub fn new(sandbox: &super::Sandbox, output: &Output) -> Self {
        let mut wasi = WasiCtx::builder();
        wasi.stdout(output.stdout.clone()).stderr(output.stderr.clone());
        if !sandbox.grants.is_empty() {
            let grants = sandbox.grants.clone();
            let labels = sandbox.labels.clone();
            // Lookups are on, but answered only for granted names (see `lookup`).
            wasi.allow_tcp(true).allow_ip_name_lookup(true).socket_addr_check(move |address, usage| {
                let grants = grants.clone();
                let labels = labels.clone();
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
        let mut table = ResourceTable::new();
        table.set_max_capacity(RESOURCES_PER_CALL);
        let confinement = Arc::new(Confinement {
            labels: sandbox.labels.clone(),
            grants: sandbox.grants.clone(),
            redactor: sandbox.redactor.clone(),
            tls: sandbox.tls.clone(),
            timeout: sandbox.timeout,
        });
        Self {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table,
            hooks: GrantHooks { confinement: confinement.clone(), requests: 0 },
            memory: MemoryCap { limit: sandbox.memory_limit },
            log: LogBudget { confinement, written: 0, dropped: 0 },
            data: sandbox.data.clone(),
            queries: 0,
            handshakes: 0,
            lookups: 0,
        }
    }

    /// What the call is confined to.
    pub(super) fn confinement(&self) -> Arc<Confinement> {
        self.hooks.confinement.clone()
    }

    /// Count a DNS lookup; whether the call may still make it.
    pub(super) fn count_lookup(&mut self) -> bool {
        self.lookups += 1;
        self.lookups <= super::lookup_dns::LOOKUPS_PER_CALL
    }

    /// Count a TLS handshake; whether the call may still make it.
    pub(super) fn count_handshake(&mut self) -> bool {
        self.handshakes += 1;
        self.handshakes <= super::inspect::HANDSHAKES_PER_CALL
    }

    /// The name-lookup view, for the shadowing `ip-name-lookup` implementation.
    pub fn lookup(&mut self) -> GrantedLookup<'_> {
        let confinement = &self.hooks.confinement;
        GrantedLookup {
            sockets: WasiSocketsCtxView { ctx: self.wasi.sockets(), table: &mut self.table },
            grants: &confinement.grants,
            labels: &confinement.labels,
        }
    }
}

/// A call's captured stdout and stderr.
#[derive(Clone)]
pub struct Output {
    pub stdout: CappedOutput,
    pub stderr: CappedOutput,
}

impl Output {
    pub fn new() -> Self {
        Self { stdout: CappedOutput::new(OUTPUT_BYTES), stderr: CappedOutput::new(OUTPUT_BYTES) }
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
    confinement: Arc<Confinement>,
    requests: usize,
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
        let confinement = &self.confinement;
        let labels = &confinement.labels;
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().to_string();
        let port = uri.port_u16().unwrap_or(if uri.scheme() == Some(&http::uri::Scheme::HTTPS) { 443 } else { 80 });
        if !confinement.grants.allows(&host, port) {
            tracing::warn!(plugin = %labels.plugin, check = labels.check.as_deref(), host, port, "Refused an HTTP request the check is not granted");
            return Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) });
        }
        self.requests += 1;
        if self.requests > REQUESTS_PER_CALL {
            tracing::warn!(plugin = %labels.plugin, check = labels.check.as_deref(), "Refused an HTTP request over the limit of {REQUESTS_PER_CALL} per call");
            return Box::new(async { Err(wasmtime_wasi_http::Error::ConnectionLimitReached) });
        }
        // wasi:http waits 600 s by default; never longer than the call may take.
        let cap = |t: Option<Duration>| t.map_or(confinement.timeout, |t| t.min(confinement.timeout));
        let timeouts = Timeouts {
            connect: cap(options.and_then(|o| o.connect_timeout)),
            first_byte: cap(options.and_then(|o| o.first_byte_timeout)),
            between_bytes: cap(options.and_then(|o| o.between_bytes_timeout)),
        };
        let tls = confinement.tls.clone();
        Box::new(async move {
            let (response, io) = send(request, timeouts, &tls, &Reach::Anywhere).await?;
            Ok((response, Box::new(io) as BoxedFuture<_>))
        })
    }
}

/// Caps an instance's linear memory. Growing past the cap traps the call with [`MemoryCapExceeded`].
pub struct MemoryCap {
    limit: usize,
}

impl ResourceLimiter for MemoryCap {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.limit {
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
    confinement: Arc<Confinement>,
    written: usize,
    pub dropped: usize,
}

impl LogBudget {
    pub fn labels(&self) -> &CallLabels {
        &self.confinement.labels
    }

    pub fn redactor(&self) -> &Redactor {
        &self.confinement.redactor
    }
}

impl selfmon::plugin::types::Host for PluginState {}

impl PluginState {
    /// The data a query may read, if the call is a rule's and it has not used up its queries.
    fn rule_data(&mut self) -> Option<Arc<dyn super::RuleData>> {
        self.queries += 1;
        if self.queries == QUERIES_PER_CALL + 1 {
            let labels = &self.log.confinement.labels;
            tracing::warn!(target: "selfmon::plugin", plugin = %labels.plugin, rule = labels.check.as_deref(),
                "The rule asked more than {QUERIES_PER_CALL} queries in one evaluation; answering the rest with no data");
        }
        if self.queries > QUERIES_PER_CALL { None } else { self.data.clone() }
    }
}

impl query::Host for PluginState {
    async fn aggregate(&mut self, query: query::MetricQuery) -> Option<f64> {
        self.rule_data()?.aggregate(query).await
    }

    async fn aggregate_series(&mut self, query: query::MetricQuery) -> Vec<query::SeriesValue> {
        match self.rule_data() {
            Some(data) => data.aggregate_series(query).await,
            None => Vec::new(),
        }
    }

    async fn check(&mut self, name: String) -> Option<query::CheckState> {
        self.rule_data()?.checks().into_iter().find(|c| c.name == name)
    }

    async fn checks(&mut self) -> Vec<query::CheckState> {
        self.rule_data().map(|data| data.checks()).unwrap_or_default()
    }
}

impl selfmon::plugin::host::Host for PluginState {
    fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
        let budget = &mut self.log;
        if budget.written >= LOG_RECORDS_PER_CALL {
            budget.dropped += 1;
            return;
        }
        budget.written += 1;
        let redactor = budget.redactor();
        let message = redactor.apply(&one_line(truncate(&message, LOG_TEXT_BYTES))).into_owned();
        let fields: std::collections::BTreeMap<&str, String> = fields
            .iter()
            .take(LOG_FIELDS)
            .map(|(k, v)| (truncate(k, 64), redactor.apply(truncate(v, LOG_TEXT_BYTES)).into_owned()))
            .collect();
        let fields = serde_json::to_string(&fields).unwrap_or_default();
        let labels = budget.labels();
        let plugin = &*labels.plugin;
        let check = labels.check.as_deref();
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

/// `text` on one line: what is meant to be one line (a summary, a log message) cannot forge more.
pub fn one_line(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\n', '\r']) {
        std::borrow::Cow::Owned(text.replace("\r\n", " ").replace(['\n', '\r'], " "))
    } else {
        std::borrow::Cow::Borrowed(text)
    }
}
