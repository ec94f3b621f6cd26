//! Embedding one collection with many workers (`coca embed --num-workers/--worker-index` or a scheduler's
//! variables), checking it with `coca index`, and searching it through a faiss index: end to end with the
//! demo checkpoint on small collections built from fixtures/data/folder.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{assert_fails_with, root, stderr, stdout, DEMO_CFG, DEMO_WEIGHTS};
use serde_json::Value;

/// Variables of every scheduler coca reads: cleared in each child, so a test run inside a Slurm job or a
/// Kubernetes pod sees only the variables the test sets.
const SCHEDULER_VARS: [&str; 14] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "SLURM_ARRAY_TASK_MAX",
    "SLURM_ARRAY_TASK_STEP",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
    "JOB_COMPLETION_INDEX",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
];

/// The fixture images, cycled into a collection of `n` items (one path per line).
fn list_lines(n: usize) -> String {
    let images = [
        "coffee.jpg",
        "gradient.webp",
        "nested/grey.gif",
        "nested/palette.png",
        "small.bmp",
    ];
    let folder = root().join("fixtures/data/folder");
    (0..n)
        .map(|i| format!("{}\n", folder.join(images[i % images.len()]).display()))
        .collect()
}

/// Items in the test collections and the partition size: 6 partitions, the last one short.
const ITEMS: usize = 17;
const PARTITION: &str = "3";

fn write_list(dir: &Path) -> PathBuf {
    let list = dir.join("list.txt");
    std::fs::write(&list, list_lines(ITEMS)).unwrap();
    list
}

/// `coca embed` of `list` into `out`, with `extra` flags and the scheduler variables `env`, started.
fn spawn_embed(out: &Path, list: &Path, extra: &[&str], env: &[(&str, String)]) -> Child {
    let mut cmd = embed_command(out, list, extra, env);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.spawn().expect("start coca")
}

fn embed_command(out: &Path, list: &Path, extra: &[&str], env: &[(&str, String)]) -> Command {
    let mut cmd = embed_input_command(out, &["--input-list", s(list)], PARTITION);
    cmd.args(extra).envs(env.iter().map(|(k, v)| (k, v)));
    cmd
}

/// `coca embed` of the collection `input` (`--input-list FILE`, ...) into `out`, in partitions of
/// `partition` items, with no scheduler variable set.
fn embed_input_command(out: &Path, input: &[&str], partition: &str) -> Command {
    let mut cmd = common::command();
    for var in SCHEDULER_VARS {
        cmd.env_remove(var);
    }
    cmd.args(["embed", "--model", DEMO_CFG, "--pretrained", DEMO_WEIGHTS])
        .args(input)
        .args(["--output-dir", s(out)])
        .args(["--partition-size", partition, "--batch-size", "2", "--json"]);
    cmd
}

fn embed(out: &Path, list: &Path, extra: &[&str], env: &[(&str, String)]) -> Value {
    let o = embed_command(out, list, extra, env).output().unwrap();
    json_of(&o)
}

