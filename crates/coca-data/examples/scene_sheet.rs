//! Look at the synthetic scenes: writes a contact sheet of the first N scenes of a split, prints their
//! captions in sheet order, and times rendering.
//!
//! ```text
//! cargo run --release -p coca-data --example scene_sheet -- [OUT.png] [N] [train|val|test|labelled]
//! ```

use std::time::Instant;

use coca_data::scenes::{contact_sheet, SceneOptions, SceneSet, Split};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = args
        .first()
        .cloned()
        .unwrap_or_else(|| "/tmp/coca-scenes.png".into());
    let n: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(32);
    let which = args.get(2).map(String::as_str).unwrap_or("train");
    let split = match which {
        "train" => Split::Train,
        "val" => Split::Val,
        "test" | "labelled" => Split::Test,
        other => return Err(format!("unknown split {other:?}").into()),
    };
    let set = SceneSet::new(SceneOptions::default(), split, 0)?;
    let names = set.class_names();

    let mut images = Vec::new();
    for index in 0..n {
        let (image, text) = if which == "labelled" {
            let (image, class) = set.labelled(index);
            (image, format!("class {class}: {}", names[class]))
        } else {
            set.sample(index)
        };
        println!("{index:3}  row {} col {}  {text}", index / 8, index % 8);
        images.push(image);
    }
    contact_sheet(&images, 8, 3).save(&out)?;
    println!("wrote {out}");

    let count = 10_000u64;
    let start = Instant::now();
    let mut checksum = 0u64;
    for index in 0..count {
        let (image, caption) = set.sample(index);
        checksum = checksum.wrapping_add(u64::from(image.as_raw()[0]) + caption.len() as u64);
    }
    let elapsed = start.elapsed().as_secs_f64();
    println!(
        "rendered {count} scenes in {elapsed:.3} s on one thread: {:.1} µs per scene ({checksum})",
        elapsed * 1e6 / count as f64
    );
    Ok(())
}
