//! Prompt builder and training tokenisation against prompts.json, meta.json, inputs.safetensors.

mod common;

use common::{json, safetensors, CASE};
use lavin_data::{
    build_prompt, create_one_example, tokenize_example, Problem, PromptFormat, Tokenizer,
};

fn problem(v: &serde_json::Value) -> Problem {
    serde_json::from_value(v.clone()).expect("problem")
}

#[test]
fn all_prompt_cases_match() {
    let p = json("prompts.json");
    let formats: Vec<&str> = p["formats"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert_eq!(formats, lavin_data::prompt::PROMPT_FORMATS);
    let cases = p["cases"].as_array().unwrap();
    assert_eq!(cases.len(), 184);
    for c in cases {
        let prob = problem(&p["problems"][c["problem"].as_str().unwrap()]);
        let f: PromptFormat = c["format"].as_str().unwrap().parse().unwrap();
        let cap = c["use_caption"].as_bool().unwrap();
        let (q, a) = build_prompt(&prob, f, cap).unwrap();
        let ctx = format!("{} {f} caption={cap}", c["problem"]);
        assert_eq!(q, c["question"].as_str().unwrap(), "{ctx}");
        assert_eq!(a, c["answer"].as_str().unwrap(), "{ctx}");
        assert_eq!(
            format!("{q}{a}"),
            c["train_text"].as_str().unwrap(),
            "{ctx}"
        );
        assert_eq!(q, c["test_prompt"].as_str().unwrap(), "{ctx}");
        assert_eq!(
            create_one_example(&prob, f, cap, false).unwrap(),
            c["one_example_train"].as_str().unwrap(),
            "{ctx}"
        );
        assert_eq!(
            create_one_example(&prob, f, cap, true).unwrap(),
            c["one_example_test"].as_str().unwrap(),
            "{ctx}"
        );
    }
}

#[test]
fn training_batch_tokens_and_labels_match() {
    let meta = json("meta.json");
    let s = meta["config"]["max_seq_len"].as_u64().unwrap() as usize;
    let fmt: PromptFormat = meta["config"]["prompt_format"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let cap = meta["config"]["use_caption"].as_bool().unwrap();
    let tok = Tokenizer::from_file(format!("{CASE}/tokenizer.model")).unwrap();
    let inputs = safetensors("inputs.safetensors");
    let (tokens, labels) = (inputs["tokens"].i64s(), inputs["labels"].i64s());
    assert_eq!(inputs["tokens"].shape, vec![2, s]);
    for (b, bp) in meta["batch_prompts"].as_array().unwrap().iter().enumerate() {
        let prob = problem(&meta["batch_problems"][bp["problem"].as_str().unwrap()]);
        let (q, a) = build_prompt(&prob, fmt, cap).unwrap();
        assert_eq!(q, bp["question"].as_str().unwrap());
        assert_eq!(a, bp["answer"].as_str().unwrap());
        let ex = tokenize_example(&tok, &q, &a, s).unwrap();
        let want_t: Vec<u32> = tokens[b * s..(b + 1) * s]
            .iter()
            .map(|&x| x as u32)
            .collect();
        let want_l: Vec<u32> = labels[b * s..(b + 1) * s]
            .iter()
            .map(|&x| x as u32)
            .collect();
        assert_eq!(ex.tokens, want_t, "item {b}");
        assert_eq!(ex.labels, want_l, "item {b}");
    }
    let pi: Vec<u32> = inputs["prefix_img"]
        .i64s()
        .iter()
        .map(|&x| x as u32)
        .collect();
    let pn: Vec<u32> = inputs["prefix_nonimg"]
        .i64s()
        .iter()
        .map(|&x| x as u32)
        .collect();
    assert_eq!(tok.encode("Image: ", false, false).unwrap(), pi);
    assert_eq!(tok.encode("Image: N/A", false, false).unwrap(), pn);
}

#[test]
fn generation_prompts_match() {
    let g = json("generation.json");
    let tok = Tokenizer::from_file(format!("{CASE}/tokenizer.model")).unwrap();
    let meta = json("meta.json");
    let n_feats = meta["dims"]["n_feats"].as_u64().unwrap_or(2) as usize;
    let prompts = g["prompts"].as_array().unwrap();
    for (i, p) in prompts.iter().enumerate() {
        let p = p.as_str().unwrap();
        let has_image = meta["config"]["generation"][i][1].is_string();
        let mut ids = if has_image {
            let mut v = tok.encode("Image: ", true, false).unwrap();
            v.extend(std::iter::repeat_n(0, n_feats));
            v
        } else {
            tok.encode("Image: N/A", true, false).unwrap()
        };
        ids.extend(tok.encode(p, false, false).unwrap());
        let want: Vec<u32> = g["prompt_tokens"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(ids, want, "prompt {i}");
    }
    // Decoded outputs: the buffer rows cut at EOS, decoded with SentencePiece's rule.
    for (i, d) in g["decoded"].as_array().unwrap().iter().enumerate() {
        let row: Vec<u32> = g["tokens_final"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap() as u32)
            .collect();
        let plen = g["prompt_tokens"][i].as_array().unwrap().len();
        let mut row = row[..row.len().min(plen + 8)].to_vec();
        if let Some(e) = row.iter().position(|&t| t == tok.eos_id()) {
            row.truncate(e);
        }
        assert_eq!(tok.decode(&row), d.as_str().unwrap(), "decoded {i}");
    }
}
