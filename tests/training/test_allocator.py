"""ganfast.training.allocator: glibc's malloc settings for CPU training (what they do, and that
asking for them never breaks a run)."""
from __future__ import annotations

import platform
import subprocess
import sys

import pytest

import ganfast.training.allocator as allocator


@pytest.fixture
def fresh(monkeypatch):
    """A process that has not tuned yet (the module applies its settings once); restored after."""
    monkeypatch.setattr(allocator, "_applied", None)
    monkeypatch.delenv("GANFAST_MALLOC", raising=False)
    return allocator


def _glibc():
    try:
        return allocator._libc()
    except OSError:
        return None


needs_glibc = pytest.mark.skipif(platform.system() != "Linux" or _glibc() is None, reason="needs glibc")


_PROBE = r"""
import ctypes, sys
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                 "fsmblks", "uordblks", "fordblks", "keepcost")]
if sys.argv[1] == "tuned":
    import ganfast.training.allocator as a
    print(a.tune_cpu_allocator(), file=sys.stderr)
lib = ctypes.CDLL("libc.so.6")
lib.mallinfo2.restype = MallInfo2
lib.malloc.restype, lib.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
lib.free.argtypes = [ctypes.c_void_p]
before = lib.mallinfo2()
block = lib.malloc(16 << 20)
during = lib.mallinfo2()
lib.free(block)
# blocks in their own mmap while the buffer is alive
print(during.hblks - before.hblks)
"""


def _probe(mode):
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return (int(out.stdout.split()[0]),)


@needs_glibc
def test_tuned_settings_keep_a_16_mib_buffer_on_the_heap(fresh):
    if not hasattr(_glibc(), "mallinfo2"):
        pytest.skip("glibc older than 2.33 (no mallinfo2)")
    # a fresh process with glibc's defaults: a 16 MiB buffer is its own mmap (page faults on every
    # first touch, unmapped at free); tuned: it comes from the heap. (The trim threshold and top
    # pad, which keep freed heap memory with the process, are not observable this way: other
    # allocations land above the block. They are checked as applied, below.)
    assert _probe("default")[0] == 1
    assert _probe("tuned")[0] == 0
    applied = fresh.tune_cpu_allocator()
    assert applied == {name: value for name, (_, value) in fresh.MALLOC_SETTINGS.items()}
    assert fresh.tune_cpu_allocator() == applied                     # once per process, the same answer


def test_default_leaves_glibc_alone(fresh, monkeypatch):
    monkeypatch.setenv("GANFAST_MALLOC", "default")
    monkeypatch.setattr(fresh, "_libc", lambda: pytest.fail("must not touch libc"))
    assert fresh.tune_cpu_allocator() == {"skipped": "GANFAST_MALLOC=default"}


def test_a_bad_setting_names_the_variable(fresh, monkeypatch):
    monkeypatch.setenv("GANFAST_MALLOC", "fast")
    with pytest.raises(ValueError, match=r"GANFAST_MALLOC must be 'tuned' or 'default', got 'fast'"):
        fresh.tune_cpu_allocator()


def test_without_glibc_it_does_nothing_and_says_why(fresh, monkeypatch):
    def no_glibc():
        raise OSError("libc.so is not glibc")
    monkeypatch.setattr(fresh, "_libc", no_glibc)
    assert fresh.tune_cpu_allocator() == {"skipped": "no glibc mallopt (libc.so is not glibc)"}


def test_a_refused_setting_is_reported_not_raised(fresh, monkeypatch):
    calls = []

    class FakeLibc:
        class mallopt:      # noqa: N801 - stands in for the C function
            argtypes = restype = None

            def __new__(cls, param, value):
                calls.append((param, value))
                return 0 if len(calls) == 2 else 1

    monkeypatch.setattr(fresh, "_libc", lambda: FakeLibc)
    got = fresh.tune_cpu_allocator()
    assert got == {"skipped": "mallopt refused trim_threshold=1073741824", "mmap_threshold": 32 << 20}
    assert calls == [(-3, 32 << 20), (-1, 1 << 30)]
