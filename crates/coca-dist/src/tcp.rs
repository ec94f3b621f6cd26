//! Collectives over TCP (`std::net`), for CPU training and for testing the distributed logic on one machine.
//!
//! **Topology: a star.** Rank 0 listens on `MASTER_PORT` (all interfaces); every other rank connects to
//! `MASTER_ADDR:MASTER_PORT` (retrying until the rendezvous timeout) and says hello with its rank and the world
//! size. Each collective then goes through rank 0: every other rank sends its request (operation, sequence
//! number, element count, data), rank 0 checks that all ranks are in the same collective with the same sizes,
//! combines, and sends the result back.
//!
//! **Cost.** For `n` floats on `W` ranks, rank 0 receives and sends `(W − 1)·n` floats per all-reduce (a ring
//! would move `2(W − 1)/W · n` per rank); its link is the bottleneck, so this suits CPU training and a handful
//! of ranks, not large GPU jobs (NCCL's business). In exchange it is simple and **deterministic**: rank 0 sums
//! in rank order (`x₀ + x₁ + x₂ + …`) and every rank receives the very same bytes, so ranks stay bit-identical.
//!
//! **Failures.** A peer that exits or crashes closes its socket: the others get an error naming it and the
//! collective at once. A peer that hangs is reported after the operation timeout (socket read/write timeouts,
//! default [`DEFAULT_TIMEOUT`]). When rank 0 finds ranks out of step it tells every rank before failing.

use std::cell::Cell;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use crate::comm::Communicator;
use crate::env::DistEnv;
use crate::error::DistError;

/// How long a rank waits for a peer inside a collective: long enough for rank 0 to write a checkpoint or
/// validate while the others wait (as gloo's 30-minute default).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// How long ranks wait for each other at start-up.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(300);

/// Timeouts of the TCP backend.
#[derive(Debug, Clone, Copy)]
pub struct TcpOptions {
    /// Waiting for a peer inside a collective.
    pub timeout: Duration,
    /// Waiting for all ranks to connect.
    pub connect_timeout: Duration,
}

impl Default for TcpOptions {
    fn default() -> Self {
        Self {
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }
}

const MAGIC: u32 = u32::from_le_bytes(*b"CCDS");
const HEADER: usize = 32;
/// Bytes converted per write/read: bounds the extra memory of a collective.
const CHUNK: usize = 1 << 20;

/// The message kinds; every collective is one request from each rank and one reply from rank 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Op {
    Hello = 1,
    AllReduce = 2,
    AllGather = 3,
    Broadcast = 4,
    Barrier = 5,
}

impl Op {
    fn name(self) -> &'static str {
        match self {
            Op::Hello => "hello",
            Op::AllReduce => "all_reduce",
            Op::AllGather => "all_gather",
            Op::Broadcast => "broadcast",
            Op::Barrier => "barrier",
        }
    }

    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Op::Hello,
            2 => Op::AllReduce,
            3 => Op::AllGather,
            4 => Op::Broadcast,
            5 => Op::Barrier,
            _ => return None,
        })
    }
}

/// What a received value does to the one already in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Combine {
    Assign,
    Add,
}

const OK: u8 = 0;
const FAILED: u8 = 1;

/// A message header: operation, status, sequence number, element count and payload bytes.
#[derive(Debug, Clone, Copy)]
struct Header {
    op: u8,
    status: u8,
    seq: u64,
    count: u64,
    payload: u64,
}

impl Header {
    fn encode(&self) -> [u8; HEADER] {
        let mut b = [0u8; HEADER];
        b[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        b[4] = self.op;
        b[5] = self.status;
        b[8..16].copy_from_slice(&self.seq.to_le_bytes());
        b[16..24].copy_from_slice(&self.count.to_le_bytes());
        b[24..32].copy_from_slice(&self.payload.to_le_bytes());
        b
    }

    fn decode(b: &[u8; HEADER]) -> Option<Self> {
        let word = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or([0; 8]));
        (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) == MAGIC).then(|| Header {
            op: b[4],
            status: b[5],
            seq: word(8),
            count: word(16),
            payload: word(24),
        })
    }
}

/// One rank of a TCP group. Rank 0 holds a connection to every other rank; the others one to rank 0.
#[derive(Debug)]
pub struct TcpComm {
    rank: usize,
    world_size: usize,
    /// Rank 0: `peers[r]` for `r ≥ 1`; others: `peers[0]` is rank 0.
    peers: Vec<Option<TcpStream>>,
    seq: Cell<u64>,
    timeout: Duration,
}

