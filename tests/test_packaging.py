"""Packaging: man pages, bash completion, systemd units and the Debian package.

- Each man page renders without warnings, and names every option of its command's --help
  (kudufs.conf(5): every key kudu/config.c accepts), so pages and programs cannot drift.
- The completion is loaded the way bash-completion loads it (by command name from the
  installed tree) and called with COMP_WORDS/COMP_CWORD as bash sets them.
- The units pass `systemd-analyze verify`; the privileges they leave let an unprivileged
  user mount through fusermount3, and NoNewPrivileges would not (run, not assumed).
- `make deb` is built once per session (about 15 s idle) and installed into a throw-away
  root (an overlay of / in a private mount namespace): installed binaries, man, completion
  and units work, `kudufs --check` runs against the emulator, and `dpkg --purge` leaves no file.
"""
import os
import json
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import ROOT, run, wait_for

PYTHON = "/usr/bin/python3"
MAN_PAGES = ["kudufs.1", "kudufs.conf.5", "kudufs-to-blob.1", "kudufs-import-publish-settings.1"]
BASH_COMPLETION = "/usr/share/bash-completion/bash_completion"
# systemd.exec(5), NoNewPrivileges=: these imply it for a User= service, and with it the
# setuid fusermount3 cannot mount.
IMPLY_NNP = ["DynamicUser", "LockPersonality", "MemoryDenyWriteExecute", "PrivateDevices",
             "ProtectClock", "ProtectHostname", "ProtectKernelLogs", "ProtectKernelModules",
             "ProtectKernelTunables", "RestrictAddressFamilies", "RestrictNamespaces",
             "RestrictRealtime", "RestrictSUIDSGID", "SystemCallArchitectures",
             "SystemCallFilter", "SystemCallLog", "PrivateUsers"]


def need_root():
    if os.geteuid() != 0:
        pytest.fail("this test needs root (mount namespaces, dpkg, setpriv); make test runs as root here")


# ------------------------------------------------------------------ helpers

