//! Shared pieces of the trainer tests: the parity fixture as a tiny training set.

use std::path::Path;

use burn::backend::{Autodiff, NdArray};
use burn::tensor::{Device, Int, Tensor, TensorData};
use lavin_model::LavinBatch;
use lavin_parity::Case;
use lavin_train::trainer::{BatchSource, BatchStats};

/// The autodiff backend of the trainer tests.
pub type AB = Autodiff<NdArray<f32>>;

/// The tiny-a parity case (model config, weights, batch) with adapter dropout `dropout`.
pub fn fixture(dropout: f64) -> Case {
    let mut c = Case::open(Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/parity/tiny-a"
    )))
    .unwrap();
    c.config.adapter.dropout = dropout;
    c
}

/// The fixture's two items, repeated: example i = fixture item i % 2.
pub struct Repeat {
    /// The fixture batch.
    pub batch: LavinBatch<AB>,
    /// Number of examples.
    pub n: usize,
}

impl Repeat {
    /// `n` examples from the fixture `c`.
    pub fn new(c: &Case, n: usize) -> Self {
        Self {
            batch: c.batch::<AB>(&Default::default()).unwrap(),
            n,
        }
    }
}

impl BatchSource<AB> for Repeat {
    fn len(&self) -> usize {
        self.n
    }
    fn batch(
        &self,
        indices: &[usize],
        device: &Device<AB>,
    ) -> Result<(LavinBatch<AB>, BatchStats), String> {
        let rows: Vec<i64> = indices.iter().map(|i| (*i % 2) as i64).collect();
        let idx = Tensor::<AB, 1, Int>::from_data(TensorData::new(rows, [indices.len()]), device);
        let b = &self.batch;
        Ok((
            LavinBatch {
                tokens: b.tokens.clone().select(0, idx.clone()),
                labels: b.labels.clone().select(0, idx.clone()),
                images: b.images.clone().select(0, idx.clone()),
                indicators: b.indicators.clone().select(0, idx),
            },
            BatchStats {
                samples: indices.len(),
                tokens: indices.len() * 48,
            },
        ))
    }
}
