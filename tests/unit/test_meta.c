/*
 * Unit tests for cache/meta.c, the metadata cache (process lists, details,
 * the instances of an app), without FUSE or a network: the cache's request
 * submitter is fake_submit.h's, so every request meta.c makes, blocking or
 * prefetched, is seen here and answered when a test says so. A real client
 * (no request ever goes through it) carries the interrupt hook, which tells
 * the test when a reader waits on meta_cond, and lets one leave.
 *
 * Covered: single-flight lists and details (readers of one list or one
 * process share one request, a prefetch included); list_ttl, detail_ttl and
 * neg_ttl; list errors (the client's errno passes through, a body that is no
 * list is EIO, 404 drops the list, none is served as a success, an
 * interrupted fetch is not cached); the one token refresh after a 401 of a
 * blocking fetch, and a prefetch's 401 left to the next reader's fetch (a
 * token app) or kept (no token); the details prefetch (every listed process at once, pinned
 * to the list's instance; the client, not meta.c, keeps max_conns on the
 * wire); the site/scm lookup fetching its candidates in parallel; answers
 * from another instance than the one asked (rerouted) never kept, the
 * instance dropped. Prints "N passed, M failed"; exits non-zero on failure.
 */
#include "cache/cache_priv.h"
#include "kudu/kudu.h"
#include "check.h"
#include "fake_submit.h"

#include <curl/curl.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Three processes: two w3wp (site and Kudu's, told apart by details), one other. */
#define LIST3                                                                          \
	"[{\"id\":10,\"name\":\"w3wp\",\"href\":\"x\"},{\"id\":11,\"name\":\"w3wp\"}," \
	"{\"id\":12,\"name\":\"php-cgi\"}]"
#define DETAILS_SCM "{\"id\":10,\"name\":\"w3wp\",\"is_scm_site\":true}"
#define DETAILS_SITE "{\"id\":11,\"name\":\"w3wp\",\"is_scm_site\":false}"
#define DETAILS_PHP "{\"id\":12,\"name\":\"php-cgi\"}"

/* ---- readers on their own threads ---- */

struct env {
	struct kudu_config cfg;
	struct kudu_client *client;
	struct cache *c;
};

enum op { OP_LIST, OP_DETAILS, OP_ROLE };

/* One cache call, made on its own thread (as a FUSE worker would): a
 * blocking fetch waits until the test answers its request. */
struct call {
	struct env *e;
	size_t app;
	const char *inst;
	struct cache_list *list;
	struct cache_blob *blob;
	pthread_t thread;
	enum op op;
	int pid;             /* OP_DETAILS */
	enum kudu_role role; /* OP_ROLE */
	int rc;
	bool counted;   /* the hook counts this thread once it waits for another's fetch */
	bool interrupt; /* the hook says this thread's reader has left (Ctrl-C) */
	atomic_bool done;
	char dirname[256];
};

static _Thread_local const struct call *tls_call;
static _Thread_local bool tls_counted;
static atomic_int waiters;   /* counted calls that called the hook */
static atomic_bool stop_all; /* a broken cache must fail a test, not hang it */

/* The client's interrupt hook: meta.c asks it each time before it waits on
 * meta_cond for another reader's fetch (and a blocking fetch every 200 ms). */
static int hook(void)
{
	const struct call *k = tls_call;

	if (atomic_load(&stop_all))
		return 1;
	if (!k)
		return 0;
	if (k->counted && !tls_counted) {
		tls_counted = true;
		atomic_fetch_add(&waiters, 1);
	}
	return k->interrupt;
}

static void *call_main(void *arg)
{
	struct call *k = arg;
	struct cache *c = k->e->c;

	tls_call = k;
	tls_counted = false;
	if (k->op == OP_LIST)
		k->rc = cache_get_list(c, k->app, k->inst, &k->list);
	else if (k->op == OP_DETAILS)
		k->rc = cache_get_details(c, k->app, k->inst, k->pid, &k->blob);
	else
		k->rc = cache_find_role(c, k->app, k->inst, k->role, k->dirname,
					sizeof(k->dirname));
	atomic_store(&k->done, true);
	return NULL;
}

