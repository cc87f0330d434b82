//! lavin-train: LaVIN's adapter-only training recipe on Burn.
//!
//! * [`optim`]: torch-exact AdamW with timm's groups, global-norm clipping, adapter-only
//!   [`burn::module::ModuleMapper`] step keyed by original parameter names.
//! * [`lr_sched`]: LaVIN's warmup + half-cosine schedule by fractional epoch.
//! * [`io`]: atomic writes, safetensors / PyTorch tensor maps.

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
pub mod report;
pub mod run;
pub mod trainer;
pub mod validate;
