"""Test helper for tests/training/test_faults.py: `ganfast train ARGS...` in a process of its own,
with a hook that holds one checkpoint save open, so the test can signal the process mid-save.

usage: python _fault_worker.py HANG_AT_STEP ARGS...

HANG_AT_STEP: the save of that step writes OUT/hanging-in-save (holding the temporary directory's
path) once everything is written and fsynced, just before the rename, and then sleeps until the
process ends; -1: no hang. The process exits with `ganfast train`'s exit code.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from ganfast.cli import main
from ganfast.training import loop


def run(hang_at: int, argv: list[str]) -> int:
    out = Path(argv[argv.index("--out") + 1])
    real_save = loop.save_checkpoint

    def save(run_dir, step, *args, **kwargs):
        def hang(tmp: Path) -> None:
            if step == hang_at:
                (out / "hanging-in-save").write_text(str(tmp))
                while True:           # signal handlers run between the sleeps
                    time.sleep(0.1)
        return real_save(run_dir, step, *args, _before_commit=hang, **kwargs)

    loop.save_checkpoint = save
    return main(argv)


if __name__ == "__main__":
    if len(sys.argv) < 3:
        raise SystemExit(f"usage: {sys.argv[0]} HANG_AT_STEP ARGS...")
    sys.exit(run(int(sys.argv[1]), sys.argv[2:]))
