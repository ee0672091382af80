/*
 * Dump captures: one download per (app, instance, pid, dump type), spooled to a
 * private file (spool.c) and shared by every reader. The states and who
 * moves a capture between them are drawn in cache/cache.h.
 *
 * Kudu writes every dump of a site to one fixed file on the %HOME% share
 * that all the site's instances have in common, so at most one dump request
 * per app is on the wire, whatever its instance or view; the others wait in
 * a FIFO (state queued).
 * Readers ahead of the download sleep on the capture's condition variable,
 * woken by the transfer thread as bytes land, and poll for interrupts.
 *
 * cap_lock guards the capture table, the per-app queues, spool accounting
 * and every mutable field of every capture. It is never held across pread()
 * of spool data, a request submission, token_command or a callback into fs/.
 */
#include "cache/cache_priv.h"
#include "kudu/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* For messages: the dump file's name ("minidump.dmp"). */
static const char *cap_kind(const struct capture *cap)
{
	const struct kudu_dump_kind *k = kudu_dump_kind_of(cap->type);

	return k ? k->file : "dump";
}

/* ---- reference counting (cap_lock held) ---- */

static void cap_put_locked(struct cache *c, struct capture *cap)
{
	if (--cap->refs > 0)
		return;
	(void)c;
	if (cap->fd >= 0)
		close(cap->fd);
	if (cap->path) {
		unlink(cap->path);
		free(cap->path);
	}
	pthread_cond_destroy(&cap->cond);
	cache_spool_sink_destroy(&cap->sink);
	kudu_request_reset(&cap->req);
	free(cap);
}

static void table_remove_locked(struct cache *c, struct capture *cap)
{
	struct capture **pp;

	if (!cap->in_table)
		return;
	for (pp = &c->captures; *pp; pp = &(*pp)->next) {
		if (*pp == cap) {
			*pp = cap->next;
			break;
		}
	}
	cap->in_table = false;
	if (cap->state != CAP_FAILED)
		c->spool_bytes -= cap->bytes;
	/* a finished capture's spool goes now; readers keep their fd */
	if (cap->path && cap->state != CAP_FETCHING) {
		unlink(cap->path);
		free(cap->path);
		cap->path = NULL;
	}
	cap_put_locked(c, cap);
}

static bool cap_expired(const struct cache *c, const struct capture *cap, double now)
{
	return cap->state == CAP_COMPLETE && now - cap->finished >= c->cfg->dump_ttl;
}

static struct capture *table_find_locked(struct cache *c, size_t app, const char *inst, int pid,
					 enum kudu_dump_type type)
{
	for (struct capture *cap = c->captures; cap; cap = cap->next)
		if (cap->app == app && cap->pid == pid && cap->type == type &&
		    !strcmp(cap->inst, inst))
			return cap;
	return NULL;
}

/* The instance a capture of view (app, inst) is keyed by and pinned to
 * (cache_view_instance: takes meta_lock, so never under cap_lock). Both
 * views of one instance's process share one capture. */
static void capture_inst(struct cache *c, size_t app, const char *inst, char *buf, size_t len)
{
	cache_view_instance(c, app, inst ? inst : "", buf, len);
}

/* "myapp/4292" or "myapp/0a1b2c/4292" in log lines */
static void capture_label(const struct cache *c, const struct capture *cap, char *buf, size_t len)
{
	if (cap->inst[0])
		snprintf(buf, len, "%s/%.6s/%d", c->cfg->apps[cap->app]->name, cap->inst, cap->pid);
	else
		snprintf(buf, len, "%s/%d", c->cfg->apps[cap->app]->name, cap->pid);
}

/* Evict least recently used finished captures nobody reads until `need`
 * more bytes fit under cache_max. */
static bool make_room_locked(struct cache *c, uint64_t need, const struct capture *keep)
{
	while (c->spool_bytes + need > c->cfg->cache_max) {
		struct capture *victim = NULL;

		for (struct capture *cap = c->captures; cap; cap = cap->next)
			if (cap != keep && cap->state == CAP_COMPLETE && capture_is_unused(cap) &&
			    (!victim || cap->last_used < victim->last_used))
				victim = cap;
		if (!victim)
			return false;
		char label[300];

		capture_label(c, victim, label, sizeof(label));
		kudu_log(LOG_NOTICE, "cache_max: evicting %s %s (%llu bytes)", label,
			 cap_kind(victim), (unsigned long long)victim->bytes);
		table_remove_locked(c, victim);
	}
	return true;
}

