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
/* An App Service instance id (the ARRAffinity cookie value; 64 hex digits
 * in practice) plus its NUL. */
#define KUDU_INSTANCE_MAX 129
#define KUDU_ARM_ENDPOINT_DEFAULT "https://management.azure.com"
#define KUDU_ARM_API_VERSION "2024-11-01"

/* ---- configuration ---------------------------------------------------- */

/* Which Kudu serves an app: Windows Kudu (its own process API), or
 * KuduLite on Linux (proxying dotnet-monitor: other dump route and types,
 * no threads or modules). AUTO in the config: learnt from what Kudu
 * answers (kudu/platform.c); as a value, "not known yet". */
enum kudu_platform { KUDU_PLATFORM_AUTO, KUDU_PLATFORM_WINDOWS, KUDU_PLATFORM_LINUX };

enum kudu_cred_kind {
	KUDU_CRED_NONE,  /* nothing found: requests go out unauthenticated */
	KUDU_CRED_BASIC, /* user + password (section, or environment) */
	KUDU_CRED_TOKEN, /* bearer token from token_command */
	KUDU_CRED_NETRC, /* libcurl reads ~/.netrc itself */
};

struct kudu_app {
	char *name; /* directory name in the mount; validated */
	char *url;  /* API root, no trailing '/' */
	char *user;
	char *password_file;
	char *password_command;
	char *token_command;
	char *netrc_file; /* NULL: libcurl's default ~/.netrc */
	char *instance;   /* ARRAffinity cookie sent from the first request, NULL: ARR picks */
	int section_line; /* line of [app NAME] in the config, 0 if none */
	enum kudu_platform platform; /* `platform =`; AUTO: detected (platform_seen) */
	atomic_int platform_seen;    /* the detected enum kudu_platform, AUTO until then;
				      * set once, kept for the mount's life (kudu/platform.c) */
	unsigned command_timeout;    /* the config's, copied for token_command re-runs */

	/* Scaled-out apps: how instances/ is filled (kudu/instances.c). */
	char **instances; /* `instances = ID, ...`: exactly these; NULL: discover */
	size_t ninstances;
	/* /subscriptions/S/resourceGroups/RG/providers/Microsoft.Web/sites/N[/slots/S] */
	char *arm_resource;
	char *arm_endpoint; /* effective after resolve: section, else [kudufs], else the default */
	char *arm_token_command; /* NULL: token_command gives the ARM token too */
	int arm_resource_line;   /* config line of arm_resource, for errors found after parsing */

	enum kudu_cred_kind cred;
	char cred_desc[160]; /* "password_file /x", "KUDUFS_USER/KUDUFS_PASSWORD", "~/.netrc" */
	char *password;      /* resolved secret; never logged */

	pthread_mutex_t token_lock; /* guards token, token_gen, arm_token, arm_token_gen */
	char *token;
	unsigned token_gen; /* bumped by every refresh, so N concurrent 401s re-run the command once
			     */
	char *arm_token;    /* from arm_token_command; unused (NULL) when that is unset */
	unsigned arm_token_gen;
};

struct kudu_config {
	char *path; /* config file read, NULL if none */
	char *cache_dir;
	uint64_t cache_max;
	unsigned dump_ttl, list_ttl, detail_ttl, neg_ttl;
	unsigned connect_timeout, first_byte_timeout, stall_timeout;
	unsigned meta_timeout; /* whole-request limit of list/details (JSON) requests */
	unsigned max_conns;
	unsigned prefetch_max;    /* readdir prefetches details only up to this many processes */
	unsigned command_timeout; /* password_command/token_command run limit, 0: none */
	uint64_t min_rate;        /* bytes/s a body must average over stall_timeout, 0: none */
	uint64_t max_json;        /* largest list/details body kept in memory (decoded) */
	bool insecure;
	char *ca_file;
	char *arm_endpoint; /* [kudufs] arm_endpoint, NULL: KUDU_ARM_ENDPOINT_DEFAULT */
	int debug;

	struct kudu_app **apps;
	size_t napps;
};

void kudu_config_init(struct kudu_config *cfg);
void kudu_config_free(struct kudu_config *cfg);
/* Read an INI file. required=false tolerates a missing file. */
int kudu_config_load(struct kudu_config *cfg, const char *path, bool required, char *err,
		     size_t errlen);
/* "NAME" or "NAME=URL" from the command line; merges with a config section. */
int kudu_config_add_app(struct kudu_config *cfg, const char *spec, char *err, size_t errlen);
/* Apply one global key (config [kudufs] or -o key=value). */
int kudu_config_set(struct kudu_config *cfg, const char *key, const char *value, char *err,
		    size_t errlen);
