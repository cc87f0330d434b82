//! The tiny pretrained base shipped in the repository (`assets/tiny-base/`) and the bundled mini
//! ScienceQA (`data/mini-sqa/`): where they are and the shapes the base was trained at.

use std::path::{Path, PathBuf};

use crate::weights::{LlamaWeights, LoadSpec};
use crate::LavinConfig;

/// The LLaMA folder of the base (Hugging Face layout).
pub const LLAMA_DIR: &str = "llama";
/// OpenAI-named CLIP vision weights.
pub const CLIP_FILE: &str = "clip-vision.safetensors";
/// The SentencePiece tokenizer (vocab 512) the LLaMA was trained with.
pub const TOKENIZER_FILE: &str = "tokenizer.model";

/// `encode("Image: ", bos=False, eos=False)` with the bundled tokenizer.
pub const PREFIX_IMG: [u32; 3] = [377, 428, 418];
/// `encode("Image: N/A", bos=False, eos=False)` with the bundled tokenizer.
pub const PREFIX_NONIMG: [u32; 5] = [377, 428, 296, 454, 438];

/// The shapes of the CPU default run (and of `assets/tiny-base`), sized for 2 CPU cores:
/// the CLIP tower runs on every item of every batch (text items get a zero image) and the
/// frozen LLaMA must be back-propagated through, so both are narrow (width 64, dim 64).
/// 8 CLIP blocks give 2 image feature tokens; 4 LLaMA layers leave room to match options
/// against the context. Adapter dropout is off (tiny adapters, few epochs).
/// Prefix ids are those of the bundled tokenizer (checked by a test).
pub fn config() -> LavinConfig {
    // The parity case's shapes (LavinConfig::tiny) with a deeper LLaMA and a narrower CLIP.
    let mut c = LavinConfig::tiny();
    c.llama.n_layers = 4;
    c.clip.width = 64;
    c.adapter.hidden_proj = 32;
    c.adapter.dropout = 0.0;
    c.max_seq_len = 96;
    c.prefix_img = PREFIX_IMG.to_vec();
    c.prefix_nonimg = PREFIX_NONIMG.to_vec();
    c
}

/// The workspace root: the parent of this crate's manifest dir (compile-time), falling back
/// to the current directory when the binary runs elsewhere.
pub fn workspace_root() -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    if compiled.join("data").join("mini-sqa").is_dir() {
        compiled
    } else {
        PathBuf::from(".")
    }
}

/// The bundled tiny base.
pub fn base_dir() -> PathBuf {
    workspace_root().join("assets").join("tiny-base")
}

/// The bundled mini dataset.
pub fn data_root() -> PathBuf {
    workspace_root().join("data").join("mini-sqa")
}

/// What to load for a base folder of this layout (adapters fresh).
pub fn spec(dir: &Path) -> LoadSpec {
    LoadSpec {
        llama: LlamaWeights::HuggingFace(dir.join(LLAMA_DIR)),
        clip: dir.join(CLIP_FILE),
        adapters: None,
        format: Default::default(),
    }
}
