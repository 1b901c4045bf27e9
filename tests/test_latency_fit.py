"""The whole-network fit of a latency table (autoprune.latency.fit)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from scipy.optimize import nnls

import autoprune
from autoprune.budget import project_to_budget
from autoprune.errors import AutopruneError
from autoprune.jobs.latency import search_latency_table
from autoprune.latency import KINDS, LatencyModel, LatencyTable, allocator, build_latency_table, fit_table
from autoprune.latency import fit as fit_module
from autoprune.latency.fit import MIN_SHARE, fit_plans, nonnegative_least_squares
from autoprune.latency.measure import OrtModule, Runner
from autoprune.prior import uniform_preferences


@pytest.fixture(scope="module")
def resnet20(resnet20_latency):
    return resnet20_latency


def test_nonnegative_least_squares_matches_scipy():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a = rng.normal(size=(9, 4))
        b = rng.normal(size=9)
        mine, theirs = nonnegative_least_squares(a, b), nnls(a, b)[0]
        assert np.all(mine >= 0)
        assert np.linalg.norm(a @ mine - b) == pytest.approx(np.linalg.norm(a @ theirs - b), abs=1e-9)


def test_fit_plans_start_dense_and_are_distinct(resnet20):
    _, _, space = resnet20
    plans = fit_plans(space, 8)
    assert np.array_equal(plans[0], space.max_counts)
    assert len(np.unique(plans, axis=0)) == len(plans) >= 6
    assert np.all(plans <= space.max_counts) and np.all(plans >= space.min_counts)


def _synthetic(table: LatencyTable) -> LatencyTable:
    """``table`` with deterministic times (proportional to in x out width per kind, a little
    constant cost per layer) instead of measured ones, so the fit's inputs do not vary."""
    per_unit = {"conv1x1": 1e-4, "convkxk": 4e-4, "depthwise": 1e-3, "linear": 1e-6}
    shapes = {}
    for key, shape in table.shapes.items():
        unit = per_unit[shape.spec["kind"]]
        grid = np.outer(shape.ins, shape.outs) if not shape.tied else np.array([shape.outs], dtype=float)
        shapes[key] = replace(shape, ms=0.01 + unit * grid)
    return replace(table, shapes=shapes, layer_scale=0.9, remainder_ms=1.0)


def test_the_fit_recovers_known_scales_and_remainder(resnet20, monkeypatch):
    """On deterministic layer times (:func:`_synthetic`), whole networks that take 1.7 x their
    3x3 convs + 2.5 ms, the other kinds (too little time to fit in resnet20: two 1x1 shortcuts,
    the fc layer) at the table's layer_scale: the fit finds 1.7 and 2.5 (within the anchor's
    pull, 1 %) and the fitted model predicts plans it was not fitted on within 0.5 %."""
    model, measured_table, space = resnet20
    table = _synthetic(measured_table)
    unfitted = LatencyModel(space, table)
    dense = unfitted.kind_ms(space.max_counts)[0]
    free = {k for k, ms in zip(KINDS, dense, strict=True) if ms >= MIN_SHARE * dense.sum()}
    assert free == {"convkxk"}
    kept = table.layer_scale  # what the kinds with too little time keep
    truth = {k: 1.7 if k in free else kept for k in KINDS}

    def fake_time(table, model, space, channels, rounds):
        return 2.5 + unfitted.kind_ms(channels) @ np.array([truth[k] for k in KINDS])

    monkeypatch.setattr(fit_module, "_time_plans", fake_time)
    fitted = fit_table(table, model, space)
    fit = fitted.fit
    assert fit.scale["convkxk"] == pytest.approx(1.7, rel=0.01)
    assert fit.remainder_ms == pytest.approx(2.5, rel=0.01)
    assert fit.error_after < 0.002
    assert all(fit.scale[k] == kept for k in KINDS if k not in free)
    others = space.channels_from_ratios(np.random.default_rng(5).uniform(0.3, 1, (6, len(space.groups))))
    np.testing.assert_allclose(
        LatencyModel(space, fitted).latency_ms(others), fake_time(None, None, None, others, 0), rtol=0.005
    )


