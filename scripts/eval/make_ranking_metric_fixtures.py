"""Expected zero-shot metrics for coca-eval's classification and retrieval modules.

Recomputes, on small seeded score matrices, what CLIP_benchmark reports:
  * zero-shot classification (clip_benchmark/metrics/zeroshot_classification.py): top-k accuracy from
    torch.topk over the logits (acc5 only with >= 5 classes, NaN otherwise -> null here), and
    sklearn's balanced_accuracy_score of the argmax as mean_per_class_recall;
  * retrieval (clip_benchmark/metrics/zeroshot_retrieval.py): the recall_at_k of a (texts, images) score
    matrix with a boolean positive-pair matrix, a hit being recall > 0, averaged; image_retrieval_recall@k
    ranks images per text, text_retrieval_recall@k ranks texts per image.
Scores are continuous random draws, so no ties (whose order torch.topk leaves open) occur.

Run from the repository root with the parity venv (scripts/parity/requirements.txt: torch, numpy,
scikit-learn):  python scripts/eval/make_ranking_metric_fixtures.py
It writes fixtures/eval/ranking/metrics.json.
"""

import json
import math
from pathlib import Path

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score

OUT = Path("fixtures/eval/ranking/metrics.json")


def topk_accuracy(logits, target, k):
    """Fraction of rows whose target is among the k largest logits (CLIP_benchmark's `accuracy`)."""
    top = logits.topk(k, dim=1, largest=True, sorted=True).indices
    return float((top == target[:, None]).any(dim=1).float().mean())


def classification_case(name, rng, samples, classes, absent_class=None):
    logits = torch.tensor(rng.normal(size=(samples, classes)) * 10.0, dtype=torch.float32)
    choices = [c for c in range(classes) if c != absent_class]
    # Imbalanced targets: class weights 1, 2, 3, ...
    weights = np.arange(1, len(choices) + 1, dtype=float)
    target = torch.tensor(rng.choice(choices, size=samples, p=weights / weights.sum()))
    pred = logits.argmax(dim=1)
    acc5 = topk_accuracy(logits, target, 5) if classes >= 5 else float("nan")
    return {
        "name": name,
        "classes": classes,
        "logits": logits.flatten().tolist(),
        "targets": target.tolist(),
        "acc1": topk_accuracy(logits, target, 1),
        "acc5": None if math.isnan(acc5) else acc5,
        "mean_per_class_recall": float(balanced_accuracy_score(target.numpy(), pred.numpy())),
    }


def recall_hits(scores, positive, k):
    """Per row: whether any positive column is among the row's k best (CLIP_benchmark's recall > 0)."""
    top = scores.topk(k, dim=1).indices
    hits = torch.gather(positive, 1, top).sum(dim=1)
    return (hits > 0).float().mean().item()


def retrieval_case(name, rng, captions_per_image, ks):
    images = len(captions_per_image)
    text_image = [i for i, n in enumerate(captions_per_image) for _ in range(n)]
    scores = torch.tensor(rng.uniform(-1, 1, size=(len(text_image), images)), dtype=torch.float32)
    positive = torch.zeros_like(scores, dtype=torch.bool)
    positive[torch.arange(len(text_image)), torch.tensor(text_image)] = True
    metrics = {}
    for k in ks:
        metrics[f"image_retrieval_recall@{k}"] = recall_hits(scores, positive, min(k, images))
        metrics[f"text_retrieval_recall@{k}"] = recall_hits(scores.T, positive.T, min(k, len(text_image)))
    return {
        "name": name,
        "images": images,
        "scores": scores.flatten().tolist(),
        "text_image": text_image,
        "ks": ks,
        "metrics": metrics,
    }


def main():
    rng = np.random.default_rng(20240605)
    out = {
        "generator": "scripts/eval/make_ranking_metric_fixtures.py (CLIP_benchmark's formulas, torch + scikit-learn)",
        "classification": [
            classification_case("40x7, class 6 never a target", rng, 40, 7, absent_class=6),
            classification_case("25x3, no acc5", rng, 25, 3),
            classification_case("60x12", rng, 60, 12),
        ],
        "retrieval": [
            retrieval_case("6 images, 1-4 captions", rng, [1, 3, 2, 4, 1, 2], [1, 5, 10]),
            retrieval_case("12 images, 5 captions", rng, [5] * 12, [1, 5, 10]),
        ],
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
