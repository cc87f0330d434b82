//! The data-side files of a parity case: `tokenizer.model` + `tokenizer_cases.json`,
//! `hf-llama/tokenizer.json`, `images/preprocess.safetensors`, `prompts.json`, the training
//! batch's tokenisation (`inputs.safetensors` vs `meta.json` → `batch_prompts`) and
//! `scores.json`. All exact except the normalised images (the case's tolerance table, docs/parity.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use lavin_data::image::{decode_rgb, normalize, resize_to, ImageOptions, IMAGE_SIZE};
use lavin_data::score::{extract_answer, get_scores, pred_idx, PyRandom, FAILED};
use lavin_data::tokenizer::{IMAGE_PREFIX, NO_IMAGE_PREFIX};
use lavin_data::{build_prompt, create_one_example, tokenize_example, Problem, PromptFormat};
use lavin_data::{preprocess_image, Tokenizer};
use lavin_model::weights::source::SafetensorsSource;
use lavin_model::weights::TensorSource;
use lavin_parity::{Case, Check};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::Outcome;

/// A JSON value inside a case file, remembering where it came from so that a missing or
/// malformed field is an error naming the file and the field (`encode[3].ids`).
#[derive(Clone)]
pub(super) struct J<'a> {
    pub v: &'a Value,
    file: &'a Path,
    at: String,
}

/// A parsed JSON file of a case.
pub(super) struct JsonFile {
    pub path: PathBuf,
    pub value: Value,
}

impl JsonFile {
    pub fn open(path: PathBuf) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let value = serde_json::from_str(&text)
            .with_context(|| format!("{}: invalid JSON", path.display()))?;
        Ok(Self { path, value })
    }

    pub fn root(&self) -> J<'_> {
        J::new(&self.value, &self.path)
    }
}

impl<'a> J<'a> {
    pub fn new(v: &'a Value, file: &'a Path) -> Self {
        Self {
            v,
            file,
            at: String::new(),
        }
    }

    fn path_of(&self, key: &str) -> String {
        if self.at.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.at)
        }
    }

    /// Field `key` (a dotted path), or an error naming the file and field.
    pub fn get(&self, key: &str) -> anyhow::Result<J<'a>> {
        self.opt(key).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: missing field `{}`",
                self.file.display(),
                self.path_of(key)
            )
        })
    }

    /// Field `key` (a dotted path) if present and not null.
    pub fn opt(&self, key: &str) -> Option<J<'a>> {
        let mut v = self.v;
        for k in key.split('.') {
            v = v.get(k)?;
        }
        (!v.is_null()).then(|| J {
            v,
            file: self.file,
            at: self.path_of(key),
        })
    }

    /// Field `key` parsed as `T`.
    pub fn req<T: DeserializeOwned>(&self, key: &str) -> anyhow::Result<T> {
        self.get(key)?.parse()
    }

    /// This value parsed as `T`.
    pub fn parse<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        T::deserialize(self.v).with_context(|| {
            format!(
                "{}: field `{}` has the wrong type",
                self.file.display(),
                self.at
            )
        })
    }

    /// Field `key` as an array.
    pub fn items(&self, key: &str) -> anyhow::Result<Vec<J<'a>>> {
        let a = self.get(key)?;
        let arr = a.v.as_array().ok_or_else(|| {
            anyhow::anyhow!("{}: field `{}` is not an array", self.file.display(), a.at)
        })?;
        Ok(arr
            .iter()
            .enumerate()
            .map(|(i, v)| J {
                v,
                file: self.file,
                at: format!("{}[{i}]", a.at),
            })
            .collect())
    }
}

/// The `SKIP` outcome for the first of `files` (relative to the case) that is absent.
pub(super) fn absent(case: &Case, files: &[&str]) -> Option<Outcome> {
    files
        .iter()
        .find(|f| !case.dir.join(f).exists())
        .map(|f| Outcome::Skip(format!("{f} absent")))
}

fn count_ne<T: PartialEq>(got: &[T], want: &[T]) -> usize {
    got.iter().zip(want).filter(|(a, b)| a != b).count() + got.len().abs_diff(want.len())
}

