/*
 * Metadata cache: per view (an app's app-level view, and each of its
 * instances') the process list and per-process details, with TTLs, negative
 * entries and single-flight fetches; per app the instance list. One mutex
 * (meta_lock) guards it all; it is never held while a request is on the wire.
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

void cache_instances_put(struct cache_instances *l)
{
	if (!l || atomic_fetch_sub(&l->refs, 1) != 1)
		return;
	for (size_t i = 0; i < l->n; i++)
		free(l->ids[i]);
	free(l->ids);
	free(l);
}

bool cache_instances_has(const struct cache_instances *l, const char *id, size_t len)
{
	for (size_t i = 0; l && i < l->n; i++)
		if (strlen(l->ids[i]) == len && !memcmp(l->ids[i], id, len))
			return true;
	return false;
}

static void detail_drop_blob_locked(struct cache *c, struct detail_entry *e);

static void view_clear(struct cache *c, struct view_meta *v)
{
	cache_list_put(v->list);
	v->list = NULL;
	for (size_t b = 0; v->details && b < DETAIL_BUCKETS; b++) {
		struct detail_entry *e = v->details[b], *n;
		for (; e; e = n) {
			n = e->next;
			detail_drop_blob_locked(c, e);
			free(e);
		}
	}
	free(v->details);
	v->details = NULL;
}

void cache_meta_free_all(struct cache *c)
{
	for (size_t a = 0; c->meta && a < c->cfg->napps; a++) {
		struct app_meta *m = &c->meta[a];

		view_clear(c, &m->view);
		while (m->insts) {
			struct view_meta *v = m->insts;

			m->insts = v->next;
			view_clear(c, v);
			free(v);
		}
		cache_instances_put(m->ilist);
	}
}

static bool inst_is_app_view(const char *inst)
{
	return !inst || !inst[0];
}

/* The view of (app, inst) under meta_lock; an instance's is created on
 * demand (fs/ has checked the instance is listed). NULL: out of memory, or
 * !create and there is none. */
static struct view_meta *view_find_locked(struct cache *c, size_t app, const char *inst,
					  bool create)
{
	struct app_meta *m = &c->meta[app];
	struct view_meta *v;

	if (inst_is_app_view(inst))
		return &m->view;
	for (v = m->insts; v; v = v->next)
		if (!strcmp(v->inst, inst))
			return v;
	if (!create || strlen(inst) >= sizeof(v->inst) || !(v = calloc(1, sizeof(*v))))
		return NULL;
	snprintf(v->inst, sizeof(v->inst), "%s", inst);
	v->next = m->insts;
	m->insts = v;
	return v;
}

/* Free an instance's view (it is gone, or no longer listed). Nobody holds a
 * pointer to it across a wait: they look it up again. */
static void view_drop_locked(struct cache *c, struct app_meta *m, const char *inst)
{
	for (struct view_meta **pp = &m->insts; *pp; pp = &(*pp)->next) {
		struct view_meta *v = *pp;

		if (strcmp(v->inst, inst))
			continue;
		*pp = v->next;
		view_clear(c, v);
		free(v);
		return;
	}
}

/* The instance a view's requests are pinned to: the instance of an
 * instance view; for the app-level view the one its list came from
 * (details and dumps of that list's processes must come from there too),
 * "" before a list named one. */
static void view_pin_locked(const struct view_meta *v, char *buf, size_t len)
{
	if (v->inst[0])
		snprintf(buf, len, "%s", v->inst);
	else
		snprintf(buf, len, "%s", v->list ? v->list->instance : "");
}

