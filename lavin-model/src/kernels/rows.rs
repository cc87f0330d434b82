//! Row kernels on plain `f32` slices, split across threads with rayon.
//!
//! Every op here works on rows of the last dimension, so a tensor is `rows x width` and a
//! chunk of whole rows is one task. Each pass reads its inputs once and writes its output once,
//! where Burn's composed versions make one single-threaded pass per elementary op.

use rayon::prelude::*;

use super::vexp::exp_in_place;

/// Rows per task: at least this many elements, so a task outweighs rayon's dispatch.
const MIN_TASK_ELEMS: usize = 16 * 1024;

fn rows_per_task(width: usize) -> usize {
    MIN_TASK_ELEMS.div_ceil(width.max(1)).max(1)
}

/// `out` row by row: `f(row_index, out_row)`.
fn for_rows(out: &mut [f32], width: usize, f: impl Fn(usize, &mut [f32]) + Sync) {
    let per = rows_per_task(width);
    if out.len() <= per * width {
        // One task: stay on this thread (a decode step's tensors are this small).
        out.chunks_mut(width)
            .enumerate()
            .for_each(|(r, row)| f(r, row));
        return;
    }
    out.par_chunks_mut(per * width)
        .enumerate()
        .for_each(|(task, chunk)| {
            for (i, row) in chunk.chunks_mut(width).enumerate() {
                f(task * per + i, row);
            }
        });
}

/// Like [`for_rows`] with two outputs of the same width.
fn for_rows2(
    a: &mut [f32],
    b: &mut [f32],
    width: usize,
    f: impl Fn(usize, &mut [f32], &mut [f32]) + Sync,
) {
    let per = rows_per_task(width);
    if a.len() <= per * width {
        for (r, (ra, rb)) in a.chunks_mut(width).zip(b.chunks_mut(width)).enumerate() {
            f(r, ra, rb);
        }
        return;
    }
    a.par_chunks_mut(per * width)
        .zip(b.par_chunks_mut(per * width))
        .enumerate()
        .for_each(|(task, (ca, cb))| {
            for (i, (ra, rb)) in ca.chunks_mut(width).zip(cb.chunks_mut(width)).enumerate() {
                f(task * per + i, ra, rb);
            }
        });
}

/// Sum over rows of `f(row) -> [width]`, for parameter gradients (norm weights).
fn sum_rows(rows: usize, width: usize, f: impl Fn(usize, &mut [f32]) + Sync) -> Vec<f32> {
    let per = rows_per_task(width);
    (0..rows.div_ceil(per))
        .into_par_iter()
        .map(|task| {
            let mut acc = vec![0.0f32; width];
            for r in task * per..((task + 1) * per).min(rows) {
                f(r, &mut acc);
            }
            acc
        })
        .reduce(
            || vec![0.0f32; width],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(x, y)| *x += y);
                a
            },
        )
}

