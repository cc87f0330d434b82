//! Tokenizer throughput: `cargo bench -p lavin-data --bench tokenizer`.
//! Uses the fixture tokenizer, or `LAVIN_TOKENIZER=path/to/tokenizer.model` (e.g. LLaMA's).
//! Text: the fixture's prompt strings repeated to ~4 MB, encoded one prompt at a time.

use std::time::Instant;

use lavin_data::Tokenizer;

fn main() {
    let case = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/parity/tiny-a");
    let path =
        std::env::var("LAVIN_TOKENIZER").unwrap_or_else(|_| format!("{case}/tokenizer.model"));
    let json_path = format!("{case}/hf-llama/tokenizer.json");
    let prompts: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{case}/prompts.json")).expect("prompts.json"),
    )
    .expect("json");
    let base: Vec<String> = prompts["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| c["train_text"].as_str().unwrap_or_default().to_owned())
        .collect();
    let target = 4 << 20;
    let mut texts = Vec::new();
    let mut bytes = 0;
    while bytes < target {
        for t in &base {
            bytes += t.len();
            texts.push(t.clone());
        }
    }
    let mb = bytes as f64 / (1 << 20) as f64;
    let mut tokenizers = vec![(
        path.clone(),
        Tokenizer::from_file(&path).expect("tokenizer"),
    )];
    if std::env::var("LAVIN_TOKENIZER").is_err() {
        tokenizers.push((
            json_path.clone(),
            Tokenizer::from_file(&json_path).expect("tokenizer.json"),
        ));
    }
    for (name, tok) in &tokenizers {
        let t0 = Instant::now();
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| tok.encode(t, true, true).expect("encode"))
            .collect();
        let enc = t0.elapsed().as_secs_f64();
        let n: usize = ids.iter().map(Vec::len).sum();
        let t0 = Instant::now();
        let out: usize = ids.iter().map(|i| tok.decode(i).len()).sum();
        let dec = t0.elapsed().as_secs_f64();
        println!(
            "{name}: {} texts, {mb:.1} MB, {n} tokens | encode {:.2} s = {:.2} M tokens/s ({:.1} MB/s) | decode {:.2} s = {:.2} M tokens/s ({out} bytes)",
            texts.len(),
            enc,
            n as f64 / enc / 1e6,
            mb / enc,
            dec,
            n as f64 / dec / 1e6,
        );
    }
}
