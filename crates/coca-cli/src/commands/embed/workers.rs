//! Which worker of how many this process is, when several processes (on one machine or many) write one
//! `--output-dir`: from `--num-workers N --worker-index I`, else from the scheduler's environment.
//!
//! First match wins:
//! 1. `--worker-index I` (with `--num-workers N`);
//! 2. a Slurm job array: `SLURM_ARRAY_TASK_ID − SLURM_ARRAY_TASK_MIN` of `SLURM_ARRAY_TASK_COUNT` (the array
//!    must be contiguous, `--array=A-B`: a step would leave indexes unused);
//! 3. a Kubernetes indexed Job: `JOB_COMPLETION_INDEX` of `--num-workers` (the Job's `completions`, which
//!    Kubernetes does not put in the environment);
//! 4. torchrun's `RANK`/`WORLD_SIZE` or Slurm's `SLURM_PROCID`/`SLURM_NTASKS` (`srun`), read by
//!    [`coca_dist::DistEnv`] as training reads them;
//! 5. none of these: the only worker.

use anyhow::{bail, Result};
use coca_dist::{DistEnv, Launcher};
use coca_retrieval::Share;

/// This process's share of the partitions and where it came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The partitions this worker writes.
    pub share: Share,
    /// `--worker-index`, `SLURM_ARRAY_TASK_ID`, ... (empty for a single process).
    pub source: &'static str,
}

