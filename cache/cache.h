/*
 * cache — metadata with TTLs and dump captures spooled to private files.
 *
 * Knows nothing of FUSE: fs/ passes an "interrupted" callback where a
 * reader may wait. Functions return 0 / byte counts or a negative errno.
 *
 * Lock order: meta_lock and cap_lock are never held together, and neither
 * is held across a network wait or a callback into fs/.
 */
#ifndef KUDUFS_CACHE_H
#define KUDUFS_CACHE_H

#include "kudu/kudu.h"
#include "kudu/model.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct cache;

/* An immutable, reference-counted snapshot of one app's process list. */
struct cache_list {
	atomic_int refs;
	uint64_t gen;    /* this snapshot's number: a new fetch has a larger one */
	char *raw;       /* processes.json, byte for byte */
	size_t raw_len;
	struct kudu_proc *procs;  /* the model's list: server order, one per pid */
	char **dirnames; /* parallel to procs: sanitized "<name>-<pid>" */
	size_t nprocs;
	const char *role_holders; /* kudu_model_role_holders(): NULL if no site/scm */
	int64_t *by_pid; /* pid << 32 | index into procs, sorted */
};

/* Pretty-printed details.json, reference-counted. */
struct cache_blob {
	atomic_int refs;
	char *data;
	size_t len;
	bool is_scm;     /* is_scm_site: true (absent means false) */
};

/* cache/cache.c */
int cache_new(struct cache **out, struct kudu_config *cfg, struct kudu_client *client,
	      char *err, size_t errlen);
void cache_free(struct cache *c);
/* cache/spool.c: resolve the default cache_dir and create it private (0700), so that a bad
 * one is reported before the daemon detaches from the terminal. */
int cache_prepare_dir(struct kudu_config *cfg, char *err, size_t errlen);

/* ---- metadata (cache/meta.c) ---- */
int cache_get_list(struct cache *c, size_t app, struct cache_list **out);
/* Another reference to a snapshot the caller holds; returns l. */
struct cache_list *cache_list_get(struct cache_list *l);
void cache_list_put(struct cache_list *l);
/* Index of pid in l->procs, -1 if not listed. */
ssize_t cache_list_find_pid(const struct cache_list *l, int pid);
/* Parses "<name>-<pid>" and checks it against the list; -1 if absent. */
ssize_t cache_list_find_dir(const struct cache_list *l, const char *dirname);
/* Start fetching every process's details in the background (readdir). */
void cache_prefetch_details(struct cache *c, size_t app, const struct cache_list *l);
int cache_get_details(struct cache *c, size_t app, int pid, struct cache_blob **out);
void cache_blob_put(struct cache_blob *b);
/* True when a details request said the process is gone (404, within neg_ttl). */
bool cache_proc_gone(struct cache *c, size_t app, int pid);
/* Target of the site/scm symlink: a dirname, or -ENOENT. */
int cache_find_role(struct cache *c, size_t app, enum kudu_role role, char *dirname, size_t len);
/* The role a listed process holds: the one whose link names it, else
 * KUDU_ROLE_NONE. Both come from one function, so they always agree. */
int cache_proc_role(struct cache *c, size_t app, int pid, enum kudu_role *role);
/* Sanitize a server-provided name for use in a path component. */
void cache_sanitize_name(const char *in, char *out, size_t outlen);

/* ---- dump captures (cache/capture.c; spool files in cache/spool.c) ---- */
struct capture;

enum capture_state { CAP_IDLE, CAP_QUEUED, CAP_FETCHING, CAP_COMPLETE, CAP_FAILED };

struct capture_info {
	enum capture_state state;
	uint64_t bytes;
	int64_t length;
	double rate;        /* bytes/s while fetching, average once complete */
	char url[1024];
	char error[KUDU_ERRLEN];
	char filename[256];
};

typedef int (*cache_interrupted_fn)(void);

/* Take a reference to the live capture of (app, pid, type), creating and
 * queueing one if none is live. Starts no request: the first read does. */
int cache_capture_acquire(struct cache *c, size_t app, int pid, enum kudu_dump_type type,
			  struct capture **out);
/* Read from the spool, starting the download if needed and waiting for the
 * bytes. Returns bytes read (0 at the end of a complete dump) or -errno. */
ssize_t cache_capture_read(struct cache *c, struct capture *cap, char *buf, size_t size,
			   off_t off, cache_interrupted_fn interrupted);
/* Wait until `size` bytes at `off` are in the spool (or the dump ended);
 * returns how many are ready and the spool fd, valid while the reference
 * is held. */
ssize_t cache_capture_wait(struct cache *c, struct capture *cap, size_t size, off_t off,
			   cache_interrupted_fn interrupted, int *fd);
void cache_capture_release(struct cache *c, struct capture *cap);
/* Size of a complete, unexpired capture, else -ENOENT. */
int cache_capture_size(struct cache *c, size_t app, int pid, enum kudu_dump_type type,
		       uint64_t *size);
void cache_capture_get_info(struct cache *c, size_t app, int pid, enum kudu_dump_type type,
			    struct capture_info *info);
/* unlink(): forget a finished capture; -EBUSY while one is being fetched. */
int cache_capture_drop(struct cache *c, size_t app, int pid, enum kudu_dump_type type);
/* status.json (cache/status.c): malloc'd, NUL-terminated. */
char *cache_status_json(struct cache *c);
const char *cache_state_name(enum capture_state s);

#endif