static void tick(void)
{
	struct timespec t = { 0, 2 * 1000000L };

	nanosleep(&t, NULL);
}

static void call_start(struct call *k)
{
	k->rc = 1;
	k->list = NULL;
	k->blob = NULL;
	k->dirname[0] = '\0';
	atomic_store(&k->done, false);
	pthread_create(&k->thread, NULL, call_main, k);
}

/* Join k if it returns within 10 s; else make every wait and request end
 * (the test has failed) and report false. */
static bool call_join(struct call *k)
{
	double deadline = kudu_now() + 10;
	bool in_time;

	while (!atomic_load(&k->done) && kudu_now() < deadline)
		tick();
	in_time = atomic_load(&k->done);
	if (!in_time) {
		atomic_store(&stop_all, true);
		while (!atomic_load(&k->done)) {
			fake_cancel_all();
			tick();
		}
	}
	pthread_join(k->thread, NULL);
	atomic_store(&stop_all, false);
	return in_time;
}

/* Run k expecting the cache to answer it without a request: true if it
 * returned and submitted none. One it did submit is cancelled. */
static bool call_cached(struct call *k)
{
	int before = fake_count();
	double deadline = kudu_now() + 10;
	bool ok;

	call_start(k);
	while (!atomic_load(&k->done) && fake_count() == before && kudu_now() < deadline)
		tick();
	ok = atomic_load(&k->done) && fake_count() == before;
	if (!ok)
		fake_cancel_all();
	call_join(k);
	return ok;
}

/* Wait (at most 10 s) until n counted calls wait for another's fetch. */
static bool wait_waiters(int n)
{
	double deadline = kudu_now() + 10;

	while (atomic_load(&waiters) < n && kudu_now() < deadline)
		tick();
	return atomic_load(&waiters) >= n;
}

/* ---- fixtures ---- */

/* App a: two configured instances (no discovery request), a token_command
 * when token is set; app b: neither. */
static void env_open(struct env *e, bool token)
{
	char err[KUDU_ERRLEN];
	const char *conf = write_file("kudufs.conf",
				      "[app a]\nurl = http://127.0.0.1:9\ninstances = i1, i2\n"
				      "[app b]\nurl = http://127.0.0.1:9\n",
				      0600);
	int rc;

	fake_reset();
	atomic_store(&waiters, 0);
	kudu_config_init(&e->cfg);
	rc = kudu_config_load(&e->cfg, conf, true, err, sizeof(err));
	CHECK(rc == 0 && e->cfg.napps == 2, "config: %s", err);
	e->cfg.cache_dir = strdup(tmpdir);
	if (token) {
		char cmd[700];

		snprintf(cmd, sizeof(cmd), "echo run >> '%s'; echo fresh-token",
			 path_in_tmp("token-calls"));
		e->cfg.apps[0]->token_command = strdup(cmd);
		e->cfg.apps[0]->cred = KUDU_CRED_TOKEN;
	}
	if (kudu_client_new(&e->client, &e->cfg) < 0 ||
	    cache_new(&e->c, &e->cfg, e->client, err, sizeof(err)) < 0) {
		printf("client or cache: %s\n", err);
		exit(1);
	}
	kudu_client_set_interrupted(e->client, hook);
	e->c->submit = fake_submit;
}

static void env_close(struct env *e)
{
	fake_cancel_all(); /* the prefetches nobody answered */
	kudu_client_free(e->client);
	cache_free(e->c);
	kudu_config_free(&e->cfg);
}

/* The view of (app, inst) under meta_lock, NULL if there is none. */
static struct view_meta *view_locked(struct env *e, size_t app, const char *inst)
{
	struct view_meta *v;

	if (!inst)
		return &e->c->meta[app].view;
	for (v = e->c->meta[app].insts; v; v = v->next)
		if (!strcmp(v->inst, inst))
			return v;
	return NULL;
}

