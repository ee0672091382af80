/*
 * kudufs main: option parsing (fuse_opt), --check, mount and teardown.
 *
 * Threads do not survive fork(), so the pre-mount check runs on a client
 * of its own that is freed before fuse_daemonize(); the serving client and
 * its transfer thread are created afterwards.
 */
#include "fs/fs.h"
#include "kudu/log.h"

#include <errno.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/wait.h>
#include <unistd.h>
#include <curl/curl.h>

enum {
	KEY_HELP,
	KEY_VERSION,
	KEY_CHECK,
	KEY_APP,
	KEY_APP_EQ,
	KEY_CONFIG,
	KEY_CONFIG_EQ,
	KEY_KUDU_OPT,
	KEY_CONFIG_OPT,
	KEY_INSECURE,
	KEY_MAX_THREADS,
};

struct options {
	char *config;
	char **apps;
	size_t napps;
	char *mountpoint;
	int nonopts;
	int help, version, check;
	int max_threads_set; /* -o max_threads given: libfuse's default is not ours */
	char **kudu_opts;    /* key=value, applied after the config file */
	size_t nkudu_opts;
	char err[KUDU_ERRLEN];
};

static const struct fuse_opt option_spec[] = {
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_KEY("-V", KEY_VERSION),
	FUSE_OPT_KEY("--version", KEY_VERSION),
	FUSE_OPT_KEY("--check", KEY_CHECK),
	/* -f -d -s max_idle_threads= clone_fd go on to fuse_parse_cmdline */
	FUSE_OPT_KEY("max_threads=", KEY_MAX_THREADS),
	FUSE_OPT_KEY("--app ", KEY_APP),
	FUSE_OPT_KEY("--app=", KEY_APP_EQ),
	FUSE_OPT_KEY("--config ", KEY_CONFIG),
	FUSE_OPT_KEY("--config=", KEY_CONFIG_EQ),
	FUSE_OPT_KEY("config=", KEY_CONFIG_OPT),
	FUSE_OPT_KEY("cache_dir=", KEY_KUDU_OPT),
	FUSE_OPT_KEY("cache_max=", KEY_KUDU_OPT),
	FUSE_OPT_KEY("dump_ttl=", KEY_KUDU_OPT),
	FUSE_OPT_KEY("list_ttl=", KEY_KUDU_OPT),
	FUSE_OPT_KEY("detail_ttl=", KEY_KUDU_OPT),
	FUSE_OPT_KEY("negative_ttl=", KEY_KUDU_OPT),
	FUSE_OPT_KEY("connect_timeout=", KEY_KUDU_OPT),
	FUSE_OPT_KEY("first_byte_timeout=", KEY_KUDU_OPT),
	FUSE_OPT_KEY("stall_timeout=", KEY_KUDU_OPT),
	FUSE_OPT_KEY("meta_timeout=", KEY_KUDU_OPT),
	FUSE_OPT_KEY("max_conns=", KEY_KUDU_OPT),
	FUSE_OPT_KEY("prefetch_max=", KEY_KUDU_OPT),
	FUSE_OPT_KEY("command_timeout=", KEY_KUDU_OPT),
	FUSE_OPT_KEY("min_rate=", KEY_KUDU_OPT),
	FUSE_OPT_KEY("max_json=", KEY_KUDU_OPT),
	FUSE_OPT_KEY("ca_file=", KEY_KUDU_OPT),
	FUSE_OPT_KEY("arm_endpoint=", KEY_KUDU_OPT),
	FUSE_OPT_KEY("insecure", KEY_INSECURE),
	FUSE_OPT_END,
};

