//! The binaries' side of backends: which Burn backend and precision a job runs on, chosen from
//! `backends.toml`, and the CPU runtime tuning that goes with running a job.
//!
//! The repository's `backends.toml` is embedded at build time ([`DEFAULT_BACKENDS_TOML`]); a
//! different file can be given at run time ([`BackendPrefs::from_path`]). For each job (`train`,
//! `infer`, `tests`, ...) it lists `"backend:precision"` entries in order of preference, and
//! [`BackendPrefs::select`] picks the first backend compiled into this build (cargo features
//! `ndarray`, `flex`, `wgpu`, `cuda` of this crate, which the binaries forward). Forcing a backend that is not compiled in gives an
//! error naming the cargo feature to build with.
//!
//! The file is TOML (read with the `toml` crate; errors name the file and line):
//! a `[jobs]` table whose keys are arrays of strings; `#` comments.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// The repository's `backends.toml`, embedded at build time.
pub const DEFAULT_BACKENDS_TOML: &str = include_str!("../../backends.toml");

use lavin_model::quant::{BaseBits, Bits, QuantError};
pub use lavin_model::Precision;

/// Errors of backend selection.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BackendError {
    /// Unknown backend name.
    #[error("unknown backend `{0}` (expected one of: ndarray, flex, wgpu, cuda)")]
    UnknownBackend(String),
    /// Unknown precision name.
    #[error(transparent)]
    UnknownPrecision(#[from] lavin_model::precision::UnknownPrecision),
    /// Backend exists but this binary was built without it.
    #[error("backend `{backend}` is not compiled into this binary; rebuild with `--features {feature}` (compiled in: {compiled})")]
    NotCompiled {
        /// Requested backend.
        backend: BackendKind,
        /// Cargo feature that enables it.
        feature: &'static str,
        /// Comma-separated list of compiled backends.
        compiled: String,
    },
    /// The backend cannot run at that precision.
    #[error("backend `{backend}` does not support precision `{precision}`: {reason}")]
    UnsupportedPrecision {
        /// Backend.
        backend: BackendKind,
        /// Precision asked for.
        precision: Precision,
        /// Why.
        reason: &'static str,
    },
    /// No backend of the job's list is compiled in.
    #[error("none of the backends preferred for job `{job}` ({tried}) is compiled into this binary; rebuild with one of the features {tried}")]
    NoneCompiled {
        /// Job name.
        job: String,
        /// Its preference list.
        tried: String,
    },
    /// The job is not listed in the preferences file.
    #[error("{origin}: no job `{job}` in [jobs] (jobs: {known})")]
    UnknownJob {
        /// File the preferences came from.
        origin: String,
        /// Job asked for.
        job: String,
        /// Jobs listed.
        known: String,
    },
    /// Syntax error in the preferences file.
    #[error("{origin}:{line}: {message}")]
    Parse {
        /// File (or `<embedded backends.toml>`).
        origin: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The preferences file cannot be read.
    #[error("{path}: {message}")]
    Read {
        /// Path.
        path: String,
        /// OS error.
        message: String,
    },
    /// A base width the backend cannot run.
    #[error(transparent)]
    Bits(#[from] QuantError),
    /// A `--devices` list that does not parse.
    #[error("invalid device list `{input}`: {message} (expected e.g. `0` or `0,1`)")]
    Devices {
        /// The input.
        input: String,
        /// What is wrong.
        message: String,
    },
}

/// Let glibc's allocator keep freed memory for reuse instead of returning it to the kernel.
///
/// The CPU backends allocate and free activation-sized buffers on every op. By default glibc
/// serves each large one with a fresh `mmap` and unmaps it on free, so every op pays page faults
/// and page zeroing again: about 10% of a `small` training step on flex (3.35 -> 3.0 s), with
/// the same peak RSS. No-op outside Linux/glibc.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; any value is accepted or rejected.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

/// Runs `f` on one of the CPU backends' worker threads and returns its result.
///
/// flex and the fused ops (`crate::kernels`) split their work with rayon. Called from a thread outside the pool
/// (`main`), each split wakes the workers and puts the caller to sleep until they finish: two
/// context switches per op, while the calling thread's core does no work. Called from a worker,
/// the caller runs one part itself and wakes one other worker. A decode step at batch 1 makes
/// about sixty such splits in 8-9 ms; run on a worker, `small` decodes 117 -> 124 tok/s (median
/// of six runs each on the 2-core VM). Wrap long CPU work in this: a command, a training
/// run, a server's job. Not the thread that serves connections or blocks on I/O for its life:
/// a worker blocked there takes no part in other threads' rayon work (with a pool of one this
/// runs `f` where it is).
///
/// The pool's threads get the main thread's usual 8 MiB stack when this is the first use of
/// rayon in the process (its default is 2 MiB), so moving deep work here does not shrink it.
pub fn on_worker_thread<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    #[cfg(feature = "flex")]
    {
        static POOL: std::sync::Once = std::sync::Once::new();
        // Fails, harmlessly, when something used rayon before: the pool then keeps its stacks.
        POOL.call_once(|| {
            let _ = rayon::ThreadPoolBuilder::new()
                .stack_size(8 << 20)
                .build_global();
        });
        // With one worker nothing is gained, and that worker blocked in `f` (a data-parallel
        // step joining its device threads) would leave their rayon work nobody to run.
        if rayon::current_num_threads() < 2 {
            return f();
        }
        rayon::scope(|_| f())
    }
    #[cfg(not(feature = "flex"))]
    f()
}

/// Peak resident set size in MiB (`VmHWM` of /proc/self/status; Linux only).
pub fn peak_rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Median of timings (the mean of the middle two for an even count), for the benches.
pub fn median(times: &[f64]) -> f64 {
    let mut sorted = times.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

/// Work that runs generically on whichever backend was chosen at run time.
pub trait BackendJob {
    /// What the job returns.
    type Output;
    /// Runs on backend `B`'s default device.
    fn run<B: burn::tensor::backend::Backend>(
        self,
        device: B::Device,
    ) -> anyhow::Result<Self::Output>;
}

/// Runs `job` on backend `kind` (an error naming the cargo feature if it is not compiled in).
pub fn dispatch<J: BackendJob>(kind: BackendKind, job: J) -> anyhow::Result<J::Output> {
    match kind {
        #[cfg(feature = "ndarray")]
        BackendKind::Ndarray => job.run::<burn::backend::NdArray>(Default::default()),
        #[cfg(feature = "flex")]
        BackendKind::Flex => job.run::<burn::backend::Flex>(Default::default()),
        #[cfg(feature = "wgpu")]
        BackendKind::Wgpu => job.run::<burn::backend::Wgpu>(Default::default()),
        #[cfg(feature = "cuda")]
        BackendKind::Cuda => job.run::<burn::backend::Cuda>(Default::default()),
        #[allow(unreachable_patterns)]
        other => Err(other.ensure_compiled().err().map_or_else(
            || anyhow::anyhow!("backend {other} has no dispatch arm"),
            anyhow::Error::from,
        )),
    }
}

/// A Burn backend this project can be built with.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    clap::ValueEnum,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// CPU reference (burn-ndarray), f32: what the parity tolerances are stated for.
    Ndarray,
    /// Fast CPU backend (burn-flex): zero-copy views and SIMD kernels; f32, f16, bf16.
    Flex,
    /// Portable GPU (burn-wgpu: Vulkan/Metal/DX12).
    Wgpu,
    /// NVIDIA CUDA (burn-cuda).
    Cuda,
}

impl BackendKind {
    /// All kinds.
    pub const ALL: [BackendKind; 4] = [
        BackendKind::Ndarray,
        BackendKind::Flex,
        BackendKind::Wgpu,
        BackendKind::Cuda,
    ];

    /// Lower-case name (`ndarray`, `flex`, `wgpu`, `cuda`).
    pub fn name(self) -> &'static str {
        match self {
            BackendKind::Ndarray => "ndarray",
            BackendKind::Flex => "flex",
            BackendKind::Wgpu => "wgpu",
            BackendKind::Cuda => "cuda",
        }
    }

    /// The cargo feature that compiles it in.
    pub fn cargo_feature(self) -> &'static str {
        self.name()
    }

    /// Whether this build contains the backend.
    pub fn is_compiled(self) -> bool {
        match self {
            BackendKind::Ndarray => cfg!(feature = "ndarray"),
            BackendKind::Flex => cfg!(feature = "flex"),
            BackendKind::Wgpu => cfg!(feature = "wgpu"),
            BackendKind::Cuda => cfg!(feature = "cuda"),
        }
    }

    /// Check that this backend can run at `precision`.
    pub fn check_precision(self, precision: Precision) -> Result<(), BackendError> {
        let reason = match (self, precision) {
            (_, Precision::F32) => return Ok(()),
            (BackendKind::Ndarray, _) => {
                "ndarray is f32 only (use --backend wgpu/cuda for half precision)"
            }
            (BackendKind::Wgpu, Precision::Bf16) => {
                "wgpu has no bf16 support in Burn 0.21 (use fp16 or f32)"
            }
            _ => return Ok(()),
        };
        Err(BackendError::UnsupportedPrecision {
            backend: self,
            precision,
            reason,
        })
    }

    /// Rejects a base width this backend cannot run, so a command fails before any work:
    /// NdArray has no packed 4-bit store (Burn 0.21 packs Q4 on the CubeCL backends only).
    pub fn check_bits(self, bits: Option<Bits>) -> Result<(), QuantError> {
        match (bits, self) {
            (Some(Bits::Four), BackendKind::Ndarray) => Err(QuantError::FourBitNeedsCubecl),
            _ => Ok(()),
        }
    }

    /// Require the backend to be compiled in.
    pub fn ensure_compiled(self) -> Result<(), BackendError> {
        if self.is_compiled() {
            Ok(())
        } else {
            Err(BackendError::NotCompiled {
                backend: self,
                feature: self.cargo_feature(),
                compiled: compiled_list(),
            })
        }
    }
}

