"""The benchmark harness produces well-formed rows. No timing assertions: performance lives in
bench/, never in tests."""
import datetime
import itertools
import json
import math

import pytest
import torch

from ganfast import backends, bench
from ganfast.bench import COMPILE, EAGER, MODES, ROW_FIELDS, BenchCase
from ganfast.bench.bias_act import SPEC

TINY = BenchCase("test", "tiny", (2, 3, 4, 4), {"act": "lrelu", "alpha": 0.2, "gain": math.sqrt(2), "clamp": 256.0})


def _run(tmp_path, **kw):
    kw = {"device": "cpu", "cases": [TINY], "warmup": 0, "repeats": 2, "compile": False, "out_dir": str(tmp_path), **kw}
    return bench.run_bench(SPEC, **kw)


def _by(rows, backend, mode):
    (row,) = [r for r in rows if r["backend"] == backend and r["mode"] == mode]
    return row


# 'reference' runs everywhere; 'cpu' where the extension is built; 'cuda' never on CPU tensors,
# so it must come back as a skipped row.
BACKENDS = ("reference", "cpu", "cuda")
CPU_EXT_WHY_NOT = backends.get_backend("cpu").unavailable_reason()


@pytest.fixture(scope="module")
def tiny_rows(tmp_path_factory):
    out = tmp_path_factory.mktemp("results")
    rows = bench.run_bench(SPEC, device="cpu", cases=[TINY], warmup=0, repeats=2, compile=False,
                           modes=MODES, backends=BACKENDS, out_dir=str(out))
    return rows, out


def test_rows_have_every_field_in_order(tiny_rows):
    rows, _ = tiny_rows
    assert len(rows) == len(MODES) * (1 + len(BACKENDS))  # eager + each backend, per mode
    for row in rows:
        assert tuple(row) == ROW_FIELDS
        assert row["op"] == "bias_act" and row["device"] == "cpu" and row["dtype"] == "float32"
        assert row["shape"] == [2, 3, 4, 4] and row["shape_label"] == "tiny" and row["shape_set"] == "test"
        assert row["machine"]["cpu_count"] >= 1 and row["machine"]["platform"]
        assert row["torch"] == torch.__version__ and row["ganfast"]
        assert isinstance(row["git_sha"], str) and row["git_sha"]
        assert datetime.datetime.fromisoformat(row["timestamp"]).utcoffset() == datetime.timedelta(0)
        assert row["run_id"] == rows[0]["run_id"]


def test_ok_rows_are_consistent(tiny_rows):
    rows, _ = tiny_rows
    ok_backends = (EAGER, "reference") + (("cpu",) if CPU_EXT_WHY_NOT is None else ())
    for mode in MODES:
        for backend in ok_backends:
            row = _by(rows, backend, mode)
            assert row["status"] == "ok", row["reason"]
            assert row["reason"] is None and row["repeats"] == 2 and row["warmup"] == 0
            assert 0 < row["p20_ms"] <= row["median_ms"] <= row["p80_ms"]
            assert row["bytes_moved"] == SPEC.bytes_moved(TINY, mode, torch.float32)
            assert row["gbps"] == pytest.approx(row["bytes_moved"] / (row["median_ms"] * 1e-3) / 1e9, rel=1e-3)
            eager = _by(rows, EAGER, mode)
            assert row["ratio_vs_eager"] == pytest.approx(eager["median_ms"] / row["median_ms"], rel=1e-3)
            assert row["ratio_vs_compile"] is None  # compile=False: no compiled baseline
            assert row["compile_time_s"] is None and row["first_call_s"] > 0
            assert row["peak_mem_mb"] is None and "not measured" in row["peak_mem_method"]
        assert _by(rows, EAGER, mode)["ratio_vs_eager"] == 1.0


