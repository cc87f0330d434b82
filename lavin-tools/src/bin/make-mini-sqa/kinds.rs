//! The question types: what each asks, its ScienceQA metadata, and how one problem of it is
//! drawn.
//!
//! Image types ask about something only the picture shows (the text never names the answer);
//! text types are answerable from a small fixed fact table or from the hint.

use crate::facts::*;
use crate::rng::Rng;
use crate::scene::{Colour, Kind, Scene, Shape, SIZE};

/// One question type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType {
    Colour,
    ShapeKind,
    Count,
    Position,
    Animal,
    Matter,
    Weather,
    Capital,
    Continent,
    Opposite,
    Rhyme,
    Alphabet,
    Pet,
}

/// ScienceQA metadata of a type, plus the ranges we draw from.
pub struct Meta {
    /// Short id used in stats.json and the README.
    pub id: &'static str,
    pub subject: &'static str,
    pub topic: &'static str,
    pub category: &'static str,
    pub skill: &'static str,
    /// Inclusive grade range.
    pub grades: (i32, i32),
    /// Allowed numbers of choices (drawn uniformly).
    pub n_choices: &'static [usize],
    pub has_image: bool,
}

const NAT: &str = "natural science";
const SOC: &str = "social science";
const LAN: &str = "language science";

impl QType {
    /// Every type, image types first.
    pub const ALL: [QType; 13] = [
        QType::Colour,
        QType::ShapeKind,
        QType::Count,
        QType::Position,
        QType::Animal,
        QType::Matter,
        QType::Weather,
        QType::Capital,
        QType::Continent,
        QType::Opposite,
        QType::Rhyme,
        QType::Alphabet,
        QType::Pet,
    ];

    /// Share of each type in every split, in units of 1/32: image types make up half.
    pub fn weight(self) -> usize {
        match self {
            QType::Colour | QType::ShapeKind | QType::Count | QType::Position => 4,
            QType::Continent | QType::Alphabet => 1,
            _ => 2,
        }
    }

    pub fn meta(self) -> Meta {
        let m = |id, subject, topic, category, skill, grades, n_choices, has_image| Meta {
            id,
            subject,
            topic,
            category,
            skill,
            grades,
            n_choices,
            has_image,
        };
        match self {
            QType::Colour => m(
                "color",
                NAT,
                "physics",
                "Colors",
                "Identify the color of a shape",
                (1, 3),
                &[2, 3, 4, 5],
                true,
            ),
            QType::ShapeKind => m(
                "shape",
                NAT,
                "physics",
                "Shapes",
                "Identify circles, squares and triangles",
                (1, 4),
                &[2, 3],
                true,
            ),
            QType::Count => m(
                "count",
                NAT,
                "science-and-engineering-practices",
                "Counting",
                "Count shapes in a picture",
                (1, 5),
                &[2, 3, 4, 5],
                true,
            ),
            QType::Position => m(
                "position",
                SOC,
                "geography",
                "Maps",
                "Use left, right, top and bottom",
                (2, 8),
                &[2, 3, 4],
                true,
            ),
            QType::Animal => m(
                "animal",
                NAT,
                "biology",
                "Classification",
                "Identify mammals, birds, fish, reptiles and insects",
                (2, 7),
                &[2, 3, 4],
                false,
            ),
            QType::Matter => m(
                "matter",
                NAT,
                "chemistry",
                "Solids, liquids and gases",
                "Identify solids, liquids and gases",
                (3, 8),
                &[2, 3],
                false,
            ),
            QType::Weather => m(
                "weather",
                NAT,
                "earth-science",
                "Weather and climate",
                "Read a weather report",
                (5, 11),
                &[2, 3, 4],
                false,
            ),
            QType::Capital => m(
                "capital",
                SOC,
                "geography",
                "Capitals",
                "Identify the capital of a country",
                (6, 12),
                &[2, 3, 4],
                false,
            ),
            QType::Continent => m(
                "continent",
                SOC,
                "geography",
                "Continents",
                "Identify continents",
                (4, 10),
                &[2, 3, 4],
                false,
            ),
            QType::Opposite => m(
                "opposite",
                LAN,
                "vocabulary",
                "Word meaning",
                "Find the opposite of a word",
                (1, 6),
                &[2, 3, 4],
                false,
            ),
            QType::Rhyme => m(
                "rhyme",
                LAN,
                "phonological-awareness",
                "Rhyming",
                "Find words that rhyme",
                (1, 4),
                &[2, 3, 4],
                false,
            ),
            QType::Alphabet => m(
                "alphabet",
                LAN,
                "word-study",
                "Alphabetical order",
                "Find the word that comes first in ABC order",
                (2, 7),
                &[2, 3],
                false,
            ),
            QType::Pet => m(
                "pet",
                LAN,
                "reading-comprehension",
                "Reading",
                "Find a detail in a text",
                (3, 12),
                &[2, 3, 4],
                false,
            ),
        }
    }
}

