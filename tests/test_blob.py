"""kudufs-to-blob, its alert webhook and the publish-settings importer (issues 7, 13).

Everything runs on this machine: the Kudu emulator (with instances where a test says so),
a real kudufs mount, Azurite (a Blob Storage emulator, started once for this module on a
free 127.0.0.1 port; a second one over HTTPS with OAuth for the Entra ID test), Debian's
webhook server. Blobs are checked with Blob Storage's REST API directly (account SAS
signed here), not through the script's SDK: names, length, Content-MD5 and the MD5 of the
downloaded bytes against the emulator's generator (per instance), metadata, details.json.

Every mount, Azurite, webhook and script started here is stopped by its pid at teardown,
also when a test fails; nothing is written to the real $HOME."""
import base64
import datetime
import hashlib
import http.server
import importlib.machinery
import importlib.util
import json
import os
import pty
import re
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from conftest import (ROOT, force_unmount, fuse_mounts_under, read_rss_hwm, run, stop_process, wait_for,
                      write_private)
from helpers import Azurite, free_port

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(ROOT, "scripts")
TO_BLOB = os.path.join(SCRIPTS, "kudufs-to-blob")
IMPORTER = os.path.join(SCRIPTS, "kudufs-import-publish-settings")
HOOKS = os.path.join(SCRIPTS, "webhook", "hooks.json")
FIXTURES = os.path.join(HERE, "fixtures")
WEBHOOK = shutil.which("webhook") or "/usr/bin/webhook"
PYTHON = "/usr/bin/python3"

MiB = 1 << 20

# OK app[/inst6]/name-pid type N bytes -> container/blob
OK_RE = re.compile(r"^OK (?P<app>[^/ ]+)/(?:(?P<inst>[0-9a-z_]{6})/)?(?P<name>[^/ ]+)-(?P<pid>\d+)"
                   r" (?P<type>mini|full) (?P<bytes>\d+) bytes -> (?P<container>[a-z0-9-]+)/(?P<blob>\S+)$")
# <day>/<HHMMSS>Z-<app>[-<inst6>]-<name>-<pid>.<type>.dmp; app names may hold "-", so the
# test says which app it expects (blob_re(app)).


def blob_re(app):
    return re.compile(r"^(?P<day>\d{4}-\d{2}-\d{2})/(?P<hms>\d{6})Z-%s(?:-(?P<inst>[0-9a-z_]{6}))?"
                      r"-(?P<name>[a-z0-9]+)-(?P<pid>\d+)\.(?P<type>mini|full)\.dmp$" % re.escape(app))


def plain(line):
    """A DRY/OK/FAIL line without its instance part (app/inst6/proc -> app/proc) and target."""
    return re.sub(r" -> .*", "", re.sub(r"^(\S+ [^/ ]+)/[0-9a-z_]{6}/", r"\1/", line))


# Two apps, each with the SCM site's w3wp and a site w3wp that kudufs marks as the
# site's (role "site"), beta also a second one (a web garden: both are "site" processes,
# the site link names the first), alpha a php-cgi that no default touches. Odd dump sizes.
SITE_DUMPS = {("alpha", 4292): 3 * MiB + 17, ("beta", 7300): 2 * MiB + 5, ("beta", 7301): 5 * MiB - 3}


def two_app_spec():
    def w3wp(app, pid):
        return {"name": "w3wp", "pid": pid, "mini_size": SITE_DUMPS[(app, pid)]}
    return {"sites": {
        "alpha": {"processes": [{"name": "w3wp", "pid": 4100, "scm": True}, w3wp("alpha", 4292),
                                {"name": "php-cgi", "pid": 6240}]},
        "beta": {"processes": [{"name": "w3wp", "pid": 7100, "scm": True}, w3wp("beta", 7300),
                               w3wp("beta", 7301)]}}}


def need(*tools):
    missing = [p for p in tools if os.path.isabs(p) and not os.path.exists(p)]
    missing += [t for t in tools if not os.path.isabs(t) and not shutil.which(t)]
    if missing:
        pytest.fail("test tools missing (run scripts/install-deps test): %s" % missing)


def load_script():
    """kudufs-to-blob as a module (it has no .py name), for tests of its parts."""
    loader = importlib.machinery.SourceFileLoader("kudufs_to_blob", TO_BLOB)
    spec = importlib.util.spec_from_loader("kudufs_to_blob", loader)
    mod = importlib.util.module_from_spec(spec)
    loader.exec_module(mod)
    return mod


# --------------------------------------------------------------------------- Azurite


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    az = Azurite(str(tmp_path_factory.mktemp("azurite")))
    try:
        az.start()
        yield az
    finally:
        az.stop()
        shutil.rmtree(az.dir, ignore_errors=True)


@pytest.fixture
def blob_env(tmp_path, azurite, kudufs_bin):
    """Environment for kudufs-to-blob: private HOME and TMPDIR, the test's kudufs, the
    connection string of Azurite; after the test, no mount or work dir may be left in
    TMPDIR, and tmp_path is emptied."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KUDUFS", "AZURE_", "AZCOPY", "XDG_CONFIG", "IDENTITY_", "MSI_", "REQUESTS_CA"))}
    env.update(HOME=str(home), TMPDIR=str(tmp), AZURE_STORAGE_CONNECTION_STRING=azurite.conn,
               KUDUFS=kudufs_bin, KUDUFS_TO_BLOB_LOCK=str(tmp_path / "to-blob.lock"))
    try:
        yield env
        left = fuse_mounts_under(tmp)
        assert not left, "kudufs-to-blob left a mount behind: %s" % left
        assert not [p for p in os.listdir(tmp) if p.startswith("kudufs-to-blob.")], "work dir left behind"
    finally:
        for mnt in fuse_mounts_under(tmp):
            force_unmount(mnt)
        for p in tmp_path.iterdir():  # the test's own files too (configs, logs, runs)
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()


def to_blob(args, env, timeout=300, input=None):
    t = time.monotonic()
    r = run([TO_BLOB] + list(args), env=env, timeout=timeout, input=input)
    # shown by pytest when the test fails
    print("$ kudufs-to-blob %s\n-> exit %d in %.1f s\n%s%s" % (" ".join(args), r.returncode, time.monotonic() - t,
                                                            r.stdout, r.stderr))
    assert "Traceback" not in r.stderr, r.stderr
    assert "\x1b[" not in r.stderr, "progress display off a terminal"
    return r


def netrc_for(env, emu):
    """~/.netrc credentials for the emulator, which the apps reach as "localhost" (kudufs
    reads ~/.netrc through libcurl)."""
    write_private(os.path.join(env["HOME"], ".netrc"),
                  "machine localhost login %s password %s\n" % (emu.user, emu.password))


def local_url(emu, app):
    return emu.url(app).replace("//127.0.0.1:", "//localhost:")


def config_for(path, emu, apps):
    """A kudufs config with [app NAME] url=<emulator> sections and a 0600 password file."""
    pw = write_private(os.path.join(os.path.dirname(path), "emu.pass"), emu.password + "\n")
    lines = ["[kudufs]", "cache_dir = %s" % os.path.join(os.path.dirname(path), "cache"), ""]
    for a in apps:
        lines += ["[app %s]" % a, "url = %s" % emu.url(a), "user = %s" % emu.user, "password_file = %s" % pw, ""]
    return write_private(path, "\n".join(lines))


def summary(stderr):
    """(dumps, ok, failed, bytes) of the run's summary line."""
    m = re.search(r"^(\d+) dumps: (\d+) ok, (\d+) failed, (\d+) bytes in \d+\.\d s$", stderr, re.M)
    assert m, stderr
    return tuple(int(x) for x in m.groups())