fn json_of(o: &Output) -> Value {
    assert!(o.status.success(), "failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).expect("JSON on stdout")
}

/// Run every worker at once and wait for all of them.
fn run_together(children: Vec<Child>) -> Vec<Value> {
    children
        .into_iter()
        .map(|c| json_of(&c.wait_with_output().unwrap()))
        .collect()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Every file of the layout's partition folders, by relative path.
fn partition_files(out: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files = Vec::new();
    for dir in ["img_emb", "text_emb", "metadata"] {
        let Ok(entries) = std::fs::read_dir(out.join(dir)) else {
            continue;
        };
        for e in entries {
            let e = e.unwrap();
            let name = format!("{dir}/{}", e.file_name().to_string_lossy());
            files.push((name, std::fs::read(e.path()).unwrap()));
        }
    }
    files.sort();
    files
}

/// Assert that two output folders hold the same partition files, byte for byte.
fn assert_same_partitions(got: &Path, want: &Path) {
    let (got, want) = (partition_files(got), partition_files(want));
    let names = |f: &[(String, Vec<u8>)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want));
    for ((name, a), (_, b)) in got.iter().zip(&want) {
        assert!(a == b, "{name} differs from the single-process run");
    }
}

/// Keys of every row, in partition order.
fn keys(out: &Path) -> Vec<String> {
    let layout = coca_retrieval::Layout::new(out);
    layout
        .partitions()
        .unwrap()
        .into_iter()
        .flat_map(|p| coca_retrieval::read_metadata(&layout.metadata_path(p)).unwrap())
        .map(|r| r.key.unwrap())
        .collect()
}

/// The one-process run every multi-worker run must reproduce.
fn reference(dir: &Path, list: &Path) -> PathBuf {
    let out = dir.join("one");
    let v = embed(&out, list, &[], &[]);
    assert_eq!(v["partitions_written"], 6);
    assert_eq!(v["num_workers"], 1);
    out
}

#[test]
fn workers_started_by_each_scheduler_write_what_one_process_writes() {
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path());
    let one = reference(dir.path(), &list);

    let slurm = dir.path().join("slurm");
    let children = (5..8)
        .map(|id| {
            let env = [
                ("SLURM_ARRAY_TASK_ID", id.to_string()),
                ("SLURM_ARRAY_TASK_MIN", "5".into()),
                ("SLURM_ARRAY_TASK_MAX", "7".into()),
                ("SLURM_ARRAY_TASK_COUNT", "3".into()),
                // sbatch sets these for the batch step too; the array variables win.
                ("SLURM_PROCID", "0".into()),
                ("SLURM_NTASKS", "1".into()),
            ];
            spawn_embed(&slurm, &list, &[], &env)
        })
        .collect();
    let reports = run_together(children);
    let mut written: Vec<u64> = reports
        .iter()
        .map(|r| {
            assert_eq!(r["num_workers"], 3);
            r["partitions_written"].as_u64().unwrap()
        })
        .collect();
    written.sort();
    assert_eq!(written, [2, 2, 2], "each worker writes its own partitions");
    assert_same_partitions(&slurm, &one);

    let k8s = dir.path().join("k8s");
    let children = (0..2)
        .map(|i| {
            let env = [("JOB_COMPLETION_INDEX", i.to_string())];
            spawn_embed(&k8s, &list, &["--num-workers", "2"], &env)
        })
        .collect();
    let reports = run_together(children);
    assert_eq!(reports[1]["worker"], 1);
    assert_eq!(reports[1]["partitions_owned"], 3);
    assert_same_partitions(&k8s, &one);

    let torchrun = dir.path().join("torchrun");
    let children = (0..4)
        .map(|rank| {
            let env = [
                ("RANK", rank.to_string()),
                ("LOCAL_RANK", rank.to_string()),
                ("WORLD_SIZE", "4".into()),
                ("MASTER_ADDR", "127.0.0.1".into()),
                ("MASTER_PORT", "29500".into()),
            ];
            spawn_embed(&torchrun, &list, &[], &env)
        })
        .collect();
    let reports = run_together(children);
    let owned: Vec<u64> = reports
        .iter()
        .map(|r| r["partitions_owned"].as_u64().unwrap())
        .collect();
    assert_eq!(owned, [2, 2, 1, 1]);
    assert_same_partitions(&torchrun, &one);
    assert_eq!(keys(&torchrun), keys(&one));
}

