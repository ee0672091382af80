/*
 * The Kudu HTTP client: one transfer thread drives a libcurl multi handle.
 *
 * Callers hand in a struct kudu_request and get on_done() back from the
 * transfer thread (at shutdown, from kudu_client_submit: see kudu.h). JSON requests are limited to
 * max_conns at once (the details prefetch of a big app would otherwise open hundreds of sockets);
 * dump requests are never held back here, the cache serialises them per app.
 *
 * Timeouts are checked by this loop rather than CURLOPT_LOW_SPEED_*: Kudu
 * sends nothing while it writes a dump, which can take minutes, so "no first
 * byte" and "stalled mid-body" need different limits, and curl's low-speed
 * check counts that silent wait (measured: LOW_SPEED_TIME 2 s fails a
 * response whose headers come after 5 s). min_rate is the same rule as
 * curl's, applied from the response headers on. List and details requests
 * have one more, meta_timeout, on the whole request: every attempt and every
 * wait between attempts (Retry-After included).
 */
#include "kudu.h"
#include "kudu/log.h"

#include <ctype.h>
#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define ERROR_BODY_MAX (64u << 10)
#define MAX_ATTEMPTS 5
#define RETRY_AFTER_MAX 120.0

struct kudu_client {
	const struct kudu_config *cfg;
	CURLM *multi;
	pthread_t thread;
	kudu_interrupted_fn interrupted; /* set before any fetch: the caller gave up */

	pthread_mutex_t lock; /* guards incoming*, stopping */
	struct kudu_request *incoming_head, *incoming_tail;
	bool stopping;

	/* transfer thread only, no lock */
	CURLMcode last_mc; /* last curl_multi_* failure logged: a repeat is not logged again */
	struct kudu_request *waiting_head, *waiting_tail;
	struct kudu_request *active;
	unsigned active_json;
	/* JSON bodies being received, in memory at once: at most max_json
	 * beyond the one body let past it (json_owner), so 2 x max_json in all,
	 * not max_conns x max_json. The others pause until it is done. */
	uint64_t json_bytes;
	struct kudu_request *json_owner;
	bool json_resume; /* a body left: resume the paused ones */

	/* Instances, parallel to cfg->apps. App Service's ARR pins a request to
	 * an instance by the ARRAffinity cookie, and process ids are per
	 * instance. No curl cookie jar: a pinned request sends exactly its own
	 * instance's cookie, and the app-level view sends the one in view. */
	pthread_mutex_t inst_lock; /* guards apps[*] */
	struct client_app *apps;
};

struct client_app {
	char view[KUDU_INSTANCE_MAX]; /* the app-level view's instance, "" until the front end names
					 one */
	char **seen;                  /* ids named in Set-Cookie so far, at most KUDU_SEEN_MAX */
	size_t nseen;
};

struct xfer {
	const struct kudu_config *cfg;
	CURL *easy;
	struct curl_slist *headers;
	char errbuf[CURL_ERROR_SIZE];
	double t_start, t_first, t_last;
	bool headers_done;
	bool in_multi;    /* added to c->multi, on c->active, counted in active_json */
	bool decoded;     /* curl undoes a Content-Encoding: Content-Length is not the body's */
	char reason[128]; /* HTTP/1 reason phrase of the last status line; HTTP/2 has none */
	int local_err;    /* positive errno from on_body */
	size_t body_cap;
	char sent[KUDU_INSTANCE_MAX];     /* the ARRAffinity cookie sent, "" none */
	char affinity[KUDU_INSTANCE_MAX]; /* Set-Cookie: ARRAffinity=... of this response ... */
	bool affinity_set;                /* ... if any ("" when its value was not an id) */
	bool rerouted;  /* pinned, and another instance answered: abort, body unread */
	bool preflight; /* this attempt only checks the pinned instance is there */
	struct kudu_client *client;
	bool paused;           /* CURL_WRITEFUNC_PAUSE for the JSON budget: no stall/min_rate */
	uint64_t json_counted; /* of this body, in client->json_bytes */
	double rate_t0;        /* min_rate window: its start ... */
	uint64_t rate_b0;      /* ... and the body bytes then */
};

struct sync_wait {
	pthread_mutex_t lock; /* guards done */
	pthread_cond_t cond;
	bool done;
};

double kudu_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

struct timespec kudu_deadline_in(clockid_t clock, long ms)
{
	struct timespec ts;

	clock_gettime(clock, &ts);
	ts.tv_sec += ms / 1000;
	ts.tv_nsec += (ms % 1000) * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	return ts;
}

void kudu_request_init(struct kudu_request *req, struct kudu_app *app, enum kudu_req_kind kind)
{
	memset(req, 0, sizeof(*req));
	req->app = app;
	req->kind = kind;
	req->length = -1;
	atomic_init(&req->cancel, 0);
}

/* Clear results before a retry or a resubmission. */
void kudu_request_reset(struct kudu_request *req)
{
	free(req->body);
	req->body = NULL;
	req->body_len = 0;
	req->err = 0;
	req->status = 0;
	req->length = -1;
	req->bytes = 0;
	req->filename[0] = '\0';
	req->content_type[0] = '\0';
	req->errmsg[0] = '\0';
	req->served_by[0] = '\0';
	req->rerouted = false;
}

static void list_append(struct kudu_request **head, struct kudu_request **tail,
			struct kudu_request *req)
{
	req->priv_next = NULL;
	if (*tail)
		(*tail)->priv_next = req;
	else
		*head = req;
	*tail = req;
}

/* ---- curl callbacks (transfer thread) ---------------------------------- */

static void parse_disposition(struct kudu_request *req, const char *v, size_t n)
{
	const char *p = strcasestr(v, "filename=");
	size_t len = 0;
	char out[sizeof(req->filename)];

	if (!p || p >= v + n)
		return;
	p += 9;
	if (*p == '"')
		p++;
	while (p + len < v + n && p[len] != '"' && p[len] != ';' && p[len] != '\r' &&
	       p[len] != '\n' && len + 1 < sizeof(out)) {
		/* a server-chosen name: keep it to a safe character set */
		char ch = p[len];

		if (ch == '/' || (unsigned char)ch < 0x20)
			ch = '_';
		out[len++] = ch;
	}
	out[len] = '\0';
	memcpy(req->filename, out, len + 1);
}

/* "HTTP/1.1 500 Request Timed Out\r\n" -> "Request Timed Out"; "HTTP/2 500 \r\n" -> "". */
static void parse_reason(struct xfer *x, const char *line, size_t n)
{
	const char *p = memchr(line, ' ', n);
	const char *end = line + n;
	size_t len = 0;

	x->reason[0] = '\0';
	if (!p)
		return;
	while (p < end && *p == ' ')
		p++;
	while (p < end && *p != ' ' && *p != '\r' && *p != '\n')
		p++; /* the status code */
	while (p < end && *p == ' ')
		p++;
	while (p + len < end && p[len] != '\r' && p[len] != '\n' && len + 1 < sizeof(x->reason)) {
		x->reason[len] = p[len];
		if ((unsigned char)p[len] < 0x20)
			x->reason[len] = ' ';
		len++;
	}
	x->reason[len] = '\0';
}

