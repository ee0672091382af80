#!/usr/bin/env python3
"""Kudu (Azure App Service SCM) process API emulator, Python 3 standard library only.

    python3 tests/kudu_emulator.py [--host 127.0.0.1] [--port 0] [--spec FILE_OR_INLINE_JSON]
                                   [--user U] [--password P] [--token T] [--instances N]
                                   [--rate-mbps R] [--verbose]

Prints exactly one line "kudu-emulator listening on http://HOST:PORT" on stdout once it
accepts connections; stops cleanly on SIGTERM/SIGINT. --user/--password/--token/--instances/
--rate-mbps set the top-level spec keys user/password/token/instances/rate_mbps.

Behaviour follows shared/kudu-api.md:
  * every site is served under /<site>/api/processes..., the first site also at the root;
    the aliases /api/diagnostics/processes and /diagnostics/processes work under both.
  * list items carry only id, name, machineName, href, user_name, sorted by lowercase name;
    details carry the full field set with false/0/null left out (Newtonsoft Ignore).
  * id 0 = the SCM w3wp (href rewritten to the real pid), -1 = the site's w3wp.
  * GET .../{id}/dump?dumpType=N[&format=raw|zip]: the dump is "written" first (dump_delay
    seconds, nothing sent), then streamed with Content-Length. format=zip answers a real
    (stored, zip64, data-descriptor) zip holding minidump.dmp, chunked, no Content-Length.
  * Kudu's fixed-file race: a second dump of a site while one is in progress gets 500
    "...being used by another process." and the earlier one is cut. The file is per SITE,
    shared by all its instances (%HOME% is common to them).
  * Basic auth, or Bearer when a token is configured; else 401 + WWW-Authenticate.
  * Process Explorer routes (Windows): GET .../{id}/threads -> [{id, href, state}],
    .../threads/{tid} -> ProcessThreadInfo (process, start_address, current_priority,
    priority_level, base_priority, start_time, total_/user_/priviledged_processor_time, state,
    wait_reason), .../modules -> [{base_address, file_name, file_version, href}] (4 modules),
    .../modules/{base} -> ProcessModuleInfo (+ file_path, module_memory_size,
    file_description, product, product_version, language); the same lists as in the details.
    .../environments/{all|substring}. Unknown thread/module: 404 {"Message"}.
  * GET [/<site>]/api/settings | /api/deployments | /api/environment: 200 JSON (routes every
    Kudu answers, also on a Linux Consumption site; for "is there a Kudu at all" probes).

Linux sites ("platform": "linux", KuduLite proxying dotnet-monitor, shared/kudu-api.md §3, §8):
  * list: [{pid, uid, name, isDefault}] sorted by pid (no id/href/machineName); details:
    {pid, uid, name, commandLine, operatingSystem: "linux", processArchitecture: "x64"};
    uid is a GUID per (instance, pid). No 0/-1; an unknown pid is dotnet-monitor's 400
    application/problem+json {type, title, status, detail: "Unable to discover a target
    process."}. Default processes: dotnet 85 (every instance) and dotnet 142 + 4*i.
  * GET .../{id}/dump?type=Mini|Full|WithHeap|Triage (case-insensitive; absent: WithHeap;
    dumpType= is ignored; another value: 400 problem+json): dump_delay, then 200
    application/octet-stream, chunked (no Content-Length), Content-Disposition: attachment;
    filename="core_YYYYMMDD_HHMMSS_PID". Bodies as above with the type name in the seed and
    an ELF header b"\\x7fELF\\x02\\x01\\x01\\x00"; sizes mini_size, full_size, withheap_size
    (16 MiB), triage_size (1 MiB). One dump at a time per INSTANCE (each runs its own
    dotnet-monitor): another one meanwhile gets 429 problem+json and the first goes on (no
    cut, no site-wide file race). stats: sites[S]["dump_busy"] counts the 429s.
  * threads, modules, DELETE: 400 application/json "Not supported on Linux" (a JSON string);
    environments/{filter}: Kudu's own environment whatever the pid; POST .../stop: 404.
  * "dotnet_monitor": false: every process route is 400 text/plain "Not supported on Linux".
  * "consumption": true: every process route is 404 (empty body); /api/settings,
    /api/deployments, /api/environment and /instance/all still answer 200.

Dump bodies are deterministic: a 1 MiB pattern block per (site, [instance,] pid, dumpType)
from shake_256(sha256 seed); chunk i (1 MiB) = 8-byte big-endian i + block[8:], except that
chunk 0 starts with the minidump header b"MDMP\\x93\\xa7\\x00\\x00" instead of its index.
The last chunk is truncated to the size. expected_digest(site, pid, type, size, instance=None)
uses the same generator; the instance id is part of the seed only on sites with configured
instances (without, the bodies are the same as before instances existed).

Spec (JSON, all optional):
  {"user", "password", "token",          Kudu credentials (Basic user/password; Bearer token)
   "instances": N | [ids],               default instances of every site (--instances N)
   "arm_token": T,                       Bearer token of the ARM route (default: "token";
                                         none: every ARM request is 401)
   "arm_page_size": 2,                   ARM instance-list page size
   "rate_mbps": R,                       cap every dump body at R MiB/s (--rate-mbps R;
                                         1 "mbps" = 1 MiB/s = 1048576 bytes/s here)
   "gzip_json": false, "faults": [...],
   "sites": {NAME: {
     "sku", "mini_size", "full_size", "dump_delay", "release_on_disconnect",
     "user", "password", "token", "count", "name",
     "instance", "machine",              id/machine name of the single implicit instance
                                         (only without "instances")
     "instances": N | [ids],             this site's instances (wins over the top-level key)
     "routing": "round_robin",           no/unknown cookie goes to: round_robin|random|first
     "arm_name": NAME,                   the ARM name: "APP" or "APP/slots/SLOT" (default: NAME;
                                         ARM .../sites/APP/slots/SLOT also finds site "APP-SLOT")
     "arm_page_size": N,
     "platform": "windows"|"linux",      Linux: see below
     "dotnet_monitor": true,             Linux only: false = every process route 400 text
     "consumption": false,               true: process routes 404 (Linux Consumption)
     "withheap_size", "triage_size",     Linux WithHeap/Triage dump sizes (also per process)
     "rate_mbps": R,                     dump body rate cap of this site (MiB/s)
     "processes": [{"name", "pid", "scm", "mini_size", "full_size", "user_name", "dump_error",
                    "instances": [index or id, ...]  (only on these instances; default all),
                    "dump_seed": S  (a string mixed into the body's seed: a "restarted" process
                                     with other memory; change it with POST /_emulator/site),
                    "details": {extra/overriding detail fields}}]}}}
Default: one site "demo" (user demo, password demo-secret-pw) with an SCM w3wp 4100, the
site's w3wp 4292, dotnet 5012 and php-cgi 6240; mini dumps 4 MiB, full dumps 64 MiB.
dumpType 2 uses full_size, every other dumpType mini_size.

A client that gives up during the "writing" phase does not free the site (Kudu's
MiniDumpWriteDump goes on): a new dump in that window conflicts. "release_on_disconnect":
true on a site frees it as soon as the waiting client disconnects.

Instances (shared/kudu-api.md §4, §6). Without "instances" a site has one implicit instance
(id "instance" or a derived one, machine "machine"), as before. With N, instance i has the
id sha256("SITE:i") (64 lowercase hex digits) and the machine name "RD" + the id's first 12
hex digits in upper case. Each instance has its own process table: by default w3wp 4100
(SCM), w3wp 4292 and php-cgi 6240 on every instance (equal pids, different details:
machineName, working_set and other memory, start_time, cpu times, handle_count,
WEBSITE_INSTANCE_ID/COMPUTERNAME in environment_variables), and dotnet 5012 + 4*i (unique).
"processes"/"count" give every instance the same pids (restrict with a process's "instances").
ARR routing: "Cookie: ARRAffinity=<id>" of a live instance goes there, with no Set-Cookie.
No cookie, or one naming an unknown or removed instance, goes to a live instance (routing)
answered with "Set-Cookie: ARRAffinity=<that id>;Path=/;HttpOnly". No live instance: 503.
  GET [/<site>]/instance/all (Kudu auth) -> JSON array of the live ids.
  GET /subscriptions/S/resourceGroups/RG/providers/Microsoft.Web/sites/NAME[/slots/SLOT]
      /instances[/ID]?api-version=V  (ARM, on the same server): "Authorization: Bearer
      <arm_token>" else 401 {"error": {"code": "InvalidAuthenticationToken"|
      "AuthenticationFailed", ...}} + WWW-Authenticate: Bearer ...; no api-version: 400
      MissingApiVersionParameter; unknown site: 404 ResourceNotFound. Body {"value": [{"id":
      ".../instances/ID", "name": ID, "type": "Microsoft.Web/sites/instances" (slots:
      "Microsoft.Web/sites/slots/instances"), "properties": {"state": "READY",
      "siteInstanceName": ID}}], "nextLink": "http://HOST/...&%24skiptoken=K"} (nextLink absent
      on the last page; live instances only).

"gzip_json": true (top level) gzips JSON responses for clients that send Accept-Encoding: gzip,
with Content-Length the compressed size, as IIS's dynamic compression does.

Faults (top-level "faults" or POST /_emulator/faults):
  {"route": "list|details|dump|other|instance_all|arm|any" (default any), "site", "instance",
   "pid", "dump_type" (an int, or a Linux type name), "count" (uses left; default unlimited),
   "kind": one of
    "latency"      seconds: wait before answering (any route)
    "slow_dump"    seconds: added to the dump's generation phase
    "stall"        after_bytes, seconds, close (false|true|"reset"): pause the body once
    "reset"        after_bytes: TCP RST there
    "short"        after_bytes: clean close there (fewer bytes than Content-Length / no last chunk)
    "trickle"      after_bytes, seconds, bytes: from after_bytes on, one byte every `seconds`
                   (for `bytes` bytes, then full speed; without `bytes` to the end)
    "status"       status, retry_after (any string: "86400", an HTTP date...), reason,
                   message | body, content_type: an error answer instead of the real one
    "malformed"    body: 200 with a broken JSON body
    "frontend_timeout"  status=500, reason: App Service's ~230 s cut (IIS HTML page)
    "redirect"     status (302), location (default: an AAD sign-in URL): a redirect with an
                   HTML body, as a sign-in front end answers
    "gzip_bomb"    inflated_bytes (1 GiB): 200 JSON with Content-Encoding: gzip (sent even
                   without Accept-Encoding) of about inflated_bytes/1000 that inflates to valid
                   JSON ("[" + spaces + "]") of inflated_bytes
    "oversized"    bytes (50 MiB) | processes (N): a valid list of N synthetic processes (ids
                   100000 up, distinct) or of at least `bytes`; on details: an object with a
                   `bytes`-long command_line
    "duplicate_ids" pids (default all), rename (false): list items listed twice in a row
                   (rename: the copy's name + "-dup")
    "rate"         mbps | bytes_per_second: this dump body's rate cap (beats the site's)}
  "instance" matches the instance a request was routed to; "instance_all" is GET
  /instance/all, "arm" the ARM instances route (both also matched by "any"). Body faults
  (stall, reset, short, trickle) act on any body, JSON or dump.
  Other hostile conditions: connection refused = stop the emulator; a server restart
  mid-download = tests/emu.py Emulator.restart(down_seconds=0, hard=False), which stops the
  process (SIGTERM, or SIGKILL with hard; responses in flight are cut) and starts a new one on
  the same port with the same spec (state, counters and faults reset).

Control routes (no auth, never counted in stats), JSON:
  GET /_emulator/health | /_emulator/stats | /_emulator/spec | /_emulator/faults
  GET /_emulator/digest?site=S&pid=P&type=T[&size=N][&instance=ID]
                                   -> {sha256, md5, md5_b64, size, site, pid, type, instance}
                                   (no instance=: the site's first instance; type: an int
                                   dumpType, default 1; on a Linux site Mini|Full|WithHeap|
                                   Triage, default WithHeap)
  POST /_emulator/reset            zero counters, clear faults
  POST /_emulator/faults           body: a fault or a list of faults (added)
  DELETE /_emulator/faults         clear faults
  POST /_emulator/site?name=S      body: a site spec (replaces or adds the site)
  POST /_emulator/kill?site=S&pid=P[&instance=ID]  remove a process (then 404); without
                                   instance= on every instance that has it
  GET  /_emulator/instances?site=S -> {"site", "live": [ids], "removed": [ids],
                                   "machines": {id: machine name}}
  POST /_emulator/instance?site=S&id=ID&action=remove|add  remove (its cookie then routes
                                   elsewhere with a new Set-Cookie) or restore an instance;
                                   add with an unknown or no id creates one (no id: the next
                                   deterministic one) -> {"ok", "id", "live": [ids]}
  POST /_emulator/arm_token        body {"token": T} (or ?token=T): the ARM token accepted from
                                   now on (null: none); the old one gets 401

Stats (GET /_emulator/stats):
  {"requests": {"list", "details", "dump", "other"}   (Kudu requests; /instance/all is "other"),
   "peak_concurrent", "current", "dump_conflicts", "unauthorized", "dump_bytes",
   "arm": {"requests", "unauthorized", "bad_request", "not_found"}, "arm_token_set",
   "faults": [...],
   "sites": {S: {"list", "details", "dump", "other", "instance_all", "arm_instances" (ARM pages
       served), "dump_peak" = "dump_max_concurrent" (most dump requests of the site in flight
       at once, across its instances), "dump_current", "dump_conflicts" (500 file races),
       "dump_busy" (Linux 429s), "dumps_by_key":
       {"PID/TYPE": n}, "dump_bytes",
       "affinity": [[route, ARRAffinity received or null]]           (last 1000),
       "routing": [[route, ARRAffinity received, instance served, Set-Cookie sent]] (last 1000),
       "dump_intervals": [{"instance", "pid", "type", "start", "end" (epoch seconds; end is
           when the last bytes were about to go out, or the request ended), "status" (null:
           cut before headers), "bytes", "complete"}]                  (last 10000),
       "instances": {ID: {"list", "details", "dump", "other", "instance_all", "dumps_by_key",
           "dump_bytes", "live", "machine", "index"}}}}}
"""
import argparse
import base64
import binascii
import gzip
import hashlib
import json
import random
import select
import signal
import socket
import struct
import sys
import threading
import time
import uuid
import zipfile
import zlib
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit

