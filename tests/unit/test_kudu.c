/*
 * Unit tests for kudu/: config parsing, credential precedence, errno
 * mapping, URL building, size parsing and name sanitizing.
 * Prints one line per check and "N passed, M failed"; exits non-zero on failure.
 */
#include "cache/cache.h"
#include "kudu/kudu.h"
#include "check.h"

#include <curl/curl.h>
#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Interposes libcurl's curl_multi_add_handle (the kudu objects are linked
 * into this binary, so their calls land here) to make it fail on demand. */
static atomic_int fail_multi_adds;

CURLMcode curl_multi_add_handle(CURLM *multi, CURL *easy)
{
	static CURLMcode (*real)(CURLM *, CURL *);

	if (atomic_load(&fail_multi_adds) > 0) {
		atomic_fetch_sub(&fail_multi_adds, 1);
		return CURLM_OUT_OF_MEMORY;
	}
	if (!real)
		*(void **)&real = dlsym(RTLD_NEXT, "curl_multi_add_handle");
	return real(multi, easy);
}

struct done_wait {
	pthread_mutex_t lock;
	pthread_cond_t cond;
	int done;
};

static void on_done_signal(struct kudu_request *req)
{
	struct done_wait *w = req->arg;

	pthread_mutex_lock(&w->lock);
	w->done = 1;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

/* Submit and wait at most secs; returns whether on_done ran. */
static int submit_wait(struct kudu_client *c, struct kudu_request *req, struct done_wait *w,
		       int secs)
{
	struct timespec until;
	int done;

	pthread_mutex_init(&w->lock, NULL);
	pthread_cond_init(&w->cond, NULL);
	w->done = 0;
	req->arg = w;
	req->on_done = on_done_signal;
	kudu_client_submit(c, req);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_sec += secs;
	pthread_mutex_lock(&w->lock);
	while (!w->done && pthread_cond_timedwait(&w->cond, &w->lock, &until) == 0)
		;
	done = w->done;
	pthread_mutex_unlock(&w->lock);
	return done;
}

/* A one-connection-per-response HTTP server on 127.0.0.1: answers the i-th
 * connection with responses[i] and keeps the request head it read. */
#define CANNED_MAX 4
struct canned_server {
	int fd, port;
	pthread_t thread;
	const char *responses[CANNED_MAX];
	int nresp;
	char requests[CANNED_MAX][4096];
};

static void *canned_main(void *arg)
{
	struct canned_server *s = arg;

	for (int i = 0; i < s->nresp; i++) {
		int c = accept(s->fd, NULL, NULL);
		size_t got = 0;

		if (c < 0)
			break;
		while (got + 1 < sizeof(s->requests[i])) {
			ssize_t n = read(c, s->requests[i] + got, sizeof(s->requests[i]) - 1 - got);
			if (n <= 0)
				break;
			got += (size_t)n;
			s->requests[i][got] = '\0';
			if (strstr(s->requests[i], "\r\n\r\n"))
				break;
		}
		if (write(c, s->responses[i], strlen(s->responses[i])) < 0)
			perror("canned server write");
		shutdown(c, SHUT_WR);
		{
			char drain[256];
			while (read(c, drain, sizeof(drain)) > 0)
				; /* until the client closes: no RST under unread data */
		}
		close(c);
	}
	return NULL;
}

static int canned_start(struct canned_server *s)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);

	s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s->fd < 0 || bind(s->fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    listen(s->fd, 8) < 0 || getsockname(s->fd, (struct sockaddr *)&a, &alen) < 0)
		return -1;
	s->port = ntohs(a.sin_port);
	return pthread_create(&s->thread, NULL, canned_main, s) ? -1 : 0;
}

static void canned_stop(struct canned_server *s)
{
	shutdown(s->fd, SHUT_RDWR); /* ends a pending accept() */
	pthread_join(s->thread, NULL);
	close(s->fd);
}