fn compiled_list() -> String {
    let v: Vec<&str> = compiled_backends().iter().map(|b| b.name()).collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join(", ")
    }
}

/// The backends compiled into this build.
pub fn compiled_backends() -> Vec<BackendKind> {
    BackendKind::ALL
        .into_iter()
        .filter(|b| b.is_compiled())
        .collect()
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for BackendKind {
    type Err = BackendError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ndarray" | "cpu-ndarray" => Ok(BackendKind::Ndarray),
            "flex" => Ok(BackendKind::Flex),
            "wgpu" => Ok(BackendKind::Wgpu),
            "cuda" => Ok(BackendKind::Cuda),
            _ => Err(BackendError::UnknownBackend(s.to_string())),
        }
    }
}

/// One resolved choice: backend + precision (+ devices, filled by the caller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendChoice {
    /// Backend.
    pub backend: BackendKind,
    /// Precision.
    pub precision: Precision,
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.backend, self.precision)
    }
}

/// The original's flags given on a command line that mean nothing here, with the reason for
/// each; [`IgnoredFlags::line`] is the one line printed at start.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoredFlags {
    /// `(flag as the original spells it, why it is ignored)`, in a fixed order.
    pub flags: Vec<(&'static str, &'static str)>,
}

impl IgnoredFlags {
    /// Records `flag` (with why it is ignored) when it was `given`.
    pub fn note(&mut self, given: bool, flag: &'static str, why: &'static str) {
        if given {
            self.flags.push((flag, why));
        }
    }