CHUNK = 1 << 20
MDMP_HEADER = b"MDMP\x93\xa7\x00\x00"
ELF_HEADER = b"\x7fELF\x02\x01\x01\x00"  # a Linux (dotnet-monitor) dump is an ELF core
# dotnet-monitor's dump types (?type=, case-insensitive; default WithHeap)
LINUX_TYPES = {"mini": "Mini", "full": "Full", "withheap": "WithHeap", "triage": "Triage"}
LINUX_SIZE_KEYS = {"Mini": "mini_size", "Full": "full_size", "WithHeap": "withheap_size",
                   "Triage": "triage_size"}
NOT_ON_LINUX = "Not supported on Linux"
DEFAULT_USER = "demo"
DEFAULT_PASSWORD = "demo-secret-pw"
API_BASES = (("api", "processes"), ("api", "diagnostics", "processes"), ("diagnostics", "processes"))
ROUTES = ("list", "details", "dump", "other")
MISC_ROUTES = ("settings", "deployments", "environment")
FAULT_ROUTES = ("list", "details", "dump", "other", "instance_all", "arm", "any")
FAULT_KINDS = ("latency", "slow_dump", "stall", "reset", "short", "status", "malformed",
               "frontend_timeout", "trickle", "rate", "redirect", "gzip_bomb", "oversized",
               "duplicate_ids")
CONFLICT_MSG = ("The process cannot access the file 'C:\\home\\LogFiles\\minidump\\minidump.dmp' "
                "because it is being used by another process.")
REASONS = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
           503: "Service Unavailable", 504: "Gateway Timeout"}
# What App Service's front end (IIS/ARR) answers when it cuts a request at ~230 s
FRONTEND_TIMEOUT_HTML = (
    b'<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" '
    b'"http://www.w3.org/TR/xhtml1/DTD/xhtml1-strict.dtd">\r\n'
    b'<html xmlns="http://www.w3.org/1999/xhtml">\r\n<head>\r\n'
    b'<meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1"/>\r\n'
    b'<title>500 - The request timed out.</title>\r\n</head>\r\n<body>\r\n'
    b'<div id="header"><h1>Server Error</h1></div>\r\n<div id="content">\r\n'
    b' <div class="content-container"><fieldset>\r\n'
    b'  <h2>500 - The request timed out.</h2>\r\n'
    b'  <h3>The web server failed to respond within the specified time.</h3>\r\n'
    b' </fieldset></div>\r\n</div>\r\n</body>\r\n</html>\r\n')
BASE_TIME = datetime(2024, 9, 4, 10, 33, 18, 123456, tzinfo=timezone.utc)


# --------------------------------------------------------------------------- dump bodies

_block_cache = {}
_block_lock = threading.Lock()


def pattern_block(site, pid, dump_type, instance=None):
    """The 1 MiB pattern block of one (site, [instance,] pid, dump type)."""
    key = (str(site), instance, int(pid), dump_type)
    with _block_lock:
        b = _block_cache.get(key)
    if b is None:
        if instance is None:
            text = "kudu-emulator/%s/%d/%s" % (key[0], key[2], key[3])
        else:
            text = "kudu-emulator/%s/%s/%d/%s" % key
        seed = hashlib.sha256(text.encode()).digest()
        b = hashlib.shake_256(seed).digest(CHUNK)
        with _block_lock:
            if len(_block_cache) > 64:
                _block_cache.clear()
            _block_cache[key] = b
    return b


def body_seed(inst_seed, proc):
    """The instance argument of pattern_block for a process: its instance's seed, with the
    process's "dump_seed" appended when it has one (without, the bodies are as before)."""
    extra = proc.get("dump_seed") if proc else None
    if extra is None:
        return inst_seed
    return "%s+%s" % (inst_seed or "", extra)


def iter_dump(site, pid, dump_type, size, start=0, instance=None):
    """Yield memoryviews of the dump body from byte `start`. Reuses one buffer: consume each
    view before asking for the next one."""
    block = pattern_block(site, pid, dump_type, instance)
    header = ELF_HEADER if isinstance(dump_type, str) else MDMP_HEADER
    buf = bytearray(block)
    mv = memoryview(buf)
    idx, off = divmod(start, CHUNK)
    nchunks = (size + CHUNK - 1) // CHUNK
    while idx < nchunks:
        if idx == 0:
            buf[0:8] = header
        else:
            struct.pack_into(">Q", buf, 0, idx)
        n = min(CHUNK, size - idx * CHUNK)
        yield mv[off:n]
        off = 0
        idx += 1


def _hash_dump(site, pid, dump_type, size, algo, instance=None):
    h = hashlib.new(algo)
    for piece in iter_dump(site, pid, dump_type, size, instance=instance):
        h.update(piece)
    return h


_digest_cache = {}


def expected_digests(site, pid, dump_type, size, instance=None):
    """(sha256 hex, md5 hex, size) of the dump body; md5 and sha256 run in parallel threads
    (hashlib releases the GIL). instance: the instance id of a site with configured
    instances (None for a site without)."""
    key = (str(site), int(pid), dump_type, int(size), instance)
    if key in _digest_cache:
        return _digest_cache[key]
    res = {}

    def run(algo):
        res[algo] = _hash_dump(site, pid, dump_type, size, algo, instance).hexdigest()
    t = threading.Thread(target=run, args=("md5",))
    t.start()
    run("sha256")
    t.join()
    out = (res["sha256"], res["md5"], int(size))
    _digest_cache[key] = out
    return out


def expected_digest(site, pid, dump_type, size, instance=None):
    """(sha256 hex, size) of the body the emulator sends for that dump."""
    sha, _md5, size = expected_digests(site, pid, dump_type, size, instance)
    return sha, size


# --------------------------------------------------------------------------- hostile bodies

_hostile_cache = {}


def gzip_bomb(inflated):
    """A small gzip member that inflates to `inflated` bytes of valid JSON ("[" + spaces + "]"):
    each MiB of spaces is one deflate block ended by a full flush, so the same ~1 KiB of
    compressed bytes repeats (about 1000:1)."""
    inflated = max(2, int(inflated))
    key = ("bomb", inflated)
    if key in _hostile_cache:
        return _hostile_cache[key]
    spaces = b" " * CHUNK
    co = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = co.compress(b"[") + co.flush(zlib.Z_FULL_FLUSH)
    block = co.compress(spaces) + co.flush(zlib.Z_FULL_FLUSH)
    nblocks, rest = divmod(inflated - 2, CHUNK)
    tail = co.compress(spaces[:rest] + b"]") + co.flush()
    crc = zlib.crc32(b"[")
    for _ in range(nblocks):
        crc = zlib.crc32(spaces, crc)
    crc = zlib.crc32(spaces[:rest] + b"]", crc)
    out = (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + head + block * nblocks + tail
           + struct.pack("<II", crc & 0xffffffff, inflated & 0xffffffff))
    _hostile_cache.clear()
    _hostile_cache[key] = out
    return out


