//! Development tools, kept out of the product binaries:
//!
//! * [`parity`]: `lavin-tools parity DIR` checks one parity case folder (the original's weights
//!   and the tensors its code produced) end to end.
//! * [`pretrain`]: `lavin-tools pretrain-base` makes the tiny frozen base in `assets/tiny-base/`.
//! * `make-mini-sqa` (a binary of this crate) writes the bundled `data/mini-sqa/`.

pub mod parity;
pub mod pretrain;
