"""Scaled-out apps (issue 16): MOUNT/<app>/instances/<id>/, how instances are found
(`instances =`, ARM with a token_command, Kudu's /instance/all, the ids the front end
named), pinning every request to its instance and refusing answers from another one,
one dump per app at a time across instances, and --check's report. Real mounts against
tests/kudu_emulator.py with --instances."""
import hashlib
import json
import os
import re
import socket
import stat
import subprocess
import threading

import pytest

from helpers import process_dirs, read_rss_hwm, wait_for
from test_captures import SANITIZED

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KUDUFS = os.environ.get("KUDUFS_BIN", os.path.join(ROOT, "kudufs"))


def inst_dir(m, iid, app="demo"):
    return os.path.join(m.path, app, "instances", iid)


def live(emu, site="demo"):
    return emu.instances(site)["live"]


def xattr(path, name="user.kudufs.instance"):
    return os.getxattr(path, name).decode()


def read_json(path):
    with open(path) as f:
        return json.load(f)


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(1 << 20)
            if not b:
                return h.hexdigest()
            h.update(b)


def routing(emu, site="demo"):
    """[route, cookie received, instance served, Set-Cookie sent] per counted request."""
    return emu.stats()["sites"][site]["routing"]


def token_script(tmp, name="token.sh"):
    """A token_command that prints the token in tmp/token and counts its runs in tmp/runs."""
    script = os.path.join(tmp, name)
    with open(script, "w") as f:
        f.write("#!/bin/sh\necho run >> '%s/runs'\ncat '%s/token'\n" % (tmp, tmp))
    os.chmod(script, 0o700)
    return script


def set_token(tmp, token):
    p = os.path.join(tmp, "token")
    with open(p, "w") as f:
        f.write(token + "\n")
    os.chmod(p, 0o600)


def runs(tmp):
    try:
        with open(os.path.join(tmp, "runs")) as f:
            return len(f.read().splitlines())
    except FileNotFoundError:
        return 0


def arm_app(emu, tmp, **extra):
    app = {"url": emu.url("demo"), "arm_resource": emu.arm_resource("demo"),
           "arm_token_command": token_script(tmp)}
    app.update(extra)
    return app


# ------------------------------------------------------------------ the tree

def test_every_instance_is_a_complete_view(make_emulator, mount):
    emu = make_emulator(instances=3)
    ids = live(emu)
    m = mount({"demo": emu.url("demo")})
    top = sorted(os.listdir(os.path.join(m.path, "demo")))
    # `ls MOUNT/<app>` shows instances/, a directory like the process directories
    assert "instances" in top and "site" in top and "processes.json" in top, top
    st = os.lstat(os.path.join(m.path, "demo", "instances"))
    assert stat.S_ISDIR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o555, oct(st.st_mode)
    assert st.st_mode == os.lstat(os.path.join(m.path, "demo", "w3wp-4292")).st_mode
    # listing the app (and stat of instances/) asks nothing about instances; listing it does
    assert emu.stats()["sites"]["demo"]["instance_all"] == 0, emu.stats()["sites"]["demo"]
    assert sorted(os.listdir(os.path.join(m.path, "demo", "instances"))) == sorted(ids)
    assert emu.stats()["sites"]["demo"]["instance_all"] >= 1, emu.stats()["sites"]["demo"]
    for iid in ids:
        d = inst_dir(m, iid)
        names = os.listdir(d)
        assert {"processes.json", "site", "scm", "w3wp-4292", "w3wp-4100", "php-cgi-6240"} <= set(names)
        assert "instances" not in names
        assert os.path.realpath(os.path.join(d, "site")) == os.path.join(d, "w3wp-4292")
        assert os.path.realpath(os.path.join(d, "scm")) == os.path.join(d, "w3wp-4100")
        listed = read_json(os.path.join(d, "processes.json"))
        dotnet = [p["id"] for p in listed if p["name"] == "dotnet"]
        # dotnet's pid is unique per instance in the emulator: the list is that instance's
        assert len(dotnet) == 1 and "dotnet-%d" % dotnet[0] in names
        # the process directories and dump files of an instance carry its id
        assert xattr(os.path.join(d, "w3wp-4292")) == iid
        assert xattr(os.path.join(d, "w3wp-4292", "minidump.dmp")) == iid
        assert "user.kudufs.instance" in os.listxattr(os.path.join(d, "w3wp-4292", "fulldump.dmp"))
        assert read_json(os.path.join(d, "w3wp-4292", "details.json"))["machineName"] == \
            emu.instances("demo")["machines"][iid]
    # every request made for an instance's path carried exactly that instance's cookie and
    # was served there
    for route, sent, served, set_cookie in routing(emu):
        if sent is not None:
            assert sent == served and not set_cookie, (route, sent, served, set_cookie)
    # the app-level view: one instance's processes, labelled with that instance
    app_view = os.path.join(m.path, "demo", "w3wp-4292")
    label = xattr(app_view)
    assert label in ids
    assert read_json(os.path.join(app_view, "details.json"))["machineName"] == \
        emu.instances("demo")["machines"][label]


