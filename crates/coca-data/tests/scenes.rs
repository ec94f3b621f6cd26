//! The synthetic scene generator: determinism, splits, canonical captions that match the geometry and the
//! pixels, zero-shot labels, and the folder export.

use std::collections::HashSet;

use coca_data::scenes::{
    all_captions, class_names, contact_sheet, parse_caption, write_scene_folder, Colour, Relation,
    Scene, SceneOptions, SceneSet, Shape, Size, Split, LARGE_RADIUS, SMALL_RADIUS,
};
use coca_data::{open, DataError, Input};
use image::RgbImage;

fn set(split: Split, seed: u64) -> SceneSet {
    SceneSet::new(SceneOptions::default(), split, seed).unwrap()
}

fn noiseless(split: Split) -> SceneSet {
    let options = SceneOptions {
        noise: 0,
        ..SceneOptions::default()
    };
    SceneSet::new(options, split, 3).unwrap()
}

/// Pixels that clearly differ from the background (no noise): object pixels, including most of the
/// anti-aliased rim.
fn object_mask(image: &RgbImage, background: [u8; 3]) -> Vec<(u32, u32)> {
    image
        .enumerate_pixels()
        .filter(|(_, _, p)| {
            (0..3)
                .map(|c| p.0[c].abs_diff(background[c]) as u32)
                .sum::<u32>()
                > 60
        })
        .map(|(x, y, _)| (x, y))
        .collect()
}

#[test]
fn same_index_gives_identical_pixels_and_caption() {
    let (a, b) = (set(Split::Train, 11), set(Split::Train, 11));
    for index in [0, 1, 2, 999, u64::MAX] {
        assert_eq!(a.sample(index), b.sample(index), "index {index}");
        assert_eq!(a.scene(index), b.scene(index));
    }
    // Random access: the order of requests does not matter.
    let forward: Vec<_> = (0..20).map(|i| a.sample(i)).collect();
    let backward: Vec<_> = (0..20).rev().map(|i| b.sample(i)).collect();
    assert!(forward.iter().eq(backward.iter().rev()));
    // Neighbouring indices and other seeds give other scenes.
    assert_ne!(a.sample(0).0, a.sample(1).0);
    assert_ne!(a.sample(0).0, set(Split::Train, 12).sample(0).0);
}

#[test]
fn splits_are_disjoint() {
    let mut seen_scenes = HashSet::new();
    let mut seen_images = HashSet::new();
    for split in [Split::Train, Split::Val, Split::Test] {
        let s = set(split, 0);
        for index in 0..700 {
            let scene = s.scene(index);
            // The exact geometry identifies a scene; compare it bit for bit.
            let key: Vec<u64> = scene
                .objects
                .iter()
                .flat_map(|o| {
                    [
                        o.centre[0].to_bits(),
                        o.centre[1].to_bits(),
                        o.radius.to_bits(),
                    ]
                })
                .collect();
            assert!(seen_scenes.insert(key), "{split:?} {index} repeats a scene");
            assert!(seen_images.insert(s.render(&scene).into_raw()));
        }
    }
    // Labelled scenes come from yet another stream.
    let test = set(Split::Test, 0);
    assert_ne!(test.labelled_scene(0), test.scene(0));
}

#[test]
fn captions_are_canonical_and_match_the_geometry() {
    let s = set(Split::Train, 5);
    let mut relations = HashSet::new();
    let mut counts = [0usize; 3];
    for index in 0..2000 {
        let scene = s.scene(index);
        let caption = scene.caption();
        let parts = parse_caption(&caption).unwrap_or_else(|| panic!("unparsable {caption:?}"));
        assert_eq!(parts, scene.parts());
        assert_eq!(caption, caption.to_lowercase());
        assert_eq!(caption, caption.trim());
        counts[scene.objects.len()] += 1;

        for o in &scene.objects {
            let [x0, y0, x1, y1] = o.bounds();
            assert!(x0 >= 0.02 - 1e-9 && y0 >= 0.02 - 1e-9, "{caption}: {o:?}");
            assert!(x1 <= 0.98 + 1e-9 && y1 <= 0.98 + 1e-9, "{caption}: {o:?}");
        }
        match (scene.objects.as_slice(), scene.relation) {
            ([_], None) => {}
            ([a, b], Some(relation)) => {
                relations.insert(relation);
                let (ba, bb) = (a.bounds(), b.bounds());
                // Along the relation's axis: a clear gap, first object first. Across it: a small offset.
                let (axis, cross) = match relation {
                    Relation::LeftOf => (0, 1),
                    Relation::Above => (1, 0),
                };
                assert!(
                    bb[axis] - ba[axis + 2] >= 0.06 - 1e-9,
                    "{caption}: {a:?} {b:?}"
                );
                let along = b.centre[axis] - a.centre[axis];
                let across = (b.centre[cross] - a.centre[cross]).abs();
                assert!(across <= 0.5 * along + 1e-9, "{caption}: {a:?} {b:?}");
            }
            other => panic!("inconsistent scene {other:?}"),
        }
    }
    assert_eq!(relations.len(), 2);
    // One and two objects are equally likely.
    assert!(counts[1] > 900 && counts[2] > 900, "{counts:?}");
}