/* One JSON GET of url through a client on cfg: fills req (caller resets it). */
static int client_get(struct kudu_config *cfg, const char *url, struct kudu_request *req)
{
	struct kudu_client *c;
	int rc;

	kudu_request_init(req, cfg->apps[0], KUDU_REQ_JSON);
	snprintf(req->url, sizeof(req->url), "%s", url);
	if (kudu_client_new(&c, cfg) < 0)
		return -ENOMEM;
	rc = kudu_client_fetch(c, req);
	kudu_client_free(c);
	return rc;
}

/* The capture layer refuses a 200 text/html "dump" by req->content_type. */
static void test_client_content_type(void)
{
	struct canned_server s = {
		.nresp = 1,
		.responses = { "HTTP/1.1 200 OK\r\nContent-Type:  Text/HTML ; charset=UTF-8\r\nContent-Length: 6\r\n"
			       "Connection: close\r\n\r\n<html>" }
	};
	struct kudu_config cfg;
	struct kudu_request req;
	char err[KUDU_ERRLEN] = "", url[128];
	int rc;

	if (canned_start(&s) < 0) {
		CHECK(0, "canned server: %s", strerror(errno));
		return;
	}
	kudu_config_init(&cfg);
	snprintf(url, sizeof(url), "a=http://127.0.0.1:%d", s.port);
	kudu_config_add_app(&cfg, url, err, sizeof(err));
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/api/processes", s.port);
	rc = client_get(&cfg, url, &req);
	CHECK(rc == 0 && !strcmp(req.content_type, "text/html"), "rc=%d content_type='%s' %s", rc,
	      req.content_type, req.errmsg);
	kudu_request_reset(&req);
	CHECK(req.content_type[0] == '\0', "reset clears content_type");
	canned_stop(&s);
	kudu_config_free(&cfg);
}

/* A request whose curl_multi_add_handle fails must not leave the JSON slot
 * count off: with max_conns=1 the next JSON request would wait for ever. */
static void test_client_add_failure(void)
{
	struct kudu_config cfg;
	struct kudu_client *c = NULL;
	struct kudu_request r1, r2;
	struct done_wait w1, w2;
	char err[KUDU_ERRLEN] = "";
	int done;

	kudu_config_init(&cfg);
	cfg.max_conns = 1;
	cfg.connect_timeout = 5;
	kudu_config_add_app(&cfg, "a=http://127.0.0.1:1", err, sizeof(err));
	CHECK(kudu_client_new(&c, &cfg) == 0, "client");
	if (!c)
		return;
	kudu_request_init(&r1, cfg.apps[0], KUDU_REQ_JSON);
	kudu_url_list(cfg.apps[0], r1.url, sizeof(r1.url));
	kudu_request_init(&r2, cfg.apps[0], KUDU_REQ_JSON);
	kudu_url_list(cfg.apps[0], r2.url, sizeof(r2.url));

	atomic_store(&fail_multi_adds, 1);
	done = submit_wait(c, &r1, &w1, 10);
	CHECK(done && r1.err == -EIO && strstr(r1.errmsg, "cannot start request"),
	      "failed add: done=%d err=%d '%s'", done, r1.err, r1.errmsg);
	done = submit_wait(c, &r2, &w2, 10);
	CHECK(done && r2.err == -EIO, "next JSON request must run: done=%d err=%d '%s'", done,
	      r2.err, r2.errmsg);
	kudu_client_free(c); /* ends r2 with ECANCELED if it was stuck */
	kudu_request_reset(&r1);
	kudu_request_reset(&r2);
	kudu_config_free(&cfg);
}

