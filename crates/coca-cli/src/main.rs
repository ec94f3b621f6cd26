//! `coca`: CoCa (Contrastive Captioners) from the command line.

mod cli;
mod commands;
mod csv_args;
mod generation_args;
mod model_args;
mod output;
mod pipeline;
mod progress;
mod video_input;

use std::process::ExitCode;

use clap::Parser;

use crate::cli::{Cli, Command, Global};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let global = &cli.global;
    init_logging(global.verbose, global.quiet);
    progress::configure(global.quiet, global.progress_interval);
    keep_freed_memory();
    set_thread_counts(global, &cli.command);
    pipeline::set_decode_limits(coca_image::DecodeLimits {
        max_pixels: global.max_image_pixels,
    });
    let result = match cli.command {
        Command::Embed(args) => commands::embed::run(args, global),
        Command::Tokenize(args) => commands::tokenize::run(args, global),
        Command::Convert(args) => commands::convert::run(args, global),
        Command::Quantize(args) => commands::quantize::run(args, global),
        Command::Info(args) => commands::info::run(args, global),
        Command::Parity(args) => commands::parity::run(args, global),
        Command::Bench(args) => commands::bench::run(args, global),
        Command::Classify(args) => commands::classify::run(args, global),
        Command::Caption(args) => commands::caption::run(args, global),
        Command::Search(args) => commands::search::run(args, global),
        Command::Index(args) => commands::index::run(args, global),
        Command::Serve(args) => commands::serve::run(args, global),
        Command::Plot(args) => commands::plot::run(args, global),
        Command::Launch(args) => commands::launch::run(args, global),
        Command::Probe(args) => commands::probe::run(args, global),
        Command::Finetune(args) => commands::finetune::run(args, global),
        Command::Eval(args) => commands::eval::run(args, global),
        Command::Train(args) => commands::train::run(args, global),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// The thread pools' sizes, from the environment variables their libraries read when they first start; set
/// here, before any tensor work, and nowhere else.
fn set_thread_counts(global: &Global, command: &Command) {
    if let Some(threads) = global.threads {
        // candle's CPU kernels size their pools from this.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    if matches!(command, Command::Train(_)) && std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        // Training's large products run on rayon's threads; candle's second pool for element-wise kernels
        // then only spins against them, which slows every step down.
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("COCA_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
}

/// Keep freed tensor buffers in the process instead of returning them to the kernel. glibc maps big blocks
/// afresh and trims freed heap memory by default, so every training step page-faults its activations in
/// again (about 5% of a CPU step). Blocks up to 32 MiB now come from the heap and stay there for the next
/// step; the peak memory is unchanged.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before any other thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}
