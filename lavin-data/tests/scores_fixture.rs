//! Scoring against scores.json.

mod common;

use std::collections::BTreeMap;

use common::json;
use lavin_data::score::{extract_answer, get_scores, pred_idx, PyRandom, FAILED};
use lavin_data::Problem;

#[test]
fn scores_table_matches() {
    let s = json("scores.json");
    let problems: BTreeMap<String, Problem> =
        serde_json::from_value(s["problems"].clone()).unwrap();
    let preds: BTreeMap<String, usize> = serde_json::from_value(s["predictions"].clone()).unwrap();
    let got = get_scores(&problems, &preds).unwrap();
    assert_eq!(serde_json::to_value(&got).unwrap(), s["scores"]);
    let mut fewer = preds.clone();
    let first = fewer.keys().next().unwrap().clone();
    fewer.remove(&first);
    assert!(get_scores(&problems, &fewer)
        .unwrap_err()
        .to_string()
        .contains(&first));
}

#[test]
fn answer_extraction_and_seeded_fallback_match() {
    let s = json("scores.json");
    let mut rng = PyRandom::new(s["random_seed"].as_u64().unwrap());
    for a in s["answers"].as_array().unwrap() {
        let text = a["text"].as_str().unwrap();
        let pred = extract_answer(text);
        let shown = pred.map(String::from).unwrap_or_else(|| FAILED.to_owned());
        assert_eq!(shown, a["pred"].as_str().unwrap(), "{text:?}");
        let idx = pred_idx(pred, a["n_choices"].as_u64().unwrap() as usize, &mut rng);
        // Exact even for the random fallback: PyRandom reproduces random.seed(1234).
        assert_eq!(idx as u64, a["pred_idx"].as_u64().unwrap(), "{text:?}");
    }
}
