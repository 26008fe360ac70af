//! Cost of calling a plugin, and of loading one.
//!
//! `cargo bench --bench plugin_call`. The call benchmark is everything selfmon does per check run except the
//! plugin's own work: a fresh store with the check's grants, memory cap, deadline and log budget, instantiation
//! from the pre-instantiated component, the call, and teardown.

use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use selfmon::runtime::{
    CallLabels, CheckRequest, CompiledCache, Grants, PluginSource, Redactor, Runtime, Sandbox, TlsConfig,
};
use selfmon_plugin_artifacts::{HTTP, guests};

fn plugin_call(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let runtime = Runtime::new(CompiledCache::new(None), 64, 64 << 20).unwrap();
    let plugin = tokio.block_on(runtime.load(guests::NOOP, PluginSource::Builtin("guest-noop"))).unwrap();
    let sandbox = Sandbox {
        labels: CallLabels { plugin: Arc::from("noop"), check: Some(Arc::from("bench")) },
        grants: Arc::new(Grants::for_check(Some("https://api.example.com/v1/models"), &["db:5432".into()]).unwrap()),
        redactor: Redactor::new(["not-a-real-token".to_string()]),
        tls: TlsConfig::system(),
        memory_limit: 64 << 20,
        timeout: Duration::from_secs(10),
        data: None,
    };
    let request = CheckRequest {
        name: "bench".into(),
        target: Some("https://api.example.com/v1/models".into()),
        config: Vec::new(),
        secrets: vec![("token".into(), "not-a-real-token".into())],
        timeout_ms: 10_000,
    };
    c.bench_function("check call: fresh instance of a trivial checker, with grants and limits", |b| {
        b.to_async(&tokio).iter(|| async {
            let result = runtime.check(&plugin, &sandbox, &request).await;
            assert!(matches!(result, Ok(Ok(_))));
        })
    });
}

fn plugin_load(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let mut group = c.benchmark_group("load the http plugin");
    group.sample_size(10);
    let uncached = Runtime::new(CompiledCache::new(None), 8, 64 << 20).unwrap();
    group.bench_function("compile", |b| {
        b.to_async(&tokio).iter(|| async { uncached.load(HTTP, PluginSource::Builtin("checker-http")).await.unwrap() })
    });
    let dir = tempfile::tempdir().unwrap();
    let cached = Runtime::new(CompiledCache::new(Some(dir.path().to_path_buf())), 8, 64 << 20).unwrap();
    tokio.block_on(cached.load(HTTP, PluginSource::Builtin("checker-http"))).unwrap();
    group.bench_function("from the compiled cache", |b| {
        b.to_async(&tokio).iter(|| async { cached.load(HTTP, PluginSource::Builtin("checker-http")).await.unwrap() })
    });
    group.finish();
}

criterion_group!(benches, plugin_call, plugin_load);
criterion_main!(benches);