impl TcpComm {
    /// Join the group `env` describes (rank 0 listens, the others connect), with default timeouts.
    pub fn connect(env: &DistEnv) -> Result<Self, DistError> {
        Self::connect_with(env, TcpOptions::default())
    }

    /// [`TcpComm::connect`] with explicit timeouts.
    pub fn connect_with(env: &DistEnv, options: TcpOptions) -> Result<Self, DistError> {
        let mut comm = TcpComm {
            rank: env.rank,
            world_size: env.world_size,
            peers: (0..env.world_size).map(|_| None).collect(),
            seq: Cell::new(0),
            timeout: options.timeout,
        };
        if env.world_size > 1 {
            if env.rank == 0 {
                comm.accept_all(env, options)?;
            } else {
                comm.join(env, options)?;
            }
        }
        Ok(comm)
    }

    fn rendezvous_error(&self, env: &DistEnv, reason: String) -> DistError {
        DistError::Rendezvous {
            addr: env.master(),
            rank: self.rank,
            world_size: self.world_size,
            reason,
        }
    }

    /// Rank 0: listen and wait for every other rank's hello.
    fn accept_all(&mut self, env: &DistEnv, options: TcpOptions) -> Result<(), DistError> {
        let v6 = env
            .master()
            .to_socket_addrs()
            .ok()
            .and_then(|mut a| a.next())
            .is_some_and(|a| a.is_ipv6());
        let any: SocketAddr = if v6 {
            (std::net::Ipv6Addr::UNSPECIFIED, env.master_port).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, env.master_port).into()
        };
        let listener = TcpListener::bind(any).map_err(|e| {
            self.rendezvous_error(
                env,
                format!(
                    "rank 0 cannot listen on port {}: {e} (another run on this port? choose another MASTER_PORT)",
                    env.master_port
                ),
            )
        })?;
        listener
            .set_nonblocking(true)
            .map_err(|e| self.rendezvous_error(env, format!("listener: {e}")))?;
        let deadline = Instant::now() + options.connect_timeout;
        let mut joined = 1;
        while joined < self.world_size {
            let stream = match listener.accept() {
                Ok((stream, _)) => stream,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    if Instant::now() >= deadline {
                        let missing: Vec<String> = (1..self.world_size)
                            .filter(|&r| self.peers[r].is_none())
                            .map(|r| r.to_string())
                            .collect();
                        return Err(self.rendezvous_error(
                            env,
                            format!(
                                "rank(s) {} did not connect within {} s",
                                missing.join(", "),
                                options.connect_timeout.as_secs()
                            ),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    continue;
                }
                Err(e) => return Err(self.rendezvous_error(env, format!("accept: {e}"))),
            };
            // A stranger that is not a coca rank is dropped; a rank with another world size is an error.
            if self.hello_from(stream, env)? {
                joined += 1;
            }
        }
        // Tell everyone the group is complete.
        for peer in 1..self.world_size {
            let reply = Header {
                op: Op::Hello as u8,
                status: OK,
                seq: 0,
                count: 0,
                payload: 0,
            };
            self.send(peer, Op::Hello, &reply, &[])?;
        }
        Ok(())
    }

    /// Rank 0: read and check one hello; `Ok(false)` for a connection that is not a coca rank.
    fn hello_from(&mut self, mut stream: TcpStream, env: &DistEnv) -> Result<bool, DistError> {
        let setup = stream
            .set_nonblocking(false)
            .and_then(|_| stream.set_read_timeout(Some(Duration::from_secs(10))))
            .and_then(|_| stream.set_write_timeout(Some(self.timeout)))
            .and_then(|_| stream.set_nodelay(true));
        if setup.is_err() {
            return Ok(false);
        }
        let mut buf = [0u8; HEADER];
        if stream.read_exact(&mut buf).is_err() {
            return Ok(false);
        }
        let Some(h) = Header::decode(&buf).filter(|h| h.op == Op::Hello as u8) else {
            return Ok(false);
        };
        let (rank, world) = (h.seq as usize, h.count as usize);
        let refuse = |stream: &mut TcpStream, message: String| {
            let reply = Header {
                op: Op::Hello as u8,
                status: FAILED,
                seq: 0,
                count: 0,
                payload: message.len() as u64,
            };
            let _ = stream.write_all(&reply.encode());
            let _ = stream.write_all(message.as_bytes());
            message
        };
        if world != self.world_size {
            let message = refuse(
                &mut stream,
                format!(
                    "rank {rank} says WORLD_SIZE={world}, rank 0 has WORLD_SIZE={}",
                    self.world_size
                ),
            );
            return Err(self.rendezvous_error(env, message));
        }
        if rank == 0 || rank >= world || self.peers[rank].is_some() {
            let message = refuse(
                &mut stream,
                format!(
                    "a second process claims rank {rank} (each rank must be unique, 1..{world})"
                ),
            );
            return Err(self.rendezvous_error(env, message));
        }
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(|e| self.rendezvous_error(env, format!("socket of rank {rank}: {e}")))?;
        self.peers[rank] = Some(stream);
        Ok(true)
    }

    /// A rank other than 0: connect (retrying while rank 0 starts), say hello, wait for the group.
    fn join(&mut self, env: &DistEnv, options: TcpOptions) -> Result<(), DistError> {
        let target = env.master();
        let deadline = Instant::now() + options.connect_timeout;
        let mut last_error = String::from("no attempt finished");
        let stream = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.rendezvous_error(
                    env,
                    format!(
                        "could not reach rank 0 within {} s (last error: {last_error}); is rank 0 running, with the \
                         same MASTER_ADDR and MASTER_PORT on every rank?",
                        options.connect_timeout.as_secs()
                    ),
                ));
            }
            match target.to_socket_addrs() {
                Ok(addrs) => {
                    let mut connected = None;
                    for addr in addrs {
                        match TcpStream::connect_timeout(&addr, left.min(Duration::from_secs(5))) {
                            Ok(s) => {
                                connected = Some(s);
                                break;
                            }
                            Err(e) => last_error = format!("{addr}: {e}"),
                        }
                    }
                    if let Some(s) = connected {
                        break s;
                    }
                }
                Err(e) => last_error = format!("cannot resolve {target}: {e}"),
            }
            std::thread::sleep(Duration::from_millis(100).min(left));
        };
        let (rank, world_size, addr) = (self.rank, self.world_size, env.master());
        let io = move |e: std::io::Error| DistError::Rendezvous {
            addr: addr.clone(),
            rank,
            world_size,
            reason: format!("socket: {e}"),
        };
        stream.set_nodelay(true).map_err(&io)?;
        stream.set_write_timeout(Some(self.timeout)).map_err(&io)?;
        // Until everyone has joined, rank 0 is silent; wait at most the rest of the rendezvous time.
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_secs(1));
        stream.set_read_timeout(Some(left)).map_err(&io)?;
        self.peers[0] = Some(stream);
        let hello = Header {
            op: Op::Hello as u8,
            status: OK,
            seq: self.rank as u64,
            count: self.world_size as u64,
            payload: 0,
        };
        self.send(0, Op::Hello, &hello, &[])
            .map_err(|e| self.rendezvous_error(env, e.to_string()))?;
        match self.receive_header(0, Op::Hello, 0) {
            Ok(_) => {}
            Err(DistError::Timeout { .. }) => {
                return Err(self.rendezvous_error(
                    env,
                    format!(
                        "connected, but not every rank joined within {} s",
                        options.connect_timeout.as_secs()
                    ),
                ))
            }
            Err(e) => return Err(self.rendezvous_error(env, e.to_string())),
        }
        if let Some(s) = &self.peers[0] {
            s.set_read_timeout(Some(self.timeout)).map_err(io)?;
        }
        Ok(())
    }

    fn label(&self, op: Op, seq: u64) -> String {
        format!("{} #{seq}", op.name())
    }

    fn stream(&self, peer: usize) -> Result<&TcpStream, DistError> {
        self.peers[peer].as_ref().ok_or_else(|| {
            DistError::Usage(format!(
                "rank {} has no connection to rank {peer}",
                self.rank
            ))
        })
    }

    fn io_error(&self, op: Op, seq: u64, peer: usize, e: std::io::Error) -> DistError {
        let op = self.label(op, seq);
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => DistError::Timeout {
                op,
                peer,
                seconds: self.timeout.as_secs(),
            },
            ErrorKind::UnexpectedEof => DistError::Peer {
                op,
                peer,
                reason: "connection closed: the process exited or crashed".into(),
            },
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe | ErrorKind::ConnectionAborted => {
                DistError::Peer {
                    op,
                    peer,
                    reason: format!("connection lost ({e}): the process exited or crashed"),
                }
            }
            _ => DistError::Peer {
                op,
                peer,
                reason: e.to_string(),
            },
        }
    }

    /// Send a header and `data` (as little-endian f32) to `peer`.
    fn send(&self, peer: usize, op: Op, header: &Header, data: &[f32]) -> Result<(), DistError> {
        let mut stream = self.stream(peer)?;
        let fail = |e| self.io_error(op, header.seq, peer, e);
        stream.write_all(&header.encode()).map_err(fail)?;
        if cfg!(target_endian = "little") {
            // The wire format is little-endian f32: the memory as it is.
            return stream.write_all(bytemuck::cast_slice(data)).map_err(fail);
        }
        let mut bytes = Vec::with_capacity(CHUNK.min(data.len() * 4));
        for chunk in data.chunks(CHUNK / 4) {
            bytes.clear();
            bytes.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
            stream.write_all(&bytes).map_err(fail)?;
        }
        Ok(())
    }

    /// Send an error message to every peer (best effort: they may be gone).
    fn abort(&self, op: Op, seq: u64, message: &str) {
        let header = Header {
            op: op as u8,
            status: FAILED,
            seq,
            count: 0,
            payload: message.len() as u64,
        };
        for peer in 1..self.world_size {
            if let Some(mut s) = self.peers[peer].as_ref() {
                let _ = s.write_all(&header.encode());
                let _ = s.write_all(message.as_bytes());
            }
        }
    }

    /// Read a header from `peer` and check it is `op` number `seq`; a failure report becomes
    /// [`DistError::Remote`].
    fn receive_header(&self, peer: usize, op: Op, seq: u64) -> Result<Header, DistError> {
        let mut stream = self.stream(peer)?;
        let mut buf = [0u8; HEADER];
        stream
            .read_exact(&mut buf)
            .map_err(|e| self.io_error(op, seq, peer, e))?;
        let label = self.label(op, seq);
        let h = Header::decode(&buf).ok_or_else(|| DistError::Peer {
            op: label.clone(),
            peer,
            reason: "sent bytes that are not a coca collective message".into(),
        })?;
        if h.status == FAILED {
            let mut message = vec![0u8; h.payload.min(1 << 16) as usize];
            stream
                .read_exact(&mut message)
                .map_err(|e| self.io_error(op, seq, peer, e))?;
            return Err(DistError::Remote {
                op: label,
                message: String::from_utf8_lossy(&message).into_owned(),
            });
        }
        if h.op != op as u8 || h.seq != seq {
            let theirs = Op::from_u8(h.op).map_or("an unknown operation", Op::name);
            return Err(DistError::Mismatch {
                op: label,
                peer,
                detail: format!("it is in {theirs} #{}", h.seq),
            });
        }
        Ok(h)
    }

    /// Read `out.len()` f32 values from `peer`, combining each with the value already in `out`.
    fn receive_values(
        &self,
        peer: usize,
        op: Op,
        seq: u64,
        out: &mut [f32],
        combine: Combine,
    ) -> Result<(), DistError> {
        let mut stream = self.stream(peer)?;
        let mut read = |buf: &mut [f32]| -> Result<(), DistError> {
            stream
                .read_exact(bytemuck::cast_slice_mut(buf))
                .map_err(|e| self.io_error(op, seq, peer, e))?;
            if cfg!(target_endian = "big") {
                for v in buf.iter_mut() {
                    *v = f32::from_bits(u32::from_le(v.to_bits()));
                }
            }
            Ok(())
        };
        if combine == Combine::Assign {
            return read(out);
        }
        let mut scratch = vec![0f32; (CHUNK / 4).min(out.len())];
        for chunk in out.chunks_mut(CHUNK / 4) {
            let buf = &mut scratch[..chunk.len()];
            read(buf)?;
            for (acc, v) in chunk.iter_mut().zip(buf.iter()) {
                *acc += v;
            }
        }
        Ok(())
    }

    /// One collective. `data` is this rank's input (`count` values, possibly none sent); `result_len` is the
    /// length of the reply. Rank 0 calls `combine_at_root` with each peer's request and then sends `root`
    /// (its result) to everyone; other ranks return what rank 0 sent.
    fn collective(
        &self,
        op: Op,
        count: usize,
        send_data: &[f32],
        result_len: usize,
        mut root_result: impl FnMut(&Self, usize, u64) -> Result<(), DistError>,
        root_output: impl FnOnce() -> Vec<f32>,
    ) -> Result<Option<Vec<f32>>, DistError> {
        let seq = self.seq.get() + 1;
        self.seq.set(seq);
        if self.world_size == 1 {
            return Ok(None);
        }
        if self.rank == 0 {
            for peer in 1..self.world_size {
                let checked = self.receive_header(peer, op, seq).and_then(|h| {
                    if h.count as usize != count || h.payload != send_data.len() as u64 * 4 {
                        return Err(DistError::Mismatch {
                            op: self.label(op, seq),
                            peer,
                            detail: format!("{} values against rank 0's {count}", h.count),
                        });
                    }
                    root_result(self, peer, h.payload)
                });
                if let Err(e) = checked {
                    self.abort(op, seq, &e.to_string());
                    return Err(e);
                }
            }
            let out = root_output();
            let header = Header {
                op: op as u8,
                status: OK,
                seq,
                count: out.len() as u64,
                payload: out.len() as u64 * 4,
            };
            for peer in 1..self.world_size {
                self.send(peer, op, &header, &out)?;
            }
            return Ok(Some(out));
        }
        let header = Header {
            op: op as u8,
            status: OK,
            seq,
            count: count as u64,
            payload: send_data.len() as u64 * 4,
        };
        self.send(0, op, &header, send_data)?;
        let h = self.receive_header(0, op, seq)?;
        if h.count as usize != result_len || h.payload != h.count * 4 {
            return Err(DistError::Mismatch {
                op: self.label(op, seq),
                peer: 0,
                detail: format!(
                    "rank 0 sent {} values, this rank expected {result_len}",
                    h.count
                ),
            });
        }
        let mut out = vec![0f32; result_len];
        self.receive_values(0, op, seq, &mut out, Combine::Assign)?;
        Ok(Some(out))
    }
}