    /// The flags' names (`--num_workers`, `--cpu_load`, ...).
    pub fn names(&self) -> Vec<&'static str> {
        self.flags.iter().map(|(f, _)| *f).collect()
    }

    /// Whether no such flag was given.
    pub fn is_empty(&self) -> bool {
        self.flags.is_empty()
    }

    /// One line naming the ignored flags and why (`None` when there are none).
    pub fn line(&self) -> Option<String> {
        if self.flags.is_empty() {
            return None;
        }
        let list: Vec<String> = self
            .flags
            .iter()
            .map(|(f, why)| format!("{f} ({why})"))
            .collect();
        Some(format!(
            "ignoring the original's flags that mean nothing here: {}",
            list.join("; ")
        ))
    }
}

/// The flags that choose where a job runs and how the frozen base is stored; every binary
/// flattens this one group into its command line.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct BackendArgs {
    /// Backend (default: the first backend of this job's list in backends.toml that is
    /// compiled into this binary).
    #[arg(long, value_enum)]
    pub backend: Option<BackendKind>,
    /// Frozen LLaMA weights: f32, fp16 (the original's) or bf16; adapters, norms, optimizer
    /// state and the activations between the frozen matmuls stay f32. Default: the backend's
    /// entry in backends.toml (ndarray: f32 only; wgpu: no bf16).
    #[arg(long, value_enum)]
    pub precision: Option<Precision>,
    /// Frozen LLaMA block linears: dense (16bit), or quantized while loading (LaVIN-lite):
    /// 8bit, or 4bit on wgpu/cuda.
    #[arg(long, value_enum, default_value_t)]
    pub bits: BaseBits,
    /// Use this backends.toml instead of the one built into the binary.
    #[arg(long, alias = "backends_file", value_name = "FILE")]
    pub backends_file: Option<std::path::PathBuf>,
}

