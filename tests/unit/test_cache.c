/*
 * Unit tests for cache/'s dump captures, without FUSE or a network: the
 * cache's request submitter is replaced by fake_submit.h's, which records
 * each dump request and completes it when a test says so, writing the body
 * through on_body and calling on_done as the transfer thread would.
 *
 * Covered: one dump per app at a time and a FIFO behind it, eviction under
 * cache_max, the retry of a dump after a 401 with a refreshed token, a
 * queued dump leaving the queue when its last reader goes, and waiting
 * readers answered ENOTCONN when a busy mount's session ends.
 * Prints "N passed, M failed"; exits non-zero on failure.
 */
#include "cache/cache_priv.h"
#include "kudu/kudu.h"
#include "check.h"
#include "fake_submit.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- fixtures ---- */

struct env {
	struct kudu_config cfg;
	struct cache *c;
};

static void env_open(struct env *e, uint64_t cache_max)
{
	char err[KUDU_ERRLEN];
	int rc;

	fake_reset();
	kudu_config_init(&e->cfg);
	e->cfg.cache_max = cache_max;
	e->cfg.cache_dir = strdup(tmpdir);
	rc = kudu_config_add_app(&e->cfg, "a=http://127.0.0.1:9", err, sizeof(err));
	CHECK(rc == 0, "add app a: %s", err);
	rc = kudu_config_add_app(&e->cfg, "b=http://127.0.0.1:9", err, sizeof(err));
	CHECK(rc == 0, "add app b: %s", err);
	rc = cache_new(&e->c, &e->cfg, NULL, err, sizeof(err));
	if (rc < 0) {
		printf("cache_new: %s\n", err);
		exit(1);
	}
	CHECK(e->c->submit == kudu_client_submit, "the default submitter is the client's");
	e->c->submit = fake_submit;
}

static void env_close(struct env *e)
{
	fake_cancel_all();
	cache_free(e->c);
	kudu_config_free(&e->cfg);
}

static int interrupted_now(void)
{
	return 1;
}

/* Begin a capture the way a first read does, without waiting for bytes:
 * the read starts or queues it, then sees the "interrupt". */
static struct capture *start(struct env *e, size_t app, int pid)
{
	struct capture *cap = NULL;
	int fd = -1;
	ssize_t n;

	CHECK(cache_capture_acquire(e->c, app, NULL, pid, KUDU_DUMP_MINI, &cap) == 0,
	      "acquire %zu/%d", app, pid);
	n = cache_capture_wait(e->c, cap, 1, 0, interrupted_now, &fd);
	CHECK(n == -EINTR, "wait of a fresh capture %zu/%d: %zd", app, pid, n);
	return cap;
}

static enum capture_state state_of(struct env *e, size_t app, int pid)
{
	struct capture_info info;

	cache_capture_get_info(e->c, app, NULL, pid, KUDU_DUMP_MINI, &info);
	return info.state;
}

static struct capture *cap_of(int i)
{
	struct kudu_request *r = fake_req(i);

	return r ? r->arg : NULL;
}

/* Read the whole complete capture and compare with `want`. */
static void check_content(struct env *e, struct capture *cap, const char *want)
{
	char buf[4096];
	ssize_t n = cache_capture_read(e->c, cap, buf, sizeof(buf), 0, interrupted_now);

	CHECK(n == (ssize_t)strlen(want) && !memcmp(buf, want, strlen(want)),
	      "read %zd bytes, want %zu", n, strlen(want));
	n = cache_capture_read(e->c, cap, buf, sizeof(buf), (off_t)strlen(want), interrupted_now);
	CHECK(n == 0, "read at the end of a complete capture: %zd", n);
}

static json_int_t status_int(struct env *e, const char *key)
{
	char *s = cache_status_json(e->c);
	json_t *j = s ? json_loads(s, 0, NULL) : NULL;
	json_int_t v = json_integer_value(json_object_get(j, key));

	json_decref(j);
	free(s);
	return v;
}