#[test]
fn rendered_objects_sit_where_the_scene_says() {
    let s = noiseless(Split::Val);
    let side = 64.0;
    for index in 0..300 {
        let scene = s.scene(index);
        let image = s.render(&scene);
        let mask = object_mask(&image, scene.background);
        assert!(!mask.is_empty());
        // Every object pixel is within its object's bounding box (give or take the rim pixel).
        let owner = |&(x, y): &(u32, u32)| {
            scene.objects.iter().position(|o| {
                let [x0, y0, x1, y1] = o.bounds().map(|v| v * side);
                (x as f64) >= x0 - 1.0
                    && (x as f64) < x1 + 1.0
                    && (y as f64) >= y0 - 1.0
                    && (y as f64) < y1 + 1.0
            })
        };
        let mut sums = vec![[0.0f64; 3]; scene.objects.len()];
        for p in &mask {
            let i = owner(p).unwrap_or_else(|| panic!("stray pixel {p:?} in {}", scene.caption()));
            sums[i][0] += p.0 as f64;
            sums[i][1] += p.1 as f64;
            sums[i][2] += 1.0;
        }
        // The caption's order agrees with the pixels: the first object's pixels are further left (or up).
        if let Some(relation) = scene.relation {
            let axis = usize::from(relation == Relation::Above);
            let mean = |i: usize| sums[i][axis] / sums[i][2];
            assert!(mean(0) + 4.0 < mean(1), "{}", scene.caption());
        }
    }
}

#[test]
fn object_centres_show_the_named_colour() {
    let s = set(Split::Test, 9);
    let options = s.options().clone();
    let tolerance = options.colour_jitter + options.noise + 1;
    for index in 0..500 {
        let scene = s.scene(index);
        let image = s.render(&scene);
        for o in &scene.objects {
            let [x, y] = o.centre.map(|v| (v * 64.0) as u32);
            let pixel = image.get_pixel(x, y).0;
            let want = o.description.colour.rgb();
            for c in 0..3 {
                assert!(
                    pixel[c].abs_diff(want[c]) <= tolerance,
                    "{}: {pixel:?} at {x},{y} vs {want:?}",
                    scene.caption()
                );
            }
            // And the nearest palette colour is the named one.
            let distance = |c: Colour| {
                (0..3)
                    .map(|k| (pixel[k] as i32 - c.rgb()[k] as i32).pow(2))
                    .sum::<i32>()
            };
            let nearest = Colour::ALL
                .into_iter()
                .min_by_key(|&c| distance(c))
                .unwrap();
            assert_eq!(nearest, o.description.colour);
        }
    }
}

#[test]
fn sizes_differ_clearly_in_pixels() {
    let s = noiseless(Split::Train);
    let mut small_max = [0usize; 4];
    let mut large_min = [usize::MAX; 4];
    for index in 0..600 {
        let scene = s.labelled_scene(index);
        let area = object_mask(&s.render(&scene), scene.background).len();
        let d = scene.objects[0].description;
        let shape = d.shape as usize;
        match d.size {
            Size::Small => small_max[shape] = small_max[shape].max(area),
            Size::Large => large_min[shape] = large_min[shape].min(area),
        }
    }
    for shape in [Shape::Circle, Shape::Square, Shape::Triangle] {
        let i = shape as usize;
        // Large objects cover at least twice the pixels of the largest small one.
        assert!(
            large_min[i] >= 2 * small_max[i],
            "{shape:?}: small up to {} px, large from {} px",
            small_max[i],
            large_min[i]
        );
    }
    assert!(LARGE_RADIUS.0 >= 1.5 * SMALL_RADIUS.1);
}

#[test]
fn class_labels_agree_with_captions() {
    let s = set(Split::Test, 1);
    let names = s.class_names();
    assert_eq!(names.len(), 12);
    assert_eq!(
        &names[..4],
        ["red circle", "red square", "red triangle", "green circle"]
    );
    assert_eq!(names, class_names(s.options()));
    let mut seen = HashSet::new();
    for index in 0..400 {
        let scene = s.labelled_scene(index);
        let label = s.class_label(&scene).unwrap();
        assert_eq!(Some(&names[label]), scene.class_name().as_ref());
        // "a large red circle" names class "red circle".
        let caption = scene.caption();
        let words: Vec<&str> = caption.split(' ').collect();
        assert_eq!(format!("{} {}", words[2], words[3]), names[label]);
        let (image, same) = s.labelled(index);
        assert_eq!(same, label);
        assert_eq!(image, s.render(&scene));
        seen.insert(label);
    }
    assert_eq!(seen.len(), names.len(), "every class occurs");
    // Two-object scenes have no class.
    let two = (0..)
        .map(|i| s.scene(i))
        .find(|sc| sc.objects.len() == 2)
        .unwrap();
    assert_eq!(s.class_label(&two), None);
    assert_eq!(two.class_name(), None);
}

