"""Export the real-data evaluation sets of issue #5, item 6, from what package registries ship.

    python export.py digits OUT       scikit-learn's 1,797 handwritten digits: class folders + caption CSVs, and
                                      the training split cut into a captioned and a labelled part (mixture)
    python export.py photos OUT       scikit-image's and scikit-learn's photos: PNGs + caption CSVs
    python export.py videos CLIPS OUT opencv-doc's AVI clips (in folder CLIPS): segments, class folders, frames

Everything is deterministic (fixed seeds, fixed lists), so two runs write identical files. Paths in the CSVs
are absolute, so the coca commands can run from any folder. Run by scripts/realdata/run.sh.
"""

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

DIGIT_NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
# Training captions and the zero-shot prompt use the same wording: the model learned the digits from these
# captions, and zero-shot classification asks which caption fits best (docs/benchmarks.md says so).
DIGIT_TEMPLATE = "a handwritten digit {c}"
DIGIT_SIZE = 64  # 8 x 8 pixels, each one 8 x 8 (nearest neighbour): one ViT patch per source pixel
SPLIT_SEED = 0
TEST_FRACTION = 0.2
# The mixture experiment, in the spirit of CoCa's pretraining (few alt-text pairs, many labelled images): a
# seeded, stratified quarter of the training digits keeps its captions, the rest keeps only its label.
CAPTIONED_FRACTION = 0.25

# Two captions per photo. Eight first captions are those of fixtures/train/photos.csv (the astronaut's suit is
# orange, so that one is corrected); the rest are written for this evaluation.
PHOTOS = {
    "astronaut": ["an astronaut in an orange space suit in front of a flag",
                  "a smiling woman in a space suit with a model space shuttle"],
    "coffee": ["a cup of coffee on a saucer with a spoon", "a red cup of espresso on a wooden table"],
    "chelsea": ["a tabby cat looking up at the camera", "the face of a striped cat with green eyes"],
    "rocket": ["a rocket on the launch pad under a clear sky", "a rocket between launch towers at dusk"],
    "horse": ["the black silhouette of a horse on white", "a black horse shape on a white background"],
    "coins": ["old coins laid out in rows on a dark surface", "rows of ancient silver coins"],
    "camera": ["a black and white photo of a man with a camera on a tripod",
               "a photographer looking through a camera in a field"],
    "brick": ["a grey brick wall", "rows of bricks in a pavement seen from above"],
    "grass": ["a close up of grass", "a black and white texture of grass blades"],
    "gravel": ["a close up of gravel stones", "a grey texture of small pebbles"],
    "moon": ["the surface of the moon with craters", "a grey lunar landscape with dark spots"],
    "page": ["a printed page about region based segmentation", "a scanned page of text with a heading"],
    "text": ["handwritten numbers and letters on a sheet of paper", "a photo of handwriting seen at an angle"],
    "hubble_deep_field": ["a field of distant galaxies in the night sky", "many small colourful galaxies on black"],
    "retina": ["a photograph of the retina of a human eye", "an orange disc with red blood vessels"],
    "immunohistochemistry": ["a stained tissue sample under a microscope",
                             "brown stained cells on a pale blue background"],
    "cell": ["a single bright cell under a microscope", "a white round cell on a grey background"],
    "clock": ["a motion blurred clock", "a blurred round object on a grey background"],
    "logo": ["the scikit-image logo with a snake in green and orange", "an orange and green circle with a snake"],
    "china": ["a temple with a curved roof among green trees", "a chinese pagoda next to a lake"],
    "flower": ["an orange dahlia flower on a dark green background", "a close up of an orange flower"],
}
SKLEARN_PHOTOS = {"china": "china.jpg", "flower": "flower.jpg"}

# opencv-doc's sample clips, grouped into classes; each class has one caption.
CLIP_CLASSES = {
    "animated_woman": (["Megamind.avi", "Megamind_bugy.avi"],
                       "an animated woman holding a glass in a dark restaurant"),
    "pedestrians": (["vtest.avi"], "people walking across a paved square seen from above"),
    "tree": (["tree.avi"], "a green tree in bright sunlight seen through a window"),
}
SEGMENT_SECONDS = 1.5
MAX_SEGMENTS_PER_CLIP = 12  # vtest.avi is 80 s long; 12 segments keep the classes comparable


def write_csv(path, rows, header=("filepath", "title")):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def rgb_uint8(array):
    """Any skimage/sklearn image as an RGB uint8 array."""
    a = np.asarray(array)
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    elif a.dtype != np.uint8:
        a = (255 * (a - a.min()) / max(float(np.ptp(a)), 1e-9)).astype(np.uint8)
    image = Image.fromarray(a)
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, "white")
        background.paste(image, mask=image.split()[3])
        return background
    return image.convert("RGB")


