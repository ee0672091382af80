/*
 * kudu — configuration, credentials and the HTTP client for Kudu's process API.
 *
 * Knows nothing of FUSE. Every function returns 0 or a negative errno unless
 * it says otherwise; human-readable detail goes into caller-supplied buffers
 * and never contains a password or token.
 */
#ifndef KUDUFS_KUDU_H
#define KUDUFS_KUDU_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define KUDU_ERRLEN 512

/* ---- configuration ---------------------------------------------------- */

enum kudu_cred_kind {
	KUDU_CRED_NONE,     /* nothing found: requests go out unauthenticated */
	KUDU_CRED_BASIC,    /* user + password (section, or environment) */
	KUDU_CRED_TOKEN,    /* bearer token from token_command */
	KUDU_CRED_NETRC,    /* libcurl reads ~/.netrc itself */
};

struct kudu_app {
	char *name;             /* directory name in the mount; validated */
	char *url;              /* API root, no trailing '/' */
	char *user;
	char *password_file;
	char *password_command;
	char *token_command;
	char *netrc_file;       /* NULL: libcurl's default ~/.netrc */
	char *instance;         /* ARRAffinity cookie sent from the first request, NULL: ARR picks */
	int section_line;       /* line of [app NAME] in the config, 0 if none */
	unsigned command_timeout; /* the config's, copied for token_command re-runs */

	enum kudu_cred_kind cred;
	char cred_desc[160];    /* "password_file /x", "KUDUFS_USER/KUDUFS_PASSWORD", "~/.netrc" */
	char *password;         /* resolved secret; never logged */

	pthread_mutex_t token_lock; /* guards token */
	char *token;
};

struct kudu_config {
	char *path;             /* config file read, NULL if none */
	char *cache_dir;
	uint64_t cache_max;
	unsigned dump_ttl, list_ttl, detail_ttl, neg_ttl;
	unsigned connect_timeout, first_byte_timeout, stall_timeout;
	unsigned meta_timeout;   /* whole-request limit of list/details (JSON) requests */
	unsigned max_conns;
	unsigned prefetch_max;   /* readdir prefetches details only up to this many processes */
	unsigned command_timeout; /* password_command/token_command run limit, 0: none */
	bool insecure;
	char *ca_file;
	int debug;

	struct kudu_app **apps;
	size_t napps;
};

void kudu_config_init(struct kudu_config *cfg);
void kudu_config_free(struct kudu_config *cfg);
/* Read an INI file. required=false tolerates a missing file. */
int kudu_config_load(struct kudu_config *cfg, const char *path, bool required,
		     char *err, size_t errlen);
/* "NAME" or "NAME=URL" from the command line; merges with a config section. */
int kudu_config_add_app(struct kudu_config *cfg, const char *spec,
			char *err, size_t errlen);
/* Apply one global key (config [kudufs] or -o key=value). */
int kudu_config_set(struct kudu_config *cfg, const char *key, const char *value,
		    char *err, size_t errlen);
/* Default config path ($XDG_CONFIG_HOME/kudufs/config or ~/.config/...). */
char *kudu_config_default_path(void);
/* Resolve every app's credentials in the design's order. */
int kudu_config_resolve_credentials(struct kudu_config *cfg, char *err, size_t errlen);
/* Re-run token_command of an app (after a 401). */
int kudu_app_refresh_token(struct kudu_app *app, char *err, size_t errlen);

int kudu_parse_size(const char *s, uint64_t *out);
bool kudu_name_is_valid(const char *name);
/* Refuse a secret-bearing file readable by group or others. */
int kudu_check_private_file(const char *path, const char *what, char *err, size_t errlen);

/* ---- errors ------------------------------------------------------------ */

/* The design's table: HTTP status (+ Kudu's Message) to errno. */
int kudu_errno_from_status(long status, const char *message);
bool kudu_status_is_retryable(long status);
/* Case-insensitive "timed out" in len bytes (a reason phrase or an error page). */
bool kudu_text_says_timed_out(const char *text, size_t len);
const char *kudu_status_reason(long status);

/* ---- URLs --------------------------------------------------------------- */

enum kudu_dump_type { KUDU_DUMP_MINI = 1, KUDU_DUMP_FULL = 2 };

int kudu_url_list(const struct kudu_app *app, char *buf, size_t len);
int kudu_url_details(const struct kudu_app *app, int pid, char *buf, size_t len);
int kudu_url_dump(const struct kudu_app *app, int pid, enum kudu_dump_type type,
		  char *buf, size_t len);

/* ---- client ------------------------------------------------------------ */

enum kudu_req_kind { KUDU_REQ_JSON, KUDU_REQ_DUMP };

struct kudu_request;
typedef void (*kudu_done_fn)(struct kudu_request *req);
/* Called from the transfer thread as body bytes land; return nonzero
 * (a positive errno) to abort the transfer with that error. */
typedef int (*kudu_progress_fn)(struct kudu_request *req, uint64_t bytes);

struct kudu_request {
	/* filled by the caller */
	struct kudu_app *app;
	enum kudu_req_kind kind;
	char url[1024];
	int fd;                     /* KUDU_REQ_DUMP: body is pwrite()n here */
	kudu_progress_fn on_progress;
	kudu_done_fn on_done;       /* transfer thread; may free the request */
	void *arg;
	atomic_int cancel;          /* set to a positive errno to abort */

	/* results, valid in on_done */
	int err;                    /* 0 or negative errno */
	long status;
	char *body;                 /* KUDU_REQ_JSON: NUL-terminated, caller frees */
	size_t body_len;
	int64_t length;             /* Content-Length, -1 if unknown */
	uint64_t bytes;             /* body bytes received */
	char filename[256];         /* Content-Disposition filename */
	char content_type[128];     /* media type, lower-cased, no parameters; "" if none */
	char errmsg[KUDU_ERRLEN];
	int attempts;

	/* private to the client */
	void *priv;                 /* struct xfer while on the wire */
	void *priv_sync;            /* kudu_client_fetch's waiter */
	double t_retry;             /* not before this time (backoff) */
	struct kudu_request *priv_next;
};

struct kudu_client;

int kudu_client_new(struct kudu_client **out, const struct kudu_config *cfg);
/* Aborts outstanding requests (their on_done runs with -ECANCELED). */
void kudu_client_free(struct kudu_client *c);
void kudu_request_init(struct kudu_request *req, struct kudu_app *app,
		       enum kudu_req_kind kind);
void kudu_request_reset(struct kudu_request *req);
/* Queue a request; returns at once. on_done is called exactly once. */
void kudu_client_submit(struct kudu_client *c, struct kudu_request *req);
/* Submit and wait. Refreshes a bearer token once on 401. */
int kudu_client_fetch(struct kudu_client *c, struct kudu_request *req);
/* GET url, return the JSON body (caller frees). */
int kudu_client_get_json(struct kudu_client *c, struct kudu_app *app, const char *url,
			 char **body, size_t *len, char *err, size_t errlen);
double kudu_now(void);

#endif