/* Make the view's list (err: its last error) `age` seconds old. */
static void age_view(struct env *e, size_t app, const char *inst, bool err, double age)
{
	struct view_meta *v;

	pthread_mutex_lock(&e->c->meta_lock);
	if ((v = view_locked(e, app, inst)) && err)
		v->list_err_at = kudu_now() - age;
	else if (v)
		v->list_at = kudu_now() - age;
	pthread_mutex_unlock(&e->c->meta_lock);
}

static void age_list(struct env *e, size_t app, const char *inst, double age)
{
	age_view(e, app, inst, false, age);
}

static void age_list_err(struct env *e, size_t app, const char *inst, double age)
{
	age_view(e, app, inst, true, age);
}

/* Make every details entry of the view `age` seconds old. */
static void age_details(struct env *e, size_t app, const char *inst, double age)
{
	struct view_meta *v;

	pthread_mutex_lock(&e->c->meta_lock);
	v = view_locked(e, app, inst);
	for (size_t b = 0; v && v->details && b < DETAIL_BUCKETS; b++)
		for (struct detail_entry *d = v->details[b]; d; d = d->next)
			d->at = kudu_now() - age;
	pthread_mutex_unlock(&e->c->meta_lock);
}

static bool has_view(struct env *e, size_t app, const char *inst)
{
	pthread_mutex_lock(&e->c->meta_lock);
	bool found = view_locked(e, app, inst) != NULL;
	pthread_mutex_unlock(&e->c->meta_lock);
	return found;
}

static bool url_is(int i, const char *tail)
{
	struct kudu_request *r = fake_req(i);
	size_t n = r ? strlen(r->url) : 0, t = strlen(tail);

	return r && n >= t && !strcmp(r->url + n - t, tail);
}

static const char *pinned(int i)
{
	struct kudu_request *r = fake_req(i);

	return r ? r->instance : "(no request)";
}

/* Index of the outstanding request for tail (a URL's end), -1 if none. */
static int find_req(const char *tail)
{
	for (int i = 0; i < fake_count(); i++)
		if (url_is(i, tail))
			return i;
	return -1;
}

/* The list of (app, inst), fetched: the request answered with body. */
static struct cache_list *fetch_list(struct env *e, size_t app, const char *inst, const char *body,
				     const char *served_by)
{
	struct call k = { .e = e, .op = OP_LIST, .app = app, .inst = inst };
	int n = fake_count();

	call_start(&k);
	CHECK(fake_wait_count(n + 1), "a list request");
	fake_json(n, body, served_by);
	CHECK(call_join(&k) && k.rc == 0, "list: %d", k.rc);
	return k.rc == 0 ? k.list : NULL;
}

/* A reader's list fetch, its request answered with the client's error err
 * (HTTP status): the reader's rc, INT_MIN if it never returned. */
static int list_failed(struct call *k, int err, long status, const char *ctype)
{
	int n = fake_count();

	call_start(k);
	CHECK(fake_wait_count(n + 1), "request");
	fake_finish(n, err, status, ctype);
	return call_join(k) ? k->rc : INT_MIN;
}

/* ---- lists ---- */

/* Readers of one list while it is on the wire wait for that request; all
 * get the same snapshot, which is server order, named "<name>-<pid>". */