def test_a_single_instance_app_lists_its_one_instance(make_emulator, mount):
    """Without --instances the emulator's app has one implicit instance, as most apps do:
    `ls MOUNT/<app>` shows instances/ too, and it holds that one instance, the one the
    app-level view shows."""
    emu = make_emulator()
    (only,) = live(emu)
    m = mount({"demo": emu.url("demo")})
    app = os.path.join(m.path, "demo")
    assert "instances" in os.listdir(app)
    assert os.listdir(os.path.join(app, "instances")) == [only]
    assert xattr(os.path.join(app, "w3wp-4292")) == only
    view = inst_dir(m, only)
    assert "instances" not in os.listdir(view)
    assert not os.path.exists(os.path.join(view, "instances"))
    assert sorted(process_dirs(view)) == sorted(process_dirs(app))
    assert xattr(os.path.join(view, "w3wp-4292")) == only


def test_ls_instances_fetches_their_lists_in_parallel(make_emulator, mount):
    """`ls instances` starts every instance's list in the background (bounded by
    max_conns), so listing them one by one after costs no more requests."""
    emu = make_emulator(instances=4)
    emu.add_fault(route="list", kind="latency", seconds=0.5, count=4)
    m = mount({"demo": emu.url("demo")}, opts=["max_conns=4"])
    ids = os.listdir(os.path.join(m.path, "demo", "instances"))
    assert len(ids) == 4

    def listed():
        return {r[1] for r in routing(emu) if r[0] == "list" and r[1] in ids}
    assert wait_for(lambda: listed() == set(ids), timeout=10), listed()
    assert emu.stats()["peak_concurrent"] >= 2
    before = emu.stats()["requests"]["list"]
    for iid in ids:
        assert "processes.json" in os.listdir(inst_dir(m, iid))
    assert emu.stats()["requests"]["list"] == before


def test_memory_stays_flat_with_30_instances(make_emulator, mount):
    """Every instance listed and each one's processes and details read: the daemon's
    peak memory grows by the lists and details it holds (a few kB an instance), not by
    per-instance tables (measured here: VmHWM 11.0 MB with 1 instance, 11.9 MB with 30)."""
    def peak(n):
        emu = make_emulator(instances=n)
        m = mount({"demo": emu.url("demo")})
        base = os.path.join(m.path, "demo", "instances")
        ids = os.listdir(base)
        assert len(ids) == n
        for iid in ids:
            for d in os.listdir(os.path.join(base, iid)):
                p = os.path.join(base, iid, d)
                if os.path.isdir(p) and not os.path.islink(p):
                    read_json(os.path.join(p, "details.json"))
        hwm = read_rss_hwm(m.pid)
        m.unmount()
        return hwm

    one, thirty = peak(1), peak(30)
    # ASan keeps freed memory in quarantine and adds shadow memory: the bound is a
    # property of the real build (as test_captures' RSS bound)
    if not SANITIZED:
        assert thirty - one < 4 * 1024, (one, thirty)


def test_equal_pids_on_two_instances_are_two_processes(make_emulator, mount):
    emu = make_emulator(instances=2)
    a, b = live(emu)
    m = mount({"demo": emu.url("demo")}, opts=["detail_ttl=0"])
    da = read_json(os.path.join(inst_dir(m, a), "php-cgi-6240", "details.json"))
    db = read_json(os.path.join(inst_dir(m, b), "php-cgi-6240", "details.json"))
    assert da["id"] == db["id"] == 6240
    assert da != db
    machines = emu.instances("demo")["machines"]
    assert da["machineName"] == machines[a] and db["machineName"] == machines[b]
    assert da["environment_variables"]["WEBSITE_INSTANCE_ID"] == a
    assert db["environment_variables"]["WEBSITE_INSTANCE_ID"] == b