#[test]
fn a_worker_killed_mid_run_and_restarted_finishes_its_share_exactly_once() {
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path());
    let one = reference(dir.path(), &list);

    // The worker reads its input from a pipe, so the test decides how far it gets before the kill.
    let fifo = dir.path().join("fed.txt");
    let c_path = std::ffi::CString::new(s(&fifo)).unwrap();
    // SAFETY: `c_path` is a NUL-terminated path that outlives the call.
    assert_eq!(unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) }, 0);
    let out = dir.path().join("shared");
    let mut worker = spawn_embed(
        &out,
        &fifo,
        &["--num-workers", "2", "--worker-index", "0"],
        &[],
    );
    let mut pipe = std::fs::OpenOptions::new().write(true).open(&fifo).unwrap();
    let lines = list_lines(ITEMS);
    let first: String = lines.lines().take(9).map(|l| format!("{l}\n")).collect();
    pipe.write_all(first.as_bytes()).unwrap();
    pipe.flush().unwrap();
    let layout = coca_retrieval::Layout::new(&out);
    let deadline = Instant::now() + Duration::from_secs(120);
    while !layout.metadata_path(2).exists() {
        assert!(
            Instant::now() < deadline,
            "worker 0 never wrote partition 2"
        );
        assert!(worker.try_wait().unwrap().is_none(), "worker 0 ended early");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Partitions 0 and 2 are written; the worker now waits for partition 4's items.
    worker.kill().unwrap(); // SIGKILL
    let status = worker.wait().unwrap();
    assert!(!status.success());
    drop(pipe);
    assert!(!layout.metadata_path(4).exists());
    // What a kill during a write leaves behind, in this worker's partition and in the other worker's.
    let own_leftover = out.join("img_emb/.img_emb_00004.npy.tmp.4242.0");
    let other_in_flight = out.join("img_emb/.img_emb_00001.npy.tmp.4343.0");
    std::fs::write(&own_leftover, b"partial").unwrap();
    std::fs::write(&other_in_flight, b"being written").unwrap();

    // Restarted on the same input, now complete.
    std::fs::remove_file(&fifo).unwrap();
    std::fs::write(&fifo, &lines).unwrap();
    let v = embed(
        &out,
        &fifo,
        &["--num-workers", "2", "--worker-index", "0"],
        &[],
    );
    assert_eq!(v["partitions_reused"], 2, "{v}");
    assert_eq!(v["partitions_written"], 1, "{v}");
    assert!(!own_leftover.exists(), "its own leftover is cleaned up");
    assert!(
        other_in_flight.exists(),
        "another worker's file in flight is left alone"
    );
    let v = embed(
        &out,
        &fifo,
        &["--num-workers", "2", "--worker-index", "1"],
        &[],
    );
    assert_eq!(v["partitions_written"], 3, "{v}");
    assert!(!other_in_flight.exists());

    assert_eq!(keys(&out), keys(&one), "no sample missing or repeated");
    assert_same_partitions(&out, &one);
}

#[test]
fn a_rerun_with_another_worker_count_resumes_and_finalize_names_missing_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path());
    let one = reference(dir.path(), &list);
    let out = dir.path().join("shared");

    // Only worker 0 of 2 ran: partitions 1, 3 and 5 are missing, and worker 1 owns them.
    embed(
        &out,
        &list,
        &["--num-workers", "2", "--worker-index", "0"],
        &[],
    );
    let o = common::coca(&["index", s(&out), "--ann", "none"]);
    assert_fails_with(
        &o,
        &[
            "3 of 6 partitions are not complete",
            "partition 1 (missing; worker 1 of 2)",
            "partition 5 (missing; worker 1 of 2)",
        ],
    );
    assert!(!out.join("coca_collection.json").exists());

    // The rest is done by 3 workers: partitions are cut from the input alone, so they resume.
    let mut written = 0;
    let mut reused = 0;
    for i in 0..3 {
        let idx = i.to_string();
        let v = embed(
            &out,
            &list,
            &["--num-workers", "3", "--worker-index", &idx],
            &[],
        );
        written += v["partitions_written"].as_u64().unwrap();
        reused += v["partitions_reused"].as_u64().unwrap();
    }
    assert_eq!((written, reused), (3, 3));
    assert_same_partitions(&out, &one);

    let o = common::coca(&["index", s(&out), "--ann", "none", "--json"]);
    let v = json_of(&o);
    let c = &v["collection"];
    assert_eq!(c["rows"], ITEMS);
    assert_eq!(c["input_items"], ITEMS);
    assert_eq!(c["partitions"].as_array().unwrap().len(), 6);
    assert_eq!(c["workers"], 3);
    assert_eq!(c["dim"], 16);
    assert_eq!(c["dtype"], "f16");
    assert_eq!(c["checkpoint_sha256"].as_str().unwrap().len(), 64);
    assert!(out.join("coca_collection.json").is_file());

    // A damaged partition is reported as such.
    let layout = coca_retrieval::Layout::new(&out);
    std::fs::remove_file(layout.image_path(4)).unwrap();
    let o = common::coca(&["index", s(&out), "--ann", "none"]);
    assert_fails_with(
        &o,
        &["partition 4 (img_emb_00004.npy is missing; worker 1 of 3)"],
    );
}

