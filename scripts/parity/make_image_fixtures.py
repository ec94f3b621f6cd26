#!/usr/bin/env python3
"""Write the image-preprocessing parity fixtures used by `crates/coca-image/tests/`.

The oracle is open_clip 3.3.0's eval transform,
`open_clip.image_transform(size, is_train=False, mean, std, resize_mode, interpolation)`,
applied to `PIL.Image.open(path)` exactly as open_clip's data pipeline does
(PIL >= 13: resize in the file's own mode, crop, then `convert("RGB")`).

Outputs (under fixtures/images/ unless --out says otherwise):

* sources/<name>      the input images. Real photos come from files shipped inside
                      the scikit-image and scikit-learn wheels (some re-encoded or
                      downscaled to keep the folder small); the rest are synthetic
                      edge cases (alpha, palette, 16-bit, bilevel, GIF, WebP, tiny,
                      very wide, ...) drawn from a fixed-seed RNG.
* expected/<name_ext>__<case>.png
                      the 8-bit RGB image open_clip hands to ToTensor (after
                      resize, center crop/pad and convert). The script asserts that
                      ToTensor+Normalize of this image is *bit-identical* to
                      open_clip's output tensor, so comparing these bytes is
                      comparing the tensors.
* normalize_check.safetensors
                      one full open_clip output tensor (`pixel_values`, F32
                      [3, S, S]) and its 8-bit input (`rgb`, U8 [S, S, 3]) to pin
                      down the ToTensor/Normalize arithmetic.
* manifest.json       per source: PIL mode, size, FNV-1a-64 of
                      `np.asarray(Image.open(p).convert("RGB"))`, and the cases
                      (config + expected file).

Run from the repository root with the parity venv (deterministic; a rerun with the
same package versions gives identical files):
    OMP_NUM_THREADS=1 python scripts/parity/make_image_fixtures.py
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import zlib
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import open_clip  # noqa: E402
import PIL  # noqa: E402
import sklearn  # noqa: E402
import skimage  # noqa: E402
import torch  # noqa: E402
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD  # noqa: E402
from PIL import Image  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

SKIMAGE_DATA = Path(skimage.__file__).parent / "data"
SKLEARN_IMAGES = Path(sklearn.__file__).parent / "datasets" / "images"
SEED = 20240607

# Preprocessing cases: name -> open_clip preprocess settings.
CASES = {
    # CoCa's own settings (open_clip pretrained cfg for coca_ViT-*): 224, shortest, bicubic.
    "coca224": {"size": 224, "resize_mode": "shortest", "interpolation": "bicubic"},
    "short96": {"size": 96, "resize_mode": "shortest", "interpolation": "bicubic"},
    "long96": {"size": 96, "resize_mode": "longest", "interpolation": "bicubic"},
    "squash80_bilinear": {"size": 80, "resize_mode": "squash", "interpolation": "bilinear"},
    "short300_bilinear": {"size": 300, "resize_mode": "shortest", "interpolation": "bilinear"},
}


# --------------------------------------------------------------------------- sources


def fnv1a64(data: bytes) -> str:
    h = 0xCBF29CE484222325
    for b in data:
        h ^= b
        h = (h * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return f"{h:016x}"


def png_bytes(array: np.ndarray, color_type: int, bit_depth: int) -> bytes:
    """Minimal PNG encoder for layouts PIL cannot write (16-bit RGB / grey+alpha)."""
    h, w = array.shape[:2]
    dtype = ">u2" if bit_depth == 16 else "u1"
    rows = array.astype(dtype).reshape(h, -1)
    raw = b"".join(b"\x00" + row.tobytes() for row in rows)

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def save(img: Image.Image, path: Path, **kwargs) -> None:
    buf = io.BytesIO()
    img.save(buf, **kwargs)
    path.write_bytes(buf.getvalue())


def smooth_noise(rng: np.random.Generator, h: int, w: int, channels: int, cells: int = 6) -> np.ndarray:
    """Smooth random field in [0, 1): bilinear upsampling of a coarse grid."""
    coarse = rng.random((cells + 1, cells + 1, channels))
    ys = np.linspace(0, cells, h)
    xs = np.linspace(0, cells, w)
    y0 = np.minimum(ys.astype(int), cells - 1)
    x0 = np.minimum(xs.astype(int), cells - 1)
    fy = (ys - y0)[:, None, None]
    fx = (xs - x0)[None, :, None]
    c00 = coarse[y0][:, x0]
    c01 = coarse[y0][:, x0 + 1]
    c10 = coarse[y0 + 1][:, x0]
    c11 = coarse[y0 + 1][:, x0 + 1]
    return (c00 * (1 - fy) * (1 - fx) + c01 * (1 - fy) * fx + c10 * fy * (1 - fx) + c11 * fy * fx) * 0.999


def make_sources(src: Path) -> dict[str, str]:
    """Writes every source image; returns name -> provenance note."""
    rng = np.random.default_rng(SEED)
    notes: dict[str, str] = {}

    def copy(name: str, origin: Path, note: str) -> None:
        (src / name).write_bytes(origin.read_bytes())
        notes[name] = note

    # Real photos shipped in the wheels, byte for byte.
    copy("rocket.jpg", SKIMAGE_DATA / "rocket.jpg", "skimage.data rocket.jpg (unchanged)")
    copy("china.jpg", SKLEARN_IMAGES / "china.jpg", "sklearn load_sample_image china.jpg (unchanged)")
    copy("flower.jpg", SKLEARN_IMAGES / "flower.jpg", "sklearn load_sample_image flower.jpg (unchanged)")
    copy("chelsea.png", SKIMAGE_DATA / "chelsea.png", "skimage.data chelsea.png (unchanged)")
    copy("coins.png", SKIMAGE_DATA / "coins.png", "skimage.data coins.png, greyscale (unchanged)")
    copy("horse.png", SKIMAGE_DATA / "horse.png", "skimage.data horse.png, RGBA (unchanged)")

    astronaut = Image.open(SKIMAGE_DATA / "astronaut.png")
    coffee = Image.open(SKIMAGE_DATA / "coffee.png")
    camera = Image.open(SKIMAGE_DATA / "camera.png")
    chelsea = Image.open(SKIMAGE_DATA / "chelsea.png")

    # Re-encoded real photos (JPEG flavours PIL's libjpeg-turbo decodes).
    save(astronaut, src / "astronaut_420.jpg", format="JPEG", quality=90)
    notes["astronaut_420.jpg"] = "skimage astronaut.png as baseline JPEG q90, 4:2:0"
    save(coffee, src / "coffee_progressive.jpg", format="JPEG", quality=85, progressive=True,
         restart_marker_rows=2)
    notes["coffee_progressive.jpg"] = "skimage coffee.png as progressive JPEG q85 with restart markers"
    save(camera, src / "camera_grey.jpg", format="JPEG", quality=85)
    notes["camera_grey.jpg"] = "skimage camera.png as greyscale JPEG q85"
    save(chelsea, src / "chelsea_422.jpg", format="JPEG", quality=92, subsampling=1, optimize=True)
    notes["chelsea_422.jpg"] = "skimage chelsea.png as JPEG q92, 4:2:2, optimised Huffman tables"
    save(astronaut.resize((256, 256), Image.BICUBIC).convert("CMYK"), src / "astronaut_cmyk.jpg",
         format="JPEG", quality=90)
    notes["astronaut_cmyk.jpg"] = "skimage astronaut.png downscaled to 256 px, CMYK JPEG (Adobe inverted)"
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display": open_clip (PIL) ignores it
    save(chelsea, src / "chelsea_exif_rot6.jpg", format="JPEG", quality=85, exif=exif.tobytes())
    notes["chelsea_exif_rot6.jpg"] = "skimage chelsea.png as JPEG with EXIF orientation 6 (ignored by PIL)"
    # Damaged but decodable JPEGs (libjpeg warns and carries on, so PIL returns pixels):
    # data cut mid-scan with an end-of-image marker appended (the rest decodes as grey),
    # and a flipped byte inside a file with restart markers (decoding resynchronises).
    whole = (src / "astronaut_420.jpg").read_bytes()
    (src / "astronaut_cut_eoi.jpg").write_bytes(whole[: len(whole) // 2] + b"\xff\xd9")
    notes["astronaut_cut_eoi.jpg"] = "first half of astronaut_420.jpg + EOI marker (libjpeg fills grey)"
    buf = io.BytesIO()
    coffee.save(buf, format="JPEG", quality=80, restart_marker_blocks=3)
    damaged = bytearray(buf.getvalue())
    damaged[len(damaged) // 2] ^= 0x5A
    (src / "coffee_corrupt_rst.jpg").write_bytes(bytes(damaged))
    notes["coffee_corrupt_rst.jpg"] = "coffee.png JPEG q80, restart every 3 MCUs, one entropy byte flipped"
    prog = (src / "coffee_progressive.jpg").read_bytes()
    (src / "coffee_progressive_cut.jpg").write_bytes(prog[: len(prog) * 2 // 3] + b"\xff\xd9")
    notes["coffee_progressive_cut.jpg"] = (
        "first 2/3 of coffee_progressive.jpg + EOI (incomplete scans: libjpeg block smoothing)")
    odd = coffee.crop((101, 57, 101 + 37, 57 + 23))
    save(odd, src / "coffee_tiny_37x23.jpg", format="JPEG", quality=90)
    notes["coffee_tiny_37x23.jpg"] = "37x23 crop of skimage coffee.png, 4:2:0 JPEG (odd size, upscaled)"
    save(coffee, src / "coffee.webp", format="WEBP", quality=80, method=4)
    notes["coffee.webp"] = "skimage coffee.png as lossy WebP q80"

    # Palette images: real content quantised.
    pal = chelsea.crop((150, 40, 300, 140)).quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    save(pal, src / "palette.png", format="PNG")
    notes["palette.png"] = "150x100 crop of chelsea quantised to 64 colours (PNG mode P)"
    save(pal, src / "palette_trns.png", format="PNG", transparency=5)
    notes["palette_trns.png"] = "palette.png with palette index 5 transparent (tRNS)"
    pal16 = chelsea.crop((0, 0, 90, 61)).quantize(colors=16)
    save(pal16, src / "palette_4bit.png", format="PNG", bits=4)
    notes["palette_4bit.png"] = "90x61 crop of chelsea quantised to 16 colours, 4-bit PNG"

    # Synthetic edge cases.
    h, w = 61, 97
    rgb = (smooth_noise(rng, h, w, 3) * 256).astype(np.uint8)
    alpha = np.clip(np.linspace(-40, 300, w)[None, :] + rng.integers(-30, 30, (h, w)), 0, 255).astype(np.uint8)
    alpha[:, :9] = 0
    alpha[:, -9:] = 255
    rgba = np.dstack([rgb, alpha])
    save(Image.fromarray(rgba), src / "gradient_rgba.png", format="PNG")
    notes["gradient_rgba.png"] = "97x61 smooth colours, alpha ramp 0..255 (premultiplied resize)"
    save(Image.fromarray(rgba), src / "gradient_alpha.webp", format="WEBP", quality=80)
    notes["gradient_alpha.webp"] = "gradient_rgba.png as lossy WebP with alpha (PIL mode RGBA)"

    la = np.dstack([(smooth_noise(rng, 120, 80, 1)[..., 0] * 256).astype(np.uint8),
                    rng.integers(0, 256, (120, 80)).astype(np.uint8)])
    save(Image.fromarray(la), src / "grey_alpha.png", format="PNG")
    notes["grey_alpha.png"] = "80x120 greyscale + random alpha (PNG mode LA)"

    grey16 = (smooth_noise(rng, 48, 64, 1)[..., 0] * 600).astype(np.uint16)
    grey16[::7, ::5] = 40000
    save(Image.fromarray(grey16), src / "grey16.png", format="PNG")
    notes["grey16.png"] = "64x48 16-bit greyscale, values 0..600 and 40000 (mode I;16; RGB clips at 255)"

    rgb16 = (smooth_noise(rng, 50, 70, 3) * 65535).astype(np.uint16)
    (src / "rgb16.png").write_bytes(png_bytes(rgb16, color_type=2, bit_depth=16))
    notes["rgb16.png"] = "70x50 16-bit RGB PNG (PIL keeps the high byte)"
    la16 = (smooth_noise(rng, 40, 30, 2) * 65535).astype(np.uint16)
    (src / "grey_alpha16.png").write_bytes(png_bytes(la16, color_type=4, bit_depth=16))
    notes["grey_alpha16.png"] = "30x40 16-bit grey+alpha PNG (PIL opens it as RGBA)"

    bits = smooth_noise(rng, 50, 70, 1)[..., 0] > 0.5
    save(Image.fromarray(bits).convert("1"), src / "bilevel.png", format="PNG")
    notes["bilevel.png"] = "70x50 1-bit PNG (mode 1, nearest-neighbour resize)"

    frames = []
    for i in range(3):
        f = chelsea.crop((40 * i, 20, 40 * i + 120, 100)).quantize(colors=32)
        frames.append(f)
    frames[0].save(src / "animated.gif", format="GIF", save_all=True, append_images=frames[1:],
                   duration=100, loop=0, transparency=3, disposal=2)
    notes["animated.gif"] = "3-frame 120x80 GIF from chelsea crops, index 3 transparent (first frame used)"
    grey = (smooth_noise(rng, 45, 60, 1)[..., 0] * 256).astype(np.uint8)
    # Every grey level appears, so PIL writes (and reads back) the identity palette.
    grey[:5, :] = (np.arange(300) % 256).reshape(5, 60)
    save(Image.fromarray(grey), src / "grey.gif", format="GIF")
    notes["grey.gif"] = "60x45 greyscale GIF with the identity palette (PIL mode L, bicubic resize)"

    save(Image.fromarray(np.array([[[200, 30, 90]]], dtype=np.uint8)), src / "tiny_1x1.png", format="PNG")
    notes["tiny_1x1.png"] = "1x1 RGB"
    wide = (smooth_noise(rng, 20, 1000, 3, cells=40) * 256).astype(np.uint8)
    save(Image.fromarray(wide), src / "wide_1000x20.png", format="PNG")
    notes["wide_1000x20.png"] = "1000x20 RGB (extreme aspect ratio: 11200x224 before the crop)"
    small = (smooth_noise(rng, 40, 50, 3) * 256).astype(np.uint8)
    save(Image.fromarray(small), src / "small_50x40.bmp", format="BMP")
    notes["small_50x40.bmp"] = "50x40 24-bit BMP (upscaled)"
    save(chelsea.crop((200, 60, 290, 120)).quantize(colors=48), src / "palette.bmp", format="BMP")
    notes["palette.bmp"] = "90x60 crop of chelsea, 8-bit palette BMP (PIL mode P)"
    return notes


# --------------------------------------------------------------------------- oracle


def open_clip_transform(case: dict):
    return open_clip.image_transform(
        case["size"], is_train=False, mean=OPENAI_DATASET_MEAN, std=OPENAI_DATASET_STD,
        resize_mode=case["resize_mode"], interpolation=case["interpolation"],
    )


def rgb_before_to_tensor(transform, img: Image.Image) -> np.ndarray:
    """Runs the transform's PIL steps (everything before ToTensor)."""
    for t in transform.transforms:
        if type(t).__name__ in ("MaybeToTensor", "ToTensor"):
            break
        img = t(img)
    assert img.mode == "RGB", img.mode
    return np.asarray(img)


