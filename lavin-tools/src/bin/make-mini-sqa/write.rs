//! Writing the dataset in ScienceQA's official layout, plus `stats.json` and `README.md`.
//!
//! Every file is a pure function of the dataset: JSON key order comes from structs and
//! explicit ordered maps (never from serde_json's `Map`, whose order depends on a cargo
//! feature), PNGs from our frozen encoder.

use crate::dataset::{Dataset, Item, SPLITS};
use crate::kinds::{fixed_choices, QType};
use crate::png;
use crate::scene::SIZE;
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::Path;

/// Files and folders the generator owns inside its output folder.
pub const OUTPUTS: [&str; 6] = [
    "problems.json",
    "pid_splits.json",
    "captions.json",
    "stats.json",
    "README.md",
    "images",
];

/// A JSON object whose keys keep the given order.
struct Ordered<'a, V>(Vec<(&'a str, V)>);

impl<V: Serialize> Serialize for Ordered<'_, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            m.serialize_entry(k, v)?;
        }
        m.end()
    }
}

fn json<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    let mut out = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    out.push(b'\n');
    Ok(out)
}

/// Writes the whole dataset into `dir` (which must exist).
pub fn write_all(ds: &Dataset, seed: u64, dir: &Path) -> io::Result<()> {
    let problems = Ordered(
        ds.items
            .iter()
            .map(|it| (it.qid.as_str(), &it.problem))
            .collect(),
    );
    fs::write(dir.join("problems.json"), json(&problems)?)?;

    let splits = pid_splits(ds);
    let splits = Ordered(splits.iter().map(|(k, v)| (k.as_str(), v)).collect());
    fs::write(dir.join("pid_splits.json"), json(&splits)?)?;

    let captions = Ordered(
        ds.items
            .iter()
            .filter_map(|it| it.caption.as_ref().map(|c| (it.qid.as_str(), c)))
            .collect(),
    );
    fs::write(
        dir.join("captions.json"),
        json(&Ordered(vec![("captions", captions)]))?,
    )?;

    let stats = Stats::of(ds, seed);
    fs::write(dir.join("stats.json"), json(&stats)?)?;
    fs::write(dir.join("README.md"), readme(&stats))?;

    for it in &ds.items {
        if let Some(scene) = &it.scene {
            let folder = dir.join("images").join(&it.problem.split).join(&it.qid);
            fs::create_dir_all(&folder)?;
            let img = scene.render();
            fs::write(
                folder.join("image.png"),
                png::encode_rgb(SIZE, SIZE, img.as_raw()),
            )?;
        }
    }
    Ok(())
}

/// The official splits plus the derived ones ScienceQA ships: trainval = train + val,
/// minitrain / minival / minitest = the first quarter of train / val / test (qid order).
fn pid_splits(ds: &Dataset) -> Vec<(String, Vec<String>)> {
    let train = ds.split_qids("train");
    let val = ds.split_qids("val");
    let test = ds.split_qids("test");
    let quarter = |v: &Vec<String>| v[..v.len() / 4].to_vec();
    let mut trainval: Vec<String> = train.iter().chain(&val).cloned().collect();
    trainval.sort_by_key(|q| q.parse::<u64>().unwrap_or(u64::MAX));
    vec![
        ("minitrain".into(), quarter(&train)),
        ("minival".into(), quarter(&val)),
        ("minitest".into(), quarter(&test)),
        ("train".into(), train),
        ("val".into(), val),
        ("test".into(), test),
        ("trainval".into(), trainval),
    ]
}

/// Counts and chance accuracy of one split.
#[derive(Serialize)]
struct SplitStats {
    problems: usize,
    with_image: usize,
    /// Non-empty hint (ScienceQA's "TXT" context column).
    has_text: usize,
    no_context: usize,
    by_subject: BTreeMap<String, usize>,
    by_grade: BTreeMap<String, usize>,
    by_type: BTreeMap<String, usize>,
    by_num_choices: BTreeMap<String, usize>,
    by_answer_position: BTreeMap<String, usize>,
    /// Expected accuracy of uniform guessing (mean of 1 / number of choices), as a fraction,
    /// overall (`acc_average`) and per category of ScienceQA's score table.
    chance_accuracy: BTreeMap<String, f64>,
}

#[derive(Serialize)]
struct Stats {
    generator: &'static str,
    seed: u64,
    image_size: u32,
    splits: Ordered<'static, SplitStats>,
}

