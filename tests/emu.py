"""Drive tests/kudu_emulator.py as a subprocess (used by pytest fixtures, `make demo`, benchmarks).

    with Emulator() as emu:
        emu.url("demo")                       # http://127.0.0.1:PORT/demo  (an app's API root)
        emu.add_fault(route="dump", kind="reset", after_bytes=1 << 20, count=1)
        emu.stats()["sites"]["demo"]["dump"]
        emu.digest("demo", 4292, 1)           # {"sha256", "md5", "md5_b64", "size", ...}

    with Emulator(instances=3, arm_token="t") as emu:   # every site scaled out to 3 instances
        ids = emu.instances("demo")["live"]
        emu.digest("demo", 4292, 1, instance=ids[1])
        emu.remove_instance("demo", ids[1]); emu.add_instance("demo", ids[1])
        emu.arm_resource("demo")              # /subscriptions/.../sites/demo (arm_endpoint: emu.base)
        emu.set_arm_token("new")              # the old token now gets 401
        emu.restart()                         # same port, same spec, state reset (cuts downloads)

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
                 host="127.0.0.1", port=0, instances=None, arm_token=None):
        self.spec = dict(spec or {})
        if instances is not None:
            self.spec["instances"] = instances
        if arm_token is not None:
            self.spec["arm_token"] = arm_token
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

    def restart(self, down_seconds=0.0, hard=False, timeout=10):
        """Stop the emulator and start a new one on the SAME port with the same spec (a server
        restart mid-download): responses in flight are cut (hard=True: SIGKILL, else SIGTERM);
        counters, faults, removed instances and run-time changes are gone. down_seconds: how
        long the port stays closed (connection refused) in between."""
        port = self.port
        if port is None:
            raise EmulatorError("emulator not started")
        self.stop(hard=hard)
        if down_seconds:
            time.sleep(down_seconds)
        want, self._want_port = self._want_port, port
        end = time.monotonic() + timeout
        try:
            while True:
                try:
                    return self.start(timeout=max(1.0, end - time.monotonic()))
                except EmulatorError:
                    if time.monotonic() >= end:
                        raise
                    time.sleep(0.1)  # the port may still be held for a moment
        finally:
            self._want_port = want

    def stop(self, timeout=5, hard=False):
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None and hard:
            p.kill()
            p.wait()
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

    def kill(self, site, pid, instance=None):
        """Remove a process (on one instance, or on every instance that has it)."""
        return self._call("POST", "kill", site=site, pid=pid, instance=instance)

    def digest(self, site, pid, type=1, size=None, instance=None):
        return self._call("GET", "digest", site=site, pid=pid, type=type, size=size,
                          instance=instance)

    # -------------------------------------------------------------- instances and ARM
    def instances(self, site="demo"):
        """{"site", "live": [ids], "removed": [ids], "machines": {id: machine name}}"""
        return self._call("GET", "instances", site=site)

    def remove_instance(self, site, instance_id):
        return self._call("POST", "instance", site=site, id=instance_id, action="remove")

    def add_instance(self, site, instance_id=None):
        """Restore a removed instance, or add a new one (id default: the next deterministic one)."""
        return self._call("POST", "instance", site=site, id=instance_id, action="add")

    def set_arm_token(self, token):
        """The bearer token the ARM route accepts from now on (None: none is accepted)."""
        return self._call("POST", "arm_token", {"token": token})

    def arm_resource(self, site, subscription="00000000-0000-0000-0000-000000000000",
                     group="rg", slot=None):
        """An ARM resource id the emulator's ARM route serves for `site` (its arm_name)."""
        out = "/subscriptions/%s/resourceGroups/%s/providers/Microsoft.Web/sites/%s" % (
            subscription, group, urllib.parse.quote(site, safe=""))
        if slot is not None:
            out += "/slots/" + urllib.parse.quote(slot, safe="")
        return out

    @property
    def arm_endpoint(self):
        """What kudufs's arm_endpoint must be set to: the emulator's base URL."""
        return self.base
