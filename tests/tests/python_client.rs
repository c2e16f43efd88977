//! A client in another language (#15): the Python example (`examples/python/hongbao_example.py`)
//! generates its stubs from `proto/` with grpcio-tools, and against a real cluster's routers
//! (mutual TLS with the role certificates of the security folder, user tokens minted by
//! `hongbao login`) opens wallets, sets a PIN, tops up, sends a lucky packet, grabs it with two
//! users, and reads the refused second grab's `ErrorDetail` and `ErrorInfo` from the
//! `grpc-status-details-bin` trailer with `grpc_status.rpc_status.from_call`. Its request ids
//! are UUIDv7 (the ledger refuses any other issue time). What it did is then read back in Rust.
//!
//! Needs the example's Python packages: `scripts/test` installs them (`ensure_python_deps` in
//! scripts/env.sh, a venv at ~/.cache/hongbao/venv, `$HONGBAO_PYTHON`).

use hongbao_tests::{bin, repo_root, Cluster, Spec};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The venv's interpreter that scripts/env.sh `ensure_python_deps` made.
fn python() -> PathBuf {
    let p = std::env::var_os("HONGBAO_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/hongbao/venv/bin/python"));
    assert!(
        p.exists(),
        "{} missing: run scripts/test, or `. scripts/env.sh && ensure_python_deps` (the Python example's packages)",
        p.display()
    );
    p
}

/// Runs the example once (blocking: call it in `block_in_place`); its exit status and output.
fn run_example(c: &Cluster, router: &str, users: &[u64]) -> (bool, String) {
    let users = users.iter().map(u64::to_string).collect::<Vec<_>>().join(",");
    let out = Command::new(python())
        .arg(repo_root().join("examples/python/hongbao_example.py"))
        .arg("--security-dir")
        .arg(c.security_dir())
        .arg("--router")
        .arg(router)
        .arg("--users")
        .arg(&users)
        .output()
        .expect("run the Python example");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    println!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.success(), stdout)
}

/// The packet id the example printed ("sent lucky packet N: ...").
fn packet_id(stdout: &str) -> u64 {
    let line = stdout.lines().find_map(|l| l.strip_prefix("sent lucky packet ")).expect("the example sent a packet");
    line.split(':').next().and_then(|n| n.parse().ok()).expect("a packet id")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_example_pays_grabs_and_reads_the_error_details_through_the_routers() {
    let c = Cluster::start(Spec { routers: true, ..Spec::default() });
    c.wait_ready(Duration::from_secs(30)).await;
    // Sender on the first shard, grabbers on the others (their shares cross shards).
    let shards: Vec<u32> = c.topology.shards.iter().map(|s| s.id).collect();
    let users: Vec<u64> = shards.iter().map(|s| c.topology.user_in_shard(*s, 5_000)).collect();
    let (sender, alice, bob) = (users[0], users[1], users[2]);
    // The tokens, as a developer gets them: `hongbao login`, saved in tokens/ beside security/.
    for u in &users {
        let st = Command::new(bin("hongbao"))
            .arg("--security-dir")
            .arg(c.security_dir())
            .args(["login", &u.to_string(), "--device", &format!("py-{u}")])
            .stdout(std::process::Stdio::null())
            .status()
            .expect("run hongbao login");
        assert!(st.success(), "hongbao login {u}: {st}");
    }
    let router = c.topology.routers[0].addr.clone();

    let started = std::time::Instant::now();
    let (ok, out) = tokio::task::block_in_place(|| run_example(&c, &router, &users));
    println!("the example took {:?}", started.elapsed());
    assert!(ok, "the Python example failed");
    for want in [
        format!("opened wallet {sender} on shard {}", shards[0]),
        format!("second grab by {alice}: gRPC ALREADY_EXISTS, ErrorDetail code ERROR_CODE_ALREADY_GRABBED (shard {})", shards[0]),
        format!("  message: user {alice} already grabbed packet {}", packet_id(&out)),
        "  ErrorInfo: reason ALREADY_GRABBED, domain hongbao".to_string(),
    ] {
        assert!(out.lines().any(|l| l == want), "the example did not print {want:?}");
    }
    assert_eq!(out.lines().last(), Some("OK"));

    // What the Python client did is in the ledger: 20.00 topped up, a 10.00 packet sent, two
    // shares taken by alice and bob and one left.
    let admin = c.node_client().with_deadline(Duration::from_secs(8));
    let packet = admin.show_packet(packet_id(&out)).await.expect("show the packet");
    assert_eq!((packet.sender, packet.total_cents, packet.count, packet.remaining_count), (sender, 1000, 3, 1));
    let mut grabbers: Vec<u64> = packet.claims.iter().map(|cl| cl.grabber).collect();
    grabbers.sort_unstable();
    assert_eq!(grabbers, vec![alice, bob]);
    assert_eq!(admin.balance(sender).await.expect("sender's balance").balance_cents, 1000);

    // Once more against the same cluster, through another router: wallets and PIN are found
    // already there (USER_EXISTS, PIN_ALREADY_SET read from the details), a new packet is sent.
    let (ok, again) = tokio::task::block_in_place(|| run_example(&c, &c.topology.routers[1].addr, &users));
    assert!(ok, "the Python example failed on its second run");
    assert!(again.contains(&format!("wallet {sender} already open")) && again.contains(&format!("payment PIN of {sender} already set")));
    assert_ne!(packet_id(&again), packet_id(&out));
    assert_eq!(admin.balance(sender).await.expect("sender's balance").balance_cents, 2000);
}