/* Default config path ($XDG_CONFIG_HOME/kudufs/config or ~/.config/...). */
char *kudu_config_default_path(void);
/* Resolve every app's credentials in the design's order. */
int kudu_config_resolve_credentials(struct kudu_config *cfg, char *err, size_t errlen);
/* Re-run token_command of an app (after a 401). */
int kudu_app_refresh_token(struct kudu_app *app, char *err, size_t errlen);
/* Re-run the ARM token command (arm_token_command, else token_command),
 * unless another thread did since the caller read *gen (the generation of the
 * token it sent; see kudu_app_bearer). */
int kudu_app_refresh_arm_token(struct kudu_app *app, unsigned gen, char *err, size_t errlen);
/* "Authorization: Bearer ..." for Kudu (arm=false) or ARM (arm=true), fetching
 * the ARM token on first use; *gen gets the token's generation. NULL: no token. */
char *kudu_app_bearer(struct kudu_app *app, bool arm, unsigned *gen);
/* Free a string holding a secret, wiping it first. */
void kudu_secret_free(char *s);
/* An instance id as it may go into a cookie and a path: 1..128 of [A-Za-z0-9._-]. */
bool kudu_instance_id_is_valid(const char *id);

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

/* KuduLite's 400 "Not supported on Linux" (dotnet-monitor off), or its 404
 * "The dotnet-monitor tool is not configured to run": the process API is
 * there but cannot answer (kudu_errno_from_status: -EOPNOTSUPP). */
bool kudu_status_says_no_monitor(long status, const char *message);
/* What an EOPNOTSUPP error adds, so the user knows what to change. */
#define KUDU_HINT_DOTNET_MONITOR                                                         \
	"dotnet-monitor does not serve this Linux app's Kudu: it needs the app setting " \
	"WEBSITE_USE_DOTNET_MONITOR=true (.NET apps only)"
/* --check's word for a Kudu that answers, but not /api/processes (404). */
#define KUDU_HINT_NO_PROCESS_API "this app's Kudu has no process API (Linux Consumption plan?)"

/* ---- platforms and dump kinds (kudu/platform.c) --------------------------- */

/* "windows", "linux", "auto" */
const char *kudu_platform_name(enum kudu_platform p);
int kudu_platform_parse(const char *s, enum kudu_platform *out);
/* The app's platform: the configured one, else the detected one, else
 * KUDU_PLATFORM_AUTO (nothing seen yet). The one place that decides. */
enum kudu_platform kudu_app_platform(const struct kudu_app *app);
/* Evidence from a response (a list's item shape, a "Not supported on
 * Linux"): the first one decides for the mount's life and is logged; a
 * configured platform it contradicts is logged once. AUTO: no evidence. */
void kudu_app_note_platform(struct kudu_app *app, enum kudu_platform seen, const char *why);

enum kudu_dump_type {
	KUDU_DUMP_MINI = 1,
	KUDU_DUMP_FULL = 2,
	KUDU_DUMP_WITHHEAP = 3, /* Linux only */
	KUDU_DUMP_TRIAGE = 4,   /* Linux only */
};

/* One dump file of a process directory: the one table of names and
 * parameters (fs/ lists and parses by it, status.json and logs name by it). */
struct kudu_dump_kind {
	enum kudu_dump_type type;
	int windows_dump_type;  /* Kudu's dumpType=, 0: no such dump on Windows */
	const char *file;       /* "minidump.dmp" */
	const char *name;       /* "mini": status.json, kudufs-to-blob --type */
	const char *linux_type; /* KuduLite's (dotnet-monitor's) type= */
};
extern const struct kudu_dump_kind kudu_dump_kinds[];
extern const size_t kudu_dump_nkinds;
const struct kudu_dump_kind *kudu_dump_kind_of(enum kudu_dump_type type);
/* Is there such a dump on this platform (AUTO counts as Windows)? */
bool kudu_dump_available(enum kudu_platform p, enum kudu_dump_type type);
/* Does Kudu have the threads and modules routes (Windows; AUTO too)? */
bool kudu_platform_has_threads(enum kudu_platform p);

/* ---- URLs --------------------------------------------------------------- */

int kudu_url_list(const struct kudu_app *app, char *buf, size_t len);
int kudu_url_details(const struct kudu_app *app, int pid, char *buf, size_t len);
/* /api/processes/{pid}/{part}: "threads", "modules" */
int kudu_url_proc_part(const struct kudu_app *app, int pid, const char *part, char *buf,
		       size_t len);
