//! The API's read side over real HTTP: stored metrics by name, labels and time (raw and downsampled, paged), and
//! selfmon's own status; bad parameters get a clear 400, never a 5xx.

use crate::support::{Selfmon, Target, Workdir};

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_served_by_name_labels_and_time_and_status_describes_selfmon() {
    let target = Target::start().await;
    let config = format!(
        "[system]\nenabled = true\ninterval = \"1s\"\n\n\
         [[check]]\nname = \"web\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{ok}\"\n\n\
         [[check]]\nname = \"other\"\nplugin = \"http\"\ninterval = \"1s\"\ntarget = \"{ok}\"\n",
        ok = target.url("/ok")
    );
    let workdir = Workdir::new(&config, &[]);
    let selfmon = Selfmon::start(&workdir).await;
    let deadline = tokio::time::Instant::now() + crate::support::PATIENCE;
    loop {
        let (_, body) = selfmon.get("/v1/metrics?name=response_time_seconds&labels=check=web").await;
        if body["series"][0]["points"].as_array().is_some_and(|p| p.len() >= 3) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no samples were served: {body}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let (status, names) = selfmon.get("/v1/metrics").await;
    assert_eq!(status, 200);
    let names: Vec<&str> = names["metrics"].as_array().unwrap().iter().map(|m| m["name"].as_str().unwrap()).collect();
    for expected in ["check_duration_seconds", "check_status", "response_time_seconds", "system_memory_used_ratio"] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }

    let (_, web) = selfmon.get("/v1/metrics?name=response_time_seconds&labels=check=web").await;
    assert_eq!(web["total"], 1);
    let series = &web["series"][0];
    assert_eq!(series["labels"], serde_json::json!({"check": "web", "plugin": "http"}));
    let points = series["points"].as_array().unwrap();
    let times: Vec<i64> = points.iter().map(|p| p[0].as_i64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "points in time order: {times:?}");
    assert!(points.iter().all(|p| p[1].as_f64().unwrap() > 0.0));

    // Both checks without a label filter, a page at a time.
    let (_, all) = selfmon.get("/v1/metrics?name=response_time_seconds&limit=1").await;
    assert_eq!((all["total"].as_u64(), all["series"].as_array().unwrap().len()), (Some(2), 1));
    let (_, second) = selfmon.get("/v1/metrics?name=response_time_seconds&limit=1&offset=1").await;
    assert_ne!(all["series"][0]["labels"], second["series"][0]["labels"]);

    // One bucket per hour: everything so far averages into at most two points.
    let (_, hourly) = selfmon.get("/v1/metrics?name=response_time_seconds&labels=check=web&step=1h").await;
    assert!(hourly["series"][0]["points"].as_array().unwrap().len() <= 2, "{hourly}");
    assert_eq!(hourly["step_seconds"], 3600.0);

    // A range that ends before anything was measured.
    let (_, past) = selfmon.get("/v1/metrics?name=response_time_seconds&labels=check=web&from=0&to=60").await;
    assert_eq!(past["series"][0]["points"], serde_json::json!([]));
    let (_, none) = selfmon.get("/v1/metrics?name=response_time_seconds&labels=check=nope").await;
    assert_eq!(none["total"], 0);

    for (query, message) in [
        ("name=x&step=often", "`step`"),
        ("name=x&from=yesterday", "neither RFC 3339 nor Unix seconds"),
        ("name=x&from=100&to=50", "`from` is after `to`"),
        ("name=x&labels=check", "is not name=value"),
        ("name=x&step=0", "`step` must be at least 1s"),
        ("colour=red", "unknown field"),
    ] {
        let (status, body) = selfmon.get(&format!("/v1/metrics?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["code"], "bad_query");
        assert!(body["error"]["message"].as_str().unwrap().contains(message), "{query}: {body}");
    }

    let (status, about) = selfmon.get("/v1/status").await;
    assert_eq!(status, 200);
    assert_eq!(about["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(about["contract"], "0.1.0");
    let plugins: Vec<&str> = about["plugins"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert!(plugins.contains(&"http") && plugins.contains(&"postgres"), "{plugins:?}");
    assert_eq!(about["checks"]["configured"], 2);
    assert_eq!(about["checks"]["by_status"]["healthy"], 2);
    assert!(about["storage"]["runs_stored"].as_i64().unwrap() >= 2);
    assert!(about["storage"]["bytes_on_disk"].as_u64().unwrap() > 0);
    assert!(about["uptime_seconds"].as_f64().unwrap() > 0.0);
    selfmon.stop().await;
}
