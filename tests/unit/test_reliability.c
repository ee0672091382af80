/*
 * Unit tests for kudu/config.c's hostile-input handling (issue 17): credential
 * files that are not regular files or too big, credential commands that hang,
 * write more lines later or leave children behind, and duplicate [app] sections.
 * Prints one line per failed check and "N passed, M failed"; exits non-zero on failure.
 * Every check runs under alarm(): a hang fails the run instead of blocking it.
 */
#include "kudu/kudu.h"
#include "check.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void on_alarm(int sig)
{
	(void)sig;
	static const char msg[] = "FAIL: a check hung (alarm)\n0 passed, 1 failed\n";
	if (write(1, msg, sizeof(msg) - 1) < 0)
		_exit(3);
	_exit(1);
}

/* Loads a config with one app using `key = value` and resolves it. */
static int resolve_app(const char *key, const char *value, unsigned command_timeout,
		       char *password_out, size_t outlen, char *err, size_t errlen)
{
	struct kudu_config cfg;
	char body[1200];
	int rc;

	snprintf(body, sizeof(body), "[app a]\nurl = http://127.0.0.1:1\nuser = u\n%s = %s\n", key,
		 value);
	kudu_config_init(&cfg);
	cfg.command_timeout = command_timeout;
	err[0] = '\0';
	rc = kudu_config_load(&cfg, write_file("app.conf", body, 0600), true, err, errlen);
	if (rc == 0)
		rc = kudu_config_resolve_credentials(&cfg, err, errlen);
	if (password_out && outlen) {
		password_out[0] = '\0';
		if (rc == 0 && cfg.napps == 1 && cfg.apps[0]->password)
			snprintf(password_out, outlen, "%s", cfg.apps[0]->password);
	}
	kudu_config_free(&cfg);
	return rc;
}

