/*
 * Metadata cache: per-app process list and per-process details, with TTLs,
 * negative entries and single-flight fetches. One mutex (meta_lock) guards
 * it all; it is never held while a request is on the wire.
 */
#include "cache/cache_priv.h"
#include "kudu/log.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct cache_list *cache_list_get(struct cache_list *l)
{
	atomic_fetch_add(&l->refs, 1);
	return l;
}

static void list_free(struct cache_list *l)
{
	struct kudu_proc_list model = { .procs = l->procs, .nprocs = l->nprocs };

	for (size_t i = 0; l->dirnames && i < l->nprocs; i++)
		free(l->dirnames[i]);
	kudu_model_list_free(&model);
	free(l->dirnames);
	free(l->by_pid);
	free(l->raw);
	free(l);
}

void cache_list_put(struct cache_list *l)
{
	/* the last reference frees it */
	if (l && atomic_fetch_sub(&l->refs, 1) == 1)
		list_free(l);
}

void cache_blob_put(struct cache_blob *b)
{
	if (!b || atomic_fetch_sub(&b->refs, 1) != 1)
		return;
	free(b->data);
	free(b);
}

void cache_meta_free_all(struct cache *c)
{
	for (size_t a = 0; c->meta && a < c->cfg->napps; a++) {
		struct app_meta *m = &c->meta[a];

		cache_list_put(m->list);
		for (size_t b = 0; b < DETAIL_BUCKETS; b++) {
			struct detail_entry *e = m->details[b], *n;
			for (; e; e = n) {
				n = e->next;
				cache_blob_put(e->blob);
				free(e);
			}
		}
	}
}

/* Control characters and '/' become '_'; the result never is "." or "..",
 * is valid UTF-8-agnostic bytes, and leaves room for "-<pid>" in NAME_MAX. */
void cache_sanitize_name(const char *in, char *out, size_t outlen)
{
	size_t n = 0;

	for (; in && *in && n + 1 < outlen; in++) {
		unsigned char ch = (unsigned char)*in;

		out[n] = *in;
		if (ch == '/' || ch < 0x20 || ch == 0x7f)
			out[n] = '_';
		n++;
	}
	out[n] = '\0';
	if (n == 0)
		snprintf(out, outlen, "process");
}

/* A snapshot of the model's list, with the tree's names and a pid index.
 * Takes body on success. */
static int list_build(char *body, size_t len, uint64_t gen, struct cache_list **out,
		      struct kudu_proc_list *model, char *err, size_t errlen)
{
	struct cache_list *l;
	int rc = kudu_model_parse_list(body, len, model, err, errlen);