#[test]
fn worker_settings_that_cannot_be_right_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path());
    let out = dir.path().join("out");
    let run = |extra: &[&str], env: &[(&str, String)]| {
        embed_command(&out, &list, extra, env).output().unwrap()
    };
    assert_fails_with(
        &run(&["--num-workers", "2", "--worker-index", "2"], &[]),
        &["worker index 2 is not below the number of workers 2"],
    );
    assert_fails_with(
        &run(&["--worker-index", "1"], &[]),
        &["--worker-index needs --num-workers"],
    );
    assert_fails_with(
        &run(&[], &[("JOB_COMPLETION_INDEX", "1".into())]),
        &["JOB_COMPLETION_INDEX=1", "pass --num-workers"],
    );
    let stepped = [
        ("SLURM_ARRAY_TASK_ID", "2".to_string()),
        ("SLURM_ARRAY_TASK_COUNT", "2".into()),
        ("SLURM_ARRAY_TASK_STEP", "2".into()),
    ];
    assert_fails_with(
        &run(&[], &stepped),
        &["SLURM_ARRAY_TASK_STEP=2", "contiguous"],
    );
    assert!(!out.exists(), "nothing written for refused settings");

    assert_fails_with(
        &common::coca(&["index", "no/such/dir"]),
        &["no such folder"],
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    assert_fails_with(
        &common::coca(&["index", s(&empty)]),
        &["no coca_embed.json"],
    );
    // A folder whose workers are all still running (or were all killed) has no report yet.
    let started = dir.path().join("started");
    embed(&started, &list, &[], &[]);
    std::fs::remove_dir_all(started.join("workers")).unwrap();
    assert_fails_with(
        &common::coca(&["index", s(&started)]),
        &["no worker has gone through the whole input"],
    );
    assert_fails_with(
        &common::coca(&["index", s(&started), "--target-recall", "2"]),
        &["--target-recall must be between 0 and 1"],
    );
}

/// Append a sample to a tar shard: `key.jpg` (any bytes: only captions are embedded) and `key.txt`.
fn append_sample(shard: &mut tar::Builder<std::fs::File>, key: &str, caption: &str) {
    for (name, data) in [
        (format!("{key}.jpg"), vec![0xd8; 300]),
        (format!("{key}.txt"), caption.as_bytes().to_vec()),
    ] {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        shard.append_data(&mut header, name, &data[..]).unwrap();
    }
}

/// A shard of these (key, caption) samples; each takes 2,048 bytes (two headers, two padded files).
fn write_shard(path: &Path, samples: &[(&str, &str)]) {
    let mut shard = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (key, caption) in samples {
        append_sample(&mut shard, key, caption);
    }
    shard.finish().unwrap();
}

