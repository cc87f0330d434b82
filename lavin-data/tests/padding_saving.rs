//! The token saving of length-grouped dynamic padding on the bundled ScienceQA-like data
//! (QCM-A, training texts, S = 512 as the paper's scripts and S = 96 as the tiny default).

use lavin_data::batch::{group_by_length, padding_saving};
use lavin_data::scienceqa::{LoadOptions, MissingImage};
use lavin_data::{tokenize_example, PromptFormat, ScienceQa, Tokenizer};

#[test]
fn dynamic_padding_saves_tokens_on_mini_sqa() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../data/mini-sqa");
    let tok = Tokenizer::from_file(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/data/parity/tiny-a/tokenizer.model"
    ))
    .unwrap();
    let sqa = ScienceQa::load(root, &LoadOptions::default()).unwrap();
    let (items, _) = sqa
        .items(
            "train",
            "QCM-A".parse::<PromptFormat>().unwrap(),
            false,
            MissingImage::Error,
        )
        .unwrap();
    // Rows the model adds: "Image: " (3 ids) + 2 features, or "Image: N/A" (5 ids).
    let extra = |has_image: bool| if has_image { 3 + 2 } else { 5 };
    let rows: Vec<(usize, usize)> = items
        .iter()
        .map(|it| {
            (
                tokenize_example(&tok, &it.question, &it.answer, 512)
                    .unwrap()
                    .n_real,
                extra(it.image.is_some()),
            )
        })
        .collect();
    for (s, min_saving) in [(512usize, 0.8), (96, 0.2)] {
        let lengths: Vec<usize> = rows.iter().map(|r| r.0).collect();
        let batches: Vec<Vec<(usize, usize)>> = group_by_length(&lengths, 8)
            .into_iter()
            .map(|b| b.into_iter().map(|i| rows[i]).collect())
            .collect();
        let report = padding_saving(s, &batches);
        println!("S = {s}, batch 8, {} train items: {report}", rows.len());
        assert!(report.saved_fraction() >= min_saving, "S = {s}: {report}");
    }
}
