"""bench/train_step.py writes well-formed rows: the phases of each model family, the iteration
formula of its recipe, the ratios, and the configurations the trainer refuses reported as skipped.
Tiny CPU runs (batch 2, one warm-up and one measured step); no timing assertions."""
import json

import pytest
import torch

from tests.test_bench import _bench_script

# The recipes as their codebases count one iteration (independent of the script's own derivation):
# StyleGAN2 lazy R1 every 16 D steps and path length every 4 G steps; BigGAN 2 D steps per G step.
WEIGHTS = {"stylegan2": {"D main": 1, "G main": 1, "D reg": 1 / 16, "G reg": 1 / 4, "EMA": 1},
           "biggan": {"D main": 2, "G main": 1, "EMA": 1}}
FORMULAS = {"stylegan2": "t(D main) + t(G main) + t(D reg) / 16 + t(G reg) / 4 + t(EMA)",
            "biggan": "2 * t(D main) + t(G main) + t(EMA)"}
# one thread: on a shared 2-core machine a second OpenMP thread waits for a busy core, 10x slower
TINY = ["--batch", "2", "--steps", "1", "--warmup", "1", "--amp", "none", "--label", "test", "--threads", "1"]


@pytest.fixture(scope="module")
def mod():
    return _bench_script("train_step")


def rows_of(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.parametrize("preset, family", [("biggan-32", "biggan"), ("stylegan2-32-fmnist", "stylegan2")])
def test_rows_per_family_with_ratios_and_skips(mod, monkeypatch, tmp_path, preset, family):
    # compile: torch.compile replaced by a recorder (a real CPU compile of these models takes minutes);
    # what is checked is that --ops compile builds TrainingConfig(compile=True) on the reference ops.
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: compiled.append(module) or module)
    out, threads = tmp_path / "train_step.jsonl", torch.get_num_threads()
    assert mod.main(["--preset", preset, *TINY, "--ops", "ganfast", "reference", "compile",
                     "--cuda-graphs", "both", "--out", str(out)]) == 0
    assert torch.get_num_threads() == threads                  # --threads 1 ran; the caller's count is back
    rows = rows_of(out)
    ok = {r["ops"]: r for r in rows if r["status"] == "ok"}
    skipped = {r["ops"]: r for r in rows if r["status"] == "skipped"}
    (summary,) = [r for r in rows if r["status"] == "summary"]
    # order: reference (the baseline), ganfast, the refused graphs configurations, compile last
    assert [(r.get("ops"), r["status"]) for r in rows] == [
        ("reference", "ok"), ("ganfast", "ok"), ("reference", "skipped"), ("ganfast", "skipped"),
        ("compile", "ok"), ("compile", "skipped"), (None, "summary")]
    assert set(ok) == {"reference", "ganfast", "compile"} and set(skipped) == {"reference", "ganfast", "compile"}
    assert all(r["cuda_graphs"] is False for r in ok.values()) and all(r["cuda_graphs"] for r in skipped.values())
    # graphs on a CPU and graphs with compile: the trainer's own reasons
    assert all("needs a CUDA device" in skipped[o]["reason"] for o in ("reference", "ganfast"))
    assert "cannot be combined with compile=True" in skipped["compile"]["reason"]
    # torch.compile took the compile trainer's G and D (TrainingConfig(compile=True)), on the reference ops
    gan = mod.gm.create(preset)
    assert [type(m) for m in compiled] == [type(gan.G), type(gan.D)]
    assert {getattr(m, "backend", "reference") for net in compiled for m in net.modules()} == {"reference"}
    weights = WEIGHTS[family]
    for ops, r in ok.items():
        assert r["family"] == family and r["preset"] == preset and r["device"] == "cpu" and r["device_name"]
        assert r["label"] == "test" and r["batch"] == 2 and r["steps"] == 1
        assert r["warmup"] == (mod.COMPILE_MIN_WARMUP if ops == "compile" else 1)     # compile: steady after 3
        assert list(r["phase_seconds"]) == list(weights) and r["phase_weights"] == pytest.approx(weights)
        assert r["iteration_formula"] == FORMULAS[family]
        assert r["phase_calls_per_step"] == {p: 2 if family == "biggan" and p == "D main" else 1 for p in weights}
        t_iter = sum(w * r["phase_seconds"][p] for p, w in weights.items())
        assert r["iteration_seconds"] == pytest.approx(t_iter, rel=1e-9)
        assert r["images_per_second"] == pytest.approx(2 / t_iter) and r["sec_per_kimg"] == pytest.approx(500 * t_iter)
        ref = ok["reference"]
        assert r["speedup_vs_reference"] == pytest.approx(r["images_per_second"] / ref["images_per_second"])
        assert r["phase_speedup_vs_reference"] == pytest.approx(
            {p: ref["phase_seconds"][p] / r["phase_seconds"][p] for p in weights})
        assert r["backend"] == ("auto" if ops == "ganfast" else "reference")
        assert r["training_config"]["compile"] == (ops == "compile") and r["training_config"]["cuda_graphs"] is False
        assert r["compiled_phases"] == (["D main", "G main"] if ops == "compile" else [])
        assert r["precision"] == {"autocast": None, "grad_scaler": False, "nan_to_num": False, "model_fp16_res": 0,
                                  "conv_clamp": None}
        assert "peak_gpu_bytes" not in r and r["git_sha"] and r["run_id"] == rows[0]["run_id"]
        assert r["skipped_phases_per_step"] == 0
    assert (ok["reference"]["r1_interval"], ok["reference"]["pl_interval"]) == \
           ((16, 4) if family == "stylegan2" else (None, None))
    assert ok["reference"]["speedup_vs_reference"] == 1.0 and "speedup_vs_compile" not in ok["ganfast"]
    assert "speedup_vs_compile" not in ok["compile"] and "speedup_vs_graphs_off" not in ok["ganfast"]
    # the summary has every ratio, compile's included (measured last)
    table = {c["ops"]: c for c in summary["configs"]}
    assert set(table) == {"reference", "ganfast", "compile"} and summary["iteration_formula"] == FORMULAS[family]
    assert table["ganfast"]["speedup_vs_compile"] == pytest.approx(
        ok["ganfast"]["images_per_second"] / ok["compile"]["images_per_second"])
    assert table["ganfast"]["speedup_vs_reference"] == pytest.approx(ok["ganfast"]["speedup_vs_reference"])
    assert {(s["ops"], s["cuda_graphs"]) for s in summary["skipped"]} == {(o, True) for o in skipped}