// ---------------------------------------------------------------------------------------------
// Tokenizer

/// `tokenizer.model` against every encode and decode case of `tokenizer_cases.json`.
pub fn tokenizer(case: &Case) -> anyhow::Result<Outcome> {
    if let Some(skip) = absent(case, &["tokenizer.model", "tokenizer_cases.json"]) {
        return Ok(skip);
    }
    let tok = Tokenizer::from_file(case.dir.join("tokenizer.model"))?;
    let cases = JsonFile::open(case.dir.join("tokenizer_cases.json"))?;
    let c = cases.root();
    let mut rows = vec![special_ids(&tok, &c)?];
    rows.extend(tokenizer_cases(&tok, "tokenizer.model", &c, true)?);
    Ok(Outcome::Rows(rows))
}

/// `hf-llama/tokenizer.json` (loaded by the same `Tokenizer`) against the same cases.
pub fn hf_tokenizer(case: &Case) -> anyhow::Result<Outcome> {
    if let Some(skip) = absent(case, &["hf-llama/tokenizer.json", "tokenizer_cases.json"]) {
        return Ok(skip);
    }
    let tok = Tokenizer::from_file(case.dir.join("hf-llama/tokenizer.json"))?;
    let cases = JsonFile::open(case.dir.join("tokenizer_cases.json"))?;
    // Decoding uses SentencePiece's rule (the reference), not the `tokenizers` crate's.
    tokenizer_cases(&tok, "hf-llama/tokenizer.json", &cases.root(), true).map(Outcome::Rows)
}

fn special_ids(tok: &Tokenizer, c: &J) -> anyhow::Result<Check> {
    let sp = c.get("special")?;
    let pad: i64 = sp.req("pad_id")?;
    let mut bad = [
        (tok.n_words() as u64, sp.req::<u64>("n_words")?),
        (tok.bos_id() as u64, sp.req("bos_id")?),
        (tok.eos_id() as u64, sp.req("eos_id")?),
        (tok.unk_id() as u64, sp.req("unk_id")?),
    ]
    .iter()
    .filter(|(a, b)| a != b)
    .count();
    bad += (tok.pad_id().map_or(-1, |p| p as i64) != pad) as usize;
    if let Some(bp) = sp.opt("byte_pieces") {
        let (first, last): (u32, u32) = (bp.req("first_id")?, bp.req("last_id")?);
        bad += (tok.id_to_piece(first) != Some("<0x00>")) as usize;
        bad += (tok.id_to_piece(last) != Some("<0xFF>")) as usize;
    }
    Ok(Check::exact("tokenizer.model special ids", bad))
}

/// Rows for the `encode` cases (ids, ids with BOS/EOS, pieces, decoded) and, with
/// `decode_cases`, the `decode` cases.
fn tokenizer_cases(
    tok: &Tokenizer,
    label: &str,
    c: &J,
    decode_cases: bool,
) -> anyhow::Result<Vec<Check>> {
    let encode = c.items("encode")?;
    let (mut ids_bad, mut bos_bad, mut piece_bad, mut dec_bad) = (0, 0, 0, 0);
    for e in encode.iter() {
        let text: String = e.req("text")?;
        let ids: Vec<u32> = e.req("ids")?;
        let ids_be: Vec<u32> = e.req("ids_bos_eos")?;
        let decoded: String = e.req("decoded")?;
        let got = tok.encode(&text, false, false).unwrap_or_default();
        ids_bad += (got != ids) as usize;
        bos_bad += (tok.encode(&text, true, true).ok() != Some(ids_be)) as usize;
        if let Some(p) = e.opt("pieces") {
            let pieces: Vec<String> = p.parse()?;
            let got_pieces: Vec<Option<&str>> = got.iter().map(|&id| tok.id_to_piece(id)).collect();
            let want: Vec<Option<&str>> = pieces.iter().map(|s| Some(s.as_str())).collect();
            piece_bad += (got_pieces != want) as usize;
        }
        dec_bad += (tok.decode(&ids) != decoded) as usize;
    }
    let n = encode.len();
    let mut rows = vec![
        Check::exact(format!("{label} encode ids ({n} cases)"), ids_bad),
        Check::exact(format!("{label} encode ids_bos_eos ({n} cases)"), bos_bad),
        Check::exact(format!("{label} encode pieces ({n} cases)"), piece_bad),
        Check::exact(format!("{label} decode(encode ids) ({n} cases)"), dec_bad),
    ];
    if decode_cases {
        let decode = c.items("decode")?;
        let mut bad = 0;
        for d in decode.iter() {
            let ids: Vec<u32> = d.req("ids")?;
            let want: String = d.req("decoded")?;
            bad += (tok.decode(&ids) != want) as usize;
        }
        rows.push(Check::exact(
            format!("{label} decode ({} cases)", decode.len()),
            bad,
        ));
    }
    Ok(rows)
}

