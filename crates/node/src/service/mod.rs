pub mod api;
pub mod cluster;
pub mod convert;