/// A drawn problem before its choices are ordered.
pub struct Draft {
    pub question: String,
    pub hint: String,
    pub answer: String,
    /// Wrong choices, `n_choices - 1` of them, all different from each other and the answer.
    pub distractors: Vec<String>,
    pub lecture: String,
    pub solution: String,
    pub scene: Option<Scene>,
    /// Caption for captions.json (image problems only, as in ScienceQA).
    pub caption: Option<String>,
}

/// Draws one problem of type `t` with `n` choices. `img` is a separate stream for the
/// picture so that picture details do not shift the question stream.
pub fn draft(t: QType, n: usize, rng: &mut Rng, img: &mut Rng) -> Draft {
    let mut d = match t {
        QType::Colour => colour(n, rng, img),
        QType::ShapeKind => shape_kind(n, rng, img),
        QType::Count => count(n, rng, img),
        QType::Position => position(n, rng, img),
        QType::Animal => from_classes(
            &ANIMALS,
            n,
            rng,
            |c| format!("Which animal is a {c}?"),
            ANIMAL_LECTURE,
            |a, c| format!("A {a} is a {c}."),
        ),
        QType::Matter => from_classes(
            &MATTER,
            n,
            rng,
            |c| format!("Which is a {c}?"),
            MATTER_LECTURE,
            |a, c| format!("{} is a {c}.", capitalise(a)),
        ),
        QType::Weather => weather(n, rng),
        QType::Capital => capital(n, rng),
        QType::Continent => continent(n, rng),
        QType::Opposite => opposite(n, rng),
        QType::Rhyme => rhyme(n, rng),
        QType::Alphabet => alphabet(n, rng),
        QType::Pet => pet(n, rng),
    };
    if t.meta().has_image && rng.chance(3, 10) {
        // Some image questions carry a hint that helps no more than the question does, as many
        // ScienceQA image questions do; they count as "has text" in the scores.
        d.hint = rng
            .pick(&["Look at the picture.", "Look at the shapes in the picture."])
            .to_string();
    }
    debug_assert_eq!(d.distractors.len(), n - 1);
    d
}

/// The full choice list, in a fixed order, of the picture question types; `None` for text
/// types. Picture questions list every option of their kind in this order (as many ScienceQA
/// skills do), so the letter of an answer is a function of what the picture shows. Why: the
/// bundled mini run adapts a 4-layer, 64-wide LLaMA, and binding an option's *content* to its
/// *letter* is a skill such tiny LMs do not learn from this little data (measured: letter loss
/// still at uniform after 1300 steps of drills); the adapters' job here is the vision-language
/// alignment, which this keeps measurable. Text questions keep drawn subsets in random order.
pub fn fixed_choices(t: QType) -> Option<Vec<&'static str>> {
    match t {
        QType::Colour => Some(colour_names()),
        QType::ShapeKind => Some(kind_names()),
        QType::Count => Some(vec!["1", "2", "3", "4", "5"]),
        QType::Position => Some(vec!["top", "bottom", "left", "right"]),
        _ => None,
    }
}

/// `k` names from `all` other than `not`.
fn others(all: &[&str], not: &[&str], k: usize, rng: &mut Rng) -> Vec<String> {
    let pool: Vec<&str> = all.iter().copied().filter(|w| !not.contains(w)).collect();
    rng.sample(&pool, k)
        .into_iter()
        .map(str::to_string)
        .collect()
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

fn number_word(n: usize) -> &'static str {
    ["zero", "One", "Two", "Three", "Four", "Five"][n]
}

fn colour_names() -> Vec<&'static str> {
    Colour::ALL.iter().map(|c| c.name()).collect()
}

fn kind_names() -> Vec<&'static str> {
    Kind::ALL.iter().map(|k| k.name()).collect()
}

/// One big shape near the centre.
fn big_shape(kind: Kind, colour: Colour, img: &mut Rng) -> Shape {
    let r = img.range_i32(44, 60);
    let c = SIZE as i32 / 2;
    Shape {
        kind,
        colour,
        cx: c + img.range_i32(-24, 24),
        cy: c + img.range_i32(-24, 24),
        r,
    }
}

fn describe(s: &Shape, scene: &Scene) -> String {
    format!(
        "A {} {} on a {} background.",
        s.colour.name(),
        s.kind.name(),
        scene.background_name()
    )
}