/* ---- the transfer side (transfer thread) ---- */

static int on_body(struct kudu_request *req, const char *data, size_t n)
{
	struct capture *cap = req->arg;
	struct cache *c = cap->cache;
	uint64_t bytes = req->bytes;
	int rc = -cache_spool_append(&cap->sink, data, n);

	if (rc)
		return rc;
	pthread_mutex_lock(&c->cap_lock);
	if (cap->length < 0 && req->length >= 0) {
		cap->length = req->length;
		if ((uint64_t)req->length > c->cfg->cache_max)
			rc = ENOSPC;
	}
	if (!rc && !make_room_locked(c, bytes - cap->bytes, cap))
		rc = ENOSPC;
	if (!rc) {
		c->spool_bytes += bytes - cap->bytes;
		cap->bytes = bytes;
		/* wake readers only once the bytes they wait for are there */
		if (bytes >= cap->wake_at) {
			cap->wake_at = UINT64_MAX;
			pthread_cond_broadcast(&cap->cond);
		}
	}
	pthread_mutex_unlock(&c->cap_lock);
	return rc;
}

static void start_locked(struct cache *c, struct capture *cap, struct capture **to_submit);

static void on_done(struct kudu_request *req)
{
	struct capture *cap = req->arg;
	struct cache *c = cap->cache;
	struct app_dumps *d = &c->dumps[cap->app];
	struct capture *next = NULL;
	char app[300], gone[KUDU_INSTANCE_MAX] = "", other[KUDU_INSTANCE_MAX] = "";
	int rc;

	/* what the sink still holds goes to the file before anyone may take
	 * the capture for complete; cap_lock is not held across the write */
	if (req->err == 0 && req->status == 200) {
		if ((rc = cache_spool_finish(&cap->sink)) < 0) {
			req->err = rc;
			snprintf(req->errmsg, sizeof(req->errmsg), "spool: %s", strerror(-rc));
		}
	} else {
		cache_spool_sink_close(&cap->sink);
	}
	pthread_mutex_lock(&c->cap_lock);
	capture_label(c, cap, app, sizeof(app));
	cap->finished = cap->last_used = kudu_now();
	snprintf(cap->filename, sizeof(cap->filename), "%s", req->filename);
	snprintf(cap->served_by, sizeof(cap->served_by), "%s", req->served_by);
	if (req->rerouted) {
		/* another instance answered: not one byte of it was taken */
		snprintf(gone, sizeof(gone), "%s", req->instance);
		snprintf(other, sizeof(other), "%s", req->served_by);
	}
	if (req->err == 0 && req->status == 200 && cap->bytes == 0) {
		/* a 200 with nothing in it is a proxy or front-end artefact, not a dump */
		req->err = -EIO;
		snprintf(req->errmsg, sizeof(req->errmsg), "%.400s: empty response body (HTTP 200)",
			 cap->url);
	}
	if (req->err == 0 && req->status == 200 &&
	    (!strncmp(req->content_type, "text/", 5) ||
	     !strcmp(req->content_type, "application/json"))) {
		/* a sign-in page or a proxy's error page, answered with 200 */
		req->err = -EIO;
		snprintf(req->errmsg, sizeof(req->errmsg),
			 "%.300s: not a dump (Content-Type %.100s)", cap->url, req->content_type);
	}
	if (req->err == 0 && req->status == 200) {
		cap->state = CAP_COMPLETE;
		cap->length = (int64_t)cap->bytes;
		kudu_log(LOG_INFO, "%s: %s complete, %llu bytes in %.1f s", app, cap_kind(cap),
			 (unsigned long long)cap->bytes, cap->finished - cap->started);
	} else {
		cap->err = req->err ? req->err : -EIO;
		snprintf(cap->errmsg, sizeof(cap->errmsg), "%s", req->errmsg);
		kudu_log(LOG_ERR, "%s: %s failed: %s", app, cap_kind(cap), cap->errmsg);
		if (cap->in_table)
			c->spool_bytes -= cap->bytes;
		cap->state = CAP_FAILED;
		c->stat_failures++;
		/* never leave a partial dump where it could pass for a whole one */
		if (cap->path) {
			unlink(cap->path);
			free(cap->path);
			cap->path = NULL;
		}
		/* and its blocks go now, not when the last reference closes the
		 * fd: a failed capture stays in the table until read again, and
		 * a full disk is often why it failed. A reader between wait and
		 * its read gets a short read (the file truncated, the sink's
		 * buffer gone), which cache_capture_read turns into this
		 * capture's error, never an EOF. */
		if (cap->fd >= 0 && ftruncate(cap->fd, 0) < 0)
			kudu_log(LOG_WARNING, "%s/%d: %s: cannot free its spool: %s", app, cap->pid,
				 cap_kind(cap), strerror(errno));
	}
	pthread_cond_broadcast(&cap->cond);
	if (d->active == cap) {
		d->active = NULL;
		if (d->q_head) {
			struct capture *q = d->q_head;
			d->q_head = q->qnext;
			if (!d->q_head)
				d->q_tail = NULL;
			q->qnext = NULL;
			start_locked(c, q, &next);
		}
	}
	size_t app_idx = cap->app;

	cap_put_locked(c, cap); /* the request's reference */
	pthread_mutex_unlock(&c->cap_lock);
	if (next)
		c->submit(c->client, &next->req);
	if (gone[0])
		cache_instance_gone(c, app_idx, gone, other);
}