static void test_list_single_flight(void)
{
	struct env e;
	struct call first = { .e = &e, .op = OP_LIST, .app = 0 }, more[4];

	env_open(&e, false);
	call_start(&first);
	CHECK(fake_wait_count(1), "the first reader's request");
	CHECK(url_is(0, "/api/processes") && !strcmp(pinned(0), ""),
	      "the app-level list, not pinned: %s", pinned(0));
	for (int i = 0; i < 4; i++) {
		more[i] = (struct call){ .e = &e, .op = OP_LIST, .app = 0, .counted = true };
		call_start(&more[i]);
	}
	CHECK(wait_waiters(4), "4 readers wait for the first one's request: %d",
	      atomic_load(&waiters));
	CHECK(fake_count() == 1, "one request for 5 readers: %d", fake_count());
	fake_json(0, LIST3, "i1");
	CHECK(call_join(&first) && first.rc == 0, "first: %d", first.rc);
	for (int i = 0; i < 4; i++) {
		CHECK(call_join(&more[i]) && more[i].rc == 0, "reader %d: %d", i, more[i].rc);
		CHECK(more[i].list == first.list, "reader %d shares the snapshot", i);
		cache_list_put(more[i].list);
	}
	CHECK(fake_count() == 1, "still one request: %d", fake_count());
	if (first.list) {
		struct cache_list *l = first.list;

		CHECK(l->nprocs == 3 && !strcmp(l->dirnames[0], "w3wp-10") &&
			      !strcmp(l->dirnames[2], "php-cgi-12"),
		      "the list: %zu processes", l->nprocs);
		CHECK(!strcmp(l->instance, "i1"), "from the instance that answered: %s",
		      l->instance);
		CHECK(cache_list_find_dir(l, "w3wp-11") == 1 &&
			      cache_list_find_dir(l, "w3wp-12") < 0,
		      "find_dir");
		cache_list_put(l);
	}
	env_close(&e);
}

/* Within list_ttl the list is served from cache; after it, fetched again
 * (a new snapshot). The TTL is list_ttl, not detail_ttl or neg_ttl. */
static void test_list_ttl(void)
{
	struct env e;
	struct call k = { .e = &e, .op = OP_LIST, .app = 0 };
	struct cache_list *l1, *l2;

	env_open(&e, false);
	CHECK(e.cfg.list_ttl == 10 && e.cfg.detail_ttl == 30 && e.cfg.neg_ttl == 2,
	      "the default TTLs this test assumes");
	l1 = fetch_list(&e, 0, NULL, LIST3, "i1");
	CHECK(call_cached(&k) && k.rc == 0 && k.list == l1, "served from cache at once");
	cache_list_put(k.list);
	age_list(&e, 0, NULL, 9);
	CHECK(call_cached(&k) && k.rc == 0 && k.list == l1, "served from cache at 9 s");
	cache_list_put(k.list);
	age_list(&e, 0, NULL, 11);
	l2 = fetch_list(&e, 0, NULL, "[{\"id\":20,\"name\":\"node\"}]", "i1");
	CHECK(fake_count() == 2, "fetched again after list_ttl: %d requests", fake_count());
	CHECK(l1 && l2 && l2 != l1 && l2->gen > l1->gen && l2->nprocs == 1,
	      "a new snapshot, a larger gen");
	CHECK(l1 && l1->nprocs == 3, "the old snapshot is unchanged for its holder");
	cache_list_put(l1);
	cache_list_put(l2);
	env_close(&e);
}

/* A list error is returned as the client mapped it (or EIO for a body that
 * is no list) and kept for neg_ttl, never as a success: not even the older
 * list is served meanwhile. 404 drops the list. An interrupted fetch says
 * nothing about the server: it is not kept. */
