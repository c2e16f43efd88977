pub mod log_store;
pub mod snapshot;
pub mod state_machine;
pub mod types;
#[cfg(test)]
mod suite_test;