/* Make cap the app's active dump; the caller submits *to_submit unlocked. */
static void start_locked(struct cache *c, struct capture *cap, struct capture **to_submit)
{
	int fd;

	c->dumps[cap->app].active = cap;
	cap->state = CAP_FETCHING;
	cap->started = kudu_now();
	cap->started_wall = time(NULL);
	fd = cache_spool_create_locked(c, cap, &cap->path);
	cap->fd = fd < 0 ? -1 : fd;
	/* a retried capture (token refresh) still holds the 401's error body */
	kudu_request_reset(&cap->req);
	kudu_request_init(&cap->req, c->cfg->apps[cap->app], KUDU_REQ_DUMP);
	snprintf(cap->req.url, sizeof(cap->req.url), "%s", cap->url);
	snprintf(cap->req.instance, sizeof(cap->req.instance), "%s", cap->inst);
	cache_spool_sink_open(&cap->sink, cap->fd);
	cap->req.on_body = on_body;
	cap->req.on_done = on_done;
	cap->req.arg = cap;
	cap->refs++; /* held by the request until on_done */
	c->stat_captures++;
	if (kudu_log_tracing())
		kudu_log(LOG_DEBUG, "%s/%d: %s: starting, spool %s", c->cfg->apps[cap->app]->name,
			 cap->pid, cap_kind(cap), cap->path ? cap->path : "(none)");
	if (fd < 0) {
		/* let the request fail through the normal path */
		atomic_store(&cap->req.cancel, -fd);
	}
	*to_submit = cap;
}

/* ---- the reader side (FUSE threads) ---- */

int cache_capture_acquire(struct cache *c, size_t app, const char *inst, int pid,
			  enum kudu_dump_type type, struct capture **out)
{
	struct capture *cap;
	char key[KUDU_INSTANCE_MAX];
	char url[sizeof(cap->url)];
	/* the app's platform is known by now (its list said it): a Linux-only
	 * dump of a Windows app has no route */
	int rc = kudu_url_dump(c->cfg->apps[app], pid, type, url, sizeof(url));

	if (rc < 0)
		return rc;
	capture_inst(c, app, inst, key, sizeof(key));
	pthread_mutex_lock(&c->cap_lock);
	cap = table_find_locked(c, app, key, pid, type);
	if (cap && (cap->state == CAP_FAILED || cap_expired(c, cap, kudu_now()))) {
		table_remove_locked(c, cap);
		cap = NULL;
	}
	if (!cap) {
		cap = calloc(1, sizeof(*cap));
		if (!cap) {
			pthread_mutex_unlock(&c->cap_lock);
			return -ENOMEM;
		}
		cap->cache = c;
		cap->app = app;
		snprintf(cap->inst, sizeof(cap->inst), "%s", key);
		cap->pid = pid;
		cap->type = type;
		cap->state = CAP_IDLE;
		cap->fd = -1;
		cache_spool_sink_init(&cap->sink);
		cap->length = -1;
		cap->wake_at = UINT64_MAX;
		cap->refs = 1;
		cap->in_table = true;
		memcpy(cap->url, url, sizeof(cap->url));
		pthread_cond_init(&cap->cond, NULL);
		cap->next = c->captures;
		c->captures = cap;
	}
	cap->refs++;
	cap->last_used = kudu_now();
	pthread_mutex_unlock(&c->cap_lock);
	*out = cap;
	return 0;
}

