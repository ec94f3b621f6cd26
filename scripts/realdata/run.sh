#!/usr/bin/env bash
# Real-data checks of issue #5, item 6: every evaluation of docs/evaluation.md, end to end, on real images and
# videos that package registries ship, with a model that coca trains itself.
#
#   scripts/realdata/run.sh [WORK_DIR]          (default WORK_DIR: runs/realdata, git-ignored)
#
#  1. exports scikit-learn's 1,797 handwritten digits (64 px PNG class folders, seeded 80/20 split, captions
#     "a handwritten digit seven"), scikit-image's and scikit-learn's photos (two captions each) and cuts
#     opencv-doc's AVI clips (Debian package, fetched with `apt-get download`, unpacked with `dpkg -x` into
#     WORK_DIR, nothing installed) into 1.5 s segments;
#  2. trains a small CoCa from scratch on the digits' training captions (`coca train`);
#  3. evaluates it on the test digits: zero-shot classification, linear and attentional probes (train -> test),
#     retrieval and captioning;
#  4. fine-tunes it on the photos plus one frame of each training video segment, and evaluates captioning and
#     retrieval on the mirrored photos (before and after fine-tuning);
#  5. videos: text<->video similarity of the held-out segments (`coca embed --video`), a video collection
#     embedded and searched by text (`coca embed --input-dir`, `coca search`), and video probes;
#  6. writes WORK_DIR/results/*.json and WORK_DIR/results/summary.md (the section of docs/benchmarks.md);
#     with UPDATE_DOCS=1 it also replaces that section in docs/benchmarks.md.
#
# Needs: python3 with venv and pip (or PYTHON=/path/to/python that has scikit-learn, scikit-image, numpy,
# pillow), the `ffmpeg` and `ffprobe` programs (Debian: apt-get install ffmpeg), apt-get and dpkg for
# opencv-doc (or CLIPS_DIR=folder with the .avi files), and cargo (or COCA=/path/to/coca built with
# --features ffmpeg). Settings: DIGIT_STEPS (default 500), PHOTO_STEPS (default 150), THREADS.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/scripts/realdata"
WORK=$(mkdir -p "${1:-$ROOT/runs/realdata}" && cd "${1:-$ROOT/runs/realdata}" && pwd)
RESULTS="$WORK/results"
DIGIT_STEPS=${DIGIT_STEPS:-500}
PHOTO_STEPS=${PHOTO_STEPS:-150}
THREADS=${THREADS:-$(nproc)}
CONFIG="$HERE/coca_digits-tiny.json"
mkdir -p "$RESULTS" "$WORK/logs"

say() { printf '\n== %s\n' "$*" >&2; }
need() {
  command -v "$1" >/dev/null 2>&1 || { echo "error: \`$1\` is not installed. $2" >&2; exit 1; }
}

need ffmpeg "Install it: apt-get install ffmpeg (Debian/Ubuntu; provides ffmpeg and ffprobe)."
need ffprobe "Install it: apt-get install ffmpeg (Debian/Ubuntu; provides ffmpeg and ffprobe)."

# --- coca, with video files through FFmpeg --------------------------------------------------------------
if [[ -z "${COCA:-}" ]]; then
  need cargo "Install Rust (https://rustup.rs) or set COCA=/path/to/coca built with --features ffmpeg."
  say "building coca (release, --features ffmpeg)"
  (cd "$ROOT" && cargo build --release -p coca-cli --features ffmpeg)
  COCA="$ROOT/target/release/coca"
fi
coca() { "$COCA" --threads "$THREADS" "$@"; }

# --- Python for the exporter ----------------------------------------------------------------------------
if [[ -z "${PYTHON:-}" ]]; then
  need python3 "Install Python 3 with venv (apt-get install python3-venv), or set PYTHON."
  if [[ ! -x "$WORK/venv/bin/python" ]]; then
    say "making $WORK/venv from scripts/realdata/requirements.txt"
    python3 -m venv "$WORK/venv"
    "$WORK/venv/bin/pip" install --quiet -r "$HERE/requirements.txt"
  fi
  PYTHON="$WORK/venv/bin/python"
