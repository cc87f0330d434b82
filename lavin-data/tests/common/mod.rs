//! Shared test helpers: fixture paths and a minimal safetensors reader.
#![allow(dead_code)]

use std::collections::HashMap;

pub const CASE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data/parity/tiny-a");

pub fn json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(format!("{CASE}/{name}")).expect("fixture file");
    serde_json::from_str(&text).expect("fixture json")
}

/// One tensor: dtype, shape, raw little-endian bytes.
pub struct Tensor {
    pub dtype: String,
    pub shape: Vec<usize>,
    pub bytes: Vec<u8>,
}

impl Tensor {
    pub fn f32s(&self) -> Vec<f32> {
        assert_eq!(self.dtype, "F32");
        self.bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()
    }
    pub fn i64s(&self) -> Vec<i64> {
        assert_eq!(self.dtype, "I64");
        self.bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
            .collect()
    }
}

pub fn safetensors(name: &str) -> HashMap<String, Tensor> {
    let raw = std::fs::read(format!("{CASE}/{name}")).expect("fixture file");
    let n = u64::from_le_bytes(raw[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&raw[8..8 + n]).unwrap();
    let data = &raw[8 + n..];
    header
        .into_iter()
        .filter(|(k, _)| k != "__metadata__")
        .map(|(k, v)| {
            let off = v["data_offsets"].as_array().unwrap();
            let (a, b) = (
                off[0].as_u64().unwrap() as usize,
                off[1].as_u64().unwrap() as usize,
            );
            let t = Tensor {
                dtype: v["dtype"].as_str().unwrap().to_owned(),
                shape: v["shape"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as usize)
                    .collect(),
                bytes: data[a..b].to_vec(),
            };
            (k, t)
        })
        .collect()
}
