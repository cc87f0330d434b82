//! lavin-infer: everything a user does with a trained LaVIN — ScienceQA and MME evaluation,
//! scoring, chat in the terminal and in a browser (with an OpenAI-compatible API).
//!
//! All tools talk to the model through the [`generator::Generator`] trait, so they run (and are
//! tested) with [`generator::ScriptedGenerator`] as well as with the real model
//! ([`lavin_generator::LavinGenerator`]).
//!
//! Modules: [`sampling`] (greedy / temperature / top-p / top-k on the device), [`eval_sqa`]
//! (ScienceQA eval and `score`), [`eval_mme`], [`chat`] (the demo's conversation format and the
//! terminal loop), [`serve`] (web page + OpenAI-compatible API), [`images`] (decoding uploads and
//! files), [`model_args`] (the flags that describe a model) and [`load`] (which turns them into a
//! generator), [`cli`].

pub mod bench;
pub mod chat;
pub mod cli;
pub mod eval_mme;
pub mod eval_sqa;
pub mod generator;
pub mod images;
pub mod lavin_generator;
pub mod load;
pub mod model_args;
pub mod sampling;
pub mod serve;
pub mod tools;

/// An error and its causes on one line, each cause shown only when the message above it does
/// not already include it (most errors here print their source inline).
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(cause) = cur {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        cur = cause.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    #[test]
    fn error_chain_skips_repeated_causes() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "gone");
        let e = anyhow::Error::new(io).context("cannot read x: gone");
        assert_eq!(super::error_chain(e.as_ref()), "cannot read x: gone");
        let e = anyhow::anyhow!("inner").context("outer");
        assert_eq!(super::error_chain(e.as_ref()), "outer: inner");
    }
}
