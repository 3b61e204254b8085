"""Read (and write) the soft-label files ``llmopt -passes='distill-targets<...>'`` writes.

The layout is in docs/formats.md ("Soft labels"); passes/distill/SoftLabels.h is the C++
side. Everything is little-endian::

    header (64 bytes)  b"LLMOSOFT" u32 version=1 u32 header_bytes=64 u32 vocab u32 topk
                       f32 temperature u32 flags=0 u64 model_hash u64 positions
                       u64 windows u64 reserved=0
    record             i32 token, u32 pos, i32 ids[topk], f32 logp[topk]   (positions of them)

Record ``p`` holds the teacher's top-k of ``log softmax(logits[p] / T)``: the distribution of
the token *after* ``token``. ``pos`` is the index in the calibration window (0 starts one).

    >>> sl = read("teacher.soft")
    >>> sl.header["temperature"], sl.records["ids"].shape       # (2.0, (positions, topk))

NumPy only; the records are memory-mapped, so files larger than RAM read fine.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = b"LLMOSOFT"
VERSION = 1
HEADER = np.dtype([
    ("magic", "S8"), ("version", "<u4"), ("header_bytes", "<u4"), ("vocab", "<u4"),
    ("topk", "<u4"), ("temperature", "<f4"), ("flags", "<u4"), ("model_hash", "<u8"),
    ("positions", "<u8"), ("windows", "<u8"), ("reserved", "<u8"),
])
assert HEADER.itemsize == 64


def record_dtype(topk: int) -> np.dtype:
    """One record: token, pos, ids[topk], logp[topk] (8 + 8 * topk bytes)."""
    return np.dtype([("token", "<i4"), ("pos", "<u4"), ("ids", "<i4", (topk,)),
                     ("logp", "<f4", (topk,))])


@dataclass
class SoftLabels:
    header: dict
    records: np.ndarray  # structured, fields token / pos / ids / logp

    def windows(self) -> list[np.ndarray]:
        """The records split into calibration windows (at each pos == 0)."""
        starts = np.flatnonzero(self.records["pos"] == 0)
        return np.split(self.records, starts[1:])


def read(path: str | os.PathLike) -> SoftLabels:
    """Reads and checks a soft-label file; raises ValueError naming the file on a bad one."""
    path = Path(path)
    raw = np.fromfile(path, dtype=np.uint8, count=HEADER.itemsize)
    if raw.size < HEADER.itemsize:
        raise ValueError(f"{path}: shorter than the 64-byte soft-label header")
    h = raw.view(HEADER)[0]
    if bytes(h["magic"]) != MAGIC:
        raise ValueError(f"{path}: not a soft-label file (magic is not LLMOSOFT)")
    if int(h["version"]) != VERSION or int(h["header_bytes"]) != HEADER.itemsize:
        raise ValueError(f"{path}: soft-label version {int(h['version'])}, this reader knows {VERSION}")
    header = {name: h[name].item() for name in HEADER.names if name not in ("magic", "reserved")}
    topk, positions = header["topk"], header["positions"]
    rec = record_dtype(topk)
    expected = HEADER.itemsize + positions * rec.itemsize
    if path.stat().st_size != expected:
        raise ValueError(f"{path}: {path.stat().st_size} bytes, expected {expected} "
                         f"({positions} records of {rec.itemsize} bytes)")
    records = (np.memmap(path, dtype=rec, mode="r", offset=HEADER.itemsize, shape=(positions,))
               if positions else np.zeros(0, dtype=rec))
    return SoftLabels(header, records)


def top_k_log_probs(logits: np.ndarray, topk: int, temperature: float) -> tuple[np.ndarray, np.ndarray]:
    """What distill-targets stores for logits [n, vocab]: ids (descending log-prob, ties to
    the lower id) and log softmax(logits / T) at those ids, the softmax summed in f64."""
    z = logits.astype(np.float64) / temperature
    lse = z.max(axis=-1, keepdims=True)
    lse = lse + np.log(np.exp(z - lse).sum(axis=-1, keepdims=True))
    # A stable sort of -logits keeps equal values in id order.
    ids = np.argsort(-logits.astype(np.float32), axis=-1, kind="stable")[:, :topk].astype(np.int32)
    return ids, np.take_along_axis(z - lse, ids, axis=-1).astype(np.float32)


def write(path: str | os.PathLike, windows: list[tuple[np.ndarray, np.ndarray]], topk: int,
          temperature: float, model_hash: int = 0) -> None:
    """Writes (tokens [n], logits [n, vocab]) windows the way distill-targets does, through a
    temporary file renamed into place (for tests and for teachers run outside llmopt)."""
    path = Path(path)
    vocab = int(windows[0][1].shape[-1]) if windows else 0
    rec = record_dtype(topk)
    header = np.zeros(1, dtype=HEADER)
    header[0] = (MAGIC, VERSION, HEADER.itemsize, vocab, topk, temperature, 0, model_hash,
                 sum(len(t) for t, _ in windows), len(windows), 0)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".tmp.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(header.tobytes())
            for tokens, logits in windows:
                r = np.zeros(len(tokens), dtype=rec)
                r["token"], r["pos"] = tokens, np.arange(len(tokens))
                r["ids"], r["logp"] = top_k_log_probs(np.asarray(logits), topk, temperature)
                f.write(r.tobytes())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
