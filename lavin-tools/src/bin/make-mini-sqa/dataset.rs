//! Assembling problems into splits: type schedule, balanced answer positions, uniqueness and
//! qids.

use crate::kinds::{draft, fixed_choices, QType};
use crate::rng::Rng;
use crate::scene::Scene;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};

/// Split names and sizes, in the order problems are drawn.
pub const SPLITS: [(&str, usize); 3] = [("train", 1200), ("val", 200), ("test", 200)];

/// One ScienceQA problem, fields in the order (and with the types) of the official
/// `problems.json`. Serialised through the struct so the key order is fixed whatever
/// serde_json's features are.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub question: String,
    pub choices: Vec<String>,
    pub answer: usize,
    pub hint: String,
    pub image: Option<String>,
    pub task: String,
    pub grade: String,
    pub subject: String,
    pub topic: String,
    pub category: String,
    pub skill: String,
    pub lecture: String,
    pub solution: String,
    pub split: String,
}

/// A problem with what is written next to it.
pub struct Item {
    pub qid: String,
    pub qtype: QType,
    pub problem: Problem,
    pub scene: Option<Scene>,
    pub caption: Option<String>,
}

/// The whole dataset, items in qid order ("1", "2", ...).
pub struct Dataset {
    pub items: Vec<Item>,
}

impl Dataset {
    /// qids of one split, in qid order.
    pub fn split_qids(&self, split: &str) -> Vec<String> {
        self.items
            .iter()
            .filter(|it| it.problem.split == split)
            .map(|it| it.qid.clone())
            .collect()
    }
}

/// Draws the dataset for `seed`.
pub fn build(seed: u64) -> Dataset {
    let mut master = Rng::new(seed);
    let mut questions = master.fork();
    let mut pictures = master.fork();
    let mut order = master.fork();
    // Text problems are unique across the whole dataset (question, hint and choices in order),
    // so val/test never repeat a train problem verbatim; image problems differ by their picture.
    let mut seen = HashSet::new();
    let mut drawn: Vec<(QType, Problem, Option<Scene>, Option<String>)> = Vec::new();
    for (split, size) in SPLITS {
        let mut decks = AnswerDecks::default();
        for t in schedule(size, &mut questions) {
            let (p, scene, caption) = draw_unique(
                t,
                split,
                &mut decks,
                &mut seen,
                &mut questions,
                &mut pictures,
            );
            drawn.push((t, p, scene, caption));
        }
    }
    // Interleave the splits over the qids, as the official qids are.
    order.shuffle(&mut drawn);
    let items = drawn
        .into_iter()
        .enumerate()
        .map(|(i, (qtype, problem, scene, caption))| Item {
            qid: (i + 1).to_string(),
            qtype,
            problem,
            scene,
            caption,
        })
        .collect();
    Dataset { items }
}

/// `size` types with exact shares (QType::weight per 32), in random order. The unit list is
/// interleaved so that a partial last round is not biased to one kind of type.
fn schedule(size: usize, rng: &mut Rng) -> Vec<QType> {
    let mut units: Vec<QType> = Vec::new();
    let max_w = QType::ALL.iter().map(|t| t.weight()).max().unwrap_or(0);
    for round in 0..max_w {
        for t in QType::ALL {
            if round < t.weight() {
                units.push(t);
            }
        }
    }
    let mut out: Vec<QType> = units.iter().copied().cycle().take(size).collect();
    rng.shuffle(&mut out);
    out
}

/// Per number of choices, a deck of answer positions dealt in shuffled rounds, so every
/// position is the answer equally often within a split (no positional shortcut).
#[derive(Default)]
struct AnswerDecks {
    decks: BTreeMap<usize, Vec<usize>>,
}

impl AnswerDecks {
    fn deal(&mut self, n: usize, rng: &mut Rng) -> usize {
        let deck = self.decks.entry(n).or_default();
        if deck.is_empty() {
            deck.extend(0..n);
            rng.shuffle(deck);
        }
        deck.pop().unwrap_or(0)
    }
}

fn draw_unique(
    t: QType,
    split: &str,
    decks: &mut AnswerDecks,
    seen: &mut HashSet<String>,
    rng: &mut Rng,
    img: &mut Rng,
) -> (Problem, Option<Scene>, Option<String>) {
    let meta = t.meta();
    let n = *rng.pick(meta.n_choices);
    let pos = decks.deal(n, rng);
    for _ in 0..1000 {
        let d = draft(t, n, rng, img);
        let mut rest = d.distractors.clone();
        rng.shuffle(&mut rest);
        rest.insert(pos, d.answer.clone());
        let key = format!("{}|{}|{}", d.question, d.hint, rest.join("|"));
        if !meta.has_image && !seen.insert(key) {
            continue;
        }
        let grade = rng.range_i32(meta.grades.0, meta.grades.1);
        // Picture types: the full list in its fixed order replaces the drawn subset (after
        // every draw, so the random streams and all other problems stay as they were).
        let (choices, answer) = match fixed_choices(t) {
            Some(all) => {
                let at = all.iter().position(|c| *c == d.answer).unwrap_or(0);
                (all.into_iter().map(String::from).collect(), at)
            }
            None => (rest, pos),
        };
        let problem = Problem {
            question: d.question,
            choices,
            answer,
            hint: d.hint,
            image: d.scene.as_ref().map(|_| "image.png".to_string()),
            task: "closed choice".into(),
            grade: format!("grade{grade}"),
            subject: meta.subject.into(),
            topic: meta.topic.into(),
            category: meta.category.into(),
            skill: meta.skill.into(),
            lecture: d.lecture,
            solution: d.solution,
            split: split.into(),
        };
        return (problem, d.scene, d.caption);
    }
    panic!(
        "could not draw a new {} problem: fact table too small",
        meta.id
    );
}