/* clang-format off */
static void usage(FILE *out, const char *prog)
{
	fprintf(out,
"usage: %s [-f] [-d] [-s] [-o OPT[,OPT...]] [--config FILE] [--app NAME[=URL]]... MOUNTPOINT\n"
"       %s --check [--config FILE] [--app NAME[=URL]]...\n"
"       %s --version | --help\n"
"\n"
"Mounts the processes of Azure App Service apps (Kudu's /api/processes) read-only:\n"
"MOUNT/<app>/<name>-<pid>/{details.json,minidump.dmp,fulldump.dmp}, plus\n"
"threads.json and modules.json (Windows apps) or withheap.dmp and triage.dmp\n"
"(Linux apps: [app NAME] platform = windows|linux|auto, default auto).\n"
"\n"
"  -f                     stay in the foreground\n"
"  -d                     debug output (implies -f; never prints credentials)\n"
"  -s                     single-threaded\n"
"  --app NAME[=URL]       add an app; URL defaults to https://NAME.scm.azurewebsites.net\n"
"  --config FILE          INI config (default $XDG_CONFIG_HOME/kudufs/config)\n"
"  --check                resolve config and credentials, list each app once, report\n"
"\n"
"  -o config=FILE  cache_dir=DIR  cache_max=SIZE (20G)  dump_ttl=SECS (600)\n"
"     list_ttl=SECS (10)  detail_ttl=SECS (30)  negative_ttl=SECS (2)\n"
"     connect_timeout=SECS (30)  first_byte_timeout=SECS (900)  stall_timeout=SECS (60)\n"
"     meta_timeout=SECS (60, each list/details request)\n"
"     command_timeout=SECS (60, password_command/token_command)\n"
"     min_rate=BYTES (1K, per second, averaged over stall_timeout)  max_json=SIZE (32M)\n"
"     max_conns=N (8)  prefetch_max=N (256)  insecure  ca_file=FILE\n"
"     arm_endpoint=URL (https://management.azure.com, for arm_resource)\n"
"     max_threads=N (64)  max_idle_threads=N (10)  (FUSE worker threads; each waiting\n"
"     dump reader holds one), plus the usual FUSE mount options\n"
"\n"
"Credentials, first that applies: [app NAME] user + password_file|password_command|\n"
"token_command; KUDUFS_USER/KUDUFS_PASSWORD (one app); ~/.netrc.\n"
"Instances of a scaled-out app (MOUNT/<app>/instances/): [app NAME] instances = ID,...;\n"
"else arm_resource (+ arm_token_command); else Kudu's /instance/all.\n",
		prog, prog, prog);
}
/* clang-format on */

static int push(char ***arr, size_t *n, const char *s)
{
	char **a = realloc(*arr, (*n + 1) * sizeof(**arr));

	if (!a)
		return -1;
	*arr = a;
	if (!(a[*n] = strdup(s)))
		return -1;
	(*n)++;
	return 0;
}

static int opt_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	struct options *o = data;

	(void)outargs;
	/* clang-format off */
	switch (key) {
	case KEY_HELP: o->help = 1; return 0;
	case KEY_VERSION: o->version = 1; return 0;
	case KEY_CHECK: o->check = 1; return 0;
	case KEY_MAX_THREADS: o->max_threads_set = 1; return 1; /* libfuse parses it */
	case KEY_APP: return push(&o->apps, &o->napps, arg + strlen("--app")) ? -1 : 0;
	case KEY_APP_EQ: return push(&o->apps, &o->napps, arg + strlen("--app=")) ? -1 : 0;
	case KEY_CONFIG:
	case KEY_CONFIG_EQ:
	case KEY_CONFIG_OPT: {
		const char *v = strchr(arg, '=') && key != KEY_CONFIG ? strchr(arg, '=') + 1
								       : arg + strlen("--config");
		free(o->config);
		o->config = strdup(v);
		return o->config ? 0 : -1;
	}
	case KEY_KUDU_OPT: return push(&o->kudu_opts, &o->nkudu_opts, arg) ? -1 : 0;
	case KEY_INSECURE: return push(&o->kudu_opts, &o->nkudu_opts, "insecure=1") ? -1 : 0;
	case FUSE_OPT_KEY_NONOPT:
		/* mount.fuse3 passes "SOURCE MOUNTPOINT": the last one wins */
		o->nonopts++;
		if (o->nonopts > 2) {
			snprintf(o->err, sizeof(o->err), "unexpected argument '%s'", arg);
			return -1;
		}
		free(o->mountpoint);
		o->mountpoint = strdup(arg);
		return 0;
	default:
		if (arg[0] == '-' && arg[1] == '-') {
			snprintf(o->err, sizeof(o->err), "unknown option '%s'", arg);
			return -1;
		}
		return 1; /* a FUSE option */
	}
	/* clang-format on */
}

