//! Greedy KV-cache generation and the full parity report on the bundled case `tiny-a`.

use burn::backend::NdArray;
use lavin_tools::parity::{print_report, run, Bounds};

#[test]
fn parity_command_passes_on_tiny_a() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/parity/tiny-a");
    let sections =
        run::<NdArray>(dir.as_ref(), &Default::default(), Bounds::F32).expect("parity run");
    assert!(
        print_report(&sections, Bounds::F32),
        "parity failures (see the table above)"
    );
}