def test_unavailable_backend_is_a_skipped_row_with_reason(tiny_rows):
    rows, _ = tiny_rows
    skipped = ["cuda"] + (["cpu"] if CPU_EXT_WHY_NOT is not None else [])
    for mode, name in itertools.product(MODES, skipped):
        row = _by(rows, name, mode)
        assert row["status"] == "skipped"
        assert row["error_type"] == "ganfast.backends.BackendNotSupported"
        assert row["reason"].startswith("BackendNotSupported: ") and f"backend '{name}'" in row["reason"]
        # no NaN stand-ins: the timing fields are absent (null), not numbers
        for field in ("median_ms", "p20_ms", "p80_ms", "gbps", "ratio_vs_eager", "ratio_vs_compile"):
            assert row[field] is None


def test_rows_are_appended_as_json_lines(tiny_rows, tmp_path):
    rows, out = tiny_rows
    path = out / "bias_act.jsonl"
    assert bench.load_rows(str(path)) == json.loads(json.dumps(rows))
    assert "NaN" not in path.read_text()
    bench.append_rows(str(path), rows[:2])  # appending keeps what was there
    assert len(bench.load_rows(str(path))) == len(rows) + 2


def test_table_lists_every_backend_and_the_skip_reason(tiny_rows):
    rows, _ = tiny_rows
    text = bench.format_case_table(rows)
    for name in (EAGER,) + BACKENDS:
        assert name in text
    assert "skipped: BackendNotSupported" in text and "2x-bwd" in text


def test_latest_rows_keeps_the_newest_per_key(tiny_rows):
    rows, _ = tiny_rows
    older = [dict(r, timestamp="2000-01-01T00:00:00+00:00", median_ms=-1.0) for r in rows]
    latest = bench.latest_rows(older + rows)
    assert len(latest) == len(rows) and all(r["median_ms"] != -1.0 for r in latest)


@pytest.mark.slow
def test_compile_reference_row(tmp_path):
    # torch.compile on CPU needs a C++ compiler; its compile time is recorded apart from the timing.
    rows = _run(tmp_path, compile=True, modes=("forward",))
    compiled = _by(rows, COMPILE, "forward")
    if compiled["status"] != "ok":
        pytest.skip(f"torch.compile cannot run here: {compiled['reason']}")
    assert compiled["compile_time_s"] > 0
    assert compiled["ratio_vs_compile"] == 1.0
    for row in rows:
        if row["status"] == "ok":
            assert row["ratio_vs_compile"] == pytest.approx(compiled["median_ms"] / row["median_ms"], rel=1e-3)
        else:
            assert row["ratio_vs_compile"] is None


def test_make_step_rejects_unknown_mode():
    with pytest.raises(ValueError, match="mode must be one of"):
        bench.harness.make_step("sideways", lambda x: x, (torch.zeros(1),), torch.zeros(1))


def test_get_spec_names_known_ops():
    assert bench.get_spec("bias_act") is SPEC
    with pytest.raises(ValueError, match="known ops: bias_act, adain_noise"):
        bench.get_spec("no_such_op")


def test_bias_act_shape_sets_are_the_real_layers():
    def shapes(name):
        return [c.shape for c in SPEC.cases(name, batch=4)]

    assert shapes("stylegan2-256") == [(4, 512, 4, 4), (4, 512, 8, 8), (4, 512, 16, 16), (4, 512, 32, 32),
                                       (4, 256, 64, 64), (4, 128, 128, 128), (4, 64, 256, 256)]
    assert shapes("stylegan2-1024")[-5:] == [(4, 512, 64, 64), (4, 256, 128, 128), (4, 128, 256, 256),
                                             (4, 64, 512, 512), (4, 32, 1024, 1024)]
    assert shapes("biggan-128") == [(4, 1536, 4, 4), (4, 1536, 8, 8), (4, 768, 16, 16), (4, 384, 32, 32),
                                    (4, 192, 64, 64), (4, 96, 128, 128)]
    for name in SPEC.shape_sets:
        quick = SPEC.cases(name, batch=1, quick=True)
        assert 0 < len(quick) < len(SPEC.cases(name, batch=1))
    with pytest.raises(ValueError, match="known: stylegan2-256"):
        SPEC.cases("stylegan3", batch=1)


