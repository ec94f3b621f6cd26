//! Errors of collectives and of the launch environment: each names the variable, the peer or the operation.

/// What can go wrong when setting up or running collectives.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    /// A launch variable is missing, malformed or inconsistent with the others.
    #[error("distributed environment: {0}")]
    Env(String),
    /// Rank 0 and the others could not meet at the master address.
    #[error("rendezvous at {addr} (rank {rank} of {world_size}): {reason}")]
    Rendezvous {
        /// `MASTER_ADDR:MASTER_PORT`.
        addr: String,
        /// This process's rank.
        rank: usize,
        /// The expected number of ranks.
        world_size: usize,
        /// What went wrong.
        reason: String,
    },
    /// Talking to a peer failed: it closed the connection (exited or crashed), or the socket failed.
    #[error("{op}: rank {peer}: {reason}")]
    Peer {
        /// The collective and its sequence number, e.g. `all_reduce #12`.
        op: String,
        /// The peer's rank.
        peer: usize,
        /// What happened.
        reason: String,
    },
    /// A peer sent nothing within the timeout.
    #[error("{op}: rank {peer} sent nothing for {seconds} s (hung, or far behind); giving up")]
    Timeout {
        /// The collective and its sequence number.
        op: String,
        /// The peer's rank.
        peer: usize,
        /// The timeout.
        seconds: u64,
    },
    /// The ranks are out of step: a peer is in another collective, or passed a buffer of another size.
    #[error("{op}: rank {peer} is out of step: {detail}")]
    Mismatch {
        /// The collective and its sequence number, as this rank sees it.
        op: String,
        /// The peer at fault.
        peer: usize,
        /// What differs.
        detail: String,
    },
    /// Rank 0 found a problem with this collective and told every rank.
    #[error("{op}: rank 0 reports: {message}")]
    Remote {
        /// The collective and its sequence number.
        op: String,
        /// Rank 0's message.
        message: String,
    },
    /// A tensor could not be moved to or from the host, or has an unsupported dtype.
    #[error("{op}: {source}")]
    Tensor {
        /// The collective.
        op: String,
        /// The cause.
        source: candle_core::Error,
    },
    /// Invalid use of a collective (e.g. unequal all-gather sizes in one process).
    #[error("{0}")]
    Usage(String),
}