/// The score-table categories of ScienceQA (`get_scores`), as predicates on a problem.
type Category = (&'static str, fn(&Item) -> bool);

const CATEGORIES: [Category; 9] = [
    ("acc_average", |_| true),
    ("acc_natural", |it| it.problem.subject == "natural science"),
    ("acc_social", |it| it.problem.subject == "social science"),
    ("acc_language", |it| {
        it.problem.subject == "language science"
    }),
    ("acc_has_text", |it| !it.problem.hint.is_empty()),
    ("acc_has_image", |it| it.problem.image.is_some()),
    ("acc_no_context", |it| {
        it.problem.hint.is_empty() && it.problem.image.is_none()
    }),
    ("acc_grade_1_6", |it| grade(it) <= 6),
    ("acc_grade_7_12", |it| grade(it) >= 7),
];

fn grade(it: &Item) -> u32 {
    it.problem
        .grade
        .trim_start_matches("grade")
        .parse()
        .unwrap_or(0)
}

/// Rounded to 6 decimals so the file reads well (and stays byte-stable).
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

impl Stats {
    fn of(ds: &Dataset, seed: u64) -> Self {
        let splits = SPLITS
            .iter()
            .map(|&(name, _)| {
                let items: Vec<&Item> = ds
                    .items
                    .iter()
                    .filter(|it| it.problem.split == name)
                    .collect();
                (name, SplitStats::of(&items))
            })
            .collect();
        Stats {
            generator: "make-mini-sqa",
            seed,
            image_size: SIZE,
            splits: Ordered(splits),
        }
    }
}

impl SplitStats {
    fn of(items: &[&Item]) -> Self {
        let mut s = SplitStats {
            problems: items.len(),
            with_image: 0,
            has_text: 0,
            no_context: 0,
            by_subject: BTreeMap::new(),
            by_grade: BTreeMap::new(),
            by_type: BTreeMap::new(),
            by_num_choices: BTreeMap::new(),
            by_answer_position: BTreeMap::new(),
            chance_accuracy: BTreeMap::new(),
        };
        for it in items {
            let p = &it.problem;
            s.with_image += p.image.is_some() as usize;
            s.has_text += !p.hint.is_empty() as usize;
            s.no_context += (p.hint.is_empty() && p.image.is_none()) as usize;
            *s.by_subject.entry(p.subject.clone()).or_default() += 1;
            *s.by_grade.entry(format!("{:02}", grade(it))).or_default() += 1;
            *s.by_type.entry(it.qtype.meta().id.to_string()).or_default() += 1;
            *s.by_num_choices
                .entry(p.choices.len().to_string())
                .or_default() += 1;
            *s.by_answer_position
                .entry(((b'A' + p.answer as u8) as char).to_string())
                .or_default() += 1;
        }
        for (name, pred) in CATEGORIES {
            let sel: Vec<&&Item> = items.iter().filter(|it| pred(it)).collect();
            if !sel.is_empty() {
                let sum: f64 = sel
                    .iter()
                    .map(|it| 1.0 / it.problem.choices.len() as f64)
                    .sum();
                s.chance_accuracy
                    .insert(name.to_string(), round6(sum / sel.len() as f64));
            }
        }
        s
    }
}

/// One example question per type, for the README table.
fn example(t: QType) -> &'static str {
    match t {
        QType::Colour => "What color is the shape?",
        QType::ShapeKind => "Which shape is in the picture?",
        QType::Count => "How many circles are there?",
        QType::Position => "Where is the shape?",
        QType::Animal => "Which animal is a mammal?",
        QType::Matter => "Which is a liquid?",
        QType::Weather => "What is the weather in Reno? (hint: It is snowy in Reno today.)",
        QType::Capital => "What is the capital of Peru?",
        QType::Continent => "Which is a continent?",
        QType::Opposite => "Which word is the opposite of hot?",
        QType::Rhyme => "Which word rhymes with cat?",
        QType::Alphabet => "Which word comes first in ABC order?",
        QType::Pet => "What pet does Ann have? (hint: Ann has a pet frog.)",
    }
}

