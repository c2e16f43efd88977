//! Membership online (`hongbao cluster add-node / remove-node / replace-node / add-shard /
//! move-slot`):
//! real nodes and routers, the CLI as an operator runs it. Replacements under load, with
//! leaders killed, are the chaos schedule `reshape` (tests/tests/chaos.rs, 3 × 1; and
//! `scripts/chaos reshape --nodes-per-region 3`).

use hongbao_proto::v1::ReplicaRole;
use hongbao_tests::{eventually, Cluster, Spec};
use std::time::{Duration, Instant};

/// Nine nodes (three a region) with routers, ready.
async fn three_by_three() -> Cluster {
    Cluster::ready(Spec { nodes_per_region: 3, routers: true, ..Spec::default() }, Duration::from_secs(60)).await
}

/// Node 9 (Tianjin's replica of shard 3) loses its disk; node 10, new in Tianjin, takes its
/// place. Proved by: the map (shard 3 on 3, 6, 10), node 10 following as a voter, and shard 3
/// still committing with node 3 killed, when only nodes 6 and 10 are left to form its quorum.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_disk_died_is_replaced_online_and_the_new_one_carries_the_quorum_on_3x3() {
    let mut c = three_by_three().await;
    let shard3 = c.topology.shard(3).expect("shard 3").replicas.clone();
    assert_eq!(shard3, vec![3, 6, 9], "the test topology places shard 3 on the third node of each region");
    let client = c.router_client("shanghai");
    let user = c.funded_user(&client, 3, 100, 10_000).await;

    c.kill(9);
    c.wipe_node(9);
    let spec = c.prepare_node(10, "tianjin");
    c.start_node(10);
    let t = Instant::now();
    let out = c.cli_ok(&[
        "cluster",
        "replace-node",
        "--old",
        "9",
        "--new",
        "10",
        "--region",
        "tianjin",
        "--addr",
        &spec.addr,
        "--metrics-addr",
        &spec.metrics_addr,
    ]);
    println!("replace-node in {:?}:\n{out}", t.elapsed());
    let map = c.sync_map();
    assert_eq!(map.shard(3).unwrap().replicas, vec![3, 6, 10], "{out}");
    assert!(map.node(9).is_none(), "node 9 left the map");
    assert!(map.version >= 4, "add-node, add-replica, remove-replica, remove-node: {}", map.version);

    // Node 10 must now be one of the two votes shard 3 needs: kill node 3 and write.
    c.kill(3);
    let before = client.balance(user).await.expect("balance").balance_cents;
    let r = client.top_up(hongbao_client::new_request_id(), user, 250).await.expect("a top-up with node 3 dead");
    assert_eq!(r.balance_cents, before + 250);
    let leaders = c.leaders().await;
    assert!(matches!(leaders.get(&3), Some(6 | 10)), "shard 3 is led by node 6 or 10: {leaders:?}");
    c.start_node(3);

    let audit = client.audit().await.expect("audit");
    assert!(audit.balanced, "{:?}", audit.problems);
    assert_eq!(audit.total_topups_cents, 10_250);
}

/// The map's rules, enforced before any Raft group changes: no shard left with two replicas,
/// none with a majority in one region, no node removed while it holds replicas, no id reused.
/// Each refusal leaves the map's version and every balance as they were.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_membership_change_that_would_weaken_a_shard_is_refused_and_changes_nothing_on_3x3() {
    let mut c = three_by_three().await;
    let client = c.router_client("shenzhen");
    let user = c.funded_user(&client, 1, 100, 5_000).await;
    let before = c.sync_map();

    let out = c.cli(&["cluster", "remove-node", "--id", "4"]);
    assert_ne!(out.code, 0, "shard 1 would keep two replicas: {}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("fewer than 3"), "{}", out.stderr);

    // Node 10 in Shenzhen beside node 1, then node 7 (Tianjin) out of shard 1: Shenzhen would
    // hold two of three.
    let spec = c.prepare_node(10, "shenzhen");
    c.start_node(10);
    c.cli_ok(&[
        "cluster",
        "add-node",
        "--id",
        "10",
        "--region",
        "shenzhen",
        "--addr",
        &spec.addr,
        "--metrics-addr",
        &spec.metrics_addr,
        "--shards",
        "1",
    ]);
    let mid = c.sync_map();
    assert_eq!(mid.shard(1).unwrap().replicas, vec![1, 4, 7, 10]);
    let out = c.cli(&["cluster", "remove-node", "--id", "7"]);
    assert_ne!(out.code, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("shenzhen"), "names the region: {}", out.stderr);
    let out =
        c.cli(&["cluster", "add-node", "--id", "10", "--region", "tianjin", "--addr", "127.0.0.1:1", "--metrics-addr", "127.0.0.1:2"]);
    assert_ne!(out.code, 0, "an id is never reused for another node: {}", out.stdout);
    let after = c.sync_map();
    assert_eq!(after.version, mid.version, "refusals change nothing");
    assert!(after.version > before.version);
    // Node 4 out of shard 1 would leave 1, 7 and 10: Shenzhen again holds two of three.
    let out = c.cli(&["cluster", "remove-node", "--id", "4"]);
    assert_ne!(out.code, 0, "{}", out.stdout);
    assert_eq!(c.sync_map().version, mid.version);
    let b = client.balance(user).await.expect("balance").balance_cents;
    assert_eq!(b, 5_000, "not one cent moved");
    let audit = client.audit().await.expect("audit");
    assert!(audit.balanced, "{:?}", audit.problems);
}