static void free_options(struct options *o)
{
	for (size_t i = 0; i < o->napps; i++)
		free(o->apps[i]);
	for (size_t i = 0; i < o->nkudu_opts; i++)
		free(o->kudu_opts[i]);
	free(o->apps);
	free(o->kudu_opts);
	free(o->config);
	free(o->mountpoint);
}

/* Config file, then -o options, then --app: later sources override. */
static int build_config(struct options *o, int debug, struct kudu_config *cfg, char *err,
			size_t errlen)
{
	char *path = o->config ? strdup(o->config) : kudu_config_default_path();
	int rc;

	if (path) {
		rc = kudu_config_load(cfg, path, o->config != NULL, err, errlen);
		free(path);
		if (rc < 0)
			return rc;
	}
	for (size_t i = 0; i < o->nkudu_opts; i++) {
		char key[64], e[KUDU_ERRLEN - 8];
		const char *eq = strchr(o->kudu_opts[i], '=');
		size_t kl;

		if (!eq)
			continue;
		kl = (size_t)(eq - o->kudu_opts[i]);
		if (kl >= sizeof(key))
			continue;
		memcpy(key, o->kudu_opts[i], kl);
		key[kl] = '\0';
		if (kudu_config_set(cfg, key, eq + 1, e, sizeof(e)) < 0) {
			snprintf(err, errlen, "-o %s", e);
			return -EINVAL;
		}
	}
	for (size_t i = 0; i < o->napps; i++) {
		rc = kudu_config_add_app(cfg, o->apps[i], err, errlen);
		if (rc < 0)
			return rc;
	}
	cfg->debug = debug;
	return kudu_config_resolve_credentials(cfg, err, errlen);
}

/* --check's word on an app's instances: "3 instances (ARM), " when it is
 * scaled out or its instances are configured, "" for a single-instance
 * app (whose line stays as it always was). A discovery failure is a
 * warning on stderr, never a failure: the Kudu list itself works. */
static void check_instances(struct kudu_client *client, struct kudu_app *app, char *buf, size_t len)
{
	struct kudu_instances found;
	char err[KUDU_ERRLEN] = "";
	int rc = kudu_instances_discover(client, app, &found, err, sizeof(err));

	buf[0] = '\0';
	if (rc < 0) {
		fprintf(stderr, "kudufs: %s: warning: instance discovery failed: %s\n", app->name,
			err);
		return;
	}
	if (found.why[0])
		fprintf(stderr,
			"kudufs: %s: warning: instance discovery failed (%s); instances/ lists %s\n",
			app->name, found.why,
			found.source == KUDU_INST_KUDU ? "Kudu's /instance/all"
						       : "the instances the front end names");
	if (found.n > 1 || found.source == KUDU_INST_ARM || found.source == KUDU_INST_CONFIG)
		snprintf(buf, len, "%zu instance%s (%s), ", found.n, found.n == 1 ? "" : "s",
			 kudu_instances_source_name(found.source));
	kudu_instances_free(&found);
}

/* One list request per app; prints "NAME: OK n processes" or the error,
 * and with --check the instances ("NAME: OK 3 instances (ARM), 14
 * processes on 0a1b2c..."). */