@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`make install PREFIX=<tmp>/usr` (no DESTDIR, so the units' paths exist): the tree."""
    base = tmp_path_factory.mktemp("install")
    prefix = base / "usr"
    r = run(["make", "-s", "-C", ROOT, "install", "PREFIX=%s" % prefix, "BUILD=%s" % (base / "build")],
            timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    yield prefix
    shutil.rmtree(base, ignore_errors=True)


def render(page_path):
    """The page as text, no hyphenation or justification (so options stay whole)."""
    env = dict(os.environ, LANG="C", LC_ALL="C", MANWIDTH="200")
    r = run(["man", "--warnings=w", "--nh", "--nj", "-l", "-P", "cat", str(page_path)], env=env)
    assert r.returncode == 0, r.stderr
    return r.stdout, r.stderr


def help_options(text):
    """The -x / --long options a --help text defines: those of its usage lines (up to the
    first blank line) and those that start an indented option line ("  -h, --help  ...").
    Options only mentioned in prose (another tool's, say) do not count."""
    opt = r"(?<![\w\-/$])(--?[A-Za-z][\w-]*)"
    lines = text.splitlines()
    usage = lines[:lines.index("")] if "" in lines else lines
    found = set(re.findall(opt, "\n".join(usage)))
    for line in lines:
        m = re.match(r"^\s+((?:--?[A-Za-z][\w-]*(?:[ =][A-Z][\w\[\]=|.-]*)?(?:,\s*|\s*\|\s*)?)+)", line)
        if m:
            found |= set(re.findall(opt, m.group(1)))
    return found


def help_okeys(text):
    """kudufs's -o keys named in its --help: `-o KEY`, `key=VALUE`, and the bare words of
    the -o block (items are separated by two spaces or a comma)."""
    keys = set(re.findall(r"-o ([a-z][a-z0-9_]*)", text))
    keys |= set(re.findall(r"(?<![\w\-])([a-z][a-z0-9_]*)=", text))
    block = False
    for line in text.splitlines():
        if re.match(r"\s*-o\s", line):
            block = True
        elif not line.strip() or not line[:1].isspace():
            block = False
        if not block:
            continue
        for item in re.split(r"\s{2,}|,\s*", line.strip()):
            item = re.sub(r"^-o\s+", "", item)
            m = re.match(r"^([a-z][a-z0-9_]*)(=[A-Z]+)?(\s*\(.*)?$", item)
            if m:
                keys.add(m.group(1))
    return keys


def main_okeys():
    """The -o keys fs/main.c's option table knows (kudufs's own, before FUSE's)."""
    with open(os.path.join(ROOT, "fs", "main.c")) as f:
        src = f.read()
    return set(re.findall(r'FUSE_OPT_KEY\("([a-z][a-z0-9_]*)=?", KEY_', src))


def config_keys():
    """The keys kudu/config.c accepts in [kudufs] and [app NAME]."""
    with open(os.path.join(ROOT, "kudu", "config.c")) as f:
        src = f.read()
    keys = set(re.findall(r'strcmp\((?:key|name), "([a-z_]+)"\)', src))
    keys |= set(re.findall(r'\{ "([a-z_]+)", offsetof\(', src))
    return keys


def test_make_install_then_uninstall_leaves_no_file(tmp_path):
    dest = tmp_path / "dest"
    args = ["make", "-s", "-C", ROOT, "DESTDIR=%s" % dest, "PREFIX=/usr/local", "BUILD=%s" % (tmp_path / "b")]
    r = run(args + ["install"], timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if not p.is_dir() or p.is_symlink())
    for f in ("usr/local/bin/kudufs", "usr/local/share/man/man5/kudufs.conf.5",
              "usr/local/share/bash-completion/completions/kudufs-to-blob",
              "usr/local/lib/systemd/system/kudufs@.service"):
        assert f in files, files
    unit = (dest / "usr/local/lib/systemd/system/kudufs@.service").read_text()
    assert "ExecStart=/usr/local/bin/kudufs " in unit, "install did not rewrite the unit's paths"
    r = run(args + ["uninstall"])
    assert r.returncode == 0, r.stdout + r.stderr
    left = [str(p) for p in dest.rglob("*") if not p.is_dir() or p.is_symlink()]
    assert not left, left


# ------------------------------------------------------------------ man pages

@pytest.fixture(scope="module")
def man_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("man")
    r = run(["make", "-s", "-C", ROOT, "man", "BUILD=%s" % out])
    assert r.returncode == 0, r.stdout + r.stderr
    yield out / "man"
    shutil.rmtree(out, ignore_errors=True)


@pytest.mark.parametrize("page", MAN_PAGES)
def test_man_page_renders_without_warnings(man_dir, page):
    path = man_dir / page
    assert path.is_file(), "make man did not build %s" % page
    r = run(["groff", "-man", "-ww", "-z", str(path)])
    assert r.returncode == 0 and r.stderr == "", r.stderr
    text, err = render(path)
    assert err == "", err
    name = page.rsplit(".", 1)[0]
    assert re.search(r"^NAME\n\s+%s - " % re.escape(name), text, re.M), text[:300]
    for section in ("SYNOPSIS", "DESCRIPTION", "SEE ALSO"):
        assert re.search(r"^%s$" % section, text, re.M), "%s: no %s section" % (page, section)


def test_help_options_parser_finds_what_it_should():
    """The option extractors the drift tests rely on, on a known text."""
    sample = ("usage: x [-f] [--app NAME[=URL]] MOUNT\n"
              "\n"
              "  -h, --help             this; see also --not-this in prose\n"
              "  --mount DIR            (azcopy --from-to PipeBlob)\n"
              "  -o config=FILE  cache_max=SIZE (20G)  insecure  ca_file=FILE,\n"
              "     meta_timeout=SECS (60, each list/details request)\n"
              "     plus the usual FUSE mount options\n"
              "    -o clone_fd            use separate fuse device fd for each thread\n"
              "MOUNT/<app>/<name>-<pid>/ KUDUFS_USER/KUDUFS_PASSWORD\n")
    assert help_options(sample) == {"-f", "--app", "-o", "-h", "--help", "--mount"}
    assert help_okeys(sample) == {"config", "cache_max", "insecure", "ca_file", "meta_timeout",
                                  "clone_fd"}


def test_man_kudufs_names_every_help_option(man_dir, kudufs_bin):
    r = run([kudufs_bin, "--help"])
    assert r.returncode == 0, r.stderr
    text, _ = render(man_dir / "kudufs.1")
    opts, keys = help_options(r.stdout), help_okeys(r.stdout) | main_okeys()
    assert {"--app", "--config", "--check", "-o"} <= opts and {"cache_dir", "insecure"} <= keys
    missing = sorted(o for o in opts if not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(o), text))
    missing += sorted(k for k in keys if not re.search(r"(?<![\w-])%s\b" % re.escape(k), text))
    assert not missing, "kudufs --help names %s, kudufs(1) does not" % missing


def test_man_kudufs_conf_names_every_config_key(man_dir):
    keys = config_keys()
    assert {"cache_dir", "url", "user", "password_file", "token_command"} <= keys, keys
    text, _ = render(man_dir / "kudufs.conf.5")
    missing = sorted(k for k in keys if not re.search(r"(?<![\w-])%s\b" % re.escape(k), text))
    assert not missing, "kudu/config.c accepts %s, kudufs.conf(5) does not name them" % missing
    for word in ("0600", "KUDUFS_USER", "netrc", "[kudufs]", "[app NAME]"):
        assert word in text, word


@pytest.mark.parametrize("script,page", [("kudufs-to-blob", "kudufs-to-blob.1"),
                                         ("kudufs-import-publish-settings",
                                          "kudufs-import-publish-settings.1")])
def test_man_script_names_every_help_option(man_dir, script, page):
    r = run([os.path.join(ROOT, "scripts", script), "--help"])
    assert r.returncode == 0, r.stderr
    opts = help_options(r.stdout)
    assert "--config" in opts, r.stdout
    text, _ = render(man_dir / page)
    missing = sorted(o for o in opts if not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(o), text))
    assert not missing, "%s --help names %s, %s does not" % (script, missing, page)


# ------------------------------------------------------------------ bash completion

def comp_words(line):
    """COMP_WORDS as bash splits a line (blanks, and '=' from COMP_WORDBREAKS as its own word)."""
    words = re.findall(r"=|[^\s=]+", line)
    if not line or line[-1].isspace():
        words.append("")
    return words


def complete(prefix, line, env=None, setup=""):
    """Load the completion of the line's command as bash-completion would (from
    PREFIX/share/bash-completion/completions) and return COMPREPLY for the line's end."""
    words = comp_words(line)
    script = r'''
source %(bc)s
compopt() { :; }          # only valid inside a real completion; its effect is not tested
COMP_WORDBREAKS=$' \t\n"\'><=;|&(:'    # readline's default; unset in a non-interactive bash
%(setup)s
__load_completion "$1" || { echo "NO COMPLETION FOR $1" >&2; exit 3; }
spec=$(complete -p "$1") || exit 4
func=$(sed -n 's/.*-F \([^ ]*\) .*/\1/p' <<<"$spec")
COMP_WORDS=("$@"); COMP_CWORD=$(( $# - 1 ))
COMP_LINE=$LINE; COMP_POINT=${#COMP_LINE}
COMPREPLY=()
"$func" "${COMP_WORDS[0]}" "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"
printf '%%s\n' "${COMPREPLY[@]}"
''' % {"bc": BASH_COMPLETION, "setup": setup}
    e = dict(os.environ, LINE=line, XDG_DATA_DIRS=str(prefix / "share"),
             BASH_COMPLETION_USER_DIR="/nonexistent")
    e.update(env or {})
    r = run(["bash", "-c", script, "bash"] + words, env=e)
    assert r.returncode == 0, "completing %r: %s" % (line, r.stderr)
    return [w for w in r.stdout.split("\n") if w]


