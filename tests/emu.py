"""Drive tests/kudu_emulator.py as a subprocess (used by pytest fixtures, `make demo`, benchmarks).

    with Emulator() as emu:
        emu.url("demo")                       # http://127.0.0.1:PORT/demo  (an app's API root)
        emu.add_fault(route="dump", kind="reset", after_bytes=1 << 20, count=1)
        emu.stats()["sites"]["demo"]["dump"]
        emu.digest("demo", 4292, 1)           # {"sha256", "md5", "md5_b64", "size", ...}

Standard library only (urllib)."""
import json
import os
import select
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(HERE, "kudu_emulator.py")
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
DEFAULT_USER = "demo"
DEFAULT_PASSWORD = "demo-secret-pw"


class EmulatorError(RuntimeError):
    pass


class Emulator:
    def __init__(self, spec=None, user=None, password=None, token=None, verbose=False,
                 host="127.0.0.1", port=0):
        self.spec = dict(spec or {})
        if user is not None:
            self.spec["user"] = user
        if password is not None:
            self.spec["password"] = password
        if token is not None:
            self.spec["token"] = token
        self.user = self.spec.get("user", DEFAULT_USER)
        self.password = self.spec.get("password", DEFAULT_PASSWORD)
        self.token = self.spec.get("token")
        self.verbose = verbose
        self.host = host
        self._want_port = port
        self.proc = None
        self.port = None
        self.base = None

    # -------------------------------------------------------------- lifecycle
    def start(self, timeout=10):
        if self.proc is not None:
            return self
        cmd = [PYTHON, SCRIPT, "--host", self.host, "--port", str(self._want_port),
               "--spec", json.dumps(self.spec)]
        if self.verbose:
            cmd.append("--verbose")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        end = time.monotonic() + timeout
        line = b""
        fd = self.proc.stdout.fileno()
        while not line.endswith(b"\n"):
            left = end - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                self.stop()
                raise EmulatorError("kudu emulator did not start (got %r)" % line)
            r, _, _ = select.select([fd], [], [], min(left, 0.2))
            if r:
                b = os.read(fd, 1)
                if not b:
                    continue
                line += b
        text = line.decode().strip()
        prefix = "kudu-emulator listening on "
        if not text.startswith(prefix):
            self.stop()
            raise EmulatorError("unexpected emulator output %r" % text)
        self.base = text[len(prefix):]
        self.port = int(self.base.rsplit(":", 1)[1])
        return self

    def stop(self, timeout=5):
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if p.stdout:
            p.stdout.close()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __del__(self):
        try:
            self.stop()
        except Exception:
            pass

    # -------------------------------------------------------------- urls
    def url(self, site=None):
        """The API root of an app: http://127.0.0.1:PORT/<site> (the base itself when site is None)."""
        if site is None:
            return self.base
        return "%s/%s" % (self.base, urllib.parse.quote(site, safe=""))

    # -------------------------------------------------------------- control
    def _call(self, method, route, body=None, **query):
        if self.base is None:
            raise EmulatorError("emulator not started")
        q = urllib.parse.urlencode({k: v for k, v in query.items() if v is not None})
        url = "%s/_emulator/%s%s" % (self.base, route, "?" + q if q else "")
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=120) as r:
                return json.loads(r.read() or b"null")
        except urllib.error.HTTPError as e:
            raise EmulatorError("%s %s: %d %s" % (method, route, e.code, e.read().decode(errors="replace")))

    def health(self):
        return self._call("GET", "health")

    def stats(self):
        return self._call("GET", "stats")

    def current_spec(self):
        return self._call("GET", "spec")

    def reset(self):
        return self._call("POST", "reset")

    def add_fault(self, **fault):
        return self._call("POST", "faults", fault)

    def add_faults(self, faults):
        return self._call("POST", "faults", list(faults))

    def clear_faults(self):
        return self._call("DELETE", "faults")

    def set_site(self, name, spec):
        return self._call("POST", "site", spec or {}, name=name)

    def kill(self, site, pid):
        return self._call("POST", "kill", site=site, pid=pid)

    def digest(self, site, pid, type=1, size=None):
        return self._call("GET", "digest", site=site, pid=pid, type=type, size=size)