fn colour(n: usize, rng: &mut Rng, img: &mut Rng) -> Draft {
    let colour = *rng.pick(&Colour::ALL);
    let kind = *img.pick(&Kind::ALL);
    let mut scene = Scene::new(img);
    let s = big_shape(kind, colour, img);
    scene.shapes.push(s);
    Draft {
        question: "What color is the shape?".into(),
        hint: String::new(),
        answer: colour.name().into(),
        distractors: others(&colour_names(), &[colour.name()], n - 1, rng),
        lecture: String::new(),
        solution: format!("The shape is {}.", colour.name()),
        caption: Some(describe(&s, &scene)),
        scene: Some(scene),
    }
}

fn shape_kind(n: usize, rng: &mut Rng, img: &mut Rng) -> Draft {
    let kind = *rng.pick(&Kind::ALL);
    let colour = *img.pick(&Colour::ALL);
    let mut scene = Scene::new(img);
    let s = big_shape(kind, colour, img);
    scene.shapes.push(s);
    Draft {
        question: "Which shape is in the picture?".into(),
        hint: String::new(),
        answer: kind.name().into(),
        distractors: others(&kind_names(), &[kind.name()], n - 1, rng),
        lecture: "A circle is round.\nA square has four equal sides.\nA triangle has three sides."
            .into(),
        solution: format!("The shape in the picture is a {}.", kind.name()),
        caption: Some(describe(&s, &scene)),
        scene: Some(scene),
    }
}

/// 1 to 5 equal shapes (same kind, colour and size) in distinct cells of a 3x3 grid, so the
/// count is proportional to the coloured area.
fn count(n: usize, rng: &mut Rng, img: &mut Rng) -> Draft {
    let k = rng.range_i32(1, 5) as usize;
    let kind = *rng.pick(&Kind::ALL);
    let colour = *img.pick(&Colour::ALL);
    let mut scene = Scene::on_white();
    let cells = img.sample(&(0..9).collect::<Vec<i32>>(), k);
    let cell = SIZE as i32 / 3;
    for c in cells {
        scene.shapes.push(Shape {
            kind,
            colour,
            cx: (c % 3) * cell + cell / 2 + img.range_i32(-6, 6),
            cy: (c / 3) * cell + cell / 2 + img.range_i32(-6, 6),
            r: 22,
        });
    }
    let numbers = ["1", "2", "3", "4", "5"];
    let plural = if k == 1 { "" } else { "s" };
    Draft {
        question: format!("How many {}s are there?", kind.name()),
        hint: String::new(),
        answer: k.to_string(),
        distractors: others(&numbers, &[numbers[k - 1]], n - 1, rng),
        lecture: "Count each shape once.\nThe last number you count is how many there are.".into(),
        solution: format!(
            "There {} {k} {}{plural} in the picture.",
            if k == 1 { "is" } else { "are" },
            kind.name()
        ),
        caption: Some(format!(
            "{} {} {}{plural} on a {} background.",
            number_word(k),
            colour.name(),
            kind.name(),
            scene.background_name()
        )),
        scene: Some(scene),
    }
}

/// One mid-sized shape pushed to one side of the picture.
fn position(n: usize, rng: &mut Rng, img: &mut Rng) -> Draft {
    let sides = ["left", "right", "top", "bottom"];
    let side = rng.below(4);
    let kind = *img.pick(&Kind::ALL);
    let colour = *img.pick(&Colour::ALL);
    let mut scene = Scene::new(img);
    let r = img.range_i32(30, 38);
    let e = Shape::extent(kind, r);
    let c = SIZE as i32 / 2;
    let near = img.range_i32(e + 6, 62);
    let along = c + img.range_i32(-16, 16);
    let far = SIZE as i32 - near;
    let (cx, cy) = match side {
        0 => (near, along),
        1 => (far, along),
        2 => (along, near),
        _ => (along, far),
    };
    scene.shapes.push(Shape {
        kind,
        colour,
        cx,
        cy,
        r,
    });
    let place = |s: &str| match s {
        "left" | "right" => format!("on the {s}"),
        _ => format!("at the {s}"),
    };
    Draft {
        question: "Where is the shape?".into(),
        hint: String::new(),
        answer: sides[side].into(),
        distractors: others(&sides, &[sides[side]], n - 1, rng),
        lecture: "Left, right, top and bottom tell where something is in a picture.".into(),
        solution: format!("The shape is {} of the picture.", place(sides[side])),
        caption: Some(format!(
            "A {} {} {} of a {} picture.",
            colour.name(),
            kind.name(),
            place(sides[side]),
            scene.background_name()
        )),
        scene: Some(scene),
    }
}