static void test_list_errors(void)
{
	struct env e;
	struct call k = { .e = &e, .op = OP_LIST, .app = 0 };
	struct cache_list *l;
	char msg[KUDU_ERRLEN];
	int n;

	env_open(&e, false);
	CHECK(list_failed(&k, -EIO, 500, "text/html") == -EIO, "a 500 (EIO from the client): %d",
	      k.rc);
	cache_list_error(e.c, 0, NULL, msg, sizeof(msg));
	CHECK(strstr(msg, "HTTP 500") != NULL, "cache_list_error: '%s'", msg);
	CHECK(call_cached(&k) && k.rc == -EIO, "the error again within neg_ttl, no request: %d",
	      k.rc);
	age_list_err(&e, 0, NULL, 3);
	l = fetch_list(&e, 0, NULL, LIST3, "i1");
	cache_list_error(e.c, 0, NULL, msg, sizeof(msg));
	CHECK(msg[0] == '\0', "no error after a success: '%s'", msg);

	/* a 200 whose body is no list */
	age_list(&e, 0, NULL, 11);
	n = fake_count();
	call_start(&k);
	CHECK(fake_wait_count(n + 1), "request");
	fake_json(n, "<html>busy</html>", "i1");
	CHECK(call_join(&k) && k.rc == -EIO, "a body that is no list: EIO, %d", k.rc);
	CHECK(call_cached(&k) && k.rc == -EIO, "not the older list meanwhile: %d", k.rc);

	/* 401 without a token to refresh: final */
	age_list_err(&e, 0, NULL, 3);
	n = fake_count();
	CHECK(list_failed(&k, -EACCES, 401, "") == -EACCES, "401: EACCES, %d", k.rc);
	CHECK(fake_count() == n + 1, "no retry without a token: %d", fake_count());
	CHECK(call_cached(&k) && k.rc == -EACCES, "kept for neg_ttl: %d", k.rc);

	/* 404: the app is gone; its list goes too */
	age_list_err(&e, 0, NULL, 3);
	CHECK(list_failed(&k, -ENOENT, 404, "") == -ENOENT, "404: ENOENT, %d", k.rc);
	pthread_mutex_lock(&e.c->meta_lock);
	CHECK(e.c->meta[0].view.list == NULL, "the cached list is dropped on 404");
	pthread_mutex_unlock(&e.c->meta_lock);
	CHECK(l && l->nprocs == 3, "a holder keeps its snapshot");
	cache_list_put(l);

	/* the reader leaves (Ctrl-C) while its fetch is on the wire */
	age_list_err(&e, 0, NULL, 3);
	k.interrupt = true;
	n = fake_count();
	call_start(&k);
	CHECK(fake_wait_count(n + 1), "request");
	{
		double deadline = kudu_now() + 10;
		struct kudu_request *r = fake_req(n);

		while (r && !atomic_load(&r->cancel) && kudu_now() < deadline)
			tick();
		CHECK(r && atomic_load(&r->cancel) == EINTR, "the request is cancelled");
	}
	fake_finish(n, 0, 200, ""); /* the client ends a cancelled request with -cancel */
	CHECK(call_join(&k) && k.rc == -EINTR, "the reader gets EINTR: %d", k.rc);
	k.interrupt = false;
	l = fetch_list(&e, 0, NULL, LIST3, "i1");
	CHECK(fake_count() == n + 2 && l, "the next reader fetches at once, no cached EINTR");
	cache_list_put(l);
	env_close(&e);
}

/* A 401 on a token_command app's list: token_command runs once and the
 * same request goes out again (through the cache's submitter); a second
 * 401 is final. */
static void test_list_401_refresh(void)
{
	struct env e;
	struct call k = { .e = &e, .op = OP_LIST, .app = 0 };
	struct kudu_app *a;

	env_open(&e, true);
	a = e.cfg.apps[0];
	unlink(path_in_tmp("token-calls"));
	call_start(&k);
	CHECK(fake_wait_count(1), "request");
	fake_finish(0, -EACCES, 401, "");
	CHECK(fake_wait_count(2), "submitted again after the 401");
	CHECK(count_lines(path_in_tmp("token-calls")) == 1, "token_command ran once");
	pthread_mutex_lock(&a->token_lock);
	CHECK(a->token && !strcmp(a->token, "fresh-token"), "the new token is in place");
	pthread_mutex_unlock(&a->token_lock);
	CHECK(fake_req(1) && fake_req(1)->status == 0 && !fake_req(1)->body &&
		      url_is(1, "/api/processes"),
	      "the same list request, reset");
	fake_json(1, LIST3, "i1");
	CHECK(call_join(&k) && k.rc == 0 && k.list && k.list->nprocs == 3, "the retry's list: %d",
	      k.rc);
	cache_list_put(k.list);

	age_list(&e, 0, NULL, 11);
	call_start(&k);
	CHECK(fake_wait_count(3), "request");
	fake_finish(2, -EACCES, 401, "");
	CHECK(fake_wait_count(4), "retried");
	fake_finish(3, -EACCES, 401, "");
	CHECK(call_join(&k) && k.rc == -EACCES, "the second 401 is final: %d", k.rc);
	CHECK(fake_count() == 4, "no third attempt: %d", fake_count());
	CHECK(count_lines(path_in_tmp("token-calls")) == 2, "token_command ran once more");
	env_close(&e);
}

