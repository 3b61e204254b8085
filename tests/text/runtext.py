#!/usr/bin/env python3
"""Runs one textual test, LLVM-lit style.

A test file holds `RUN:` lines (shell commands) and check directives in comments
(`;` in .llir files, `#` in .onnxtxt files). Substitutions in RUN lines:
  %llmopt  the llmopt binary      %s  this file      %t  a scratch path for this test
  %plugin  the example plugin     %check  checks stdin against this file's CHECK lines
  %onnxtestdata  Debian's libonnx-testdata data folder
`not CMD` inverts the exit status (a command that must fail, with exit code 1).
Check directives (a small FileCheck):
  CHECK: text          the next line (from the last match on) containing text
  CHECK-NEXT: text     the line right after the last match contains text
  CHECK-NOT: text      no line between the last match and the next positive match
  CHECK-COUNT-N: text  exactly N more lines (after the last match) contain text
  CHECK-EMPTY:         the line right after the last match is empty
`%check --check-prefix=P` reads P:, P-NEXT:, ... instead (several checks per file).
A test without a RUN line that pipes into %check is an error: every test checks something.
"""
import argparse
import os
import re
import subprocess
import sys

def directives(path, prefix="CHECK"):
    """(kind, pattern) pairs; kind is normalised to CHECK, CHECK-NEXT, ..."""
    rx = re.compile(r"(?:;|#|//)\s*" + re.escape(prefix) + r"(-NEXT|-NOT|-EMPTY|-COUNT-\d+)?:(.*)$")
    out = []
    for line in open(path, encoding="utf-8"):
        m = rx.search(line.rstrip("\n"))
        if m:
            out.append(("CHECK" + (m.group(1) or ""), m.group(2).strip()))
    return out


def check(path, text, prefix="CHECK"):
    """Returns None on success, else a message naming the failing directive."""
    if not directives(path, prefix):
        return f"no {prefix}: directives in the file: the check would be vacuous"
    lines = text.split("\n")
    pos = 0  # index of the first line after the last match
    pending_not = []
    for kind, pat in directives(path, prefix):
        if kind == "CHECK-NOT":
            pending_not.append(pat)
            continue
        if kind == "CHECK":
            hit = next((i for i in range(pos, len(lines)) if pat in lines[i]), None)
            if hit is None:
                return f"CHECK: '{pat}' not found after line {pos}"
        elif kind == "CHECK-NEXT":
            hit = pos if pos < len(lines) and pat in lines[pos] else None
            if hit is None:
                got = lines[pos] if pos < len(lines) else "<end>"
                return f"CHECK-NEXT: '{pat}' not on line {pos + 1} (got '{got}')"
        elif kind == "CHECK-EMPTY":
            hit = pos if pos < len(lines) and lines[pos].strip() == "" else None
            if hit is None:
                return f"CHECK-EMPTY: line {pos + 1} is not empty"
        else:  # CHECK-COUNT-N
            n = int(kind.rsplit("-", 1)[1])
            found = [i for i in range(pos, len(lines)) if pat in lines[i]]
            if len(found) != n:
                return f"{kind}: '{pat}' found {len(found)} times after line {pos}, expected {n}"
            hit = found[-1] if found else pos - 1
        for bad in pending_not:
            for i in range(pos, hit):
                if bad in lines[i]:
                    return f"CHECK-NOT: '{bad}' found on line {i + 1}: {lines[i]}"
        pending_not = []
        pos = hit + 1
    for bad in pending_not:
        for i in range(pos, len(lines)):
            if bad in lines[i]:
                return f"CHECK-NOT: '{bad}' found on line {i + 1}: {lines[i]}"
    return None


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("test")
    ap.add_argument("--llmopt", required=True)
    ap.add_argument("--plugin", default="")
    ap.add_argument("--tmp", default="/tmp/llmopt-text")
    ap.add_argument("--check-stdin", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--check-prefix", default="CHECK", help="directive prefix (like FileCheck)")
    args = ap.parse_args()
    if args.check_stdin:
        err = check(args.test, sys.stdin.read(), args.check_prefix)
        if err:
            print(f"{args.test}: {err}", file=sys.stderr)
            return 1
        return 0
    runs = [m.group(1).strip() for m in
            (re.search(r"RUN:(.*)$", l) for l in open(args.test, encoding="utf-8")) if m]
    if not runs or not any("%check" in r for r in runs):
        print(f"{args.test}: needs RUN: lines, at least one piping into %check", file=sys.stderr)
        return 1
    os.makedirs(args.tmp, exist_ok=True)
    # The folder's name too: text/cli/errors.llir and text/distill/errors.llir run in
    # parallel under ctest and must not share scratch files.
    parent = os.path.basename(os.path.dirname(os.path.abspath(args.test)))
    base = os.path.join(args.tmp, f"{parent}_{os.path.basename(args.test)}")
    checker = f"{sys.executable} {os.path.abspath(__file__)} --check-stdin --llmopt x {args.test}"
    subs = {"%llmopt": args.llmopt, "%plugin": args.plugin, "%check": checker,
            "%onnxtestdata": "/usr/share/libonnx-testdata/data", "%s": args.test, "%t": base}
    for run in runs:
        cmd = run
        for k in sorted(subs, key=len, reverse=True):
            cmd = cmd.replace(k, subs[k])
        expect_fail = False
        if cmd.startswith("not "):
            expect_fail, cmd = True, cmd[4:]
        print(f"RUN: {cmd}")
        # Each pipeline stage's status is checked: under `not` the first stage must
        # exit 1 and the rest 0; otherwise every stage must exit 0.
        status_file = base + ".status"
        subprocess.run(["bash", "-c", cmd + f'\necho "${{PIPESTATUS[@]}}" > {status_file}'])
        codes = [int(c) for c in open(status_file).read().split()]
        want = ([1] if expect_fail else [0]) + [0] * (len(codes) - 1)
        if codes != want:
            print(f"pipeline exit statuses {codes}, expected {want}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
