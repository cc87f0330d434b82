//! Multi-turn chat with the original demo's conversation format, in the terminal.
//!
//! The format (`conversation/conversation.py` of the original, `CONV_VISION`): no system text,
//! roles `Instruction` and `Responese` (sic), separator `"\n"`; the prompt is
//! `role + ": " + text + "\n"` per message and `"Responese:"` for the open turn. An image adds the
//! message `<Img><ImageHere></Img>`; the next question is joined to that same message with a
//! space. When the prompt contains the marker it is removed and the request carries the image
//! (indicator 1), otherwise none. One image per conversation. The reply is the text after the
//! last `Responese:` of the decoded output, trimmed.

use std::io::{BufRead, Write};

use crate::generator::{GenError, GenRequest, Generator, ImageInput, SamplingParams};

/// The user's role name.
pub const ROLE_USER: &str = "Instruction";
/// The model's role name, misspelt as in the original (the adapters were trained with it).
pub const ROLE_ASSISTANT: &str = "Responese";
/// The image placeholder message.
pub const IMAGE_MARKER: &str = "<Img><ImageHere></Img>";
/// The demo's router temperature.
pub const CHAT_ROUTER_TEMPERATURE: f32 = 5.0;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// [`ROLE_USER`] or [`ROLE_ASSISTANT`].
    pub role: &'static str,
    /// Its text; `None` = the open turn.
    pub text: Option<String>,
}

/// A conversation: messages plus at most one image.
#[derive(Debug, Clone, Default)]
pub struct Conversation {
    /// The messages so far.
    pub messages: Vec<Message>,
    /// The conversation's image.
    pub image: Option<ImageInput>,
}

impl Conversation {
    /// An empty conversation.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attaches an image: adds the marker message (as the demo's `upload_img`). A conversation
    /// holds one image; a second call replaces it and its marker.
    pub fn set_image(&mut self, image: ImageInput) {
        if self.image.is_some() {
            for m in &mut self.messages {
                if let Some(t) = &mut m.text {
                    *t = t.replace(IMAGE_MARKER, "").trim_start().to_string();
                }
            }
        }
        self.image = Some(image);
        self.messages.push(Message {
            role: ROLE_USER,
            text: Some(IMAGE_MARKER.to_string()),
        });
    }

    /// Adds a user question (joined to a preceding image message, as the demo's `ask`).
    pub fn ask(&mut self, text: &str) {
        if let Some(last) = self.messages.last_mut() {
            if last.role == ROLE_USER {
                if let Some(t) = &mut last.text {
                    if t.ends_with("</Img>") {
                        *t = format!("{t} {text}");
                        return;
                    }
                }
            }
        }
        self.messages.push(Message {
            role: ROLE_USER,
            text: Some(text.to_string()),
        });
    }

    /// The raw prompt with an open model turn (marker still inside), as `get_prompt` builds it.
    pub fn prompt(&self) -> String {
        let mut out = String::new();
        let open = Message {
            role: ROLE_ASSISTANT,
            text: None,
        };
        for m in self.messages.iter().chain(std::iter::once(&open)) {
            match &m.text {
                Some(t) if !t.is_empty() => {
                    out.push_str(m.role);
                    out.push_str(": ");
                    out.push_str(t);
                    out.push('\n');
                }
                _ => {
                    out.push_str(m.role);
                    out.push(':');
                }
            }
        }
        out
    }

    /// The generation request for the next reply: marker removed, image attached when the
    /// prompt had the marker (as `get_context_emb`).
    pub fn request(&self) -> GenRequest {
        let prompt = self.prompt();
        if prompt.contains(IMAGE_MARKER) {
            GenRequest {
                prompt: prompt.replace(IMAGE_MARKER, ""),
                image: self.image.clone(),
            }
        } else {
            GenRequest {
                prompt,
                image: None,
            }
        }
    }

    /// Records the model's reply.
    pub fn add_reply(&mut self, reply: &str) {
        self.messages.push(Message {
            role: ROLE_ASSISTANT,
            text: Some(reply.to_string()),
        });
    }
}

/// The reply inside a decoded output: text after the last `Responese:`, trimmed.
pub fn extract_reply(decoded: &str) -> String {
    let tail = decoded
        .rsplit_once(&format!("{ROLE_ASSISTANT}:"))
        .map(|(_, t)| t)
        .unwrap_or(decoded);
    tail.trim().to_string()
}

