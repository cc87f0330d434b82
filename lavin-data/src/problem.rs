//! One ScienceQA problem as `problems.json` stores it: the record both prompt building
//! ([`crate::prompt`]) and dataset loading ([`crate::scienceqa`]) work on. Depends on no other
//! module of the crate.

use serde::{Deserialize, Deserializer, Serialize};

/// One ScienceQA problem (a value of `problems.json`), plus its caption.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Problem {
    pub question: String,
    pub choices: Vec<String>,
    /// Index of the correct choice.
    pub answer: usize,
    /// Text context; `null` is read as "".
    #[serde(deserialize_with = "null_as_empty")]
    pub hint: String,
    /// Image file name (always `image.png` in ScienceQA) or `None`.
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub task: String,
    /// `"grade1"` .. `"grade12"`.
    pub grade: String,
    /// `"natural science"`, `"social science"` or `"language science"`.
    pub subject: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub topic: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub category: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub skill: String,
    #[serde(deserialize_with = "null_as_empty")]
    pub lecture: String,
    #[serde(deserialize_with = "null_as_empty")]
    pub solution: String,
    pub split: String,
    /// From `captions.json` ("" when it has none), as the original attaches it.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub caption: String,
}

impl Problem {
    /// Whether the problem has an image (a non-empty `image` field).
    pub fn has_image(&self) -> bool {
        self.image.as_deref().is_some_and(|s| !s.is_empty())
    }
}

fn null_as_empty<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}
