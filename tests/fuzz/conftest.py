"""Fuzz-test session hooks: GANFAST_FUZZ_SEED seeds every fuzz test (the long profile's
reproducible alternative to derandomize), and GANFAST_FUZZ_REPORT=path writes the per-(op, backend,
dtype) case counts of the session there as JSON rows {op, backend, dtype, cases}."""
import json
import os

import hypothesis

from tests.fuzz.harness import case_rows, fuzz_seed


def pytest_collection_modifyitems(config, items):
    seed = fuzz_seed()
    if seed is None:
        return
    for item in items:
        fn = getattr(item, "obj", None)
        if getattr(fn, "is_hypothesis_test", False) and "tests/fuzz/" in str(item.path).replace(os.sep, "/"):
            hypothesis.seed(seed)(fn)


def pytest_sessionfinish(session, exitstatus):
    path = os.environ.get("GANFAST_FUZZ_REPORT")
    if path:
        with open(path, "w") as f:
            json.dump(case_rows(), f, indent=1)
            f.write("\n")
