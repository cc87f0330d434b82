//! MME benchmark, as the original `eval_mme.py` runs it.
//!
//! - The root holds one folder per subtask (other entries are ignored). In a subtask, images are
//!   under `images/` when that folder exists (else the subtask folder itself), found by walking it
//!   for `.jpg`/`.png` files; the annotation of `x.png` is `x.txt` in `questions_answers_YN/` when
//!   that folder exists (else beside the images). Its first line is the positive question and the
//!   second the negative, each `question\tanswer`; expected answers are "yes" for the first line
//!   and "no" for the second, as in the original.
//! - Prompt `Instruction: {question}\nResponse: ` after `.replace("  ", " ").strip()`, with the
//!   image; 20 new tokens; batches of 8 images (16 prompts, positive then negative).
//! - Parse: lower-case, trim, take the text after the first `response:`; "yes" if `yes` is within
//!   its first 4 characters, else "no" if `no` is, else "other".
//! - Per subtask: acc = % correct answers, acc+ = % images with both right, score = acc + acc+;
//!   cognition = commonsense_reasoning, numerical_calculation, text_translation, code_reasoning,
//!   every other subtask is perception.
//!
//! Differences, for determinism only: subtasks and images are sorted by name (the original uses
//! the file system's listing order); a decoded text without `response:` counts as "other"
//! (the original raises).

use std::fmt;
use std::path::{Path, PathBuf};

use indicatif::ProgressBar;
use serde::Serialize;

use crate::generator::{GenError, GenRequest, Generator, ImageInput, SamplingParams};

/// New tokens per answer in the original.
pub const MME_MAX_GEN_LEN: usize = 20;
/// Images per batch in the original (two prompts each).
pub const MME_BATCH_IMAGES: usize = 8;
/// The subtasks counted as cognition.
pub const COGNITION: [&str; 4] = [
    "commonsense_reasoning",
    "numerical_calculation",
    "text_translation",
    "code_reasoning",
];

/// Errors of the MME evaluation, naming the file involved.
#[derive(Debug, thiserror::Error)]
pub enum MmeError {
    /// A file or folder could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An image without its annotation file.
    #[error("image {image} has no annotation file {expected}")]
    MissingAnnotation {
        /// The image.
        image: PathBuf,
        /// Where the `.txt` was looked for.
        expected: PathBuf,
    },
    /// An annotation file without two question lines.
    #[error("annotation {path}: {reason}")]
    BadAnnotation {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// No subtask folder with images under the root.
    #[error("no MME subtask folders with images under {0}")]
    NoSubtasks(PathBuf),
    /// An image that does not load.
    #[error("image {path}: {message}")]
    Image {
        /// The image.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// Generation failed.
    #[error(transparent)]
    Generation(#[from] GenError),
}

/// One image with its two questions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MmeItem {
    /// The image file.
    pub image: PathBuf,
    /// First line: expected answer "yes".
    pub positive: String,
    /// Second line: expected answer "no".
    pub negative: String,
}

/// A subtask folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MmeSubtask {
    /// Folder name.
    pub name: String,
    /// Its images, sorted by file name.
    pub items: Vec<MmeItem>,
}

/// A parsed answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum YesNo {
    /// "yes" within the first 4 characters.
    Yes,
    /// "no" within the first 4 characters.
    No,
    /// Anything else.
    Other,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> MmeError + '_ {
    move |source| MmeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>, MmeError> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io_err(dir))? {
        out.push(entry.map_err(io_err(dir))?.path());
    }
    out.sort();
    Ok(out)
}

fn walk_images(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), MmeError> {
    for path in sorted_entries(dir)? {
        if path.is_dir() {
            walk_images(&path, out)?;
        } else if let Some(name) = path.file_name().and_then(|n| n.to_str()) {
            if name.ends_with(".jpg") || name.ends_with(".png") {
                out.push(path);
            }
        }
    }
    Ok(())
}

/// The question of one annotation line: the text before the first tab.
fn question_of(line: &str) -> String {
    let line = line.trim_end_matches(['\n', '\r']);
    line.split('\t').next().unwrap_or("").to_string()
}

