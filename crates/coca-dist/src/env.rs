//! Where this process sits in a run, read from the launcher's environment variables.
//!
//! Supported launchers, first match wins:
//! 1. **torchrun** (and `coca launch`, and anything else that sets the same variables): `RANK`, `WORLD_SIZE`,
//!    `LOCAL_RANK` (default 0), `MASTER_ADDR` (required when `WORLD_SIZE > 1`), `MASTER_PORT` (default 29500).
//! 2. **Slurm** (`srun`, one task per process): `SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID` (default 0).
//!    The master is `MASTER_ADDR` if set, else the first host of `SLURM_STEP_NODELIST`, `SLURM_JOB_NODELIST`
//!    or `SLURM_NODELIST` (rank 0 runs there under Slurm's default block distribution), else
//!    `SLURM_LAUNCH_NODE_IPADDR`; the port is `MASTER_PORT`, default 29500. Node lists in the simple forms are
//!    understood: `node07`, `a,b,c`, `node[01-04,09]`, `rack[1-2]-gpu[3-4]`, `gpu-[1-2],cpu-3`.
//! 3. Neither: a single process (rank 0 of 1).
//!
//! torchrun's variables win over Slurm's, so torchrun started inside a Slurm allocation behaves as torchrun.

use crate::error::DistError;

/// The port rank 0 listens on when no `MASTER_PORT` is given (torchrun's default).
pub const DEFAULT_MASTER_PORT: u16 = 29500;

/// Which variables described the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// No launcher variables: one process.
    None,
    /// `RANK`/`WORLD_SIZE`/... (torchrun, `coca launch`).
    Torchrun,
    /// `SLURM_PROCID`/`SLURM_NTASKS`/...
    Slurm,
}

/// This process's place in the run and where rank 0 listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DistEnv {
    /// Global rank, `0..world_size`.
    pub rank: usize,
    /// Number of processes in the run.
    pub world_size: usize,
    /// Rank among the processes of this machine (selects the GPU).
    pub local_rank: usize,
    /// Host or IP of rank 0.
    pub master_addr: String,
    /// Port rank 0 listens on.
    pub master_port: u16,
    /// Where these values came from.
    pub launcher: Launcher,
}

impl Default for DistEnv {
    fn default() -> Self {
        Self::single()
    }
}

impl DistEnv {
    /// One process, rank 0 of 1.
    pub fn single() -> Self {
        Self {
            rank: 0,
            world_size: 1,
            local_rank: 0,
            master_addr: "127.0.0.1".into(),
            master_port: DEFAULT_MASTER_PORT,
            launcher: Launcher::None,
        }
    }

    /// Read the process environment (see the [module docs](self) for the variables).
    pub fn from_env() -> Result<Self, DistError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Read the variables through `get` (the environment, or a map in tests). Empty values count as unset.
    pub fn from_vars(get: impl Fn(&str) -> Option<String>) -> Result<Self, DistError> {
        let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
        let torchrun = get("RANK").is_some() || get("WORLD_SIZE").is_some();
        let slurm = get("SLURM_PROCID").is_some() || get("SLURM_NTASKS").is_some();
        let (launcher, rank_var, world_var, local_var) = if torchrun {
            (Launcher::Torchrun, "RANK", "WORLD_SIZE", "LOCAL_RANK")
        } else if slurm {
            (
                Launcher::Slurm,
                "SLURM_PROCID",
                "SLURM_NTASKS",
                "SLURM_LOCALID",
            )
        } else {
            return Ok(Self::single());
        };
        let number = |name: &str| -> Result<Option<usize>, DistError> {
            get(name)
                .map(|v| {
                    v.trim().parse::<usize>().map_err(|_| {
                        DistError::Env(format!("{name}={v:?} is not a non-negative integer"))
                    })
                })
                .transpose()
        };
        let both =
            |a: &str, b: &str| DistError::Env(format!("{a} is set but {b} is not; set both"));
        let rank = number(rank_var)?.ok_or_else(|| both(world_var, rank_var))?;
        let world_size = number(world_var)?.ok_or_else(|| both(rank_var, world_var))?;
        let local_rank = number(local_var)?.unwrap_or(0);
        if world_size == 0 {
            return Err(DistError::Env(format!(
                "{world_var}=0: a run needs at least one process"
            )));
        }
        if rank >= world_size {
            return Err(DistError::Env(format!(
                "{rank_var}={rank} is not below {world_var}={world_size}"
            )));
        }
        if local_rank > rank {
            // The k-th process of a machine has k processes of lower global rank beside it.
            return Err(DistError::Env(format!(
                "{local_var}={local_rank} is above {rank_var}={rank}; a local rank never exceeds the global one"
            )));
        }
        let master_port = match get("MASTER_PORT") {
            None => DEFAULT_MASTER_PORT,
            Some(v) => match v.trim().parse::<u16>() {
                Ok(p) if p > 0 => p,
                _ => {
                    return Err(DistError::Env(format!(
                        "MASTER_PORT={v:?} is not a port in 1..=65535"
                    )))
                }
            },
        };
        let master_addr = match (get("MASTER_ADDR"), launcher) {
            (Some(addr), _) => addr.trim().to_string(),
            (None, Launcher::Slurm) => slurm_master(&get)?,
            (None, _) if world_size == 1 => "127.0.0.1".into(),
            (None, _) => {
                return Err(DistError::Env(format!(
                    "WORLD_SIZE={world_size} but MASTER_ADDR is not set: every rank needs the host of rank 0"
                )))
            }
        };
        Ok(Self {
            rank,
            world_size,
            local_rank,
            master_addr,
            master_port,
            launcher,
        })
    }

