"""The kudu/ client against the emulator, without FUSE: every fault kind maps
to the design's errno and message, and the emulator's counters show how many
requests were made. Driven through build/tools/kudu_fetch."""
import hashlib
import json
import os
import re
import tempfile

import pytest

from helpers import counters, emu_json, kudu_fetch, process_dirs, wait_emulator_idle


def fetch(emu, *args, password=None, opts=(), site="demo", timeout=60):
    """kudu_fetch on an app of emu with the emulator's credentials (or password)."""
    return kudu_fetch(emu.url(site), *args, opts=opts, timeout=timeout,
                      env={"KUDUFS_USER": emu.user,
                           "KUDUFS_PASSWORD": emu.password if password is None else password,
                           "HOME": tempfile.gettempdir()})


def site_pid(emu):
    """The pid of the site's w3wp (the one without is_scm_site)."""
    for p in emu_json(emu, "demo", "/api/processes"):
        if p["name"] == "w3wp" and not emu_json(emu, "demo", f"/api/processes/{p['id']}").get("is_scm_site"):
            return p["id"]
    raise AssertionError("emulator has no site w3wp")


def test_list_ok_counts_one_request(emulator):
    emulator.reset()
    r = fetch(emulator, "list")
    assert r["ok"], r["line"]
    assert r["status"] == "200" and r["attempts"] == "1"
    assert isinstance(json.loads(r["body"]), list)
    assert counters(emulator)["list"] == 1


def test_wrong_password_is_eacces_and_names_the_source(emulator):
    r = fetch(emulator, "list", password="not-the-password")
    assert not r["ok"] and r["rc"] == 1
    assert r["errno"] == "EACCES" and r["status"] == "401"
    assert "401 Unauthorized (credentials from KUDUFS_USER/KUDUFS_PASSWORD)" in r["msg"]
    assert "not-the-password" not in r["line"] + r["body"]


@pytest.mark.parametrize("status,errno_name", [(403, "EACCES"), (404, "ENOENT"), (500, "EIO"),
                                               (400, "EIO"), (504, "ETIMEDOUT")])
def test_status_faults_map_to_errno(emulator, status, errno_name):
    emulator.reset()
    emulator.add_fault(route="list", kind="status", status=status, count=1)
    r = fetch(emulator, "list")
    assert not r["ok"]
    assert r["errno"] == errno_name, r["line"]
    assert r["status"] == str(status)
    assert counters(emulator)["list"] == 1, "non-retryable status must not be retried"


def test_front_end_cutoff_500_is_etimedout_with_hint(emulator):
    emulator.add_fault(route="list", kind="status", status=500, message="Request Timed Out", count=1)
    r = fetch(emulator, "list")
    assert r["errno"] == "ETIMEDOUT", r["line"]
    assert "230 s" in r["msg"] and "minidump" in r["msg"]


def test_front_end_cutoff_html_page_is_etimedout(emulator, tmp_path):
    """The real 230 s cut is the front end's IIS page, not Kudu's JSON."""
    pid = site_pid(emulator)
    emulator.add_fault(route="dump", kind="frontend_timeout", count=1)
    r = fetch(emulator, "dump", pid, 2, tmp_path / "d.dmp")
    assert r["errno"] == "ETIMEDOUT", r["line"]
    assert "500 - The request timed out." in r["msg"], r["msg"]
    assert "<" not in r["msg"], "the page's title, not its markup"
    assert "230 s" in r["msg"] and "minidump" in r["msg"]


def test_front_end_cutoff_in_reason_phrase_only_is_etimedout(emulator):
    emulator.add_fault(route="list", kind="status", status=500, reason="Request Timed Out", count=1)
    r = fetch(emulator, "list")
    assert r["errno"] == "ETIMEDOUT", r["line"]
    assert "500 Request Timed Out" in r["msg"] and "minidump" in r["msg"]


