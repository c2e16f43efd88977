//! Process faults: kill -9 of a leader or a whole region, SIGSTOP of a leader, a rolling
//! restart, a follower's disk lost.

use crate::chaos::effects::Log;
use crate::chaos::probes::*;
use crate::Cluster;
use rand::seq::SliceRandom;
use rand::Rng;
use std::time::{Duration, Instant};

pub(crate) async fn kill_leader(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let n = leader_of_random_shard(c, rng).await;
    let led = led_by_group(c, &[n]).await;
    log.note(format!("kill -9 node {n} (leader of {led:?})"));
    let t = Instant::now();
    c.kill(n);
    log.check(leaders_moved(c, &[n], &led, Duration::from_secs(8), &format!("killed node {n}")).await);
    sleep_rest(t, 3_000).await;
    log.note(format!("restart node {n}"));
    c.start_node(n);
    sleep(1_000).await;
    log.check(catch_up(c, n, Duration::from_secs(15)).await.map(|d| format!("restarted node {n} caught up in {} ms", d.as_millis())));
    sleep(1_000).await;
}

pub(crate) async fn kill_region(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    // A region that leads something, so that the kill must move leaders.
    let n = leader_of_random_shard(c, rng).await;
    let r = c.topology.node(n).map(|x| x.region.clone()).unwrap_or_else(|| c.topology.regions.choose(rng).expect("regions").name.clone());
    let group = c.nodes_in(&r);
    let led = led_by_group(c, &group).await;
    log.note(format!("kill -9 region {r} (nodes {group:?}, leading {led:?}, and router)"));
    let t = Instant::now();
    c.kill_region(&r);
    log.check(leaders_moved(c, &group, &led, Duration::from_secs(8), &format!("killed region {r}")).await);
    sleep_rest(t, 4_000).await;
    log.note(format!("restart region {r}"));
    c.start_region(&r);
    sleep(2_000).await;
    for n in group {
        log.check(catch_up(c, n, Duration::from_secs(15)).await.map(|d| format!("restarted node {n} caught up in {} ms", d.as_millis())));
    }
    sleep(1_000).await;
}

/// SIGSTOP on a leader: kill must succeed and /proc must show the process stopped (state T); its
/// shards must get leaders among the others and the others must commit past what it applied.
/// SIGCONT: it must run again and catch up.
pub(crate) async fn pause_node(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let Some((n, led)) = a_leader(c, rng, Duration::from_secs(5)).await else {
        log.missed("no node led any shard within 5 s, so there was no leader to pause");
        sleep(1_000).await;
        return;
    };
    let before = applied(c, n).await.unwrap_or_default();
    log.note(format!("SIGSTOP node {n} (leader of {led:?}; applied {before:?})"));
    let t = Instant::now();
    match signal(c, n, "STOP") {
        Ok(pid) => match stopped_within(pid, true, Duration::from_secs(1)).await {
            Ok(s) => log.proved(format!("node {n} (pid {pid}) is stopped: state {s} in /proc/{pid}/stat")),
            Err(e) => log.missed(format!("SIGSTOP of node {n} did not land: {e}")),
        },
        Err(e) => log.missed(e),
    }
    log.check(leaders_moved(c, &[n], &led, Duration::from_secs(8), &format!("paused node {n}")).await);
    let rest = others(c, &[n]);
    let (behind, seen) =
        committed_past(c, &rest, &before, Duration::from_millis(3_000).saturating_sub(t.elapsed()).max(Duration::from_millis(500))).await;
    if behind {
        log.proved(format!("paused node {n} fell behind: the others committed {seen:?}, it had applied {before:?}"));
    } else {
        log.missed(format!("paused node {n} never fell behind: the others committed {seen:?}, it had applied {before:?}"));
    }
    sleep_rest(t, 3_000).await;
    log.note(format!("SIGCONT node {n}"));
    match signal(c, n, "CONT") {
        Ok(pid) => match stopped_within(pid, false, Duration::from_secs(1)).await {
            Ok(s) => log.proved(format!("node {n} (pid {pid}) runs again: state {s}")),
            Err(e) => log.missed(format!("SIGCONT of node {n} did not land: {e}")),
        },
        Err(e) => log.missed(e),
    }
    log.check(catch_up(c, n, Duration::from_secs(10)).await.map(|d| format!("resumed node {n} caught up in {} ms", d.as_millis())));
    sleep_rest(t, 6_000).await;
}

pub(crate) async fn rolling_restart(c: &mut Cluster, log: &mut Log<'_>) {
    for n in c.topology.nodes.iter().map(|n| n.id).collect::<Vec<_>>() {
        log.note(format!("restart node {n} (SIGTERM, start)"));
        let t = Instant::now();
        c.stop(n);
        sleep(300).await;
        c.start_node(n);
        sleep(1_000).await;
        log.check(
            catch_up(c, n, Duration::from_secs(15))
                .await
                .map(|d| format!("restarted node {n} came back and caught up in {} ms", d.as_millis())),
        );
        sleep_rest(t, 3_300).await;
    }
}

/// A follower's disk lost: kill it, delete its data dir, start it empty. It must catch up.
pub(crate) async fn disk_loss(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let ids: Vec<u64> = c.topology.nodes.iter().map(|n| n.id).collect();
    let n = *ids.choose(rng).expect("nodes");
    let rest = others(c, &[n]);
    // A follower: hand away whatever it leads first (home-region failback may take one back, so
    // check again right before the kill).
    let mut led;
    let follower = eventually!(Duration::from_secs(6), {
        led = led_by(c, n).await.unwrap_or_default();
        for &s in led.iter() {
            let to = rest[s as usize % rest.len()];
            let _ = c.node_client().with_deadline(Duration::from_secs(3)).transfer_leader(s, to).await;
        }
        led.is_empty()
    });
    if !follower {
        log.missed(format!("node {n} could not be made a follower: it still leads {led:?}"));
    }
    let installed_before = c.node_metric(n, SNAPSHOTS_INSTALLED).await.unwrap_or(0.0);
    log.note(format!("kill -9 node {n} (a follower; {installed_before} snapshots installed so far), delete its data dir"));
    c.kill(n);
    c.wipe_node(n);
    sleep(1_500).await;
    log.note(format!("start node {n} with an empty disk"));
    c.start_node(n);
    sleep(1_000).await;
    match catch_up(c, n, Duration::from_secs(30)).await {
        Ok(d) => {
            let installs = c.node_metric(n, SNAPSHOTS_INSTALLED).await.unwrap_or(0.0);
            let how = if installs > 0.0 { format!("{installs} snapshot install(s)") } else { "the log alone".into() };
            log.proved(format!("wiped node {n} caught up in {} ms, by {how}", d.as_millis()));
        }
        Err(e) => log.missed(format!("wiped {e}")),
    }
    sleep(1_500).await;
}
