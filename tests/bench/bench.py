#!/usr/bin/python3
"""make bench: kudufs against curl (and the hand-written curl loop), side by side.

Every row of the table is a ratio of two timings taken in the same run, round
after round, the order of the two sides alternating each round; the table
shows the median and [min..max] of the per-round ratios, and bench.json at the
repository root holds every raw timing. Diagnostic side measurements (what the
bytes cost to write twice, reading to /dev/null, CPU seconds of each party)
follow the table: they are the evidence when a target is not reached.

Everything runs against tests/kudu_emulator.py on 127.0.0.1. Nothing is left
behind: mounts are unmounted, processes stopped and the temporary directory
removed, also on failure, Ctrl-C or SIGTERM.

Knobs (environment): BENCH_ROUNDS (3), BENCH_STREAM_MIB (2048),
BENCH_MEM_MIB (5120), BENCH_LIST_ROUNDS (5), BENCH_ONLY (comma list of
phases: stream,cached,ttfb,memory,many,listing,concurrent), BENCH_OUT
(bench.json path), BENCH_WAIT_QUIET (seconds to wait at start for other
processes to leave the CPUs alone, 60), KUDUFS_BIN.
"""
import atexit
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests"))

from emu import Emulator  # noqa: E402  (tests/emu.py)
from helpers import (KUDUFS_BIN as KUDUFS, counters, start_mount, stop_process,  # noqa: E402
                     unmount, wait_state, write_config, write_private, xattr)

OUT = os.environ.get("BENCH_OUT", os.path.join(ROOT, "bench.json"))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))
LIST_ROUNDS = int(os.environ.get("BENCH_LIST_ROUNDS", "5"))
MIB = 1 << 20
GIB = 1 << 30
STREAM_SIZE = int(os.environ.get("BENCH_STREAM_MIB", "2048")) * MIB
MEM_SIZE = int(os.environ.get("BENCH_MEM_MIB", "5120")) * MIB
ONLY = [p for p in os.environ.get("BENCH_ONLY", "").split(",") if p]

# The emulated sites, one per concern, so that faults and counters stay apart.
PID_STREAM, PID_MEM, PID_SLOW = 4292, 5120, 4300
SITES = {
    "stream": {"processes": [{"name": "w3wp", "pid": PID_STREAM,
                              "mini_size": 1 * MIB, "full_size": STREAM_SIZE}]},
    "big": {"processes": [{"name": "w3wp", "pid": PID_MEM,
                           "mini_size": 1 * MIB, "full_size": MEM_SIZE}]},
    "slow": {"processes": [{"name": "w3wp", "pid": PID_SLOW,
                            "mini_size": 4 * MIB, "full_size": 8 * MIB}],
             "dump_delay": 2},
    "many": {"count": 200},
    "list": {"count": 1000},
}
MANY_LATENCY = 0.05


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# Cleanup: a LIFO of undo actions, run by finally, atexit and on signals.

class Cleanup:
    def __init__(self):
        self.stack = []
        self.lock = threading.Lock()

    def push(self, fn, what):
        with self.lock:
            self.stack.append((fn, what))
        return fn

    def discard(self, fn):
        with self.lock:
            self.stack = [(f, w) for f, w in self.stack if f is not fn]

    def run(self):
        while True:
            with self.lock:
                if not self.stack:
                    return
                fn, what = self.stack.pop()
            try:
                fn()
            except Exception as e:  # keep undoing the rest
                log(f"bench: cleanup of {what} failed: {e}")


CLEANUP = Cleanup()
atexit.register(CLEANUP.run)


def _on_signal(signum, frame):
    # Raise into the main thread: finally blocks and atexit do the undoing.
    signal.signal(signum, signal.SIG_DFL)
    raise SystemExit(128 + signum)


for _s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(_s, _on_signal)


# --------------------------------------------------------------------------
# Accounting: wall time plus the CPU seconds of the command, the daemon and
# the emulator, so a slow side can be explained.

def proc_cpu(pid):
    """utime+stime of a process and its reaped children, in seconds."""
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tck = os.sysconf("SC_CLK_TCK")
        return sum(int(x) for x in fields[11:15]) / tck
    except (OSError, IndexError, ValueError):
        return 0.0


def proc_status(pid, key):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def machine_busy():
    """CPU seconds the whole machine has spent busy (all CPUs), from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:9]]
    return (v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / os.sysconf("SC_CLK_TCK")


def foreign_busy(seconds=1.0):
    """CPUs' worth of load from processes other than ours over a short window."""
    me = os.getpid()
    b0, t0 = machine_busy(), time.perf_counter()
    c0 = proc_cpu(me)
    time.sleep(seconds)
    return max(0.0, (machine_busy() - b0 - (proc_cpu(me) - c0)) / (time.perf_counter() - t0))


