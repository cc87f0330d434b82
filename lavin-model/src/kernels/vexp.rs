//! `e^x` over a slice, vectorized. libm's `expf` is a scalar call per element, and softmax,
//! cross-entropy and the sigmoid gates spent a tenth of a prefill in it. Here the loop body is
//! branch-free integer and float arithmetic that LLVM turns into SIMD: SSE2 on any x86-64, and
//! AVX2 + FMA when the CPU has them (picked at run time; the crate builds for baseline x86-64).
//!
//! Method: `x = n ln2 + r` with `|r| <= ln2 / 2` (Cody-Waite, `ln2` split in two), `e^r` by its
//! degree-7 Taylor polynomial (truncation < 5e-9 relative), `2^n` assembled in the exponent bits.
//! Within 2 ulp of `f32::exp` on `[-87, 88]`; 0 below (an `-inf` mask gives exact zeros, as
//! `expf` does), `+inf` above; NaN stays NaN.

/// `v[i] = e^v[i]`.
pub fn exp_in_place(v: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU features the function is compiled for were just detected.
        return unsafe { exp_in_place_avx2(v) };
    }
    v.iter_mut().for_each(|x| *x = exp(*x));
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn exp_in_place_avx2(v: &mut [f32]) {
    v.iter_mut().for_each(|x| *x = exp(*x));
}

/// One element; `inline(always)` so the AVX2 copy above inlines it under its own features.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln2 = LN2_HI + LN2_LO, LN2_HI with trailing zero bits so n * LN2_HI is exact.
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    // 1.5 * 2^23: adding it rounds to an integer (ties to even) held in the low mantissa bits.
    const ROUND: f32 = 12_582_912.0;
    const LO: f32 = -87.0;
    const HI: f32 = 88.0;
    let xc = x.clamp(LO, HI);
    let k = xc * LOG2E + ROUND;
    let n = k - ROUND;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (1.0 / 2.0
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // n sits in k's low mantissa bits (offset by ROUND's 0x4B40_0000).
    let e = (k.to_bits() as i32).wrapping_sub(ROUND.to_bits() as i32);
    let y = p * f32::from_bits(((e + 127) << 23) as u32);
    let y = if x < LO { 0.0 } else { y };
    let y = if x > HI { f32::INFINITY } else { y };
    if x.is_nan() {
        x
    } else {
        y
    }
}

#[cfg(test)]
mod tests {
    use super::exp_in_place;

    fn ulps(a: f32, b: f32) -> i64 {
        (a.to_bits() as i64 - b.to_bits() as i64).abs()
    }

    #[test]
    fn within_two_ulp_of_libm() {
        let xs: Vec<f32> = (0..2_000_001)
            .map(|i| -87.0 + 175.0 * i as f32 / 2_000_000.0)
            .chain([
                0.0,
                -0.0,
                1.0,
                -1.0,
                1e-8,
                -1e-8,
                0.5 * std::f32::consts::LN_2,
            ])
            .collect();
        let mut got = xs.clone();
        exp_in_place(&mut got);
        let worst = xs
            .iter()
            .zip(&got)
            .map(|(&x, &y)| (ulps(y, x.exp()), x))
            .max_by_key(|&(u, _)| u)
            .unwrap();
        assert!(worst.0 <= 2, "{} ulp at x = {}", worst.0, worst.1);
    }

    #[test]
    fn limits() {
        let mut v = vec![
            f32::NEG_INFINITY,
            -1e4,
            -88.0,
            89.0,
            f32::INFINITY,
            f32::NAN,
        ];
        exp_in_place(&mut v);
        assert_eq!(v[0], 0.0);
        assert_eq!(v[1], 0.0);
        assert_eq!(v[2], 0.0);
        assert_eq!(v[3], f32::INFINITY);
        assert_eq!(v[4], f32::INFINITY);
        assert!(v[5].is_nan());
    }
}
