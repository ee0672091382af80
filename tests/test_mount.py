"""The mount (issue 5): the process tree of every configured app on a real FUSE
mount against the emulator, read with real tools (ls -l, find, stat, readlink,
jq, cat), the list/details cache seen through the emulator's request counters,
sanitized names, read-only answers, and the errno every fault shows a reader.

Every mount and emulator comes from the conftest fixtures, which unmount and
stop them even when a test fails."""
import errno
import json
import os
import re
import time

import pytest

from helpers import SH, counters, emu_get, emu_json, process_dirs, run, sh, wait_for, xattr


def os_errno(fn, *a):
    """The errno an os-level call fails with (None when it succeeds)."""
    try:
        fn(*a)
    except OSError as e:
        return e.errno
    return None


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


# --------------------------------------------------------------------------- fixtures

MAX_CONNS = 4


@pytest.fixture
def two_apps(make_emulator, mount):
    """Apps demo (the default 4 processes) and big (200 processes) on one emulator;
    list/details TTLs long enough that nothing expires during a test."""
    emu = make_emulator({"sites": {"demo": {}, "big": {"count": 200}}})
    m = mount({"demo": emu.url("demo"), "big": emu.url("big")},
              opts=("list_ttl=60", "detail_ttl=120", "max_conns=%d" % MAX_CONNS))
    return emu, m


# --------------------------------------------------------------------------- the tree


def test_ls_l_costs_one_list_request_and_prefetches_details_in_parallel(two_apps):
    emu, m = two_apps
    big = os.path.join(m.path, "big")
    emu.reset()
    # every details request is slowed a little, so overlapping requests are visible
    emu.add_fault(route="details", site="big", kind="latency", seconds=0.05)

    r = run(["ls", "-l", big])
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("total ")
    dirs = [ln for ln in lines[1:] if ln.startswith("d")]
    # 200 process directories and instances/, all alike
    assert len(dirs) == 201, r.stdout[:2000]
    assert all(ln.startswith("dr-xr-xr-x") for ln in dirs)
    assert re.search(r"^dr-xr-xr-x .* instances$", r.stdout, re.M), r.stdout[:3000]
    assert re.search(r"^-r--r--r-- .* processes\.json$", r.stdout, re.M)
    assert re.search(r"^lrwxrwxrwx .* site -> w3wp-4292$", r.stdout, re.M), r.stdout[:3000]
    assert re.search(r"^lrwxrwxrwx .* scm -> w3wp-4100$", r.stdout, re.M)
    s = counters(emu, "big")
    assert s["list"] == 1, s
    # listing instances/ in the app asks nothing about instances; listing it would
    assert s["instance_all"] == 0, s
    assert counters(emu, "demo")["list"] == 0, "ls of one app must not list the other"

    # a cached repeat within list_ttl: no list request at all
    r2 = run(["ls", "-l", big])
    assert r2.returncode == 0 and r2.stdout == r.stdout
    assert counters(emu, "big")["list"] == 1

    # readdir started a background fetch of all 200 details, in parallel, at most max_conns
    assert wait_for(lambda: counters(emu, "big")["details"] >= 200, timeout=30), counters(emu, "big")
    st = emu.stats()
    assert 1 < st["peak_concurrent"] <= MAX_CONNS, st["peak_concurrent"]
    n = st["sites"]["big"]["details"]
    assert n == 200, "each process's details fetched exactly once, got %d" % n

    # so reading every details.json right after is served from the cache
    r = sh("cat %s/*/details.json" % big)
    assert r.returncode == 0, r.stderr
    objs = r.stdout.replace("}\n{", "}\x00{").split("\x00")
    # the glob also goes through the site and scm symlinks
    ids = [json.loads(o)["id"] for o in objs]
    assert len(ids) == 202 and len(set(ids)) == 200
    s = counters(emu, "big")
    assert s["details"] == 200 and s["list"] == 1, s