/// One turn: ask, generate (streaming the completion to `on_delta`), record and return the reply.
pub fn chat_turn(
    conv: &mut Conversation,
    question: &str,
    generator: &mut dyn Generator,
    params: &SamplingParams,
    on_delta: &mut dyn FnMut(&str),
) -> Result<String, GenError> {
    conv.ask(question);
    let req = conv.request();
    let result = generator.generate(std::slice::from_ref(&req), params, &mut |_, d| on_delta(d));
    match result {
        Ok(out) => {
            let reply = out
                .first()
                .map(|o| extract_reply(&o.text))
                .unwrap_or_default();
            conv.add_reply(&reply);
            Ok(reply)
        }
        Err(e) => {
            // Undo the question so the conversation stays usable.
            undo_last_question(conv, question);
            Err(e)
        }
    }
}

fn undo_last_question(conv: &mut Conversation, question: &str) {
    if let Some(last) = conv.messages.last_mut() {
        if let Some(t) = &mut last.text {
            if let Some(stripped) = t.strip_suffix(&format!(" {question}")) {
                if stripped.ends_with("</Img>") {
                    *t = stripped.to_string();
                    return;
                }
            }
        }
    }
    conv.messages.pop();
}

/// A terminal command or a question.
#[derive(Debug, PartialEq, Eq)]
pub enum Input<'a> {
    /// `/image <path>`.
    Image(&'a str),
    /// `/reset`.
    Reset,
    /// `/quit` or `/exit`.
    Quit,
    /// `/help`.
    Help,
    /// An unknown `/command`.
    Unknown(&'a str),
    /// A blank line.
    Empty,
    /// Anything else.
    Question(&'a str),
}

/// Parses one line typed by the user.
pub fn parse_input(line: &str) -> Input<'_> {
    let line = line.trim();
    if line.is_empty() {
        return Input::Empty;
    }
    if let Some(rest) = line.strip_prefix('/') {
        let (cmd, arg) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        return match cmd {
            "image" if !arg.trim().is_empty() => Input::Image(arg.trim()),
            "reset" => Input::Reset,
            "quit" | "exit" => Input::Quit,
            "help" => Input::Help,
            _ => Input::Unknown(line),
        };
    }
    Input::Question(line)
}

/// Help text of the terminal chat.
pub const HELP: &str = "commands: /image <path> (start a new chat about an image), /reset, /quit";

/// Loads an image file for the chat.
pub type ImageLoader<'a> = dyn FnMut(&str) -> anyhow::Result<ImageInput> + 'a;

/// The terminal loop: reads lines from `input`, writes prompts and streamed replies to `out`.
pub fn run_chat(
    generator: &mut dyn Generator,
    params: &SamplingParams,
    initial_image: Option<ImageInput>,
    load_image: &mut ImageLoader<'_>,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let mut conv = Conversation::new();
    if let Some(img) = initial_image {
        writeln!(out, "[image: {}]", img.name)?;
        conv.set_image(img);
    }
    writeln!(out, "{HELP}")?;
    let mut line = String::new();
    loop {
        write!(out, "> ")?;
        out.flush()?;
        line.clear();
        if input.read_line(&mut line)? == 0 {
            writeln!(out)?;
            return Ok(());
        }
        match parse_input(&line) {
            Input::Empty => continue,
            Input::Quit => return Ok(()),
            Input::Help => writeln!(out, "{HELP}")?,
            Input::Unknown(cmd) => writeln!(out, "unknown command {cmd:?}; {HELP}")?,
            Input::Reset => {
                conv = Conversation::new();
                writeln!(out, "[conversation reset, no image]")?;
            }
            Input::Image(path) => match load_image(path) {
                Ok(img) => {
                    conv = Conversation::new();
                    writeln!(out, "[new conversation with image {}]", img.name)?;
                    conv.set_image(img);
                }
                Err(e) => writeln!(out, "error: {}", crate::error_chain(e.as_ref()))?,
            },
            Input::Question(q) => {
                let mut streamed = String::new();
                let mut write_err = None;
                let result = chat_turn(&mut conv, q, generator, params, &mut |d| {
                    streamed.push_str(d);
                    if let Err(e) = write!(out, "{d}").and_then(|_| out.flush()) {
                        write_err = Some(e);
                    }
                });
                if let Some(e) = write_err {
                    return Err(e.into());
                }
                match result {
                    Ok(reply) => {
                        if streamed.trim() != reply {
                            // The stream carried text the reply does not keep (or nothing).
                            if !streamed.is_empty() {
                                writeln!(out)?;
                            }
                            write!(out, "{reply}")?;
                        }
                        writeln!(out)?;
                    }
                    Err(e) => writeln!(out, "\nerror: {e}")?,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::ScriptedGenerator;
    use std::sync::Arc;

    fn img() -> ImageInput {
        ImageInput {
            name: "cat.png".into(),
            pixels: Arc::new(vec![0.0; 3 * 224 * 224]),
        }
    }

    #[test]
    fn text_only_prompt() {
        let mut c = Conversation::new();
        c.ask("Hi there");
        assert_eq!(c.prompt(), "Instruction: Hi there\nResponese:");
        let r = c.request();
        assert!(r.image.is_none());
        c.add_reply("Hello.");
        c.ask("Bye");
        assert_eq!(
            c.prompt(),
            "Instruction: Hi there\nResponese: Hello.\nInstruction: Bye\nResponese:"
        );
    }

    #[test]
    fn image_marker_rules() {
        let mut c = Conversation::new();
        c.set_image(img());
        c.ask("What is this?");
        assert_eq!(
            c.prompt(),
            "Instruction: <Img><ImageHere></Img> What is this?\nResponese:"
        );
        let r = c.request();
        // The marker goes, its joining space stays (as in the original).
        assert_eq!(r.prompt, "Instruction:  What is this?\nResponese:");
        assert!(r.image.is_some());
        c.add_reply("A cat.");
        c.ask("Colour?");
        let r = c.request();
        assert!(r.image.is_some(), "the image stays for later turns");
        assert!(r
            .prompt
            .ends_with("Responese: A cat.\nInstruction: Colour?\nResponese:"));
    }

    #[test]
    fn reply_is_after_last_role() {
        assert_eq!(
            extract_reply("Instruction: a\nResponese: b\nInstruction: c\nResponese: d e \n"),
            "d e"
        );
        assert_eq!(extract_reply("no role"), "no role");
    }

    #[test]
    fn parse_commands() {
        assert_eq!(parse_input(" /image a b.png "), Input::Image("a b.png"));
        assert_eq!(parse_input("/reset"), Input::Reset);
        assert_eq!(parse_input("/quit"), Input::Quit);
        assert_eq!(parse_input("/image"), Input::Unknown("/image"));
        assert_eq!(parse_input("  "), Input::Empty);
        assert_eq!(parse_input("why?"), Input::Question("why?"));
    }

    #[test]
    fn terminal_loop_streams_and_handles_commands() {
        let mut g = ScriptedGenerator::echo();
        let script = "hello\n/image cat.png\nwhat is it?\n/image missing.png\n/reset\n/quit\n";
        let mut input = std::io::Cursor::new(script.as_bytes());
        let mut out = Vec::new();
        let mut loader = |p: &str| {
            if p == "cat.png" {
                Ok(img())
            } else {
                anyhow::bail!("cannot read image {p}")
            }
        };
        run_chat(
            &mut g,
            &SamplingParams::default(),
            None,
            &mut loader,
            &mut input,
            &mut out,
        )
        .unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(
            out.contains("I see no image and you said: Instruction: hello"),
            "{out}"
        );
        assert!(
            out.contains("I see an image and you said: Instruction:  what is it?"),
            "{out}"
        );
        assert!(
            out.contains("error: cannot read image missing.png"),
            "{out}"
        );
        assert!(out.contains("[conversation reset"), "{out}");
        assert_eq!(g.calls, 2);
    }

    #[test]
    fn failed_turn_is_undone() {
        let mut g = ScriptedGenerator::constant("x");
        g.max_prompt_chars = 40;
        let mut c = Conversation::new();
        c.set_image(img());
        let long = "q".repeat(100);
        let p = SamplingParams::default();
        assert!(chat_turn(&mut c, &long, &mut g, &p, &mut |_| {}).is_err());
        assert_eq!(c.messages.len(), 1);
        assert_eq!(c.messages[0].text.as_deref(), Some(IMAGE_MARKER));
        assert_eq!(
            chat_turn(&mut c, "ok?", &mut g, &p, &mut |_| {}).unwrap(),
            "x"
        );
    }
}