static int check_apps(struct kudu_config *cfg, FILE *out, bool quiet_ok)
{
	struct kudu_client *client;
	int failed = 0;
	int rc = kudu_client_new(&client, cfg);

	if (rc < 0) {
		kudu_log(LOG_ERR, "cannot start the HTTP client: %s", strerror(-rc));
		return -1;
	}
	for (size_t i = 0; i < cfg->napps; i++) {
		struct kudu_app *app = cfg->apps[i];
		struct kudu_request req;
		char url[1024], err[KUDU_ERRLEN], insts[128] = "";
		char *body = NULL;
		size_t len = 0;

		kudu_request_init(&req, app, KUDU_REQ_JSON);
		kudu_url_list(app, req.url, sizeof(req.url));
		snprintf(url, sizeof(url), "%s", req.url);
		rc = kudu_client_fetch(client, &req);
		snprintf(err, sizeof(err), "%s", req.errmsg);
		body = req.body;
		len = req.body_len;
		req.body = NULL;
		if (rc == 0 && !quiet_ok)
			check_instances(client, app, insts, sizeof(insts));
		if (rc == 0) {
			/* the mount's own parser: the count is what the tree shows */
			struct kudu_proc_list l;

			rc = kudu_model_parse_list(body, len, &l, err, sizeof(err));
			if (rc == 0) /* the pre-mount check's finding serves the mount too */
				kudu_app_note_platform(app, l.platform, "its process list's items");
			if (rc < 0) {
				fprintf(out, "%s: %s (%s)\n", app->name, err, url);
				failed++;
			} else if (!quiet_ok) {
				/* a Windows app's line stays as it always was */
				fprintf(out, "%s: OK %s%s%zu processes", app->name,
					kudu_app_platform(app) == KUDU_PLATFORM_LINUX ? "linux, "
										      : "",
					insts, l.nprocs);
				if (insts[0] && req.served_by[0])
					fprintf(out, " on %.6s...", req.served_by);
				if (l.skipped || l.duplicates)
					fprintf(out,
						" (%zu items without a usable id or name skipped, "
						"%zu with a pid listed before)",
						l.skipped, l.duplicates);
				fprintf(out, "\n");
			}
			kudu_model_list_free(&l);
			free(body);
			kudu_request_reset(&req);
		} else if (rc == -EOPNOTSUPP && quiet_ok) {
			/* KuduLite without dotnet-monitor: Kudu and the credentials
			 * work, the app's directory says why it is empty (EOPNOTSUPP,
			 * user.kudufs.error), and turning dotnet-monitor on needs no
			 * remount: a warning, not a reason to refuse the mount */
			kudu_request_reset(&req);
			fprintf(out, "kudufs: %s: warning: %s\n", app->name, err);
		} else {
			char why[KUDU_ERRLEN];

			kudu_request_reset(&req);
			/* Linux Consumption: only deployment routes, every other path 404 */
			if (rc == -ENOENT &&
			    kudu_client_probe_no_process_api(client, app, why, sizeof(why)))
				fprintf(out, "%s: %s (404 on %s)\n", app->name, why, url);
			else
				fprintf(out, "%s: %s\n", app->name, err);
			failed++;
		}
	}
	kudu_client_free(client);
	return failed ? -1 : 0;
}

/*
 * SIGTERM/SIGINT/SIGHUP end the mount by unmounting it, not by leaving the
 * loop, so the loop ends on its own once the kernel lets the device go.
 * libfuse's own handlers leave the loop at once and drop handles still in
 * flight. The unmount waits (at most HANDLES_WAIT_MS) for the handles to be
 * released first: a RELEASE/RELEASEDIR of a file closed just before the
 * signal may still sit in the kernel's queue, and an unmount drops what is
 * queued (libfuse's own directory state would then never be freed). Only
 * when the unmount is refused (a reader still has a file open) does the
 * thread fall back to libfuse's way: exit the session and wake the loop.
 */
