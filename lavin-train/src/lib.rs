//! lavin-train: LaVIN's adapter-only training recipe on Burn.
//!
//! * [`engine`]: the loop, as burn-train's custom training strategy (learner, loaders, metrics,
//!   renderer, interrupter from burn-train).
//! * [`distributed`]: data parallel over devices, processes and machines.
//! * [`optim`]: torch-exact AdamW with timm's groups, global-norm clipping, adapter-only
//!   [`burn::module::ModuleMapper`] step keyed by original parameter names.
//! * [`lr_sched`]: LaVIN's warmup + half-cosine schedule by fractional epoch.
//! * [`io`]: atomic writes, safetensors / PyTorch tensor maps.

pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod data;
pub mod distributed;
pub mod engine;
pub mod interrupt;
pub mod io;
pub mod lr_sched;
pub mod optim;
pub mod params;
pub mod report;
pub mod run;
pub mod trainer;
pub mod validate;
