"""Fuzz smoke (issue 17): each libFuzzer harness in tests/fuzz/ (built by
`make fuzz-build`, which `make test` runs) replays its whole seed corpus,
regressions included, then fuzzes for KUDUFS_FUZZ_SECONDS (default 10; CI's
.ci/run sets 30). New inputs go to a temporary corpus, never into the tree;
a crash's input is printed in the failure (add it to tests/fuzz/corpus/NAME/
and a unit test once fixed). Long runs: `make fuzz FUZZ_SECONDS=N`."""
import glob
import os
import shutil
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FUZZ_DIR = os.environ.get("KUDUFS_FUZZ_DIR", os.path.join(ROOT, "build-fuzz", "fuzz"))
SECONDS = int(os.environ.get("KUDUFS_FUZZ_SECONDS", "10"))
NAMES = sorted(os.path.basename(p)[len("fuzz_"):-2] for p in glob.glob(os.path.join(ROOT, "tests", "fuzz", "fuzz_*.c")))


def test_harnesses_found():
    assert {"config", "path", "list", "details"} <= set(NAMES), NAMES


@pytest.mark.parametrize("name", NAMES)
def test_fuzz_smoke(name, tmp_path):
    binary = os.path.join(FUZZ_DIR, "fuzz_" + name)
    assert os.access(binary, os.X_OK), f"{binary} not built: make fuzz-build"
    seeds = os.path.join(ROOT, "tests", "fuzz", "corpus", name)
    assert os.listdir(seeds), f"no seed corpus in {seeds}"
    common = ["-timeout=10", "-rss_limit_mb=2048", f"-artifact_prefix={tmp_path}/"]
    # 1. every seed and regression input, once
    r = subprocess.run([binary, "-runs=0"] + common + [seeds], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-6000:]
    # 2. a short fuzz from the seeds
    work = tmp_path / "corpus"
    work.mkdir()
    r = subprocess.run([binary, f"-max_total_time={SECONDS}", "-print_final_stats=1"] + common
                       + [str(work), seeds], capture_output=True, text=True, timeout=SECONDS + 120)
    crashes = [p for p in os.listdir(tmp_path) if p.startswith(("crash-", "leak-", "timeout-", "oom-"))]
    assert r.returncode == 0 and not crashes, "\n".join([r.stderr[-6000:]] + [
        f"{c}: {open(os.path.join(tmp_path, c), 'rb').read()[:2000]!r}" for c in crashes])
    runs = [l for l in r.stderr.splitlines() if l.startswith("stat::number_of_executed_units")]
    assert runs and int(runs[0].split()[-1]) > 0, r.stderr[-2000:]
    print(f"fuzz {name}: {runs[0].split()[-1]} runs in {SECONDS} s")
    shutil.rmtree(work, ignore_errors=True)
