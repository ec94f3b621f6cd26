#!/usr/bin/env python3
"""Write the hostile checkpoints of fixtures/adversarial/checkpoints/ and their manifest.json.

Standard library only: the pickles are written opcode by opcode (protocol 2, as torch.save writes
them) into zip archives laid out like torch.save's (<dir>/data.pkl, <dir>/byteorder, <dir>/data/N,
<dir>/version), and the non-finite copies are edited safetensors files. Every file is a few KB at
most, except deep_nesting.bin (one byte per nesting level). Run from the repository root:

    python3 scripts/adversarial/make_checkpoints.py
"""

import json
import struct
import zipfile
from pathlib import Path

OUT = Path("fixtures/adversarial/checkpoints")
DEMO_CFG = "assets/demo/coca_demo-tiny.json"
TINY_CFG = "fixtures/parity/tiny_cascade/config.json"
TINY_WEIGHTS = Path("fixtures/parity/tiny_cascade/open_clip_model.safetensors")
SMALL_WEIGHTS = Path("fixtures/checkpoint/model_f32.safetensors")

# --- pickle opcodes (protocol 2) -------------------------------------------------------------------

PROTO2 = b"\x80\x02"
STOP = b"."
MARK = b"("
EMPTY_DICT = b"}"
EMPTY_LIST = b"]"
EMPTY_TUPLE = b")"
SETITEM = b"s"
SETITEMS = b"u"
APPEND = b"a"
APPENDS = b"e"
LIST = b"l"
TUPLE = b"t"
TUPLE1 = b"\x85"
TUPLE2 = b"\x86"
NONE = b"N"
NEWFALSE = b"\x89"
REDUCE = b"R"
BINPERSID = b"Q"


def s(text):
    """BINUNICODE."""
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def i(value):
    """BININT for 32-bit values, LONG1 (8 bytes) beyond."""
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    return b"\x8a\x08" + struct.pack("<q", value)


def ints(values):
    return MARK + b"".join(i(v) for v in values) + TUPLE


def put(n):
    return b"q" + bytes([n])


def get(n):
    return b"h" + bytes([n])


def glob(module, name):
    return b"c" + module.encode() + b"\n" + name.encode() + b"\n"


def tensor(key, numel, offset, shape, stride, storage="FloatStorage", shape_ops=None):
    """_rebuild_tensor_v2(('storage', torch.<storage>, key, 'cpu', numel), offset, shape, stride, False, {})."""
    pid = MARK + s("storage") + glob("torch", storage) + s(key) + s("cpu") + i(numel) + TUPLE
    return (
        glob("torch._utils", "_rebuild_tensor_v2")
        + MARK
        + pid
        + BINPERSID
        + i(offset)
        + (shape_ops if shape_ops is not None else ints(shape))
        + ints(stride)
        + NEWFALSE
        + EMPTY_DICT
        + TUPLE
        + REDUCE
    )


def state_dict(*items):
    """A dict of (name, value ops) pairs, as the whole pickle."""
    body = b"".join(s(name) + value for name, value in items)
    return PROTO2 + EMPTY_DICT + MARK + body + SETITEMS + STOP


def torch_zip(path, pickle, storages=()):
    """A torch.save-style archive: stored (uncompressed) entries under one folder."""
    folder = path.stem
    entries = [("data.pkl", pickle), ("byteorder", b"little")]
    entries += [(f"data/{key}", data) for key, data in storages]
    entries.append(("version", b"3\n"))
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in entries:
            # A fixed timestamp keeps the output byte-for-byte reproducible.
            z.writestr(zipfile.ZipInfo(f"{folder}/{name}", date_time=(1980, 1, 1, 0, 0, 0)), data)


FLOATS = struct.pack("<3f", 0.5, -1.0, 2.0)

# --- safetensors -----------------------------------------------------------------------------------


def read_safetensors(path):
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    return header, raw[8 + n :]


def write_safetensors(path, tensors, metadata):
    """tensors: list of (name, dtype, shape, bytes)."""
    header = {"__metadata__": metadata} if metadata else {}
    offset = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(struct.pack("<Q", len(text)) + text + b"".join(t[3] for t in tensors))


def f32_tensors(path):
    header, data = read_safetensors(path)
    meta = header.pop("__metadata__", None)
    out = []
    for name, entry in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, end = entry["data_offsets"]
        out.append([name, entry["dtype"], entry["shape"], data[begin:end]])
    return out, meta


def to_f16(data):
    n = len(data) // 4
    return struct.pack(f"<{n}e", *struct.unpack(f"<{n}f", data))


def with_first(data, fmt, value):
    size = struct.calcsize(fmt)
    return struct.pack(fmt, value) + data[size:]


