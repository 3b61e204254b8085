#!/usr/bin/env bash
# Fuzzes the ONNX frontend (tests/fuzz/FrontendFuzzer.cc) with libFuzzer for a given time.
# Not part of CI. Builds build-fuzz/ with clang (-DLLMOPT_FUZZ=ON: ASan+UBSan+libFuzzer),
# seeds the corpus from Debian's libonnx-testdata models, runs niced, and copies new
# crash inputs to tests/fuzz-regressions/ (replayed by ctest's fuzz/regressions).
# Usage: scripts/fuzz.sh [SECONDS=3600] [JOBS=1]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
secs="${1:-3600}"
jobs="${2:-1}"
build="$root/build-fuzz"
work="$build/fuzz-work"
corpus="$work/corpus"
artifacts="$work/artifacts"

# FUZZ_NO_BUILD=1 reuses an existing binary (e.g. while the tree is mid-edit).
if [ "${FUZZ_NO_BUILD:-0}" != 1 ]; then
  command -v clang++ >/dev/null || { echo "fuzz.sh: needs clang++ (apt-get install clang)" >&2; exit 1; }
  cmake -S "$root" -B "$build" -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_BUILD_TYPE=Debug \
        -DCMAKE_CXX_FLAGS=-O1 -DLLMOPT_FUZZ=ON -DLLMOPT_BUILD_BENCH=OFF \
        -DPython3_EXECUTABLE="$root/.venv/bin/python" >/dev/null
  nice -n 19 cmake --build "$build" -j"$jobs" --target llmopt-fuzz-frontend
fi

mkdir -p "$corpus" "$artifacts"
if [ -z "$(ls -A "$corpus")" ]; then
  # Seeds: every model of the ONNX backend node/model tests (~1000 files, ~0.5 MB).
  n=0
  while IFS= read -r f; do
    cp "$f" "$corpus/seed-$(printf '%04d' $n).onnx"; n=$((n + 1))
  done < <(dpkg -L libonnx-testdata | grep '\.onnx$' | sort)
  echo "fuzz.sh: seeded $n models from libonnx-testdata"
fi

# Fork mode keeps fuzzing after a crash (each crash input is saved in $artifacts), so one
# unattended run can find several bugs; JOBS child processes at a time.
# -rss_limit_mb: a fuzz input declaring huge dims must be refused, not allocated.
cd "$work"
nice -n 19 "$build/bin/llmopt-fuzz-frontend" "$corpus" \
  -fork="$jobs" -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
  -max_total_time="$secs" -timeout=20 -rss_limit_mb=2048 -max_len=65536 \
  -artifact_prefix="$artifacts/" -print_final_stats=1 -print_funcs=0 \
  2>&1 | tee "$work/fuzz.log" || true

# New crash inputs join tests/fuzz-regressions/ (inputs already kept there are skipped).
found=0
for f in "$artifacts"/crash-* "$artifacts"/leak-* "$artifacts"/timeout-* "$artifacts"/oom-*; do
  [ -e "$f" ] || continue
  known=0
  for g in "$root"/tests/fuzz-regressions/*; do cmp -s "$f" "$g" && { known=1; break; }; done
  [ "$known" = 1 ] && continue
  cp "$f" "$root/tests/fuzz-regressions/" && found=$((found + 1))
done
echo "fuzz.sh: $found new input(s) copied to tests/fuzz-regressions/ (all artifacts: $artifacts)"
