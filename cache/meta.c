/*
 * Metadata cache: per-app process list and per-process details, with TTLs,
 * negative entries and single-flight fetches. One mutex (meta_lock) guards
 * it all; it is never held while a request is on the wire.
 */
#include "cache/cache_priv.h"

#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>


void cache_list_put(struct cache_list *l)
{
	if (!l || atomic_fetch_sub(&l->refs, 1) != 1)
		return;
	for (size_t i = 0; i < l->nprocs; i++) {
		free(l->procs[i].name);
		free(l->procs[i].dirname);
	}
	free(l->procs);
	free(l->by_pid);
	free(l->raw);
	free(l);
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
		out[n++] = (ch == '/' || ch < 0x20 || ch == 0x7f) ? '_' : (char)ch;
	}
	out[n] = '\0';
	if (n == 0)
		snprintf(out, outlen, "process");
}

static struct cache_list *list_parse(char *body, size_t len, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root = json_loadb(body, len, 0, &jerr);
	json_t *arr = root;
	struct cache_list *l;
	size_t i, n;

	if (root && json_is_object(root))
		arr = json_object_get(root, "value"); /* ARM envelope */
	if (!arr || !json_is_array(arr)) {
		snprintf(err, errlen, "malformed process list from server%s%s",
			 root ? "" : ": ", root ? "" : jerr.text);
		json_decref(root);
		return NULL;
	}
	l = calloc(1, sizeof(*l));
	n = json_array_size(arr);
	if (!l || !(l->procs = calloc(n ? n : 1, sizeof(*l->procs))) ||
	    !(l->by_pid = calloc(n ? n : 1, sizeof(int64_t)))) {
		if (l) {
			free(l->procs);
			free(l);
		}
		json_decref(root);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	atomic_init(&l->refs, 1);
	for (i = 0; i < n; i++) {
		json_t *it = json_array_get(arr, i);
		json_t *props = json_object_get(it, "properties");
		json_t *id, *name;
		char safe[224];
		struct cache_proc *p;

		if (props && json_is_object(props))
			it = props;
		id = json_object_get(it, "id");
		/* dotnet-monitor's items (KuduLite proxies them) say pid, ARM's identifier */
		if (!json_is_integer(id))
			id = json_object_get(it, "pid");
		if (!json_is_integer(id))
			id = json_object_get(it, "identifier");
		name = json_object_get(it, "name");
		if (!json_is_integer(id) || !json_is_string(name))
			continue;
		if (json_integer_value(id) < 0 || json_integer_value(id) > 0x7fffffff)
			continue;
		p = &l->procs[l->nprocs];
		p->pid = (int)json_integer_value(id);
		cache_sanitize_name(json_string_value(name), safe, sizeof(safe));
		p->name = strdup(json_string_value(name));
		if (!p->name || asprintf(&p->dirname, "%s-%d", safe, p->pid) < 0) {
			free(p->name);
			continue;
		}
		l->nprocs++;
	}
	json_decref(root);
	return l;
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

const struct cache_proc *cache_list_find_pid(const struct cache_list *l, int pid)
{
	size_t lo = 0, hi = l->nprocs;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		const struct cache_proc *p = &l->procs[l->by_pid[mid] & 0xffffffff];
		if (p->pid == pid)
			return p;
		if (p->pid < pid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return NULL;
}

const struct cache_proc *cache_list_find_dir(const struct cache_list *l, const char *dirname)
{
	const char *dash = strrchr(dirname, '-');
	const struct cache_proc *p;
	char *end;
	long pid;

	if (!dash || !dash[1])
		return NULL;
	pid = strtol(dash + 1, &end, 10);
	if (*end || pid < 0 || pid > 0x7fffffff)
		return NULL;
	p = cache_list_find_pid(l, (int)pid);
	return (p && !strcmp(p->dirname, dirname)) ? p : NULL;
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
			atomic_fetch_add(&m->list->refs, 1);
			*out = m->list;
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
	if (rc == 0) {
		l = list_parse(body, len, err, sizeof(err));
		if (l) {
			l->raw = body;
			l->raw_len = len;
			body = NULL;
			list_index(l);
		} else {
			rc = -EIO;
		}
	}
	free(body);
	if (rc < 0)
		fprintf(stderr, "kudufs: %s: list: %s\n", a->name, err);

	pthread_mutex_lock(&c->meta_lock);
	m->list_inflight = false;
	if (l) {
		details_prune_locked(m, l);
		cache_list_put(m->list);
		m->list = l;
		m->list_at = kudu_now();
		m->list_err = 0;
		atomic_fetch_add(&l->refs, 1);
		*out = l;
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

			if (e->inflight || cache_list_find_pid(l, e->pid)) {
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
	json_error_t jerr;
	json_t *root = json_loadb(body, len, 0, &jerr);
	json_t *obj = root, *props;
	struct cache_blob *b;
	char *text;

	if (!root || !json_is_object(root)) {
		snprintf(err, errlen, "malformed process details from server%s%s",
			 root ? "" : ": ", root ? "" : jerr.text);
		json_decref(root);
		return -EIO;
	}
	props = json_object_get(root, "properties");
	if (props && json_is_object(props))
		obj = props;
	text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	b = calloc(1, sizeof(*b));
	if (!text || !b) {
		free(text);
		free(b);
		json_decref(root);
		return -ENOMEM;
	}
	b->len = strlen(text);
	b->data = realloc(text, b->len + 2);
	if (!b->data) {
		free(text);
		free(b);
		json_decref(root);
		return -ENOMEM;
	}
	b->data[b->len++] = '\n';
	b->data[b->len] = '\0';
	b->is_scm = json_is_true(json_object_get(obj, "is_scm_site"));
	atomic_init(&b->refs, 1);
	json_decref(root);
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
			fprintf(stderr, "kudufs: %s: process %d: %s\n", c->cfg->apps[app]->name, pid, err);
	} else if (rc != -ENOENT) {
		fprintf(stderr, "kudufs: %s: process %d details: %s\n", c->cfg->apps[app]->name, pid,
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

/* The site's worker is the w3wp without is_scm_site; Kudu's own has it
 * true. Apps without w3wp (Linux, Functions) fall back to dotnet. */
int cache_find_role(struct cache *c, size_t app, enum cache_role role, char *dirname, size_t len)
{
	static const char *const kinds[] = { "w3wp", "dotnet" };
	struct cache_list *l;
	int rc = cache_get_list(c, app, &l);

	if (rc < 0)
		return rc;
	int ferr = 0; /* a details error that is not "gone": never report it as ENOENT */

	rc = -ENOENT;
	for (size_t k = 0; k < 2 && rc == -ENOENT; k++) {
		size_t ncand = 0;

		for (size_t i = 0; i < l->nprocs; i++)
			if (!strcasecmp(l->procs[i].name, kinds[k]))
				ncand++;
		if (!ncand)
			continue;
		prefetch_named(c, app, l, kinds[k]); /* candidates in parallel */
		for (size_t i = 0; i < l->nprocs; i++) {
			struct cache_blob *b = NULL;

			if (strcasecmp(l->procs[i].name, kinds[k]))
				continue;
			int e = cache_get_details(c, app, l->procs[i].pid, &b);

			if (e < 0) {
				if (e != -ENOENT && !ferr)
					ferr = e;
				continue;
			}
			if (b->is_scm == (role == CACHE_ROLE_SCM)) {
				snprintf(dirname, len, "%s", l->procs[i].dirname);
				rc = 0;
			}
			cache_blob_put(b);
			if (rc == 0)
				break;
		}
		break; /* w3wp present: do not fall back to dotnet */
	}
	cache_list_put(l);
	return rc == -ENOENT && ferr ? ferr : rc;
}
