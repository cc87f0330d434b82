//! lavin-infer: everything a user does with a trained LaVIN — ScienceQA and MME evaluation,
//! scoring, chat in the terminal and in a browser (with an OpenAI-compatible API).
//!
//! All tools talk to the model through the [`generator::Generator`] trait, so they run (and are
//! tested) with [`generator::ScriptedGenerator`] as well as with the real model.
//!
//! Modules: [`sampling`] (greedy / temperature / top-p / top-k on the device), [`eval_sqa`]
//! (ScienceQA eval and `score`), [`eval_mme`], [`chat`] (the demo's conversation format and the
//! terminal loop), [`serve`] (web page + OpenAI-compatible API), [`images`] (decoding uploads and
//! files), [`wiring`] (model flags and the hook that loads the model), [`cli`].

pub mod chat;
pub mod cli;
pub mod eval_mme;
pub mod eval_sqa;
pub mod generator;
pub mod images;
pub mod sampling;
pub mod serve;
pub mod wiring;
