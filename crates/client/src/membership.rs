//! Online membership changes (#16), as sequences of idempotent steps: `hongbao cluster
//! add-node`, `remove-node` and `replace-node`. Each step is one call (AddNode, AddReplica,
//! RemoveReplica, RemoveNode); a node answers TIMEOUT or UNAVAILABLE while a step is still under
//! way (a learner catching up), and re-sending the same step continues it. Steps run one at a
//! time, so a shard loses a replica only after its replacement is a voter.

use crate::{Client, ClientError, Result};
use hongbao_proto::v1::{MembershipReply, NodeSpec};
use hongbao_proto::ErrorCode;
use hongbao_topology::Topology;
use std::future::Future;
use std::time::Duration;

use crate::limits::{MAX_MOVE_CALLS, MAX_STEP_RESENDS, STEP_PAUSE};

/// One membership step.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    AddNode(NodeSpec),
    AddReplica { shard: u32, node: u64 },
    RemoveReplica { shard: u32, node: u64 },
    RemoveNode(u64),
    AddShard { shard: u32, home: String, replicas: Vec<u64> },
}

/// A step done: the map version it left, the node's words about it, and how often it was re-sent.
#[derive(Debug, Clone)]
pub struct StepDone {
    pub step: Step,
    pub map_version: u64,
    pub done: String,
    pub resends: u32,
}

impl Step {
    /// The step's name in `--json` output.
    pub fn name(&self) -> &'static str {
        match self {
            Step::AddNode(_) => "add_node",
            Step::AddReplica { .. } => "add_replica",
            Step::RemoveReplica { .. } => "remove_replica",
            Step::RemoveNode(_) => "remove_node",
            Step::AddShard { .. } => "add_shard",
        }
    }

    pub fn shard(&self) -> Option<u32> {
        match self {
            Step::AddReplica { shard, .. } | Step::RemoveReplica { shard, .. } | Step::AddShard { shard, .. } => Some(*shard),
            Step::AddNode(_) | Step::RemoveNode(_) => None,
        }
    }

    pub fn node(&self) -> u64 {
        match self {
            Step::AddNode(n) => n.id,
            Step::AddReplica { node, .. } | Step::RemoveReplica { node, .. } | Step::RemoveNode(node) => *node,
            Step::AddShard { .. } => 0,
        }
    }

    /// What the step does, to prefix its error with.
    pub fn describe(&self) -> String {
        match self {
            Step::AddNode(n) => format!("add node {} to the map", n.id),
            Step::AddReplica { shard, node } => format!("shard {shard}: add node {node} as a replica"),
            Step::RemoveReplica { shard, node } => format!("shard {shard}: remove node {node} from the replicas"),
            Step::RemoveNode(node) => format!("remove node {node} from the map"),
            Step::AddShard { shard, .. } => format!("add shard {shard}"),
        }
    }

    /// The progress line once the step is done, at map version `version`.
    pub fn done_line(&self, version: u64) -> String {
        match self {
            Step::AddNode(n) => format!("node {} added to the map (version {version})", n.id),
            Step::AddReplica { shard, node } => format!("shard {shard}: node {node} caught up and is a voter (version {version})"),
            Step::RemoveReplica { shard, node } => format!("shard {shard}: node {node} removed from the replicas (version {version})"),
            Step::RemoveNode(node) => format!("node {node} removed from the map (version {version})"),
            Step::AddShard { shard, replicas, .. } => format!("shard {shard} founded on nodes {replicas:?} and led (version {version})"),
        }
    }

    /// The progress line before the step is re-sent.
    pub fn resend_line(&self) -> String {
        match self {
            Step::AddReplica { shard, .. } => format!("shard {shard}: still catching up, re-sending"),
            Step::RemoveReplica { shard, .. } => format!("shard {shard}: removal still under way, re-sending"),
            Step::AddNode(n) => format!("node {}: not in the map yet, re-sending", n.id),
            Step::RemoveNode(node) => format!("node {node}: still in the map, re-sending"),
            Step::AddShard { shard, .. } => format!("shard {shard}: no leader yet, re-sending"),
        }
    }

    async fn send(&self, client: &Client) -> Result<MembershipReply> {
        match self {
            Step::AddNode(n) => client.add_node(n.clone()).await,
            Step::AddReplica { shard, node } => client.add_replica(*shard, *node).await,
            Step::RemoveReplica { shard, node } => client.remove_replica(*shard, *node).await,
            Step::RemoveNode(node) => client.remove_node(*node).await,
            Step::AddShard { shard, home, replicas } => client.add_shard(*shard, home, replicas).await,
        }
    }
}