def export_digits(out):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    indices = np.arange(len(digits.target))
    train, test = train_test_split(
        indices, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=digits.target
    )
    captioned, labelled = train_test_split(
        train, train_size=CAPTIONED_FRACTION, random_state=SPLIT_SEED, stratify=digits.target[train]
    )
    captioned = set(captioned.tolist())
    out = Path(out).resolve()
    if out.exists():
        shutil.rmtree(out)
    captioned_rows, labelled_rows = [], []
    for split, members in (("train", train), ("test", test)):
        rows = []
        for i in sorted(members):
            label = int(digits.target[i])
            # 0..16 ink values: dark ink on white paper, as the digits were written.
            pixels = (255 - np.round(digits.images[i] * 255 / 16)).astype(np.uint8)
            image = Image.fromarray(pixels, "L").resize((DIGIT_SIZE, DIGIT_SIZE), Image.NEAREST).convert("RGB")
            path = out / split / str(label) / f"{i:04d}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            image.save(path)
            rows.append((str(path), DIGIT_TEMPLATE.format(c=DIGIT_NAMES[label])))
            if split == "train" and i in captioned:
                captioned_rows.append(rows[-1])
            elif split == "train":
                # The label as a class index, as ImageNet-style CSVs give it; classnames.txt names it.
                labelled_rows.append((str(path), label))
        write_csv(out / f"{split}.csv", rows)
    write_csv(out / "train_captioned.csv", captioned_rows)
    write_csv(out / "train_labelled.csv", labelled_rows, header=("filepath", "label"))
    # CLIP_benchmark's layout: class names in the dataset root, one per line, in label order.
    (out / "classnames.txt").write_text("\n".join(DIGIT_NAMES) + "\n")
    (out / "templates.txt").write_text(DIGIT_TEMPLATE + "\n")
    summary = {"train": len(train), "test": len(test), "image_size": DIGIT_SIZE, "seed": SPLIT_SEED,
               "train_captioned": len(captioned_rows), "train_labelled": len(labelled_rows)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"digits: {len(train)} train ({len(captioned_rows)} captioned, {len(labelled_rows)} labelled), "
          f"{len(test)} test images in {out}")


def photo_array(name):
    if name in SKLEARN_PHOTOS:
        from sklearn.datasets import load_sample_image

        return load_sample_image(SKLEARN_PHOTOS[name])
    import skimage.data

    return getattr(skimage.data, name)()


def export_photos(out):
    out = Path(out).resolve()
    if out.exists():
        shutil.rmtree(out)
    (out / "train").mkdir(parents=True)
    (out / "test").mkdir(parents=True)
    train_rows, test_rows = [], []
    for name, captions in PHOTOS.items():
        image = rgb_uint8(photo_array(name))
        # The held-out view is the mirror image: the same scene, pixels the fine-tuning never saw.
        for split, view, rows in (("train", image, train_rows),
                                  ("test", image.transpose(Image.FLIP_LEFT_RIGHT), test_rows)):
            path = out / split / f"{name}.png"
            view.save(path)
            rows.extend((str(path), c) for c in captions)
    write_csv(out / "train.csv", train_rows)
    write_csv(out / "test.csv", test_rows)
    print(f"photos: {len(PHOTOS)} photos, {len(train_rows)} captions in {out}")


def run(cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def duration(path):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        check=True, capture_output=True, text=True,
    )
    return float(out.stdout.strip())


def export_videos(clips, out):
    """Cut every clip into SEGMENT_SECONDS pieces (MP4, re-encoded), alternate them into train/test class
    folders, and save the middle frame of each training segment as a captioned image for fine-tuning."""
    clips, out = Path(clips), Path(out).resolve()
    if out.exists():
        shutil.rmtree(out)
    frame_rows, test_rows, counts = [], [], {}
    for cls, (files, caption) in CLIP_CLASSES.items():
        for file in files:
            source = clips / file
            n = min(MAX_SEGMENTS_PER_CLIP, max(1, int(duration(source) // SEGMENT_SECONDS)))
            for s in range(n):
                split = "train" if s % 2 == 0 else "test"
                stem = f"{Path(file).stem}_{s:02d}"
                seg = out / split / cls / f"{stem}.mp4"
                seg.parent.mkdir(parents=True, exist_ok=True)
                start = s * SEGMENT_SECONDS
                run(["ffmpeg", "-nostdin", "-y", "-v", "error", "-ss", f"{start}", "-i", str(source),
                     "-t", f"{SEGMENT_SECONDS}", "-an", "-vf", "scale=-2:240", "-c:v", "mpeg4",
                     "-q:v", "4", str(seg)])
                counts[(split, cls)] = counts.get((split, cls), 0) + 1
                if split == "train":
                    frame = out / "frames" / f"{stem}.png"
                    frame.parent.mkdir(parents=True, exist_ok=True)
                    run(["ffmpeg", "-nostdin", "-y", "-v", "error", "-ss", f"{start + SEGMENT_SECONDS / 2}",
                         "-i", str(source), "-frames:v", "1", "-vf", "scale=-2:240", str(frame)])
                    frame_rows.append((str(frame), caption))
                else:
                    test_rows.append((str(seg), caption))
    write_csv(out / "frames.csv", frame_rows)
    write_csv(out / "test_videos.csv", test_rows)
    captions = {cls: caption for cls, (_, caption) in CLIP_CLASSES.items()}
    (out / "captions.json").write_text(json.dumps(captions, indent=1) + "\n")
    summary = {f"{split}/{cls}": n for (split, cls), n in sorted(counts.items())}
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")
    print(f"videos: {summary} in {out}")


def main(argv):
    if len(argv) >= 2 and argv[0] == "digits":
        export_digits(argv[1])
    elif len(argv) >= 2 and argv[0] == "photos":
        export_photos(argv[1])
    elif len(argv) >= 3 and argv[0] == "videos":
        export_videos(argv[1], argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