def test_completion_options_and_o_keys_follow_help(installed, kudufs_bin):
    help_text = run([kudufs_bin, "--help"]).stdout
    offered = set(complete(installed, "kudufs -"))
    assert help_options(help_text) <= offered, help_options(help_text) - offered
    assert complete(installed, "kudufs --ch") == ["--check"]
    keys = {k.rstrip("=") for k in complete(installed, "kudufs -o ")}
    want = help_okeys(help_text) | main_okeys()
    assert "cache_dir" in want and want <= keys, want - keys
    assert complete(installed, "kudufs -o cache_d") == ["cache_dir="]
    # readline replaces the text after the last '=': the candidate is what follows it
    assert complete(installed, "kudufs -o dump_ttl=5,list_") == ["5,list_ttl="]


def test_completion_o_paths_and_mountpoint(installed, tmp_path):
    (tmp_path / "spool-here").mkdir()
    (tmp_path / "spool-file").write_text("")
    got = complete(installed, "kudufs -o cache_dir=%s/spool-" % tmp_path)
    assert got == ["%s/spool-here" % tmp_path], got
    got = complete(installed, "kudufs --app x %s/spool-" % tmp_path)
    assert got == ["%s/spool-here" % tmp_path], got


def test_completion_app_names_from_the_config(installed, tmp_path):
    cfg = tmp_path / "kudu.conf"
    cfg.write_text("[kudufs]\ncache_max = 1G\n\n[app myfunc]\nuser = $myfunc\n\n[app  shop-staging ]\n"
                   "url = http://127.0.0.1:1/x\n[app shop]\n")
    want = ["shop-staging", "shop"]
    assert complete(installed, "kudufs --config %s --app sh" % cfg) == want
    assert complete(installed, "kudufs --config=%s --app=sh" % cfg) == want
    assert complete(installed, "kudufs -o ro,config=%s --app sh" % cfg) == want
    # the default config file, and kudufs-to-blob sharing the same code
    home = tmp_path / "home"
    (home / ".config" / "kudufs").mkdir(parents=True)
    shutil.copy(cfg, home / ".config" / "kudufs" / "config")
    env = {"HOME": str(home), "XDG_CONFIG_HOME": ""}
    assert complete(installed, "kudufs --app ", env=env) == ["myfunc", "shop-staging", "shop"]
    assert complete(installed, "kudufs-to-blob --app m", env=env) == ["myfunc"]


@pytest.mark.parametrize("script", ["kudufs-to-blob", "kudufs-import-publish-settings"])
def test_completion_of_the_scripts_follows_help(installed, script):
    help_text = run([os.path.join(ROOT, "scripts", script), "--help"]).stdout
    offered = set(complete(installed, "%s -" % script))
    assert help_options(help_text) <= offered, help_options(help_text) - offered


def test_completion_to_blob_values(installed):
    assert complete(installed, "kudufs-to-blob --type ") == ["mini", "full", "withheap", "triage"]
    assert complete(installed, "kudufs-to-blob --type=f") == ["full"]


def test_completion_fusermount3_offers_kudufs_mounts(installed, emulator, mount):
    m = mount({"demo": emulator.url("demo")})
    got = complete(installed, "fusermount3 -u ")
    assert m.path in got, got
    got = complete(installed, "fusermount3 -u %s" % m.path[:-2])
    assert got == [m.path], got


def test_completion_is_shellcheck_clean():
    files = [os.path.join(ROOT, "scripts", "completion", f) for f in ("kudufs.bash", "fusermount3.bash")]
    r = run(["shellcheck", "-s", "bash"] + files + [os.path.join(ROOT, "scripts", "demo")])
    assert r.returncode == 0, r.stdout + r.stderr


# ------------------------------------------------------------------ systemd units

UNITS = ["kudufs-webhook.service", "kudufs@.service"]