	if (rc < 0)
		return rc;
	l = calloc(1, sizeof(*l));
	if (l) {
		l->procs = model->procs;
		l->nprocs = model->nprocs;
		l->dirnames = calloc(l->nprocs ? l->nprocs : 1, sizeof(*l->dirnames));
		l->by_pid = calloc(l->nprocs ? l->nprocs : 1, sizeof(*l->by_pid));
	}
	for (size_t i = 0; l && l->dirnames && i < l->nprocs; i++) {
		char safe[224];

		cache_sanitize_name(l->procs[i].name, safe, sizeof(safe));
		if (asprintf(&l->dirnames[i], "%s-%d", safe, l->procs[i].pid) < 0) {
			l->dirnames[i] = NULL;
			break;
		}
	}
	if (!l || !l->dirnames || !l->by_pid || (l->nprocs && !l->dirnames[l->nprocs - 1])) {
		if (l)
			list_free(l); /* frees the model's procs too */
		else
			kudu_model_list_free(model);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	atomic_init(&l->refs, 1);
	l->gen = gen;
	l->role_holders = kudu_model_role_holders(l->procs, l->nprocs);
	l->raw = body;
	l->raw_len = len;
	*out = l;
	return 0;
}

static int cmp_key(const void *a, const void *b)
{
	int64_t ka = *(const int64_t *)a, kb = *(const int64_t *)b;

	return (ka > kb) - (ka < kb);
}

/* Keys are pid << 32 | index, so sorting them sorts by pid. */
static void list_index(struct cache_list *l)
{
	for (size_t i = 0; i < l->nprocs; i++)
		l->by_pid[i] = ((int64_t)l->procs[i].pid << 32) | (int64_t)i;
	qsort(l->by_pid, l->nprocs, sizeof(int64_t), cmp_key);
}

ssize_t cache_list_find_pid(const struct cache_list *l, int pid)
{
	size_t lo = 0, hi = l->nprocs;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		size_t i = (size_t)(l->by_pid[mid] & 0xffffffff);

		if (l->procs[i].pid == pid)
			return (ssize_t)i;
		if (l->procs[i].pid < pid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return -1;
}

ssize_t cache_list_find_dir(const struct cache_list *l, const char *dirname)
{
	const char *dash = strrchr(dirname, '-');
	ssize_t i;
	char *end;
	long pid;

	if (!dash || !dash[1])
		return -1;
	pid = strtol(dash + 1, &end, 10);
	if (*end || pid < 0 || pid > 0x7fffffff)
		return -1;
	i = cache_list_find_pid(l, (int)pid);
	return (i >= 0 && !strcmp(l->dirnames[i], dirname)) ? i : -1;
}

static void details_prune_locked(struct app_meta *m, const struct cache_list *l);

int cache_get_list(struct cache *c, size_t app, struct cache_list **out)
{
	struct app_meta *m = &c->meta[app];
	struct kudu_app *a = c->cfg->apps[app];
	char url[1024], err[KUDU_ERRLEN];
	char *body = NULL;
	size_t len = 0;
	int rc;

	pthread_mutex_lock(&c->meta_lock);
	for (;;) {
		double now = kudu_now();

		if (m->list && now - m->list_at < c->cfg->list_ttl) {
			*out = cache_list_get(m->list);
			pthread_mutex_unlock(&c->meta_lock);
			return 0;
		}
		if (m->list_err && now - m->list_err_at < c->cfg->neg_ttl) {
			rc = m->list_err;
			pthread_mutex_unlock(&c->meta_lock);
			return rc;
		}
		if (!m->list_inflight)
			break;
		pthread_cond_wait(&c->meta_cond, &c->meta_lock);
	}
	m->list_inflight = true;
	pthread_mutex_unlock(&c->meta_lock);

	kudu_url_list(a, url, sizeof(url));
	rc = kudu_client_get_json(c->client, a, url, &body, &len, err, sizeof(err));
	struct cache_list *l = NULL;
	struct kudu_proc_list model = { 0 };
	bool odd_changed = false;
	if (rc == 0) {
		rc = list_build(body, len, atomic_fetch_add(&c->list_gen, 1) + 1, &l, &model, err,
				sizeof(err));
		if (rc == 0) {
			body = NULL;
			list_index(l);
		}
	}
	free(body);
	if (rc < 0)
		kudu_log(LOG_ERR, "%s: list: %s", a->name, err);

	pthread_mutex_lock(&c->meta_lock);
	m->list_inflight = false;
	if (l) {
		/* every list_ttl brings the same list: say it once, not every time */
		odd_changed = model.skipped != m->list_skipped ||
			      model.duplicates != m->list_duplicates;
		m->list_skipped = model.skipped;
		m->list_duplicates = model.duplicates;
		details_prune_locked(m, l);
		cache_list_put(m->list);
		m->list = l;
		m->list_at = kudu_now();
		m->list_err = 0;
		*out = cache_list_get(l);
	} else {
		m->list_err = rc;
		m->list_err_at = kudu_now();
		if (rc == -ENOENT) {
			cache_list_put(m->list);
			m->list = NULL;
		}
	}
	pthread_cond_broadcast(&c->meta_cond);
	pthread_mutex_unlock(&c->meta_lock);
	if (odd_changed)
		kudu_log(LOG_WARNING,
			 "%s: list: %zu items without a usable id or name skipped, "
			 "%zu with a pid listed before (the first is shown)",
			 a->name, model.skipped, model.duplicates);
	return rc;
}

/* ---- details ---- */

static struct detail_entry *detail_lookup(struct app_meta *m, int pid, bool create)
{
	unsigned b = (unsigned)pid % DETAIL_BUCKETS;
	struct detail_entry *e;

	for (e = m->details[b]; e; e = e->next)
		if (e->pid == pid)
			return e;
	if (!create || !(e = calloc(1, sizeof(*e))))
		return NULL;
	e->pid = pid;
	e->next = m->details[b];
	m->details[b] = e;
	return e;
}

/* Workers come and go (php-cgi, node, WebJobs): details of processes no
 * longer listed would pile up for the life of the mount. */
static void details_prune_locked(struct app_meta *m, const struct cache_list *l)
{
	for (size_t b = 0; b < DETAIL_BUCKETS; b++) {
		struct detail_entry **pp = &m->details[b];

		while (*pp) {
			struct detail_entry *e = *pp;

			if (e->inflight || cache_list_find_pid(l, e->pid) >= 0) {
				pp = &e->next;
				continue;
			}
			*pp = e->next;
			cache_blob_put(e->blob);
			free(e);
		}
	}
}

static bool detail_fresh(const struct cache *c, const struct detail_entry *e, double now)
{
	if (e->blob)
		return now - e->at < c->cfg->detail_ttl;
	if (e->err)
		return now - e->at < c->cfg->neg_ttl;
	return false;
}

static int details_parse(const char *body, size_t len, struct cache_blob **out, char *err,
			 size_t errlen)
{
	struct kudu_details d;
	struct cache_blob *b;
	int rc = kudu_model_parse_details(body, len, &d, err, errlen);

	if (rc < 0)
		return rc;
	b = calloc(1, sizeof(*b));
	if (!b) {
		kudu_model_details_free(&d);
		return -ENOMEM;
	}
	b->data = d.json;
	b->len = d.len;
	b->is_scm = d.is_scm_site;
	d.json = NULL;
	kudu_model_details_free(&d);
	atomic_init(&b->refs, 1);
	*out = b;
	return 0;
}

/* Store a result under meta_lock; wakes everyone waiting for details. */
static void detail_store(struct cache *c, size_t app, int pid, int rc, struct cache_blob *blob)
{
	struct detail_entry *e;

	pthread_mutex_lock(&c->meta_lock);
	e = detail_lookup(&c->meta[app], pid, true);
	if (e) {
		e->inflight = false;
		cache_blob_put(e->blob);
		e->blob = NULL;
		e->err = rc;
		e->at = kudu_now();
		if (rc == 0) {
			e->blob = blob;
			blob = NULL;
		}
	}
	pthread_cond_broadcast(&c->meta_cond);
	pthread_mutex_unlock(&c->meta_lock);
	cache_blob_put(blob);
}

/* Parse and store a details response; *out (if given) gets a reference. */
static int detail_result(struct cache *c, size_t app, int pid, struct kudu_request *req,
			 struct cache_blob **out)
{
	struct cache_blob *blob = NULL;
	char err[KUDU_ERRLEN];
	int rc = req->err;

	if (rc == 0) {
		rc = details_parse(req->body, req->body_len, &blob, err, sizeof(err));
		if (rc < 0)
			kudu_log(LOG_ERR, "%s: process %d: %s", c->cfg->apps[app]->name, pid, err);
	} else if (rc != -ENOENT) {
		kudu_log(LOG_ERR, "%s: process %d details: %s", c->cfg->apps[app]->name, pid,
			 req->errmsg);
	}
	if (rc == 0 && out) {
		atomic_fetch_add(&blob->refs, 1);
		*out = blob;
	}
	detail_store(c, app, pid, rc, blob);
	return rc;
}

struct prefetch {
	struct kudu_request req;
	struct cache *c;
	size_t app;
	int pid;
};

static void prefetch_done(struct kudu_request *req)
{
	struct prefetch *p = req->arg;

	detail_result(p->c, p->app, p->pid, req, NULL);
	kudu_request_reset(req);
	free(p);
}

/* Claim (app, pid) for fetching under meta_lock; false if fresh or in flight. */
static bool detail_claim(struct cache *c, size_t app, int pid, double now)
{
	struct detail_entry *e = detail_lookup(&c->meta[app], pid, true);

	if (!e || e->inflight || detail_fresh(c, e, now))
		return false;
	e->inflight = true;
	return true;
}

static void detail_submit(struct cache *c, size_t app, int pid)
{
	struct prefetch *p = calloc(1, sizeof(*p));

	if (!p) {
		detail_store(c, app, pid, -ENOMEM, NULL);
		return;
	}
	kudu_request_init(&p->req, c->cfg->apps[app], KUDU_REQ_JSON);
	kudu_url_details(c->cfg->apps[app], pid, p->req.url, sizeof(p->req.url));
	p->req.on_done = prefetch_done;
	p->req.arg = p;
	p->c = c;
	p->app = app;
	p->pid = pid;
	kudu_client_submit(c->client, &p->req);
}

/* Fetch details of every listed process named `name` (all if NULL). */
static void prefetch_named(struct cache *c, size_t app, const struct cache_list *l,
			   const char *name)
{
	int *todo = malloc((l->nprocs ? l->nprocs : 1) * sizeof(int));
	size_t n = 0;
	double now = kudu_now();

	if (!todo)
		return;
	pthread_mutex_lock(&c->meta_lock);
	for (size_t i = 0; i < l->nprocs; i++)
		if ((!name || !strcasecmp(l->procs[i].name, name)) &&
		    detail_claim(c, app, l->procs[i].pid, now))
			todo[n++] = l->procs[i].pid;
	pthread_mutex_unlock(&c->meta_lock);
	/* the client keeps at most max_conns of these on the wire */
	for (size_t i = 0; i < n; i++)
		detail_submit(c, app, todo[i]);
	free(todo);
}

void cache_prefetch_details(struct cache *c, size_t app, const struct cache_list *l)
{
	prefetch_named(c, app, l, NULL);
}

int cache_get_details(struct cache *c, size_t app, int pid, struct cache_blob **out)
{
	struct app_meta *m = &c->meta[app];
	struct detail_entry *e;
	struct kudu_request req;
	int rc;

	pthread_mutex_lock(&c->meta_lock);
	for (;;) {
		e = detail_lookup(m, pid, true);
		if (!e) {
			pthread_mutex_unlock(&c->meta_lock);
			return -ENOMEM;
		}
		if (detail_fresh(c, e, kudu_now())) {
			rc = e->err;
			if (e->blob) {
				atomic_fetch_add(&e->blob->refs, 1);
				*out = e->blob;
			}
			pthread_mutex_unlock(&c->meta_lock);
			return rc;
		}
		if (!e->inflight)
			break;
		pthread_cond_wait(&c->meta_cond, &c->meta_lock);
	}
	e->inflight = true;
	pthread_mutex_unlock(&c->meta_lock);

	kudu_request_init(&req, c->cfg->apps[app], KUDU_REQ_JSON);
	kudu_url_details(c->cfg->apps[app], pid, req.url, sizeof(req.url));
	kudu_client_fetch(c->client, &req);
	rc = detail_result(c, app, pid, &req, out);
	kudu_request_reset(&req);
	return rc;
}

bool cache_proc_gone(struct cache *c, size_t app, int pid)
{
	struct detail_entry *e;
	bool gone = false;

	pthread_mutex_lock(&c->meta_lock);
	e = detail_lookup(&c->meta[app], pid, false);
	if (e && !e->inflight && e->err == -ENOENT && detail_fresh(c, e, kudu_now()))
		gone = true;
	pthread_mutex_unlock(&c->meta_lock);
	return gone;
}

/* Index of the process holding role in l (kudu_model_role_of, first in list
 * order), fetching the candidates' details in parallel; -ENOENT if none
 * does, or a details error that is not "gone" (never reported as ENOENT). */
static int role_find(struct cache *c, size_t app, const struct cache_list *l, enum kudu_role role,
		     size_t *idx)
{
	int ferr = 0;

	if (!l->role_holders)
		return -ENOENT;
	prefetch_named(c, app, l, l->role_holders);
	for (size_t i = 0; i < l->nprocs; i++) {
		struct cache_blob *b = NULL;
		enum kudu_role r;
		int e;

		if (kudu_model_role_of(l->role_holders, l->procs[i].name, false) == KUDU_ROLE_NONE)
			continue; /* not a candidate: no details needed */
		e = cache_get_details(c, app, l->procs[i].pid, &b);
		if (e != 0) { /* 0 or -errno; only 0 sets b */
			if (e != -ENOENT && !ferr)
				ferr = e;
			continue;
		}
		r = kudu_model_role_of(l->role_holders, l->procs[i].name, b->is_scm);
		cache_blob_put(b);
		if (r == role) {
			*idx = i;
			return 0;
		}
	}
	return ferr ? ferr : -ENOENT;
}

int cache_find_role(struct cache *c, size_t app, enum kudu_role role, char *dirname, size_t len)
{
	struct cache_list *l;
	size_t i;
	int rc = cache_get_list(c, app, &l);

	if (rc != 0) /* 0 or -errno; only 0 sets l */
		return rc;
	rc = role_find(c, app, l, role, &i);
	if (rc == 0)
		snprintf(dirname, len, "%s", l->dirnames[i]);
	cache_list_put(l);
	return rc;
}

int cache_proc_role(struct cache *c, size_t app, int pid, enum kudu_role *role)
{
	static const enum kudu_role roles[] = { KUDU_ROLE_SITE, KUDU_ROLE_SCM };
	struct cache_list *l;
	ssize_t self;
	int rc = cache_get_list(c, app, &l);

	if (rc != 0) /* 0 or -errno; only 0 sets l */
		return rc;
	*role = KUDU_ROLE_NONE;
	self = cache_list_find_pid(l, pid);
	if (self < 0) {
		rc = -ENOENT;
	} else if (kudu_model_role_of(l->role_holders, l->procs[self].name, false) !=
		   KUDU_ROLE_NONE) {
		/* the links' own search, so the two can never disagree */
		for (size_t r = 0; r < 2 && *role == KUDU_ROLE_NONE; r++) {
			size_t i;
			int e = role_find(c, app, l, roles[r], &i);

			if (e == 0 && i == (size_t)self)
				*role = roles[r];
			else if (e < 0 && e != -ENOENT)
				rc = e;
		}
		if (*role != KUDU_ROLE_NONE)
			rc = 0;
	}
	cache_list_put(l);
	return rc;
}
