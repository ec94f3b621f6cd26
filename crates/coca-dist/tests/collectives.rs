//! Every backend's collectives with several ranks (threads; TCP over localhost sockets), and the TCP
//! backend's failure modes: a dead peer, a hung peer, ranks out of step, no rank 0.

use std::net::TcpListener;
use std::time::{Duration, Instant};

use candle_core::{Device, Tensor};
use coca_dist::{
    Communicator, DistEnv, DistError, Launcher, LocalComm, Single, TcpComm, TcpOptions,
};

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn env(rank: usize, world_size: usize, port: u16) -> DistEnv {
    DistEnv {
        rank,
        world_size,
        local_rank: rank,
        master_addr: "127.0.0.1".into(),
        master_port: port,
        launcher: Launcher::Torchrun,
    }
}

fn quick(timeout: Duration) -> TcpOptions {
    TcpOptions {
        timeout,
        connect_timeout: Duration::from_secs(20),
    }
}

/// Run `body` on every rank of a TCP group of `world` threads; results in rank order.
fn tcp_ranks<T: Send>(
    world: usize,
    options: TcpOptions,
    body: impl Fn(TcpComm) -> Result<T, DistError> + Sync,
) -> Vec<Result<T, DistError>> {
    let port = free_port();
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..world)
            .map(|rank| {
                let body = &body;
                s.spawn(move || body(TcpComm::connect_with(&env(rank, world, port), options)?))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

fn local_ranks<T: Send>(
    world: usize,
    body: impl Fn(LocalComm) -> Result<T, DistError> + Sync,
) -> Vec<Result<T, DistError>> {
    std::thread::scope(|s| {
        let handles: Vec<_> = LocalComm::group(world)
            .into_iter()
            .map(|comm| {
                let body = &body;
                s.spawn(move || body(comm))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

/// Values whose float sum depends on the order of addition.
fn values(rank: usize, n: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            ((i * 7 + rank * 13) % 11) as f32 * 0.1
                + 1e-7 * (rank as f32 + 1.0)
                + 1e8 * (i % 3 == rank % 3) as u8 as f32
        })
        .collect()
}

/// Everything the collectives promise, checked on one rank.
fn exercise(comm: &dyn Communicator) -> Result<(), DistError> {
    let (rank, world) = (comm.rank(), comm.world_size());
    // Larger than one transfer chunk, so chunked sends and reads are covered.
    let n = 300_000;
    let mut data = values(rank, n);
    comm.all_reduce_sum_f32(&mut data)?;
    let mut expected = values(0, n);
    for r in 1..world {
        for (e, v) in expected.iter_mut().zip(values(r, n)) {
            *e += v;
        }
    }
    assert!(
        data.iter()
            .zip(&expected)
            .all(|(a, b)| a.to_bits() == b.to_bits()),
        "rank-order sum"
    );

    let gathered = comm.all_gather_f32(&[rank as f32, 10.0 + rank as f32])?;
    let want: Vec<f32> = (0..world)
        .flat_map(|r| [r as f32, 10.0 + r as f32])
        .collect();
    assert_eq!(gathered, want);

    let mut b = vec![rank as f32 + 0.5; 5];
    comm.broadcast_f32(&mut b)?;
    assert_eq!(b, vec![0.5; 5]);
    comm.barrier()?;

    let bytes =
        comm.all_gather_bytes(format!("rank {rank} says {}", "hi".repeat(rank)).as_bytes())?;
    for (r, got) in bytes.iter().enumerate() {
        assert_eq!(
            String::from_utf8_lossy(got),
            format!("rank {r} says {}", "hi".repeat(r))
        );
    }

    let t = Tensor::from_vec(vec![rank as f32; 6], (2, 3), &Device::Cpu).unwrap();
    let sum = comm.all_reduce_sum(&t)?;
    assert_eq!(sum.dims(), &[2, 3]);
    let total = (0..world).sum::<usize>() as f32;
    assert_eq!(
        sum.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![total; 6]
    );
    let all = comm.all_gather(&t)?;
    assert_eq!(all.dims(), &[2 * world, 3]);
    assert_eq!(
        all.get(2 * world - 1).unwrap().to_vec1::<f32>().unwrap(),
        vec![(world - 1) as f32; 3]
    );
    let from0 = comm.broadcast(&t)?;
    assert_eq!(
        from0.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        vec![0.0; 6]
    );
    Ok(())
}

#[test]
fn single_process_collectives_return_their_input() {
    exercise(&Single).unwrap();
}

#[test]
fn local_group_collectives() {
    for world in [2, 3] {
        for r in local_ranks(world, |c| exercise(&c)) {
            r.unwrap();
        }
    }
}

#[test]
fn tcp_group_collectives() {
    for world in [2, 3] {
        for r in tcp_ranks(world, TcpOptions::default(), |c| exercise(&c)) {
            r.unwrap();
        }
    }
}

#[test]
fn tensor_collectives_refuse_non_f32() {
    let t = Tensor::zeros(3, candle_core::DType::F64, &Device::Cpu).unwrap();
    let err = Single.all_reduce_sum(&t).unwrap_err().to_string();
    assert!(err.contains("f32 tensors only"), "{err}");
}

#[test]
fn a_dead_peer_is_an_error_naming_it_not_a_hang() {
    let started = Instant::now();
    let results = tcp_ranks(3, quick(Duration::from_secs(60)), |c| {
        let mut x = vec![1.0; 10];
        c.all_reduce_sum_f32(&mut x)?;
        if c.rank() == 2 {
            // Exits (closing its socket) instead of joining the second collective.
            return Ok(());
        }
        c.all_reduce_sum_f32(&mut x)?;
        Ok(())
    });
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );
    let e0 = results[0].as_ref().unwrap_err().to_string();
    assert!(
        e0.contains("all_reduce #2: rank 2") && e0.contains("exited or crashed"),
        "{e0}"
    );
    // Rank 1 learns from rank 0 why the collective failed.
    let e1 = results[1].as_ref().unwrap_err().to_string();
    assert!(
        e1.contains("rank 0 reports") && e1.contains("rank 2"),
        "{e1}"
    );
}

#[test]
fn a_hung_peer_times_out() {
    let results = tcp_ranks(2, quick(Duration::from_secs(1)), |c| {
        if c.rank() == 1 {
            std::thread::sleep(Duration::from_secs(3));
            return Ok(());
        }
        c.barrier()
    });
    let err = results[0].as_ref().unwrap_err().to_string();
    assert!(
        err.contains("barrier #1: rank 1 sent nothing for 1 s"),
        "{err}"
    );
}

#[test]
fn ranks_out_of_step_are_reported() {
    let results = tcp_ranks(2, TcpOptions::default(), |c| {
        let mut x = vec![0.0; 4];
        if c.rank() == 0 {
            c.all_reduce_sum_f32(&mut x)
        } else {
            c.broadcast_f32(&mut x)
        }
    });
    let e0 = results[0].as_ref().unwrap_err().to_string();
    assert!(
        e0.contains("all_reduce #1: rank 1 is out of step: it is in broadcast #1"),
        "{e0}"
    );
    let e1 = results[1].as_ref().unwrap_err().to_string();
    assert!(e1.contains("rank 0 reports"), "{e1}");

    let results = tcp_ranks(2, TcpOptions::default(), |c| {
        let mut x = vec![0.0; 4 + c.rank()];
        c.all_reduce_sum_f32(&mut x)
    });
    let e0 = results[0].as_ref().unwrap_err().to_string();
    assert!(e0.contains("5 values against rank 0's 4"), "{e0}");

    let local = local_ranks(2, |c| c.all_gather_f32(&vec![0.0; 1 + c.rank()]));
    let e = local[0].as_ref().unwrap_err().to_string();
    assert!(
        e.contains("all_gather: rank 1 is out of step: 2 values"),
        "{e}"
    );
}

#[test]
fn no_rank_0_is_a_timeout_naming_the_address() {
    let port = free_port();
    let options = TcpOptions {
        timeout: Duration::from_secs(5),
        connect_timeout: Duration::from_secs(1),
    };
    let err = TcpComm::connect_with(&env(1, 2, port), options)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("127.0.0.1:{port}"))
            && err.contains("could not reach rank 0 within 1 s"),
        "{err}"
    );
    // And rank 0 alone gives up naming who is missing.
    let err = TcpComm::connect_with(&env(0, 3, port), options)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("rank(s) 1, 2 did not connect within 1 s"),
        "{err}"
    );
}

#[test]
fn inconsistent_world_sizes_fail_the_rendezvous() {
    let port = free_port();
    let options = quick(Duration::from_secs(5));
    let (r0, r1) = std::thread::scope(|s| {
        let a = s.spawn(|| TcpComm::connect_with(&env(0, 2, port), options).map(|_| ()));
        let b = s.spawn(|| TcpComm::connect_with(&env(1, 3, port), options).map(|_| ()));
        (a.join().unwrap(), b.join().unwrap())
    });
    for r in [r0, r1] {
        let e = r.unwrap_err().to_string();
        assert!(
            e.contains("rank 1 says WORLD_SIZE=3, rank 0 has WORLD_SIZE=2"),
            "{e}"
        );
    }
}
