//! Network faults: a region or a leader partitioned (inside the nodes, or at the link layer
//! of network namespaces), every link slow and lossy.

use crate::chaos::effects::Log;
use crate::chaos::netns;
use crate::chaos::probes::*;
use crate::Cluster;
use hongbao_proto::v1::Faults;
use rand::seq::SliceRandom;
use rand::Rng;
use std::time::{Duration, Instant};

pub(crate) async fn partition_region(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let n = leader_of_random_shard(c, rng).await;
    let r = c.topology.node(n).map(|x| x.region.clone()).unwrap_or_else(|| c.topology.regions.choose(rng).expect("regions").name.clone());
    let group = c.nodes_in(&r);
    let led = led_by_group(c, &group).await;
    if c.is_containers() {
        log.note(format!("docker network disconnect region {r} (nodes {group:?}, leading {led:?}, and router) from its links"));
        c.partition_region(&r);
        log.note(format!("region {r} disconnected"));
    } else {
        log.note(format!("partition region {r} (nodes {group:?}, leading {led:?}) from the others"));
        cut(c, &group).await;
    }
    // Held 4 s from the moment the cut is complete (docker takes seconds to disconnect).
    let t = Instant::now();
    log.check(leaders_moved(c, &group, &led, Duration::from_secs(8), &format!("partitioned region {r}")).await);
    sleep_rest(t, 4_000).await;
    if c.is_containers() {
        log.note(format!("docker network connect region {r} to its links again"));
        c.heal_region(&r);
    } else {
        log.note("heal partition");
        clear_faults(c).await;
    }
    sleep(2_000).await;
    for n in group {
        log.check(catch_up(c, n, Duration::from_secs(10)).await.map(|d| format!("healed node {n} caught up in {} ms", d.as_millis())));
    }
    sleep(1_000).await;
}

pub(crate) async fn isolate_leader(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let n = leader_of_random_shard(c, rng).await;
    let led = led_by_group(c, &[n]).await;
    log.note(format!("isolate node {n} (leader of {led:?}) from every other node"));
    let t = Instant::now();
    cut(c, &[n]).await;
    log.check(leaders_moved(c, &[n], &led, Duration::from_secs(8), &format!("isolated node {n}")).await);
    sleep_rest(t, 4_000).await;
    log.note("heal partition");
    clear_faults(c).await;
    sleep(2_000).await;
    log.check(catch_up(c, n, Duration::from_secs(10)).await.map(|d| format!("healed node {n} caught up in {} ms", d.as_millis())));
    sleep(1_000).await;
}

/// A leader's link taken down at the bridge (its namespace's veth): the kernel drops every frame
/// to and from it, peers, routers and harness alike. Its shards must be led by others, it must
/// not answer from the root namespace while cut, and healed it must catch up.
pub(crate) async fn netns_partition(c: &mut Cluster, net: &netns::Net, rng: &mut impl Rng, log: &mut Log<'_>) {
    let n = leader_of_random_shard(c, rng).await;
    let led = led_by_group(c, &[n]).await;
    let before = applied(c, n).await.unwrap_or_default();
    log.note(format!("ip link set {} down: node {n} ({}, leader of {led:?}) off the bridge {}", net.veth(n), net.ip(n), net.bridge()));
    let t = Instant::now();
    if let Err(e) = net.cut(n) {
        log.missed(format!("could not cut node {n}'s link: {e}"));
        sleep(1_000).await;
        return;
    }
    log.check(leaders_moved(c, &[n], &led, Duration::from_secs(8), &format!("node {n} cut at the link layer")).await);
    // Not a filter inside the node: nothing of it is reachable, not even its status.
    match local(c, n).await {
        None => log.proved(format!("node {n} does not answer at {} while its link is down", net.ip(n))),
        Some(_) => log.missed(format!("node {n} answered at {} through a link that is down", net.ip(n))),
    }
    // The others go on without it, so the catch-up after the heal has something to catch up
    // (a precondition of that check, not a proof of the cut: the two checks above are).
    let rest = others(c, &[n]);
    let (behind, seen) = committed_past(c, &rest, &before, Duration::from_millis(4_000).saturating_sub(t.elapsed())).await;
    if behind {
        log.proved(format!("while node {n} was cut the others committed {seen:?}, past its {before:?} when cut"));
    } else {
        log.missed(format!("while node {n} was cut the others committed nothing past its {before:?} (they reached {seen:?})"));
    }
    sleep_rest(t, 4_000).await;
    log.note(format!("ip link set {} up", net.veth(n)));
    if let Err(e) = net.heal(n) {
        log.missed(format!("could not heal node {n}'s link: {e}"));
    }
    sleep(2_000).await;
    log.check(catch_up(c, n, Duration::from_secs(10)).await.map(|d| format!("relinked node {n} caught up in {} ms", d.as_millis())));
    sleep(1_000).await;
}

/// Every link +20..120 ms each way and 5 % loss for 5 s. The delay must show where it acts: a
/// commit needs a round trip to a follower, so the leaders' mean time from proposal to applied
/// outcome (`hongbao_commit_seconds`) must grow by at least the one-way delay over the mean of
/// the 1.5 s just before.
pub(crate) async fn slow_links(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let delay = rng.gen_range(20..=120);
    let before = commit_totals(c).await;
    sleep(1_500).await;
    let normal = commit_totals(c).await;
    log.note(format!("every link: +{delay} ms each way, 5 % loss"));
    let mut took = Vec::new();
    for n in c.topology.nodes.clone() {
        if set(c, n.id, Faults { delay_ms: delay, drop_percent: 5, ..Faults::default() }).await {
            took.push(n.id);
        }
    }
    if took.len() != c.topology.nodes.len() {
        log.missed(format!("only nodes {took:?} took the slow links"));
    }
    // Proposals made before the faults may still be committing: measure from 0.5 s on.
    sleep(500).await;
    let slowed = commit_totals(c).await;
    sleep(4_500).await;
    let after = commit_totals(c).await;
    log.note("links back to normal");
    clear_faults(c).await;
    match (mean_ms(before, normal), mean_ms(slowed, after)) {
        (Some(was), Some(now)) if now >= was + delay as f64 => log.proved(format!(
            "+{delay} ms links slowed commits: mean {now:.1} ms over {} commits, {was:.1} ms over {} just before",
            after.1 - slowed.1,
            normal.1 - before.1
        )),
        (was, now) => {
            log.missed(format!("+{delay} ms links did not slow commits by {delay} ms: mean {now:?} ms while slow, {was:?} ms just before"))
        }
    }
    sleep(2_000).await;
}

/// Every node's (seconds, count) of `hongbao_commit_seconds` so far, summed.
async fn commit_totals(c: &Cluster) -> (f64, f64) {
    (metric_sum(c, COMMIT_SECONDS_SUM).await, metric_sum(c, COMMIT_SECONDS_COUNT).await)
}

/// The mean commit time in ms between two readings (None: no commit in between).
fn mean_ms(from: (f64, f64), to: (f64, f64)) -> Option<f64> {
    let n = to.1 - from.1;
    (n > 0.0).then(|| (to.0 - from.0) / n * 1000.0)
}
