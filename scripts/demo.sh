#!/usr/bin/env bash
# The main job on the bundled model: generate the tiny Llama, optimize it, print the
# report, and check the result in ONNX Runtime against the original.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build"
bash "$root/scripts/setup.sh" "$build" >/dev/null
py="$root/.venv/bin/python"
out="$build/demo"; mkdir -p "$out"
"$py" "$root/tools/models/gen_tiny_llama.py" -o "$out/tiny-llama.onnx"
# Cleanup, then block-wise int4 weights (RTN, block 32) emitted as ORT's MatMulNBits.
# (prune-struct joins the default pipeline when it exists.)
pipeline="${LLMOPT_PIPELINE:-fold-shapes,fixpoint(const-fold,cse,canonicalize,dce),quant-embed,quant-int4}"
"$build/bin/llmopt" "$out/tiny-llama.onnx" -passes="$pipeline" -o "$out/tiny-llama.opt.onnx" --report
# The tiny model has random weights, so int4 costs more accuracy than on a trained model.
"$py" "$root/scripts/compare_ort.py" "$out/tiny-llama.onnx" "$out/tiny-llama.opt.onnx" --min-cosine 0.85