/// `x [m, k] · w [k, n]` for few rows `m`, both row-major. gemm's matrix-vector path (and its
/// small-`m` kernel below its threading threshold) runs on one thread, which leaves a decode
/// step reading every weight through one core; here each thread takes a block of columns.
pub fn matmul_few_rows(x: &[f32], w: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
    let threads = rayon::current_num_threads().max(1);
    let block = n.div_ceil(threads).next_multiple_of(16).min(n);
    let blocks: Vec<Vec<f32>> = (0..n.div_ceil(block))
        .into_par_iter()
        .map(|t| {
            let (j0, nb) = (t * block, block.min(n - t * block));
            let mut out = vec![0.0f32; m * nb];
            // SAFETY: `out` is m x nb (row stride nb), `x` is m x k (row stride k), and the
            // column block j0..j0+nb of `w` lies inside its k x n buffer (row stride n).
            unsafe {
                gemm::gemm(
                    m,
                    nb,
                    k,
                    out.as_mut_ptr(),
                    1,
                    nb as isize,
                    false,
                    x.as_ptr(),
                    1,
                    k as isize,
                    w.as_ptr().add(j0),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            out
        })
        .collect();
    if blocks.len() == 1 {
        return blocks.into_iter().next().unwrap_or_default();
    }
    let mut out = vec![0.0; m * n];
    for (t, b) in blocks.iter().enumerate() {
        let nb = b.len() / m;
        for r in 0..m {
            out[r * n + t * block..][..nb].copy_from_slice(&b[r * nb..][..nb]);
        }
    }
    out
}

/// Interleaved rotary embedding of `x [rows, width]`, row `r` at table row `r % seq`;
/// `cos`, `sin [seq, head_dim]` hold `(c, c)` and `(-s, s)` per pair, so
/// `out = x * cos + swap_pairs(x) * sin`. `transpose` applies the transposed map (the
/// backward pass), which swaps the two `sin` entries of each pair: for rotation tables, the
/// rotation by the opposite angle.
pub fn rope(
    x: &[f32],
    cos: &[f32],
    sin: &[f32],
    seq: usize,
    width: usize,
    transpose: bool,
) -> Vec<f32> {
    let hd = cos.len() / seq;
    let (s0, s1) = if transpose { (1, 0) } else { (0, 1) };
    let mut out = vec![0.0; x.len()];
    for_rows(&mut out, width, |r, o| {
        let xr = &x[r * width..(r + 1) * width];
        let t = (r % seq) * hd;
        let (c, s) = (&cos[t..t + hd], &sin[t..t + hd]);
        for (xh, oh) in xr.chunks_exact(hd).zip(o.chunks_exact_mut(hd)) {
            for j in (0..hd).step_by(2) {
                let (a, b) = (xh[j], xh[j + 1]);
                oh[j] = a * c[j] + b * s[j + s0];
                oh[j + 1] = b * c[j + 1] + a * s[j + s1];
            }
        }
    });
    out
}

/// `x [a, b, c, d]` with its middle axes swapped, `[a, c, b, d]`, written contiguously.
pub fn swap_middle(x: &[f32], [_, b, c, d]: [usize; 4]) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    // Output row `r` is (i, k, j) in [a, c, b]; it reads input row (i, j, k).
    for_rows(&mut out, d, |r, o| {
        let (j, k, i) = (r % b, (r / b) % c, r / (b * c));
        let src = ((i * b + j) * c + k) * d;
        o.copy_from_slice(&x[src..src + d]);
    });
    out
}

/// `softmax(x * scale + bias)` along rows of `width`; row `r` adds bias row `r % bias_rows`
/// (an attention mask: 0 where a key is visible, -inf where not).
pub fn softmax(x: &[f32], width: usize, scale: f32, bias: Option<&[f32]>) -> Vec<f32> {
    let mut out = vec![0.0; x.len()];
    let bias_rows = bias.map_or(1, |b| b.len() / width);
    for_rows(&mut out, width, |r, o| {
        let xr = &x[r * width..(r + 1) * width];
        match bias {
            Some(b) => {
                let br = &b[(r % bias_rows) * width..][..width];
                o.iter_mut()
                    .zip(xr)
                    .zip(br)
                    .for_each(|((o, &v), &b)| *o = v * scale + b);
            }
            None => o.iter_mut().zip(xr).for_each(|(o, &v)| *o = v * scale),
        }
        let max = o.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        o.iter_mut().for_each(|o| *o -= max);
        exp_in_place(o);
        let inv = 1.0 / sum(o);
        o.iter_mut().for_each(|o| *o *= inv);
    });
    out
}

/// Sum with eight independent accumulators, so the loop vectorizes (a single running `f32`
/// sum must be added in order).
fn sum(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let chunks = v.chunks_exact(8);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for (a, &x) in acc.iter_mut().zip(c) {
            *a += x;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Gradient of [`softmax`] from its output `y`: `scale * y * (g - <g, y>)`.
pub fn softmax_backward(y: &[f32], g: &[f32], width: usize, scale: f32) -> Vec<f32> {
    let mut out = vec![0.0; y.len()];
    for_rows(&mut out, width, |r, o| {
        let (yr, gr) = (
            &y[r * width..(r + 1) * width],
            &g[r * width..(r + 1) * width],
        );
        let dot: f32 = yr.iter().zip(gr).map(|(y, g)| y * g).sum();
        for ((o, &y), &g) in o.iter_mut().zip(yr).zip(gr) {
            *o = scale * y * (g - dot);
        }
    });
    out
}

/// Per row of `logits [rows, width]`: `logsumexp(row) - row[target]` (targets as f32 ids).
pub fn cross_entropy(logits: &[f32], targets: &[f32], width: usize) -> Vec<f32> {
    (0..targets.len())
        .into_par_iter()
        .with_min_len(rows_per_task(width))
        .map(|r| {
            let x = &logits[r * width..(r + 1) * width];
            let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
            // e^(x - max) in stack-sized pieces (the row is the whole vocabulary).
            let mut buf = [0.0f32; 1024];
            let total: f32 = x
                .chunks(buf.len())
                .map(|c| {
                    let b = &mut buf[..c.len()];
                    b.iter_mut().zip(c).for_each(|(b, &v)| *b = v - max);
                    exp_in_place(b);
                    sum(b)
                })
                .sum();
            max + total.ln() - x[targets[r] as usize]
        })
        .collect()
}

/// Gradient of [`cross_entropy`]: `g[r] * (softmax(row) - onehot(target))`.
pub fn cross_entropy_backward(
    logits: &[f32],
    targets: &[f32],
    g: &[f32],
    width: usize,
) -> Vec<f32> {
    let mut out = vec![0.0; logits.len()];
    for_rows(&mut out, width, |r, o| {
        let x = &logits[r * width..(r + 1) * width];
        let max = x.iter().fold(f32::NEG_INFINITY, |m, &v| m.max(v));
        o.iter_mut().zip(x).for_each(|(o, &v)| *o = v - max);
        exp_in_place(o);
        let k = g[r] / sum(o);
        o.iter_mut().for_each(|o| *o *= k);
        o[targets[r] as usize] -= g[r];
    });
    out
}

fn inv_rms(x: &[f32], eps: f32) -> f32 {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    1.0 / (ms + eps).sqrt()
}

/// LLaMA's RMSNorm along rows: `x / sqrt(mean(x²) + eps) * gamma`.
pub fn rms_norm(x: &[f32], gamma: &[f32], eps: f32) -> Vec<f32> {
    let w = gamma.len();
    let mut out = vec![0.0; x.len()];
    for_rows(&mut out, w, |r, o| {
        let xr = &x[r * w..(r + 1) * w];
        let inv = inv_rms(xr, eps);
        for ((o, &v), &g) in o.iter_mut().zip(xr).zip(gamma) {
            *o = v * inv * g;
        }
    });
    out
}

/// Gradients of [`rms_norm`]: `dx = inv (g γ) - x inv³ <g γ, x> / w`, `dγ = Σ_rows g x inv`.
pub fn rms_norm_backward(
    x: &[f32],
    gamma: &[f32],
    g: &[f32],
    eps: f32,
    need_x: bool,
    need_gamma: bool,
) -> (Option<Vec<f32>>, Option<Vec<f32>>) {
    let w = gamma.len();
    let rows = x.len() / w;
    let dx = need_x.then(|| {
        let mut out = vec![0.0; x.len()];
        for_rows(&mut out, w, |r, o| {
            let (xr, gr) = (&x[r * w..(r + 1) * w], &g[r * w..(r + 1) * w]);
            let inv = inv_rms(xr, eps);
            let dot: f32 = xr
                .iter()
                .zip(gr)
                .zip(gamma)
                .map(|((x, g), c)| x * g * c)
                .sum();
            let k = inv * inv * inv * dot / w as f32;
            for (((o, &x), &g), &c) in o.iter_mut().zip(xr).zip(gr).zip(gamma) {
                *o = inv * g * c - x * k;
            }
        });
        out
    });
    let dgamma = need_gamma.then(|| {
        sum_rows(rows, w, |r, acc| {
            let (xr, gr) = (&x[r * w..(r + 1) * w], &g[r * w..(r + 1) * w]);
            let inv = inv_rms(xr, eps);
            for ((a, &x), &g) in acc.iter_mut().zip(xr).zip(gr) {
                *a += g * x * inv;
            }
        })
    });
    (dx, dgamma)
}

/// `o[i] = e^(-alpha a[i])`: the sigmoid's denominator less one, `sigmoid = 1 / (1 + o)`.
fn neg_exp(o: &mut [f32], a: &[f32], alpha: f32) {
    o.iter_mut().zip(a).for_each(|(o, &v)| *o = -alpha * v);
    exp_in_place(o);
}

/// `a * sigmoid(alpha a) [* b]`: SiLU-gated product (LLaMA's MLP, alpha 1) or QuickGELU
/// (CLIP, alpha 1.702, no `b`). Element-wise, so "rows" are just work chunks.
pub fn swish(a: &[f32], b: Option<&[f32]>, alpha: f32) -> Vec<f32> {
    let mut out = vec![0.0; a.len()];
    for_rows(&mut out, MIN_TASK_ELEMS, |t, o| {
        let base = t * MIN_TASK_ELEMS;
        let a = &a[base..][..o.len()];
        neg_exp(o, a, alpha);
        match b {
            Some(b) => o
                .iter_mut()
                .zip(a)
                .zip(&b[base..])
                .for_each(|((o, &v), &b)| *o = v / (1.0 + *o) * b),
            None => o.iter_mut().zip(a).for_each(|(o, &v)| *o = v / (1.0 + *o)),
        }
    });
    out
}

/// Gradients of [`swish`]: `da = g b (s + alpha a s (1 - s))`, `db = g a s`, `s = sigmoid(alpha a)`.
pub fn swish_backward(
    a: &[f32],
    b: Option<&[f32]>,
    g: &[f32],
    alpha: f32,
    need_b: bool,
) -> (Vec<f32>, Option<Vec<f32>>) {
    let mut da = vec![0.0; a.len()];
    let mut db = vec![0.0; if need_b && b.is_some() { a.len() } else { 0 }];
    let step = MIN_TASK_ELEMS;
    // `oa` holds e^(-alpha a) on entry (see `neg_exp`).
    let grad = |base: usize, i: usize, e: f32| {
        let (v, g) = (a[base + i], g[base + i]);
        let s = 1.0 / (1.0 + e);
        let bv = b.map_or(1.0, |b| b[base + i]);
        (g * bv * (s + alpha * v * s * (1.0 - s)), g * v * s)
    };
    if db.is_empty() {
        for_rows(&mut da, step, |t, o| {
            neg_exp(o, &a[t * step..][..o.len()], alpha);
            for (i, o) in o.iter_mut().enumerate() {
                *o = grad(t * step, i, *o).0;
            }
        });
        return (da, None);
    }
    for_rows2(&mut da, &mut db, step, |t, oa, ob| {
        neg_exp(oa, &a[t * step..][..oa.len()], alpha);
        for (i, (oa, ob)) in oa.iter_mut().zip(ob.iter_mut()).enumerate() {
            (*oa, *ob) = grad(t * step, i, *oa);
        }
    });
    (da, Some(db))
}