impl Communicator for TcpComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.world_size
    }

    fn backend(&self) -> &'static str {
        "tcp"
    }

    fn all_reduce_sum_f32(&self, data: &mut [f32]) -> Result<(), DistError> {
        let n = data.len();
        let acc = std::cell::RefCell::new(data.to_vec());
        let result = self.collective(
            Op::AllReduce,
            n,
            data,
            n,
            |comm, peer, _| {
                // Peers are read in rank order, so the sum is x₀ + x₁ + x₂ + … on every run.
                comm.receive_values(
                    peer,
                    Op::AllReduce,
                    comm.seq.get(),
                    &mut acc.borrow_mut(),
                    Combine::Add,
                )
            },
            || acc.borrow().clone(),
        )?;
        if let Some(out) = result {
            data.copy_from_slice(&out);
        }
        Ok(())
    }

    fn all_gather_f32(&self, local: &[f32]) -> Result<Vec<f32>, DistError> {
        let n = local.len();
        let all = std::cell::RefCell::new({
            let mut v = vec![0f32; n * self.world_size];
            v[..n].copy_from_slice(local);
            v
        });
        let result = self.collective(
            Op::AllGather,
            n,
            local,
            n * self.world_size,
            |comm, peer, _| {
                let mut all = all.borrow_mut();
                comm.receive_values(
                    peer,
                    Op::AllGather,
                    comm.seq.get(),
                    &mut all[peer * n..(peer + 1) * n],
                    Combine::Assign,
                )
            },
            || all.borrow().clone(),
        )?;
        Ok(result.unwrap_or_else(|| local.to_vec()))
    }

    fn broadcast_f32(&self, data: &mut [f32]) -> Result<(), DistError> {
        let n = data.len();
        let root = data.to_vec();
        let result = self.collective(Op::Broadcast, n, &[], n, |_, _, _| Ok(()), || root)?;
        if let (Some(out), true) = (result, self.rank != 0) {
            data.copy_from_slice(&out);
        }
        Ok(())
    }

    fn barrier(&self) -> Result<(), DistError> {
        self.collective(Op::Barrier, 0, &[], 0, |_, _, _| Ok(()), Vec::new)
            .map(|_| ())
    }
}