def test_graphs_on_alone_on_a_cpu_is_a_usage_error(mod, tmp_path, capsys):
    out = tmp_path / "train_step.jsonl"
    with pytest.raises(SystemExit) as exc:
        mod.main(["--preset", "stylegan2-32-fmnist", *TINY, "--cuda-graphs", "on", "--out", str(out)])
    assert exc.value.code == 2 and "--cuda-graphs on needs --device cuda" in capsys.readouterr().err
    assert not out.exists()


def test_a_row_is_written_as_soon_as_its_configuration_ends(mod, monkeypatch, tmp_path):
    # the second configuration (ganfast) dies: the reference row is already in the file
    real_measure, calls = mod.measure, []

    def measure(trainer, *args):
        calls.append(trainer)
        if len(calls) == 2:
            raise KeyboardInterrupt("killed by the session's time limit")
        return real_measure(trainer, *args)

    monkeypatch.setattr(mod, "measure", measure)
    out = tmp_path / "train_step.jsonl"
    with pytest.raises(KeyboardInterrupt):
        mod.main(["--preset", "stylegan2-32-fmnist", *TINY, "--out", str(out)])
    assert [(r["ops"], r["status"]) for r in rows_of(out)] == [("reference", "ok")]


def test_a_graphs_configuration_that_fails_on_the_gpu_does_not_end_the_run(mod, monkeypatch, tmp_path):
    # What a failed capture or an out-of-memory looks like, faked on the CPU: the graphs configurations
    # are built without graphs (a CPU trainer refuses them) and their measurement raises.
    real_make, real_measure = mod.make_trainer, mod.measure
    configs = []

    def make_trainer(G, D, data, family, batch, config, device):
        configs.append(config)
        return real_make(G, D, data, family, batch, config._replace(cuda_graphs=False), device)

    def measure(trainer, *args):
        if configs[-1] == mod.Config("reference", "none", True):
            raise RuntimeError("CUDA error: operation not permitted when stream is capturing")
        if configs[-1] == mod.Config("ganfast", "none", True):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_measure(trainer, *args)

    monkeypatch.setattr(mod, "make_trainer", make_trainer)
    monkeypatch.setattr(mod, "measure", measure)
    out = tmp_path / "train_step.jsonl"
    assert mod.main(["--preset", "stylegan2-32-fmnist", *TINY, "--cuda-graphs", "both", "--out", str(out)]) == 0
    rows = rows_of(out)
    assert [(r.get("ops"), r.get("cuda_graphs"), r["status"]) for r in rows] == [
        ("reference", False, "ok"), ("ganfast", False, "ok"), ("reference", True, "error"),
        ("ganfast", True, "skipped"), (None, None, "summary")]
    assert rows[2]["reason"] == ("RuntimeError in a CUDA graphs configuration: CUDA error: operation not permitted "
                                 "when stream is capturing")
    assert rows[3]["reason"] == "out of GPU memory: CUDA out of memory. Tried to allocate 2.00 GiB"
    assert [s["status"] for s in rows[4]["skipped"]] == ["error", "skipped"]


def test_phases_that_differ_from_the_recipe_stop_the_run(mod, monkeypatch, tmp_path):
    # a formula is only as good as its phases: a recipe phase that did not run is an error, not a row
    real = mod.phase_weights
    monkeypatch.setattr(mod, "phase_weights", lambda trainer, recipe: {**real(trainer, recipe), "G reg": 0.25})
    with pytest.raises(mod.BenchCheckError, match=r"phases that ran .* are not the recipe's"):
        mod.main(["--preset", "biggan-32", *TINY, "--warmup", "0", "--ops", "reference",
                  "--out", str(tmp_path / "x.jsonl")])
