//! The namespaces of the `netns-partition` schedule now live with the other backends
//! (`crate::backend::netns`); this name stays for the chaos runner's `netns::Net`.

pub use crate::backend::netns::Net;