def test_a_fitted_table_round_trips_and_stays_monotone(resnet20, tmp_path):
    model, table, space = resnet20
    fitted = fit_table(table, model, space, plans=4, rounds=1)
    fit = fitted.fit
    assert fit.plans == len(fit.measured_ms) >= 4 and all(m > 0 for m in fit.measured_ms)
    assert all(s >= 0 for s in fit.scale.values()) and fit.remainder_ms >= 0
    again = LatencyTable.load(fitted.save(tmp_path / "lut.json"))
    assert again.to_dict() == fitted.to_dict() and again.fit == replace(
        fit,
        measured_ms=tuple(round(m, 5) for m in fit.measured_ms),
        error_before=round(fit.error_before, 5),
        error_after=round(fit.error_after, 5),
        scale={k: round(v, 6) for k, v in fit.scale.items()},
        remainder_ms=round(fit.remainder_ms, 5),
    )
    lm = LatencyModel(space, again)
    per_kind = lm.kind_ms(fit_plans(space, 4))
    expected = again.fit.remainder_ms + per_kind @ np.array([again.fit.scale[k] for k in KINDS])
    np.testing.assert_array_equal(lm.latency_ms(fit_plans(space, 4)), expected)
    full = space.max_counts
    for gi in range(len(space.groups)):  # one group narrower: never slower
        smaller = full.copy()
        smaller[gi] = space.groups[gi].min_keep
        assert lm.latency_ms(smaller)[0] <= lm.latency_ms(full)[0]
    budget = float(1 + lm.ratio(space.channels_from_ratios(np.full((1, len(space.groups)), 0.3)))[0]) / 2
    projected = project_to_budget(
        space, uniform_preferences(len(space.groups)), latency=budget, latency_model=lm
    )
    assert projected.latency_ratio <= budget


def test_a_fit_with_a_negative_or_unknown_scale_is_refused(resnet20):
    _, table, space = resnet20
    data = replace(table, fit=None).to_dict()
    data["fit"] = {"scale": {"convkxk": -1.0}, "remainder_ms": 0.0, "plans": 3}
    with pytest.raises(AutopruneError, match="non-negative"):
        LatencyTable.from_dict(data)
    data["fit"] = {"scale": {"attention": 1.0}, "remainder_ms": 0.0, "plans": 3}
    with pytest.raises(AutopruneError, match="malformed"):
        LatencyTable.from_dict(data)


def test_a_table_made_with_another_allocator_is_refused(resnet20, monkeypatch):
    _, table, _ = resnet20
    assert table.versions["allocator"] == allocator()  # as this process runs
    table.check_target("cpu")
    monkeypatch.setenv("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")
    with pytest.raises(AutopruneError, match="allocator"):
        table.check_target("cpu")
    table.check_target("cpu", force=True)
    monkeypatch.delenv("LD_PRELOAD")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "33554432")
    assert "MALLOC_MMAP_THRESHOLD_=33554432" in allocator()


def test_latency_table_fit_plans_from_the_cli(run_cli, tmp_path):
    common = ["latency-table", "--arch", "resnet20", "--batch-size", "1", "--threads", "1", "--rounds", "1"]
    done = run_cli(*common, "--fit-plans", "3", "--out", tmp_path / "lut.json")
    assert done.code == 0, done.err
    table = LatencyTable.load(tmp_path / "lut.json")
    assert table.fit is not None and table.fit.plans == len(table.fit.measured_ms) >= 3
    assert "fitted to" in done.out
    bad = run_cli(*common, "--fit-plans", "1", "--out", tmp_path / "bad.json")
    assert bad.code == 2 and "--fit-plans" in bad.err and not (tmp_path / "bad.json").exists()


def test_an_onnxruntime_table_times_the_exported_layers(tmp_path):
    """--runtime onnxruntime: layers and the whole network run through ONNX Runtime (an exported
    module computes what the torch one does), the table says so and a torch target refuses it."""
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 3, padding=1, bias=False), torch.nn.BatchNorm2d(16))
    module[1].running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 8, 8, 8)
    exported = OrtModule(module.eval(), x, threads=1)
    np.testing.assert_allclose(exported(x.numpy())[0], module(x).detach().numpy(), rtol=1e-4, atol=1e-5)

    runner = Runner(torch.device("cpu"), 2, 1, "onnxruntime")
    spec = {"kind": "convkxk", "cin": 8, "cout": 16, "kernel": [3, 3], "stride": [1, 1],
            "padding": [1, 1], "dilation": [1, 1], "groups": 1, "bias": False, "hw": [8, 8],
            "bn": True, "act": ["relu"]}  # fmt: skip
    layer, inputs = runner.build(spec, 8, 12)
    assert isinstance(layer, OrtModule) and inputs.shape == (2, 8, 8, 8)
    assert layer(inputs)[0].shape == (2, 12, 8, 8) and runner.time([(layer, inputs)])[0] > 0

    model = autoprune.create_model("resnet20", 10, 32).eval()
    table = build_latency_table(
        model, 32, arch="resnet20", batch_size=1, threads=1, rounds=1, max_points=2, runtime="onnxruntime"
    )
    assert table.runtime == "onnxruntime" and "onnxruntime" in table.versions and table.dense_ms > 0
    table.check_target("cpu", runtime="onnxruntime")
    with pytest.raises(AutopruneError, match="with onnxruntime"):
        table.check_target("cpu")
    path = table.save(tmp_path / "ort.json")  # a search predicts for the runtime its table was timed with
    given, where = search_latency_table(
        model, "resnet20", 32, tmp_path, given=path, device=torch.device("cpu"), batch_size=1
    )
    assert given.runtime == "onnxruntime" and where == path
    with pytest.raises(AutopruneError, match="on the CPU"):
        Runner(torch.device("cuda"), 1, 1, "onnxruntime")
