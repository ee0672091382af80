/*
 * A fake request submitter for the cache's unit tests (test_cache.c,
 * test_meta.c): put in the cache's c->submit instead of kudu_client_submit,
 * it records each request and completes it only when a test says so, the
 * way the transfer thread would (for a dump: the body through on_body, with
 * req->bytes counting it; for JSON: req->body; then on_done).
 * Blocking fetches (cache_fetch) go through it too: their caller waits in
 * kudu_client_fetch_via until the test completes the request.
 *
 * Header-only, like check.h: one test program includes it once.
 */
#ifndef KUDUFS_TESTS_UNIT_FAKE_SUBMIT_H
#define KUDUFS_TESTS_UNIT_FAKE_SUBMIT_H

#include "kudu/kudu.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define FAKE_MAX 256

static struct {
	pthread_mutex_t lock;                /* guards reqs, n */
	pthread_cond_t cond;                 /* a request was submitted */
	struct kudu_request *reqs[FAKE_MAX]; /* in submission order; NULL once completed */
	int n;
} fake = { PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, { NULL }, 0 };

static inline void fake_submit(struct kudu_client *client, struct kudu_request *req)
{
	(void)client;
	pthread_mutex_lock(&fake.lock);
	if (fake.n < FAKE_MAX)
		fake.reqs[fake.n++] = req;
	pthread_cond_broadcast(&fake.cond);
	pthread_mutex_unlock(&fake.lock);
}

static inline int fake_count(void)
{
	pthread_mutex_lock(&fake.lock);
	int n = fake.n;
	pthread_mutex_unlock(&fake.lock);
	return n;
}

/* Wait (at most 10 s) until n requests were submitted. */
static inline bool fake_wait_count(int n)
{
	struct timespec ts = kudu_deadline_in(CLOCK_REALTIME, 10000);
	bool ok;

	pthread_mutex_lock(&fake.lock);
	while (fake.n < n && pthread_cond_timedwait(&fake.cond, &fake.lock, &ts) == 0)
		;
	ok = fake.n >= n;
	pthread_mutex_unlock(&fake.lock);
	return ok;
}

/* Request i (submission order), NULL if there is none or it was completed. */
static inline struct kudu_request *fake_req(int i)
{
	pthread_mutex_lock(&fake.lock);
	struct kudu_request *r = i >= 0 && i < fake.n ? fake.reqs[i] : NULL;
	pthread_mutex_unlock(&fake.lock);
	return r;
}

/* Deliver body bytes [from, from+len) of dump request i, as the transfer
 * thread does: req->bytes counts them, then on_body takes them.
 * Returns on_body's verdict (0 or a positive errno). */
static inline int fake_body(int i, const char *data, size_t len, int64_t content_length)
{
	struct kudu_request *req = fake_req(i);

	if (!req)
		return -1;
	req->status = 200;
	req->length = content_length;
	req->bytes += len;
	return req->on_body(req, data, len);
}

/* End request i: err 0 with status 200 is a success, else a failure (a
 * cancelled request, as the client does, ends with -cancel). The request
 * may be freed by on_done, so the fake forgets it first. */
static inline void fake_finish(int i, int err, long status, const char *content_type)
{
	struct kudu_request *req = fake_req(i);

	if (!req)
		return;
	pthread_mutex_lock(&fake.lock);
	fake.reqs[i] = NULL;
	pthread_mutex_unlock(&fake.lock);
	if (!err && atomic_load(&req->cancel))
		err = -atomic_load(&req->cancel);
	req->err = err;
	req->status = status;
	snprintf(req->content_type, sizeof(req->content_type), "%s", content_type);
	if (err)
		snprintf(req->errmsg, sizeof(req->errmsg), "fake: %s (HTTP %ld)", strerror(-err),
			 status);
	req->on_done(req);
}

static inline void fake_complete(int i, const char *data)
{
	int rc = fake_body(i, data, strlen(data), (int64_t)strlen(data));

	fake_finish(i, rc ? -rc : 0, 200, rc ? "" : "application/octet-stream");
}

/* Answer JSON request i with a 200 and body, from instance served_by ("" if
 * the server named none). */
static inline void fake_json(int i, const char *body, const char *served_by)
{
	struct kudu_request *req = fake_req(i);

	if (!req)
		return;
	req->body = strdup(body);
	req->body_len = strlen(body);
	req->bytes = req->body_len;
	snprintf(req->served_by, sizeof(req->served_by), "%s", served_by);
	fake_finish(i, 0, 200, "application/json");
}

/* Request i, pinned to an instance, was answered by another one (other):
 * what the client makes of it (nothing of the body, -ENOENT, rerouted). */
static inline void fake_rerouted(int i, const char *other)
{
	struct kudu_request *req = fake_req(i);

	if (!req)
		return;
	req->rerouted = true;
	snprintf(req->served_by, sizeof(req->served_by), "%s", other);
	fake_finish(i, -ENOENT, 200, "");
}

/* What kudu_client_free does: everything outstanding ends with ECANCELED
 * (on_done may submit a queued dump: that one is cancelled too). */
static inline void fake_cancel_all(void)
{
	for (int i = 0; i < fake_count(); i++)
		fake_finish(i, -ECANCELED, 0, "");
}

static inline void fake_reset(void)
{
	pthread_mutex_lock(&fake.lock);
	memset(fake.reqs, 0, sizeof(fake.reqs));
	fake.n = 0;
	pthread_mutex_unlock(&fake.lock);
}

#endif