class Meter:
    """Times one side of a comparison: wall, children's CPU, daemon/emulator CPU."""

    def __init__(self, bench, mount=None):
        self.bench, self.mount = bench, mount

    def __enter__(self):
        self.ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.dcpu = proc_cpu(self.mount.proc.pid) if self.mount else 0.0
        self.ecpu = proc_cpu(self.bench.emu_pid)
        self.busy = machine_busy()
        self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.t0
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cmd_cpu = (ru.ru_utime - self.ru.ru_utime) + (ru.ru_stime - self.ru.ru_stime)
        self.daemon_cpu = (proc_cpu(self.mount.proc.pid) - self.dcpu) if self.mount else 0.0
        self.emu_cpu = proc_cpu(self.bench.emu_pid) - self.ecpu
        self.machine_cpu = machine_busy() - self.busy
        return False

    def record(self, **extra):
        r = {"wall_s": round(self.wall, 6), "cmd_cpu_s": round(self.cmd_cpu, 3),
             "emulator_cpu_s": round(self.emu_cpu, 3)}
        if self.mount:
            r["daemon_cpu_s"] = round(self.daemon_cpu, 3)
        # all CPU time the machine spent meanwhile: ours + kernel threads (writeback) + others
        r["machine_cpu_s"] = round(self.machine_cpu, 3)
        r.update(extra)
        return r


def quiesce():
    """Start a timed side with no dirty page cache left by the previous one (its files
    are deleted; this waits for any writeback already under way)."""
    os.sync()
    time.sleep(0.2)


def run(cmd, stdout=subprocess.DEVNULL, check=True, timeout=600, **kw):
    p = subprocess.run(cmd, stdout=stdout, stderr=subprocess.PIPE, timeout=timeout, **kw)
    if check and p.returncode != 0:
        raise RuntimeError(f"{cmd[0]} exited {p.returncode}: {p.stderr.decode(errors='replace').strip()[:400]}")
    return p


# --------------------------------------------------------------------------
# A kudufs mount of some of the emulated sites.

class Mount:
    """A kudufs mount of some of the emulated sites (tests/helpers.py mounts and unmounts it)."""

    def __init__(self, bench, apps, opts="", cache_dir=None):
        self.bench = bench
        self.top = tempfile.mkdtemp(prefix="mnt-", dir=bench.tmp)
        self.mnt = os.path.join(self.top, "m")
        self.cache = cache_dir or os.path.join(self.top, "cache")
        self.proc = None
        os.mkdir(self.mnt)
        # every app reads the one password file bench.passfile
        self.cfg = write_config(self.top, {app: {"url": bench.emu.url(app), "user": bench.emu.user,
                                                 "password": False, "password_file": bench.passfile}
                                           for app in apps}, cache_dir=self.cache)
        o = f"cache_dir={self.cache},max_conns=8" + ("," + opts if opts else "")
        CLEANUP.push(self.close, f"mount {self.mnt}")
        m = start_mount(self.cfg, self.mnt, self.top, opts=(o,), timeout=30, kudufs_bin=KUDUFS)
        self.proc = m.proc
        if not m.mounted:
            tail = m.log()[-2000:]
            self.close()
            raise RuntimeError(f"kudufs did not mount ({self.proc.returncode}): {tail}")

    def path(self, *parts):
        return os.path.join(self.mnt, *parts)

    def close(self):
        CLEANUP.discard(self.close)
        unmount(self.mnt, self.proc, timeout=15)
        left = []
        if os.path.isdir(self.cache):
            left = os.listdir(self.cache)
        if left:
            self.bench.problem(f"spool files left in cache_dir after unmount: {left}")
        shutil.rmtree(self.cache, ignore_errors=True)
        shutil.rmtree(self.top, ignore_errors=True)

    def wait_state(self, f, want="complete", timeout=120):
        if not wait_state(f, want, timeout):  # raises if the capture failed
            raise RuntimeError(f"capture {f} still {xattr(f, 'state')} after {timeout}s")

    def drop(self, f):
        """rm of a dump file drops its (finished) capture and its spool."""
        try:
            os.unlink(f)
        except FileNotFoundError:
            pass

    def spool_bytes(self):
        total = 0
        for dp, _, fs in os.walk(self.cache):
            for n in fs:
                try:
                    total += os.stat(os.path.join(dp, n)).st_blocks * 512
                except OSError:
                    pass
        return total


# --------------------------------------------------------------------------
# Statistics and the table.

def summary(xs):
    return {"median": round(statistics.median(xs), 4), "min": round(min(xs), 4),
            "max": round(max(xs), 4)}


def fmt_s(t):
    return f"{t * 1000:.0f} ms" if t < 10 else f"{t:.1f} s"


