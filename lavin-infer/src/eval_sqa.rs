//! ScienceQA evaluation (`eval-sqa`) and scoring of a predictions file (`score`), as the
//! original `eval.py` does it.
//!
//! - Problems are taken in `pid_splits.json` order and generated in batches of
//!   `--max-batch-size` (64): batch composition changes results (CLIP routing reads item 0, the
//!   shortest prompt sets the first step), so the order is part of the method.
//! - The answer is the first match of `The answer is ([A-Z]).` in the decoded text (prompt
//!   included); a letter outside the problem's options, or no match, becomes a random option
//!   drawn with Python's `random` algorithm — seeded here (`--seed`), unseeded in the original.
//! - `preds.json` maps qid → predicted index, in split order, and is written atomically.
//! - Scores are the original `get_scores`: accuracies over test-split problems by subject,
//!   context (has text = non-empty hint, has image, no context = neither) and grade band, and
//!   the average = correct / number of predictions.
//!
//! Answer extraction, the fallback and `get_scores` are `lavin_data::scores`; problems and
//! prompts are `lavin_data::ScienceQa`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use lavin_data::prompt::OPTIONS;
use lavin_data::scores::{extract_answer, get_scores, pred_idx, PyRandom, Scores};
use lavin_data::{LoadOptions, MissingImage, Problem, PromptFormat, ScienceQa};

use crate::generator::{GenError, GenRequest, Generator, ImageInput, SamplingParams};

