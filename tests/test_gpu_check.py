"""``benchmarks/gpu_check.py --quick`` as it runs without a GPU, so the GPU proof cannot rot.

It compiles every Triton kernel for sm_90, checks each against its reference on the
interpreter, runs the proxy and sensitivity code once at toy sizes, times nothing and
says so; ``--cpu`` makes it take that path on a GPU machine too.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_gpu_check_quick_without_a_gpu(tmp_path):
    table = tmp_path / "gpu_dispatch.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "AUTOPRUNE_GPU_TABLE": str(table)}
    env.pop("TRITON_INTERPRET", None)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--cpu", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "nothing was timed on a GPU" in done.stdout
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["ok"] and report["compile"] and report["correctness"]
    assert {r["kernel"] for r in report["correctness"]} == {"pointwise", "depthwise", "bn_act"}
    assert {r["precision"] for r in report["correctness"]} == {"fp32", "tf32", "fp16"}
    assert all(r["ok"] and r["target"] == "cuda sm_90" for r in report["compile"])
    assert report["ops"] == [] and report["telemetry"] == {}
    for row in report["proxy"] + report["sensitivity"]:  # the code ran; nothing was timed
        assert not [k for k in row if k.endswith("_error")], row
        assert all(v is None for k, v in row.items() if k.endswith("_s")), row
    assert report["sensitivity"][0]["max_delta_diff"] == 0  # naive, cached and fused (torch kernels)
    assert report["sensitivity"][0]["kernels"] == "torch" and "fused_s" in report["sensitivity"][0]
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "not measured (no GPU)" in markdown and "FAIL" not in markdown
    assert not table.exists()  # only a GPU run writes the dispatch table


def _load_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_report_makes_the_dispatch_table_and_markdown():
    """The GPU-only branches, on a made-up report: Triton where its geometric-mean speedup > 1."""
    gpu_check = _load_script()
    op = {"shape": "s", "triton_ms": 1.0, "cudnn_ms": 1.0}
    report = {
        "quick": False,
        "machine": {"device": "NVIDIA H200", "torch": "t", "triton": "t", "when": "now"},
        "statement": "Timed on this GPU.",
        "compile": [{"kernel": "pointwise fp32 mask=True", "target": "cuda sm_90", "ok": True, "seconds": 1}],
        "correctness": [],
        "ops": [
            {**op, "op": "pointwise", "dtype": "float16", "speedup": 2.0},
            {**op, "op": "pointwise", "dtype": "float16", "speedup": 0.8},
            {**op, "op": "pointwise", "dtype": "float32", "speedup": 0.9},
            {**op, "op": "bn_act", "dtype": "float32", "speedup": 1.5},
        ],
        "proxy": [
            {"model": "a", "masked_triton_s": 0.5, "masked_torch_s": 0.7, "sliced_s": 0.6},
            {"model": "b", "masked_triton_s": None, "masked_torch_s": 0.2, "sliced_s": 0.3},
        ],
        "sensitivity": [
            {
                "model": "m",
                "images": 8,
                "naive_s": 2.0,
                "cached_s": 1.0,
                "fused_s": 0.5,
                "max_delta_diff": 0.0,
            }
        ],
        "telemetry": {"nvml": True, "gpu_util_mean": 90.0},
    }
    table = gpu_check.dispatch_table(report)
    assert table["device_name"] == "NVIDIA H200"
    assert table["ops"] == {
        "pointwise": {"float16": "triton", "float32": "torch"},
        "bn_act": {"float32": "triton"},
    }
    assert table["proxy"] == {"prefer_masked": True}
    report["proxy"][1]["sliced_s"] = 0.1
    assert gpu_check.dispatch_table(report)["proxy"] == {"prefer_masked": False}
    markdown = gpu_check.markdown(report)
    assert "| pointwise | s | float16 | 1.000 | 1.000 | 2.00× |" in markdown
    assert "not measured" not in markdown.split("Search proxy")[0]
    assert "| m | 8 | 2.00 | 1.00 | 0.50 | 0 |" in markdown  # naive, cached, fused
