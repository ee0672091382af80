"""The one home of the tests' helpers: mounting and unmounting kudufs, waiting
for a condition with a deadline, private files, authenticated requests to the
emulator and its counters, kudufs's xattrs. Standard library only (no pytest),
so that tests/bench/bench.py uses it too; conftest.py builds its fixtures on it
and re-exports it (`from conftest import run, wait_for` keeps working).

Processes and mounts
  run(cmd, **kw)                   subprocess.run, text output captured, 120 s unless given
  sh(script, **kw)                 run(["/bin/sh", "-c", script])
  wait_for(pred, timeout=15)       poll pred() until true; its last value (falsy on timeout)
  stop_process(proc, timeout=5, term=False)  (SIGTERM,) wait, then SIGKILL; the exit status
  wait_mounted(path, proc, timeout=15)   until path is a mount point (False if proc died first)
  unmount(path, proc=None)         fusermount3 -u, then -uz; then stop_process(proc)
  force_unmount(path)              fusermount3 -u, then -uz if still mounted
  fuse_mounts_under(prefix)        FUSE mount points below prefix (/proc/mounts)
  read_rss_hwm(pid)                VmHWM in kB
  has_open(pid, path)              whether process pid has path open
kudufs
  KUDUFS_BIN                       $KUDUFS_BIN or <repo>/kudufs
  run_kudufs(args, home=None, env=None, timeout=60)   the binary, kudufs_env, no stdin;
                                   a CompletedProcess with .elapsed (seconds)
  kudu_fetch(url, *args, opts=(), env=None)  build/tools/kudu_fetch (kudu/ without FUSE): its
                                   "OK/ERR key=value ... msg=..." line as a dict (+ ok, rc, line,
                                   msg, body = its stderr, elapsed)
  kudufs_env(home=None, env=None)  os.environ without KUDUFS_USER/PASSWORD, HOME=home, + env
  write_private(path, text)        a mode-0600 file; returns path as given
  write_config(tmp, apps, ...)     a kudufs config (and password files) in tmp; its path
                                   (a pathlib.Path if tmp is one)
  start_mount(cfg, mnt, tmp, ...)  kudufs -f on mnt, waited for: a Mount (.mounted says if it did)
  Mount                            .path .proc .pid .cfg .tmp .log() .wait() .unmount() .returncode
  xattr(path, name)                user.kudufs.NAME as text, "<ENOENT>"-style on error
  wait_state(path, want, timeout)  until user.kudufs.state == want (False; raises on "failed"
                                   when want is not "failed")
  process_dirs(view)               the names MOUNT/<app>/ (or instances/<id>/) lists but
                                   VIEW_FILES (processes.json, site, scm, instances)
The emulator (tests/emu.py's Emulator)
  emu_get(emu, site, path)         GET an app's API path with the emulator's Basic credentials: bytes
  emu_json(emu, site, path)        the same, parsed
  counters(emu, site="demo")       that site's request counters (list, details, dump, ...; 0 if none)
  wait_emulator_idle(emu)          until no request is in progress at the emulator
Blob Storage (tests/node_modules)
  Azurite(workdir, cert=None, key=None, oauth=False)  .start() .stop() .conn .endpoint
                                   .container_sas_url() .create_container() .list_blobs()
                                   .blob_digest() ...: Azurite on a free 127.0.0.1 port and a
                                   REST client for it (account SAS signed here)
  AZCOPY, AZURITE                  the azcopy binary and azurite-blob
  free_port()                      a free 127.0.0.1 TCP port
"""
import base64
import hashlib
import hmac
import errno
import json
import os
import pathlib
import re
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET

from emu import DEFAULT_PASSWORD, DEFAULT_USER

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FUSERMOUNT = shutil.which("fusermount3") or "fusermount3"
KUDUFS_BIN = os.environ.get("KUDUFS_BIN") or os.path.join(ROOT, "kudufs")
TOOLS_DIR = os.environ.get("KUDUFS_TOOLS_DIR") or os.path.join(ROOT, "build", "tools")
SH = "/bin/sh"