/* The dump route of the app's platform (kudu_app_platform): dumpType=N on
 * Windows, type=Name on Linux; -ENOENT for a dump the platform has not. */
int kudu_url_dump(const struct kudu_app *app, int pid, enum kudu_dump_type type, char *buf,
		  size_t len);
/* /api/settings: answered by every Kudu, Linux Consumption's included. */
int kudu_url_settings(const struct kudu_app *app, char *buf, size_t len);

/* ---- client ------------------------------------------------------------ */

enum kudu_req_kind { KUDU_REQ_JSON, KUDU_REQ_DUMP };

struct kudu_request;
/*
 * Which thread runs the callbacks:
 * - on_body: always the client's transfer thread, inside libcurl's
 *   write callback.
 * - on_done: the transfer thread, once per request; with one exception:
 *   once kudu_client_free() has begun, kudu_client_submit() runs on_done
 *   (err -ECANCELED) on the caller's thread before it returns. So never
 *   call kudu_client_submit() holding a lock that on_done takes.
 * Neither may block for long: every other request waits meanwhile (the
 * cache's on_body writes a spool chunk at a time: cache/spool.c).
 */
typedef void (*kudu_done_fn)(struct kudu_request *req);
/* KUDU_REQ_DUMP (required there): called on the transfer thread with each
 * piece of a 200 body as it lands, req->bytes already counting it. The callee keeps the
 * bytes (the cache spools them); return nonzero (a positive errno) to abort
 * the transfer with that error. */
typedef int (*kudu_body_fn)(struct kudu_request *req, const char *data, size_t n);

struct kudu_request {
	/* filled by the caller */
	struct kudu_app *app;
	enum kudu_req_kind kind;
	char url[1024];
	/* Pinned to one instance: sent as the only cookie, and a response that
	 * names another instance in Set-Cookie is discarded (err -ENOENT,
	 * rerouted, served_by the other one). "": the app-level view, pinned to
	 * the client's current instance of the app. */
	char instance[KUDU_INSTANCE_MAX];
	bool arm;             /* to ARM: the ARM bearer token, no cookie, no Kudu credentials */
	kudu_body_fn on_body; /* KUDU_REQ_DUMP: where the body goes */
	kudu_done_fn on_done; /* see kudu_done_fn for the thread; may free the request */
	void *arg;
	atomic_int cancel; /* set to a positive errno to abort */

	/* results, valid in on_done */
	int err; /* 0 or negative errno */
	long status;
	char *body; /* KUDU_REQ_JSON: NUL-terminated, caller frees */
	size_t body_len;
	int64_t length;         /* Content-Length, -1 if unknown */
	uint64_t bytes;         /* body bytes received */
	char filename[256];     /* Content-Disposition filename */
	char content_type[128]; /* media type, lower-cased, no parameters; "" if none */
	char errmsg[KUDU_ERRLEN];
	int attempts;
	char served_by[KUDU_INSTANCE_MAX]; /* the instance that answered, "" if the server named
					      none */
	bool rerouted;                     /* pinned, but the front end routed it to served_by */
	unsigned token_gen;                /* generation of the bearer token sent */
	bool preflighted;                  /* private: a pinned dump's instance was checked first */

	/* private to the client */
	void *priv;     /* struct xfer while on the wire */
	double t_retry; /* not before this time (backoff) */
	double t_begin; /* first submission: meta_timeout counts from here, retries included */
	struct kudu_request *priv_next;
};

struct kudu_client;

/* Returns nonzero when the thread's caller has given up (a FUSE request
 * interrupted, the session ending); called from the waiting thread. */
typedef int (*kudu_interrupted_fn)(void);

int kudu_client_new(struct kudu_client **out, const struct kudu_config *cfg);
/* Aborts outstanding requests: their on_done runs with -ECANCELED on the
 * transfer thread before this returns. */
/* Synchronous fetches (kudu_client_fetch) poll fn every 200 ms and end
 * with -EINTR once it says so. Set once, before the first fetch. */
void kudu_client_set_interrupted(struct kudu_client *c, kudu_interrupted_fn fn);
/* Whether the calling thread's caller gave up (false without a hook). */
bool kudu_client_interrupted(const struct kudu_client *c);
void kudu_client_free(struct kudu_client *c);
void kudu_request_init(struct kudu_request *req, struct kudu_app *app, enum kudu_req_kind kind);
void kudu_request_reset(struct kudu_request *req);
/* Queue a request; returns at once. on_done is called exactly once: on the
 * transfer thread, or, while the client is being freed, on this thread
 * before kudu_client_submit returns. */
