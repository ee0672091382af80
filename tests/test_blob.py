"""kudufs-to-blob, its alert webhook and the publish-settings importer (issue 7).

Everything runs on this machine: the Kudu emulator, Azurite (a Blob Storage emulator,
started once for this module on a free 127.0.0.1 port), the pinned azcopy from
tests/node_modules, Debian's az CLI and webhook server. Blobs are checked with Blob
Storage's REST API directly (account SAS signed here), not through the script's tools:
names, length, Content-MD5 and the MD5 of the downloaded bytes against the emulator's
generator, metadata, details.json through jq.

Every mount, Azurite, webhook and script started here is stopped by its pid at
teardown, also when a test fails; nothing is written to the real $HOME."""
import base64
import datetime
import hashlib
import hmac
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

import pytest

from conftest import ROOT, fuse_mounts_under, read_rss_hwm, run, wait_for

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPTS = os.path.join(ROOT, "scripts")
TO_BLOB = os.path.join(SCRIPTS, "kudufs-to-blob")
IMPORTER = os.path.join(SCRIPTS, "kudufs-import-publish-settings")
HOOKS = os.path.join(SCRIPTS, "webhook", "hooks.json")
FIXTURES = os.path.join(HERE, "fixtures")
AZURITE = os.path.join(HERE, "node_modules", ".bin", "azurite-blob")
AZCOPY = os.path.join(HERE, "node_modules", "@azure-tools", "azcopy-linux", "dist", "bin",
                      "azcopy_linux_amd64")
WEBHOOK = shutil.which("webhook") or "/usr/bin/webhook"

# Azurite's well-known development account (public, documented; not a secret).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
SAS_VERSION = "2021-06-08"
MiB = 1 << 20

OK_RE = re.compile(r"^OK (?P<app>[^/ ]+)/(?P<name>[^ ]+)-(?P<pid>\d+) (?P<type>mini|full) (?P<bytes>\d+) bytes"
                   r" -> (?P<container>[a-z0-9-]+)/(?P<blob>\S+)$")
BLOB_RE = re.compile(r"^(?P<day>\d{4}-\d{2}-\d{2})/(?P<hms>\d{6})Z-(?P<app>[^/]+)-(?P<name>[a-z0-9]+)-(?P<pid>\d+)"
                     r"\.(?P<type>mini|full)\.dmp$")

# Two apps, each with the SCM site's w3wp and one or two site w3wps (alpha also a
# php-cgi, which the default selection leaves alone). Odd dump sizes.
SITE_DUMPS = {("alpha", 4292): 3 * MiB + 17, ("beta", 7300): 2 * MiB + 5, ("beta", 7301): 5 * MiB - 3}


def two_app_spec():
    def w3wp(app, pid):
        return {"name": "w3wp", "pid": pid, "mini_size": SITE_DUMPS[(app, pid)]}
    return {"sites": {
        "alpha": {"processes": [{"name": "w3wp", "pid": 4100, "scm": True}, w3wp("alpha", 4292),
                                {"name": "php-cgi", "pid": 6240}]},
        "beta": {"processes": [{"name": "w3wp", "pid": 7100, "scm": True}, w3wp("beta", 7300),
                               w3wp("beta", 7301)]}}}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_pid(proc, timeout=10):
    """SIGTERM the process by its pid, wait, then SIGKILL."""
    if proc is None or proc.poll() is not None:
        return
    try:
        os.kill(proc.pid, signal.SIGTERM)
        proc.wait(timeout)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def write_private(path, text):
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    return str(path)


def need_tools():
    missing = [p for p in (AZURITE, AZCOPY) if not os.path.exists(p)]
    missing += [t for t in ("az", "jq", "webhook", "shellcheck") if not shutil.which(t)]
    if missing:
        pytest.fail("test tools missing (run scripts/install-deps test): %s" % missing)


# --------------------------------------------------------------------------- Azurite


def _sign(text):
    return base64.b64encode(hmac.new(base64.b64decode(KEY), text.encode(), hashlib.sha256).digest()).decode()