def test_gzip_json_with_content_length(make_emulator):
    """Content-Length is the compressed size; the decoded body is longer."""
    emu = make_emulator({"gzip_json": True})
    r = fetch(emu, "list")
    assert r["ok"], r["line"]
    items = json.loads(r["body"])
    assert items and int(r["bytes"]) == len(r["body"].encode())
    r = fetch(emu, "details", items[0]["id"])
    assert r["ok"], r["line"]
    assert json.loads(r["body"])["id"] == items[0]["id"]


def test_unknown_pid_is_enoent_with_kudu_message(emulator):
    r = fetch(emulator, "details", 987654)
    assert r["errno"] == "ENOENT" and r["status"] == "404"
    assert "Process with an Id of 987654 is not running." in r["msg"]


def test_429_is_retried_honouring_retry_after(emulator):
    emulator.reset()
    emulator.add_fault(route="list", kind="status", status=429, retry_after=1, count=2)
    r = fetch(emulator, "list")
    assert r["ok"], r["line"]
    assert r["attempts"] == "3"
    assert float(r["secs"]) >= 1.9, "Retry-After: 1 twice must wait about 2 s"
    assert counters(emulator)["list"] == 3


def test_503_forever_gives_eio_after_bounded_retries(emulator):
    pid = site_pid(emulator)
    emulator.reset()
    emulator.add_fault(route="details", kind="status", status=503, retry_after=1)
    r = fetch(emulator, "details", pid)
    assert r["errno"] == "EIO", r["line"]
    assert "503" in r["msg"] and "after 5 attempts" in r["msg"]
    assert counters(emulator)["details"] == 5


def test_latency_is_tolerated(emulator):
    emulator.add_fault(route="list", kind="latency", seconds=1.0, count=1)
    r = fetch(emulator, "list")
    assert r["ok"] and float(r["secs"]) >= 0.9


def test_hung_list_ends_at_meta_timeout_not_first_byte_timeout(emulator, tmp_path):
    emulator.add_fault(route="list", kind="latency", seconds=4, count=1)
    r = fetch(emulator, "list", opts=["meta_timeout=1"])
    assert r["errno"] == "ETIMEDOUT", r["line"]
    assert "meta_timeout (1 s)" in r["msg"]
    assert float(r["secs"]) < 3
    # dumps keep first_byte_timeout: a 2 s generation is fine with meta_timeout=1
    pid = site_pid(emulator)
    emulator.add_fault(route="dump", kind="slow_dump", seconds=2, count=1)
    r = fetch(emulator, "dump", pid, 1, tmp_path / "d.dmp", opts=["meta_timeout=1"])
    assert r["ok"], r["line"]


def _affinity(emu, site="demo"):
    return counters(emu, site)["affinity"]


def test_arr_affinity_cookie_is_kept_by_the_mount(emulator, mount):
    """ARR pins a scaled-out app to one instance by the cookie it sets; process ids are per
    instance, so every request after the first must carry it back."""
    emulator.reset()
    m = mount({"demo": emulator.url("demo")}, opts=["list_ttl=0", "detail_ttl=0"])
    for n in process_dirs(os.path.join(m.path, "demo")) + ["site", "scm"]:
        with open(os.path.join(m.path, "demo", n, "details.json")) as f:
            json.load(f)
    os.listdir(os.path.join(m.path, "demo"))
    inst = emulator.current_spec()["sites"]["demo"]["instance"]
    got = _affinity(emulator)
    assert len(got) >= 4, got
    # the pre-mount check's client and the serving client each start without the cookie
    assert got[0][1] is None, got
    first = next(i for i, (_, v) in enumerate(got) if v is not None)
    assert first <= 2 and all(v == inst for _, v in got[first:]), got
    assert any(r == "list" for r, _ in got[first:]), "a later list carried it too"


