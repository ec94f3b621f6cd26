//! `coca launch`: start the ranks of a data-parallel run on this machine, as torchrun does — one `coca`
//! process per rank with `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR` and `MASTER_PORT` set.

use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;

use crate::cli::Global;

/// `coca launch`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  # 4 ranks on this machine:
  coca launch --nproc-per-node 4 -- train --model coca_ViT-B-32 \\
      --train-data 'shards/{000..099}.tar' --batch-size 32 --steps 10000 --gather-with-grad \\
      --output runs/ddp

  # Two machines, 8 ranks each (run on each machine with its --node-rank):
  coca launch --nnodes 2 --node-rank 0 --nproc-per-node 8 --master-addr 10.0.0.1 -- train ...

If one rank fails, the others are stopped and launch fails naming that rank and its exit status.")]
pub struct LaunchArgs {
    /// Processes (ranks) to start on this machine.
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub nproc_per_node: usize,
    /// Machines taking part (each runs `coca launch` with the same flags but its own --node-rank).
    #[arg(long, default_value_t = 1, value_name = "M")]
    pub nnodes: usize,
    /// This machine's index among --nnodes (0 hosts rank 0).
    #[arg(long, default_value_t = 0, value_name = "K")]
    pub node_rank: usize,
    /// Host of rank 0, reachable from every machine.
    #[arg(long, default_value = "127.0.0.1", value_name = "HOST")]
    pub master_addr: String,
    /// Port rank 0 listens on.
    #[arg(long, default_value_t = coca_dist::env::DEFAULT_MASTER_PORT, value_name = "PORT")]
    pub master_port: u16,
    /// The coca subcommand and its flags, after `--` (e.g. `-- train --model ... --output runs/x`).
    #[arg(last = true, required = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Start the ranks, wait for them, stop them all if one fails.
pub fn run(args: LaunchArgs, _global: &Global) -> Result<()> {
    if args.nproc_per_node == 0 || args.nnodes == 0 {
        bail!("--nproc-per-node and --nnodes must be at least 1");
    }
    if args.node_rank >= args.nnodes {
        bail!(
            "--node-rank {} is not below --nnodes {}",
            args.node_rank,
            args.nnodes
        );
    }
    let exe = std::env::current_exe().context("locating the coca executable")?;
    let world = args.nnodes * args.nproc_per_node;
    let mut children: Vec<(usize, Child)> = Vec::with_capacity(args.nproc_per_node);
    for local in 0..args.nproc_per_node {
        let rank = args.node_rank * args.nproc_per_node + local;
        let spawned = Command::new(&exe)
            .args(&args.command)
            .env("RANK", rank.to_string())
            .env("WORLD_SIZE", world.to_string())
            .env("LOCAL_RANK", local.to_string())
            .env("LOCAL_WORLD_SIZE", args.nproc_per_node.to_string())
            .env("MASTER_ADDR", &args.master_addr)
            .env("MASTER_PORT", args.master_port.to_string())
            .spawn();
        match spawned {
            Ok(child) => children.push((rank, child)),
            Err(e) => {
                stop_all(&mut children);
                return Err(e).with_context(|| format!("starting rank {rank} ({})", exe.display()));
            }
        }
    }
    // Wait for every rank; the first failure stops the rest, as torchrun does.
    while !children.is_empty() {
        let mut finished = None;
        for (i, (rank, child)) in children.iter_mut().enumerate() {
            if let Some(status) = child
                .try_wait()
                .with_context(|| format!("waiting for rank {rank}"))?
            {
                finished = Some((i, *rank, status));
                break;
            }
        }
        match finished {
            Some((i, rank, status)) => {
                children.remove(i);
                if !status.success() {
                    stop_all(&mut children);
                    bail!(
                        "rank {rank} failed ({}); stopped the other ranks",
                        describe(status)
                    );
                }
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    Ok(())
}

/// Kill and reap the ranks still running (processes this command started).
fn stop_all(children: &mut Vec<(usize, Child)>) {
    for (_, child) in children.iter_mut() {
        let _ = child.kill();
    }
    for (_, mut child) in children.drain(..) {
        let _ = child.wait();
    }
}

fn describe(status: ExitStatus) -> String {
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => "killed by a signal".into(),
    }
}
