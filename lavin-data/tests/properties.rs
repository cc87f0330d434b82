//! Property tests: no panics on arbitrary input, and encode/decode round trips.

mod common;

use std::path::Path;
use std::sync::OnceLock;

use common::CASE;
use lavin_data::{preprocess_bytes, InstructData, LoadOptions, MissingImage, ScienceQa, Tokenizer};
use proptest::prelude::*;

fn tok() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_file(format!("{CASE}/tokenizer.model")).unwrap())
}

fn hf() -> &'static Tokenizer {
    static T: OnceLock<Tokenizer> = OnceLock::new();
    T.get_or_init(|| Tokenizer::from_file(format!("{CASE}/hf-llama/tokenizer.json")).unwrap())
}

const VALID_PROBLEMS: &str = r#"{"1": {"question": "Q?", "choices": ["a", "b"], "answer": 1,
 "hint": "", "image": null, "grade": "grade1", "subject": "natural science",
 "lecture": "", "solution": "", "split": "train"}}"#;
const VALID_SPLITS: &str = r#"{"train": ["1"]}"#;
const VALID_INSTRUCT: &str = r#"{"all": [{"qid": "1", "instruction": "Say hi.", "answer": "hi",
 "image": null, "image_source": "sqa"}]}"#;

fn flip(base: &str, edits: &[(usize, u8)]) -> Vec<u8> {
    let mut b = base.as_bytes().to_vec();
    for &(i, v) in edits {
        let n = b.len();
        b[i % n] = v;
    }
    b
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::write(dir.join(name), bytes).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn round_trip_without_meta_space(s in "\\PC*") {
        prop_assume!(!s.contains('\u{2581}'));
        let ids = tok().encode(&s, false, false).unwrap();
        prop_assert_eq!(tok().decode(&ids), s.clone());
        // tokenizer.json encodes identically.
        prop_assert_eq!(hf().encode(&s, true, true).unwrap(), tok().encode(&s, true, true).unwrap());
    }

    #[test]
    fn round_trip_any_chars(s in any::<String>()) {
        prop_assume!(!s.contains('\u{2581}'));
        let ids = tok().encode(&s, true, true).unwrap();
        prop_assert_eq!(tok().decode(&ids), s);
    }

    #[test]
    fn decode_never_panics(ids in prop::collection::vec(any::<u32>(), 0..64),
                           small in prop::collection::vec(0u32..600, 0..64)) {
        let _ = tok().decode(&ids);
        let _ = tok().decode(&small);
        let _ = hf().decode(&small);
    }

    #[test]
    fn model_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = Tokenizer::from_sentencepiece_bytes(&bytes, Path::new("fuzz.model"));
    }

    #[test]
    fn mutated_model_never_panics(edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..8)) {
        let base = std::fs::read(format!("{CASE}/tokenizer.model")).unwrap();
        let mut b = base.clone();
        for (i, v) in edits { let n = b.len(); b[i % n] = v; }
        if let Ok(t) = Tokenizer::from_sentencepiece_bytes(&b, Path::new("fuzz.model")) {
            let ids = t.encode("Hello world 🙂", true, true).unwrap();
            let _ = t.decode(&ids);
        }
    }

    #[test]
    fn image_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        prop_assert!(preprocess_bytes(&bytes, "fuzz.bin").is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn sqa_loader_never_panics(raw in prop::collection::vec(any::<u8>(), 0..128),
                               edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
                               which in 0usize..4) {
        let dir = tempfile::tempdir().unwrap();
        let (p, s): (Vec<u8>, Vec<u8>) = match which {
            0 => (raw, VALID_SPLITS.into()),
            1 => (VALID_PROBLEMS.into(), raw),
            2 => (flip(VALID_PROBLEMS, &edits), VALID_SPLITS.into()),
            _ => (VALID_PROBLEMS.into(), flip(VALID_SPLITS, &edits)),
        };
        write(dir.path(), "problems.json", &p);
        write(dir.path(), "pid_splits.json", &s);
        if let Ok(d) = ScienceQa::load(dir.path(), &LoadOptions::default()) {
            for split in d.splits.keys() {
                let f = "CQM-ALE".parse().unwrap();
                let _ = d.items(split, f, true, MissingImage::Skip);
            }
        }
    }

    #[test]
    fn instruct_loader_never_panics(raw in prop::collection::vec(any::<u8>(), 0..128),
                                    edits in prop::collection::vec((any::<usize>(), any::<u8>()), 1..4),
                                    mutate in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let bytes = if mutate { flip(VALID_INSTRUCT, &edits) } else { raw };
        write(dir.path(), "all_data.json", &bytes);
        if let Ok(d) = InstructData::load(dir.path(), "all", MissingImage::Skip) {
            for i in 0..d.items.len() {
                let _ = d.tokenize(tok(), i, 32, Default::default());
            }
        }
    }
}
