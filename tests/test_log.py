"""Logging (kudu/log.c): where kudufs's messages go.

- A daemonized mount (no -f) logs to syslog (ident kudufs, LOG_DAEMON): a 401
  after mounting shows up there with the app's name and without the password.
  This machine runs no syslog daemon and has no /dev/log, and /dev/log is
  global: so the test runs the daemon in a private mount namespace
  (unshare -m) whose /dev is an overlay of the real one with the test's own
  syslog socket at /dev/log. Nothing outside the namespace sees it, two runs
  never collide, and kudufs runs unchanged, with no test hook (README, Logging).
- In the foreground, -d adds kudufs's own request tracing to stderr (method, URL,
  status, bytes, time), never a header or a password.

This file is also the helper run inside the namespace (python3 test_log.py ns ...).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from helpers import force_unmount, kudufs_env, run, wait_for, write_config  # noqa: E402

PASSWORD = "log-test-Secret-9f3e"


def _daemon_pids(marker):
    """Pids of processes whose command line contains marker (the test's unique config path)."""
    pids = []
    for d in os.listdir("/proc"):
        if not d.isdigit() or int(d) == os.getpid():
            continue
        try:
            with open("/proc/%s/cmdline" % d, "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if marker.encode() in argv and argv[0].endswith(b"kudufs"):
            pids.append(int(d))
    return pids


# ------------------------------------------------------------- inside the namespace

def ns_main(kudufs, cfg, mnt, upper, work):
    """Runs as root in a private mount namespace. Protocol on stdout: 'pid N', 'mounted',
    then (after 'go' on stdin) one JSON line with the results."""
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                    "lowerdir=/dev,upperdir=%s,workdir=%s" % (upper, work), "/dev"], check=True)
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind("/dev/log")
    messages = []

    def receive():
        while True:
            try:
                data = rx.recv(65536)
            except OSError:
                return
            messages.append(data.decode(errors="replace"))
    threading.Thread(target=receive, daemon=True).start()

    result = {"messages": messages}
    pid = None
    try:
        p = subprocess.run([kudufs, "--config", cfg, mnt], capture_output=True, text=True, timeout=60,
                           env=kudufs_env(os.path.dirname(cfg)), stdin=subprocess.DEVNULL)
        result["start_rc"] = p.returncode
        result["start_stderr"] = p.stderr
        if p.returncode != 0 or not wait_for(lambda: os.path.ismount(mnt), 15):
            result["error"] = "did not mount"
            print(json.dumps(result), flush=True)
            return
        pids = wait_for(lambda: _daemon_pids(cfg), 10)
        pid = pids[0] if pids else None
        print("pid %s" % pid, flush=True)
        print("mounted", flush=True)
        if sys.stdin.readline().strip() != "go":
            return
        try:
            os.listdir(os.path.join(mnt, "demo"))
            result["ls_errno"] = 0
        except OSError as e:
            result["ls_errno"] = e.errno
        wait_for(lambda: any("401" in m for m in messages), 15)
    finally:
        if os.path.ismount(mnt):
            force_unmount(mnt)
        if pid and not wait_for(lambda: not os.path.exists("/proc/%d" % pid), 10):
            os.kill(pid, signal.SIGKILL)
        result["messages"] = list(messages)
        print(json.dumps(result), flush=True)


# ------------------------------------------------------------- the tests

def test_daemonized_mount_logs_a_401_to_syslog_with_the_app_and_no_secret(make_emulator, kudufs_bin,
                                                                          tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.fail("needs root and unshare(1) for a private /dev/log (the test rig runs as root)")
    emu = make_emulator(password=PASSWORD)
    tmp = str(tmp_path)
    os.chmod(tmp, 0o700)
    mnt = os.path.join(tmp, "mnt")
    upper, work = os.path.join(tmp, "dev-upper"), os.path.join(tmp, "dev-work")
    for d in (mnt, upper, work):
        os.mkdir(d)
    cfg = write_config(tmp, {"demo": emu.url("demo")}, password=PASSWORD,
                       config_extra="list_ttl = 0\nnegative_ttl = 0")
    proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", sys.executable, __file__, "ns",
                             kudufs_bin, cfg, mnt, upper, work],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    daemon = None
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("pid "):
                daemon = int(line.split()[1]) if line.split()[1].isdigit() else None
            if line.strip() == "mounted" or line.startswith("{"):
                break
        assert lines and lines[-1].strip() == "mounted", "".join(lines) + proc.stderr.read()
        assert daemon, "no kudufs daemon found after the mount"
        # the mount came up (its pre-mount check passed); now the app's credentials stop working
        emu.add_fault(route="list", site="demo", kind="status", status=401)
        out, err = proc.communicate("go\n", timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if daemon and os.path.exists("/proc/%d" % daemon):
            os.kill(daemon, signal.SIGKILL)
    result = json.loads(out.strip().splitlines()[-1])
    msgs = result["messages"]
    print("\n".join(msgs))
    assert result.get("ls_errno") == 13, (result, err)
    hits = [m for m in msgs if "401" in m and "demo" in m]
    assert hits, msgs
    # <27> = LOG_DAEMON (3 << 3) | LOG_ERR (3); ident kudufs with the daemon's pid
    assert any(m.startswith("<27>") and ("kudufs[%d]:" % daemon) in m for m in hits), hits
    assert "password_file" in hits[0]  # it names the credential source ...
    for m in msgs:  # ... and never the secret or a header
        assert PASSWORD not in m and "Authorization" not in m, m


def test_foreground_d_traces_requests_without_headers_or_secrets(make_emulator, mount):
    emu = make_emulator(password=PASSWORD)
    m = mount({"demo": emu.url("demo")}, password=PASSWORD, extra_args=("-d",))
    assert run(["ls", os.path.join(m.path, "demo")]).returncode == 0
    assert run(["cat", os.path.join(m.path, "demo", "w3wp-4292", "details.json")]).returncode == 0
    traced = wait_for(lambda: [ln for ln in m.log().splitlines()
                               if ln.startswith("kudufs: demo: GET ") and "/api/processes/4292 -> 200" in ln],
                      10)
    assert traced, m.log()[-3000:]
    assert " bytes in " in traced[0] and "first byte" in traced[0], traced[0]
    assert PASSWORD not in m.log() and "Authorization" not in m.log()


def test_foreground_without_d_has_no_tracing(make_emulator, mount):
    emu = make_emulator()
    m = mount({"demo": emu.url("demo")})
    assert run(["ls", os.path.join(m.path, "demo")]).returncode == 0
    assert " GET " not in m.log(), m.log()


if __name__ == "__main__" and len(sys.argv) == 7 and sys.argv[1] == "ns":
    ns_main(*sys.argv[2:])
