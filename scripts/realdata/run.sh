#!/usr/bin/env bash
# Real-data checks of issue #5, item 6: every evaluation of docs/evaluation.md, end to end, on real images and
# videos that package registries ship, with a model that coca trains itself.
#
#   scripts/realdata/run.sh [WORK_DIR]          (default WORK_DIR: runs/realdata, git-ignored)
#
#  1. exports scikit-learn's 1,797 handwritten digits (64 px PNG class folders, seeded 80/20 split, captions
#     "a handwritten digit seven"; the training split also cut, seeded, into a captioned quarter and a labelled
#     rest), scikit-image's and scikit-learn's photos (two captions each) and cuts
#     opencv-doc's AVI clips (Debian package, fetched with `apt-get download`, unpacked with `dpkg -x` into
#     WORK_DIR, nothing installed) into 1.5 s segments;
#  2. trains a small CoCa from scratch on the digits' training captions (`coca train`);
#  3. evaluates it on the test digits: zero-shot classification, linear and attentional probes (train -> test),
#     fine-tuning with a task pooler (`coca finetune`, train -> test), retrieval and captioning;
#  3b. issue #20: trains two more digit models from scratch with the same steps, seed and batch size, on the
#     captioned quarter alone and on the mixture `labels:LABELLED::CAPTIONED` (labels as text through the
#     "simple" templates), and evaluates all three by zero-shot classification and captioning;
#  4. fine-tunes it on the photos plus one frame of each training video segment, and evaluates captioning and
#     retrieval on the mirrored photos (before and after fine-tuning);
#  5. videos: text<->video similarity of the held-out segments (`coca embed --video`), a video collection
#     embedded and searched by text (`coca embed --input-dir`, `coca search`), video probes, and the video
#     model fine-tuned with a task pooler over all frames' tokens (`coca finetune --video`);
#  6. writes WORK_DIR/results/*.json and WORK_DIR/results/summary.md (the section of docs/benchmarks.md);
#     with UPDATE_DOCS=1 it also replaces that section in docs/benchmarks.md.
#
# Needs: python3 with venv and pip (or PYTHON=/path/to/python that has scikit-learn, scikit-image, numpy,
# pillow), the `ffmpeg` and `ffprobe` programs (Debian: apt-get install ffmpeg), apt-get and dpkg for
# opencv-doc (or CLIPS_DIR=folder with the .avi files), and cargo (or COCA=/path/to/coca built with
# --features ffmpeg). Settings: DIGIT_STEPS (default 500, every digit model), PHOTO_STEPS (default 150),
# MIX_FACTORS (default 1::3, the mixture's --train-data-upsampling-factors), FINETUNE_EPOCHS (default 20),
# THREADS.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE="$ROOT/scripts/realdata"
WORK=$(mkdir -p "${1:-$ROOT/runs/realdata}" && cd "${1:-$ROOT/runs/realdata}" && pwd)
RESULTS="$WORK/results"
DIGIT_STEPS=${DIGIT_STEPS:-500}
PHOTO_STEPS=${PHOTO_STEPS:-150}
# Labelled ⅓ of the captioned images' weight: 1078 labelled and 359 captioned digits give each source half of
# every batch, so the scarce captions (the wording evaluated) are not drowned by the labels.
MIX_FACTORS=${MIX_FACTORS:-1::3}
FINETUNE_EPOCHS=${FINETUNE_EPOCHS:-20}
LABEL_TEMPLATES=simple
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
# Every digit model trains with these settings (only the data differs): NAME, then --train-data and its flags.
train_digits() {
  local name=$1 start
  shift
  rm -rf "$WORK/runs/$name"
  start=$(date +%s)
  coca train --model "$CONFIG" "$@" --csv-separator , \
    --batch-size 64 --steps "$DIGIT_STEPS" --lr 1e-3 --warmup 50 --wd 0.1 --grad-clip-norm 1.0 \
    --save-every "$DIGIT_STEPS" --keep-checkpoints 1 --seed 0 --output "$WORK/runs/$name" --json -q \
    > "$RESULTS/train_$name.json"
  echo "{\"seconds\": $(( $(date +%s) - start ))}" > "$RESULTS/train_${name}_time.json"
}
# Zero-shot classification of the test digits with the captions' wording and with the label templates, and
# captioning of the test digits (beams scored as open_clip does, and by log-probabilities): NAME (the run) ->
# results/NAME_*.json.
eval_digits() {
  local name=$1 model=(--model "$CONFIG" --pretrained "$WORK/runs/$1/model.safetensors")
  coca eval zeroshot-classification "${model[@]}" -q --dataset-root "$WORK/digits/test" --dataset digits \
    --classnames "$WORK/digits/classnames.txt" --templates "$WORK/digits/templates.txt" --no-cache \
    --output "$RESULTS/${name}_zeroshot.json"
  coca eval zeroshot-classification "${model[@]}" -q --dataset-root "$WORK/digits/test" --dataset digits \
    --classnames "$WORK/digits/classnames.txt" --templates "$LABEL_TEMPLATES" --no-cache \
    --output "$RESULTS/${name}_zeroshot_labels.json"
  coca eval captioning "${model[@]}" -q --csv "$WORK/digits/test.csv" --csv-separator , --dataset digits \
    --save-captions "$RESULTS/${name}_captions.json" --output "$RESULTS/${name}_captioning.json"
  # open_clip's beam search ranks beams by summed raw logits, not by probability; beams scored by
  # log-probabilities show which wording the captioner finds most likely.
  coca eval captioning "${model[@]}" -q --csv "$WORK/digits/test.csv" --csv-separator , --dataset digits \
    --beam-scoring log-probs --save-captions "$RESULTS/${name}_captions_logprobs.json" \
    --output "$RESULTS/${name}_captioning_logprobs.json"
}
# Wall seconds of a command: NAME, then the command; -> results/NAME_time.json.
timed() {
  local name=$1 start
  shift
  start=$(date +%s)
  "$@"
  echo "{\"seconds\": $(( $(date +%s) - start ))}" > "$RESULTS/${name}_time.json"
}

