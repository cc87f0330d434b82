//! `Generator::generate_batch` on the real tiny LaVIN (the bundled base, as `serve` loads it
//! without flags): rows keep their own settings and random streams inside a batch.

use std::collections::HashMap;
use std::sync::Arc;

use lavin_infer::generator::{
    BatchItem, BatchObserver, GenError, GenOutput, GenRequest, Generator, ImageInput,
    SamplingParams,
};

fn tiny() -> Box<dyn Generator> {
    tiny_with(&[])
}

fn tiny_with(flags: &[&str]) -> Box<dyn Generator> {
    use clap::Parser;
    let mut argv = vec!["lavin-infer", "serve", "--max-seq-len", "160"];
    argv.extend_from_slice(flags);
    let cli = lavin_infer::cli::Cli::try_parse_from(argv).expect("flags");
    let lavin_infer::cli::Command::Serve(args) = cli.command else {
        unreachable!("parsed serve")
    };
    lavin_infer::load::load_generator("batch test", &args.session.model, 5.0)
        .expect("the bundled tiny model loads")
}

/// Records everything; stops item `stop_item` after `stop_after` deltas.
#[derive(Default)]
struct Record {
    deltas: HashMap<usize, Vec<String>>,
    results: HashMap<usize, Result<GenOutput, String>>,
    stop: Option<(usize, usize)>,
}

impl BatchObserver for Record {
    fn token(&mut self, item: usize, delta: &str) -> bool {
        let d = self.deltas.entry(item).or_default();
        d.push(delta.to_string());
        self.stop.is_none_or(|(k, n)| k != item || d.len() < n)
    }
    fn cancelled(&mut self, _: usize) -> bool {
        false
    }
    fn finished(&mut self, item: usize, result: Result<GenOutput, GenError>) {
        let old = self.results.insert(item, result.map_err(|e| e.to_string()));
        assert!(old.is_none(), "item {item} finished twice");
    }
}

fn item(prompt: &str, temperature: f32, max_gen_len: usize, seed: u64) -> BatchItem {
    BatchItem {
        request: GenRequest::text(prompt),
        params: SamplingParams {
            max_gen_len,
            temperature,
            top_p: 1.0,
            top_k: 0,
            seed,
        },
    }
}

fn run(g: &mut dyn Generator, items: &[BatchItem], stop: Option<(usize, usize)>) -> Record {
    let mut rec = Record {
        stop,
        ..Record::default()
    };
    g.generate_batch(items, &mut rec).expect("the batch runs");
    assert_eq!(rec.results.len(), items.len(), "every item finished");
    rec
}

fn ok(rec: &Record, k: usize) -> &GenOutput {
    rec.results[&k].as_ref().expect("item succeeded")
}

#[test]
fn rows_keep_their_own_settings_and_seeds_inside_a_batch() {
    let mut g = tiny();
    let sampled = item("Instruction: Describe a cat.\nResponese:", 1.0, 12, 42);
    let alone = run(g.as_mut(), std::slice::from_ref(&sampled), None);
    let alone = ok(&alone, 0).clone();
    assert_eq!(alone.token_ids.len(), 12, "{alone:?}");

    // The same request beside a greedy one with the same prompt and a longer one with an
    // image, each with its own length: its text does not change. (A companion with a
    // *shorter* prompt would: with the original's positions the rows after the first step
    // sit one position lower, see docs/serving.md.)
    let image = ImageInput {
        name: "grey".into(),
        pixels: Arc::new(vec![0.1; 3 * 224 * 224]),
    };
    let mut with_image = item(
        "Instruction: What is in the picture, in a few words please?\nResponese:",
        0.7,
        5,
        3,
    );
    with_image.request.image = Some(image);
    let greedy = item(&sampled.request.prompt, 0.0, 3, 0);
    let batch = [greedy.clone(), sampled.clone(), with_image];
    let rec = run(g.as_mut(), &batch, None);
    assert_eq!(ok(&rec, 1).completion, alone.completion);
    assert_eq!(ok(&rec, 1).token_ids, alone.token_ids);
    assert_eq!(ok(&rec, 0).token_ids.len(), 3);
    assert!(ok(&rec, 2).token_ids.len() <= 5);
    // Streamed deltas add up to the completion.
    assert_eq!(rec.deltas[&1].concat(), alone.completion);

    // Another seed samples differently; the greedy row is the same as alone.
    let other = run(
        g.as_mut(),
        &[item(&sampled.request.prompt, 1.0, 12, 43)],
        None,
    );
    assert_ne!(ok(&other, 0).token_ids, alone.token_ids);
    let greedy_alone = run(g.as_mut(), &[greedy], None);
    assert_eq!(ok(&greedy_alone, 0).token_ids, ok(&rec, 0).token_ids);
}

#[test]
fn an_observer_stop_ends_one_row_and_a_long_prompt_fails_alone() {
    let mut g = tiny();
    let long = "word ".repeat(400);
    let items = [
        item("Instruction: Count to ten.\nResponese:", 1.0, 10, 5),
        item(&long, 0.0, 4, 0),
        item("Instruction: Name a colour.\nResponese:", 0.0, 10, 0),
    ];
    let rec = run(g.as_mut(), &items, Some((0, 2)));
    // Stopped after its second delta (a delta can hold more than one token).
    assert_eq!(rec.deltas[&0].len(), 2);
    assert_eq!(ok(&rec, 0).completion, rec.deltas[&0].concat());
    let err = rec.results[&1].as_ref().unwrap_err();
    assert!(err.contains("too long"), "{err}");
    assert_eq!(ok(&rec, 2).token_ids.len(), 10);
}

#[test]
fn with_consistent_positions_a_shorter_companion_changes_nothing() {
    let mut g = tiny_with(&["--positions", "consistent"]);
    let sampled = item("Instruction: Describe a cat.\nResponese:", 1.0, 12, 42);
    let alone = run(g.as_mut(), std::slice::from_ref(&sampled), None);
    let batch = [item("Hi", 0.0, 3, 0), sampled];
    let rec = run(g.as_mut(), &batch, None);
    assert_eq!(ok(&rec, 1).token_ids, ok(&alone, 0).token_ids);
}