def unit_settings(name):
    """Key -> list of values of a unit file (continuation lines joined)."""
    out = {}
    with open(os.path.join(ROOT, "scripts", "systemd", name)) as f:
        text = f.read().replace("\\\n", " ")
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[" or "=" not in line:
            continue
        k, v = line.split("=", 1)
        out.setdefault(k.strip(), []).append(v.strip())
    return out


def test_units_verify(installed):
    unitdir = installed / "lib" / "systemd" / "system"
    for u in UNITS:
        text = (unitdir / u).read_text()
        assert "%s/bin/kudufs" % installed in text or "kudufs-webhook" in u, "install did not set the paths"
    r = run(["systemd-analyze", "verify", "--man=no"] + [str(unitdir / u) for u in UNITS])
    assert r.returncode == 0 and r.stderr.strip() == "", r.stdout + r.stderr


@pytest.mark.parametrize("unit", UNITS)
def test_unit_sandbox_lets_fusermount3_work(unit):
    s = unit_settings(unit)
    assert s.get("User") == ["kudufs"], "runs as the unprivileged kudufs user"
    assert s.get("NoNewPrivileges") == ["no"], "NoNewPrivileges must be off, and say so"
    implied = sorted(k for k in IMPLY_NNP if k in s and s[k] != ["no"])
    assert not implied, "%s imply NoNewPrivileges: fusermount3 could not mount" % implied
    # mount/umount; and fusermount3 unmounts as root from a private (0700) parent
    assert sorted(" ".join(s.get("CapabilityBoundingSet", [])).split()) == ["CAP_DAC_READ_SEARCH", "CAP_SYS_ADMIN"]
    assert "/dev/fuse rw" in s.get("DeviceAllow", [])
    if unit == "kudufs-webhook.service":
        for k in ("ProtectSystem", "ProtectHome", "PrivateTmp"):
            assert k in s, k
        assert s["ProtectSystem"] == ["strict"]
        assert any(v.startswith("/etc/kudufs/") for v in s.get("EnvironmentFile", []))
    else:
        # its mount must be seen by everyone: no private mount namespace
        for k in ("ProtectSystem", "ProtectHome", "PrivateTmp", "ReadOnlyPaths", "TemporaryFileSystem"):
            assert k not in s, k


def test_unit_privileges_mount_and_nnp_would_not(kudufs_bin, emulator, request):
    """Run kudufs as an unprivileged user with the units' capability bounding set: it mounts
    (through the setuid fusermount3) on a mount point inside a private (0700) directory, as
    kudufs-to-blob makes them, and fusermount3 -u unmounts it again; with no_new_privs added
    it cannot mount. In a private mount
    namespace, with a private /dev/fuse node of mode 0666 as Debian's udev makes it (this
    container's is 0600)."""
    need_root()
    bset = unit_settings("kudufs-webhook.service")["CapabilityBoundingSet"][0]
    assert unit_settings("kudufs@.service")["CapabilityBoundingSet"][0] == bset
    caps = ",".join("+" + c.lower().replace("cap_", "") for c in bset.split())
    uid = 65534
    # pytest's own temp dirs are 0700: a directory the unprivileged user can reach
    work = Path(tempfile.mkdtemp(prefix="kudufs-nnp-"))
    request.addfinalizer(lambda: shutil.rmtree(work, ignore_errors=True))
    os.chmod(work, 0o755)
    (work / "priv").mkdir(mode=0o700)
    (work / "priv" / "mnt").mkdir()
    os.chown(work / "priv" / "mnt", uid, uid)
    (work / "pass").write_text(emulator.password + "\n")
    (work / "conf").write_text("[kudufs]\ncache_dir = %s/cache\n[app demo]\nurl = %s\nuser = %s\n"
                               "password_file = %s/pass\n" % (work, emulator.url("demo"), emulator.user, work))
    for p in ("pass", "conf"):
        os.chmod(work / p, 0o600)
    for p in [work, work / "priv", work / "pass", work / "conf"]:
        os.chown(p, uid, uid)
    script = r'''
set -u
mknod "$W/fuse" c 10 229 && chmod 666 "$W/fuse" && mount --bind "$W/fuse" /dev/fuse || exit 9
try() {  # $1: extra setpriv options
  setpriv --reuid=%(uid)d --regid=%(uid)d --clear-groups --inh-caps=-all --bounding-set=-all,%(caps)s $1 \
    %(kudufs)s --config "$W/conf" "$W/priv/mnt" 2>"$W/err"
  rc=$?
  # (root cannot stat another user's FUSE mount: ask the mount table)
  if grep -q " $W/priv/mnt fuse" /proc/self/mounts; then
    echo "$2 mounted rc=$rc"
    setpriv --reuid=%(uid)d --regid=%(uid)d --clear-groups ls "$W/priv/mnt/demo" >/dev/null && echo "$2 listed"
    if setpriv --reuid=%(uid)d --regid=%(uid)d --clear-groups --inh-caps=-all --bounding-set=-all,%(caps)s $1 \
         fusermount3 -u "$W/priv/mnt"; then
      echo "$2 unmounted"
    else
      umount -l "$W/priv/mnt"; echo "$2 unmount failed"
    fi
  else
    echo "$2 failed rc=$rc: $(tr '\n' ' ' <"$W/err")"
  fi
}
try "" plain
try --no-new-privs nnp
''' % {"uid": uid, "caps": caps, "kudufs": kudufs_bin}
    r = run(["unshare", "-m", "--propagation", "private", "bash", "-c", script],
            env=dict(os.environ, W=str(work)), timeout=60)
    out = r.stdout
    assert "plain mounted rc=0" in out and "plain listed" in out and "plain unmounted" in out, out + r.stderr
    assert "nnp failed" in out and "Operation not permitted" in out, out + r.stderr


# ------------------------------------------------------------------ the Debian package

@pytest.fixture(scope="session")
def deb(tmp_path_factory):
    """make deb, once per session: (path of the .deb, seconds it took)."""
    out = tmp_path_factory.mktemp("deb")
    before = run(["git", "-C", ROOT, "status", "--porcelain", "--ignored=no"]).stdout
    t0 = time.monotonic()
    r = run(["make", "-s", "-C", ROOT, "deb", "BUILD=%s" % out], timeout=900)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    after = run(["git", "-C", ROOT, "status", "--porcelain", "--ignored=no"]).stdout
    assert after == before, "make deb changed the source tree:\n" + after
    debs = [p for p in out.iterdir() if p.name.endswith(".deb")]
    yield debs, took
    shutil.rmtree(out, ignore_errors=True)


def test_make_deb_builds_the_package(deb):
    debs, took = deb
    version = run(["sed", "-n", r"1s/^kudufs (\([^)]*\)).*/\1/p", os.path.join(ROOT, "debian", "changelog")]).stdout.strip()
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    assert [p.name for p in debs] == ["kudufs_%s_%s.deb" % (version, arch)], debs
    path = str(debs[0])
    fields = {k: run(["dpkg-deb", "-f", path, k]).stdout.strip() for k in ("Package", "Version", "Depends", "Suggests")}
    assert fields["Version"] == version
    depends = {d.split()[0] for d in re.split(r",\s*|\s*\|\s*", fields["Depends"])}
    for need in ("fuse3", "libfuse3-3", "libcurl4", "libjansson4", "libinih1", "python3"):
        assert need in depends, (need, fields["Depends"])
    assert {"azcopy", "webhook"} <= {s.strip() for s in fields["Suggests"].split(",")}
    assert "python3-azure" in depends, fields["Depends"]
    files = run(["dpkg-deb", "-c", path]).stdout
    for f in ("./usr/bin/kudufs", "./usr/bin/kudufs-to-blob", "./usr/share/man/man1/kudufs.1.gz",
              "./usr/share/man/man5/kudufs.conf.5.gz", "./usr/share/bash-completion/completions/kudufs",
              "./lib/systemd/system/kudufs-webhook.service", "./lib/systemd/system/kudufs@.service",
              "./usr/share/kudufs/webhook/hooks.json"):
        assert re.search(r" %s( |$)" % re.escape(f), files, re.M), f
    # Debian's own checker: no error or warning
    r = run(["lintian", "--fail-on", "error,warning", path], timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    print("make deb took %.1f s" % took)


class Chroot:
    """A throw-away root: an overlay of / (upper layer on a tmpfs) in a private mount
    namespace held open by a sleeping process; commands run in it with nsenter + chroot."""

    def __init__(self, base):
        self.base = base
        self.root = os.path.join(base, "root")
        script = r'''
set -e
mount -t tmpfs -o mode=0755 tmpfs "$B"
mkdir "$B/upper" "$B/work" "$B/root"
mount -t overlay overlay -o "lowerdir=/,upperdir=$B/upper,workdir=$B/work" "$B/root"
for d in proc sys dev; do mount --rbind "/$d" "$B/root/$d"; done
mount -t tmpfs tmpfs "$B/root/tmp"
mount -t tmpfs tmpfs "$B/root/run"
echo ready
exec sleep 3600
'''
        self.proc = subprocess.Popen(["unshare", "-m", "--propagation", "private", "sh", "-c", script],
                                     env=dict(os.environ, B=base), stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if line.strip() != "ready":
            self.close()
            raise RuntimeError("could not set up the overlay root")

    def run(self, cmd, env=None, timeout=120):
        e = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C",
             "HOME": "/root"}
        e.update(env or {})
        return run(["nsenter", "-t", str(self.proc.pid), "-m", "chroot", self.root] + list(cmd),
                   env=e, timeout=timeout)

    def lexists(self, path):
        """Whether path (relative to the root) exists in the throw-away root."""
        return self.run(["sh", "-c", 'test -e "$1" || test -L "$1"', "sh", "/" + path]).returncode == 0

    def upper_files(self):
        """Files (not directories) the throw-away root holds beyond /."""
        r = run(["nsenter", "-t", str(self.proc.pid), "-m", "find", os.path.join(self.base, "upper"),
                 "!", "-type", "d", "-printf", "%P\n"])
        return sorted(r.stdout.split())

    def close(self):
        """Kill every process of the throw-away namespace (a daemon or a webhook's child
        would outlive the holder otherwise), then the holder: its mounts go with it."""
        try:
            ns = os.readlink("/proc/%d/ns/mnt" % self.proc.pid)
        except OSError:
            ns = None
        for _ in range(2):
            for p in os.listdir("/proc"):
                if not p.isdigit() or int(p) == self.proc.pid:
                    continue
                try:
                    if ns and os.readlink("/proc/%s/ns/mnt" % p) == ns:
                        os.kill(int(p), signal.SIGKILL)
                except OSError:
                    pass
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


# What installing and purging a package may leave outside the package's own paths:
# dpkg's and the tools' bookkeeping, and the system user (Debian keeps it on purge).
ALLOWED_LEFTOVERS = re.compile(r"^(var/lib/dpkg/|var/log/|var/cache/debconf/|var/cache/man/|"
                               r"var/lib/systemd/deb-systemd-helper|etc/\.pwd\.lock$|"
                               r"etc/(passwd|group|shadow|gshadow)-?$)")


def readme_fstab_line():
    """The /etc/fstab line the README documents (kudufs(1) shows the same)."""
    with open(os.path.join(ROOT, "README.md")) as f:
        lines = [l.strip() for l in f if l.startswith("kudufs#") and "x-systemd.automount" in l]
    assert len(lines) == 1, lines
    with open(os.path.join(ROOT, "man", "kudufs.1.scd")) as f:
        assert lines[0] in f.read(), "kudufs(1) and the README show different fstab lines"
    return lines[0]


def check_fstab_line(root, emulator):
    """In the throw-away root with the package installed: systemd's generator turns the
    documented line into an automount after the network that verifies, and mount(8) mounts
    the line (paths moved to /tmp) through mount.fuse3 and the installed /usr/bin/kudufs."""
    line = readme_fstab_line()
    spec, where, fstype, opts = line.split()[:4]
    assert {"_netdev", "x-systemd.automount", "nofail"} <= set(opts.split(","))
    r = root.run(["sh", "-c", 'mkdir /tmp/gen && printf "%s\n" "$LINE" >/tmp/fstab.doc && '
                  'SYSTEMD_FSTAB=/tmp/fstab.doc /lib/systemd/system-generators/systemd-fstab-generator '
                  '/tmp/gen /tmp/gen /tmp/gen && cd /tmp/gen && ls -R'], env={"LINE": line})
    unit = where.strip("/").replace("/", "-")
    assert r.returncode == 0 and "%s.automount" % unit in r.stdout, r.stdout + r.stderr
    assert root.lexists("tmp/gen/remote-fs.target.wants/%s.automount" % unit), r.stdout
    r = root.run(["systemd-analyze", "verify", "--man=no", "/tmp/gen/%s.automount" % unit,
                  "/tmp/gen/%s.mount" % unit])
    assert r.returncode == 0 and r.stderr.strip() == "", r.stdout + r.stderr

    conf = re.search(r"config=([^,]+)", opts).group(1)
    cache = re.search(r"cache_dir=([^,]+)", opts).group(1)
    opts = opts.replace(conf, "/tmp/prod.conf")
    tab = "%s /tmp/mnt %s %s 0 0" % (spec, fstype, opts)
    r = root.run(["sh", "-c", 'umask 077 && printf "%s\n" "$PW" >/tmp/demo.pass && '
                  'printf "[app demo]\nurl = %s\nuser = %s\npassword_file = /tmp/demo.pass\n" "$URL" "$USR" '
                  '>/tmp/prod.conf && printf "%s\n" "$TAB" >/tmp/fstab && mkdir /tmp/mnt'],
                 env={"PW": emulator.password, "URL": emulator.url("demo"), "USR": emulator.user, "TAB": tab})
    assert r.returncode == 0, r.stderr
    r = root.run(["mount", "--fstab", "/tmp/fstab", "/tmp/mnt"])
    assert r.returncode == 0, r.stdout + r.stderr
    try:
        r = root.run(["ls", "/tmp/mnt/demo"])
        assert r.returncode == 0 and "processes.json" in r.stdout.split(), r.stdout + r.stderr
    finally:
        u = root.run(["umount", "/tmp/mnt"])
    assert u.returncode == 0, u.stderr
    # the daemon removes its spool directory on the way out
    assert wait_for(lambda: root.run(["sh", "-c", "ls -d %s/spool-* 2>/dev/null" % cache]).stdout == "",
                    timeout=15), "kudufs did not exit after umount"


def check_boot_unit(root, emulator):
    """kudufs@prod.service's ExecStart= as systemd would run it (specifiers expanded, as
    the kudufs user with the unit's bounding set, the unit's directories): it mounts, the
    kudufs user reads the mount, and SIGTERM (systemctl stop) unmounts it."""
    unit = root.run(["cat", "/lib/systemd/system/kudufs@.service"]).stdout
    execs = [l.split("=", 1)[1] for l in unit.splitlines() if l.startswith("ExecStart=")]
    assert len(execs) == 1, execs
    spec = {"%i": "prod", "%C": "/var/cache", "%t": "/run", "%%": "%"}
    argv = [re.sub(r"%[iCt%]", lambda m: spec[m.group(0)], w) for w in shlex.split(execs[0])
            if w != "$KUDUFS_OPTIONS"]
    assert argv[0] == "/usr/bin/kudufs" and "-f" in argv and argv[-1] == "/run/kudufs/prod", argv
    bset = re.search(r"^CapabilityBoundingSet=(.*)$", unit, re.M).group(1)
    caps = ",".join("+" + c.lower().replace("cap_", "") for c in bset.split())
    setup = r'''
set -e
mknod /tmp/fuse c 10 229 && chmod 666 /tmp/fuse && mount --bind /tmp/fuse /dev/fuse
install -d -o kudufs -g kudufs -m 0755 /run/kudufs/prod
install -d -o kudufs -g kudufs -m 0700 /var/cache/kudufs/prod
umask 077
printf "%s\n" "$PW" >/etc/kudufs/demo.pass
printf "[app demo]\nurl = %s\nuser = %s\npassword_file = /etc/kudufs/demo.pass\n" "$URL" "$USR" >/etc/kudufs/prod.conf
chown kudufs:kudufs /etc/kudufs/demo.pass /etc/kudufs/prod.conf
'''
    r = root.run(["sh", "-c", setup], env={"PW": emulator.password, "URL": emulator.url("demo"),
                                           "USR": emulator.user})
    assert r.returncode == 0, r.stderr
    as_kudufs = ["setpriv", "--reuid=kudufs", "--regid=kudufs", "--init-groups", "--inh-caps=-all",
                 "--bounding-set=-all," + caps]
    r = root.run(["sh", "-c", '"$@" >/tmp/unit.log 2>&1 </dev/null & echo $!', "sh"] + as_kudufs
                 + ["env", "HOME=/var/lib/kudufs"] + argv)
    pid = int(r.stdout.strip())
    mounted = lambda: " /run/kudufs/prod fuse" in root.run(["cat", "/proc/self/mounts"]).stdout
    try:
        assert wait_for(mounted, timeout=20), root.run(["cat", "/tmp/unit.log"]).stdout
        r = root.run(as_kudufs + ["ls", "/run/kudufs/prod/demo"])
        assert r.returncode == 0 and "processes.json" in r.stdout.split(), r.stdout + r.stderr
    finally:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    assert wait_for(lambda: not mounted() and not os.path.exists("/proc/%d" % pid), timeout=15), \
        "SIGTERM did not unmount: " + root.run(["cat", "/tmp/unit.log"]).stdout
    # the administrator's files go before the purge; the unit's cache dir is the package's
    assert root.run(["rm", "/etc/kudufs/prod.conf", "/etc/kudufs/demo.pass"]).returncode == 0
    assert root.lexists("var/cache/kudufs/prod")


def unit_env_words(text, key):
    """The words of every KEY= line of a unit (continuations joined)."""
    text = text.replace("\\\n", " ")
    return [w for l in text.splitlines() if l.startswith(key + "=") for w in shlex.split(l.split("=", 1)[1])]


def check_webhook_service(root, emulator, tmp_path):
    """kudufs-webhook.service's ExecStart= as systemd would run it (environment from the
    unit and from the packaged example env file, the TLS pair where LoadCredential= puts it,
    as the kudufs user with the unit's bounding set): an alert without the secret gets 403;
    with it, webhook runs kudufs-to-blob, which mounts its private kudufs through the setuid
    fusermount3 and uploads the app's dump into Azurite, with the right MD5."""
    from test_blob import Azurite  # the blob tests' Azurite (pinned in tests/package.json)

    unit = root.run(["cat", "/lib/systemd/system/kudufs-webhook.service"]).stdout
    port = free_port()
    env = dict(w.split("=", 1) for w in unit_env_words(unit, "Environment"))
    example = root.run(["cat", "/usr/share/doc/kudufs/examples/webhook.env"]).stdout
    env.update(l.split("=", 1) for l in example.splitlines() if l.strip() and not l.startswith("#"))
    os.mkdir(tmp_path / "azurite")
    az = Azurite(str(tmp_path / "azurite")).start()
    secret = "s3cret-" + os.urandom(8).hex()
    assert env["KUDUFS_TO_BLOB_ARGS"].startswith("--config /etc/kudufs/webhook.conf")
    env.update({"KUDUFS_WEBHOOK_SECRET": secret, "AZURE_STORAGE_CONNECTION_STRING": az.conn,
                "KUDUFS_WEBHOOK_IP": "127.0.0.1", "KUDUFS_WEBHOOK_PORT": str(port),
                "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TMPDIR": "/tmp", "KUDUFS_WEBHOOK_OPTS": "-verbose"})
    creds = "/run/credentials/kudufs-webhook.service"
    words = []
    for w in shlex.split(re.search(r"^ExecStart=(.*)$", unit.replace("\\\n", " "), re.M).group(1)):
        if w.startswith("$") and not w.startswith("${"):
            words += [env[w[1:]]] if env.get(w[1:]) else []
            continue
        w = re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], w)
        words.append(w.replace("%d", creds))
    assert words[0] == "/usr/bin/webhook" and "-secure" in words and "/usr/share/kudufs/webhook/hooks.json" in words
    bset = re.search(r"^CapabilityBoundingSet=(.*)$", unit, re.M).group(1)
    caps = ",".join("+" + c.lower().replace("cap_", "") for c in bset.split())
    setup = r'''
set -e
install -d -o kudufs -g kudufs -m 0700 /var/lib/kudufs /var/cache/kudufs/webhook
install -d -m 0700 "$CREDS"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=127.0.0.1 \
  -keyout "$CREDS/webhook.key" -out "$CREDS/webhook.pem" 2>/dev/null
chown -R kudufs:kudufs "$CREDS"
umask 077
printf "%s\n" "$PW" >/etc/kudufs/demo.pass
printf "[app demo]\nurl = %s\nuser = %s\npassword_file = /etc/kudufs/demo.pass\n" "$URL" "$USR" >/etc/kudufs/webhook.conf
chown kudufs:kudufs /etc/kudufs/demo.pass /etc/kudufs/webhook.conf
'''
    r = root.run(["sh", "-c", setup], env={"PW": emulator.password, "URL": emulator.url("demo"),
                                           "USR": emulator.user, "CREDS": creds})
    assert r.returncode == 0, r.stderr
    launch = ["setpriv", "--reuid=kudufs", "--regid=kudufs", "--init-groups", "--inh-caps=-all",
              "--bounding-set=-all," + caps, "env", "-i"] + ["%s=%s" % kv for kv in env.items()] + words
    r = root.run(["sh", "-c", '"$@" >/tmp/webhook.log 2>&1 </dev/null & echo $!', "sh"] + launch)
    pid = int(r.stdout.strip())
    hook = "https://127.0.0.1:%d/hooks/kudufs-dump" % port
    alert = json.dumps({"schemaId": "azureMonitorCommonAlertSchema", "data": {
        "essentials": {"alertRule": "pkg-test", "monitorCondition": "Fired", "alertTargetIDs": [
            "/subscriptions/0/resourceGroups/rg/providers/Microsoft.Web/sites/demo"]},
        "alertContext": {}}})

    def post(*headers):
        cmd = ["curl", "-sk", "-w", "\n%{http_code}", "-H", "Content-Type: application/json",
               "--data", alert] + [a for h in headers for a in ("-H", h)] + [hook]
        out = run(cmd, timeout=30).stdout.rsplit("\n", 1)
        return (int(out[1]) if len(out) == 2 and out[1].isdigit() else 0), out[0]
    try:
        assert wait_for(lambda: post()[0] != 0, timeout=20), root.run(["cat", "/tmp/webhook.log"]).stdout
        assert post()[0] == 403
        assert post("X-Kudufs-Secret: wrong")[0] == 403
        code, body = post("X-Kudufs-Secret: " + secret)
        assert code == 200 and "kudufs-to-blob started" in body, (code, body)
        # a blob exists (empty) from its claim on; done when committed with its MD5
        dumps = lambda: [n for n, b in az.list_blobs("dumpfiles").items()
                         if n.endswith(".dmp") and b["length"] and b["md5"]]
        got = wait_for(dumps, timeout=90)
        assert got, "no dump arrived; webhook log:\n" + root.run(["cat", "/tmp/webhook.log"]).stdout
        meta = az.list_blobs("dumpfiles")[got[0]]
        want = emulator.digest("demo", int(meta["metadata"]["pid"]), 1)
        assert az.blob_digest("dumpfiles", got[0]) == (want["size"], want["md5"])
        assert meta["md5"] == want["md5_b64"]
        # the run's private mount is gone again
        assert wait_for(lambda: "fuse.kudufs" not in root.run(["cat", "/proc/self/mounts"]).stdout, timeout=30), \
            root.run(["sh", "-c", "grep fuse /proc/self/mounts; cat /tmp/webhook.log; ps -u kudufs -o pid,args"]).stdout
    finally:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        az.stop()
    assert wait_for(lambda: not os.path.exists("/proc/%d" % pid), timeout=10)
    assert root.run(["rm", "-r", "/etc/kudufs/webhook.conf", "/etc/kudufs/demo.pass", creds]).returncode == 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_deb_installs_works_and_purges_clean(deb, emulator, tmp_path):
    need_root()
    path = str(deb[0][0])
    base = str(tmp_path / "chroot")
    os.mkdir(base)
    root = Chroot(base)
    try:
        owned = [l.split(None, 5)[5].split(" -> ")[0][1:] for l in run(["dpkg-deb", "-c", path]).stdout.splitlines()
                 if not l.startswith("d")]
        r = run(["nsenter", "-t", str(root.proc.pid), "-m", "cp", path, os.path.join(root.root, "tmp", "kudufs.deb")])
        assert r.returncode == 0, r.stderr
        r = root.run(["dpkg", "-i", "/tmp/kudufs.deb"])
        assert r.returncode == 0, r.stdout + r.stderr
        assert root.run(["dpkg-query", "-W", "-f", "${Status}", "kudufs"]).stdout == "install ok installed"

        r = root.run(["kudufs", "--version"])
        assert r.returncode == 0 and r.stdout.startswith("kudufs %s " % path.rsplit("_", 2)[1]), r.stdout + r.stderr
        assert root.run(["which", "kudufs"]).stdout.strip() == "/usr/bin/kudufs"
        r = root.run(["man", "-w", "kudufs"])
        assert r.returncode == 0 and r.stdout.strip() == "/usr/share/man/man1/kudufs.1.gz", r.stdout + r.stderr
        for page in ("kudufs.conf", "kudufs-to-blob", "kudufs-import-publish-settings"):
            assert root.run(["man", "-w", page]).returncode == 0, page
        r = root.run(["kudufs-to-blob", "--help"])
        assert r.returncode == 0 and "--container" in r.stdout, r.stdout + r.stderr
        r = root.run(["kudufs", "--check", "--app", "demo=%s" % emulator.url("demo")],
                     env={"KUDUFS_USER": emulator.user, "KUDUFS_PASSWORD": emulator.password})
        assert r.returncode == 0 and re.match(r"demo: OK \d+ processes", r.stdout), r.stdout + r.stderr
        r = root.run(["kudufs", "--check", "--app", "demo=%s" % emulator.url("demo")],
                     env={"KUDUFS_USER": emulator.user, "KUDUFS_PASSWORD": "wrong"})
        assert r.returncode == 1 and "401" in r.stdout + r.stderr, r.stdout + r.stderr
        # the units as installed, with the binaries and targets of a real system
        r = root.run(["systemd-analyze", "verify", "--man=no", "kudufs-webhook.service", "kudufs@prod.service"])
        assert r.returncode == 0 and r.stderr.strip() == "", r.stdout + r.stderr
        r = root.run(["getent", "passwd", "kudufs"])
        assert r.returncode == 0 and ":/var/lib/kudufs:/usr/sbin/nologin" in r.stdout, r.stdout
        r = root.run(["bash", "-c", "source %s && __load_completion kudufs-to-blob && "
                      "__load_completion fusermount3 && complete -p kudufs-to-blob fusermount3" % BASH_COMPLETION])
        assert r.returncode == 0 and "_kudufs_to_blob" in r.stdout and "_fusermount" in r.stdout, r.stdout + r.stderr

        check_fstab_line(root, emulator)
        check_boot_unit(root, emulator)
        check_webhook_service(root, emulator, tmp_path)

        r = root.run(["dpkg", "--purge", "kudufs"])
        assert r.returncode == 0, r.stdout + r.stderr
        assert root.run(["dpkg-query", "-W", "kudufs"]).returncode != 0
        left = [f for f in owned if root.lexists(f)]
        assert not left, "purge left %s" % left
        for d in ("etc/kudufs", "usr/share/kudufs", "usr/share/doc/kudufs", "var/lib/kudufs"):
            assert not root.lexists(d), d
        extra = [f for f in root.upper_files() if not ALLOWED_LEFTOVERS.match(f)]
        assert not extra, "install + purge left files behind: %s" % extra
    finally:
        root.close()