class Bench:
    def __init__(self):
        self.rows = []
        self.diag = []
        self.problems = []
        self.t_start = time.time()

    # -- setup -------------------------------------------------------------
    def setup(self):
        self.tmp = tempfile.mkdtemp(prefix="kudufs-bench-")
        CLEANUP.push(lambda: shutil.rmtree(self.tmp, ignore_errors=True), "temp dir")
        self.emu = Emulator(spec={"sites": SITES})
        CLEANUP.push(self.emu.stop, "emulator")
        self.emu.start()
        self.emu_pid = self.emu.pid
        self.passfile = write_private(os.path.join(self.tmp, "pass"), self.emu.password + "\n")
        # curl reads the user from a config file, never from argv
        self.curlcfg = write_private(os.path.join(self.tmp, "curl.cfg"),
                                     f'user = "{self.emu.user}:{self.emu.password}"\n'
                                     'silent\nshow-error\nfail\n')
        self.out = os.path.join(self.tmp, "out")
        os.mkdir(self.out)

    def dump_url(self, site, pid, kind):
        return f"{self.emu.url(site)}/api/processes/{pid}/dump?dumpType={1 if kind == 'mini' else 2}"

    def local_copy(self):
        """A local file with the bytes of the stream dump (made once, kept warm)."""
        local = os.path.join(self.out, "local.dmp")
        if not os.path.exists(local):
            run(self.curl(self.dump_url("stream", PID_STREAM, "full"), local))
        return local

    def curl(self, url, out, extra=()):
        return ["curl", "-K", self.curlcfg, *extra, "-o", out, url]

    def site_stats(self, site):
        return counters(self.emu, site)

    def dumps_requested(self, site):
        return self.site_stats(site)["dump"]

    def add_row(self, name, ratios, target_op, target, raw, unit_note, extra_pass=True, note=""):
        med = statistics.median(ratios)
        ok = (med >= target if target_op == ">=" else med <= target) and extra_pass
        row = {"name": name, "ratio": summary(ratios), "target": {"op": target_op, "value": target,
               "text": f"{target_op} {target:g}"}, "pass": bool(ok), "ratio_is": unit_note,
               "rounds": len(ratios), "raw": raw}
        if note:
            row["note"] = note
        self.rows.append(row)
        log(f"bench: {name}: {med:.3f} ({'PASS' if ok else 'FAIL'})")
        self.save()
        return row

    def problem(self, text):
        if text not in self.problems:
            self.problems.append(text)
            log("bench: problem: " + text)

    def add_diag(self, name, value, raw, text):
        self.diag.append({"name": name, "value": value, "raw": raw, "text": text})
        log(f"bench: diag {name}: {text}")
        self.save()

    def order(self, i):
        return (0, 1) if i % 2 == 0 else (1, 0)

    # -- rows --------------------------------------------------------------
    def phase_stream(self):
        """cat MOUNT/.../fulldump.dmp > FILE vs curl -o FILE, same URL, same filesystem."""
        m = Mount(self, ["stream"])
        try:
            src = m.path("stream", f"w3wp-{PID_STREAM}", "fulldump.dmp")
            url = self.dump_url("stream", PID_STREAM, "full")
            dst = os.path.join(self.out, "dump.dmp")
            dst2 = os.path.join(self.out, "dump2.dmp")
            raw = {"kudufs_cat_to_file": [], "curl_to_file": [], "size": STREAM_SIZE}

            def kudufs_side(m=m, src=src):
                m.drop(src)
                before = self.dumps_requested("stream")
                quiesce()
                with open(dst, "wb") as f, Meter(self, m) as t:
                    run(["cat", src], stdout=f)
                sz = os.path.getsize(dst)
                rec = t.record(bytes=sz, dump_requests=self.dumps_requested("stream") - before,
                               vmhwm_mib=round(proc_status(m.proc.pid, "VmHWM") / MIB, 1))
                os.unlink(dst)
                m.drop(src)
                if sz != STREAM_SIZE:
                    raise RuntimeError(f"kudufs cat gave {sz} bytes, want {STREAM_SIZE}")
                return rec

            def curl_side():
                quiesce()
                with Meter(self) as t:
                    run(self.curl(url, dst))
                sz = os.path.getsize(dst)
                os.unlink(dst)
                return t.record(bytes=sz)

            ratios = []
            for i in range(ROUNDS):
                res = {}
                for side in self.order(i):
                    res[side] = kudufs_side() if side == 0 else curl_side()
                raw["kudufs_cat_to_file"].append(res[0])
                raw["curl_to_file"].append(res[1])
                ratios.append(res[1]["wall_s"] / res[0]["wall_s"])
            self.add_row(f"stream throughput ({STREAM_SIZE // MIB} MiB full dump to a file)", ratios,
                         ">=", 0.9, raw, "kudufs speed / curl speed (curl_s / kudufs_s)")

            # Diagnostics: the cost of writing the bytes twice (kudufs writes the
            # spool AND cat writes FILE), and both sides without the output file.
            two, k_null, c_null = [], [], []
            for i in range(ROUNDS):
                for side in self.order(i):
                    if side == 0:
                        m.drop(src)
                        quiesce()
                        with Meter(self, m) as t:
                            run(["cat", src])
                        k_null.append(t.record())
                        m.drop(src)
                    else:
                        quiesce()
                        with Meter(self) as t:
                            run(self.curl(url, "/dev/null"))
                        c_null.append(t.record())
            k_file = [r["wall_s"] for r in raw["kudufs_cat_to_file"]]
            c_file = [r["wall_s"] for r in raw["curl_to_file"]]
            kn = [r["wall_s"] for r in k_null]
            cn = [r["wall_s"] for r in c_null]
            self.add_diag("stream to /dev/null: kudufs cat vs curl -o /dev/null",
                          summary([c / k for c, k in zip(cn, kn)]),
                          {"kudufs_cat_devnull": k_null, "curl_devnull": c_null},
                          f"ratio curl/kudufs {statistics.median([c / k for c, k in zip(cn, kn)]):.2f}"
                          f" (kudufs {fmt_s(statistics.median(kn))}, curl {fmt_s(statistics.median(cn))};"
                          f" {STREAM_SIZE / statistics.median(kn) / MIB:.0f} vs"
                          f" {STREAM_SIZE / statistics.median(cn) / MIB:.0f} MiB/s)")
            for i in range(ROUNDS):
                quiesce()
                with Meter(self) as t:
                    run(self.curl(url, dst))
                    run(["cp", dst, dst2])
                rec = t.record()
                os.unlink(dst)
                os.unlink(dst2)
                two.append(rec)
            tw = [r["wall_s"] for r in two]
            self.add_diag("bytes written twice: curl -o FILE; cp FILE FILE2 (sequential)",
                          summary(tw), {"curl_then_cp": two},
                          f"{fmt_s(statistics.median(tw))} vs kudufs cat > FILE"
                          f" {fmt_s(statistics.median(k_file))} and curl -o FILE"
                          f" {fmt_s(statistics.median(c_file))}: kudufs/(curl+cp) ="
                          f" {statistics.median(k_file) / statistics.median(tw):.2f}")
        finally:
            m.close()

        # Diagnostic: the same race with the spool on tmpfs (cache_dir=/dev/shm/...),
        # which takes the ext4 write of the spool out of the picture.
        shm = "/dev/shm"
        if os.path.isdir(shm) and shutil.disk_usage(shm).free > 3 * STREAM_SIZE:
            cache = tempfile.mkdtemp(prefix="kudufs-bench-spool-", dir=shm)
            undo = CLEANUP.push(lambda: shutil.rmtree(cache, ignore_errors=True), "tmpfs spool")
            m = Mount(self, ["stream"], cache_dir=cache)
            try:
                src = m.path("stream", f"w3wp-{PID_STREAM}", "fulldump.dmp")
                ks, cs = [], []
                for i in range(ROUNDS):
                    for side in self.order(i):
                        if side == 0:
                            ks.append(kudufs_side(m, src))
                        else:
                            cs.append(curl_side())
                r = [c["wall_s"] / k["wall_s"] for c, k in zip(cs, ks)]
                self.add_diag("stream to a file with the spool on tmpfs (cache_dir=/dev/shm/...)", summary(r),
                              {"kudufs_cat_to_file": ks, "curl_to_file": cs},
                              f"ratio curl/kudufs {statistics.median(r):.2f} [{min(r):.2f}..{max(r):.2f}]"
                              f" (kudufs {fmt_s(statistics.median(k['wall_s'] for k in ks))},"
                              f" curl {fmt_s(statistics.median(c['wall_s'] for c in cs))})")
            finally:
                m.close()
                CLEANUP.discard(undo)
                shutil.rmtree(cache, ignore_errors=True)

    def phase_cached(self):
        """Second cat of a finished capture vs cat of a local file of the same size, both warm."""
        m = Mount(self, ["stream"])
        try:
            src = m.path("stream", f"w3wp-{PID_STREAM}", "fulldump.dmp")
            local = self.local_copy()
            m.drop(src)
            run(["cat", src])            # the capture
            m.wait_state(src)
            before = self.dumps_requested("stream")
            run(["cat", src])            # warm both
            run(["cat", local])
            quiesce()
            raw = {"kudufs_reread": [], "local_cat": [], "size": STREAM_SIZE}
            ratios = []
            for i in range(ROUNDS):
                res = {}
                for side in self.order(i):
                    with Meter(self, m if side == 0 else None) as t:
                        run(["cat", src if side == 0 else local])
                    res[side] = t.record()
                raw["kudufs_reread"].append(res[0])
                raw["local_cat"].append(res[1])
                ratios.append(res[1]["wall_s"] / res[0]["wall_s"])
            reqs = self.dumps_requested("stream") - before
            raw["dump_requests_during_rereads"] = reqs
            self.add_row(f"cached re-read ({STREAM_SIZE // MIB} MiB, to /dev/null)", ratios, ">=", 0.5,
                         raw, "kudufs speed / local file speed (local_s / kudufs_s)",
                         extra_pass=(reqs == 0))
            m.drop(src)
        finally:
            m.close()

    def phase_ttfb(self):
        """head -c1 of a minidump vs curl's time_starttransfer; server delays the dump 2 s."""
        m = Mount(self, ["slow"])
        try:
            src = m.path("slow", f"w3wp-{PID_SLOW}", "minidump.dmp")
            url = self.dump_url("slow", PID_SLOW, "mini")
            raw = {"kudufs_head_c1": [], "curl_starttransfer": [], "server_delay_s": 2}
            ratios = []
            for i in range(ROUNDS):
                res = {}
                for side in self.order(i):
                    if side == 0:
                        m.drop(src)
                        with Meter(self, m) as t:
                            p = run(["head", "-c1", src], stdout=subprocess.PIPE)
                        if len(p.stdout) != 1:
                            raise RuntimeError("head -c1 of the minidump read no byte")
                        res[0] = t.record()
                        m.wait_state(src)   # let the capture finish before the next dump
                        m.drop(src)
                    else:
                        with Meter(self) as t:
                            p = run(self.curl(url, "/dev/null", ["-w", "%{time_starttransfer}"]),
                                    stdout=subprocess.PIPE)
                        res[1] = t.record(time_starttransfer_s=float(p.stdout.decode()))
                raw["kudufs_head_c1"].append(res[0])
                raw["curl_starttransfer"].append(res[1])
                ratios.append(res[0]["wall_s"] / res[1]["time_starttransfer_s"])
            self.add_row("time to first byte (minidump, 2 s server delay)", ratios, "<=", 1.05, raw,
                         "kudufs head -c1 wall / curl time_starttransfer")
        finally:
            m.close()

    def phase_memory(self):
        """Daemon VmHWM while streaming a big full dump (fresh daemon each round)."""
        raw = {"rounds": [], "size": MEM_SIZE, "limit_mib": 64}
        ratios = []
        rounds = max(1, min(ROUNDS, int(os.environ.get("BENCH_MEM_ROUNDS", "2"))))
        for i in range(rounds):
            m = Mount(self, ["big"])
            try:
                src = m.path("big", f"w3wp-{PID_MEM}", "fulldump.dmp")
                base = proc_status(m.proc.pid, "VmHWM")
                quiesce()
                peak_rss = [0]
                stop = threading.Event()

                def sample():
                    while not stop.is_set():
                        peak_rss[0] = max(peak_rss[0], proc_status(m.proc.pid, "VmRSS"))
                        stop.wait(0.05)
                th = threading.Thread(target=sample, daemon=True)
                th.start()
                try:
                    with Meter(self, m) as t:
                        run(["cat", src])
                finally:
                    stop.set()
                    th.join()
                hwm = proc_status(m.proc.pid, "VmHWM")
                rec = t.record(vmhwm_mib=round(hwm / MIB, 2), vmhwm_at_mount_mib=round(base / MIB, 2),
                               peak_vmrss_sampled_mib=round(peak_rss[0] / MIB, 2),
                               spool_mib=round(m.spool_bytes() / MIB))
                raw["rounds"].append(rec)
                ratios.append(hwm / (64 * MIB))
                m.drop(src)
            finally:
                m.close()
        med = statistics.median(r["vmhwm_mib"] for r in raw["rounds"])
        self.add_row(f"memory (daemon VmHWM, {MEM_SIZE // MIB} MiB full dump)", ratios, "<=", 1.0, raw,
                     "VmHWM / 64 MiB", note=f"VmHWM median {med:.1f} MiB")

    def phase_many(self):
        """200 processes, 50 ms per request: ls + grep -L over the mount vs a sequential curl loop."""
        self.emu.add_fault(site="many", route="any", kind="latency", seconds=MANY_LATENCY)
        u = self.emu.url("many")
        work = os.path.join(self.tmp, "loop")
        loop = (
            'set -e; U=$1; C=$2; D=$3; mkdir -p "$D"\n'
            'curl -K "$C" "$U/api/processes" > "$D/list.json"\n'
            'for id in $(grep -o \'"id": *[0-9-]*\' "$D/list.json" | grep -o \'[0-9-]*$\'); do\n'
            '  curl -K "$C" "$U/api/processes/$id" > "$D/$id.json"\n'
            'done\n'
            'grep -L \'"is_scm_site": *true\' "$D"/*.json | grep -v list.json || true\n')
        raw = {"kudufs_ls_grep": [], "curl_loop": [], "latency_s": MANY_LATENCY, "processes": 200}
        ratios = []

        def fault():
            self.emu.reset()   # counters and faults
            self.emu.add_fault(site="many", route="any", kind="latency", seconds=MANY_LATENCY)
        try:
            for i in range(ROUNDS):
                res = {}
                for side in self.order(i):
                    fault()
                    if side == 0:
                        m = Mount(self, ["many"])
                        try:
                            app = m.path("many")
                            st0 = dict(self.site_stats("many"))
                            cmd = (f"ls {app} >/dev/null && grep -L '\"is_scm_site\": true' {app}/*/details.json")
                            with Meter(self, m) as t:
                                p = run(["bash", "-c", cmd], stdout=subprocess.PIPE, check=False)
                            st = self.emu.stats()
                            st1 = st["sites"]["many"]
                            # the glob also meets the site/scm symlinks: compare processes
                            pids = sorted({os.path.basename(os.path.dirname(os.path.realpath(f))).rsplit("-", 1)[1]
                                           for f in p.stdout.decode().split()})
                            res[0] = t.record(files_listed=len(p.stdout.split()), pids=len(pids), exit=p.returncode,
                                              list_requests=st1["list"] - st0["list"],
                                              details_requests=st1["details"] - st0["details"],
                                              peak_concurrent_requests=st["peak_concurrent"])
                        finally:
                            m.close()
                    else:
                        shutil.rmtree(work, ignore_errors=True)
                        with Meter(self) as t:
                            p = run(["bash", "-c", loop, "loop", u, self.curlcfg, work],
                                    stdout=subprocess.PIPE)
                        ids = sorted(os.path.basename(f)[:-5] for f in p.stdout.decode().split())
                        res[1] = t.record(files_listed=len(ids), pids=len(ids),
                                          peak_concurrent_requests=self.emu.stats()["peak_concurrent"])
                        shutil.rmtree(work, ignore_errors=True)
                raw["kudufs_ls_grep"].append(res[0])
                raw["curl_loop"].append(res[1])
                ratios.append(res[1]["wall_s"] / res[0]["wall_s"])
                if res[0]["pids"] != res[1]["pids"]:
                    self.problem(f"many processes: kudufs grep -L found {res[0]['pids']} non-SCM processes,"
                                 f" the curl loop {res[1]['pids']}")
        finally:
            self.emu.reset()
        k = statistics.median(r["wall_s"] for r in raw["kudufs_ls_grep"])
        peak = max(r["peak_concurrent_requests"] for r in raw["kudufs_ls_grep"])
        floor = MANY_LATENCY * (1 + 200 / 8)
        self.add_row("many processes (200, 50 ms/request: ls + grep -L details.json)", ratios, ">=", 8.0,
                     raw, "speedup: curl loop s / kudufs s",
                     note=f"kudufs {fmt_s(k)}; peak concurrent requests {peak};"
                          f" floor with 8 connections = 1 list + 200/8 waves of 50 ms = {fmt_s(floor)}")

    def listing_rounds(self, rounds, latency=0.0):
        """Rounds of: fresh mount, cold ls -l vs curl, wait for the details prefetch,
        warm ls -l vs curl (sides alternating); plus cold/warm plain ls on the side."""
        url = self.emu.url("list") + "/api/processes"
        raw = {"kudufs_cold": [], "kudufs_warm": [], "curl_cold_pair": [], "curl_warm_pair": [],
               "kudufs_cold_plain_ls": [], "kudufs_warm_plain_ls": [], "processes": 1000,
               "latency_s": latency}
        cold, warm = [], []
        self.emu.reset()
        if latency:
            self.emu.add_fault(site="list", route="any", kind="latency", seconds=latency)

        def ls(m, args):
            l0 = self.site_stats("list")["list"]
            with Meter(self, m) as t:
                p = run(["ls", *args, m.path("list")], stdout=subprocess.PIPE)
            return t.record(entries=len(p.stdout.splitlines()) - (1 if args else 0),
                            list_requests=self.site_stats("list")["list"] - l0)

        def curl():
            with Meter(self) as t:
                run(self.curl(url, "/dev/null"))
            return t.record()

        def settle():
            # let the background details prefetch that readdir started finish
            end = time.time() + 5
            last, same = -1, 0
            while time.time() < end and same < 3:
                d = self.site_stats("list")["details"]
                same = same + 1 if d == last else 0
                last = d
                time.sleep(0.05)
        try:
            for i in range(rounds):
                m = Mount(self, ["list"])
                try:
                    res = {}
                    for side in self.order(i):
                        res[side] = ls(m, ["-l"]) if side == 0 else curl()
                    raw["kudufs_cold"].append(res[0])
                    raw["curl_cold_pair"].append(res[1])
                    cold.append(res[0]["wall_s"] / res[1]["wall_s"])
                    settle()
                    res = {}
                    for side in self.order(i):
                        res[side] = ls(m, ["-l"]) if side == 0 else curl()
                    raw["kudufs_warm"].append(res[0])
                    raw["curl_warm_pair"].append(res[1])
                    warm.append(res[1]["wall_s"] / res[0]["wall_s"])
                    raw["kudufs_warm_plain_ls"].append(ls(m, []))
                finally:
                    m.close()
                m = Mount(self, ["list"])
                try:
                    raw["kudufs_cold_plain_ls"].append(ls(m, []))
                    settle()
                finally:
                    m.close()
        finally:
            self.emu.reset()
        return raw, cold, warm

    def phase_listing(self):
        """ls -l of 1000 processes, cold (fresh mount) and warm, vs curl of the list."""
        raw, cold, warm = self.listing_rounds(LIST_ROUNDS)
        cold_reqs_ok = all(r["list_requests"] == 1 for r in raw["kudufs_cold"])
        warm_reqs_ok = all(r["list_requests"] == 0 for r in raw["kudufs_warm"])
        med = lambda k: statistics.median(r["wall_s"] for r in raw[k])  # noqa: E731
        self.add_row("listing cold (ls -l, 1000 processes, fresh mount)", cold, "<=", 1.2,
                     {k: raw[k] for k in ("kudufs_cold", "curl_cold_pair", "kudufs_cold_plain_ls", "processes")},
                     "kudufs s / curl s", extra_pass=cold_reqs_ok,
                     note=f"ls -l {fmt_s(med('kudufs_cold'))}, curl {fmt_s(med('curl_cold_pair'))}")
        self.add_row("listing warm (ls -l again, within list_ttl)", warm, ">=", 10.0,
                     {k: raw[k] for k in ("kudufs_warm", "curl_warm_pair", "kudufs_warm_plain_ls", "processes")},
                     "speedup: curl s / kudufs s", extra_pass=warm_reqs_ok,
                     note=f"ls -l {fmt_s(med('kudufs_warm'))}, curl {fmt_s(med('curl_warm_pair'))}")

        # Diagnostics: what ls -l costs without FUSE, and per FUSE request.
        local = os.path.join(self.tmp, "local-1000")
        os.mkdir(local)
        for k in range(1000):
            os.mkdir(os.path.join(local, f"w3wp-{10000 + k}"))
        run(["ls", "-l", local])
        loc = []
        for _ in range(LIST_ROUNDS):
            with Meter(self) as t:
                run(["ls", "-l", local])
            loc.append(t.record())
        shutil.rmtree(local)
        lm = statistics.median(r["wall_s"] for r in loc)
        self.add_diag("ls -l of a local directory of 1000 subdirectories (no FUSE), warm",
                      summary([r["wall_s"] for r in loc]), {"local_ls_l": loc},
                      f"{lm * 1000:.1f} ms = {med('curl_warm_pair') / lm:.1f}x faster than curl of the list"
                      f" ({med('curl_warm_pair') * 1000:.1f} ms); kudufs warm ls -l {med('kudufs_warm') * 1000:.1f} ms,"
                      f" plain ls {med('kudufs_warm_plain_ls') * 1000:.1f} ms;"
                      f" cold plain ls {med('kudufs_cold_plain_ls') * 1000:.1f} ms")
        if shutil.which("strace"):
            m = Mount(self, ["list"])
            try:
                run(["ls", "-l", m.path("list")])
                with Meter(self, m) as t:
                    run(["ls", "-l", m.path("list")])
                fo = os.path.join(self.tmp, "strace.txt")
                run(["strace", "-c", "-f", "-o", fo, "ls", "-l", m.path("list")])
                calls = {}
                for line in open(fo):
                    f = line.split()
                    if len(f) >= 5 and f[-1] in ("statx", "lstat", "newfstatat", "getxattr",
                                                 "lgetxattr", "listxattr", "llistxattr", "getdents64"):
                        calls[f[-1]] = int(f[3])
                n = sum(v for k, v in calls.items() if k != "getdents64")
                self.add_diag("syscalls of one warm ls -l of 1000 processes (strace -c)", calls,
                              {"calls": calls, "warm_ls_l": t.record()},
                              ", ".join(f"{k} {v}" for k, v in sorted(calls.items())) +
                              f": {t.wall * 1e6 / max(n, 1):.0f} us per metadata syscall"
                              " (statx is answered from the kernel's attr cache within attr_timeout;"
                              " every getxattr is a FUSE round trip)")
            finally:
                m.close()

        # Diagnostic: the same with 50 ms per request, as over the internet to Kudu.
        raw2, cold2, warm2 = self.listing_rounds(ROUNDS, latency=MANY_LATENCY)
        self.add_diag("listing with 50 ms per request (cold ls -l / curl; warm curl / ls -l)",
                      {"cold": summary(cold2), "warm": summary(warm2)}, raw2,
                      f"cold {statistics.median(cold2):.2f}x curl's time, warm"
                      f" {statistics.median(warm2):.1f}x faster than curl")

    def readers(self, path, n, mount=None):
        with Meter(self, mount) as t:
            procs = [subprocess.Popen(["cat", path], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.PIPE) for _ in range(n)]
            try:
                rcs = [p.wait(timeout=600) for p in procs]
            finally:
                for p in procs:
                    stop_process(p, 1, term=True)
                    p.stderr.close()
        if any(rcs):
            raise RuntimeError(f"concurrent cat of {path} failed: {rcs}")
        return t

    def phase_concurrent(self):
        """8 simultaneous cat of one fulldump vs one reader; the server sees one request."""
        m = Mount(self, ["stream"])
        try:
            src = m.path("stream", f"w3wp-{PID_STREAM}", "fulldump.dmp")
            raw = {"one_reader": [], "eight_readers": [], "size": STREAM_SIZE}
            ratios, reqs_ok = [], True
            for i in range(ROUNDS):
                res = {}
                for side in self.order(i):
                    m.drop(src)
                    n = 1 if side == 0 else 8
                    before = self.dumps_requested("stream")
                    quiesce()
                    t = self.readers(src, n, m)
                    reqs = self.dumps_requested("stream") - before
                    res[side] = t.record(readers=n, dump_requests=reqs)
                    if reqs != 1:
                        reqs_ok = False
                    m.drop(src)
                raw["one_reader"].append(res[0])
                raw["eight_readers"].append(res[1])
                ratios.append(res[1]["wall_s"] / res[0]["wall_s"])
            one = statistics.median(r["wall_s"] for r in raw["one_reader"])
            self.add_row(f"concurrent readers (8 x cat of one {STREAM_SIZE // MIB} MiB full dump)", ratios,
                         "<=", 1.3, raw, "8 readers wall / 1 reader wall (and 1 dump request)",
                         extra_pass=reqs_ok,
                         note=f"dump requests per round: {[r['dump_requests'] for r in raw['eight_readers']]};"
                              f" one reader {fmt_s(one)}")

            # Diagnostics: 8 readers of bytes already there (finished capture; local
            # page-cached file): the cost of handing 8x the bytes to readers on 2 CPUs.
            run(["cat", src])
            m.wait_state(src)
            local = self.local_copy()
            run(["cat", local])
            d = {"capture_1": [], "capture_8": [], "local_1": [], "local_8": []}
            for i in range(ROUNDS):
                for side in self.order(i):
                    for n in (1, 8):
                        if side == 0:
                            d[f"capture_{n}"].append(self.readers(src, n, m).record())
                        else:
                            d[f"local_{n}"].append(self.readers(local, n).record())
            med = lambda k: statistics.median(r["wall_s"] for r in d[k])  # noqa: E731
            self.add_diag("8 readers of bytes already there: finished capture, local file (8x / 1x)",
                          {"capture": med("capture_8") / med("capture_1"), "local": med("local_8") / med("local_1")},
                          d, f"finished capture {fmt_s(med('capture_8'))} / {fmt_s(med('capture_1'))} ="
                             f" {med('capture_8') / med('capture_1'):.2f}x; local file {fmt_s(med('local_8'))} /"
                             f" {fmt_s(med('local_1'))} = {med('local_8') / med('local_1'):.2f}x")
            m.drop(src)
        finally:
            m.close()

    # -- output ------------------------------------------------------------
    def machine(self):
        model = ""
        try:
            for line in subprocess.run(["lscpu"], capture_output=True, text=True).stdout.splitlines():
                if line.startswith("Model name:"):
                    model = line.split(":", 1)[1].strip()
        except OSError:
            pass
        mem = 0
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = int(line.split()[1]) * 1024
        return {"nproc": os.cpu_count(), "ram_gib": round(mem / GIB, 1), "kernel": platform.release(),
                "cpu": model, "python": platform.python_version(),
                "curl": subprocess.run(["curl", "--version"], capture_output=True,
                                       text=True).stdout.split("\n")[0]}

    def save(self):
        data = {"rounds": ROUNDS, "machine": getattr(self, "_machine", None), "rows": self.rows,
                "diagnostics": self.diag, "problems": self.problems,
                "duration_s": round(time.time() - self.t_start, 1)}
        tmp = OUT + ".tmp"
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, OUT)

    def table(self):
        w = max(len(r["name"]) for r in self.rows)
        lines = [f"{'row':<{w}}  {'ratio median [min..max]':<24}  {'target':<7}  result",
                 f"{'-' * w}  {'-' * 24}  {'-' * 7}  ------"]
        for r in self.rows:
            q = r["ratio"]
            rng = f"{q['median']:.2f} [{q['min']:.2f}..{q['max']:.2f}]"
            lines.append(f"{r['name']:<{w}}  {rng:<24}  {r['target']['text']:<7}  "
                         f"{'pass' if r['pass'] else 'FAIL'}")
        return "\n".join(lines)