# ------------------------------------------------------------------ processes

def run(cmd, **kw):
    """subprocess.run with captured text output; never raises on a non-zero exit."""
    kw.setdefault("capture_output", True)
    kw.setdefault("text", True)
    kw.setdefault("timeout", 120)
    return subprocess.run([str(c) for c in cmd], **kw)


def sh(script, **kw):
    return run([SH, "-c", script], **kw)


def wait_for(pred, timeout=15.0, step=0.05):
    """Poll pred() until it returns something true or timeout seconds pass; its last value."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(step)
    return pred()


def stop_process(proc, timeout=5, term=False):
    """Wait up to timeout for proc to exit (after a SIGTERM if term), then SIGKILL
    it; its exit status."""
    if proc.poll() is None:
        if term:
            try:
                os.kill(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            try:
                os.kill(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait()
    return proc.returncode


def read_rss_hwm(pid):
    """Peak resident set size (VmHWM) of pid, in kB."""
    with open("/proc/%d/status" % int(pid)) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise ValueError("no VmHWM for pid %s" % pid)


def has_open(pid, path):
    """Whether process pid has path open (one of its /proc/PID/fd links to it)."""
    path = os.path.realpath(str(path))
    fds = "/proc/%d/fd" % int(pid)
    try:
        names = os.listdir(fds)
    except OSError:
        return False
    for n in names:
        try:
            if os.readlink(os.path.join(fds, n)) == path:
                return True
        except OSError:
            pass
    return False


# ------------------------------------------------------------------ mounts

def fuse_mounts_under(prefix):
    """Mount points of FUSE file systems below prefix, from /proc/mounts."""
    prefix = os.path.realpath(str(prefix)).rstrip("/") + "/"
    out = []
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) < 3:
                continue
            mnt = parts[1].replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
                .replace("\\134", "\\")
            if parts[2].startswith("fuse") and (mnt + "/").startswith(prefix):
                out.append(mnt)
    return out


def force_unmount(path):
    """fusermount3 -u, and -uz (lazy) if that left it mounted (a busy mount)."""
    r = subprocess.run([FUSERMOUNT, "-u", str(path)], capture_output=True)
    if r.returncode != 0 and os.path.ismount(str(path)):
        subprocess.run([FUSERMOUNT, "-uz", str(path)], capture_output=True)


def wait_mounted(path, proc=None, timeout=15.0):
    """Until path is a mount point; False if proc exited first or timeout passed."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if os.path.ismount(str(path)):
            return True
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.02)
    return os.path.ismount(str(path))


def unmount(path, proc=None, timeout=5):
    """Unmount path (fusermount3 -u, then -uz) and end its daemon proc: wait up to timeout,
    then SIGKILL (and unmount again). Idempotent; the daemon's exit status (None without proc)."""
    if os.path.ismount(str(path)):
        force_unmount(path)
    if proc is None:
        return None
    killed = proc.poll() is None
    rc = stop_process(proc, timeout)
    if killed and os.path.ismount(str(path)):
        force_unmount(path)
    return rc


# ------------------------------------------------------------------ kudufs

def kudufs_env(home=None, env=None):
    """kudufs's environment: no KUDUFS_USER/KUDUFS_PASSWORD of the user running the tests, and
    HOME=home if given (no stray ~/.netrc or ~/.config/kudufs either); then env on top."""
    e = dict(os.environ)
    e.pop("KUDUFS_USER", None)
    e.pop("KUDUFS_PASSWORD", None)
    if home is not None:
        e["HOME"] = str(home)
    e.update(env or {})
    return e


