//! Data parallel across devices, processes and machines: one rank per device, one process per
//! node, ranks joined like torchrun's (`--nnodes`, `--node-rank`, `--master-addr`,
//! `--master-port`, or `WORLD_SIZE`/`RANK`/`MASTER_ADDR`/`MASTER_PORT`).
//!
//! Every rank runs the whole training loop on its own replica and its own optimizer, as PyTorch
//! DDP does. Once per optimizer step the adapter gradients are averaged over all ranks in one
//! exchange of a flat buffer ([`all_reduce_grads`]); the buffer also carries the step's loss and
//! counters and the Ctrl-C flag, so every rank logs the same numbers and stops after the same
//! step. Identical gradients and identical starting adapters (checked once,
//! [`check_same_start`]) keep the replicas identical without ever sending weights. Rank 0 logs
//! and writes checkpoints.
//!
//! The exchange: rank 0 listens on the master port; every other rank (threads of node 0
//! included) connects to it. Per step each rank sends its buffer to rank 0, which adds them in
//! rank order and sends the mean back, so every rank gets the same bits. LaVIN's exchange is
//! one buffer of adapter gradients per step (15 MB at 7B), which a star serves well.
//!
//! Why not burn-collective (Burn 0.21's all-reduce across nodes): its cross-node barrier
//! (`SyncService::sync`) clears a copy of its list of arrived peers instead of the list, so the
//! second all-reduce of a registration waits forever (reproduced here with two flex processes
//! over loopback; its own multi-node tests run one all-reduce per registration), and it waits
//! without a timeout for a peer that died. Burn after 0.21 replaces it with a
//! `DistributedContext`; this module is the one place a later switch touches.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use burn::module::{Module, ModuleVisitor, Param};
use burn::optim::GradientsParams;
use burn::tensor::backend::{AutodiffBackend, Backend};
use burn::tensor::{Tensor, TensorData};

use crate::optim::ParamNaming;

/// torchrun's default master port.
pub const DEFAULT_MASTER_PORT: u16 = 29500;
/// Seconds a rank waits for its peers before giving up.
pub const DEFAULT_TIMEOUT_SECS: u64 = 600;

/// First bytes of every connection: a stray client (or another program on the port) is
/// refused instead of misread.
const HELLO: &[u8; 8] = b"LAVIN-DP";
const PROTOCOL: u32 = 1;

/// Where this process sits in the data-parallel group.
#[derive(Debug, Clone, PartialEq)]
pub struct Launch {
    /// Processes (nodes) in the group.
    pub nnodes: usize,
    /// This node's index (0 hosts rank 0, which the others connect to).
    pub node_rank: usize,
    /// Host of node 0.
    pub master_addr: String,
    /// Port rank 0 listens on.
    pub master_port: u16,
    /// How long a rank waits for its peers.
    pub timeout: Duration,
}

impl Default for Launch {
    fn default() -> Self {
        Self {
            nnodes: 1,
            node_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: DEFAULT_MASTER_PORT,
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        }
    }
}

/// A launch setting or an exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// `--node-rank` out of range.
    #[error("--node-rank {rank} must be below --nnodes {nnodes}")]
    Rank {
        /// Given rank.
        rank: usize,
        /// Nodes.
        nnodes: usize,
    },
    /// Rank 0 cannot listen on the master port.
    #[error("--master-port {port}: cannot listen on it ({why}); another run may hold it, pick another port")]
    Listen {
        /// The port.
        port: u16,
        /// Why not.
        why: String,
    },
    /// The ranks did not all meet in time.
    #[error(
        "rank {rank}: rendezvous of {world} ranks at {master}: {why} after {secs} s (see \
         --collective-timeout). Check that every node runs with the same --nnodes, \
         --master-addr and --master-port, and that node 0 is running"
    )]
    Rendezvous {
        /// This rank.
        rank: usize,
        /// Ranks expected.
        world: usize,
        /// `host:port` of rank 0.
        master: String,
        /// What was missing.
        why: String,
        /// How long it waited.
        secs: u64,
    },
    /// A peer broke off or answered nonsense during an exchange.
    #[error("rank {rank}: gradient exchange with rank {peer} failed: {why}")]
    Exchange {
        /// This rank.
        rank: usize,
        /// The other side.
        peer: usize,
        /// What happened.
        why: String,
    },
    /// Ctrl-C before training started.
    #[error("interrupted while waiting for the other ranks; nothing to save")]
    Interrupted,
    /// The ranks do not hold the same adapters at the start.
    #[error(
        "rank {rank}: the ranks start from different adapters (checksum {mine:.9e} here, mean \
         over ranks {mean:.9e}); every rank must load the same base, adapters and --resume \
         checkpoint"
    )]
    Diverged {
        /// This rank.
        rank: usize,
        /// Its checksum.
        mine: f64,
        /// The mean over ranks.
        mean: f64,
    },
}

