//! The plugin runtime: one wasmtime engine, the linker with everything a plugin may import, calls into plugins, the
//! plugins selfmon knows ([`plugins`]: built in, or dropped into the plugins folder), and a plugin's settings checked
//! against what it declares ([`settings`]).
//!
//! Every call gets a fresh instance from a pre-instantiated component (pooling allocator, about 20 µs), so a trap
//! or a deadline kill cannot poison the next call. Each call has a wall-clock deadline enforced twice: epoch
//! interruption stops code that spins (the instance yields to tokio every tick and traps once past the deadline),
//! and a tokio timeout stops a call that waits on the host.

mod bindings;
mod cache;
pub mod grants;
mod inspect;
mod lookup;
mod lookup_dns;
mod output;
mod plugin;
pub mod plugins;
mod reach;
pub mod redact;
mod send;
pub mod settings;
mod state;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;
use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline};

pub use bindings::{
    Aggregation, Alert, CONTRACT_VERSION, CheckRequest, CheckResult, CheckState, Level, LogRecord, Metric, MetricQuery,
    ParseOutcome, ParseRequest, PluginInfo, RuleRequest, SeriesValue, Setting, Severity, Status, ValueKind,
};
pub use cache::CompiledCache;
pub use grants::Grants;
pub use plugin::{Kind, Plugin, PluginSource, accepted_versions, capability};
pub use reach::Reach;
pub use redact::Redactor;
pub use send::TlsConfig;
pub use state::CallLabels;
use state::{MemoryCapExceeded, Output, PluginState};
pub use state::{one_line, truncate};

/// Memory per linear memory and table kept resident between calls (see [`Runtime::new`]).
const KEEP_RESIDENT: usize = 4 << 20;

/// What one plugin call may instantiate: core instances, linear memories and tables.
const CORE_INSTANCES_PER_CALL: u32 = 16;
const MEMORIES_PER_CALL: u32 = 2;
const TABLES_PER_CALL: u32 = 16;

/// How often the engine's epoch advances: the granularity of deadlines and of yielding to other tasks.
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The limits a call runs under.
#[derive(Debug, Clone)]
pub struct Sandbox {
    pub labels: CallLabels,
    pub grants: Arc<Grants>,
    /// The check's secrets, removed from anything the plugin writes or returns.
    pub redactor: Redactor,
    /// The certificate authorities its HTTPS requests trust.
    pub tls: TlsConfig,
    pub memory_limit: usize,
    pub timeout: Duration,
    /// What a rule's queries read; none for checkers and parsers.
    pub data: Option<Arc<dyn RuleData>>,
}

/// What answers a rule's queries, as of the evaluation time.
pub trait RuleData: Send + Sync + std::fmt::Debug {
    fn aggregate(&self, query: MetricQuery) -> BoxFuture<Option<f64>>;
    fn aggregate_series(&self, query: MetricQuery) -> BoxFuture<Vec<SeriesValue>>;
    fn checks(&self) -> Vec<CheckState>;
}

pub type BoxFuture<T> = std::pin::Pin<Box<dyn Future<Output = T> + Send>>;

/// Why a call produced no answer. The messages are written for operators.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("deadline of {} exceeded: the plugin was stopped", humantime::format_duration(*.0))]
    Deadline(Duration),
    #[error("{0}")]
    MemoryCap(String),
    #[error("the plugin crashed: {0}")]
    Trap(String),
    #[error("the plugin could not be started: {0}")]
    Instantiate(String),
}

impl CallError {
    /// A short stable name for the kind of failure, for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Deadline(_) => "deadline",
            Self::MemoryCap(_) => "memory",
            Self::Trap(_) => "trap",
            Self::Instantiate(_) => "instantiate",
        }
    }
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<PluginState>,
    cache: CompiledCache,
    ticker: Arc<Ticker>,
    /// Calls of each [`Kind`] (checker, parser, rule) running at once: their shares of the instance pool.
    turns: [Arc<Semaphore>; 3],
}

/// Advances the engine's epoch every [`EPOCH_TICK`] while at least one call is in flight, and sleeps otherwise:
/// an idle monitor should not wake a hundred times a second.
struct Ticker {
    active: AtomicUsize,
    running: AtomicBool,
    thread: OnceLock<std::thread::Thread>,
}

impl Ticker {
    fn start(engine: Engine) -> std::io::Result<Arc<Self>> {
        let ticker =
            Arc::new(Self { active: AtomicUsize::new(0), running: AtomicBool::new(true), thread: OnceLock::new() });
        let shared = ticker.clone();
        let handle = std::thread::Builder::new().name("selfmon-epoch".into()).spawn(move || {
            while shared.running.load(Ordering::Acquire) {
                if shared.active.load(Ordering::Acquire) == 0 {
                    std::thread::park();
                    continue;
                }
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        })?;
        let _ = ticker.thread.set(handle.thread().clone());
        Ok(ticker)
    }

    /// Keep ticking until the returned guard is dropped.
    fn hold(&self) -> TickerHold<'_> {
        if self.active.fetch_add(1, Ordering::AcqRel) == 0
            && let Some(thread) = self.thread.get()
        {
            thread.unpark();
        }
        TickerHold(self)
    }

