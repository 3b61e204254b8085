#!/usr/bin/env bash
# The whole test suite: set-up, Release build, C++ tests (ctest), Python tests (pytest),
# then the C++ unit tests under ASan+UBSan.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="$root/build"
bash "$root/scripts/setup.sh" "$build"
cd "$build"
ctest --output-on-failure -j"$(nproc 2>/dev/null || echo 2)"
cd "$root"
LLMOPT_BUILD="$build" "$root/.venv/bin/python" -m pytest -q "$root/tests/python"
# The C++ unit tests again under ASan+UBSan (build-asan/, unit-test targets only).
bash "$root/scripts/test-asan.sh" "$root/build-asan"