/* "Content-Type: Text/HTML; charset=utf-8" -> "text/html": the capture layer
 * tells a dump (application/octet-stream) from a front-end error page by it. */
static void parse_content_type(struct kudu_request *req, const char *v, size_t n)
{
	const char *end = v + n;
	size_t len = 0;

	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (v + len < end && v[len] != ';' && v[len] != '\r' && v[len] != '\n' &&
	       len + 1 < sizeof(req->content_type)) {
		req->content_type[len] = (char)tolower((unsigned char)v[len]);
		len++;
	}
	while (len > 0 && (req->content_type[len - 1] == ' ' || req->content_type[len - 1] == '\t'))
		len--;
	req->content_type[len] = '\0';
}

/* "Set-Cookie: ARRAffinity=<id>;Path=/;HttpOnly;Domain=..." names the
 * instance that answered. ARRAffinitySameSite carries the same id; only the
 * exact name counts. */
static void parse_set_cookie(struct xfer *x, const char *v, size_t n)
{
	const char *end = v + n;
	size_t len;

	while (n > 0 && (*v == ' ' || *v == '\t'))
		v++, n--;
	if (n < 12 || strncmp(v, "ARRAffinity=", 12))
		return;
	v += 12;
	len = 0;
	while (v + len < end && v[len] != ';' && v[len] != '\r' && v[len] != '\n')
		len++;
	x->affinity_set = true;
	x->affinity[0] = '\0';
	if (len < sizeof(x->affinity)) {
		memcpy(x->affinity, v, len);
		x->affinity[len] = '\0';
		if (!kudu_instance_id_is_valid(x->affinity))
			x->affinity[0] = '\0'; /* still "another instance" for a pinned request */
	}
}

static size_t on_header(char *data, size_t size, size_t nmemb, void *arg)
{
	struct kudu_request *req = arg;
	struct xfer *x = req->priv;
	size_t n = size * nmemb;

	if (n >= 5 && !strncmp(data, "HTTP/", 5)) {
		/* a new header block (after 100-continue or a retry) */
		req->filename[0] = '\0';
		req->content_type[0] = '\0';
		x->headers_done = false;
		x->affinity_set = false;
		x->affinity[0] = '\0';
		parse_reason(x, data, n);
		x->decoded = false;
		if (!x->t_first)
			x->t_first = x->t_last = kudu_now();
	} else if (n >= 20 && !strncasecmp(data, "Content-Disposition:", 20)) {
		parse_disposition(req, data + 20, n - 20);
	} else if (n >= 13 && !strncasecmp(data, "Content-Type:", 13)) {
		parse_content_type(req, data + 13, n - 13);
	} else if (n >= 11 && !strncasecmp(data, "Set-Cookie:", 11)) {
		parse_set_cookie(x, data + 11, n - 11);
	} else if (n >= 17 && !strncasecmp(data, "Content-Encoding:", 17)) {
		const char *v = data + 17;

		while (v < data + n && (*v == ' ' || *v == '\t'))
			v++;
		/* only JSON requests ask curl to decode (CURLOPT_ACCEPT_ENCODING) */
		x->decoded = req->kind == KUDU_REQ_JSON && v < data + n && *v != '\r' &&
			     *v != '\n' && strncasecmp(v, "identity", 8) != 0;
	} else if (n <= 2 && (data[0] == '\r' || data[0] == '\n')) {
		curl_off_t cl = -1;
		long status = 0;

		curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
		curl_easy_getinfo(x->easy, CURLINFO_CONTENT_LENGTH_DOWNLOAD_T, &cl);
		if (status >= 200) {
			req->status = status;
			/* a compressed length says nothing about the decoded body */
			req->length = x->decoded ? -1 : cl;
			x->headers_done = true;
			/* another instance's answer: not one body byte of it is taken */
			if (req->instance[0] && x->affinity_set &&
			    strcmp(x->affinity, req->instance)) {
				x->rerouted = true;
				return 0;
			}
		}
	}
	return n;
}

static int body_append(struct kudu_request *req, struct xfer *x, const char *data, size_t n,
		       uint64_t max)
{
	if (req->body_len + n > max)
		return -EFBIG;
	if (req->body_len + n + 1 > x->body_cap) {
		size_t cap = x->body_cap ? x->body_cap : 16384;
		char *b;

		while (cap < req->body_len + n + 1)
			cap *= 2;
		b = realloc(req->body, cap);
		if (!b)
			return -ENOMEM;
		req->body = b;
		x->body_cap = cap;
	}
	memcpy(req->body + req->body_len, data, n);
	req->body_len += n;
	req->body[req->body_len] = '\0';
	return 0;
}

static size_t on_write(char *data, size_t size, size_t nmemb, void *arg)
{
	struct kudu_request *req = arg;
	struct xfer *x = req->priv;
	const struct kudu_config *cfg = x->cfg;
	size_t n = size * nmemb;
	int c;

	x->t_last = kudu_now();
	if ((c = atomic_load(&req->cancel))) {
		x->local_err = c;
		return 0;
	}
	if (x->preflight)
		return n; /* the list is not wanted, only who answered it */
	if (req->kind == KUDU_REQ_DUMP && req->status == 200) {
		req->bytes += n;
		if ((c = req->on_body(req, data, n))) {
			x->local_err = c;
			return 0;
		}
		return n;
	}
	if (req->status == 200 && x->client->json_bytes + n > cfg->max_json &&
	    x->client->json_owner != req) {
		if (x->client->json_owner) {
			if (kudu_log_tracing())
				kudu_log(
					LOG_DEBUG,
					"%s: GET %s: paused, %llu bytes of JSON bodies in memory (max_json %llu)",
					req->app->name, req->url,
					(unsigned long long)x->client->json_bytes,
					(unsigned long long)cfg->max_json);
			x->paused = true; /* curl hands these bytes again on resume */
			return CURL_WRITEFUNC_PAUSE;
		}
		x->client->json_owner = req;
	}
	req->bytes += n;
	/* JSON bodies (max_json, counted decoded: a gzip bomb stops there) and
	 * error bodies are kept in memory */
	if (body_append(req, x, data, n, req->status == 200 ? cfg->max_json : ERROR_BODY_MAX) < 0) {
		if (req->status != 200)
			return n; /* an over-long error page: its head is enough */
		x->local_err = EFBIG;
		return 0;
	}
	if (req->status == 200) {
		x->client->json_bytes += n;
		x->json_counted += n;
	}
	return n;
}