/// `add-node`: the node into the map, then a replica of each of `shards` in turn.
pub fn add_plan(node: NodeSpec, shards: &[u32]) -> Vec<Step> {
    let id = node.id;
    std::iter::once(Step::AddNode(node)).chain(shards.iter().map(|s| Step::AddReplica { shard: *s, node: id })).collect()
}

/// `remove-node`: out of every shard `map` lists it in, then out of the map.
pub fn remove_plan(map: &Topology, node: u64) -> Vec<Step> {
    let shards = map.shards_on(node).into_iter().map(|s| Step::RemoveReplica { shard: s.id, node });
    shards.chain([Step::RemoveNode(node)]).collect()
}

/// `replace-node`: the new node into the map; for each shard of `old`, one at a time, the new
/// node as a voter and then `old` out (the shard never has fewer replicas than before); then
/// `old` out of the map.
pub fn replace_plan(map: &Topology, old: u64, new: NodeSpec) -> Vec<Step> {
    let id = new.id;
    let mut steps = vec![Step::AddNode(new)];
    for s in map.shards_on(old) {
        steps.push(Step::AddReplica { shard: s.id, node: id });
        steps.push(Step::RemoveReplica { shard: s.id, node: old });
    }
    steps.push(Step::RemoveNode(old));
    steps
}

/// Whether a step's answer says it is still under way (or its outcome unknown): re-send it.
pub fn still_under_way(e: &ClientError) -> bool {
    matches!(e.code(), ErrorCode::Timeout | ErrorCode::Unavailable)
}

/// Runs `send` until it answers something else than "still under way", re-sending at most
/// `max_resends` times, `pause` apart, after telling `on_resend`. Returns the answer and the
/// number of re-sends; when the bound is reached, the last answer, saying so.
pub async fn resend<T, F, Fut>(send: F, max_resends: u32, pause: Duration, mut on_resend: impl FnMut(&ClientError)) -> Result<(T, u32)>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut resends = 0;
    loop {
        match send().await {
            Ok(v) => return Ok((v, resends)),
            Err(e) if still_under_way(&e) && resends < max_resends => {
                on_resend(&e);
                resends += 1;
                tokio::time::sleep(pause).await;
            }
            Err(mut e) => {
                if still_under_way(&e) {
                    e.detail.message = format!("not done after {resends} re-sends: {}", e.detail.message);
                }
                return Err(e);
            }
        }
    }
}

/// Runs `steps` in order, each re-sent while under way; `progress` gets each line to show
/// (re-sends and steps done). Stops at the first failure: its error names the step. Every step
/// is idempotent, so running the same command again continues where it stopped.
pub async fn run(client: &Client, steps: Vec<Step>, mut progress: impl FnMut(&str)) -> Result<Vec<StepDone>> {
    let mut out = Vec::with_capacity(steps.len());
    for step in steps {
        let sent = resend(|| step.send(client), MAX_STEP_RESENDS, STEP_PAUSE, |_| progress(&step.resend_line())).await;
        let (reply, resends) = sent.map_err(|mut e| {
            e.detail.message = format!("{}: {}", step.describe(), e.detail.message);
            e
        })?;
        progress(&step.done_line(reply.map_version));
        out.push(StepDone { step, map_version: reply.map_version, done: reply.done, resends });
    }
    Ok(out)
}