static void queue_remove_locked(struct cache *c, struct capture *cap)
{
	struct app_dumps *d = &c->dumps[cap->app];
	struct capture *prev = NULL;

	for (struct capture *q = d->q_head; q; prev = q, q = q->qnext) {
		if (q != cap)
			continue;
		if (prev)
			prev->qnext = q->qnext;
		else
			d->q_head = q->qnext;
		if (d->q_tail == q)
			d->q_tail = prev;
		q->qnext = NULL;
		return;
	}
}

void cache_capture_release(struct cache *c, struct capture *cap)
{
	pthread_mutex_lock(&c->cap_lock);
	/* The last reader of a queued dump left (Ctrl-C, a killed script):
	 * nobody wants it any more, and a dump pauses the process, so it
	 * leaves the queue. A dump already on the wire completes (dump_ttl). */
	if (capture_is_queued_for_one_reader(cap)) {
		queue_remove_locked(c, cap);
		cap->state = CAP_IDLE;
		if (kudu_log_tracing())
			kudu_log(LOG_DEBUG, "%s/%d: %s: its last reader left: out of the queue",
				 c->cfg->apps[cap->app]->name, cap->pid, cap_kind(cap));
	}
	cap_put_locked(c, cap);
	pthread_mutex_unlock(&c->cap_lock);
}

/* Start an idle capture, or queue it behind the app's running dump.
 * Drops and retakes cap_lock to submit. */
static void begin_locked(struct cache *c, struct capture *cap)
{
	struct app_dumps *d = &c->dumps[cap->app];
	struct capture *submit = NULL;

	if (cap->state != CAP_IDLE)
		return;
	if (!d->active) {
		start_locked(c, cap, &submit);
	} else {
		cap->state = CAP_QUEUED;
		if (kudu_log_tracing())
			kudu_log(LOG_DEBUG, "%s/%d: %s queued behind %d's %s",
				 c->cfg->apps[cap->app]->name, cap->pid, cap_kind(cap),
				 d->active->pid, cap_kind(d->active));
		if (d->q_tail)
			d->q_tail->qnext = cap;
		else
			d->q_head = cap;
		d->q_tail = cap;
	}
	if (submit) {
		pthread_mutex_unlock(&c->cap_lock);
		c->submit(c->client, &submit->req);
		pthread_mutex_lock(&c->cap_lock);
	}
}

/* A 401 on a dump of a token_command app: the token has likely expired
 * (AAD tokens live about an hour). Re-run the command once and take the
 * dump again. Runs in a reader's thread, never the transfer thread, since
 * the command may take seconds. Returns true when the caller should look
 * at the capture again. */
static bool retry_auth_locked(struct cache *c, struct capture *cap)
{
	struct kudu_app *app = c->cfg->apps[cap->app];
	char err[KUDU_ERRLEN];
	int rc;

	if (app->cred != KUDU_CRED_TOKEN || !cap->in_table || cap->auth == AUTH_RETRIED)
		return false;
	if (cap->auth == AUTH_REFRESHING) {
		/* another reader is re-running the command: wait for its outcome */
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_sec += 1;
		pthread_cond_timedwait(&cap->cond, &c->cap_lock, &ts);
		return true;
	}
	cap->auth = AUTH_REFRESHING;
	pthread_mutex_unlock(&c->cap_lock);
	if (kudu_log_tracing())
		kudu_log(LOG_DEBUG, "%s/%d: %s: 401, running token_command and retrying once",
			 app->name, cap->pid, cap_kind(cap));
	rc = kudu_app_refresh_token(app, err, sizeof(err));
	pthread_mutex_lock(&c->cap_lock);
	cap->auth = AUTH_RETRIED;
	if (rc == 0 && cap->state == CAP_FAILED && cap->in_table) {
		/* a 401 comes before any body byte: no reader holds this fd
		 * for a pread, so closing it here is safe */
		if (cap->fd >= 0)
			close(cap->fd);
		cap->fd = -1;
		cap->bytes = 0;
		cap->length = -1;
		cap->err = 0;
		cap->errmsg[0] = '\0';
		cap->state = CAP_IDLE;
		begin_locked(c, cap);
	} else if (rc < 0) {
		kudu_log(LOG_ERR, "%s/%d: %s: after a 401: %s", app->name, cap->pid, cap_kind(cap),
			 err);
		snprintf(cap->errmsg, sizeof(cap->errmsg), "%s", err);
	}
	pthread_cond_broadcast(&cap->cond);
	return true;
}