void kudu_client_submit(struct kudu_client *c, struct kudu_request *req);
/* How a request is submitted: kudu_client_submit, or a unit test's fake
 * (which calls on_done exactly once, on any thread, maybe before it returns). */
typedef void (*kudu_submit_fn)(struct kudu_client *c, struct kudu_request *req);
/* Submit and wait. Refreshes a bearer token once on 401. The request's own
 * on_done and arg are set aside meanwhile: the wait uses them. */
int kudu_client_fetch(struct kudu_client *c, struct kudu_request *req);
/* kudu_client_fetch through submit (the cache's c->submit): the same wait,
 * interrupt hook (none when c is NULL) and 401 retry. */
/* The request ended in a 401 that a fresh token may cure (an ARM request, or
 * an app with a bearer token): kudu_client_fetch_via refreshes the token once
 * and retries; a prefetch leaves it for the next reader's fetch. */
bool kudu_request_token_expired(const struct kudu_request *req);
int kudu_client_fetch_via(struct kudu_client *c, kudu_submit_fn submit, struct kudu_request *req);
/* GET url, return the JSON body (caller frees). */
int kudu_client_get_json(struct kudu_client *c, struct kudu_app *app, const char *url, char **body,
			 size_t *len, char *err, size_t errlen);
/* The instance the app-level view is on now (`instance =`, else the first
 * the front end named, following a moved pin); -ENOENT while unknown. */
int kudu_client_view_instance(struct kudu_client *c, const struct kudu_app *app, char *buf,
			      size_t len);
/* Every instance id the front end has named for the app in Set-Cookie so
 * far (at most KUDU_SEEN_MAX), malloc'd; returns how many. */
#define KUDU_SEEN_MAX 256
size_t kudu_client_seen_instances(struct kudu_client *c, const struct kudu_app *app, char ***ids);
double kudu_now(void);
/* clock's time ms milliseconds from now: a deadline for pthread_cond_timedwait
 * (CLOCK_REALTIME unless the condition variable was set to another clock). */
struct timespec kudu_deadline_in(clockid_t clock, long ms);
/* After a 404 on /api/processes: does the app's Kudu answer other routes
 * (/api/settings)? Then it has no process API (Linux Consumption), and
 * msg gets KUDU_HINT_NO_PROCESS_API; else false (a wrong URL, say). */
bool kudu_client_probe_no_process_api(struct kudu_client *c, struct kudu_app *app, char *msg,
				      size_t len);

/* ---- instances of a scaled-out app (kudu/instances.c) ----------------- */

/* How an app's instance list was found, first that applies: the config's
 * `instances =`, ARM (arm_resource), Kudu's /instance/all, else the ids the
 * front end has named in Set-Cookie so far. */
enum kudu_inst_source { KUDU_INST_CONFIG, KUDU_INST_ARM, KUDU_INST_KUDU, KUDU_INST_SEEN };

struct kudu_instances {
	char **ids; /* valid instance ids, no duplicates, in the server's order */
	size_t n;
	enum kudu_inst_source source;
	char why[KUDU_ERRLEN]; /* which discovery failed and why, when a fallback answered; "" else
				*/
};

void kudu_instances_free(struct kudu_instances *l);
/* "config", "ARM", "Kudu", "seen" */
const char *kudu_instances_source_name(enum kudu_inst_source s);
/* Append id unless listed; -EINVAL (nothing added) if it is no instance id. */
int kudu_instances_add(struct kudu_instances *l, const char *id);
/* One page of ARM's WebApps_ListInstanceIdentifiers: ids from each item's
 * name; *next_link gets nextLink (malloc'd) or NULL on the last page. */
int kudu_instances_parse_arm(struct kudu_instances *l, const char *body, size_t len,
			     char **next_link, char *err, size_t errlen);
/* Kudu's /instance/all: a JSON array of instance-id strings. */
int kudu_instances_parse_all(struct kudu_instances *l, const char *body, size_t len, char *err,
			     size_t errlen);
int kudu_url_arm_instances(const struct kudu_app *app, char *buf, size_t len);
int kudu_url_instance_all(const struct kudu_app *app, char *buf, size_t len);
/* Find the app's instances (network requests; call from a thread that may
 * wait). 0 with *out filled (out->why says what failed, if a fallback
 * answered), or -EACCES when the configured ARM or Kudu refused the
 * credentials (err says which, never with the secret). */
int kudu_instances_discover(struct kudu_client *c, struct kudu_app *app, struct kudu_instances *out,
			    char *err, size_t errlen);

#endif
