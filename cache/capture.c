/*
 * Dump captures: one download per (app, pid, dump type), spooled to a
 * private file and shared by every reader.
 *
 * Kudu writes every dump of a site to one fixed file, so at most one dump
 * request per app is on the wire; the others wait in a FIFO (state queued).
 * Readers ahead of the download sleep on the capture's condition variable,
 * woken by the transfer thread as bytes land, and poll for interrupts.
 *
 * cap_lock guards the capture table, the per-app queues, spool accounting
 * and every field of every capture. It is never held across pread() of
 * spool data, a request submission or a callback into fs/.
 */
#include "cache/cache_priv.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct capture {
	struct cache *cache;
	size_t app;
	int pid;
	enum kudu_dump_type type;
	enum capture_state state;
	int refs;                   /* table + readers + the request while active */
	bool in_table;
	int fd;
	char *path;
	uint64_t bytes;
	int64_t length;
	int err;
	char errmsg[KUDU_ERRLEN];
	char filename[256];
	char url[1024];
	uint64_t wake_at;           /* lowest byte count a waiting reader needs */
	enum { AUTH_FRESH, AUTH_REFRESHING, AUTH_RETRIED } auth; /* bearer token re-run after a 401 */
	double started, finished, last_used;
	time_t started_wall;
	pthread_cond_t cond;        /* bytes, state changed */
	struct kudu_request req;
	struct capture *next;       /* table */
	struct capture *qnext;      /* app queue */
};

const char *cache_state_name(enum capture_state s)
{
	static const char *const names[] = { "idle", "queued", "fetching", "complete", "failed" };
	return names[s];
}

static int mkdir_private(const char *path, char *err, size_t errlen)
{
	struct stat st;

	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "cache_dir %s: %s", path, strerror(errno));
		return -errno;
	}
	if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "cache_dir %s: not a directory", path);
		return -ENOTDIR;
	}
	/* dumps hold process memory: nobody else may look */
	if ((st.st_mode & 077) && chmod(path, 0700) < 0) {
		snprintf(err, errlen, "cache_dir %s: cannot make it private (chmod 700): %s", path,
			 strerror(errno));
		return -EPERM;
	}
	return 0;
}

static int mkdir_parents(const char *path, char *err, size_t errlen)
{
	char *p = strdup(path);
	int rc = 0;

	if (!p)
		return -ENOMEM;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0700) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "cache_dir %s: %s", p, strerror(errno));
			rc = -errno;
		}
		*s = '/';
		if (rc)
			break;
	}
	free(p);
	return rc ? rc : mkdir_private(path, err, errlen);
}

static void remove_tree(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		char *p;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (asprintf(&p, "%s/%s", dir, de->d_name) >= 0) {
			unlink(p);
			free(p);
		}
	}
	closedir(d);
	rmdir(dir);
}

/* Spool dirs are spool-<pid>: remove those whose daemon is gone. */
static void remove_stale_spools(const char *cache_dir)
{
	DIR *d = opendir(cache_dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		char *end, *p;
		long pid;

		if (strncmp(de->d_name, "spool-", 6))
			continue;
		pid = strtol(de->d_name + 6, &end, 10);
		if (*end || pid <= 0)
			continue;
		if (pid != getpid() && kill((pid_t)pid, 0) == 0)
			continue; /* another live kudufs shares this cache_dir */
		if (pid != getpid() && errno != ESRCH)
			continue;
		if (asprintf(&p, "%s/%s", cache_dir, de->d_name) >= 0) {
			fprintf(stderr, "kudufs: removing stale spool %s\n", p);
			remove_tree(p);
			free(p);
		}
	}
	closedir(d);
}

int cache_prepare_dir(struct kudu_config *cfg, char *err, size_t errlen)
{
	if (!cfg->cache_dir) {
		const char *xdg = getenv("XDG_CACHE_HOME");
		const char *home = getenv("HOME");

		if (xdg && *xdg) {
			if (asprintf(&cfg->cache_dir, "%s/kudufs", xdg) < 0)
				return -ENOMEM;
		} else if (asprintf(&cfg->cache_dir, "%s/.cache/kudufs", home ? home : "/tmp") < 0) {
			return -ENOMEM;
		}
	}
	return mkdir_parents(cfg->cache_dir, err, errlen);
}