/* ---- details ---- */

/* A prefetch's 401 on a token_command app (the token expired) is not kept:
 * the transfer thread runs no token command, so the next reader of those
 * details fetches them itself, which refreshes the token and retries once.
 * Without a token to refresh the 401 is kept (for neg_ttl) as before. */
/* A fresh env (a token_command app if token) whose details prefetch of pid
 * 11 was answered 401; the list it came from (NULL, env closed, if none). */
static struct cache_list *prefetch_answered_401(struct env *e, bool token)
{
	struct cache_list *l;
	int r11;

	env_open(e, token);
	unlink(path_in_tmp("token-calls"));
	l = fetch_list(e, 0, NULL, LIST3, "i1");
	if (!l) {
		env_close(e);
		return NULL;
	}
	cache_prefetch_details(e->c, 0, NULL, l);
	r11 = find_req("/api/processes/11");
	CHECK(r11 > 0, "the prefetch of pid 11");
	fake_finish(r11, -EACCES, 401, "");
	return l;
}

static void test_prefetch_401_left_to_the_reader(void)
{
	struct env e;
	struct call k = { .e = &e, .op = OP_DETAILS, .app = 0, .pid = 11 };
	struct cache_list *l;
	int n;

	if (!(l = prefetch_answered_401(&e, true)))
		return;
	CHECK(count_lines(path_in_tmp("token-calls")) <= 0, "no token command on the prefetch");
	n = fake_count();
	call_start(&k);
	CHECK(fake_wait_count(n + 1), "the reader fetches the details itself");
	fake_finish(n, -EACCES, 401, "");
	CHECK(fake_wait_count(n + 2), "and retries after the 401");
	CHECK(count_lines(path_in_tmp("token-calls")) == 1,
	      "with a fresh token (command ran once)");
	fake_json(n + 1, DETAILS_SITE, "i1");
	CHECK(call_join(&k) && k.rc == 0 && k.blob && !k.blob->is_scm,
	      "the reader gets the details, not the prefetch's EACCES: %d", k.rc);
	cache_blob_put(k.blob);
	cache_list_put(l);
	env_close(&e);

	/* no token: the prefetch's 401 is the answer, kept for neg_ttl */
	if (!(l = prefetch_answered_401(&e, false)))
		return;
	n = fake_count();
	k.counted = false;
	CHECK(call_cached(&k) && k.rc == -EACCES, "EACCES from cache: %d", k.rc);
	CHECK(fake_count() == n, "no request: %d", fake_count() - n);
	cache_list_put(l);
	env_close(&e);
}

/* The prefetch (readdir) submits every listed process's details at once,
 * pinned to the instance the list came from; the client, not meta.c, keeps
 * max_conns of them on the wire. A process in flight or fresh is not asked
 * again; a reader of one in flight waits for it; a 404 says gone. */
