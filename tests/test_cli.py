"""The `ganfast` command: info, bench, and clear errors for bad input."""
import json
import os
import subprocess
import sys

import pytest
import torch

from ganfast import backends, info
from ganfast.cli import main

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _fails(capsys, argv) -> str:
    """Run `ganfast argv`, expecting a usage error; return stderr."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_info_mentions_every_backend_and_op(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for name in backends.BACKENDS:
        assert f"  {name} " in out
    for op in backends.registered_ops():
        assert op in out
    assert torch.__version__ in out and "extensions" in out
    import ganfast.models
    assert "model presets" in out and all(name in out for name in ganfast.models.list_presets())


def test_info_explains_unusable_backends(capsys):
    main(["info"])
    out = capsys.readouterr().out
    for name in backends.BACKENDS:
        why = backends.get_backend(name).unavailable_reason()
        if why is not None:
            assert why in out


def test_info_json_is_valid(capsys):
    assert main(["info", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [b["name"] for b in data["backends"]] == list(backends.BACKENDS)
    assert data["versions"]["torch"] == torch.__version__
    assert set(data["extensions"]) >= {"cpu", "cuda"}
    assert data["ops"]["bias_act"]["cpu"]
    assert data == json.loads(json.dumps(info.as_dict()))


@pytest.mark.slow
def test_python_dash_m_runs_info():
    proc = subprocess.run([sys.executable, "-m", "ganfast.cli", "info"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "backends" in proc.stdout


def test_unknown_op_lists_known_ones(capsys):
    err = _fails(capsys, ["bench", "no_such_op"])
    assert "no_such_op" in err and "bias_act" in err


def test_bad_dtype_is_a_clear_error(capsys):
    err = _fails(capsys, ["bench", "bias_act", "--dtype", "float8"])
    assert "--dtype" in err and "float8" in err


@pytest.mark.parametrize("argv, expected", [
    (["bench", "bias_act", "--shapes", "stylegan3"], "stylegan2-256"),  # lists the known sets
    (["bench", "bias_act", "--batch", "0"], "--batch"),
    (["bench", "bias_act", "--modes", "sideways"], "--modes"),
    ([], "COMMAND"),
])
def test_bad_arguments_exit_with_usage(capsys, argv, expected):
    assert expected in _fails(capsys, argv)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_device_without_cuda_is_a_clear_error(capsys):
    assert "CUDA" in _fails(capsys, ["bench", "bias_act", "--device", "cuda"])


def test_bench_prints_tables_and_appends_rows(capsys, tmp_path):
    argv = ["bench", "bias_act", "--quick", "--batch", "1", "--repeats", "2", "--warmup", "0",
            "--no-compile", "--modes", "forward", "backward", "--out", str(tmp_path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "eager-reference" in out and "median ms" in out and "rows appended to" in out
    with open(tmp_path / "bias_act.jsonl") as f:
        rows = [json.loads(line) for line in f]
    labels = {r["shape_label"] for r in rows}
    assert len(labels) == 3 and {r["mode"] for r in rows} == {"forward", "backward"}
    assert all(r["shape"][0] == 1 and r["repeats"] in (2, None) for r in rows)


@pytest.mark.slow
def test_bench_script_and_plot(tmp_path):
    script = os.path.join(REPO, "bench", "bias_act.py")
    proc = subprocess.run([sys.executable, script, "--quick", "--repeats", "2", "--warmup", "0", "--no-compile",
                           "--modes", "forward", "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "bias_act.jsonl").exists()
    pytest.importorskip("matplotlib")
    plot = os.path.join(REPO, "bench", "plot.py")
    proc = subprocess.run([sys.executable, plot, "--results", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "bias_act_cpu_float32.png").stat().st_size > 0


def test_info_shows_a_recorded_build_failure():
    data = info.as_dict()
    data["extensions"]["cpu"].update(built=False, loads=False, build_reason="g++ failed: no such flag -mfoo",
                                     load_error="ganfast._C does not import")
    assert "not built: g++ failed: no such flag -mfoo" in info.report(data)