def oversized_list(host, nbytes=None, count=None):
    """A valid Kudu process list of synthetic processes: `count` of them, or as many as make
    the body at least `nbytes` long (default 50 MiB). Ids are 100000 upwards, all distinct."""
    key = ("list", host, nbytes, count)
    if key in _hostile_cache:
        return _hostile_cache[key]
    tmpl = ('{"id":%d,"name":"synthetic","machineName":"RD0000000000",'
            '"href":"http://' + host.replace("%", "%%") + '/api/processes/%d","user_name":"IIS APPPOOL\\\\synthetic"}')
    one = len(tmpl % (100000, 100000)) + 1
    n = int(count) if count is not None else max(1, int(nbytes or 50 << 20) // one + 1)
    body = ("[" + ",".join(tmpl % (100000 + i, 100000 + i) for i in range(n)) + "]").encode()
    _hostile_cache.clear()
    _hostile_cache[key] = body
    return body


# --------------------------------------------------------------------------- model

def _derive(name, n):
    return hashlib.sha256(("inst/" + name).encode()).hexdigest()[:n]


def iso(dt):
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + "%07d" % (dt.microsecond * 10) + "Z"


def timespan(secs):
    neg = secs < 0
    secs = abs(secs)
    ticks = int(round(secs * 10_000_000))
    days, rem = divmod(ticks, 86400 * 10_000_000)
    h, rem = divmod(rem, 3600 * 10_000_000)
    m, rem = divmod(rem, 60 * 10_000_000)
    s, frac = divmod(rem, 10_000_000)
    out = "%02d:%02d:%02d" % (h, m, s)
    if frac:
        out += ".%07d" % frac
    if days:
        out = "%d.%s" % (days, out)
    return ("-" if neg else "") + out


def default_processes(index=0):
    """Every instance runs the same process names. 4100, 4292 and 6240 are the same pids on
    every instance (with different details); dotnet's pid differs per instance (5012 on the
    first, as always)."""
    return [{"name": "w3wp", "pid": 4100, "scm": True},
            {"name": "w3wp", "pid": 4292},
            {"name": "dotnet", "pid": 5012 + 4 * index},
            {"name": "php-cgi", "pid": 6240}]


def default_linux_processes(index=0):
    """What dotnet-monitor sees in a Linux container: the app's dotnet (the same pid on every
    instance) and a second .NET process whose pid differs per instance."""
    return [{"name": "dotnet", "pid": 85},
            {"name": "dotnet", "pid": 142 + 4 * index}]


def linux_type(value):
    """dotnet-monitor's ?type= as its canonical name; None when invalid. Absent: WithHeap."""
    if value is None:
        return "WithHeap"
    return LINUX_TYPES.get(str(value).strip().lower())


def generated_processes(count, name=None):
    procs = []
    names = [name] if name else ["dotnet", "node"]
    for i in range(count):
        if i == 0:
            procs.append({"name": "w3wp", "pid": 4100, "scm": True})
        elif i == 1:
            procs.append({"name": "w3wp", "pid": 4292})
        else:
            procs.append({"name": names[i % len(names)], "pid": 10000 + i})
    return procs


def exe_path(proc):
    return {"w3wp": r"D:\Windows\SysWOW64\inetsrv\w3wp.exe",
            "dotnet": r"D:\Program Files\dotnet\dotnet.exe",
            "php-cgi": r"D:\Program Files (x86)\PHP\v8.0\php-cgi.exe"}.get(
        proc["name"], "D:\\home\\site\\wwwroot\\%s.exe" % proc["name"])


def instance_id(site, index):
    """The deterministic id of a site's index-th instance: 64 lowercase hex digits."""
    return hashlib.sha256(("%s:%d" % (site, index)).encode()).hexdigest()


class Instance:
    """One worker of a site: its own process table and machine name. `seed` is what goes into
    the dump bodies' seed (None for a site without configured instances: the bodies are then
    the same as before instances existed)."""

    def __init__(self, site, iid, index, machine, seed):
        self.site = site
        self.id = iid
        self.index = index
        self.machine = machine
        self.seed = seed
        self.live = True
        spec = site.spec
        if "processes" in spec:
            procs = [dict(p) for p in spec["processes"]]
        elif "count" not in spec:
            procs = default_linux_processes(index) if site.linux else default_processes(index)
        else:
            procs = []
        if "count" in spec:
            gen = generated_processes(int(spec["count"]), spec.get("name"))
            have = {int(p["pid"]) for p in procs}
            procs += [p for p in gen[len(procs):] if p["pid"] not in have]
        self.procs = {}
        for p in procs:
            only = p.get("instances")
            if only is not None and index not in only and iid not in only:
                continue
            p["pid"] = int(p["pid"])
            p["name"] = str(p.get("name", "w3wp"))
            self.procs[p["pid"]] = p
        self._sorted = None

    def sorted_procs(self):
        s = self._sorted
        if s is None:
            s = sorted(self.procs.values(), key=lambda p: p["name"].lower())
            self._sorted = s
        return s

    def kill(self, pid):
        p = self.procs.pop(int(pid), None)
        self._sorted = None
        return p is not None

    def scm_proc(self):
        for p in self.procs.values():
            if p.get("scm"):
                return p
        return None

    def site_proc(self):
        for p in self.procs.values():
            if p["name"].lower() == "w3wp" and not p.get("scm"):
                return p
        return None

    def resolve(self, pid):
        if self.site.linux:  # dotnet-monitor knows no 0/-1
            return self.procs.get(pid)
        if pid == 0:
            return self.scm_proc()
        if pid == -1:
            return self.site_proc()
        return self.procs.get(pid)

    def list_item(self, proc, base):
        item = {"id": proc["pid"], "name": proc["name"], "machineName": self.machine,
                "href": "%s/%d" % (base, proc["pid"])}
        un = self.site.user_name(proc)
        if un is not None:
            item["user_name"] = un
        return item

    def uid(self, proc):
        """dotnet-monitor's runtime instance cookie: a GUID, per instance and pid."""
        h = hashlib.sha256(("uid/%s/%s/%d" % (self.site.name, self.id, proc["pid"])).encode())
        return str(uuid.UUID(bytes=h.digest()[:16], version=4))

    def linux_list_item(self, proc):
        return {"pid": proc["pid"], "uid": self.uid(proc), "name": proc["name"],
                "isDefault": False}

    def linux_detail(self, proc):
        d = {"pid": proc["pid"], "uid": self.uid(proc), "name": proc["name"],
             "commandLine": "/usr/share/dotnet/dotnet /home/site/wwwroot/%s.dll" % self.site.name,
             "operatingSystem": "linux", "processArchitecture": "x64"}
        d.update(proc.get("details") or {})
        return d

    def kudu_environment(self):
        """Kudu's own environment (KuduLite answers it for any pid)."""
        return {"WEBSITE_SITE_NAME": self.site.name, "WEBSITE_INSTANCE_ID": self.id,
                "COMPUTERNAME": self.machine, "WEBSITE_USE_DOTNET_MONITOR":
                "true" if self.site.dotnet_monitor else "false", "FRAMEWORK": "DOTNETCORE"}

    def threads(self, proc, href):
        pid = proc["pid"]
        return [{"id": t, "href": "%s/threads/%d" % (href, t), "state": "Wait"}
                for t in (pid * 4 + 4, pid * 4 + 8, pid * 4 + 12)]

    def thread_detail(self, proc, href, tid):
        """GetThread's ProcessThreadInfo (Newtonsoft Ignore: false/0/null left out)."""
        pid = proc["pid"]
        start = BASE_TIME - timedelta(seconds=pid % 86400 + 3631 * self.index - (tid % 97))
        d = {"id": tid, "href": "%s/threads/%d" % (href, tid), "process": href,
             "start_address": "0x%x" % (0x7ffb5c3f0000 + tid * 16), "current_priority": 8,
             "priority_level": "Normal", "base_priority": 8, "start_time": iso(start),
             "total_processor_time": timespan(0.5 + tid % 7), "user_processor_time": timespan(0.25 + tid % 5),
             "priviledged_processor_time": timespan(0.25), "state": "Wait",
             "wait_reason": "UserRequest"}
        return d

    def modules(self, proc, href):
        return [{"base_address": m[0], "file_name": m[1], "file_version": m[2],
                 "href": "%s/modules/%s" % (href, m[0])} for m in self.module_table(proc)]

    def module_table(self, proc):
        exe = proc["name"] + ".exe"
        return [("7ff6a1b20000", exe, "10.0.20348.1"),
                ("7ffb5c3d0000", "ntdll.dll", "10.0.20348.2849"),
                ("7ffb5a8e0000", "KERNEL32.DLL", "10.0.20348.2849"),
                ("7ffb2f410000", "coreclr.dll", "8.0.1124.51707")]

    def module_detail(self, proc, href, base):
        for b, name, ver in self.module_table(proc):
            if b == base.lower():
                path = exe_path(proc) if name.endswith(".exe") else r"C:\Windows\System32\%s" % name
                return {"base_address": b, "file_name": name, "href": "%s/modules/%s" % (href, b),
                        "file_path": path, "module_memory_size": 0x1f0000 + int(b[-5:-4], 16) * 4096,
                        "file_version": ver, "file_description": name.split(".")[0],
                        "product": "Microsoft\u00ae Windows\u00ae Operating System",
                        "product_version": ver, "language": "English (United States)"}
        return None

    def detail(self, proc, base, href):
        site = self.site
        pid = proc["pid"]
        k = self.index  # per-instance variation of the same pid (0: as before instances)
        site_w3wp = self.site_proc()
        is_w3wp = proc["name"].lower() == "w3wp"
        if is_w3wp or site_w3wp is None or site_w3wp is proc:
            ppid = 0
        else:
            ppid = site_w3wp["pid"]
        children = []
        if site_w3wp is proc:
            children = ["%s/%d" % (base, p["pid"]) for p in self.procs.values()
                        if p["name"].lower() != "w3wp" and p is not proc]
        start = BASE_TIME - timedelta(seconds=pid % 86400 + 3631 * k, microseconds=pid * 7 % 1000000)
        tids = [pid * 4 + 4, pid * 4 + 8, pid * 4 + 12]
        scm = bool(proc.get("scm"))
        exe = exe_path(proc)
        mb = 1024 * 1024
        d = {
            "id": pid, "name": proc["name"], "href": href,
            "minidump": href + "/dump",
            "parent": "%s/%d" % (base, ppid),
            "children": children,
            "threads": self.threads(proc, href),
            "open_file_handles": [r"D:\home\LogFiles\eventlog.xml"] if is_w3wp else [],
            "modules": self.modules(proc, href),
            "file_name": exe,
            "command_line": "%s -ap \"%s%s\"" % (exe, "~1" if scm else "", site.name) if is_w3wp else exe,
            "user_name": site.user_name(proc),
            "handle_count": 400 + pid % 500 + 13 * k,
            "module_count": len(self.module_table(proc)),
            "thread_count": len(tids),
            "start_time": iso(start),
            "total_cpu_time": timespan(3.125 + pid % 7 + 1.5 * k),
            "user_cpu_time": timespan(2.5 + pid % 5 + k),
            "privileged_cpu_time": timespan(0.625 + 0.5 * k),
            "working_set": 150 * mb + pid * 4096 + 7 * mb * k,
            "peak_working_set": 180 * mb + pid * 4096 + 9 * mb * k,
            "private_memory": 120 * mb + pid * 4096 + 5 * mb * k,
            "virtual_memory": 2 * 1024 ** 4 + pid * 65536 + 64 * mb * k,
            "peak_virtual_memory": 2 * 1024 ** 4 + pid * 65536 + (1 << 26) + 64 * mb * k,
            "paged_system_memory": 512 * 1024,
            "non_paged_system_memory": 64 * 1024,
            "paged_memory": 120 * mb + pid * 4096 + 5 * mb * k,
            "peak_paged_memory": 130 * mb + pid * 4096 + 5 * mb * k,
            "time_stamp": iso(datetime.now(timezone.utc)),
            "environment_variables": {"APP_POOL_ID": ("~1" if scm else "") + site.name,
                                      "WEBSITE_SITE_NAME": site.name,
                                      "WEBSITE_INSTANCE_ID": self.id,
                                      "COMPUTERNAME": self.machine},
            "is_profile_running": False,
            "is_iis_profile_running": False,
            "iis_profile_timeout_in_seconds": 180.0,
            "is_scm_site": scm,
            "is_webjob": False,
            "description": None,
            "machineName": self.machine,
        }
        # Newtonsoft DefaultValueHandling.Ignore: false, 0, null left out (id/name/machineName kept)
        out = {k: v for k, v in d.items()
               if k in ("id", "name", "machineName") or not (v is None or v is False or (
                   type(v) in (int, float) and v == 0))}
        out.update(proc.get("details") or {})
        return out


class Site:
    def __init__(self, name, spec, default_instances=None):
        spec = dict(spec or {})
        self.name = name
        self.spec = spec
        self.sku = spec.get("sku", "Standard")
        self.mini_size = int(spec.get("mini_size", 4 << 20))
        self.full_size = int(spec.get("full_size", 64 << 20))
        self.dump_delay = float(spec.get("dump_delay", 0.05))
        self.release_on_disconnect = bool(spec.get("release_on_disconnect", False))
        self.user = spec.get("user")
        self.password = spec.get("password")
        self.token = spec.get("token")
        self.arm_name = str(spec.get("arm_name") or name)
        self.platform = str(spec.get("platform", "windows")).lower()
        self.linux = self.platform == "linux"
        self.dotnet_monitor = bool(spec.get("dotnet_monitor", True))
        self.consumption = bool(spec.get("consumption", False))
        self.withheap_size = int(spec.get("withheap_size", 16 << 20))
        self.triage_size = int(spec.get("triage_size", 1 << 20))
        self.rate_mbps = spec.get("rate_mbps")
        self.routing = spec.get("routing", "round_robin")
        self._rr = 0
        want = spec.get("instances", default_instances)
        self.instances = []
        if want is None:
            # today's single implicit instance
            iid = str(spec.get("instance") or _derive(name, 64))
            machine = str(spec.get("machine") or ("RD" + _derive("m/" + name, 10).upper()))
            self.instances.append(Instance(self, iid, 0, machine, None))
        else:
            ids = ([str(i) for i in want] if isinstance(want, list)
                   else [instance_id(name, i) for i in range(int(want))])
            for i, iid in enumerate(ids):
                self.add_instance(iid)

    def add_instance(self, iid=None):
        """A new instance (index = how many the site has had); its id defaults to the
        deterministic one. Caller holds the state lock once the server runs."""
        index = len(self.instances)
        iid = str(iid or instance_id(self.name, index))
        inst = Instance(self, iid, index, "RD" + iid[:12].upper(), iid)
        self.instances.append(inst)
        return inst

    def instance_by_id(self, iid):
        for inst in self.instances:
            if inst.id == iid:
                return inst
        return None

    def live_instances(self):
        return [i for i in self.instances if i.live]

    def route(self, affinity):
        """ARR: (instance, True when the response must carry a new ARRAffinity cookie).
        A cookie naming a live instance goes there; none, or one naming an unknown or removed
        instance, goes to a live one picked by `routing` (round_robin|random|first).
        (None, False) when no instance is live. Caller holds the state lock."""
        if affinity is not None:
            inst = self.instance_by_id(affinity)
            if inst is not None and inst.live:
                return inst, False
        live = self.live_instances()
        if not live:
            return None, False
        if self.routing == "first":
            inst = live[0]
        elif self.routing == "random":
            inst = random.choice(live)
        else:
            inst = live[self._rr % len(live)]
            self._rr += 1
        return inst, True

    @property
    def first(self):
        return self.instances[0]

    # the first instance's view, kept for callers written before instances existed
    @property
    def instance(self):
        return self.first.id

    @property
    def machine(self):
        return self.first.machine

    @property
    def procs(self):
        return self.first.procs

    def dump_size(self, proc, dump_type):
        if isinstance(dump_type, str):
            key = LINUX_SIZE_KEYS[dump_type]
            return int(proc.get(key, getattr(self, key)))
        if dump_type == 2:
            return int(proc.get("full_size", self.full_size))
        return int(proc.get("mini_size", self.mini_size))

    def user_name(self, proc):
        if "user_name" in proc:
            return proc["user_name"]
        return "IIS APPPOOL\\" + ("~1" if proc.get("scm") else "") + self.name


# --------------------------------------------------------------------------- state

class State:
    def __init__(self, spec):
        self.lock = threading.Lock()
        spec = dict(spec or {})
        self.user = spec.get("user", DEFAULT_USER)
        self.password = spec.get("password", DEFAULT_PASSWORD)
        self.token = spec.get("token")
        self.gzip_json = bool(spec.get("gzip_json", False))
        self.instances = spec.get("instances")  # default for every site (--instances N)
        self.arm_token = spec.get("arm_token", self.token)
        self.arm_page_size = max(1, int(spec.get("arm_page_size", 2)))
        sites = spec.get("sites") or {"demo": {}}
        self.sites = {}
        for name, s in sites.items():
            self.sites[name] = Site(name, s, self.instances)
        self.faults = []
        for f in spec.get("faults") or []:
            self.add_fault(f)
        self.active_dumps = {}  # site -> DumpCtx (Windows: Kudu's one minidump.dmp per site)
        self.linux_dumps = set()  # (site, instance) with a dotnet-monitor dump running
        self.rate_mbps = spec.get("rate_mbps")
        self.reset_stats()

    def spec(self):
        out = {"user": self.user, "password": self.password, "token": self.token,
               "gzip_json": self.gzip_json, "instances": self.instances,
               "arm_token": self.arm_token, "arm_page_size": self.arm_page_size, "sites": {},
               "faults": [dict(f) for f in self.faults]}
        with self.lock:
            for n, s in self.sites.items():
                out["sites"][n] = dict(
                    s.spec, sku=s.sku, instance=s.instance, machine=s.machine,
                    mini_size=s.mini_size, full_size=s.full_size, dump_delay=s.dump_delay,
                    processes=[dict(p) for p in s.procs.values()],
                    instances=[i.id for i in s.instances],
                    live_instances=[i.id for i in s.live_instances()],
                    machines={i.id: i.machine for i in s.instances},
                    instance_processes={i.id: [dict(p) for p in i.procs.values()]
                                        for i in s.instances})
        return out

    def first_site(self):
        return next(iter(self.sites.values()), None)

    def reset_stats(self):
        with self.lock:
            self.requests = {r: 0 for r in ROUTES}
            self.site_stats = {}
            self.peak = 0
            self.current = 0
            self.conflicts = 0
            self.unauthorized = 0
            self.dump_bytes = 0
            self.arm = {"requests": 0, "unauthorized": 0, "bad_request": 0, "not_found": 0}

    def sstat(self, name):
        s = self.site_stats.get(name)
        if s is None:
            s = {"list": 0, "details": 0, "dump": 0, "other": 0, "dump_peak": 0,
                 "dump_current": 0, "dumps_by_key": {}, "dump_bytes": 0, "affinity": [],
                 "instance_all": 0, "arm_instances": 0, "dump_conflicts": 0,
                 "dump_intervals": [], "routing": [], "instances": {}, "dump_busy": 0}
            self.site_stats[name] = s
        return s

    @staticmethod
    def istat(ss, inst):
        i = ss["instances"].get(inst.id)
        if i is None:
            i = {"list": 0, "details": 0, "dump": 0, "other": 0, "instance_all": 0,
                 "dumps_by_key": {}, "dump_bytes": 0}
            ss["instances"][inst.id] = i
        return i

    def stats(self):
        with self.lock:
            sites = {}
            for n in list(self.sites) + [n for n in self.site_stats if n not in self.sites]:
                s = json.loads(json.dumps(self.sstat(n)))
                s["dump_max_concurrent"] = s["dump_peak"]
                site = self.sites.get(n)
                if site is not None:
                    for inst in site.instances:
                        i = s["instances"].setdefault(inst.id, {
                            "list": 0, "details": 0, "dump": 0, "other": 0, "instance_all": 0,
                            "dumps_by_key": {}, "dump_bytes": 0})
                        i["live"] = inst.live
                        i["machine"] = inst.machine
                        i["index"] = inst.index
                sites[n] = s
            return {"requests": dict(self.requests), "sites": sites, "peak_concurrent": self.peak,
                    "current": self.current, "dump_conflicts": self.conflicts,
                    "unauthorized": self.unauthorized, "dump_bytes": self.dump_bytes,
                    "arm": dict(self.arm), "arm_token_set": self.arm_token is not None,
                    "faults": [dict(f) for f in self.faults]}

    def add_fault(self, f):
        if not isinstance(f, dict):
            raise ValueError("a fault is a JSON object")
        f = dict(f)
        f.setdefault("route", "any")
        if f["route"] not in FAULT_ROUTES:
            raise ValueError("bad route %r (one of %s)" % (f["route"], ", ".join(FAULT_ROUTES)))
        if f.get("kind") not in FAULT_KINDS:
            raise ValueError("bad kind %r (one of %s)" % (f.get("kind"), ", ".join(FAULT_KINDS)))
        for k in ("site", "pid", "dump_type", "count", "instance"):
            f.setdefault(k, None)
        if f["kind"] == "status":
            f["status"] = int(f.get("status", 500))
        with self.lock:
            self.faults.append(f)

    def take_faults(self, route, site, pid, dump_type, instance=None):
        """The faults matching this request; each consumes one of its count."""
        out = []
        with self.lock:
            keep = []
            for f in self.faults:
                ok = (f["route"] in ("any", route) and f["site"] in (None, site)
                      and f["instance"] in (None, instance)
                      and (f["pid"] is None or (pid is not None and int(f["pid"]) == pid))
                      and (f["dump_type"] is None or (dump_type is not None and str(f["dump_type"]).lower() == str(dump_type).lower())))
                if ok:
                    out.append(dict(f))
                    if f["count"] is not None:
                        f["count"] = int(f["count"]) - 1
                        if f["count"] <= 0:
                            continue
                keep.append(f)
            self.faults = keep
        return out


class DumpCtx:
    def __init__(self, conn):
        self.conn = conn
        self.cancel = threading.Event()

    def cut(self):
        self.cancel.set()
        try:
            self.conn.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class Abort(Exception):
    """Connection closed on purpose (fault or cut): just end the handler."""


# --------------------------------------------------------------------------- HTTP

class Pacer:
    """A token bucket for dump bodies: `rate` bytes/s on average (writes of `step` bytes,
    about 5 ms of data each); a client slower than the rate earns at most 50 ms of burst."""

    def __init__(self, rate):
        self.rate = float(rate)
        self.step = max(4096, min(1 << 20, int(self.rate / 200)))
        self.t0 = None
        self.sent = 0

    def consume(self, n, cancel=None):
        now = time.monotonic()
        if self.t0 is None:
            self.t0 = now
        self.sent += n
        wait = self.t0 + self.sent / self.rate - now
        if wait > 0:
            (cancel or threading.Event()).wait(wait)
        elif wait < -0.05:
            self.t0 += -wait - 0.05


def make_pacer(mbps):
    """A Pacer for a rate in MiB/s, or None for no cap (None/0)."""
    if not mbps or float(mbps) <= 0:
        return None
    return Pacer(float(mbps) * 1048576)


class ChunkedWriter:
    """File-like for zipfile: writes HTTP/1.1 chunks, counts bytes (no tell: zipfile then
    writes data descriptors, as for any unseekable stream)."""

    def __init__(self, handler, pacer=None):
        self.h = handler
        self.pacer = pacer

    def write(self, data):
        step = self.pacer.step if self.pacer is not None else len(data) or 1
        mv = memoryview(data)
        for off in range(0, len(mv), step):
            part = mv[off:off + step]
            n = len(part)
            self.h.raw_write(b"%x\r\n" % n)
            self.h.raw_write(part)
            self.h.raw_write(b"\r\n")
            if self.pacer is not None:
                self.pacer.consume(n)
        return len(data)

    def flush(self):
        pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    finish_hook = None
    server_version = "Microsoft-IIS/10.0"
    sys_version = ""

    set_cookie = None
    status_sent = None
    dump_rec = None

    def send_response(self, code, message=None):
        self.status_sent = code
        super().send_response(code, message)
        if self.set_cookie:
            self.send_header("Set-Cookie", self.set_cookie)

    def version_string(self):
        return self.server_version

    def setup(self):
        super().setup()
        try:
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass

    def log_message(self, fmt, *args):
        if self.server.verbose:
            sys.stderr.write("kudu-emulator: %s %s\n" % (self.address_string(), fmt % args))

    # ----------------------------------------------------------------- plumbing
    @property
    def st(self):
        return self.server.state

    def raw_write(self, data):
        try:
            self.wfile.write(data)
        except OSError as e:
            raise Abort() from e

    def read_body(self):
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n > 0 else b""

    def send_bytes(self, status, body, ctype="application/json; charset=utf-8", headers=(),
                   faults=(), reason=None):
        self.send_response(status, reason if reason is not None else REASONS.get(status))
        self.send_header("Content-Type", ctype)
        if (self.st.gzip_json and ctype.startswith("application/json")
                and "gzip" in (self.headers.get("Accept-Encoding") or "").lower()):
            body = gzip.compress(bytes(body))
            self.send_header("Content-Encoding", "gzip")
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.write_body([memoryview(body)], faults, total=len(body), before_last=self.finish_hook)

    def send_json(self, status, obj, headers=(), faults=()):
        self.send_bytes(status, json.dumps(obj, separators=(",", ":")).encode(), headers=headers,
                        faults=faults)

    def message(self, status, msg, headers=()):
        self.send_json(status, {"Message": msg}, headers=headers)

    def rst(self):
        """Abort the connection with a TCP RST (SO_LINGER 0 close)."""
        try:
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        self.close_now()

    def close_now(self):
        self.close_connection = True
        try:
            self.rfile.close()
        except OSError:
            pass
        try:
            self.connection.close()
        except OSError:
            pass
        raise Abort()

    def write_body(self, pieces, faults=(), cancel=None, count_dump=None, total=None, before_last=None,
                   chunked=False, pacer=None):
        """Write an iterable of buffers, applying stall/reset/short/trickle faults at after_bytes.
        before_last() runs just before the write that completes `total` bytes. chunked: each
        write is one HTTP/1.1 chunk (the caller writes the last-chunk). pacer: a Pacer capping
        the rate."""
        body_faults = sorted((f for f in faults if f["kind"] in ("stall", "reset", "short", "trickle")),
                             key=lambda f: int(f.get("after_bytes", 0)))
        sent = 0
        wfile = self.wfile
        trickle = None  # [seconds between bytes, bytes left to trickle or None]
        step = pacer.step if pacer is not None else 1 << 30
        for piece in pieces:
            while len(piece):
                if cancel is not None and cancel.is_set():
                    self.rst()
                limit = step
                if body_faults:
                    at = int(body_faults[0].get("after_bytes", 0))
                    if sent >= at:
                        f = body_faults.pop(0)
                        if f["kind"] == "trickle":
                            left = f.get("bytes")
                            trickle = [float(f.get("seconds", 1)), None if left is None else int(left)]
                        else:
                            self.apply_body_fault(f, cancel)
                        continue
                    limit = min(limit, at - sent)
                if trickle is not None:
                    if trickle[1] is not None and trickle[1] <= 0:
                        trickle = None
                        continue
                    limit = 1
                n = min(len(piece), limit)
                part = piece[:n] if n < len(piece) else piece
                if before_last is not None and sent + n >= total:
                    before_last()
                    before_last = None
                try:
                    if chunked:
                        wfile.write(b"%x\r\n" % n)
                        wfile.write(part)
                        wfile.write(b"\r\n")
                    else:
                        wfile.write(part)
                    if trickle is not None:
                        wfile.flush()
                except OSError:
                    self.close_connection = True
                    raise Abort()
                sent += n
                if count_dump is not None:
                    count_dump(n)
                piece = piece[n:]
                if trickle is not None:
                    if trickle[1] is not None:
                        trickle[1] -= 1
                    ev = cancel or threading.Event()
                    if ev.wait(trickle[0]):
                        self.rst()
                elif pacer is not None:
                    pacer.consume(n, cancel)
        # faults placed at or after the end of the body
        for f in body_faults:
            if f["kind"] in ("reset", "short") and int(f.get("after_bytes", 0)) <= sent:
                self.apply_body_fault(f, cancel)
        return sent

    def apply_body_fault(self, f, cancel):
        kind = f["kind"]
        if kind == "stall":
            secs = float(f.get("seconds", 5))
            ev = cancel or threading.Event()
            if ev.wait(secs) or f.get("close"):
                self.rst() if f.get("close") == "reset" else self.close_clean()
        elif kind == "reset":
            self.rst()
        elif kind == "short":
            self.close_clean()

    def close_clean(self):
        try:
            self.connection.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.close_now()

    # ----------------------------------------------------------------- dispatch
    def do_GET(self):
        self.dispatch("GET")

    def do_POST(self):
        self.dispatch("POST")

    def do_DELETE(self):
        self.dispatch("DELETE")

    def do_PUT(self):
        self.dispatch("PUT")

    def dispatch(self, method):
        self.set_cookie = None
        try:
            u = urlsplit(self.path)
            self.query = {k: v[-1] for k, v in parse_qs(u.query, keep_blank_values=True).items()}
            self.rawpath = u.path
            if u.path.startswith("/_emulator/") or u.path == "/_emulator":
                self.control(method, u.path)
            else:
                self.api(method, u.path)
        except Abort:
            self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    # ----------------------------------------------------------------- control
    def control(self, method, path):
        st = self.st
        body = self.read_body() if method in ("POST", "PUT", "DELETE") else b""
        q = self.query
        try:
            data = json.loads(body) if body.strip() else None
        except ValueError as e:
            return self.send_json(400, {"error": "bad JSON: %s" % e})
        what = path[len("/_emulator/"):].strip("/")
        try:
            if what == "health" and method == "GET":
                return self.send_json(200, {"ok": True, "sites": list(st.sites)})
            if what == "stats" and method == "GET":
                return self.send_json(200, st.stats())
            if what == "spec" and method == "GET":
                return self.send_json(200, st.spec())
            if what == "reset" and method == "POST":
                st.reset_stats()
                with st.lock:
                    st.faults = []
                return self.send_json(200, {"ok": True})
            if what == "faults":
                if method == "GET":
                    return self.send_json(200, st.stats()["faults"])
                if method == "POST":
                    items = data if isinstance(data, list) else [data]
                    for f in items:
                        st.add_fault(f)
                    return self.send_json(200, {"ok": True, "faults": len(st.faults)})
                if method == "DELETE":
                    with st.lock:
                        st.faults = []
                    return self.send_json(200, {"ok": True})
            if what == "site" and method in ("POST", "PUT"):
                name = q.get("name") or (data or {}).get("name")
                if not name:
                    return self.send_json(400, {"error": "name= required"})
                site = Site(name, data or {}, st.instances)
                with st.lock:
                    st.sites[name] = site
                return self.send_json(200, {"ok": True, "site": name, "processes": len(site.procs),
                                            "instances": [i.id for i in site.instances]})
            if what == "arm_token" and method in ("POST", "PUT"):
                tok = (data or {}).get("token") if isinstance(data, dict) else None
                if tok is None:
                    tok = q.get("token")
                with st.lock:
                    st.arm_token = tok
                return self.send_json(200, {"ok": True, "set": tok is not None})
            if what == "instances" and method == "GET":
                site = self.control_site()
                with st.lock:
                    return self.send_json(200, {
                        "site": site.name, "live": [i.id for i in site.live_instances()],
                        "removed": [i.id for i in site.instances if not i.live],
                        "machines": {i.id: i.machine for i in site.instances}})
            if what == "instance" and method in ("POST", "PUT", "DELETE"):
                site = self.control_site()
                d = data if isinstance(data, dict) else {}
                iid = q.get("id") or d.get("id")
                action = (q.get("action") or d.get("action")
                          or ("remove" if method == "DELETE" else "add")).lower()
                with st.lock:
                    inst = site.instance_by_id(iid) if iid else None
                    if action == "remove":
                        if inst is None:
                            return self.send_json(404, {"error": "no such instance"})
                        inst.live = False
                    elif action in ("add", "restore"):
                        if inst is None:
                            inst = site.add_instance(iid)
                        inst.live = True
                    else:
                        return self.send_json(400, {"error": "action= remove|add"})
                    live = [i.id for i in site.live_instances()]
                return self.send_json(200, {"ok": True, "id": inst.id, "live": live})
            if what == "kill" and method == "POST":
                site = self.control_site()
                pid = int(q.get("pid"))
                ok = False
                with st.lock:
                    for inst in self.control_instances(site):
                        p = inst.resolve(pid)
                        if p is not None:
                            ok = inst.kill(p["pid"]) or ok
                return self.send_json(200 if ok else 404, {"ok": ok})
            if what == "digest" and method == "GET":
                site = self.control_site()
                inst = self.control_instances(site)[0]
                if site.linux:
                    dt = linux_type(q.get("type"))
                    if dt is None:
                        raise ValueError("type= Mini|Full|WithHeap|Triage on a Linux site")
                else:
                    dt = int(q.get("type", q.get("dumpType", 1)))
                pid = int(q.get("pid"))
                p = inst.resolve(pid)
                if "size" in q:
                    size = int(q["size"])
                    pid = p["pid"] if p is not None else pid
                elif p is None:
                    return self.send_json(404, {"error": "no such process"})
                else:
                    size = site.dump_size(p, dt)
                    pid = p["pid"]
                sha, md5, size = expected_digests(site.name, pid, dt, size, body_seed(inst.seed, p))
                return self.send_json(200, {"sha256": sha, "md5": md5,
                                            "md5_b64": base64.b64encode(binascii.unhexlify(md5)).decode(),
                                            "size": size, "site": site.name, "pid": pid, "type": dt,
                                            "instance": inst.id})
        except LookupError as e:
            return self.send_json(404, {"error": str(e.args[0] if e.args else e)})
        except (ValueError, TypeError) as e:
            return self.send_json(400, {"error": str(e)})
        return self.send_json(404, {"error": "unknown control route %s %s" % (method, path)})

    def control_site(self):
        """The site= of a control request (default: the first site); LookupError if unknown."""
        name = self.query.get("site")
        site = self.st.sites.get(name) if name else self.st.first_site()
        if site is None:
            raise LookupError("no such site")
        return site

    def control_instances(self, site):
        """[the instance=ID of a control request] or, without one, all the site's instances
        (first one first); LookupError if unknown."""
        iid = self.query.get("instance")
        if not iid:
            return list(site.instances)
        inst = site.instance_by_id(iid)
        if inst is None:
            raise LookupError("no such instance")
        return [inst]

    # ----------------------------------------------------------------- API
    def parse_api_path(self, path):
        """-> (site, base_path, rest segments) or None."""
        segs = [unquote(s) for s in path.split("/")]
        segs = [s for s in segs[1:]]
        if segs and segs[-1] == "":
            segs = segs[:-1]
        st = self.st
        cands = []
        if segs and segs[0] in st.sites:
            cands.append((st.sites[segs[0]], 1))
        first = st.first_site()
        if first is not None:
            cands.append((first, 0))
        for site, skip in cands:
            for b in API_BASES:
                n = len(b)
                if tuple(s.lower() for s in segs[skip:skip + n]) == b:
                    base = "/" + "/".join(quote(s) for s in segs[:skip + n])
                    return site, base, segs[skip + n:]
        return None

    def authorized(self, site):
        st = self.st
        user = site.user if site and site.user is not None else st.user
        pw = site.password if site and site.password is not None else st.password
        token = site.token if site and site.token is not None else st.token
        h = self.headers.get("Authorization") or ""
        scheme, _, val = h.partition(" ")
        if scheme.lower() == "basic":
            try:
                u, _, p = base64.b64decode(val.strip(), validate=True).decode("utf-8").partition(":")
            except (ValueError, UnicodeDecodeError):
                return False
            return u == user and p == pw
        if scheme.lower() == "bearer" and token:
            return val.strip() == token
        return False

    def parse_misc(self, path):
        """(site, "settings"|"deployments"|"environment") for GET [/<site>]/api/<that>, or None:
        routes every Kudu (KuduLite Consumption too) answers, for clients probing it."""
        segs = [unquote(s) for s in path.split("/")][1:]
        if segs and segs[-1] == "":
            segs = segs[:-1]
        site = self.st.first_site()
        if segs and segs[0] in self.st.sites and len(segs) == 3:
            site, segs = self.st.sites[segs[0]], segs[1:]
        if len(segs) == 2 and segs[0].lower() == "api" and segs[1].lower() in MISC_ROUTES:
            return site, segs[1].lower()
        return None

    def do_misc(self, site, inst, what, faults):
        if what == "settings":
            body = {"WEBSITE_SITE_NAME": site.name, "SCM_DO_BUILD_DURING_DEPLOYMENT": "false"}
            if site.linux:
                body["WEBSITE_USE_DOTNET_MONITOR"] = "true" if site.dotnet_monitor else "false"
        elif what == "deployments":
            body = []
        else:
            body = {"version": "98.0.0.0" if site.linux else "20.0.0.0",
                    "siteLastModified": iso(BASE_TIME)}
        return self.send_json(200, body, faults=faults)

    def parse_instance_all(self, path):
        """The site of GET [/<site>]/instance/all, or None."""
        segs = [unquote(s) for s in path.split("/")][1:]
        if segs and segs[-1] == "":
            segs = segs[:-1]
        if len(segs) == 3 and segs[0] in self.st.sites and [s.lower() for s in segs[1:]] == ["instance", "all"]:
            return self.st.sites[segs[0]]
        if len(segs) == 2 and [s.lower() for s in segs] == ["instance", "all"]:
            return self.st.first_site()
        return None

    def api(self, method, path):
        st = self.st
        body = self.read_body() if method in ("POST", "PUT", "DELETE") else b""
        del body
        segs = path.split("/")
        if len(segs) > 1 and segs[1].lower() == "subscriptions":
            return self.arm(method, path)
        parsed = self.parse_api_path(path)
        inst_all = self.parse_instance_all(path) if not parsed and method == "GET" else None
        misc = self.parse_misc(path) if not parsed and not inst_all and method == "GET" else None
        site = parsed[0] if parsed else (inst_all or (misc[0] if misc else st.first_site()))
        # ARR, in front of Kudu (and of its auth), pins by the ARRAffinity cookie
        affinity = arr_affinity(self.headers.get("Cookie"))
        inst = None
        if site is not None:
            with st.lock:
                inst, moved = site.route(affinity)
            if inst is None:
                return self.send_bytes(503, b"The service is unavailable.", ctype="text/html",
                                       reason="Service Unavailable")
            if moved:
                self.set_cookie = "ARRAffinity=%s;Path=/;HttpOnly" % inst.id
        if not self.authorized(site):
            with st.lock:
                st.unauthorized += 1
            return self.send_bytes(401, b"401 - Unauthorized: Access is denied due to invalid credentials.",
                                   ctype="text/plain", headers=[("WWW-Authenticate", 'Basic realm="kudu"')])
        route, pid, dump_type, rest = "other", None, None, []
        if parsed:
            _, base, rest = parsed
            if not rest and method == "GET":
                route = "list"
            elif len(rest) == 1 and method == "GET":
                route = "details"
            elif len(rest) == 2 and rest[1].lower() == "dump" and method == "GET":
                route = "dump"
            if rest:
                try:
                    pid = int(rest[0])
                except ValueError:
                    pid = None
            if route == "dump" and site.linux:
                dump_type = linux_type(self.query.get("type"))
            elif route == "dump":
                try:
                    dump_type = int(self.query.get("dumpType", "0") or 0)
                except ValueError:
                    dump_type = None
        # resolve 0/-1 for fault matching and stats keys
        with st.lock:
            proc = inst.resolve(pid) if (parsed and pid is not None) else None
        real_pid = proc["pid"] if proc is not None else pid
        iid = inst.id if inst is not None else None
        rec = None
        with st.lock:
            st.requests[route] += 1
            ss = st.sstat(site.name) if site else st.sstat("?")
            ss[route] += 1
            ss["affinity"].append([route, affinity])
            del ss["affinity"][:-1000]
            ss["routing"].append([route, affinity, iid, bool(self.set_cookie)])
            del ss["routing"][:-1000]
            ist = st.istat(ss, inst) if inst is not None else {}
            if inst is not None:
                ist[route] += 1
            if inst_all is not None:
                ss["instance_all"] += 1
                ist["instance_all"] += 1
            st.current += 1
            st.peak = max(st.peak, st.current)
            if route == "dump":
                ss["dump_current"] += 1
                ss["dump_peak"] = max(ss["dump_peak"], ss["dump_current"])
                k = "%s/%s" % (real_pid, dump_type)
                ss["dumps_by_key"][k] = ss["dumps_by_key"].get(k, 0) + 1
                if inst is not None:
                    ist["dumps_by_key"][k] = ist["dumps_by_key"].get(k, 0) + 1
                rec = {"instance": iid, "pid": real_pid, "type": dump_type, "start": time.time(),
                       "end": None, "status": None, "bytes": 0, "complete": False}
                ss["dump_intervals"].append(rec)
                del ss["dump_intervals"][:-10000]
        done = []
        self.status_sent = None

        def finish():
            # the request stops counting as in flight just before its last bytes go out, so a
            # client that fires the next request at once never sees a spurious overlap
            with st.lock:
                if done:
                    return
                done.append(1)
                st.current -= 1
                if route == "dump":
                    ss["dump_current"] -= 1
                    rec["end"] = time.time()
                    rec["status"] = self.status_sent
        self.finish_hook = finish
        self.dump_rec = rec
        try:
            faults = st.take_faults("instance_all" if inst_all is not None else route,
                                    site.name if site else None, real_pid, dump_type, iid)
            if self.pre_faults(faults, route):
                return
            if inst_all is not None:
                with st.lock:
                    ids = [i.id for i in site.live_instances()]
                return self.send_json(200, ids, faults=faults)
            if not parsed:
                if misc is not None:
                    return self.do_misc(misc[0], inst, misc[1], faults)
                return self.message(404, "No HTTP resource was found that matches the request URI "
                                         "'http://%s%s'." % (self.host(), self.path))
            _, base, rest = parsed
            if site.consumption:
                # Linux Consumption: KuduLite has deployment routes only
                return self.send_bytes(404, b"", ctype="text/plain")
            if site.linux and not site.dotnet_monitor:
                return self.send_bytes(400, NOT_ON_LINUX.encode(), ctype="text/plain; charset=utf-8")
            if site.linux:
                return self.do_linux(method, site, inst, base, rest, proc, route, dump_type, faults)
            if route == "list":
                return self.do_list(site, inst, base, faults)
            if route == "details":
                return self.do_details(site, inst, base, rest, proc, faults)
            if route == "dump":
                return self.do_dump(site, inst, rest, proc, dump_type, faults)
            return self.do_other(method, site, inst, base, rest, proc, faults)
        finally:
            finish()
            self.finish_hook = None

    def pre_faults(self, faults, route=None):
        """Apply the faults that act before or instead of the answer; True when one answered."""
        for f in faults:
            if f["kind"] == "latency":
                time.sleep(float(f.get("seconds", 1)))
        for f in faults:
            if f["kind"] == "status":
                self.fault_status(f)
                return True
            if f["kind"] == "frontend_timeout":
                self.send_bytes(int(f.get("status", 500)), FRONTEND_TIMEOUT_HTML,
                                ctype="text/html", reason=f.get("reason"))
                return True
            if f["kind"] == "malformed":
                b = f.get("body") or '[{"id": 4100, "name": "w3wp", "machineName": '
                self.send_bytes(200, b.encode() if isinstance(b, str) else bytes(b), faults=faults)
                return True
            if f["kind"] == "redirect":
                loc = f.get("location") or (
                    "https://login.microsoftonline.com/common/oauth2/authorize?redirect_uri="
                    + quote("http://%s%s" % (self.host(), self.path), safe=""))
                body = ('<head><title>Document Moved</title></head><body><h1>Object Moved</h1>This '
                        'document may be found <a HREF="%s">here</a></body>' % loc).encode()
                self.send_bytes(int(f.get("status", 302)), body, ctype="text/html; charset=UTF-8",
                                headers=[("Location", loc)], reason=f.get("reason"))
                return True
            if f["kind"] == "gzip_bomb":
                body = gzip_bomb(int(f.get("inflated_bytes", 1 << 30)))
                self.send_response(200, "OK")
                self.send_header("Content-Type", "application/json; charset=utf-8")
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.write_body([memoryview(body)], faults, total=len(body), before_last=self.finish_hook)
                return True
            if f["kind"] == "oversized":
                if route == "list" or f.get("processes") is not None or route is None:
                    body = oversized_list(self.host(), f.get("bytes"), f.get("processes"))
                else:
                    pad = int(f.get("bytes") or 50 << 20)
                    body = json.dumps({"id": 4100, "name": "w3wp", "machineName": "RD0000000000",
                                       "command_line": "x" * pad}).encode()
                self.send_bytes(200, body, faults=faults)
                return True
        return False

    # ----------------------------------------------------------------- ARM
    def arm_error(self, status, code, message, headers=()):
        self.send_json(status, {"error": {"code": code, "message": message}}, headers=headers)

    def arm(self, method, path):
        """GET /subscriptions/S/resourceGroups/RG/providers/Microsoft.Web/sites/NAME[/slots/SLOT]
        /instances[/ID]?api-version=V: ARM's instance list (Bearer arm_token; nextLink pages)."""
        st = self.st
        segs = [unquote(s) for s in path.split("/")][1:]
        if segs and segs[-1] == "":
            segs = segs[:-1]
        with st.lock:
            st.arm["requests"] += 1
            token = st.arm_token
        h = self.headers.get("Authorization") or ""
        scheme, _, val = h.partition(" ")
        if scheme.lower() != "bearer" or token is None or val.strip() != token:
            with st.lock:
                st.arm["unauthorized"] += 1
            if scheme.lower() != "bearer":
                return self.arm_error(401, "AuthenticationFailed", "Authentication failed. The "
                                      "'Authorization' header is missing.",
                                      headers=[("WWW-Authenticate", 'Bearer authorization_uri='
                                                '"https://login.windows.net/", error="invalid_token"')])
            return self.arm_error(401, "InvalidAuthenticationToken", "The access token is invalid.",
                                  headers=[("WWW-Authenticate", 'Bearer authorization_uri='
                                            '"https://login.windows.net/", error="invalid_token", '
                                            'error_description="The access token is invalid."')])
        if not self.query.get("api-version"):
            with st.lock:
                st.arm["bad_request"] += 1
            return self.arm_error(400, "MissingApiVersionParameter", "The api-version query parameter "
                                  "(?api-version=) is required for all requests.")
        low = [s.lower() for s in segs]
        ok = (len(segs) >= 9 and low[0] == "subscriptions" and low[2] == "resourcegroups"
              and low[4] == "providers" and low[5] == "microsoft.web" and low[6] == "sites")
        name, slot, tail = (segs[7], None, segs[8:]) if ok else (None, None, [])
        if ok and len(tail) >= 3 and tail[0].lower() == "slots":
            slot, tail = tail[1], tail[2:]
        if not ok or not tail or tail[0].lower() != "instances" or len(tail) > 2 or method != "GET":
            with st.lock:
                st.arm["not_found"] += 1
            return self.arm_error(404, "NotFound", "No route registered for '%s'." % path)
        want = name if slot is None else "%s/slots/%s" % (name, slot)
        site = None
        for s in st.sites.values():
            if s.arm_name.lower() == want.lower():
                site = s
        if site is None and slot is not None:
            site = st.sites.get("%s-%s" % (name, slot))
        if site is None:
            with st.lock:
                st.arm["not_found"] += 1
            return self.arm_error(404, "ResourceNotFound", "The Resource 'Microsoft.Web/sites/%s' under "
                                  "resource group '%s' was not found." % (want, segs[3]))
        faults = st.take_faults("arm", site.name, None, None)
        if self.pre_faults(faults):
            return
        rtype = "Microsoft.Web/sites/slots/instances" if slot else "Microsoft.Web/sites/instances"
        prefix = "/".join([""] + segs[:8 if slot is None else 10] + ["instances"])
        with st.lock:
            live = [i.id for i in site.live_instances()]
            st.sstat(site.name)["arm_instances"] += 1

        def item(iid):
            return {"id": "%s/%s" % (prefix, iid), "name": iid, "type": rtype,
                    "properties": {"state": "READY", "siteInstanceName": iid}}
        if len(tail) == 2:
            if tail[1] not in live:
                return self.arm_error(404, "ResourceNotFound", "The Resource '%s/instances/%s' "
                                      "was not found." % (want, tail[1]))
            return self.send_json(200, item(tail[1]), faults=faults)
        try:
            skip = max(0, int(self.query.get("$skiptoken") or 0))
        except ValueError:
            return self.arm_error(400, "InvalidSkipToken", "The skip token is invalid.")
        size = max(1, int(site.spec.get("arm_page_size", st.arm_page_size)))
        page = {"value": [item(i) for i in live[skip:skip + size]]}
        if skip + size < len(live):
            page["nextLink"] = "http://%s%s?api-version=%s&%%24skiptoken=%d" % (
                self.host(), urlsplit(self.path).path, quote(self.query["api-version"]), skip + size)
        return self.send_json(200, page, faults=faults)

    def host(self):
        return self.headers.get("Host") or "%s:%d" % self.server.server_address[:2]

    def fault_status(self, f):
        status = int(f["status"])
        headers = []
        if f.get("retry_after") is not None:
            headers.append(("Retry-After", str(f["retry_after"])))
        if status == 401:
            headers.append(("WWW-Authenticate", 'Basic realm="kudu"'))
        if f.get("body") is not None:
            b = f["body"]
            return self.send_bytes(status, b.encode() if isinstance(b, str) else json.dumps(b).encode(),
                                   ctype=f.get("content_type", "text/plain; charset=utf-8"),
                                   headers=headers, reason=f.get("reason"))
        if f.get("reason") is not None:
            return self.send_bytes(status, json.dumps({"Message": f.get("message") or "An error has occurred."}
                                                      ).encode(), headers=headers, reason=f["reason"])
        return self.message(status, f.get("message") or REASONS.get(status, "Error"), headers)

    def not_running(self, rest):
        return self.message(404, "Process with an Id of %s is not running." % rest[0])

    def do_list(self, site, inst, base, faults):
        href = "http://" + self.host() + base
        with self.st.lock:
            procs = inst.sorted_procs()
        items = duplicate_ids([inst.list_item(p, href) for p in procs], faults, "id")
        return self.send_json(200, items, faults=faults)

    def do_details(self, site, inst, base, rest, proc, faults):
        if proc is None:
            return self.not_running(rest)
        root = "http://" + self.host() + base
        segs = self.rawpath.rstrip("/").rsplit("/", 1)
        href = "http://" + self.host() + segs[0] + "/" + (str(proc["pid"]) if segs[1] == "0" else segs[1])
        return self.send_json(200, inst.detail(proc, root, href), faults=faults)

    def do_other(self, method, site, inst, base, rest, proc, faults):
        if rest and proc is None and not (len(rest) == 1 and method == "GET"):
            if rest and rest[0].lstrip("-").isdigit():
                return self.not_running(rest)
        if len(rest) == 1 and method == "DELETE" or (len(rest) == 2 and rest[1].lower() == "stop"
                                                    and method == "POST"):
            if rest[0] == "0":
                self.rst()  # Kudu killed itself
            with self.st.lock:
                inst.kill(proc["pid"])
            self.send_response(204, "No Content")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        href = "http://%s%s/%s" % (self.host(), base, rest[0]) if rest else ""
        if len(rest) == 2 and rest[1].lower() == "threads" and method == "GET":
            return self.send_json(200, inst.threads(proc, href), faults=faults)
        if len(rest) == 2 and rest[1].lower() == "modules" and method == "GET":
            return self.send_json(200, inst.modules(proc, href), faults=faults)
        if len(rest) == 3 and rest[1].lower() == "threads" and method == "GET":
            try:
                tid = int(rest[2])
            except ValueError:
                return self.message(400, "The request is invalid.")
            if tid not in [t["id"] for t in inst.threads(proc, href)]:
                return self.message(404, "Thread with an Id of %d is not running." % tid)
            return self.send_json(200, inst.thread_detail(proc, href, tid), faults=faults)
        if len(rest) == 3 and rest[1].lower() == "modules" and method == "GET":
            m = inst.module_detail(proc, href, rest[2])
            if m is None:
                return self.message(404, "Module with a base address of %s was not found." % rest[2])
            return self.send_json(200, m, faults=faults)
        if len(rest) == 3 and rest[1].lower() == "environments" and method == "GET":
            env = inst.detail(proc, "", "")["environment_variables"]
            flt = rest[2].lower()
            if flt != "all":
                env = {k: v for k, v in env.items() if flt in k.lower()}
            return self.send_json(200, env, faults=faults)
        if rest and not rest[0].lstrip("-").isdigit():
            return self.message(400, "The request is invalid.")
        return self.message(404, "No HTTP resource was found that matches the request URI "
                                 "'http://%s%s'." % (self.host(), self.path))

    def do_dump(self, site, inst, rest, proc, dump_type, faults):
        st = self.st
        if site.linux:
            return self.do_linux_dump(site, inst, proc, dump_type, faults)
        fmt = self.query.get("format", "raw")
        if fmt.lower() not in ("raw", "zip"):
            if fmt.lower() in ("diagsession",):
                return self.message(400, "Dump format (%s) is not supported." % fmt)
            return self.message(400, "Requested value '%s' was not found." % fmt)
        if dump_type is None:
            return self.message(400, "The request is invalid.")
        if dump_type == 2 and str(site.sku).lower() == "free":
            return self.message(500, "Site sku (Free) does not support full minidump.")
        if proc is None:
            return self.not_running(rest)
        if proc.get("dump_error"):
            return self.message(500, str(proc["dump_error"]))
        ctx = DumpCtx(self.connection)
        with st.lock:
            prev = st.active_dumps.get(site.name)
            if prev is not None:
                st.active_dumps.pop(site.name, None)
                st.conflicts += 1
        if prev is not None:
            with st.lock:
                st.sstat(site.name)["dump_conflicts"] += 1
            prev.cut()
            return self.message(500, CONFLICT_MSG)
        with st.lock:
            st.active_dumps[site.name] = ctx
        try:
            delay = site.dump_delay + sum(float(f.get("seconds", 1)) for f in faults
                                          if f["kind"] == "slow_dump")
            if self.wait_generation(ctx, delay, site.release_on_disconnect):
                self.rst()
            size = site.dump_size(proc, dump_type)
            ts = datetime.now(timezone.utc).strftime("%m-%d-%H-%M-%S")
            zipped = fmt.lower() == "zip"
            fname = "%s-%s-%s.%s" % (proc["name"], inst.id[:6], ts, "zip" if zipped else "dmp")
            self.send_response(200, "OK")
            self.send_header("Content-Type", "application/zip" if zipped else "application/octet-stream")
            if zipped:
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Content-Length", str(size))
            self.send_header("Content-Disposition", "attachment; filename=" + header_filename(fname))
            self.end_headers()
            rec = self.dump_rec
            count = self.dump_counter(site, inst)
            pacer = self.dump_pacer(site, faults)
            pieces = iter_dump(site.name, proc["pid"], dump_type, size,
                               instance=body_seed(inst.seed, proc))

            def release():
                # Kudu's file is done with once the last bytes go out: free the site before the
                # client can see the end of the body, so a follow-up dump never races with it.
                with st.lock:
                    if st.active_dumps.get(site.name) is ctx:
                        del st.active_dumps[site.name]
                if self.finish_hook:
                    self.finish_hook()
            if size == 0:
                release()
            if zipped:
                self.write_zip(pieces, ctx, release, pacer)
            else:
                self.write_body(pieces, faults, cancel=ctx.cancel, count_dump=count, total=size,
                                before_last=release, pacer=pacer)
            if rec is not None:
                rec["complete"] = True
        finally:
            with st.lock:
                if st.active_dumps.get(site.name) is ctx:
                    del st.active_dumps[site.name]

    # ----------------------------------------------------------------- Linux (KuduLite)
    def problem(self, status, title, detail, headers=()):
        """An ASP.NET Core ProblemDetails body, as dotnet-monitor answers errors."""
        body = {"type": "https://tools.ietf.org/html/rfc7231#section-6.5.1", "title": title,
                "status": status, "detail": detail}
        self.send_bytes(status, json.dumps(body).encode(), ctype="application/problem+json; charset=utf-8",
                        headers=headers)

    def do_linux(self, method, site, inst, base, rest, proc, route, dump_type, faults):
        """KuduLite with dotnet-monitor: list/details/dump proxied to dotnet-monitor (its own
        JSON and errors); threads, modules and kill are 400 JSON "Not supported on Linux";
        environments is Kudu's own environment whatever the pid."""
        if route == "list":
            with self.st.lock:
                procs = sorted(inst.procs.values(), key=lambda p: p["pid"])
            return self.send_json(200, duplicate_ids([inst.linux_list_item(p) for p in procs],
                                                     faults, "pid"), faults=faults)
        if route == "details":
            if proc is None:
                return self.problem(400, "ArgumentException", "Unable to discover a target process.")
            return self.send_json(200, inst.linux_detail(proc), faults=faults)
        if route == "dump":
            return self.do_linux_dump(site, inst, proc, dump_type, faults)
        sub = rest[1].lower() if len(rest) >= 2 else None
        if (len(rest) == 1 and method == "DELETE") or (sub in ("threads", "modules") and method == "GET"):
            return self.send_json(400, NOT_ON_LINUX, faults=faults)
        if len(rest) == 3 and sub == "environments" and method == "GET":
            env = inst.kudu_environment()
            flt = rest[2].lower()
            if flt != "all":
                env = {k: v for k, v in env.items() if flt in k.lower()}
            return self.send_json(200, env, faults=faults)
        return self.send_bytes(404, b"", ctype="text/plain")

    def do_linux_dump(self, site, inst, proc, dump_type, faults):
        """dotnet-monitor's GET /dump/{pid}?type=: one dump at a time per instance (its own
        dotnet-monitor; 429 for another), written to its temp file, then streamed chunked."""
        st = self.st
        if dump_type is None:
            return self.problem(400, "One or more validation errors occurred.",
                                "The value '%s' is not valid for type." % self.query.get("type"))
        if proc is None:
            return self.problem(400, "ArgumentException", "Unable to discover a target process.")
        if proc.get("dump_error"):
            return self.problem(400, "InvalidOperationException", str(proc["dump_error"]))
        key = (site.name, inst.id)
        with st.lock:
            busy = key in st.linux_dumps
            if busy:
                st.sstat(site.name)["dump_busy"] += 1
            else:
                st.linux_dumps.add(key)
        if busy:
            return self.problem(429, "Too Many Requests",
                                "Too many requests have been made for this operation; only one "
                                "dump may be collected at a time.")
        ctx = DumpCtx(self.connection)
        try:
            delay = site.dump_delay + sum(float(f.get("seconds", 1)) for f in faults
                                          if f["kind"] == "slow_dump")
            if self.wait_generation(ctx, delay, site.release_on_disconnect):
                self.rst()
            size = site.dump_size(proc, dump_type)
            fname = "core_%s_%d" % (datetime.now(timezone.utc).strftime("%Y%m%d_%H%M%S"), proc["pid"])
            self.send_response(200, "OK")
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Content-Disposition", 'attachment; filename="%s"' % fname)
            self.end_headers()
            count = self.dump_counter(site, inst)

            def release():
                with st.lock:
                    st.linux_dumps.discard(key)
                if self.finish_hook:
                    self.finish_hook()
            if size == 0:
                release()
            pieces = iter_dump(site.name, proc["pid"], dump_type, size,
                               instance=body_seed(inst.seed, proc))
            self.write_body(pieces, faults, cancel=ctx.cancel, count_dump=count, total=size,
                            before_last=release, chunked=True, pacer=self.dump_pacer(site, faults))
            self.raw_write(b"0\r\n\r\n")
            if self.dump_rec is not None:
                self.dump_rec["complete"] = True
        finally:
            with st.lock:
                st.linux_dumps.discard(key)

    def dump_counter(self, site, inst):
        """count(n): add n dump body bytes to the counters of the site, instance and request."""
        st = self.st
        ss = st.site_stats.get(site.name)
        ist = ss["instances"].get(inst.id) if ss is not None else None
        rec = self.dump_rec

        def count(n):
            st.dump_bytes += n  # approximate under races; informational only
            if ss is not None:
                ss["dump_bytes"] += n
            if ist is not None:
                ist["dump_bytes"] += n
            if rec is not None:
                rec["bytes"] += n
        return count

    def dump_pacer(self, site, faults):
        """The rate cap of this dump body: a "rate" fault's, else the site's, else the server's."""
        mbps = None
        for f in faults:
            if f["kind"] == "rate":
                mbps = f.get("mbps")
                if f.get("bytes_per_second") is not None:
                    return Pacer(float(f["bytes_per_second"]))
        if mbps is None:
            mbps = site.rate_mbps if site.rate_mbps is not None else self.st.rate_mbps
        return make_pacer(mbps)

    def wait_generation(self, ctx, delay, release_on_disconnect):
        """The "writing minidump.dmp" phase. True when it must end without a response: cut by
        a conflicting dump, or (release_on_disconnect) the client went away. By default a
        client that gives up does not stop the generation, as in Kudu (MiniDumpWriteDump is not
        cancellable), so the site stays busy until the delay is over."""
        if not release_on_disconnect:
            return ctx.cancel.wait(delay)
        end = time.monotonic() + delay
        while True:
            left = end - time.monotonic()
            if left <= 0:
                return ctx.cancel.is_set()
            if ctx.cancel.wait(min(left, 0.05)):
                return True
            try:
                r, _, _ = select.select([self.connection], [], [], 0)
                if r and self.connection.recv(1, socket.MSG_PEEK) == b"":
                    return True
            except OSError:
                return True

    def write_zip(self, pieces, ctx, release, pacer=None):
        w = ChunkedWriter(self, pacer)
        with zipfile.ZipFile(w, "w", zipfile.ZIP_STORED) as zf:
            with zf.open("minidump.dmp", "w", force_zip64=True) as out:
                for p in pieces:
                    if ctx.cancel.is_set():
                        self.rst()
                    out.write(p)
            release()
        self.raw_write(b"0\r\n\r\n")


def duplicate_ids(items, faults, key):
    """The "duplicate_ids" fault: each item whose id is in the fault's "pids" (default: all)
    is listed twice in a row; with "rename": true the copy's name gets "-dup" appended."""
    for f in faults:
        if f["kind"] != "duplicate_ids":
            continue
        pids = f.get("pids")
        out = []
        for it in items:
            out.append(it)
            if pids is None or it[key] in pids:
                d = dict(it)
                if f.get("rename"):
                    d["name"] = d["name"] + "-dup"
                out.append(d)
        items = out
    return items


def arr_affinity(cookie_header):
    """The ARRAffinity value of a Cookie header, or None."""
    for part in (cookie_header or "").split(";"):
        k, _, v = part.strip().partition("=")
        if k == "ARRAffinity":
            return v
    return None


def header_filename(name):
    """Content-Disposition filename value: bare token when safe (Kudu's usual case), else a quoted
    string; control characters (never in a Windows process name) become '_'; non-ASCII is
    MIME-encoded like .NET's ContentDispositionHeaderValue."""
    name = "".join("_" if ord(c) < 32 or ord(c) == 127 else c for c in name)
    try:
        name.encode("ascii")
    except UnicodeEncodeError:
        return '"=?utf-8?B?%s?="' % base64.b64encode(name.encode()).decode()
    tspecials = set('()<>@,;:\\"/[]?={} \t')
    if any(c in tspecials for c in name):
        return '"%s"' % name.replace("\\", "\\\\").replace('"', '\\"')
    return name


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256

    def handle_error(self, request, client_address):
        """Client hang-ups are normal; anything else is an emulator bug: always show it."""
        exc = sys.exc_info()[1]
        if self.verbose or not isinstance(exc, (OSError, Abort)):
            super().handle_error(request, client_address)


def load_spec(arg):
    if not arg:
        return {}
    s = arg.strip()
    if s.startswith("{"):
        return json.loads(s)
    with open(arg) as f:
        return json.load(f)


def make_server(spec=None, host="127.0.0.1", port=0, verbose=False):
    srv = Server((host, port), Handler)
    srv.state = State(spec)
    srv.verbose = verbose
    return srv


def main(argv=None):
    ap = argparse.ArgumentParser(description="Kudu process API emulator")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--spec", help="spec file or inline JSON")
    ap.add_argument("--user")
    ap.add_argument("--password")
    ap.add_argument("--token")
    ap.add_argument("--instances", type=int, help="instances per site (a site's own key wins)")
    ap.add_argument("--rate-mbps", dest="rate_mbps", type=float,
                    help="cap every dump body at this many MiB/s (a site's own key wins)")
    ap.add_argument("--verbose", action="store_true")
    a = ap.parse_args(argv)
    spec = load_spec(a.spec)
    for k in ("user", "password", "token", "instances", "rate_mbps"):
        if getattr(a, k) is not None:
            spec[k] = getattr(a, k)
    srv = make_server(spec, a.host, a.port, a.verbose)

    def stop(signum, frame):
        threading.Thread(target=srv.shutdown, daemon=True).start()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    host, port = srv.server_address[:2]
    sys.stdout.write("kudu-emulator listening on http://%s:%d\n" % (host, port))
    sys.stdout.flush()
    try:
        srv.serve_forever(poll_interval=0.2)
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