def test_find_stat_readlink_jq(two_apps):
    emu, m = two_apps
    root = m.path
    r = run(["find", root])
    assert r.returncode == 0, r.stderr
    found = set(r.stdout.splitlines())
    expect = {root, root + "/.kudufs", root + "/.kudufs/status.json", root + "/demo", root + "/big",
              root + "/demo/processes.json", root + "/demo/site", root + "/demo/scm",
              root + "/demo/instances", root + "/big/instances",
              root + "/big/processes.json", root + "/big/site", root + "/big/scm"}
    for d in ("w3wp-4100", "w3wp-4292", "dotnet-5012", "php-cgi-6240"):
        expect |= {"%s/demo/%s" % (root, d)} | {"%s/demo/%s/%s" % (root, d, f) for f in
                                                ("details.json", "minidump.dmp", "fulldump.dmp")}
    assert expect <= found, sorted(expect - found)
    # find also walks instances/: the emulator's app has one instance, with the same processes
    big_inst = root + "/big/instances/"
    big_app = [p for p in found if p.startswith(root + "/big/") and not p.startswith(big_inst)]
    (inst,) = os.listdir(big_inst)
    assert len([p for p in big_app if p.endswith("/details.json")]) == 200
    # find does not follow the symlinks, and nothing else is in the tree (a Windows
    # process directory: details, two dumps, threads, modules)
    assert len(big_app) == 4 + 200 * 6, len(big_app)
    in_inst = sorted(p[len(big_inst + inst):] for p in found if p.startswith(big_inst))
    assert in_inst == sorted([""] + [p[len(root + "/big"):] for p in big_app if p != root + "/big/instances"])

    # stat: modes, sizes, block size
    site = root + "/demo/w3wp-4292"
    r = run(["stat", "-c", "%n|%F|%a|%s|%o", site, site + "/details.json", site + "/minidump.dmp",
             site + "/fulldump.dmp", root + "/demo/processes.json", root + "/.kudufs/status.json"])
    assert r.returncode == 0, r.stderr
    rows = [ln.split("|") for ln in r.stdout.splitlines()]
    assert rows[0][1:3] == ["directory", "555"]
    details_bytes = read_file(site + "/details.json")
    assert rows[1][1:4] == ["regular file", "444", str(len(details_bytes))]
    for row in rows[2:4]:
        assert row[1:] == ["regular empty file", "400", "0", "131072"], row
    assert rows[4][1:4] == ["regular file", "444", str(len(read_file(root + "/demo/processes.json")))]
    assert rows[5][2] == "444" and int(rows[5][3]) > 0
    r = run(["stat", "-c", "%F", root + "/demo/site"])
    assert r.stdout.strip() == "symbolic link"

    # readlink: site is the w3wp without is_scm_site, scm the one with it
    r = run(["readlink", root + "/demo/site", root + "/demo/scm", root + "/big/site", root + "/big/scm"])
    assert r.returncode == 0 and r.stdout.split() == ["w3wp-4292", "w3wp-4100", "w3wp-4292", "w3wp-4100"]
    assert read_file(root + "/demo/site/details.json") == details_bytes

    # processes.json is the server's list, byte for byte
    assert read_file(root + "/demo/processes.json") == emu_get(emu, "demo", "/api/processes")
    assert read_file(root + "/big/processes.json") == emu_get(emu, "big", "/api/processes")

    # details.json: pretty-printed, and equal to the server's JSON after parse (time_stamp is
    # the server's clock at the time of each request, so it alone may differ)
    assert details_bytes.startswith(b"{\n ") and b"\n  " in details_bytes, details_bytes[:80]
    for app, d, pid in (("demo", "w3wp-4292", 4292), ("demo", "w3wp-4100", 4100),
                        ("demo", "dotnet-5012", 5012), ("big", "node-10003", 10003)):
        r = run(["jq", "-S", "del(.time_stamp)", "%s/%s/%s/details.json" % (root, app, d)])
        assert r.returncode == 0, r.stderr
        server = emu_json(emu, app, "/api/processes/%d" % pid)
        assert "time_stamp" in server
        server.pop("time_stamp")
        assert json.loads(r.stdout) == server
    r = run(["jq", "-r", ".time_stamp", site + "/details.json"])
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{7}Z\n", r.stdout), r.stdout

    # the design's examples
    r = sh("jq -c .is_scm_site %s/demo/*-*/details.json" % root)
    assert r.returncode == 0 and sorted(r.stdout.split()) == ["null", "null", "null", "true"]
    r = run(["jq", "-r", ".name, .id", root + "/demo/site/details.json"])
    assert r.stdout.split() == ["w3wp", "4292"]
    r = run(["jq", "length", root + "/big/processes.json"])
    assert r.stdout.strip() == "200"

    # status.json is JSON naming both apps
    status = json.loads(read_file(root + "/.kudufs/status.json"))
    assert sorted(a["name"] for a in status["apps"]) == ["big", "demo"]
    assert status["captures"] == []


