//! `hongbao cluster replace-node`'s steps (#16) against a stand-in node that serves the Cluster
//! API over TLS and keeps the map with the topology crate's own edits: the steps go in order,
//! each with its gRPC deadline, and a step answered "still under way" is re-sent until done.

use hongbao_auth::{Identity, Role, SecurityDir};
use hongbao_client::{membership, Client, Credentials};
use hongbao_proto::v1::cluster_server::{Cluster, ClusterServer};
use hongbao_proto::v1::*;
use hongbao_proto::{error, ErrorCode};
use hongbao_topology::{Edit, Topology};
use std::sync::{Arc, Mutex};
use tonic::{Request, Response, Status};

/// The node's map, the steps it was sent (with their gRPC deadline) and how many AddReplica
/// calls it still answers TIMEOUT (a learner catching up).
struct FakeNode {
    map: Mutex<Topology>,
    calls: Mutex<Vec<(String, bool)>>,
    catching_up: Mutex<u32>,
}

type Res<T> = Result<Response<T>, Status>;

impl FakeNode {
    /// Applies one edit as a node would: done, already done, or refused.
    fn step<T>(&self, name: &str, req: &Request<T>, edit: impl FnOnce(&Topology) -> Result<Topology, Edit>) -> Res<MembershipReply> {
        self.calls.lock().unwrap().push((name.to_string(), req.metadata().contains_key("grpc-timeout")));
        let mut map = self.map.lock().unwrap();
        let done = match edit(&map) {
            Ok(next) => {
                *map = next;
                "done".to_string()
            }
            Err(Edit::Unchanged(why)) => why,
            Err(Edit::Refused(why)) => return Err(error(ErrorCode::InvalidArgument, why)),
        };
        Ok(Response::new(MembershipReply { map_version: map.version, done }))
    }
}

#[tonic::async_trait]
impl Cluster for FakeNode {
    async fn status(&self, _: Request<StatusRequest>) -> Res<StatusReply> {
        Err(Status::unimplemented("fake"))
    }
    async fn audit(&self, _: Request<AuditRequest>) -> Res<AuditReply> {
        Err(Status::unimplemented("fake"))
    }
    async fn shard_totals_of(&self, _: Request<ShardTotalsRequest>) -> Res<ShardTotals> {
        Err(Status::unimplemented("fake"))
    }
    async fn transfer_leader(&self, _: Request<TransferLeaderRequest>) -> Res<TransferLeaderReply> {
        Err(Status::unimplemented("fake"))
    }
    async fn drain(&self, _: Request<DrainRequest>) -> Res<DrainReply> {
        Err(Status::unimplemented("fake"))
    }
    async fn undrain(&self, _: Request<DrainRequest>) -> Res<DrainReply> {
        Err(Status::unimplemented("fake"))
    }
    async fn get_map(&self, _: Request<GetMapRequest>) -> Res<ClusterMap> {
        let map = self.map.lock().unwrap();
        Ok(Response::new(ClusterMap { version: map.version, toml: map.to_toml() }))
    }
    async fn add_node(&self, req: Request<AddNodeRequest>) -> Res<MembershipReply> {
        let n = req.get_ref().node.clone().unwrap_or_default();
        let spec = hongbao_topology::NodeSpec { id: n.id, region: n.region, addr: n.addr, metrics_addr: n.metrics_addr };
        self.step("add_node", &req, |t| t.add_node(&spec))
    }
    async fn remove_node(&self, req: Request<RemoveNodeRequest>) -> Res<MembershipReply> {
        let node = req.get_ref().node;
        self.step("remove_node", &req, |t| t.remove_node(node))
    }
    async fn add_replica(&self, req: Request<ReplicaChangeRequest>) -> Res<MembershipReply> {
        let (shard, node) = (req.get_ref().shard, req.get_ref().node);
        {
            let mut left = self.catching_up.lock().unwrap();
            if *left > 0 {
                *left -= 1;
                return Err(error(ErrorCode::Timeout, format!("shard {shard}: node {node} is still catching up")));
            }
        }
        self.step("add_replica", &req, |t| t.add_replica(shard, node))
    }
    async fn remove_replica(&self, req: Request<ReplicaChangeRequest>) -> Res<MembershipReply> {
        let (shard, node) = (req.get_ref().shard, req.get_ref().node);
        self.step("remove_replica", &req, |t| t.remove_replica(shard, node))
    }
}

#[tokio::test]
async fn replace_node_moves_every_replica_then_removes_the_old_node() {
    let manifest = std::path::PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("run by cargo"));
    let seed = Topology::load(&manifest.join("../../deploy/local-3x1.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let security = SecurityDir::new(dir.path());
    hongbao_auth::ensure_dev_pki(&security, &seed).unwrap();

    // Node 1's certificate names 127.0.0.1; any port will do.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let node = Arc::new(FakeNode { map: Mutex::new(seed), calls: Mutex::new(Vec::new()), catching_up: Mutex::new(3) });
    let server = tonic::transport::Server::builder()
        .tls_config(security.server_tls(&Identity::Node(1)).unwrap())
        .unwrap()
        .add_service(ClusterServer::from_arc(node.clone()))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener));
    tokio::spawn(server);

    let creds = Credentials::load(dir.path()).unwrap().only(Role::Admin);
    let client = Client::new(vec![addr], Arc::new(creds));
    let map = Topology::parse(&client.get_map().await.unwrap().toml).unwrap();
    let new = NodeSpec { id: 4, region: "tianjin".into(), addr: "127.0.0.1:7104".into(), metrics_addr: "127.0.0.1:9104".into() };
    let mut lines = Vec::new();
    let done = membership::run(&client, membership::replace_plan(&map, 3, new), |l| lines.push(l.to_string())).await.unwrap();

    let resent = lines.iter().filter(|l| *l == "shard 1: still catching up, re-sending").count();
    assert!(resent >= 1, "the first AddReplica was answered TIMEOUT and re-sent: {lines:?}");
    let progress: Vec<&str> = lines.iter().map(String::as_str).filter(|l| !l.ends_with("re-sending")).collect();
    assert_eq!(
        progress,
        [
            "node 4 added to the map (version 1)",
            "shard 1: node 4 caught up and is a voter (version 2)",
            "shard 1: node 3 removed from the replicas (version 3)",
            "shard 2: node 4 caught up and is a voter (version 4)",
            "shard 2: node 3 removed from the replicas (version 5)",
            "shard 3: node 4 caught up and is a voter (version 6)",
            "shard 3: node 3 removed from the replicas (version 7)",
            "node 3 removed from the map (version 8)",
        ]
    );
    assert_eq!(done.len(), 8);
    assert_eq!(done[1].resends as usize, resent);
    let calls = node.calls.lock().unwrap().clone();
    assert!(calls.iter().all(|(_, deadline)| *deadline), "every step carries its gRPC deadline: {calls:?}");
    let map = node.map.lock().unwrap().clone();
    assert!(map.node(3).is_none());
    assert!(map.shards.iter().all(|s| s.replicas == vec![1, 2, 4]), "{:?}", map.shards);

    // Every step is idempotent: the same command again finds each step done already.
    let new = NodeSpec { id: 4, region: "tianjin".into(), addr: "127.0.0.1:7104".into(), metrics_addr: "127.0.0.1:9104".into() };
    let again = membership::run(&client, membership::replace_plan(&map, 3, new), |_| {}).await.unwrap();
    let said: Vec<(&str, u64)> = again.iter().map(|d| (d.done.as_str(), d.map_version)).collect();
    assert_eq!(said, [("node 4 is in the map already", 8), ("node 3 is not in the map", 8)]);
}
