"""The fault matrix (issue 17): every fault the emulator injects x every
operation a user makes on the mount, in one test that prints its table.

Each cell injects one fault on the operation's own route, runs the operation
the way a user would (ls, cat, cp, readlink in a subprocess) and asserts
  - the errno of the design's error table (shared/design.md, README "Errors"),
  - nothing partial served as complete (a dump that reads OK has the
    emulator's digest; a details.json that reads OK parses),
  - the call returned within its bound (the bounds its requests have, from
    the short -o timeouts below, plus slack for a loaded machine),
then clears the fault and asserts the mount serves that operation correctly.
list/details/dump TTLs are 0 so every operation asks the server again.

Most of a cell's time is waiting on a timeout, so the cells run in SHARDS
shards at once, each with its own emulator (faults, dump files, restarts and
"connection refused" are per emulator) and its own mount (own cache_dir): a
fault injected for one shard never reaches another. Each shard takes the next
cell from one queue, the slowest first, so they end together.
"""
import errno
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
import traceback

from conftest import start_mount, wait_emulator_idle, wait_for, write_config

META, FIRST_BYTE, STALL = 2, 3, 2
OPTS = [f"meta_timeout={META}", f"first_byte_timeout={FIRST_BYTE}", f"stall_timeout={STALL}",
        "min_rate=1K", "max_json=1M", "list_ttl=0", "detail_ttl=0", "negative_ttl=0", "dump_ttl=0",
        "connect_timeout=2"]
SLACK = 4.0
SITE_PID, SITE_DIR = 4292, "w3wp-4292"
MINI, FULL = 256 << 10, 1 << 20
SPEC = {"sites": {"demo": {"mini_size": MINI, "full_size": FULL, "dump_delay": 0,
                           "release_on_disconnect": True}}}
SHARDS = 3

# operation -> (route its fault goes on, bound in seconds: the requests it waits for)
OPS = {
    "ls": ("list", META),
    "cat details.json": ("details", 2 * META),      # list (lookup), details
    "cat minidump.dmp": ("dump", META + FIRST_BYTE + 2 * STALL),
    "cp fulldump.dmp": ("dump", META + FIRST_BYTE + 2 * STALL),
    # lookup, then readlink: each finds the role through the list and the
    # details of both w3wp (no negative caching here: negative_ttl=0)
    "readlink site": ("details", 6 * META),
}
DUMP_OPS = ("cat minidump.dmp", "cp fulldump.dmp")

T, E, A, N, OK = "ETIMEDOUT", "EIO", "EACCES", "ENOENT", "OK"
# fault name -> (fault spec without route, expected errno for JSON ops, for dump ops)
FAULTS = {
    "latency": ({"kind": "latency", "seconds": 6}, T, T),
    "slow generation": ({"kind": "slow_dump", "seconds": 6}, OK, T),
    "stall": ({"kind": "stall", "after_bytes": 100, "seconds": 6}, T, T),
    "slow trickle": ({"kind": "trickle", "after_bytes": 100, "seconds": 0.5}, T, T),
    "reset": ({"kind": "reset", "after_bytes": 100}, E, E),
    "short body": ({"kind": "short", "after_bytes": 100}, E, E),
    "401": ({"kind": "status", "status": 401}, A, A),
    "403": ({"kind": "status", "status": 403}, A, A),
    "404": ({"kind": "status", "status": 404}, N, N),
    "429 Retry-After 1": ({"kind": "status", "status": 429, "retry_after": "1"}, E, E),
    "503 Retry-After 86400": ({"kind": "status", "status": 503, "retry_after": "86400"}, E, E),
    "500": ({"kind": "status", "status": 500, "message": "boom"}, E, E),
    "front-end 230 s cut": ({"kind": "frontend_timeout"}, T, T),
    "malformed JSON": ({"kind": "malformed"}, E, E),
    "oversized JSON": ({"kind": "oversized", "bytes": 2 << 20}, E, E),
    "gzip bomb": ({"kind": "gzip_bomb", "inflated_bytes": 64 << 20}, E, E),
    "redirect": ({"kind": "redirect"}, E, E),
    "duplicate ids": ({"kind": "duplicate_ids"}, OK, OK),
    "connection refused": (None, E, E),
    "restart mid-download": (None, E, E),
}
# Cells where the design's table gives another answer than the row's.
EXPECT = {
    # the site link is found through details: a 404 there means that process is
    # gone, and the link then names the other w3wp or nothing; not a network error
    ("404", "readlink site"): (N,),
}
# (a malformed, oversized or gzip-bomb body on the dump route is a 200 that is
# JSON, not a dump: EIO, never kept)

LS = """import os, sys
try:
    print("\\n".join(os.listdir(sys.argv[1])))
except OSError as e:
    sys.exit("ls: %s: %s" % (sys.argv[1], e.strerror))
"""
ERRNO_BY_TEXT = {os.strerror(getattr(errno, n)): n for n in
                 ("ETIMEDOUT", "EIO", "EACCES", "ENOENT", "ENOTCONN", "ECONNABORTED", "EINTR",
                  "ENOSPC", "EFBIG", "EAGAIN", "EINVAL", "ENOTDIR")}


