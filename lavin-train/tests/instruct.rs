//! `--do-pretrain`: training on LaVIN's instruction data (`all_data.json`, split `all`) instead
//! of ScienceQA. A small instruction set is written next to pictures of the bundled mini dataset.

use std::path::Path;

use lavin_model::bundled::data_root as default_data_root;
use lavin_train::cli::TrainArgs;
use lavin_train::report::read_metrics;
use lavin_train::run::{run, RunOptions};

/// `root/all_data.json` with `n` examples: even ones with a ScienceQA-style picture (copied from
/// the mini dataset's train split), odd ones text-only.
fn write_instruct_root(root: &Path, n: usize) {
    let mini = default_data_root();
    let pictures: Vec<String> = std::fs::read_dir(mini.join("images/train"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .take(n)
        .collect();
    let mut all = Vec::new();
    for i in 0..n {
        let with_image = i % 2 == 0;
        let qid = if with_image {
            let qid = pictures[i].clone();
            let dir = root.join("images/train").join(&qid);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(
                mini.join("images/train").join(&qid).join("image.png"),
                dir.join("image.png"),
            )
            .unwrap();
            qid
        } else {
            format!("text-{i}")
        };
        all.push(serde_json::json!({
            "qid": qid,
            "instruction": format!("Instruction: Describe item {i}.\nResponse: "),
            "answer": format!("It is item number {i}."),
            "image": if with_image { serde_json::json!("image.png") } else { serde_json::Value::Null },
            "image_source": "sqa",
        }));
    }
    std::fs::write(
        root.join("all_data.json"),
        serde_json::to_vec(&serde_json::json!({ "all": all })).unwrap(),
    )
    .unwrap();
}

fn args(out: &Path, data_root: &Path) -> TrainArgs {
    TrainArgs {
        output_dir: Some(out.to_path_buf()),
        data_root: Some(data_root.to_path_buf()),
        do_pretrain: Some(true),
        epochs: Some(1),
        warmup_epochs: Some(0.0),
        batch_size: Some(2),
        checkpoint_every: Some(0),
        keep_last: Some(0),
        ..TrainArgs::default()
    }
}

#[test]
fn do_pretrain_trains_on_instruction_data() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("data");
    write_instruct_root(&root, 6);
    let out = tmp.path().join("run");
    let s = run(&args(&out, &root), &RunOptions::default()).unwrap();
    // 6 examples, batch 2, drop_last: 3 steps; no ScienceQA val split to score.
    assert_eq!(s.steps, 3);
    assert!(s.final_loss.is_finite() && s.initial_loss.is_finite());
    assert_eq!(s.val_accuracy, None);
    assert_eq!(read_metrics(&out.join("metrics.jsonl")).unwrap().len(), 3);
    assert!(out.join("adapters.safetensors").is_file());
}

#[test]
fn do_pretrain_without_instruction_data_names_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("run");
    // The mini ScienceQA has no all_data.json.
    let e = format!(
        "{:#}",
        run(&args(&out, &default_data_root()), &RunOptions::default()).unwrap_err()
    );
    assert!(e.contains("all_data.json"), "{e}");
    assert!(!out.exists(), "output written before the check");
}
