"""Shared pytest fixtures for kudufs integration tests.

Fixtures
  emulator          a running Kudu emulator with the default spec (function scope, always stopped)
  make_emulator     factory: make_emulator(spec=None, **kw) -> started Emulator (stopped at teardown)
  kudufs_bin        path of the kudufs binary ($KUDUFS_BIN or <repo>/kudufs); fails if missing
  mount             factory: mount(apps, user=None, password=None, opts=(), extra_args=(),
                    expect_fail=False, env=None, timeout=15, config_extra="")
                    -> Mount (.path .proc .pid .log() .cfg .tmp .unmount() .returncode)
Helpers (import with `from conftest import run, read_rss_hwm, wait_for`)
  run(cmd, **kw)        subprocess.run with text output captured (timeout 120 s unless given)
  wait_for(pred, timeout=15)  poll pred() until true, return its last value
  read_rss_hwm(pid)     VmHWM of a process in kB
"""
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from emu import Emulator  # noqa: E402

FUSERMOUNT = shutil.which("fusermount3") or "fusermount3"


def run(cmd, **kw):
    """subprocess.run with captured text output; never raises on a non-zero exit."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run([str(c) for c in cmd], **kw)


def wait_for(pred, timeout=15.0, step=0.05):
    """Poll pred() until it returns something true or timeout seconds pass; its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def read_rss_hwm(pid):
    """Peak resident set size (VmHWM) of pid, in kB."""
    with open("/proc/%d/status" % int(pid)) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise ValueError("no VmHWM for pid %s" % pid)


def fuse_mounts_under(prefix):
    """Mount points of FUSE file systems below prefix, from /proc/mounts."""
    prefix = os.path.realpath(str(prefix)).rstrip("/") + "/"
    out = []
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            mnt = parts[1].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
                .replace("\\134", "\\")
            if parts[2].startswith("fuse") and (mnt + "/").startswith(prefix):
                out.append(mnt)
    return out


def force_unmount(path):
    r = subprocess.run([FUSERMOUNT, "-u", str(path)], capture_output=True)
    if r.returncode != 0 and os.path.ismount(str(path)):
        subprocess.run([FUSERMOUNT, "-uz", str(path)], capture_output=True)


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
    path = os.environ.get("KUDUFS_BIN") or os.path.join(ROOT, "kudufs")
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        pytest.fail("kudufs binary not found at %s: run make" % path)
    return path


class Mount:
    def __init__(self, path, proc, cfg, tmp, logfile):
        self.path = path
        self.proc = proc
        self.pid = proc.pid
        self.cfg = cfg
        self.tmp = tmp
        self.logfile = logfile
        self.returncode = None

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait(self, timeout=5):
        self.returncode = self.proc.wait(timeout)
        return self.returncode

    def unmount(self):
        """fusermount3 -u (then -uz), wait for the daemon up to 5 s, then kill -9. Idempotent."""
        if os.path.ismount(self.path):
            force_unmount(self.path)
        if self.proc.poll() is None:
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                try:
                    os.kill(self.proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                self.proc.wait()
                if os.path.ismount(self.path):
                    force_unmount(self.path)
        self.returncode = self.proc.returncode
        return self.returncode


def _write_private(path, text):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)
    return path


@pytest.fixture
def mount(kudufs_bin, tmp_path_factory):
    """mount(apps={"demo": emu.url("demo")}, user=None, password=None, opts=(), extra_args=(),
    expect_fail=False, env=None) -> Mount.

    user/password default to the emulator's defaults ("demo" / "demo-secret-pw"); both may
    also be dicts name -> value. An app may be given as a dict {"url", "user", "password",
    other keys written verbatim into its section}; password False writes no password_file.
    config_extra: lines added to the [kudufs] section. With expect_fail=True the daemon is expected to exit before
    mounting: the Mount is returned with .returncode set (the test asserts on it and .log())."""
    mounts = []
    tmps = []

    def do_mount(apps, user=None, password=None, opts=(), extra_args=(), expect_fail=False,
                 env=None, timeout=15, config_extra=""):
        tmp = str(tmp_path_factory.mktemp("kudufs"))
        os.chmod(tmp, 0o700)
        tmps.append(tmp)
        mnt = os.path.join(tmp, "mnt")
        os.mkdir(mnt)
        lines = ["[kudufs]", "cache_dir = %s" % os.path.join(tmp, "cache")]
        lines += [l for l in config_extra.splitlines()] + [""]
        for name, app in apps.items():
            app = dict(app) if isinstance(app, dict) else {"url": app}
            url = app.pop("url", None)
            u = app.pop("user", user.get(name) if isinstance(user, dict) else user)
            p = app.pop("password", password.get(name) if isinstance(password, dict) else password)
            u = "demo" if u is None else u
            p = "demo-secret-pw" if p is None else p
            lines.append("[app %s]" % name)
            if url is not None:
                lines.append("url = %s" % url)
            lines.append("user = %s" % u)
            if p is not False:
                pw_file = os.path.join(tmp, "%s.pass" % name)
                _write_private(pw_file, p + "\n")
                lines.append("password_file = %s" % pw_file)
            lines += ["%s = %s" % kv for kv in app.items()] + [""]
        cfg = _write_private(os.path.join(tmp, "config"), "\n".join(lines))
        cmd = [kudufs_bin, "-f", "--config", cfg]
        if opts:
            cmd += ["-o", ",".join(opts)]
        cmd += list(extra_args) + [mnt]
        e = dict(os.environ)
        e.pop("KUDUFS_USER", None)
        e.pop("KUDUFS_PASSWORD", None)
        e["HOME"] = tmp  # no stray ~/.netrc or ~/.config/kudufs from the user running the tests
        e.update(env or {})
        logfile = os.path.join(tmp, "kudufs.log")
        with open(logfile, "wb") as lf:
            proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT,
                                    env=e, cwd=tmp)
        m = Mount(mnt, proc, cfg, tmp, logfile)
        mounts.append(m)
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if os.path.ismount(mnt):
                break
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        if expect_fail:
            if os.path.ismount(mnt):
                m.unmount()
                pytest.fail("kudufs mounted but was expected to fail:\n" + m.log())
            try:
                m.wait(timeout)
            except subprocess.TimeoutExpired:
                m.unmount()
                pytest.fail("kudufs neither mounted nor exited:\n" + m.log())
            return m
        if not os.path.ismount(mnt):
            rc = proc.poll()
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


@pytest.fixture(scope="session", autouse=True)
def _no_mount_left_behind(tmp_path_factory):
    """After the session: no FUSE mount may remain under pytest's temp dirs (clean up and fail)."""
    yield
    base = tmp_path_factory.getbasetemp()
    left = fuse_mounts_under(base)
    for mnt in left:
        force_unmount(mnt)
    assert not left, "kudufs mounts left behind: %s" % left


def pytest_report_header(config):
    return "kudufs: %s" % (os.environ.get("KUDUFS_BIN") or os.path.join(ROOT, "kudufs"))

