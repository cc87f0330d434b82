//! Ctrl-C and SIGTERM: the first one asks the training loop to stop after the current optimizer
//! step, write a checkpoint and exit 0 (`--resume` continues from it); a second one exits at once
//! with status 130.
//!
//! The handler only sets an atomic flag (the one thing a signal handler may safely do); the loop
//! reads it between steps. With several ranks the flag travels with the gradients, so every rank
//! stops after the same step.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

static REQUESTED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

/// Install the handlers (once per process; later calls do nothing).
pub fn install() {
    INSTALL.call_once(|| {
        for signal in [libc::SIGINT, libc::SIGTERM] {
            let action = || {
                if REQUESTED.swap(true, Ordering::SeqCst) {
                    // Second signal: the user means it. `_exit` is async-signal-safe.
                    unsafe { libc::_exit(130) };
                }
            };
            // SAFETY: the action only touches an atomic and calls `_exit`, both allowed in a
            // signal handler.
            if let Err(e) = unsafe { signal_hook_registry::register(signal, action) } {
                eprintln!(
                    "lavin-train: cannot catch signal {signal} ({e}); Ctrl-C will not checkpoint"
                );
            }
        }
    });
}

/// Whether a stop was asked for (by a signal or [`request`]).
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// Ask the loop to stop as a signal would (tests, embedding programs).
pub fn request() {
    REQUESTED.store(true, Ordering::SeqCst);
}

/// Forget an earlier request (tests that train several times in one process).
pub fn clear() {
    REQUESTED.store(false, Ordering::SeqCst);
}