DIGITS_RUN="$WORK/runs/digits"
say "training on the digits' captions ($DIGIT_STEPS steps)"
train_digits digits --train-data "$WORK/digits/train.csv"
DIGITS=(--model "$CONFIG" --pretrained "$DIGITS_RUN/model.safetensors")

say "digits: zero-shot classification and captioning of the test split"
eval_digits digits
say "digits: linear probe and attentional-pooler probe, train -> test"
coca probe "${DIGITS[@]}" -q --train-dir "$WORK/digits/train" --val-dir "$WORK/digits/test" --linear \
  --cache-dir "$WORK/cache" --output "$RESULTS/digits_probe_linear.json"
timed digits_probe_pooler coca probe "${DIGITS[@]}" -q --train-dir "$WORK/digits/train" \
  --val-dir "$WORK/digits/test" --pooler-queries 1 --cache-dir "$WORK/cache" \
  --confusion "$RESULTS/digits_probe_confusion" --output "$RESULTS/digits_probe_pooler.json"
say "digits: fine-tuning with a task pooler (1 query, as the probe), train -> test"
rm -rf "$WORK/runs/finetune_digits"
timed digits_finetune coca finetune "${DIGITS[@]}" -q --train-dir "$WORK/digits/train" \
  --val-dir "$WORK/digits/test" --pooler-queries 1 --epochs "$FINETUNE_EPOCHS" --batch-size 64 --lr 1e-3 \
  --layer-decay 0.65 --wd 0.05 --seed 0 --output "$WORK/runs/finetune_digits" \
  --confusion "$RESULTS/digits_finetune_confusion" --json > "$RESULTS/digits_finetune.json"
say "digits: retrieval of the test split"
coca eval retrieval "${DIGITS[@]}" -q --csv "$WORK/digits/test.csv" --csv-separator , --dataset digits \
  --output "$RESULTS/digits_retrieval.json"

# --- 1b. few captions alone vs a mixture with labelled images as text (issue #20) ---------------------
say "digits: training on the captioned quarter alone ($DIGIT_STEPS steps)"
train_digits digits_captioned --train-data "$WORK/digits/train_captioned.csv"
eval_digits digits_captioned
say "digits: training on the labelled rest mixed with the captioned quarter ($MIX_FACTORS, $DIGIT_STEPS steps)"
train_digits digits_mixture \
  --train-data "labels:$WORK/digits/train_labelled.csv::$WORK/digits/train_captioned.csv" \
  --train-data-upsampling-factors "$MIX_FACTORS" --csv-label-key label \
  --classnames "$WORK/digits/classnames.txt" --label-templates "$LABEL_TEMPLATES"
cp "$WORK/runs/digits_mixture/train_data.json" "$RESULTS/digits_mixture_train_data.json"
eval_digits digits_mixture

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
say "videos: fine-tuning with a task pooler over all spatial and temporal tokens (train -> test)"
rm -rf "$WORK/runs/finetune_videos"
timed videos_finetune coca finetune "${PHOTOS[@]}" -q --video --frames 8 --train-dir "$WORK/videos/train" \
  --val-dir "$WORK/videos/test" --pooler-queries 1 --epochs "$FINETUNE_EPOCHS" --batch-size 8 --lr 1e-3 \
  --layer-decay 0.65 --wd 0.05 --seed 0 --output "$WORK/runs/finetune_videos" --json \
  > "$RESULTS/videos_finetune.json"

# --- summary ------------------------------------------------------------------------------------------------
say "summary"
"$PYTHON" "$HERE/summarize.py" "$WORK" "$COCA" "$ROOT/docs/benchmarks.md" "${UPDATE_DOCS:-0}"