/// Run `cmd` to the end (its output kept in files under `dir`, named `name`): its output and the most memory
/// it held at once (peak resident set in bytes, as `wait4` reports it for this one child).
fn run_measuring_memory(mut cmd: Command, dir: &Path, name: &str) -> (Output, u64) {
    use std::os::unix::process::ExitStatusExt;
    let (out, err) = (
        dir.join(format!("{name}.stdout")),
        dir.join(format!("{name}.stderr")),
    );
    cmd.stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap());
    // Reaped by the wait4 below, which also reports its memory.
    #[allow(clippy::zombie_processes)]
    let child = cmd.spawn().expect("start coca");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: rusage is plain data (integers), for which all zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `status` and `usage` are writable locals that wait4 fills in; the pid is this test's own child, not
    // yet waited for (dropping `child` afterwards does not wait again).
    assert_eq!(unsafe { libc::wait4(pid, &mut status, 0, &mut usage) }, pid);
    let output = Output {
        status: std::process::ExitStatus::from_raw(status),
        stdout: std::fs::read(out).unwrap(),
        stderr: std::fs::read(err).unwrap(),
    };
    (output, usage.ru_maxrss as u64 * 1024)
}

#[test]
fn a_worker_reads_only_the_shards_of_its_own_partitions() {
    let dir = tempfile::tempdir().unwrap();
    let shards = dir.path().join("shards");
    std::fs::create_dir(&shards).unwrap();
    // 3 workers, partitions of 3 items: shard N holds partition N, worker N's.
    write_shard(
        &shards.join("0.tar"),
        &[
            ("a", "a red cube"),
            ("b", "a blue ball"),
            ("c", "a green cone"),
        ],
    );
    // Shard 1 is cut short in the middle of its third image: 2 samples, then the damage, 3 items.
    let cut = shards.join("1.tar");
    write_shard(
        &cut,
        &[
            ("d", "a grey cat"),
            ("e", "a black dog"),
            ("f", "a white owl"),
        ],
    );
    std::fs::OpenOptions::new()
        .write(true)
        .open(&cut)
        .unwrap()
        .set_len(2 * 2048 + 512 + 100)
        .unwrap();
    // Shard 2's one image claims 1 GiB (a sparse file, so no disk is used): a worker reading the shard would
    // hold that in memory.
    let huge = shards.join("2.tar");
    {
        use std::io::{Seek, SeekFrom};
        let mut file = std::fs::File::create(&huge).unwrap();
        let mut header = tar::Header::new_gnu();
        header.set_path("g.jpg").unwrap();
        header.set_size(1 << 30);
        header.set_mode(0o644);
        header.set_cksum();
        file.write_all(header.as_bytes()).unwrap();
        file.seek(SeekFrom::Start(512 + (1 << 30))).unwrap();
        let mut rest = tar::Builder::new(file);
        let mut header = tar::Header::new_gnu();
        header.set_size(9);
        header.set_mode(0o644);
        rest.append_data(&mut header, "g.txt", &b"a big owl"[..])
            .unwrap();
        rest.finish().unwrap();
    }

    let out = dir.path().join("out");
    let pattern = format!("{}/{{0..2}}.tar", shards.display());
    let worker = |index: &str| {
        let mut cmd = embed_input_command(&out, &["--input-shards", &pattern], "3");
        cmd.args([
            "--embeddings",
            "text",
            "--num-workers",
            "3",
            "--worker-index",
            index,
        ]);
        let (o, peak) = run_measuring_memory(cmd, dir.path(), index);
        assert!(
            peak < 512 << 20,
            "worker {index} held {} MiB: it read the 1 GiB image of a shard it does not embed",
            peak >> 20
        );
        (json_of(&o), stderr(&o))
    };

    // Worker 0 reads shard 0; it learns how many items shards 1 and 2 hold from their headers, and reports
    // neither the damage of shard 1 nor anything of shard 2.
    let (v, err) = worker("0");
    assert_eq!(v["embedded"], 3, "{v}");
    assert_eq!(v["skipped"], 0, "{v}");
    assert_eq!(v["input_items"], 7, "{v}");
    assert_eq!(v["input_partitions"], 3, "{v}");
    assert!(!err.contains("1.tar") && !err.contains("2.tar"), "{err}");

    // Worker 1 reads shard 1 and reports its damage.
    let (v, _) = worker("1");
    assert_eq!(v["embedded"], 2, "{v}");
    assert_eq!(v["skipped"], 1, "{v}");
    let reported = v["skipped_items"][0].as_str().unwrap();
    assert!(
        reported.contains("1.tar") && reported.contains("data ends after 100 of 300 bytes"),
        "{reported}"
    );
    assert_eq!(v["input_items"], 7, "{v}");
    assert_eq!(keys(&out), ["a", "b", "c", "d", "e"]);
}