int cache_capture_init(struct cache *c, char *err, size_t errlen)
{
	struct kudu_config *cfg = c->cfg;
	int rc = cache_prepare_dir(cfg, err, errlen);

	if (rc < 0)
		return rc;
	remove_stale_spools(cfg->cache_dir);
	if (asprintf(&c->spool_dir, "%s/spool-%d", cfg->cache_dir, (int)getpid()) < 0)
		return -ENOMEM;
	return mkdir_private(c->spool_dir, err, errlen);
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

static struct capture *table_find_locked(struct cache *c, size_t app, int pid,
					 enum kudu_dump_type type)
{
	for (struct capture *cap = c->captures; cap; cap = cap->next)
		if (cap->app == app && cap->pid == pid && cap->type == type)
			return cap;
	return NULL;
}

/* Evict least recently used finished captures nobody reads until `need`
 * more bytes fit under cache_max. */
static bool make_room_locked(struct cache *c, uint64_t need, const struct capture *keep)
{
	while (c->spool_bytes + need > c->cfg->cache_max) {
		struct capture *victim = NULL;

		for (struct capture *cap = c->captures; cap; cap = cap->next)
			if (cap != keep && cap->state == CAP_COMPLETE && cap->refs == 1 &&
			    (!victim || cap->last_used < victim->last_used))
				victim = cap;
		if (!victim)
			return false;
		fprintf(stderr, "kudufs: cache_max: evicting %s/%d %s (%llu bytes)\n",
			c->cfg->apps[victim->app]->name, victim->pid,
			victim->type == KUDU_DUMP_FULL ? "fulldump" : "minidump",
			(unsigned long long)victim->bytes);
		table_remove_locked(c, victim);
	}
	return true;
}

/* ---- the transfer side (transfer thread) ---- */

static int on_progress(struct kudu_request *req, uint64_t bytes)
{
	struct capture *cap = req->arg;
	struct cache *c = cap->cache;
	int rc = 0;

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
	const char *app = c->cfg->apps[cap->app]->name;

	pthread_mutex_lock(&c->cap_lock);
	cap->finished = cap->last_used = kudu_now();
	snprintf(cap->filename, sizeof(cap->filename), "%s", req->filename);
	if (req->err == 0 && req->status == 200 && cap->bytes == 0) {
		/* a 200 with nothing in it is a proxy or front-end artefact, not a dump */
		req->err = -EIO;
		snprintf(req->errmsg, sizeof(req->errmsg), "%.400s: empty response body (HTTP 200)",
			 cap->url);
	}
	if (req->err == 0 && req->status == 200 &&
	    (!strncmp(req->content_type, "text/", 5) || !strcmp(req->content_type, "application/json"))) {
		/* a sign-in page or a proxy's error page, answered with 200 */
		req->err = -EIO;
		snprintf(req->errmsg, sizeof(req->errmsg), "%.300s: not a dump (Content-Type %.100s)",
			 cap->url, req->content_type);
	}
	if (req->err == 0 && req->status == 200) {
		cap->state = CAP_COMPLETE;
		cap->length = (int64_t)cap->bytes;
		fprintf(stderr, "kudufs: %s/%d: %s complete, %llu bytes in %.1f s\n", app, cap->pid,
			cap->type == KUDU_DUMP_FULL ? "fulldump" : "minidump",
			(unsigned long long)cap->bytes, cap->finished - cap->started);
	} else {
		cap->err = req->err ? req->err : -EIO;
		snprintf(cap->errmsg, sizeof(cap->errmsg), "%s", req->errmsg);
		fprintf(stderr, "kudufs: %s/%d: %s failed: %s\n", app, cap->pid,
			cap->type == KUDU_DUMP_FULL ? "fulldump" : "minidump", cap->errmsg);
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
		/* no ftruncate: a reader between wait and pread would see a
		 * short read, i.e. a clean EOF on a cut dump; the fd is private
		 * and the space goes when the last reference closes it */
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
	cap_put_locked(c, cap); /* the request's reference */
	pthread_mutex_unlock(&c->cap_lock);
	if (next)
		kudu_client_submit(c->client, &next->req);
}

/* Make cap the app's active dump; the caller submits *to_submit unlocked. */
static void start_locked(struct cache *c, struct capture *cap, struct capture **to_submit)
{
	char name[64];

	c->dumps[cap->app].active = cap;
	cap->state = CAP_FETCHING;
	cap->started = kudu_now();
	cap->started_wall = time(NULL);
	snprintf(name, sizeof(name), "/%d-%d-%lu.dmp", cap->pid, (int)cap->type, ++c->seq);
	if (asprintf(&cap->path, "%s%s", c->spool_dir, name) < 0)
		cap->path = NULL;
	cap->fd = cap->path ? open(cap->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600) : -1;
	/* a retried capture (token refresh) still holds the 401's error body */
	kudu_request_reset(&cap->req);
	kudu_request_init(&cap->req, c->cfg->apps[cap->app], KUDU_REQ_DUMP);
	snprintf(cap->req.url, sizeof(cap->req.url), "%s", cap->url);
	cap->req.fd = cap->fd;
	cap->req.on_progress = on_progress;
	cap->req.on_done = on_done;
	cap->req.arg = cap;
	cap->refs++; /* held by the request until on_done */
	c->stat_captures++;
	if (cap->fd < 0) {
		/* let the request fail through the normal path */
		atomic_store(&cap->req.cancel, errno ? errno : EIO);
	}
	*to_submit = cap;
}

/* ---- the reader side (FUSE threads) ---- */

int cache_capture_acquire(struct cache *c, size_t app, int pid, enum kudu_dump_type type,
			  struct capture **out)
{
	struct capture *cap;

	pthread_mutex_lock(&c->cap_lock);
	cap = table_find_locked(c, app, pid, type);
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
		cap->pid = pid;
		cap->type = type;
		cap->state = CAP_IDLE;
		cap->fd = -1;
		cap->length = -1;
		cap->wake_at = UINT64_MAX;
		cap->refs = 1;
		cap->in_table = true;
		kudu_url_dump(c->cfg->apps[app], pid, type, cap->url, sizeof(cap->url));
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
	if (cap->state == CAP_QUEUED && cap->in_table && cap->refs == 2) {
		queue_remove_locked(c, cap);
		cap->state = CAP_IDLE;
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
		if (d->q_tail)
			d->q_tail->qnext = cap;
		else
			d->q_head = cap;
		d->q_tail = cap;
	}
	if (submit) {
		pthread_mutex_unlock(&c->cap_lock);
		kudu_client_submit(c->client, &submit->req);
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
		if (cap->bytes >= want || (cap->state == CAP_COMPLETE && cap->bytes > (uint64_t)off)) {
			uint64_t avail = cap->bytes - (uint64_t)off;

			n = (ssize_t)(avail < size ? avail : size);
			*fd = cap->fd;
			cap->last_used = kudu_now();
			break;
		}
		if (interrupted && interrupted()) {
			n = -EINTR;
			break;
		}
		if (want < cap->wake_at)
			cap->wake_at = want;
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 200 * 1000000L; /* interrupts are polled, bytes are signalled */
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&cap->cond, &c->cap_lock, &ts);
	}
	pthread_mutex_unlock(&c->cap_lock);
	return n;
}

ssize_t cache_capture_read(struct cache *c, struct capture *cap, char *buf, size_t size,
			   off_t off, cache_interrupted_fn interrupted)
{
	int fd = -1;
	ssize_t n = cache_capture_wait(c, cap, size, off, interrupted, &fd);

	ssize_t want = n;

	if (n <= 0)
		return n;
	/* our reference keeps fd open; bytes below cap->bytes never change */
	n = pread(fd, buf, (size_t)want, off);
	if (n < 0)
		return -errno;
	if (n < want) {
		/* cannot happen with an intact spool; never let it look like EOF */
		pthread_mutex_lock(&c->cap_lock);
		n = cap->state == CAP_FAILED ? cap->err : -EIO;
		pthread_mutex_unlock(&c->cap_lock);
	}
	return n;
}

int cache_capture_size(struct cache *c, size_t app, int pid, enum kudu_dump_type type,
		       uint64_t *size)
{
	struct capture *cap;
	int rc = -ENOENT;

	pthread_mutex_lock(&c->cap_lock);
	cap = table_find_locked(c, app, pid, type);
	if (cap && cap->state == CAP_COMPLETE && !cap_expired(c, cap, kudu_now())) {
		*size = cap->bytes;
		rc = 0;
	}
	pthread_mutex_unlock(&c->cap_lock);
	return rc;
}

static void info_fill_locked(const struct cache *c, const struct capture *cap,
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
	snprintf(info->error, sizeof(info->error), "%s", cap->state == CAP_FAILED ? cap->errmsg : "");
	snprintf(info->filename, sizeof(info->filename), "%s", cap->filename);
}

void cache_capture_get_info(struct cache *c, size_t app, int pid, enum kudu_dump_type type,
			    struct capture_info *info)
{
	struct capture *cap;

	memset(info, 0, sizeof(*info));
	info->state = CAP_IDLE;
	info->length = -1;
	kudu_url_dump(c->cfg->apps[app], pid, type, info->url, sizeof(info->url));
	pthread_mutex_lock(&c->cap_lock);
	cap = table_find_locked(c, app, pid, type);
	if (cap)
		info_fill_locked(c, cap, info, kudu_now());
	pthread_mutex_unlock(&c->cap_lock);
}

int cache_capture_drop(struct cache *c, size_t app, int pid, enum kudu_dump_type type)
{
	struct capture *cap;
	int rc = 0;

	pthread_mutex_lock(&c->cap_lock);
	cap = table_find_locked(c, app, pid, type);
	if (cap && (cap->state == CAP_FETCHING || cap->state == CAP_QUEUED))
		rc = -EBUSY;
	else if (cap)
		table_remove_locked(c, cap);
	pthread_mutex_unlock(&c->cap_lock);
	return rc;
}

char *cache_status_json(struct cache *c)
{
	json_t *root = json_object();
	json_t *caps = json_array();
	json_t *apps = json_array();
	double now = kudu_now();
	char *out;

	for (size_t i = 0; i < c->cfg->napps; i++)
		json_array_append_new(apps, json_pack("{s:s, s:s, s:s}", "name", c->cfg->apps[i]->name,
						      "url", c->cfg->apps[i]->url, "credentials",
						      c->cfg->apps[i]->cred_desc));
	pthread_mutex_lock(&c->cap_lock);
	for (struct capture *cap = c->captures; cap; cap = cap->next) {
		struct capture_info info;
		char started[32] = "";
		struct tm tm;

		info_fill_locked(c, cap, &info, now);
		if (cap->started_wall && gmtime_r(&cap->started_wall, &tm))
			strftime(started, sizeof(started), "%Y-%m-%dT%H:%M:%SZ", &tm);
		json_array_append_new(caps, json_pack(
			"{s:s, s:i, s:s, s:s, s:I, s:I, s:f, s:s, s:s, s:s, s:s}",
			"app", c->cfg->apps[cap->app]->name, "pid", cap->pid,
			"type", cap->type == KUDU_DUMP_FULL ? "full" : "mini",
			"state", cache_state_name(info.state), "bytes", (json_int_t)info.bytes,
			"length", (json_int_t)info.length, "rate_bytes_per_sec", info.rate,
			"started_at", started, "url", info.url, "error", info.error,
			"filename", info.filename));
	}
	json_object_set_new(root, "version", json_string(KUDUFS_VERSION));
	json_object_set_new(root, "apps", apps);
	json_object_set_new(root, "captures", caps);
	json_object_set_new(root, "spool_bytes", json_integer((json_int_t)c->spool_bytes));
	json_object_set_new(root, "cache_max", json_integer((json_int_t)c->cfg->cache_max));
	json_object_set_new(root, "captures_started", json_integer((json_int_t)c->stat_captures));
	json_object_set_new(root, "captures_failed", json_integer((json_int_t)c->stat_failures));
	pthread_mutex_unlock(&c->cap_lock);
	out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (out) {
		size_t n = strlen(out);
		char *o = realloc(out, n + 2);
		if (o) {
			o[n] = '\n';
			o[n + 1] = '\0';
			out = o;
		}
	}
	return out;
}

/* Called after the client has stopped: no more callbacks can arrive. */
void cache_capture_free_all(struct cache *c)
{
	pthread_mutex_lock(&c->cap_lock);
	while (c->captures)
		table_remove_locked(c, c->captures);
	pthread_mutex_unlock(&c->cap_lock);
	if (c->spool_dir)
		remove_tree(c->spool_dir);
}
