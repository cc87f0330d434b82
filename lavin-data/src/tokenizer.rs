//! SentencePiece-compatible tokenizer (LLaMA `tokenizer.model` or HF `tokenizer.json`).
//!
//! Encoding of a `tokenizer.model` is a native port of SentencePiece's BPE algorithm
//! (highest-score adjacent merge first, leftmost on ties, byte fallback for unknown
//! characters). A `tokenizer.json` is encoded by the `tokenizers` crate. Decoding always
//! follows SentencePiece's rule (see [`Tokenizer::decode`]), which `tokenizers` does not.

use std::collections::{BinaryHeap, HashMap};
use std::path::{Path, PathBuf};

use crate::proto;

/// The whitespace meta symbol "▁" (U+2581).
pub const SPACE_SYMBOL: char = '\u{2581}';
const SPACE_STR: &str = "\u{2581}";
/// What SentencePiece prints for `<unk>` (U+2047 with a space on each side).
pub const UNK_SURFACE: &str = " \u{2047} ";

/// Errors from loading or using a tokenizer. Every load error names the file.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// The file could not be read.
    #[error("{path}: cannot read tokenizer: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not a valid tokenizer of the expected format.
    #[error("{path}: invalid tokenizer: {msg}")]
    Format { path: PathBuf, msg: String },
    /// The file is valid but uses a feature this port does not implement.
    #[error("{path}: unsupported tokenizer: {msg}")]
    Unsupported { path: PathBuf, msg: String },
    /// The `tokenizers` crate failed while encoding.
    #[error("tokenizer.json encode failed: {0}")]
    Encode(String),
}

/// Kind of a vocabulary entry, as in SentencePiece's `ModelProto.SentencePiece.Type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceKind {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Unused,
    Byte,
}

impl PieceKind {
    fn from_proto(v: u64) -> Option<Self> {
        Some(match v {
            1 => Self::Normal,
            2 => Self::Unknown,
            3 => Self::Control,
            4 => Self::UserDefined,
            5 => Self::Unused,
            6 => Self::Byte,
            _ => return None,
        })
    }
}

/// How text is encoded; decoding is shared.
enum Backend {
    /// Native SentencePiece BPE over `pieces`.
    Native,
    /// HF `tokenizers` (from a tokenizer.json); boxed because it is large.
    Hf(Box<tokenizers::Tokenizer>),
}

/// A LLaMA-style SentencePiece tokenizer (BPE, byte fallback, dummy prefix).
pub struct Tokenizer {
    pieces: Vec<String>,
    scores: Vec<f32>,
    kinds: Vec<PieceKind>,
    /// Normal, user-defined and unused pieces: the ones BPE may produce by merging.
    mergeable: HashMap<String, u32>,
    /// User-defined pieces, longest first: matched whole before BPE (never merged).
    user_defined: Vec<String>,
    byte_ids: [Option<u32>; 256],
    unk: u32,
    bos: u32,
    eos: u32,
    pad: Option<u32>,
    byte_fallback: bool,
    add_dummy_prefix: bool,
    remove_extra_whitespaces: bool,
    escape_whitespaces: bool,
    backend: Backend,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("n_words", &self.pieces.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("unk", &self.unk)
            .field("hf", &matches!(self.backend, Backend::Hf(_)))
            .finish()
    }
}

/// The text the original puts before an image's feature rows.
pub const IMAGE_PREFIX: &str = "Image: ";
/// The text the original puts where a text-only item would have its image.
pub const NO_IMAGE_PREFIX: &str = "Image: N/A";

impl Tokenizer {
    /// `encode(IMAGE_PREFIX)` and `encode(NO_IMAGE_PREFIX)` without BOS/EOS: the model's
    /// `prefix_img` / `prefix_nonimg`.
    pub fn image_prefixes(&self) -> Result<(Vec<u32>, Vec<u32>), TokenizerError> {
        Ok((
            self.encode(IMAGE_PREFIX, false, false)?,
            self.encode(NO_IMAGE_PREFIX, false, false)?,
        ))
    }