def run_kudufs(args, home=None, env=None, timeout=60, **kw):
    """Run the kudufs binary with args (environment: kudufs_env(home, env); stdin /dev/null).
    The CompletedProcess (text output captured) has .elapsed, the seconds it took."""
    kw.setdefault("stdin", subprocess.DEVNULL)
    t0 = time.monotonic()
    p = run([KUDUFS_BIN] + list(args), env=kudufs_env(home, env), timeout=timeout, **kw)
    p.elapsed = time.monotonic() - t0
    return p


def kudu_fetch(url, *args, opts=(), env=None, timeout=60):
    """Run build/tools/kudu_fetch [-o opt]... URL args... (kudu/ driven without FUSE; its
    credentials come from env, e.g. KUDUFS_USER/KUDUFS_PASSWORD, on top of os.environ).
    Its one output line, "OK key=value ..." or "ERR errno=NAME ... msg=TEXT", as a dict of the
    key=value fields plus ok, msg, line, rc, body (its stderr: a JSON body) and elapsed."""
    tool = os.path.join(TOOLS_DIR, "kudu_fetch")
    assert os.path.exists(tool), "%s missing: run make" % tool
    cmd = [tool]
    for o in opts:
        cmd += ["-o", o]
    t0 = time.monotonic()
    p = run(cmd + [url] + list(args), env=dict(os.environ, **(env or {})), timeout=timeout)
    line = p.stdout.strip()
    fields = dict(re.findall(r"(\w+)=(\S*)", line.split(" msg=")[0]))
    fields["msg"] = line.split(" msg=", 1)[1] if " msg=" in line else ""
    fields["ok"] = line.startswith("OK ")
    fields["rc"] = p.returncode
    fields["line"] = line
    fields["body"] = p.stderr
    fields["elapsed"] = time.monotonic() - t0
    return fields


