"""kudufs's command line: --check, --help/--version, usage errors, config
errors, secrets kept out of output, mounting via mount.fuse3, SIGTERM, and a
valgrind leak check of a mount/ls/cat/unmount cycle."""
import os
import re
import shutil
import signal
import subprocess
import time

import pytest

from helpers import (KUDUFS_BIN as KUDUFS, counters, has_open, kudufs_env, stop_process,
                     unmount, wait_for, wait_mounted, write_config, write_private, xattr)
import helpers


def run(args, env=None, timeout=60, **kw):
    """The kudufs binary with args; its environment from helpers.kudufs_env, plus env."""
    return helpers.run([KUDUFS] + list(args), env=kudufs_env(env=env), timeout=timeout, **kw)


def make_config(tmp_path, emu, password=None, extra=""):
    """tmp_path/config with one app, demo, on emu (password_file tmp_path/demo.pass)."""
    return write_config(tmp_path, {"demo": emu.url("demo")}, user=emu.user,
                        password=password or emu.password, config_extra=extra)


def test_help_and_version():
    h = run(["--help"])
    assert h.returncode == 0 and "usage: kudufs" in h.stdout and "--check" in h.stdout
    v = run(["--version"])
    assert v.returncode == 0 and re.match(r"kudufs \d+\.\d+\.\d+", v.stdout)


@pytest.mark.parametrize("args", [[], ["--bogus", "/tmp/x"], ["a", "b", "c"]])
def test_usage_errors_exit_2_with_one_line(args):
    p = run(args)
    assert p.returncode == 2, p
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("kudufs: "), p.stderr


def test_check_ok(emulator, tmp_path):
    p = run(["--check", "--app", f"demo={emulator.url('demo')}"],
            env={"KUDUFS_USER": emulator.user, "KUDUFS_PASSWORD": emulator.password,
                 "HOME": str(tmp_path)})
    assert p.returncode == 0, p.stderr
    assert re.fullmatch(r"demo: OK \d+ processes\n", p.stdout), p.stdout
    assert counters(emulator)["list"] == 1


def test_check_wrong_password(emulator, tmp_path):
    p = run(["--check", "--app", f"demo={emulator.url('demo')}"],
            env={"KUDUFS_USER": emulator.user, "KUDUFS_PASSWORD": "wrong-pw-123",
                 "HOME": str(tmp_path)})
    assert p.returncode == 1
    assert p.stdout == "demo: 401 Unauthorized (credentials from KUDUFS_USER/KUDUFS_PASSWORD)\n"
    assert "wrong-pw-123" not in p.stdout + p.stderr


def test_check_netrc_source_named(emulator, tmp_path):
    host = emulator.url("demo").split("//")[1].split(":")[0]
    write_private(tmp_path / ".netrc", f"machine {host} login {emulator.user} password nope-nope\n")
    p = run(["--check", "--app", f"demo={emulator.url('demo')}"], env={"HOME": str(tmp_path)})
    assert p.returncode == 1
    assert p.stdout == "demo: 401 Unauthorized (credentials from ~/.netrc)\n"
    write_private(tmp_path / ".netrc", f"machine {host} login {emulator.user} password {emulator.password}\n")
    p = run(["--check", "--app", f"demo={emulator.url('demo')}"], env={"HOME": str(tmp_path)})
    assert p.returncode == 0 and "demo: OK" in p.stdout


def test_check_emulator_down(emulator, tmp_path):
    url = emulator.url("demo")
    emulator.stop()
    p = run(["--check", "--app", f"demo={url}"],
            env={"KUDUFS_USER": "u", "KUDUFS_PASSWORD": "p", "HOME": str(tmp_path)})
    assert p.returncode == 1
    assert p.stdout.startswith("demo: connection failed:"), p.stdout


def test_check_two_apps_one_bad(emulator, tmp_path):
    cfg = make_config(tmp_path, emulator)
    with open(cfg, "a") as f:
        f.write(f"\n[app other]\nurl = http://127.0.0.1:1\nuser = x\npassword_file = {tmp_path}/demo.pass\n")
    p = run(["--check", "--config", str(cfg)], env={"HOME": str(tmp_path)})
    assert p.returncode == 1
    assert re.search(r"^demo: OK \d+ processes$", p.stdout, re.M)
    assert re.search(r"^other: connection failed", p.stdout, re.M)


