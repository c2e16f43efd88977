//! Fault injection for chaos tests, compiled only with the cargo feature `fault-injection`: the
//! admin identity replaces this node's injected faults (links cut, delay, loss, clock offset).

use crate::host::Host;
use hongbao_proto::v1::fault_injection_server::FaultInjection;
use hongbao_proto::v1::{Faults, FaultsReply};
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub struct FaultService {
    pub host: Arc<Host>,
}

#[tonic::async_trait]
impl FaultInjection for FaultService {
    async fn set_faults(&self, req: Request<Faults>) -> Result<Response<FaultsReply>, Status> {
        let f = req.into_inner();
        let rules = crate::faults::Rules {
            cut_off: f.cut_off.iter().copied().collect(),
            delay_ms: f.delay_ms,
            delay_to: f.delay_to.iter().copied().collect(),
            drop_percent: f.drop_percent,
            clock_offset_ms: f.clock_offset_ms,
        };
        self.host.peers.faults.set(rules).map_err(|e| Status::invalid_argument(e.0))?;
        tracing::warn!(node = self.host.node_id, faults = ?f, "injected faults replaced");
        Ok(Response::new(FaultsReply { node: self.host.node_id, faults: Some(f) }))
    }
}
