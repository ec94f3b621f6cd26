//! Print what a checkpoint holds: `cargo run -p coca-checkpoint --example inspect -- FILE...`
//!
//! Handy to look at a downloaded open_clip checkpoint, or to see the error a broken
//! file produces.

use coca_checkpoint::Checkpoint;

fn main() {
    let mut failed = false;
    for path in std::env::args().skip(1) {
        match Checkpoint::open(&path) {
            Ok(ckpt) => {
                println!(
                    "{path}: {} checkpoint, {} tensors, {} elements{}",
                    ckpt.format(),
                    ckpt.len(),
                    ckpt.num_params(),
                    if ckpt.stripped_module_prefix() {
                        " ('module.' prefix removed)"
                    } else {
                        ""
                    }
                );
                for (key, value) in ckpt.metadata() {
                    println!("  metadata {key} = {value}");
                }
                for (name, info) in ckpt.infos() {
                    println!("  {name} {:?} {:?}", info.shape, info.dtype);
                }
            }
            Err(err) => {
                failed = true;
                eprintln!("error: {err}");
            }
        }
    }
    std::process::exit(i32::from(failed));
}
