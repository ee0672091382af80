"""Runs the C unit-test binaries (built by `make`) as part of the pytest run."""
import glob
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT_DIR = os.environ.get("KUDUFS_UNIT_DIR", os.path.join(ROOT, "build", "unit"))
SOURCES = sorted(glob.glob(os.path.join(ROOT, "tests", "unit", "test_*.c")))


@pytest.mark.parametrize("src", SOURCES, ids=[os.path.basename(s)[:-2] for s in SOURCES])
def test_c_unit(src):
    binary = os.path.join(UNIT_DIR, os.path.basename(src)[:-2])
    assert os.path.exists(binary), f"{binary} not built: run make"
    p = subprocess.run([binary], capture_output=True, text=True, timeout=120)
    print(p.stdout)
    assert p.returncode == 0, p.stdout + p.stderr
    last = p.stdout.strip().splitlines()[-1]
    assert last.endswith(" 0 failed") and not last.startswith("0 passed"), last


def test_unit_sources_found():
    assert SOURCES, "no tests/unit/test_*.c found"