# ------------------------------------------------------------------ make demo

def test_demo_ends_with_checked_blobs_in_azurite(kudufs_bin):
    """scripts/demo (what `make demo` runs after its deps): the tour, kudufs-to-blob into
    Azurite, the listing with each dump's MD5 checked; then nothing is left behind."""
    t0 = time.monotonic()
    r = run([os.path.join(ROOT, "scripts", "demo")], env=dict(os.environ, KUDUFS_BIN=kudufs_bin),
            timeout=300)
    took = time.monotonic() - t0
    out = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)
    assert r.returncode == 0, out[-3000:] + r.stderr[-2000:]
    work = re.search(r"config (/tmp/kudufs-demo\.\w+)/config", out).group(1)
    ok = re.findall(r"^OK demo/\S+ mini \d+ bytes -> dumpfiles/(\d{4}-\d\d-\d\d/\d{6}Z-demo-\S+\.mini\.dmp)$",
                    out, re.M)
    assert ok, out[-3000:]
    listing = out[out.index("# the container dumpfiles"):]
    for name in ok:
        assert re.search(r"^%s\s+\d+\s+\S+==\s+OK: blob bytes = Content-MD5 = Kudu's dump$" % re.escape(name),
                         listing, re.M), listing
    assert "demo: done" in out
    assert not os.path.exists(work), "the demo left %s" % work
    ps = run(["ps", "-eo", "pid,args"]).stdout
    assert work not in ps, "the demo left processes:\n" + "\n".join(l for l in ps.splitlines() if work in l)
    print("demo took %.1f s" % took)