def test_configured_instance_is_sent_from_the_first_request(make_emulator, mount):
    inst = "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0"
    emu = make_emulator({"sites": {"demo": {"instance": inst}}})
    m = mount({"demo": {"url": emu.url("demo"), "instance": inst}}, opts=["list_ttl=0"])
    os.listdir(os.path.join(m.path, "demo"))
    os.listdir(os.path.join(m.path, "demo"))
    got = _affinity(emu)
    assert len(got) >= 3 and all(v == inst for _, v in got), got


def test_connection_refused_is_eio(emulator):
    url = emulator.url("demo")
    emulator.stop()
    r = kudu_fetch(url, "list", timeout=30,
                   env={"KUDUFS_USER": "u", "KUDUFS_PASSWORD": "p", "HOME": tempfile.gettempdir()})
    assert r["rc"] == 1
    assert r["errno"] == "EIO" and "connection failed" in r["msg"], r["line"]


def test_dump_ok_digest_and_filename(emulator, tmp_path):
    emulator.reset()
    pid = site_pid(emulator)
    out = tmp_path / "d.dmp"
    r = fetch(emulator, "dump", pid, 1, out)
    assert r["ok"], r["line"]
    want = emulator.digest("demo", pid, 1)
    assert int(r["bytes"]) == want["size"] == out.stat().st_size
    assert hashlib.sha256(out.read_bytes()).hexdigest() == want["sha256"]
    assert re.fullmatch(r"w3wp-[0-9a-zA-Z]{1,6}-\d\d-\d\d-\d\d-\d\d-\d\d\.dmp", r["filename"]), r["filename"]
    assert counters(emulator)["dump"] == 1


@pytest.mark.parametrize("kind,errno_name,text", [
    ("short", "EIO", "cut short"),
    ("reset", "EIO", "reset"),
])
def test_dump_body_faults_are_eio(emulator, tmp_path, kind, errno_name, text):
    pid = site_pid(emulator)
    emulator.add_fault(route="dump", kind=kind, after_bytes=1 << 20, count=1)
    r = fetch(emulator, "dump", pid, 1, tmp_path / "d.dmp")
    assert r["errno"] == errno_name, r["line"]
    assert text in r["msg"], r["msg"]


def test_dump_stall_past_stall_timeout_is_etimedout(emulator, tmp_path):
    pid = site_pid(emulator)
    emulator.add_fault(route="dump", kind="stall", after_bytes=1 << 20, seconds=5, count=1)
    r = fetch(emulator, "dump", pid, 1, tmp_path / "d.dmp", opts=["stall_timeout=1"])
    assert r["errno"] == "ETIMEDOUT", r["line"]
    assert "stall_timeout" in r["msg"]
    assert float(r["secs"]) < 4


def test_slow_dump_generation_first_byte_timeout(emulator, tmp_path):
    pid = site_pid(emulator)
    emulator.add_fault(route="dump", kind="slow_dump", seconds=3, count=1)
    r = fetch(emulator, "dump", pid, 1, tmp_path / "d.dmp", opts=["first_byte_timeout=1"])
    assert r["errno"] == "ETIMEDOUT", r["line"]
    assert "first_byte_timeout" in r["msg"]
    # Kudu goes on writing the abandoned dump; a new one before it ends
    # would collide with it (the emulator answers 500, like Kudu)
    assert wait_emulator_idle(emulator, timeout=10)
    # a generous limit waits for the slow generation, which is not a stall
    emulator.add_fault(route="dump", kind="slow_dump", seconds=2, count=1)
    r = fetch(emulator, "dump", pid, 1, tmp_path / "d2.dmp",
              opts=["first_byte_timeout=10", "stall_timeout=1"])
    assert r["ok"], r["line"]
    assert float(r["secs"]) >= 1.9


def test_dump_500_carries_kudu_message(emulator, tmp_path):
    pid = site_pid(emulator)
    emulator.add_fault(route="dump", kind="status", status=500,
                       message="Site sku (Free) does not support full minidump.", count=1)
    r = fetch(emulator, "dump", pid, 2, tmp_path / "d.dmp")
    assert r["errno"] == "EIO"
    assert "Site sku (Free) does not support full minidump." in r["msg"]