# --------------------------------------------------------------------------- names


WEIRD = [
    {"name": "w3wp", "pid": 4100, "scm": True},
    {"name": "w3wp", "pid": 4292},
    {"name": "a/b", "pid": 7001},
    {"name": "..", "pid": 7002},
    {"name": ".", "pid": 7003},
    {"name": "evil\nname", "pid": 7004},
    {"name": "x" * 300, "pid": 7005},
    {"name": "../../etc/passwd", "pid": 7006},
    {"name": "tab\tbell\x07del\x7f", "pid": 7007},
    {"name": "", "pid": 7008},
    {"name": "caf\u00e9-\u65e5\u672c", "pid": 7009},
]


def test_server_names_are_sanitized(make_emulator, mount):
    emu = make_emulator({"sites": {"weird": {"processes": WEIRD}}})
    m = mount({"weird": emu.url("weird")})
    app = os.path.join(m.path, "weird")
    r = run(["ls", "-l", app])
    assert r.returncode == 0, r.stderr
    names = sorted(os.listdir(app))
    assert {"processes.json", "site", "scm", "instances"} <= set(names), names
    dirs = process_dirs(app)
    assert len(dirs) == len(WEIRD), names
    by_pid = {}
    for n in dirs:
        b = n.encode()
        assert n not in (".", "..") and "/" not in n
        assert not any(c < 0x20 or c == 0x7f for c in b), repr(n)
        assert len(b) <= 255, len(b)
        pid = int(n.rsplit("-", 1)[1])
        by_pid[pid] = n
    assert sorted(by_pid) == sorted(p["pid"] for p in WEIRD)
    assert by_pid[7001] == "a_b-7001"
    assert by_pid[7004] == "evil_name-7004"
    assert by_pid[7005].startswith("x" * 200) and by_pid[7005].endswith("-7005")
    assert by_pid[7009] == "caf\u00e9-\u65e5\u672c-7009"
    # every one is a working directory whose details.json keeps the server's name
    for p in WEIRD:
        d = os.path.join(app, by_pid[p["pid"]])
        assert sorted(os.listdir(d)) == ["details.json", "fulldump.dmp", "minidump.dmp",
                                         "modules.json", "threads.json"]
        r = run(["jq", "-r", ".name", os.path.join(d, "details.json")])
        assert r.returncode == 0, r.stderr
        assert r.stdout == p["name"] + "\n"
    r = run(["find", app])
    assert r.returncode == 0, r.stderr
    # nothing escapes the app directory
    assert all(os.path.realpath(os.path.join(app, n)).startswith(os.path.realpath(app) + "/") for n in dirs)