impl Launch {
    /// Check the settings.
    pub fn validated(self) -> Result<Self, DistError> {
        if self.node_rank >= self.nnodes {
            return Err(DistError::Rank {
                rank: self.node_rank,
                nnodes: self.nnodes,
            });
        }
        Ok(self)
    }

    /// Ranks in the group when each node runs `local_devices` ranks.
    pub fn world(&self, local_devices: usize) -> usize {
        self.nnodes * local_devices
    }

    fn master(&self) -> String {
        format!("{}:{}", self.master_addr, self.master_port)
    }
}

/// How a rank reaches the others.
#[derive(Debug)]
enum Link {
    /// Rank 0: one connection per other rank, index `r - 1`.
    Hub(Vec<TcpStream>),
    /// Every other rank: its connection to rank 0.
    Spoke(TcpStream),
}

/// One rank of the group.
#[derive(Debug)]
pub struct Peer {
    /// This rank (0 logs and writes checkpoints).
    pub rank: usize,
    /// Ranks in the group.
    pub world: usize,
    link: Link,
}

fn io_err(rank: usize, peer: usize) -> impl Fn(std::io::Error) -> DistError {
    move |e| DistError::Exchange {
        rank,
        peer,
        why: match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                "no answer within --collective-timeout".into()
            }
            std::io::ErrorKind::UnexpectedEof
            | std::io::ErrorKind::ConnectionReset
            | std::io::ErrorKind::BrokenPipe => {
                "the connection closed: that rank has stopped".into()
            }
            _ => e.to_string(),
        },
    }
}

fn read_u32(s: &mut TcpStream) -> std::io::Result<u32> {
    let mut b = [0u8; 4];
    s.read_exact(&mut b)?;
    Ok(u32::from_le_bytes(b))
}

fn send_f32(s: &mut TcpStream, data: &[f32]) -> std::io::Result<()> {
    let mut bytes = Vec::with_capacity(8 + 4 * data.len());
    bytes.extend_from_slice(&(data.len() as u64).to_le_bytes());
    for x in data {
        bytes.extend_from_slice(&x.to_le_bytes());
    }
    s.write_all(&bytes)
}