impl BackendArgs {
    /// The backend and precision for `job`, checked against the base width before any work
    /// (4-bit on ndarray and fp16 on ndarray are refused here). A CPU backend chosen here also
    /// gets [`keep_freed_memory`] (the commands' entry point to the backends).
    pub fn choose(&self, job: &str) -> Result<BackendChoice, BackendError> {
        let choice = BackendPrefs::load(self.backends_file.as_deref())?.select(
            job,
            self.backend,
            self.precision,
        )?;
        choice.backend.check_bits(self.bits.quantized())?;
        if matches!(choice.backend, BackendKind::Ndarray | BackendKind::Flex) {
            keep_freed_memory();
        }
        Ok(choice)
    }
}

/// Per-job ordered backend preferences.
#[derive(Debug, Clone, PartialEq)]
pub struct BackendPrefs {
    /// Where they came from (a path or `<embedded backends.toml>`).
    pub origin: String,
    /// Job name -> ordered preferences.
    pub jobs: BTreeMap<String, Vec<BackendChoice>>,
}

impl BackendPrefs {
    /// The embedded repository default.
    pub fn embedded() -> Result<Self, BackendError> {
        Self::parse(DEFAULT_BACKENDS_TOML, "<embedded backends.toml>")
    }

    /// Read an override file.
    pub fn from_path(path: &Path) -> Result<Self, BackendError> {
        let text = std::fs::read_to_string(path).map_err(|e| BackendError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// The override file if given, else the embedded default.
    pub fn load(path: Option<&Path>) -> Result<Self, BackendError> {
        match path {
            Some(p) => Self::from_path(p),
            None => Self::embedded(),
        }
    }

    /// Parses `[jobs]` with `name = ["backend:precision", ...]` (precision defaults to f32).
    /// Errors name the origin and the 1-based line of the offending entry.
    pub fn parse(text: &str, origin: &str) -> Result<Self, BackendError> {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            jobs: BTreeMap<String, Vec<toml::Spanned<String>>>,
        }
        let line_of = |offset: usize| text[..offset.min(text.len())].lines().count().max(1);
        let perr = |offset: usize, message: String| BackendError::Parse {
            origin: origin.to_string(),
            line: line_of(offset),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            // A span that starts at a line break belongs to the next line.
            let offset = if text[offset.min(text.len())..].starts_with('\n') {
                offset + 1
            } else {
                offset
            };
            perr(offset, e.message().to_string())
        })?;
        let mut jobs = BTreeMap::new();
        for (job, entries) in file.jobs {
            if entries.is_empty() {
                return Err(BackendError::Parse {
                    origin: origin.to_string(),
                    line: 1,
                    message: format!("job `{job}`: empty backend list"),
                });
            }
            let mut list = Vec::with_capacity(entries.len());
            for entry in entries {
                let at = entry.span().start;
                let (b, p) = entry
                    .get_ref()
                    .split_once(':')
                    .unwrap_or((entry.get_ref(), "f32"));
                let err = |e: BackendError| perr(at, format!("job `{job}`: {e}"));
                list.push(BackendChoice {
                    backend: b.parse().map_err(err)?,
                    precision: p.parse().map_err(|e| err(BackendError::from(e)))?,
                });
            }
            jobs.insert(job, list);
        }
        Ok(Self {
            origin: origin.to_string(),
            jobs,
        })
    }

