//! `y = x · W` for one row `x [k]` and a row-major weight `W [k, n]`: a decode step at batch 1.
//!
//! The product reads every weight once and does two flops per 4 bytes, so it runs at memory
//! speed or not at all. gemm's matrix-vector path streams the weight on one thread at about
//! 20 GB/s on a 2-core EPYC VM; two threads, each owning a block of output columns, read it at
//! about 25-29 GB/s (a standalone sweep over the `small` preset's 57 weights, 167 MB).
//!
//! Loop order: the output block stays in registers while a band of `BAND` weight rows streams
//! past it, so the output is read and written once per band rather than once per row, and the
//! band's rows are `BAND` independent sequential streams for the prefetchers. The sum over `k`
//! runs in row order for every column, one rounding per row, on every path.

use rayon::prelude::*;

/// Weight rows per band: 8-16 measured the same, 4 read 15% slower, 2 35% slower.
const BAND: usize = 16;
/// Output columns held in registers: four AVX registers.
const COLS: usize = 32;
/// Weights (elements) from which the columns are split across threads; below this the
/// product takes microseconds and waking the pool costs as much.
const SPLIT_MIN: usize = 1 << 16;

/// `x [k] · w [k, n] -> [n]`.
pub fn gemv(x: &[f32], w: &[f32], k: usize, n: usize) -> Vec<f32> {
    assert_eq!(x.len(), k, "gemv: x has {} values for k = {k}", x.len());
    assert_eq!(
        w.len(),
        k * n,
        "gemv: w has {} values for {k} x {n}",
        w.len()
    );
    let mut y = vec![0.0f32; n];
    let threads = rayon::current_num_threads();
    if threads < 2 || k * n < SPLIT_MIN {
        columns(x, w, n, 0, &mut y);
        return y;
    }
    let block = n.div_ceil(threads).next_multiple_of(COLS).min(n);
    y.par_chunks_mut(block)
        .enumerate()
        .for_each(|(i, out)| columns(x, w, n, i * block, out));
    y
}

/// `out = x · w[:, j0 .. j0 + out.len()]` (`out` starts zeroed).
fn columns(x: &[f32], w: &[f32], n: usize, j0: usize, out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
        // SAFETY: the CPU features the function is compiled for were just detected.
        return unsafe { columns_avx2(x, w, n, j0, out) };
    }
    columns_portable(x, w, n, j0, out);
}

/// The same loop in plain Rust: other architectures (aarch64's `mul_add` is one vector
/// instruction) and x86-64 CPUs without AVX2 + FMA.
fn columns_portable(x: &[f32], w: &[f32], n: usize, j0: usize, out: &mut [f32]) {
    let nb = out.len();
    for (band, xs) in x.chunks(BAND).enumerate() {
        let row0 = band * BAND;
        let row = |r: usize, j: usize| &w[(row0 + r) * n + j0 + j..];
        let mut j = 0;
        while j + COLS <= nb {
            let mut acc: [f32; COLS] = out[j..j + COLS].try_into().expect("COLS values");
            for (r, &xv) in xs.iter().enumerate() {
                for (a, wv) in acc.iter_mut().zip(&row(r, j)[..COLS]) {
                    *a = xv.mul_add(*wv, *a);
                }
            }
            out[j..j + COLS].copy_from_slice(&acc);
            j += COLS;
        }
        for (jj, o) in out.iter_mut().enumerate().skip(j) {
            *o = xs
                .iter()
                .enumerate()
                .fold(*o, |a, (r, &xv)| xv.mul_add(row(r, jj)[0], a));
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn columns_avx2(x: &[f32], w: &[f32], n: usize, j0: usize, out: &mut [f32]) {
    use std::arch::x86_64::{_mm256_fmadd_ps, _mm256_loadu_ps, _mm256_set1_ps, _mm256_storeu_ps};

    let nb = out.len();
    let k = x.len();
    debug_assert!(j0 + nb <= n && w.len() == k * n);
    let o = out.as_mut_ptr();
    for row0 in (0..k).step_by(BAND) {
        let rows = BAND.min(k - row0);
        let mut j = 0;
        while j + COLS <= nb {
            // SAFETY: columns j..j + COLS of `out` exist (loop bound), and for r < rows the
            // weight row row0 + r, columns j0 + j .. j0 + j + COLS, lies inside `w`
            // (row0 + r < k, j0 + j + COLS <= n).
            unsafe {
                let mut a0 = _mm256_loadu_ps(o.add(j));
                let mut a1 = _mm256_loadu_ps(o.add(j + 8));
                let mut a2 = _mm256_loadu_ps(o.add(j + 16));
                let mut a3 = _mm256_loadu_ps(o.add(j + 24));
                for r in 0..rows {
                    let xv = _mm256_set1_ps(*x.get_unchecked(row0 + r));
                    let p = w.as_ptr().add((row0 + r) * n + j0 + j);
                    a0 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(p), a0);
                    a1 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(p.add(8)), a1);
                    a2 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(p.add(16)), a2);
                    a3 = _mm256_fmadd_ps(xv, _mm256_loadu_ps(p.add(24)), a3);
                }
                _mm256_storeu_ps(o.add(j), a0);
                _mm256_storeu_ps(o.add(j + 8), a1);
                _mm256_storeu_ps(o.add(j + 16), a2);
                _mm256_storeu_ps(o.add(j + 24), a3);
            }
            j += COLS;
        }
        for (jj, y) in out.iter_mut().enumerate().skip(j) {
            for r in 0..rows {
                *y = x[row0 + r].mul_add(w[(row0 + r) * n + j0 + jj], *y);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row-order f64 reference.
    fn reference(x: &[f32], w: &[f32], n: usize) -> Vec<f32> {
        (0..n)
            .map(|j| {
                x.iter()
                    .enumerate()
                    .map(|(r, &xv)| xv as f64 * w[r * n + j] as f64)
                    .sum::<f64>() as f32
            })
            .collect()
    }

    fn case(k: usize, n: usize) -> (Vec<f32>, Vec<f32>) {
        let x = (0..k).map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0).collect();
        let w = (0..k * n)
            .map(|i| ((i * 31 % 97) as f32 - 48.0) / 40.0)
            .collect();
        (x, w)
    }

    fn assert_close(got: &[f32], want: &[f32], what: &str) {
        assert_eq!(got.len(), want.len());
        for (j, (g, e)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - e).abs() <= 1e-4 * (1.0 + e.abs()),
                "{what}: column {j}: {g} vs {e}"
            );
        }
    }

    /// Ragged bands, a ragged column tail, a single column, and a weight large enough to be
    /// split across threads with a block boundary that is not a multiple of the width.
    #[test]
    fn matches_reference_on_ragged_shapes() {
        for (k, n) in [(1, 1), (5, 3), (17, 33), (33, 100), (40, 2100), (300, 301)] {
            let (x, w) = case(k, n);
            let want = reference(&x, &w, n);
            assert_close(&gemv(&x, &w, k, n), &want, &format!("gemv {k}x{n}"));
            let mut out = vec![0.0; n];
            columns_portable(&x, &w, n, 0, &mut out);
            assert_close(&out, &want, &format!("portable {k}x{n}"));
        }
    }

    #[test]
    fn column_block_reads_its_own_columns() {
        let (k, n) = (19, 70);
        let (x, w) = case(k, n);
        let want = reference(&x, &w, n);
        let mut out = vec![0.0; 35];
        columns(&x, &w, n, 35, &mut out);
        assert_close(&out, &want[35..], "block 35..70");
    }
}