static void test_errno_table(void)
{
	CHECK(kudu_errno_from_status(200, NULL) == 0, "200");
	CHECK(kudu_errno_from_status(401, NULL) == -EACCES, "401");
	CHECK(kudu_errno_from_status(403, NULL) == -EACCES, "403");
	CHECK(kudu_errno_from_status(404, NULL) == -ENOENT, "404");
	CHECK(kudu_errno_from_status(429, NULL) == -EIO, "429 after retries");
	CHECK(kudu_errno_from_status(503, NULL) == -EIO, "503 after retries");
	CHECK(kudu_errno_from_status(500, "Site sku (Free) does not support full minidump.") ==
		      -EIO,
	      "500");
	CHECK(kudu_errno_from_status(500, "Request Timed Out") == -ETIMEDOUT,
	      "500 front-end cutoff");
	CHECK(kudu_errno_from_status(500, "500 - The request timed out.") == -ETIMEDOUT,
	      "front-end cutoff, IIS page wording");
	CHECK(kudu_text_says_timed_out("x\0<h2>TIMED OUT", 15) &&
		      !kudu_text_says_timed_out("timed ou", 8) &&
		      !kudu_text_says_timed_out(NULL, 0),
	      "timed out search");
	CHECK(kudu_errno_from_status(504, NULL) == -ETIMEDOUT, "504");
	CHECK(kudu_errno_from_status(400, NULL) == -EIO, "400");
	CHECK(kudu_errno_from_status(400, "Not supported on Linux") == -EOPNOTSUPP &&
		      kudu_errno_from_status(400, "\"Not supported on Linux\"") == -EOPNOTSUPP,
	      "KuduLite without dotnet-monitor (text, and a JSON string)");
	CHECK(kudu_errno_from_status(404, "The dotnet-monitor tool is not configured to run") ==
		      -EOPNOTSUPP,
	      "dotnet-monitor on but not running");
	CHECK(kudu_errno_from_status(500, "Not supported on Linux") == -EIO, "only a 400 says it");
	CHECK(kudu_status_is_retryable(429) && kudu_status_is_retryable(502) &&
		      kudu_status_is_retryable(503) && !kudu_status_is_retryable(500) &&
		      !kudu_status_is_retryable(504),
	      "retryable set");
}

static void test_urls(void)
{
	struct kudu_app app = { .url = "http://127.0.0.1:8080/demo" };
	char buf[256];

	CHECK(kudu_url_list(&app, buf, sizeof(buf)) == 0 &&
		      !strcmp(buf, "http://127.0.0.1:8080/demo/api/processes"),
	      "%s", buf);
	CHECK(kudu_url_details(&app, 4292, buf, sizeof(buf)) == 0 &&
		      !strcmp(buf, "http://127.0.0.1:8080/demo/api/processes/4292"),
	      "%s", buf);
	CHECK(kudu_url_dump(&app, 4292, KUDU_DUMP_FULL, buf, sizeof(buf)) == 0 &&
		      !strcmp(buf, "http://127.0.0.1:8080/demo/api/processes/4292/dump?dumpType=2"),
	      "%s", buf);
	CHECK(kudu_url_dump(&app, 7, KUDU_DUMP_MINI, buf, 20) == -ENAMETOOLONG,
	      "truncation detected");
	CHECK(kudu_url_dump(&app, 7, KUDU_DUMP_WITHHEAP, buf, sizeof(buf)) == -ENOENT &&
		      kudu_url_dump(&app, 7, KUDU_DUMP_TRIAGE, buf, sizeof(buf)) == -ENOENT,
	      "no WithHeap/Triage on Windows (or not yet known)");
	CHECK(kudu_url_proc_part(&app, 4292, "threads", buf, sizeof(buf)) == 0 &&
		      !strcmp(buf, "http://127.0.0.1:8080/demo/api/processes/4292/threads"),
	      "%s", buf);
	CHECK(kudu_url_settings(&app, buf, sizeof(buf)) == 0 &&
		      !strcmp(buf, "http://127.0.0.1:8080/demo/api/settings"),
	      "%s", buf);
	/* KuduLite reads type=, never dumpType= */
	app.platform = KUDU_PLATFORM_LINUX;
	{
		static const char *const want[] = { "", "Mini", "Full", "WithHeap", "Triage" };

		for (int t = KUDU_DUMP_MINI; t <= KUDU_DUMP_TRIAGE; t++) {
			char exp[128];

			snprintf(exp, sizeof(exp),
				 "http://127.0.0.1:8080/demo/api/processes/85/dump?type=%s",
				 want[t]);
			CHECK(kudu_url_dump(&app, 85, (enum kudu_dump_type)t, buf, sizeof(buf)) ==
					      0 &&
				      !strcmp(buf, exp),
			      "%s", buf);
		}
	}
}

