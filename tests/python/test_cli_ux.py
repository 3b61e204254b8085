"""The llmopt CLI's user-facing output: --report (per-layer table), --report-json FILE,
--report-plot FILE.svg, progress on stderr (bars on a terminal, plain lines otherwise),
--quiet and -v, and docs/cli.md against --help.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD = Path(os.environ.get("LLMOPT_BUILD", REPO / "build"))
LLMOPT = BUILD / "bin" / "llmopt"

pytestmark = pytest.mark.skipif(not LLMOPT.exists(), reason=f"{LLMOPT} not built")

GPTQ = "quant-int4<method=gptq;block=32>"
CALIB = ["--calib-samples", "3", "--calib-seqlen", "16", "--threads", "1"]


@pytest.fixture(scope="module")
def ids(tmp_path_factory) -> Path:
    """Token ids for calibration (the tiny Llama's vocabulary is 256)."""
    p = tmp_path_factory.mktemp("calib") / "calib.ids"
    p.write_text(" ".join(str((i * 37 + 11) % 256) for i in range(48)) + "\n")
    return p


def run(*args, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(LLMOPT), *map(str, args)], capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"llmopt {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


def test_report_table_lists_every_weight(llama, tmp_path):
    out = run(llama, "-passes=quant-int4<block=32>", "--report", "-o", tmp_path / "q.onnx").stdout
    table = out[out.index("layers: "):out.index("nodes: ")]
    header = table.splitlines()[1].split()
    assert header == ["name", "shape", "format", "bits", "sparsity", "bytes"]  # no data: no error column
    rows = {line.split()[0]: line for line in table.splitlines()[2:]}
    proj = [r for n, r in rows.items() if "q_proj" in n or "wq" in n]
    assert proj and "int4 sym block 32" in proj[0]
    # block 32 with one f32 scale per block: 4 + 32/32 = 5 bits per weight
    assert re.search(r"int4 sym block 32\s+5\.00", proj[0])
    assert "wrote " in out


def test_report_json_file_and_calibrated_errors(llama, ids, tmp_path):
    rj = tmp_path / "r.json"
    proc = run(llama, f"-passes={GPTQ}", "--calib", ids, *CALIB, "--report-json", rj,
               "-o", tmp_path / "q.onnx")
    assert proc.stdout == ""  # the JSON went to the file only
    r = json.loads(rj.read_text())
    assert r["pipeline"].startswith("quant-int4") and r["output"]["bytes"] > 0
    assert r["bits_per_parameter"] < r["before"]["bytes"] * 8 / r["parameters"]
    quantized = [l for l in r["layers"] if l["format"].startswith("int4")]
    assert quantized, r["layers"]
    for l in quantized:
        assert 0 < l["error"] < 1, l  # GPTQ's relative output error on the calibration data
        assert l["bits"] == pytest.approx(5.0)
    assert any(l["error"] is None for l in r["layers"])  # f32 embedding: not measured


def test_report_measures_data_free_passes_when_data_is_given(llama, ids, tmp_path):
    """RTN measures nothing itself: with --calib the report measures its weights against
    the original model; GPTQ, which minimises that error, must come out lower."""
    def errors(pipeline):
        rj = tmp_path / "e.json"
        run(llama, f"-passes={pipeline}", "--calib", ids, *CALIB, "--report-json", rj, "--quiet")
        return [l["error"] for l in json.loads(rj.read_text())["layers"] if l["format"].startswith("int4")]

    rtn, gptq = errors("quant-int4<block=32>"), errors(GPTQ)
    assert len(rtn) == len(gptq) == 28 and all(e > 0 for e in rtn)
    assert sum(gptq) < sum(rtn)
    # Without data there is nothing to measure with.
    r = json.loads(run(llama, "-passes=quant-int4<block=32>", "--report=json").stdout)
    assert all(l["error"] is None for l in r["layers"])


def test_report_table_shows_sparsity_and_error(llama, ids, tmp_path):
    out = run(llama, "-passes=prune-sparsegpt<sparsity=0.5>", "--calib", ids, *CALIB,
              "--report").stdout
    table = out[out.index("layers: "):out.index("nodes: ")]
    assert table.splitlines()[1].split()[-1] == "error"
    pruned = [l for l in table.splitlines()[2:] if l.split()[-1] != "-"]
    assert pruned
    for line in pruned:
        assert re.search(r" 50\.0% ", line), line


def test_report_plot_is_svg(llama, ids, tmp_path):
    svg = tmp_path / "layers.svg"
    run(llama, f"-passes={GPTQ}", "--calib", ids, *CALIB, "--report-plot", svg, "--quiet")
    root = ET.parse(svg).getroot()
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    rects = root.findall(".//{http://www.w3.org/2000/svg}rect")
    bits = [r for r in rects if r.get("class") == "bits"]
    errors = [r for r in rects if r.get("class") == "error"]
    layers = json.loads(run(llama, "--report=json").stdout)["layers"]
    assert len(bits) == len(layers)
    assert 0 < len(errors) < len(layers)


def test_progress_plain_lines_off_a_terminal(llama, ids, tmp_path):
    err = run(llama, f"-passes={GPTQ}", "--calib", ids, *CALIB, "-o", tmp_path / "q.onnx").stderr
    assert re.search(r"^calibration \(Hessians\): 3/3 windows", err, re.M), err
    assert re.search(r"^gptq: \d+/\d+ weights", err, re.M), err
    assert "\r" not in err and "\x1b" not in err


def test_progress_bar_on_a_terminal(llama, ids, tmp_path):
    main, sub = pty.openpty()
    proc = subprocess.Popen([str(LLMOPT), str(llama), "-passes=prune-sparsegpt", "--calib", str(ids),
                             *CALIB, "-o", str(tmp_path / "p.onnx")], stderr=sub,
                            stdout=subprocess.DEVNULL)
    os.close(sub)
    chunks = []
    while True:
        try:
            data = os.read(main, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    assert proc.wait() == 0
    os.close(main)
    err = b"".join(chunks).decode()
    assert "\r" in err and "\x1b[K" in err
    assert re.search(r"prune-sparsegpt \[#+\] \d+/\d+ weights", err), err
    assert re.search(r"calibration \(Hessians\) \[#{24}\] 3/3 windows", err), err


def test_quiet_and_verbose(llama, ids, tmp_path):
    quiet = run(llama, f"-passes={GPTQ}", "--calib", ids, *CALIB, "--quiet", "-o", tmp_path / "q.onnx")
    assert quiet.stderr == ""
    loud = run(llama, "-passes=quant-int4", "-v", "-o", tmp_path / "v.onnx")
    assert re.search(r"^llmopt: loaded .*tiny-llama.onnx: \d+ nodes", loud.stderr, re.M)
    assert re.search(r"^llmopt: running quant-int4$", loud.stderr, re.M)
    assert re.search(r"^llmopt: wrote .*v.onnx \(\d+ bytes", loud.stderr, re.M)
    # errors still print under --quiet
    bad = run(llama, "-passes=no-such-pass", "--quiet", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("llmopt: error:")


def test_docs_cli_md_matches_help():
    """Every flag --help prints is in docs/cli.md, and the doc names no flag llmopt lacks."""
    help_flags = set(re.findall(r"^\s+(-{1,2}[a-z][a-z-]*)", run("--help").stdout, re.M))
    doc = (REPO / "docs" / "cli.md").read_text()
    table = [l for l in doc.splitlines() if l.startswith("| `-")]
    doc_flags = set(re.findall(r"`(-{1,2}[a-z][a-z-]*)", "\n".join(table)))
    missing = {f for f in help_flags if f not in doc_flags and f.lstrip("-") not in
               {d.lstrip("-") for d in doc_flags}}
    assert not missing, f"docs/cli.md lacks {sorted(missing)}"
    extra = {d for d in doc_flags if d.lstrip("-") not in {f.lstrip("-") for f in help_flags}
             and d not in ("-h", "-v", "-q")}
    assert not extra, f"docs/cli.md documents flags --help does not have: {sorted(extra)}"