static void test_details_prefetch(void)
{
	struct env e;
	struct call k = { .e = &e, .op = OP_DETAILS, .app = 0, .pid = 10, .counted = true };
	struct cache_list *l;
	size_t size = 0;
	int r10, r11, r12;

	env_open(&e, false);
	l = fetch_list(&e, 0, NULL, LIST3, "i1");
	if (!l) {
		env_close(&e);
		return;
	}
	cache_prefetch_details(e.c, 0, NULL, l);
	CHECK(fake_count() == 4, "3 details requests at once, none answered: %d", fake_count() - 1);
	r10 = find_req("/api/processes/10");
	r11 = find_req("/api/processes/11");
	r12 = find_req("/api/processes/12");
	CHECK(r10 > 0 && r11 > 0 && r12 > 0, "one per process");
	for (int i = 1; i < fake_count(); i++)
		CHECK(!strcmp(pinned(i), "i1"), "pinned to the list's instance: '%s'", pinned(i));
	cache_prefetch_details(e.c, 0, NULL, l);
	CHECK(fake_count() == 4, "in flight: not asked again: %d", fake_count());

	call_start(&k);
	CHECK(wait_waiters(1), "a reader of pid 10 waits for the prefetch");
	CHECK(fake_count() == 4, "and adds no request: %d", fake_count());
	fake_json(r10, DETAILS_SCM, "i1");
	CHECK(call_join(&k) && k.rc == 0 && k.blob && k.blob->is_scm,
	      "the reader gets the prefetched details: %d", k.rc);
	CHECK(k.blob && strstr(k.blob->data, "\"is_scm_site\": true") != NULL,
	      "pretty-printed details");
	cache_blob_put(k.blob);

	fake_finish(r11, -ENOENT, 404, "");
	CHECK(cache_proc_gone(e.c, 0, NULL, 11), "a 404 says the process is gone");
	k.pid = 11;
	k.counted = false;
	CHECK(call_cached(&k) && k.rc == -ENOENT, "ENOENT from cache: %d", k.rc);
	fake_json(r12, DETAILS_PHP, "i1");
	CHECK(cache_peek_part(e.c, 0, NULL, 12, CACHE_PART_DETAILS, &size) == 0 && size > 0,
	      "peek: %zu bytes", size);
	cache_prefetch_details(e.c, 0, NULL, l);
	CHECK(fake_count() == 4, "all fresh: nothing asked: %d", fake_count());

	/* the 404 is kept for neg_ttl, details for detail_ttl */
	age_details(&e, 0, NULL, 3);
	cache_prefetch_details(e.c, 0, NULL, l);
	CHECK(fake_count() == 5 && find_req("/api/processes/11") == 4,
	      "after neg_ttl only the gone one is asked again: %d", fake_count());
	fake_json(4, "{\"id\":11,\"name\":\"w3wp\"}", "i1");
	age_details(&e, 0, NULL, 31);
	cache_prefetch_details(e.c, 0, NULL, l);
	CHECK(fake_count() == 8, "after detail_ttl all three: %d", fake_count());
	cache_list_put(l);
	env_close(&e);
}

/* The site/scm link: the role holders' details (both w3wp, not php-cgi) are
 * fetched in parallel, and the answer comes from their is_scm_site. */
static void test_role_parallel(void)
{
	struct env e;
	struct call k = { .e = &e, .op = OP_ROLE, .app = 0, .role = KUDU_ROLE_SITE };
	struct cache_list *l;

	env_open(&e, false);
	l = fetch_list(&e, 0, NULL, LIST3, "i1");
	call_start(&k);
	CHECK(fake_wait_count(3), "two details requests");
	CHECK(find_req("/api/processes/10") > 0 && find_req("/api/processes/11") > 0,
	      "both w3wp asked before either answered");
	fake_json(find_req("/api/processes/11"), DETAILS_SITE, "i1");
	fake_json(find_req("/api/processes/10"), DETAILS_SCM, "i1");
	CHECK(call_join(&k) && k.rc == 0 && !strcmp(k.dirname, "w3wp-11"), "site: %d '%s'", k.rc,
	      k.dirname);
	CHECK(fake_count() == 3, "php-cgi is no candidate: %d requests", fake_count());
	k.role = KUDU_ROLE_SCM;
	CHECK(call_cached(&k) && k.rc == 0 && !strcmp(k.dirname, "w3wp-10"),
	      "scm from cache: %d '%s'", k.rc, k.dirname);
	cache_list_put(l);
	env_close(&e);
}

/* ---- instances ---- */

/* `ls instances`: every instance's list is fetched at once, pinned to it;
 * a reader of one waits for that request. */