    fn stop(&self) {
        self.running.store(false, Ordering::Release);
        if let Some(thread) = self.thread.get() {
            thread.unpark();
        }
    }
}

struct TickerHold<'a>(&'a Ticker);

impl Drop for TickerHold<'_> {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Runtime {
    /// An engine able to run `max_instances` plugin calls at once, each with up to `max_memory` bytes: half of them
    /// checks, a quarter parsers and a quarter rules, so that no kind can take the instances another needs (a call
    /// waits for a turn of its kind before its deadline starts).
    pub fn new(cache: CompiledCache, max_instances: u32, max_memory: usize) -> wasmtime::Result<Self> {
        let max_instances = max_instances.max(4);
        let mut pool = PoolingAllocationConfig::new();
        // A component made from an interpreter (CPython through componentize-py) instantiates about 15 core modules
        // a call; room for 16 per call keeps every call slot usable by such a plugin. And no component may take more
        // than one call's share, however it is built: past it, it fails to instantiate alone, and the calls of the
        // others still find their share free.
        pool.total_component_instances(max_instances)
            .total_core_instances(max_instances * CORE_INSTANCES_PER_CALL)
            .total_memories(max_instances * MEMORIES_PER_CALL)
            .total_tables(max_instances * TABLES_PER_CALL)
            .max_core_instances_per_component(CORE_INSTANCES_PER_CALL)
            .max_memories_per_component(MEMORIES_PER_CALL)
            .max_tables_per_component(TABLES_PER_CALL)
            .total_stacks(max_instances)
            .max_memory_size(max_memory)
            // Returning memory to the kernel after every call (madvise) and faulting it back in on the next one
            // cost more than the call itself. Instead, pages a call dirtied are found with PAGEMAP_SCAN (Linux 6.7
            // and later) and reset in place, up to this much per memory; older kernels fall back to madvise.
            .pagemap_scan(Enabled::Auto)
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config)?;

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        linker.allow_shadowing(true);
        wasmtime_wasi::p2::bindings::sockets::ip_name_lookup::add_to_linker::<_, lookup::GrantedLookupData>(
            &mut linker,
            PluginState::lookup,
        )?;
        linker.allow_shadowing(false);
        bindings::Checker::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;
        bindings::rule::selfmon::plugin::query::add_to_linker::<_, HasSelf<_>>(&mut linker, |state| state)?;

        let ticker = Ticker::start(engine.clone())?;
        let (checks, parsers) = (max_instances / 2, max_instances / 4);
        let turns = [checks, parsers, max_instances - checks - parsers].map(|n| Arc::new(Semaphore::new(n as usize)));
        Ok(Self { engine, linker, cache, ticker, turns })
    }

    /// Run `call` on a fresh instance of a component within `sandbox`.
    async fn call<P: Pre, T>(
        &self,
        pre: &P,
        sandbox: &Sandbox,
        call: impl AsyncFnOnce(&mut Store<PluginState>, &P::Instance) -> wasmtime::Result<T>,
    ) -> Result<T, CallError> {
        // A turn of its kind first, so the wait for one is not taken from the call's time.
        let turns = match P::KIND {
            Kind::Checker => &self.turns[0],
            Kind::Parser => &self.turns[1],
            Kind::Rule => &self.turns[2],
        };
        let _turn = turns.acquire().await.expect("never closed");
        let _ticking = self.ticker.hold();
        let output = Output::new();
        let state = PluginState::new(sandbox, &output);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.memory);
        let deadline = Instant::now() + sandbox.timeout;
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline { Err(DeadlineReached.into()) } else { Ok(UpdateDeadline::Yield(1)) }
        });

        let run = async {
            let instance = pre.instantiate(&mut store).await.map_err(|e| classify(e, sandbox, &output, true))?;
            call(&mut store, &instance).await.map_err(|e| classify(e, sandbox, &output, false))
        };
        let result = match tokio::time::timeout(sandbox.timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(CallError::Deadline(sandbox.timeout)),
        };
        report_output(sandbox, &output, store.data().log.dropped);
        result
    }
}

/// A pre-instantiated component of one of the contract's worlds.
trait Pre {
    type Instance;
    const KIND: Kind;

    fn instantiate(
        &self,
        store: &mut Store<PluginState>,
    ) -> impl Future<Output = wasmtime::Result<Self::Instance>> + Send;
}

impl Pre for bindings::CheckerPre<PluginState> {
    type Instance = bindings::Checker;
    const KIND: Kind = Kind::Checker;

    fn instantiate(
        &self,
        store: &mut Store<PluginState>,
    ) -> impl Future<Output = wasmtime::Result<Self::Instance>> + Send {
        self.instantiate_async(store)
    }
}

impl Pre for bindings::parser::ParserPre<PluginState> {
    type Instance = bindings::parser::Parser;
    const KIND: Kind = Kind::Parser;

    fn instantiate(
        &self,
        store: &mut Store<PluginState>,
    ) -> impl Future<Output = wasmtime::Result<Self::Instance>> + Send {
        self.instantiate_async(store)
    }
}