#[test]
fn caption_space_is_enumerated() {
    let options = SceneOptions::default();
    let captions = all_captions(&options);
    assert_eq!(captions.len(), 1176);
    assert_eq!(options.caption_count(), 1176);
    let unique: HashSet<&String> = captions.iter().collect();
    assert_eq!(unique.len(), captions.len());
    assert!(captions.iter().all(|c| parse_caption(c).is_some()));
    let s = set(Split::Train, 2);
    for index in 0..300 {
        assert!(unique.contains(&s.scene(index).caption()));
    }
    let single = SceneOptions {
        max_objects: 1,
        colours: Colour::ALL.to_vec(),
        shapes: Shape::ALL.to_vec(),
        ..SceneOptions::default()
    };
    assert_eq!(all_captions(&single).len(), 64);
    assert_eq!(single.caption_count(), 64);
}

#[test]
fn scenes_render_at_any_size() {
    for size in [16, 32, 128] {
        let options = SceneOptions {
            image_size: size,
            ..SceneOptions::default()
        };
        let s = SceneSet::new(options, Split::Train, 0).unwrap();
        let (image, caption) = s.sample(4);
        assert_eq!(image.dimensions(), (size, size));
        assert_eq!(caption, set(Split::Train, 0).sample(4).1);
    }
}

#[test]
fn bad_options_are_refused_with_the_reason() {
    let cases: Vec<(SceneOptions, &str)> = vec![
        (
            SceneOptions {
                max_objects: 3,
                ..SceneOptions::default()
            },
            "1 or 2 objects",
        ),
        (
            SceneOptions {
                colours: vec![],
                ..SceneOptions::default()
            },
            "colours",
        ),
        (
            SceneOptions {
                shapes: vec![Shape::Circle, Shape::Circle],
                ..SceneOptions::default()
            },
            "each once",
        ),
        (
            SceneOptions {
                image_size: 8,
                ..SceneOptions::default()
            },
            "image_size 8",
        ),
        (
            SceneOptions {
                supersample: 0,
                ..SceneOptions::default()
            },
            "supersample",
        ),
    ];
    for (options, needle) in cases {
        let err = SceneSet::new(options, Split::Train, 0).unwrap_err();
        assert!(matches!(err, DataError::SceneOptions { .. }));
        assert!(err.to_string().contains(needle), "{err}");
    }
}

fn scenes_of(set: &SceneSet, n: u64) -> Vec<(RgbImage, String)> {
    (0..n).map(|i| set.sample(i)).collect()
}

#[test]
fn scene_folder_reads_back_as_a_folder_input() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("scenes");
    let s = set(Split::Val, 4);
    write_scene_folder(&s, 5, &out).unwrap();
    let samples: Vec<_> = open(&Input::Folder(out.clone()))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(samples.len(), 5);
    for (sample, (image, caption)) in samples.iter().zip(scenes_of(&s, 5)) {
        assert_eq!(sample.text.as_deref(), Some(caption.as_str()));
        let path = match &sample.image {
            coca_data::ImageData::Path(p) => p.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(image::open(&path).unwrap().to_rgb8(), image);
    }
    let mut names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names[..2], ["000000.png", "000000.txt"]);
    assert_eq!(names.len(), 10, "no temporary files left: {names:?}");

    // A path that cannot be a folder is a write error naming it.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, b"x").unwrap();
    let err = write_scene_folder(&s, 1, &blocker.join("sub")).unwrap_err();
    assert!(matches!(err, DataError::Write { .. }), "{err}");
    assert!(err.to_string().contains("file"), "{err}");
}

#[test]
fn contact_sheet_tiles_the_images() {
    let s = set(Split::Train, 0);
    let images: Vec<RgbImage> = scenes_of(&s, 5).into_iter().map(|(i, _)| i).collect();
    let sheet = contact_sheet(&images, 4, 2);
    // 4 columns × (128 + 2) + 2, 2 rows.
    assert_eq!(sheet.dimensions(), (4 * 130 + 2, 2 * 130 + 2));
    assert_eq!(sheet.get_pixel(2, 2), images[0].get_pixel(0, 0));
    assert_eq!(
        sheet.get_pixel(2 + 130 + 3, 2 + 1),
        images[1].get_pixel(1, 0)
    );
    assert_eq!(contact_sheet(&[], 4, 2).dimensions(), (1, 1));
}

#[test]
fn scene_struct_round_trips_through_its_caption() {
    let scene: Scene = set(Split::Train, 8).scene(17);
    assert_eq!(parse_caption(&scene.caption()), Some(scene.parts()));
}
