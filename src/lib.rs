//! Umbrella crate: re-exports the workspace crates for the top-level tests and examples.
pub use lavin_data as data;
pub use lavin_infer as infer;
pub use lavin_model as model;
pub use lavin_train as train;