/// The Python with faiss and numpy (the tests' virtualenv puts it first on PATH), or `None` after saying
/// that the test is skipped.
fn faiss_python(test: &str) -> Option<&'static str> {
    let ok = Command::new("python3")
        .args(["-c", "import faiss, numpy"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED {test}: python3 has no faiss/numpy (pip install -r scripts/ci/requirements.txt)");
    }
    ok.then_some("python3")
}

/// 100,000 Gaussian random vectors of 32 dimensions in 4 float16 partitions, with the report of the one worker
/// that wrote them: the collection the index tests and benchmarks build on.
fn synthetic_collection(out: &Path) -> (usize, usize) {
    let (rows, dim, parts) = (100_000usize, 32usize, 4usize);
    let manifest = coca_retrieval::Manifest {
        format: coca_retrieval::FORMAT_VERSION,
        partition_size: rows / parts,
        dim,
        dtype: coca_retrieval::EmbeddingDtype::F16,
        image_embeddings: true,
        text_embeddings: false,
        settings: Default::default(),
    };
    let mut output = coca_retrieval::EmbeddingOutput::create_or_resume(out, manifest).unwrap();
    // Gaussian vectors from a fixed xorshift stream with Box-Muller: no structure for the index to exploit.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        ((state >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    for p in 0..parts {
        let mut data = coca_retrieval::PartitionData::default();
        for i in 0..rows / parts {
            let v: Vec<f32> = (0..dim)
                .map(|_| {
                    let (u, w) = (uniform(), uniform());
                    ((-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * w).cos()) as f32
                })
                .collect();
            let row = coca_retrieval::MetadataRow {
                key: Some(format!("{p}-{i}")),
                ..Default::default()
            };
            data.push(Some(&v[..]), None, row);
        }
        output.write_partition(p, &data).unwrap();
    }
    coca_retrieval::WorkerReport {
        worker: 0,
        workers: 1,
        input_items: rows,
        partitions: parts,
        checkpoint_sha256: None,
    }
    .write(output.layout())
    .unwrap();
    (rows, dim)
}