/// Resolve the share from the flags and the variables read through `get` (the environment, or a map in
/// tests). Empty variables count as unset.
pub fn resolve(
    num_workers: Option<usize>,
    worker_index: Option<usize>,
    get: impl Fn(&str) -> Option<String>,
) -> Result<Assignment> {
    let get = |name: &str| get(name).filter(|v| !v.trim().is_empty());
    let number = |name: &str| -> Result<Option<usize>> {
        match get(name) {
            None => Ok(None),
            Some(v) => match v.trim().parse::<usize>() {
                Ok(n) => Ok(Some(n)),
                Err(_) => bail!("{name}={v:?} is not a non-negative integer"),
            },
        }
    };
    if num_workers == Some(0) {
        bail!("--num-workers must be at least 1");
    }
    let checked = |index: usize, count: usize, source: &'static str, what: String| {
        if index >= count {
            bail!("{what}: worker index {index} is not below the number of workers {count}");
        }
        if let Some(n) = num_workers.filter(|&n| n != count) {
            bail!("{what} says {count} workers, but --num-workers is {n}");
        }
        Ok(Assignment {
            share: Share { index, count },
            source,
        })
    };
    if let Some(index) = worker_index {
        let Some(count) = num_workers else {
            bail!("--worker-index needs --num-workers (how many workers share the output folder)");
        };
        return checked(index, count, "--worker-index", "--worker-index".into());
    }
    if let Some(id) = number("SLURM_ARRAY_TASK_ID")? {
        let Some(count) = number("SLURM_ARRAY_TASK_COUNT")? else {
            bail!("SLURM_ARRAY_TASK_ID is set but SLURM_ARRAY_TASK_COUNT is not");
        };
        let min = number("SLURM_ARRAY_TASK_MIN")?.unwrap_or(0);
        if let Some(step) = number("SLURM_ARRAY_TASK_STEP")?.filter(|&s| s != 1) {
            bail!(
                "SLURM_ARRAY_TASK_STEP={step}: the job array must be contiguous (--array=0-{}), so that task \
                 IDs minus SLURM_ARRAY_TASK_MIN number the workers 0..SLURM_ARRAY_TASK_COUNT",
                count.saturating_sub(1)
            );
        }
        let Some(index) = id.checked_sub(min) else {
            bail!("SLURM_ARRAY_TASK_ID={id} is below SLURM_ARRAY_TASK_MIN={min}");
        };
        return checked(
            index,
            count,
            "SLURM_ARRAY_TASK_ID",
            format!("Slurm array task {id} (SLURM_ARRAY_TASK_MIN={min}, SLURM_ARRAY_TASK_COUNT={count})"),
        );
    }
    if let Some(index) = number("JOB_COMPLETION_INDEX")? {
        let Some(count) = num_workers else {
            bail!(
                "JOB_COMPLETION_INDEX={index} is set (a Kubernetes indexed Job), but the number of workers is not \
                 in the environment: pass --num-workers with the Job's spec.completions"
            );
        };
        return checked(
            index,
            count,
            "JOB_COMPLETION_INDEX",
            format!("JOB_COMPLETION_INDEX={index}"),
        );
    }
    let dist = DistEnv::from_vars(|name| get(name))?;
    match dist.launcher {
        Launcher::None => match num_workers {
            None | Some(1) => Ok(Assignment {
                share: Share::ALL,
                source: "",
            }),
            Some(n) => bail!(
                "--num-workers {n} needs --worker-index I, or a scheduler's variables (SLURM_ARRAY_TASK_ID, \
                 JOB_COMPLETION_INDEX, RANK/WORLD_SIZE) to say which worker this is"
            ),
        },
        Launcher::Torchrun => checked(
            dist.rank,
            dist.world_size,
            "RANK",
            format!("RANK={} of WORLD_SIZE={}", dist.rank, dist.world_size),
        ),
        Launcher::Slurm => checked(
            dist.rank,
            dist.world_size,
            "SLURM_PROCID",
            format!(
                "SLURM_PROCID={} of SLURM_NTASKS={}",
                dist.rank, dist.world_size
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    fn share(index: usize, count: usize) -> Share {
        Share { index, count }
    }

    #[test]
    fn each_scheduler_numbers_the_workers() {
        let a = resolve(Some(4), Some(2), with(&[])).unwrap();
        assert_eq!((a.share, a.source), (share(2, 4), "--worker-index"));
        let slurm = [
            ("SLURM_ARRAY_TASK_ID", "12"),
            ("SLURM_ARRAY_TASK_MIN", "10"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "1"),
        ];
        assert_eq!(
            resolve(None, None, with(&slurm)).unwrap().share,
            share(2, 4)
        );
        let k8s = [("JOB_COMPLETION_INDEX", "3")];
        assert_eq!(
            resolve(Some(5), None, with(&k8s)).unwrap().share,
            share(3, 5)
        );
        let torch = [("RANK", "1"), ("WORLD_SIZE", "3"), ("MASTER_ADDR", "host")];
        assert_eq!(
            resolve(None, None, with(&torch)).unwrap().share,
            share(1, 3)
        );
        assert_eq!(resolve(None, None, with(&[])).unwrap().share, Share::ALL);
        // The flag wins over the environment.
        assert_eq!(
            resolve(Some(2), Some(0), with(&slurm)).unwrap().share,
            share(0, 2)
        );
    }

    #[test]
    fn inconsistent_settings_are_refused_with_the_reason() {
        let err = |n, i, vars: &[(&str, &str)]| resolve(n, i, with(vars)).unwrap_err().to_string();
        assert!(err(None, Some(1), &[]).contains("--worker-index needs --num-workers"));
        assert!(err(Some(3), None, &[]).contains("--num-workers 3 needs --worker-index"));
        assert!(err(Some(2), Some(2), &[]).contains("index 2 is not below"));
        assert!(err(Some(0), None, &[]).contains("at least 1"));
        assert!(err(None, None, &[("JOB_COMPLETION_INDEX", "1")]).contains("pass --num-workers"));
        assert!(err(Some(2), None, &[("JOB_COMPLETION_INDEX", "x")]).contains("not a non-negative"));
        let stepped = [
            ("SLURM_ARRAY_TASK_ID", "2"),
            ("SLURM_ARRAY_TASK_COUNT", "2"),
            ("SLURM_ARRAY_TASK_STEP", "2"),
        ];
        assert!(err(None, None, &stepped).contains("contiguous"));
        let disagree = [
            ("SLURM_ARRAY_TASK_ID", "0"),
            ("SLURM_ARRAY_TASK_COUNT", "4"),
        ];
        assert!(err(Some(3), None, &disagree).contains("--num-workers is 3"));
        assert!(err(None, None, &[("SLURM_ARRAY_TASK_ID", "0")]).contains("COUNT is not"));
    }
}