fn recv_f32(s: &mut TcpStream, expect: usize) -> std::io::Result<Vec<f32>> {
    let mut n = [0u8; 8];
    s.read_exact(&mut n)?;
    let n = u64::from_le_bytes(n) as usize;
    if n != expect {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "sent {n} values where {expect} were expected: the ranks train different models"
            ),
        ));
    }
    let mut bytes = vec![0u8; 4 * n];
    s.read_exact(&mut bytes)?;
    Ok(bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

impl Peer {
    /// Join the group as rank `rank` of `world`: rank 0 waits for the others on the master
    /// port, the others connect to it (in any order; each retries until the timeout).
    pub fn join(launch: &Launch, rank: usize, world: usize) -> Result<Self, DistError> {
        let deadline = Instant::now() + launch.timeout;
        let rendezvous = |why: String| DistError::Rendezvous {
            rank,
            world,
            master: launch.master(),
            why,
            secs: launch.timeout.as_secs(),
        };
        let link = if rank == 0 {
            let listener = TcpListener::bind(("0.0.0.0", launch.master_port)).map_err(|e| {
                DistError::Listen {
                    port: launch.master_port,
                    why: e.to_string(),
                }
            })?;
            listener
                .set_nonblocking(true)
                .map_err(|e| rendezvous(e.to_string()))?;
            let mut spokes: Vec<Option<TcpStream>> = (1..world).map(|_| None).collect();
            while spokes.iter().any(Option::is_none) {
                if crate::interrupt::requested() {
                    return Err(DistError::Interrupted);
                }
                if Instant::now() > deadline {
                    let missing: Vec<String> = spokes
                        .iter()
                        .enumerate()
                        .filter(|(_, s)| s.is_none())
                        .map(|(i, _)| (i + 1).to_string())
                        .collect();
                    return Err(rendezvous(format!(
                        "ranks {} never came",
                        missing.join(", ")
                    )));
                }
                match listener.accept() {
                    Ok((mut s, _)) => {
                        s.set_nonblocking(false)
                            .map_err(|e| rendezvous(e.to_string()))?;
                        s.set_read_timeout(Some(Duration::from_secs(10)))
                            .map_err(|e| rendezvous(e.to_string()))?;
                        // A connection that does not introduce itself properly is dropped.
                        let mut hello = [0u8; 8];
                        if s.read_exact(&mut hello).is_err() || &hello != HELLO {
                            continue;
                        }
                        let (Ok(version), Ok(r), Ok(w)) =
                            (read_u32(&mut s), read_u32(&mut s), read_u32(&mut s))
                        else {
                            continue;
                        };
                        let refuse = |s: &mut TcpStream, msg: String| {
                            let _ = s.write_all(&[0]);
                            let _ = s.write_all(&(msg.len() as u32).to_le_bytes());
                            let _ = s.write_all(msg.as_bytes());
                        };
                        let (r, w) = (r as usize, w as usize);
                        if version != PROTOCOL || w != world || r == 0 || r >= world {
                            refuse(
                                &mut s,
                                format!(
                                    "rank 0 expects {world} ranks (protocol {PROTOCOL}); this \
                                     one says rank {r} of {w} (protocol {version})"
                                ),
                            );
                            continue;
                        }
                        if spokes[r - 1].is_some() {
                            refuse(&mut s, format!("rank {r} has already joined"));
                            continue;
                        }
                        s.write_all(&[1]).map_err(|e| rendezvous(e.to_string()))?;
                        spokes[r - 1] = Some(s);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => return Err(rendezvous(e.to_string())),
                }
            }
            Link::Hub(spokes.into_iter().flatten().collect())
        } else {
            let mut last = String::from("no attempt");
            let stream = loop {
                if crate::interrupt::requested() {
                    return Err(DistError::Interrupted);
                }
                if Instant::now() > deadline {
                    return Err(rendezvous(format!("rank 0 unreachable ({last})")));
                }
                let addrs = launch
                    .master()
                    .to_socket_addrs()
                    .map_err(|e| rendezvous(format!("cannot resolve --master-addr ({e})")))?;
                let mut connected = None;
                for a in addrs {
                    match TcpStream::connect_timeout(&a, Duration::from_secs(2)) {
                        Ok(s) => {
                            connected = Some(s);
                            break;
                        }
                        Err(e) => last = e.to_string(),
                    }
                }
                let Some(mut s) = connected else {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                };
                let mut hello = HELLO.to_vec();
                for v in [PROTOCOL, rank as u32, world as u32] {
                    hello.extend_from_slice(&v.to_le_bytes());
                }
                s.set_read_timeout(Some(launch.timeout))
                    .map_err(|e| rendezvous(e.to_string()))?;
                if s.write_all(&hello).is_err() {
                    std::thread::sleep(Duration::from_millis(200));
                    continue;
                }
                let mut ok = [0u8; 1];
                match s.read_exact(&mut ok) {
                    Ok(()) if ok[0] == 1 => break s,
                    Ok(()) => {
                        let why = read_u32(&mut s)
                            .ok()
                            .and_then(|n| {
                                let mut b = vec![0u8; n as usize];
                                s.read_exact(&mut b).ok().map(|_| b)
                            })
                            .map(|b| String::from_utf8_lossy(&b).into_owned())
                            .unwrap_or_default();
                        return Err(rendezvous(format!("refused: {why}")));
                    }
                    Err(e) => {
                        last = e.to_string();
                        std::thread::sleep(Duration::from_millis(200));
                    }
                }
            };
            Link::Spoke(stream)
        };
        let peer = Self { rank, world, link };
        for s in peer.streams() {
            for t in [
                s.set_read_timeout(Some(launch.timeout)),
                s.set_write_timeout(Some(launch.timeout)),
                s.set_nodelay(true),
            ] {
                t.map_err(|e| rendezvous(e.to_string()))?;
            }
        }
        Ok(peer)
    }

    fn streams(&self) -> Vec<&TcpStream> {
        match &self.link {
            Link::Hub(v) => v.iter().collect(),
            Link::Spoke(s) => vec![s],
        }
    }

    /// The element-wise mean of `data` over all ranks (added in rank order on rank 0, so every
    /// rank gets the same bits).
    pub fn all_reduce_mean(&mut self, data: &[f32]) -> Result<Vec<f32>, DistError> {
        let (rank, world, n) = (self.rank, self.world, data.len());
        match &mut self.link {
            Link::Spoke(s) => {
                send_f32(s, data).map_err(io_err(rank, 0))?;
                recv_f32(s, n).map_err(io_err(rank, 0))
            }
            Link::Hub(spokes) => {
                let mut sum = data.to_vec();
                for (i, s) in spokes.iter_mut().enumerate() {
                    let theirs = recv_f32(s, n).map_err(io_err(rank, i + 1))?;
                    for (a, b) in sum.iter_mut().zip(theirs) {
                        *a += b;
                    }
                }
                let w = world as f32;
                for a in &mut sum {
                    *a /= w;
                }
                for (i, s) in spokes.iter_mut().enumerate() {
                    send_f32(s, &sum).map_err(io_err(rank, i + 1))?;
                }
                Ok(sum)
            }
        }
    }
}

impl Drop for Peer {
    /// Leaving closes the connections: a rank still waiting on this one gets an error at once.
    fn drop(&mut self) {
        for s in self.streams() {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// Run `body(k, peer, device)` once per local device `k`, each call one rank of the group
/// described by `launch` (`peer` is `None` when the group is this one device: no exchange at
/// all; dropping it leaves the group), and return the result of this node's first device (or
/// the first error).
pub fn run_ranks<IB, T, E, F>(launch: &Launch, devices: &[IB::Device], body: F) -> Result<T, E>
where
    IB: Backend,
    T: Send,
    E: From<DistError> + Send,
    F: Fn(usize, Option<Peer>, &IB::Device) -> Result<T, E> + Sync,
{
    assert!(!devices.is_empty(), "data parallelism needs a device");
    let (n, world) = (devices.len(), launch.world(devices.len()));
    if world == 1 {
        return body(0, None, &devices[0]);
    }
    let one = |k: usize, device: &IB::Device| -> Result<T, E> {
        let peer = Peer::join(launch, launch.node_rank * n + k, world)?;
        body(k, Some(peer), device)
    };
    if n == 1 {
        return one(0, &devices[0]);
    }
    let mut results: Vec<Result<T, E>> = std::thread::scope(|s| {
        let workers: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(k, d)| s.spawn(move || one(k, d)))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().expect("a data-parallel rank panicked"))
            .collect()
    });
    if let Some(k) = results.iter().position(|r| r.is_err()) {
        return results.swap_remove(k);
    }
    results.swap_remove(0)
}

/// The mean over all ranks of the trainable gradients of `module` (those named by `naming`; a
/// gradient a rank does not have counts as zeros) and of `extras`, in one all-reduce.
pub fn all_reduce_grads<B, M, N>(
    peer: &mut Peer,
    module: &M,
    mut grads: GradientsParams,
    extras: &[f64],
    naming: &N,
) -> Result<(GradientsParams, Vec<f64>), DistError>
where
    B: AutodiffBackend,
    M: Module<B>,
    N: ParamNaming,
{
    struct Flatten<'a, IB: Backend, N> {
        stack: Vec<String>,
        naming: &'a N,
        grads: &'a mut GradientsParams,
        parts: Vec<Tensor<IB, 1>>,
        device: Option<IB::Device>,
    }
    impl<B: AutodiffBackend, N: ParamNaming> ModuleVisitor<B> for Flatten<'_, B::InnerBackend, N> {
        fn enter_module(&mut self, name: &str, _c: &str) {
            self.stack.push(name.into());
        }
        fn exit_module(&mut self, _n: &str, _c: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            if self.naming.original_name(&self.stack.join(".")).is_none() {
                return;
            }
            let value = p.val();
            let (n, device) = (value.shape().num_elements(), value.device());
            let flat = match self.grads.remove::<B::InnerBackend, D>(p.id) {
                Some(g) => g.reshape([n]),
                None => Tensor::zeros([n], &device),
            };
            self.parts.push(flat);
            self.device = Some(device);
        }
    }
    struct Split<'a, IB: Backend, N> {
        stack: Vec<String>,
        naming: &'a N,
        flat: Tensor<IB, 1>,
        at: usize,
        grads: GradientsParams,
    }
    impl<B: AutodiffBackend, N: ParamNaming> ModuleVisitor<B> for Split<'_, B::InnerBackend, N> {
        fn enter_module(&mut self, name: &str, _c: &str) {
            self.stack.push(name.into());
        }
        fn exit_module(&mut self, _n: &str, _c: &str) {
            self.stack.pop();
        }
        fn visit_float<const D: usize>(&mut self, p: &Param<Tensor<B, D>>) {
            if self.naming.original_name(&self.stack.join(".")).is_none() {
                return;
            }
            let dims: [usize; D] = p.val().dims();
            let n: usize = dims.iter().product();
            let g = self.flat.clone().slice(self.at..self.at + n).reshape(dims);
            self.at += n;
            self.grads.register::<B::InnerBackend, D>(p.id, g);
        }
    }

    let mut flatten = Flatten::<B::InnerBackend, N> {
        stack: vec![],
        naming,
        grads: &mut grads,
        parts: vec![],
        device: None,
    };
    module.visit(&mut flatten);
    let Some(device) = flatten.device.clone() else {
        return Ok((grads, extras.to_vec()));
    };
    let parts = std::mem::take(&mut flatten.parts);
    let mut flat: Vec<f32> = Tensor::cat(parts, 0)
        .into_data()
        .convert::<f32>()
        .to_vec()
        .expect("f32 data converts to f32");
    let n_grads = flat.len();
    flat.extend(extras.iter().map(|&x| x as f32));
    let mut mean = peer.all_reduce_mean(&flat)?;
    let tail = mean.split_off(n_grads);
    let mean = Tensor::<B::InnerBackend, 1>::from_data(TensorData::new(mean, [n_grads]), &device);
    let mut split = Split::<B::InnerBackend, N> {
        stack: vec![],
        naming,
        flat: mean,
        at: 0,
        grads: GradientsParams::new(),
    };
    module.visit(&mut split);
    Ok((split.grads, tail.into_iter().map(f64::from).collect()))
}

/// Fail unless every rank holds the same trainable parameters: their sum and sum of squares,
/// averaged over the ranks, must equal this rank's own.
pub fn check_same_start<B, M, N>(peer: &mut Peer, module: &M, naming: &N) -> Result<(), DistError>
where
    B: Backend,
    M: Module<B>,
    N: ParamNaming,
{
    let params = crate::params::collect_params(module, naming);
    let (mut sum, mut sq) = (0.0f64, 0.0f64);
    for t in params.values() {
        for &x in &t.data {
            sum += x as f64;
            sq += (x as f64) * (x as f64);
        }
    }
    let mean = peer.all_reduce_mean(&[sum as f32, sq as f32])?;
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * a.abs().max(b.abs()).max(1e-12);
    for (mine, mean) in [(sum as f32, mean[0]), (sq as f32, mean[1])] {
        if !close(mine as f64, mean as f64) {
            return Err(DistError::Diverged {
                rank: peer.rank,
                mine: mine as f64,
                mean: mean as f64,
            });
        }
    }
    Ok(())
}