/// A shard added online on the 3 × 1 topology: a new Raft group founded by its home replica,
/// led, known to the routers without a restart (their status names its leader), counted by the
/// audit, given a slot with a funded wallet (served there, whole), and reopened by a node restarted on its old topology file (which does not name it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_added_online_is_led_routed_audited_and_survives_a_restart_on_3x1() {
    let mut c = Cluster::ready(Spec { routers: true, ..Spec::default() }, Duration::from_secs(60)).await;
    let client = c.router_client("shanghai");
    let user = c.funded_user(&client, 2, 100, 3_000).await;
    let first_file = c.dir.path().join("first-topology.toml");
    std::fs::copy(&c.topology_path, &first_file).expect("keep the first topology file");

    let out = c.cli_ok(&["cluster", "add-shard", "--id", "4", "--home", "tianjin", "--replicas", "1,2,3"]);
    assert!(out.contains("shard 4 founded on nodes [1, 2, 3]"), "{out}");
    let map = c.sync_map();
    let s4 = map.shard(4).expect("shard 4 in the map");
    assert_eq!((s4.founded, s4.slots.len()), (map.version, 0), "founded at this version, with no slot yet");
    let again = c.cli_ok(&["cluster", "add-shard", "--id", "4", "--home", "tianjin", "--replicas", "1,2,3"]);
    assert!(again.contains("shard 4 founded"), "re-sent, it is already done: {again}");
    assert_eq!(c.sync_map().version, map.version, "a re-send changes nothing");

    // The routers learn it from the map (no restart): their view names its leader.
    let mut view;
    let routed = eventually!(Duration::from_secs(10), {
        view = client.status().await.expect("status").router.expect("a router's own view");
        view.leaders.iter().any(|l| l.shard == 4 && l.node != 0)
    });
    assert!(routed, "the router never routed shard 4: {view:?}");
    let audit = client.audit().await.expect("audit");
    assert_eq!(audit.shards.len(), 4, "the audit covers the new shard");
    assert!(audit.balanced, "{:?}", audit.problems);
    assert_eq!(audit.total_topups_cents, 3_000);

    // Giving the new shard users: the funded user's slot moves to it, wallet and all.
    let slot = c.topology.slot_of(user).to_string();
    let out = c.cli_ok(&["cluster", "move-slot", &slot, "--to-shard", "4"]);
    assert!(out.contains(&format!("slot {slot}: on shard 4 now")), "{out}");
    c.saw_versions(&out);
    assert_eq!(c.sync_map().owner_of_slot(c.topology.slot_of(user)), Some(4));
    let b = client.balance(user).await.expect("balance after the move");
    assert_eq!((b.shard, b.balance_cents), (4, 3_000), "the wallet is served by shard 4, whole");
    let r = client.top_up(hongbao_client::new_request_id(), user, 500).await.expect("a top-up on shard 4");
    assert_eq!(r.balance_cents, 3_500);
    let audit = client.audit().await.expect("audit");
    assert!(audit.balanced, "{:?}", audit.problems);
    assert_eq!(audit.total_topups_cents, 3_500);

    // Node 3 restarts on the first topology file, which knows three shards: it reopens shard 4
    // from the map its peers give it, and follows its leader again.
    c.kill(3);
    c.start_node_on(3, &first_file);
    let reopened = eventually!(Duration::from_secs(20), {
        let st = c.node_client().status_of(&c.node_addr(3)).await;
        let role = st.ok().and_then(|st| st.nodes.iter().flat_map(|n| n.shards.iter()).find(|s| s.shard == 4).map(|s| s.role()));
        matches!(role, Some(ReplicaRole::Follower | ReplicaRole::Leader))
    });
    assert!(reopened, "restarted node 3 did not reopen shard 4");
}