/* platform = windows|linux|auto: configured wins, else the first evidence, kept. */
static void test_platform(void)
{
	struct kudu_app app = { .name = "a", .url = "http://x" };
	enum kudu_platform p = KUDU_PLATFORM_AUTO;

	atomic_init(&app.platform_seen, KUDU_PLATFORM_AUTO);
	CHECK(kudu_platform_parse("linux", &p) == 0 && p == KUDU_PLATFORM_LINUX, "parse linux");
	CHECK(kudu_platform_parse("Linux", &p) == -EINVAL, "names are lower case");
	CHECK(kudu_app_platform(&app) == KUDU_PLATFORM_AUTO, "unknown until seen");
	kudu_app_note_platform(&app, KUDU_PLATFORM_AUTO, "empty list");
	CHECK(kudu_app_platform(&app) == KUDU_PLATFORM_AUTO, "no evidence, no decision");
	kudu_app_note_platform(&app, KUDU_PLATFORM_LINUX, "test");
	kudu_app_note_platform(&app, KUDU_PLATFORM_WINDOWS, "test");
	CHECK(kudu_app_platform(&app) == KUDU_PLATFORM_LINUX, "the first evidence is kept");
	app.platform = KUDU_PLATFORM_WINDOWS;
	CHECK(kudu_app_platform(&app) == KUDU_PLATFORM_WINDOWS, "configured wins");
	CHECK(kudu_dump_available(KUDU_PLATFORM_LINUX, KUDU_DUMP_TRIAGE) &&
		      !kudu_dump_available(KUDU_PLATFORM_WINDOWS, KUDU_DUMP_TRIAGE) &&
		      !kudu_dump_available(KUDU_PLATFORM_AUTO, KUDU_DUMP_WITHHEAP) &&
		      kudu_dump_available(KUDU_PLATFORM_AUTO, KUDU_DUMP_FULL),
	      "dump kinds per platform");
	CHECK(kudu_platform_has_threads(KUDU_PLATFORM_WINDOWS) &&
		      !kudu_platform_has_threads(KUDU_PLATFORM_LINUX),
	      "threads/modules on Windows only");
}

static void test_sizes_and_names(void)
{
	uint64_t v = 0;
	char out[300];
	char longname[400];

	CHECK(kudu_parse_size("20G", &v) == 0 && v == 20ULL << 30, "20G");
	CHECK(kudu_parse_size("512MiB", &v) == 0 && v == 512ULL << 20, "512MiB");
	CHECK(kudu_parse_size("1000", &v) == 0 && v == 1000, "1000");
	CHECK(kudu_parse_size("12X", &v) == -EINVAL, "12X");
	CHECK(kudu_parse_size("-1", &v) == -EINVAL, "-1");
	CHECK(kudu_name_is_valid("myfunc") && !kudu_name_is_valid("..") &&
		      !kudu_name_is_valid("a/b") && !kudu_name_is_valid("") &&
		      !kudu_name_is_valid(".kudufs"),
	      "app names");

	cache_sanitize_name("a/b\nc", out, sizeof(out));
	CHECK(!strcmp(out, "a_b_c"), "%s", out);
	cache_sanitize_name("..", out, sizeof(out));
	CHECK(!strchr(out, '/'), "%s", out);
	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	cache_sanitize_name(longname, out, 224);
	CHECK(strlen(out) == 223, "truncated to %zu", strlen(out));
	cache_sanitize_name("", out, sizeof(out));
	CHECK(out[0] != '\0', "empty name gets a placeholder");
}