def test_10000_processes_list_without_error(make_emulator, mount):
    emu = make_emulator({"sites": {"huge": {"count": 10000}}})
    m = mount({"huge": emu.url("huge")}, opts=("list_ttl=60",))
    app = os.path.join(m.path, "huge")
    emu.reset()
    t = time.monotonic()
    r = sh("ls -l %s | wc -l" % app)
    took = time.monotonic() - t
    assert r.returncode == 0, r.stderr
    # "total" line + processes.json + site + scm + instances + 10000 dirs
    assert int(r.stdout) == 1 + 4 + 10000, r.stdout
    assert counters(emu, "huge")["list"] == 1
    r = run(["jq", "length", os.path.join(app, "processes.json")])
    assert r.returncode == 0 and r.stdout.strip() == "10000"
    r = sh("find %s -maxdepth 1 -type d | wc -l" % app)
    assert int(r.stdout) == 1 + 1 + 10000  # the app, instances, the processes
    assert took < 60, took
    # the last ones are as good as the first
    r = run(["jq", "-r", ".id", os.path.join(app, "node-19999", "details.json")])
    assert r.returncode == 0 and r.stdout.strip() == "19999", r.stderr


# --------------------------------------------------------------------------- read-only


def test_every_write_is_read_only_file_system(two_apps):
    emu, m = two_apps
    d = os.path.join(m.path, "demo")
    details = os.path.join(d, "w3wp-4292", "details.json")
    before = read_file(details)
    cmds = [
        ["touch", os.path.join(d, "newfile")],
        ["touch", details],
        ["touch", os.path.join(d, "w3wp-4292", "minidump.dmp")],
        ["mkdir", os.path.join(d, "newdir")],
        ["mkdir", os.path.join(m.path, "newapp")],
        ["rm", details],
        ["rm", "-f", os.path.join(d, "processes.json")],
        ["rm", os.path.join(d, "site")],
        ["rmdir", os.path.join(d, "dotnet-5012")],
        ["mv", os.path.join(d, "processes.json"), os.path.join(d, "p.json")],
        ["ln", "-s", "x", os.path.join(d, "link")],
        ["chmod", "666", details],
        [SH, "-c", "echo x > %s" % details],
        [SH, "-c", "echo x >> %s" % details],
        [SH, "-c", "echo x > %s/status.json" % os.path.join(m.path, ".kudufs")],
        [SH, "-c", "echo x > %s/new.txt" % d],
    ]
    for c in cmds:
        r = run(c)
        assert r.returncode != 0, c
        assert "Read-only file system" in r.stderr, (c, r.stderr)
    # and at the system-call level
    assert os_errno(os.open, details, os.O_WRONLY) == errno.EROFS
    assert os_errno(os.open, details, os.O_RDWR) == errno.EROFS
    assert os_errno(os.open, os.path.join(d, "x"), os.O_WRONLY | os.O_CREAT, 0o600) == errno.EROFS
    assert os_errno(os.mkdir, os.path.join(d, "y")) == errno.EROFS
    assert os_errno(os.rename, details, details + ".bak") == errno.EROFS
    assert os_errno(os.setxattr, details, "user.x", b"1") == errno.EROFS
    assert read_file(details) == before
    assert sorted(os.listdir(d)) == sorted(["dotnet-5012", "instances", "php-cgi-6240", "processes.json", "scm",
                                            "site", "w3wp-4100", "w3wp-4292"])


# --------------------------------------------------------------------------- errors


@pytest.fixture
def faulty(make_emulator, mount):
    """demo and other on one emulator, no metadata caching, so every ls/cat asks the server."""
    emu = make_emulator({"sites": {"demo": {}, "other": {}}})
    m = mount({"demo": emu.url("demo"), "other": emu.url("other")},
              opts=("list_ttl=0", "detail_ttl=0", "negative_ttl=0"))
    # warm the kernel's dentries, then start counting
    assert run(["ls", os.path.join(m.path, "demo", "w3wp-4292")]).returncode == 0
    emu.reset()
    return emu, m