/* ---- request lifecycle (transfer thread) ------------------------------- */

/* The app's slot in c->apps, or NULL for an app outside the config. */
static struct client_app *client_app_of(struct kudu_client *c, const struct kudu_app *app)
{
	for (size_t i = 0; i < c->cfg->napps; i++)
		if (c->cfg->apps[i] == app)
			return &c->apps[i];
	return NULL;
}

/* Scheme, host and port of url, lower-cased where case does not matter. */
static int url_origin(const char *url, char *out, size_t len)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *port = NULL;
	int rc = -EINVAL;

	if (!u)
		return -ENOMEM;
	if (curl_url_set(u, CURLUPART_URL, url, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK) {
		for (char *p = host; *p; p++)
			*p = (char)tolower((unsigned char)*p);
		snprintf(out, len, "%s://%s:%s", scheme, host, port);
		rc = 0;
	}
	curl_free(scheme);
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return rc;
}

/* Credentials and tokens only ever go to the host the local config names
 * for them: the app's url for Kudu, arm_endpoint for ARM. A URL from a
 * server (ARM's nextLink) naming any other host is refused here. */
static int client_check_host(const struct kudu_request *req, char *msg, size_t len)
{
	const char *base = req->arm ? req->app->arm_endpoint : req->app->url;
	char want[512], got[512];

	if (!base || url_origin(base, want, sizeof(want)) < 0 ||
	    url_origin(req->url, got, sizeof(got)) < 0 || strcmp(want, got)) {
		snprintf(msg, len,
			 "refusing to send %s credentials to %.200s: not the %s of [app %.100s]",
			 req->arm ? "ARM" : "Kudu",
			 url_origin(req->url, got, sizeof(got)) ? "that URL" : got,
			 req->arm ? "arm_endpoint" : "url", req->app->name);
		return -EPERM;
	}
	return 0;
}

/* Remember an id the front end named (bounded: memory stays flat). */
static void client_note_seen_locked(struct client_app *ca, const char *id)
{
	char **grown;

	for (size_t i = 0; i < ca->nseen; i++)
		if (!strcmp(ca->seen[i], id))
			return;
	if (ca->nseen >= KUDU_SEEN_MAX)
		return;
	grown = realloc(ca->seen, (ca->nseen + 1) * sizeof(*grown));
	if (!grown)
		return;
	ca->seen = grown;
	if ((ca->seen[ca->nseen] = strdup(id)))
		ca->nseen++;
}

/* The cookie of this attempt: the pinned instance, or the app-level view's. */
static void client_set_cookie(struct kudu_client *c, CURL *e, struct kudu_request *req,
			      struct xfer *x)
{
	struct client_app *ca = client_app_of(c, req->app);
	char cookie[KUDU_INSTANCE_MAX + 16];

	x->sent[0] = '\0';
	if (req->arm)
		return;
	if (req->instance[0]) {
		snprintf(x->sent, sizeof(x->sent), "%s", req->instance);
	} else if (ca) {
		pthread_mutex_lock(&c->inst_lock);
		snprintf(x->sent, sizeof(x->sent), "%s", ca->view);
		pthread_mutex_unlock(&c->inst_lock);
	}
	if (!x->sent[0])
		return;
	snprintf(cookie, sizeof(cookie), "ARRAffinity=%s", x->sent);
	curl_easy_setopt(e, CURLOPT_COOKIE, cookie);
}

/* The app-level view was on instance `from`, which no longer answers: it
 * follows the front end to `to`, as a browser would. Under inst_lock. */
static void client_view_follow_locked(struct client_app *ca, const char *app, const char *to)
{
	kudu_log(
		LOG_WARNING,
		"%s: instance %s no longer answers; the front end moved the app-level view to instance %s",
		app, ca->view, to);
	snprintf(ca->view, sizeof(ca->view), "%s", to);
}

/* After a response: who answered, and where the app-level view is now.
 * A pin that the front end moved (the instance is gone) is followed by the
 * app-level view, as a browser would, and logged; a pinned request's
 * answer from another instance was already refused in on_header. */
static void client_note_affinity(struct kudu_client *c, struct kudu_request *req, struct xfer *x)
{
	struct client_app *ca = client_app_of(c, req->app);

	snprintf(req->served_by, sizeof(req->served_by), "%s",
		 x->affinity_set ? x->affinity : x->sent);
	if (!ca || req->arm || !x->affinity_set || !x->affinity[0])
		return;
	pthread_mutex_lock(&c->inst_lock);
	client_note_seen_locked(ca, x->affinity);
	if (!req->instance[0] && strcmp(ca->view, x->affinity)) {
		if (!ca->view[0]) {
			snprintf(ca->view, sizeof(ca->view), "%s", x->affinity);
		} else if (!strcmp(ca->view, x->sent)) {
			client_view_follow_locked(ca, req->app->name, x->affinity);
		}
		/* else: sent before the view was known or moved; labelled by served_by */
	}
	pthread_mutex_unlock(&c->inst_lock);
}