ssize_t cache_capture_wait(struct cache *c, struct capture *cap, size_t size, off_t off,
			   cache_interrupted_fn interrupted, int *fd)
{
	uint64_t want = (uint64_t)off + size;
	ssize_t n;

	pthread_mutex_lock(&c->cap_lock);
	if (cap->state == CAP_IDLE && !cap->in_table) {
		/* rm'd (or evicted) before its first read on this handle */
		pthread_mutex_unlock(&c->cap_lock);
		return -ENOENT;
	}
	if (c->readers_leave) {
		pthread_mutex_unlock(&c->cap_lock);
		return -ENOTCONN;
	}
	c->readers_waiting++;
	begin_locked(c, cap);
	for (;;) {
		if (cap->state == CAP_FAILED && cap->err == -EACCES && retry_auth_locked(c, cap))
			continue;
		if (cap->state == CAP_FAILED) {
			n = cap->err;
			break;
		}
		if (cap->state == CAP_COMPLETE && (uint64_t)off >= cap->bytes) {
			n = 0;
			break;
		}
		if (cap->bytes >= want ||
		    (cap->state == CAP_COMPLETE && cap->bytes > (uint64_t)off)) {
			uint64_t avail = cap->bytes - (uint64_t)off;

			n = (ssize_t)(avail < size ? avail : size);
			*fd = cap->fd;
			cap->last_used = kudu_now();
			break;
		}
		if (c->readers_leave) {
			n = -ENOTCONN; /* what the README promises a reader at SIGTERM */
			break;
		}
		if (interrupted && interrupted()) {
			n = -EINTR;
			break;
		}
		if (want < cap->wake_at)
			cap->wake_at = want;
		/* interrupts are polled, bytes are signalled */
		struct timespec ts = kudu_deadline_in(CLOCK_REALTIME, 200);
		pthread_cond_timedwait(&cap->cond, &c->cap_lock, &ts);
	}
	if (--c->readers_waiting == 0 && c->readers_leave)
		pthread_cond_broadcast(&c->readers_left);
	pthread_mutex_unlock(&c->cap_lock);
	return n;
}

void cache_readers_leave(struct cache *c, int timeout_ms)
{
	struct timespec until = kudu_deadline_in(CLOCK_REALTIME, timeout_ms);

	pthread_mutex_lock(&c->cap_lock);
	c->readers_leave = true;
	for (struct capture *cap = c->captures; cap; cap = cap->next)
		pthread_cond_broadcast(&cap->cond);
	while (c->readers_waiting > 0 &&
	       pthread_cond_timedwait(&c->readers_left, &c->cap_lock, &until) == 0)
		;
	pthread_mutex_unlock(&c->cap_lock);
}

ssize_t cache_capture_read(struct cache *c, struct capture *cap, char *buf, size_t size, off_t off,
			   cache_interrupted_fn interrupted)
{
	int fd = -1;
	ssize_t n = cache_capture_wait(c, cap, size, off, interrupted, &fd);

	ssize_t want = n;

	if (n <= 0)
		return n;
	/* our reference keeps fd open; bytes below cap->bytes never change */
	n = cache_spool_read(&cap->sink, fd, buf, (size_t)want, off);
	if (n < 0)
		return n;
	if (n < want) {
		/* The download failed under this read: on_done closed the sink
		 * (its buffer went) and is about to say why. Never an EOF, and
		 * the capture's own error, not a guess. */
		pthread_mutex_lock(&c->cap_lock);
		while (cap->state == CAP_FETCHING)
			pthread_cond_wait(&cap->cond, &c->cap_lock);
		n = cap->state == CAP_FAILED ? cap->err : -EIO;
		pthread_mutex_unlock(&c->cap_lock);
	}
	return n;
}

/* The complete, unexpired capture of (app, inst, pid, type), its size, and
 * (out != NULL) a reader's reference to it; -ENOENT if there is none. */