LS_FAULTS = [
    # (fault, errno, message)
    ({"kind": "status", "status": 401}, errno.EACCES, "Permission denied"),
    ({"kind": "status", "status": 403}, errno.EACCES, "Permission denied"),
    ({"kind": "status", "status": 500}, errno.EIO, "Input/output error"),
    ({"kind": "status", "status": 400}, errno.EIO, "Input/output error"),
    ({"kind": "malformed"}, errno.EIO, "Input/output error"),
    ({"kind": "malformed", "body": "{\"not\": \"a list\"}"}, errno.EIO, "Input/output error"),
]


@pytest.mark.parametrize("fault,err,msg", LS_FAULTS,
                         ids=["401", "403", "500", "400", "malformed", "not-a-list"])
def test_list_fault_errno_at_ls_then_recovers(faulty, fault, err, msg):
    emu, m = faulty
    app = os.path.join(m.path, "demo")
    emu.add_fault(route="list", site="demo", **fault)
    r = run(["ls", "-l", app])
    assert r.returncode != 0
    assert msg in r.stderr, r.stderr
    assert os_errno(os.listdir, app) == err
    assert os_errno(os.stat, os.path.join(app, "processes.json")) == err
    # never ENOENT for a server or network error
    r = run(["cat", os.path.join(app, "processes.json")])
    assert r.returncode != 0 and msg in r.stderr, r.stderr
    # the daemon keeps serving the other app meanwhile
    r = run(["ls", os.path.join(m.path, "other")])
    assert r.returncode == 0 and "w3wp-4292" in r.stdout, r.stderr
    emu.clear_faults()
    r = run(["ls", "-l", app])
    assert r.returncode == 0 and "w3wp-4292" in r.stdout, r.stderr
    assert json.loads(read_file(os.path.join(app, "processes.json")))[0]["name"]


DETAIL_FAULTS = [
    ({"kind": "status", "status": 401}, errno.EACCES, "Permission denied"),
    ({"kind": "status", "status": 500}, errno.EIO, "Input/output error"),
    ({"kind": "malformed", "body": "{\"id\": 5012, \"name\": "}, errno.EIO, "Input/output error"),
    ({"kind": "status", "status": 404, "message": "Process with an Id of 5012 is not running."},
     errno.ENOENT, "No such file or directory"),
]


@pytest.mark.parametrize("fault,err,msg", DETAIL_FAULTS, ids=["401", "500", "malformed", "404"])
def test_details_fault_errno_at_cat_then_recovers(faulty, fault, err, msg):
    emu, m = faulty
    path = os.path.join(m.path, "demo", "dotnet-5012", "details.json")
    emu.add_fault(route="details", site="demo", pid=5012, **fault)
    r = run(["cat", path])
    assert r.returncode != 0 and r.stdout == ""
    assert msg in r.stderr, r.stderr
    assert os_errno(read_file, path) == err
    # other processes of the app are unaffected
    r = run(["jq", "-r", ".name", os.path.join(m.path, "demo", "w3wp-4292", "details.json")])
    assert r.returncode == 0 and r.stdout == "w3wp\n", r.stderr
    emu.clear_faults()
    r = wait_for(lambda: (lambda r: r if r.returncode == 0 else None)(run(["jq", "-r", ".name", path])),
                 timeout=5)
    assert r and r.stdout == "dotnet\n", "details.json did not recover after the fault was cleared"


def test_role_link_details_error_is_not_enoent(faulty):
    """site/scm are found through details: a server error there is EIO, never 'no such file'."""
    emu, m = faulty
    site = os.path.join(m.path, "demo", "site")
    emu.add_fault(route="details", site="demo", kind="status", status=500)
    assert os_errno(os.readlink, site) == errno.EIO
    emu.clear_faults()
    assert os.readlink(site) == "w3wp-4292"