# --------------------------------------------------------------------------- checks


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def check_uploads(azurite, emu, container, stdout, expect, t0, t1, before=(), dtype="mini"):
    """The run's OK lines name exactly `expect`: {(app, pid): size} (instance not checked,
    any one), or {(app, instance id, pid): size}; every blob the run added is named by the
    pattern with a time stamp in [t0, t1], has the emulator's length and MD5 for that
    instance (property and downloaded bytes), and metadata (instance = the full id the name
    abbreviates, machinename = details.json's machineName); each details.json is the
    process's. Returns {key: blob name}."""
    oks = [OK_RE.match(ln) for ln in stdout.splitlines() if ln.startswith("OK ")]
    assert all(oks), stdout
    assert len(oks) == len(expect), stdout
    blobs = azurite.list_blobs(container)
    added = {n: b for n, b in blobs.items() if n not in before}
    names = {}
    runs = set()
    used = set()
    t = {"mini": 1, "full": 2}[dtype]
    for key, size in expect.items():
        app, pid = key[0], key[-1]
        inst = key[1] if len(key) == 3 else None
        cands = [m for m in oks if m["app"] == app and int(m["pid"]) == pid and id(m) not in used
                 and (inst is None or m["inst"] == inst[:6])]
        assert len(cands) >= 1, (key, stdout)
        m = cands[0]
        used.add(id(m))
        assert m["name"] == "w3wp" and m["type"] == dtype and int(m["bytes"]) == size, m.group(0)
        assert m["container"] == container, m.group(0)
        name = m["blob"]
        bm = blob_re(app).match(name)
        assert bm and int(bm["pid"]) == pid and bm["name"] == "w3wp" and bm["inst"] == m["inst"], name
        stamp = datetime.datetime.strptime(bm["day"] + bm["hms"], "%Y-%m-%d%H%M%S").replace(
            tzinfo=datetime.timezone.utc)
        assert t0 <= stamp <= t1, (name, t0, t1)
        b = added.get(name)
        assert b is not None, "%s not in the container (added: %s)" % (name, sorted(added))
        meta = b["metadata"]
        if bm["inst"]:
            assert meta.get("instance", "").startswith(bm["inst"]), meta
            assert inst is None or meta["instance"] == inst, meta
        else:
            assert "instance" not in meta, meta
        want = emu.digest(app, pid, t, instance=inst)
        assert want["size"] == size
        assert b["length"] == size and b["md5"] == want["md5_b64"], (name, b, want)
        assert b["content_type"] == "application/octet-stream", b
        assert azurite.blob_digest(container, name) == (size, want["md5"]), name
        assert {k: meta.get(k) for k in ("app", "pid", "name", "dumptype")} == \
            {"app": app, "pid": str(pid), "name": "w3wp", "dumptype": dtype}, meta
        cap = datetime.datetime.strptime(meta["capturedat"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc)
        assert cap == stamp, meta
        assert re.fullmatch(r"[0-9a-f]{16}", meta.get("kudufsrun", "")), meta
        runs.add(meta["kudufsrun"])
        dname = name[:-len(".dmp")] + ".details.json"
        d = added.get(dname)
        assert d is not None and d["content_type"] == "application/json" and d["metadata"] == meta, (dname, d)
        details = json.loads(azurite.get_blob(container, dname))
        assert details["id"] == pid and details["name"] == "w3wp" and not details.get("is_scm_site"), details
        if details.get("machineName"):
            assert meta.get("machinename") == details["machineName"], (meta, details["machineName"])
        names[key] = name
    want_names = set(names.values()) | {n[:-len(".dmp")] + ".details.json" for n in names.values()}
    assert set(added) == want_names, "unexpected blobs: %s" % sorted(set(added) - want_names)
    assert len(runs) <= 1, runs
    return names


def dumps_taken(emu):
    """{(app, pid, type)} -> count of dump requests the emulator served (all instances)."""
    out = {}
    for site, st in emu.stats()["sites"].items():
        for k, n in st["dumps_by_key"].items():
            pid, t = k.split("/")
            out[(site, int(pid), int(t))] = n
    return out


def dumps_by_instance(emu, site):
    """{(instance id, pid, type)} -> count of dump requests served by that instance."""
    out = {}
    for iid, st in emu.stats()["sites"][site].get("instances", {}).items():
        for k, n in st["dumps_by_key"].items():
            pid, t = k.split("/")
            out[(iid, int(pid), int(t))] = n
    return out


# --------------------------------------------------------------------------- kudufs-to-blob


def test_private_mount_uploads_site_dumps_then_never_overwrites(make_emulator, azurite, blob_env):
    """--app NAME=URL (private mount, credentials from ~/.netrc), default container
    dumpfiles created from the connection string, the site process of each app (kudufs's
    role "site": never the SCM w3wp, the second w3wp or php-cgi). A second run overwrites
    nothing: where a blob of the same name exists it reports FAIL (no dump taken), the
    others get blobs of their own time stamp."""
    emu = make_emulator(two_app_spec())
    netrc_for(blob_env, emu)
    assert not azurite.container_exists("dumpfiles")
    apps = ["--app", "alpha=" + local_url(emu, "alpha"), "--app", "beta=" + local_url(emu, "beta")]

    t0 = utc_now()
    r = to_blob(apps, blob_env)
    t1 = utc_now()
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert emu.password not in r.stdout + r.stderr
    first = check_uploads(azurite, emu, "dumpfiles", r.stdout, SITE_DUMPS, t0, t1)
    assert summary(r.stderr) == (3, 3, 0, sum(SITE_DUMPS.values()))
    assert dumps_taken(emu) == {(a, p, 1): 1 for (a, p) in SITE_DUMPS}

    # Second run. Blobs named as alpha's dump would be in each second of the next
    # minute exist already (someone else's): alpha must FAIL without touching them.
    # It starts in a later second than the first run ended in, so beta's new names
    # (second-resolution time stamps) cannot meet the first run's by chance.
    wait_for(lambda: utc_now() > t1, timeout=5)
    before = azurite.list_blobs("dumpfiles")
    tail = first[("alpha", 4292)].split("Z-", 1)[1]       # alpha[-inst6]-w3wp-4292.mini.dmp
    now = utc_now()
    squat = {}
    for s in range(60):
        t = now + datetime.timedelta(seconds=s)
        squat["%s/%sZ-%s" % (t.strftime("%Y-%m-%d"), t.strftime("%H%M%S"), tail)] = b"older blob"
    for n, data in squat.items():
        azurite.put_blob("dumpfiles", n, data)
    before2 = azurite.list_blobs("dumpfiles")

    t0 = utc_now()
    r = to_blob(apps, blob_env)
    t1 = utc_now()
    assert r.returncode == 1, (r.stdout, r.stderr)
    fails = [ln for ln in r.stdout.splitlines() if ln.startswith("FAIL ")]
    assert len(fails) == 1 and re.fullmatch(
        r"FAIL alpha/(\w{6}/)?w3wp-4292 mini: dumpfiles/\d{4}-\d\d-\d\d/\d{6}Z-%s already exists; not overwritten"
        % re.escape(tail), fails[0]), r.stdout
    second = check_uploads(azurite, emu, "dumpfiles", r.stdout,
                           {k: v for k, v in SITE_DUMPS.items() if k[0] == "beta"}, t0, t1, before=before2)
    assert not set(second.values()) & set(first.values())
    after = azurite.list_blobs("dumpfiles")
    for n, b in before2.items():
        assert after[n]["etag"] == b["etag"] and after[n]["length"] == b["length"], n
    for n in squat:
        assert azurite.get_blob("dumpfiles", n) == b"older blob"
    assert set(after) == set(before2) | {x for n in second.values() for x in (n, n[:-4] + ".details.json")}
    assert len(before) == 2 * len(SITE_DUMPS)
    assert summary(r.stderr)[:3] == (3, 2, 1)
    # alpha's process was not dumped again for a blob that could not be written
    assert dumps_taken(emu)[("alpha", 4292, 1)] == 1
    assert dumps_taken(emu)[("beta", 7300, 1)] == 2
    assert dumps_taken(emu)[("beta", 7301, 1)] == 2


def test_existing_mount_container_sas_url(make_emulator, mount, azurite, blob_env):
    """--mount on a running kudufs, destination a container SAS URL (no connection string),
    the old --uploader az still accepted (a note, then the SDK). --dry-run first: names
    what it would collect, dumps nothing."""
    emu = make_emulator(two_app_spec())
    m = mount({"alpha": emu.url("alpha"), "beta": emu.url("beta")})
    azurite.create_container("bysas")
    env = dict(blob_env)
    del env["AZURE_STORAGE_CONNECTION_STRING"]
    sas_url = azurite.container_sas_url("bysas")

    r = to_blob(["--mount", m.path, "--app", "beta", "--name", "w3wp", "--dry-run", "--container", sas_url], env)
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = sorted(r.stdout.splitlines())
    assert len(lines) == 2, r.stdout
    for ln, pid in zip(lines, (7300, 7301)):
        assert re.fullmatch(r"DRY beta/(\w{6}/)?w3wp-%d mini -> bysas/\d{4}-\d\d-\d\d/\d{6}Z-beta(-\w{6})?-w3wp-%d"
                            r"\.mini\.dmp \(\+ \.details\.json\)" % (pid, pid), ln), ln
    assert dumps_taken(emu) == {} and azurite.list_blobs("bysas") == {}

    t0 = utc_now()
    r = to_blob(["--mount", m.path, "--uploader", "az", "--container", sas_url], env)
    t1 = utc_now()
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "--uploader az: no longer needed" in r.stderr
    assert "sig=" not in r.stdout + r.stderr, "the SAS must not be printed"
    check_uploads(azurite, emu, "bysas", r.stdout, SITE_DUMPS, t0, t1)
    assert dumps_taken(emu) == {(a, p, 1): 1 for (a, p) in SITE_DUMPS}
    # the user's mount is left alone
    assert os.path.ismount(m.path) and m.proc.poll() is None


def test_one_dump_fails_others_upload_no_partial_blob(make_emulator, azurite, blob_env, tmp_path):
    """--config (private mount of every app in it), --name w3wp (every w3wp but the SCM's);
    beta's w3wp-7301 is cut after 1 MiB by the emulator: the other two dumps still upload,
    its line says FAIL with the reader's error, exit 1, and nothing of it is left, not even
    uncommitted blocks."""
    emu = make_emulator(two_app_spec())
    emu.add_fault(route="dump", site="beta", pid=7301, kind="reset", after_bytes=MiB, count=100)
    cfg = config_for(str(tmp_path / "kudufs.conf"), emu, ["alpha", "beta"])

    t0 = utc_now()
    r = to_blob(["--config", cfg, "--container", "faults", "--name", "W3WP"], blob_env)
    t1 = utc_now()
    assert r.returncode == 1, (r.stdout, r.stderr)
    fails = [ln for ln in r.stdout.splitlines() if ln.startswith("FAIL ")]
    assert len(fails) == 1 and re.match(r"FAIL beta/(\w{6}/)?w3wp-7301 mini: reading the dump: ", fails[0]), r.stdout
    assert "Input/output error" in fails[0], fails[0]
    expect = {k: v for k, v in SITE_DUMPS.items() if k != ("beta", 7301)}
    check_uploads(azurite, emu, "faults", r.stdout, expect, t0, t1)
    left = azurite.list_blobs("faults", uncommitted=True)
    assert not [n for n in left if "7301" in n], sorted(left)
    assert len(left) == 4, sorted(left)
    assert dumps_taken(emu)[("beta", 7301, 1)] >= 1
    assert summary(r.stderr)[:3] == (3, 2, 1)


def _interrupt(proc, sig, azurite, container):
    """Send sig to the script's process group; its exit status, output and time taken."""
    t = time.monotonic()
    os.killpg(proc.pid, sig)
    try:
        out, err = proc.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        ps = run(["ps", "-o", "pid,ppid,stat,wchan:32,etime,args", "--forest", "-g", str(proc.pid)])
        pytest.fail("kudufs-to-blob still running 40 s after signal %d:\n%s" % (sig, ps.stdout))
    took = time.monotonic() - t
    print("exit %d after %.1f s\n%s%s" % (proc.returncode, took, out, err))
    return out, err, took


def _stop(proc):
    if proc.poll() is None:  # the test failed: let it clean up, then kill
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(40)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_ctrl_c_while_kudu_writes_unmounts_and_removes_claimed_blobs(make_emulator, azurite, blob_env):
    """Ctrl-C (SIGINT to the process group) while the private mount waits for Kudu to
    write the dumps: kudufs-to-blob exits 130 within seconds, its mount and kudufs daemon
    are gone, and the blobs it had claimed are deleted."""
    spec = two_app_spec()
    for site in spec["sites"].values():
        site["dump_delay"] = 60
    emu = make_emulator(spec)
    netrc_for(blob_env, emu)
    azurite.create_container("cut")
    proc = subprocess.Popen([TO_BLOB, "--app", "alpha=" + local_url(emu, "alpha"), "--app",
                             "beta=" + local_url(emu, "beta"), "--container", "cut", "--name", "w3wp"],
                            env=blob_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        def claimed():
            assert proc.poll() is None, proc.communicate()
            st = emu.stats()["sites"]
            return len(azurite.list_blobs("cut")) == 4 and st["beta"]["dump"] >= 1 and st["alpha"]["dump"] >= 1
        # one dump of each app at a time: both claimed their names (empty dump blob +
        # details.json) and asked for the dump; Kudu is "writing" them
        assert wait_for(claimed, 60), azurite.list_blobs("cut")
        tree = _tree(proc.pid)
        assert any((_status(p) or ("",))[0] == "kudufs" for p in tree), [_status(p) for p in tree]
        out, err, took = _interrupt(proc, signal.SIGINT, azurite, "cut")
    finally:
        _stop(proc)
    assert proc.returncode == 130, (out, err)
    assert took < 30
    assert "Traceback" not in err
    assert wait_for(lambda: not [p for p in tree if os.path.exists("/proc/%d" % p)], 10), \
        [(p, _status(p)) for p in tree if os.path.exists("/proc/%d" % p)]
    assert fuse_mounts_under(blob_env["TMPDIR"]) == []
    assert azurite.list_blobs("cut", uncommitted=True) == {}
    assert "OK " not in out and "interrupted: removed 4 unfinished blobs" in err, err


@pytest.mark.parametrize("sig,code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_upload_leaves_nothing(make_emulator, mount, azurite, blob_env, sig, code):
    """A dump halfway uploaded (blocks staged, a stall in the download) when Ctrl-C or
    SIGTERM comes: exit 130/143, the claimed blob, its staged blocks and details.json
    are gone, the user's mount is left alone."""
    emu = make_emulator({"sites": {"big": {"mini_size": 64 * MiB, "processes": [
        {"name": "w3wp", "pid": 4100, "scm": True}, {"name": "w3wp", "pid": 4292}]}}})
    emu.add_fault(route="dump", site="big", kind="stall", after_bytes=12 * MiB, seconds=120, count=1)
    m = mount({"big": emu.url("big")})
    container = "mid%d" % code
    azurite.create_container(container)
    env = dict(blob_env, KUDUFS_TO_BLOB_BLOCK_MB="1")
    proc = subprocess.Popen([TO_BLOB, "--mount", m.path, "--container", container], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        def staged():
            assert proc.poll() is None, proc.communicate()
            names = [n for n in azurite.list_blobs(container) if n.endswith(".dmp")]
            return names and len(azurite.block_list(container, names[0])["uncommitted"]) >= 8 and names[0]
        name = wait_for(staged, 60)
        assert name, azurite.list_blobs(container, uncommitted=True)
        out, err, took = _interrupt(proc, sig, azurite, container)
    finally:
        _stop(proc)
    assert proc.returncode == code, (out, err)
    assert took < 30 and "Traceback" not in err
    assert azurite.list_blobs(container, uncommitted=True) == {}
    assert azurite.request("GET", azurite.url(container, name, comp="blocklist", blocklisttype="all"))[0] == 404
    assert "OK " not in out
    assert os.path.ismount(m.path) and m.proc.poll() is None


def test_alert_file_selects_the_target_apps(make_emulator, mount, blob_env, tmp_path):
    """--alert FILE|- on an existing mount, --dry-run: the fired alert's ALPHA and beta
    (not the third app), the slot alert's Shop/slots/Staging as shop-staging (its storage
    account target ignored), a Resolved alert nothing, an app that is not mounted FAIL."""
    emu = make_emulator({"sites": dict(two_app_spec()["sites"], **{"shop-staging": {}})})
    m = mount({a: emu.url(a) for a in ("alpha", "beta", "shop-staging")})

    def dry(alert, stdin=None):
        r = to_blob(["--mount", m.path, "--dry-run", "--alert", alert], blob_env, input=stdin)
        return r, sorted(plain(ln) for ln in r.stdout.splitlines())

    r, lines = dry(os.path.join(FIXTURES, "alert-fired.json"))
    assert r.returncode == 0 and lines == ["DRY alpha/w3wp-4292 mini", "DRY beta/w3wp-7300 mini",
                                          "DRY beta/w3wp-7301 mini"], r.stdout
    assert "alert 'high-memory-alpha-beta' (Fired): apps alpha beta" in r.stderr
    r, lines = dry(os.path.join(FIXTURES, "alert-slot.json"))
    assert r.returncode == 0 and lines == ["DRY shop-staging/w3wp-4292 mini"], r.stdout
    with open(os.path.join(FIXTURES, "alert-resolved.json")) as f:
        r, lines = dry("-", stdin=f.read())
    assert r.returncode == 0 and lines == [] and "Resolved: nothing to do" in r.stderr
    other = json.load(open(os.path.join(FIXTURES, "alert-fired.json")))
    other["data"]["essentials"]["alertTargetIDs"] = [
        "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Web/sites/gamma",
        "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Web/sites/Beta"]
    r, lines = dry("-", stdin=json.dumps(other))
    assert r.returncode == 1, r.stdout
    assert lines == ["DRY beta/w3wp-7300 mini", "DRY beta/w3wp-7301 mini",
                     "FAIL gamma mini: no such app in the mount (configure an [app gamma] section)"], lines
    assert dumps_taken(emu) == {}


# --------------------------------------------------------------------------- instances and alerts
#
# An emulated app "alpha" scaled out to 3 instances (ids sha256("alpha:i"), machine names
# "RD" + the id's first 12 hex digits in upper case); on each, the SCM w3wp 4100, the site's
# w3wp 4292, dotnet 5012+4i and php-cgi 6240, with per-instance dump bodies. The sample
# payloads in tests/fixtures/alert-*.json name these ids, machines and pids.

INST_SIZE = 1 * MiB + 7
INST_FULL = 2 * MiB + 11


def inst_id(app, i):
    return hashlib.sha256(("%s:%d" % (app, i)).encode()).hexdigest()


def machine(app, i):
    return "RD" + inst_id(app, i)[:12].upper()


@pytest.fixture
def three(make_emulator, mount):
    """(emulator, mount) of alpha with 3 instances and beta with 1."""
    emu = make_emulator({"instances": 3, "sites": {
        "alpha": {"mini_size": INST_SIZE, "full_size": INST_FULL},
        "beta": {"instances": 1, "mini_size": INST_SIZE}}})
    assert emu.instances("alpha")["live"] == [inst_id("alpha", i) for i in range(3)]
    m = mount({"alpha": emu.url("alpha"), "beta": emu.url("beta")})
    return emu, m


def test_every_instance_by_default_and_instances_option(three, azurite, blob_env):
    """By default the site w3wp of every instance of each app: one blob each, named with
    the instance's first 6 characters, the instance's own bytes, metadata instance and
    machinename; --instances ID,ID takes those only (a full id or its first 6+ chars), an
    id that names nothing is a FAIL line."""
    emu, m = three
    t0 = utc_now()
    r = to_blob(["--mount", m.path, "--container", "inst"], blob_env)
    t1 = utc_now()
    assert r.returncode == 0, r.stdout
    ids = [inst_id("alpha", i) for i in range(3)]
    beta = emu.instances("beta")["live"][0]
    expect = {("alpha", i, 4292): INST_SIZE for i in ids}
    expect[("beta", beta, 4292)] = INST_SIZE
    names = check_uploads(azurite, emu, "inst", r.stdout, expect, t0, t1)
    blobs = azurite.list_blobs("inst")
    for i in range(3):
        meta = blobs[names[("alpha", ids[i], 4292)]]["metadata"]
        assert meta["instance"] == ids[i] and meta["machinename"] == machine("alpha", i), meta
    assert dumps_by_instance(emu, "alpha") == {(i, 4292, 1): 1 for i in ids}
    assert emu.stats()["sites"]["alpha"].get("dump_conflicts", 0) == 0
    assert summary(r.stderr)[:3] == (4, 4, 0)

    t0 = utc_now()
    r = to_blob(["--mount", m.path, "--container", "inst2", "--app", "alpha",
                 "--instances", "%s,%s" % (ids[2], ids[0][:8].upper())], blob_env)
    t1 = utc_now()
    assert r.returncode == 0, r.stdout
    check_uploads(azurite, emu, "inst2", r.stdout, {("alpha", ids[0], 4292): INST_SIZE,
                                                    ("alpha", ids[2], 4292): INST_SIZE}, t0, t1)
    r = to_blob(["--mount", m.path, "--dry-run", "--app", "alpha", "--instances", "%s,abcdef99" % ids[1]],
                blob_env)
    assert r.returncode == 1
    assert sorted(plain(ln) for ln in r.stdout.splitlines()) == [
        "DRY alpha/w3wp-4292 mini", "FAIL alpha mini: --instances abcdef99 matches no instance"], r.stdout
    assert "alpha/%s/w3wp-4292" % ids[1][:6] in r.stdout


def test_next_instance_dump_starts_before_the_previous_upload_ends(make_emulator, mount, azurite, blob_env):
    """Within an app the dumps are taken one at a time, back to back: the next instance's
    dump is queued in kudufs while the previous one is still read and uploaded, so Kudu
    starts it when the previous download ends, before that dump's OK line (the verified
    blob). Seen in the emulator's dump intervals against the time each OK line came out;
    16 blocks of 1 MiB make the upload outlast the download by a wide margin."""
    emu = make_emulator({"instances": 3, "sites": {"alpha": {"mini_size": 16 * MiB + 5}}})
    m = mount({"alpha": emu.url("alpha")})
    azurite.create_container("pipe")
    proc = subprocess.Popen([TO_BLOB, "--mount", m.path, "--container", "pipe", "--app", "alpha"],
                            env=dict(blob_env, KUDUFS_TO_BLOB_BLOCK_MB="1"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    ok_at = []
    try:
        for line in proc.stdout:
            if line.startswith("OK "):
                ok_at.append(time.time())
        err = proc.stderr.read()
        assert proc.wait(60) == 0, err
    finally:
        _stop(proc)
    iv = sorted(emu.stats()["sites"]["alpha"]["dump_intervals"], key=lambda x: x["start"])
    assert len(iv) == 3 and len(ok_at) == 3, (iv, ok_at)
    for a, b in zip(iv, iv[1:]):
        assert b["start"] >= a["end"], "two dumps of one app at once: %s" % iv
    for i in range(2):
        assert iv[i + 1]["start"] < ok_at[i], "dump %d started only after dump %d's OK line: %s %s" % (
            i + 1, i, iv, ok_at)


def alert_run(m, blob_env, fixture, container, extra=()):
    return to_blob(["--mount", m.path, "--container", container, "--alert", os.path.join(FIXTURES, fixture)]
                   + list(extra), blob_env)


@pytest.mark.parametrize("fixture,index", [("alert-metric-instance.json", 1), ("alert-metric-machine.json", 2)])
def test_metric_alert_instance_dimension_picks_one_of_three(three, azurite, blob_env, fixture, index):
    """A metric alert split by Instance (the instance id; or the machine name, as App
    Service metrics name it): exactly one blob, of that instance's site w3wp, with that
    instance's digest; no other instance was dumped."""
    emu, m = three
    t0 = utc_now()
    r = alert_run(m, blob_env, fixture, "metric%d" % index)
    t1 = utc_now()
    assert r.returncode == 0, r.stdout
    iid = inst_id("alpha", index)
    check_uploads(azurite, emu, "metric%d" % index, r.stdout, {("alpha", iid, 4292): INST_SIZE}, t0, t1)
    assert dumps_by_instance(emu, "alpha") == {(iid, 4292, 1): 1}


@pytest.mark.parametrize("fixture,index", [("alert-log-instance-pid.json", 2), ("alert-log-dimensions-v1.json", 0)])
def test_log_alert_instance_and_process_id(three, azurite, blob_env, fixture, index):
    """A log search alert on Functions telemetry summarised by cloud_RoleInstance and
    ProcessId (in allOf[].dimensions[]; or the older alertContext.Dimensions[], with the
    machine name): that instance's process with that pid only, the dotnet here (an explicit
    pid needs no site role)."""
    emu, m = three
    pid = 5012 + 4 * index
    r = alert_run(m, blob_env, fixture, "log%d" % index)
    assert r.returncode == 0, r.stdout
    (line,) = r.stdout.splitlines()
    mm = OK_RE.match(line)
    iid = inst_id("alpha", index)
    assert mm and mm["app"] == "alpha" and mm["inst"] == iid[:6] and mm["name"] == "dotnet" \
        and int(mm["pid"]) == pid, line
    want = emu.digest("alpha", pid, 1, instance=iid)
    b = azurite.list_blobs("log%d" % index)[mm["blob"]]
    assert b["md5"] == want["md5_b64"] and b["length"] == want["size"], b
    assert b["metadata"]["instance"] == iid and b["metadata"]["machinename"] == machine("alpha", index)
    assert dumps_by_instance(emu, "alpha") == {(iid, pid, 1): 1}


def test_alert_custom_properties_override_type_and_names(three, azurite, blob_env):
    """customProperties kudufs.type full (and kudufs.name w3wp) with no dimension: the full
    dump of the site w3wp of every instance; an explicit --type on the command line wins."""
    emu, m = three
    t0 = utc_now()
    r = alert_run(m, blob_env, "alert-custom-full.json", "custom")
    t1 = utc_now()
    assert r.returncode == 0, r.stdout
    ids = [inst_id("alpha", i) for i in range(3)]
    check_uploads(azurite, emu, "custom", r.stdout, {("alpha", i, 4292): INST_FULL for i in ids}, t0, t1,
                  dtype="full")
    assert dumps_by_instance(emu, "alpha") == {(i, 4292, 2): 1 for i in ids}
    r = alert_run(m, blob_env, "alert-custom-full.json", "custom", ["--type", "mini", "--dry-run"])
    assert r.returncode == 0 and sorted(plain(ln) for ln in r.stdout.splitlines()) == ["DRY alpha/w3wp-4292 mini"] * 3


def test_alert_dimension_matching_nothing_is_a_fail_line(three, azurite, blob_env):
    """An Instance no instance of the app has (nor a machine): FAIL naming it, exit 1, no dump."""
    emu, m = three
    r = alert_run(m, blob_env, "alert-no-match.json", "nomatch")
    assert r.returncode == 1
    (line,) = r.stdout.splitlines()
    assert line.startswith("FAIL alpha mini: alert dimension Instance=RD00NOSUCHBOX matches no instance of alpha"), line
    # a ProcessId alone: the instance that has the pid (dotnet 5016 is instance 1's), the
    # others are no failure; a pid no instance has is one
    doc = json.load(open(os.path.join(FIXTURES, "alert-log-instance-pid.json")))
    dims = doc["data"]["alertContext"]["condition"]["allOf"][0]["dimensions"]
    dims[:] = [{"name": "ProcessId", "value": "5016"}]
    r = to_blob(["--mount", m.path, "--dry-run", "--alert", "-"], blob_env, input=json.dumps(doc))
    assert r.returncode == 0 and [re.sub(r" -> .*", "", ln) for ln in r.stdout.splitlines()] == [
        "DRY alpha/%s/dotnet-5016 mini" % inst_id("alpha", 1)[:6]], r.stdout
    dims[:] = [{"name": "ProcessId", "value": "99999"}]
    r = to_blob(["--mount", m.path, "--dry-run", "--alert", "-"], blob_env, input=json.dumps(doc))
    assert r.returncode == 1 and r.stdout.splitlines() == [
        "FAIL alpha mini: alert dimension ProcessId=99999 matches no process of alpha on %s"
        % ", ".join(sorted(inst_id("alpha", i)[:6] for i in range(3)))], r.stdout
    assert dumps_taken(emu) == {} and azurite.list_blobs("nomatch") == {}


def test_alert_naming_an_unconfigured_app_reaches_nothing(make_emulator, azurite, blob_env, tmp_path):
    """The payload only selects among configured apps. gamma, which the emulator serves but
    the config does not name: FAIL, no request to gamma; a target that smuggles a URL into
    the name: FAIL before anything is mounted; with no --config/--app the private mount is
    the default config's (none here), never an app the payload names."""
    emu = make_emulator({"sites": {"alpha": {}, "gamma": {}}})
    cfg = config_for(str(tmp_path / "kudufs.conf"), emu, ["alpha"])
    write_private(os.path.join(blob_env["HOME"], ".netrc"),
                  "default login %s password %s\n" % (emu.user, emu.password))
    env = dict(blob_env, KUDUFS_USER=emu.user, KUDUFS_PASSWORD=emu.password)
    r = to_blob(["--config", cfg, "--alert", os.path.join(FIXTURES, "alert-unconfigured.json")], env)
    assert r.returncode == 1
    assert r.stdout.splitlines() == [
        "FAIL gamma mini: no such app in the mount (configure an [app gamma] section)"], r.stdout
    smuggle = json.load(open(os.path.join(FIXTURES, "alert-unconfigured.json")))
    smuggle["data"]["essentials"]["alertTargetIDs"] = [
        "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Web/sites/gamma=localhost:%d" % emu.port]
    r = to_blob(["--config", cfg, "--alert", "-"], env, input=json.dumps(smuggle))
    assert r.returncode == 1 and r.stdout.startswith("FAIL alert: alert target "), r.stdout
    r = to_blob(["--alert", os.path.join(FIXTURES, "alert-unconfigured.json")], env)
    assert r.returncode == 1 and "kudufs did not mount" in r.stderr, r.stderr
    st = emu.stats()["sites"]["gamma"]
    assert (st["list"], st["details"], st["dump"]) == (0, 0, 0), st
    assert emu.password not in r.stdout + r.stderr


def test_alert_payloads_in_fixtures_parse():
    """Every sample payload parses to what its name says (the parser alone)."""
    mod = load_script()
    got = {}
    for f in sorted(os.listdir(FIXTURES)):
        if f.startswith("alert-") and f.endswith(".json"):
            with open(os.path.join(FIXTURES, f), "rb") as fh:
                a = mod.alert_from_payload(fh.read())
            got[f] = (a.resolved, a.apps, [v for _, v in a.instances], [p for _, p in a.pids], a.dump_type, a.names)
    assert got["alert-resolved.json"][0] is True
    assert got["alert-fired.json"] == (False, ["alpha", "beta"], [], [], None, None)
    assert got["alert-slot.json"][1] == ["shop-staging"]
    assert got["alert-metric-instance.json"][1:3] == (["alpha"], [inst_id("alpha", 1)])
    assert got["alert-metric-machine.json"][1:3] == (["alpha"], [machine("alpha", 2)])
    assert got["alert-log-instance-pid.json"][2:4] == ([inst_id("alpha", 2)], [5020])
    assert got["alert-log-dimensions-v1.json"][2:4] == ([machine("alpha", 0)], [5012])
    assert got["alert-custom-full.json"][2:] == ([], [], "full", ["w3wp"])
    assert got["alert-no-match.json"][2] == ["RD00NOSUCHBOX"]
    assert got["alert-unconfigured.json"][1] == ["gamma"]


# --------------------------------------------------------------------------- alert parsing, property-based

def _hyp(tmp_path):
    """hypothesis, and its strategies; its caches go to tmp_path, not the work tree."""
    try:
        import hypothesis as h
        import hypothesis.configuration
        from hypothesis import strategies as st
    except ImportError:
        pytest.fail("python3-hypothesis missing (run scripts/install-deps test)")
    hypothesis.configuration.set_hypothesis_home_dir(str(tmp_path / "hypothesis"))
    return h, st


def _json_values(st):
    leaves = st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False) | \
        st.text(max_size=30)
    return st.recursive(leaves, lambda kids: st.lists(kids, max_size=6) |
                        st.dictionaries(st.text(max_size=12), kids, max_size=6), max_leaves=25)


def _paths(doc, prefix=()):
    """Every path (tuple of keys/indexes) in a JSON document."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, prefix + (i,))
    return out


def _set(doc, path, value):
    if not path:
        return value
    doc = json.loads(json.dumps(doc))
    cur = doc
    for k in path[:-1]:
        cur = cur[k]
    cur[path[-1]] = value
    return doc


def _samples():
    out = []
    for f in sorted(os.listdir(FIXTURES)):
        if f.startswith("alert-") and f.endswith(".json"):
            with open(os.path.join(FIXTURES, f)) as fh:
                out.append(json.load(fh))
    return out


def _parse_ok_or_alert_error(mod, raw):
    """The parser's whole contract: an Alert, or AlertError with a one-line message."""
    try:
        a = mod.alert_from_payload(raw)
    except mod.AlertError as e:
        msg = str(e)
        assert msg and "\n" not in msg and len(msg) < 400, msg
        return None
    assert isinstance(a, mod.Alert)
    assert all(isinstance(x, str) and re.fullmatch(r"[a-z0-9][a-z0-9-]{0,59}", x) for x in a.apps), a.apps
    assert a.resolved or a.apps
    assert all(isinstance(p, int) for _, p in a.pids)
    assert a.dump_type in (None, "mini", "full")
    return a


def test_alert_parsing_property_based(tmp_path):
    """Random mutations of the sample payloads (any JSON value at any path: wrong types,
    missing fields, huge arrays), random bytes and random JSON documents: the parser
    returns a well-formed selection or raises AlertError with a one-line message, never
    anything else."""
    h, st = _hyp(tmp_path)
    mod = load_script()
    samples = _samples()
    mutations = [(i, p) for i, d in enumerate(samples) for p in _paths(d)]

    @h.settings(max_examples=400, deadline=None, suppress_health_check=list(h.HealthCheck), database=None)
    @h.given(st.sampled_from(mutations), _json_values(st), st.booleans())
    def mutated(where, value, drop):
        i, path = where
        doc = samples[i]
        if drop and path:
            doc = json.loads(json.dumps(doc))
            cur = doc
            for k in path[:-1]:
                cur = cur[k]
            del cur[path[-1]]
        else:
            doc = _set(doc, path, value)
        _parse_ok_or_alert_error(mod, json.dumps(doc).encode())
    mutated()

    @h.settings(max_examples=200, deadline=None, suppress_health_check=list(h.HealthCheck), database=None)
    @h.given(st.binary(max_size=300) | _json_values(st).map(lambda v: json.dumps(v).encode()))
    def arbitrary(raw):
        _parse_ok_or_alert_error(mod, raw)
    arbitrary()

    # huge arrays and deep nesting, once each
    base = samples[[i for i, d in enumerate(samples) if d["data"]["essentials"]["alertRule"] == "high-memory-alpha-beta"
                    and d["data"]["essentials"]["monitorCondition"] == "Fired"][0]]
    big = _set(base, ("data", "essentials", "alertTargetIDs"),
               ["/subscriptions/0/resourceGroups/rg/providers/Microsoft.Storage/storageAccounts/s%d" % i
                for i in range(200000)] + ["/x/providers/Microsoft.Web/sites/alpha"])
    t = time.monotonic()
    assert _parse_ok_or_alert_error(mod, json.dumps(big).encode()).apps == ["alpha"]
    dims = [{"name": "Instance", "value": "RD%06d" % (i % 1000)} for i in range(100000)]
    big = _set(base, ("data", "alertContext", "condition", "allOf", 0, "dimensions"), dims)
    assert len(_parse_ok_or_alert_error(mod, json.dumps(big).encode()).instances) == 1000
    dims.append({"name": "Instance", "value": "RD-one-too-many"})
    big = _set(base, ("data", "alertContext", "condition", "allOf", 0, "dimensions"), dims)
    with pytest.raises(mod.AlertError, match="names more than 1000 instances"):
        mod.alert_from_payload(json.dumps(big).encode())
    assert time.monotonic() - t < 30
    assert _parse_ok_or_alert_error(mod, b"[" * 100000 + b"]" * 100000) is None
    assert _parse_ok_or_alert_error(mod, b'{"data": ' * 5000 + b"1" + b"}" * 5000) is None


def test_alert_bad_payloads_end_to_end(tmp_path, blob_env):
    """Through the command line: a bad payload (on stdin or in a file) is one FAIL line on
    stdout naming the problem, exit 1, no traceback; an oversized one too."""
    h, st = _hyp(tmp_path)
    empty = tmp_path / "empty-mount"
    empty.mkdir()
    samples = _samples()

    def go(raw):
        r = run([TO_BLOB, "--mount", str(empty), "--dry-run", "--alert", "-"], env=blob_env, input=raw, text=False)
        out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
        assert "Traceback" not in err and r.returncode in (0, 1), (r.returncode, out, err)
        lines = out.splitlines()
        if r.returncode == 0:
            assert lines == [] and "Resolved: nothing to do" in err, (out, err)
        else:
            assert lines and all(ln.startswith("FAIL ") for ln in lines), (out, err)
        return lines

    assert go(b"{not json") == ["FAIL alert: not JSON (Expecting property name enclosed in double quotes:"
                                " line 1 column 2 (char 1))"]
    assert go(b"[]") == ["FAIL alert: not a JSON object"]
    assert go(b'{"data": {"essentials": []}}') == ["FAIL alert: data.essentials is not an object"]
    assert go(b" " * (17 << 20)) == ["FAIL alert: payload larger than 16 MiB"]
    f = tmp_path / "bad.json"
    f.write_bytes(b'{"data": {"essentials": {"alertTargetIDs": "x"}}}')
    r = run([TO_BLOB, "--mount", str(empty), "--dry-run", "--alert", str(f)], env=blob_env)
    assert (r.returncode, r.stdout) == (1, "FAIL alert: data.essentials.alertTargetIDs is not an array\n")

    @h.settings(max_examples=12, deadline=None, suppress_health_check=list(h.HealthCheck), database=None)
    @h.given(st.sampled_from(range(len(samples))), _json_values(st))
    def mutated(i, value):
        doc = samples[i]
        paths = _paths(doc)
        doc = _set(doc, paths[hash(json.dumps(value)) % len(paths)], value)
        go(json.dumps(doc).encode())
    mutated()


# --------------------------------------------------------------------------- Entra ID


def _b64url(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


def fake_jwt(aud="https://storage.azure.com", lifetime=3600):
    """A JWT of the shape Entra ID issues. Azurite's --oauth basic checks its issuer,
    audience, nbf/iat/exp, not its signature."""
    now = int(time.time())
    return ".".join([_b64url({"alg": "RS256", "typ": "JWT", "kid": "kudufs-test"}),
                     _b64url({"aud": aud, "iss": "https://sts.windows.net/%s/" % ("0" * 8 + "-0000-0000-0000-" + "0" * 12),
                              "iat": now - 60, "nbf": now - 60, "exp": now + lifetime,
                              "oid": "11111111-2222-3333-4444-555555555555", "tid": "0" * 8,
                              "appid": "kudufs-test"}),
                     base64.urlsafe_b64encode(b"not-a-signature").rstrip(b"=").decode()])


class ManagedIdentityEndpoint:
    """The token endpoint App Service gives a managed identity (IDENTITY_ENDPOINT +
    IDENTITY_HEADER, API 2019-08-01), on 127.0.0.1: DefaultAzureCredential, unchanged,
    takes its token from here. Records the resources asked for."""

    def __init__(self, aud):
        self.secret = base64.b32encode(os.urandom(10)).decode()
        self.asked = []
        self.token = fake_jwt(aud)
        outer = self

        class H(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
                outer.asked.append((q.get("resource", [""])[0], q.get("api-version", [""])[0],
                                    self.headers.get("X-IDENTITY-HEADER") == outer.secret))
                if self.headers.get("X-IDENTITY-HEADER") != outer.secret:
                    self.send_response(401)
                    self.end_headers()
                    return
                body = json.dumps({"access_token": outer.token, "expires_on": str(int(time.time()) + 3600),
                                   "resource": q.get("resource", [""])[0], "token_type": "Bearer",
                                   "client_id": "kudufs-test"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *a):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
        self.url = "http://127.0.0.1:%d/msi/token" % self.server.server_port
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def env(self):
        return {"IDENTITY_ENDPOINT": self.url, "IDENTITY_HEADER": self.secret}

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def self_signed_cert(d):
    cert, key = os.path.join(d, "cert.pem"), os.path.join(d, "key.pem")
    r = run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
             "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
    assert r.returncode == 0, r.stderr
    return cert, key


@pytest.fixture
def azurite_oauth(tmp_path_factory):
    """Azurite over HTTPS (a self-signed certificate made here) with --oauth basic."""
    need("openssl")
    d = str(tmp_path_factory.mktemp("azurite-oauth"))
    cert, key = self_signed_cert(d)
    az = Azurite(d, cert=cert, key=key, oauth=True)
    try:
        az.start()
        yield az
    finally:
        az.stop()
        shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("aud,ok", [("https://storage.azure.com", True), ("https://management.azure.com", False)])
def test_entra_id_account_url_against_azurite_oauth(make_emulator, mount, azurite_oauth, blob_env, aud, ok):
    """--account-url with DefaultAzureCredential: no connection string, no SAS; the token
    comes from a managed-identity endpoint of the test's own (the real credential chain
    asks it for https://storage.azure.com), Azurite checks it (audience, issuer, lifetime)
    over HTTPS. With a token for another audience Azurite refuses: FAIL, exit 1, no blob."""
    emu = make_emulator(two_app_spec())
    m = mount({"alpha": emu.url("alpha")})
    mi = ManagedIdentityEndpoint(aud)
    env = {k: v for k, v in blob_env.items() if k != "AZURE_STORAGE_CONNECTION_STRING"}
    env.update(mi.env(), REQUESTS_CA_BUNDLE=azurite_oauth.cert)
    try:
        t0 = utc_now()
        r = to_blob(["--mount", m.path, "--account-url", azurite_oauth.account_url, "--container", "entra"], env)
        t1 = utc_now()
    finally:
        mi.stop()
    assert mi.asked and all(a == ("https://storage.azure.com", "2019-08-01", True) for a in mi.asked), mi.asked
    assert mi.token not in r.stdout + r.stderr and mi.secret not in r.stdout + r.stderr
    if ok:
        assert r.returncode == 0, (r.stdout, r.stderr)
        check_uploads(azurite_oauth, emu, "entra", r.stdout, {("alpha", 4292): SITE_DUMPS[("alpha", 4292)]}, t0, t1)
    else:
        assert r.returncode == 1
        assert "cannot create container entra: AuthenticationFailed: " in r.stderr and "Invalid token audience" in r.stderr, r.stderr
        assert not azurite_oauth.container_exists("entra") or azurite_oauth.list_blobs("entra") == {}
        assert "OK " not in r.stdout


# --------------------------------------------------------------------------- progress on a terminal


def run_on_pty(args, env, timeout=120):
    """Run the script with stderr on a pseudo-terminal (80 columns) and stdout on a pipe:
    (exit status, stdout, everything written to the terminal)."""
    master, slave = pty.openpty()
    import fcntl
    import struct
    import termios
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 100, 0, 0))
    proc = subprocess.Popen([TO_BLOB] + args, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=slave, start_new_session=True)
    os.close(slave)
    term = b""
    end = time.monotonic() + timeout
    try:
        while True:
            r, _, _ = select.select([master], [], [], 0.2)
            if r:
                try:
                    chunk = os.read(master, 65536)
                except OSError:       # EIO: the terminal's last writer is gone
                    break
                if not chunk:
                    break
                term += chunk
            elif proc.poll() is not None:
                break
            assert time.monotonic() < end, term[-2000:]
        out = proc.stdout.read().decode()
        proc.wait(30)
    finally:
        os.close(master)
        stop_process(proc, 10, term=True)
    text = term.decode(errors="replace")
    print("$ kudufs-to-blob %s (stderr on a pty)\n-> exit %s\n%s\n--- terminal:\n%r" % (
        " ".join(args), proc.returncode, out, text[-4000:]))
    return proc.returncode, out, text


def test_progress_on_a_terminal(make_emulator, mount, azurite, blob_env):
    """stderr a terminal: a live line per dump in flight (app, instance, process, state,
    bytes, rate, elapsed) going through queued (another reader's dump of the app is in
    the way), generating (Kudu writes the dump), streaming (a stall mid-body), then the
    summary; stdout keeps the plain OK lines only. --quiet: no live lines."""
    emu = make_emulator({"sites": {"alpha": {"mini_size": 6 * MiB, "dump_delay": 2, "processes": [
        {"name": "w3wp", "pid": 4100, "scm": True}, {"name": "w3wp", "pid": 4292},
        {"name": "dotnet", "pid": 5012}]}}})
    emu.add_fault(route="dump", site="alpha", pid=4292, kind="stall", after_bytes=2 * MiB, seconds=2, count=1)
    m = mount({"alpha": emu.url("alpha")})
    # someone else's dump of the same app: kudufs queues ours behind it
    other = subprocess.Popen(["cat", os.path.join(m.path, "alpha", "dotnet-5012", "minidump.dmp")],
                             stdout=subprocess.DEVNULL)
    try:
        assert wait_for(lambda: emu.stats()["sites"]["alpha"]["dump"] >= 1, 20)
        rc, out, term = run_on_pty(["--mount", m.path, "--container", "tty"], blob_env)
    finally:
        other.wait(60)
    assert rc == 0, (out, term)
    (line,) = out.splitlines()
    assert OK_RE.match(line) and "\x1b" not in out
    assert "\x1b[2K" in term
    frames = [re.sub(r"\x1b\[[0-9]*[A-Za-z]", "", f) for f in term.split("\x1b[2K")[1:]]
    states = [f.split()[3] for f in frames if f.startswith("alpha") and len(f.split()) > 3]
    for s in ("queued", "generating", "streaming"):
        assert s in states, (s, states)
    assert states.index("queued") < states.index("generating") < states.index("streaming"), states
    stream = [f for f in frames if " streaming " in f][-1]
    assert re.search(r"alpha\s+\S+\s+w3wp-4292\s+streaming\s+\d+\.\d MiB\s+\d+\.\d [KMG]?i?B/s\s+\d+:\d\d", stream), stream
    assert re.search(r"1 dumps: 1 ok, 0 failed, %d bytes in \d+\.\d s" % (6 * MiB), term), term[-500:]

    rc, out, term = run_on_pty(["--mount", m.path, "--container", "tty", "--quiet", "--pid", "5012"], blob_env)
    assert rc == 0 and OK_RE.match(out.strip()), out
    assert "\x1b" not in term and re.fullmatch(r"1 dumps: 1 ok, 0 failed, \d+ bytes in \d+\.\d s\r?\n", term), term


# --------------------------------------------------------------------------- webhook


WRAPPER = """#!/bin/sh
# Runs kudufs-to-blob for the webhook and records each run (pid, output, exit status).
n=$(date +%s%N)
cp -- "$2" "$RUNS/run.$n.alert.json" 2>/dev/null
"$REAL_TO_BLOB" "$@" >"$RUNS/run.$n.out" 2>&1 &
echo $! >"$RUNS/run.$n.pid"
wait $!
echo $? >"$RUNS/run.$n.rc"
"""


class Webhook:
    def __init__(self, env, workdir):
        self.port = free_port()
        self.log = os.path.join(workdir, "webhook.log")
        with open(self.log, "wb") as lf:
            self.proc = subprocess.Popen(
                [WEBHOOK, "-hooks", HOOKS, "-template", "-ip", "127.0.0.1", "-port", str(self.port), "-verbose"],
                env=env, stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT, cwd=workdir)

        def up():
            assert self.proc.poll() is None, self.text()
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return True
            except OSError:
                return False
        assert wait_for(up, 15, 0.05), self.text()

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def post(self, payload, secret=None, header=None, hook="kudufs-dump"):
        url = "http://127.0.0.1:%d/hooks/%s" % (self.port, hook)
        if secret is not None:
            url += "?" + urllib.parse.urlencode({"secret": secret})
        headers = {"Content-Type": "application/json"}
        if header is not None:
            headers["X-Kudufs-Secret"] = header
        req = urllib.request.Request(url, data=payload, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def stop(self):
        stop_process(self.proc, 10, term=True)


def runs_of(d):
    return sorted(f[len("run."):-len(".pid")] for f in os.listdir(d) if f.endswith(".pid"))


def read(path):
    with open(path, errors="replace") as f:
        return f.read()


@pytest.fixture
def webhook_runs(tmp_path):
    """A dir where the wrapper records the runs; at teardown a run still going is
    stopped by its pid (kudufs-to-blob cleans up on SIGTERM)."""
    d = tmp_path / "runs"
    d.mkdir()
    yield str(d)
    for n in runs_of(str(d)):
        if not os.path.exists(os.path.join(d, "run.%s.rc" % n)):
            pid = int(read(os.path.join(d, "run.%s.pid" % n)))
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            wait_for(lambda: not os.path.exists("/proc/%d" % pid), 20)


def test_webhook_alert_fired_collects_wrong_secret_and_resolved_do_not(make_emulator, azurite, blob_env,
                                                                        tmp_path, webhook_runs):
    """Debian's webhook serving scripts/webhook/hooks.json: a common-alert-schema
    payload naming ALPHA and beta (case differs from the config's sections) with the
    right secret collects their site dumps; a wrong or missing secret gets 403 and runs
    nothing; a Resolved alert runs the script, which uploads nothing."""
    emu = make_emulator(two_app_spec())
    cfg = config_for(str(tmp_path / "kudufs.conf"), emu, ["alpha", "beta"])
    wrapper = str(tmp_path / "to-blob-wrapper")
    with open(wrapper, "w") as f:
        f.write(WRAPPER)
    os.chmod(wrapper, 0o755)
    secret = "hook-secret-" + base64.b32encode(os.urandom(10)).decode().lower()
    env = dict(blob_env, KUDUFS_WEBHOOK_SECRET=secret, KUDUFS_TO_BLOB=wrapper, REAL_TO_BLOB=TO_BLOB,
               RUNS=webhook_runs, KUDUFS_TO_BLOB_ARGS="--config %s --container hooked" % cfg)
    with open(os.path.join(FIXTURES, "alert-fired.json"), "rb") as f:
        fired = f.read()
    with open(os.path.join(FIXTURES, "alert-resolved.json"), "rb") as f:
        resolved = f.read()

    hook = Webhook(env, str(tmp_path))
    try:
        for kw in ({"header": "wrong-" + secret}, {"secret": secret[:-1]}, {}):
            st, body = hook.post(fired, **kw)
            assert st == 403, (kw, st, body)
        st, body = hook.post(fired, secret=secret, hook="no-such-hook")
        assert st == 404, (st, body)

        # Resolved, secret in the URL (?secret=, as an action group's webhook URL carries it)
        st, body = hook.post(resolved, secret=secret)
        assert (st, body) == (200, "kudufs-to-blob started\n")
        assert wait_for(lambda: [n for n in runs_of(webhook_runs)
                                 if os.path.exists(os.path.join(webhook_runs, "run.%s.rc" % n))], 60), hook.text()
        (n,) = runs_of(webhook_runs)
        out = read(os.path.join(webhook_runs, "run.%s.out" % n))
        assert read(os.path.join(webhook_runs, "run.%s.rc" % n)).strip() == "0", out
        assert "alert 'high-memory-alpha-beta' is Resolved: nothing to do" in out, out
        assert not azurite.container_exists("hooked") and dumps_taken(emu) == {}

        # Fired, secret in the header
        t0 = utc_now()
        st, body = hook.post(fired, header=secret)
        assert (st, body) == (200, "kudufs-to-blob started\n")

        def done():
            runs = runs_of(webhook_runs)
            return len(runs) == 2 and os.path.exists(os.path.join(webhook_runs, "run.%s.rc" % runs[1]))
        assert wait_for(done, 180), (runs_of(webhook_runs), hook.text()[-3000:])
        t1 = utc_now()
        n = runs_of(webhook_runs)[1]
        out = read(os.path.join(webhook_runs, "run.%s.out" % n))
        assert read(os.path.join(webhook_runs, "run.%s.rc" % n)).strip() == "0", out
        # webhook handed over the payload as sent
        alert = json.loads(read(os.path.join(webhook_runs, "run.%s.alert.json" % n)))
        assert alert == json.loads(fired)
        assert "alert 'high-memory-alpha-beta' (Fired): apps alpha beta" in out, out
        check_uploads(azurite, emu, "hooked", out, SITE_DUMPS, t0, t1)
        assert dumps_taken(emu) == {(a, p, 1): 1 for (a, p) in SITE_DUMPS}
        # the 403s and the 404 ran nothing: two runs in all
        assert len(runs_of(webhook_runs)) == 2
        assert secret not in out
    finally:
        hook.stop()


def test_webhook_serves_no_hook_without_a_secret(tmp_path, blob_env):
    """hooks.json refuses to load when KUDUFS_WEBHOOK_SECRET is empty: no hook, 404."""
    env = dict(blob_env, KUDUFS_TO_BLOB="/bin/false")
    env.pop("KUDUFS_WEBHOOK_SECRET", None)
    hook = Webhook(env, str(tmp_path))
    try:
        with open(os.path.join(FIXTURES, "alert-fired.json"), "rb") as f:
            fired = f.read()
        st, _ = hook.post(fired)
        assert st == 404
        st, _ = hook.post(fired, secret="")
        assert st == 404
        assert "KUDUFS_WEBHOOK_SECRET is not set" in hook.text() or "couldn't load hooks" in hook.text()
    finally:
        hook.stop()


# --------------------------------------------------------------------------- importer


def profile(name):
    """(userName, userPWD) of the MSDeploy profile of a fixture."""
    root = ET.parse(os.path.join(FIXTURES, name)).getroot()
    p = [p for p in root.iter("publishProfile") if p.get("publishMethod") == "MSDeploy"][0]
    return p.get("userName"), p.get("userPWD")


def test_import_publish_settings_config_passes_kudufs_check(make_emulator, kudufs_bin, tmp_path):
    """Both sample profiles into the default config (~/.config/kudufs/config): sections
    as documented, config and password files 0600, the password never printed; with
    the emulator's URLs `kudufs --check` accepts the publishing credentials."""
    u1, p1 = profile("myfunc.PublishSettings")
    u2, p2 = profile("shop-staging.PublishSettings")
    emu = make_emulator({"sites": {"myfunc": {"user": u1, "password": p1},
                                   "shop-staging": {"user": u2, "password": p2}}})
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUDUFS", "XDG_CONFIG"))}
    env["HOME"] = str(home)
    cfgdir = home / ".config" / "kudufs"
    cfg = cfgdir / "config"

    def imp(*args):
        r = run([IMPORTER] + list(args), env=env)
        assert p1 not in r.stdout + r.stderr and p2 not in r.stdout + r.stderr
        return r

    r = imp(os.path.join(FIXTURES, "myfunc.PublishSettings"), "--url", emu.url("myfunc"))
    assert r.returncode == 0, r.stderr
    assert r.stdout == ""
    assert "added [app myfunc]" in r.stderr and "kudufs --check --config %s" % cfg in r.stderr
    r = imp(os.path.join(FIXTURES, "shop-staging.PublishSettings"))
    assert r.returncode == 0, r.stderr

    text = cfg.read_text()
    assert text == ("[app myfunc]\nurl = %s\nuser = $myfunc\npassword_file = %s/myfunc.pass\n\n"
                    "[app shop-staging]\nurl = https://shop-staging.scm.azurewebsites.net\n"
                    "user = $shop__staging\npassword_file = %s/shop-staging.pass\n"
                    % (emu.url("myfunc"), cfgdir, cfgdir)), text
    for f, pw in ((cfg, None), (cfgdir / "myfunc.pass", p1), (cfgdir / "shop-staging.pass", p2)):
        assert (os.stat(f).st_mode & 0o777) == 0o600, f
        if pw:
            assert f.read_text() == pw + "\n"
    assert (os.stat(cfgdir).st_mode & 0o077) == 0
    assert p1 not in text and p2 not in text

    # the slot's default URL is Azure's; point it at the emulator, then --check both
    cfg.write_text(text.replace("https://shop-staging.scm.azurewebsites.net", emu.url("shop-staging")))
    r = run([kudufs_bin, "--check"], env=env)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert r.stdout == "myfunc: OK 4 processes\nshop-staging: OK 4 processes\n", r.stdout
    assert emu.stats()["unauthorized"] == 0
    assert p1 not in r.stdout + r.stderr

    # importing again: refused, nothing changed; --force replaces only the password file
    before = cfg.read_text()
    r = imp(os.path.join(FIXTURES, "myfunc.PublishSettings"), "--url", emu.url("myfunc"))
    assert r.returncode == 1 and "already has an [app myfunc] section" in r.stderr, r.stderr
    assert cfg.read_text() == before
    (cfgdir / "myfunc.pass").write_text("stale\n")
    r = imp(os.path.join(FIXTURES, "myfunc.PublishSettings"), "--force")
    assert r.returncode == 0, r.stderr
    assert cfg.read_text() == before and (cfgdir / "myfunc.pass").read_text() == p1 + "\n"
    assert (os.stat(cfgdir / "myfunc.pass").st_mode & 0o777) == 0o600
    r = run([kudufs_bin, "--check"], env=env)
    assert r.returncode == 0, (r.stdout, r.stderr)


# --------------------------------------------------------------------------- lint


def test_scripts_lint_clean():
    """The shell scripts are shellcheck clean, kudufs-to-blob compiles (and is pyflakes
    clean where Debian's pyflakes is installed); --help and a usage error. Needs neither
    Azurite nor a mount."""
    need("shellcheck")
    scripts = [os.path.join(SCRIPTS, s) for s in ("kudufs-import-publish-settings", "install-deps", "demo")]
    r = run(["shellcheck"] + scripts)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr
    r = run([PYTHON, "-c", "import sys, ast; ast.parse(open(sys.argv[1]).read(), sys.argv[1])", TO_BLOB])
    assert r.returncode == 0, r.stderr
    if shutil.which("pyflakes3") or shutil.which("pyflakes"):
        r = run([shutil.which("pyflakes3") or shutil.which("pyflakes"), TO_BLOB])
        assert r.returncode == 0, r.stdout + r.stderr
    r = run([TO_BLOB, "--help"])
    assert r.returncode == 0 and r.stdout.startswith("usage: kudufs-to-blob"), r.stderr
    for opt in ("--account-url", "--instances", "--alert", "--quiet", "--parallel"):
        assert opt in r.stdout
    r = run([TO_BLOB, "--bogus"])
    assert r.returncode == 2 and "unknown argument: --bogus" in r.stderr, r.stderr
    r = run([TO_BLOB, "--mount", "/", "--type", "huge"])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    r = run([TO_BLOB, "--mount", "/", "--container", "https://a.blob.core.windows.net/c"])
    assert r.returncode == 2 and "needs a SAS token" in r.stderr, r.stderr


def test_bad_destination_or_mount_is_one_error_line(tmp_path, blob_env):
    """A malformed connection string, a SAS URL without a container, an unreachable
    account, a directory that is no mount: one line on stderr, exit 1 or 2, no traceback,
    nothing secret printed."""
    root = tmp_path / "notamount"
    (root / "app" / "w3wp-1").mkdir(parents=True)
    (root / "app" / "w3wp-1" / "details.json").write_text("{}")
    env = dict(blob_env, AZURE_STORAGE_CONNECTION_STRING="AccountKey=c2VjcmV0LWtleQ==;garbage")
    r = to_blob(["--mount", str(root), "--pid", "1"], env)
    assert r.returncode == 1 and "Connection string is either blank or malformed" in r.stderr, r.stderr
    assert "c2VjcmV0LWtleQ" not in r.stdout + r.stderr
    r = to_blob(["--mount", str(root), "--pid", "1", "--container", "https://127.0.0.1:1/?sv=1&sig=c2VjcmV0"], env)
    assert r.returncode == 2 and "no container name" in r.stderr and "c2VjcmV0" not in r.stderr, r.stderr
    r = to_blob(["--mount", str(root), "--pid", "1", "--container", "http://127.0.0.1:1/acct/c?sv=1&sig=c2VjcmV0"],
                env, timeout=600)
    assert r.returncode == 1 and "c2VjcmV0" not in r.stdout + r.stderr, r.stdout + r.stderr
    assert re.search(r"^FAIL app/w3wp-1 mini: upload: .*(refused|Failed to establish)", r.stdout, re.M), r.stdout
    r = to_blob(["--mount", str(root)], env)
    assert r.returncode == 1 and "does not mark the site's process" in r.stdout, r.stdout


# --------------------------------------------------------------------------- multi-GiB


def _tree(pid):
    """pid and its descendants."""
    out = [pid]
    try:
        with open("/proc/%d/task/%d/children" % (pid, pid)) as f:
            kids = [int(x) for x in f.read().split()]
    except OSError:
        return out
    for k in kids:
        out += _tree(k)
    return out


def _status(pid):
    try:
        with open("/proc/%d/status" % pid) as f:
            st = dict(ln.split(":", 1) for ln in f if ":" in ln)
        return st["Name"].strip(), int(st.get("VmRSS", "0 kB").split()[0]), int(st.get("VmHWM", "0 kB").split()[0])
    except (OSError, KeyError, ValueError):
        return None


@pytest.mark.slow
def test_full_dump_3gib_flat_rss(make_emulator, mount, azurite, blob_env, capsys):
    """A 3 GiB full dump streamed from the mount into a blob: the blob's length and MD5
    (property and downloaded bytes) match the emulator's; the script (one Python process,
    SDK included) stays at most 100 MiB RSS (VmHWM) and the kudufs daemon at most 64 MiB."""
    size = 3072 * MiB
    emu = make_emulator({"sites": {"big": {"full_size": size, "processes": [
        {"name": "w3wp", "pid": 4100, "scm": True}, {"name": "w3wp", "pid": 4292}]}}})
    m = mount({"big": emu.url("big")}, opts=("cache_max=4G",))
    want = emu.digest("big", 4292, 2)
    assert want["size"] == size

    t0 = time.monotonic()
    proc = subprocess.Popen([TO_BLOB, "--mount", m.path, "--type", "full", "--container", "big"],
                            env=blob_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hwm = 0
    try:
        while proc.poll() is None:
            s = _status(proc.pid)
            if s:
                hwm = max(hwm, s[2])
            assert [p for p in _tree(proc.pid) if p != proc.pid] == [], "the script runs no helper process"
            time.sleep(0.2)
            assert time.monotonic() - t0 < 1800, "kudufs-to-blob took over 30 min"
        out, err = proc.communicate()
    finally:
        stop_process(proc, 10, term=True)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, (out, err)
    (line,) = out.splitlines()
    mm = OK_RE.match(line)
    assert mm and mm["type"] == "full" and int(mm["bytes"]) == size, line
    b = azurite.list_blobs("big")[mm["blob"]]
    assert b["length"] == size and b["md5"] == want["md5_b64"], b
    assert azurite.blob_digest("big", mm["blob"]) == (size, want["md5"])
    assert dumps_taken(emu) == {("big", 4292, 2): 1}
    daemon = read_rss_hwm(m.pid)
    with capsys.disabled():
        print("\n3 GiB full dump, mount -> SDK -> Azurite: %.1f s (%.0f MiB/s end to end); script VmHWM %d kB;"
              " kudufs daemon VmHWM %d kB" % (elapsed, size / MiB / elapsed, hwm, daemon))
    assert hwm <= 100 * 1024
    assert daemon <= 64 * 1024