class Azurite:
    """Azurite's blob service on a free 127.0.0.1 port, and a small REST client for it."""

    def __init__(self, workdir):
        self.dir = workdir
        self.port = free_port()
        self.proc = None
        self.endpoint = "http://127.0.0.1:%d/%s" % (self.port, ACCOUNT)
        self.conn = ("DefaultEndpointsProtocol=http;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;"
                     % (ACCOUNT, KEY, self.endpoint))
        se = "2099-01-01T00:00:00Z"
        sig = _sign("\n".join([ACCOUNT, "rwdlac", "b", "sco", "", se, "", "", SAS_VERSION, ""]) + "\n")
        self.account_sas = urllib.parse.urlencode(
            {"sv": SAS_VERSION, "ss": "b", "srt": "sco", "sp": "rwdlac", "se": se, "sig": sig})

    def start(self, timeout=60):
        log = open(os.path.join(self.dir, "azurite.log"), "wb")
        self.proc = subprocess.Popen(
            [AZURITE, "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
             "--location", os.path.join(self.dir, "data"), "--skipApiVersionCheck", "--silent",
             "--disableTelemetry"],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd=self.dir)
        log.close()

        def answers():
            if self.proc.poll() is not None:
                raise AssertionError("azurite exited %s: %s" % (self.proc.returncode, self.log()))
            try:
                urllib.request.urlopen("http://127.0.0.1:%d/" % self.port, timeout=2).close()
            except urllib.error.HTTPError:
                return True  # any HTTP answer (400 here) means it is up
            except OSError:
                return False
            return True
        if not wait_for(answers, timeout):
            self.stop()
            raise AssertionError("azurite did not answer within %d s: %s" % (timeout, self.log()))
        return self

    def stop(self):
        stop_pid(self.proc)

    def log(self):
        try:
            with open(os.path.join(self.dir, "azurite.log"), errors="replace") as f:
                return f.read()[-3000:]
        except OSError:
            return ""

    def container_sas_url(self, container, perms="racwdl"):
        """A service SAS for the container (sr=c), as a user would paste it."""
        se = "2099-01-01T00:00:00Z"
        fields = [perms, "", se, "/blob/%s/%s" % (ACCOUNT, container), "", "", "", SAS_VERSION, "c",
                  "", "", "", "", "", "", ""]
        q = urllib.parse.urlencode({"sv": SAS_VERSION, "sr": "c", "sp": perms, "se": se,
                                    "sig": _sign("\n".join(fields))})
        return "%s/%s?%s" % (self.endpoint, container, q)

    def url(self, container, blob=None, **query):
        path = "%s/%s" % (self.endpoint, container)
        if blob is not None:
            path += "/" + urllib.parse.quote(blob, safe="/")
        q = urllib.parse.urlencode(query)
        return path + "?" + (q + "&" if q else "") + self.account_sas

    def request(self, method, url, data=None, headers=None, timeout=60):
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def create_container(self, name):
        st, _, body = self.request("PUT", self.url(name, restype="container"), data=b"")
        assert st == 201, (st, body)

    def container_exists(self, name):
        return self.request("GET", self.url(name, restype="container"))[0] == 200

    def list_blobs(self, container, prefix="", uncommitted=False):
        """{name: {length, md5, etag, content_type, metadata}} of the container."""
        include = "metadata,uncommittedblobs" if uncommitted else "metadata"
        st, _, body = self.request("GET", self.url(container, restype="container", comp="list",
                                                   prefix=prefix, include=include))
        assert st == 200, (st, body)
        out = {}
        for b in ET.fromstring(body).iter("Blob"):
            props = b.find("Properties")
            meta = b.find("Metadata")
            out[b.findtext("Name")] = {
                "length": int(props.findtext("Content-Length")),
                "md5": props.findtext("Content-MD5"),
                "etag": props.findtext("Etag"),
                "content_type": props.findtext("Content-Type"),
                "metadata": {m.tag: m.text for m in meta} if meta is not None else {},
            }
        return out

    def get_blob(self, container, name):
        st, _, body = self.request("GET", self.url(container, name))
        assert st == 200, (st, name, body[:300])
        return body

    def blob_digest(self, container, name):
        """(length, md5 hex) of the blob's bytes, streamed."""
        h = hashlib.md5()
        n = 0
        with urllib.request.urlopen(self.url(container, name), timeout=300) as r:
            while True:
                b = r.read(MiB)
                if not b:
                    break
                h.update(b)
                n += len(b)
        return n, h.hexdigest()

    def put_blob(self, container, name, data):
        st, _, body = self.request("PUT", self.url(container, name), data=data,
                                   headers={"x-ms-blob-type": "BlockBlob"})
        assert st == 201, (st, body)