static void test_config_good(void)
{
	struct kudu_config cfg;
	char err[KUDU_ERRLEN] = "";
	char body[1024];
	char *pass = write_file("good.pass", "s3cret-pw\n", 0600);
	char *conf;
	int rc;

	snprintf(
		body, sizeof(body),
		"; comment\n[kudufs]\ncache_dir = %s/cache\ncache_max = 1G\ndump_ttl = 5\n"
		"max_conns = 3\n\n[app myfunc]\nurl = http://127.0.0.1:1/x/\nuser = $myfunc\n"
		"password_file = %s\n\n[app other]\nuser = bob\npassword_command = echo from-cmd\n",
		tmpdir, pass);
	conf = write_file("good.conf", body, 0600);
	kudu_config_init(&cfg);
	rc = kudu_config_load(&cfg, conf, true, err, sizeof(err));
	CHECK(rc == 0, "load: %s", err);
	CHECK(cfg.cache_max == 1ULL << 30 && cfg.dump_ttl == 5 && cfg.max_conns == 3 &&
		      cfg.list_ttl == 10 && cfg.detail_ttl == 30,
	      "globals");
	CHECK(cfg.napps == 2, "napps %zu", cfg.napps);
	rc = kudu_config_resolve_credentials(&cfg, err, sizeof(err));
	CHECK(rc == 0, "resolve: %s", err);
	if (cfg.napps == 2) {
		CHECK(!strcmp(cfg.apps[0]->url, "http://127.0.0.1:1/x"), "trailing slash: %s",
		      cfg.apps[0]->url);
		CHECK(cfg.apps[0]->cred == KUDU_CRED_BASIC &&
			      !strcmp(cfg.apps[0]->password, "s3cret-pw"),
		      "password_file");
		CHECK(strstr(cfg.apps[0]->cred_desc, "password_file") &&
			      !strstr(cfg.apps[0]->cred_desc, "s3cret"),
		      "desc %s", cfg.apps[0]->cred_desc);
		CHECK(!strcmp(cfg.apps[1]->url, "https://other.scm.azurewebsites.net"),
		      "default url %s", cfg.apps[1]->url);
		CHECK(cfg.apps[1]->password && !strcmp(cfg.apps[1]->password, "from-cmd"),
		      "password_command");
	}
	/* --app NAME=URL overrides a section's url and keeps its credentials */
	rc = kudu_config_add_app(&cfg, "myfunc=http://127.0.0.1:2", err, sizeof(err));
	CHECK(rc == 0 && cfg.napps == 2 && !strcmp(cfg.apps[0]->url, "http://127.0.0.1:2"),
	      "override");
	kudu_config_free(&cfg);
}

static void expect_load_error(const char *name, const char *content, mode_t mode, const char *want)
{
	struct kudu_config cfg;
	char err[KUDU_ERRLEN] = "";
	char *conf = write_file(name, content, mode);
	int rc;

	kudu_config_init(&cfg);
	rc = kudu_config_load(&cfg, conf, true, err, sizeof(err));
	CHECK(rc < 0 && strstr(err, want), "%s: rc=%d err='%s' want '%s'", name, rc, err, want);
	kudu_config_free(&cfg);
}