/// Reads one subtask folder.
pub fn read_subtask(dir: &Path) -> Result<MmeSubtask, MmeError> {
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let image_dir = if dir.join("images").is_dir() {
        dir.join("images")
    } else {
        dir.to_path_buf()
    };
    let ann_dir = if dir.join("questions_answers_YN").is_dir() {
        dir.join("questions_answers_YN")
    } else {
        dir.to_path_buf()
    };
    let mut images = Vec::new();
    walk_images(&image_dir, &mut images)?;
    images.sort_by(|a, b| a.file_name().cmp(&b.file_name()).then(a.cmp(b)));
    let mut items = Vec::with_capacity(images.len());
    for image in images {
        let file = image.file_name().map(|n| n.to_string_lossy().into_owned());
        let stem = file.unwrap_or_default();
        let ann_name = stem.replace(".jpg", ".txt").replace(".png", ".txt");
        let ann = ann_dir.join(&ann_name);
        if !ann.is_file() {
            return Err(MmeError::MissingAnnotation {
                image,
                expected: ann,
            });
        }
        let text = std::fs::read_to_string(&ann).map_err(io_err(&ann))?;
        let mut lines = text.split_inclusive('\n');
        let (Some(pos), Some(neg)) = (lines.next(), lines.next()) else {
            return Err(MmeError::BadAnnotation {
                path: ann,
                reason: "needs two lines (positive and negative question)".into(),
            });
        };
        items.push(MmeItem {
            image,
            positive: question_of(pos),
            negative: question_of(neg),
        });
    }
    Ok(MmeSubtask { name, items })
}

/// Every subtask folder under `root`, sorted by name; folders without images are left out.
pub fn discover(root: &Path) -> Result<Vec<MmeSubtask>, MmeError> {
    let mut out = Vec::new();
    for path in sorted_entries(root)? {
        if path.is_dir() {
            let sub = read_subtask(&path)?;
            if !sub.items.is_empty() {
                out.push(sub);
            }
        }
    }
    if out.is_empty() {
        return Err(MmeError::NoSubtasks(root.to_path_buf()));
    }
    Ok(out)
}

/// The original's MME prompt.
pub fn mme_prompt(question: &str) -> String {
    format!("Instruction: {question}\nResponse: ")
        .replace("  ", " ")
        .trim()
        .to_string()
}

/// The original's yes/no parse of a decoded output (prompt included).
pub fn parse_yes_no(decoded: &str) -> YesNo {
    let lower = decoded.to_lowercase();
    let Some(answer) = lower.trim().split("response:").nth(1) else {
        return YesNo::Other;
    };
    let head: String = answer.chars().take(4).collect();
    if head.contains("yes") {
        YesNo::Yes
    } else if head.contains("no") {
        YesNo::No
    } else {
        YesNo::Other
    }
}

/// Scores of one subtask.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SubtaskScore {
    /// Folder name.
    pub name: String,
    /// Number of images.
    pub images: usize,
    /// % of correct answers.
    pub acc: f64,
    /// % of images with both answers correct.
    pub acc_plus: f64,
    /// acc + acc+.
    pub score: f64,
    /// Counted under cognition (else perception).
    pub cognition: bool,
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MmeReport {
    /// Per subtask, in evaluation order.
    pub subtasks: Vec<SubtaskScore>,
    /// Sum of perception subtask scores.
    pub perception: f64,
    /// Sum of cognition subtask scores.
    pub cognition: f64,
    /// perception + cognition.
    pub total: f64,
}

/// Scores a subtask from its answers, in item order: `[pos0, neg0, pos1, neg1, ...]`.
pub fn score_subtask(name: &str, answers: &[YesNo]) -> SubtaskScore {
    let pairs = answers.len() / 2;
    let correct: Vec<bool> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| *a == if i % 2 == 0 { YesNo::Yes } else { YesNo::No })
        .collect();
    let n_correct = correct.iter().filter(|c| **c).count();
    let both = correct
        .chunks(2)
        .filter(|c| c.len() == 2 && c[0] && c[1])
        .count();
    let pct = |a: usize, b: usize| {
        if b == 0 {
            0.0
        } else {
            a as f64 / b as f64 * 100.0
        }
    };
    let acc = pct(n_correct, answers.len());
    let acc_plus = pct(both, pairs);
    SubtaskScore {
        name: name.to_string(),
        images: pairs,
        acc,
        acc_plus,
        score: acc + acc_plus,
        cognition: COGNITION.contains(&name),
    }
}

