//! `hongbao demo`: a guided tour against the running local cluster.
//!
//! Tops up users homed in three regions, sends a lucky group packet, everyone grabs, shows the
//! claims and best luck, kills a region (through `scripts/cluster`), keeps grabbing, brings the
//! region back, and ends with the audit. It acts for every user with tokens minted by the local
//! cluster's development key (as an app server would with its users' tokens).

// Amounts are written yuan_fen (100_00 is 100.00 yuan).
#![allow(clippy::inconsistent_digit_grouping)]

use hongbao_client::money::{audit_summary, yuan};
use hongbao_client::{new_request_id, Client, PacketRef};
use hongbao_proto::v1::{PacketKind, SendPacketRequest};
use hongbao_topology::{PacketId, Topology};
use std::path::Path;
use std::time::{Duration, Instant};

/// The demo sender's payment PIN (a demo, so it is written here).
const DEMO_PIN: &str = "135790";

fn step(s: &str) {
    println!("\n== {s}");
}

fn cluster_script(script: &Path, args: &[&str]) -> anyhow::Result<()> {
    let st = std::process::Command::new(script).args(args).status()?;
    anyhow::ensure!(st.success(), "{} {:?} failed", script.display(), args);
    Ok(())
}

pub async fn run(client: &Client, topology: &Topology, script: &Path, kill_region: Option<&str>) -> anyhow::Result<i32> {
    // A fresh set of users per run, so the demo can run again on the same cluster.
    let base = 1_000_000 + (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() % 100_000) * 1000;
    let mut members = Vec::new();
    step("opening wallets for 6 users homed in every region, topping each up with 100.00");
    for s in &topology.shards {
        let mut u = base;
        for _ in 0..2 {
            u = topology.user_in_shard(s.id, u + 1);
            client.open_account(u, "demo-phone").await?;
            if members.is_empty() {
                // The sender's payment PIN, set while the wallet is empty: a first PIN on a
                // wallet holding money needs the code sent to its known device.
                client.set_pin(new_request_id(), u, DEMO_PIN).await?;
            }
            client.top_up(new_request_id(), u, 100_00).await?;
            println!("user {u}: shard {} (home region {}), balance 100.00", s.id, s.home);
            members.push(u);
        }
    }
    let sender = members[0];
    step(&format!("user {sender} (payment PIN set) sends a lucky packet of 66.66 in 9 shares to the group"));
    let p = client
        .send_packet(SendPacketRequest {
            request_id: new_request_id(),
            sender,
            kind: PacketKind::Lucky as i32,
            total_cents: 66_66,
            count: 9, // six members now, three late grabbers while a region is down: fully grabbed, so best luck shows
            greeting: "新年快樂".into(),
            device: "demo-phone".into(),
            pin: DEMO_PIN.into(),
            ..Default::default()
        })
        .await?;
    let packet = PacketRef::from(&p);
    println!("packet {packet} (lives on shard {})", PacketId(p.packet_id).shard());
    step("every member grabs");
    for u in &members {
        let g = client.grab(new_request_id(), packet, *u, "").await?;
        println!(
            "user {u} grabbed {}{}",
            yuan(g.amount_cents),
            if g.credit_in_flight { " (credited on its home shard by the relay)" } else { "" }
        );
    }
    let region = kill_region.map(str::to_string).unwrap_or_else(|| topology.regions[1].name.clone());
    step(&format!("killing every node in region {region} (kill -9)"));
    cluster_script(script, &["kill-region", &region])?;
    let killed = Instant::now();
    step("late grabbers keep grabbing while the region is down");
    let mut late = Vec::new();
    for s in &topology.shards {
        let u = topology.user_in_shard(s.id, base + 500);
        client.open_account(u, "demo-phone").await?;
        late.push(u);
    }
    for u in &late {
        let g = client.grab(new_request_id(), packet, *u, "").await?;
        println!("user {u} grabbed {} ({:.1} s after the region died)", yuan(g.amount_cents), killed.elapsed().as_secs_f64());
    }
    step(&format!("bringing region {region} back"));
    cluster_script(script, &["start-region", &region])?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    step("the packet");
    let view = client.show_packet(p.packet_id).await?;
    for c in &view.claims {
        let best = view.has_best_luck && view.best_luck.as_ref().map(|b| b.index) == Some(c.index);
        println!(
            "  #{:<2} user {:<10} {:>8}{}",
            c.index + 1,
            c.grabber,
            yuan(c.amount_cents),
            if best { "  手氣最佳 best luck" } else { "" }
        );
    }
    if view.remaining_count > 0 {
        println!("  left: {} in {} shares", yuan(view.remaining_cents), view.remaining_count);
    }
    step("audit: the money adds up across every shard");
    // Credits may still be on their way; give the relays a moment.
    let mut audit = client.audit().await?;
    for _ in 0..20 {
        if audit.balanced && audit.total_in_flight_cents == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        audit = client.audit().await?;
    }
    println!("{}", audit_summary(&audit));
    for p in &audit.problems {
        println!("PROBLEM: {p}");
    }
    Ok(if audit.balanced { 0 } else { 1 })
}
