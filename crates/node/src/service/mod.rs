pub mod api;
pub mod background;
pub mod cluster;