/// A slot move whose driver went away half-way (one `MoveSlot` call, as from a `move-slot` that
/// was killed) is finished by the meta shard's leader on its own: the move is recorded in the
/// map, whose changes are that leader's alone. The relay from shard 2 to shard 3 is cut, so the
/// call, taken by the meta leader (shard 1's, outside both), freezes and sends the slot but
/// cannot finish it: proved by its answer (not done, delivering), the map (still shard 2) and a
/// refused top-up. Once the cut heals nobody calls again, yet the map flips, the wallet is
/// served by shard 3 whole, and the audit balances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_move_left_half_way_is_finished_by_the_meta_leader_with_no_cent_lost_on_3x3() {
    let mut c = three_by_three().await;
    let client = c.router_client("shanghai");
    let user = c.funded_user(&client, 2, 100, 5_000).await;
    let slot = c.topology.slot_of(user);
    let (shard2, shard3) = (c.topology.shard(2).unwrap().replicas.clone(), c.topology.shard(3).unwrap().replicas.clone());
    let meta = c.topology.meta_shard();
    assert_eq!(meta, 1, "shard 1 holds the map, outside the move");
    let cut = |to: &[u64]| hongbao_proto::v1::Faults { cut_off: to.to_vec(), ..Default::default() };
    for n in &shard2 {
        c.set_faults(*n, cut(&shard3)).await.expect("cut shard 2 off from shard 3");
    }

    let meta_leader = c.leaders().await[&meta];
    let driver = hongbao_client::Client::new(vec![c.node_addr(meta_leader)], std::sync::Arc::new(c.credentials()));
    let r = driver.move_slot(slot, 3).await.expect("one MoveSlot call answers where the move stands");
    assert!(!r.done && r.phase == "delivering", "the call froze and sent the slot but could not finish: {r:?}");
    let map = c.sync_map();
    assert_eq!(map.owner_of_slot(slot), Some(2), "the map did not flip");
    assert!(map.moving(slot).is_some_and(|m| m.from == 2 && m.to == 3), "the map records the move under way");
    let short = c.router_client("shanghai").with_deadline(Duration::from_secs(1));
    let mut codes = vec![];
    while !codes.iter().any(|c| matches!(c, hongbao_proto::ErrorCode::SlotMoving | hongbao_proto::ErrorCode::SlotMoved)) {
        assert!(codes.len() < 5, "a top-up of the half-moved slot is refused SLOT_MOVING or SLOT_MOVED: {codes:?}");
        let e = short.top_up(hongbao_client::new_request_id(), user, 1).await;
        codes.push(e.expect_err("the half-moved slot serves no top-up").code());
    }

    for n in &shard2 {
        c.set_faults(*n, cut(&[])).await.expect("heal the cut");
    }
    let t = Instant::now();
    // The leader waits RESUME_AFTER (10 s) from when it first saw the move unfinished.
    let finished = eventually!(Duration::from_secs(50), c.sync_map().owner_of_slot(slot) == Some(3));
    assert!(finished, "nobody finished the move of slot {slot}");
    println!("the meta leader finished the move {:?} after the cut healed", t.elapsed());
    assert_eq!(c.topology.moving(slot), None, "the flip ended the move's record");
    let b = client.balance(user).await.expect("balance after the move");
    assert_eq!((b.shard, b.balance_cents), (3, 5_000), "the wallet is served by shard 3, whole");
    let meta_nodes = c.topology.shard(meta).unwrap().replicas.clone();
    let logs: String =
        meta_nodes.iter().map(|n| std::fs::read_to_string(c.dir.path().join(format!("node-{n}.log"))).unwrap_or_default()).collect();
    assert!(logs.contains("slot move left half-way finished"), "a leader of the meta shard finished it (its log says so)");
    let audit = client.audit().await.expect("audit");
    assert!(audit.balanced, "{:?}", audit.problems);
    assert_eq!(audit.total_topups_cents, 5_000, "the refused top-up moved nothing");
}