/// Moves `slot` to shard `to`: calls `MoveSlot` until the map routes the slot there, each call
/// re-sent while under way; `progress` gets a line per call (phase, wallets sent so far).
pub async fn move_slot(client: &Client, slot: u32, to: u32, mut progress: impl FnMut(&str)) -> Result<hongbao_proto::v1::MoveSlotReply> {
    let mut sent = 0u64;
    let mut last = None;
    for _ in 0..MAX_MOVE_CALLS {
        let (r, _) = resend(
            || client.move_slot(slot, to),
            MAX_STEP_RESENDS,
            STEP_PAUSE,
            |e| progress(&format!("slot {slot}: re-sending ({})", e.detail.message)),
        )
        .await?;
        sent += r.wallets_sent as u64;
        if r.done {
            progress(&format!(
                "slot {slot}: on shard {} now (version {}), {sent} wallets moved from shard {}",
                r.to_shard, r.map_version, r.from_shard
            ));
            return Ok(r);
        }
        progress(&format!("slot {slot}: {} (shard {} -> {}), {sent} wallets sent", r.phase, r.from_shard, r.to_shard));
        last = Some(r);
    }
    let phase = last.map(|r| r.phase).unwrap_or_default();
    Err(ClientError {
        detail: hongbao_proto::ErrorDetail {
            code: hongbao_proto::ErrorCode::Timeout as i32,
            message: format!("slot {slot} still {phase} after {MAX_MOVE_CALLS} calls: run the same move-slot again to finish it"),
            ..Default::default()
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hongbao_proto::ErrorDetail;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn map() -> Topology {
        let path = std::path::Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo")).join("../../deploy/local-3x1.toml");
        Topology::load(&path).expect("shipped topology")
    }

    fn spec(id: u64) -> NodeSpec {
        NodeSpec {
            id,
            region: "tianjin".into(),
            addr: format!("127.0.0.1:{}", 7200 + id),
            metrics_addr: format!("127.0.0.1:{}", 9200 + id),
        }
    }

    fn err(code: ErrorCode) -> ClientError {
        ClientError { detail: ErrorDetail { code: code as i32, message: "m".into(), ..Default::default() } }
    }

    #[test]
    fn the_plans_add_before_they_remove() {
        assert_eq!(
            add_plan(spec(4), &[1, 3]),
            vec![Step::AddNode(spec(4)), Step::AddReplica { shard: 1, node: 4 }, Step::AddReplica { shard: 3, node: 4 }]
        );
        let t = map();
        assert_eq!(
            remove_plan(&t, 3),
            vec![
                Step::RemoveReplica { shard: 1, node: 3 },
                Step::RemoveReplica { shard: 2, node: 3 },
                Step::RemoveReplica { shard: 3, node: 3 },
                Step::RemoveNode(3)
            ]
        );
        assert_eq!(remove_plan(&t, 9), vec![Step::RemoveNode(9)], "a node in no shard: only out of the map");
        let r = replace_plan(&t, 3, spec(4));
        assert_eq!(r.len(), 1 + 2 * 3 + 1);
        assert_eq!(r[0], Step::AddNode(spec(4)));
        assert_eq!(r[1..3], [Step::AddReplica { shard: 1, node: 4 }, Step::RemoveReplica { shard: 1, node: 3 }]);
        assert_eq!(r[7], Step::RemoveNode(3));
        // The plan is one the map's own rules accept, step by step.
        let mut t = t;
        for s in &r {
            t = match s {
                Step::AddNode(n) => t.add_node(&hongbao_topology::NodeSpec {
                    id: n.id,
                    region: n.region.clone(),
                    addr: n.addr.clone(),
                    metrics_addr: n.metrics_addr.clone(),
                }),
                Step::AddReplica { shard, node } => t.add_replica(*shard, *node),
                Step::RemoveReplica { shard, node } => t.remove_replica(*shard, *node),
                Step::RemoveNode(node) => t.remove_node(*node),
                Step::AddShard { shard, home, replicas } => t.add_shard(*shard, home, replicas),
            }
            .unwrap_or_else(|e| panic!("{s:?}: {e:?}"));
        }
        assert!(t.node(3).is_none() && t.shards.iter().all(|s| s.replicas.contains(&4)));
    }

    #[test]
    fn progress_lines() {
        assert_eq!(Step::AddNode(spec(4)).done_line(5), "node 4 added to the map (version 5)");
        assert_eq!(Step::AddReplica { shard: 1, node: 4 }.done_line(6), "shard 1: node 4 caught up and is a voter (version 6)");
        assert_eq!(Step::AddReplica { shard: 1, node: 4 }.resend_line(), "shard 1: still catching up, re-sending");
    }

    /// Answers with `answers` in turn (the last one forever): (result, sends, re-send lines).
    async fn run_resend(answers: &[Result<u32>], max: u32) -> (Result<(u32, u32)>, u32, u32) {
        let sends = AtomicU32::new(0);
        let mut told = 0;
        let r = resend(
            || {
                let i = sends.fetch_add(1, Ordering::Relaxed) as usize;
                let a = answers[i.min(answers.len() - 1)].clone();
                async move { a }
            },
            max,
            Duration::ZERO,
            |_| told += 1,
        )
        .await;
        (r, sends.load(Ordering::Relaxed), told)
    }

    #[tokio::test]
    async fn a_step_is_re_sent_while_under_way_and_at_most_the_bound() {
        let (r, n, told) = run_resend(&[Err(err(ErrorCode::Timeout)), Err(err(ErrorCode::Unavailable)), Ok(7)], 20).await;
        assert_eq!((r.unwrap(), n, told), ((7, 2), 3, 2));
        let (r, n, _) = run_resend(&[Err(err(ErrorCode::Timeout)), Err(err(ErrorCode::InvalidArgument))], 20).await;
        assert_eq!((r.unwrap_err().code(), n), (ErrorCode::InvalidArgument, 2), "a refusal is the answer");
        let (r, n, told) = run_resend(&[Err(err(ErrorCode::Timeout))], 20).await;
        let e = r.unwrap_err();
        assert_eq!((e.code(), n, told), (ErrorCode::Timeout, 21, 20), "one send and twenty re-sends");
        assert!(e.detail.message.starts_with("not done after 20 re-sends"), "{}", e.detail.message);
    }
}