static void test_prefetch_lists(void)
{
	struct env e;
	struct call k = { .e = &e, .op = OP_LIST, .app = 0, .inst = "i2", .counted = true };
	struct cache_instances *il = NULL;

	env_open(&e, false);
	CHECK(cache_get_instances(e.c, 0, false, &il) == 0 && il && il->n == 2,
	      "the configured instances, no request");
	CHECK(fake_count() == 0, "configured: no discovery request: %d", fake_count());
	if (!il) {
		env_close(&e);
		return;
	}
	cache_prefetch_lists(e.c, 0, il);
	CHECK(fake_count() == 2 && !strcmp(pinned(0), "i1") && !strcmp(pinned(1), "i2"),
	      "one list per instance, pinned: %d", fake_count());
	call_start(&k);
	CHECK(wait_waiters(1), "a reader of i2's list waits for the prefetch");
	fake_json(1, LIST3, "i2");
	CHECK(call_join(&k) && k.rc == 0 && k.list && !strcmp(k.list->instance, "i2"),
	      "i2's list: %d", k.rc);
	CHECK(fake_count() == 2, "no request of its own: %d", fake_count());
	cache_list_put(k.list);
	cache_instances_put(il);
	env_close(&e);
}

/* A request pinned to an instance that another instance answered: nothing
 * of the answer is kept, the instance leaves instances/ and its view goes;
 * the app-level view whose list came from it fetches its list again, and
 * its details then come from the new instance. */
static void test_rerouted(void)
{
	struct env e;
	struct call k = { .e = &e, .op = OP_LIST, .app = 0, .inst = "i1" };
	struct cache_instances *il = NULL;
	struct cache_list *l;

	env_open(&e, false);
	CHECK(cache_get_instances(e.c, 0, false, &il) == 0 && il && il->n == 2, "i1, i2");
	cache_instances_put(il);
	call_start(&k);
	CHECK(fake_wait_count(1) && !strcmp(pinned(0), "i1"), "pinned to i1");
	fake_rerouted(0, "i2");
	CHECK(call_join(&k) && k.rc == -ENOENT, "i1's list: ENOENT, %d", k.rc);
	CHECK(!has_view(&e, 0, "i1"), "i1's view is gone");
	il = NULL;
	CHECK(cache_get_instances(e.c, 0, false, &il) == 0 && il && il->n == 1 &&
		      !strcmp(il->ids[0], "i2"),
	      "instances/ without i1");
	cache_instances_put(il);

	/* the app-level view is on i2; a details request of it rerouted */
	l = fetch_list(&e, 0, NULL, LIST3, "i2");
	k = (struct call){ .e = &e, .op = OP_DETAILS, .app = 0, .pid = 12 };
	call_start(&k);
	CHECK(fake_wait_count(3) && !strcmp(pinned(2), "i2"), "details pinned to i2: '%s'",
	      pinned(2));
	fake_rerouted(2, "i3");
	CHECK(call_join(&k) && k.rc == -ENOENT, "details: ENOENT, %d", k.rc);
	cache_list_put(l);
	l = fetch_list(&e, 0, NULL, LIST3, "i3");
	CHECK(fake_count() == 4 && l && !strcmp(l->instance, "i3"),
	      "the app-level list is fetched again (its instance went): %d", fake_count());
	call_start(&k);
	CHECK(fake_wait_count(5) && !strcmp(pinned(4), "i3"), "details asked again, of i3: '%s'",
	      pinned(4));
	fake_json(4, DETAILS_PHP, "i3");
	CHECK(call_join(&k) && k.rc == 0, "i3's details: %d", k.rc);
	cache_blob_put(k.blob);
	cache_list_put(l);
	env_close(&e);
}

int main(void)
{
	if (check_begin("meta") < 0)
		return 1;
	curl_global_init(CURL_GLOBAL_DEFAULT);
	test_list_single_flight();
	test_list_ttl();
	test_list_errors();
	test_list_401_refresh();
	test_details_prefetch();
	test_prefetch_401_left_to_the_reader();
	test_role_parallel();
	test_prefetch_lists();
	test_rerouted();
	curl_global_cleanup();
	return check_end();
}
