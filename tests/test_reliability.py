"""Reliability (issue 17) on the command line: hostile local input (credential
files that are FIFOs, directories, devices or huge; credential commands that
hang or write more later; duplicate [app] sections) ends --check and the
mount within a bound, with a clear message and no secret in it."""
import os
import subprocess
import time

import pytest

from conftest import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KUDUFS = os.environ.get("KUDUFS_BIN", os.path.join(ROOT, "kudufs"))


def run(args, home, timeout=60):
    env = dict(os.environ, HOME=str(home))
    env.pop("KUDUFS_USER", None)
    env.pop("KUDUFS_PASSWORD", None)
    t0 = time.monotonic()
    p = subprocess.run([KUDUFS] + [str(a) for a in args], capture_output=True, text=True, env=env,
                       timeout=timeout, stdin=subprocess.DEVNULL)
    p.elapsed = time.monotonic() - t0
    return p


def write_private(path, text):
    path.write_text(text)
    path.chmod(0o600)
    return path


def config(tmp_path, emu, source_key, source_value, extra=""):
    return write_private(tmp_path / "config", f"""[kudufs]
cache_dir = {tmp_path}/cache
{extra}
[app demo]
url = {emu.url('demo')}
user = {emu.user}
{source_key} = {source_value}
""")


@pytest.mark.parametrize("kind", ["fifo", "directory", "device", "huge"])
def test_password_file_must_be_a_small_regular_file(emulator, tmp_path, kind):
    p = tmp_path / "demo.pass"
    want = {"fifo": "is a FIFO; it must be a regular file",
            "directory": "is a directory; it must be a regular file",
            "device": "is a character device; it must be a regular file",
            "huge": "bytes, more than the 65536 a password file may have"}[kind]
    if kind == "fifo":
        os.mkfifo(p, 0o600)
    elif kind == "directory":
        p.mkdir(mode=0o700)
    elif kind == "device":
        p.symlink_to("/dev/zero")
    else:
        write_private(p, emulator.password + "\n" + "x" * (1 << 20))
    cfg = config(tmp_path, emulator, "password_file", p)
    r = run(["--check", "--config", cfg], tmp_path, timeout=20)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert want in r.stderr and str(p) in r.stderr, r.stderr
    assert "is empty" not in r.stderr
    assert r.elapsed < 10
    assert emulator.password not in r.stdout + r.stderr
    # the mount is refused the same way, before mounting
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = run(["-f", "--config", cfg, mnt], tmp_path, timeout=20)
    assert r.returncode == 1 and want in r.stderr and not os.path.ismount(mnt), r.stderr


def test_config_fifo_does_not_block(tmp_path):
    cfg = tmp_path / "config"
    os.mkfifo(cfg, 0o600)
    r = run(["--check", "--config", cfg], tmp_path, timeout=20)
    assert r.returncode == 1 and f"config {cfg} is a FIFO; it must be a regular file" in r.stderr, r.stderr


def test_password_command_writing_more_lines_later(emulator, tmp_path):
    """`pass show` prints the password, then more lines: the command must not
    be killed by SIGPIPE (nor refused) because kudufs wanted only line one."""
    script = tmp_path / "fake-pass"
    script.write_text(f"#!/bin/sh\necho '{emulator.password}'\nsleep 0.5\n"
                      "echo 'login: demo' || exit 9\necho 'url: example' || exit 9\n")
    script.chmod(0o700)
    r = run(["--check", "--config", config(tmp_path, emulator, "password_command", script)], tmp_path)
    assert r.returncode == 0 and r.stdout.startswith("demo: OK "), (r.stdout, r.stderr)


def test_password_command_timeout(emulator, tmp_path):
    pidfile = tmp_path / "child.pid"
    cmd = f"sleep 60 & echo $! > {pidfile}; wait"
    cfg = config(tmp_path, emulator, "password_command", cmd, extra="command_timeout = 1")
    r = run(["--check", "--config", cfg], tmp_path, timeout=30)
    assert r.returncode == 1
    assert "app demo: password_command did not finish within command_timeout (1 s); killed" in r.stderr, r.stderr
    assert r.elapsed < 8, r.elapsed
    child = int(pidfile.read_text())

    def gone():
        try:
            with open(f"/proc/{child}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except FileNotFoundError:
            return True
    assert wait_for(gone, timeout=5), "the command's own child outlived the timeout"
    # -o command_timeout=N overrides the config
    r = run(["--check", "-o", "command_timeout=2", "--config", cfg], tmp_path, timeout=30)
    assert "within command_timeout (2 s)" in r.stderr, r.stderr


def test_token_command_timeout(emulator, tmp_path):
    cfg = write_private(tmp_path / "config", f"""[kudufs]
command_timeout = 1
[app demo]
url = {emulator.url('demo')}
token_command = sleep 30
""")
    r = run(["--check", "--config", cfg], tmp_path, timeout=30)
    assert r.returncode == 1 and "token_command did not finish within command_timeout (1 s)" in r.stderr
    assert r.elapsed < 8


def test_duplicate_app_sections(emulator, tmp_path):
    pw = write_private(tmp_path / "demo.pass", emulator.password + "\n")
    cfg = write_private(tmp_path / "config", f"""[app demo]
url = {emulator.url('demo')}
user = {emulator.user}

[app other]
url = {emulator.url('demo')}
[app demo]
password_file = {pw}
""")
    r = run(["--check", "--config", cfg], tmp_path)
    assert r.returncode == 1
    assert f"{cfg}:7: a second [app demo] section (the first is at line 1); merge them" in r.stderr, r.stderr
