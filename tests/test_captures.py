"""Dump captures (issue 6) on a real mount against the emulator: minidump.dmp and
fulldump.dmp read with cat, cp, dd, head -c and a seeking Python reader give the
emulator's exact bytes, for any size, with flat daemon memory; one server dump
per capture however many readers; one dump per app at a time; every fault ends
in the design's errno and leaves nothing that looks complete; Ctrl-C leaves the
capture running; progress shows in xattrs and status.json.

Mounts and emulators come from the conftest fixtures (always torn down)."""
import errno
import hashlib
import json
import os
import random
import signal
import subprocess
import time

import pytest

from helpers import (counters, has_open, read_rss_hwm, run, sh, wait_emulator_idle, wait_for,
                     wait_state, xattr)
from kudu_emulator import iter_dump

MiB = 1 << 20
RSS_LIMIT_KB = 64 * 1024


def _sanitized():
    """ASan/UBSan builds (make asan) keep freed memory in quarantine and add shadow memory:
    the 64 MiB RSS bound is a property of the real build only."""
    path = os.environ.get("KUDUFS_BIN") or os.path.join(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), "kudufs")
    try:
        with open(path, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


SANITIZED = _sanitized()


def assert_flat_rss(pid):
    hwm = read_rss_hwm(pid)
    if not SANITIZED:
        assert hwm <= RSS_LIMIT_KB, "daemon VmHWM %d kB > 64 MiB" % hwm
    return hwm


def sha_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(4 * MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


def sha_pipe(cmd, timeout=600):
    """sha256 of what a shell command writes to stdout (never stored on disk)."""
    r = run(["/bin/bash", "-c", "set -o pipefail; %s | sha256sum" % cmd], timeout=timeout)
    assert r.returncode == 0, (cmd, r.stderr)
    return r.stdout.split()[0]


def expected_bytes(site, pid, dump_type, size, off, n):
    """The emulator's bytes [off, off+n) of that dump, from its own generator."""
    out = bytearray()
    start = off - off % MiB
    for piece in iter_dump(site, pid, dump_type, size, start):
        out += piece
        if start + len(out) >= off + n:
            break
    return bytes(out[off - start: off - start + n])


def dumps(emu, site="demo"):
    """Dump requests the emulator has seen for site (since its last reset)."""
    return counters(emu, site)["dump"]


def status(m):
    with open(os.path.join(m.path, ".kudufs", "status.json")) as f:
        return json.load(f)


def captures_of(m, pid, typ):
    return [c for c in status(m)["captures"] if c["pid"] == pid and c["type"] == typ]


def spool_files(m):
    """(name, size) of every spool file of this daemon."""
    d = os.path.join(m.tmp, "cache", "spool-%d" % m.pid)
    if not os.path.isdir(d):
        return []
    return [(n, os.path.getsize(os.path.join(d, n))) for n in os.listdir(d)]


def st_size(path):
    """st_size as a new process sees it (after the kernel's 1 s attr cache)."""
    r = run(["stat", "-c", "%s", path])
    assert r.returncode == 0, r.stderr
    return int(r.stdout)


def seek_reader(path, size, rng, chunk=MiB):
    """Read the whole file with explicit seeks, chunks in shuffled order; return the sha256
    of the bytes reassembled in file order (a scratch dict keyed by offset, in memory)."""
    offs = list(range(0, size, chunk))
    rng.shuffle(offs)
    parts = {}
    with open(path, "rb", buffering=0) as f:
        for o in offs:
            f.seek(o)
            b = b""
            while len(b) < min(chunk, size - o):
                x = f.read(min(chunk, size - o) - len(b))
                if not x:
                    break
                b += x
            parts[o] = b
        f.seek(size)
        assert f.read(10) == b"", "bytes past the end"
    h = hashlib.sha256()
    for o in sorted(parts):
        h.update(parts[o])
    return h.hexdigest()


# --------------------------------------------------------------------------- tools and digests


def test_minidump_cat_cp_dd_head_seek_digests_and_lazy_start(emulator, mount, tmp_path):
    emu = emulator
    m = mount({"demo": emu.url("demo")})
    site = os.path.join(m.path, "demo", "site")
    mini = os.path.join(site, "minidump.dmp")
    want = emu.digest("demo", 4292, 1)
    emu.reset()

    # open, stat, ls, getxattr, listxattr, file: none of them starts a dump
    with open(mini, "rb"):
        pass
    fd = os.open(mini, os.O_RDONLY)
    os.close(fd)
    assert run(["ls", "-l", site]).returncode == 0
    assert run(["stat", mini]).returncode == 0
    r = run(["getfattr", "-d", mini])
    assert r.returncode == 0 and 'user.kudufs.state="idle"' in r.stdout, r.stdout
    run(["file", mini])  # file(1) may be absent; it must not start a dump either way
    assert st_size(mini) == 0
    assert dumps(emu) == 0
    assert spool_files(m) == []

    # cat: one dump request, the emulator's bytes
    out = tmp_path / "cat.dmp"
    r = sh("cat %s > %s" % (mini, out))
    assert r.returncode == 0, r.stderr
    assert out.stat().st_size == want["size"] == 4 * MiB
    assert sha_of(out) == want["sha256"]
    assert dumps(emu) == 1
    assert counters(emu)["dumps_by_key"] == {"4292/1": 1}

    # complete: the real size (once the kernel's 1 s attr cache has expired), xattrs say so
    assert wait_for(lambda: st_size(mini) == want["size"], timeout=5), st_size(mini)
    assert xattr(mini, "state") == "complete" and xattr(mini, "bytes") == str(want["size"])
    assert xattr(mini, "filename").startswith("w3wp-") and xattr(mini, "filename").endswith(".dmp")
    assert xattr(mini, "url").endswith("/demo/api/processes/4292/dump?dumpType=1")

    # cp, dd bs=1M, head -c, a seeking reader: all from the same capture
    r = run(["cp", mini, tmp_path / "cp.dmp"])
    assert r.returncode == 0, r.stderr
    assert sha_of(tmp_path / "cp.dmp") == want["sha256"]
    assert sha_pipe("dd if=%s bs=1M status=none" % mini) == want["sha256"]
    n = 1000003
    assert sha_pipe("head -c %d %s" % (n, mini)) == emu.digest("demo", 4292, 1, size=n)["sha256"]
    assert seek_reader(mini, want["size"], random.Random(1), chunk=256 * 1024 + 7) == want["sha256"]
    assert dumps(emu) == 1

    # rm drops the capture: the next read (a seeking reader, end first) fetches it anew
    r = run(["rm", mini])
    assert r.returncode == 0, r.stderr
    assert xattr(mini, "state") == "idle"
    assert spool_files(m) == []
    with open(mini, "rb", buffering=0) as f:
        f.seek(want["size"] - 5000)
        tail = f.read(5000)
        f.seek(0)
        head = f.read(8)
    assert head == b"MDMP\x93\xa7\x00\x00"
    assert tail == expected_bytes("demo", 4292, 1, want["size"], want["size"] - 5000, 5000)
    assert dumps(emu) == 2

    # another process's minidump, read by a seeking reader from a cold start
    other = os.path.join(m.path, "demo", "dotnet-5012", "minidump.dmp")
    w2 = emu.digest("demo", 5012, 1)
    assert seek_reader(other, w2["size"], random.Random(2)) == w2["sha256"]
    assert dumps(emu) == 3
    assert_flat_rss(m.pid)


def _fulldump_tools(emu, m, tmp_path, size, copy_to_disk=True):
    full = os.path.join(m.path, "demo", "site", "fulldump.dmp")
    want = emu.digest("demo", 4292, 2)
    assert want["size"] == size
    emu.reset()
    t0 = time.monotonic()
    assert sha_pipe("cat %s" % full, timeout=1800) == want["sha256"]
    t_cat = time.monotonic() - t0
    assert dumps(emu) == 1
    assert sha_pipe("dd if=%s bs=1M status=none" % full, timeout=1800) == want["sha256"]
    if copy_to_disk:
        dst = tmp_path / "full.dmp"
        r = run(["cp", full, dst], timeout=1800)
        assert r.returncode == 0, r.stderr
        assert dst.stat().st_size == size and sha_of(dst) == want["sha256"]
        dst.unlink()
    # head -c past the 2^32 boundary when the dump is that big, else most of it
    n = min(size - 1, (1 << 32) + 4097)
    assert sha_pipe("head -c %d %s" % (n, full), timeout=1800) == \
        emu.digest("demo", 4292, 2, size=n)["sha256"]
    # a seeking reader: every MiB by explicit seek, in file order, and windows around
    # 2^31 and 2^32 (and the end), compared with the emulator's generator
    h = hashlib.sha256()
    with open(full, "rb", buffering=0) as f:
        for off in range(0, size, MiB):
            f.seek(off)
            b = f.read(MiB)
            assert len(b) == min(MiB, size - off), off
            h.update(b)
        assert h.hexdigest() == want["sha256"]
        rng = random.Random(size)
        offs = [o for o in ((1 << 31) - 777, (1 << 32) - 777, size - 1500) if 0 <= o < size]
        offs += [rng.randrange(0, size - 5000) for _ in range(20)]
        for off in offs:
            k = min(5000, size - off)
            f.seek(off)
            assert f.read(k) == expected_bytes("demo", 4292, 2, size, off, k), off
    assert dumps(emu) == 1, "every read after the first is served from the capture"
    assert wait_for(lambda: st_size(full) == size, timeout=5), st_size(full)
    hwm = assert_flat_rss(m.pid)
    print("%d MiB: cat %.1f s, daemon VmHWM %d kB" % (size // MiB, t_cat, hwm))
    return t_cat, hwm


def test_fulldump_300mib_tools_digest_flat_rss(make_emulator, mount, tmp_path):
    size = 300 * MiB
    emu = make_emulator({"sites": {"demo": {"full_size": size}}})
    m = mount({"demo": emu.url("demo")})
    _fulldump_tools(emu, m, tmp_path, size)


@pytest.mark.slow
def test_fulldump_4_5gib_past_2_32_tools_digest_flat_rss(make_emulator, mount, tmp_path):
    size = 4608 * MiB  # 4.5 GiB > 2^32
    emu = make_emulator({"sites": {"demo": {"full_size": size}}})
    m = mount({"demo": emu.url("demo")}, opts=("cache_max=8G",))
    _fulldump_tools(emu, m, tmp_path, size)


# --------------------------------------------------------------------------- sharing


def test_eight_concurrent_cats_share_one_dump_then_cp_then_rm(make_emulator, mount, tmp_path):
    size = 64 * MiB
    # the dump takes 0.5 s to "write", so all 8 readers are there before any byte
    emu = make_emulator({"sites": {"demo": {"full_size": size, "dump_delay": 0.5}}})
    m = mount({"demo": emu.url("demo")})
    full = os.path.join(m.path, "demo", "w3wp-4292", "fulldump.dmp")
    want = emu.digest("demo", 4292, 2)
    emu.reset()
    procs = [subprocess.Popen(["/bin/sh", "-c", "cat %s | sha256sum" % full], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(8)]
    try:
        outs = [p.communicate(timeout=120) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    digests = [o[0].split()[0] for o in outs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    assert digests == [want["sha256"]] * 8
    s = counters(emu)
    assert s["dump"] == 1 and s["dumps_by_key"] == {"4292/2": 1}, s

    # cp right after: served from the finished capture, no new request
    r = run(["cp", full, tmp_path / "f.dmp"])
    assert r.returncode == 0, r.stderr
    assert sha_of(tmp_path / "f.dmp") == want["sha256"]
    assert dumps(emu) == 1

    # rm drops it: the next read is one new request
    r = run(["rm", full])
    assert r.returncode == 0, r.stderr
    assert dumps(emu) == 1, "rm itself fetches nothing"
    assert sha_pipe("cat %s" % full) == want["sha256"]
    assert dumps(emu) == 2
    assert_flat_rss(m.pid)


def test_three_processes_of_one_app_dump_one_at_a_time(make_emulator, mount):
    emu = make_emulator({"sites": {"demo": {"mini_size": 8 * MiB, "dump_delay": 0.5}}})
    m = mount({"demo": emu.url("demo")})
    pids = {4292: "w3wp-4292", 5012: "dotnet-5012", 6240: "php-cgi-6240"}
    emu.reset()
    procs = {pid: subprocess.Popen(["/bin/sh", "-c", "cat %s | sha256sum" %
                                    os.path.join(m.path, "demo", d, "minidump.dmp")],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for pid, d in pids.items()}
    seen = set()
    try:
        end = time.monotonic() + 60
        while any(p.poll() is None for p in procs.values()) and time.monotonic() < end:
            seen |= {c["state"] for c in status(m)["captures"]}
            time.sleep(0.05)
        outs = {pid: p.communicate(timeout=60) for pid, p in procs.items()}
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()
    for pid, (out, err) in outs.items():
        assert procs[pid].returncode == 0, err
        assert out.split()[0] == emu.digest("demo", pid, 1)["sha256"], pid
    st = emu.stats()
    s = st["sites"]["demo"]
    assert s["dump"] == 3 and s["dump_peak"] <= 1, s
    assert st["dump_conflicts"] == 0
    assert "queued" in seen, "the waiting captures should show state queued: %s" % seen


def test_queued_dump_whose_last_reader_left_is_never_requested(make_emulator, mount):
    """A dump pauses the process: one nobody waits for any more leaves the queue."""
    emu = make_emulator({"sites": {"demo": {"dump_delay": 3}}})
    m = mount({"demo": emu.url("demo")})
    d = os.path.join(m.path, "demo")
    emu.reset()
    first = subprocess.Popen(["cat", os.path.join(d, "w3wp-4292", "minidump.dmp")],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    second = None
    try:
        assert wait_state(os.path.join(d, "w3wp-4292", "minidump.dmp"), "fetching")
        queued = os.path.join(d, "dotnet-5012", "minidump.dmp")
        second = subprocess.Popen(["cat", queued], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        assert wait_for(lambda: has_open(second.pid, queued) and xattr(queued, "state") == "queued"), \
            xattr(queued, "state")
        second.send_signal(signal.SIGINT)
        assert second.wait(timeout=5) != 0
        assert wait_state(queued, "idle"), xattr(queued, "state")
        r = run(["rm", queued])
        assert r.returncode == 0, r.stderr
        assert first.wait(timeout=30) == 0, first.stderr.read()
    finally:
        for p in (first, second):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
    # a negative: a dump wrongly left in the queue would go out once the first one ended;
    # give it a second to show at the emulator
    time.sleep(1)
    assert dumps(emu) == 1, "only the dump somebody still reads is taken"


# --------------------------------------------------------------------------- faults

FAULTS = [
    # id, fault, mount options, errno, cat's message, text expected in user.kudufs.error
    ("short", {"kind": "short", "after_bytes": MiB}, (), errno.EIO, "Input/output error", ""),
    ("reset", {"kind": "reset", "after_bytes": MiB}, (), errno.EIO, "Input/output error", ""),
    ("stall", {"kind": "stall", "after_bytes": MiB, "seconds": 2.5}, ("stall_timeout=1",),
     errno.ETIMEDOUT, "Connection timed out", "stall"),
    ("slow-first-byte", {"kind": "slow_dump", "seconds": 4}, ("first_byte_timeout=1",),
     errno.ETIMEDOUT, "Connection timed out", "first_byte"),
    ("500", {"kind": "status", "status": 500, "message": "Site sku (Free) does not support full minidump."},
     (), errno.EIO, "Input/output error", "Site sku (Free) does not support full minidump."),
    ("404", {"kind": "status", "status": 404, "message": "Process with an Id of 4292 is not running."},
     (), errno.ENOENT, "No such file or directory", ""),
    ("401", {"kind": "status", "status": 401}, (), errno.EACCES, "Permission denied", ""),
    # a 200 with no body (a proxy's, not Kudu's) is no dump
    ("empty-200", {"kind": "status", "status": 200, "body": "", "content_type": "application/octet-stream"},
     (), errno.EIO, "Input/output error", "empty response body"),
    ("html-200", {"kind": "status", "status": 200, "body": "<html><body>Sign in</body></html>",
                  "content_type": "text/html; charset=utf-8"},
     (), errno.EIO, "Input/output error", "not a dump (Content-Type text/html)"),
]


@pytest.mark.parametrize("fault,opts,err,msg,xerr", [f[1:] for f in FAULTS], ids=[f[0] for f in FAULTS])
def test_dump_fault_errno_nothing_complete_left_then_recovers(make_emulator, mount, tmp_path,
                                                              fault, opts, err, msg, xerr):
    emu = make_emulator({"sites": {"demo": {"release_on_disconnect": True}}})
    m = mount({"demo": emu.url("demo")}, opts=("negative_ttl=1",) + tuple(opts))
    mini = os.path.join(m.path, "demo", "w3wp-4292", "minidump.dmp")
    want = emu.digest("demo", 4292, 1)
    emu.reset()
    emu.add_fault(route="dump", site="demo", pid=4292, **fault)

    # a Python reader gets the errno itself
    t = time.monotonic()
    with pytest.raises(OSError) as ei:
        with open(mini, "rb") as f:
            f.read()
    assert ei.value.errno == err, ei.value
    assert time.monotonic() - t < 15
    assert dumps(emu) == 1

    # nothing that looks complete is left behind
    assert xattr(mini, "state") == "failed"
    if xerr:
        assert xerr in xattr(mini, "error"), xattr(mini, "error")
    else:
        assert xattr(mini, "error") != ""
    # st_size must still be 0 when the daemon is asked again, after the kernel's 1 s attr
    # cache: a negative, so this waits out the cache rather than for a condition
    time.sleep(1.1)
    assert st_size(mini) == 0
    assert [c["state"] for c in captures_of(m, 4292, "mini")] == ["failed"]
    assert not [c for c in status(m)["captures"] if c["state"] == "complete"]
    assert [s for s in spool_files(m) if s[1] > 0] == [], spool_files(m)
    assert "failed" in m.log()

    # cat, on a fresh capture while the fault is still there, exits non-zero with the message
    wait_emulator_idle(emu)
    out = tmp_path / "x.dmp"
    r = sh("cat %s > %s" % (mini, out), timeout=60)
    assert r.returncode != 0 and msg in r.stderr, r.stderr
    assert out.stat().st_size < want["size"]

    # cleared: the next read succeeds, one new request
    emu.clear_faults()
    time.sleep(1.1)  # the scenario: the failure is remembered for negative_ttl=1, then retried
    wait_emulator_idle(emu)
    n = dumps(emu)
    r = sh("cat %s > %s" % (mini, out), timeout=60)
    assert r.returncode == 0, r.stderr
    assert sha_of(out) == want["sha256"]
    assert dumps(emu) == n + 1
    assert xattr(mini, "state") == "complete"


# --------------------------------------------------------------------------- interrupt


def test_sigint_reader_during_slow_dump_then_second_reader_same_request(make_emulator, mount, tmp_path):
    emu = make_emulator()
    m = mount({"demo": emu.url("demo")})
    mini = os.path.join(m.path, "demo", "site", "minidump.dmp")
    want = emu.digest("demo", 4292, 1)
    emu.reset()
    emu.add_fault(route="dump", site="demo", kind="slow_dump", seconds=5, count=1)
    t0 = time.monotonic()
    first = subprocess.Popen(["cat", mini], stdout=open(tmp_path / "1.dmp", "wb"), stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: has_open(first.pid, mini) and xattr(mini, "state") == "fetching"), \
            xattr(mini, "state")
        assert first.poll() is None, "the reader should be waiting for the slow dump"
        t1 = time.monotonic()
        first.send_signal(signal.SIGINT)
        rc = first.wait(timeout=5)
        took = time.monotonic() - t1
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    assert rc != 0
    assert took < 1.0, "reader took %.2f s to leave after SIGINT" % took
    assert time.monotonic() - t0 < 3, "the reader must not wait for the dump"
    # the download goes on without readers
    assert xattr(mini, "state") == "fetching"
    second = sh("cat %s > %s" % (mini, tmp_path / "2.dmp"), timeout=60)
    assert second.returncode == 0, second.stderr
    assert sha_of(tmp_path / "2.dmp") == want["sha256"]
    assert dumps(emu) == 1, "the second reader gets the dump from the same request"
    assert time.monotonic() - t0 < 10


# --------------------------------------------------------------------------- progress


def test_xattrs_and_status_json_show_progress(make_emulator, mount, tmp_path):
    size = 8 * MiB
    emu = make_emulator({"sites": {"demo": {"mini_size": size}}})
    m = mount({"demo": emu.url("demo")})
    mini = os.path.join(m.path, "demo", "site", "minidump.dmp")
    want = emu.digest("demo", 4292, 1)
    emu.reset()
    # the body pauses at 2 MiB and at 6 MiB, 1 s each
    emu.add_faults([{"route": "dump", "kind": "stall", "after_bytes": 2 * MiB, "seconds": 1, "count": 1},
                    {"route": "dump", "kind": "stall", "after_bytes": 6 * MiB, "seconds": 1, "count": 1}])
    assert captures_of(m, 4292, "mini") == []
    reader = subprocess.Popen(["cat", mini], stdout=open(tmp_path / "p.dmp", "wb"), stderr=subprocess.PIPE)
    samples = []   # (xattr state, xattr bytes, status state, status bytes, rate)
    try:
        end = time.monotonic() + 30
        while reader.poll() is None and time.monotonic() < end:
            st = captures_of(m, 4292, "mini")
            x = (xattr(mini, "state"), int(xattr(mini, "bytes")))
            if st:
                samples.append(x + (st[0]["state"], st[0]["bytes"], st[0]["rate_bytes_per_sec"]))
            time.sleep(0.1)
        assert reader.wait(timeout=30) == 0, reader.stderr.read()
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    fetching = [s for s in samples if s[0] == "fetching" and s[2] == "fetching"]
    assert fetching, samples
    xbytes = [s[1] for s in fetching]
    sbytes = [s[3] for s in fetching]
    assert xbytes == sorted(xbytes) and sbytes == sorted(sbytes), samples
    assert 2 * MiB in xbytes and 6 * MiB in xbytes, "bytes should grow: %s" % sorted(set(xbytes))
    assert 2 * MiB in sbytes and 6 * MiB in sbytes, sorted(set(sbytes))
    assert all(s[4] > 0 for s in fetching if s[3] > 0)
    # complete after
    assert sha_of(tmp_path / "p.dmp") == want["sha256"]
    assert xattr(mini, "state") == "complete" and xattr(mini, "bytes") == str(size)
    c = captures_of(m, 4292, "mini")
    assert len(c) == 1 and c[0]["state"] == "complete" and c[0]["bytes"] == c[0]["length"] == size, c
    assert c[0]["app"] == "demo" and c[0]["rate_bytes_per_sec"] > 0
    r = run(["getfattr", "-d", mini])
    assert 'user.kudufs.state="complete"' in r.stdout and 'user.kudufs.bytes="%d"' % size in r.stdout
    assert dumps(emu) == 1


def test_rm_while_fetching_is_ebusy_and_keeps_the_capture(make_emulator, mount, tmp_path):
    emu = make_emulator({"sites": {"demo": {"mini_size": 8 * MiB}}})
    m = mount({"demo": emu.url("demo")})
    mini = os.path.join(m.path, "demo", "w3wp-4292", "minidump.dmp")
    want = emu.digest("demo", 4292, 1)
    emu.reset()
    # long enough for both rm attempts below even under ASan (2 s was not)
    emu.add_fault(route="dump", kind="stall", after_bytes=2 * MiB, seconds=5, count=1)
    # no reader left: head got its 10 bytes and closed the file, the capture goes on
    r = sh("head -c 10 %s | od -An -c" % mini)
    assert r.returncode == 0 and "M   D   M   P" in r.stdout
    assert xattr(mini, "state") == "fetching"
    r = run(["rm", mini])
    assert r.returncode != 0 and "Device or resource busy" in r.stderr, r.stderr
    # a reader still has it open (the common case: rm while cat runs)
    reader = subprocess.Popen(["cat", mini], stdout=open(tmp_path / "r.dmp", "wb"), stderr=subprocess.PIPE)
    try:
        assert wait_for(lambda: has_open(reader.pid, mini)), "cat did not open the dump"
        assert reader.poll() is None and xattr(mini, "state") == "fetching"
        t0 = time.monotonic()
        r = run(["rm", mini])
        assert r.returncode != 0 and "Device or resource busy" in r.stderr, r.stderr
        # the reader is stalled in a read: rm must not wait for it (nullpath_ok)
        assert time.monotonic() - t0 < 1.0, "rm waited %.1f s" % (time.monotonic() - t0)
        assert reader.wait(timeout=30) == 0, reader.stderr.read()
    finally:
        if reader.poll() is None:
            reader.kill()
            reader.wait()
    assert sha_of(tmp_path / "r.dmp") == want["sha256"]
    assert dumps(emu) == 1
    # a complete capture, still open by a reader: rm succeeds and drops it
    with open(mini, "rb") as f:
        assert f.read(4) == b"MDMP"
        r = run(["rm", mini])
        assert r.returncode == 0, r.stderr
    assert xattr(mini, "state") == "idle"
    assert sha_pipe("cat %s" % mini) == want["sha256"]
    assert dumps(emu) == 2


# --------------------------------------------------------------------------- spool bounds and files


def test_cache_max_enospc_and_lru_eviction(make_emulator, mount):
    emu = make_emulator({"sites": {"demo": {"mini_size": 4 * MiB, "full_size": 64 * MiB}}})
    m = mount({"demo": emu.url("demo")}, opts=("cache_max=10M",))
    d = os.path.join(m.path, "demo")
    emu.reset()
    # a dump larger than cache_max cannot be captured
    full = os.path.join(d, "w3wp-4292", "fulldump.dmp")
    r = sh("cat %s > /dev/null" % full, timeout=60)
    assert r.returncode != 0 and "No space left on device" in r.stderr, r.stderr
    with pytest.raises(OSError) as ei:
        with open(full, "rb") as f:
            f.read()
    assert ei.value.errno == errno.ENOSPC
    assert sum(s for _, s in spool_files(m)) <= 10 * MiB
    # three 4 MiB minidumps in 10 MiB: the least recently used finished one goes
    emu.reset()
    for pid, name in ((4292, "w3wp-4292"), (5012, "dotnet-5012"), (6240, "php-cgi-6240")):
        assert sha_pipe("cat %s/%s/minidump.dmp" % (d, name)) == emu.digest("demo", pid, 1)["sha256"]
        assert status(m)["spool_bytes"] <= 10 * MiB
        assert sum(s for _, s in spool_files(m)) <= 10 * MiB
    assert dumps(emu) == 3
    assert xattr(os.path.join(d, "w3wp-4292", "minidump.dmp"), "state") != "complete"
    assert xattr(os.path.join(d, "php-cgi-6240", "minidump.dmp"), "state") == "complete"
    assert sha_pipe("cat %s/php-cgi-6240/minidump.dmp" % d) == emu.digest("demo", 6240, 1)["sha256"]
    assert dumps(emu) == 3, "the most recent capture is still cached"
    assert sha_pipe("cat %s/w3wp-4292/minidump.dmp" % d) == emu.digest("demo", 4292, 1)["sha256"]
    assert dumps(emu) == 4, "the evicted one is fetched again"
    assert_flat_rss(m.pid)


def test_spool_files_private_stale_removed_all_removed_at_unmount(make_emulator, mount, tmp_path):
    cache = tmp_path / "cache"
    stale = cache / "spool-999999"   # no such pid: a crashed daemon's leftovers
    stale.mkdir(parents=True)
    (stale / "4292-1-1.dmp").write_bytes(b"MDMP" + b"\0" * 4096)
    os.chmod(cache, 0o755)
    emu = make_emulator({"sites": {"demo": {"mini_size": 8 * MiB}}})
    m = mount({"demo": emu.url("demo")}, opts=("cache_dir=%s" % cache,))
    assert not stale.exists(), "stale spool of a dead daemon must be removed at start"
    assert os.stat(cache).st_mode & 0o777 == 0o700
    mini = os.path.join(m.path, "demo", "site", "minidump.dmp")
    emu.add_fault(route="dump", kind="stall", after_bytes=2 * MiB, seconds=1, count=1)
    with open(mini, "rb") as f:
        assert f.read(4) == b"MDMP"
        spool = cache / ("spool-%d" % m.pid)
        files = list(spool.iterdir())
        assert len(files) == 1
        assert os.stat(spool).st_mode & 0o777 == 0o700
        assert os.stat(files[0]).st_mode & 0o777 == 0o600
    assert sha_pipe("cat %s" % mini) == emu.digest("demo", 4292, 1)["sha256"]
    assert m.unmount() == 0
    assert not (cache / ("spool-%d" % m.pid)).exists(), list(cache.iterdir())
