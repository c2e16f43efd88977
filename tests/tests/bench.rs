//! `hongbao-bench` end to end: the real binary against a real cluster through its routers. Each
//! run must answer ops, write its result and plot, and pass its own audit and grab check.

use hongbao_tests::{bin, Cluster, Spec};
use std::time::Duration;

/// Runs the bench with `args` and returns its parsed `result.json`.
fn bench(c: &Cluster, args: &[&str]) -> serde_json::Value {
    let out = c.dir.path().join(format!("bench-{}", args.join("-").replace("--", "")));
    let status = std::process::Command::new(bin("hongbao-bench"))
        .arg("--topology")
        .arg(&c.topology_path)
        .arg("--security-dir")
        .arg(c.security_dir())
        .arg("--out")
        .arg(&out)
        .args(args)
        .status()
        .expect("run hongbao-bench");
    assert!(status.success(), "hongbao-bench {args:?} failed: {status}");
    let svg = std::fs::read_to_string(out.join("plot.svg")).expect("plot.svg written");
    assert!(svg.contains("<svg"), "plot.svg is an SVG");
    serde_json::from_str(&std::fs::read_to_string(out.join("result.json")).expect("result.json written")).expect("result.json is JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_bench_drives_both_scenarios_through_the_routers_and_passes_its_audit() {
    let c = Cluster::start(Spec { routers: true, ..Spec::default() });
    c.wait_ready(Duration::from_secs(30)).await;
    let runs = [
        vec!["--scenario", "hot-packets", "--duration", "3", "--warmup", "1"],
        vec!["--scenario", "evening-mix", "--rate", "300", "--duration", "3", "--warmup", "1"],
        vec!["--scenario", "hot-packets", "--duration", "3", "--warmup", "1", "--batch-grabs"],
    ];
    for args in runs {
        let r = tokio::task::block_in_place(|| bench(&c, &args));
        assert_eq!(r["passed"], true, "{args:?}: {r}");
        let headline = &r["summary"]["headline"];
        assert!(headline["ops"].as_u64().unwrap_or(0) > 0, "{args:?} answered nothing: {headline}");
        assert!(r["summary"]["series"].as_array().is_some_and(|s| !s.is_empty()), "{args:?}: no time series");
        assert_eq!(r["audit"]["balanced"], true, "{args:?}: {}", r["audit"]);
        // The cluster's 3 nodes and 3 routers were found and worked: each grab cost some CPU.
        let cpu = &r["cpu"];
        assert!(cpu["node_processes"].as_u64() >= Some(3) && cpu["router_processes"].as_u64() >= Some(3), "{args:?}: {cpu}");
        assert!(cpu["nodes_us_per_op"].as_f64().is_some_and(|us| us > 0.0), "{args:?}: {cpu}");
        assert_eq!(r["config"]["batch_grabs"], args.contains(&"--batch-grabs"), "{args:?}: {}", r["config"]);
    }
    // The batched run's grabs reached the routers in GrabGateway.Grabs calls.
    let mut batched = 0.0;
    for router in &c.topology.routers {
        let page = c.scraper().metrics(router.metrics_addr.as_deref().expect("metrics")).await.expect("router metrics");
        batched += hongbao_tests::scrape::sum(&page, "hongbao_router_gateway_batch_grabs_sum", "");
    }
    assert!(batched > 100.0, "the --batch-grabs run sent its grabs in batches: {batched} batched grabs counted");
}
