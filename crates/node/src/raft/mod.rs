pub mod log_store;
pub mod snapshot;
pub mod state_machine;
#[cfg(test)]
mod suite_test;
pub mod types;
