//! ScienceQA prompt formats, reproducing LaVIN's `util/base_prompt.py` character for character
//! (quirks included: `AL` carries the solution and `AE` the lecture, one-pass double-space
//! replace, a trailing `BECAUSE:` is kept in training outputs).

use std::fmt;
use std::str::FromStr;

use crate::problem::Problem;

/// The option letters of the original (`args.options`): at most five choices.
pub const OPTIONS: [&str; 5] = ["A", "B", "C", "D", "E"];

/// Where the question, context, options and explanation go in the input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputFormat {
    Cqm,
    Qcm,
    Qcml,
    Qcme,
    Qcmle,
    Qclm,
    Qcem,
    Qclem,
}

/// What the target contains (A = answer, L = lecture, E = explanation/solution).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OutputFormat {
    A,
    Al,
    Ae,
    Ale,
    Ael,
    La,
    Ea,
    Lea,
    Ela,
}

/// One of the 23 `--prompt_format` values LaVIN's `train.py` accepts, e.g. `CQM-A`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PromptFormat {
    pub input: InputFormat,
    pub output: OutputFormat,
}

/// The 23 names, in the order of the original's argparse `choices`.
pub const PROMPT_FORMATS: [&str; 23] = [
    "CQM-A", "CQM-LA", "CQM-EA", "CQM-LEA", "CQM-ELA", "CQM-AL", "CQM-AE", "CQM-ALE", "QCM-A",
    "QCM-LA", "QCM-EA", "QCM-LEA", "QCM-ELA", "QCM-AL", "QCM-AE", "QCM-ALE", "QCML-A", "QCME-A",
    "QCMLE-A", "QCLM-A", "QCEM-A", "QCLEM-A", "QCML-AE",
];

/// An unknown `--prompt_format` name.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown prompt format {0:?}; expected one of: {list}", list = PROMPT_FORMATS.join(", "))]
pub struct UnknownPromptFormat(pub String);

impl FromStr for PromptFormat {
    type Err = UnknownPromptFormat;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || UnknownPromptFormat(s.to_owned());
        if !PROMPT_FORMATS.contains(&s) {
            return Err(bad());
        }
        let (i, o) = s.split_once('-').ok_or_else(bad)?;
        let input = match i {
            "CQM" => InputFormat::Cqm,
            "QCM" => InputFormat::Qcm,
            "QCML" => InputFormat::Qcml,
            "QCME" => InputFormat::Qcme,
            "QCMLE" => InputFormat::Qcmle,
            "QCLM" => InputFormat::Qclm,
            "QCEM" => InputFormat::Qcem,
            "QCLEM" => InputFormat::Qclem,
            _ => return Err(bad()),
        };
        let output = match o {
            "A" => OutputFormat::A,
            "AL" => OutputFormat::Al,
            "AE" => OutputFormat::Ae,
            "ALE" => OutputFormat::Ale,
            "AEL" => OutputFormat::Ael,
            "LA" => OutputFormat::La,
            "EA" => OutputFormat::Ea,
            "LEA" => OutputFormat::Lea,
            "ELA" => OutputFormat::Ela,
            _ => return Err(bad()),
        };
        Ok(Self { input, output })
    }
}

impl fmt::Display for PromptFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let i = match self.input {
            InputFormat::Cqm => "CQM",
            InputFormat::Qcm => "QCM",
            InputFormat::Qcml => "QCML",
            InputFormat::Qcme => "QCME",
            InputFormat::Qcmle => "QCMLE",
            InputFormat::Qclm => "QCLM",
            InputFormat::Qcem => "QCEM",
            InputFormat::Qclem => "QCLEM",
        };
        let o = match self.output {
            OutputFormat::A => "A",
            OutputFormat::Al => "AL",
            OutputFormat::Ae => "AE",
            OutputFormat::Ale => "ALE",
            OutputFormat::Ael => "AEL",
            OutputFormat::La => "LA",
            OutputFormat::Ea => "EA",
            OutputFormat::Lea => "LEA",
            OutputFormat::Ela => "ELA",
        };
        write!(f, "{i}-{o}")
    }
}

/// A problem that cannot be turned into a prompt.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PromptError {
    /// `answer` is not an index into `choices` / the option letters.
    #[error("answer index {answer} out of range ({n_choices} choices, at most {max} options)")]
    AnswerOutOfRange {
        answer: usize,
        n_choices: usize,
        max: usize,
    },
    /// More choices than option letters (the original raises IndexError).
    #[error("{n_choices} choices but only {max} option letters")]
    TooManyChoices { n_choices: usize, max: usize },
}

/// The text pieces every format draws from (the original's `get_*_text` helpers).
struct Parts {
    question: String,
    context: String,
    choice: String,
    answer: String,
    lecture: String,
    solution: String,
}

fn parts(p: &Problem, use_caption: bool) -> Result<Parts, PromptError> {
    let max = OPTIONS.len();
    if p.choices.len() > max {
        return Err(PromptError::TooManyChoices {
            n_choices: p.choices.len(),
            max,
        });
    }
    let answer = OPTIONS
        .get(p.answer)
        .filter(|_| p.answer < p.choices.len())
        .ok_or(PromptError::AnswerOutOfRange {
            answer: p.answer,
            n_choices: p.choices.len(),
            max,
        })?;
    let caption = if use_caption { p.caption.as_str() } else { "" };
    let mut context = py_strip(&format!("{} {}", p.hint, caption)).to_owned();
    if context.is_empty() {
        context = "N/A".into();
    }
    let choice = p
        .choices
        .iter()
        .zip(OPTIONS)
        .map(|(c, o)| format!("({o}) {c}"))
        .collect::<Vec<_>>()
        .join(" ");
    Ok(Parts {
        question: p.question.clone(),
        context,
        choice,
        answer: (*answer).to_owned(),
        // The original writes newlines as the two characters `\n` ("GPT-3 can generate...").
        lecture: p.lecture.replace('\n', "\\n"),
        solution: p.solution.replace('\n', "\\n"),
    })
}

