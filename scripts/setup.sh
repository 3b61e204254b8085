#!/usr/bin/env bash
# One-time (idempotent) set-up on Debian 12: apt packages, the Python venv, a Release build.
# Usage: scripts/setup.sh [BUILD_DIR] [extra cmake args...]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
build="${1:-$root/build}"; shift || true

# C++ toolchain and libraries, plus real text (KJV bible, word lists) for calibration,
# evaluation and tokenizer tests, clang + libFuzzer for scripts/fuzz.sh and GNU time for
# bench/peak_rss.py (see README "Dependencies" for why each is here).
apt_pkgs=(g++ cmake make pkg-config python3 python3-venv python3-pip
          libonnx-dev libonnx-testdata libprotobuf-dev protobuf-compiler libeigen3-dev
          libboost-graph-dev libfmt-dev libgtest-dev libgmock-dev libbenchmark-dev nlohmann-json3-dev
          bible-kjv bible-kjv-text wamerican wfrench wngerman wspanish
          clang libclang-rt-14-dev time)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  sudo_cmd=""; [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Python tooling (model generation, ONNX Runtime comparisons) in a venv, versions pinned.
venv="$root/.venv"
stamp="$venv/.requirements.sha256"
want="$(sha256sum "$root/requirements.txt" | cut -d' ' -f1)"
if [ ! -x "$venv/bin/python" ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: creating the Python venv in $venv"
  # Debian's own python3 (python3-venv installed above) unless one is already on PATH.
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$root/requirements.txt"
  echo "$want" > "$stamp"
fi

jobs="$(nproc 2>/dev/null || echo 2)"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=Release -DPython3_EXECUTABLE="$venv/bin/python" "$@" >/dev/null
cmake --build "$build" -j"$jobs"
