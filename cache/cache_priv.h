/*
 * Private to cache/: the state shared by cache.c, meta.c, spool.c,
 * capture.c and status.c (and the unit tests, which reach in to replace
 * the request submitter). Which lock guards what is explained at the top
 * of cache/cache.h; every field below repeats it.
 */
#ifndef KUDUFS_CACHE_PRIV_H
#define KUDUFS_CACHE_PRIV_H

#include "cache/cache.h"

#include <pthread.h>
#include <time.h>

/* ---- metadata (meta.c): everything here is guarded by cache.meta_lock ---- */

struct detail_entry {
	int pid;
	enum cache_part part;    /* details, threads or modules of pid */
	struct cache_blob *blob; /* NULL while fetching or after an error */
	int err;                 /* last error (negative errno) */
	double at;               /* when blob or err was stored */
	bool inflight;
	struct detail_entry *next; /* hash chain */
	/* cache.details_lru: the entries holding a blob, least recently used first */
	struct detail_entry *lru_prev, *lru_next;
};

#define DETAIL_BUCKETS 1024

/* The metadata of one view of an app: the app-level one (inst "") or one
 * instance's (instances/<id>/). An instance's view exists while the
 * instance is listed and asked about; it is freed when the instance goes, so
 * memory follows the instances in use, not every id ever seen. Code that
 * waited on meta_cond looks its view up again by name: it may be gone. */
struct view_meta {
	char inst[KUDU_INSTANCE_MAX]; /* "" for the app-level view */
	struct cache_list *list;      /* NULL until fetched */
	double list_at;
	int list_err;
	double list_err_at;
	char list_errmsg[KUDU_ERRLEN]; /* the last list error's text, "" after a success */
	bool list_inflight;
	size_t list_skipped, list_duplicates; /* of the last list, so a change is logged once */
	struct detail_entry **details; /* DETAIL_BUCKETS chains, allocated with the first entry */
	struct view_meta *next;        /* app_meta.insts chain */
};

struct app_meta {
	struct view_meta view;         /* the app-level view */
	struct view_meta *insts;       /* instance views */
	struct cache_instances *ilist; /* the instance list, NULL until discovered */
	double ilist_at;
	int ilist_err;
	double ilist_err_at;
	bool ilist_inflight;
	char ilist_why[KUDU_ERRLEN]; /* the last fallback's reason, logged when it changes */
};

/* ---- captures (capture.c): guarded by cache.cap_lock ---- */

/* Kudu writes every dump of a site to one fixed file: one request per app. */
struct app_dumps {
	struct capture *active;          /* cap_lock: the one dump request in flight for this app */
	struct capture *q_head, *q_tail; /* cap_lock: CAP_QUEUED captures, FIFO via qnext */
};

/*
 * How a capture's bytes go through its spool file (spool.c).
 *
 * In: libcurl hands the body over 16 KiB at a time; the sink gathers it
 * into SPOOL_CHUNK pieces and writes each with one pwrite(). Readers at
 * the download's edge copy the bytes not yet written out of that buffer.
 *
 * Out, and the page cache: each byte is written to the file's page cache
 * and read back by a reader right behind; kept there, the spool would grow
 * the page cache by a whole dump on top of the reader's own copy (cp's
 * destination). So it is recycled: every SPOOL_STEP written is sent to disk
 * at once (sync_file_range, asynchronous), and a sequential reader drops
 * what is a step behind it (POSIX_FADV_DONTNEED, which frees only pages
 * already clean). A first read then takes new pages for about one copy of
 * the dump, as curl -o does, not two (README, Performance); a reader
 * further behind, or a later one, reads the file back from disk.
 *
 * Threads: the transfer thread appends and flushes; readers copy. The
 * buffer's bytes below what a reader may ask for (cap->bytes, seen under
 * cap_lock after the append) do not change until flushed has moved past
 * them, so only that move, freeing the buffer, a reader's copy out of it
 * and a reader's drop bookkeeping take the lock. It is a leaf: nothing is
 * taken under it, and it is never taken under cap_lock.
 */