@pytest.fixture(scope="module")
def azurite(tmp_path_factory):
    need_tools()
    az = Azurite(str(tmp_path_factory.mktemp("azurite")))
    try:
        az.start()
        yield az
    finally:
        az.stop()
        shutil.rmtree(az.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def az_config(tmp_path_factory, azurite):
    """One AZURE_CONFIG_DIR for the module, warmed up (az builds its command index on first use)."""
    d = str(tmp_path_factory.mktemp("azure"))
    env = dict(os.environ, AZURE_CONFIG_DIR=d, HOME=d, AZURE_CORE_COLLECT_TELEMETRY="false")
    r = run(["az", "storage", "container", "list", "--connection-string", azurite.conn, "-o", "none",
             "--only-show-errors"], env=env)
    assert r.returncode == 0, r.stderr
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def blob_env(tmp_path, azurite, az_config, kudufs_bin):
    """Environment for kudufs-to-blob: private HOME and TMPDIR, the test's azcopy/kudufs,
    the connection string of Azurite; after the test, no mount or work dir may be left in
    TMPDIR, and tmp_path is emptied."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KUDUFS", "AZURE_STORAGE", "AZCOPY", "XDG_CONFIG"))}
    env.update(HOME=str(home), TMPDIR=str(tmp), AZURE_CONFIG_DIR=az_config,
               AZURE_CORE_COLLECT_TELEMETRY="false", AZURE_STORAGE_CONNECTION_STRING=azurite.conn,
               AZCOPY_LOG_LOCATION=str(tmp_path / "azcopy"), AZCOPY_JOB_PLAN_LOCATION=str(tmp_path / "azcopy"),
               AZCOPY_DISABLE_SYSLOG="true", KUDUFS=kudufs_bin, AZCOPY=AZCOPY,
               KUDUFS_TO_BLOB_LOCK=str(tmp_path / "to-blob.lock"))
    try:
        yield env
        left = fuse_mounts_under(tmp)
        assert not left, "kudufs-to-blob left a mount behind: %s" % left
        assert not [p for p in os.listdir(tmp) if p.startswith("kudufs-to-blob.")], "work dir left behind"
    finally:
        for mnt in fuse_mounts_under(tmp):
            subprocess.run(["fusermount3", "-u", mnt], capture_output=True)
            subprocess.run(["fusermount3", "-uz", mnt], capture_output=True)
        for p in tmp_path.iterdir():  # the test's own files too (configs, logs, runs)
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink()


def to_blob(args, env, timeout=300):
    t = time.monotonic()
    r = run([TO_BLOB] + list(args), env=env, timeout=timeout)
    # shown by pytest when the test fails
    print("$ kudufs-to-blob %s\n-> exit %d in %.1f s\n%s%s" % (" ".join(args), r.returncode, time.monotonic() - t,
                                                            r.stdout, r.stderr))
    return r


def netrc_for(env, emu):
    """~/.netrc credentials for the emulator, which the apps reach as "localhost": the az
    CLI (python requests) would send a netrc entry for 127.0.0.1 to Azurite too, in place
    of its own Authorization header. (On Azure the two hosts differ anyway.)"""
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


# --------------------------------------------------------------------------- checks


def utc_now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def check_uploads(azurite, emu, container, stdout, expect, t0, t1, before=()):
    """The run's OK lines name exactly `expect` ({(app, pid): size}); every blob it added
    is named by the pattern with a time stamp in [t0, t1], has the emulator's length and
    MD5 (property and downloaded bytes) and metadata; each details.json parses with jq.
    Returns {(app, pid): blob name}."""
    oks = [OK_RE.match(ln) for ln in stdout.splitlines() if ln.startswith("OK ")]
    assert all(oks), stdout
    got = {(m["app"], int(m["pid"])): m for m in oks}
    assert set(got) == set(expect) and len(oks) == len(expect), stdout
    blobs = azurite.list_blobs(container)
    added = {n: b for n, b in blobs.items() if n not in before}
    names = {}
    runs = set()
    for (app, pid), size in expect.items():
        m = got[(app, pid)]
        want = emu.digest(app, pid, 1)
        assert want["size"] == size
        assert m["name"] == "w3wp" and m["type"] == "mini" and int(m["bytes"]) == size, m.group(0)
        assert m["container"] == container, m.group(0)
        name = m["blob"]
        bm = BLOB_RE.match(name)
        assert bm and bm["app"] == app and int(bm["pid"]) == pid and bm["name"] == "w3wp", name
        stamp = datetime.datetime.strptime(bm["day"] + bm["hms"], "%Y-%m-%d%H%M%S").replace(
            tzinfo=datetime.timezone.utc)
        assert t0 <= stamp <= t1, (name, t0, t1)
        b = added.get(name)
        assert b is not None, "%s not in the container (added: %s)" % (name, sorted(added))
        assert b["length"] == size and b["md5"] == want["md5_b64"], (name, b, want)
        assert b["content_type"] == "application/octet-stream", b
        assert azurite.blob_digest(container, name) == (size, want["md5"]), name
        meta = b["metadata"]
        assert {k: meta.get(k) for k in ("app", "pid", "name", "dumptype")} == \
            {"app": app, "pid": str(pid), "name": "w3wp", "dumptype": "mini"}, meta
        cap = datetime.datetime.strptime(meta["capturedat"], "%Y-%m-%dT%H:%M:%SZ").replace(
            tzinfo=datetime.timezone.utc)
        assert cap == stamp, meta
        assert re.fullmatch(r"[0-9a-f]{16}", meta.get("kudufsrun", "")), meta
        runs.add(meta["kudufsrun"])
        dname = name[:-len(".dmp")] + ".details.json"
        d = added.get(dname)
        assert d is not None and d["content_type"] == "application/json" and d["metadata"] == meta, (dname, d)
        body = azurite.get_blob(container, dname)
        r = run(["jq", "-e", '.id == %d and .name == "w3wp" and (.is_scm_site // false) == false' % pid],
                input=body.decode())
        assert r.returncode == 0 and r.stdout.strip() == "true", (dname, r.stdout, r.stderr)
        names[(app, pid)] = name
    want_names = set(names.values()) | {n[:-len(".dmp")] + ".details.json" for n in names.values()}
    assert set(added) == want_names, "unexpected blobs: %s" % sorted(set(added) - want_names)
    assert len(runs) == 1, runs
    return names


def dumps_taken(emu):
    """{(app, pid, type)} -> count of dump requests the emulator served."""
    out = {}
    for site, st in emu.stats()["sites"].items():
        for k, n in st["dumps_by_key"].items():
            pid, t = k.split("/")
            out[(site, int(pid), int(t))] = n
    return out


# --------------------------------------------------------------------------- kudufs-to-blob


def test_private_mount_azcopy_uploads_site_dumps_then_never_overwrites(make_emulator, azurite, blob_env):
    """--app NAME=URL (private mount, credentials from ~/.netrc), azcopy pipe mode, default
    container dumpfiles created from the connection string. A second run overwrites nothing:
    where a blob of the same name exists it reports FAIL (no dump taken), the others get
    blobs of their own time stamp."""
    emu = make_emulator(two_app_spec())
    netrc_for(blob_env, emu)
    assert not azurite.container_exists("dumpfiles")

    t0 = utc_now()
    r = to_blob(["--app", "alpha=" + local_url(emu, "alpha"), "--app", "beta=" + local_url(emu, "beta")],
                blob_env)
    t1 = utc_now()
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert emu.password not in r.stdout + r.stderr
    first = check_uploads(azurite, emu, "dumpfiles", r.stdout, SITE_DUMPS, t0, t1)
    # exactly the site w3wps were dumped, once each: never the SCM w3wp nor php-cgi
    assert dumps_taken(emu) == {(a, p, 1): 1 for (a, p) in SITE_DUMPS}

    # Second run. Blobs named as alpha's dump would be in each second of the next
    # minute exist already (someone else's): alpha must FAIL without touching them.
    before = azurite.list_blobs("dumpfiles")
    now = utc_now()
    squat = {}
    for s in range(60):
        t = now + datetime.timedelta(seconds=s)
        squat["%s/%sZ-alpha-w3wp-4292.mini.dmp" % (t.strftime("%Y-%m-%d"), t.strftime("%H%M%S"))] = b"older blob"
    for n, data in squat.items():
        azurite.put_blob("dumpfiles", n, data)
    before2 = azurite.list_blobs("dumpfiles")

    t0 = utc_now()
    r = to_blob(["--app", "alpha=" + local_url(emu, "alpha"), "--app", "beta=" + local_url(emu, "beta")],
                blob_env)
    t1 = utc_now()
    assert r.returncode == 1, (r.stdout, r.stderr)
    fails = [ln for ln in r.stdout.splitlines() if ln.startswith("FAIL ")]
    assert len(fails) == 1 and re.fullmatch(
        r"FAIL alpha/w3wp-4292 mini: dumpfiles/\d{4}-\d\d-\d\d/\d{6}Z-alpha-w3wp-4292\.mini\.dmp"
        r" already exists; not overwritten", fails[0]), r.stdout
    second = check_uploads(azurite, emu, "dumpfiles", r.stdout,
                           {k: v for k, v in SITE_DUMPS.items() if k[0] == "beta"}, t0, t1, before=before2)
    assert not set(second.values()) & set(first.values())
    after = azurite.list_blobs("dumpfiles")
    for n, b in before2.items():
        assert after[n]["etag"] == b["etag"] and after[n]["length"] == b["length"], n
    for n in squat:
        assert azurite.get_blob("dumpfiles", n) == b"older blob"
    assert set(after) == set(before2) | {x for n in second.values()
                                         for x in (n, n[:-4] + ".details.json")}
    assert len(before) == 6
    # alpha's process was not dumped again for a blob that could not be written
    assert dumps_taken(emu)[("alpha", 4292, 1)] == 1
    assert dumps_taken(emu)[("beta", 7300, 1)] == 2


def test_existing_mount_az_uploader_container_sas_url(make_emulator, mount, azurite, blob_env):
    """--mount on a running kudufs, --uploader az, destination a container SAS URL (no
    connection string). --dry-run first: names what it would collect, dumps nothing."""
    emu = make_emulator(two_app_spec())
    m = mount({"alpha": emu.url("alpha"), "beta": emu.url("beta")})
    azurite.create_container("byaz")
    env = dict(blob_env)
    del env["AZURE_STORAGE_CONNECTION_STRING"]
    sas_url = azurite.container_sas_url("byaz")

    r = to_blob(["--mount", m.path, "--app", "beta", "--dry-run", "--container", sas_url], env)
    assert r.returncode == 0, (r.stdout, r.stderr)
    lines = sorted(r.stdout.splitlines())
    assert len(lines) == 2, r.stdout
    for ln, pid in zip(lines, (7300, 7301)):
        assert re.fullmatch(r"DRY beta/w3wp-%d mini -> byaz/\d{4}-\d\d-\d\d/\d{6}Z-beta-w3wp-%d\.mini\.dmp"
                            r" \(\+ \.details\.json\)" % (pid, pid), ln), ln
    assert dumps_taken(emu) == {} and azurite.list_blobs("byaz") == {}

    t0 = utc_now()
    r = to_blob(["--mount", m.path, "--uploader", "az", "--container", sas_url], env)
    t1 = utc_now()
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "sig=" not in r.stdout + r.stderr, "the SAS must not be printed"
    check_uploads(azurite, emu, "byaz", r.stdout, SITE_DUMPS, t0, t1)
    # az reads the capture once (cat) and uploads the finished capture: one dump each
    assert dumps_taken(emu) == {(a, p, 1): 1 for (a, p) in SITE_DUMPS}
    # the user's mount is left alone
    assert os.path.ismount(m.path) and m.proc.poll() is None


def test_one_dump_fails_others_upload_no_partial_blob(make_emulator, azurite, blob_env, tmp_path):
    """--config (private mount of every app in it); beta's w3wp-7301 is cut after 1 MiB
    by the emulator: the other two dumps still upload, its summary line says FAIL with
    the reader's error, exit 1, and nothing of it is left, not even uncommitted blocks."""
    emu = make_emulator(two_app_spec())
    emu.add_fault(route="dump", site="beta", pid=7301, kind="reset", after_bytes=MiB, count=100)
    cfg = config_for(str(tmp_path / "kudufs.conf"), emu, ["alpha", "beta"])

    t0 = utc_now()
    r = to_blob(["--config", cfg, "--container", "faults"], blob_env)
    t1 = utc_now()
    assert r.returncode == 1, (r.stdout, r.stderr)
    fails = [ln for ln in r.stdout.splitlines() if ln.startswith("FAIL ")]
    assert len(fails) == 1 and fails[0].startswith("FAIL beta/w3wp-7301 mini: reading the dump: "), r.stdout
    assert "Input/output error" in fails[0], fails[0]
    expect = {k: v for k, v in SITE_DUMPS.items() if k != ("beta", 7301)}
    check_uploads(azurite, emu, "faults", r.stdout, expect, t0, t1)
    left = azurite.list_blobs("faults", uncommitted=True)
    assert not [n for n in left if "7301" in n], sorted(left)
    assert len(left) == 4, sorted(left)
    assert dumps_taken(emu)[("beta", 7301, 1)] >= 1


def test_ctrl_c_unmounts_and_removes_claimed_blobs(make_emulator, azurite, blob_env):
    """Ctrl-C (SIGINT to the process group) while the private mount waits for Kudu to
    write the dumps: kudufs-to-blob exits 130 within seconds, its mount, kudufs daemon
    and azcopy are gone, and the blobs it had claimed are deleted."""
    spec = two_app_spec()
    for site in spec["sites"].values():
        site["dump_delay"] = 60
    emu = make_emulator(spec)
    netrc_for(blob_env, emu)
    azurite.create_container("cut")
    proc = subprocess.Popen([TO_BLOB, "--app", "alpha=" + local_url(emu, "alpha"), "--app",
                             "beta=" + local_url(emu, "beta"), "--container", "cut"],
                            env=blob_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        def claimed():
            assert proc.poll() is None, proc.communicate()
            return len(azurite.list_blobs("cut")) == 6 and emu.stats()["sites"]["beta"]["dump"] >= 1
        # all three jobs claimed their names (placeholder + details.json); both apps'
        # first dump requested, Kudu is "writing" them
        assert wait_for(claimed, 60), azurite.list_blobs("cut")
        tree = _tree(proc.pid)
        assert any((_status(p) or ("",))[0] == "kudufs" for p in tree), [_status(p) for p in tree]
        t = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        try:
            out, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            ps = run(["ps", "-o", "pid,ppid,stat,wchan:32,etime,args", "--forest", "-g", str(proc.pid)])
            pytest.fail("kudufs-to-blob still running 30 s after SIGINT:\n" + ps.stdout)
        took = time.monotonic() - t
    finally:
        if proc.poll() is None:  # the test failed: let it clean up, then kill
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    print("exit %d after %.1f s\n%s%s" % (proc.returncode, took, out, err))
    assert proc.returncode == 130, (out, err)
    assert took < 20
    assert wait_for(lambda: not [p for p in tree if os.path.exists("/proc/%d" % p)], 10), \
        [(p, _status(p)) for p in tree if os.path.exists("/proc/%d" % p)]
    assert fuse_mounts_under(blob_env["TMPDIR"]) == []
    assert azurite.list_blobs("cut", uncommitted=True) == {}
    assert "OK " not in out


def test_alert_file_selects_the_target_apps(make_emulator, mount, blob_env, tmp_path):
    """--alert FILE|- on an existing mount, --dry-run: the fired alert's ALPHA and beta
    (not the third app), the slot alert's Shop/slots/Staging as shop-staging (its storage
    account target ignored), a Resolved alert nothing, an app that is not mounted FAIL."""
    emu = make_emulator({"sites": dict(two_app_spec()["sites"], **{"shop-staging": {}})})
    m = mount({a: emu.url(a) for a in ("alpha", "beta", "shop-staging")})

    def dry(alert, stdin=None):
        args = ["--mount", m.path, "--dry-run", "--alert", alert]
        r = run([TO_BLOB] + args, env=blob_env, input=stdin)
        print("$ kudufs-to-blob %s\n-> exit %d\n%s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r, sorted(re.sub(r" -> .*", "", ln) for ln in r.stdout.splitlines())

    r, lines = dry(os.path.join(FIXTURES, "alert-fired.json"))
    assert r.returncode == 0 and lines == ["DRY alpha/w3wp-4292 mini", "DRY beta/w3wp-7300 mini",
                                           "DRY beta/w3wp-7301 mini"], r.stdout
    r, lines = dry(os.path.join(FIXTURES, "alert-slot.json"))
    assert r.returncode == 0 and lines == ["DRY shop-staging/dotnet-5012 mini", "DRY shop-staging/w3wp-4292 mini"]
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
        stop_pid(self.proc)


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


def test_scripts_are_shellcheck_clean():
    need_tools()
    scripts = [os.path.join(SCRIPTS, s) for s in
               ("kudufs-to-blob", "kudufs-import-publish-settings", "install-deps", "demo")]
    r = run(["shellcheck"] + scripts)
    assert r.returncode == 0 and r.stdout == "" and r.stderr == "", r.stdout + r.stderr
    r = run([TO_BLOB, "--help"])
    assert r.returncode == 0 and r.stdout.startswith("usage: kudufs-to-blob"), r.stderr
    assert "docs/blob.md" not in open(TO_BLOB).read()
    r = run([TO_BLOB, "--bogus"])
    assert r.returncode == 2 and "unknown argument: --bogus" in r.stderr


# --------------------------------------------------------------------------- 2.5 GiB


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


def _kind(name):
    """script (bash and the coreutils it streams through), azcopy, or az (python)."""
    if name.startswith("azcopy"):
        return "azcopy"
    if name.startswith("python") or name == "az":
        return "az"
    return "script"


@pytest.mark.slow
def test_full_dump_2_5gib_azcopy_pipe_flat_rss(make_emulator, mount, azurite, blob_env, capsys):
    """A 2.5 GiB full dump through azcopy's pipe mode: the blob's length and MD5 (property
    and downloaded bytes) match the emulator's; the script's processes (bash, cat, tee,
    md5sum, wc; summed while they run), azcopy (2 MiB blocks) and the kudufs daemon stay
    at most 64 MiB RSS each. The peak of the az CLI (a Python program of fixed size, run
    before and after the stream) is reported."""
    size = 2560 * MiB
    emu = make_emulator({"sites": {"big": {"full_size": size, "processes": [
        {"name": "w3wp", "pid": 4100, "scm": True}, {"name": "w3wp", "pid": 4292}]}}})
    m = mount({"big": emu.url("big")}, opts=("cache_max=4G",))
    want = emu.digest("big", 4292, 2)
    assert want["size"] == size

    t0 = time.monotonic()
    proc = subprocess.Popen([TO_BLOB, "--mount", m.path, "--type", "full", "--container", "big"],
                            env=blob_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    hwm = {}          # (pid, name) -> peak VmHWM seen, kB
    peak_sum = 0      # largest sum of VmRSS of the script's own processes at one moment
    try:
        while proc.poll() is None:
            now = 0
            for p in _tree(proc.pid):
                s = _status(p)
                if s is None:
                    continue
                name, rss, h = s
                hwm[(p, name)] = max(hwm.get((p, name), 0), h)
                if _kind(name) == "script":
                    now += rss
            peak_sum = max(peak_sum, now)
            time.sleep(0.2)
            assert time.monotonic() - t0 < 1800, "kudufs-to-blob took over 30 min"
        out, err = proc.communicate()
    finally:
        stop_pid(proc)
    elapsed = time.monotonic() - t0
    assert proc.returncode == 0, (out, err)
    (line,) = out.splitlines()
    mm = OK_RE.match(line)
    assert mm and mm["type"] == "full" and int(mm["bytes"]) == size, line
    blobs = azurite.list_blobs("big")
    b = blobs[mm["blob"]]
    assert b["length"] == size and b["md5"] == want["md5_b64"], b
    assert azurite.blob_digest("big", mm["blob"]) == (size, want["md5"])
    assert dumps_taken(emu) == {("big", 4292, 2): 1}

    daemon = read_rss_hwm(m.pid)
    peak = {k: max([h for (p, n), h in hwm.items() if _kind(n) == k] or [0]) for k in ("script", "azcopy", "az")}
    with capsys.disabled():
        print("\n2.5 GiB full dump via azcopy pipe: %.1f s (%.0f MiB/s end to end); script's processes:"
              " peak sum of RSS %d kB, largest VmHWM %d kB; azcopy VmHWM %d kB; az (python) VmHWM %d kB;"
              " kudufs daemon VmHWM %d kB" % (elapsed, size / MiB / elapsed, peak_sum, peak["script"],
                                              peak["azcopy"], peak["az"], daemon))
        print("processes: %s" % sorted(set(n for (p, n) in hwm)))
    assert peak_sum <= 64 * 1024, hwm
    assert peak["azcopy"] <= 64 * 1024, hwm
    assert daemon <= 64 * 1024
