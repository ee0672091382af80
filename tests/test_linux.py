"""Linux apps (KuduLite) and Process Explorer parity (issue 14), on a real mount.

- platform per app: detected from what Kudu answers (dotnet-monitor's list items, or its
  400 "Not supported on Linux"), or configured; shown by --check and status.json;
- a Linux app's four dump files, each with its own type= (Mini, Full, WithHeap, Triage),
  and none of them on a Windows app;
- no dotnet-monitor: EOPNOTSUPP with the WEBSITE_USE_DOTNET_MONITOR hint (app directory and
  dump file xattr, log); Linux Consumption: --check and the pre-mount check name it;
- threads.json / modules.json of Windows processes: the server's JSON, fetched only when read.
"""
import errno
import hashlib
import json
import os
import subprocess
import threading

from helpers import (counters, emu_get, process_dirs, run, run_kudufs, wait_for, write_config, xattr)

MIB = 1 << 20
LINUX_TYPES = (("minidump.dmp", "Mini"), ("fulldump.dmp", "Full"),
               ("withheap.dmp", "WithHeap"), ("triage.dmp", "Triage"))


def linux_spec(**extra):
    lin = {"platform": "linux", "mini_size": 1 * MIB + 11, "full_size": 3 * MIB + 7,
           "withheap_size": 2 * MIB + 5, "triage_size": MIB // 2 + 3, "dump_delay": 0.2}
    sites = {"demo": {}, "lin": lin}
    sites.update(extra)
    return {"sites": sites}


def sha256_of(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(MIB), b""):
            h.update(block)
    return h.hexdigest()


def jq_sorted(data):
    """`jq -S .` of a JSON text: keys sorted, the same layout for both sides."""
    return run(["jq", "-S", "."], input=data if isinstance(data, str) else data.decode(),
               check=True).stdout


def status(m):
    with open(os.path.join(m.path, ".kudufs", "status.json")) as f:
        return json.load(f)


def test_linux_app_four_dumps_each_with_its_type(make_emulator, mount):
    emu = make_emulator(linux_spec())
    m = mount({"demo": emu.url("demo"), "lin": emu.url("lin")})
    proc = os.path.join(m.path, "lin", "dotnet-85")
    assert sorted(os.listdir(os.path.join(m.path, "lin"))) == \
        ["dotnet-142", "dotnet-85", "instances", "processes.json", "scm", "site"]
    # a Linux app: four dumps, no threads/modules (KuduLite answers 400 for them)
    assert sorted(os.listdir(proc)) == ["details.json", "fulldump.dmp", "minidump.dmp",
                                        "triage.dmp", "withheap.dmp"]
    for name in ("threads.json", "modules.json"):
        assert not os.path.exists(os.path.join(proc, name))
    st = status(m)
    plat = {a["name"]: (a["platform"], a["platform_source"]) for a in st["apps"]}
    assert plat["lin"] == ("linux", "detected"), st["apps"]
    # no w3wp: the site link names the first dotnet (dotnet-monitor's details have no is_scm_site)
    assert os.readlink(os.path.join(m.path, "lin", "site")) == "dotnet-85"

    # all four at once: kudufs takes them one at a time (dotnet-monitor's 429 never seen)
    sums, errors = {}, []

    def read(name):
        try:
            sums[name] = sha256_of(os.path.join(proc, name))
        except OSError as e:
            errors.append((name, e))
    threads = [threading.Thread(target=read, args=(n,)) for n, _ in LINUX_TYPES]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, (errors, m.log())
    for name, typ in LINUX_TYPES:
        want = emu.digest("lin", 85, type=typ)
        assert sums[name] == want["sha256"], (name, typ, want)
        assert os.path.getsize(os.path.join(proc, name)) == want["size"]
        assert xattr(os.path.join(proc, name), "url").endswith("/api/processes/85/dump?type=" + typ)
    c = counters(emu, "lin")
    assert c["dumps_by_key"] == {"85/Mini": 1, "85/Full": 1, "85/WithHeap": 1, "85/Triage": 1}, c
    assert c["dump_busy"] == 0 and c["dump_peak"] == 1, c
    assert sorted(x["type"] for x in status(m)["captures"]) == ["full", "mini", "triage", "withheap"]

    # a Windows app has neither Linux dump: not listed, ENOENT
    w = os.path.join(m.path, "demo", "w3wp-4292")
    assert "withheap.dmp" not in os.listdir(w) and "triage.dmp" not in os.listdir(w)
    for name in ("withheap.dmp", "triage.dmp"):
        try:
            os.stat(os.path.join(w, name))
            raise AssertionError("%s exists on a Windows app" % name)
        except FileNotFoundError:
            pass
    assert plat["demo"] == ("windows", "detected")


def test_platform_configured_and_check(make_emulator, mount, tmp_path):
    emu = make_emulator(linux_spec())
    cfg = write_config(tmp_path, {"demo": emu.url("demo"), "lin": emu.url("lin")})
    p = run_kudufs(["--check", "--config", str(cfg)], home=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    # a Linux app's line says so; a Windows app's line is as it always was
    assert p.stdout == "demo: OK 4 processes\nlin: OK linux, 2 processes\n", p.stdout
    # configured: the config wins, and status.json says where it came from
    m = mount({"lin": {"url": emu.url("lin"), "platform": "linux"}})
    assert {a["name"]: (a["platform"], a["platform_source"]) for a in status(m)["apps"]} == \
        {"lin": ("linux", "config")}
    assert "withheap.dmp" in os.listdir(os.path.join(m.path, "lin", "dotnet-142"))
    bad = write_config(tmp_path / "bad", {"lin": {"url": emu.url("lin"), "platform": "macos"}}) \
        if (tmp_path / "bad").mkdir() is None else None
    p = run_kudufs(["--check", "--config", str(bad)], home=tmp_path)
    assert p.returncode != 0 and "platform must be windows, linux or auto" in p.stderr, p.stderr


def test_no_dotnet_monitor_is_operation_not_supported(make_emulator, mount, tmp_path):
    emu = make_emulator(linux_spec(nomon={"platform": "linux", "dotnet_monitor": False}))
    hint = "WEBSITE_USE_DOTNET_MONITOR=true"
    # --check: the app fails, saying why
    p = run_kudufs(["--check", "--config", str(write_config(tmp_path, {"nomon": emu.url("nomon")}))],
                   home=tmp_path)
    assert p.returncode == 1 and p.stdout.startswith("nomon: 400 Bad Request: Not supported on Linux (") \
        and hint in p.stdout, p.stdout + p.stderr
    m = mount({"lin": emu.url("lin"), "nomon": emu.url("nomon")})
    # the mount went ahead (Kudu and the credentials work), with a warning
    assert "nomon: warning:" in m.log() and hint in m.log(), m.log()
    app = os.path.join(m.path, "nomon")
    r = run(["ls", app])
    assert r.returncode != 0 and "Operation not supported" in r.stderr, r.stderr
    err = xattr(app, "error")
    assert "Not supported on Linux" in err and hint in err and ".NET apps only" in err, err
    assert "user.kudufs.error" in os.listxattr(app)
    assert {a["name"]: a["platform"] for a in status(m)["apps"]}["nomon"] == "linux"

    # a dump read that meets it (dotnet-monitor turned off after the listing)
    dump = os.path.join(m.path, "lin", "dotnet-85", "minidump.dmp")
    assert os.path.isdir(os.path.dirname(dump))
    emu.add_fault(route="dump", site="lin", kind="status", status=400,
                  body="Not supported on Linux", content_type="text/plain")
    r = run(["cat", dump])
    assert r.returncode != 0 and "Operation not supported" in r.stderr, r.stderr
    try:
        with open(dump, "rb") as f:
            f.read(1)
        raise AssertionError("read worked")
    except OSError as e:
        assert e.errno == errno.EOPNOTSUPP, e
    err = xattr(dump, "error")
    assert "Not supported on Linux" in err and hint in err, err
    assert xattr(dump, "state") == "failed"
    assert wait_for(lambda: "minidump.dmp failed" in m.log() and m.log().count(hint) >= 2, 5), m.log()


def test_consumption_has_no_process_api(make_emulator, mount, tmp_path):
    emu = make_emulator(linux_spec(cons={"platform": "linux", "consumption": True}))
    msg = "this app's Kudu has no process API (Linux Consumption plan?)"
    cfg = write_config(tmp_path, {"cons": emu.url("cons"), "lin": emu.url("lin")})
    p = run_kudufs(["--check", "--config", str(cfg)], home=tmp_path)
    assert p.returncode == 1, p.stdout + p.stderr
    assert p.stdout.startswith("cons: " + msg + " (404 on "), p.stdout
    assert "lin: OK linux, 2 processes" in p.stdout
    # the pre-mount check says the same and refuses
    m = mount({"cons": emu.url("cons")}, expect_fail=True)
    assert m.returncode != 0 and msg in m.log(), m.log()
    # a 404 from a URL that is no Kudu at all is not called Consumption
    cfg2 = write_config(tmp_path / "x" if (tmp_path / "x").mkdir() is None else None,
                        {"nope": emu.url("cons") + "/not/kudu"})
    p = run_kudufs(["--check", "--config", str(cfg2)], home=tmp_path)
    assert p.returncode == 1 and "404" in p.stdout and "Consumption" not in p.stdout, p.stdout


def test_threads_and_modules_fetched_only_when_read(make_emulator, mount):
    emu = make_emulator(linux_spec())
    m = mount({"demo": emu.url("demo"), "lin": emu.url("lin")})
    app = os.path.join(m.path, "demo")

    def other():  # threads and modules are "other" requests; so is ls -R's /instance/all
        c = counters(emu)
        return c.get("other", 0) - c.get("instance_all", 0)

    before = other()
    # ls, ls -l of every process directory (instances/ too) and a stat of both files: none
    # asks for them
    run(["ls", "-lR", app], check=True)
    for d in process_dirs(app):
        p = os.path.join(app, d)
        assert {"threads.json", "modules.json"} <= set(os.listdir(p)), os.listdir(p)
        os.stat(os.path.join(p, "threads.json"))
        os.stat(os.path.join(p, "modules.json"))
    assert other() == before, counters(emu)
    # read: the server's JSON, pretty-printed; jq -S . of both sides are equal
    proc = os.path.join(app, "w3wp-4292")
    mine = {}
    for part in ("threads", "modules"):
        with open(os.path.join(proc, part + ".json")) as f:
            mine[part] = f.read()
        assert mine[part].startswith("[\n  {\n    ") and mine[part].endswith("\n]\n"), mine[part][:80]
    assert other() - before == 2, counters(emu)
    # cached like details (detail_ttl): read again, no request; stat now has the size
    with open(os.path.join(proc, "threads.json")) as f:
        f.read()
    assert other() - before == 2, counters(emu)
    assert os.path.getsize(os.path.join(proc, "modules.json")) == len(mine["modules"])
    for part in ("threads", "modules"):
        server = emu_get(emu, "demo", "/api/processes/4292/" + part)
        assert jq_sorted(mine[part]) == jq_sorted(server)
    # a Linux process has neither
    lin = os.path.join(m.path, "lin", "dotnet-85")
    for name in ("threads.json", "modules.json"):
        try:
            open(os.path.join(lin, name)).close()
            raise AssertionError(name)
        except FileNotFoundError:
            pass
    assert counters(emu, "lin")["other"] == 0


def test_kudufs_to_blob_types(make_emulator, mount):
    """kudufs-to-blob --type withheap|triage: planned for a Linux app (its withheap.dmp),
    a FAIL line for a Windows app; --dry-run reads no dump and needs no storage account."""
    emu = make_emulator(linux_spec())
    m = mount({"demo": emu.url("demo"), "lin": emu.url("lin")})
    tool = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "scripts", "kudufs-to-blob")
    env = dict(os.environ)
    env.pop("AZURE_STORAGE_CONNECTION_STRING", None)

    def to_blob(*args):
        return subprocess.run([tool, "--mount", m.path, "--dry-run", "--container", "dumps"] +
                              list(args), capture_output=True, text=True, timeout=120, env=env)
    r = to_blob("--type", "withheap", "--app", "demo")
    assert r.returncode != 0 and "Traceback" not in r.stderr, r.stdout + r.stderr
    assert "FAIL demo withheap: withheap.dmp is a Linux app's dump" in r.stdout, r.stdout + r.stderr
    for t in ("withheap", "triage"):
        r = to_blob("--type", t, "--app", "lin", "--all")
        assert r.returncode == 0 and "FAIL" not in r.stdout, r.stdout + r.stderr
        assert "dotnet-85" in r.stdout + r.stderr and ".%s.dmp" % t in r.stdout + r.stderr, \
            r.stdout + r.stderr
    r = to_blob("--type", "core", "--app", "lin")
    assert r.returncode == 2 and "invalid choice" in r.stderr, r.stderr
    assert counters(emu)["dump"] == 0 and counters(emu, "lin")["dump"] == 0
