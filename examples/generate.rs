//! Load LaVIN and ask it about an image, streaming the answer.
//!
//! ```bash
//! cargo run --release --example generate -- [IMAGE] [QUESTION]
//! ```
//! Without arguments it uses the bundled tiny base and a picture from the mini ScienceQA; the
//! flags of `lavin-infer` (`--llama-model-path`, `--adapter`, ...) describe real weights.

use std::path::PathBuf;

use clap::Parser;
use lavin_infer::generator::{GenRequest, SamplingParams};
use lavin_infer::images::load_image_file;
use lavin_infer::load::load_generator;
use lavin_infer::model_args::ModelArgs;

#[derive(Parser)]
struct Args {
    /// Image to ask about.
    image: Option<PathBuf>,
    /// The question.
    question: Option<String>,
    #[command(flatten)]
    model: ModelArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let image = args
        .image
        .unwrap_or_else(|| root.join("data/mini-sqa/images/test/1011/image.png"));
    let question = args
        .question
        .unwrap_or_else(|| "What shape is in the picture?".into());

    // Router temperature 5, as the original demo.
    let mut generator = load_generator("generate", &args.model, 5.0)?;
    let request = GenRequest {
        prompt: format!("Instruction: {question}\nResponse:"),
        image: Some(load_image_file(&image)?),
    };
    let params = SamplingParams {
        temperature: 0.0, // greedy
        ..SamplingParams::default()
    };
    println!("{} | {}", generator.describe(), image.display());
    print!("> {question}\n< ");
    let out = generator.generate(&[request], &params, &mut |_, delta| print!("{delta}"))?;
    println!(
        "\n({} prompt tokens, {} generated)",
        out[0].prompt_tokens,
        out[0].token_ids.len()
    );
    Ok(())
}