#[test]
fn hnsw_index_of_a_synthetic_collection_reaches_the_recall_target() {
    let Some(_) = faiss_python("hnsw_index_of_a_synthetic_collection_reaches_the_recall_target")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("synthetic");
    let (rows, dim) = synthetic_collection(&out);

    let started = Instant::now();
    let o = common::coca(&["index", s(&out), "--json"]);
    let v = json_of(&o);
    let info = &v["indexes"]["image"];
    let recall = info["recall"].as_f64().unwrap();
    eprintln!(
        "HNSW32 over {rows}x{dim}: recall@10 {recall:.4} at {}, built in {:.1}s ({:.1}s in all)",
        info["index_param"],
        info["build_seconds"].as_f64().unwrap(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(info["factory"], "HNSW32");
    assert_eq!(info["rows"], rows);
    assert_eq!(info["recall_at"], 10);
    assert!(recall >= 0.95, "recall@10 {recall}");
    assert!(out.join("index/image.index").is_file());
    assert!(out.join("index/image.json").is_file());
}

/// The IVF-PQ benchmark of docs/benchmarks.md (`--ann IVF1024,PQ8`, what `--ann auto` builds for
/// collections too large for HNSW, sized for 100,000 rows): ignored by default, since its recall is
/// measured, not a target.
#[test]
#[ignore = "benchmark for docs/benchmarks.md: cargo test -p coca-cli --test scale_out ivf_pq -- --ignored --nocapture"]
fn ivf_pq_index_of_a_synthetic_collection_is_measured() {
    let Some(_) = faiss_python("ivf_pq_index_of_a_synthetic_collection_is_measured") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("synthetic");
    let (rows, dim) = synthetic_collection(&out);
    let started = Instant::now();
    let o = common::coca(&["index", s(&out), "--ann", "IVF1024,PQ8", "--json"]);
    let v = json_of(&o);
    let info = &v["indexes"]["image"];
    eprintln!(
        "IVF1024,PQ8 over {rows}x{dim}: recall@10 {:.4} at {}, built in {:.1}s ({:.1}s in all), {} bytes",
        info["recall"].as_f64().unwrap(),
        info["index_param"],
        info["build_seconds"].as_f64().unwrap(),
        started.elapsed().as_secs_f64(),
        info["index_bytes"]
    );
    let tried = std::fs::read_to_string(out.join("index/image.json")).unwrap();
    eprintln!("{tried}");
    assert_eq!(info["factory"], "IVF1024,PQ8");
    assert_eq!(info["rows"], rows);
    assert!(info["index_param"].as_str().unwrap().starts_with("nprobe="));
}

#[test]
fn faiss_over_coca_output_finds_what_coca_search_finds() {
    let Some(python) = faiss_python("faiss_over_coca_output_finds_what_coca_search_finds") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("folder");
    let o = common::coca(&[
        "embed",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--input-dir",
        "fixtures/data/folder",
        "--output-dir",
        s(&out),
        "--partition-size",
        "2",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = common::coca(&["index", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("image index: HNSW32 over 5 rows"), "{text}");
    assert!(text.contains("recall@5 1.000"), "{text}");

    let query = "a tiny photo of coffee";
    let search = |extra: &[&str]| {
        let mut args = vec![
            "search",
            "--model",
            DEMO_CFG,
            "--pretrained",
            DEMO_WEIGHTS,
            "--index",
            s(&out),
            "--text",
            query,
            "--top-k",
            "5",
            "--json",
        ];
        args.extend_from_slice(extra);
        common::coca(&args)
    };
    let ranked = |v: &Value| -> Vec<(u64, u64)> {
        v["results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["partition"].as_u64().unwrap(), r["row"].as_u64().unwrap()))
            .collect()
    };
    let exact_out = search(&["--exact"]);
    let exact = json_of(&exact_out);
    assert_eq!(exact["method"], "exact");
    let ann_out = search(&[]);
    let ann = json_of(&ann_out);
    assert_eq!(ann["method"], "faiss");
    assert!(
        stderr(&ann_out).contains("note: searching the faiss index"),
        "{}",
        stderr(&ann_out)
    );
    assert_eq!(ranked(&ann), ranked(&exact));

    // faiss itself, reading the folder as autofaiss does (the .npy files in name order), with the query
    // embedding coca computes.
    let o = common::coca(&[
        "embed",
        "--model",
        DEMO_CFG,
        "--pretrained",
        DEMO_WEIGHTS,
        "--text",
        query,
        "--json",
    ]);
    let q = json_of(&o)["text_embeddings"][0].clone();
    let script = r#"
import glob, json, sys
import faiss, numpy as np
folder, query = sys.argv[1], np.array(json.loads(sys.argv[2]), dtype="float32")[None]
files = sorted(glob.glob(folder + "/img_emb/*.npy"))
sizes = [np.load(f).shape[0] for f in files]
x = np.concatenate([np.load(f).astype("float32") for f in files])
faiss.normalize_L2(x); faiss.normalize_L2(query)
index = faiss.IndexFlatIP(x.shape[1]); index.add(x)
_, ids = index.search(query, 5)
rows = [(p, r) for p, n in enumerate(sizes) for r in range(n)]
print(json.dumps([rows[i] for i in ids[0]]))
"#;
    let o = Command::new(python)
        .args(["-c", script, s(&out), &q.to_string()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let faiss_ranked: Vec<(u64, u64)> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(faiss_ranked, ranked(&exact));

    // An index that no longer matches the folder is not used.
    let mut c: Value =
        serde_json::from_slice(&std::fs::read(out.join("coca_collection.json")).unwrap()).unwrap();
    c["rows"] = Value::from(6);
    std::fs::write(out.join("coca_collection.json"), c.to_string()).unwrap();
    let o = search(&[]);
    assert_eq!(json_of(&o)["method"], "exact");
    assert!(stderr(&o).contains("searching exactly"), "{}", stderr(&o));
}

/// The first fenced block of `doc` containing `marker`.
fn code_block<'a>(doc: &'a str, marker: &str) -> &'a str {
    doc.split("```")
        .skip(1)
        .step_by(2)
        .find(|b| b.contains(marker))
        .unwrap_or_else(|| panic!("no code block with {marker:?} in docs/retrieval.md"))
}

/// The number after `key` in `text` (`--array=0-15` gives 0 for `--array=`).
fn number_after(text: &str, key: &str) -> usize {
    let at = text.find(key).unwrap_or_else(|| panic!("{key} not found")) + key.len();
    let digits: String = text[at..]
        .trim_start_matches([' ', '"', '\'', ','])
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().unwrap()
}

#[test]
fn the_docs_slurm_array_and_kubernetes_job_run_as_written() {
    let doc = std::fs::read_to_string(root().join("docs/retrieval.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let list = write_list(dir.path());
    let one = reference(dir.path(), &list);

    // Slurm: the array's range gives each task's SLURM_ARRAY_TASK_ID/MIN/MAX/COUNT.
    let script = code_block(&doc, "#SBATCH --array=");
    assert!(script.contains("coca embed") && script.contains("coca index"));
    assert!(
        !script.contains("--worker-index") && !script.contains("--num-workers"),
        "the Slurm script relies on the array variables"
    );
    let (min, max) = (
        number_after(script, "#SBATCH --array="),
        number_after(
            script,
            &format!(
                "#SBATCH --array={}-",
                number_after(script, "#SBATCH --array=")
            ),
        ),
    );
    let count = max - min + 1;
    assert!(count > 1);
    let slurm = dir.path().join("slurm");
    let children = (min..=max)
        .map(|id| {
            let env = [
                ("SLURM_ARRAY_JOB_ID", "4242".to_string()),
                ("SLURM_ARRAY_TASK_ID", id.to_string()),
                ("SLURM_ARRAY_TASK_MIN", min.to_string()),
                ("SLURM_ARRAY_TASK_MAX", max.to_string()),
                ("SLURM_ARRAY_TASK_COUNT", count.to_string()),
                ("SLURM_ARRAY_TASK_STEP", "1".to_string()),
            ];
            spawn_embed(&slurm, &list, &[], &env)
        })
        .collect();
    let reports = run_together(children);
    assert!(reports.iter().all(|r| r["num_workers"] == count));
    assert_same_partitions(&slurm, &one);
    let o = common::coca(&["index", s(&slurm), "--ann", "none"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // Kubernetes: an Indexed Job's completions, passed as --num-workers, and JOB_COMPLETION_INDEX.
    let manifest = code_block(&doc, "completionMode: Indexed");
    let completions = number_after(manifest, "completions:");
    assert_eq!(number_after(manifest, "parallelism:"), completions);
    assert_eq!(
        number_after(manifest, "--num-workers"),
        completions,
        "the Job passes its completions as --num-workers"
    );
    assert!(
        manifest.contains("JOB_COMPLETION_INDEX") || manifest.contains("completionMode: Indexed")
    );
    let k8s = dir.path().join("k8s");
    let n = completions.to_string();
    let children = (0..completions)
        .map(|i| {
            let env = [("JOB_COMPLETION_INDEX", i.to_string())];
            spawn_embed(&k8s, &list, &["--num-workers", &n], &env)
        })
        .collect();
    run_together(children);
    assert_same_partitions(&k8s, &one);
    let o = common::coca(&["index", s(&k8s), "--ann", "none"]);
    assert!(o.status.success(), "{}", stderr(&o));
}
