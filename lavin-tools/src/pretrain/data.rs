//! Train-split material for pretraining: problems, preprocessed images, and the picture
//! attributes parsed from `captions.json` (the CLIP stage's labels).
//!
//! Only `pid_splits.json["train"]` is read: val/test answers and images never reach the base.

use std::path::{Path, PathBuf};

use lavin_data::{preprocess_image, LoadOptions, Problem, ScienceQa, Tokenizer};

use super::PretrainError;

/// Label groups of the CLIP heads and their class counts.
pub const HEADS: [(&str, usize); 4] = [("colour", 5), ("shape", 3), ("count", 5), ("position", 5)];
const COLOURS: [&str; 5] = ["red", "green", "blue", "yellow", "purple"];
const SHAPES: [&str; 3] = ["circle", "square", "triangle"];
const COUNTS: [&str; 6] = ["a", "one", "two", "three", "four", "five"];
/// Index 0 = the shape is centred (caption names no position).
const POSITIONS: [&str; 4] = ["top", "bottom", "left", "right"];

/// What a mini-sqa picture shows, as class indices of [`HEADS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attributes(pub [usize; 4]);

/// Parses a generator caption: `"<count> <colour> <shape>[s] (on a <bg> background | at the
/// top of ... | on the left of ...)."`, e.g. "Two green circles on a white background.".
pub fn parse_caption(caption: &str) -> Result<Attributes, &'static str> {
    let lower = caption.to_lowercase().replace('.', "");
    let words: Vec<&str> = lower.split_whitespace().collect();
    if words.len() < 3 {
        return Err("fewer than 3 words");
    }
    let count = match COUNTS.iter().position(|c| *c == words[0]) {
        Some(0) => 0,
        Some(i) => i - 1,
        None => return Err("first word is not a count (a, one .. five)"),
    };
    let colour = COLOURS
        .iter()
        .position(|c| *c == words[1])
        .ok_or("second word is not a known colour")?;
    let shape = SHAPES
        .iter()
        .position(|s| words[2].trim_end_matches('s') == *s)
        .ok_or("third word is not a known shape")?;
    // Background words (white, cream, gray, light blue) never collide with these.
    let position = words[3..]
        .iter()
        .find_map(|w| POSITIONS.iter().position(|p| p == w))
        .map_or(0, |i| i + 1);
    Ok(Attributes([colour, shape, count, position]))
}

/// One train image with its labels.
pub struct TrainImage {
    pub qid: String,
    /// `[3, 224, 224]` CHW, normalised as LaVIN's pipeline.
    pub pixels: Vec<f32>,
    pub attributes: Attributes,
}

/// The train split, loaded once for both stages.
pub struct PretrainData {
    pub root: PathBuf,
    pub tokenizer: Tokenizer,
    /// `(qid, problem)` of the train split in `pid_splits` order.
    pub problems: Vec<(String, Problem)>,
    /// Images of the image problems among `problems` (same order); `image_of[i]` indexes it.
    pub images: Vec<TrainImage>,
    pub image_of: Vec<Option<usize>>,
}

impl PretrainData {
    /// Loads at most `limit` (0 = all) train problems of `root` and their images.
    pub fn load(root: &Path, tokenizer: &Path, limit: usize) -> Result<Self, PretrainError> {
        let tokenizer = Tokenizer::from_file(tokenizer)?;
        let sqa = ScienceQa::load(root, &LoadOptions::default())?;
        let captions = root.join("captions.json");
        let mut problems = Vec::new();
        let mut images = Vec::new();
        let mut image_of = Vec::new();
        let qids = sqa.split("train")?;
        let take = if limit == 0 { qids.len() } else { limit };
        for qid in qids.iter().take(take) {
            let p = sqa.problems[qid].clone();
            if p.has_image() {
                let attributes =
                    parse_caption(&p.caption).map_err(|why| PretrainError::Caption {
                        path: captions.clone(),
                        qid: qid.clone(),
                        caption: p.caption.clone(),
                        why,
                    })?;
                let pixels = preprocess_image(sqa.image_path("train", qid))?;
                image_of.push(Some(images.len()));
                images.push(TrainImage {
                    qid: qid.clone(),
                    pixels,
                    attributes,
                });
            } else {
                image_of.push(None);
            }
            problems.push((qid.clone(), p));
        }
        if problems.is_empty() {
            return Err(PretrainError::Invalid(format!(
                "{}: the train split is empty",
                root.join("pid_splits.json").display()
            )));
        }
        Ok(Self {
            root: root.to_path_buf(),
            tokenizer,
            problems,
            images,
            image_of,
        })
    }
}

/// A copy of `p` with its choices in the order `perm` (the answer index follows its choice).
/// Why: the LLaMA stage sees each train problem with freshly shuffled options every epoch, so
/// it must learn to *match* the image/context against the options instead of memorising
/// answer letters of 1200 problems.
pub fn permute_choices(p: &Problem, perm: &[usize]) -> Problem {
    let mut q = p.clone();
    q.choices = perm.iter().map(|&i| p.choices[i].clone()).collect();
    q.answer = perm.iter().position(|&i| i == p.answer).unwrap_or(p.answer);
    q
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captions_parse() {
        let a = parse_caption("Two green circles on a white background.").unwrap();
        assert_eq!(a, Attributes([1, 0, 1, 0]));
        let a = parse_caption("A yellow triangle on the right of a light blue picture.").unwrap();
        assert_eq!(a, Attributes([3, 2, 0, 4]));
        let a = parse_caption("A blue square on a light blue background.").unwrap();
        assert_eq!(a, Attributes([2, 1, 0, 0]));
        let a = parse_caption("Five red circles on a white background.").unwrap();
        assert_eq!(a.0[2], 4);
        assert!(parse_caption("A cat.").is_err());
    }
}