fn input_text(f: InputFormat, x: &Parts) -> String {
    let (q, c, m, l, e) = (&x.question, &x.context, &x.choice, &x.lecture, &x.solution);
    match f {
        InputFormat::Cqm => format!("Context: {c}\nQuestion: {q}\nOptions: {m}\n"),
        InputFormat::Qcm => format!("Question: {q}\nContext: {c}\nOptions: {m}\n"),
        InputFormat::Qcml => format!("Question: {q}\nContext: {c}\nOptions: {m}\nBECAUSE: {l}\n"),
        InputFormat::Qcme => format!("Question: {q}\nContext: {c}\nOptions: {m}\nBECAUSE: {e}\n"),
        InputFormat::Qcmle => {
            format!("Question: {q}\nContext: {c}\nOptions: {m}\nBECAUSE: {l} {e}\n")
        }
        InputFormat::Qclm => format!("Question: {q}\nContext: {c}\nBECAUSE: {l}\nOptions: {m}\n"),
        InputFormat::Qcem => format!("Question: {q}\nContext: {c}\nBECAUSE: {e}\nOptions: {m}\n"),
        InputFormat::Qclem => {
            format!("Question: {q}\nContext: {c}\nBECAUSE: {l} {e}\nOptions: {m}\n")
        }
    }
}

fn output_text(f: OutputFormat, x: &Parts) -> String {
    let (a, l, e) = (&x.answer, &x.lecture, &x.solution);
    match f {
        OutputFormat::A => format!("The answer is {a}."),
        // Original quirk: AL carries the solution, AE the lecture.
        OutputFormat::Al => format!("The answer is {a}. BECAUSE: {e}"),
        OutputFormat::Ae => format!("The answer is {a}. BECAUSE: {l}"),
        OutputFormat::Ale => format!("The answer is {a}. BECAUSE: {l} {e}"),
        OutputFormat::Ael => format!("The answer is {a}. BECAUSE: {e} {l}"),
        OutputFormat::La => format!("{l} The answer is {a}."),
        OutputFormat::Ea => format!("{e} The answer is {a}."),
        OutputFormat::Lea => format!("{l} {e} The answer is {a}."),
        OutputFormat::Ela => format!("{e} {l} The answer is {a}."),
    }
}

/// LaVIN's `build_prompt`: `(input, output)`. Training text is `input + output` (no
/// separator); evaluation feeds `input` only. `use_caption` adds `problem.caption` to the
/// context. A trailing `BECAUSE:` (empty lecture and solution) is kept, as the original's
/// stripped copy goes to an unused variable.
pub fn build_prompt(
    problem: &Problem,
    format: PromptFormat,
    use_caption: bool,
) -> Result<(String, String), PromptError> {
    let x = parts(problem, use_caption)?;
    let input = format!("\n{}Response:", input_text(format.input, &x));
    let output = output_text(format.output, &x);
    Ok((clean(&input), clean(&output)))
}

/// LaVIN's `create_one_example` (few-shot helper; unused by LaVIN's training/evaluation).
/// `test_example` ends the text with `Answer:` instead of the answer.
pub fn create_one_example(
    problem: &Problem,
    format: PromptFormat,
    use_caption: bool,
    test_example: bool,
) -> Result<String, PromptError> {
    let x = parts(problem, use_caption)?;
    let output = if test_example {
        "Answer:".to_owned()
    } else {
        format!("Answer: {}", output_text(format.output, &x))
    };
    let text = clean(&(input_text(format.input, &x) + &output));
    // Here the original really drops every `BECAUSE:` when the text ends with one.
    Ok(if text.ends_with("BECAUSE:") {
        py_strip(&text.replace("BECAUSE:", "")).to_owned()
    } else {
        text
    })
}

/// `s.replace("  ", " ").strip()` as Python does it (one non-overlapping pass).
fn clean(s: &str) -> String {
    py_strip(&s.replace("  ", " ")).to_owned()
}

/// Python's `str.strip()` with no argument: Unicode whitespace plus U+001C..U+001F.
pub fn py_strip(s: &str) -> &str {
    s.trim_matches(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_23_formats_round_trip() {
        for name in PROMPT_FORMATS {
            let f: PromptFormat = name.parse().unwrap();
            assert_eq!(f.to_string(), name);
        }
        let e = "CQM-X".parse::<PromptFormat>().unwrap_err().to_string();
        assert!(e.contains("CQM-X") && e.contains("QCML-AE"), "{e}");
        // A valid-looking combination the original does not accept.
        assert!("QCLEM-LEA".parse::<PromptFormat>().is_err());
    }

    #[test]
    fn python_strip_and_replace() {
        assert_eq!(clean("  a   b  "), "a  b");
        assert_eq!(py_strip("\u{1f}\u{a0}x\u{3000}"), "x");
    }
}
