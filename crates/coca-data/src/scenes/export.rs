//! Getting scenes out to look at or to feed other tools: a folder of `png` + `txt` pairs, and a contact sheet.

use std::io::Write;
use std::path::Path;

use image::{ImageEncoder, RgbImage};

use super::SceneSet;
use crate::DataError;

/// Write scenes `0..n` of `set` into `dir` (created if missing) as `000123.png` with its caption in
/// `000123.txt` (one line), the layout [`crate::Input::Folder`] reads back. Every file is written atomically
/// (temporary file + rename), so an interrupted export leaves only complete files. Existing files of the same
/// names are replaced. Names have at least six digits and sort in index order.
pub fn write_scene_folder(set: &SceneSet, n: u64, dir: &Path) -> Result<(), DataError> {
    std::fs::create_dir_all(dir).map_err(|source| DataError::Write {
        path: dir.to_path_buf(),
        source,
    })?;
    for index in 0..n {
        let (image, caption) = set.sample(index);
        let stem = format!("{index:06}");
        let png = dir.join(format!("{stem}.png"));
        write_file(&png, |w| {
            image::codecs::png::PngEncoder::new(w)
                .write_image(
                    image.as_raw(),
                    image.width(),
                    image.height(),
                    image::ExtendedColorType::Rgb8,
                )
                .map_err(std::io::Error::other)
        })?;
        write_file(&dir.join(format!("{stem}.txt")), |w| {
            writeln!(w, "{caption}")
        })?;
    }
    Ok(())
}

/// Write one file atomically, naming it in the error.
fn write_file(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> std::io::Result<()>,
) -> Result<(), DataError> {
    coca_fs::write_atomic(path, write).map_err(|source| DataError::Write {
        path: path.to_path_buf(),
        source,
    })
}

/// Tile `images` into a grid of `columns` columns, each enlarged `scale`× (nearest neighbour) and separated
/// by 2-pixel white lines: a quick visual check of a set of scenes. Images may differ in size; each cell is
/// as large as the largest. An empty list gives a 1×1 white image.
pub fn contact_sheet(images: &[RgbImage], columns: u32, scale: u32) -> RgbImage {
    const GAP: u32 = 2;
    let (columns, scale) = (columns.max(1), scale.max(1));
    let cell_w = images.iter().map(|i| i.width()).max().unwrap_or(0) * scale;
    let cell_h = images.iter().map(|i| i.height()).max().unwrap_or(0) * scale;
    if images.is_empty() || cell_w == 0 || cell_h == 0 {
        return RgbImage::from_pixel(1, 1, image::Rgb([255; 3]));
    }
    let rows = (images.len() as u32).div_ceil(columns);
    let columns = columns.min(images.len() as u32);
    let mut sheet = RgbImage::from_pixel(
        GAP + columns * (cell_w + GAP),
        GAP + rows * (cell_h + GAP),
        image::Rgb([255; 3]),
    );
    for (i, tile) in images.iter().enumerate() {
        let (col, row) = (i as u32 % columns, i as u32 / columns);
        let (ox, oy) = (GAP + col * (cell_w + GAP), GAP + row * (cell_h + GAP));
        for (x, y, pixel) in tile.enumerate_pixels() {
            for dy in 0..scale {
                for dx in 0..scale {
                    sheet.put_pixel(ox + x * scale + dx, oy + y * scale + dy, *pixel);
                }
            }
        }
    }
    sheet
}