fi

# --- data -------------------------------------------------------------------------------------------------
say "exporting digits and photos"
"$PYTHON" "$HERE/export.py" digits "$WORK/digits"
"$PYTHON" "$HERE/export.py" photos "$WORK/photos"

if [[ -z "${CLIPS_DIR:-}" ]]; then
  if ! compgen -G "$WORK/downloads/opencv-doc_*.deb" >/dev/null; then
    need apt-get "Set CLIPS_DIR to a folder with opencv-doc's .avi sample clips instead."
    say "downloading Debian's opencv-doc (sample clips; not installed)"
    mkdir -p "$WORK/downloads"
    (cd "$WORK/downloads" && apt-get download opencv-doc)
  fi
  need dpkg "Set CLIPS_DIR to a folder with opencv-doc's .avi sample clips instead."
  rm -rf "$WORK/downloads/opencv-doc"
  dpkg -x "$(compgen -G "$WORK/downloads/opencv-doc_*.deb" | head -1)" "$WORK/downloads/opencv-doc"
  CLIPS_DIR=$(dirname "$(find "$WORK/downloads/opencv-doc" -name vtest.avi | head -1)")
fi
"$PYTHON" "$HERE/export.py" videos "$CLIPS_DIR" "$WORK/videos"

# --- 1. a CoCa from scratch on the digits' captions -----------------------------------------------------
DIGITS_RUN="$WORK/runs/digits"
rm -rf "$DIGITS_RUN"
say "training on the digits' captions ($DIGIT_STEPS steps)"
start=$(date +%s)
coca train --model "$CONFIG" --train-data "$WORK/digits/train.csv" --csv-separator , \
  --batch-size 64 --steps "$DIGIT_STEPS" --lr 1e-3 --warmup 50 --wd 0.1 --grad-clip-norm 1.0 \
  --save-every "$DIGIT_STEPS" --keep-checkpoints 1 --seed 0 --output "$DIGITS_RUN" --json -q \
  > "$RESULTS/train_digits.json"
echo "{\"seconds\": $(( $(date +%s) - start ))}" > "$RESULTS/train_digits_time.json"
DIGITS=(--model "$CONFIG" --pretrained "$DIGITS_RUN/model.safetensors")

say "digits: zero-shot classification of the test split"
coca eval zeroshot-classification "${DIGITS[@]}" -q --dataset-root "$WORK/digits/test" --dataset digits \
  --classnames "$WORK/digits/classnames.txt" --templates "$WORK/digits/templates.txt" --no-cache \
  --output "$RESULTS/digits_zeroshot.json"
say "digits: linear probe and attentional-pooler probe, train -> test"
coca probe "${DIGITS[@]}" -q --train-dir "$WORK/digits/train" --val-dir "$WORK/digits/test" --linear \
  --cache-dir "$WORK/cache" --output "$RESULTS/digits_probe_linear.json"
coca probe "${DIGITS[@]}" -q --train-dir "$WORK/digits/train" --val-dir "$WORK/digits/test" \
  --pooler-queries 1 --cache-dir "$WORK/cache" --confusion "$RESULTS/digits_probe_confusion" \
  --output "$RESULTS/digits_probe_pooler.json"
say "digits: retrieval and captioning of the test split"
coca eval retrieval "${DIGITS[@]}" -q --csv "$WORK/digits/test.csv" --csv-separator , --dataset digits \
  --output "$RESULTS/digits_retrieval.json"
coca eval captioning "${DIGITS[@]}" -q --csv "$WORK/digits/test.csv" --csv-separator , --dataset digits \
  --save-captions "$RESULTS/digits_captions.json" --output "$RESULTS/digits_captioning.json"

# --- 2. photos: fine-tune the digits model, check on the mirrored photos ----------------------------------
say "photos: the digits model before fine-tuning"
coca eval retrieval "${DIGITS[@]}" -q --csv "$WORK/photos/test.csv" --csv-separator , --dataset photos \
  --output "$RESULTS/photos_retrieval_before.json"