static int spool_files(struct env *e)
{
	DIR *d = opendir(e->c->spool_dir);
	struct dirent *de;
	int n = 0;

	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

/* ---- tests ---- */

/* One dump request per app on the wire; the rest wait in FIFO order, and a
 * finished dump (success or failure) starts the next. Apps are independent. */
static void test_queue(void)
{
	struct env e;
	struct capture *a1, *a2, *a3, *b1;
	struct kudu_request *r0;

	env_open(&e, 1 << 20);
	a1 = start(&e, 0, 1);
	a2 = start(&e, 0, 2);
	a3 = start(&e, 0, 3);
	b1 = start(&e, 1, 1);
	CHECK(fake_count() == 2, "submitted %d, want 2 (one per app)", fake_count());
	CHECK(cap_of(0) == a1 && cap_of(1) == b1, "the first of each app goes out");
	CHECK(state_of(&e, 0, 1) == CAP_FETCHING, "a/1 fetching");
	CHECK(state_of(&e, 0, 2) == CAP_QUEUED && state_of(&e, 0, 3) == CAP_QUEUED,
	      "a/2, a/3 queued");
	CHECK(state_of(&e, 1, 1) == CAP_FETCHING, "b/1 fetching");
	CHECK(cache_capture_drop(e.c, 0, NULL, 2, KUDU_DUMP_MINI) == -EBUSY,
	      "rm of a queued dump: EBUSY");
	CHECK(cache_capture_drop(e.c, 0, NULL, 1, KUDU_DUMP_MINI) == -EBUSY,
	      "rm of a fetching dump: EBUSY");
	r0 = fake_req(0); /* NULL if the CHECKs above failed */
	CHECK(r0 && strstr(r0->url, "/api/processes/1/dump?dumpType=1") != NULL, "url %s",
	      r0 ? r0->url : "(no request)");

	fake_complete(0, "dump of a1");
	CHECK(fake_count() == 3 && cap_of(2) == a2, "a/1 done: a/2 (not a/3) goes out");
	CHECK(state_of(&e, 0, 1) == CAP_COMPLETE, "a/1 complete");
	CHECK(state_of(&e, 0, 3) == CAP_QUEUED, "a/3 still queued");
	check_content(&e, a1, "dump of a1");

	fake_finish(2, -EIO, 500, "text/html");
	CHECK(state_of(&e, 0, 2) == CAP_FAILED, "a/2 failed");
	CHECK(fake_count() == 4 && cap_of(3) == a3, "a failure starts the next too");
	/* a 200 that is an HTML page is no dump */
	CHECK(fake_body(3, "<html>", 6, 6) == 0, "progress");
	fake_finish(3, 0, 200, "text/html");
	CHECK(state_of(&e, 0, 3) == CAP_FAILED, "a 200 text/html is a failure");
	fake_complete(1, "dump of b1");
	CHECK(spool_files(&e) == 2, "a/1 and b/1 spooled: %d", spool_files(&e));
	CHECK(fake_count() == 4, "nothing else submitted: %d", fake_count());
	CHECK(status_int(&e, "captures_started") == 4, "status.json captures_started");
	CHECK(status_int(&e, "captures_failed") == 2, "status.json captures_failed");
	CHECK(status_int(&e, "spool_bytes") == 20, "status.json spool_bytes %lld",
	      (long long)status_int(&e, "spool_bytes"));

	{
		int fd;
		ssize_t n = cache_capture_wait(e.c, a2, 10, 0, interrupted_now, &fd);
		CHECK(n == -EIO, "a reader of the failed a/2 gets its error: %zd", n);
	}
	/* a failed capture is replaced by a fresh one on the next open */
	{
		struct capture *again = start(&e, 0, 2);

		CHECK(again != a2, "a new capture after a failure");
		CHECK(fake_count() == 5 && cap_of(4) == again, "and it goes out at once");
		fake_complete(4, "a2 again");
		check_content(&e, again, "a2 again");
		cache_capture_release(e.c, again);
	}
	CHECK(cache_capture_drop(e.c, 0, NULL, 1, KUDU_DUMP_MINI) == 0, "rm of a complete dump");
	CHECK(state_of(&e, 0, 1) == CAP_IDLE, "gone after rm");
	check_content(&e, a1, "dump of a1"); /* an open reader keeps its bytes */
	cache_capture_release(e.c, a1);
	cache_capture_release(e.c, a2);
	cache_capture_release(e.c, a3);
	cache_capture_release(e.c, b1);
	env_close(&e);
}

/* The last reader of a queued dump leaves: it leaves the queue (a dump
 * pauses the process; nobody wants it). One reader of two leaving does not
 * dequeue it, and a dump on the wire is never abandoned. */
static void test_reader_leaves_queue(void)
{
	struct env e;
	struct capture *a1, *a2, *a2b = NULL, *a3, *again;

	env_open(&e, 1 << 20);
	a1 = start(&e, 0, 1);
	a2 = start(&e, 0, 2);
	CHECK(cache_capture_acquire(e.c, 0, NULL, 2, KUDU_DUMP_MINI, &a2b) == 0 && a2b == a2,
	      "a second reader shares the capture");
	a3 = start(&e, 0, 3);
	CHECK(state_of(&e, 0, 2) == CAP_QUEUED, "a/2 queued");

	cache_capture_release(e.c, a2b);
	CHECK(state_of(&e, 0, 2) == CAP_QUEUED, "one reader of two left: still queued");
	cache_capture_release(e.c, a2);
	CHECK(state_of(&e, 0, 2) == CAP_IDLE, "the last reader left: idle");

	cache_capture_release(e.c, a1); /* on the wire: goes on without readers */
	CHECK(state_of(&e, 0, 1) == CAP_FETCHING, "a fetching dump stays on the wire");
	fake_complete(0, "a1");
	CHECK(state_of(&e, 0, 1) == CAP_COMPLETE, "and completes");
	CHECK(fake_count() == 2 && cap_of(1) == a3, "next is a/3, a/2 was skipped");

	/* opened again, a/2 queues behind a/3 like any new capture */
	again = start(&e, 0, 2);
	CHECK(state_of(&e, 0, 2) == CAP_QUEUED, "a/2 queued again");
	fake_complete(1, "a3");
	CHECK(fake_count() == 3 && cap_of(2) == again, "a/2 goes out after a/3");
	fake_complete(2, "a2");
	check_content(&e, again, "a2");
	cache_capture_release(e.c, again);
	cache_capture_release(e.c, a3);
	env_close(&e);
}

/* cache_max: finished captures nobody reads are evicted, least recently
 * used first; one still read is not, and a download that cannot fit fails
 * with ENOSPC (also at once when Content-Length says so). */
static void test_eviction(void)
{
	struct env e;
	struct capture *x, *y, *z, *w, *v;
	char big[401], err_body[16];
	uint64_t size;

	memset(big, 'x', 400);
	big[400] = '\0';
	env_open(&e, 1000);
	x = start(&e, 0, 1);
	fake_complete(0, big);
	y = start(&e, 0, 2);
	fake_complete(1, big);
	CHECK(status_int(&e, "spool_bytes") == 800, "spool_bytes 800: %lld",
	      (long long)status_int(&e, "spool_bytes"));
	/* x read after y: y is the least recently used */
	check_content(&e, y, big);
	check_content(&e, x, big);
	cache_capture_release(e.c, y);
	cache_capture_release(e.c, x);

	z = start(&e, 0, 3);
	CHECK(fake_body(2, big, 400, 400) == 0, "z fits after an eviction");
	CHECK(cache_capture_size(e.c, 0, NULL, 2, KUDU_DUMP_MINI, &size) == -ENOENT, "y evicted");
	CHECK(cache_capture_size(e.c, 0, NULL, 1, KUDU_DUMP_MINI, &size) == 0 && size == 400,
	      "x (used more recently) kept");
	CHECK(status_int(&e, "spool_bytes") == 800, "spool_bytes after eviction");
	fake_finish(2, 0, 200, "application/octet-stream");
	CHECK(state_of(&e, 0, 3) == CAP_COMPLETE, "z complete");

	/* x and z both have a reader now: nothing may go */
	CHECK(cache_capture_acquire(e.c, 0, NULL, 1, KUDU_DUMP_MINI, &x) == 0, "reopen x");
	w = start(&e, 0, 4);
	CHECK(fake_body(3, big, 400, -1) == ENOSPC, "no room, nothing evictable: ENOSPC");
	fake_finish(3, -ENOSPC, 200, "");
	CHECK(state_of(&e, 0, 4) == CAP_FAILED, "w failed");
	CHECK(cache_capture_size(e.c, 0, NULL, 1, KUDU_DUMP_MINI, &size) == 0, "x (read) kept");
	CHECK(cache_capture_size(e.c, 0, NULL, 3, KUDU_DUMP_MINI, &size) == 0, "z (read) kept");
	{
		int fd;
		ssize_t n = cache_capture_wait(e.c, w, 1, 0, interrupted_now, &fd);
		CHECK(n == -ENOSPC, "w's reader gets ENOSPC: %zd", n);
	}
	CHECK(status_int(&e, "spool_bytes") == 800, "a failure gives its bytes back");

	/* bigger than cache_max: refused on the headers, before any byte */
	v = start(&e, 0, 5);
	CHECK(fake_body(4, "", 0, 5000) == ENOSPC, "Content-Length > cache_max: ENOSPC");
	fake_finish(4, -ENOSPC, 200, "");
	CHECK(cache_capture_size(e.c, 0, NULL, 1, KUDU_DUMP_MINI, &size) == 0, "x untouched");

	/* a partial dump never stays in the spool */
	snprintf(err_body, sizeof(err_body), "%s", "partial");
	cache_capture_release(e.c, z);
	cache_capture_release(e.c, w);
	cache_capture_release(e.c, v);
	w = start(&e, 0, 6);
	CHECK(fake_body(5, err_body, strlen(err_body), 100) == 0, "partial body");
	CHECK(spool_files(&e) == 3, "x, z and the partial w: %d", spool_files(&e));
	fake_finish(5, -ECONNRESET, 200, "");
	CHECK(spool_files(&e) == 2, "the cut dump's spool is removed: %d", spool_files(&e));
	cache_capture_release(e.c, w);
	cache_capture_release(e.c, x);
	env_close(&e);
}

/* ---- 401 ---- */

static atomic_int stop_readers;

static int interrupted_on_stop(void)
{
	return atomic_load(&stop_readers);
}

struct reader {
	struct env *e;
	struct capture *cap;
	size_t want;
	char buf[256];
	ssize_t n;
	atomic_bool done;
	pthread_t thread;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;

	r->n = cache_capture_read(r->e->c, r->cap, r->buf, r->want, 0, interrupted_on_stop);
	atomic_store(&r->done, true);
	return NULL;
}

static void reader_start(struct reader *r)
{
	atomic_store(&stop_readers, 0);
	atomic_store(&r->done, false);
	r->n = 0;
	pthread_create(&r->thread, NULL, reader_main, r);
}

/* Join the reader if it returns within 10 s; else interrupt it (a broken
 * cache must fail this test, not hang it) and report false. */
static bool reader_join(struct reader *r)
{
	struct timespec tick = { 0, 10 * 1000000L };
	double deadline = kudu_now() + 10;
	bool in_time;

	while (!atomic_load(&r->done) && kudu_now() < deadline)
		nanosleep(&tick, NULL);
	in_time = atomic_load(&r->done);
	if (!in_time)
		atomic_store(&stop_readers, 1);
	pthread_join(r->thread, NULL);
	return in_time;
}

/* A 401 on a token_command app's dump re-runs token_command once (in the
 * reader's thread) and submits the same dump again; the waiting reader gets
 * the bytes of the second attempt as they land. A second 401 is final. An
 * app without a token is never retried. */
static void test_401_retry(void)
{
	struct env e;
	struct reader r = { 0 };
	char calls[512], cmd[700];
	struct kudu_app *a;

	snprintf(calls, sizeof(calls), "%s/token-calls", tmpdir);
	unlink(calls);
	env_open(&e, 1 << 20);
	a = e.cfg.apps[0];
	snprintf(cmd, sizeof(cmd), "echo run >> '%s'; echo fresh-token", calls);
	a->token_command = strdup(cmd);
	a->cred = KUDU_CRED_TOKEN;

	r.e = &e;
	r.want = 20;
	r.cap = start(&e, 0, 1);
	fake_finish(0, -EACCES, 401, "text/html");
	CHECK(state_of(&e, 0, 1) == CAP_FAILED, "failed on the 401");
	reader_start(&r);
	if (!fake_wait_count(2))
		atomic_store(&stop_readers, 1); /* the reader must not wait forever */
	CHECK(fake_count() == 2, "the dump is submitted again after the 401");
	CHECK(cap_of(1) == r.cap, "the same capture");
	CHECK(count_lines(calls) == 1, "token_command ran once: %d", count_lines(calls));
	pthread_mutex_lock(&a->token_lock);
	CHECK(a->token && !strcmp(a->token, "fresh-token"), "the new token is in place");
	pthread_mutex_unlock(&a->token_lock);
	CHECK(fake_req(1) && fake_req(1)->status == 0 && fake_req(1)->err == 0 &&
		      !fake_req(1)->body,
	      "the retried request starts clean");
	CHECK(fake_req(1) && fake_body(1, "0123456789", 10, 30) == 0, "first half");
	CHECK(fake_body(1, "abcdefghij", 10, 30) == 0, "second half");
	CHECK(reader_join(&r), "the reader returned");
	CHECK(r.n == 20 && !memcmp(r.buf, "0123456789abcdefghij", 20),
	      "the reader woke with the retry's bytes: %zd", r.n);
	CHECK(fake_req(1) && fake_body(1, "0123456789", 10, 30) == 0, "the rest");
	fake_finish(1, 0, 200, "application/octet-stream");
	CHECK(state_of(&e, 0, 1) == CAP_COMPLETE, "complete after the retry");
	cache_capture_release(e.c, r.cap);

	/* 401 twice: one refresh, then the error stands */
	r.cap = start(&e, 0, 2);
	fake_finish(2, -EACCES, 401, "");
	reader_start(&r);
	if (!fake_wait_count(4))
		atomic_store(&stop_readers, 1);
	CHECK(fake_count() == 4, "retried once");
	fake_finish(3, -EACCES, 401, "");
	CHECK(reader_join(&r), "the reader returned");
	CHECK(r.n == -EACCES, "the second 401 is final: %zd", r.n);
	CHECK(fake_count() == 4, "no third attempt: %d", fake_count());
	CHECK(count_lines(calls) == 2, "token_command ran once more: %d", count_lines(calls));
	cache_capture_release(e.c, r.cap);

	/* app b has no token: a 401 is final at once */
	r.cap = start(&e, 1, 1);
	fake_finish(4, -EACCES, 401, "");
	reader_start(&r);
	CHECK(reader_join(&r), "the reader returned");
	CHECK(r.n == -EACCES, "no token, no retry: %zd", r.n);
	CHECK(fake_count() == 5, "nothing resubmitted: %d", fake_count());
	cache_capture_release(e.c, r.cap);
	env_close(&e);
	unlink(calls);
}

/* SIGTERM on a busy mount: cache_readers_leave() answers a reader waiting
 * for bytes with ENOTCONN and returns once it has; later waits get ENOTCONN
 * at once. The dump on the wire is not abandoned. */
static void test_readers_leave(void)
{
	struct env e;
	struct reader r = { 0 };
	double t0;
	int fd;

	env_open(&e, 1 << 20);
	r.e = &e;
	r.want = 10;
	r.cap = start(&e, 0, 1);
	reader_start(&r);
	/* the reader is inside cache_capture_wait once it is counted */
	t0 = kudu_now();
	for (;;) {
		pthread_mutex_lock(&e.c->cap_lock);
		unsigned waiting = e.c->readers_waiting;
		pthread_mutex_unlock(&e.c->cap_lock);
		if (waiting == 1 || kudu_now() - t0 > 10)
			break;
		struct timespec tick = { 0, 5 * 1000000L };
		nanosleep(&tick, NULL);
	}
	t0 = kudu_now();
	cache_readers_leave(e.c, 5000);
	CHECK(kudu_now() - t0 < 4, "returned when the reader left, not at the timeout: %.1f s",
	      kudu_now() - t0);
	pthread_mutex_lock(&e.c->cap_lock);
	CHECK(e.c->readers_waiting == 0, "no reader waits any more: %u", e.c->readers_waiting);
	pthread_mutex_unlock(&e.c->cap_lock);
	CHECK(reader_join(&r), "the reader returned");
	CHECK(r.n == -ENOTCONN, "the waiting reader gets ENOTCONN: %zd", r.n);
	CHECK(cache_capture_wait(e.c, r.cap, 1, 0, NULL, &fd) == -ENOTCONN,
	      "a later wait gets ENOTCONN at once");
	CHECK(state_of(&e, 0, 1) == CAP_FETCHING, "the dump stays on the wire");
	cache_capture_release(e.c, r.cap);
	env_close(&e);
}

int main(void)
{
	if (check_begin("cache") < 0)
		return 1;
	test_queue();
	test_reader_leaves_queue();
	test_eviction();
	test_401_retry();
	test_readers_leave();
	return check_end();
}