def test_three_site_minidumps_at_once(make_emulator, mount):
    """3 instances' site minidumps read at once: 3 correct digests, the dumps of the app
    one at a time (one %HOME%), each taken on the instance it is filed under."""
    emu = make_emulator({"sites": {"demo": {"dump_delay": 0.3, "mini_size": 3 << 20}}}, instances=3)
    ids = live(emu)
    m = mount({"demo": emu.url("demo")})
    got, errors = {}, []

    def read(iid):
        try:
            got[iid] = sha256_of(os.path.join(inst_dir(m, iid), "site", "minidump.dmp"))
        except OSError as e:  # reported below, with the others
            errors.append((iid, e))

    threads = [threading.Thread(target=read, args=(i,)) for i in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for iid in ids:
        assert got[iid] == emu.digest("demo", 4292, 1, instance=iid)["sha256"], iid
    assert len(set(got.values())) == 3
    st = emu.stats()["sites"]["demo"]
    assert st["dump_peak"] == 1 and st["dump_conflicts"] == 0, st
    iv = sorted(st["dump_intervals"], key=lambda x: x["start"])
    assert sorted(x["instance"] for x in iv) == sorted(ids) and all(x["complete"] for x in iv), iv
    for x, y in zip(iv, iv[1:]):
        assert x["end"] <= y["start"], "two dumps of one app overlapped: %s" % iv
    # status.json says on which instance each capture was taken
    status = read_json(os.path.join(m.path, ".kudufs", "status.json"))
    assert sorted(c["instance"] for c in status["captures"]) == sorted(ids)
    # the app-level view's dump of the same instance is the same capture: no second dump
    app_inst = xattr(os.path.join(m.path, "demo", "w3wp-4292"))
    assert sha256_of(os.path.join(m.path, "demo", "site", "minidump.dmp")) == got[app_inst]
    assert emu.stats()["sites"]["demo"]["dump"] == 3


def test_dumps_of_both_views_and_two_types_never_overlap(make_emulator, mount):
    emu = make_emulator({"sites": {"demo": {"dump_delay": 0.2, "mini_size": 2 << 20,
                                            "full_size": 3 << 20}}}, instances=2)
    a, b = live(emu)
    m = mount({"demo": emu.url("demo")})
    paths = [os.path.join(inst_dir(m, a), "w3wp-4292", "fulldump.dmp"),
             os.path.join(inst_dir(m, b), "php-cgi-6240", "minidump.dmp"),
             os.path.join(m.path, "demo", "php-cgi-6240", "fulldump.dmp")]
    errors = []

    def read(p):
        try:
            sha256_of(p)
        except OSError as e:
            errors.append((p, e))

    threads = [threading.Thread(target=read, args=(p,)) for p in paths]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    st = emu.stats()["sites"]["demo"]
    assert st["dump_peak"] == 1 and st["dump_conflicts"] == 0, st


# ------------------------------------------------------------------ an instance that goes

def test_removed_instance_turns_enoent_and_is_dropped(make_emulator, mount):
    emu = make_emulator(instances=3)
    ids = live(emu)
    gone, others = ids[1], [i for i in ids if i != ids[1]]
    # list_ttl long: the instance list is cached, so it is the pinned request's
    # verification, not a new discovery, that finds the instance gone
    m = mount({"demo": emu.url("demo")}, opts=["list_ttl=300", "detail_ttl=0"])
    d = inst_dir(m, gone)
    assert "w3wp-4292" in os.listdir(d)
    assert read_json(os.path.join(d, "w3wp-4292", "details.json"))["machineName"] == \
        emu.instances("demo")["machines"][gone]
    emu.remove_instance("demo", gone)
    with pytest.raises(FileNotFoundError):
        read_json(os.path.join(d, "w3wp-4292", "details.json"))
    # the front end did answer, from another instance: that answer was refused, and
    # nothing of another instance shows under the gone one's name
    rerouted = [r for r in routing(emu) if r[1] == gone]
    assert rerouted and rerouted[-1][2] in others and rerouted[-1][3], rerouted[-1]
    paths = (d, os.path.join(d, "processes.json"), os.path.join(d, "w3wp-4292"),
             os.path.join(d, "w3wp-4292", "details.json"), os.path.join(d, "w3wp-4292", "minidump.dmp"))
    for p in paths[1:]:
        if os.path.isdir(p):
            continue
        with pytest.raises(FileNotFoundError):  # every open asks the mount, at once
            open(p, "rb").close()
    # stat may be answered from the kernel's dentry cache for entry_timeout (1 s)
    assert wait_for(lambda: not any(os.path.exists(p) for p in paths), timeout=5), \
        [p for p in paths if os.path.exists(p)]
    assert gone not in os.listdir(os.path.join(m.path, "demo", "instances"))
    assert "is gone" in m.log() and gone in m.log()
    # the others are untouched
    for iid in others:
        assert xattr(os.path.join(inst_dir(m, iid), "w3wp-4292")) == iid
    # back: discovery lists it again, and its own data is served under its name
    emu.add_instance("demo", gone)
    assert gone in os.listdir(os.path.join(m.path, "demo", "instances"))
    assert read_json(os.path.join(d, "w3wp-4292", "details.json"))["machineName"] == \
        emu.instances("demo")["machines"][gone]


def test_removed_instance_during_a_dump_request(make_emulator, mount):
    emu = make_emulator(instances=2)
    a, b = live(emu)
    m = mount({"demo": emu.url("demo")}, opts=["list_ttl=300"])
    p = os.path.join(inst_dir(m, a), "w3wp-4292", "minidump.dmp")
    assert os.path.exists(p)
    emu.remove_instance("demo", a)
    with pytest.raises(FileNotFoundError):
        with open(p, "rb") as f:
            f.read(4096)
    # no dump was written on the instance that answered in its place
    st = emu.stats()["sites"]["demo"]
    assert st["instances"][b]["dump"] == 0 and st["dump"] == 0, st
    assert wait_for(lambda: not os.path.exists(inst_dir(m, a)), timeout=5)
    assert "is gone" in m.log()


def test_app_level_pin_follows_a_moved_instance(make_emulator, mount):
    emu = make_emulator(instances=2)
    a, b = live(emu)
    m = mount({"demo": {"url": emu.url("demo"), "instance": a}}, opts=["list_ttl=0", "detail_ttl=0"])
    proc = os.path.join(m.path, "demo", "w3wp-4292")
    assert xattr(proc) == a
    assert read_json(os.path.join(proc, "details.json"))["machineName"] == \
        emu.instances("demo")["machines"][a]
    emu.remove_instance("demo", a)
    # the view follows the front end to b, and says so; what it shows is labelled b
    wait_for(lambda: os.listdir(os.path.join(m.path, "demo")) and xattr(proc) == b, timeout=10)
    assert xattr(proc) == b
    assert read_json(os.path.join(proc, "details.json"))["machineName"] == \
        emu.instances("demo")["machines"][b]
    assert re.search(r"instance %s no longer answers.*moved the app-level view to instance %s" % (a, b),
                     m.log()), m.log()


# ------------------------------------------------------------------ finding them

def test_instances_config_lists_exactly_those(make_emulator, mount):
    emu = make_emulator(instances=3)
    ids = live(emu)
    m = mount({"demo": {"url": emu.url("demo"), "instances": "%s, %s" % (ids[2], ids[0])}})
    assert os.listdir(os.path.join(m.path, "demo", "instances")) == [ids[2], ids[0]]
    assert not os.path.exists(inst_dir(m, ids[1]))
    assert xattr(os.path.join(inst_dir(m, ids[2]), "w3wp-4292")) == ids[2]
    st = emu.stats()
    assert st["sites"]["demo"]["instance_all"] == 0 and st["arm"]["requests"] == 0


def test_instance_all_is_used_without_arm(make_emulator, mount):
    emu = make_emulator(instances=2)
    m = mount({"demo": emu.url("demo")})
    assert sorted(os.listdir(os.path.join(m.path, "demo", "instances"))) == sorted(live(emu))
    assert emu.stats()["sites"]["demo"]["instance_all"] >= 1


def test_without_discovery_the_named_instances_are_listed(make_emulator, mount):
    emu = make_emulator(instances=3)
    emu.add_fault(route="instance_all", kind="status", status=404, message="Not Found")
    m = mount({"demo": emu.url("demo")}, opts=["list_ttl=1"])
    os.listdir(os.path.join(m.path, "demo"))
    named = os.listdir(os.path.join(m.path, "demo", "instances"))
    assert len(named) >= 1 and set(named) <= set(live(emu))
    assert xattr(os.path.join(m.path, "demo", "w3wp-4292")) in named
    for iid in named:
        assert xattr(os.path.join(inst_dir(m, iid), "w3wp-4292")) == iid
    # said once, with why, however often instances/ is listed
    for _ in range(3):
        os.listdir(os.path.join(m.path, "demo", "instances"))
    lines = [l for l in m.log().splitlines() if "instance discovery failed" in l]
    assert len(lines) == 1 and "/instance/all" in lines[0] and "404" in lines[0], m.log()


def test_arm_discovery_with_a_token_command(make_emulator, mount, tmp_path):
    emu = make_emulator({"arm_page_size": 2}, instances=5, arm_token="arm-tok-1")
    set_token(tmp_path, "arm-tok-1")
    m = mount({"demo": arm_app(emu, tmp_path)}, config_extra="arm_endpoint = %s" % emu.arm_endpoint)
    assert sorted(os.listdir(os.path.join(m.path, "demo", "instances"))) == sorted(live(emu))
    st = emu.stats()
    assert st["sites"]["demo"]["arm_instances"] >= 3, st["sites"]["demo"]  # 5 ids, pages of 2
    assert st["sites"]["demo"]["instance_all"] == 0
    assert runs(tmp_path) == 1
    assert "arm-tok-1" not in m.log()


def test_arm_token_expiring_mid_run(make_emulator, mount, tmp_path):
    emu = make_emulator(instances=2, arm_token="arm-tok-1")
    set_token(tmp_path, "arm-tok-1")
    m = mount({"demo": arm_app(emu, tmp_path)}, config_extra="arm_endpoint = %s" % emu.arm_endpoint)
    inst = os.path.join(m.path, "demo", "instances")
    assert sorted(os.listdir(inst)) == sorted(live(emu))
    # the token expires; the command now prints a new one
    emu.set_arm_token("arm-tok-2")
    set_token(tmp_path, "arm-tok-2")
    new = emu.add_instance("demo")["id"]
    # ls refreshes the list: 401, the command runs once more, and the listing goes on
    assert sorted(os.listdir(inst)) == sorted(live(emu)) and new in os.listdir(inst)
    assert runs(tmp_path) == 2
    assert emu.stats()["arm"]["unauthorized"] == 1
    assert xattr(os.path.join(inst, new, "w3wp-4292")) == new
    assert "arm-tok" not in m.log()


def test_arm_wrong_token_is_permission_denied(make_emulator, mount, tmp_path):
    emu = make_emulator(instances=2, arm_token="the-right-one")
    set_token(tmp_path, "a-wrong-token-xyz")
    m = mount({"demo": arm_app(emu, tmp_path)}, config_extra="arm_endpoint = %s" % emu.arm_endpoint)
    with pytest.raises(PermissionError):
        os.listdir(os.path.join(m.path, "demo", "instances"))
    # re-run once on the 401, then refused
    assert runs(tmp_path) == 2
    # the app-level view does not depend on ARM
    assert "w3wp-4292" in os.listdir(os.path.join(m.path, "demo"))
    read_json(os.path.join(m.path, "demo", "w3wp-4292", "details.json"))
    assert "a-wrong-token-xyz" not in m.log()
    assert re.search(r"demo: instances: ARM instance list of demo: 401", m.log()), m.log()


def test_arm_next_link_to_another_host_is_refused(make_emulator, mount, tmp_path):
    """The ARM token only goes to arm_endpoint's host: a nextLink naming another one is
    not followed (a listener there sees no connection), and discovery falls back to
    Kudu's /instance/all, saying why."""
    emu = make_emulator(instances=2, arm_token="arm-tok-1")
    set_token(tmp_path, "arm-tok-1")
    trap = socket.socket()
    trap.bind(("127.0.0.1", 0))
    trap.listen(4)
    trap.setblocking(False)
    try:
        ids = live(emu)
        page = {"value": [{"name": ids[0]}],
                "nextLink": "http://127.0.0.1:%d%s/instances?api-version=2024-11-01&page=2" %
                            (trap.getsockname()[1], emu.arm_resource("demo"))}
        emu.add_fault(route="arm", kind="status", status=200, body=json.dumps(page),
                      content_type="application/json")
        m = mount({"demo": arm_app(emu, tmp_path)}, config_extra="arm_endpoint = %s" % emu.arm_endpoint)
        assert sorted(os.listdir(os.path.join(m.path, "demo", "instances"))) == sorted(ids)
        assert emu.stats()["sites"]["demo"]["instance_all"] >= 1
        with pytest.raises(BlockingIOError):
            trap.accept()
        assert "refusing to send ARM credentials to http://127.0.0.1:%d" % trap.getsockname()[1] in m.log()
        assert "arm-tok-1" not in m.log()
    finally:
        trap.close()


# ------------------------------------------------------------------ --check

def check(emu, tmp_path, app_lines, extra=""):
    pw = tmp_path / "demo.pass"
    pw.write_text(emu.password + "\n")
    pw.chmod(0o600)
    cfg = tmp_path / "check.conf"
    cfg.write_text("[kudufs]\ncache_dir = %s/cache\n%s\n[app demo]\nurl = %s\nuser = %s\n"
                   "password_file = %s\n%s\n" % (tmp_path, extra, emu.url("demo"), emu.user, pw,
                                                 app_lines))
    cfg.chmod(0o600)
    env = dict(os.environ, HOME=str(tmp_path))
    env.pop("KUDUFS_USER", None)
    env.pop("KUDUFS_PASSWORD", None)
    return subprocess.run([KUDUFS, "--check", "--config", str(cfg)], capture_output=True, text=True,
                          env=env, timeout=60)


def test_check_reports_instances_and_how(make_emulator, tmp_path):
    emu = make_emulator(instances=3, arm_token="arm-tok-1")
    set_token(tmp_path, "arm-tok-1")
    p = check(emu, tmp_path, "arm_resource = %s\narm_token_command = %s" %
              (emu.arm_resource("demo"), token_script(tmp_path)),
              extra="arm_endpoint = %s" % emu.arm_endpoint)
    assert p.returncode == 0, p.stderr
    assert re.fullmatch(r"demo: OK 3 instances \(ARM\), \d+ processes on [0-9a-f]{6}\.\.\.\n", p.stdout), p.stdout
    served = p.stdout.split(" on ")[1][:6]
    assert any(i.startswith(served) for i in live(emu))
    assert "arm-tok-1" not in p.stdout + p.stderr

    p = check(emu, tmp_path, "")
    assert p.returncode == 0 and re.fullmatch(r"demo: OK 3 instances \(Kudu\), \d+ processes on [0-9a-f]{6}\.\.\.\n",
                                              p.stdout), p.stdout

    ids = live(emu)
    p = check(emu, tmp_path, "instances = %s" % ids[0])
    assert p.returncode == 0 and p.stdout.startswith("demo: OK 1 instance (config), "), p.stdout


def test_check_discovery_failure_is_a_warning(make_emulator, tmp_path):
    emu = make_emulator(instances=2, arm_token="the-right-one")
    set_token(tmp_path, "wrong-token-abc")
    p = check(emu, tmp_path, "arm_resource = %s\narm_token_command = %s" %
              (emu.arm_resource("demo"), token_script(tmp_path)),
              extra="arm_endpoint = %s" % emu.arm_endpoint)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert re.fullmatch(r"demo: OK \d+ processes\n", p.stdout), p.stdout
    assert "warning: instance discovery failed" in p.stderr and "401" in p.stderr, p.stderr
    assert "wrong-token-abc" not in p.stdout + p.stderr


def test_single_instance_check_line_unchanged(emulator, tmp_path):
    p = check(emulator, tmp_path, "")
    assert p.returncode == 0 and re.fullmatch(r"demo: OK \d+ processes\n", p.stdout), p.stdout