#define HANDLES_WAIT_MS 1000

struct fs_signals {
	pthread_t thread;
	pthread_t main_thread;
	struct fuse_session *se;
	struct kudufs *k;       /* its handles; its cache's waiting readers are answered
				   before the session ends */
	const char *mountpoint; /* absolute: fuse_daemonize() chdirs to / */
	atomic_int stopping;    /* teardown: the next signal only wakes the thread */
	sigset_t set;
};

static void fs_signal_wake(int sig)
{
	(void)sig; /* only there so that a blocking sem_wait()/read() returns EINTR */
}

/* A plain (not lazy) unmount, as fusermount3 -u would do it. */
static int fs_unmount_plain(const char *mountpoint)
{
	char *argv[] = { "fusermount3", "-u", "-q", "--", (char *)mountpoint, NULL };
	extern char **environ;
	pid_t pid;
	int st;

	if (geteuid() == 0)
		return umount2(mountpoint, UMOUNT_NOFOLLOW) == 0 ? 0 : -errno;
	if (posix_spawnp(&pid, "fusermount3", NULL, NULL, argv, environ) != 0)
		return -ENOENT;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? 0 : -EBUSY;
}

static void *fs_signal_thread(void *arg)
{
	struct fs_signals *s = arg;
	int sig = 0;

	if (sigwait(&s->set, &sig) != 0 || atomic_load(&s->stopping))
		return NULL;
	(void)fs_wait_handles_released(s->k, HANDLES_WAIT_MS); /* -ETIMEDOUT: busy, below */
	if (fs_unmount_plain(s->mountpoint) == 0)
		return NULL;
	kudu_log(LOG_WARNING, "%s is busy; ending the session (its readers get ENOTCONN)",
		 s->mountpoint);
	/* answered now: libfuse cancels the workers still waiting when the
	 * loop ends, and their readers would get ECONNABORTED */
	cache_readers_leave(s->k->cache, 2000);
	fuse_session_exit(s->se);
	pthread_kill(s->main_thread, SIGUSR2);
	return NULL;
}

/* Block the signals in every thread made from here on; one thread takes them. */
static void fs_signals_block(struct fs_signals *s)
{
	sigemptyset(&s->set);
	sigaddset(&s->set, SIGTERM);
	sigaddset(&s->set, SIGINT);
	sigaddset(&s->set, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &s->set, NULL);
}

static int fs_signals_start(struct fs_signals *s, struct fuse_session *se, struct kudufs *k,
			    const char *mountpoint)
{
	struct sigaction sa = { .sa_handler = fs_signal_wake };

	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&sa.sa_mask);
	sigaction(SIGUSR2, &sa, NULL); /* no SA_RESTART: the loop must see EINTR */
	s->se = se;
	s->k = k;
	s->mountpoint = mountpoint;
	s->main_thread = pthread_self();
	atomic_store(&s->stopping, 0);
	return -pthread_create(&s->thread, NULL, fs_signal_thread, s);
}

static void fs_signals_stop(struct fs_signals *s)
{
	atomic_store(&s->stopping, 1);
	/* blocked everywhere: the thread's sigwait() takes it, nothing is killed */
	/* NOLINTNEXTLINE(bugprone-bad-signal-to-kill-thread) */
	pthread_kill(s->thread, SIGTERM);
	pthread_join(s->thread, NULL);
}

/* libfuse's own messages (fuse_log) after the daemon detached: into ours,
 * else they would go to the /dev/null that stderr now is. */
