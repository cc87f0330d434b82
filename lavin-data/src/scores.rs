//! ScienceQA answer extraction and the paper's score table (LaVIN's `eval.py`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::prompt::OPTIONS;
use crate::scienceqa::Problem;

/// What the original records when no answer is found.
pub const FAILED: &str = "FAILED";

/// First match of Python's `re.findall(r'The answer is ([A-Z]).', text)`: an ASCII capital
/// after "The answer is " followed by any character except a newline (Python's `.`).
/// `None` is the original's "FAILED".
pub fn extract_answer(text: &str) -> Option<char> {
    const PAT: &str = "The answer is ";
    let mut from = 0;
    while let Some(off) = text[from..].find(PAT) {
        let at = from + off + PAT.len();
        let mut rest = text[at..].chars();
        if let (Some(l), Some(next)) = (rest.next(), rest.next()) {
            if l.is_ascii_uppercase() && next != '\n' {
                return Some(l);
            }
        }
        // The pattern cannot overlap itself, so resume just after this "The".
        from = from + off + 1;
    }
    None
}

/// `get_pred_idx`: the index of `pred` among the first `n_choices` option letters, else
/// `rng.choice(range(n_choices))` (0 when there are no choices, where Python raises).
pub fn pred_idx(pred: Option<char>, n_choices: usize, rng: &mut PyRandom) -> usize {
    let n = n_choices.min(OPTIONS.len());
    if let Some(i) = pred.and_then(|c| OPTIONS[..n].iter().position(|o| o.starts_with(c))) {
        return i;
    }
    if n_choices == 0 {
        return 0;
    }
    rng.randbelow(n_choices as u32) as usize
}

/// Python's `random.Random` (MT19937 with CPython's integer seeding), so that a seeded
/// fallback reproduces `random.seed(s); random.choice(range(n))` exactly.
#[derive(Clone)]
pub struct PyRandom {
    mt: [u32; 624],
    idx: usize,
}

impl std::fmt::Debug for PyRandom {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PyRandom {{ idx: {} }}", self.idx)
    }
}

impl PyRandom {
    /// `random.seed(seed)` for a non-negative integer seed.
    pub fn new(seed: u64) -> Self {
        let mut key = vec![seed as u32];
        if seed >> 32 != 0 {
            key.push((seed >> 32) as u32);
        }
        let mut r = Self {
            mt: [0; 624],
            idx: 624,
        };
        r.init_by_array(&key);
        r
    }

    fn init_genrand(&mut self, s: u32) {
        self.mt[0] = s;
        for i in 1..624 {
            let p = self.mt[i - 1];
            self.mt[i] = 1_812_433_253u32
                .wrapping_mul(p ^ (p >> 30))
                .wrapping_add(i as u32);
        }
        self.idx = 624;
    }

    fn init_by_array(&mut self, key: &[u32]) {
        self.init_genrand(19_650_218);
        let (mut i, mut j) = (1usize, 0usize);
        for _ in 0..624.max(key.len()) {
            let p = self.mt[i - 1];
            self.mt[i] = (self.mt[i] ^ (p ^ (p >> 30)).wrapping_mul(1_664_525))
                .wrapping_add(key[j])
                .wrapping_add(j as u32);
            i += 1;
            j += 1;
            if i >= 624 {
                self.mt[0] = self.mt[623];
                i = 1;
            }
            if j >= key.len() {
                j = 0;
            }
        }
        for _ in 0..623 {
            let p = self.mt[i - 1];
            self.mt[i] =
                (self.mt[i] ^ (p ^ (p >> 30)).wrapping_mul(1_566_083_941)).wrapping_sub(i as u32);
            i += 1;
            if i >= 624 {
                self.mt[0] = self.mt[623];
                i = 1;
            }
        }
        self.mt[0] = 0x8000_0000;
    }

