//! Clock faults: one node's clock jumps (back an hour or ahead 30 s), a leader's clock leaps
//! two days ahead.

use crate::chaos::effects::Log;
use crate::chaos::probes::*;
use crate::Cluster;
use hongbao_proto::v1::Faults;
use rand::seq::SliceRandom;
use rand::Rng;
use std::time::{Duration, Instant};

/// +2 days: the clock-leap schedule's offset.
pub(crate) const TWO_DAYS_MS: i64 = 2 * 24 * 3600 * 1000;

/// Back an hour, or ahead 30 s: after a forward jump the ledger's clock (which never runs
/// backwards) waits for the wall clock to catch up, so packets made meanwhile expire late by up
/// to the jump; 30 s keeps that inside the settling time.
pub(crate) async fn clock_jump(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let n = c.topology.nodes.choose(rng).expect("nodes").id;
    let jump: i64 = if rng.gen_bool(0.5) { 30_000 } else { -3_600_000 };
    log.note(format!("node {n}: clock jumps {:+} s", jump / 1000));
    let t = Instant::now();
    set(c, n, Faults { clock_offset_ms: jump, ..Faults::default() }).await;
    // Every jump here is over the 500 ms the nodes tolerate.
    match untrusted(c, n, Duration::from_secs(4)).await {
        Some(why) => log.proved(format!("node {n} distrusts its clock after a {:+} s jump: {why}", jump / 1000)),
        None => log.missed(format!("node {n}'s clock jumped {:+} s and its status still says trusted", jump / 1000)),
    }
    sleep_rest(t, 5_000).await;
    clock_back(c, n, log).await;
}

/// Two days ahead on a leader: it must stamp nothing, hand every leadership away, say why, and
/// be trusted again once its clock is back.
pub(crate) async fn clock_leap(c: &mut Cluster, rng: &mut impl Rng, log: &mut Log<'_>) {
    let n = leader_of_random_shard(c, rng).await;
    let led = led_by_group(c, &[n]).await;
    log.note(format!("node {n} (leader of {led:?}): clock leaps +2 days"));
    let t = Instant::now();
    set(c, n, Faults { clock_offset_ms: TWO_DAYS_MS, ..Faults::default() }).await;
    match untrusted(c, n, Duration::from_secs(4)).await {
        Some(why) => log.proved(format!("node {n} distrusts its clock after +2 days: {why}")),
        None => log.missed(format!("node {n}'s clock leapt +2 days and its status still says trusted")),
    }
    log.check(leaders_moved(c, &[n], &led, Duration::from_secs(5), &format!("node {n} two days fast")).await);
    let mut still;
    let none = eventually!(Duration::from_secs(5), {
        still = led_by(c, n).await.unwrap_or_default();
        still.is_empty()
    });
    if none {
        log.proved(format!("node {n} leads no shard while two days fast"));
    } else {
        log.missed(format!("node {n} still leads {still:?} while two days fast"));
    }
    sleep_rest(t, 5_000).await;
    // It must stay without leaderships (no failback to a node whose clock is off).
    let now = led_by(c, n).await.unwrap_or_default();
    if !now.is_empty() {
        log.missed(format!("node {n} leads {now:?} again while still two days fast"));
    }
    clock_back(c, n, log).await;
}

/// Sets node `n`'s clock back to true, then checks that it trusts its clock again within 10 s
/// (asking only after 1.5 s, so the answer postdates the backward leap), and waits out 3 s from
/// the heal.
async fn clock_back(c: &mut Cluster, n: u64, log: &mut Log<'_>) {
    log.note(format!("node {n}: clock back"));
    set(c, n, Faults::default()).await;
    let t = Instant::now();
    // Coming back is a leap too (backwards): give the node time to notice it before asking
    // whether it trusts its clock again, or the answer predates the leap.
    sleep(1_500).await;
    log.check(
        trusted(c, n, Duration::from_secs(10))
            .await
            .map(|()| format!("node {n} trusts its clock again {} ms after the heal", t.elapsed().as_millis())),
    );
    sleep_rest(t, 3_000).await;
}