static int xfer_start(struct kudu_client *c, struct kudu_request *req)
{
	const struct kudu_config *cfg = c->cfg;
	struct kudu_app *app = req->app;
	struct xfer *x = calloc(1, sizeof(*x));

	if (!x)
		return -ENOMEM;
	x->easy = curl_easy_init();
	if (!x->easy) {
		free(x);
		return -ENOMEM;
	}
	req->priv = x;
	x->cfg = cfg;
	x->client = c;
	x->t_start = kudu_now();
	req->attempts++;
	/* A dump pauses the process, and Kudu writes it before it sends a
	 * header: a dump request the front end reroutes to another instance
	 * would pause a process there that nobody asked for. So a pinned dump
	 * first asks the cheap list of its instance; only if that instance
	 * answers itself does the dump go out, a moment later. */
	x->preflight = req->kind == KUDU_REQ_DUMP && req->instance[0] && !req->preflighted;
	if (x->preflight)
		req->attempts--;

	CURL *e = x->easy;
	if (x->preflight) {
		char url[sizeof(req->url)];

		kudu_url_list(app, url, sizeof(url));
		curl_easy_setopt(e, CURLOPT_URL, url);
	} else {
		curl_easy_setopt(e, CURLOPT_URL, req->url);
	}
	curl_easy_setopt(e, CURLOPT_PRIVATE, req);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, x->errbuf);
	curl_easy_setopt(e, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(e, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, on_write);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, (long)cfg->connect_timeout);
	curl_easy_setopt(e, CURLOPT_USERAGENT, "kudufs/" KUDUFS_VERSION);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_TCP_KEEPALIVE, 1L);
	curl_easy_setopt(e, CURLOPT_ACCEPT_ENCODING, req->kind == KUDU_REQ_JSON ? "" : NULL);
	if (req->kind == KUDU_REQ_DUMP)
		curl_easy_setopt(e, CURLOPT_BUFFERSIZE, 512L * 1024);
	if (cfg->insecure) {
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYPEER, 0L);
		curl_easy_setopt(e, CURLOPT_SSL_VERIFYHOST, 0L);
	}
	if (cfg->ca_file)
		curl_easy_setopt(e, CURLOPT_CAINFO, cfg->ca_file);
	client_set_cookie(c, e, req, x);

	int hrc = client_check_host(req, req->errmsg, sizeof(req->errmsg));
	if (hrc < 0)
		return hrc;
	if (req->arm) {
		char *h = kudu_app_bearer(app, true, &req->token_gen);

		if (h) {
			x->headers = curl_slist_append(NULL, h);
			kudu_secret_free(h);
		}
	} else
		switch (app->cred) {
		case KUDU_CRED_BASIC:
			curl_easy_setopt(e, CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
			curl_easy_setopt(e, CURLOPT_USERNAME, app->user);
			curl_easy_setopt(e, CURLOPT_PASSWORD, app->password);
			break;
		case KUDU_CRED_TOKEN: {
			char *h = kudu_app_bearer(app, false, &req->token_gen);

			if (h) {
				x->headers = curl_slist_append(NULL, h);
				kudu_secret_free(h);
			}
			break;
		}
		case KUDU_CRED_NETRC:
			curl_easy_setopt(e, CURLOPT_NETRC, (long)CURL_NETRC_OPTIONAL);
			curl_easy_setopt(e, CURLOPT_NETRC_FILE, app->netrc_file);
			break;
		case KUDU_CRED_NONE:
			break;
		}
	x->headers = curl_slist_append(x->headers, "Accept: application/json, */*");
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, x->headers);

	CURLMcode mc = curl_multi_add_handle(c->multi, e);

	if (mc != CURLM_OK) {
		kudu_log(LOG_ERR, "%s: curl_multi_add_handle: %s", app->name,
			 curl_multi_strerror(mc));
		return -EIO; /* not counted: xfer_release must not uncount it */
	}
	if (kudu_log_tracing())
		kudu_log(LOG_DEBUG, "%s: GET %s (attempt %d)", app->name, req->url, req->attempts);
	x->in_multi = true;
	req->priv_next = c->active;
	c->active = req;
	if (req->kind == KUDU_REQ_JSON)
		c->active_json++;
	return 0;
}

static void xfer_release(struct kudu_client *c, struct kudu_request *req)
{
	struct xfer *x = req->priv;
	struct kudu_request **pp;

	if (x && x->in_multi) {
		for (pp = &c->active; *pp; pp = &(*pp)->priv_next) {
			if (*pp == req) {
				*pp = req->priv_next;
				break;
			}
		}
		req->priv_next = NULL;
		/* only what xfer_start counted: an unsigned wrap here would hold
		 * every later JSON request in the waiting list for ever */
		if (req->kind == KUDU_REQ_JSON)
			c->active_json--;
		curl_multi_remove_handle(c->multi, x->easy);
	}
	if (x) {
		if (x->json_counted || c->json_owner == req) {
			c->json_bytes -= x->json_counted;
			if (c->json_owner == req)
				c->json_owner = NULL;
			c->json_resume = true;
		}
		curl_easy_cleanup(x->easy);
		curl_slist_free_all(x->headers);
		free(x);
	}
	req->priv = NULL;
}

/* Bodies paused for the JSON budget go on once one left (loop context:
 * curl may call on_write from curl_easy_pause, which may pause again). */
static void resume_json(struct kudu_client *c, double now)
{
	if (!c->json_resume)
		return;
	c->json_resume = false;
	for (struct kudu_request *req = c->active; req; req = req->priv_next) {
		struct xfer *x = req->priv;

		if (x && x->paused) {
			x->paused = false;
			x->t_last = now;
			x->rate_t0 = 0;
			curl_easy_pause(x->easy, CURLPAUSE_CONT);
		}
	}
}

static void complete(struct kudu_request *req)
{
	if (req->on_done)
		req->on_done(req);
}

/* The text of <title>...</title> in an HTML error page, whitespace folded. */
static bool html_title(const char *body, size_t blen, char *out, size_t len)
{
	const char *p = memmem(body, blen, "<title>", 7);
	const char *end;
	size_t o = 0;
	bool space = false;

	if (!p)
		p = memmem(body, blen, "<TITLE>", 7);
	if (!p)
		return false;
	p += 7;
	end = memchr(p, '<', (size_t)(body + blen - p));
	if (!end)
		return false;
	for (; p < end && o + 1 < len; p++) {
		if ((unsigned char)*p <= ' ') {
			space = o > 0;
			continue;
		}
		if (space && o + 2 < len)
			out[o++] = ' ';
		space = false;
		out[o++] = *p;
	}
	out[o] = '\0';
	return o > 0;
}

/* Kudu's errors are {"Message": "..."}; keep the text for logs and xattrs. */
static void server_message(const struct kudu_request *req, char *out, size_t len)
{
	json_t *root;
	json_t *m;

	out[0] = '\0';
	if (!req->body || !req->body_len)
		return;
	root = json_loadb(req->body, req->body_len, 0, NULL);
	m = root ? json_object_get(root, "Message") : NULL;
	if (!m && root)
		m = json_object_get(root, "message");
	if (json_is_string(m)) {
		snprintf(out, len, "%s", json_string_value(m));
	} else if (!root && html_title(req->body, req->body_len, out, len)) {
		/* an App Service front-end page: its title says what happened */
	} else if (!root) {
		/* plain text: first line, printable only */
		size_t i;
		for (i = 0; i + 1 < len && i < req->body_len && req->body[i] != '\n' &&
			    req->body[i] != '\r';
		     i++) {
			out[i] = req->body[i];
			if ((unsigned char)out[i] < 0x20)
				out[i] = ' ';
		}
		out[i] = '\0';
	}
	json_decref(root);
}

static void fail_curl(struct kudu_request *req, struct xfer *x, CURLcode rc)
{
	const char *detail = x->errbuf[0] ? x->errbuf : curl_easy_strerror(rc);

	switch (rc) {
	case CURLE_OPERATION_TIMEDOUT:
		req->err = -ETIMEDOUT;
		snprintf(req->errmsg, sizeof(req->errmsg), "timed out: %s", detail);
		break;
	case CURLE_COULDNT_CONNECT:
	case CURLE_COULDNT_RESOLVE_HOST:
	case CURLE_COULDNT_RESOLVE_PROXY:
		req->err = -EIO;
		snprintf(req->errmsg, sizeof(req->errmsg), "connection failed: %s", detail);
		break;
	case CURLE_PARTIAL_FILE:
		req->err = -EIO;
		if (req->length >= 0 && !x->decoded)
			snprintf(req->errmsg, sizeof(req->errmsg),
				 "body cut short: got %llu of %lld bytes",
				 (unsigned long long)req->bytes, (long long)req->length);
		else
			/* chunked (or compressed): no length to compare with */
			snprintf(
				req->errmsg, sizeof(req->errmsg),
				"body cut short after %llu bytes: the connection closed before the body's end",
				(unsigned long long)req->bytes);
		break;
	case CURLE_RECV_ERROR:
	case CURLE_SEND_ERROR:
	case CURLE_GOT_NOTHING:
		req->err = -EIO;
		snprintf(req->errmsg, sizeof(req->errmsg), "connection reset after %llu bytes: %s",
			 (unsigned long long)req->bytes, detail);
		break;
	default:
		req->err = -EIO;
		snprintf(req->errmsg, sizeof(req->errmsg), "%s", detail);
		break;
	}
}