    /// Whether there is more than one process.
    pub fn is_distributed(&self) -> bool {
        self.world_size > 1
    }

    /// Whether this is rank 0, the one that writes checkpoints and logs.
    pub fn is_main(&self) -> bool {
        self.rank == 0
    }

    /// `MASTER_ADDR:MASTER_PORT` (IPv6 addresses in brackets).
    pub fn master(&self) -> String {
        if self.master_addr.contains(':') && !self.master_addr.starts_with('[') {
            format!("[{}]:{}", self.master_addr, self.master_port)
        } else {
            format!("{}:{}", self.master_addr, self.master_port)
        }
    }
}

/// Rank 0's host under Slurm without `MASTER_ADDR`.
fn slurm_master(get: &dyn Fn(&str) -> Option<String>) -> Result<String, DistError> {
    for var in [
        "SLURM_STEP_NODELIST",
        "SLURM_JOB_NODELIST",
        "SLURM_NODELIST",
    ] {
        if let Some(list) = get(var) {
            return first_host(&list).ok_or_else(|| {
                DistError::Env(format!(
                    "{var}={list:?}: cannot read its first host; set MASTER_ADDR"
                ))
            });
        }
    }
    get("SLURM_LAUNCH_NODE_IPADDR").map(|ip| ip.trim().to_string()).ok_or_else(|| {
        DistError::Env(
            "Slurm run without MASTER_ADDR, SLURM_STEP_NODELIST, SLURM_JOB_NODELIST, SLURM_NODELIST or \
             SLURM_LAUNCH_NODE_IPADDR: set MASTER_ADDR to the host of rank 0"
                .into(),
        )
    })
}