    /// Loads `tokenizer.model` (SentencePiece protobuf) or `tokenizer.json` (HF format),
    /// chosen by the `.json` extension.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            Self::from_hf_json_file(path)
        } else {
            Self::from_sentencepiece_file(path)
        }
    }

    /// Loads a SentencePiece `tokenizer.model`.
    pub fn from_sentencepiece_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|source| TokenizerError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_sentencepiece_bytes(&bytes, path)
    }

    /// Parses SentencePiece protobuf bytes; `origin` is only used in error messages.
    pub fn from_sentencepiece_bytes(bytes: &[u8], origin: &Path) -> Result<Self, TokenizerError> {
        let fmt = |msg: String| TokenizerError::Format {
            path: origin.to_owned(),
            msg,
        };
        let unsupported = |msg: String| TokenizerError::Unsupported {
            path: origin.to_owned(),
            msg,
        };
        let model = proto::parse_model(bytes).map_err(|e| fmt(e.to_string()))?;
        if model.model_type != 2 {
            return Err(unsupported(format!(
                "model_type {} (only BPE = 2 is implemented; LLaMA is BPE)",
                model.model_type
            )));
        }
        if !model.precompiled_charsmap.is_empty() {
            return Err(unsupported(format!(
                "normalizer '{}' with a precompiled charsmap (only identity normalisation, as in LLaMA)",
                model.normalizer_name
            )));
        }
        if model.treat_whitespace_as_suffix {
            return Err(unsupported("treat_whitespace_as_suffix".into()));
        }
        let mut pieces = Vec::with_capacity(model.pieces.len());
        let mut scores = Vec::with_capacity(model.pieces.len());
        let mut kinds = Vec::with_capacity(model.pieces.len());
        for (i, p) in model.pieces.into_iter().enumerate() {
            let kind = PieceKind::from_proto(p.kind)
                .ok_or_else(|| fmt(format!("piece {i} has unknown type {}", p.kind)))?;
            pieces.push(p.piece);
            scores.push(p.score);
            kinds.push(kind);
        }
        let n = pieces.len();
        let id = |v: i32, what: &str| -> Result<Option<u32>, TokenizerError> {
            if v < 0 {
                Ok(None)
            } else if (v as usize) < n {
                Ok(Some(v as u32))
            } else {
                Err(fmt(format!("{what} id {v} outside the vocabulary of {n}")))
            }
        };
        let unk = id(model.unk_id, "unk")?.ok_or_else(|| fmt("no unk id".into()))?;
        let bos = id(model.bos_id, "bos")?.ok_or_else(|| fmt("no bos id".into()))?;
        let eos = id(model.eos_id, "eos")?.ok_or_else(|| fmt("no eos id".into()))?;
        let pad = id(model.pad_id, "pad")?;
        Self::assemble(
            pieces,
            scores,
            kinds,
            [unk, bos, eos],
            pad,
            model.byte_fallback,
            [
                model.add_dummy_prefix,
                model.remove_extra_whitespaces,
                model.escape_whitespaces,
            ],
            Backend::Native,
            origin,
        )
    }

    /// Loads a HF `tokenizer.json` converted from a LLaMA SentencePiece model.
    /// Encoding goes through the `tokenizers` crate; decoding uses SentencePiece's rule,
    /// with piece kinds inferred (`<0xNN>` = byte, bos `<s>`, eos `</s>`, the model's unk).
    pub fn from_hf_json_file(path: impl AsRef<Path>) -> Result<Self, TokenizerError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| TokenizerError::Io {
            path: path.to_owned(),
            source,
        })?;
        let fmt = |msg: String| TokenizerError::Format {
            path: path.to_owned(),
            msg,
        };
        let hf: tokenizers::Tokenizer = text.parse().map_err(|e| fmt(format!("{e}")))?;
        // Piece table from the raw JSON: tokenizers does not expose unk_token generically.
        let json: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| fmt(e.to_string()))?;
        let unk_token = json
            .pointer("/model/unk_token")
            .and_then(|v| v.as_str())
            .unwrap_or("<unk>");
        let n = hf.get_vocab_size(true);
        let mut pieces = vec![String::new(); n];
        for (tok, id) in hf.get_vocab(true) {
            let slot = pieces
                .get_mut(id as usize)
                .ok_or_else(|| fmt(format!("token id {id} outside the vocabulary of {n}")))?;
            *slot = tok;
        }
        let find = |s: &str| pieces.iter().position(|p| p == s).map(|i| i as u32);
        let unk =
            find(unk_token).ok_or_else(|| fmt(format!("unk token {unk_token:?} not in vocab")))?;
        let bos = find("<s>").ok_or_else(|| fmt("no <s> token".into()))?;
        let eos = find("</s>").ok_or_else(|| fmt("no </s> token".into()))?;
        let special: Vec<u32> = json
            .get("added_tokens")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter(|t| t.get("special").and_then(|s| s.as_bool()) == Some(true))
                    .filter_map(|t| t.get("id").and_then(|i| i.as_u64()).map(|i| i as u32))
                    .collect()
            })
            .unwrap_or_default();
        let kinds = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let i = i as u32;
                if i == unk {
                    PieceKind::Unknown
                } else if i == bos || i == eos || special.contains(&i) {
                    PieceKind::Control
                } else if parse_byte_piece(p).is_some() {
                    PieceKind::Byte
                } else {
                    PieceKind::Normal
                }
            })
            .collect();
        let byte_fallback = json
            .pointer("/model/byte_fallback")
            .and_then(|v| v.as_bool())
            .unwrap_or(true);
        let scores = vec![0.0; n];
        Self::assemble(
            pieces,
            scores,
            kinds,
            [unk, bos, eos],
            None,
            byte_fallback,
            [true, false, true],
            Backend::Hf(Box::new(hf)),
            path,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        pieces: Vec<String>,
        scores: Vec<f32>,
        kinds: Vec<PieceKind>,
        [unk, bos, eos]: [u32; 3],
        pad: Option<u32>,
        byte_fallback: bool,
        [add_dummy_prefix, remove_extra_whitespaces, escape_whitespaces]: [bool; 3],
        backend: Backend,
        origin: &Path,
    ) -> Result<Self, TokenizerError> {
        let mut mergeable = HashMap::with_capacity(pieces.len());
        let mut user_defined = Vec::new();
        let mut byte_ids = [None; 256];
        for (i, (p, k)) in pieces.iter().zip(&kinds).enumerate() {
            match k {
                PieceKind::Normal | PieceKind::UserDefined | PieceKind::Unused => {
                    // SentencePiece keeps the first id of a duplicated piece.
                    mergeable.entry(p.clone()).or_insert(i as u32);
                    if *k == PieceKind::UserDefined && !p.is_empty() {
                        user_defined.push(p.clone());
                    }
                }
                PieceKind::Byte => {
                    let b = parse_byte_piece(p).ok_or_else(|| TokenizerError::Format {
                        path: origin.to_owned(),
                        msg: format!("byte piece {i} is {p:?}, not <0xNN>"),
                    })?;
                    byte_ids[b as usize] = Some(i as u32);
                }
                PieceKind::Unknown | PieceKind::Control => {}
            }
        }
        user_defined.sort_by_key(|s| std::cmp::Reverse(s.len()));
        if byte_fallback
            && byte_ids.iter().any(|b| b.is_none())
            && matches!(backend, Backend::Native)
        {
            return Err(TokenizerError::Format {
                path: origin.to_owned(),
                msg: "byte_fallback set but not all 256 <0xNN> pieces exist".into(),
            });
        }
        Ok(Self {
            pieces,
            scores,
            kinds,
            mergeable,
            user_defined,
            byte_ids,
            unk,
            bos,
            eos,
            pad,
            byte_fallback,
            add_dummy_prefix,
            remove_extra_whitespaces,
            escape_whitespaces,
            backend,
        })
    }

    /// Vocabulary size (LLaMA's `vocab_size`).
    pub fn n_words(&self) -> usize {
        self.pieces.len()
    }
    /// Beginning-of-sentence id (1 for LLaMA).
    pub fn bos_id(&self) -> u32 {
        self.bos
    }
    /// End-of-sentence id (2 for LLaMA).
    pub fn eos_id(&self) -> u32 {
        self.eos
    }
    /// Unknown-piece id (0 for LLaMA).
    pub fn unk_id(&self) -> u32 {
        self.unk
    }
    /// Padding id from the model, `None` when it has none (LLaMA: -1). LaVIN pads with 0.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }
    /// The piece string of an id, if in range.
    pub fn id_to_piece(&self, id: u32) -> Option<&str> {
        self.pieces.get(id as usize).map(String::as_str)
    }
    /// The kind of an id, if in range.
    pub fn piece_kind(&self, id: u32) -> Option<PieceKind> {
        self.kinds.get(id as usize).copied()
    }
    /// The score of an id (0 for tokenizer.json models), if in range.
    pub fn piece_score(&self, id: u32) -> Option<f32> {
        self.scores.get(id as usize).copied()
    }

    /// Encodes `text` like SentencePiece's `encode`, optionally with BOS first / EOS last.
    pub fn encode(&self, text: &str, bos: bool, eos: bool) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if bos {
            out.push(self.bos);
        }
        match &self.backend {
            Backend::Native => self.encode_native(text, &mut out),
            Backend::Hf(hf) => {
                if !text.is_empty() {
                    let enc = hf
                        .encode(text, false)
                        .map_err(|e| TokenizerError::Encode(e.to_string()))?;
                    out.extend_from_slice(enc.get_ids());
                }
            }
        }
        if eos {
            out.push(self.eos);
        }
        Ok(out)
    }

    /// SentencePiece's identity normaliser: optional whitespace squeezing, dummy prefix,
    /// spaces escaped as "▁".
    fn normalize(&self, text: &str) -> String {
        let mut s = String::with_capacity(text.len() + 3);
        let body: String;
        let text = if self.remove_extra_whitespaces {
            let mut b = String::with_capacity(text.len());
            for w in text.split(' ').filter(|w| !w.is_empty()) {
                if !b.is_empty() {
                    b.push(' ');
                }
                b.push_str(w);
            }
            body = b;
            body.as_str()
        } else {
            text
        };
        if text.is_empty() {
            return s;
        }
        let space = if self.escape_whitespaces {
            SPACE_STR
        } else {
            " "
        };
        if self.add_dummy_prefix {
            s.push_str(space);
        }
        if self.escape_whitespaces {
            for c in text.chars() {
                if c == ' ' {
                    s.push(SPACE_SYMBOL);
                } else {
                    s.push(c);
                }
            }
        } else {
            s.push_str(text);
        }
        s
    }

    fn encode_native(&self, text: &str, out: &mut Vec<u32>) {
        let norm = self.normalize(text);
        if norm.is_empty() {
            return;
        }
        // Initial symbols: user-defined pieces (frozen) or single characters.
        let mut syms: Vec<Sym> = Vec::with_capacity(norm.len());
        let mut pos = 0;
        while pos < norm.len() {
            let rest = &norm[pos..];
            let (len, freeze) = match self
                .user_defined
                .iter()
                .find(|u| rest.starts_with(u.as_str()))
            {
                Some(u) => (u.len(), true),
                None => (rest.chars().next().map_or(1, char::len_utf8), false),
            };
            let i = syms.len() as i32;
            syms.push(Sym {
                start: pos as u32,
                len: len as u32,
                prev: i - 1,
                next: i + 1,
                freeze,
            });
            pos += len;
        }
        if let Some(last) = syms.last_mut() {
            last.next = -1;
        }
        let mut agenda = BinaryHeap::new();
        for i in 1..syms.len() {
            self.push_pair(&norm, &syms, i as i32 - 1, i as i32, &mut agenda);
        }
        while let Some(top) = agenda.pop() {
            let (l, r) = (top.left as usize, top.right as usize);
            // Stale entry: one side was merged away or changed since it was pushed.
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != top.size {
                continue;
            }
            syms[l].len += syms[r].len;
            syms[l].next = syms[r].next;
            if syms[r].next >= 0 {
                let n = syms[r].next as usize;
                syms[n].prev = l as i32;
            }
            syms[r].len = 0;
            self.push_pair(&norm, &syms, syms[l].prev, l as i32, &mut agenda);
            self.push_pair(&norm, &syms, l as i32, syms[l].next, &mut agenda);
        }
        let mut i = if syms.is_empty() { -1 } else { 0 };
        while i >= 0 {
            let s = &syms[i as usize];
            let piece = &norm[s.start as usize..(s.start + s.len) as usize];
            self.emit(piece, out);
            i = s.next;
        }
    }

    fn push_pair(&self, norm: &str, syms: &[Sym], l: i32, r: i32, agenda: &mut BinaryHeap<Pair>) {
        if l < 0 || r < 0 {
            return;
        }
        let (a, b) = (&syms[l as usize], &syms[r as usize]);
        if a.freeze || b.freeze {
            return;
        }
        let merged = &norm[a.start as usize..(b.start + b.len) as usize];
        if let Some(&id) = self.mergeable.get(merged) {
            if self.kinds[id as usize] == PieceKind::Unused {
                return;
            }
            agenda.push(Pair {
                score: self.scores[id as usize],
                left: l,
                right: r,
                size: a.len + b.len,
            });
        }
    }

    /// Final symbol to ids: the piece itself, or its bytes (byte fallback), or unk.
    fn emit(&self, piece: &str, out: &mut Vec<u32>) {
        if let Some(&id) = self.mergeable.get(piece) {
            if self.kinds[id as usize] != PieceKind::Unused {
                out.push(id);
                return;
            }
            // An unused piece can only be a single character here (merges skip unused
            // pieces), so SentencePiece's re-segmentation reduces to the unknown path.
        }
        if self.byte_fallback {
            for b in piece.bytes() {
                out.push(self.byte_ids[b as usize].unwrap_or(self.unk));
            }
        } else {
            out.push(self.unk);
        }
    }

    /// Decodes ids like SentencePiece: control ids (BOS/EOS) vanish, `<unk>` prints as
    /// `" ⁇ "`, "▁" becomes a space, the dummy-prefix space of the first piece is dropped,
    /// and runs of byte pieces are read as UTF-8 where each invalid byte becomes one
    /// U+FFFD while valid characters in the run are kept. Out-of-range ids decode as unk.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut text = String::new();
        let mut bytes: Vec<u8> = Vec::new();
        let mut is_bos_ws = true;
        let mut bos_ws_seen = false;
        let strip_prefix = self.add_dummy_prefix || self.remove_extra_whitespaces;
        for &id in ids {
            let (piece, kind) = match (self.pieces.get(id as usize), self.kinds.get(id as usize)) {
                (Some(p), Some(k)) => (p.as_str(), *k),
                _ => ("", PieceKind::Unknown),
            };
            if kind == PieceKind::Byte {
                if let Some(b) = parse_byte_piece(piece) {
                    bytes.push(b);
                }
                continue;
            }
            flush_bytes(&mut bytes, &mut text);
            if bos_ws_seen || !text.is_empty() {
                is_bos_ws = false;
            }
            bos_ws_seen = false;
            match kind {
                PieceKind::Control => {}
                PieceKind::Unknown => text.push_str(UNK_SURFACE),
                _ => {
                    let mut p = piece;
                    if is_bos_ws && strip_prefix {
                        if let Some(rest) = p.strip_prefix(SPACE_STR) {
                            p = rest;
                            bos_ws_seen = true;
                        }
                    }
                    for c in p.chars() {
                        text.push(if c == SPACE_SYMBOL { ' ' } else { c });
                    }
                }
            }
        }
        flush_bytes(&mut bytes, &mut text);
        text
    }
}