/// Sums subtask scores into the report.
pub fn report(subtasks: Vec<SubtaskScore>) -> MmeReport {
    let cognition: f64 = subtasks
        .iter()
        .filter(|s| s.cognition)
        .map(|s| s.score)
        .sum();
    let perception: f64 = subtasks
        .iter()
        .filter(|s| !s.cognition)
        .map(|s| s.score)
        .sum();
    MmeReport {
        subtasks,
        perception,
        cognition,
        total: perception + cognition,
    }
}

impl fmt::Display for MmeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "{:<26} {:>7} {:>8} {:>8} {:>8}  kind",
            "subtask", "images", "acc", "acc+", "score"
        )?;
        for s in &self.subtasks {
            writeln!(
                f,
                "{:<26} {:>7} {:>8.2} {:>8.2} {:>8.2}  {}",
                s.name,
                s.images,
                s.acc,
                s.acc_plus,
                s.score,
                if s.cognition {
                    "cognition"
                } else {
                    "perception"
                }
            )?;
        }
        writeln!(f, "perception score: {:.2}", self.perception)?;
        writeln!(f, "cognition score:  {:.2}", self.cognition)?;
        write!(f, "total score:      {:.2}", self.total)
    }
}

/// Loads an image file into a model input.
pub type PathImageLoader<'a> = dyn FnMut(&Path) -> anyhow::Result<ImageInput> + 'a;