/// "Which X is a {class}?": the answer from one class, distractors from the others.
fn from_classes(
    classes: &[(&'static str, &'static [&'static str])],
    n: usize,
    rng: &mut Rng,
    question: impl Fn(&str) -> String,
    lecture: &str,
    solution: impl Fn(&str, &str) -> String,
) -> Draft {
    let (class, members) = *rng.pick(classes);
    let answer = *rng.pick(members);
    let pool: Vec<&str> = classes
        .iter()
        .filter(|(c, _)| *c != class)
        .flat_map(|(_, m)| m.iter().copied())
        .collect();
    Draft {
        question: question(class),
        hint: String::new(),
        answer: answer.into(),
        distractors: others(&pool, &[], n - 1, rng),
        lecture: lecture.into(),
        solution: solution(answer, class),
        scene: None,
        caption: None,
    }
}

fn weather(n: usize, rng: &mut Rng) -> Draft {
    let w = *rng.pick(&WEATHER);
    let town = *rng.pick(&TOWNS);
    Draft {
        question: format!("What is the weather in {town}?"),
        hint: format!("It is {w} in {town} today."),
        answer: w.into(),
        distractors: others(&WEATHER, &[w], n - 1, rng),
        // Empty lecture and solution, as some ScienceQA problems have.
        lecture: String::new(),
        solution: String::new(),
        scene: None,
        caption: None,
    }
}

fn capital(n: usize, rng: &mut Rng) -> Draft {
    let (country, city) = *rng.pick(&CAPITALS);
    let cities: Vec<&str> = CAPITALS.iter().map(|&(_, c)| c).collect();
    Draft {
        question: format!("What is the capital of {country}?"),
        hint: String::new(),
        answer: city.into(),
        distractors: others(&cities, &[city], n - 1, rng),
        lecture: "A capital is the city where a country's government meets.".into(),
        solution: format!("{city} is the capital of {country}."),
        scene: None,
        caption: None,
    }
}

fn continent(n: usize, rng: &mut Rng) -> Draft {
    let c = *rng.pick(&CONTINENTS);
    Draft {
        question: "Which is a continent?".into(),
        hint: String::new(),
        answer: c.into(),
        distractors: others(&NOT_CONTINENTS, &[], n - 1, rng),
        lecture: "A continent is one of the seven large areas of land on Earth.".into(),
        solution: format!("{c} is a continent."),
        scene: None,
        caption: None,
    }
}

fn opposite(n: usize, rng: &mut Rng) -> Draft {
    let &(a, b) = rng.pick(&OPPOSITES);
    let (word, answer) = if rng.chance(1, 2) { (a, b) } else { (b, a) };
    let all: Vec<&str> = OPPOSITES.iter().flat_map(|&(x, y)| [x, y]).collect();
    Draft {
        question: format!("Which word is the opposite of {word}?"),
        hint: String::new(),
        answer: answer.into(),
        distractors: others(&all, &[word, answer], n - 1, rng),
        lecture: "Opposites are words with opposite meanings.".into(),
        solution: format!("The opposite of {word} is {answer}."),
        scene: None,
        caption: None,
    }
}

fn rhyme(n: usize, rng: &mut Rng) -> Draft {
    let fam = rng.below(RHYMES.len());
    let (ending, words) = RHYMES[fam];
    let pair = rng.sample(words, 2);
    let pool: Vec<&str> = RHYMES
        .iter()
        .enumerate()
        .filter(|&(i, _)| i != fam)
        .flat_map(|(_, (_, w))| w.iter().copied())
        .collect();
    Draft {
        question: format!("Which word rhymes with {}?", pair[0]),
        hint: String::new(),
        answer: pair[1].into(),
        distractors: others(&pool, &[], n - 1, rng),
        lecture: "Words rhyme when they end with the same sound.".into(),
        solution: format!(
            "{} and {} both end with {ending}.",
            capitalise(pair[1]),
            pair[0]
        ),
        scene: None,
        caption: None,
    }
}

fn alphabet(n: usize, rng: &mut Rng) -> Draft {
    let mut words = rng.sample(&ABC_WORDS, n);
    words.sort_unstable();
    let answer = words.remove(0);
    Draft {
        question: "Which word comes first in ABC order?".into(),
        hint: String::new(),
        solution: format!(
            "{} starts with {}.\nIt comes first.",
            capitalise(answer),
            &answer[..1]
        ),
        answer: answer.into(),
        distractors: words.into_iter().map(str::to_string).collect(),
        lecture: "In ABC order, words are sorted by their first letter.".into(),
        scene: None,
        caption: None,
    }
}

fn pet(n: usize, rng: &mut Rng) -> Draft {
    let name = *rng.pick(&NAMES);
    let p = *rng.pick(&PETS);
    Draft {
        question: format!("What pet does {name} have?"),
        hint: format!("{name} has a pet {p}."),
        answer: p.into(),
        distractors: others(&PETS, &[p], n - 1, rng),
        lecture: String::new(),
        solution: format!("The text says that {name} has a {p}."),
        scene: None,
        caption: None,
    }
}