/* -d: one line per finished attempt. The URL, status, sizes and times
 * only: never a header, so never a credential. */
static void trace_finish(const struct kudu_request *req, const struct xfer *x, double now,
			 const char *outcome)
{
	kudu_log(LOG_DEBUG, "%s: GET %s -> %ld, %llu bytes in %.3f s (first byte %.3f s)%s%s",
		 req->app->name, req->url, req->status, (unsigned long long)req->bytes,
		 now - x->t_start, x->t_first ? x->t_first - x->t_start : 0.0,
		 outcome[0] ? ": " : "", outcome);
}

/* When the whole request (all attempts, all waits) must be over, 0 for no
 * bound: meta_timeout for list/details, first_byte_timeout for a dump
 * (whose retries all come before its first byte). */
static double request_deadline(const struct kudu_config *cfg, const struct kudu_request *req)
{
	unsigned bound = req->kind == KUDU_REQ_JSON ? cfg->meta_timeout : cfg->first_byte_timeout;

	return bound && req->t_begin > 0 ? req->t_begin + bound : 0;
}

/* Returns true when the request was re-queued for another attempt. */
static bool finish(struct kudu_client *c, struct kudu_request *req, CURLcode rc)
{
	struct xfer *x = req->priv;
	char msg[256]; /* Kudu's Message, truncated to leave room for context */
	curl_off_t retry_after = 0;
	double now = kudu_now();

	if (x->rerouted) {
		/* Set-Cookie named another instance: the one asked for is gone and
		 * the front end answered from another. Nothing of it is kept. */
		req->err = -ENOENT;
		req->rerouted = true;
		snprintf(req->served_by, sizeof(req->served_by), "%s", x->affinity);
		if (x->affinity[0] && client_app_of(c, req->app)) {
			struct client_app *ca = client_app_of(c, req->app);

			pthread_mutex_lock(&c->inst_lock);
			client_note_seen_locked(ca, x->affinity);
			/* the app-level view was on the instance that is gone: it
			 * follows the front end, as a browser would */
			if (!strcmp(ca->view, req->instance))
				client_view_follow_locked(ca, req->app->name, x->affinity);
			pthread_mutex_unlock(&c->inst_lock);
		}
		snprintf(req->errmsg, sizeof(req->errmsg),
			 "instance %s is gone: the front end routed the request to instance %s",
			 req->instance, x->affinity[0] ? x->affinity : "(unnamed)");
		if (req->kind == KUDU_REQ_JSON) {
			free(req->body);
			req->body = NULL;
			req->body_len = 0;
		}
		xfer_release(c, req);
		return false;
	}
	if (x->headers_done || x->affinity_set)
		client_note_affinity(c, req, x);
	if (x->preflight) {
		/* the instance answered itself (or the check failed in a way the
		 * dump will report on its own): now the dump */
		xfer_release(c, req);
		kudu_request_reset(req);
		req->preflighted = true;
		req->t_retry = now;
		list_append(&c->waiting_head, &c->waiting_tail, req);
		return true;
	}
	if (x->local_err) {
		req->err = -x->local_err;
		if (x->local_err == EFBIG) {
			/* the errno table: a body kudufs will not take is EIO */
			req->err = -EIO;
			snprintf(req->errmsg, sizeof(req->errmsg),
				 "response body larger than max_json (%llu bytes%s); not kept",
				 (unsigned long long)x->cfg->max_json,
				 x->decoded ? " decompressed" : "");
		} else {
			snprintf(req->errmsg, sizeof(req->errmsg), "%s", strerror(x->local_err));
		}
	} else if (rc != CURLE_OK) {
		fail_curl(req, x, rc);
	} else if (req->status >= 200 && req->status < 300) {
		/* length is -1 for a body curl decoded (gzip): curl itself checks the
		 * wire bytes against Content-Length (CURLE_PARTIAL_FILE) */
		if (req->length >= 0 && req->bytes != (uint64_t)req->length) {
			req->err = -EIO;
			snprintf(req->errmsg, sizeof(req->errmsg),
				 "body cut short: got %llu of %lld bytes",
				 (unsigned long long)req->bytes, (long long)req->length);
		}
	} else {
		double deadline = request_deadline(x->cfg, req);
		double delay = 0;
		bool past_deadline = false;

		server_message(req, msg, sizeof(msg));
		if (kudu_status_is_retryable(req->status) && req->attempts < MAX_ATTEMPTS &&
		    !atomic_load(&req->cancel)) {
			delay = 0.5 * (double)(1 << (req->attempts - 1));
			curl_easy_getinfo(x->easy, CURLINFO_RETRY_AFTER, &retry_after);
			if (retry_after > 0)
				delay = (double)retry_after;
			if (delay > RETRY_AFTER_MAX)
				delay = RETRY_AFTER_MAX;
			/* a wait past the request's bound ends it now, with the
			 * server's answer, rather than at the bound with a timeout */
			past_deadline = deadline > 0 && now + delay > deadline;
		}
		if (kudu_status_is_retryable(req->status) && req->attempts < MAX_ATTEMPTS &&
		    !atomic_load(&req->cancel) && !past_deadline) {
			if (kudu_log_tracing()) {
				char why[64];

				snprintf(why, sizeof(why), "retrying in %.1f s", delay);
				trace_finish(req, x, now, why);
			}
			xfer_release(c, req);
			kudu_request_reset(req);
			req->t_retry = now + delay;
			list_append(&c->waiting_head, &c->waiting_tail, req);
			return true;
		}
		req->err = kudu_errno_from_status(req->status, msg);
		if (req->err == -EOPNOTSUPP && !req->arm)
			kudu_app_note_platform(req->app, KUDU_PLATFORM_LINUX,
					       "its Kudu says \"Not supported on Linux\"");
		/* The front end's 230 s cut is an HTML or text page (or only a reason
		 * phrase), not Kudu's JSON: look at all of it, the body being bounded
		 * by ERROR_BODY_MAX. */
		if (req->status == 500 && req->err == -EIO &&
		    (kudu_text_says_timed_out(x->reason, strlen(x->reason)) ||
		     kudu_text_says_timed_out(req->body, req->body_len)))
			req->err = -ETIMEDOUT;
		if (req->status == 401 || req->status == 403)
			snprintf(req->errmsg, sizeof(req->errmsg), "%ld %s (credentials from %s)",
				 req->status, kudu_status_reason(req->status), req->app->cred_desc);
		else if (req->err == -ETIMEDOUT)
			snprintf(
				req->errmsg, sizeof(req->errmsg),
				"%ld %s%s%s (App Service's front end cuts requests at ~230 s; a minidump is smaller and faster)",
				req->status,
				x->reason[0] ? x->reason : kudu_status_reason(req->status),
				msg[0] ? ": " : "", msg);
		else if (past_deadline)
			snprintf(
				req->errmsg, sizeof(req->errmsg),
				"%ld %s%s%s (%s %.0f s is past what is left of %s (%u s); not retried)",
				req->status,
				x->reason[0] ? x->reason : kudu_status_reason(req->status),
				msg[0] ? ": " : "", msg,
				retry_after > 0 ? "Retry-After" : "a retry in",
				retry_after > 0 ? (double)retry_after : delay,
				req->kind == KUDU_REQ_JSON ? "meta_timeout" : "first_byte_timeout",
				req->kind == KUDU_REQ_JSON ? x->cfg->meta_timeout
							   : x->cfg->first_byte_timeout);
		else if (req->err == -EOPNOTSUPP)
			snprintf(req->errmsg, sizeof(req->errmsg), "%ld %s: %s (%s)", req->status,
				 kudu_status_reason(req->status), msg, KUDU_HINT_DOTNET_MONITOR);
		else if (kudu_status_is_retryable(req->status))
			snprintf(req->errmsg, sizeof(req->errmsg), "%ld %s%s%s (after %d attempts)",
				 req->status, kudu_status_reason(req->status), msg[0] ? ": " : "",
				 msg, req->attempts);
		else if (req->status >= 300 && req->status < 400) {
			char *loc = NULL;

			curl_easy_getinfo(x->easy, CURLINFO_REDIRECT_URL, &loc);
			snprintf(req->errmsg, sizeof(req->errmsg),
				 "%ld %s: redirect to %.300s, not followed", req->status,
				 x->reason[0] ? x->reason : "Redirect",
				 loc ? loc : "(no Location)");
		} else
			snprintf(req->errmsg, sizeof(req->errmsg), "%ld %s%s%s", req->status,
				 kudu_status_reason(req->status), msg[0] ? ": " : "", msg);
		if (req->kind == KUDU_REQ_JSON) {
			free(req->body);
			req->body = NULL;
			req->body_len = 0;
		}
	}
	if (req->err && req->kind == KUDU_REQ_JSON) {
		free(req->body);
		req->body = NULL;
		req->body_len = 0;
	}
	if (kudu_log_tracing())
		trace_finish(req, x, kudu_now(), req->err ? req->errmsg : "");
	xfer_release(c, req);
	return false;
}