void cache_view_instance(struct cache *c, size_t app, const char *inst, char *buf, size_t len)
{
	struct view_meta *v;

	pthread_mutex_lock(&c->meta_lock);
	v = view_find_locked(c, app, inst, false);
	if (v)
		view_pin_locked(v, buf, len);
	else
		snprintf(buf, len, "%s", inst);
	pthread_mutex_unlock(&c->meta_lock);
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

static void details_prune_locked(struct cache *c, struct view_meta *v, const struct cache_list *l,
				 bool all);

/* Wait on meta_cond for another reader's fetch, polling this reader's own
 * interrupt (Ctrl-C): -EINTR once it came. meta_lock held. */
static int meta_wait_locked(struct cache *c)
{
	struct timespec ts;

	if (kudu_client_interrupted(c->client))
		return -EINTR;
	ts = kudu_deadline_in(CLOCK_REALTIME, 200);
	pthread_cond_timedwait(&c->meta_cond, &c->meta_lock, &ts);
	return 0;
}

/* Parse and store a list response of view (app, inst) (inflight was
 * claimed for it); *out (if given) gets a reference. */
/* Whether an error answer is kept (for neg_ttl) for the readers that follow.
 * Not a reader that left (EINTR: it says nothing about the server), nor a
 * prefetch's 401 that a fresh token may cure: the transfer thread runs no
 * token command, the next reader's own fetch does (kudu_client_fetch_via). */
static bool error_is_kept(const struct kudu_request *req, bool prefetch)
{
	return req->err != -EINTR && !(prefetch && kudu_request_token_expired(req));
}

static int list_result(struct cache *c, size_t app, const char *inst, struct kudu_request *req,
		       bool prefetch, struct cache_list **out)
{
	struct kudu_app *a = c->cfg->apps[app];
	struct view_meta *v;
	struct cache_list *l = NULL;
	struct kudu_proc_list model = { 0 };
	bool odd_changed = false;
	char err[KUDU_ERRLEN];
	int rc = req->err;

	snprintf(err, sizeof(err), "%s", req->errmsg);
	if (rc == 0) {
		rc = list_build(req->body, req->body_len, atomic_fetch_add(&c->list_gen, 1) + 1, &l,
				&model, err, sizeof(err));
		if (rc == 0) {
			req->body = NULL; /* the list owns it now */
			req->body_len = 0;
			snprintf(l->instance, sizeof(l->instance), "%s", req->served_by);
			list_index(l);
			kudu_app_note_platform(
				a, model.platform,
				model.platform == KUDU_PLATFORM_LINUX
					? "its process list has dotnet-monitor's items"
					: "its process list has Kudu's items");
		}
	}
	if (rc < 0 && !req->rerouted)
		kudu_log(LOG_ERR, "%s%s%s: list: %s", a->name,
			 inst_is_app_view(inst) ? "" : " instance ",
			 inst_is_app_view(inst) ? "" : inst, err);

	pthread_mutex_lock(&c->meta_lock);
	v = view_find_locked(c, app, inst, false);
	if (v)
		v->list_inflight = false;
	if (l && v) {
		/* every list_ttl brings the same list: say it once, not every time */
		odd_changed = model.skipped != v->list_skipped ||
			      model.duplicates != v->list_duplicates;
		v->list_skipped = model.skipped;
		v->list_duplicates = model.duplicates;
		/* the app-level view moved to another instance: none of the
		 * details it has are of this list's processes, whatever the pids */
		details_prune_locked(c, v, l, v->list && strcmp(v->list->instance, l->instance));
		cache_list_put(v->list);
		v->list = l;
		v->list_at = kudu_now();
		v->list_err = 0;
		v->list_errmsg[0] = '\0';
		if (out)
			*out = cache_list_get(l);
	} else if (l) {
		cache_list_put(l); /* the instance went while its list was on the wire */
		rc = -ENOENT;
	} else if (v && error_is_kept(req, prefetch)) {
		v->list_err = rc;
		v->list_err_at = kudu_now();
		snprintf(v->list_errmsg, sizeof(v->list_errmsg), "%s", err);
		if (rc == -ENOENT) {
			cache_list_put(v->list);
			v->list = NULL;
		}
	}
	pthread_cond_broadcast(&c->meta_cond);
	pthread_mutex_unlock(&c->meta_lock);
	if (req->rerouted)
		cache_instance_gone(c, app, req->instance, req->served_by);
	if (odd_changed)
		kudu_log(LOG_WARNING,
			 "%s: list: %zu items without a usable id or name skipped, "
			 "%zu with a pid listed before (the first is shown)",
			 a->name, model.skipped, model.duplicates);
	return rc;
}

int cache_get_list(struct cache *c, size_t app, const char *inst, struct cache_list **out)
{
	struct kudu_app *a = c->cfg->apps[app];
	struct view_meta *v;
	struct kudu_request req;
	int rc;

	pthread_mutex_lock(&c->meta_lock);
	v = view_find_locked(c, app, inst, true);
	for (;;) {
		double now = kudu_now();

		if (!v) {
			pthread_mutex_unlock(&c->meta_lock);
			return inst_is_app_view(inst) ? -ENOMEM : -ENOENT;
		}
		if (v->list && now - v->list_at < c->cfg->list_ttl) {
			*out = cache_list_get(v->list);
			pthread_mutex_unlock(&c->meta_lock);
			return 0;
		}
		if (v->list_err && now - v->list_err_at < c->cfg->neg_ttl) {
			rc = v->list_err;
			pthread_mutex_unlock(&c->meta_lock);
			return rc;
		}
		if (!v->list_inflight)
			break;
		if (meta_wait_locked(c) < 0) {
			pthread_mutex_unlock(&c->meta_lock);
			return -EINTR;
		}
		/* the instance may have gone meanwhile: its view with it */
		v = view_find_locked(c, app, inst, false);
	}
	v->list_inflight = true;
	pthread_mutex_unlock(&c->meta_lock);

	kudu_request_init(&req, a, KUDU_REQ_JSON);
	if (!inst_is_app_view(inst))
		snprintf(req.instance, sizeof(req.instance), "%s", inst);
	kudu_url_list(a, req.url, sizeof(req.url));
	cache_fetch(c, &req);
	rc = list_result(c, app, inst, &req, false, out);
	kudu_request_reset(&req);
	return rc;
}

void cache_list_error(struct cache *c, size_t app, const char *inst, char *buf, size_t len)
{
	struct view_meta *v;

	buf[0] = '\0';
	pthread_mutex_lock(&c->meta_lock);
	v = view_find_locked(c, app, inst, false);
	if (v && v->list_err)
		snprintf(buf, len, "%s", v->list_errmsg);
	pthread_mutex_unlock(&c->meta_lock);
}

struct list_prefetch {
	struct kudu_request req;
	struct cache *c;
	size_t app;
};

static void list_prefetch_done(struct kudu_request *req)
{
	struct list_prefetch *p = req->arg;

	list_result(p->c, p->app, req->instance, req, true, NULL);
	kudu_request_reset(req);
	free(p);
}

void cache_prefetch_lists(struct cache *c, size_t app, const struct cache_instances *l)
{
	struct kudu_app *a = c->cfg->apps[app];
	double now = kudu_now();

	for (size_t i = 0; i < l->n; i++) {
		struct list_prefetch *p;
		struct view_meta *v;
		bool claim;

		pthread_mutex_lock(&c->meta_lock);
		v = view_find_locked(c, app, l->ids[i], true);
		claim = v && !v->list_inflight && !(v->list && now - v->list_at < c->cfg->list_ttl);
		if (claim)
			v->list_inflight = true;
		pthread_mutex_unlock(&c->meta_lock);
		if (!claim)
			continue;
		if (!(p = calloc(1, sizeof(*p)))) {
			struct kudu_request failed;

			kudu_request_init(&failed, a, KUDU_REQ_JSON);
			snprintf(failed.instance, sizeof(failed.instance), "%s", l->ids[i]);
			failed.err = -ENOMEM;
			snprintf(failed.errmsg, sizeof(failed.errmsg), "out of memory");
			list_result(c, app, l->ids[i], &failed, true, NULL);
			continue;
		}
		kudu_request_init(&p->req, a, KUDU_REQ_JSON);
		snprintf(p->req.instance, sizeof(p->req.instance), "%s", l->ids[i]);
		kudu_url_list(a, p->req.url, sizeof(p->req.url));
		p->req.on_done = list_prefetch_done;
		p->req.arg = p;
		p->c = c;
		p->app = app;
		/* the client keeps at most max_conns of these on the wire */
		c->submit(c->client, &p->req);
	}
}

/* ---- details ---- */

/* Details kept at once, in bytes. `ls -l` + a grep over the details of
 * 10000 processes on each of 3 instances would otherwise keep them all for
 * detail_ttl (2.7 KB each pretty-printed from the emulator, more from a real
 * Kudu): 81 MB. Past this the least recently used go (a reader holding one
 * keeps its reference) and are fetched again when asked for. */
#define DETAILS_MAX_BYTES ((uint64_t)8 << 20)

static void detail_lru_unlink_locked(struct cache *c, struct detail_entry *e)
{
	if (e->lru_prev)
		e->lru_prev->lru_next = e->lru_next;
	else
		c->details_lru_head = e->lru_next;
	if (e->lru_next)
		e->lru_next->lru_prev = e->lru_prev;
	else
		c->details_lru_tail = e->lru_prev;
	e->lru_prev = e->lru_next = NULL;
}

static void detail_lru_append_locked(struct cache *c, struct detail_entry *e)
{
	e->lru_prev = c->details_lru_tail;
	e->lru_next = NULL;
	if (c->details_lru_tail)
		c->details_lru_tail->lru_next = e;
	else
		c->details_lru_head = e;
	c->details_lru_tail = e;
}

/* An entry's blob goes (replaced, pruned, evicted, or its view freed). */
static void detail_drop_blob_locked(struct cache *c, struct detail_entry *e)
{
	if (!e->blob)
		return;
	detail_lru_unlink_locked(c, e);
	c->details_bytes -= e->blob->len;
	cache_blob_put(e->blob);
	e->blob = NULL;
}

/* e now holds blob (the most recently used); older ones go past the budget. */
static void detail_set_blob_locked(struct cache *c, struct detail_entry *e, struct cache_blob *blob)
{
	detail_drop_blob_locked(c, e);
	e->blob = blob;
	detail_lru_append_locked(c, e);
	c->details_bytes += blob->len;
	while (c->details_bytes > DETAILS_MAX_BYTES && c->details_lru_head != e) {
		struct detail_entry *old = c->details_lru_head;

		detail_drop_blob_locked(c, old);
		old->err = 0; /* not fresh: the next reader fetches it again */
	}
}

static struct detail_entry *detail_lookup(struct view_meta *v, int pid, enum cache_part part,
					  bool create)
{
	unsigned b = (unsigned)pid % DETAIL_BUCKETS;
	struct detail_entry *e;

	if (!v->details) {
		/* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of chain heads */
		if (!create || !(v->details = calloc(DETAIL_BUCKETS, sizeof(*v->details))))
			return NULL;
	}
	for (e = v->details[b]; e; e = e->next)
		if (e->pid == pid && e->part == part)
			return e;
	if (!create || !(e = calloc(1, sizeof(*e))))
		return NULL;
	e->pid = pid;
	e->part = part;
	e->next = v->details[b];
	v->details[b] = e;
	return e;
}

/* Workers come and go (php-cgi, node, WebJobs): details of processes no
 * longer listed would pile up for the life of the mount. */
static void details_prune_locked(struct cache *c, struct view_meta *v, const struct cache_list *l,
				 bool all)
{
	for (size_t b = 0; v->details && b < DETAIL_BUCKETS; b++) {
		struct detail_entry **pp = &v->details[b];

		while (*pp) {
			struct detail_entry *e = *pp;

			if (e->inflight || (!all && cache_list_find_pid(l, e->pid) >= 0)) {
				pp = &e->next;
				continue;
			}
			*pp = e->next;
			detail_drop_blob_locked(c, e);
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

static int details_parse(enum cache_part part, const char *body, size_t len,
			 struct cache_blob **out, char *err, size_t errlen)
{
	struct kudu_details d;
	struct cache_blob *b;
	int rc;

	if (part != CACHE_PART_DETAILS) {
		/* threads, modules: the server's JSON, pretty-printed, nothing read from it */
		if (!(b = calloc(1, sizeof(*b))))
			return -ENOMEM;
		rc = kudu_model_pretty_json(body, len, &b->data, &b->len, err, errlen);
		if (rc < 0) {
			free(b);
			return rc;
		}
		atomic_init(&b->refs, 1);
		*out = b;
		return 0;
	}
	rc = kudu_model_parse_details(body, len, &d, err, errlen);
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

/* Store a result under meta_lock; wakes everyone waiting for details. A
 * view that went meanwhile takes nothing, nor one now on another instance
 * than the result's (pin): those details are of another process. An error
 * that is not kept (error_is_kept) leaves the entry to the next reader. */
static void detail_store(struct cache *c, size_t app, const char *inst, const char *pin, int pid,
			 enum cache_part part, int rc, bool kept, struct cache_blob *blob)
{
	struct view_meta *v;
	struct detail_entry *e = NULL;
	char now_pin[KUDU_INSTANCE_MAX];

	pthread_mutex_lock(&c->meta_lock);
	v = view_find_locked(c, app, inst, false);
	if (v)
		e = detail_lookup(v, pid, part, true);
	if (e)
		view_pin_locked(v, now_pin, sizeof(now_pin));
	if (e && (strcmp(now_pin, pin) || !kept)) {
		/* another instance now, or not an answer to keep: the next
		 * reader fetches again */
		e->inflight = false; /* not fresh: the next reader fetches from the view's instance
				      */
		e->err = 0;
		detail_drop_blob_locked(c, e);
	} else if (e) {
		e->inflight = false;
		detail_drop_blob_locked(c, e);
		e->err = rc;
		e->at = kudu_now();
		if (rc == 0) {
			detail_set_blob_locked(c, e, blob);
			blob = NULL;
		}
	}
	pthread_cond_broadcast(&c->meta_cond);
	pthread_mutex_unlock(&c->meta_lock);
	cache_blob_put(blob);
}

static const char *view_label(const char *inst)
{
	return inst_is_app_view(inst) ? "" : inst;
}

/* Parse and store a details response; *out (if given) gets a reference. */
static const char *const part_names[] = { "details", "threads", "modules" };

static int detail_result(struct cache *c, size_t app, const char *inst, int pid,
			 enum cache_part part, struct kudu_request *req, bool prefetch,
			 struct cache_blob **out)
{
	struct cache_blob *blob = NULL;
	char err[KUDU_ERRLEN];
	int rc = req->err;
	const char *name = c->cfg->apps[app]->name;

	if (rc == 0) {
		rc = details_parse(part, req->body, req->body_len, &blob, err, sizeof(err));
		if (rc < 0)
			kudu_log(LOG_ERR, "%s%s%s: process %d %s: %s", name,
				 inst_is_app_view(inst) ? "" : " instance ", view_label(inst), pid,
				 part_names[part], err);
	} else if (rc != -ENOENT) {
		kudu_log(LOG_ERR, "%s%s%s: process %d %s: %s", name,
			 inst_is_app_view(inst) ? "" : " instance ", view_label(inst), pid,
			 part_names[part], req->errmsg);
	}
	if (rc == 0 && out) {
		atomic_fetch_add(&blob->refs, 1);
		*out = blob;
	}
	detail_store(c, app, inst, req->instance, pid, part, rc, error_is_kept(req, prefetch),
		     blob);
	if (req->rerouted)
		cache_instance_gone(c, app, req->instance, req->served_by);
	return rc;
}

struct prefetch {
	struct kudu_request req;
	struct cache *c;
	size_t app;
	char inst[KUDU_INSTANCE_MAX];
	int pid;
};

static void prefetch_done(struct kudu_request *req)
{
	struct prefetch *p = req->arg;

	detail_result(p->c, p->app, p->inst, p->pid, CACHE_PART_DETAILS, req, true, NULL);
	kudu_request_reset(req);
	free(p);
}

/* Claim (view, pid) for fetching under meta_lock; false if fresh or in flight. */
static bool detail_claim(struct cache *c, struct view_meta *v, int pid, double now)
{
	struct detail_entry *e = detail_lookup(v, pid, CACHE_PART_DETAILS, true);

	(void)c;
	if (!e || e->inflight || detail_fresh(c, e, now))
		return false;
	e->inflight = true;
	return true;
}

static void detail_submit(struct cache *c, size_t app, const char *inst, const char *pin, int pid)
{
	struct prefetch *p = calloc(1, sizeof(*p));

	if (!p) {
		detail_store(c, app, inst, pin, pid, CACHE_PART_DETAILS, -ENOMEM, true, NULL);
		return;
	}
	kudu_request_init(&p->req, c->cfg->apps[app], KUDU_REQ_JSON);
	kudu_url_details(c->cfg->apps[app], pid, p->req.url, sizeof(p->req.url));
	snprintf(p->req.instance, sizeof(p->req.instance), "%s", pin);
	p->req.on_done = prefetch_done;
	p->req.arg = p;
	p->c = c;
	p->app = app;
	snprintf(p->inst, sizeof(p->inst), "%s", inst ? inst : "");
	p->pid = pid;
	c->submit(c->client, &p->req);
}

/* Fetch details of every listed process named `name` (all if NULL). */
static void prefetch_named(struct cache *c, size_t app, const char *inst,
			   const struct cache_list *l, const char *name)
{
	int *todo = malloc((l->nprocs ? l->nprocs : 1) * sizeof(int));
	size_t n = 0;
	double now = kudu_now();
	char pin[KUDU_INSTANCE_MAX] = "";
	struct view_meta *v;

	if (!todo)
		return;
	pthread_mutex_lock(&c->meta_lock);
	v = view_find_locked(c, app, inst, false);
	if (v) {
		view_pin_locked(v, pin, sizeof(pin));
		for (size_t i = 0; i < l->nprocs; i++)
			if ((!name || !strcasecmp(l->procs[i].name, name)) &&
			    detail_claim(c, v, l->procs[i].pid, now))
				todo[n++] = l->procs[i].pid;
	}
	pthread_mutex_unlock(&c->meta_lock);
	/* the client keeps at most max_conns of these on the wire */
	for (size_t i = 0; i < n; i++)
		detail_submit(c, app, inst, pin, todo[i]);
	free(todo);
}

void cache_prefetch_details(struct cache *c, size_t app, const char *inst,
			    const struct cache_list *l)
{
	prefetch_named(c, app, inst, l, NULL);
}

int cache_get_details(struct cache *c, size_t app, const char *inst, int pid,
		      struct cache_blob **out)
{
	return cache_get_part(c, app, inst, pid, CACHE_PART_DETAILS, out);
}

int cache_get_part(struct cache *c, size_t app, const char *inst, int pid, enum cache_part part,
		   struct cache_blob **out)
{
	struct view_meta *v;
	struct detail_entry *e;
	struct kudu_request req;
	int rc;

	pthread_mutex_lock(&c->meta_lock);
	for (;;) {
		v = view_find_locked(c, app, inst, false);
		e = v ? detail_lookup(v, pid, part, true) : NULL;
		if (!e) {
			pthread_mutex_unlock(&c->meta_lock);
			return v ? -ENOMEM : (inst_is_app_view(inst) ? -ENOMEM : -ENOENT);
		}
		if (detail_fresh(c, e, kudu_now())) {
			rc = e->err;
			if (e->blob) {
				atomic_fetch_add(&e->blob->refs, 1);
				*out = e->blob;
				detail_lru_unlink_locked(c, e); /* now the most recently used */
				detail_lru_append_locked(c, e);
			}
			pthread_mutex_unlock(&c->meta_lock);
			return rc;
		}
		if (!e->inflight)
			break;
		if (meta_wait_locked(c) < 0) {
			pthread_mutex_unlock(&c->meta_lock);
			return -EINTR;
		}
	}
	e->inflight = true;
	kudu_request_init(&req, c->cfg->apps[app], KUDU_REQ_JSON);
	view_pin_locked(v, req.instance, sizeof(req.instance));
	pthread_mutex_unlock(&c->meta_lock);

	if (part == CACHE_PART_DETAILS)
		kudu_url_details(c->cfg->apps[app], pid, req.url, sizeof(req.url));
	else
		kudu_url_proc_part(c->cfg->apps[app], pid, part_names[part], req.url,
				   sizeof(req.url));
	cache_fetch(c, &req);
	rc = detail_result(c, app, inst, pid, part, &req, false, out);
	kudu_request_reset(&req);
	return rc;
}

int cache_peek_part(struct cache *c, size_t app, const char *inst, int pid, enum cache_part part,
		    size_t *size)
{
	struct view_meta *v;
	struct detail_entry *e = NULL;
	int rc = -ENOENT;

	pthread_mutex_lock(&c->meta_lock);
	v = view_find_locked(c, app, inst, false);
	if (v)
		e = detail_lookup(v, pid, part, false);
	if (e && e->blob && detail_fresh(c, e, kudu_now())) {
		*size = e->blob->len;
		rc = 0;
	}
	pthread_mutex_unlock(&c->meta_lock);
	return rc;
}

bool cache_proc_gone(struct cache *c, size_t app, const char *inst, int pid)
{
	struct view_meta *v;
	struct detail_entry *e = NULL;
	bool gone = false;

	pthread_mutex_lock(&c->meta_lock);
	v = view_find_locked(c, app, inst, false);
	if (v)
		e = detail_lookup(v, pid, CACHE_PART_DETAILS, false);
	if (e && !e->inflight && e->err == -ENOENT && detail_fresh(c, e, kudu_now()))
		gone = true;
	pthread_mutex_unlock(&c->meta_lock);
	return gone;
}

/* Index of the process holding role in l (kudu_model_role_of, first in list
 * order), fetching the candidates' details in parallel; -ENOENT if none
 * does, or a details error that is not "gone" (never reported as ENOENT). */
static int role_find(struct cache *c, size_t app, const char *inst, const struct cache_list *l,
		     enum kudu_role role, size_t *idx)
{
	int ferr = 0;

	if (!l->role_holders)
		return -ENOENT;
	prefetch_named(c, app, inst, l, l->role_holders);
	for (size_t i = 0; i < l->nprocs; i++) {
		struct cache_blob *b = NULL;
		enum kudu_role r;
		int e;

		if (kudu_model_role_of(l->role_holders, l->procs[i].name, false) == KUDU_ROLE_NONE)
			continue; /* not a candidate: no details needed */
		e = cache_get_details(c, app, inst, l->procs[i].pid, &b);
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

int cache_find_role(struct cache *c, size_t app, const char *inst, enum kudu_role role,
		    char *dirname, size_t len)
{
	struct cache_list *l;
	size_t i;
	int rc = cache_get_list(c, app, inst, &l);

	if (rc != 0) /* 0 or -errno; only 0 sets l */
		return rc;
	/* NOLINTNEXTLINE(clang-analyzer-core.CallAndMessage): 0 sets l */
	rc = role_find(c, app, inst, l, role, &i);
	if (rc == 0)
		snprintf(dirname, len, "%s", l->dirnames[i]);
	cache_list_put(l);
	return rc;
}

/* A process's own role: every non-SCM process of the role-holding name is a
 * site process (a web garden has several; the `site` link names the first
 * of them), the one with is_scm_site is Kudu's. Only candidates need their
 * details; a details error is that error, never a wrong "". */
int cache_proc_role(struct cache *c, size_t app, const char *inst, int pid, enum kudu_role *role)
{
	struct cache_list *l;
	struct cache_blob *b = NULL;
	ssize_t self;
	int rc = cache_get_list(c, app, inst, &l);

	if (rc != 0) /* 0 or -errno; only 0 sets l */
		return rc;
	*role = KUDU_ROLE_NONE;
	self = cache_list_find_pid(l, pid);
	if (self < 0) {
		rc = -ENOENT;
	} else if (kudu_model_role_of(l->role_holders, l->procs[self].name, false) !=
		   KUDU_ROLE_NONE) {
		rc = cache_get_details(c, app, inst, pid, &b);
		if (rc == 0) { /* 0 or -errno; only 0 sets b */
			*role = kudu_model_role_of(l->role_holders, l->procs[self].name, b->is_scm);
			cache_blob_put(b);
		}
	}
	cache_list_put(l);
	return rc;
}

/* ---- the instances of an app ---- */

static struct cache_instances *instances_snapshot(const struct kudu_instances *found)
{
	struct cache_instances *l = calloc(1, sizeof(*l));

	if (!l || !(l->ids = calloc(found->n ? found->n : 1, sizeof(*l->ids)))) {
		free(l);
		return NULL;
	}
	atomic_init(&l->refs, 1);
	l->source = found->source;
	for (size_t i = 0; i < found->n; i++) {
		if (!(l->ids[i] = strdup(found->ids[i]))) {
			cache_instances_put(l);
			return NULL;
		}
		l->n++;
	}
	return l;
}

/* Views of instances the new list no longer has are freed: scaled in. */
static void instances_prune_views_locked(struct cache *c, struct app_meta *m,
					 const struct cache_instances *l)
{
	struct view_meta **pp = &m->insts;

	while (*pp) {
		struct view_meta *v = *pp;

		if (v->list_inflight || cache_instances_has(l, v->inst, strlen(v->inst))) {
			pp = &v->next;
			continue;
		}
		*pp = v->next;
		view_clear(c, v);
		free(v);
	}
}

int cache_get_instances(struct cache *c, size_t app, bool refresh, struct cache_instances **out)
{
	struct app_meta *m = &c->meta[app];
	struct kudu_app *a = c->cfg->apps[app];
	struct kudu_instances found;
	struct cache_instances *l = NULL;
	char err[KUDU_ERRLEN] = "";
	bool log_why = false;
	double asked = kudu_now();
	int rc;

	pthread_mutex_lock(&c->meta_lock);
	for (;;) {
		double now = kudu_now();

		/* a refresh is served by a discovery that started after it was asked */
		if (m->ilist &&
		    (refresh ? m->ilist_at >= asked : now - m->ilist_at < c->cfg->list_ttl)) {
			atomic_fetch_add(&m->ilist->refs, 1);
			*out = m->ilist;
			pthread_mutex_unlock(&c->meta_lock);
			return 0;
		}
		if (m->ilist_err && (refresh ? m->ilist_err_at >= asked
					     : now - m->ilist_err_at < c->cfg->neg_ttl)) {
			rc = m->ilist_err;
			pthread_mutex_unlock(&c->meta_lock);
			return rc;
		}
		if (!m->ilist_inflight)
			break;
		pthread_cond_wait(&c->meta_cond, &c->meta_lock);
	}
	m->ilist_inflight = true;
	pthread_mutex_unlock(&c->meta_lock);

	asked = kudu_now();
	rc = kudu_instances_discover(c->client, a, &found, err, sizeof(err));
	if (rc == 0 && !(l = instances_snapshot(&found)))
		rc = -ENOMEM;
	if (rc < 0)
		kudu_log(LOG_ERR, "%s: instances: %s", a->name, err[0] ? err : strerror(-rc));

	pthread_mutex_lock(&c->meta_lock);
	m->ilist_inflight = false;
	if (l) {
		/* a fallback answered: say once which discovery failed and why */
		log_why = found.why[0] && strcmp(found.why, m->ilist_why);
		snprintf(m->ilist_why, sizeof(m->ilist_why), "%s", found.why);
		instances_prune_views_locked(c, m, l);
		cache_instances_put(m->ilist);
		m->ilist = l;
		m->ilist_at = asked;
		m->ilist_err = 0;
		atomic_fetch_add(&l->refs, 1);
		*out = l;
	} else {
		m->ilist_err = rc;
		m->ilist_err_at = asked;
	}
	pthread_cond_broadcast(&c->meta_cond);
	pthread_mutex_unlock(&c->meta_lock);
	if (log_why)
		kudu_log(
			LOG_WARNING,
			"%s: instance discovery failed (%s); instances/ lists the %zu instance(s) %s",
			a->name, found.why, l->n,
			found.source == KUDU_INST_KUDU ? "Kudu's /instance/all names"
						       : "the front end has named so far");
	if (rc == 0)
		kudu_instances_free(&found);
	return rc;
}

void cache_instance_gone(struct cache *c, size_t app, const char *inst, const char *other)
{
	struct app_meta *m = &c->meta[app];
	struct cache_instances *old = NULL, *l = NULL;
	bool listed;

	if (!inst || !inst[0])
		return;
	pthread_mutex_lock(&c->meta_lock);
	listed = m->ilist && cache_instances_has(m->ilist, inst, strlen(inst));
	if (listed && (l = calloc(1, sizeof(*l))) &&
	    (l->ids = calloc(m->ilist->n, sizeof(*l->ids)))) {
		/* snapshots are immutable: a new one without inst */
		atomic_init(&l->refs, 1);
		l->source = m->ilist->source;
		for (size_t i = 0; i < m->ilist->n; i++)
			if (strcmp(m->ilist->ids[i], inst) &&
			    (l->ids[l->n] = strdup(m->ilist->ids[i])))
				l->n++;
		old = m->ilist;
		m->ilist = l; /* keeps its time: discovery lists it again after list_ttl or on ls */
	} else if (l) {
		free(l);
	}
	view_drop_locked(c, m, inst);
	/* the app-level view's list came from it: fetch it again (the front end
	 * has moved the view's pin on) */
	if (m->view.list && !strcmp(m->view.list->instance, inst))
		m->view.list_at = 0;
	pthread_cond_broadcast(&c->meta_cond);
	pthread_mutex_unlock(&c->meta_lock);
	cache_instances_put(old);
	if (listed)
		kudu_log(
			LOG_WARNING,
			"%s: instance %s is gone (the front end routed its request to %s); dropped from instances/ until discovery lists it again",
			c->cfg->apps[app]->name, inst,
			other && other[0] ? other : "another instance");
}
