//! lavin-train: LaVIN's adapter-only training recipe on Burn.
//!
//! * [`optim`]: torch-exact AdamW with timm's groups, global-norm clipping, adapter-only
//!   [`burn::module::ModuleMapper`] step keyed by original parameter names.
//! * [`lr_sched`]: LaVIN's warmup + half-cosine schedule by fractional epoch.
//! * [`io`]: atomic writes, safetensors / PyTorch tensor maps.

// Built without any backend feature (as a library of lavin-infer), the backend dispatch of
// `run::run` and `bench::run` has only its error arm.
#![cfg_attr(
    not(any(
        feature = "ndarray",
        feature = "flex",
        feature = "wgpu",
        feature = "cuda"
    )),
    allow(unreachable_code, unused_variables, unused_imports)
)]

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod io;
pub mod lr_sched;
pub mod optim;
pub mod parallel;
pub mod params;
pub mod pretrain;
pub mod report;
pub mod run;
pub mod trainer;
pub mod validate;
