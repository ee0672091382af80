"""Reliability (issue 17) on the command line: hostile local input (credential
files that are FIFOs, directories, devices or huge; credential commands that
hang or write more later; duplicate [app] sections) ends --check and the
mount within a bound, with a clear message and no secret in it."""
import os
import subprocess
import time

import pytest

from helpers import kudu_fetch, run_kudufs, stop_process, wait_for, write_private


def run(args, home, timeout=60):
    """kudufs args with HOME=home (helpers.run_kudufs: .elapsed is how long it took)."""
    return run_kudufs(args, home=home, timeout=timeout)


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


# ---------------------------------------------------------------- the client
# kudu/ against a hostile server written here (raw sockets: exact bytes on
# the wire), through build/tools/kudu_fetch; no FUSE.

import gzip  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402

class HostileServer:
    """127.0.0.1 server: answer(sock, request_head) writes whatever it wants
    for each connection. .requests counts them."""

    def __init__(self, answer):
        self.answer = answer
        self.requests = 0
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.stopping = False
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn):
        try:
            head = b""
            while b"\r\n\r\n" not in head:
                b = conn.recv(4096)
                if not b:
                    return
                head += b
            self.requests += 1
            self.answer(conn, head.decode("latin-1"))
        except OSError:
            pass
        finally:
            try:
                conn.shutdown(socket.SHUT_WR)
                conn.settimeout(2)
                while conn.recv(4096):
                    pass
            except OSError:
                pass
            conn.close()

    def stop(self):
        self.stopping = True
        self.sock.close()


@pytest.fixture
def hostile():
    servers = []

    def make(answer):
        s = HostileServer(answer)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.stop()


def fetch(url, *args, opts=(), timeout=60, tmp=None):
    """kudu_fetch on url (any user and password; HOME tmp)."""
    return kudu_fetch(url, *args, opts=opts, timeout=timeout,
                      env={"KUDUFS_USER": "u", "KUDUFS_PASSWORD": "p",
                           "HOME": str(tmp or "/nonexistent")})


def respond(conn, status, headers=(), body=b""):
    h = [f"HTTP/1.1 {status}"] + list(headers)
    if not any(x.lower().startswith(("content-length", "transfer-encoding")) for x in headers):
        h.append(f"Content-Length: {len(body)}")
    conn.sendall(("\r\n".join(h) + "\r\n\r\n").encode() + body)


def test_retry_after_past_meta_timeout_ends_now(hostile):
    srv = hostile(lambda c, h: respond(c, "503 Service Unavailable", ["Retry-After: 3600",
                                       "Content-Type: application/json"], b'{"Message":"scaling"}'))
    f = fetch(srv.url, "list", opts=["meta_timeout=5"])
    assert not f["ok"] and f["errno"] == "EIO", f["line"]
    assert "503 Service Unavailable: scaling (Retry-After 3600 s is past what is left of meta_timeout (5 s); not retried)" \
        in f["msg"], f["msg"]
    assert f["elapsed"] < 3 and srv.requests == 1


def test_meta_timeout_bounds_retries_and_their_waits(hostile):
    srv = hostile(lambda c, h: respond(c, "503 Service Unavailable", ["Retry-After: 1"]))
    f = fetch(srv.url, "list", opts=["meta_timeout=2"])
    assert not f["ok"] and f["errno"] in ("EIO", "ETIMEDOUT"), f["line"]
    assert f["elapsed"] < 3.5, f["line"]
    assert 1 <= srv.requests <= 3


def test_meta_timeout_counts_a_hung_retry(hostile):
    n = {"i": 0}

    def answer(c, h):
        n["i"] += 1
        if n["i"] == 1:
            respond(c, "503 Service Unavailable", ["Retry-After: 1"])
        else:
            time.sleep(10)  # the retry hangs
    srv = hostile(answer)
    f = fetch(srv.url, "list", opts=["meta_timeout=3"])
    assert f["errno"] == "ETIMEDOUT" and "meta_timeout (3 s, retries included)" in f["msg"], f["line"]
    assert f["elapsed"] < 4.5 and srv.requests == 2


def test_json_over_max_json_is_eio(hostile):
    body = b"[" + b",".join(b'{"id":%d,"name":"p"}' % i for i in range(5000)) + b"]"
    srv = hostile(lambda c, h: respond(c, "200 OK", ["Content-Type: application/json"], body))
    f = fetch(srv.url, "list", opts=["max_json=16K"])
    assert f["errno"] == "EIO" and "larger than max_json (16384 bytes)" in f["msg"], f["line"]
    assert fetch(srv.url, "list", opts=["max_json=1M"])["ok"]


