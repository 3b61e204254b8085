"""Fixtures the Python tests share."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

MODELS = Path(__file__).resolve().parents[2] / "tools" / "models"


@pytest.fixture(scope="session")
def llama(tmp_path_factory) -> Path:
    """The bundled tiny Llama (random weights, decomposed exporter form), written once."""
    path = tmp_path_factory.mktemp("models") / "tiny-llama.onnx"
    subprocess.run([sys.executable, str(MODELS / "gen_tiny_llama.py"), "-o", str(path)], check=True)
    return path