static void abort_active(struct kudu_client *c, struct kudu_request *req, int err, const char *msg)
{
	req->err = -err;
	snprintf(req->errmsg, sizeof(req->errmsg), "%s", msg);
	if (kudu_log_tracing() && req->priv)
		trace_finish(req, req->priv, kudu_now(), msg);
	if (req->kind == KUDU_REQ_JSON) {
		free(req->body);
		req->body = NULL;
		req->body_len = 0;
	}
	xfer_release(c, req);
	complete(req);
}

/* First-byte, stall and cancel checks; curl's own timeouts cannot tell them apart. */
static void check_timeouts(struct kudu_client *c, double now)
{
	const struct kudu_config *cfg = c->cfg;
	struct kudu_request *req = c->active, *next;
	char msg[160];
	int cancel;

	for (; req; req = next) {
		struct xfer *x = req->priv;

		next = req->priv_next;
		if ((cancel = atomic_load(&req->cancel))) {
			abort_active(c, req, cancel, strerror(cancel));
		} else if (req->kind == KUDU_REQ_JSON && cfg->meta_timeout &&
			   now - req->t_begin > cfg->meta_timeout) {
			snprintf(msg, sizeof(msg),
				 "no complete response within meta_timeout (%u s%s)",
				 cfg->meta_timeout, req->attempts > 1 ? ", retries included" : "");
			abort_active(c, req, ETIMEDOUT, msg);
		} else if (!x->t_first && cfg->first_byte_timeout &&
			   now - x->t_start > cfg->first_byte_timeout) {
			snprintf(msg, sizeof(msg), "no response within first_byte_timeout (%u s)",
				 cfg->first_byte_timeout);
			abort_active(c, req, ETIMEDOUT, msg);
		} else if (x->paused) {
			/* waiting for the JSON budget: meta_timeout bounds it */
		} else if (x->t_first && cfg->stall_timeout &&
			   now - x->t_last > cfg->stall_timeout) {
			snprintf(msg, sizeof(msg),
				 "stalled: no data for stall_timeout (%u s) after %llu bytes",
				 cfg->stall_timeout, (unsigned long long)req->bytes);
			abort_active(c, req, ETIMEDOUT, msg);
		} else if (x->t_first && cfg->min_rate && cfg->stall_timeout) {
			/* curl's low-speed rule over consecutive stall_timeout windows
			 * from the headers on: a trickle that never stalls still ends */
			if (!x->rate_t0) {
				x->rate_t0 = x->t_first;
				x->rate_b0 = req->bytes;
			}
			if (now - x->rate_t0 >= cfg->stall_timeout) {
				double rate =
					(double)(req->bytes - x->rate_b0) / (now - x->rate_t0);

				if (rate < (double)cfg->min_rate) {
					snprintf(
						msg, sizeof(msg),
						"too slow: %.0f bytes/s over %.0f s, below min_rate (%llu bytes/s), after %llu bytes",
						rate, now - x->rate_t0,
						(unsigned long long)cfg->min_rate,
						(unsigned long long)req->bytes);
					abort_active(c, req, ETIMEDOUT, msg);
				} else {
					x->rate_t0 = now;
					x->rate_b0 = req->bytes;
				}
			}
		}
	}
}