// ---------------------------------------------------------------------------------------------
// Images

/// `images/preprocess.safetensors`: `imageK` (normalised, ≤ 0.02, or ≤ 1e-6 when the image is
/// already the target size) and `resized.imageK` (u8, exact) from `images/imageK.png`.
pub fn images(case: &Case) -> anyhow::Result<Outcome> {
    if let Some(skip) = absent(case, &["images/preprocess.safetensors"]) {
        return Ok(skip);
    }
    let st_path = case.dir.join("images/preprocess.safetensors");
    let st = SafetensorsSource::open(&st_path)?;
    let all_keys = st.keys();
    let mut keys: Vec<(u64, String)> = all_keys
        .iter()
        .filter_map(|k| {
            let n = k.strip_prefix("image")?.parse().ok()?;
            Some((n, k.clone()))
        })
        .collect();
    keys.sort();
    if keys.is_empty() {
        anyhow::bail!("{}: no `imageK` tensors", st_path.display());
    }
    let mut rows = Vec::new();
    for (_, key) in keys {
        let png = case.dir.join(format!("images/{key}.png"));
        if !png.exists() {
            anyhow::bail!(
                "{}: `{key}` has no image file {}",
                st_path.display(),
                png.display()
            );
        }
        let want = st.require(&key)?;
        let [c, h, w] = want.shape[..] else {
            anyhow::bail!(
                "{}: `{key}` has shape {:?}, expected [3, H, W]",
                st_path.display(),
                want.shape
            );
        };
        anyhow::ensure!(c == 3, "{}: `{key}` has {c} channels", st_path.display());
        let bytes = std::fs::read(&png).with_context(|| format!("reading {}", png.display()))?;
        let rgb = decode_rgb(&bytes, &png, ImageOptions::default())?;
        let resized = resize_to(&rgb, w, h);
        if all_keys.contains(&format!("resized.{key}")) {
            let (shape, want_u8) = st.require_i64(&format!("resized.{key}"))?;
            let bad = if shape != [h, w, 3] {
                want_u8.len().max(1)
            } else {
                count_ne(
                    &resized.data.iter().map(|&b| b as i64).collect::<Vec<_>>(),
                    &want_u8,
                )
            };
            rows.push(Check::exact(
                format!("images/{key}.png resized.{key} (u8 bytes)"),
                bad,
            ));
        }
        // The public pipeline where it applies (224×224), the same steps otherwise.
        let got = if (h, w) == (IMAGE_SIZE, IMAGE_SIZE) {
            preprocess_image(&png)?
        } else {
            normalize(&resized)
        };
        let unresized = (rgb.height, rgb.width) == (h, w);
        let bound = if unresized { 1e-6 } else { 0.02 };
        rows.push(Check::close(
            format!(
                "images/{key}.png {key} ({}x{}{})",
                rgb.width,
                rgb.height,
                if unresized { ", no resize" } else { "" }
            ),
            &got,
            &want.data,
            bound,
            false,
        ));
    }
    Ok(Outcome::Rows(rows))
}

// ---------------------------------------------------------------------------------------------
// Prompts and the training batch

fn problems(p: &J, key: &str) -> anyhow::Result<BTreeMap<String, Problem>> {
    p.req(key)
}