    /// Pick the backend for `job`.
    ///
    /// * `forced`: `--backend X`; must be compiled in. Its precision is `precision`, or the one the
    ///   job lists for that backend, or f32.
    /// * otherwise the first compiled-in entry of the job's list, its precision replaced by
    ///   `precision` when given.
    ///
    /// The result's precision is checked against the backend (ndarray: f32 only).
    pub fn select(
        &self,
        job: &str,
        forced: Option<BackendKind>,
        precision: Option<Precision>,
    ) -> Result<BackendChoice, BackendError> {
        let list = self.jobs.get(job);
        let choice = match forced {
            Some(b) => {
                b.ensure_compiled()?;
                let listed = list
                    .and_then(|l| l.iter().find(|c| c.backend == b))
                    .map(|c| c.precision);
                BackendChoice {
                    backend: b,
                    precision: precision.or(listed).unwrap_or(Precision::F32),
                }
            }
            None => {
                let list = list.ok_or_else(|| BackendError::UnknownJob {
                    origin: self.origin.clone(),
                    job: job.to_string(),
                    known: self.jobs.keys().cloned().collect::<Vec<_>>().join(", "),
                })?;
                let first = list
                    .iter()
                    .find(|c| c.backend.is_compiled())
                    .ok_or_else(|| BackendError::NoneCompiled {
                        job: job.to_string(),
                        tried: list
                            .iter()
                            .map(|c| c.backend.name())
                            .collect::<Vec<_>>()
                            .join(", "),
                    })?;
                BackendChoice {
                    backend: first.backend,
                    precision: precision.unwrap_or(first.precision),
                }
            }
        };
        choice.backend.check_precision(choice.precision)?;
        Ok(choice)
    }
}