# --- the files -------------------------------------------------------------------------------------


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    entries = []

    def pickle_case(name, what, pickle, error, storages=()):
        torch_zip(OUT / name, pickle, storages)
        entries.append({"file": name, "what": what, "error": error})

    # Each level is a list holding the previous level twice: 64 levels describe 2^64 leaves. A reader
    # that copies memoised objects instead of sharing them runs out of memory.
    levels = NONE + put(0)
    for k in range(1, 65):
        levels += EMPTY_LIST + MARK + get(k - 1) + get(k - 1) + APPENDS + put(k)
    pickle_case(
        "memo_bomb.bin",
        "a list of lists that reuse memoised lists: 2^64 elements if copied, 65 objects if shared",
        state_dict(("bomb", MARK + levels + LIST)),
        "contains no tensors",
    )

    # The same with tuples, given as a tensor's size: describing the bad size must not print it.
    laughs = NONE + put(0) + b"".join(get(k - 1) + TUPLE2 + put(k) for k in range(1, 101))
    pickle_case(
        "tuple_bomb.bin",
        "a tensor whose size is a tuple of tuples sharing memoised tuples: 2^100 objects if copied",
        state_dict(("w", tensor("0", 3, 0, None, [1], shape_ops=laughs))),
        "bad size: (a tuple of 2, a tuple of 2)",
        [("0", FLOATS)],
    )

    pickle_case(
        "deep_nesting.bin",
        "None inside 100000 nested 1-tuples: a recursive reader, printer or destructor overflows the stack",
        state_dict(("deep", NONE + TUPLE1 * 100_000)),
        "nested more than 256 deep",
    )

    pickle_case(
        "cycle.bin",
        "a list appended to itself: a reference cycle",
        state_dict(("loop", EMPTY_LIST + put(0) + get(0) + APPEND)),
        "puts a list inside itself",
    )

    pickle_case(
        "os_system.bin",
        "os.system('echo pwned') as a state dict value: Python's pickle would run the command",
        state_dict(("w", glob("os", "system") + s("echo pwned") + TUPLE1 + REDUCE)),
        "refused the global 'os.system'",
    )

    pickle_case(
        "long_string.bin",
        "a string whose length field claims 4 GiB in a 60-byte pickle",
        PROTO2 + EMPTY_DICT + b"X" + struct.pack("<I", 0xFFFFFFF0) + b"abc",
        "4294967280 more bytes needed",
    )

    pickle_case(
        "huge_storage.bin",
        "a storage that claims 2^60 float32 elements, backed by 12 bytes",
        state_dict(("w", tensor("0", 2**60, 0, [3], [1]))),
        "claims 1152921504606846976 elements",
        [("0", FLOATS)],
    )

    pickle_case(
        "offset_past_end.bin",
        "a tensor view starting 2^40 elements into a 3-element storage",
        state_dict(("w", tensor("0", 3, 2**40, [3], [1]))),
        "needs 4398046511116 bytes but storage 'offset_past_end/data/0' holds 12",
        [("0", FLOATS)],
    )

    pickle_case(
        "expanded_view.bin",
        "a 2^30 x 2^30 view of one element (stride 0): 4 EiB if materialised",
        state_dict(("w", tensor("0", 1, 0, [2**30, 2**30], [0, 0]))),
        "would expand to",
        [("0", FLOATS[:4])],
    )

    # Non-finite weights: a complete tiny model (stored as f16 to stay small) with a NaN in the
    # projection every image embedding goes through, and a small file with infinities.
    tensors, meta = f32_tensors(TINY_WEIGHTS)
    for t in tensors:
        if t[1] == "F32":
            t[1], t[3] = "F16", to_f16(t[3])
        if t[0] == "visual.proj":
            t[3] = with_first(t[3], "<e", float("nan"))
    write_safetensors(OUT / "nan_weight.safetensors", tensors, meta)
    entries.append(
        {
            "file": "nan_weight.safetensors",
            "what": "the tiny_cascade parity model in f16 with one NaN in visual.proj",
            "model": TINY_CFG,
            "non_finite": ["visual.proj"],
            "error": "has NaN or infinite weights in 1 tensor: 'visual.proj'",
        }
    )

    tensors, meta = f32_tensors(SMALL_WEIGHTS)
    for t in tensors:
        if t[0] == "ln_final.weight":
            t[3] = with_first(t[3], "<f", float("inf"))
        if t[0] == "logit_scale":
            t[3] = with_first(t[3], "<f", float("-inf"))
    write_safetensors(OUT / "inf_weight.safetensors", tensors, meta)
    entries.append(
        {
            "file": "inf_weight.safetensors",
            "what": "the small checkpoint-reader fixture with +inf in ln_final.weight and -inf as logit_scale",
            "model": DEMO_CFG,
            "non_finite": ["ln_final.weight", "logit_scale"],
            "error": "has NaN or infinite weights in 2 tensors: 'ln_final.weight', 'logit_scale'",
        }
    )

    manifest = {
        "generator": "scripts/adversarial/make_checkpoints.py",
        "test": "crates/coca-cli/tests/hostile_checkpoints.rs",
        "default_model": DEMO_CFG,
        "files": entries,
    }
    (OUT / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    for e in entries:
        print(f"{(OUT / e['file']).stat().st_size:>8}  {e['file']}")


if __name__ == "__main__":
    main()