def errno_of(stderr):
    for text, name in ERRNO_BY_TEXT.items():
        if text in stderr:
            return name
    return "?" + stderr.strip()[-80:]


class Matrix:
    def __init__(self, emu, mnt, tmp):
        self.emu, self.mnt, self.tmp = emu, mnt, tmp
        self.digests = {t: emu.digest("demo", SITE_PID, t)["sha256"] for t in (1, 2)}

    def op(self, name, timeout=60):
        """Run an operation; (errno name or OK, seconds, problem or None)."""
        app = os.path.join(self.mnt, "demo")
        out = os.path.join(self.tmp, "out")
        if os.path.exists(out):
            os.unlink(out)
        # "ls" is getdents through os.listdir: ls(1) takes a getdents ENOENT
        # for the end of the directory and shows an empty one, exit 0
        cmd = {"ls": [sys.executable, "-c", LS, app],
               "cat details.json": ["cat", os.path.join(app, SITE_DIR, "details.json")],
               "cat minidump.dmp": ["sh", "-c", 'exec cat "$1" > "$2"', "sh",
                                    os.path.join(app, SITE_DIR, "minidump.dmp"), out],
               "cp fulldump.dmp": ["cp", os.path.join(app, SITE_DIR, "fulldump.dmp"), out],
               "readlink site": ["readlink", "-v", os.path.join(app, "site")]}[name]
        t0 = time.monotonic()
        try:
            r = subprocess.run(cmd, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "HUNG", time.monotonic() - t0, "no answer within %d s" % timeout
        secs = time.monotonic() - t0
        if r.returncode != 0:
            return errno_of(r.stderr.decode(errors="replace")), secs, None
        return OK, secs, self.check_ok(name, r.stdout, out)

    def check_ok(self, name, stdout, out):
        """Nothing partial or wrong served as complete: None, or what is wrong."""
        if name == "ls":
            names = stdout.decode().split()
            if SITE_DIR not in names or len(names) != len(set(names)):
                return "listing %r" % names
        elif name == "cat details.json":
            try:
                if json.loads(stdout).get("id") != SITE_PID:
                    return "details of another process"
            except ValueError:
                return "details.json not JSON"
        elif name == "readlink site":
            if stdout.decode().strip() != SITE_DIR:
                return "site -> %r" % stdout.decode().strip()
        else:
            with open(out, "rb") as f:
                got = hashlib.sha256(f.read()).hexdigest()
            if got != self.digests[1 if name.startswith("cat") else 2]:
                return "a dump with the wrong digest was served as complete"
        return None


def run_cell(mx, emu, fault_name, op):
    spec, want_json, want_dump = FAULTS[fault_name]
    route, bound = OPS[op]
    want = EXPECT.get((fault_name, op), (want_dump if op in DUMP_OPS else want_json,))
    emu.clear_faults()
    if fault_name == "connection refused":
        port = emu.port
        emu.stop()
        try:
            got, secs, problem = mx.op(op)
        finally:
            emu._want_port = port  # back on the same port, as a restarted server would be
            try:
                emu.start()
            finally:
                emu._want_port = 0
    elif fault_name == "restart mid-download":
        if op in DUMP_OPS:
            emu.add_fault(route="dump", kind="rate", bytes_per_second=64 << 10)
        else:
            emu.add_fault(route=route, kind="latency", seconds=5)
        res = {}
        th = threading.Thread(target=lambda: res.update(r=mx.op(op)))
        th.start()
        assert wait_for(lambda: any(k in str(emu.stats()["current"]) for k in (route,)) or
                        emu.stats()["current"], timeout=10), "the request never reached the server"
        time.sleep(0.3)  # into the body (dumps) or the wait (JSON)
        emu.restart()
        th.join(60)
        got, secs, problem = res.get("r", ("HUNG", 60, "no answer"))
    else:
        emu.add_fault(route=route, **spec)
        got, secs, problem = mx.op(op)
    emu.clear_faults()
    cell = {"got": got, "secs": secs, "problems": []}
    if got not in want:
        cell["problems"].append("errno %s, want %s" % (got, "/".join(want)))
    if problem:
        cell["problems"].append(problem)
    if secs > bound + SLACK:
        cell["problems"].append("took %.1f s, bound %.0f s" % (secs, bound + SLACK))
    # the fault cleared, the mount serves this operation correctly again. A
    # dump the client gave up on keeps the emulator's (as Kudu's) dump file
    # busy until its handler ends: a dump then would be Kudu's 500 conflict.
    wait_emulator_idle(emu, timeout=20)
    rgot, rsecs, rproblem = mx.op(op)
    if rgot != OK or rproblem:
        cell["problems"].append("after the fault: %s %s" % (rgot, rproblem or ""))
    return cell


def cost(fault_name, op):
    """A rough guess of a cell's seconds, to hand out the slow cells first: a
    cell that waits on a timeout takes about its bound, and the emulator's
    handler sleeps on for the fault's seconds (the recovery waits for it)."""
    spec, want_json, want_dump = FAULTS[fault_name]
    if (want_dump if op in DUMP_OPS else want_json) != T:
        return 0
    return OPS[op][1] + (spec or {}).get("seconds", 0)


def print_table(cells, write):
    ops = list(OPS)
    w = max(len(f) for f in FAULTS) + 2
    cw = 20
    write("\nfault matrix (errno, seconds; * = a problem, listed below)\n")
    write("".ljust(w) + "".join(o.ljust(cw) for o in ops) + "\n")
    problems = []
    for f in FAULTS:
        row = f.ljust(w)
        for o in ops:
            c = cells.get((f, o), {"got": "-", "secs": 0, "problems": ["not run"]})
            mark = "*" if c["problems"] else ""
            row += ("%s %.1fs%s" % (c["got"], c["secs"], mark)).ljust(cw)
            problems += ["%s x %s: %s" % (f, o, "; ".join(c["problems"]))] if c["problems"] else []
        write(row + "\n")
    for p in problems:
        write("  * " + p + "\n")
    return problems


class Shard:
    """One emulator and one kudufs mount of their own, and the cells run on them."""

    def __init__(self):
        self.emu = self.mount = self.tmp = None
        self.ran, self.busy, self.error = 0, 0.0, None

    def start(self, make_emulator, tmp):
        """The emulator (make_emulator stops it at teardown) and the mount (the caller
        unmounts it, mounted or not)."""
        self.tmp = tmp
        tmp.mkdir()
        self.emu = make_emulator(SPEC)
        cfg = write_config(str(tmp), {"demo": self.emu.url("demo")})
        mnt = tmp / "mnt"
        mnt.mkdir()
        self.mount = start_mount(cfg, str(mnt), str(tmp), opts=OPTS)

    def run(self, todo, lock, cells, stop):
        """Take cells from todo (under lock) until it is empty or stop is set. An exception
        ends this shard (its emulator or mount may be gone): the cell records it, the
        other shards take the cells left."""
        cell = None
        try:
            assert self.mount.mounted, self.mount.log()
            mx = Matrix(self.emu, self.mount.path, str(self.tmp))
            for op in OPS:  # the healthy baseline
                got, _, problem = mx.op(op)
                assert got == OK and not problem, (op, got, problem)
            while not stop.is_set():
                with lock:
                    if not todo:
                        return
                    cell = todo.pop(0)
                t0 = time.monotonic()
                result = run_cell(mx, self.emu, *cell)
                self.busy += time.monotonic() - t0
                self.ran += 1
                with lock:
                    cells[cell] = result
                cell = None
        except BaseException:
            self.error = "%s\n%s" % ("%s x %s" % cell if cell else "baseline",
                                      traceback.format_exc())
            if cell:
                with lock:
                    cells[cell] = {"got": "RAISED", "secs": 0, "problems": ["raised, see below"]}


def test_fault_matrix(make_emulator, tmp_path, capsys):
    cells, shards, threads = {}, [], []
    lock, stop = threading.Lock(), threading.Event()
    # the slowest first (a stable sort: the table's order among equals)
    todo = sorted(((f, op) for f in FAULTS for op in OPS), key=lambda c: -cost(*c))
    try:
        for i in range(SHARDS):
            shards.append(Shard())
            shards[-1].start(make_emulator, tmp_path / ("shard%d" % i))
        t0 = time.monotonic()
        for sh in shards:
            th = threading.Thread(target=sh.run, args=(todo, lock, cells, stop), daemon=True)
            th.start()
            threads.append(th)
        # every cell ends by itself (each call has its timeout); a deadline all the same
        deadline = t0 + 300
        for th in threads:
            th.join(max(0, deadline - time.monotonic()))
        elapsed = time.monotonic() - t0
        stop.set()
        with lock, capsys.disabled():
            problems = print_table(cells, lambda s: print(s, end=""))
            print("%d cells in %.0f s, %d shards (%s)" % (
                len(cells), elapsed, len(shards),
                ", ".join("%d cells %.0f s" % (sh.ran, sh.busy) for sh in shards)))
        failures = problems + [sh.error for sh in shards if sh.error]
        failures += ["shard %d still runs after 300 s" % i for i, th in enumerate(threads)
                     if th.is_alive()]
        failures += ["kudufs died:\n" + sh.mount.log()[-3000:] for sh in shards
                     if sh.mount.proc.poll() is not None]
        assert not failures, "\n".join(failures)
    finally:
        stop.set()
        for sh in shards:
            if sh.mount is not None:
                sh.mount.unmount()
        for th in threads:  # unmounted, a cell still running fails fast
            th.join(30)