static void test_password_file_kinds(void)
{
	char err[KUDU_ERRLEN], pw[128];
	char fifo[512], dir[512], link[512];
	char big[70 * 1024];
	double t0;
	int rc;

	snprintf(fifo, sizeof(fifo), "%s", path_in_tmp("pw.fifo"));
	snprintf(dir, sizeof(dir), "%s", path_in_tmp("pw.dir"));
	/* a FIFO: refused without opening it (opening would block for a writer) */
	mkfifo(fifo, 0600);
	alarm(10);
	t0 = now();
	rc = resolve_app("password_file", fifo, 5, pw, sizeof(pw), err, sizeof(err));
	alarm(0);
	CHECK(rc == -EINVAL && strstr(err, "is a FIFO; it must be a regular file") &&
		      strstr(err, fifo),
	      "fifo: rc=%d %s", rc, err);
	CHECK(now() - t0 < 2, "fifo took %.1f s", now() - t0);

	/* a directory says so, not "is empty" */
	mkdir(dir, 0700);
	rc = resolve_app("password_file", dir, 5, pw, sizeof(pw), err, sizeof(err));
	CHECK(rc == -EISDIR && strstr(err, "is a directory") && !strstr(err, "empty"),
	      "dir: rc=%d %s", rc, err);

	/* a device (mode 0666, but its kind is checked first) */
	rc = resolve_app("password_file", "/dev/zero", 5, pw, sizeof(pw), err, sizeof(err));
	CHECK(rc == -EINVAL && strstr(err, "is a character device"), "device: rc=%d %s", rc, err);

	/* a symlink to a regular file is fine; to a FIFO is not */
	write_file("real.pass", "pw-via-link\n", 0600);
	snprintf(link, sizeof(link), "%s", path_in_tmp("link.pass"));
	CHECK(symlink(path_in_tmp("real.pass"), link) == 0, "symlink");
	rc = resolve_app("password_file", link, 5, pw, sizeof(pw), err, sizeof(err));
	CHECK(rc == 0 && !strcmp(pw, "pw-via-link"), "symlink: rc=%d %s", rc, err);
	snprintf(link, sizeof(link), "%s", path_in_tmp("fifo-link.pass"));
	CHECK(symlink(fifo, link) == 0, "symlink");
	alarm(10);
	rc = resolve_app("password_file", link, 5, pw, sizeof(pw), err, sizeof(err));
	alarm(0);
	CHECK(rc == -EINVAL && strstr(err, "FIFO"), "symlink to fifo: rc=%d %s", rc, err);

	/* size cap */
	memset(big, 'x', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	rc = resolve_app("password_file", write_file("big.pass", big, 0600), 5, pw, sizeof(pw), err,
			 sizeof(err));
	CHECK(rc == -EFBIG && strstr(err, "bytes, more than the 65536"), "big: rc=%d %s", rc, err);
	CHECK(!strstr(err, "xxxx"), "content never in the message");

	/* empty, and an empty first line */
	rc = resolve_app("password_file", write_file("empty.pass", "", 0600), 5, pw, sizeof(pw),
			 err, sizeof(err));
	CHECK(rc == -EACCES && strstr(err, "is empty"), "empty: %s", err);
	rc = resolve_app("password_file", write_file("blank.pass", "\nsecond\n", 0600), 5, pw,
			 sizeof(pw), err, sizeof(err));
	CHECK(rc == -EACCES && strstr(err, "empty first line") && !strstr(err, "second"),
	      "blank: %s", err);
}

static void test_config_file_kinds(void)
{
	struct kudu_config cfg;
	char err[KUDU_ERRLEN] = "";
	char fifo[512];
	int rc;

	snprintf(fifo, sizeof(fifo), "%s", path_in_tmp("conf.fifo"));
	mkfifo(fifo, 0600);
	kudu_config_init(&cfg);
	alarm(10);
	rc = kudu_config_load(&cfg, fifo, true, err, sizeof(err));
	alarm(0);
	CHECK(rc == -EINVAL && strstr(err, "config") && strstr(err, "is a FIFO"), "config fifo: %s",
	      err);
	rc = kudu_config_load(&cfg, tmpdir, true, err, sizeof(err));
	CHECK(rc == -EISDIR && strstr(err, "is a directory"), "config dir: %s", err);
	/* a missing optional config is still fine, a missing required one named */
	CHECK(kudu_config_load(&cfg, path_in_tmp("nope.conf"), false, err, sizeof(err)) == 0,
	      "optional");
	CHECK(kudu_config_load(&cfg, path_in_tmp("nope.conf"), true, err, sizeof(err)) == -ENOENT &&
		      strstr(err, "No such file"),
	      "required: %s", err);
	kudu_config_free(&cfg);
}

static void test_netrc_kinds(void)
{
	struct kudu_config cfg;
	char err[KUDU_ERRLEN] = "";
	char netrc_dir[512];

	snprintf(netrc_dir, sizeof(netrc_dir), "%s", path_in_tmp("netrc.dir"));
	mkdir(netrc_dir, 0700);
	kudu_config_init(&cfg);
	kudu_config_add_app(&cfg, "a=http://127.0.0.1:1", err, sizeof(err));
	cfg.apps[0]->netrc_file = strdup(netrc_dir);
	CHECK(kudu_config_resolve_credentials(&cfg, err, sizeof(err)) == -EISDIR &&
		      strstr(err, "netrc file") && strstr(err, "is a directory"),
	      "netrc dir: %s", err);
	kudu_config_free(&cfg);
}

/* pid ended (gone, or a zombie waiting for init) within secs */
static int process_gone(int pid, double secs)
{
	double end = now() + secs;
	char path[64], buf[256];

	snprintf(path, sizeof(path), "/proc/%d/stat", pid);
	for (;;) {
		FILE *f = fopen(path, "r");
		char *rp;

		if (!f)
			return 1;
		rp = fgets(buf, sizeof(buf), f) ? strrchr(buf, ')') : NULL;
		fclose(f);
		if (rp && (rp[2] == 'Z' || rp[2] == 'X'))
			return 1;
		if (now() > end)
			return 0;
		usleep(20000);
	}
}

static void test_password_command(void)
{
	char err[KUDU_ERRLEN], pw[128], cmd[600];
	double t0;
	int rc;

	/* pass(1)-like: the password, then more lines a moment later. Closing
	 * the pipe after line one used to kill it with SIGPIPE (exit 141). */
	rc = resolve_app("password_command",
			 "echo pw-first; sleep 0.3; echo 'URL: x' || exit 7; echo more || exit 8",
			 10, pw, sizeof(pw), err, sizeof(err));
	CHECK(rc == 0 && !strcmp(pw, "pw-first"), "later lines: rc=%d %s", rc, err);

	/* lots of output after the first line is read and dropped */
	rc = resolve_app("password_command",
			 "printf 'pw2\\r\\n'; head -c 3000000 /dev/zero | tr '\\\\0' y", 10, pw,
			 sizeof(pw), err, sizeof(err));
	CHECK(rc == 0 && !strcmp(pw, "pw2"), "big output: rc=%d %s", rc, err);

	/* a failing command: its status, never its output */
	rc = resolve_app("password_command", "echo leaked-secret; exit 3", 10, pw, sizeof(pw), err,
			 sizeof(err));
	CHECK(rc == -EACCES && strstr(err, "password_command failed (exit status 3)") &&
		      !strstr(err, "leaked-secret"),
	      "exit 3: %s", err);
	rc = resolve_app("password_command", "true", 10, pw, sizeof(pw), err, sizeof(err));
	CHECK(rc == -EACCES && strstr(err, "printed nothing"), "nothing: %s", err);

	/* a hung command is killed at command_timeout, with what it started */
	snprintf(cmd, sizeof(cmd), "sleep 30 & echo $! > %s/bg.pid; echo pw; wait", tmpdir);
	alarm(20);
	t0 = now();
	rc = resolve_app("password_command", cmd, 1, pw, sizeof(pw), err, sizeof(err));
	alarm(0);
	CHECK(rc == -ETIMEDOUT && strstr(err, "did not finish within command_timeout (1 s)"),
	      "timeout: rc=%d %s", rc, err);
	CHECK(now() - t0 < 5, "timeout took %.1f s", now() - t0);
	{
		FILE *f;
		int bg = 0;

		snprintf(cmd, sizeof(cmd), "%s/bg.pid", tmpdir);
		f = fopen(cmd, "r");
		if (f) {
			char line[32];

			if (fgets(line, sizeof(line), f))
				bg = (int)strtol(line, NULL, 10);
			fclose(f);
		}
		CHECK(bg > 0 && process_gone(bg, 5), "background child %d killed too", bg);
	}

	/* a command that exits leaving a child holding its stdout still counts */
	alarm(20);
	t0 = now();
	rc = resolve_app("password_command", "echo pw3; (sleep 4 &)", 10, pw, sizeof(pw), err,
			 sizeof(err));
	alarm(0);
	CHECK(rc == 0 && !strcmp(pw, "pw3"), "daemonized child: rc=%d %s", rc, err);
	CHECK(now() - t0 < 3.5, "took %.1f s", now() - t0);

	/* token_command gets the same limit */
	alarm(20);
	rc = resolve_app("token_command", "sleep 20", 1, NULL, 0, err, sizeof(err));
	alarm(0);
	CHECK(rc == -ETIMEDOUT && strstr(err, "token_command did not finish"), "token: %s", err);
}

static void test_command_timeout_option(void)
{
	struct kudu_config cfg;
	char err[KUDU_ERRLEN] = "";

	kudu_config_init(&cfg);
	CHECK(cfg.command_timeout == 60, "default %u", cfg.command_timeout);
	CHECK(kudu_config_set(&cfg, "command_timeout", "5", err, sizeof(err)) == 0 &&
		      cfg.command_timeout == 5,
	      "set: %s", err);
	CHECK(kudu_config_set(&cfg, "command_timeout", "-1", err, sizeof(err)) == -EINVAL,
	      "negative");
	CHECK(kudu_config_load(&cfg, write_file("ct.conf", "[kudufs]\ncommand_timeout = 7\n", 0600),
			       true, err, sizeof(err)) == 0 &&
		      cfg.command_timeout == 7,
	      "in [kudufs]: %s", err);
	kudu_config_free(&cfg);
}

static void expect_load_error(const char *name, const char *content, const char *want)
{
	struct kudu_config cfg;
	char err[KUDU_ERRLEN] = "";
	char full[800];
	char *conf = write_file(name, content, 0600);
	int rc;

	snprintf(full, sizeof(full), "%s:%s", conf, want);
	kudu_config_init(&cfg);
	rc = kudu_config_load(&cfg, conf, true, err, sizeof(err));
	CHECK(rc == -EINVAL && !strcmp(err, full), "%s: rc=%d\n  got  '%s'\n  want '%s'", name, rc,
	      err, full);
	kudu_config_free(&cfg);
}

static void test_duplicate_sections(void)
{
	struct kudu_config cfg;
	char err[KUDU_ERRLEN] = "";

	expect_load_error("dup1.conf",
			  "[app a]\nurl = http://x\n\n[app b]\nuser = u\n[app a]\nuser = v\n",
			  "6: a second [app a] section (the first is at line 1); merge them");
	/* the same app spelled with more spaces, and an empty second section */
	expect_load_error("dup2.conf",
			  "[kudufs]\nmax_conns = 2\n[app  a]\nurl = http://x\n[app a]\n",
			  "5: a second [app a] section (the first is at line 3); merge them");
	/* an error before the duplicate is the one reported */
	expect_load_error("dup3.conf", "[app a]\ncolour = red\n[app a]\n",
			  "2: unknown key 'colour' in [app a]");
	/* different apps, and a [kudufs] given twice, are fine */
	kudu_config_init(&cfg);
	CHECK(kudu_config_load(&cfg,
			       write_file("nodup.conf",
					  "[kudufs]\nlist_ttl = 1\n[app a]\nurl = http://x\n"
					  "[app ab]\nurl = http://y\n[kudufs]\ndetail_ttl = 2\n",
					  0600),
			       true, err, sizeof(err)) == 0 &&
		      cfg.napps == 2,
	      "no dup: %s", err);
	kudu_config_free(&cfg);
}

/* Regressions found by tests/fuzz/ (the input is also in its corpus). */
static void test_fuzz_regressions(void)
{
	struct kudu_config cfg;
	char err[KUDU_ERRLEN] = "";

	/* fuzz_config: "http://" had its slashes stripped to "http:" and was accepted */
	expect_load_error(
		"fz1.conf", "[app b]\nurl = http://\n",
		"2: url 'http://' of app 'b' has no host (expected http(s)://HOST[:PORT][/PREFIX])");
	expect_load_error(
		"fz2.conf", "[app b]\nurl = https:///x\n",
		"2: url 'https:///x' of app 'b' has no host (expected http(s)://HOST[:PORT][/PREFIX])");
	kudu_config_init(&cfg);
	CHECK(kudu_config_add_app(&cfg, "b=http://", err, sizeof(err)) == -EINVAL &&
		      strstr(err, "no host"),
	      "--app: %s", err);
	CHECK(kudu_config_add_app(&cfg, "b=http://h:1/p/", err, sizeof(err)) == 0 &&
		      !strcmp(cfg.apps[0]->url, "http://h:1/p"),
	      "a good one still: %s", err);
	kudu_config_free(&cfg);
}

int main(void)
{
	signal(SIGALRM, on_alarm);
	signal(SIGPIPE, SIG_IGN); /* as in the daemon: the commands must still get SIGPIPE's default
				   */
	if (check_begin("rel") < 0)
		return 2;
	setenv("HOME", tmpdir, 1);
	unsetenv("KUDUFS_USER");
	unsetenv("KUDUFS_PASSWORD");
	test_password_file_kinds();
	test_config_file_kinds();
	test_netrc_kinds();
	test_password_command();
	test_command_timeout_option();
	test_duplicate_sections();
	test_fuzz_regressions();
	return check_end();
}