static void start_waiting(struct kudu_client *c, double now, double *next_due)
{
	struct kudu_request *req = c->waiting_head, *prev = NULL, *next;

	for (; req; req = next) {
		next = req->priv_next;
		if (req->t_retry > now) {
			if (*next_due == 0 || req->t_retry < *next_due)
				*next_due = req->t_retry;
			prev = req;
			continue;
		}
		if (req->kind == KUDU_REQ_JSON && c->active_json >= c->cfg->max_conns &&
		    !(request_deadline(c->cfg, req) > 0 && now > request_deadline(c->cfg, req))) {
			prev = req;
			continue;
		}
		/* unlink */
		if (prev)
			prev->priv_next = next;
		else
			c->waiting_head = next;
		if (c->waiting_tail == req)
			c->waiting_tail = prev;
		req->priv_next = NULL;
		if (atomic_load(&req->cancel)) {
			req->err = -atomic_load(&req->cancel);
			snprintf(req->errmsg, sizeof(req->errmsg), "%s", strerror(-req->err));
			complete(req);
			continue;
		}
		if (req->kind == KUDU_REQ_JSON && request_deadline(c->cfg, req) > 0 &&
		    now > request_deadline(c->cfg, req)) {
			/* queued behind max_conns others for all of meta_timeout */
			req->err = -ETIMEDOUT;
			snprintf(
				req->errmsg, sizeof(req->errmsg),
				"no complete response within meta_timeout (%u s): waited for a connection (max_conns %u)",
				c->cfg->meta_timeout, c->cfg->max_conns);
			complete(req);
			continue;
		}
		req->errmsg[0] = '\0';
		int rc = xfer_start(c, req);
		if (rc < 0) {
			req->err = rc;
			if (!req->errmsg[0])
				snprintf(req->errmsg, sizeof(req->errmsg),
					 "cannot start request: %s", strerror(-rc));
			if (req->priv)
				xfer_release(c, req);
			complete(req);
		}
	}
}

/* Log a failed curl_multi_* call (once while it keeps failing the same
 * way: the loop runs every 200 ms). Transfers in flight are left to their
 * own timeouts; a multi handle that failed once may work on the next turn. */
static int client_check_multi(struct kudu_client *c, const char *what, CURLMcode mc)
{
	if (mc == CURLM_OK) {
		c->last_mc = CURLM_OK;
		return 0;
	}
	if (mc != c->last_mc)
		kudu_log(LOG_ERR, "%s: %s", what, curl_multi_strerror(mc));
	c->last_mc = mc;
	return -EIO;
}

static void *transfer_main(void *arg)
{
	struct kudu_client *c = arg;

	for (;;) {
		struct kudu_request *in;
		CURLMsg *m;
		int running, left;
		bool stopping;
		double now, next_due = 0;
		int timeout_ms = 200;

		pthread_mutex_lock(&c->lock);
		in = c->incoming_head;
		c->incoming_head = c->incoming_tail = NULL;
		stopping = c->stopping;
		pthread_mutex_unlock(&c->lock);

		while (in) {
			struct kudu_request *next = in->priv_next;
			list_append(&c->waiting_head, &c->waiting_tail, in);
			in = next;
		}
		if (stopping)
			break;

		now = kudu_now();
		start_waiting(c, now, &next_due);
		resume_json(c, now);
		client_check_multi(c, "curl_multi_perform", curl_multi_perform(c->multi, &running));
		while ((m = curl_multi_info_read(c->multi, &left))) {
			struct kudu_request *req = NULL;

			if (m->msg != CURLMSG_DONE)
				continue;
			curl_easy_getinfo(m->easy_handle, CURLINFO_PRIVATE, (char **)&req);
			if (!finish(c, req, m->data.result))
				complete(req);
		}
		now = kudu_now();
		check_timeouts(c, now);
		/* finish() may have put a request back in waiting, due now (a
		 * pinned dump after its instance check): start it before the
		 * poll, or it would wait out the poll's 200 ms first */
		start_waiting(c, now, &next_due);
		if (next_due > 0) {
			int due = (int)((next_due - now) * 1000) + 1;
			if (due < timeout_ms)
				timeout_ms = due < 1 ? 1 : due;
		}
		if (client_check_multi(c, "curl_multi_poll",
				       curl_multi_poll(c->multi, NULL, 0, timeout_ms, NULL)) < 0)
			usleep((useconds_t)timeout_ms * 1000); /* it did not wait: do not spin */
	}

	/* shutting down: everything outstanding ends with ECANCELED */
	while (c->active)
		abort_active(c, c->active, ECANCELED, "kudufs is shutting down");
	while (c->waiting_head) {
		struct kudu_request *req = c->waiting_head;
		c->waiting_head = req->priv_next;
		req->priv_next = NULL;
		req->err = -ECANCELED;
		snprintf(req->errmsg, sizeof(req->errmsg), "kudufs is shutting down");
		complete(req);
	}
	c->waiting_tail = NULL;
	return NULL;
}

static void client_free_apps(struct kudu_client *c)
{
	for (size_t i = 0; c->apps && i < c->cfg->napps; i++) {
		for (size_t j = 0; j < c->apps[i].nseen; j++)
			free(c->apps[i].seen[j]);
		free(c->apps[i].seen);
	}
	free(c->apps);
	c->apps = NULL;
}

int kudu_client_new(struct kudu_client **out, const struct kudu_config *cfg)
{
	struct kudu_client *c = calloc(1, sizeof(*c));
	int rc;

	if (!c)
		return -ENOMEM;
	c->cfg = cfg;
	c->multi = curl_multi_init();
	c->apps = calloc(cfg->napps ? cfg->napps : 1, sizeof(*c->apps));
	if (!c->multi || !c->apps) {
		if (c->multi)
			curl_multi_cleanup(c->multi);
		free(c->apps);
		free(c);
		return -ENOMEM;
	}
	curl_multi_setopt(c->multi, CURLMOPT_MAXCONNECTS,
			  (long)(cfg->max_conns + 2 * cfg->napps + 4));
	for (size_t i = 0; i < cfg->napps; i++)
		if (cfg->apps[i]->instance)
			snprintf(c->apps[i].view, sizeof(c->apps[i].view), "%s",
				 cfg->apps[i]->instance);
	pthread_mutex_init(&c->lock, NULL);
	pthread_mutex_init(&c->inst_lock, NULL);
	rc = pthread_create(&c->thread, NULL, transfer_main, c);
	if (rc) {
		client_free_apps(c);
		curl_multi_cleanup(c->multi);
		pthread_mutex_destroy(&c->lock);
		pthread_mutex_destroy(&c->inst_lock);
		free(c);
		return -rc;
	}
	*out = c;
	return 0;
}

void kudu_client_free(struct kudu_client *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	c->stopping = true;
	pthread_mutex_unlock(&c->lock);
	curl_multi_wakeup(c->multi);
	pthread_join(c->thread, NULL);
	curl_multi_cleanup(c->multi);
	client_free_apps(c);
	pthread_mutex_destroy(&c->lock);
	pthread_mutex_destroy(&c->inst_lock);
	free(c);
}

