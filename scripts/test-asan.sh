#!/usr/bin/env bash
# The C++ unit tests and the kept fuzz inputs under ASan+UBSan (-DLLMOPT_SANITIZE=ON), in
# build-asan/. Only the unit-test targets are built (not the tools, benchmarks or
# conformance runner) to keep CI time down; scripts/test.sh calls this after setup.sh.
# Usage: scripts/test-asan.sh [BUILD_DIR]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build-asan}"
jobs="$(nproc 2>/dev/null || echo 2)"

# Every add_executable(llmopt_*_test ...) of tests/unit, so new unit tests join by themselves.
mapfile -t tests < <(sed -n 's/^add_executable(\(llmopt_[A-Za-z0-9_]*_test\)\b.*/\1/p' \
                         "$root/tests/unit/CMakeLists.txt")
# -O1 with line tables: fast to build, asserts on (no NDEBUG), readable sanitizer reports.
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Debug -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g1" \
      -DLLMOPT_SANITIZE=ON -DLLMOPT_BUILD_BENCH=OFF \
      -DPython3_EXECUTABLE="$root/.venv/bin/python" >/dev/null
cmake --build "$build" -j"$jobs" --target "${tests[@]}" llmopt-fuzz-replay

export ASAN_OPTIONS="detect_leaks=1:strict_string_checks=1:check_initialization_order=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
failed=()
for t in "${tests[@]}"; do
  echo "asan: $t"
  "$build/bin/$t" --gtest_brief=1 || failed+=("$t")
done
echo "asan: llmopt-fuzz-replay tests/fuzz-regressions"
"$build/bin/llmopt-fuzz-replay" "$root/tests/fuzz-regressions" || failed+=(llmopt-fuzz-replay)
if [ ${#failed[@]} -gt 0 ]; then
  echo "asan: FAILED: ${failed[*]}" >&2
  exit 1
fi
echo "asan: ${#tests[@]} unit-test programs and the fuzz regressions pass under ASan+UBSan"