impl Pre for bindings::rule::RulePre<PluginState> {
    type Instance = bindings::rule::Rule;
    const KIND: Kind = Kind::Rule;

    fn instantiate(
        &self,
        store: &mut Store<PluginState>,
    ) -> impl Future<Output = wasmtime::Result<Self::Instance>> + Send {
        self.instantiate_async(store)
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

/// The epoch callback's signal that a call ran past its deadline.
#[derive(Debug)]
struct DeadlineReached;

impl std::fmt::Display for DeadlineReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("deadline reached")
    }
}

impl std::error::Error for DeadlineReached {}

fn classify(error: wasmtime::Error, sandbox: &Sandbox, output: &Output, instantiating: bool) -> CallError {
    if error.downcast_ref::<DeadlineReached>().is_some() {
        return CallError::Deadline(sandbox.timeout);
    }
    if let Some(cap) = error.downcast_ref::<MemoryCapExceeded>() {
        return CallError::MemoryCap(cap.to_string());
    }
    if instantiating {
        return CallError::Instantiate(format!("{error:#}"));
    }
    // A Rust plugin that panics prints where and why to stderr before it traps; that is what its author needs.
    let stderr = String::from_utf8_lossy(&output.stderr.contents().0).into_owned();
    let panic = stderr.lines().position(|line| line.contains("panicked at")).map(|at| {
        let mut lines = stderr.lines().skip(at);
        let location = lines.next().unwrap_or_default();
        let location = &location[location.find("panicked at").unwrap_or(0)..];
        let message = lines.find(|l| !l.trim().is_empty()).unwrap_or_default();
        format!("{} {}", location.trim(), message.trim()).trim().to_string()
    });
    // An interpreter's uncaught exception (CPython built with componentize-py) prints a traceback before its
    // runtime panics; the traceback's last line says what was raised, which is what that plugin's author needs.
    // With chained exceptions the last traceback is the one that escaped.
    let lines: Vec<&str> = stderr.lines().collect();
    let exception =
        lines.iter().rposition(|line| line.starts_with("Traceback (most recent call last):")).and_then(|at| {
            lines[at + 1..].iter().find(|line| !line.trim().is_empty() && !line.starts_with(char::is_whitespace))
        });
    let trap = error.downcast_ref::<wasmtime::Trap>().map_or_else(|| format!("{error:#}"), |t| t.to_string());
    let message = match (exception, panic) {
        (Some(exception), _) => format!("uncaught exception: {} ({trap})", exception.trim()),
        (None, Some(panic)) => format!("{panic} ({trap})"),
        (None, None) => trap,
    };
    CallError::Trap(sandbox.redactor.apply(&message).into_owned())
}

/// Log what a call wrote to stdout and stderr, and how much output and how many log records it had to drop.
fn report_output(sandbox: &Sandbox, output: &Output, dropped_records: usize) {
    let labels = &sandbox.labels;
    for (stream, pipe) in [("stdout", &output.stdout), ("stderr", &output.stderr)] {
        let (bytes, dropped_bytes) = pipe.contents();
        if !bytes.is_empty() {
            let text = String::from_utf8_lossy(&bytes);
            let text = sandbox.redactor.apply(text.trim_end());
            tracing::info!(target: "selfmon::plugin", plugin = %labels.plugin, check = labels.check.as_deref(), stream, dropped_bytes, "{text}");
        }
    }
    if dropped_records > 0 {
        tracing::warn!(target: "selfmon::plugin", plugin = %labels.plugin, check = labels.check.as_deref(), dropped = dropped_records,
            "Plugin logged more than {} records in one call; dropped the rest", state::LOG_RECORDS_PER_CALL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A component that instantiates a core module with a memory `memories` times, instantiated in a store of its
    /// own (returned, so the instance holds its share of the pool while the store lives).
    async fn instantiate(runtime: &Runtime, memories: usize) -> wasmtime::Result<Store<()>> {
        let instances = "(core instance (instantiate $m))".repeat(memories);
        let text = format!("(component (core module $m (memory 1)) {instances})");
        let component = wasmtime::component::Component::new(&runtime.engine, wat::parse_str(&text)?)?;
        let mut store = Store::new(&runtime.engine, ());
        wasmtime::component::Linker::<()>::new(&runtime.engine).instantiate_async(&mut store, &component).await?;
        Ok(store)
    }

    #[tokio::test]
    async fn a_component_cannot_take_more_than_one_calls_share_of_the_pool() {
        let runtime = Runtime::new(CompiledCache::new(None), 8, 1 << 20).unwrap();
        let refused = instantiate(&runtime, MEMORIES_PER_CALL as usize + 1).await.unwrap_err();
        assert!(format!("{refused:#}").contains("memories"), "{refused:#}");
        // Every call slot can still hold a component of its full share, all at once.
        let mut held = Vec::new();
        for _ in 0..8 {
            held.push(instantiate(&runtime, MEMORIES_PER_CALL as usize).await.unwrap());
        }
    }
}