/// `prompts.json`: every (problem, format, use_caption) case, field by field.
pub fn prompts(case: &Case) -> anyhow::Result<Outcome> {
    if let Some(skip) = absent(case, &["prompts.json"]) {
        return Ok(skip);
    }
    let file = JsonFile::open(case.dir.join("prompts.json"))?;
    let p = file.root();
    let probs = problems(&p, "problems")?;
    let formats: Vec<String> = p.req("formats")?;
    let unknown = formats
        .iter()
        .filter(|f| f.parse::<PromptFormat>().is_err())
        .count();
    let mut rows = vec![Check::exact(
        format!("prompts.json formats ({} parse)", formats.len()),
        unknown,
    )];
    const FIELDS: [&str; 6] = [
        "question",
        "answer",
        "train_text",
        "test_prompt",
        "one_example_train",
        "one_example_test",
    ];
    let cases = p.items("cases")?;
    let mut bad = [0usize; 6];
    for c in cases.iter() {
        let pid: String = c.req("problem")?;
        let prob = probs.get(&pid).ok_or_else(|| {
            anyhow::anyhow!("{}: missing field `problems.{pid}`", file.path.display())
        })?;
        let fmt: String = c.req("format")?;
        let cap: bool = c.req("use_caption")?;
        let mut want = Vec::new();
        for f in FIELDS {
            want.push(c.req::<String>(f)?);
        }
        let got: Option<[String; 6]> = (|| {
            let f: PromptFormat = fmt.parse().ok()?;
            let (q, a) = build_prompt(prob, f, cap).ok()?;
            Some([
                q.clone(),
                a.clone(),
                format!("{q}{a}"),
                q,
                create_one_example(prob, f, cap, false).ok()?,
                create_one_example(prob, f, cap, true).ok()?,
            ])
        })();
        for k in 0..6 {
            bad[k] += got.as_ref().is_none_or(|g| g[k] != want[k]) as usize;
        }
    }
    for (f, b) in FIELDS.iter().zip(bad) {
        rows.push(Check::exact(
            format!("prompts.json {f} ({} cases)", cases.len()),
            b,
        ));
    }
    Ok(Outcome::Rows(rows))
}

/// `inputs.safetensors` tokens, labels and prefixes against our prompt builder and dataset
/// tokenisation of `meta.json` → `batch_prompts` / `batch_problems`.
pub fn batch_tokens(case: &Case) -> anyhow::Result<Outcome> {
    if absent(case, &["tokenizer.model"]).is_some() {
        return Ok(Outcome::Skip(
            "tokenizer.model absent (needed to tokenise batch_prompts)".into(),
        ));
    }
    let meta_path = case.dir.join("meta.json");
    let meta = J::new(&case.meta, &meta_path);
    let tok = Tokenizer::from_file(case.dir.join("tokenizer.model"))?;
    let fmt_name: String = meta.req("config.prompt_format")?;
    let fmt: PromptFormat = fmt_name
        .parse()
        .with_context(|| format!("{}: config.prompt_format", meta_path.display()))?;
    let cap: bool = meta.req("config.use_caption")?;
    let probs = problems(&meta, "batch_problems")?;
    let s = case.config.max_seq_len;
    let inputs_path = case.dir.join("inputs.safetensors");
    let (tshape, tokens) = case.inputs.require_i64("tokens")?;
    let (lshape, labels) = case.inputs.require_i64("labels")?;
    let items = meta.items("batch_prompts")?;
    anyhow::ensure!(
        tshape == [items.len(), s] && lshape == tshape,
        "{}: tokens {tshape:?} / labels {lshape:?}, expected [{}, {s}] (meta.json batch_prompts, max_seq_len)",
        inputs_path.display(),
        items.len()
    );
    let (mut prompt_bad, mut tok_bad, mut lab_bad) = (0, 0, 0);
    for (b, bp) in items.iter().enumerate() {
        let pid: String = bp.req("problem")?;
        let prob = probs.get(&pid).ok_or_else(|| {
            anyhow::anyhow!(
                "{}: missing field `batch_problems.{pid}`",
                meta_path.display()
            )
        })?;
        let (q, a) = build_prompt(prob, fmt, cap)?;
        prompt_bad += (q != bp.req::<String>("question")?) as usize;
        prompt_bad += (a != bp.req::<String>("answer")?) as usize;
        let ex = tokenize_example(&tok, &q, &a, s)?;
        let row = |v: &[i64]| {
            v[b * s..(b + 1) * s]
                .iter()
                .map(|&x| x as u32)
                .collect::<Vec<_>>()
        };
        tok_bad += count_ne(&ex.tokens, &row(&tokens));
        lab_bad += count_ne(&ex.labels, &row(&labels));
    }
    let prefix = |key: &str, text: &str| -> anyhow::Result<Check> {
        let (_, want) = case.inputs.require_i64(key)?;
        let want: Vec<u32> = want.into_iter().map(|x| x as u32).collect();
        let got = tok.encode(text, false, false)?;
        Ok(Check::exact(
            format!("inputs.safetensors {key} = encode({text:?})"),
            count_ne(&got, &want),
        ))
    };
    let n = items.len();
    Ok(Outcome::Rows(vec![
        Check::exact(
            format!("meta.json batch_prompts question/answer ({fmt_name}, {n} items)"),
            prompt_bad,
        ),
        Check::exact(format!("inputs.safetensors tokens ({n}x{s})"), tok_bad),
        Check::exact(format!("inputs.safetensors labels ({n}x{s})"), lab_bad),
        prefix("prefix_img", IMAGE_PREFIX)?,
        prefix("prefix_nonimg", NO_IMAGE_PREFIX)?,
    ]))
}

