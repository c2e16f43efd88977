//! The chaos suite: a real cluster (nodes and routers as processes), a recorded client workload,
//! a fault schedule, then quiescence and the bank checker. `hongbao-chaos` (scripts/chaos) and
//! tests/tests/chaos.rs both run it.
//!
//! Where things are: `runner` (cluster, workload, fault window), `schedule` (the schedules by
//! name), `schedules/` (each family's fault cycles), `probes` (what the cycles ask of the
//! cluster), `effects` (the fault log and the effects proved or missed), `verify` (after the
//! run: settling, quiescence, replicas), `replay` (acknowledged operations sent again),
//! `checker` (the bank checker, pure), `report`.

pub mod checker;
mod effects;
pub mod history;
pub use crate::backend::netns;
mod probes;
mod replay;
mod report;
mod runner;
mod schedule;
mod schedules;
mod verify;
pub mod workload;

pub use report::Report;
pub use runner::{run, Options, UNAVAILABLE_GAP};
pub use schedule::Schedule;