def test_bias_act_bytes_model():
    n, c = 2 * 3 * 4 * 4, 3
    assert SPEC.bytes_moved(TINY, "forward", torch.float32) == (2 * n + c) * 4
    assert SPEC.bytes_moved(TINY, "backward", torch.float16) == (3 * n + 2 * c) * 2
    assert SPEC.bytes_moved(TINY, "forward+backward", torch.float32) == (5 * n + 3 * c) * 4


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_rows_record_peak_memory_and_gpu(tmp_path):
    rows = _run(tmp_path, device="cuda", modes=("forward", "forward+backward"), backends=("reference", "triton", "cuda"))
    eager = _by(rows, EAGER, "forward")
    assert eager["status"] == "ok" and eager["peak_mem_mb"] >= 0
    assert "max_memory_allocated" in eager["peak_mem_method"]
    assert eager["machine"]["gpu"] == torch.cuda.get_device_name()
    for row in rows:  # every backend either ran or says why not
        assert (row["status"] == "ok") == (row["reason"] is None)
        if row["status"] == "ok":
            assert 0 < row["p20_ms"] <= row["median_ms"] <= row["p80_ms"]


def test_adain_noise_spec_runs_every_mode_and_has_the_issue_shapes(tmp_path):
    from ganfast.bench.adain_noise import SPEC as ADAIN
    shapes = [c.shape for c in ADAIN.cases("stylegan-256", batch=ADAIN.default_batch)]
    # batch 8; 512 channels at 8..32, 256 at 64, 128 at 128 (the issue's benchmark layers)
    assert shapes[1:6] == [(8, 512, 8, 8), (8, 512, 16, 16), (8, 512, 32, 32), (8, 256, 64, 64), (8, 128, 128, 128)]
    assert [c.shape for c in ADAIN.cases("stylegan-1024", batch=1)][-1] == (1, 16, 1024, 1024)
    tiny = BenchCase("test", "tiny", (2, 3, 5, 4), ADAIN.shape_sets["stylegan-256"](1)[0].params)
    rows = bench.run_bench(ADAIN, device="cpu", cases=[tiny], warmup=0, repeats=2, compile=False,
                           modes=MODES, backends=("reference", "cpu"), out_dir=str(tmp_path))
    ok = ("reference",) + (("cpu",) if CPU_EXT_WHY_NOT is None else ())
    for mode in MODES:
        for backend in (EAGER,) + ok:
            assert _by(rows, backend, mode)["status"] == "ok", (backend, mode)
    n = 2 * 3 * 5 * 4
    assert ADAIN.bytes_moved(tiny, "forward", torch.float16) == (2 * n + 2 * 5 * 4) * 2 + 4 * (4 * 6 + 6)


@pytest.mark.parametrize("op, modes", [("spectral_norm", ("forward", "backward", "forward+backward")),
                                       ("power_iteration", ("forward",)),
                                       ("conditional_batch_norm", ("forward", "backward", "forward+backward"))])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_biggan_specs_run_on_a_tiny_case_and_have_the_issue_shapes(tmp_path, op, modes, dtype):
    # bf16 too: torch's own SN baseline keeps u, v in W's dtype (an H200 run found it failing there).
    spec = bench.get_spec(op)
    cases = spec.cases(spec.default_shape_set, batch=spec.default_batch)
    if op == "spectral_norm":   # the issue's SNConv2d layers: 1536 -> 1536 at 8x8 batch 16, 384 -> 192 at 64x64
        assert [(c.shape, c.params["cout"]) for c in cases] == [((16, 1536, 8, 8), 1536), ((16, 384, 64, 64), 192)]
        tiny = BenchCase("test", "tiny", (2, 5, 6, 7), dict(cout=3, kernel=3))
    elif op == "power_iteration":
        assert cases[0].shape == (1536, 1536 * 9)
        tiny = BenchCase("test", "tiny", (5, 27), {})
    else:                       # CBN at 64x64x192, batch 32
        assert (32, 192, 64, 64) in [c.shape for c in cases]
        tiny = BenchCase("test", "tiny", (3, 5, 4, 6), dict(act="relu"))
    rows = bench.run_bench(spec, device="cpu", dtype=dtype, cases=[tiny], warmup=0, repeats=2, compile=False,
                           modes=modes, backends=("reference", "cpu"), out_dir=str(tmp_path))
    ok = ("reference",) + (("cpu",) if CPU_EXT_WHY_NOT is None else ())
    for mode in modes:
        for backend in (EAGER,) + ok:
            row = _by(rows, backend, mode)
            assert row["status"] == "ok", (backend, mode, row["reason"])
            assert row["bytes_moved"] > 0


