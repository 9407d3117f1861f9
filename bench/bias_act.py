"""Benchmark bias_act: the same harness as `ganfast bench bias_act`, with the same options.

    python bench/bias_act.py --device cpu --shapes stylegan2-256
    python bench/bias_act.py --device cuda --dtype float16 --shapes stylegan2-1024 --modes forward double-backward
"""
import sys

from ganfast.cli import main

if __name__ == "__main__":
    sys.exit(main(["bench", "bias_act", *sys.argv[1:]]))
