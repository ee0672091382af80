"""Shared pytest fixtures for kudufs integration tests, built on tests/helpers.py (the one
home of the helpers: mounting, unmounting, waiting with a deadline, private files, the
emulator's authenticated requests and counters; see its docstring).

Fixtures
  emulator          a running Kudu emulator with the default spec (function scope, always stopped)
  make_emulator     factory: make_emulator(spec=None, **kw) -> started Emulator (stopped at teardown)
  kudufs_bin        path of the kudufs binary ($KUDUFS_BIN or <repo>/kudufs); fails if missing
  mount             factory: mount(apps, user=None, password=None, opts=(), extra_args=(),
                    expect_fail=False, env=None, timeout=15, config_extra="")
                    -> Mount (.path .proc .pid .log() .cfg .tmp .unmount() .returncode)
After the session no FUSE mount and no kudufs daemon may be left under pytest's temp dirs.
The helpers are importable from here too: `from conftest import run, wait_for`.
"""
import os
import shutil
import signal
import subprocess
import sys

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from emu import Emulator  # noqa: E402
from helpers import (ROOT, KUDUFS_BIN, Mount, counters, emu_get, emu_json,  # noqa: E402
                     force_unmount, fuse_mounts_under, has_open, kudufs_env, read_rss_hwm, run,
                     sh, start_mount, stop_process, unmount, wait_emulator_idle, wait_for,
                     wait_mounted, wait_state, write_config, write_private, xattr)

# re-exported for `from conftest import ...`
__all__ = ["ROOT", "Mount", "counters", "emu_get", "emu_json", "force_unmount",
           "fuse_mounts_under", "has_open", "kudufs_env", "read_rss_hwm", "run", "sh",
           "stop_process", "unmount", "wait_emulator_idle", "wait_for", "wait_mounted",
           "wait_state", "write_private", "xattr"]


# ------------------------------------------------------------------ emulator

@pytest.fixture
def make_emulator():
    started = []

    def make(spec=None, **kw):
        emu = Emulator(spec, **kw)
        started.append(emu)
        return emu.start()
    yield make
    for emu in started:
        emu.stop()


@pytest.fixture
def emulator():
    emu = Emulator()
    try:
        emu.start()
        yield emu
    finally:
        emu.stop()


# ------------------------------------------------------------------ kudufs

@pytest.fixture(scope="session")
def kudufs_bin():
    path = KUDUFS_BIN
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail("kudufs binary not found at %s: run make" % path)
    return path


@pytest.fixture
def mount(kudufs_bin, tmp_path_factory):
    """mount(apps={"demo": emu.url("demo")}, user=None, password=None, opts=(), extra_args=(),
    expect_fail=False, env=None) -> Mount.

    user/password default to the emulator's defaults ("demo" / "demo-secret-pw"); both may
    also be dicts name -> value. An app may be given as a dict {"url", "user", "password",
    other keys written verbatim into its section}; password False writes no password_file.
    config_extra: lines added to the [kudufs] section (helpers.write_config). With
    expect_fail=True the daemon is expected to exit before mounting: the Mount is returned
    with .returncode set (the test asserts on it and .log())."""
    mounts = []
    tmps = []

    def do_mount(apps, user=None, password=None, opts=(), extra_args=(), expect_fail=False,
                 env=None, timeout=15, config_extra=""):
        tmp = str(tmp_path_factory.mktemp("kudufs"))
        os.chmod(tmp, 0o700)
        tmps.append(tmp)
        mnt = os.path.join(tmp, "mnt")
        os.mkdir(mnt)
        cfg = write_config(tmp, apps, user=user, password=password, config_extra=config_extra)
        m = start_mount(cfg, mnt, tmp, opts=opts, extra_args=extra_args, env=env,
                        timeout=timeout, kudufs_bin=kudufs_bin)
        mounts.append(m)
        if expect_fail:
            if m.mounted:
                m.unmount()
                pytest.fail("kudufs mounted but was expected to fail:\n" + m.log())
            try:
                m.wait(timeout)
            except subprocess.TimeoutExpired:
                m.unmount()
                pytest.fail("kudufs neither mounted nor exited:\n" + m.log())
            return m
        if not m.mounted:
            rc = m.proc.poll()
            m.unmount()
            pytest.fail("kudufs did not mount %s (exit %s):\n%s" % (mnt, rc, m.log()))
        return m

    yield do_mount
    for m in reversed(mounts):
        try:
            m.unmount()
        except Exception:  # keep tearing down the others
            pass
    for t in tmps:
        shutil.rmtree(t, ignore_errors=True)


def _daemons_under(base):
    """(pid, command line) of kudufs processes whose command line names a path under base
    (base/..., not a sibling such as pytest-10 of pytest-1: other runs' daemons are not ours)."""
    base = os.path.realpath(base).rstrip("/") + "/"
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                argv = [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
        except OSError:
            continue
        # the daemon itself, or under valgrind: an argument that is the kudufs binary
        if any(os.path.basename(a) == "kudufs" for a in argv) and any(base in a for a in argv):
            out.append((int(pid), " ".join(argv)))
    return out


@pytest.fixture(scope="session", autouse=True)
def _no_mount_left_behind(tmp_path_factory):
    """After the session: no FUSE mount and no kudufs daemon may remain under pytest's temp
    dirs (they are cleaned up, and the session fails)."""
    yield
    base = str(tmp_path_factory.getbasetemp())
    left = fuse_mounts_under(base)
    for mnt in left:
        force_unmount(mnt)
    daemons = _daemons_under(base)
    for pid, _ in daemons:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    assert not left and not daemons, "left behind: mounts %s, kudufs daemons %s" % (left, daemons)


def pytest_report_header(config):
    return "kudufs: %s" % KUDUFS_BIN