def test_list_items_with_pid_or_identifier_instead_of_id(faulty):
    """dotnet-monitor's process items (KuduLite proxies them) carry pid, ARM's identifier."""
    emu, m = faulty
    body = json.dumps([{"pid": 77, "name": "dotnet", "uid": "x"},
                       {"identifier": 78, "name": "w3wp"}, {"name": "no-id"}])
    emu.add_fault(route="list", site="demo", kind="status", status=200, body=body,
                  content_type="application/json")
    r = run(["ls", os.path.join(m.path, "demo")])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["dotnet-77", "instances", "processes.json", "scm", "site", "w3wp-78"], r.stdout


def test_repeated_pid_listed_once_first_item_kept(faulty):
    """Two items with one pid could never be told apart in the tree: the first is shown, the log says so."""
    emu, m = faulty
    body = json.dumps([{"id": 77, "name": "first"}, {"id": 78, "name": "w3wp"},
                       {"id": 77, "name": "second"}])
    emu.add_fault(route="list", site="demo", kind="status", status=200, body=body,
                  content_type="application/json")
    r = run(["ls", os.path.join(m.path, "demo")])
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["first-77", "instances", "processes.json", "scm", "site", "w3wp-78"], r.stdout
    assert wait_for(lambda: "1 with a pid listed before" in m.log(), timeout=5), m.log()


ROLE = "user.kudufs.role"


def role_of(path):
    return os.getxattr(path, ROLE).decode()


def test_role_xattr_agrees_with_the_site_and_scm_links(make_emulator, mount):
    """user.kudufs.role on each process directory: site, scm or empty, by the rule the
    <app>/site and <app>/scm links use (w3wp, else dotnet; is_scm_site); the site link
    names the first site process of a web garden, the xattr marks them all."""
    emu = make_emulator({"sites": {
        "demo": {},
        # no w3wp (Linux, Functions): dotnet holds the roles
        "lin": {"processes": [{"name": "node", "pid": 30}, {"name": "dotnet", "pid": 31, "scm": True},
                              {"name": "dotnet", "pid": 32}, {"name": "dotnet", "pid": 33}]},
        "none": {"processes": [{"name": "node", "pid": 40}]},
    }})
    m = mount({a: emu.url(a) for a in ("demo", "lin", "none")}, opts=("list_ttl=60", "detail_ttl=120"))
    for app, expect in (("demo", {"w3wp-4100": "scm", "w3wp-4292": "site", "dotnet-5012": "",
                                  "php-cgi-6240": ""}),
                        ("lin", {"node-30": "", "dotnet-31": "scm", "dotnet-32": "site",
                                 "dotnet-33": "site"}),  # a web garden: the link names the first
                        ("none", {"node-40": ""})):
        d = os.path.join(m.path, app)
        got = {e: role_of(os.path.join(d, e)) for e in process_dirs(d)}
        assert got == expect, (app, got)
        for role in ("site", "scm"):
            link = os.path.join(d, role)
            if role in expect.values():
                assert got[os.readlink(link)] == role
                assert os.readlink(link) == sorted((p for p in got if got[p] == role),
                                                   key=lambda p: int(p.rsplit("-", 1)[1]))[0]
            else:
                assert os_errno(os.readlink, link) == errno.ENOENT
        assert ROLE in os.listxattr(os.path.join(d, sorted(expect)[0]))
    # only process directories have it
    assert os_errno(os.getxattr, os.path.join(m.path, "demo"), ROLE) == errno.ENODATA
    assert os_errno(os.getxattr, os.path.join(m.path, "demo", "instances"), ROLE) == errno.ENODATA
    assert os_errno(os.getxattr, os.path.join(m.path, "demo", "w3wp-4292", "details.json"),
                    ROLE) == errno.ENODATA


def test_role_xattr_details_error_is_the_error_not_empty(faulty):
    """A candidate whose details fail has an unknown role: EIO, never a wrong ''."""
    emu, m = faulty
    d = os.path.join(m.path, "demo", "w3wp-4292")
    emu.add_fault(route="details", site="demo", kind="status", status=500)
    assert os_errno(os.getxattr, d, ROLE) == errno.EIO
    # a process that cannot hold a role needs no details
    assert role_of(os.path.join(m.path, "demo", "php-cgi-6240")) == ""
    emu.clear_faults()
    assert role_of(d) == "site"


