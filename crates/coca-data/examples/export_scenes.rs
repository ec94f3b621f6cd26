//! Write the demo's held-out scenes as files, so that `coca eval` (and other tools) can score a trained demo
//! model on exactly the images `coca train --demo` reports on: the first N captioned scenes and the first N
//! labelled one-object scenes of a split.
//!
//! ```text
//! cargo run --release -p coca-data --example export_scenes -- OUT_DIR [N=500] [test|val] [IMAGE_SIZE=48] [SEED=0]
//! ```
//!
//! OUT_DIR gets `captions/000000.png` + `.txt` and `captions.csv` (`filepath,title`, for `coca eval captioning
//! --csv`), `labelled/<class index, two digits>/000000.png` (an image folder for `coca eval
//! zeroshot-classification --dataset-root`), `classnames.txt` in label order and `templates.txt` with the
//! demo's prompts.

use std::io::Write;
use std::path::Path;

use coca_data::scenes::{write_scene_folder, SceneOptions, SceneSet, Split};

/// The demo's zero-shot prompts (`coca train`'s validation uses the same two).
const TEMPLATES: [&str; 2] = ["a small {c}", "a large {c}"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(out) = args.first() else {
        return Err("usage: export_scenes OUT_DIR [N] [test|val] [IMAGE_SIZE] [SEED]".into());
    };
    let out = Path::new(out);
    let n: u64 = args.get(1).map(|s| s.parse()).transpose()?.unwrap_or(500);
    let split = match args.get(2).map(String::as_str).unwrap_or("test") {
        "test" => Split::Test,
        "val" => Split::Val,
        other => return Err(format!("unknown split {other:?}; use test or val").into()),
    };
    let image_size: u32 = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(48);
    let seed: u64 = args.get(4).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let set = SceneSet::new(
        SceneOptions {
            image_size,
            ..SceneOptions::default()
        },
        split,
        seed,
    )?;

    let captions = out.join("captions");
    write_scene_folder(&set, n, &captions)?;
    let mut csv = String::from("filepath,title\n");
    for index in 0..n {
        let (_, caption) = set.sample(index);
        let png = captions.join(format!("{index:06}.png")).canonicalize()?;
        let quoted = caption.replace('"', "\"\"");
        csv.push_str(&format!("\"{}\",\"{quoted}\"\n", png.display()));
    }
    std::fs::write(out.join("captions.csv"), csv)?;

    for index in 0..n {
        let (image, class) = set.labelled(index);
        let dir = out.join("labelled").join(format!("{class:02}"));
        std::fs::create_dir_all(&dir)?;
        image.save(dir.join(format!("{index:06}.png")))?;
    }
    let mut names = std::fs::File::create(out.join("classnames.txt"))?;
    for name in set.class_names() {
        writeln!(names, "{name}")?;
    }
    std::fs::write(out.join("templates.txt"), TEMPLATES.join("\n") + "\n")?;
    println!(
        "wrote {n} captioned and {n} labelled {split:?} scenes ({image_size} px, seed {seed}) to {}",
        out.display()
    );
    Ok(())
}
