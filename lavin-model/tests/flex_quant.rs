//! Frozen quantized linear on Flex (the CPU inference default): 8- and 4-bit forward within the
//! quantization bound, and the input gradient through the autodiff op that `quant` registers for
//! Flex when the `flex` feature is on.
#![cfg(feature = "flex")]

use burn::backend::{Autodiff, Flex};
use lavin_model::quant::Bits;

mod common;
use common::{check_forward, check_input_grad};

#[test]
fn forward_within_quantization_bound() {
    for bits in [Bits::Eight, Bits::Four] {
        let e = check_forward::<Flex>(bits);
        eprintln!("{bits}: {e:?}");
        let e = check_forward::<Autodiff<Flex>>(bits);
        eprintln!("{bits} autodiff: {e:?}");
    }
}

#[test]
fn input_gradient_matches_dequantized_matmul() {
    for bits in [Bits::Eight, Bits::Four] {
        check_input_grad::<Autodiff<Flex>>(bits, 1e-5);
    }
}
