//! `lavin-infer parity <DIR>`: check one parity case folder end to end (model forward and
//! gradients, HF weights, tokenizer, images, prompts, scores, optimizer, generation), one row
//! per tensor or file, `SKIP` for optional files that are absent.

mod data;
mod generation;
mod optim;

use std::path::Path;

use burn::backend::Autodiff;
use burn::tensor::backend::Backend;
use lavin_model::parity::{Case, Check};

/// What one part of the check produced.
pub enum Outcome {
    Rows(Vec<Check>),
    Skip(String),
}

/// A named part of the report (a file group of the case folder).
pub struct Section {
    pub name: &'static str,
    pub outcome: Outcome,
}

/// Runs every check that applies to `dir` on backend `B`.
pub fn run<B: Backend>(dir: &Path, device: &B::Device) -> anyhow::Result<Vec<Section>> {
    let case = Case::open(dir)?;
    let mut sections = Vec::new();
    let model = case.load_model::<Autodiff<B>>(case.meta_llama(), device)?;
    sections.push(Section {
        name: "model (expected.safetensors)",
        outcome: Outcome::Rows(case.check_training(&model, device)?),
    });
    sections.push(Section {
        name: "hf-llama/",
        outcome: if dir.join("hf-llama/config.json").exists() {
            Outcome::Rows(case.check_hf_llama::<B>(device)?)
        } else {
            Outcome::Skip("hf-llama/: absent".into())
        },
    });
    sections.push(Section {
        name: "generation",
        outcome: generation::check::<B>(&case, device)?,
    });
    sections.push(Section {
        name: "tokenizer.model + tokenizer_cases.json",
        outcome: data::tokenizer(&case)?,
    });
    sections.push(Section {
        name: "hf-llama/tokenizer.json",
        outcome: data::hf_tokenizer(&case)?,
    });
    sections.push(Section {
        name: "images/preprocess.safetensors",
        outcome: data::images(&case)?,
    });
    sections.push(Section {
        name: "prompts.json",
        outcome: data::prompts(&case)?,
    });
    sections.push(Section {
        name: "inputs.safetensors tokens/labels",
        outcome: data::batch_tokens(&case)?,
    });
    sections.push(Section {
        name: "scores.json",
        outcome: data::scores(&case)?,
    });
    sections.push(Section {
        name: "optim.json + optim.safetensors",
        outcome: optim::check::<B>(&case, device)?,
    });
    Ok(sections)
}

/// Prints the report; returns whether everything checked passed.
pub fn print_report(sections: &[Section]) -> bool {
    let mut ok = true;
    let (mut pass, mut fail, mut skip) = (0, 0, 0);
    println!(
        "{:<72} {:>11} {:>9} {:>5}  result",
        "check", "error", "bound", "kind"
    );
    for s in sections {
        match &s.outcome {
            Outcome::Skip(reason) => {
                skip += 1;
                println!("SKIP {}: {reason}", s.name);
            }
            Outcome::Rows(rows) => {
                for r in rows {
                    let p = r.pass();
                    ok &= p;
                    if p {
                        pass += 1
                    } else {
                        fail += 1
                    }
                    println!(
                        "{:<72} {:>11.3e} {:>9.1e} {:>5}  {}",
                        r.name,
                        r.error,
                        r.bound,
                        r.kind,
                        if p { "PASS" } else { "FAIL" }
                    );
                }
            }
        }
    }
    println!("parity: {pass} passed, {fail} failed, {skip} skipped");
    ok
}
