#!/usr/bin/env python3
"""Writes the image header bombs of fixtures/adversarial/images/ and their manifest.json.

Each file is a few dozen bytes whose header claims a huge canvas (or a frame far outside a small one), in
every format coca decodes: GIF (logical screen, first frame, frame offset), PNG (IHDR), APNG (fcTL), BMP,
TIFF (first page), WebP (VP8X canvas, VP8L), JPEG (baseline and progressive frame headers). coca must refuse
each with one error naming the file, before allocating its pixels.

Standard library only; the output is deterministic. Run from the repository root:
    python3 scripts/adversarial/make_images.py
"""

import json
import struct
import zlib
from pathlib import Path

OUT = Path("fixtures/adversarial/images")
PIL_LIMIT = 89_478_485


def gif(screen, frame, offset=(0, 0)):
    """A GIF89a with a 2-colour global palette and one frame of `frame` size at `offset`, holding a
    single LZW-coded pixel (the rest of the frame is missing)."""
    out = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0)
    out += b"\x00\x00\x00\xff\xff\xff"
    out += b"\x2c" + struct.pack("<HHHHB", *offset, *frame, 0)
    # Minimum code size 2: clear (4), pixel 0, end (5), packed LSB first.
    out += b"\x02\x02\x44\x01\x00"
    return out + b"\x3b"


def png_chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width, height, extra=b""):
    """An 8-bit greyscale PNG whose IHDR claims width x height, with one compressed row of data."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 2)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + extra
        + png_chunk(b"IDAT", idat)
        + png_chunk(b"IEND", b"")
    )


def apng_frame(width, height):
    """A 1x1 PNG whose animation control says its first frame is width x height."""
    actl = png_chunk(b"acTL", struct.pack(">II", 1, 0))
    fctl = png_chunk(b"fcTL", struct.pack(">IIIIIHHBB", 0, width, height, 0, 0, 1, 1, 0, 0))
    return png(1, 1, actl + fctl)


def bmp(width, height):
    """A 24-bit BMP (BITMAPINFOHEADER) claiming width x height, with 4 bytes of pixel data."""
    pixels = b"\x00" * 4
    header = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, len(pixels), 2835, 2835, 0, 0)
    size = 14 + len(header) + len(pixels)
    return b"BM" + struct.pack("<IHHI", size, 0, 0, 14 + len(header)) + header + pixels


def tiff(width, height):
    """A little-endian greyscale TIFF whose first page claims width x height, with one strip of 8 bytes."""
    entries = [
        (256, 4, 1, width),  # ImageWidth
        (257, 4, 1, height),  # ImageLength
        (258, 3, 1, 8),  # BitsPerSample
        (259, 3, 1, 1),  # Compression: none
        (262, 3, 1, 1),  # PhotometricInterpretation: black is zero
        (273, 4, 1, 0),  # StripOffsets (patched below)
        (277, 3, 1, 1),  # SamplesPerPixel
        (278, 4, 1, height),  # RowsPerStrip
        (279, 4, 1, 8),  # StripByteCounts
    ]
    ifd_offset = 8
    data_offset = ifd_offset + 2 + 12 * len(entries) + 4
    entries[5] = (273, 4, 1, data_offset)
    out = b"II*\x00" + struct.pack("<I", ifd_offset) + struct.pack("<H", len(entries))
    for tag, kind, count, value in entries:
        packed = struct.pack("<H", value) + b"\x00\x00" if kind == 3 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, kind, count) + packed
    return out + struct.pack("<I", 0) + b"\x00" * 8


def riff_chunk(kind, data):
    pad = b"\x00" if len(data) % 2 else b""
    return kind + struct.pack("<I", len(data)) + data + pad


def vp8l(width, height):
    """A VP8L chunk whose header claims width x height (14 bits each), followed by a few zero bytes."""
    bits = (width - 1) | ((height - 1) << 14)
    return riff_chunk(b"VP8L", b"\x2f" + struct.pack("<I", bits) + b"\x00" * 8)


def webp(chunks):
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def webp_canvas(width, height):
    """An extended WebP whose VP8X canvas is width x height (24 bits each), holding a 1x1 VP8L image."""
    vp8x = struct.pack("<I", 0) + (width - 1).to_bytes(3, "little") + (height - 1).to_bytes(3, "little")
    return webp([riff_chunk(b"VP8X", vp8x), vp8l(1, 1)])


def jpeg(width, height, marker=0xC0):
    """A JPEG with a quantisation table and a 3-component frame header (`marker`: SOF0 baseline, SOF2
    progressive) claiming width x height; no scan follows."""
    dqt = b"\xff\xdb" + struct.pack(">HB", 67, 0) + b"\x01" * 64
    comps = b"".join(bytes([i, 0x11, 0]) for i in (1, 2, 3))
    sof = bytes([0xFF, marker]) + struct.pack(">HBHHB", 8 + 3 * 3, 8, height, width, 3) + comps
    return b"\xff\xd8" + dqt + sof + b"\xff\xd9"


def too_large(width, height):
    """What coca must say about an image over the default limit."""
    return [f"{width}x{height}", f"{width * height} pixels", f"limit of {PIL_LIMIT} pixels"]


FILES = [
    # The GIF of the report: 51 bytes that claim a 60000x60000 screen.
    ("gif_screen_60000.gif", gif((60000, 60000), (1, 1)), too_large(60000, 60000)),
    ("gif_screen_30000.gif", gif((30000, 30000), (1, 1)), too_large(30000, 30000)),
    # A small screen whose first frame claims the largest size GIF allows (PIL grows the canvas to it).
    ("gif_frame_65535.gif", gif((1, 1), (65535, 65535)), too_large(65535, 65535)),
    # A 1x1 frame placed far outside a small screen: the canvas would grow to reach it.
    ("gif_frame_offset.gif", gif((8, 8), (1, 1), (65534, 65534)), too_large(65535, 65535)),
    ("png_ihdr_100000.png", png(100000, 100000), too_large(100000, 100000)),
    # APNG: a 1x1 image whose frame control claims a huge first frame.
    ("apng_fctl_60000.png", apng_frame(60000, 60000), ["apng_fctl_60000.png", "out-of-bounds"]),
    ("bmp_60000.bmp", bmp(60000, 60000), too_large(60000, 60000)),
    # Negative height: a top-down BMP.
    ("bmp_topdown_60000.bmp", bmp(60000, -60000), too_large(60000, 60000)),
    ("tiff_60000.tif", tiff(60000, 60000), too_large(60000, 60000)),
    ("webp_canvas_60000.webp", webp_canvas(60000, 60000), too_large(60000, 60000)),
    ("webp_vp8l_16383.webp", webp([vp8l(16383, 16383)]), too_large(16383, 16383)),
    ("jpeg_sof0_65500.jpg", jpeg(65500, 65500), too_large(65500, 65500)),
    ("jpeg_sof2_65500.jpg", jpeg(65500, 65500, 0xC2), too_large(65500, 65500)),
]


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    manifest = {
        "description": "Image header bombs: each claims far more pixels than it holds. coca must refuse "
        "every one with one error line containing all of `expect` (and the file's name), with bounded "
        "memory and no signal. Generated by scripts/adversarial/make_images.py.",
        "files": [],
    }
    for name, data, expect in FILES:
        (OUT / name).write_bytes(data)
        manifest["files"].append({"file": name, "bytes": len(data), "expect": expect})
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


if __name__ == "__main__":
    main()
