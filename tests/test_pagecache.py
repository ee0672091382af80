"""Finished captures in page-cache mode (issue 18).

A dump file opened after its capture is complete is a plain file of its real size served
through the kernel's page cache: mmap works, and size-trusting tools (shutil.copyfile,
azcopy) read the whole dump. A handle opened while the capture downloads stays direct_io
(mmap refused). A dropped capture (rm, dump_ttl) is never served from the kernel's pages of
the one before: the emulator's "dump_seed" gives the re-taken dump other bytes of the same
size, so stale pages would show as the old digest."""
import ctypes
import errno
import hashlib
import mmap
import os
import shutil
import subprocess

import pytest

from helpers import AZCOPY, Azurite, counters, run, wait_state

MiB = 1 << 20
SIZE = 6 * MiB + 123  # not a multiple of the page size
PID = 4292


def proc(seed=None):
    p = {"name": "w3wp", "pid": PID, "mini_size": SIZE, "full_size": 2 * MiB + 7}
    if seed is not None:
        p["dump_seed"] = seed
    return p


def file_sha(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            b = f.read(MiB)
            if not b:
                return h.hexdigest()
            h.update(b)


def mmap_sha(path):
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        assert len(m) == SIZE
        return hashlib.sha256(m).hexdigest()


def mmap_errno(fd):
    """errno of mmap(2) of fd's first page (0: it mapped), asked of libc directly: Python's
    mmap refuses a file of size 0 before asking the kernel."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                          ctypes.c_int, ctypes.c_long]
    p = libc.mmap(None, 4096, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
    if p == ctypes.c_void_p(-1).value:
        return ctypes.get_errno()
    libc.munmap(ctypes.c_void_p(p), ctypes.c_size_t(4096))
    return 0


@pytest.fixture
def pc(make_emulator, mount):
    """(emulator, mount, the minidump's path) of one site with one w3wp."""
    def make(config_extra=""):
        emu = make_emulator({"sites": {"demo": {"processes": [proc()], "dump_delay": 0}}})
        m = mount({"demo": emu.url("demo")}, config_extra=config_extra)
        return emu, m, os.path.join(m.path, "demo", "w3wp-%d" % PID, "minidump.dmp")
    return make


def test_finished_capture_mmap_and_copyfile(pc, tmp_path):
    emu, m, f = pc()
    want = emu.digest("demo", PID, 1)["sha256"]
    assert file_sha(f) == want  # the first read: the download
    assert wait_state(f, "complete")
    assert os.stat(f).st_size == SIZE
    assert mmap_sha(f) == want
    dst = tmp_path / "copy.dmp"
    shutil.copyfile(f, dst)
    assert dst.stat().st_size == SIZE and file_sha(dst) == want
    for _ in range(2):
        assert file_sha(f) == want
    assert counters(emu)["dump"] == 1


def test_downloading_handle_stays_direct_io(pc):
    """mmap of a handle opened during the download is refused (ENODEV: direct_io), also after
    the capture completes; a handle opened after completion maps the dump."""
    emu, m, f = pc()
    emu.add_fault(route="dump", kind="stall", after_bytes=MiB, seconds=2, count=1)
    with open(f, "rb") as early:
        assert len(early.read(4096)) == 4096
        assert mmap_errno(early.fileno()) == errno.ENODEV
        assert wait_state(f, "complete", timeout=30)
        assert mmap_errno(early.fileno()) == errno.ENODEV
        assert mmap_sha(f) == emu.digest("demo", PID, 1)["sha256"]


def test_azcopy_uploads_the_whole_finished_dump(pc, tmp_path):
    if not os.access(AZCOPY, os.X_OK):
        pytest.fail("azcopy missing at %s: run scripts/install-deps test" % AZCOPY)
    emu, m, f = pc()
    d = emu.digest("demo", PID, 1)
    assert file_sha(f) == d["sha256"]
    assert wait_state(f, "complete")
    az = Azurite(str(tmp_path / "azurite"))
    os.mkdir(az.dir)
    try:
        az.start()
        az.create_container("dumps")
        env = dict(os.environ, AZCOPY_LOG_LOCATION=str(tmp_path / "azlog"),
                   AZCOPY_JOB_PLAN_LOCATION=str(tmp_path / "azplan"), HOME=str(tmp_path))
        dest = az.container_sas_url("dumps").replace("/dumps?", "/dumps/w3wp.dmp?")
        r = run([AZCOPY, "copy", f, dest, "--from-to", "LocalBlob", "--put-md5"], env=env,
                stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
        blobs = az.list_blobs("dumps")
        assert blobs["w3wp.dmp"]["length"] == SIZE
        assert az.blob_digest("dumps", "w3wp.dmp") == (SIZE, d["md5"])
    finally:
        az.stop()
        shutil.rmtree(az.dir, ignore_errors=True)
    assert counters(emu)["dump"] == 1


def retake(emu, f, drop):
    """Read the dump until its bytes sit in the page cache, give the process other memory,
    drop the capture, read again: the new digest, read and mapped, twice."""
    old = emu.digest("demo", PID, 1)["sha256"]
    assert file_sha(f) == old
    assert wait_state(f, "complete")
    assert file_sha(f) == old and mmap_sha(f) == old  # now from the page cache
    emu.set_site("demo", {"processes": [proc(seed="restarted")], "dump_delay": 0})
    new = emu.digest("demo", PID, 1)["sha256"]
    assert new != old
    drop()
    assert file_sha(f) == new  # the new download
    assert wait_state(f, "complete")
    for _ in range(2):
        assert file_sha(f) == new and mmap_sha(f) == new
    assert counters(emu)["dump"] == 2


def test_rm_then_read_gives_the_new_dump(pc):
    emu, m, f = pc()
    retake(emu, f, lambda: os.unlink(f))


def test_dump_ttl_then_read_gives_the_new_dump(pc):
    """After dump_ttl the same file (same inode, no rm) serves the new capture, not the
    kernel's pages of the old one."""
    emu, m, f = pc(config_extra="dump_ttl = 2")

    def expire():
        assert wait_state(f, "idle", timeout=10)
    retake(emu, f, expire)