def test_meta_timeout_option_bounds_a_hung_list(make_emulator, mount):
    emu = make_emulator()
    m = mount({"demo": emu.url("demo")}, opts=("meta_timeout=1", "list_ttl=0", "negative_ttl=0"))
    emu.add_fault(route="list", site="demo", kind="latency", seconds=4)
    t0 = time.monotonic()
    assert os_errno(os.listdir, os.path.join(m.path, "demo")) == errno.ETIMEDOUT
    assert time.monotonic() - t0 < 3.5


def test_404_pid_is_enoent_and_vanished_process_leaves_the_list(make_emulator, mount):
    emu = make_emulator()
    # the list stays cached, details are asked for on every open
    m = mount({"demo": emu.url("demo")}, opts=("list_ttl=60", "detail_ttl=0", "negative_ttl=30"))
    app = os.path.join(m.path, "demo")
    # a pid the server never listed
    r = run(["cat", os.path.join(app, "w3wp-99999", "details.json")])
    assert r.returncode != 0 and "No such file or directory" in r.stderr
    r = run(["ls", os.path.join(app, "w3wp-99999")])
    assert r.returncode != 0 and "No such file or directory" in r.stderr
    assert os_errno(os.stat, os.path.join(app, "nosuchname")) == errno.ENOENT
    # a listed name with the wrong pid suffix, and a listed pid under another name
    assert os_errno(os.stat, os.path.join(app, "dotnet-4292")) == errno.ENOENT
    assert "php-cgi-6240" in os.listdir(app)
    # that listing prefetches every process's details in the background: let
    # it finish first, or it may see the kill below and cache the 404 itself
    assert wait_for(lambda: counters(emu, "demo")["details"] >= 4, timeout=10)
    # the process goes away between the (cached) list and the read
    emu.kill("demo", 6240)
    emu.reset()
    r = run(["cat", os.path.join(app, "php-cgi-6240", "details.json")])
    assert r.returncode != 0 and "No such file or directory" in r.stderr, r.stderr
    assert counters(emu, "demo")["details"] >= 1
    # ... and leaves the listing, although the list itself is still cached
    r = run(["ls", app])
    assert r.returncode == 0 and "php-cgi-6240" not in r.stdout.split(), r.stdout
    assert "w3wp-4292" in r.stdout
    assert counters(emu, "demo")["list"] == 0


def test_emulator_down_is_eio_never_enoent_other_app_still_served(make_emulator, mount):
    down = make_emulator()
    up = make_emulator()
    m = mount({"demo": down.url("demo"), "other": up.url("demo")},
              opts=("list_ttl=0", "detail_ttl=0", "connect_timeout=5"))
    app = os.path.join(m.path, "demo")
    assert "w3wp-4292" in os.listdir(app)
    down.stop()
    r = run(["ls", "-l", app])
    assert r.returncode != 0 and "Input/output error" in r.stderr, r.stderr
    assert os_errno(os.listdir, app) == errno.EIO
    r = run(["cat", os.path.join(app, "w3wp-4292", "details.json")])
    assert r.returncode != 0
    assert "Input/output error" in r.stderr and "No such file" not in r.stderr, r.stderr
    # the daemon keeps serving the app whose server is up
    r = run(["jq", "-r", ".name", os.path.join(m.path, "other", "site", "details.json")])
    assert r.returncode == 0 and r.stdout == "w3wp\n", r.stderr
    assert m.proc.poll() is None


# --------------------------------------------------------------------------- cleanup


