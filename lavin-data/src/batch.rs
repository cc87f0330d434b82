//! Burn-free batching helpers: dynamic padding for length-grouped batches.
//!
//! The model assembles `[modality, BOS, prefix, image feats, tokens[1:]]` and cuts it to
//! the padded token length, so an item of `L` real tokens needs `L + 1 + len(prefix) +
//! n_feats` rows. Padding a batch to `min(S, that)` for its longest item keeps every token
//! the fixed padding to `S` keeps, and computes less.

/// Padded length for a batch: `min(max_seq_len, longest + 1 + prefix_len + n_feats)`.
/// With mixed image/text items pass the larger `prefix_len + n_feats` (an upper bound), or
/// use [`batch_pad_len_exact`].
pub fn batch_pad_len(
    max_seq_len: usize,
    longest: usize,
    prefix_len: usize,
    n_feats: usize,
) -> usize {
    max_seq_len.min(longest + 1 + prefix_len + n_feats)
}

/// Exact padded length from `(n_real_tokens, prefix_len + n_feats)` per item.
pub fn batch_pad_len_exact(max_seq_len: usize, items: &[(usize, usize)]) -> usize {
    items
        .iter()
        .map(|&(l, extra)| max_seq_len.min(l + 1 + extra))
        .max()
        .unwrap_or(0)
}

/// Cuts an `S`-padded row to `len` (only padding is removed when `len` comes from
/// [`batch_pad_len`] over the batch).
pub fn trim_row(row: &[u32], len: usize) -> &[u32] {
    &row[..len.min(row.len())]
}

/// Groups item indices into batches of similar length: sorted by length (longest first,
/// stable), then chunked. The caller shuffles the batch order if it wants.
pub fn group_by_length(lengths: &[usize], batch_size: usize) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..lengths.len()).collect();
    idx.sort_by_key(|&i| std::cmp::Reverse(lengths[i]));
    idx.chunks(batch_size.max(1))
        .map(<[usize]>::to_vec)
        .collect()
}

/// Token positions with fixed vs dynamic padding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PaddingReport {
    /// `batches x batch rows x S`.
    pub fixed_tokens: usize,
    /// Sum over batches of rows x padded length.
    pub dynamic_tokens: usize,
}

impl PaddingReport {
    /// Fraction of token positions saved (0..1).
    pub fn saved_fraction(&self) -> f64 {
        if self.fixed_tokens == 0 {
            0.0
        } else {
            1.0 - self.dynamic_tokens as f64 / self.fixed_tokens as f64
        }
    }
}

impl std::fmt::Display for PaddingReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "dynamic padding: {} of {} token positions ({:.1}% saved)",
            self.dynamic_tokens,
            self.fixed_tokens,
            100.0 * self.saved_fraction()
        )
    }
}

/// Compares fixed padding to `S` with dynamic padding for the given batches of
/// `(n_real_tokens, prefix_len + n_feats)` items.
pub fn padding_saving(max_seq_len: usize, batches: &[Vec<(usize, usize)>]) -> PaddingReport {
    let mut r = PaddingReport {
        fixed_tokens: 0,
        dynamic_tokens: 0,
    };
    for b in batches {
        r.fixed_tokens += b.len() * max_seq_len;
        r.dynamic_tokens += b.len() * batch_pad_len_exact(max_seq_len, b);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pad_len_rule() {
        assert_eq!(batch_pad_len(48, 20, 3, 2), 26);
        assert_eq!(batch_pad_len(48, 48, 5, 0), 48);
        assert_eq!(batch_pad_len_exact(48, &[(20, 5), (22, 0)]), 26);
        assert_eq!(batch_pad_len_exact(48, &[]), 0);
        let g = group_by_length(&[3, 9, 5, 9], 2);
        assert_eq!(g, vec![vec![1, 3], vec![2, 0]]);
        let r = padding_saving(10, &[vec![(3, 1), (4, 1)]]);
        assert_eq!((r.fixed_tokens, r.dynamic_tokens), (20, 12));
        assert!((r.saved_fraction() - 0.4).abs() < 1e-12);
    }
}