void kudu_client_submit(struct kudu_client *c, struct kudu_request *req)
{
	bool stopping;

	req->priv_next = NULL;
	if (req->attempts == 0)
		req->t_begin = kudu_now(); /* a new request, not a retry of one */
	pthread_mutex_lock(&c->lock);
	stopping = c->stopping;
	if (!stopping) {
		if (c->incoming_tail)
			c->incoming_tail->priv_next = req;
		else
			c->incoming_head = req;
		c->incoming_tail = req;
	}
	pthread_mutex_unlock(&c->lock);
	if (stopping) {
		/* The transfer thread has left its loop (or is draining it), so no
		 * one else would ever complete this request: do it here, on the
		 * caller's thread, as kudu.h says (kudu_done_fn). */
		req->err = -ECANCELED;
		snprintf(req->errmsg, sizeof(req->errmsg), "kudufs is shutting down");
		complete(req);
		return;
	}
	curl_multi_wakeup(c->multi);
}

void kudu_client_set_interrupted(struct kudu_client *c, kudu_interrupted_fn fn)
{
	c->interrupted = fn;
}

bool kudu_client_interrupted(const struct kudu_client *c)
{
	return c && c->interrupted && c->interrupted();
}

/* A synchronous fetch's on_done: wakes its caller. Nothing touches w after
 * the unlock: the caller may return and take it off its stack at once. */
static void fetch_done(struct kudu_request *req)
{
	struct sync_wait *w = req->arg;

	pthread_mutex_lock(&w->lock);
	w->done = true;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

/* Until the request completed; with an interrupt hook, polled every 200 ms:
 * the caller (a FUSE reader) may leave (Ctrl-C, SIGKILL), and the request is
 * then cancelled and completes at once with -EINTR. Without a client (a unit
 * test's fake submitter) there is no hook. */
static void fetch_wait(struct kudu_client *c, struct kudu_request *req, struct sync_wait *w)
{
	pthread_mutex_lock(&w->lock);
	while (!w->done) {
		struct timespec ts;

		if (!c || !c->interrupted) {
			pthread_cond_wait(&w->cond, &w->lock);
			continue;
		}
		ts = kudu_deadline_in(CLOCK_REALTIME, 200);
		if (pthread_cond_timedwait(&w->cond, &w->lock, &ts) != 0 && !w->done &&
		    !atomic_load(&req->cancel) && c->interrupted()) {
			atomic_store(&req->cancel, EINTR);
			curl_multi_wakeup(c->multi);
		}
	}
	pthread_mutex_unlock(&w->lock);
}

static int fetch_once(struct kudu_client *c, kudu_submit_fn submit, struct kudu_request *req)
{
	struct sync_wait w = { .done = false };
	kudu_done_fn on_done = req->on_done;
	void *arg = req->arg;

	pthread_mutex_init(&w.lock, NULL);
	pthread_cond_init(&w.cond, NULL);
	req->on_done = fetch_done;
	/* cppcheck-suppress autoVariables ; restored below, after the request completed */
	req->arg = &w;
	submit(c, req);
	fetch_wait(c, req, &w);
	req->on_done = on_done;
	req->arg = arg;
	pthread_cond_destroy(&w.cond);
	pthread_mutex_destroy(&w.lock);
	return req->err;
}

int kudu_client_fetch(struct kudu_client *c, struct kudu_request *req)
{
	return kudu_client_fetch_via(c, kudu_client_submit, req);
}

bool kudu_request_token_expired(const struct kudu_request *req)
{
	return req->err == -EACCES && req->status == 401 &&
	       (req->arm || req->app->cred == KUDU_CRED_TOKEN);
}

int kudu_client_fetch_via(struct kudu_client *c, kudu_submit_fn submit, struct kudu_request *req)
{
	int rc = fetch_once(c, submit, req);

	if (!kudu_request_token_expired(req))
		return rc;
	if (req->arm) {
		/* ARM tokens expire too (an hour from az): one fresh one, one more try */
		char err[KUDU_ERRLEN];

		if (kudu_app_refresh_arm_token(req->app, req->token_gen, err, sizeof(err)) == 0) {
			kudu_request_reset(req);
			req->attempts = 0;
			rc = fetch_once(c, submit, req);
		}
	} else {
		/* bearer tokens expire: get a fresh one and try once more */
		char err[KUDU_ERRLEN];

		if (kudu_app_refresh_token(req->app, err, sizeof(err)) == 0) {
			kudu_request_reset(req);
			req->attempts = 0;
			rc = fetch_once(c, submit, req);
		} else {
			kudu_log(LOG_ERR, "%s: after a 401: %s", req->app->name, err);
		}
	}
	return rc;
}

int kudu_client_get_json(struct kudu_client *c, struct kudu_app *app, const char *url, char **body,
			 size_t *len, char *err, size_t errlen)
{
	struct kudu_request req;
	int rc;

	kudu_request_init(&req, app, KUDU_REQ_JSON);
	snprintf(req.url, sizeof(req.url), "%s", url);
	rc = kudu_client_fetch(c, &req);
	if (rc < 0) {
		if (err)
			snprintf(err, errlen, "%s", req.errmsg);
		kudu_request_reset(&req);
		return rc;
	}
	*body = req.body;
	*len = req.body_len;
	return 0;
}

int kudu_client_view_instance(struct kudu_client *c, const struct kudu_app *app, char *buf,
			      size_t len)
{
	struct client_app *ca = client_app_of(c, app);
	int rc = -ENOENT;

	if (!ca)
		return rc;
	pthread_mutex_lock(&c->inst_lock);
	if (ca->view[0]) {
		snprintf(buf, len, "%s", ca->view);
		rc = 0;
	}
	pthread_mutex_unlock(&c->inst_lock);
	return rc;
}

size_t kudu_client_seen_instances(struct kudu_client *c, const struct kudu_app *app, char ***ids)
{
	struct client_app *ca = client_app_of(c, app);
	size_t n = 0;

	*ids = NULL;
	if (!ca)
		return 0;
	pthread_mutex_lock(&c->inst_lock);
	if (ca->nseen && (*ids = calloc(ca->nseen, sizeof(**ids))))
		for (size_t i = 0; i < ca->nseen; i++)
			if (((*ids)[n] = strdup(ca->seen[i])))
				n++;
	pthread_mutex_unlock(&c->inst_lock);
	return n;
}

bool kudu_client_probe_no_process_api(struct kudu_client *c, struct kudu_app *app, char *msg,
				      size_t len)
{
	struct kudu_request req;
	bool answers;

	/* Linux Consumption's KuduLite serves deployment routes only: every
	 * other path, /api/processes included, is 404 */
	kudu_request_init(&req, app, KUDU_REQ_JSON);
	if (kudu_url_settings(app, req.url, sizeof(req.url)) < 0)
		return false;
	answers = kudu_client_fetch(c, &req) == 0;
	kudu_request_reset(&req);
	if (answers) {
		snprintf(msg, len, "%s", KUDU_HINT_NO_PROCESS_API);
		kudu_app_note_platform(app, KUDU_PLATFORM_LINUX,
				       "404 on /api/processes, its Kudu answers /api/settings");
	}
	return answers;
}