/// Parse `--devices`: comma-separated, distinct device indices (`0`, `0,1`, ` 2, 3 `).
pub fn parse_devices(input: &str) -> Result<Vec<usize>, BackendError> {
    let err = |m: String| BackendError::Devices {
        input: input.to_string(),
        message: m,
    };
    let mut out: Vec<usize> = Vec::new();
    for part in input.split(',') {
        let p = part.trim();
        if p.is_empty() {
            return Err(err("empty entry".into()));
        }
        let d: usize = p
            .parse()
            .map_err(|_| err(format!("`{p}` is not a device index")))?;
        if out.contains(&d) {
            return Err(err(format!("device {d} listed twice")));
        }
        out.push(d);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_file_parses() {
        let p = BackendPrefs::embedded().unwrap();
        assert_eq!(
            p.jobs["train"][0],
            BackendChoice {
                backend: BackendKind::Cuda,
                precision: Precision::F16
            }
        );
        assert_eq!(p.jobs["infer"][0].backend, BackendKind::Wgpu);
        assert_eq!(
            p.jobs["tests"],
            vec![BackendChoice {
                backend: BackendKind::Ndarray,
                precision: Precision::F32
            }]
        );
    }

    #[test]
    fn picks_first_compiled() {
        let p = BackendPrefs::parse(
            "[jobs]\nx = [\"cuda:fp16\", \"wgpu\", \"ndarray:f32\"]\n",
            "t",
        )
        .unwrap();
        let got = p.select("x", None, None);
        match compiled_backends().first() {
            None => assert!(matches!(got, Err(BackendError::NoneCompiled { .. }))),
            Some(_) => {
                let c = got.unwrap();
                assert!(c.backend.is_compiled());
                let expect = [BackendKind::Cuda, BackendKind::Wgpu, BackendKind::Ndarray]
                    .into_iter()
                    .find(|b| b.is_compiled())
                    .unwrap();
                assert_eq!(c.backend, expect);
            }
        }
    }

    #[test]
    fn forced_not_compiled_names_feature() {
        for b in BackendKind::ALL {
            if !b.is_compiled() {
                let e = BackendPrefs::embedded()
                    .unwrap()
                    .select("train", Some(b), None)
                    .unwrap_err();
                assert!(
                    e.to_string()
                        .contains(&format!("--features {}", b.cargo_feature())),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn ndarray_is_f32_only() {
        let e = BackendKind::Ndarray
            .check_precision(Precision::Bf16)
            .unwrap_err();
        assert!(e.to_string().contains("f32 only"));
        assert!(BackendKind::Ndarray.check_precision(Precision::F32).is_ok());
        assert!(BackendKind::Cuda.check_precision(Precision::Bf16).is_ok());
        if BackendKind::Ndarray.is_compiled() {
            let p = BackendPrefs::embedded().unwrap();
            assert!(p.select("tests", None, Some(Precision::F16)).is_err());
            assert_eq!(
                p.select("tests", Some(BackendKind::Ndarray), None)
                    .unwrap()
                    .precision,
                Precision::F32
            );
        }
    }

    #[test]
    fn parse_errors_have_lines() {
        let e = BackendPrefs::parse("[jobs]\n\nx = [\"tpu\"]\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("f.toml:3:") && e.contains("tpu"), "{e}");
        let e = BackendPrefs::parse("[other]\n", "f.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("other"), "{e}");
        let e = BackendPrefs::parse("[jobs]\ntrain = \"cuda\"\n", "g.toml")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("g.toml:2:"), "{e}");
        let multi = BackendPrefs::parse(
            "[jobs] # c\nx = [\n \"wgpu:fp16\", # a\n \"ndarray\"\n]\n",
            "m",
        )
        .unwrap();
        assert_eq!(multi.jobs["x"].len(), 2);
        let e = BackendPrefs::embedded()
            .unwrap()
            .select("nope", None, None)
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope") && e.contains("train"));
    }

    #[test]
    fn four_bit_rejected_on_ndarray_before_work() {
        let e = BackendKind::Ndarray
            .check_bits(Some(Bits::Four))
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "4-bit needs a CubeCL backend (wgpu or cuda); use --bits 8bit on ndarray"
        );
        assert!(BackendKind::Ndarray.check_bits(Some(Bits::Eight)).is_ok());
        assert!(BackendKind::Cuda.check_bits(Some(Bits::Four)).is_ok());
        assert!(BackendKind::Wgpu.check_bits(Some(Bits::Four)).is_ok());
        assert!(BackendKind::Ndarray.check_bits(None).is_ok());
    }

    #[test]
    fn devices() {
        assert_eq!(parse_devices("0").unwrap(), vec![0]);
        assert_eq!(parse_devices(" 0, 1 ").unwrap(), vec![0, 1]);
        assert!(parse_devices("0,,1").is_err());
        assert!(parse_devices("a").unwrap_err().to_string().contains("`a`"));
        assert!(parse_devices("1,1").is_err());
    }

    #[test]
    fn names_roundtrip() {
        for b in BackendKind::ALL {
            assert_eq!(b.name().parse::<BackendKind>().unwrap(), b);
        }
        for p in [Precision::F32, Precision::F16, Precision::Bf16] {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
        }
        assert!("f8".parse::<Precision>().is_err());
    }
}
