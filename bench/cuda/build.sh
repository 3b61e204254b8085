#!/bin/bash
# Builds bench/cuda/int4_gemv_bench with nvcc for Hopper (sm_90). Not part of CI.
set -euo pipefail
cd "$(dirname "$0")/../.."
nvcc -O3 -std=c++17 -gencode=arch=compute_90,code=sm_90 -I. -Xptxas -v \
  bench/cuda/int4_gemv_bench.cu -o bench/cuda/int4_gemv_bench 2> bench/cuda/ptxas.log
grep -E "registers|stack|spill" bench/cuda/ptxas.log | head -4