def _bench_script(name: str):
    """bench/<name>.py as a module (the bench scripts are not a package)."""
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench", f"{name}.py")
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_model_bench_writes_rows_for_every_step(tmp_path):
    mod = _bench_script("models")
    out = tmp_path / "models.jsonl"
    tiny = "stylegan2-32:resolution=8,channel_base=64,channel_max=8,z_dim=8,w_dim=8,mapping_layers=1@4"
    assert mod.main(["--presets", tiny, "--quick", "--no-compile", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert {(r["step"], r["backend"]) for r in rows} == {(s, b) for s in mod.STEPS for b in ("eager-reference", "ganfast")}
    for r in rows:
        assert r["median_ms"] > 0 and r["p20_ms"] <= r["median_ms"] <= r["p80_ms"] and r["git_sha"] is not None
        assert (r["vs_eager_reference"] is None) == (r["backend"] == "eager-reference")


def test_metric_scales_bench_orders_the_degradations(tmp_path):
    # bench/metric_scales.py on 2 x 60 test images (the shipped subset is enough): every kind gets a
    # row, and noise is far from real where real is close to real.
    mod = _bench_script("metric_scales")
    out = tmp_path / "scales.jsonl"
    assert mod.main(["--n", "60", "--metrics", "swd,fid", "--out", str(out)]) == 0
    rows = {r["kind"]: r for r in map(json.loads, out.read_text().splitlines())}
    assert set(rows) == {"real", "blur3", "noise", "one_class"}
    real, noise, blur = (rows[k]["metrics"] for k in ("real", "noise", "blur3"))
    assert noise["swd_avg"] > 3 * real["swd_avg"] and noise["fid"] > 3 * real["fid"]
    assert blur["swd_32"] > 2 * real["swd_32"]                      # blur shows at the fine level
    assert rows["real"]["n"] == 60 and rows["real"]["git_sha"] is not None


def test_overhead_bench_writes_rows_for_every_pass_and_variant(tmp_path):
    # bench/overhead.py on two cases (an op with a double backward, a module), a handful of calls:
    # every pass gets ganfast-auto, ganfast-reference and eager-composite rows, plus the torch.add unit.
    mod = _bench_script("overhead")
    out = tmp_path / "overhead.jsonl"
    threads = torch.get_num_threads()
    assert mod.main(["--ops", "bias_act", "BatchNormAct2d", "--repeats", "2", "--calls", "3", "--warmup", "1",
                     "--out", str(out), "--label", "test"]) == 0
    assert torch.get_num_threads() == threads                  # main restores the caller's thread count
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for name in ("bias_act", "BatchNormAct2d"):
        case = mod.CASES[name]
        assert case.passes == mod.PASSES
        got = {(r["pass"], r["variant"]) for r in rows if r["op"] == name}
        assert got == {(p, v) for p in mod.PASSES for v in (mod.AUTO, mod.REF, mod.COMPOSITE)} | {("fwd", mod.ADD)}
    add = {r["op"]: r["us_per_call"] for r in rows if r["variant"] == mod.ADD}
    composite = {(r["op"], r["pass"]): r["us_per_call"] for r in rows if r["variant"] == mod.COMPOSITE}
    for r in rows:
        assert r["us_per_call"] > 0 and len(r["us_batches"]) == 2 and r["us_per_call"] == min(r["us_batches"])
        assert r["ratio_to_add"] == pytest.approx(r["us_per_call"] / add[r["op"]])
        assert r["ratio_to_composite"] == pytest.approx(r["us_per_call"] / composite[(r["op"], r["pass"])])
        assert r["threads"] == 1 and r["device"] == "cpu" and r["dtype"] == "float32" and r["label"] == "test"
        assert r["composite_checked"] is True and r["calls"] == 3 and r["repeats"] == 2
        assert r["machine"]["torch_threads"] == 1 and r["torch"] == torch.__version__ and r["git_sha"]
        assert r["run_id"] == rows[0]["run_id"]
    assert {r["shape"] == [2, 8, 4, 4] for r in rows} == {True}
    assert {r["backend"] for r in rows if r["variant"] == mod.REF} == {"reference"}


def test_overhead_composite_check_catches_a_wrong_composite(monkeypatch, tmp_path):
    # The float64 check compares outputs, in-place state and gradients: a composite with the wrong
    # lrelu slope, or a batch norm with the wrong momentum (same output, other running statistics),
    # raises, and main() then writes no rows.
    import dataclasses
    mod = _bench_script("overhead")

    def with_composite(case, fn):
        def setup(*args, **kw):
            bound = case.setup(*args, **kw)
            bound.variants[mod.COMPOSITE] = dataclasses.replace(bound.variants[mod.COMPOSITE], fn=fn)
            return bound
        return dataclasses.replace(case, setup=setup)

    mod.check_composite(mod.CASES["bias_act"])      # the real composite passes
    slope = with_composite(mod.CASES["bias_act"],   # slope 0.1, not 0.2
                           lambda x, b: torch.nn.functional.leaky_relu(x + b[:, None, None], 0.1) * math.sqrt(2))
    with pytest.raises(AssertionError, match="bias_act: ganfast-auto and eager-composite differ in output"):
        mod.check_composite(slope)
    momentum = with_composite(mod.CASES["conditional_batch_norm"],    # momentum 0.2, not 0.1
                              lambda x, g, b, rm, rv: mod.cbn_composite(x, g, b, rm, rv, True, momentum=0.2))
    with pytest.raises(AssertionError, match="differ in state input3"):      # input 3: running_mean
        mod.check_composite(momentum)

    monkeypatch.setitem(mod.CASES, "bias_act", slope)
    out = tmp_path / "overhead.jsonl"
    with pytest.raises(AssertionError, match="bias_act"):
        mod.main(["--ops", "bias_act", "--repeats", "1", "--calls", "1", "--out", str(out)])
    assert not out.exists()


def test_default_candidates_collects_rows_from_a_run(tmp_path):
    """bench/default_candidates.py: a row per metric evaluation with the run's clock, FID / KID /
    SWD and class_acc; every candidate's command is a valid `ganfast train` line."""
    from ganfast.cli import build_parser, main as cli
    mod = _bench_script("default_candidates")
    run = tmp_path / "run"
    assert cli(["train", "--out", str(run), "--model", "ngf=4,ndf=4", "--kimg", "0.016", "--batch", "8",
                "--tick", "0.008", "--snap", "0.008", "--metrics-images", "20", "--no-progress",
                "--no-tensorboard"]) == 0
    out = tmp_path / "rows.jsonl"
    assert mod.main(["--collect", f"cdcgan-32={run}", "--out", str(out), "--threads", "1"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["kimg"] for r in rows] == [0.0, 0.008, 0.016]
    assert rows[0]["train_seconds"] == 0.0 and rows[-1]["train_seconds"] > 0
    assert all({"fid", "kid", "swd_avg", "class_acc"} <= set(r) and r["preset"] == "cdcgan-32" for r in rows)
    parser = build_parser()
    for name in mod.CANDIDATES:                # each command parses as `ganfast train` arguments
        argv = mod.command(name, tmp_path / name, 1.0, 1.0, "")
        parser.parse_args(argv[argv.index("train"):])
    with pytest.raises(SystemExit, match="unknown candidate"):
        mod.command("nope-32", tmp_path, 1.0, 1.0, "")
