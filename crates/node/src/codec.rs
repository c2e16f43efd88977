//! The one binary encoding of everything the node stores or sends between nodes: Raft log
//! entries, votes, meta, openraft's RPCs and ledger requests (bincode, fixed for a cluster's
//! life: every replica must read what any other wrote).

use std::io;

pub fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    bincode::serialize(v).expect("in-memory values always serialize")
}

/// What `encode` would produce, in bytes, without producing it.
pub fn encoded_len<T: serde::Serialize>(v: &T) -> usize {
    bincode::serialized_size(v).expect("in-memory values always serialize") as usize
}

pub fn decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> io::Result<T> {
    bincode::deserialize(b).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("corrupt value: {e}")))
}
