//! Tokenizer against tokenizer_cases.json (SentencePiece's own outputs).

use lavin_data::Tokenizer;
use serde_json::Value;

const CASE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/parity/tiny-a");

fn cases() -> Value {
    let text = std::fs::read_to_string(format!("{CASE}/tokenizer_cases.json")).expect("fixture");
    serde_json::from_str(&text).expect("json")
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("ids")
        .iter()
        .map(|x| x.as_u64().expect("id") as u32)
        .collect()
}

fn check(tok: &Tokenizer, name: &str, decode_too: bool) {
    let c = cases();
    let sp = &c["special"];
    assert_eq!(
        tok.n_words() as u64,
        sp["n_words"].as_u64().unwrap(),
        "{name}"
    );
    assert_eq!(tok.bos_id() as u64, sp["bos_id"].as_u64().unwrap());
    assert_eq!(tok.eos_id() as u64, sp["eos_id"].as_u64().unwrap());
    assert_eq!(tok.unk_id() as u64, sp["unk_id"].as_u64().unwrap());
    let mut n = 0;
    for case in c["encode"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        assert_eq!(
            tok.encode(text, false, false).unwrap(),
            ids(&case["ids"]),
            "{name} encode {text:?}"
        );
        assert_eq!(
            tok.encode(text, true, true).unwrap(),
            ids(&case["ids_bos_eos"]),
            "{name} {text:?}"
        );
        for (id, p) in ids(&case["ids"])
            .iter()
            .zip(case["pieces"].as_array().unwrap())
        {
            assert_eq!(tok.id_to_piece(*id), p.as_str());
        }
        assert_eq!(
            tok.decode(&ids(&case["ids"])),
            case["decoded"].as_str().unwrap(),
            "{name} decode {text:?}"
        );
        n += 1;
    }
    if decode_too {
        for case in c["decode"].as_array().unwrap() {
            assert_eq!(
                tok.decode(&ids(&case["ids"])),
                case["decoded"].as_str().unwrap(),
                "{name} {case}"
            );
            n += 1;
        }
    }
    assert!(n > 40);
}

#[test]
fn sentencepiece_model_matches_all_cases() {
    let tok = Tokenizer::from_file(format!("{CASE}/tokenizer.model")).unwrap();
    assert_eq!(tok.pad_id(), None);
    check(&tok, "tokenizer.model", true);
}

#[test]
fn hf_tokenizer_json_matches_all_cases() {
    let tok = Tokenizer::from_file(format!("{CASE}/hf-llama/tokenizer.json")).unwrap();
    check(&tok, "tokenizer.json", true);
}

#[test]
fn missing_and_garbage_files_name_the_path() {
    let e = Tokenizer::from_file("/nonexistent/tokenizer.model")
        .unwrap_err()
        .to_string();
    assert!(e.contains("/nonexistent/tokenizer.model"), "{e}");
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("bad.model");
    std::fs::write(&p, b"not a protobuf at all").unwrap();
    let e = Tokenizer::from_file(&p).unwrap_err().to_string();
    assert!(e.contains("bad.model"), "{e}");
    let p = dir.path().join("bad.json");
    std::fs::write(&p, b"{").unwrap();
    let e = Tokenizer::from_file(&p).unwrap_err().to_string();
    assert!(e.contains("bad.json"), "{e}");
}