def to_tensor_normalize(rgb: np.ndarray) -> np.ndarray:
    """ToTensor + Normalize in float32, the same operations torch performs."""
    x = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float().div(255)
    mean = torch.tensor(OPENAI_DATASET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(OPENAI_DATASET_STD, dtype=torch.float32)[:, None, None]
    return ((x - mean) / std).numpy()


def which_cases(name: str) -> list[str]:
    photos224 = {"rocket.jpg", "flower.jpg", "chelsea.png", "astronaut_420.jpg", "coffee_progressive.jpg"}
    longest = {"china.jpg", "gradient_rgba.png", "palette_trns.png", "wide_1000x20.png", "grey16.png",
               "animated.gif", "grey_alpha.png", "coffee_tiny_37x23.jpg", "horse.png"}
    squash = {"china.jpg", "horse.png", "bilevel.png", "grey.gif", "rgb16.png", "camera_grey.jpg",
              "astronaut_cmyk.jpg"}
    upscale = {"coffee_tiny_37x23.jpg", "small_50x40.bmp", "palette_4bit.png", "tiny_1x1.png",
               "gradient_alpha.webp"}
    cases = ["short96"]
    if name in photos224 or name == "tiny_1x1.png":
        cases.append("coca224")
    if name in longest:
        cases.append("long96")
    if name in squash:
        cases.append("squash80_bilinear")
    if name in upscale:
        cases.append("short300_bilinear")
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("fixtures/images"))
    args = parser.parse_args()
    torch.set_num_threads(1)

    src = args.out / "sources"
    exp = args.out / "expected"
    for d in (src, exp):
        d.mkdir(parents=True, exist_ok=True)
        for old in d.iterdir():
            old.unlink()

    notes = make_sources(src)
    manifest = {
        "versions": {
            "open_clip": open_clip.__version__, "torch": torch.__version__.split("+")[0],
            "pillow": PIL.__version__, "numpy": np.__version__,
            "scikit-image": skimage.__version__, "scikit-learn": sklearn.__version__,
        },
        "mean": list(OPENAI_DATASET_MEAN),
        "std": list(OPENAI_DATASET_STD),
        "cases": CASES,
        "images": [],
    }
    for path in sorted(src.iterdir()):
        with Image.open(path) as img:
            mode, size = img.mode, img.size
            rgb_full = np.asarray(img.convert("RGB"))
        entry = {
            "file": f"sources/{path.name}", "source": notes[path.name], "pil_mode": mode,
            "width": size[0], "height": size[1], "rgb_fnv1a64": fnv1a64(rgb_full.tobytes()),
            "cases": [],
        }
        for case_name in which_cases(path.name):
            transform = open_clip_transform(CASES[case_name])
            with Image.open(path) as img:
                reference = transform(img).numpy()
            with Image.open(path) as img:
                rgb = rgb_before_to_tensor(transform, img)
            ours = to_tensor_normalize(rgb)
            assert reference.dtype == np.float32 and reference.shape == ours.shape
            # The 8-bit image fully determines open_clip's tensor, bit for bit.
            assert np.array_equal(reference.view(np.uint32), ours.view(np.uint32)), (path.name, case_name)
            out_name = f"{path.name.replace('.', '_')}__{case_name}.png"
            assert not (exp / out_name).exists(), out_name
            save(Image.fromarray(rgb), exp / out_name, format="PNG", optimize=True)
            entry["cases"].append({"case": case_name, "expected": f"expected/{out_name}"})
        manifest["images"].append(entry)

    # One full tensor, to pin the f32 normalisation arithmetic in the Rust test.
    transform = open_clip_transform(CASES["short96"])
    with Image.open(src / "chelsea.png") as img:
        tensor = transform(img).numpy()
    with Image.open(src / "chelsea.png") as img:
        rgb = rgb_before_to_tensor(transform, img)
    save_file({"pixel_values": np.ascontiguousarray(tensor), "rgb": np.ascontiguousarray(rgb)},
              str(args.out / "normalize_check.safetensors"))

    (args.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(p.stat().st_size for p in args.out.rglob("*") if p.is_file())
    n_cases = sum(len(e["cases"]) for e in manifest["images"])
    print(f"wrote {len(manifest['images'])} sources, {n_cases} cases, {total / 1e6:.2f} MB in {args.out}")


if __name__ == "__main__":
    main()