def main():
    b = Bench()
    b._machine = b.machine()
    # A benchmark on 2 shared CPUs: wait a little for other work to finish first.
    wait = float(os.environ.get("BENCH_WAIT_QUIET", "60"))
    end = time.time() + wait
    load = foreign_busy()
    if load > 0.25:
        log(f"bench: other processes use {load:.1f} CPUs; waiting up to {wait:.0f} s for a quiet machine")
        while load > 0.25 and time.time() < end:
            load = foreign_busy(2.0)
    b._machine["other_load_at_start_cpus"] = round(load, 2)
    b._machine["loadavg_at_start"] = open("/proc/loadavg").read().split()[:3]
    phases = ["stream", "cached", "ttfb", "memory", "many", "listing", "concurrent"]
    try:
        b.setup()
        for ph in phases:
            if ONLY and ph not in ONLY:
                continue
            log(f"bench: {ph} ...")
            getattr(b, "phase_" + ph)()
    finally:
        CLEANUP.run()
    b._machine["other_load_at_end_cpus"] = round(foreign_busy(), 2)
    b.save()
    m = b._machine
    print()
    print(f"kudufs bench: {ROUNDS} rounds per row (listing {LIST_ROUNDS}), sides alternating;"
          f" {m['nproc']} CPUs {m['cpu']}, {m['ram_gib']} GiB, Linux {m['kernel']}")
    busy = max(m["other_load_at_start_cpus"], m["other_load_at_end_cpus"])
    if busy > 0.2:
        print(f"warning: other processes kept {busy:.1f} of {m['nproc']} CPUs busy; the ratios are noisy")
    print(b.table())
    if b.diag:
        print("\ndiagnostics:")
        for d in b.diag:
            print(f"  {d['name']}: {d['text']}")
    for p in b.problems:
        print(f"problem: {p}")
    print(f"\n{sum(r['pass'] for r in b.rows)}/{len(b.rows)} targets met in {time.time() - b.t_start:.0f} s;"
          f" details in {os.path.relpath(OUT, os.getcwd())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
