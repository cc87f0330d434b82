//! ScienceQA in its official layout under a data root: `problems.json`, `pid_splits.json`,
//! `captions.json`, `images/<split>/<qid>/image.png`; and LaVIN's training tokenisation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{read_json, DataError};
pub use crate::problem::Problem;
use crate::prompt::{build_prompt, PromptFormat};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// What to do when a problem's image file is absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingImage {
    /// Fail with [`DataError::MissingImage`] (the original crashes too).
    #[default]
    Error,
    /// Drop the problem, print a warning to stderr, and count it.
    Skip,
}

/// Options of [`ScienceQa::load`].
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    /// Captions file; `None` = `<root>/captions.json` if it exists, else no captions.
    pub captions: Option<PathBuf>,
}

/// A loaded ScienceQA data root.
#[derive(Debug, Clone)]
pub struct ScienceQa {
    pub root: PathBuf,
    /// qid -> problem (caption filled in).
    pub problems: BTreeMap<String, Problem>,
    /// split name -> qids in file order.
    pub splits: BTreeMap<String, Vec<String>>,
}

/// One training/evaluation item of a split.
#[derive(Debug, Clone, PartialEq)]
pub struct SqaItem {
    pub qid: String,
    /// Prompt input (what evaluation feeds).
    pub question: String,
    /// Target text (training appends it to `question`).
    pub answer: String,
    /// `images/<split>/<qid>/image.png`, when the problem has an image.
    pub image: Option<PathBuf>,
}

impl ScienceQa {
    /// Loads `problems.json`, `pid_splits.json` and captions under `root`. Every qid listed
    /// in a split must exist in problems.json.
    pub fn load(root: impl AsRef<Path>, opts: &LoadOptions) -> Result<Self, DataError> {
        let root = root.as_ref().to_owned();
        let ppath = root.join("problems.json");
        let raw: BTreeMap<String, serde_json::Value> = read_json(&ppath)?;
        let cpath = match &opts.captions {
            Some(p) => Some(p.clone()),
            None => Some(root.join("captions.json")).filter(|p| p.exists()),
        };
        let captions: BTreeMap<String, String> = match &cpath {
            Some(p) => {
                #[derive(Deserialize)]
                struct Captions {
                    captions: BTreeMap<String, String>,
                }
                read_json::<Captions>(p)?.captions
            }
            None => BTreeMap::new(),
        };
        let mut problems = BTreeMap::new();
        for (qid, v) in raw {
            let mut p: Problem = serde_json::from_value(v).map_err(|e| DataError::Field {
                path: ppath.clone(),
                qid: qid.clone(),
                msg: e.to_string(),
            })?;
            p.caption = captions.get(&qid).cloned().unwrap_or_default();
            problems.insert(qid, p);
        }
        let spath = root.join("pid_splits.json");
        let splits: BTreeMap<String, Vec<String>> = read_json(&spath)?;
        for (name, qids) in &splits {
            if let Some(q) = qids.iter().find(|q| !problems.contains_key(*q)) {
                return Err(DataError::Field {
                    path: spath.clone(),
                    qid: q.clone(),
                    msg: format!("listed in split {name:?} but absent from problems.json"),
                });
            }
        }
        Ok(Self {
            root,
            problems,
            splits,
        })
    }

    /// The qids of a split, in file order.
    pub fn split(&self, name: &str) -> Result<&[String], DataError> {
        self.splits
            .get(name)
            .map(Vec::as_slice)
            .ok_or_else(|| DataError::UnknownSplit {
                path: self.root.join("pid_splits.json"),
                split: name.to_owned(),
                available: self.splits.keys().cloned().collect::<Vec<_>>().join(", "),
            })
    }

    /// Where the original reads a problem's image: `images/<split>/<qid>/image.png`.
    pub fn image_path(&self, split: &str, qid: &str) -> PathBuf {
        self.root
            .join("images")
            .join(split)
            .join(qid)
            .join("image.png")
    }

    /// Prompts of every problem of `split`, in pid_splits order, with image paths checked.
    /// Returns the items and the number skipped for a missing image (with `Skip`).
    pub fn items(
        &self,
        split: &str,
        format: PromptFormat,
        use_caption: bool,
        missing: MissingImage,
    ) -> Result<(Vec<SqaItem>, usize), DataError> {
        let mut out = Vec::new();
        let mut skipped = 0;
        for qid in self.split(split)? {
            let p = &self.problems[qid];
            let (question, answer) =
                build_prompt(p, format, use_caption).map_err(|source| DataError::Prompt {
                    path: self.root.join("problems.json"),
                    qid: qid.clone(),
                    source,
                })?;
            let image = if p.has_image() {
                let path = self.image_path(split, qid);
                if !path.is_file() {
                    match missing {
                        MissingImage::Error => {
                            return Err(DataError::MissingImage {
                                path,
                                qid: qid.clone(),
                            })
                        }
                        MissingImage::Skip => {
                            eprintln!(
                                "warning: {}: image of {qid:?} not found, skipped",
                                path.display()
                            );
                            skipped += 1;
                            continue;
                        }
                    }
                }
                Some(path)
            } else {
                None
            };
            out.push(SqaItem {
                qid: qid.clone(),
                question,
                answer,
                image,
            });
        }
        Ok((out, skipped))
    }
}

/// A tokenised training example, as LaVIN's datasets build it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenizedExample {
    /// `[BOS] + encode(prompt + answer) + [EOS]`, padded with 0 or cut.
    pub tokens: Vec<u32>,
    /// `tokens` with the prompt positions (`len([BOS] + encode(prompt))`) and padding set to 0.
    pub labels: Vec<u32>,
    /// Number of real (non-padding) positions in `tokens`.
    pub n_real: usize,
}

/// LaVIN's `ScienceQADataSet.tokenize`: pad with 0 to `max_words` or cut to it (a cut
/// example loses its EOS). The prompt and answer are concatenated without a separator.
pub fn tokenize_example(
    tok: &Tokenizer,
    prompt: &str,
    answer: &str,
    max_words: usize,
) -> Result<TokenizedExample, TokenizerError> {
    tokenize_padded(tok, prompt, answer, max_words, max_words)
}

/// The general rule: pad to `pad_to` when shorter, cut to `cut_to` when longer than
/// `pad_to` (the original instruction dataset pads to 512 but cuts to max_words).
pub fn tokenize_padded(
    tok: &Tokenizer,
    prompt: &str,
    answer: &str,
    pad_to: usize,
    cut_to: usize,
) -> Result<TokenizedExample, TokenizerError> {
    let n_prompt = tok.encode(prompt, true, false)?.len();
    let mut tokens = tok.encode(&format!("{prompt}{answer}"), true, true)?;
    let n_real;
    if tokens.len() < pad_to {
        n_real = tokens.len();
        tokens.resize(pad_to, 0);
    } else {
        if tokens.len() > pad_to {
            tokens.truncate(cut_to);
        }
        n_real = tokens.len();
    }
    let mut labels = tokens.clone();
    for l in labels.iter_mut().take(n_prompt) {
        *l = 0;
    }
    Ok(TokenizedExample {
        tokens,
        labels,
        n_real,
    })
}