fn readme(stats: &Stats) -> String {
    let mut r = String::new();
    r.push_str(&format!(
        "# mini-sqa: a tiny synthetic ScienceQA\n\n\
Generated by `lavin-tools/src/bin/make-mini-sqa` (do not edit by hand):\n\n\
```sh\n\
cargo run -p lavin-tools --release --bin make-mini-sqa -- --out data/mini-sqa --seed {seed}\n\
# verify the committed copy is exactly what the generator makes:\n\
cargo run -p lavin-tools --release --bin make-mini-sqa -- --check data/mini-sqa\n\
```\n\n\
Same seed, same bytes: the generator uses its own SplitMix64 stream and its own frozen PNG\n\
encoder. Layout as the official ScienceQA release: `problems.json`, `pid_splits.json`\n\
(`train`, `val`, `test`, `trainval`, `minitrain`, `minival`, `minitest`), `captions.json`\n\
(image problems only) and `images/<split>/<qid>/image.png` ({size}x{size} RGB).\n\n\
Image questions need the picture: one to five big flat shapes (circle, square, triangle; red,\n\
green, blue, yellow, purple) on a plain light background (white for counting, so the count is\n\
proportional to the non-white area), asked about colour, form, count or position; the\n\
question text never names the answer. Captions describe the picture exactly,\n\
so with captions on the image questions become answerable from text. Text questions are\n\
answerable from a small fixed fact table (every fact recurs in train) or from the hint.\n\
Image questions list every option of their kind in one fixed order (colours red, green,\n\
blue, yellow, purple; circle, square, triangle; 1-5; top, bottom, left, right), so the\n\
answer letter follows from what the picture shows: binding an option's content to its letter\n\
is a skill a 4-layer, 64-wide LLaMA does not learn from this little data, and the bundled run\n\
is meant to measure vision-language adaptation. Text questions draw a subset of options in\n\
random order, with answer positions balanced within each split and number of choices; no\n\
text problem (question, hint and choices in order) appears twice in the dataset.\n\n\
## Question types\n\n\
| type | subject | image | choices | grades | example |\n|---|---|---|---|---|---|\n",
        seed = stats.seed,
        size = SIZE
    ));
    for t in QType::ALL {
        let m = t.meta();
        let choices: Vec<String> = match fixed_choices(t) {
            Some(all) => vec![all.len().to_string()],
            None => m.n_choices.iter().map(|n| n.to_string()).collect(),
        };
        r.push_str(&format!(
            "| {} | {} | {} | {} | {}-{} | {} |\n",
            m.id,
            m.subject,
            if m.has_image { "yes" } else { "no" },
            choices.join(","),
            m.grades.0,
            m.grades.1,
            example(t)
        ));
    }
    r.push_str(
        "\n## Counts and chance accuracy\n\n\
         Chance = mean over the split of 1 / number of choices (uniform guessing).\n\n\
         | split | problems | with image | has text (hint) | no context | chance |\n\
         |---|---|---|---|---|---|\n",
    );
    for (name, s) in &stats.splits.0 {
        r.push_str(&format!(
            "| {} | {} | {} | {} | {} | {:.4} |\n",
            name,
            s.problems,
            s.with_image,
            s.has_text,
            s.no_context,
            s.chance_accuracy.get("acc_average").copied().unwrap_or(0.0)
        ));
    }
    r.push_str("\nChance per score-table category (fractions):\n\n| split |");
    for (name, _) in CATEGORIES {
        r.push_str(&format!(" {} |", name.trim_start_matches("acc_")));
    }
    r.push_str("\n|---|");
    for _ in CATEGORIES {
        r.push_str("---|");
    }
    r.push('\n');
    for (name, s) in &stats.splits.0 {
        r.push_str(&format!("| {name} |"));
        for (cat, _) in CATEGORIES {
            match s.chance_accuracy.get(cat) {
                Some(c) => r.push_str(&format!(" {c:.4} |")),
                None => r.push_str(" - |"),
            }
        }
        r.push('\n');
    }
    r.push_str(
        "\nMore counts (per subject, grade, type, number of choices, answer letter) are in \
         `stats.json`.\n\n",
    );
    r.push_str(TOKENS_NOTE);
    r
}

/// Measured once with SentencePiece on `tests/data/parity/tiny-a/tokenizer.model` (vocab 512).
/// Re-measure (and update) when the question templates change.
const TOKENS_NOTE: &str = "## Prompt lengths\n\n\
Measured with SentencePiece on `tests/data/parity/tiny-a/tokenizer.model` (vocab 512, the\n\
tiny preset's tokenizer): a QCM-A (or CQM-A) training text, `[BOS] + prompt + \"The answer is\n\
X.\" + [EOS]`, is 37 to 86 tokens (mean 57, 95th percentile 74). The model adds the modality\n\
token and `Image: ` (3 tokens) + n_feats image rows, or `Image: N/A` (5 tokens), so\n\
`max_seq_len` 96 keeps every example whole with n_feats <= 4. Formats with lecture and\n\
solution (e.g. QCM-LEA) reach 186 tokens.\n";
