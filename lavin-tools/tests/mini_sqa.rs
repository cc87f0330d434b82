//! The bundled mini ScienceQA (`data/mini-sqa/`): it is exactly what `make-mini-sqa` generates,
//! and it is a well-formed ScienceQA folder.

use serde_json::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn data_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../data/mini-sqa")
}

fn load(name: &str) -> Value {
    let path = data_dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn make_mini_sqa(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_make-mini-sqa"))
        .args(args)
        .output()
        .expect("run make-mini-sqa")
}

#[test]
fn committed_copy_equals_a_fresh_generation() {
    let dir = data_dir();
    let out = make_mini_sqa(&["--check", dir.to_str().expect("utf-8 path")]);
    assert!(
        out.status.success(),
        "data/mini-sqa is stale; regenerate with `cargo run -p lavin-data --release --bin \
         make-mini-sqa -- --out data/mini-sqa`:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn another_seed_differs_and_bad_arguments_are_explained() {
    let dir = data_dir();
    let out = make_mini_sqa(&["--check", dir.to_str().expect("utf-8 path"), "--seed", "7"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a different seed must not match"
    );

    let out = make_mini_sqa(&["--out", "x", "--seed", "-1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--seed: '-1'"));
    let out = make_mini_sqa(&["--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument '--bogus'"));
    let out = make_mini_sqa(&[]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn problems_are_well_formed() {
    let problems = load("problems.json");
    let problems = problems.as_object().expect("problems.json is an object");
    let captions = load("captions.json");
    let captions = captions["captions"].as_object().expect("captions object");
    let keys = [
        "question", "choices", "answer", "hint", "image", "task", "grade", "subject", "topic",
        "category", "skill", "lecture", "solution", "split",
    ];
    let mut subjects = BTreeSet::new();
    let mut grades = BTreeSet::new();
    for (qid, p) in problems {
        let obj = p.as_object().expect("problem object");
        let have: Vec<&str> = obj.keys().map(String::as_str).collect();
        let mut want = keys.to_vec();
        want.sort_unstable();
        let mut have_sorted = have.clone();
        have_sorted.sort_unstable();
        assert_eq!(have_sorted, want, "{qid}: fields");

        let choices = p["choices"].as_array().expect("choices");
        assert!(
            (2..=5).contains(&choices.len()),
            "{qid}: {} choices",
            choices.len()
        );
        let distinct: BTreeSet<&str> = choices
            .iter()
            .map(|c| c.as_str().expect("choice"))
            .collect();
        assert_eq!(distinct.len(), choices.len(), "{qid}: duplicate choices");
        let answer = p["answer"].as_u64().expect("answer") as usize;
        assert!(answer < choices.len(), "{qid}: answer out of range");
        assert_eq!(p["task"], "closed choice");
        let grade: u32 = p["grade"]
            .as_str()
            .and_then(|g| g.strip_prefix("grade"))
            .and_then(|g| g.parse().ok())
            .expect("gradeN");
        assert!((1..=12).contains(&grade));
        grades.insert(grade);
        subjects.insert(p["subject"].as_str().expect("subject").to_string());

        let split = p["split"].as_str().expect("split");
        match &p["image"] {
            Value::Null => assert!(!captions.contains_key(qid), "{qid}: caption without image"),
            Value::String(name) => {
                assert_eq!(name, "image.png");
                assert!(captions.contains_key(qid), "{qid}: image without caption");
                let path = data_dir().join("images").join(split).join(qid).join(name);
                let (w, h) = image::image_dimensions(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                assert_eq!((w, h), (224, 224), "{}", path.display());
            }
            other => panic!("{qid}: image {other}"),
        }
    }
    assert_eq!(subjects.len(), 3, "all three subjects: {subjects:?}");
    assert_eq!(grades, (1..=12).collect(), "every grade 1-12");

    // One image decodes as RGB with more than the background colour in it.
    let (qid, p) = problems
        .iter()
        .find(|(_, p)| p["image"].is_string())
        .expect("an image");
    let split = p["split"].as_str().expect("split");
    let img = image::open(
        data_dir()
            .join("images")
            .join(split)
            .join(qid)
            .join("image.png"),
    )
    .expect("decode")
    .to_rgb8();
    let colours: BTreeSet<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    assert!(colours.len() >= 2);
}

#[test]
fn splits_are_disjoint_complete_and_half_have_images() {
    let problems = load("problems.json");
    let problems = problems.as_object().expect("problems object");
    let splits = load("pid_splits.json");
    let ids = |name: &str| -> Vec<String> {
        splits[name]
            .as_array()
            .unwrap_or_else(|| panic!("pid_splits.json: no {name}"))
            .iter()
            .map(|q| q.as_str().expect("qid string").to_string())
            .collect()
    };
    let (train, val, test) = (ids("train"), ids("val"), ids("test"));
    let mut all = BTreeSet::new();
    for (name, list) in [("train", &train), ("val", &val), ("test", &test)] {
        for q in list.iter() {
            assert!(all.insert(q.clone()), "{q} in two splits");
            assert_eq!(problems[q]["split"], name, "{q}: split field");
        }
    }
    assert_eq!(all.len(), problems.len(), "splits cover every problem");
    assert_eq!((train.len(), val.len(), test.len()), (1200, 200, 200));
    let trainval: BTreeSet<String> = ids("trainval").into_iter().collect();
    assert_eq!(trainval, train.iter().chain(&val).cloned().collect());
    for (mini, full) in [
        ("minitrain", &train),
        ("minival", &val),
        ("minitest", &test),
    ] {
        assert!(
            ids(mini).iter().all(|q| full.contains(q)),
            "{mini} within its split"
        );
    }
    for list in [&val, &test] {
        let with_image = list
            .iter()
            .filter(|q| problems[q.as_str()]["image"].is_string())
            .count();
        assert_eq!(with_image, list.len() / 2);
    }
}

#[test]
fn stats_chance_accuracy_matches_the_problems() {
    let problems = load("problems.json");
    let stats = load("stats.json");
    for split in ["train", "val", "test"] {
        let ns: Vec<f64> = problems
            .as_object()
            .expect("object")
            .values()
            .filter(|p| p["split"] == split)
            .map(|p| p["choices"].as_array().expect("choices").len() as f64)
            .collect();
        let chance = ns.iter().map(|n| 1.0 / n).sum::<f64>() / ns.len() as f64;
        let recorded = stats["splits"][split]["chance_accuracy"]["acc_average"]
            .as_f64()
            .expect("acc_average");
        assert!(
            (chance - recorded).abs() < 1e-6,
            "{split}: {chance} vs {recorded}"
        );
        assert!((0.3..0.45).contains(&chance), "{split}: chance {chance}");
    }
}