#define SPOOL_CHUNK ((size_t)1 << 20)
#define SPOOL_STEP (UINT64_C(8) << 20)

struct spool_sink {
	int fd;               /* transfer thread: the spool file (the capture's fd) */
	size_t fill;          /* transfer thread: bytes in buf */
	uint64_t kicked;      /* transfer thread: writeback started below this */
	pthread_mutex_t lock; /* guards buf (freeing it, copying out of it) and the rest */
	char *buf;            /* SPOOL_CHUNK bytes while downloading, else NULL */
	uint64_t flushed;     /* [0, flushed) is in the file, [flushed, +fill) in buf */
	uint64_t read_next;   /* where the last read ended */
	uint64_t dropped;     /* the page cache below this was dropped */
};

enum capture_auth {
	AUTH_FRESH,      /* no 401 seen */
	AUTH_REFRESHING, /* a reader is re-running token_command (cap_lock dropped) */
	AUTH_RETRIED,    /* refreshed once; a second 401 is final */
};

/*
 * One download of (app, instance, pid, type). Lifetime: references (refs) are held
 * by the table (while in_table), by each reader (acquire .. release) and by
 * the request from start (CAP_FETCHING) until its on_done; the last put
 * frees it. "immutable" fields are written once by cache_capture_acquire
 * before the capture is published in the table, and only read after.
 */
struct capture {
	struct cache *cache;               /* immutable */
	size_t app;                        /* immutable: index into cfg->apps */
	char inst[KUDU_INSTANCE_MAX];      /* immutable: the instance it is taken on and pinned to;
					    * "" only when the server names no instance */
	int pid;                           /* immutable */
	enum kudu_dump_type type;          /* immutable */
	char served_by[KUDU_INSTANCE_MAX]; /* cap_lock: the instance that answered */
	char url[1024];                    /* immutable */

	enum capture_state state; /* cap_lock */
	int refs;                 /* cap_lock: table + readers + the request while active */
	bool in_table;            /* cap_lock: reachable from cache.captures */
	int fd;                   /* cap_lock; readers pread() it unlocked while they hold a
				   * reference (it is only closed at the last put, or by the
				   * 401 retry, which comes before any body byte) */
	struct spool_sink sink;   /* the body's way into fd and out (spool.c) */
	char *path;               /* cap_lock: spool file, NULL once unlinked */
	uint64_t bytes;           /* cap_lock: body bytes in the spool */
	int64_t length;           /* cap_lock: Content-Length, -1 unknown */
	int err;                  /* cap_lock: negative errno once CAP_FAILED */
	char errmsg[KUDU_ERRLEN]; /* cap_lock */
	char filename[256];       /* cap_lock: Content-Disposition of the response */
	uint64_t wake_at;         /* cap_lock: lowest byte count a waiting reader needs */
	enum capture_auth auth;   /* cap_lock: bearer token re-run after a 401 */
	unsigned fs_marks;        /* cap_lock: fs/'s (cache_capture_mark); never read here */
	double started, finished, last_used; /* cap_lock (kudu_now()) */
	time_t started_wall;                 /* cap_lock: for status.json */
	pthread_cond_t cond;     /* waited on with cap_lock: bytes landed, state changed */
	struct kudu_request req; /* cap_lock while not submitted; from submit until on_done
				  * the client's (the transfer thread fills the results) */
	struct capture *next;    /* cap_lock: cache.captures chain */
	struct capture *qnext;   /* cap_lock: app_dumps queue chain */
};

/* Nobody but the table holds it: no reader has it open and no request is
 * on the wire, so eviction may take it. */
static inline bool capture_is_unused(const struct capture *cap)
{
	return cap->in_table && cap->refs == 1;
}

/* Queued and wanted by exactly one reader: a queued capture has no request
 * reference yet, so refs is the table's plus its readers'. */
static inline bool capture_is_queued_for_one_reader(const struct capture *cap)
{
	return cap->state == CAP_QUEUED && cap->in_table && cap->refs == 2;
}