static void fs_log_fuse(enum fuse_log_level level, const char *fmt, va_list ap)
{
	char msg[1024];

	vsnprintf(msg, sizeof(msg), fmt, ap);
	kudu_log((int)level, "%s", msg); /* fuse_log_level's values are syslog's */
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct options o = { 0 };
	struct fuse_cmdline_opts fo = { 0 };
	struct kudu_config cfg;
	struct kudufs k = { 0 };
	struct fuse *fuse = NULL;
	struct fs_signals sig;
	char mnt_abs[PATH_MAX];
	char err[KUDU_ERRLEN] = "";
	int ret = 1;

	/* glibc gives each thread that allocates at once an arena of its own
	 * (up to 8 per CPU), and each keeps what a parse freed (jansson's
	 * document of a 10000-process list is several MB) to itself. One:
	 * VmHWM after ls -l + details of 10000 processes x 3 instances 58 MB,
	 * 58-72 MB with two, 89 MB with glibc's default (README, Performance).
	 * Per read there is one allocation (libfuse's reply buffer), so one
	 * lock costs nothing measurable. */
	mallopt(M_ARENA_MAX, 1);
	/* And a daemon that lives for weeks: glibc's dynamic mmap threshold
	 * moves up to the largest block freed (libcurl's 512 KiB dump buffers),
	 * after which such buffers come from the heap and fragment it. Measured
	 * by the soak (tests/test_soak.py): RSS +29 % over 8 minutes with
	 * glibc's defaults, +1.6 % with this (and two arenas). Above 128 KiB:
	 * libfuse allocates each READ's reply buffer (st_blksize, 128 KiB), and
	 * at 128 KiB every one was a fresh mmap, faulted in and unmapped: the
	 * daemon's CPU for a 2 GiB first read went from 2.4 to 3.6 s. */
	mallopt(M_MMAP_THRESHOLD, 256 * 1024);
	/* Nor is the top of the heap given back below 2 MiB: at 128 KiB every
	 * reply buffer freed shrank the heap and the next one grew it again
	 * (brk + munmap, 4 % of a first read's samples under perf, and 32 page
	 * faults per 128 KiB). */
	mallopt(M_TRIM_THRESHOLD, 2 * 1024 * 1024);

	kudu_config_init(&cfg);
	if (fuse_opt_parse(&args, &o, option_spec, opt_proc) < 0) {
		fprintf(stderr, "kudufs: %s (try --help)\n",
			o.err[0] ? o.err : "invalid arguments");
		ret = 2;
		goto out;
	}
	if (o.help) {
		usage(stdout, "kudufs");
		ret = 0;
		goto out;
	}
	if (o.version) {
		printf("kudufs %s (libfuse %d, %s)\n", KUDUFS_VERSION, fuse_version(),
		       curl_version());
		ret = 0;
		goto out;
	}
	/* -f, -d (implies -f; stays in args, so libfuse prints requests too), -s,
	 * max_threads, max_idle_threads, clone_fd: libfuse's parser. The mount
	 * point was taken above (mount.fuse3 passes SOURCE MOUNTPOINT). */
	if (fuse_parse_cmdline(&args, &fo) != 0) {
		fprintf(stderr, "kudufs: invalid arguments (try --help)\n");
		ret = 2;
		goto out;
	}
	if (o.max_threads_set && fo.max_threads < 1) {
		fprintf(stderr, "kudufs: max_threads must be at least 1 (try --help)\n");
		ret = 2;
		goto out;
	}
	if (!o.check && !o.mountpoint) {
		fprintf(stderr, "kudufs: no mountpoint given (try --help)\n");
		ret = 2;
		goto out;
	}
	kudu_log_init(fo.debug);
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (build_config(&o, fo.debug, &cfg, err, sizeof(err)) < 0) {
		kudu_log(LOG_ERR, "%s", err);
		ret = 1;
		goto out_curl;
	}
	if (cfg.insecure)
		kudu_log(LOG_WARNING,
			 "WARNING: 'insecure' is set: TLS certificates are NOT verified; "
			 "anyone on the path can read your credentials and dumps");
	if (o.check) {
		ret = check_apps(&cfg, stdout, false) == 0 ? 0 : 1;
		goto out_curl;
	}
	if (check_apps(&cfg, stderr, true) < 0) {
		kudu_log(LOG_ERR, "not mounting %s", o.mountpoint);
		ret = 1;
		goto out_curl;
	}

	k.cfg = &cfg;
	k.mounted_at = time(NULL);
	k.single_thread = fo.singlethread != 0;
	fs_handles_init(&k);
	k.uid = getuid();
	k.gid = getgid();
	fuse_opt_add_arg(&args, "-o");
	fuse_opt_add_arg(&args, "default_permissions,fsname=kudufs,subtype=kudufs");
	if (cache_prepare_dir(&cfg, err, sizeof(err)) < 0) {
		kudu_log(LOG_ERR, "%s", err);
		goto out_curl;
	}
	if (!realpath(o.mountpoint, mnt_abs)) {
		kudu_log(LOG_ERR, "%s: %s", o.mountpoint, strerror(errno));
		goto out_curl;
	}
	fuse = fuse_new(&args, &fs_operations, sizeof(fs_operations), &k);
	if (!fuse)
		goto out_curl;
	if (fuse_mount(fuse, mnt_abs) != 0)
		goto out_fuse;
	/* before daemonize and before any thread exists, so all of them inherit it */
	fs_signals_block(&sig);
	if (fuse_daemonize(fo.foreground) != 0)
		goto out_unmount;
	if (!fo.foreground) {
		/* stderr is /dev/null from here on */
		kudu_log_use_syslog();
		fuse_set_log_func(fs_log_fuse);
	}
	if (kudu_client_new(&k.client, &cfg) < 0) {
		kudu_log(LOG_ERR, "cannot start the HTTP client");
		goto out_unmount;
	}
	/* list and details waits end with the reader, as dump waits do */
	kudu_client_set_interrupted(k.client, fs_reader_should_stop);
	if (cache_new(&k.cache, &cfg, k.client, err, sizeof(err)) < 0) {
		kudu_log(LOG_ERR, "%s", err);
		goto out_client;
	}
	if (fs_signals_start(&sig, fuse_get_session(fuse), &k, mnt_abs) < 0) {
		kudu_log(LOG_ERR, "cannot start the signal thread");
		goto out_cache;
	}

	if (fo.singlethread) {
		ret = fuse_loop(fuse);
	} else {
		struct fuse_loop_config *lc = fuse_loop_cfg_create();

		/* each waiting dump reader holds a thread; leave room for metadata */
		fuse_loop_cfg_set_max_threads(lc, o.max_threads_set ? fo.max_threads : 64);
		/* UINT_MAX: not given (libfuse's "never end idle threads") */
		fuse_loop_cfg_set_idle_threads(
			lc, fo.max_idle_threads != UINT_MAX ? fo.max_idle_threads : 10);
		fuse_loop_cfg_set_clone_fd(lc, (unsigned)fo.clone_fd);
		ret = fuse_loop_mt(fuse, lc);
		fuse_loop_cfg_destroy(lc);
	}
	if (ret != 0) /* a -errno from the session, or libfuse's own -1 */
		kudu_log(LOG_ERR, "the FUSE session ended with an error: %s",
			 ret < -1 ? strerror(-ret) : "libfuse's loop failed");
	ret = ret == 0 ? 0 : 1;
	fs_signals_stop(&sig);
	fs_release_handles(&k);
out_cache:
	/* stop transfers before freeing captures their callbacks point into */
	kudu_client_free(k.client);
	k.client = NULL;
	cache_free(k.cache);
out_client:
	kudu_client_free(k.client);
out_unmount:
	fuse_unmount(fuse);
out_fuse:
	fuse_destroy(fuse);
out_curl:
	curl_global_cleanup();
out:
	free(fo.mountpoint);
	fuse_opt_free_args(&args);
	free_options(&o);
	kudu_config_free(&cfg);
	return ret;
}