coca eval captioning "${DIGITS[@]}" -q --csv "$WORK/photos/test.csv" --csv-separator , --dataset photos \
  --output "$RESULTS/photos_captioning_before.json"

PHOTOS_RUN="$WORK/runs/photos"
rm -rf "$PHOTOS_RUN"
{ cat "$WORK/photos/train.csv"; tail -n +2 "$WORK/videos/frames.csv"; } > "$WORK/finetune.csv"
say "fine-tuning on the photos and video frames ($PHOTO_STEPS steps)"
start=$(date +%s)
coca train --model "$CONFIG" --pretrained "$DIGITS_RUN/model.safetensors" \
  --train-data "$WORK/finetune.csv" --csv-separator , --batch-size 32 --steps "$PHOTO_STEPS" --lr 5e-4 \
  --warmup 15 --wd 0.1 --grad-clip-norm 1.0 --save-every "$PHOTO_STEPS" --keep-checkpoints 1 --seed 0 \
  --output "$PHOTOS_RUN" --json -q > "$RESULTS/train_photos.json"
echo "{\"seconds\": $(( $(date +%s) - start ))}" > "$RESULTS/train_photos_time.json"
PHOTOS=(--model "$CONFIG" --pretrained "$PHOTOS_RUN/model.safetensors")

say "photos: the fine-tuned model on the mirrored photos"
coca eval retrieval "${PHOTOS[@]}" -q --csv "$WORK/photos/test.csv" --csv-separator , --dataset photos \
  --output "$RESULTS/photos_retrieval.json"
coca eval captioning "${PHOTOS[@]}" -q --csv "$WORK/photos/test.csv" --csv-separator , --dataset photos \
  --save-captions "$RESULTS/photos_captions.json" --output "$RESULTS/photos_captioning.json"

# --- 3. videos: held-out segments of opencv-doc's clips ---------------------------------------------------
say "videos: text <-> video similarity of the held-out segments"
video_args=()
while IFS= read -r -d '' v; do video_args+=(--video "$v"); done \
  < <(find "$WORK/videos/test" -name '*.mp4' -print0 | sort -z)
text_args=()
while IFS= read -r caption; do text_args+=(--text "$caption"); done \
  < <("$PYTHON" -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1])).values()))' \
      "$WORK/videos/captions.json")
coca embed "${PHOTOS[@]}" "${video_args[@]}" "${text_args[@]}" --frames 8 --json \
  > "$RESULTS/videos_embed.json"

say "videos: a collection of videos embedded, then searched by text"
rm -rf "$WORK/video_index"
coca embed "${PHOTOS[@]}" -q --input-dir "$WORK/videos/test" --frames 8 --output-dir "$WORK/video_index"
i=0
while IFS= read -r caption; do
  coca search "${PHOTOS[@]}" --index "$WORK/video_index" --text "$caption" --top-k 6 --json \
    > "$RESULTS/videos_search_$i.json"
  i=$((i + 1))
done < <("$PYTHON" -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1])).values()))' \
           "$WORK/videos/captions.json")

say "videos: probes on the segments (train -> test)"
coca probe "${PHOTOS[@]}" -q --video --frames 8 --train-dir "$WORK/videos/train" \
  --val-dir "$WORK/videos/test" --linear --cache-dir "$WORK/cache" --output "$RESULTS/videos_probe_linear.json"
coca probe "${PHOTOS[@]}" -q --video --frames 8 --train-dir "$WORK/videos/train" \
  --val-dir "$WORK/videos/test" --pooler-queries 1 --cache-dir "$WORK/cache" \
  --output "$RESULTS/videos_probe_pooler.json"

# --- summary ------------------------------------------------------------------------------------------------
say "summary"
"$PYTHON" "$HERE/summarize.py" "$WORK" "$COCA" "$ROOT/docs/benchmarks.md" "${UPDATE_DOCS:-0}"