def test_gzip_bomb_stops_at_max_json(hostile):
    bomb = gzip.compress(b"[" + b" " * (200 << 20) + b"]", 9)  # 200 MiB of JSON in ~200 KiB

    def answer(c, h):
        assert "gzip" in h.lower()
        respond(c, "200 OK", ["Content-Type: application/json", "Content-Encoding: gzip"], bomb)
    srv = hostile(answer)
    f = fetch(srv.url, "list", opts=["max_json=1M"])
    assert f["errno"] == "EIO" and "larger than max_json (1048576 bytes decompressed)" in f["msg"], f["line"]
    assert f["elapsed"] < 10


def test_redirect_is_named_not_followed(hostile):
    srv = hostile(lambda c, h: respond(c, "302 Found", ["Location: https://login.example.net/signin?x=1"]))
    f = fetch(srv.url, "list")
    assert f["errno"] == "EIO" and f["status"] == "302", f["line"]
    assert f["msg"] == "302 Found: redirect to https://login.example.net/signin?x=1, not followed", f["msg"]
    assert srv.requests == 1


def test_cut_chunked_body_message(hostile, tmp_path):
    def answer(c, h):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                  b"Transfer-Encoding: chunked\r\n\r\n")
        for _ in range(3):
            c.sendall(b"1000\r\n" + b"M" * 0x1000 + b"\r\n")
        # cut: no terminating chunk
    srv = hostile(answer)
    f = fetch(srv.url, "dump", 1, 1, tmp_path / "out.dmp", tmp=tmp_path)
    assert f["errno"] == "EIO", f["line"]
    assert "-1" not in f["msg"] and "body cut short after 12288 bytes" in f["msg"], f["msg"]


def test_trickle_below_min_rate_ends(hostile, tmp_path):
    def answer(c, h):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                  b"Content-Length: 1000000\r\n\r\n")
        for _ in range(60):
            c.sendall(b"x" * 100)  # 200 bytes/s: never stalls, never finishes
            time.sleep(0.5)
    srv = hostile(answer)
    f = fetch(srv.url, "dump", 1, 1, tmp_path / "out.dmp", opts=["stall_timeout=2", "min_rate=1K"],
              tmp=tmp_path)
    assert f["errno"] == "ETIMEDOUT" and "below min_rate (1024 bytes/s)" in f["msg"], f["line"]
    assert f["elapsed"] < 6, f["line"]


def test_slow_but_steady_body_is_fine(hostile, tmp_path):
    def answer(c, h):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                  b"Content-Length: 12000\r\n\r\n")
        for _ in range(12):
            c.sendall(b"y" * 1000)  # 4 KB/s for 3 s
            time.sleep(0.25)
    srv = hostile(answer)
    f = fetch(srv.url, "dump", 1, 1, tmp_path / "out.dmp", opts=["stall_timeout=1", "min_rate=1K"],
              tmp=tmp_path)
    assert f["ok"] and f["bytes"] == "12000", f["line"]
    # the first byte may take longer than stall_timeout: Kudu writes the dump first
    def late(c, h):
        time.sleep(2.5)
        respond(c, "200 OK", ["Content-Type: application/octet-stream"], b"z" * 5000)
    srv2 = hostile(late)
    f = fetch(srv2.url, "dump", 1, 1, tmp_path / "out2.dmp", opts=["stall_timeout=1", "min_rate=1K"],
              tmp=tmp_path)
    assert f["ok"] and f["bytes"] == "5000", f["line"]


# ---------------------------------------------------------------- the mount

import json  # noqa: E402
import signal  # noqa: E402

from conftest import start_mount, write_config  # noqa: E402


def spool_files(m):
    """{path: size} of the daemon's spool directory."""
    out = {}
    for root, _, files in os.walk(os.path.join(m.tmp, "cache")):
        for f in files:
            p = os.path.join(root, f)
            try:
                out[p] = os.stat(p).st_size
            except FileNotFoundError:
                pass
    return out


def deleted_open_bytes(pid):
    """Bytes held by files the daemon has open but are unlinked (a failed or evicted spool)."""
    total = 0
    fd_dir = f"/proc/{pid}/fd"
    for fd in os.listdir(fd_dir):
        try:
            if os.readlink(os.path.join(fd_dir, fd)).endswith(" (deleted)"):
                total += os.stat(os.path.join(fd_dir, fd)).st_size
        except OSError:
            pass
    return total


def status(m):
    with open(os.path.join(m.path, ".kudufs", "status.json")) as f:
        return json.load(f)


def test_failed_capture_frees_its_space_at_once(make_emulator, mount):
    emu = make_emulator()
    emu.add_fault(route="dump", kind="reset", after_bytes=24 << 20, count=1)
    m = mount({"demo": emu.url("demo")})
    p = os.path.join(m.path, "demo", "site", "fulldump.dmp")
    r = subprocess.run(["cat", p], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=120)
    assert r.returncode != 0 and "Input/output error" in r.stderr, r.stderr
    # the failed capture is still in the table (its error is served) but holds no bytes
    st = status(m)
    assert any(c["state"] == "failed" for c in st["captures"]), st
    assert deleted_open_bytes(m.pid) == 0, "a failed spool still holds its blocks"
    assert st["spool_bytes"] == sum(spool_files(m).values()) == 0
    # and a good capture is accounted exactly
    with open(os.path.join(m.path, "demo", "site", "minidump.dmp"), "rb") as f:
        data = f.read()
    st = status(m)
    assert st["spool_bytes"] == len(data) == sum(spool_files(m).values()), (st["spool_bytes"], spool_files(m))