/// The first host of a Slurm node list: `node[01-04,09],gpu7` → `node01`. Every bracket group contributes
/// its first value (zero padding kept). `None` for forms it does not understand.
pub fn first_host(list: &str) -> Option<String> {
    let list = list.trim();
    // The first top-level entry: commas inside brackets do not separate hosts.
    let mut depth = 0usize;
    let end = list
        .char_indices()
        .find(|&(_, c)| {
            match c {
                '[' => depth += 1,
                ']' => depth = depth.saturating_sub(1),
                _ => {}
            }
            c == ',' && depth == 0
        })
        .map_or(list.len(), |(i, _)| i);
    let entry = &list[..end];
    let mut host = String::new();
    let mut rest = entry;
    while let Some(open) = rest.find('[') {
        host.push_str(&rest[..open]);
        let close = open + rest[open..].find(']')?;
        let first = rest[open + 1..close].split(',').next()?;
        let start = first.split('-').next()?.trim();
        if start.is_empty() || !start.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        host.push_str(start);
        rest = &rest[close + 1..];
    }
    if rest.contains(']') {
        return None;
    }
    host.push_str(rest);
    (!host.is_empty()).then_some(host)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Result<DistEnv, DistError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        DistEnv::from_vars(|k| map.get(k).cloned())
    }

    fn err(pairs: &[(&str, &str)]) -> String {
        env(pairs).unwrap_err().to_string()
    }

    #[test]
    fn no_launcher_is_a_single_process() {
        let e = env(&[]).unwrap();
        assert_eq!(e, DistEnv::single());
        assert!(!e.is_distributed());
        assert!(e.is_main());
    }

    #[test]
    fn torchrun_variables() {
        let e = env(&[
            ("RANK", "3"),
            ("WORLD_SIZE", "8"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "10.0.0.5"),
            ("MASTER_PORT", "29400"),
            // torchrun inside a Slurm allocation: torchrun's values win.
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
        ])
        .unwrap();
        assert_eq!(
            (e.rank, e.world_size, e.local_rank, e.launcher),
            (3, 8, 1, Launcher::Torchrun)
        );
        assert_eq!(e.master(), "10.0.0.5:29400");
        let v6 = env(&[("RANK", "0"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "::1")]).unwrap();
        assert_eq!(v6.master(), format!("[::1]:{DEFAULT_MASTER_PORT}"));
    }

    #[test]
    fn slurm_variables_and_master_fallbacks() {
        let base = [
            ("SLURM_PROCID", "5"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut v = base.to_vec();
            v.extend_from_slice(extra);
            env(&v).unwrap()
        };
        let e = with(&[
            ("SLURM_JOB_NODELIST", "gpu[007-010,12]"),
            ("SLURM_LAUNCH_NODE_IPADDR", "10.1.1.1"),
        ]);
        assert_eq!(
            (e.rank, e.world_size, e.local_rank, e.launcher),
            (5, 8, 1, Launcher::Slurm)
        );
        assert_eq!(e.master(), "gpu007:29500");
        assert_eq!(
            with(&[("SLURM_LAUNCH_NODE_IPADDR", "10.1.1.1")]).master_addr,
            "10.1.1.1"
        );
        assert_eq!(
            with(&[
                ("MASTER_ADDR", "head"),
                ("MASTER_PORT", "1234"),
                ("SLURM_NODELIST", "x1")
            ])
            .master(),
            "head:1234"
        );
        let step = with(&[("SLURM_STEP_NODELIST", "b2"), ("SLURM_JOB_NODELIST", "a1")]);
        assert_eq!(step.master_addr, "b2");
        assert!(err(&base).contains("set MASTER_ADDR"), "{}", err(&base));
    }

    #[test]
    fn node_lists() {
        assert_eq!(first_host("node07").as_deref(), Some("node07"));
        assert_eq!(first_host("a,b,c").as_deref(), Some("a"));
        assert_eq!(first_host("node[01-04,09]").as_deref(), Some("node01"));
        assert_eq!(first_host("node[09,01-04]").as_deref(), Some("node09"));
        assert_eq!(first_host("gpu-[1-2],cpu-3").as_deref(), Some("gpu-1"));
        assert_eq!(
            first_host("rack[1-2]-gpu[03-04]").as_deref(),
            Some("rack1-gpu03")
        );
        assert_eq!(first_host("n[1-2]-ib,m3").as_deref(), Some("n1-ib"));
        for bad in ["", "node[", "node[a-b]", "node]1", "[]"] {
            assert_eq!(first_host(bad), None, "{bad}");
        }
    }

    #[test]
    fn inconsistent_values_are_errors() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("RANK", "0")], "RANK is set but WORLD_SIZE is not"),
            (&[("WORLD_SIZE", "2")], "WORLD_SIZE is set but RANK is not"),
            (
                &[("RANK", "2"), ("WORLD_SIZE", "2"), ("MASTER_ADDR", "h")],
                "RANK=2 is not below WORLD_SIZE=2",
            ),
            (
                &[("RANK", "0"), ("WORLD_SIZE", "0")],
                "at least one process",
            ),
            (
                &[("RANK", "x"), ("WORLD_SIZE", "2")],
                "RANK=\"x\" is not a non-negative integer",
            ),
            (
                &[("RANK", "-1"), ("WORLD_SIZE", "2")],
                "not a non-negative integer",
            ),
            (
                &[("RANK", "1"), ("WORLD_SIZE", "2")],
                "MASTER_ADDR is not set",
            ),
            (
                &[
                    ("RANK", "1"),
                    ("WORLD_SIZE", "4"),
                    ("LOCAL_RANK", "2"),
                    ("MASTER_ADDR", "h"),
                ],
                "LOCAL_RANK=2 is above RANK=1",
            ),
            (
                &[
                    ("RANK", "1"),
                    ("WORLD_SIZE", "2"),
                    ("MASTER_ADDR", "h"),
                    ("MASTER_PORT", "70000"),
                ],
                "MASTER_PORT=\"70000\"",
            ),
            (
                &[("SLURM_PROCID", "4"), ("SLURM_NTASKS", "4")],
                "SLURM_PROCID=4 is not below SLURM_NTASKS=4",
            ),
            (&[("SLURM_NTASKS", "4")], "but SLURM_PROCID is not"),
        ];
        for (vars, expected) in cases {
            let message = err(vars);
            assert!(message.contains(expected), "{vars:?}: {message}");
        }
        // One process needs no master.
        assert_eq!(
            env(&[("RANK", "0"), ("WORLD_SIZE", "1")])
                .unwrap()
                .world_size,
            1
        );
    }
}