def test_malformed_list_is_reported(emulator, tmp_path):
    emulator.add_fault(route="list", kind="malformed", count=1)
    p = run(["--check", "--config", str(make_config(tmp_path, emulator))], env={"HOME": str(tmp_path)})
    assert p.returncode == 1 and "demo: malformed process list" in p.stdout


def test_check_counts_what_the_mount_shows(emulator, tmp_path):
    """--check parses the list with the mount's own parser (kudu/model.c): an item without a
    usable id and a repeated pid are not counted, and it says so."""
    body = '[{"id": 1, "name": "w3wp"}, {"name": "no-id"}, {"pid": 2, "name": "dotnet"},' \
           ' {"id": 1, "name": "again"}]'
    emulator.add_fault(route="list", kind="status", status=200, body=body,
                       content_type="application/json", count=1)
    p = run(["--check", "--config", str(make_config(tmp_path, emulator))], env={"HOME": str(tmp_path)})
    assert p.returncode == 0, p.stderr
    assert p.stdout == ("demo: OK 2 processes (1 items without a usable id or name skipped, "
                        "1 with a pid listed before)\n"), p.stdout


def test_config_error_names_file_and_line(tmp_path):
    cfg = write_private(tmp_path / "config", "[kudufs]\ncache_max = 1G\n\n[app a]\nusr = x\n")
    p = run(["--check", "--config", str(cfg)], env={"HOME": str(tmp_path)})
    assert p.returncode == 1
    assert f"{cfg}:5: unknown key 'usr' in [app a]" in p.stderr


def test_group_readable_config_and_password_refused(emulator, tmp_path):
    cfg = make_config(tmp_path, emulator)
    cfg.chmod(0o644)
    p = run(["--check", "--config", str(cfg)], env={"HOME": str(tmp_path)})
    assert p.returncode == 1 and "chmod 600" in p.stderr and str(cfg) in p.stderr
    cfg.chmod(0o600)
    (tmp_path / "demo.pass").chmod(0o640)
    p = run(["--check", "--config", str(cfg)], env={"HOME": str(tmp_path)})
    assert p.returncode == 1 and "chmod 600" in p.stderr and "demo.pass" in p.stderr
    assert emulator.password not in p.stdout + p.stderr


