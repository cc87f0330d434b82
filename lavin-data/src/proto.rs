//! Minimal protobuf reader for SentencePiece's `ModelProto`: only the fields the tokenizer
//! needs are decoded, every other field is skipped by wire type. No protobuf crate is needed.

/// A parse failure with the byte offset where it happened.
#[derive(Debug, thiserror::Error)]
#[error("protobuf: {msg} at byte {offset}")]
pub struct ProtoError {
    msg: &'static str,
    offset: usize,
}

/// One `ModelProto.SentencePiece`.
#[derive(Debug, Clone)]
pub struct RawPiece {
    pub piece: String,
    pub score: f32,
    /// 1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte.
    pub kind: u64,
}

/// The subset of `ModelProto` (+ `TrainerSpec`, `NormalizerSpec`) that encoding needs.
/// Defaults are the proto's declared defaults.
#[derive(Debug, Clone)]
pub struct RawModel {
    pub pieces: Vec<RawPiece>,
    pub model_type: u64,
    pub byte_fallback: bool,
    pub treat_whitespace_as_suffix: bool,
    pub unk_id: i32,
    pub bos_id: i32,
    pub eos_id: i32,
    pub pad_id: i32,
    pub normalizer_name: String,
    pub precompiled_charsmap: Vec<u8>,
    pub add_dummy_prefix: bool,
    pub remove_extra_whitespaces: bool,
    pub escape_whitespaces: bool,
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

enum Value<'a> {
    Varint(u64),
    Fixed32(u32),
    Fixed64,
    Bytes(&'a [u8], usize),
}

impl<'a> Reader<'a> {
    fn err(&self, msg: &'static str) -> ProtoError {
        ProtoError {
            msg,
            offset: self.base + self.pos,
        }
    }

    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v = 0u64;
        for shift in (0..70).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| self.err("truncated varint"))?;
            self.pos += 1;
            if shift < 64 {
                v |= u64::from(b & 0x7F) << shift;
            }
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(self.err("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| self.err("field runs past the end"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    /// Next (field number, value), or None at the end.
    fn next(&mut self) -> Result<Option<(u64, Value<'a>)>, ProtoError> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        let v = match key & 7 {
            0 => Value::Varint(self.varint()?),
            1 => {
                self.take(8)?;
                Value::Fixed64
            }
            2 => {
                let n = usize::try_from(self.varint()?).map_err(|_| self.err("length overflow"))?;
                let at = self.base + self.pos;
                Value::Bytes(self.take(n)?, at)
            }
            5 => {
                let b = self.take(4)?;
                Value::Fixed32(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            }
            _ => return Err(self.err("unsupported wire type")),
        };
        Ok(Some((field, v)))
    }
}

fn reader(buf: &[u8], base: usize) -> Reader<'_> {
    Reader { buf, pos: 0, base }
}

fn string(b: &[u8], at: usize) -> Result<String, ProtoError> {
    String::from_utf8(b.to_vec()).map_err(|_| ProtoError {
        msg: "string is not UTF-8",
        offset: at,
    })
}

/// Parses a serialised `ModelProto`.
pub fn parse_model(buf: &[u8]) -> Result<RawModel, ProtoError> {
    let mut m = RawModel {
        pieces: Vec::new(),
        model_type: 1,
        byte_fallback: false,
        treat_whitespace_as_suffix: false,
        unk_id: 0,
        bos_id: 1,
        eos_id: 2,
        pad_id: -1,
        normalizer_name: String::new(),
        precompiled_charsmap: Vec::new(),
        add_dummy_prefix: true,
        remove_extra_whitespaces: true,
        escape_whitespaces: true,
    };
    let mut r = reader(buf, 0);
    let mut saw_trainer = false;
    while let Some((field, v)) = r.next()? {
        match (field, v) {
            (1, Value::Bytes(b, at)) => m.pieces.push(parse_piece(b, at)?),
            (2, Value::Bytes(b, at)) => {
                saw_trainer = true;
                parse_trainer(b, at, &mut m)?
            }
            (3, Value::Bytes(b, at)) => parse_normalizer(b, at, &mut m)?,
            _ => {}
        }
    }
    if m.pieces.is_empty() {
        return Err(ProtoError {
            msg: "no pieces (not a SentencePiece model)",
            offset: 0,
        });
    }
    if !saw_trainer {
        return Err(ProtoError {
            msg: "no trainer_spec (not a SentencePiece model)",
            offset: 0,
        });
    }
    Ok(m)
}

fn parse_piece(b: &[u8], at: usize) -> Result<RawPiece, ProtoError> {
    let mut p = RawPiece {
        piece: String::new(),
        score: 0.0,
        kind: 1,
    };
    let mut r = reader(b, at);
    while let Some((field, v)) = r.next()? {
        match (field, v) {
            (1, Value::Bytes(s, at)) => p.piece = string(s, at)?,
            (2, Value::Fixed32(x)) => p.score = f32::from_bits(x),
            (3, Value::Varint(x)) => p.kind = x,
            _ => {}
        }
    }
    Ok(p)
}

fn parse_trainer(b: &[u8], at: usize, m: &mut RawModel) -> Result<(), ProtoError> {
    let mut r = reader(b, at);
    // int32 fields are sign-extended 64-bit varints on the wire.
    let int32 = |x: u64| x as i64 as i32;
    while let Some((field, v)) = r.next()? {
        if let Value::Varint(x) = v {
            match field {
                3 => m.model_type = x,
                24 => m.treat_whitespace_as_suffix = x != 0,
                35 => m.byte_fallback = x != 0,
                40 => m.unk_id = int32(x),
                41 => m.bos_id = int32(x),
                42 => m.eos_id = int32(x),
                43 => m.pad_id = int32(x),
                _ => {}
            }
        }
    }
    Ok(())
}

fn parse_normalizer(b: &[u8], at: usize, m: &mut RawModel) -> Result<(), ProtoError> {
    let mut r = reader(b, at);
    while let Some((field, v)) = r.next()? {
        match (field, v) {
            (1, Value::Bytes(s, at)) => m.normalizer_name = string(s, at)?,
            (2, Value::Bytes(s, _)) => m.precompiled_charsmap = s.to_vec(),
            (3, Value::Varint(x)) => m.add_dummy_prefix = x != 0,
            (4, Value::Varint(x)) => m.remove_extra_whitespaces = x != 0,
            (5, Value::Varint(x)) => m.escape_whitespaces = x != 0,
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        assert!(parse_model(&[]).is_err());
        assert!(parse_model(&[0x0A, 0xFF]).is_err());
        assert!(parse_model(&[0xFF; 20]).is_err());
        assert!(parse_model(b"hello world").is_err());
    }
}
