pub mod api;
pub mod cluster;
pub mod convert;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod notifier;
