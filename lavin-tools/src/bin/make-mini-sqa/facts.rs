//! Fixed fact tables for the text-only questions.
//!
//! Why small and fixed: the tiny language model can only learn what it sees repeatedly. Every
//! fact here shows up many times in the train split (with different distractors and option
//! orders), so val/test ask about known facts in new combinations, as ScienceQA does.
//! Words are short and common so that prompts stay short in the 512-piece tokenizer.

/// Animal classes (name used in "Which animal is a {class}?") and members.
pub const ANIMALS: [(&str, &[&str]); 5] = [
    (
        "mammal",
        &["dog", "cat", "cow", "horse", "pig", "whale", "lion"],
    ),
    ("bird", &["duck", "owl", "hen", "crow", "robin"]),
    ("fish", &["shark", "trout", "tuna", "salmon"]),
    ("reptile", &["snake", "lizard", "turtle"]),
    ("insect", &["ant", "bee", "moth"]),
];

/// What each animal class has, for the lecture.
pub const ANIMAL_LECTURE: &str = "Mammals have fur and feed their young milk.\nBirds have \
feathers and lay eggs.\nFish live in water and have fins.\nReptiles have dry scales.\nInsects \
have six legs.";

/// States of matter and examples.
pub const MATTER: [(&str, &[&str]); 3] = [
    ("solid", &["rock", "ice", "wood", "coin", "book"]),
    ("liquid", &["milk", "juice", "water", "oil"]),
    ("gas", &["steam", "air", "helium"]),
];

/// What the states of matter do, for the lecture.
pub const MATTER_LECTURE: &str = "A solid has its own shape.\nA liquid takes the shape of its \
container.\nA gas fills all the space it is in.";

/// Countries and their capitals.
pub const CAPITALS: [(&str, &str); 8] = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Italy", "Rome"),
    ("Spain", "Madrid"),
    ("Egypt", "Cairo"),
    ("Peru", "Lima"),
    ("Kenya", "Nairobi"),
    ("China", "Beijing"),
];

/// Continents, and places that are not continents (distractors).
pub const CONTINENTS: [&str; 5] = ["Asia", "Africa", "Europe", "Australia", "Antarctica"];
pub const NOT_CONTINENTS: [&str; 8] = [
    "France", "Japan", "Peru", "Kenya", "Paris", "Rome", "Texas", "Chile",
];

/// Pairs of opposites (asked in both directions).
pub const OPPOSITES: [(&str, &str); 10] = [
    ("hot", "cold"),
    ("big", "small"),
    ("up", "down"),
    ("fast", "slow"),
    ("wet", "dry"),
    ("old", "new"),
    ("day", "night"),
    ("open", "shut"),
    ("happy", "sad"),
    ("light", "dark"),
];

/// Rhyme families: words in one family rhyme, words of different families do not.
pub const RHYMES: [(&str, &[&str]); 6] = [
    ("-at", &["cat", "hat", "bat", "mat", "rat"]),
    ("-og", &["dog", "log", "fog", "frog"]),
    ("-en", &["pen", "ten", "hen", "men"]),
    ("-un", &["sun", "run", "fun", "bun"]),
    ("-ake", &["cake", "lake", "bake", "rake"]),
    ("-ig", &["pig", "big", "dig", "wig"]),
];

/// Words with pairwise different first letters, for alphabetical order.
pub const ABC_WORDS: [&str; 22] = [
    "apple", "ball", "cat", "dog", "egg", "fish", "goat", "hat", "ink", "jam", "kite", "lamp",
    "moon", "nest", "owl", "pig", "rock", "sun", "tree", "van", "web", "zoo",
];

/// Weather words and town names for the weather-report hints.
pub const WEATHER: [&str; 5] = ["sunny", "rainy", "snowy", "windy", "cloudy"];
pub const TOWNS: [&str; 6] = ["Salem", "Dover", "Aspen", "Reno", "Boise", "Troy"];

/// Pets and people for the reading hints.
pub const PETS: [&str; 6] = ["dog", "cat", "fish", "bird", "frog", "hen"];
pub const NAMES: [&str; 8] = ["Ann", "Bob", "Tom", "Mia", "Sam", "Eva", "Max", "Zoe"];