// ---------------------------------------------------------------------------------------------
// Scores

/// `scores.json`: the scores table, answer extraction and the chosen indices.
pub fn scores(case: &Case) -> anyhow::Result<Outcome> {
    if let Some(skip) = absent(case, &["scores.json"]) {
        return Ok(skip);
    }
    let file = JsonFile::open(case.dir.join("scores.json"))?;
    let s = file.root();
    let probs = problems(&s, "problems")?;
    let preds: BTreeMap<String, usize> = s.req("predictions")?;
    let want: BTreeMap<String, String> = s.req("scores")?;
    let got: BTreeMap<String, String> = match get_scores(&probs, &preds) {
        Ok(sc) => serde_json::from_value(serde_json::to_value(sc)?)?,
        Err(_) => BTreeMap::new(),
    };
    let table_bad = want.iter().filter(|(k, v)| got.get(*k) != Some(*v)).count()
        + got.keys().filter(|k| !want.contains_key(*k)).count();
    let mut rows = vec![Check::exact(
        format!("scores.json scores ({} values)", want.len()),
        table_bad,
    )];

    let mut rng = PyRandom::new(
        s.opt("random_seed")
            .map(|v| v.parse())
            .transpose()?
            .unwrap_or(0),
    );
    let answers = s.items("answers")?;
    let (mut pred_bad, mut idx_bad, mut n_fixed) = (0, 0, 0);
    let (mut n_random, mut out_of_range, mut seeded_equal) = (0, 0, 0);
    for a in answers.iter() {
        let text: String = a.req("text")?;
        let n_choices: usize = a.req("n_choices")?;
        let want_pred: String = a.req("pred")?;
        let want_idx: usize = a.req("pred_idx")?;
        let random: bool = a.req("random_fallback")?;
        let pred = extract_answer(&text);
        let shown = pred.map(String::from).unwrap_or_else(|| FAILED.to_owned());
        pred_bad += (shown != want_pred) as usize;
        let idx = pred_idx(pred, n_choices, &mut rng);
        if random {
            n_random += 1;
            out_of_range += (idx >= n_choices.max(1)) as usize;
            seeded_equal += (idx == want_idx) as usize;
        } else {
            n_fixed += 1;
            idx_bad += (idx != want_idx) as usize;
        }
    }
    rows.push(Check::exact(
        format!(
            "scores.json answers: extracted letter ({} texts)",
            answers.len()
        ),
        pred_bad,
    ));
    rows.push(Check::exact(
        format!("scores.json answers: pred_idx, non-random ({n_fixed})"),
        idx_bad,
    ));
    rows.push(Check::exact(
        format!(
            "scores.json answers: pred_idx, random fallback in range ({n_random}; {seeded_equal} = seeded)"
        ),
        out_of_range,
    ));
    Ok(Outcome::Rows(rows))
}