    /// Next 32-bit output of MT19937.
    pub fn next_u32(&mut self) -> u32 {
        if self.idx >= 624 {
            for k in 0..624 {
                let y = (self.mt[k] & 0x8000_0000) | (self.mt[(k + 1) % 624] & 0x7fff_ffff);
                let mag = if y & 1 == 1 { 0x9908_b0df } else { 0 };
                self.mt[k] = self.mt[(k + 397) % 624] ^ (y >> 1) ^ mag;
            }
            self.idx = 0;
        }
        let mut y = self.mt[self.idx];
        self.idx += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// `_randbelow(n)` via `getrandbits(n.bit_length())` with rejection (n > 0).
    pub fn randbelow(&mut self, n: u32) -> u32 {
        let k = 32 - n.leading_zeros();
        loop {
            let r = self.next_u32() >> (32 - k);
            if r < n {
                return r;
            }
        }
    }
}

/// A `get_scores` input problem the predictions do not cover.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no prediction for test problem {qid:?}")]
pub struct MissingPrediction {
    pub qid: String,
}

/// The paper's table: accuracies in percent, formatted `"%.2f"` like the original.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scores {
    pub acc_natural: String,
    pub acc_social: String,
    pub acc_language: String,
    pub acc_has_text: String,
    pub acc_has_image: String,
    pub acc_no_context: String,
    pub acc_grade_1_6: String,
    pub acc_grade_7_12: String,
    pub acc_average: String,
}

/// `get_scores(preds, problems)`: category accuracies over the problems whose split is
/// `"test"`; `acc_average` = correct test answers / number of predictions (the original's
/// quirk; its `num == 4241` assertion is dropped). An empty category gives `"nan"` where the
/// original raises ZeroDivisionError.
pub fn get_scores(
    problems: &BTreeMap<String, Problem>,
    predictions: &BTreeMap<String, usize>,
) -> Result<Scores, MissingPrediction> {
    // [natural, social, language, has_text, has_image, no_context, g1-6, g7-12]: (right, total)
    let mut acc = [(0usize, 0usize); 8];
    let mut correct = 0usize;
    for (qid, p) in problems.iter().filter(|(_, p)| p.split == "test") {
        let pred = *predictions
            .get(qid)
            .ok_or_else(|| MissingPrediction { qid: qid.clone() })?;
        let ok = pred == p.answer;
        correct += ok as usize;
        let has_text = !p.hint.is_empty();
        let has_image = p.has_image();
        let grade: Option<u32> = p.grade.strip_prefix("grade").and_then(|g| g.parse().ok());
        let member = [
            p.subject == "natural science",
            p.subject == "social science",
            p.subject == "language science",
            has_text,
            has_image,
            !has_text && !has_image,
            grade.is_some_and(|g| (1..=6).contains(&g)),
            grade.is_some_and(|g| (7..=12).contains(&g)),
        ];
        for (a, m) in acc.iter_mut().zip(member) {
            if m {
                a.0 += ok as usize;
                a.1 += 1;
            }
        }
    }
    let pct = |(r, t): (usize, usize)| format!("{:.2}", r as f64 / t as f64 * 100.0);
    Ok(Scores {
        acc_natural: pct(acc[0]),
        acc_social: pct(acc[1]),
        acc_language: pct(acc[2]),
        acc_has_text: pct(acc[3]),
        acc_has_image: pct(acc[4]),
        acc_no_context: pct(acc[5]),
        acc_grade_1_6: pct(acc[6]),
        acc_grade_7_12: pct(acc[7]),
        acc_average: pct((correct, predictions.len())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_semantics() {
        assert_eq!(extract_answer("The answer is A."), Some('A'));
        assert_eq!(
            extract_answer("The answer is A\nThe answer is B!"),
            Some('B')
        );
        assert_eq!(extract_answer("The answer is A"), None);
        assert_eq!(extract_answer("The answer is a."), None);
        assert_eq!(extract_answer("The answer is The answer is C."), Some('T'));
        assert_eq!(extract_answer("The answer is É."), None);
    }

    #[test]
    fn python_random_reference_values() {
        // CPython: random.seed(0); [random.getrandbits(32) for _ in range(2)]
        let mut r = PyRandom::new(0);
        assert_eq!(r.next_u32(), 3_626_764_237);
        assert_eq!(r.next_u32(), 1_654_615_998);
        // random.seed(2**40 + 5); random.getrandbits(32)
        assert_eq!(PyRandom::new((1 << 40) + 5).next_u32(), 2_166_296_868);
        // random.seed(1234); [random.choice(range(n)) for n in [2, 3, 5, 4, 5]]
        let mut r = PyRandom::new(1234);
        let picks: Vec<u32> = [2, 3, 5, 4, 5].iter().map(|&n| r.randbelow(n)).collect();
        assert_eq!(picks, [1, 0, 0, 0, 4]);
    }
}
