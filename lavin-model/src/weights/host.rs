//! Host-side tensors and the one decoder of raw tensor bytes.
//!
//! Every reader of weight files (safetensors in [`super::source`], PyTorch archives in
//! [`super::torch_pickle`], lavin-train's checkpoint I/O) ends with the same step: a slice of
//! little-endian bytes of some element type becomes f32 values in a [`HostTensor`]. That step
//! lives here, once. Which element types a reader accepts (and how it names the file and key in
//! an error) stays with the reader. This module depends on no other module of the crate.

use std::fmt;

use burn::tensor::{bf16, f16, TensorData};

/// A tensor on the host in f32, with its shape (row-major).
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    /// `[r, c] -> [c, r]`
    pub fn transpose(&self) -> Self {
        let (r, c) = (self.shape[0], self.shape[1]);
        let mut data = vec![0.0; r * c];
        for i in 0..r {
            for j in 0..c {
                data[j * r + i] = self.data[i * c + j];
            }
        }
        Self {
            shape: vec![c, r],
            data,
        }
    }

    /// Concatenates along `dim` (all other dims equal).
    pub fn cat(parts: &[HostTensor], dim: usize) -> Self {
        let mut shape = parts[0].shape.clone();
        shape[dim] = parts.iter().map(|p| p.shape[dim]).sum();
        let outer: usize = shape[..dim].iter().product();
        let mut data = Vec::with_capacity(shape.iter().product());
        for o in 0..outer {
            for p in parts {
                let inner: usize = p.shape[dim..].iter().product();
                data.extend_from_slice(&p.data[o * inner..(o + 1) * inner]);
            }
        }
        Self { shape, data }
    }

    pub fn into_data(self) -> TensorData {
        TensorData::new(self.data, self.shape)
    }
}

/// Element type of raw little-endian tensor bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ElemType {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U64,
    U32,
    U16,
    U8,
    Bool,
}

impl ElemType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 | Self::U64 => 8,
            Self::F32 | Self::I32 | Self::U32 => 4,
            Self::F16 | Self::BF16 | Self::I16 | Self::U16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    /// f32, f16, bf16 or f64.
    pub fn is_float(self) -> bool {
        matches!(self, Self::F32 | Self::F16 | Self::BF16 | Self::F64)
    }

    /// Short lower-case name: `f32`, `bf16`, `i64`, `bool`, ...
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
            Self::F64 => "f64",
            Self::I64 => "i64",
            Self::I32 => "i32",
            Self::I16 => "i16",
            Self::I8 => "i8",
            Self::U64 => "u64",
            Self::U32 => "u32",
            Self::U16 => "u16",
            Self::U8 => "u8",
            Self::Bool => "bool",
        }
    }

    /// The element type of a safetensors dtype; `None` for the ones not decoded here
    /// (8-bit and smaller floats, complex).
    pub fn from_safetensors(dtype: safetensors::Dtype) -> Option<Self> {
        use safetensors::Dtype as D;
        Some(match dtype {
            D::F32 => Self::F32,
            D::F16 => Self::F16,
            D::BF16 => Self::BF16,
            D::F64 => Self::F64,
            D::I64 => Self::I64,
            D::I32 => Self::I32,
            D::I16 => Self::I16,
            D::I8 => Self::I8,
            D::U64 => Self::U64,
            D::U32 => Self::U32,
            D::U16 => Self::U16,
            D::U8 => Self::U8,
            D::BOOL => Self::Bool,
            _ => return None,
        })
    }
}

impl fmt::Display for ElemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Raw bytes that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The byte count is not a multiple of the element size.
    #[error(
        "{len} bytes is not a whole number of {dtype} elements ({size} bytes each)",
        size = dtype.size()
    )]
    Length { dtype: ElemType, len: usize },
    /// [`decode_i64`] on a floating-point type.
    #[error("{dtype} is not an integer type")]
    NotInteger { dtype: ElemType },
}

fn chunks<const N: usize>(
    dtype: ElemType,
    bytes: &[u8],
) -> Result<impl Iterator<Item = [u8; N]> + '_, DecodeError> {
    debug_assert_eq!(dtype.size(), N);
    if !bytes.len().is_multiple_of(N) {
        return Err(DecodeError::Length {
            dtype,
            len: bytes.len(),
        });
    }
    Ok(bytes
        .chunks_exact(N)
        .map(|c| c.try_into().expect("chunks_exact gives N bytes")))
}