def write_private(path, text):
    """Write text to a mode-0600 file (created so, never readable by others); returns path."""
    fd = os.open(str(path), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(str(path), 0o600)
    return path


def write_config(tmp, apps, user=None, password=None, config_extra="", cache_dir=None):
    """Write tmp/config for apps and return its path.

    apps: name -> URL, or name -> dict {"url", "user", "password", other keys written verbatim
    into the section}. user/password default to the emulator's defaults ("demo" /
    "demo-secret-pw") and may be dicts name -> value; a password goes to tmp/NAME.pass
    (mode 0600) as password_file; password False writes none. config_extra: lines added to
    the [kudufs] section, whose cache_dir is tmp/cache unless given."""
    is_path = isinstance(tmp, pathlib.PurePath)
    tmp = str(tmp)
    lines = ["[kudufs]", "cache_dir = %s" % (cache_dir or os.path.join(tmp, "cache"))]
    lines += config_extra.splitlines() + [""]
    for name, app in apps.items():
        app = dict(app) if isinstance(app, dict) else {"url": app}
        url = app.pop("url", None)
        u = app.pop("user", user.get(name) if isinstance(user, dict) else user)
        p = app.pop("password", password.get(name) if isinstance(password, dict) else password)
        u = DEFAULT_USER if u is None else u
        p = DEFAULT_PASSWORD if p is None else p
        lines.append("[app %s]" % name)
        if url is not None:
            lines.append("url = %s" % url)
        lines.append("user = %s" % u)
        if p is not False:
            pw_file = os.path.join(tmp, "%s.pass" % name)
            write_private(pw_file, p + "\n")
            lines.append("password_file = %s" % pw_file)
        lines += ["%s = %s" % kv for kv in app.items()] + [""]
    path = os.path.join(tmp, "config")
    return write_private(pathlib.Path(path) if is_path else path, "\n".join(lines))


class Mount:
    """A kudufs daemon (kudufs -f) and its mount point."""

    def __init__(self, path, proc, cfg, tmp, logfile):
        self.path = path
        self.proc = proc
        self.pid = proc.pid
        self.cfg = cfg
        self.tmp = tmp
        self.logfile = logfile
        self.returncode = None

    @property
    def mounted(self):
        return os.path.ismount(self.path)

    def log(self):
        try:
            with open(self.logfile, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def wait(self, timeout=5):
        self.returncode = self.proc.wait(timeout)
        return self.returncode

    def unmount(self):
        """fusermount3 -u (then -uz), wait for the daemon up to 5 s, then kill -9. Idempotent."""
        self.returncode = unmount(self.path, self.proc, timeout=5)
        return self.returncode


def start_mount(cfg, mnt, tmp, opts=(), extra_args=(), env=None, timeout=15, kudufs_bin=None):
    """Start `kudufs -f --config cfg [-o opts] [extra_args] mnt` (output to tmp/kudufs.log, cwd
    and HOME tmp, see kudufs_env) and wait until mnt is mounted or the daemon exits. The Mount
    is returned either way: the caller looks at .mounted and unmounts it."""
    cmd = [kudufs_bin or KUDUFS_BIN, "-f", "--config", str(cfg)]
    if opts:
        cmd += ["-o", ",".join(opts)]
    cmd += [str(a) for a in extra_args] + [str(mnt)]
    logfile = os.path.join(str(tmp), "kudufs.log")
    with open(logfile, "wb") as lf:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT,
                                env=kudufs_env(tmp, env), cwd=str(tmp))
    m = Mount(str(mnt), proc, cfg, str(tmp), logfile)
    wait_mounted(mnt, proc, timeout)
    return m


def xattr(path, name):
    """user.kudufs.NAME of path as text; "<ENAME>" (e.g. "<ENODATA>") if getxattr fails."""
    try:
        return os.getxattr(str(path), "user.kudufs." + name).decode()
    except OSError as e:
        return "<%s>" % errno.errorcode.get(e.errno, e.errno)


# What an app view lists besides its process directories (fs/ops.c's op_readdir);
# instances/ only in the app-level view MOUNT/<app>/, not in MOUNT/<app>/instances/<id>/.
VIEW_FILES = ("processes.json", "site", "scm", "instances")


def process_dirs(view):
    """The process directories an app view lists (every entry but VIEW_FILES), as listed."""
    return [n for n in os.listdir(str(view)) if n not in VIEW_FILES]


def wait_state(path, want, timeout=15.0):
    """Until the capture's user.kudufs.state is want; False on timeout. A capture that fails
    while another state is wanted raises RuntimeError with its user.kudufs.error."""
    def reached():
        s = xattr(path, "state")
        if s == "failed" and want != "failed":
            raise RuntimeError("capture %s failed: %s" % (path, xattr(path, "error")))
        return s == want
    return wait_for(reached, timeout)


# ------------------------------------------------------------------ the emulator

def emu_get(emu, site, path, timeout=30):
    """GET an app's API path (e.g. "/api/processes") with the emulator's Basic credentials."""
    req = urllib.request.Request(emu.url(site) + path)
    tok = base64.b64encode(("%s:%s" % (emu.user, emu.password)).encode()).decode()
    req.add_header("Authorization", "Basic " + tok)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def emu_json(emu, site, path, timeout=30):
    return json.loads(emu_get(emu, site, path, timeout))


def counters(emu, site="demo"):
    """The emulator's request counters of a site (list, details, dump, dumps_by_key, ...);
    list/details/dump are 0 for a site nothing was asked of yet."""
    c = {"list": 0, "details": 0, "dump": 0}
    c.update(emu.stats()["sites"].get(site, {}))
    return c


def wait_emulator_idle(emu, timeout=15.0):
    """Until the emulator has no request in progress (a stalled handler sleeps on after the
    client gave up, and keeps the site's dump file busy meanwhile, as Kudu would)."""
    return wait_for(lambda: not emu.stats()["current"], timeout)


# ------------------------------------------------------------------ Azurite (Blob Storage)

AZURITE = os.path.join(HERE, "node_modules", ".bin", "azurite-blob")
AZCOPY = os.path.join(HERE, "node_modules", "@azure-tools", "azcopy-linux", "dist", "bin",
                      "azcopy_linux_amd64")
# Azurite's well-known development account (public, documented; not a secret).
ACCOUNT = "devstoreaccount1"
KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
SAS_VERSION = "2021-06-08"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def azurite_sign(text):
    return base64.b64encode(hmac.new(base64.b64decode(KEY), text.encode(), hashlib.sha256).digest()).decode()


class Azurite:
    """Azurite's blob service on a free 127.0.0.1 port, and a small REST client for it.
    With cert/key it serves HTTPS, with oauth=True it also takes bearer tokens."""

    def __init__(self, workdir, cert=None, key=None, oauth=False):
        self.dir = workdir
        self.port = free_port()
        self.proc = None
        self.cert, self.key, self.oauth = cert, key, oauth
        scheme = "https" if cert else "http"
        self.ssl = ssl.create_default_context(cafile=cert) if cert else None
        self.account_url = "%s://127.0.0.1:%d/%s" % (scheme, self.port, ACCOUNT)
        self.endpoint = self.account_url
        self.conn = ("DefaultEndpointsProtocol=%s;AccountName=%s;AccountKey=%s;BlobEndpoint=%s;"
                     % (scheme, ACCOUNT, KEY, self.endpoint))
        se = "2099-01-01T00:00:00Z"
        sig = azurite_sign("\n".join([ACCOUNT, "rwdlac", "b", "sco", "", se, "", "", SAS_VERSION, ""]) + "\n")
        self.account_sas = urllib.parse.urlencode(
            {"sv": SAS_VERSION, "ss": "b", "srt": "sco", "sp": "rwdlac", "se": se, "sig": sig})

    def start(self, timeout=60):
        if not os.path.exists(AZURITE):
            raise RuntimeError("azurite missing at %s (run scripts/install-deps test)" % AZURITE)
        log = open(os.path.join(self.dir, "azurite.log"), "wb")
        cmd = [AZURITE, "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
               "--location", os.path.join(self.dir, "data"), "--skipApiVersionCheck", "--silent",
               "--disableTelemetry"]
        if self.cert:
            cmd += ["--cert", self.cert, "--key", self.key]
        if self.oauth:
            cmd += ["--oauth", "basic"]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     cwd=self.dir)
        log.close()

        def answers():
            if self.proc.poll() is not None:
                raise AssertionError("azurite exited %s: %s" % (self.proc.returncode, self.log()))
            try:
                urllib.request.urlopen(self.endpoint.rsplit("/", 1)[0] + "/", timeout=2, context=self.ssl).close()
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
        if self.proc is not None:
            stop_process(self.proc, 10, term=True)

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
                                    "sig": azurite_sign("\n".join(fields))})
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
            with urllib.request.urlopen(req, timeout=timeout, context=self.ssl) as r:
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
        if st == 404 and not uncommitted:
            return {}
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
        with urllib.request.urlopen(self.url(container, name), timeout=300, context=self.ssl) as r:
            while True:
                b = r.read(1 << 20)
                if not b:
                    break
                h.update(b)
                n += len(b)
        return n, h.hexdigest()

    def block_list(self, container, name):
        """{"committed": [block ids], "uncommitted": [block ids]} of a blob."""
        st, _, body = self.request("GET", self.url(container, name, comp="blocklist", blocklisttype="all"))
        assert st == 200, (st, body[:300])
        root = ET.fromstring(body)
        return {k: [b.findtext("Name") for b in (root.find(tag) if root.find(tag) is not None else [])]
                for k, tag in (("committed", "CommittedBlocks"), ("uncommitted", "UncommittedBlocks"))}

    def put_blob(self, container, name, data):
        st, _, body = self.request("PUT", self.url(container, name), data=data,
                                   headers={"x-ms-blob-type": "BlockBlob"})
        assert st == 201, (st, body)