static void test_config_bad(void)
{
	char want[600];

	snprintf(want, sizeof(want), "%s/bad1.conf:3: unknown key 'colour'", tmpdir);
	expect_load_error("bad1.conf", "[app a]\nurl = http://x\ncolour = red\n", 0600, want);
	snprintf(want, sizeof(want), "%s/bad2.conf:2:", tmpdir);
	expect_load_error("bad2.conf", "[kudufs]\nthis line has no equals\n", 0600, want);
	snprintf(want, sizeof(want), "%s/bad3.conf:2: unknown section [nope]", tmpdir);
	expect_load_error("bad3.conf", "[nope]\nx = 1\n", 0600, want);
	expect_load_error("bad4.conf", "[kudufs]\ncache_max = lots\n", 0600,
			  "bad4.conf:2: cache_max");
	expect_load_error("bad5.conf", "[app a]\npassword = hunter2\n", 0600, "not allowed");
	expect_load_error("bad6.conf", "[app a]\nurl = ftp://x\n", 0600, "must start with http");
	expect_load_error("bad7.conf", "[app a]\nplatform = macos\n", 0600,
			  "platform must be windows, linux or auto");
	expect_load_error("perm.conf", "[app a]\n", 0644, "chmod 600");
	expect_load_error("perm2.conf", "[app a]\n", 0640, "group or others");
	{
		struct kudu_config cfg;
		char err[KUDU_ERRLEN] = "";
		char path[512];

		snprintf(path, sizeof(path), "%s/does-not-exist", tmpdir);
		kudu_config_init(&cfg);
		CHECK(kudu_config_load(&cfg, path, false, err, sizeof(err)) == 0,
		      "optional missing");
		CHECK(kudu_config_load(&cfg, path, true, err, sizeof(err)) == -ENOENT &&
			      strstr(err, path),
		      "required missing: %s", err);
		kudu_config_free(&cfg);
	}
}

/* instance = ID pins an app to one App Service instance (ARRAffinity cookie). */
static void test_config_instance(void)
{
	struct kudu_config cfg;
	char err[KUDU_ERRLEN] = "";

	kudu_config_init(&cfg);
	CHECK(kudu_config_load(
		      &cfg,
		      write_file("inst.conf",
				 "[app a]\ninstance = 0f1e2d3c4b5a\n[app b]\nurl = http://x\n",
				 0600),
		      true, err, sizeof(err)) == 0,
	      "%s", err);
	CHECK(cfg.napps == 2 && cfg.apps[0]->instance &&
		      !strcmp(cfg.apps[0]->instance, "0f1e2d3c4b5a") && !cfg.apps[1]->instance,
	      "instance parsed, optional");
	kudu_config_free(&cfg);
	expect_load_error("inst2.conf", "[app a]\ninstance = ab; Path=/x\n", 0600,
			  "inst2.conf:2: instance of [app a] must be an instance id");
	expect_load_error("inst3.conf", "[kudufs]\ninstance = ab\n", 0600,
			  "unknown option 'instance'");
}

/* A credential error found after parsing still names the [app] section's line. */
static void test_section_line(void)
{
	struct kudu_config cfg;
	char err[KUDU_ERRLEN] = "";
	char want[600];
	char *conf =
		write_file("noline.conf",
			   "; x\n[kudufs]\nmax_conns = 2\n\n[app a]\nurl = http://127.0.0.1:1\n"
			   "password_command = echo pw\n[app b]\nuser = u\n",
			   0600);

	kudu_config_init(&cfg);
	CHECK(kudu_config_load(&cfg, conf, true, err, sizeof(err)) == 0, "%s", err);
	CHECK(cfg.napps == 2 && cfg.apps[0]->section_line == 5 && cfg.apps[1]->section_line == 8,
	      "section lines %d %d", cfg.napps > 0 ? cfg.apps[0]->section_line : -1,
	      cfg.napps > 1 ? cfg.apps[1]->section_line : -1);
	snprintf(want, sizeof(want), "%s:5: [app a] has a password source but no 'user'", conf);
	CHECK(kudu_config_resolve_credentials(&cfg, err, sizeof(err)) == -EINVAL &&
		      !strcmp(err, want),
	      "got '%s' want '%s'", err, want);
	kudu_config_free(&cfg);
	/* inih's own line numbers still agree with ours */
	snprintf(want, sizeof(want), "%s/bad7.conf:4: unknown key 'colour'", tmpdir);
	expect_load_error("bad7.conf", "\xEF\xBB\xBF[app a]\n\nurl = http://x\ncolour = red\n",
			  0600, want);
}