/// Little-endian bytes of `dtype` elements -> f32 values (integers and bools converted with
/// `as f32`, f64 rounded to nearest). A byte count that is not a multiple of the element size
/// is an error.
pub fn decode_f32(dtype: ElemType, bytes: &[u8]) -> Result<Vec<f32>, DecodeError> {
    Ok(match dtype {
        ElemType::F32 => chunks::<4>(dtype, bytes)?.map(f32::from_le_bytes).collect(),
        ElemType::F16 => chunks::<2>(dtype, bytes)?
            .map(|b| f16::from_le_bytes(b).to_f32())
            .collect(),
        ElemType::BF16 => chunks::<2>(dtype, bytes)?
            .map(|b| bf16::from_le_bytes(b).to_f32())
            .collect(),
        ElemType::F64 => chunks::<8>(dtype, bytes)?
            .map(|b| f64::from_le_bytes(b) as f32)
            .collect(),
        ElemType::I64 => chunks::<8>(dtype, bytes)?
            .map(|b| i64::from_le_bytes(b) as f32)
            .collect(),
        ElemType::I32 => chunks::<4>(dtype, bytes)?
            .map(|b| i32::from_le_bytes(b) as f32)
            .collect(),
        ElemType::I16 => chunks::<2>(dtype, bytes)?
            .map(|b| i16::from_le_bytes(b) as f32)
            .collect(),
        ElemType::I8 => bytes.iter().map(|&b| b as i8 as f32).collect(),
        ElemType::U64 => chunks::<8>(dtype, bytes)?
            .map(|b| u64::from_le_bytes(b) as f32)
            .collect(),
        ElemType::U32 => chunks::<4>(dtype, bytes)?
            .map(|b| u32::from_le_bytes(b) as f32)
            .collect(),
        ElemType::U16 => chunks::<2>(dtype, bytes)?
            .map(|b| u16::from_le_bytes(b) as f32)
            .collect(),
        ElemType::U8 => bytes.iter().map(|&b| b as f32).collect(),
        ElemType::Bool => bytes.iter().map(|&b| (b != 0) as u8 as f32).collect(),
    })
}

