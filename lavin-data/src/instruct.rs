//! LaVIN's vision-language instruction data (`InstrcutDataSet` in `util/datasets.py`):
//! `all_data.json` = `{"all": [{qid, instruction, answer, image, image_source}]}`.
//!
//! The prompt is the `instruction` string as is and the target the `answer` as is
//! (concatenated without separator for training). Images: `image_source == "sqa"` reads
//! `images/train/<qid>/image.png`, anything else `images/train2014/COCO_train2014_<image>`.
//! The original uses fixed relative paths (`../data/images/...`); here they are under a
//! data root.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::error::{read_json, DataError};
use crate::scienceqa::{tokenize_padded, MissingImage, TokenizedExample};
use crate::tokenizer::{Tokenizer, TokenizerError};

/// One instruction example.
#[derive(Debug, Clone, PartialEq)]
pub struct InstructItem {
    pub qid: String,
    pub instruction: String,
    pub answer: String,
    /// Resolved image file, `None` for text-only items.
    pub image: Option<PathBuf>,
}

/// How instruction examples are padded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InstructPadding {
    /// Pad and cut to the given `max_seq_len` (ours).
    #[default]
    MaxSeqLen,
    /// The original: pad to 512 whatever `max_seq_len` says, cut longer ones to
    /// `max_seq_len` (so lengths are 512 or `max_seq_len`).
    Original512,
}

/// A loaded `all_data.json` split.
#[derive(Debug, Clone)]
pub struct InstructData {
    pub root: PathBuf,
    pub items: Vec<InstructItem>,
    /// Items dropped for a missing image (with [`MissingImage::Skip`]).
    pub skipped: usize,
}

impl InstructData {
    /// Loads `<root>/all_data.json` → `split` (the original uses `"all"`), resolving and
    /// checking image paths.
    pub fn load(
        root: impl AsRef<Path>,
        split: &str,
        missing: MissingImage,
    ) -> Result<Self, DataError> {
        let root = root.as_ref().to_owned();
        let path = root.join("all_data.json");
        let mut json: serde_json::Map<String, Value> = read_json(&path)?;
        let available = json.keys().cloned().collect::<Vec<_>>().join(", ");
        let list = match json.remove(split) {
            Some(Value::Array(a)) => a,
            Some(_) => {
                return Err(DataError::Field {
                    path,
                    qid: split.to_owned(),
                    msg: "expected a list of examples".into(),
                })
            }
            None => {
                return Err(DataError::UnknownSplit {
                    path,
                    split: split.to_owned(),
                    available,
                })
            }
        };
        let mut items = Vec::with_capacity(list.len());
        let mut skipped = 0;
        for (i, v) in list.iter().enumerate() {
            let qid = match v.get("qid") {
                Some(Value::String(s)) => s.clone(),
                Some(Value::Number(n)) => n.to_string(),
                _ => format!("#{i}"),
            };
            let field = |name: &str| -> Result<String, DataError> {
                match v.get(name) {
                    Some(Value::String(s)) => Ok(s.clone()),
                    other => Err(DataError::Field {
                        path: path.clone(),
                        qid: qid.clone(),
                        msg: format!("field `{name}`: expected a string, found {}", kind(other)),
                    }),
                }
            };
            if v.get("qid").is_none() {
                return Err(DataError::Field {
                    path: path.clone(),
                    qid,
                    msg: "missing field `qid`".into(),
                });
            }
            let instruction = field("instruction")?;
            let answer = field("answer")?;
            let image = match v.get("image") {
                None | Some(Value::Null) => None,
                Some(Value::String(name)) => {
                    let p = if v.get("image_source").and_then(Value::as_str) == Some("sqa") {
                        root.join("images")
                            .join("train")
                            .join(&qid)
                            .join("image.png")
                    } else {
                        root.join("images")
                            .join("train2014")
                            .join(format!("COCO_train2014_{name}"))
                    };
                    if !p.is_file() {
                        match missing {
                            MissingImage::Error => {
                                return Err(DataError::MissingImage { path: p, qid })
                            }
                            MissingImage::Skip => {
                                eprintln!(
                                    "warning: {}: image of {qid:?} not found, skipped",
                                    p.display()
                                );
                                skipped += 1;
                                continue;
                            }
                        }
                    }
                    Some(p)
                }
                Some(other) => {
                    return Err(DataError::Field {
                        path: path.clone(),
                        qid,
                        msg: format!(
                            "field `image`: expected a string or null, found {}",
                            kind(Some(other))
                        ),
                    })
                }
            };
            items.push(InstructItem {
                qid,
                instruction,
                answer,
                image,
            });
        }
        Ok(Self {
            root,
            items,
            skipped,
        })
    }

    /// Tokenises one item: `[BOS] + encode(instruction + answer) + [EOS]`, labels with the
    /// instruction positions zeroed, padded per `padding`.
    pub fn tokenize(
        &self,
        tok: &Tokenizer,
        idx: usize,
        max_seq_len: usize,
        padding: InstructPadding,
    ) -> Option<Result<TokenizedExample, TokenizerError>> {
        let it = self.items.get(idx)?;
        let pad_to = match padding {
            InstructPadding::MaxSeqLen => max_seq_len,
            InstructPadding::Original512 => 512,
        };
        Some(tokenize_padded(
            tok,
            &it.instruction,
            &it.answer,
            pad_to,
            max_seq_len,
        ))
    }
}

fn kind(v: Option<&Value>) -> &'static str {
    match v {
        None => "nothing",
        Some(Value::Null) => "null",
        Some(Value::Bool(_)) => "a boolean",
        Some(Value::Number(_)) => "a number",
        Some(Value::String(_)) => "a string",
        Some(Value::Array(_)) => "a list",
        Some(Value::Object(_)) => "an object",
    }
}