struct cache {
	struct kudu_config *cfg;    /* immutable while the cache lives */
	struct kudu_client *client; /* immutable */
	kudu_submit_fn submit;      /* immutable after cache_new: kudu_client_submit, or a
				     * unit test's fake; every request of cache/ but instance
				     * discovery's goes through it (cache_fetch: blocking ones) */

	pthread_mutex_t meta_lock; /* guards meta[*] (struct app_meta, its views) and every
				      detail_entry */
	pthread_cond_t meta_cond;  /* with meta_lock: a list or details fetch finished */
	struct app_meta *meta;     /* the array itself is immutable, one per app */
	_Atomic uint64_t list_gen; /* numbers list snapshots (cache_list.gen); atomic, no lock */
	/* meta_lock: every detail entry holding a blob, least recently used
	 * first, and the bytes of those blobs (kept under DETAILS_MAX_BYTES) */
	struct detail_entry *details_lru_head, *details_lru_tail;
	uint64_t details_bytes;

	pthread_mutex_t cap_lock; /* guards captures, dumps[*], spool_bytes, seq, stat_*
				   * and every capture's non-immutable fields */
	struct capture *captures; /* cap_lock: the table */
	struct app_dumps *dumps;  /* array immutable, one per app; entries cap_lock */
	uint64_t spool_bytes;     /* cap_lock: bytes of table captures, counted against cache_max */
	unsigned long seq;        /* cap_lock: spool file names */
	char *spool_dir;          /* immutable: cache_dir/spool-<pid> */
	uint64_t stat_captures, stat_failures; /* cap_lock */
	bool readers_leave;          /* cap_lock: the session ends: waiting readers get ENOTCONN */
	unsigned readers_waiting;    /* cap_lock: readers inside cache_capture_wait */
	pthread_cond_t readers_left; /* with cap_lock: readers_waiting dropped to 0 */
};

/* spool.c */
int cache_spool_init(struct cache *c, char *err, size_t errlen);
/* A new private spool file for cap (cap_lock held: takes a seq number).
 * Returns the fd and sets *path, or returns -errno with *path NULL. */
int cache_spool_create_locked(struct cache *c, const struct capture *cap, char **path);
void cache_spool_remove_all(struct cache *c);
/* The sink of a capture: set up once, opened on the spool file at each
 * start, closed when its download ends (its buffer goes), destroyed with
 * the capture. */
void cache_spool_sink_init(struct spool_sink *s);
void cache_spool_sink_open(struct spool_sink *s, int fd);
void cache_spool_sink_close(struct spool_sink *s);
void cache_spool_sink_destroy(struct spool_sink *s);
/* Transfer thread: append body bytes; at the end of a whole body, write
 * what the buffer holds (and close). 0 or -errno (ENOSPC, EIO, ...). */
int cache_spool_append(struct spool_sink *s, const char *data, size_t n);
int cache_spool_finish(struct spool_sink *s);
/* Readers: size bytes at off, all below what the transfer thread has
 * appended, from the file (their reference keeps fd open) or the buffer;
 * the page cache behind a sequential reader is dropped. Returns size,
 * fewer if the download failed meanwhile (its buffer is gone), or -errno. */
ssize_t cache_spool_read(struct spool_sink *s, int fd, char *buf, size_t size, off_t off);

/* capture.c */
void cache_capture_free_all(struct cache *c);
void cache_capture_info_locked(const struct cache *c, const struct capture *cap,
			       struct capture_info *info, double now);

/* Submit and wait, through c->submit (kudu_client_fetch_via: its interrupt
 * hook and its one bearer-token refresh after a 401). Call it holding no lock. */
static inline int cache_fetch(struct cache *c, struct kudu_request *req)
{
	return kudu_client_fetch_via(c->client, c->submit, req);
}

/* meta.c */
void cache_meta_free_all(struct cache *c);
/* A request pinned to inst was answered by another instance (other): inst
 * is gone. Drops it from the instance list (until discovery lists it again)
 * and its view; the app-level view's list, if it came from inst, is
 * refetched. Takes meta_lock: call it without cap_lock. */
void cache_instance_gone(struct cache *c, size_t app, const char *inst, const char *other);

#endif