/// Little-endian bytes of an integer (or bool) `dtype` -> exact i64 values (u64 above
/// `i64::MAX` wraps). Floating-point types and a byte count that is not a multiple of the
/// element size are errors.
pub fn decode_i64(dtype: ElemType, bytes: &[u8]) -> Result<Vec<i64>, DecodeError> {
    Ok(match dtype {
        ElemType::I64 => chunks::<8>(dtype, bytes)?.map(i64::from_le_bytes).collect(),
        ElemType::I32 => chunks::<4>(dtype, bytes)?
            .map(|b| i32::from_le_bytes(b) as i64)
            .collect(),
        ElemType::I16 => chunks::<2>(dtype, bytes)?
            .map(|b| i16::from_le_bytes(b) as i64)
            .collect(),
        ElemType::I8 => bytes.iter().map(|&b| b as i8 as i64).collect(),
        ElemType::U64 => chunks::<8>(dtype, bytes)?
            .map(|b| u64::from_le_bytes(b) as i64)
            .collect(),
        ElemType::U32 => chunks::<4>(dtype, bytes)?
            .map(|b| u32::from_le_bytes(b) as i64)
            .collect(),
        ElemType::U16 => chunks::<2>(dtype, bytes)?
            .map(|b| u16::from_le_bytes(b) as i64)
            .collect(),
        ElemType::U8 => bytes.iter().map(|&b| b as i64).collect(),
        ElemType::Bool => bytes.iter().map(|&b| (b != 0) as i64).collect(),
        ElemType::F32 | ElemType::F16 | ElemType::BF16 | ElemType::F64 => {
            return Err(DecodeError::NotInteger { dtype })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Concatenated little-endian encodings.
    fn le<T: Copy, const N: usize>(values: &[T], to: fn(T) -> [u8; N]) -> Vec<u8> {
        values.iter().flat_map(|&v| to(v)).collect()
    }

    #[test]
    fn each_dtype_decodes_known_bytes() {
        // Hand-written bytes for the float types, so an endianness or bit-layout slip shows.
        let f32_bytes = [0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x20, 0xc0]; // 1.0, -2.5
        assert_eq!(decode_f32(ElemType::F32, &f32_bytes), Ok(vec![1.0, -2.5]));
        let f16_bytes = [0x00, 0x3c, 0x00, 0xc1, 0x00, 0x7c]; // 1.0, -2.5, +inf
        assert_eq!(
            decode_f32(ElemType::F16, &f16_bytes),
            Ok(vec![1.0, -2.5, f32::INFINITY])
        );
        let bf16_bytes = [0x80, 0x3f, 0x20, 0xc0, 0x49, 0x40]; // 1.0, -2.5, 3.140625
        assert_eq!(
            decode_f32(ElemType::BF16, &bf16_bytes),
            Ok(vec![1.0, -2.5, 3.140625])
        );
        let f64_bytes = [0, 0, 0, 0, 0, 0, 0xf0, 0x3f, 0, 0, 0, 0, 0, 0, 0x04, 0xc0];
        assert_eq!(decode_f32(ElemType::F64, &f64_bytes), Ok(vec![1.0, -2.5]));

        let ints = [-3i64, 0, 7];
        assert_eq!(
            decode_f32(ElemType::I64, &le(&ints, i64::to_le_bytes)),
            Ok(vec![-3.0, 0.0, 7.0])
        );
        assert_eq!(
            decode_f32(ElemType::I32, &le(&[-3i32, 0, 7], i32::to_le_bytes)),
            Ok(vec![-3.0, 0.0, 7.0])
        );
        assert_eq!(
            decode_f32(ElemType::I16, &le(&[-3i16, 300], i16::to_le_bytes)),
            Ok(vec![-3.0, 300.0])
        );
        assert_eq!(decode_f32(ElemType::I8, &[0xfd, 7]), Ok(vec![-3.0, 7.0]));
        assert_eq!(
            decode_f32(ElemType::U64, &le(&[5u64], u64::to_le_bytes)),
            Ok(vec![5.0])
        );
        assert_eq!(
            decode_f32(ElemType::U32, &le(&[70_000u32], u32::to_le_bytes)),
            Ok(vec![70_000.0])
        );
        assert_eq!(
            decode_f32(ElemType::U16, &le(&[65_535u16], u16::to_le_bytes)),
            Ok(vec![65_535.0])
        );
        assert_eq!(decode_f32(ElemType::U8, &[0xfd, 7]), Ok(vec![253.0, 7.0]));
        assert_eq!(
            decode_f32(ElemType::Bool, &[0, 1, 2]),
            Ok(vec![0.0, 1.0, 1.0])
        );

        assert_eq!(
            decode_i64(ElemType::I64, &le(&[i64::MIN, 1 << 40], i64::to_le_bytes)),
            Ok(vec![i64::MIN, 1 << 40])
        );
        assert_eq!(
            decode_i64(ElemType::I32, &le(&[-3i32, 7], i32::to_le_bytes)),
            Ok(vec![-3, 7])
        );
        assert_eq!(
            decode_i64(ElemType::U32, &le(&[u32::MAX], u32::to_le_bytes)),
            Ok(vec![u32::MAX as i64])
        );
        assert_eq!(decode_i64(ElemType::U8, &[0xfd]), Ok(vec![253]));
        assert_eq!(decode_i64(ElemType::I8, &[0xfd]), Ok(vec![-3]));
        assert_eq!(decode_f32(ElemType::F32, &[]), Ok(vec![]));
    }

    #[test]
    fn wrong_byte_length_is_an_error() {
        for dtype in [
            ElemType::F32,
            ElemType::F16,
            ElemType::BF16,
            ElemType::F64,
            ElemType::I64,
            ElemType::I32,
            ElemType::I16,
            ElemType::U64,
            ElemType::U32,
            ElemType::U16,
        ] {
            let len = dtype.size() + 1;
            let want = DecodeError::Length { dtype, len };
            assert_eq!(
                decode_f32(dtype, &vec![0; len]),
                Err(want.clone()),
                "{dtype}"
            );
            if !dtype.is_float() {
                assert_eq!(decode_i64(dtype, &vec![0; len]), Err(want), "{dtype}");
            }
        }
        let e = decode_f32(ElemType::BF16, &[0; 3]).unwrap_err().to_string();
        assert!(e.contains("3 bytes") && e.contains("bf16"), "{e}");
        assert_eq!(
            decode_i64(ElemType::F32, &[0; 4]),
            Err(DecodeError::NotInteger {
                dtype: ElemType::F32
            })
        );
    }

    #[test]
    fn host_tensor_transpose_and_cat() {
        let a = HostTensor {
            shape: vec![2, 3],
            data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        };
        assert_eq!(a.transpose().data, vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]);
        let c = HostTensor::cat(&[a.clone(), a.clone()], 1);
        assert_eq!(c.shape, vec![2, 6]);
        assert_eq!(&c.data[..6], &[1.0, 2.0, 3.0, 1.0, 2.0, 3.0]);
    }
}