/// One BPE symbol: a byte range of the normalised text in a linked list.
#[derive(Clone, Copy)]
struct Sym {
    start: u32,
    len: u32,
    prev: i32,
    next: i32,
    freeze: bool,
}

/// A candidate merge; the heap pops the highest score, then the leftmost.
struct Pair {
    score: f32,
    left: i32,
    right: i32,
    size: u32,
}

impl PartialEq for Pair {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == std::cmp::Ordering::Equal
    }
}
impl Eq for Pair {}
impl PartialOrd for Pair {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pair {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}

/// `<0xNN>` -> NN.
fn parse_byte_piece(p: &str) -> Option<u8> {
    let hex = p.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// Appends a byte run as UTF-8; each byte that does not start a valid character becomes
/// one U+FFFD (SentencePiece's rule, unlike `from_utf8_lossy` which merges invalid runs).
fn flush_bytes(bytes: &mut Vec<u8>, text: &mut String) {
    let mut i = 0;
    while i < bytes.len() {
        let need = match bytes[i] {
            0x00..=0x7F => 1,
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 0,
        };
        let ch = (need > 0 && i + need <= bytes.len())
            .then(|| std::str::from_utf8(&bytes[i..i + need]).ok())
            .flatten();
        match ch {
            Some(s) => {
                text.push_str(s);
                i += need;
            }
            None => {
                text.push('\u{FFFD}');
                i += 1;
            }
        }
    }
    bytes.clear();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_runs_keep_valid_chars() {
        let mut t = String::new();
        flush_bytes(&mut vec![0xF0, 0x9F, b'a', 0xE7, 0xA7, 0x91], &mut t);
        assert_eq!(t, "\u{FFFD}\u{FFFD}a科");
        let mut t = String::new();
        // Surrogate encodings and overlongs are invalid, byte by byte.
        flush_bytes(&mut vec![0xED, 0xA0, 0x80, 0xC0, 0x80], &mut t);
        assert_eq!(t.chars().count(), 5);
    }

    #[test]
    fn byte_piece_names() {
        assert_eq!(parse_byte_piece("<0x0A>"), Some(10));
        assert_eq!(parse_byte_piece("<0xFF>"), Some(255));
        assert_eq!(parse_byte_piece("<0x1>"), None);
        assert_eq!(parse_byte_piece("a"), None);
    }
}