/// Errors of evaluation and scoring, naming the file (and qid) involved.
#[derive(Debug, thiserror::Error)]
pub enum SqaError {
    /// A file could not be read or written.
    #[error("cannot {action} {path}: {source}")]
    Io {
        /// "read" or "write".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A JSON file with the wrong shape.
    #[error("{path}: {message}")]
    Json {
        /// The file.
        path: PathBuf,
        /// What is wrong (serde's message names the field).
        message: String,
    },
    /// A test problem without a prediction (the original fails too).
    #[error("{path}: no prediction for test problem {qid}")]
    MissingPrediction {
        /// The predictions file.
        path: PathBuf,
        /// The qid.
        qid: String,
    },
    /// Loading ScienceQA or building its prompts failed.
    #[error(transparent)]
    Data(#[from] lavin_data::DataError),
    /// Unknown `--prompt-format`.
    #[error(transparent)]
    PromptFormat(#[from] lavin_data::UnknownPromptFormat),
    /// A prediction for a qid that is not in problems.json.
    #[error("{path}: qid {qid} is not in the problems file")]
    UnknownQid {
        /// The predictions file.
        path: PathBuf,
        /// The qid.
        qid: String,
    },
    /// An image that does not load.
    #[error("problem {qid}: image {path}: {message}")]
    Image {
        /// The problem.
        qid: String,
        /// The image.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Generation failed.
    #[error(transparent)]
    Generation(#[from] GenError),
}

/// One problem ready for generation.
#[derive(Debug, Clone, PartialEq)]
pub struct SqaItem {
    /// ScienceQA id.
    pub qid: String,
    /// Test-mode prompt (`build_prompt(...)` question part).
    pub prompt: String,
    /// `images/<split>/<qid>/image.png` when the problem has an image.
    pub image: Option<PathBuf>,
    /// Number of choices.
    pub n_choices: usize,
    /// Correct index.
    pub answer: usize,
}

/// Settings of an evaluation run.
#[derive(Debug, Clone)]
pub struct EvalSettings {
    /// Problems per `generate` call (original: 64).
    pub batch_size: usize,
    /// Decoding (original: 0.1 / 0.75, 64 tokens). The seed of batch `i` is `seed + i`.
    pub params: SamplingParams,
    /// Seed of the random fallback answer.
    pub fallback_seed: u64,
}

/// Result of an evaluation run.
#[derive(Debug, Clone, Default)]
pub struct EvalResult {
    /// qid → predicted index, in evaluation order.
    pub preds: Vec<(String, usize)>,
    /// Problems answered correctly.
    pub correct: usize,
    /// Outputs where the regex found no usable letter (random fallback taken).
    pub fallbacks: usize,
    /// qid → decoded output, in order (for inspection).
    pub outputs: Vec<(String, String)>,
}

impl EvalResult {
    /// Overall accuracy in percent (the original's "overall accuracy").
    pub fn accuracy(&self) -> f64 {
        if self.preds.is_empty() {
            0.0
        } else {
            self.correct as f64 / self.preds.len() as f64 * 100.0
        }
    }
}

/// Whether `letter` is one of the first `n_choices` option letters (no random fallback).
pub fn is_option(letter: Option<char>, n_choices: usize) -> bool {
    let n = n_choices.min(OPTIONS.len());
    letter.is_some_and(|c| OPTIONS[..n].iter().any(|o| o.starts_with(c)))
}

/// Where and how to read ScienceQA for an evaluation.
#[derive(Debug, Clone)]
pub struct SqaSource {
    /// Data root (problems.json, pid_splits.json, images/).
    pub data_root: PathBuf,
    /// Split name.
    pub split: String,
    /// Prompt format name, e.g. `QCM-ALE`.
    pub prompt_format: String,
    /// Captions in the context.
    pub use_caption: bool,
    /// Captions file (default `<data-root>/captions.json` when present).
    pub caption_file: Option<PathBuf>,
    /// Skip problems whose image file is missing (with a warning) instead of failing.
    pub skip_missing_images: bool,
}

/// The problems of a split in `pid_splits.json` order with their test-mode prompts.
pub fn load_items(src: &SqaSource) -> Result<Vec<SqaItem>, SqaError> {
    let format: PromptFormat = src.prompt_format.parse()?;
    let opts = LoadOptions {
        captions: src.caption_file.clone(),
    };
    let data = ScienceQa::load(&src.data_root, &opts)?;
    let missing = if src.skip_missing_images {
        MissingImage::Skip
    } else {
        MissingImage::Error
    };
    let (items, skipped) = data.items(&src.split, format, src.use_caption, missing)?;
    if skipped > 0 {
        eprintln!("warning: {skipped} problems skipped for a missing image");
    }
    Ok(items
        .into_iter()
        .map(|it| {
            let p = &data.problems[&it.qid];
            SqaItem {
                n_choices: p.choices.len(),
                answer: p.answer,
                qid: it.qid,
                prompt: it.question,
                image: it.image,
            }
        })
        .collect())
}

/// Loads an image for a problem.
pub type ItemImageLoader<'a> = dyn FnMut(&Path) -> anyhow::Result<ImageInput> + 'a;

/// Runs the evaluation loop over `items` in order.
pub fn run_eval(
    items: &[SqaItem],
    generator: &mut dyn Generator,
    settings: &EvalSettings,
    load_image: &mut ItemImageLoader<'_>,
    progress: &ProgressBar,
) -> Result<EvalResult, SqaError> {
    let mut rng = PyRandom::new(settings.fallback_seed);
    let mut result = EvalResult::default();
    progress.set_length(items.len() as u64);
    for (batch_no, batch) in items.chunks(settings.batch_size.max(1)).enumerate() {
        let mut requests = Vec::with_capacity(batch.len());
        for item in batch {
            let image = match &item.image {
                Some(path) => Some(load_image(path).map_err(|e| SqaError::Image {
                    qid: item.qid.clone(),
                    path: path.clone(),
                    message: crate::error_chain(e.as_ref()),
                })?),
                None => None,
            };
            requests.push(GenRequest {
                prompt: item.prompt.clone(),
                image,
            });
        }
        let params = SamplingParams {
            seed: settings.params.seed.wrapping_add(batch_no as u64),
            ..settings.params.clone()
        };
        let outputs = generator.generate(&requests, &params, &mut |_, _| {})?;
        for (item, out) in batch.iter().zip(outputs) {
            let letter = extract_answer(&out.text);
            result.fallbacks += usize::from(!is_option(letter, item.n_choices));
            let idx = pred_idx(letter, item.n_choices, &mut rng);
            result.correct += usize::from(idx == item.answer);
            result.preds.push((item.qid.clone(), idx));
            result.outputs.push((item.qid.clone(), out.text));
        }
        progress.inc(batch.len() as u64);
    }
    progress.finish_and_clear();
    Ok(result)
}

/// `preds.json` text: `{"qid": index, ...}` in the given order.
pub fn preds_json(preds: &[(String, usize)]) -> String {
    let body: Vec<String> = preds
        .iter()
        .map(|(q, i)| format!("{}: {i}", serde_json::Value::String(q.clone())))
        .collect();
    format!("{{{}}}\n", body.join(", "))
}

/// Writes `text` to `path` atomically (temporary file beside it, then rename).
pub fn write_atomic(path: &Path, text: &str) -> Result<(), SqaError> {
    let io = |source| SqaError::Io {
        action: "write",
        path: path.to_path_buf(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, SqaError> {
    let text = std::fs::read_to_string(path).map_err(|source| SqaError::Io {
        action: "read",
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|e| SqaError::Json {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Reads `problems.json` (qid → problem).
pub fn read_problems(path: &Path) -> Result<BTreeMap<String, Problem>, SqaError> {
    read_json(path)
}

/// Reads a predictions file (qid → index), ours or the original's.
pub fn read_preds(path: &Path) -> Result<Vec<(String, usize)>, SqaError> {
    let map: serde_json::Map<String, serde_json::Value> = read_json(path)?;
    map.into_iter()
        .map(|(qid, v)| match v.as_u64() {
            Some(i) => Ok((qid, i as usize)),
            None => Err(SqaError::Json {
                path: path.to_path_buf(),
                message: format!(
                    "prediction for qid {qid} must be a non-negative integer, got {v}"
                ),
            }),
        })
        .collect()
}

/// The `score` command: reads both files, checks every qid, scores with `get_scores`.
pub fn score_files(preds_path: &Path, problems_path: &Path) -> Result<ScoreReport, SqaError> {
    let problems = read_problems(problems_path)?;
    let preds = read_preds(preds_path)?;
    for (qid, _) in &preds {
        if !problems.contains_key(qid) {
            return Err(SqaError::UnknownQid {
                path: preds_path.to_path_buf(),
                qid: qid.clone(),
            });
        }
    }
    let predictions = preds.len();
    let preds: BTreeMap<String, usize> = preds.into_iter().collect();
    let scores = get_scores(&problems, &preds).map_err(|e| SqaError::MissingPrediction {
        path: preds_path.to_path_buf(),
        qid: e.qid,
    })?;
    Ok(ScoreReport {
        scores,
        predictions,
    })
}

/// Scores plus bookkeeping for the `score` command.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreReport {
    /// The paper's table (`get_scores` output).
    pub scores: Scores,
    /// Number of predictions read.
    pub predictions: usize,
}

/// `(key, value)` pairs of the table, in the paper's column order.
pub fn score_pairs(s: &Scores) -> [(&'static str, &str); 9] {
    [
        ("acc_natural", &s.acc_natural),
        ("acc_social", &s.acc_social),
        ("acc_language", &s.acc_language),
        ("acc_has_text", &s.acc_has_text),
        ("acc_has_image", &s.acc_has_image),
        ("acc_no_context", &s.acc_no_context),
        ("acc_grade_1_6", &s.acc_grade_1_6),
        ("acc_grade_7_12", &s.acc_grade_7_12),
        ("acc_average", &s.acc_average),
    ]
}

/// The paper's table: a header, the values, and the LaTeX row the original prints.
pub fn format_table(s: &Scores) -> String {
    let names = [
        "NAT", "SOC", "LAN", "TXT", "IMG", "NO", "G1-6", "G7-12", "Avg",
    ];
    let pairs = score_pairs(s);
    let header: String = names.iter().map(|n| format!("{n:>8}")).collect();
    let values: String = pairs.iter().map(|(_, v)| format!("{v:>8}")).collect();
    let latex: String = pairs.iter().map(|(_, v)| format!("& {v} ")).collect();
    format!("{header}\n{values}\n{latex}\\\\")
}

impl fmt::Display for ScoreReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_table(&self.scores))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::ScriptedGenerator;
    use serde_json::Value;
    use std::collections::HashMap;

    fn fixture() -> Value {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/parity/tiny-a/scores.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn answer_extraction_matches_fixture() {
        // The fixture seeds Python's random with 1234 once before its 10 calls: with the same
        // generator even the random fallbacks match.
        let f = fixture();
        let mut rng = PyRandom::new(f["random_seed"].as_u64().unwrap_or(1234));
        for case in f["answers"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let letter = extract_answer(text);
            let n = case["n_choices"].as_u64().unwrap() as usize;
            assert_eq!(
                !is_option(letter, n),
                case["random_fallback"].as_bool().unwrap(),
                "{text}"
            );
            let idx = pred_idx(letter, n, &mut rng);
            assert_eq!(idx as u64, case["pred_idx"].as_u64().unwrap(), "{text}");
        }
    }

    fn write_fixture_files(dir: &Path) -> (PathBuf, PathBuf) {
        let f = fixture();
        let problems = dir.join("problems.json");
        std::fs::write(&problems, f["problems"].to_string()).unwrap();
        let preds = dir.join("preds.json");
        std::fs::write(&preds, f["predictions"].to_string()).unwrap();
        (preds, problems)
    }

    #[test]
    fn scores_equal_fixture() {
        let dir = tempfile::tempdir().unwrap();
        let (preds, problems) = write_fixture_files(dir.path());
        let report = score_files(&preds, &problems).unwrap();
        let want = &fixture()["scores"];
        for (k, v) in score_pairs(&report.scores) {
            assert_eq!(want[k].as_str().unwrap(), v, "{k}");
        }
        let table = report.to_string();
        assert!(table.contains("72.92"), "{table}");
    }

    #[test]
    fn score_errors_name_file_and_qid() {
        let dir = tempfile::tempdir().unwrap();
        let (preds, problems) = write_fixture_files(dir.path());
        std::fs::write(&preds, r#"{"1000": 1, "9999": 0}"#).unwrap();
        let e = score_files(&preds, &problems).unwrap_err().to_string();
        assert!(e.contains("9999") && e.contains("preds.json"), "{e}");
        std::fs::write(&preds, r#"{"1000": "A"}"#).unwrap();
        let e = score_files(&preds, &problems).unwrap_err().to_string();
        assert!(e.contains("1000") && e.contains("integer"), "{e}");
        std::fs::write(&preds, r#"{"1000": 1}"#).unwrap();
        let e = score_files(&preds, &problems).unwrap_err().to_string();
        assert!(e.contains("no prediction for test problem 1001"), "{e}");
        let e = score_files(&dir.path().join("nope.json"), &problems)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.json"), "{e}");
    }

    #[test]
    fn items_come_in_split_order_with_prompts_and_images() {
        let dir = tempfile::tempdir().unwrap();
        let f = fixture();
        let problems = f["problems"].as_object().unwrap();
        std::fs::write(dir.path().join("problems.json"), f["problems"].to_string()).unwrap();
        let mut test: Vec<&String> = problems
            .iter()
            .filter(|(_, p)| p["split"] == "test")
            .map(|(q, _)| q)
            .collect();
        test.reverse(); // split order, not file order
        let splits = serde_json::json!({ "test": test, "val": [] });
        std::fs::write(dir.path().join("pid_splits.json"), splits.to_string()).unwrap();
        for q in &test {
            if problems[q.as_str()]["image"].is_string() {
                let d = dir.path().join("images/test").join(q);
                std::fs::create_dir_all(&d).unwrap();
                std::fs::write(d.join("image.png"), b"png").unwrap();
            }
        }
        let src = SqaSource {
            data_root: dir.path().to_path_buf(),
            split: "test".into(),
            prompt_format: "QCM-ALE".into(),
            use_caption: false,
            caption_file: None,
            skip_missing_images: false,
        };
        let items = load_items(&src).unwrap();
        let qids: Vec<&String> = items.iter().map(|i| &i.qid).collect();
        assert_eq!(qids, test);
        let first = &items[0];
        assert!(first.prompt.starts_with("Question:"), "{}", first.prompt);
        assert!(first.prompt.ends_with("Response:"), "{}", first.prompt);
        let p = &problems[first.qid.as_str()];
        assert_eq!(first.n_choices, p["choices"].as_array().unwrap().len());
        assert_eq!(first.image.is_some(), p["image"].is_string());
        let bad = SqaSource {
            prompt_format: "QCM-XYZ".into(),
            ..src.clone()
        };
        assert!(load_items(&bad)
            .unwrap_err()
            .to_string()
            .contains("QCM-XYZ"));
        let bad = SqaSource {
            split: "minival".into(),
            ..src
        };
        assert!(load_items(&bad)
            .unwrap_err()
            .to_string()
            .contains("minival"));
    }

    #[test]
    fn eval_loop_batches_in_order_and_writes_preds() {
        let items: Vec<SqaItem> = (0..5)
            .map(|i| SqaItem {
                qid: format!("q{i}"),
                prompt: format!("Question {i}\nResponse:"),
                image: (i % 2 == 0).then(|| PathBuf::from(format!("img{i}.png"))),
                n_choices: 3,
                answer: i % 3,
            })
            .collect();
        // Answers A for even questions, C for q1, nothing usable for q3.
        let mut g = ScriptedGenerator::new(|r| {
            if r.prompt.contains("Question 1") {
                "The answer is C.".into()
            } else if r.prompt.contains("Question 3") {
                "I do not know".into()
            } else {
                "The answer is A. BECAUSE: reasons".into()
            }
        });
        let mut loaded = Vec::new();
        let mut loader = |p: &Path| {
            loaded.push(p.to_path_buf());
            Ok::<_, anyhow::Error>(ImageInput {
                name: p.display().to_string(),
                pixels: std::sync::Arc::new(vec![]),
            })
        };
        let settings = EvalSettings {
            batch_size: 2,
            params: SamplingParams::default(),
            fallback_seed: 1,
        };
        let r = run_eval(
            &items,
            &mut g,
            &settings,
            &mut loader,
            &ProgressBar::hidden(),
        )
        .unwrap();
        assert_eq!(g.calls, 3);
        let qids: Vec<_> = r.preds.iter().map(|(q, _)| q.as_str()).collect();
        assert_eq!(qids, ["q0", "q1", "q2", "q3", "q4"]);
        assert_eq!(r.preds[0].1, 0);
        assert_eq!(r.preds[1].1, 2);
        assert_eq!(r.fallbacks, 1);
        // q0 (A = 0) right, q1 (C = 2, answer 1) wrong, q2 (A, answer 2) wrong, q4 (A, answer 1) wrong.
        let q3_right = usize::from(r.preds[3].1 == 0);
        assert_eq!(r.correct, 1 + q3_right);
        // Same seed, same fallback.
        let again = run_eval(
            &items,
            &mut g,
            &settings,
            &mut loader,
            &ProgressBar::hidden(),
        )
        .unwrap();
        assert_eq!(again.preds, r.preds);
        assert_eq!(loaded.len(), 6, "three images per run");

        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("preds.json");
        write_atomic(&out, &preds_json(&r.preds)).unwrap();
        let text = std::fs::read_to_string(&out).unwrap();
        assert!(text.starts_with("{\"q0\": 0, \"q1\": 2"), "{text}");
        let back = read_preds(&out).unwrap();
        let back: HashMap<_, _> = back.into_iter().collect();
        assert_eq!(back.len(), 5);
        assert!(!dir.path().join("preds.json.tmp").exists());
    }
}
