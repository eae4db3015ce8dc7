//! A short fan-out against a real node on port 0: the report's counts must add up.

use std::time::Duration;

use loadtest::client::SlowMode;
use loadtest::run::{RunConfig, Scenario};
use loadtest::server::Target;

async fn node(name: &str) -> (api::app::Running, std::path::PathBuf) {
    let dir = std::env::temp_dir().join(format!("ovasabi-lt-{name}-{}", std::process::id()));
    let config = api::config::Config {
        http_addr: "127.0.0.1:0".parse().expect("addr"),
        metrics_addr: "127.0.0.1:0".parse().expect("addr"),
        grpc_addr: "127.0.0.1:0".parse().expect("addr"),
        database_url: Some(format!("sqlite://{}/db.sqlite", dir.display())),
        // Its own folder: a dev node keeps its token secret in data_dir.
        data_dir: dir.clone(),
        node_id: Some("lt".into()),
        dev: true,
        ..api::config::Config::default()
    };
    (api::app::start(config).await.expect("node"), dir)
}

fn config(target: Target, scenario: Scenario, token: Option<String>) -> RunConfig {
    RunConfig {
        scenario,
        nodes: vec![target.clone()],
        publisher: target,
        clients: 20,
        campaigns: 2,
        frequency_hz: 20.0,
        rate: 20.0,
        duration: Duration::from_secs(2),
        payload: 200,
        immediate: false,
        compress: false,
        slow_fraction: 0.0,
        slow_mode: SlowMode::Stalled,
        ramp_per_sec: 1000,
        grace: Duration::from_millis(500),
        deadline: Duration::from_secs(60),
        max_per_process: 19_000,
        source_ips: 0,
        storm_after: Duration::from_secs(1),
        keep_campaigns: false,
        run_id: "t".into(),
        token,
    }
}

#[tokio::test]
async fn fanout_report_counts_add_up() {
    let (running, dir) = node("fanout").await;
    let target = Target {
        http: format!("http://{}", running.http_addr),
        metrics: format!("http://{}", running.metrics_addr),
    };
    let report = loadtest::run::run(
        config(target, Scenario::Fanout, running.dev_admin_token.clone()),
        &mut |_| {},
    )
    .await
    .expect("run");
    assert_eq!(report.connections.attempted, 20);
    assert_eq!(report.connections.established, 20);
    assert_eq!(report.connections.failed, 0);
    let published = report.delivery.published;
    assert!(published >= 35, "about 20/s for 2 s: {published}");
    assert_eq!(report.delivery.publish_failed, 0);
    // Two campaigns, ten clients each: every client sees every event of its campaign.
    assert_eq!(report.fast.events, published * 10, "{report:#?}");
    assert_eq!(report.fast.missing, 0);
    assert_eq!(report.fast.duplicates, 0);
    assert_eq!(report.fast.latency.count, published * 10);
    assert!(report.fast.latency.p50_ms > 0.0 && report.fast.latency.p50_ms < 1000.0);
    assert!(report.slow.is_none());
    assert!(report.server.frames_sent > 0.0);
    assert_eq!(report.server.frames_dropped, 0.0);
    assert!(report.server.rss_connected_bytes > 0.0);
    assert!(
        (report.tick_rate.measured_mean_hz - 20.0).abs() < 2.0,
        "{:?}",
        report.tick_rate
    );
    let table = loadtest::report::table(&report);
    assert!(table.contains("20 of 20 up"));
    let svg = dir.join("chart.svg");
    loadtest::chart::write(&report, &svg).expect("chart");
    assert!(
        std::fs::read_to_string(&svg)
            .expect("svg")
            .starts_with("<svg")
    );
    let json = serde_json::to_value(&report).expect("json");
    assert_eq!(json["connections"]["established"], 20);
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn refuses_non_loopback_targets() {
    let t = Target {
        http: "http://10.1.2.3:8090".into(),
        metrics: "http://10.1.2.3:9090".into(),
    };
    let err = loadtest::run::run(config(t, Scenario::Fanout, None), &mut |_| {})
        .await
        .expect_err("refused");
    assert!(err.to_string().contains("loopback"), "{err}");
}

#[tokio::test]
async fn publish_report_counts_what_the_node_numbered() {
    let (running, dir) = node("publish").await;
    let target = Target {
        http: format!("http://{}", running.http_addr),
        metrics: format!("http://{}", running.metrics_addr),
    };
    for batch in [1, 50] {
        let report = loadtest::publish::run(loadtest::publish::PublishConfig {
            node: target.clone(),
            token: running.dev_admin_token.clone(),
            campaigns: 1,
            batch,
            concurrency: 2,
            duration: Duration::from_millis(500),
            payload: 100,
            immediate: false,
            keep_campaigns: true,
            run_id: format!("b{batch}"),
        })
        .await
        .expect("run");
        assert_eq!(report.errors, 0, "{report:?}");
        assert!(report.calls > 0);
        assert_eq!(report.events, report.calls * batch as u64);
        assert_eq!(report.call_latency.count, report.calls);
        // The campaign's seq is the number of events the report counts.
        let stats: serde_json::Value = reqwest::Client::new()
            .get(format!(
                "{}/api/campaigns/lt-pub-b{batch}-0/stats",
                target.http
            ))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("json");
        assert_eq!(stats["seq"].as_u64(), Some(report.events), "{stats}");
        assert!(loadtest::publish::table(&report).contains("events/s"));
    }
    let refused = loadtest::publish::run(loadtest::publish::PublishConfig {
        node: target,
        token: None,
        campaigns: 1,
        batch: 1001,
        concurrency: 1,
        duration: Duration::from_millis(100),
        payload: 10,
        immediate: false,
        keep_campaigns: false,
        run_id: "bad".into(),
    })
    .await
    .expect_err("batch too big");
    assert!(refused.to_string().contains("--batch"), "{refused}");
    running.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