def test_unmount_leaves_no_mount_and_no_process(make_emulator, mount):
    emu = make_emulator()
    m = mount({"demo": emu.url("demo")})
    assert os.listdir(os.path.join(m.path, "demo"))
    with open("/proc/mounts") as f:
        assert any(" %s " % m.path in line for line in f)
    assert m.unmount() == 0
    assert not os.path.ismount(m.path)
    assert not os.path.exists("/proc/%d" % m.pid) or \
        open("/proc/%d/stat" % m.pid).read().split()[2] == "Z"
    with open("/proc/mounts") as f:
        assert not any(m.path in line for line in f)
    # the spool directory goes with the daemon
    cache = os.path.join(m.tmp, "cache")
    assert not os.path.exists(cache) or not [e for e in os.listdir(cache) if e.startswith("spool-")]


# --------------------------------------------------------------------------- sharing and retries


def test_concurrent_lookups_of_one_item_share_one_request(make_emulator, mount):
    emu = make_emulator()
    m = mount({"demo": emu.url("demo")}, opts=("list_ttl=60", "detail_ttl=60"))
    path = os.path.join(m.path, "demo", "php-cgi-6240", "details.json")
    assert os.path.isdir(os.path.dirname(path))  # list cached; no readdir, so no prefetch
    emu.reset()
    emu.add_fault(route="details", kind="latency", seconds=0.5)
    r = sh(" & ".join(["jq -r .name %s" % path] * 6) + " & wait")
    assert r.returncode == 0 and r.stdout.split() == ["php-cgi"] * 6, r.stderr
    assert counters(emu, "demo")["details"] == 1


@pytest.mark.parametrize("status", [429, 503])
def test_list_429_503_retried_honoring_retry_after(make_emulator, mount, status):
    emu = make_emulator()
    m = mount({"demo": emu.url("demo")}, opts=("list_ttl=0",))
    emu.reset()
    emu.add_fault(route="list", kind="status", status=status, retry_after=1, count=2)
    t = time.monotonic()
    r = run(["ls", os.path.join(m.path, "demo")])
    took = time.monotonic() - t
    assert r.returncode == 0 and "w3wp-4292" in r.stdout, r.stderr
    assert counters(emu, "demo")["list"] == 3
    assert took >= 1.8, "Retry-After: 1 was not honoured (%.2f s)" % took


def test_security_and_acl_xattrs_not_supported(emulator, mount):
    """No labels, no ACLs: security.* and system.posix_acl_* are EOPNOTSUPP (ls -l then stops
    asking for the rest of a listing), user.kudufs.* as before."""
    m = mount({"demo": emulator.url("demo")})
    app = os.path.join(m.path, "demo")
    for p in (app, os.path.join(app, "w3wp-4292"), os.path.join(app, "w3wp-4292", "minidump.dmp")):
        for name in ("security.selinux", "system.posix_acl_access", "trusted.x"):
            with pytest.raises(OSError) as e:
                os.getxattr(p, name)
            assert e.value.errno == errno.EOPNOTSUPP, (p, name)
    assert xattr(os.path.join(app, "w3wp-4292", "minidump.dmp"), "state") == "idle"
    r = run(["ls", "-l", app])
    assert r.returncode == 0 and "w3wp-4292" in r.stdout, r.stderr


def test_epoll_on_files_reports_ready(emulator, mount):
    """Go programs (azcopy) add each file they open to epoll: a file of the tree is
    registered and reported readable at once, before and after a FUSE_POLL reached the
    daemon, and the read that follows is the file. (The daemon frees libfuse's poll handle;
    make asan's LeakSanitizer checks that.)"""
    import select
    m = mount({"demo": emulator.url("demo")})
    details = os.path.join(m.path, "demo", "w3wp-4292", "details.json")
    want = read_file(details)
    for _ in range(2):
        with open(details, "rb") as f:
            ep = select.epoll()
            try:
                ep.register(f.fileno(), select.EPOLLIN)
                events = ep.poll(5)
            finally:
                ep.close()
            assert events and events[0][1] & select.EPOLLIN, events
            assert f.read() == want
