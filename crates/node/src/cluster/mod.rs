//! The cluster map this node follows and its online changes. `directory` holds and follows the
//! map; `membership` changes it (nodes, replicas, shards, drains) by compare-and-set on the meta
//! shard; `slot_move` moves a slot's users between shards; `placement` is the policy of where a
//! shard's leadership belongs (acted on by `leader::placement`); `slot_load` counts requests per
//! slot for rebalancing. Everything here returns domain results (`error::HostError`); only
//! `service` turns them into proto replies.

pub mod directory;
pub mod map;
pub mod membership;
pub mod placement;
pub mod slot_load;
pub mod slot_move;