/* Relative paths must survive fuse_daemonize()'s chdir("/"). */
static void test_relative_paths(void)
{
	struct kudu_config cfg;
	char err[KUDU_ERRLEN] = "";
	char old[512], cwd[512], want[1200], home_x[600];
	const char *home = getenv("HOME");
	char *conf;

	if (!getcwd(old, sizeof(old)) || chdir(tmpdir) < 0 || !getcwd(cwd, sizeof(cwd))) {
		CHECK(0, "chdir %s", tmpdir);
		return;
	}
	write_file("rel.pass", "pw\n", 0600);
	conf = write_file("rel.conf",
			  "[kudufs]\ncache_dir = spool/kudufs\nca_file = ./ca.pem\n"
			  "[app a]\nurl = http://127.0.0.1:1\nuser = u\npassword_file = rel.pass\n"
			  "netrc_file = ~/n.netrc\n",
			  0600);
	kudu_config_init(&cfg);
	CHECK(kudu_config_load(&cfg, conf, true, err, sizeof(err)) == 0, "%s", err);
	snprintf(want, sizeof(want), "%s/spool/kudufs", cwd);
	CHECK(cfg.cache_dir && !strcmp(cfg.cache_dir, want), "cache_dir %s", cfg.cache_dir);
	snprintf(want, sizeof(want), "%s/ca.pem", cwd);
	CHECK(cfg.ca_file && !strcmp(cfg.ca_file, want), "ca_file %s", cfg.ca_file);
	snprintf(home_x, sizeof(home_x), "%s/n.netrc", home ? home : "");
	CHECK(cfg.napps == 1 && home && !strcmp(cfg.apps[0]->netrc_file, home_x), "~ kept: %s",
	      cfg.napps ? cfg.apps[0]->netrc_file : "");
	snprintf(want, sizeof(want), "%s/rel.pass", cwd);
	CHECK(cfg.napps == 1 && !strcmp(cfg.apps[0]->password_file, want), "password_file %s",
	      cfg.napps ? cfg.apps[0]->password_file : "");
	/* -o cache_dir=... goes through kudu_config_set */
	CHECK(kudu_config_set(&cfg, "cache_dir", "c2", err, sizeof(err)) == 0, "%s", err);
	snprintf(want, sizeof(want), "%s/c2", cwd);
	CHECK(!strcmp(cfg.cache_dir, want), "-o cache_dir %s", cfg.cache_dir);
	CHECK(kudu_config_set(&cfg, "ca_file", "/etc/ssl/x.pem", err, sizeof(err)) == 0 &&
		      !strcmp(cfg.ca_file, "/etc/ssl/x.pem"),
	      "absolute kept: %s", cfg.ca_file);
	/* and after a chdir the password file is still found */
	if (chdir("/") == 0) {
		CHECK(kudu_config_resolve_credentials(&cfg, err, sizeof(err)) == 0 &&
			      cfg.apps[0]->password && !strcmp(cfg.apps[0]->password, "pw"),
		      "after chdir: %s", err);
	}
	kudu_config_free(&cfg);
	if (chdir(old) < 0)
		perror(old);
}

static void test_password_file_perms(void)
{
	struct kudu_config cfg;
	char err[KUDU_ERRLEN] = "";
	char body[600];
	char *pass = write_file("open.pass", "pw-visible\n", 0644);

	snprintf(body, sizeof(body), "[app a]\nuser = u\npassword_file = %s\n", pass);
	kudu_config_init(&cfg);
	CHECK(kudu_config_load(&cfg, write_file("pp.conf", body, 0600), true, err, sizeof(err)) ==
		      0,
	      "%s", err);
	CHECK(kudu_config_resolve_credentials(&cfg, err, sizeof(err)) == -EPERM &&
		      strstr(err, pass) && strstr(err, "chmod 600") && !strstr(err, "pw-visible"),
	      "perm refusal: %s", err);
	kudu_config_free(&cfg);
}