/// Runs MME over `subtasks` with `generator`: batches of `batch_images` images, `params`
/// (the original: 0.1 / 0.75, 20 tokens). `progress` counts images.
pub fn run_mme(
    subtasks: &[MmeSubtask],
    generator: &mut dyn Generator,
    params: &SamplingParams,
    batch_images: usize,
    load_image: &mut PathImageLoader<'_>,
    progress: &ProgressBar,
) -> Result<MmeReport, MmeError> {
    let batch_images = batch_images.max(1);
    progress.set_length(subtasks.iter().map(|s| s.items.len() as u64).sum());
    let mut scores = Vec::with_capacity(subtasks.len());
    let mut batch_no = 0u64;
    for sub in subtasks {
        progress.set_message(sub.name.clone());
        let mut answers = Vec::with_capacity(sub.items.len() * 2);
        for chunk in sub.items.chunks(batch_images) {
            let mut requests = Vec::with_capacity(chunk.len() * 2);
            for item in chunk {
                let image = load_image(&item.image).map_err(|e| MmeError::Image {
                    path: item.image.clone(),
                    message: crate::error_chain(e.as_ref()),
                })?;
                for q in [&item.positive, &item.negative] {
                    requests.push(GenRequest {
                        prompt: mme_prompt(q),
                        image: Some(image.clone()),
                    });
                }
            }
            let batch_params = SamplingParams {
                seed: params.seed.wrapping_add(batch_no),
                ..params.clone()
            };
            batch_no += 1;
            let outputs = generator.generate(&requests, &batch_params, &mut |_, _| {})?;
            answers.extend(outputs.iter().map(|o| parse_yes_no(&o.text)));
            progress.inc(chunk.len() as u64);
        }
        scores.push(score_subtask(&sub.name, &answers));
    }
    progress.finish_and_clear();
    Ok(report(scores))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::ScriptedGenerator;
    use std::sync::Arc;

    #[test]
    fn prompt_as_original() {
        assert_eq!(
            mme_prompt("Is there a  dog? Please answer yes or no."),
            "Instruction: Is there a dog? Please answer yes or no.\nResponse:"
        );
    }

    #[test]
    fn parse_as_original() {
        let p = "Instruction: q?\nResponse:";
        assert_eq!(parse_yes_no(&format!("{p} Yes, it is.")), YesNo::Yes);
        assert_eq!(parse_yes_no(&format!("{p} No.")), YesNo::No);
        assert_eq!(parse_yes_no(&format!("{p}  no")), YesNo::No);
        // "yes" must be within the first 4 characters after "response:".
        assert_eq!(parse_yes_no(&format!("{p} I think yes")), YesNo::Other);
        // "not" contains "no".
        assert_eq!(parse_yes_no(&format!("{p} not sure")), YesNo::No);
        assert_eq!(parse_yes_no("no marker"), YesNo::Other);
    }

    #[test]
    fn scores_acc_and_acc_plus() {
        use YesNo::*;
        let s = score_subtask("color", &[Yes, No, Yes, Yes, Other, No, Yes, No]);
        assert_eq!(s.images, 4);
        assert!((s.acc - 75.0).abs() < 1e-9);
        assert!((s.acc_plus - 50.0).abs() < 1e-9);
        assert!(!s.cognition);
        let c = score_subtask("code_reasoning", &[Yes, No]);
        assert!(c.cognition);
        let r = report(vec![s, c]);
        assert!((r.perception - 125.0).abs() < 1e-9);
        assert!((r.cognition - 200.0).abs() < 1e-9);
        assert!((r.total - 325.0).abs() < 1e-9);
    }

    fn write(path: &Path, text: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Two subtasks in the two layouts MME uses, plus a stray file at the root.
    fn synthetic_mme(root: &Path) {
        // Flat layout: images and .txt side by side.
        let color = root.join("color");
        write(&color.join("b.png"), "png");
        write(
            &color.join("b.txt"),
            "Is it red? Please answer yes or no.\tYes\nIs it blue? Please answer yes or no.\tNo\n",
        );
        write(&color.join("a.jpg"), "jpg");
        write(
            &color.join("a.txt"),
            "Is there a cat?\tYes\r\nIs there a dog?\tNo\r\n",
        );
        // images/ + questions_answers_YN/ layout.
        let code = root.join("code_reasoning");
        write(&code.join("images/x.png"), "png");
        write(
            &code.join("questions_answers_YN/x.txt"),
            "Does it print 1?\tYes\nDoes it print 2?\tNo",
        );
        write(&root.join("README.txt"), "not a subtask");
    }

    #[test]
    fn walks_both_layouts() {
        let dir = tempfile::tempdir().unwrap();
        synthetic_mme(dir.path());
        let subs = discover(dir.path()).unwrap();
        let names: Vec<_> = subs.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["code_reasoning", "color"]);
        assert_eq!(subs[1].items[0].positive, "Is there a cat?");
        assert_eq!(subs[1].items[0].negative, "Is there a dog?");
        assert_eq!(subs[1].items[1].image, dir.path().join("color/b.png"));
        assert_eq!(subs[0].items[0].negative, "Does it print 2?");
    }

    #[test]
    fn missing_annotation_is_named() {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("ocr/z.png"), "png");
        let err = discover(dir.path()).unwrap_err().to_string();
        assert!(err.contains("z.png") && err.contains("z.txt"), "{err}");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(
            discover(empty.path()),
            Err(MmeError::NoSubtasks(_))
        ));
    }

    #[test]
    fn end_to_end_with_fake_generator() {
        let dir = tempfile::tempdir().unwrap();
        synthetic_mme(dir.path());
        let subs = discover(dir.path()).unwrap();
        // Answers yes to questions mentioning cat/red/1, no otherwise, except "blue" -> yes.
        let mut g = ScriptedGenerator::new(|r| {
            assert!(r.image.is_some());
            let p = &r.prompt;
            if p.contains("cat") || p.contains("red") || p.contains("1?") || p.contains("blue") {
                "Yes".into()
            } else {
                "No".into()
            }
        });
        let mut loads = Vec::new();
        let mut loader = |p: &Path| {
            loads.push(p.to_path_buf());
            Ok::<_, anyhow::Error>(ImageInput {
                name: p.display().to_string(),
                pixels: Arc::new(vec![0.0; 3]),
            })
        };
        let params = SamplingParams {
            max_gen_len: MME_MAX_GEN_LEN,
            ..Default::default()
        };
        let r = run_mme(
            &subs,
            &mut g,
            &params,
            1,
            &mut loader,
            &ProgressBar::hidden(),
        )
        .unwrap();
        assert_eq!(loads.len(), 3);
        assert_eq!(r.subtasks[0].name, "code_reasoning");
        assert!((r.subtasks[0].score - 200.0).abs() < 1e-9);
        // color: a -> yes/no right; b -> yes right, "blue" answered yes: wrong.
        assert!((r.subtasks[1].acc - 75.0).abs() < 1e-9);
        assert!((r.subtasks[1].acc_plus - 50.0).abs() < 1e-9);
        assert!((r.cognition - 200.0).abs() < 1e-9);
        assert!((r.perception - 125.0).abs() < 1e-9);
        assert_eq!(g.calls, 3, "one batch per image with batch_images = 1");
        let table = r.to_string();
        assert!(table.contains("total score:      325.00"), "{table}");
    }
}
