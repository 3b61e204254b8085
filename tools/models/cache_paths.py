"""Where the real-model tooling keeps what it makes (outside git).

``LLMOPT_CACHE`` (default ``~/.cache/llmopt``) holds ``models/<name>/`` (ONNX + config +
tokenizer) and ``text/`` (the prepared corpora).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["cache_root", "model_dir", "text_dir"]


def cache_root() -> Path:
    """``$LLMOPT_CACHE`` or ``~/.cache/llmopt``."""
    env = os.environ.get("LLMOPT_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "llmopt"


def model_dir(name: str) -> Path:
    """``<cache>/models/<name>``, e.g. ``smollm2-135m`` or ``all-minilm-l6-v2``."""
    return cache_root() / "models" / name


def text_dir() -> Path:
    """``<cache>/text``: prepared text corpora (``kjv-calib.txt``, ``kjv-eval.txt``)."""
    return cache_root() / "text"
