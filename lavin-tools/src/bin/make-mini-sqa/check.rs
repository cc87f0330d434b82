//! `--check`: regenerate into a temporary folder and compare with a folder byte for byte.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// All regular files under `root`, as paths relative to it ('/'-separated, sorted).
fn files(root: &Path) -> io::Result<BTreeSet<String>> {
    let mut out = BTreeSet::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in fs::read_dir(root.join(&rel))? {
            let entry = entry?;
            let rel = rel.join(entry.file_name());
            if entry.file_type()?.is_dir() {
                stack.push(rel);
            } else {
                out.insert(rel.to_string_lossy().replace('\\', "/"));
            }
        }
    }
    Ok(out)
}

/// Differences between `expected` (fresh generation) and `actual` (the folder checked), one
/// line each; empty when identical.
pub fn compare(expected: &Path, actual: &Path) -> io::Result<Vec<String>> {
    let want = files(expected)?;
    let have = files(actual)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", actual.display())))?;
    let mut diffs = Vec::new();
    for f in want.difference(&have) {
        diffs.push(format!("missing: {f}"));
    }
    for f in have.difference(&want) {
        diffs.push(format!("unexpected: {f}"));
    }
    for f in want.intersection(&have) {
        if fs::read(expected.join(f))? != fs::read(actual.join(f))? {
            diffs.push(format!("differs: {f}"));
        }
    }
    Ok(diffs)
}

/// A fresh, empty folder under the system temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> io::Result<Self> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("make-mini-sqa-{}-{nanos}", std::process::id()));
        fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}
