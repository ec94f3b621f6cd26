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

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    init_logging(cli.global.verbose, cli.global.quiet);
    progress::configure(cli.global.quiet, cli.global.progress_interval);
    keep_freed_memory();
    pipeline::set_decode_limits(coca_image::DecodeLimits {
        max_pixels: cli.global.max_image_pixels,
    });
    if let Some(threads) = cli.global.threads {
        // candle's CPU kernels size their pools from these; set before any tensor work starts.
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    let result = match cli.command {
        Command::Embed(args) => commands::embed::run(args),
        Command::Tokenize(args) => commands::tokenize::run(args),
        Command::Convert(args) => commands::convert::run(args),
        Command::Quantize(args) => commands::quantize::run(args),
        Command::Info(args) => commands::info::run(args),
        Command::Parity(args) => commands::parity::run(args),
        Command::Bench(args) => commands::bench::run(args),
        Command::Classify(args) => commands::classify::run(args, cli.global.quiet),
        Command::Caption(args) => commands::caption::run(args),
        Command::Search(args) => commands::search::run(args),
        Command::Index(args) => commands::index::run(args),
        Command::Serve(args) => commands::serve::run(args),
        Command::Plot(args) => commands::plot::run(args),
        Command::Launch(args) => commands::launch::run(args),
        Command::Probe(args) => commands::probe::run(args, cli.global.quiet),
        Command::Eval(args) => commands::eval::run(args, cli.global.quiet),
        Command::Train(args) => {
            // Whether a flag was typed, so `--demo` only fills in the others.
            let sub = matches.subcommand_matches("train");
            let given = |id: &str| {
                sub.and_then(|m| m.value_source(id))
                    .is_some_and(|s| s == clap::parser::ValueSource::CommandLine)
            };
            commands::train::run(args, &given)
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
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
