//! ScienceQA and instruction loaders: layout, captions, images, errors naming file + qid/field.

mod common;

use std::path::Path;

use common::CASE;
use lavin_data::{
    batch, tokenize_example, DataError, InstructData, InstructPadding, LoadOptions, MissingImage,
    ScienceQa, Tokenizer,
};

fn write(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

const PROBLEMS: &str = r#"{
 "10": {"question": "Which animal can fly?", "choices": ["bird", "fish"], "answer": 0, "hint": "",
        "image": "image.png", "task": "closed choice", "grade": "grade3", "subject": "natural science",
        "topic": "t", "category": "c", "skill": "s", "lecture": "", "solution": "", "split": "train"},
 "11": {"question": "Which is hard?", "choices": ["rock", "wool", "ice"], "answer": 0, "hint": "Feel it.",
        "image": null, "task": "closed choice", "grade": "grade8", "subject": "natural science",
        "topic": "t", "category": "c", "skill": "s", "lecture": "L", "solution": "S", "split": "train"}
}"#;

fn sqa_root() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "problems.json", PROBLEMS);
    write(
        dir.path(),
        "pid_splits.json",
        r#"{"train": ["10", "11"], "val": []}"#,
    );
    write(
        dir.path(),
        "captions.json",
        r#"{"captions": {"10": "A bird on a branch."}}"#,
    );
    let img = std::fs::read(format!("{CASE}/images/image0.png")).unwrap();
    let p = dir.path().join("images/train/10/image.png");
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, img).unwrap();
    dir
}

#[test]
fn loads_official_layout_with_captions_and_images() {
    let dir = sqa_root();
    let d = ScienceQa::load(dir.path(), &LoadOptions::default()).unwrap();
    assert_eq!(d.split("train").unwrap(), ["10", "11"]);
    assert_eq!(d.problems["10"].caption, "A bird on a branch.");
    let (items, skipped) = d
        .items("train", "CQM-A".parse().unwrap(), true, MissingImage::Error)
        .unwrap();
    assert_eq!(skipped, 0);
    assert_eq!(items[0].question, "Context: A bird on a branch.\nQuestion: Which animal can fly?\nOptions: (A) bird (B) fish\nResponse:");
    assert_eq!(
        items[0].image.as_deref(),
        Some(dir.path().join("images/train/10/image.png").as_path())
    );
    assert_eq!(items[1].image, None);
    let e = d.split("test").unwrap_err().to_string();
    assert!(
        e.contains("pid_splits.json") && e.contains("test") && e.contains("train"),
        "{e}"
    );
}

#[test]
fn missing_image_errors_or_is_skipped_and_counted() {
    let dir = sqa_root();
    std::fs::remove_file(dir.path().join("images/train/10/image.png")).unwrap();
    let d = ScienceQa::load(dir.path(), &LoadOptions::default()).unwrap();
    let f = "QCM-ALE".parse().unwrap();
    let e = d.items("train", f, false, MissingImage::Error).unwrap_err();
    assert!(matches!(e, DataError::MissingImage { .. }));
    let e = e.to_string();
    assert!(
        e.contains("images/train/10/image.png") && e.contains("\"10\""),
        "{e}"
    );
    let (items, skipped) = d.items("train", f, false, MissingImage::Skip).unwrap();
    assert_eq!((items.len(), skipped), (1, 1));
}