def test_sigterm_answers_waiting_and_queued_readers_enotconn(make_emulator, tmp_path):
    """SIGTERM on a busy mount: the reader of the dump on the wire and the one
    queued behind it (one dump per app at a time) both get ENOTCONN, as the
    README says, never the kernel's ECONNABORTED, and soon."""
    emu = make_emulator({"sites": {"demo": {"dump_delay": 60}}})
    cfg = write_config(str(tmp_path), {"demo": emu.url("demo")})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = start_mount(cfg, str(mnt), str(tmp_path))
    readers = []
    try:
        assert m.mounted, m.log()
        names = sorted(n for n in os.listdir(mnt / "demo") if "-" in n)
        for n in names[:2]:
            readers.append(subprocess.Popen(["cat", str(mnt / "demo" / n / "minidump.dmp")],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True))
        assert wait_for(lambda: '"queued"' in open(mnt / ".kudufs" / "status.json").read(), timeout=15), \
            "the second dump should be queued behind the first"
        t0 = time.monotonic()
        m.proc.send_signal(signal.SIGTERM)
        errs = [r.communicate(timeout=15)[1] for r in readers]
        assert time.monotonic() - t0 < 6
        for e in errs:
            assert "Transport endpoint is not connected" in e, errs
        assert m.proc.wait(timeout=15) == 0
    finally:
        for r in readers:
            stop_process(r, timeout=0)
        m.unmount()


@pytest.mark.parametrize("what", ["ls", "details"])
def test_killed_reader_of_a_hung_list_or_details_leaves_at_once(make_emulator, tmp_path, what):
    """A reader waiting for a list or details (the server hangs; meta_timeout
    is long) is answered EINTR as soon as it is killed: libfuse's interrupt,
    polled while the request and other readers' waits go on."""
    emu = make_emulator()
    cfg = write_config(str(tmp_path), {"demo": emu.url("demo")})
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = start_mount(cfg, str(mnt), str(tmp_path), opts=["meta_timeout=60", "list_ttl=0", "detail_ttl=0"])
    readers = []
    try:
        assert m.mounted, m.log()
        assert "w3wp-4292" in os.listdir(mnt / "demo")
        emu.add_fault(route="list" if what == "ls" else "details", kind="latency", seconds=40)
        target = str(mnt / "demo") if what == "ls" else str(mnt / "demo" / "w3wp-4292" / "details.json")
        cmd = ["ls", target] if what == "ls" else ["cat", target]
        # two readers: the one that fetches and one waiting behind it
        for _ in range(2):
            readers.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        assert wait_for(lambda: emu.stats()["current"], timeout=10), "the request never reached the server"
        time.sleep(0.5)
        t0 = time.monotonic()
        for r in readers:
            r.kill()
        for r in readers:
            r.wait(timeout=20)
        assert time.monotonic() - t0 < 3, "killed readers waited %.1f s" % (time.monotonic() - t0)
        # and the mount still answers (the interrupted fetch was not cached as an error)
        emu.clear_faults()
        assert "w3wp-4292" in os.listdir(mnt / "demo")
    finally:
        for r in readers:
            stop_process(r, timeout=0)
        m.unmount()


def test_concurrent_json_bodies_share_one_budget(hostile, tmp_path):
    """Three apps' lists of ~600 KB arrive at once with max_json=1M: the
    client holds at most max_json of bodies beyond the one let past it,
    pausing the others (traced with -d), and every listing is complete."""
    body = b"[" + b",".join(b'{"id":%d,"name":"p%s"}' % (i, b"x" * 40) for i in range(10000)) + b"]"

    def answer(c, h):
        c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
        step = len(body) // 6 + 1
        for i in range(0, len(body), step):
            c.sendall(body[i:i + step])
            time.sleep(0.15)
    srv = hostile(answer)
    apps = {n: {"url": f"{srv.url}/{n}", "password": "p"} for n in ("a", "b", "c")}
    cfg = write_config(str(tmp_path), apps)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    m = start_mount(cfg, str(mnt), str(tmp_path), opts=["max_json=1M", "list_ttl=0"], extra_args=["-d"])
    try:
        assert m.mounted, m.log()
        res = {}

        def ls(n):
            res[n] = len(os.listdir(mnt / n))
        ts = [threading.Thread(target=ls, args=(n,)) for n in apps]
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
        assert all(v >= 10000 for v in res.values()) and len(res) == 3, res
        assert "paused" in m.log() and "bytes of JSON bodies in memory (max_json 1048576)" in m.log()
    finally:
        m.unmount()