static void test_credential_precedence(void)
{
	struct kudu_config cfg;
	char err[KUDU_ERRLEN] = "";
	char body[600];
	char home[300];
	char *pass = write_file("prec.pass", "from-file\n", 0600);

	/* 1. the section wins over the environment */
	setenv("KUDUFS_USER", "envuser", 1);
	setenv("KUDUFS_PASSWORD", "from-env", 1);
	snprintf(body, sizeof(body), "[app a]\nuser = u\npassword_file = %s\n", pass);
	kudu_config_init(&cfg);
	kudu_config_load(&cfg, write_file("prec.conf", body, 0600), true, err, sizeof(err));
	kudu_config_resolve_credentials(&cfg, err, sizeof(err));
	CHECK(cfg.napps == 1 && !strcmp(cfg.apps[0]->password, "from-file"), "section first");
	kudu_config_free(&cfg);

	/* 2. then the environment, for a single app */
	kudu_config_init(&cfg);
	kudu_config_add_app(&cfg, "a=http://127.0.0.1:1", err, sizeof(err));
	CHECK(kudu_config_resolve_credentials(&cfg, err, sizeof(err)) == 0, "%s", err);
	CHECK(cfg.apps[0]->cred == KUDU_CRED_BASIC && !strcmp(cfg.apps[0]->password, "from-env") &&
		      !strcmp(cfg.apps[0]->user, "envuser") &&
		      !strcmp(cfg.apps[0]->cred_desc, "KUDUFS_USER/KUDUFS_PASSWORD"),
	      "env: %s", cfg.apps[0]->cred_desc);
	kudu_config_free(&cfg);

	/* 3. then ~/.netrc (not for two apps: the environment names one user) */
	snprintf(home, sizeof(home), "%s/home", tmpdir);
	mkdir(home, 0700);
	setenv("HOME", home, 1);
	write_file("home/.netrc", "machine 127.0.0.1 login n password p\n", 0600);
	kudu_config_init(&cfg);
	kudu_config_add_app(&cfg, "a=http://127.0.0.1:1", err, sizeof(err));
	kudu_config_add_app(&cfg, "b=http://127.0.0.1:2", err, sizeof(err));
	CHECK(kudu_config_resolve_credentials(&cfg, err, sizeof(err)) == 0, "%s", err);
	CHECK(cfg.apps[0]->cred == KUDU_CRED_NETRC && !strcmp(cfg.apps[0]->cred_desc, "~/.netrc"),
	      "netrc: %s", cfg.apps[0]->cred_desc);
	kudu_config_free(&cfg);

	/* a group-readable ~/.netrc is refused */
	write_file("home/.netrc", "machine x login n password p\n", 0644);
	unsetenv("KUDUFS_USER");
	kudu_config_init(&cfg);
	kudu_config_add_app(&cfg, "a=http://127.0.0.1:1", err, sizeof(err));
	CHECK(kudu_config_resolve_credentials(&cfg, err, sizeof(err)) == -EPERM &&
		      strstr(err, ".netrc"),
	      "netrc perms: %s", err);
	kudu_config_free(&cfg);

	/* nothing at all: resolves, and says where credentials could come from */
	snprintf(body, sizeof(body), "%s/home/.netrc", tmpdir);
	unlink(body);
	kudu_config_init(&cfg);
	kudu_config_add_app(&cfg, "a=http://127.0.0.1:1", err, sizeof(err));
	CHECK(kudu_config_resolve_credentials(&cfg, err, sizeof(err)) == 0 &&
		      cfg.apps[0]->cred == KUDU_CRED_NONE &&
		      strstr(cfg.apps[0]->cred_desc, "no credentials"),
	      "none: %s", cfg.apps[0]->cred_desc);
	kudu_config_free(&cfg);
	unsetenv("KUDUFS_PASSWORD");
}

int main(void)
{
	if (check_begin("kudu") < 0)
		return 2;
	test_errno_table();
	test_urls();
	test_platform();
	test_sizes_and_names();
	test_config_good();
	test_config_bad();
	test_section_line();
	test_config_instance();
	test_password_file_perms();
	test_credential_precedence();
	test_relative_paths();
	curl_global_init(CURL_GLOBAL_DEFAULT);
	test_client_add_failure();
	test_client_content_type();
	curl_global_cleanup();
	return check_end();
}