static int complete_find(struct cache *c, size_t app, const char *inst, int pid,
			 enum kudu_dump_type type, struct capture **out, uint64_t *size)
{
	struct capture *cap;
	char key[KUDU_INSTANCE_MAX];
	int rc = -ENOENT;

	capture_inst(c, app, inst, key, sizeof(key));
	pthread_mutex_lock(&c->cap_lock);
	cap = table_find_locked(c, app, key, pid, type);
	if (cap && cap->state == CAP_COMPLETE && !cap_expired(c, cap, kudu_now())) {
		*size = cap->bytes;
		if (out) {
			cap->refs++;
			cap->last_used = kudu_now();
			*out = cap;
		}
		rc = 0;
	}
	pthread_mutex_unlock(&c->cap_lock);
	return rc;
}

int cache_capture_size(struct cache *c, size_t app, const char *inst, int pid,
		       enum kudu_dump_type type, uint64_t *size)
{
	return complete_find(c, app, inst, pid, type, NULL, size);
}

int cache_capture_acquire_complete(struct cache *c, size_t app, const char *inst, int pid,
				   enum kudu_dump_type type, struct capture **out, uint64_t *size)
{
	return complete_find(c, app, inst, pid, type, out, size);
}

unsigned cache_capture_marks(struct cache *c, struct capture *cap)
{
	unsigned m;

	pthread_mutex_lock(&c->cap_lock);
	m = cap->fs_marks;
	pthread_mutex_unlock(&c->cap_lock);
	return m;
}

void cache_capture_mark(struct cache *c, struct capture *cap, unsigned bits)
{
	pthread_mutex_lock(&c->cap_lock);
	cap->fs_marks |= bits;
	pthread_mutex_unlock(&c->cap_lock);
}

void cache_capture_info_locked(const struct cache *c, const struct capture *cap,
			       struct capture_info *info, double now)
{
	double t;

	info->state = cap->state;
	if (cap_expired(c, cap, now))
		info->state = CAP_IDLE;
	info->bytes = cap->bytes;
	info->length = cap->length;
	t = (cap->state == CAP_FETCHING ? now : cap->finished) - cap->started;
	info->rate = (cap->started && t > 0) ? (double)cap->bytes / t : 0;
	snprintf(info->url, sizeof(info->url), "%s", cap->url);
	snprintf(info->error, sizeof(info->error), "%s",
		 cap->state == CAP_FAILED ? cap->errmsg : "");
	snprintf(info->filename, sizeof(info->filename), "%s", cap->filename);
	snprintf(info->instance, sizeof(info->instance), "%s",
		 cap->served_by[0] ? cap->served_by : cap->inst);
}

void cache_capture_get_info(struct cache *c, size_t app, const char *inst, int pid,
			    enum kudu_dump_type type, struct capture_info *info)
{
	struct capture *cap;
	char key[KUDU_INSTANCE_MAX];

	memset(info, 0, sizeof(*info));
	info->state = CAP_IDLE;
	info->length = -1;
	kudu_url_dump(c->cfg->apps[app], pid, type, info->url, sizeof(info->url));
	capture_inst(c, app, inst, key, sizeof(key));
	snprintf(info->instance, sizeof(info->instance), "%s", key);
	pthread_mutex_lock(&c->cap_lock);
	cap = table_find_locked(c, app, key, pid, type);
	if (cap)
		cache_capture_info_locked(c, cap, info, kudu_now());
	pthread_mutex_unlock(&c->cap_lock);
}

int cache_capture_drop(struct cache *c, size_t app, const char *inst, int pid,
		       enum kudu_dump_type type)
{
	struct capture *cap;
	char key[KUDU_INSTANCE_MAX];
	int rc = 0;

	capture_inst(c, app, inst, key, sizeof(key));
	pthread_mutex_lock(&c->cap_lock);
	cap = table_find_locked(c, app, key, pid, type);
	if (cap && (cap->state == CAP_FETCHING || cap->state == CAP_QUEUED))
		rc = -EBUSY;
	else if (cap)
		table_remove_locked(c, cap);
	pthread_mutex_unlock(&c->cap_lock);
	return rc;
}

/* Called after the client has stopped: no more callbacks can arrive. */
void cache_capture_free_all(struct cache *c)
{
	pthread_mutex_lock(&c->cap_lock);
	while (c->captures)
		table_remove_locked(c, c->captures);
	pthread_mutex_unlock(&c->cap_lock);
}
