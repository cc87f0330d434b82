//! A minimal, frozen PNG encoder for 8-bit RGB images.
//!
//! Why not `image`'s encoder: the bundled dataset is checked byte for byte against a fresh
//! generation, and the `png`/`fdeflate` crates may change their compressed output in any
//! release. This encoder never changes: filter type 0 on every row, one fixed-Huffman deflate
//! block, greedy LZ77 that only tries two distances (the previous pixel and the same pixel one
//! row up). Flat shapes on a plain background compress to a few kB with that.

/// Encodes `rgb` (row-major, 3 bytes per pixel, `width * height * 3` bytes) as a PNG file.
pub fn encode_rgb(width: u32, height: u32, rgb: &[u8]) -> Vec<u8> {
    assert_eq!(
        rgb.len(),
        width as usize * height as usize * 3,
        "RGB buffer size"
    );
    let stride = width as usize * 3;
    // Scanlines, each prefixed by its filter byte (0 = None).
    let mut raw = Vec::with_capacity((stride + 1) * height as usize);
    for row in rgb.chunks_exact(stride) {
        raw.push(0);
        raw.extend_from_slice(row);
    }

    let mut out = Vec::new();
    out.extend_from_slice(b"\x89PNG\r\n\x1a\n");
    let mut ihdr = Vec::with_capacity(13);
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    // Bit depth 8, colour type 2 (RGB), compression 0, filter 0, no interlace.
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    chunk(&mut out, b"IDAT", &zlib(&raw, &[3, stride + 1]));
    chunk(&mut out, b"IEND", &[]);
    out
}

/// Appends one PNG chunk: length, type, data, CRC-32 of type and data.
fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    out.extend_from_slice(&(data.len() as u32).to_be_bytes());
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let mut crc = Crc32::new();
    crc.update(kind);
    crc.update(data);
    out.extend_from_slice(&crc.finish().to_be_bytes());
}

/// A zlib stream (RFC 1950) holding one fixed-Huffman deflate block (RFC 1951).
fn zlib(data: &[u8], distances: &[usize]) -> Vec<u8> {
    // CMF 0x78 (deflate, 32 KiB window), FLG 0x01 (no dictionary, check bits valid).
    let mut w = BitWriter {
        out: vec![0x78, 0x01],
        acc: 0,
        nbits: 0,
    };
    w.bits(1, 1); // BFINAL
    w.bits(1, 2); // BTYPE = 01, fixed Huffman
    let mut i = 0;
    while i < data.len() {
        let (len, dist) = longest_match(data, i, distances);
        if len >= 3 {
            w.length(len);
            w.distance(dist);
            i += len;
        } else {
            w.literal(data[i] as u16);
            i += 1;
        }
    }
    w.literal(256); // end of block
    let mut out = w.finish();
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

/// The longest match (up to deflate's 258) at `i` among the candidate distances; ties keep the
/// first distance listed.
fn longest_match(data: &[u8], i: usize, distances: &[usize]) -> (usize, usize) {
    let max = (data.len() - i).min(258);
    let mut best = (0, 0);
    for &d in distances {
        if d > i {
            continue;
        }
        let mut n = 0;
        while n < max && data[i + n] == data[i + n - d] {
            n += 1;
        }
        if n > best.0 {
            best = (n, d);
        }
    }
    best
}

/// Deflate's bit packing: values go in least-significant bit first, Huffman codes most
/// significant bit first.
struct BitWriter {
    out: Vec<u8>,
    acc: u64,
    nbits: u32,
}

/// Length symbols 257..=285: base length and number of extra bits.
const LEN_BASE: [u16; 29] = [
    3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115, 131,
    163, 195, 227, 258,
];
const LEN_EXTRA: [u8; 29] = [
    0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
];
/// Distance symbols 0..=29: base distance and number of extra bits.
const DIST_BASE: [u16; 30] = [
    1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
    2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
];
const DIST_EXTRA: [u8; 30] = [
    0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12, 13,
    13,
];

impl BitWriter {
    fn bits(&mut self, value: u32, n: u32) {
        self.acc |= (value as u64) << self.nbits;
        self.nbits += n;
        while self.nbits >= 8 {
            self.out.push(self.acc as u8);
            self.acc >>= 8;
            self.nbits -= 8;
        }
    }

    /// A Huffman code of `n` bits, sent most significant bit first.
    fn code(&mut self, code: u32, n: u32) {
        let reversed = code.reverse_bits() >> (32 - n);
        self.bits(reversed, n);
    }

    /// A literal/length symbol in the fixed code (RFC 1951, 3.2.6).
    fn literal(&mut self, sym: u16) {
        let s = sym as u32;
        match sym {
            0..=143 => self.code(0x30 + s, 8),
            144..=255 => self.code(0x190 + s - 144, 9),
            256..=279 => self.code(s - 256, 7),
            _ => self.code(0xC0 + s - 280, 8),
        }
    }

    fn length(&mut self, len: usize) {
        let idx = LEN_BASE
            .iter()
            .rposition(|&b| b as usize <= len)
            .unwrap_or(0);
        self.literal(257 + idx as u16);
        self.bits((len - LEN_BASE[idx] as usize) as u32, LEN_EXTRA[idx] as u32);
    }

    fn distance(&mut self, dist: usize) {
        let idx = DIST_BASE
            .iter()
            .rposition(|&b| b as usize <= dist)
            .unwrap_or(0);
        self.code(idx as u32, 5);
        self.bits(
            (dist - DIST_BASE[idx] as usize) as u32,
            DIST_EXTRA[idx] as u32,
        );
    }

    fn finish(mut self) -> Vec<u8> {
        if self.nbits > 0 {
            self.out.push(self.acc as u8);
        }
        self.out
    }
}

fn adler32(data: &[u8]) -> u32 {
    let (mut a, mut b) = (1u32, 0u32);
    for &x in data {
        a = (a + x as u32) % 65521;
        b = (b + a) % 65521;
    }
    (b << 16) | a
}

/// CRC-32 (ISO-HDLC, as PNG uses), bitwise: a few kB per image, speed is irrelevant.
struct Crc32(u32);

impl Crc32 {
    fn new() -> Self {
        Crc32(0xFFFF_FFFF)
    }
    fn update(&mut self, data: &[u8]) {
        for &byte in data {
            self.0 ^= byte as u32;
            for _ in 0..8 {
                let mask = (self.0 & 1).wrapping_neg();
                self.0 = (self.0 >> 1) ^ (0xEDB8_8320 & mask);
            }
        }
    }
    fn finish(self) -> u32 {
        !self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_and_adler_reference_values() {
        let mut c = Crc32::new();
        c.update(b"123456789");
        assert_eq!(c.finish(), 0xCBF4_3926);
        assert_eq!(adler32(b"Wikipedia"), 0x11E6_0398);
    }

    #[test]
    fn round_trips_through_the_image_crate() {
        let (w, h) = (37u32, 29u32);
        let rgb: Vec<u8> = (0..w * h * 3)
            .map(|i| ((i / 3) % 7 * 30 + i % 3) as u8)
            .collect();
        let png = encode_rgb(w, h, &rgb);
        let img = image::load_from_memory(&png).expect("decodes").to_rgb8();
        assert_eq!((img.width(), img.height()), (w, h));
        assert_eq!(img.into_raw(), rgb);
    }
}