def test_mount_refused_when_check_fails(emulator, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cfg = make_config(tmp_path, emulator, password="bad-password-xyz")
    p = run(["-f", "--config", str(cfg), str(mnt)], env={"HOME": str(tmp_path)}, timeout=30)
    assert p.returncode == 1
    assert "demo: 401 Unauthorized (credentials from password_file" in p.stderr
    assert not os.path.ismount(mnt)


def test_debug_output_never_contains_the_password(emulator, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cfg = make_config(tmp_path, emulator)
    log = open(tmp_path / "debug.log", "w")
    proc = subprocess.Popen([KUDUFS, "-d", "--config", str(cfg), str(mnt)], stdout=log,
                            stderr=subprocess.STDOUT, env=kudufs_env(tmp_path))
    try:
        assert wait_mounted(mnt, proc), "%s did not mount" % mnt
        subprocess.run(["ls", "-lR", str(mnt)], capture_output=True, timeout=60)
        site = os.path.join(mnt, "demo", "site")
        with open(os.path.join(site, "details.json")) as f:
            assert '"name": "w3wp"' in f.read()
        with open(os.path.join(site, "minidump.dmp"), "rb") as f:
            assert f.read(4) == b"MDMP"
    finally:
        unmount(mnt, proc, timeout=10)
        log.close()
    out = (tmp_path / "debug.log").read_text(errors="replace")
    assert "getattr" in out or "LOOKUP" in out, "debug log should show FUSE requests"
    assert emulator.password not in out
    import base64
    assert base64.b64encode(f"{emulator.user}:{emulator.password}".encode()).decode() not in out
    assert "Authorization" not in out
    assert not os.path.exists(tmp_path / "cache" / f"spool-{proc.pid}"), "spool dir left behind"


def test_sigterm_unmounts_cleanly(emulator, tmp_path):
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cfg = make_config(tmp_path, emulator)
    proc = subprocess.Popen([KUDUFS, "-f", "--config", str(cfg), str(mnt)],
                            stderr=subprocess.PIPE, env=kudufs_env(tmp_path))
    try:
        assert wait_mounted(mnt, proc), "%s did not mount" % mnt
        assert os.listdir(mnt / "demo")
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=10)
        assert rc == 0, "exit %d: %s" % (rc, proc.stderr.read().decode(errors="replace")[-3000:])
        assert not os.path.ismount(mnt)
    finally:
        unmount(mnt, proc, timeout=10)


def test_sigterm_with_a_reader_waiting_ends_the_mount(make_emulator, tmp_path):
    """A busy mount cannot be unmounted plainly: SIGTERM then ends the session,
    the waiting reader fails (it is not left hanging) and no mount remains.
    The mountpoint is relative, as typed by a user, and the daemon chdirs to /."""
    emu = make_emulator({"sites": {"demo": {"dump_delay": 30}}})
    (tmp_path / "mnt").mkdir()
    cfg = make_config(tmp_path, emu)
    proc = subprocess.Popen([KUDUFS, "-f", "--config", str(cfg), "mnt"], cwd=str(tmp_path),
                            stderr=subprocess.PIPE, env=kudufs_env(tmp_path))
    mnt = tmp_path / "mnt"
    reader = None
    try:
        assert wait_mounted(mnt, proc), "%s did not mount" % mnt
        dump = mnt / "demo" / "site" / "minidump.dmp"
        reader = subprocess.Popen(["cat", str(dump)], stdout=subprocess.DEVNULL,
                                  stderr=subprocess.PIPE)
        # the reader has the dump open and the (30 s) dump is on the wire
        assert wait_for(lambda: has_open(reader.pid, dump) and xattr(dump, "state") == "fetching")
        assert reader.poll() is None, "the reader should be waiting for the slow dump"
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert reader.wait(timeout=10) != 0
        assert time.monotonic() - t0 < 5
        assert "busy" in proc.stderr.read().decode()
        assert not os.path.ismount(mnt)
    finally:
        if reader is not None and reader.poll() is None:
            reader.kill()
            reader.wait()
        unmount(mnt, proc, timeout=10)


def test_bad_cache_dir_is_reported_before_daemonizing(emulator, tmp_path):
    """Without -f the daemon detaches: a cache_dir it cannot create must fail first, visibly."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    (tmp_path / "afile").write_text("x")
    cfg = make_config(tmp_path, emulator)
    r = run(["--config", str(cfg), "-o", f"cache_dir={tmp_path}/afile/cache", str(mnt)],
            env={"HOME": str(tmp_path)})
    try:
        assert r.returncode == 1, r.stderr
        assert "cache_dir" in r.stderr and "afile" in r.stderr, r.stderr
        assert not os.path.ismount(mnt)
    finally:
        unmount(mnt)


def test_mount_fuse3_fstab_style(emulator, tmp_path):
    """The fstab line `kudufs#demo /mnt/kudu fuse3 config=...` goes through mount.fuse3."""
    helper = shutil.which("mount.fuse3") or "/sbin/mount.fuse3"
    assert os.path.exists(helper), "mount.fuse3 (package fuse3) missing"
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cfg = make_config(tmp_path, emulator)
    env = kudufs_env(tmp_path, {"PATH": os.path.dirname(KUDUFS) + ":" + os.environ.get("PATH", "")})
    p = subprocess.run([helper, "kudufs#demo", str(mnt), "-o", f"config={cfg},max_conns=4"],
                       capture_output=True, text=True, env=env, timeout=30)
    try:
        assert p.returncode == 0, p.stderr
        assert os.path.ismount(mnt)
        assert "processes.json" in os.listdir(mnt / "demo")
        with open("/proc/mounts") as f:
            assert any(str(mnt) in line and "kudufs" in line for line in f)
    finally:
        pids = subprocess.run(["pgrep", "-f", f"kudufs.*{mnt}"], capture_output=True, text=True).stdout.split()
        unmount(mnt)
        for pid in pids:
            if not wait_for(lambda: not os.path.exists(f"/proc/{pid}"), timeout=5):
                os.kill(int(pid), signal.SIGKILL)


def test_valgrind_mount_ls_cat_unmount_no_leaks(emulator, tmp_path):
    vg = shutil.which("valgrind")
    assert vg, "valgrind missing (scripts/install-deps test installs it)"
    if "asan" in KUDUFS:
        pytest.skip("valgrind cannot run an ASan binary; `make test` runs this check")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cfg = make_config(tmp_path, emulator)
    log = tmp_path / "vg.log"
    proc = subprocess.Popen([vg, "--leak-check=full", "--show-leak-kinds=definite,indirect",
                             "--errors-for-leak-kinds=definite,indirect", "--error-exitcode=99",
                             f"--log-file={log}", KUDUFS, "-f", "--config", str(cfg), str(mnt)],
                            stderr=subprocess.DEVNULL, env=kudufs_env(tmp_path))
    try:
        assert wait_mounted(mnt, proc, timeout=60), "%s did not mount" % mnt
        subprocess.run(["ls", "-lR", str(mnt)], capture_output=True, timeout=120)
        subprocess.run(f"cat {mnt}/demo/*/details.json {mnt}/.kudufs/status.json >/dev/null",
                       shell=True, timeout=120)
        data = open(mnt / "demo" / "site" / "minidump.dmp", "rb").read()
        assert data[:4] == b"MDMP"
        subprocess.run(["getfattr", "-d", str(mnt / "demo" / "site" / "minidump.dmp")],
                       capture_output=True, timeout=60)
    finally:
        unmount(mnt)
        rc = stop_process(proc, timeout=60)
    text = log.read_text()
    assert rc == 0, text[-3000:]
    assert "ERROR SUMMARY: 0 errors" in text, text[-3000:]


def test_token_command_bearer_and_refresh_on_401(make_emulator, tmp_path):
    emu = make_emulator(token="tok-abc-123")
    # the first token the command prints is stale; after a 401 it is re-run
    counter = tmp_path / "n"
    script = write_private(tmp_path / "tok.sh", f"""#!/bin/sh
n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}
if [ $n -le 1 ]; then echo stale-token; else echo tok-abc-123; fi
""")
    script.chmod(0o700)
    cfg = write_private(tmp_path / "config", f"[app demo]\nurl = {emu.url('demo')}\ntoken_command = {script}\n")
    p = run(["--check", "--config", str(cfg)], env={"HOME": str(tmp_path)})
    assert p.returncode == 0, p.stdout + p.stderr
    assert re.fullmatch(r"demo: OK \d+ processes\n", p.stdout)
    assert counter.read_text().strip() == "2", "token_command re-run once after the 401"
    assert "tok-abc-123" not in p.stdout + p.stderr


def test_token_command_rerun_when_a_dump_gets_401(make_emulator, tmp_path):
    """An expired bearer token shows first on a dump (minutes after the mount's
    list): the command is re-run once and the dump taken again."""
    emu = make_emulator(token="tok-abc-123")
    counter = tmp_path / "n"
    script = write_private(tmp_path / "tok.sh", f"""#!/bin/sh
n=$(cat {counter} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {counter}
echo tok-abc-123
""")
    script.chmod(0o700)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    cfg = write_private(tmp_path / "config", f"[kudufs]\ncache_dir = {tmp_path}/cache\n"
                        f"[app demo]\nurl = {emu.url('demo')}\ntoken_command = {script}\n")
    proc = subprocess.Popen([KUDUFS, "-f", "--config", str(cfg), str(mnt)],
                            stderr=subprocess.PIPE, env=kudufs_env(tmp_path))
    try:
        assert wait_mounted(mnt, proc), "%s did not mount" % mnt
        before = int(counter.read_text())
        emu.reset()
        emu.add_fault(route="dump", site="demo", kind="status", status=401, count=1)
        r = subprocess.run(["sha256sum"], stdin=open(mnt / "demo" / "w3wp-4292" / "minidump.dmp", "rb"),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[0] == emu.digest("demo", 4292, 1)["sha256"]
        assert int(counter.read_text()) == before + 1, "token_command re-run once"
        assert counters(emu)["dump"] == 2, "the 401'd dump and the retry"
    finally:
        unmount(mnt, proc, timeout=10)
