//! Time the TCP backend's all-reduce on this machine: `W` ranks as threads over localhost sockets, one
//! 25 MB bucket (PyTorch DDP's default) at a time.
//!
//! `cargo run --release -p coca-dist --example allreduce_bench -- [WORLD] [REPEATS]`

use std::net::TcpListener;
use std::time::Instant;

use coca_dist::{Communicator, DistEnv, Launcher, TcpComm};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let world: usize = args.next().map_or(Ok(2), |a| a.parse())?;
    let repeats: usize = args.next().map_or(Ok(10), |a| a.parse())?;
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let n = (25 << 20) / 4;
    let seconds = std::thread::scope(|s| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                s.spawn(move || -> Result<f64, coca_dist::DistError> {
                    let env = DistEnv {
                        rank,
                        world_size: world,
                        local_rank: rank,
                        master_addr: "127.0.0.1".into(),
                        master_port: port,
                        launcher: Launcher::Torchrun,
                    };
                    let comm = TcpComm::connect(&env)?;
                    let mut data = vec![rank as f32; n];
                    comm.barrier()?;
                    let started = Instant::now();
                    for _ in 0..repeats {
                        comm.all_reduce_sum_f32(&mut data)?;
                    }
                    Ok(started.elapsed().as_secs_f64() / repeats as f64)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("rank thread"))
            .collect::<Vec<_>>()
    });
    let per_call = seconds.into_iter().collect::<Result<Vec<_>, _>>()?[0];
    println!(
        "{world} ranks, 25 MB all-reduce: {:.1} ms per call ({:.2} GB/s of bucket per second)",
        per_call * 1e3,
        (n * 4) as f64 / per_call / 1e9
    );
    Ok(())
}
