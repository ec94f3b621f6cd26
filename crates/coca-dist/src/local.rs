//! Ranks as threads of one process, exchanging through shared memory: for tests and simulations of a
//! distributed run without sockets.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::comm::Communicator;
use crate::error::DistError;

/// How long a rank waits for the others before reporting a timeout (a thread that panicked never arrives).
pub const DEFAULT_LOCAL_TIMEOUT: Duration = Duration::from_secs(120);

/// One rank of an in-process group; hand each to its own thread.
#[derive(Debug)]
pub struct LocalComm {
    rank: usize,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    world_size: usize,
    timeout: Duration,
    state: Mutex<State>,
    turn: Condvar,
}

#[derive(Debug)]
struct State {
    /// What each rank deposited for the current exchange: the operation's name and its data.
    slots: Vec<Option<(&'static str, Vec<f32>)>>,
    /// Ranks that reached the current barrier phase.
    arrived: usize,
    /// Completed barrier phases; a waiting rank watches it change.
    generation: u64,
}

impl LocalComm {
    /// A group of `world_size` ranks (index = rank), with [`DEFAULT_LOCAL_TIMEOUT`].
    pub fn group(world_size: usize) -> Vec<LocalComm> {
        Self::group_with_timeout(world_size, DEFAULT_LOCAL_TIMEOUT)
    }

    /// A group whose ranks give up waiting for each other after `timeout`.
    pub fn group_with_timeout(world_size: usize, timeout: Duration) -> Vec<LocalComm> {
        let shared = Arc::new(Shared {
            world_size,
            timeout,
            state: Mutex::new(State {
                slots: vec![None; world_size],
                arrived: 0,
                generation: 0,
            }),
            turn: Condvar::new(),
        });
        (0..world_size)
            .map(|rank| LocalComm {
                rank,
                shared: Arc::clone(&shared),
            })
            .collect()
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>, DistError> {
        self.shared.state.lock().map_err(|_| {
            DistError::Usage("local group: a rank panicked inside a collective".into())
        })
    }

    /// Wait until every rank has arrived at this phase.
    fn phase(&self, op: &'static str) -> Result<(), DistError> {
        let mut state = self.lock()?;
        let generation = state.generation;
        state.arrived += 1;
        if state.arrived == self.shared.world_size {
            state.arrived = 0;
            state.generation += 1;
            self.shared.turn.notify_all();
            return Ok(());
        }
        let deadline = Instant::now() + self.shared.timeout;
        while state.generation == generation {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(DistError::Usage(format!(
                    "{op}: {} of {} ranks arrived within {} s (did a rank's thread fail?)",
                    state.arrived,
                    self.shared.world_size,
                    self.shared.timeout.as_secs()
                )));
            }
            state = self
                .shared
                .turn
                .wait_timeout(state, left)
                .map_err(|_| {
                    DistError::Usage("local group: a rank panicked inside a collective".into())
                })?
                .0;
        }
        Ok(())
    }

    /// Deposit `data`, wait for everyone's, and return all of them in rank order.
    fn exchange(&self, op: &'static str, data: Vec<f32>) -> Result<Vec<Vec<f32>>, DistError> {
        self.lock()?.slots[self.rank] = Some((op, data));
        self.phase(op)?;
        let all = {
            let state = self.lock()?;
            let mut all = Vec::with_capacity(self.shared.world_size);
            for (peer, slot) in state.slots.iter().enumerate() {
                match slot {
                    Some((peer_op, values)) if *peer_op == op => all.push(values.clone()),
                    Some((peer_op, _)) => {
                        return Err(DistError::Mismatch {
                            op: op.to_string(),
                            peer,
                            detail: format!("it called {peer_op}"),
                        })
                    }
                    None => {
                        return Err(DistError::Usage(format!(
                            "{op}: rank {peer} deposited nothing"
                        )))
                    }
                }
            }
            all
        };
        // Nobody may deposit the next operation's data before everyone has read this one's.
        self.phase(op)?;
        Ok(all)
    }

    fn same_lengths(&self, op: &str, all: &[Vec<f32>]) -> Result<(), DistError> {
        let mine = all[self.rank].len();
        match all.iter().position(|v| v.len() != mine) {
            Some(peer) => Err(DistError::Mismatch {
                op: op.to_string(),
                peer,
                detail: format!("{} values against this rank's {mine}", all[peer].len()),
            }),
            None => Ok(()),
        }
    }
}

impl Communicator for LocalComm {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world_size(&self) -> usize {
        self.shared.world_size
    }

    fn backend(&self) -> &'static str {
        "local"
    }

    fn all_reduce_sum_f32(&self, data: &mut [f32]) -> Result<(), DistError> {
        let all = self.exchange("all_reduce", data.to_vec())?;
        self.same_lengths("all_reduce", &all)?;
        // Rank order, as every backend sums.
        data.copy_from_slice(&all[0]);
        for other in &all[1..] {
            for (acc, v) in data.iter_mut().zip(other) {
                *acc += v;
            }
        }
        Ok(())
    }

    fn all_gather_f32(&self, local: &[f32]) -> Result<Vec<f32>, DistError> {
        let all = self.exchange("all_gather", local.to_vec())?;
        self.same_lengths("all_gather", &all)?;
        Ok(all.concat())
    }

    fn broadcast_f32(&self, data: &mut [f32]) -> Result<(), DistError> {
        let all = self.exchange("broadcast", data.to_vec())?;
        self.same_lengths("broadcast", &all)?;
        data.copy_from_slice(&all[0]);
        Ok(())
    }

    fn barrier(&self) -> Result<(), DistError> {
        self.exchange("barrier", Vec::new()).map(|_| ())
    }
}
