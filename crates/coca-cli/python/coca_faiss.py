"""Build and query faiss indexes over an embedding folder in clip-retrieval's layout (run by `coca index` and
`coca search`; needs the `faiss-cpu` and `numpy` packages).

  python coca_faiss.py build OUT_DIR KIND FACTORY TARGET_RECALL INDEX_PATH INFOS_PATH FILE...
  python coca_faiss.py search INDEX_PATH PARAMS K < query.f32

`build` reads the `.npy` files in the order given (coca passes them in partition order, the order
embedding-reader and autofaiss use), trains the index on a sample, adds the rows file by file, then measures
recall@10 against an exact search for up to 1,000 of the stored rows used as queries, choosing the smallest
search parameter (efSearch for HNSW, nprobe for IVF) that reaches TARGET_RECALL. It writes the index and a JSON
summary. `search` prints {"ids": [...], "scores": [...]} for one float32 query read from stdin.
"""

import json
import sys
import time

import faiss
import numpy as np

RECALL_AT = 10
RECALL_QUERIES = 1000
TRAIN_ROWS = 100_000


def load(path):
    rows = np.load(path, mmap_mode="r")
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    faiss.normalize_L2(rows)
    return rows


def sample_rows(files, count, seed):
    """`count` rows drawn evenly from all files (the training sample and the recall queries)."""
    sizes = [np.load(f, mmap_mode="r").shape[0] for f in files]
    total = sum(sizes)
    rng = np.random.default_rng(seed)
    picked = np.sort(rng.choice(total, size=min(count, total), replace=False))
    out, start = [], 0
    for f, n in zip(files, sizes):
        mine = picked[(picked >= start) & (picked < start + n)] - start
        if len(mine):
            out.append(load(f)[mine])
        start += n
    return np.concatenate(out), total


def exact_neighbours(files, queries, k):
    heap = faiss.ResultHeap(len(queries), k, keep_max=True)
    offset = 0
    for f in files:
        rows = load(f)
        flat = faiss.IndexFlatIP(rows.shape[1])
        flat.add(rows)
        d, i = flat.search(queries, min(k, rows.shape[0]))
        i = np.where(i >= 0, i + offset, -1)
        if d.shape[1] < k:
            pad = k - d.shape[1]
            d = np.pad(d, ((0, 0), (0, pad)), constant_values=-np.inf)
            i = np.pad(i, ((0, 0), (0, pad)), constant_values=-1)
        heap.add_result(np.ascontiguousarray(d), np.ascontiguousarray(i))
        offset += rows.shape[0]
    heap.finalize()
    return heap.I


def recall(found, truth):
    k = truth.shape[1]
    hits = sum(len(set(f[:k]) & set(t[t >= 0])) for f, t in zip(found, truth))
    return hits / max(1, int((truth >= 0).sum()))


def build(kind, factory, target, index_path, infos_path, files):
    started = time.time()
    dim = np.load(files[0], mmap_mode="r").shape[1]
    train, total = sample_rows(files, TRAIN_ROWS, seed=0)
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    index.train(train)
    for f in files:
        index.add(load(f))
    built = time.time() - started
    queries, _ = sample_rows(files, RECALL_QUERIES, seed=1)
    k = min(RECALL_AT, total)
    truth = exact_neighbours(files, queries, k)
    ivf = faiss.try_extract_index_ivf(index) if "IVF" in factory else None
    if ivf is not None:
        name, values = "nprobe", [v for v in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024) if v <= ivf.nlist]
    elif "HNSW" in factory:
        name, values = "efSearch", [16, 32, 64, 128, 256, 512, 1024]
    else:
        name, values = None, [None]
    space = faiss.ParameterSpace()
    chosen, measured = None, []
    for v in values:
        params = "" if name is None else f"{name}={v}"
        if params:
            space.set_index_parameters(index, params)
        t0 = time.time()
        _, found = index.search(queries, k)
        per_query = (time.time() - t0) / len(queries)
        r = recall(found, truth)
        measured.append({"params": params, "recall": r, "ms_per_query": per_query * 1000})
        chosen = measured[-1]
        if r >= target:
            break
    faiss.write_index(index, index_path)
    infos = {
        "kind": kind,
        "factory": factory,
        "rows": int(total),
        "dim": int(dim),
        "metric": "inner_product",
        "index_param": chosen["params"],
        "recall_at": k,
        "recall": chosen["recall"],
        "target_recall": target,
        "recall_queries": int(len(queries)),
        "tried": measured,
        "build_seconds": built,
        "seconds": time.time() - started,
        "index_bytes": int(faiss.serialize_index(index).nbytes) if total <= 10_000_000 else None,
        "faiss": faiss.__version__,
    }
    with open(infos_path, "w") as out:
        json.dump(infos, out, indent=2)
        out.write("\n")
    json.dump(infos, sys.stdout)
    sys.stdout.write("\n")


def search(index_path, params, k):
    index = faiss.read_index(index_path)
    if params:
        faiss.ParameterSpace().set_index_parameters(index, params)
    query = np.frombuffer(sys.stdin.buffer.read(), dtype="<f4").reshape(1, -1).copy()
    if query.shape[1] != index.d:
        sys.exit(f"the query has {query.shape[1]} dimensions, the index {index.d}")
    faiss.normalize_L2(query)
    scores, ids = index.search(query, k)
    keep = ids[0] >= 0
    json.dump({"ids": ids[0][keep].tolist(), "scores": scores[0][keep].tolist()}, sys.stdout)
    sys.stdout.write("\n")


def main(argv):
    if argv[:1] == ["build"] and len(argv) >= 7:
        _, kind, factory, target, index_path, infos_path, *files = argv
        build(kind, factory, float(target), index_path, infos_path, files)
    elif argv[:1] == ["search"] and len(argv) == 4:
        search(argv[1], argv[2], int(argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