#[test]
fn bad_files_name_file_and_qid_or_field() {
    let dir = sqa_root();
    // A missing field.
    write(
        dir.path(),
        "problems.json",
        &PROBLEMS.replace(r#""question": "Which is hard?", "#, ""),
    );
    let e = ScienceQa::load(dir.path(), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("problems.json") && e.contains("\"11\"") && e.contains("question"),
        "{e}"
    );
    // A wrongly typed field.
    write(
        dir.path(),
        "problems.json",
        &PROBLEMS.replace(r#""answer": 0, "hint": """#, r#""answer": "A", "hint": """#),
    );
    let e = ScienceQa::load(dir.path(), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("problems.json") && e.contains("\"10\"") && e.contains("invalid type"),
        "{e}"
    );
    // A split naming an unknown qid.
    write(dir.path(), "problems.json", PROBLEMS);
    write(dir.path(), "pid_splits.json", r#"{"train": ["10", "99"]}"#);
    let e = ScienceQa::load(dir.path(), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("pid_splits.json") && e.contains("\"99\""), "{e}");
    // Missing and malformed files.
    std::fs::remove_file(dir.path().join("pid_splits.json")).unwrap();
    let e = ScienceQa::load(dir.path(), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("pid_splits.json"), "{e}");
    write(dir.path(), "pid_splits.json", "{\"train\": [");
    let e = ScienceQa::load(dir.path(), &LoadOptions::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("pid_splits.json") && e.contains("line"), "{e}");
    // An answer outside the choices is reported at prompt time with the qid.
    write(dir.path(), "pid_splits.json", r#"{"train": ["10"]}"#);
    write(
        dir.path(),
        "problems.json",
        &PROBLEMS.replace(r#""answer": 0, "hint": "","#, r#""answer": 7, "hint": "","#),
    );
    let d = ScienceQa::load(dir.path(), &LoadOptions::default()).unwrap();
    let e = d
        .items("train", "CQM-A".parse().unwrap(), false, MissingImage::Skip)
        .unwrap_err()
        .to_string();
    assert!(e.contains("\"10\"") && e.contains("answer index 7"), "{e}");
}

#[test]
fn instruct_data_prompt_images_and_padding() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "all_data.json",
        r#"{"all": [
          {"qid": "5", "instruction": "Instruction: What is shown?\nResponse: ", "answer": "A bird.", "image": "image.png", "image_source": "sqa"},
          {"qid": 7, "instruction": "Say hi.", "answer": "hi", "image": "000000000009.jpg", "image_source": "coco"},
          {"qid": "8", "instruction": "Count.", "answer": "one two three", "image": null, "image_source": "none"}
        ]}"#,
    );
    write(dir.path(), "images/train/5/image.png", "x");
    let e = InstructData::load(dir.path(), "all", MissingImage::Error)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("images/train2014/COCO_train2014_000000000009.jpg") && e.contains("\"7\""),
        "{e}"
    );
    let d = InstructData::load(dir.path(), "all", MissingImage::Skip).unwrap();
    assert_eq!((d.items.len(), d.skipped), (2, 1));
    assert_eq!(
        d.items[0].image.as_deref(),
        Some(dir.path().join("images/train/5/image.png").as_path())
    );
    let tok = Tokenizer::from_file(format!("{CASE}/tokenizer.model")).unwrap();
    let ours = d
        .tokenize(&tok, 1, 16, InstructPadding::MaxSeqLen)
        .unwrap()
        .unwrap();
    let same = tokenize_example(&tok, "Count.", "one two three", 16).unwrap();
    assert_eq!(ours, same);
    let orig = d
        .tokenize(&tok, 1, 16, InstructPadding::Original512)
        .unwrap()
        .unwrap();
    assert_eq!(orig.tokens.len(), 512);
    assert_eq!(orig.tokens[..ours.n_real], ours.tokens[..ours.n_real]);
    assert!(d
        .tokenize(&tok, 9, 16, InstructPadding::MaxSeqLen)
        .is_none());
    let e = InstructData::load(dir.path(), "train", MissingImage::Skip)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("all_data.json") && e.contains("train") && e.contains("all"),
        "{e}"
    );
    write(
        dir.path(),
        "all_data.json",
        r#"{"all": [{"qid": "1", "instruction": 3, "answer": "x", "image": null}]}"#,
    );
    let e = InstructData::load(dir.path(), "all", MissingImage::Skip)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("all_data.json") && e.contains("\"1\"") && e.contains("instruction"),
        "{e}"
    );
}

#[test]
fn dynamic_padding_keeps_every_token_fixed_padding_keeps() {
    let tok = Tokenizer::from_file(format!("{CASE}/tokenizer.model")).unwrap();
    let s = 48;
    let a = tokenize_example(&tok, "Q: a?\nResponse:", "The answer is A.", s).unwrap();
    let b = tokenize_example(&tok, "Q: bb?\nResponse:", "The answer is B.", s).unwrap();
    let (img_extra, txt_extra) = (3 + 2, 5);
    let len = batch::batch_pad_len_exact(s, &[(a.n_real, img_extra), (b.n_real, txt_extra)]);
    assert!(len >= a.n_real && len >= b.n_real && len <= s);
    assert!(batch::trim_row(&a.tokens, len)[..a.n_real] == a.tokens[..a.n_real]);
    assert!(a.tokens[len..].iter().all(|&t| t == 0));
    let r = batch::padding_saving(s, &[vec![(a.n_real, img_extra), (b.n_real, txt_extra)]]);
    assert!(r.saved_fraction() > 0.0, "{r}");
}

/// The bundled mini ScienceQA (when present) loads and every prompt builds.
#[test]
fn bundled_mini_sqa_loads() {
    let root = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../data/mini-sqa"));
    if !root.join("problems.json").exists() {
        eprintln!("SKIP: {} absent", root.display());
        return;
    }
    let d = ScienceQa::load(root, &LoadOptions::default()).unwrap();
    for split in ["train", "val", "test"] {
        let (items, skipped) = d
            .items(split, "CQM-A".parse().unwrap(), true, MissingImage::Error)
            .unwrap();
        assert_eq!(skipped, 0);
        assert_eq!(items.len(), d.split(split).unwrap().len());
    }
}
