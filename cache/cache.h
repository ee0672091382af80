/*
 * cache — metadata with TTLs and dump captures spooled to private files.
 *
 * Knows nothing of FUSE: fs/ passes an "interrupted" callback where a
 * reader may wait. Functions return 0 / byte counts or a negative errno.
 *
 * Files: cache.c (cache_new/cache_free), meta.c (process lists, details),
 * capture.c (the capture state machine and the per-app dump queue),
 * spool.c (cache_dir, the spool directory and its files), status.c
 * (status.json); cache_priv.h holds the structs they share.
 *
 * ==== Concurrency ====
 *
 * Threads
 *   FUSE workers  libfuse's fuse_loop_mt (max_threads, 64 by default, and
 *                 max_idle_threads; with -s the main thread alone). Every
 *                 fs/ operation, and so every cache_* call, runs on one.
 *                 A worker may block: on meta_cond while another worker
 *                 fetches the same list or details, in cache_fetch() for
 *                 its own (kudu_client_fetch_via through c->submit: waits
 *                 on the request's sync_wait), on a capture's cond until its dump
 *                 bytes land (waking every 200 ms to poll the interrupted
 *                 callback), and in token_command after a dump's 401.
 *   transfer      kudu/client.c, one per client: drives libcurl and calls
 *                 every request's on_body and on_done (capture.c's
 *                 on_body/on_done, meta.c's prefetch_done and
 *                 list_prefetch_done, the client's fetch_done that wakes a
 *                 blocking fetch's caller), holding no lock of ours. It never
 *                 waits for a worker; on_done may submit the app's next
 *                 queued dump (kudu_client_submit only enqueues).
 *   signal        fs/main.c: sigwait()s SIGTERM/SIGINT/SIGHUP and unmounts.
 *                 When the mount is busy it calls cache_readers_leave()
 *                 (takes cap_lock, waits at most 2 s on readers_left for
 *                 waiting readers to return -ENOTCONN), then ends the
 *                 session. Nothing else in cache/.
 *   main          setup and teardown. After the loop (workers joined):
 *                 fs_release_handles(), kudu_client_free() (outstanding
 *                 requests end with -ECANCELED, on_done on the transfer
 *                 thread, which is then joined), cache_free(). So
 *                 cache_free() runs when no callback can come any more.
 *   A request submitted once kudu_client_free() has begun is completed at
 *   once with -ECANCELED by the submitting thread (kudu.h, kudu_done_fn). In the
 *   mount only the transfer thread itself submits then (a cancelled dump's
 *   on_done starting the app's next queued one), so on_done and on_body
 *   always run on the transfer thread. They write dump bodies to the spool
 *   (spool.c: a 1 MiB pwrite() at a time, and sync_file_range to start its
 *   writeback), holding no lock of ours. Every request of cache/ goes through
 *   c->submit, but instance discovery's (kudu_instances_discover makes them
 *   with kudu_client_fetch; with `instances =` configured it makes none).
 *   The unit tests replace c->submit with a fake (tests/unit/fake_submit.h)
 *   whose on_done runs on the test's own thread instead.
 *
 * Locks: each guards exactly what is listed
 *   cache.meta_lock      every struct app_meta and its views (struct
 *                        view_meta: list snapshot, list_at, list_err(_at),
 *                        list_inflight, the details hash; the instance
 *                        views' chain), the instance list snapshot and its
 *                        times, every detail_entry, and the details LRU
 *                        (details_lru_*, details_bytes). meta_cond goes with
 *                        it: a list, details or discovery fetch ended (the
 *                        *_inflight flags make fetches single-flight; others
 *                        wait on meta_cond, then look their view up again:
 *                        an instance's view is freed when it goes).
 *   cache.cap_lock       the capture table (captures), the per-app queues
 *                        (dumps[*]), spool_bytes, seq, stat_*,
 *                        readers_leave, readers_waiting, and every field of
 *                        every struct capture except the immutable ones
 *                        (cache_priv.h names the lock of each field). Each
 *                        capture's cond goes with it (bytes landed, or the
 *                        state changed), and so does readers_left (the last
 *                        waiting reader returned after cache_readers_leave).
 *   spool_sink.lock      a capture's sink (cache_priv.h): its buffer (freeing it,
 *                        a reader copying out of it), flushed, read_next and
 *                        dropped. A leaf: held for a copy of one read's bytes
 *                        or a few fields, never across I/O, never under
 *                        cap_lock. fill and kicked are the transfer thread's.
 *   kudu_client.lock     the client's incoming queue and stopping flag.
 *   kudu_app.token_lock  the app's bearer tokens, Kudu's and ARM's, and their
 *                        generations (replaced by kudu_app_refresh_token /
 *                        _arm_token, read for each request).
 *   kudu_client.inst_lock the client's per-app instance state: the app-level
 *                        view's instance and the ids seen in Set-Cookie.
 *   sync_wait.lock       one blocking fetch's done flag (kudu_client_fetch_via;
 *                        set by its on_done, fetch_done).
 *   kudufs.handles_lock  fs/'s list of open handles (prev/next).
 *   Not locked: what is immutable once published (cfg, the per-app arrays
 *   themselves, a capture's app/pid/type/url, the content of a cache_list
 *   or cache_blob), and atomics (cache_list/cache_blob refs, cache.list_gen,
 *   a request's cancel, fs/'s handle->cap and listed_gen[*]).
 *
 * Lock rules
 *   - No thread holds two of these locks at once. The one exception is
 *     teardown: fs_release_handles() holds handles_lock while releasing
 *     captures (cap_lock). So the order is handles_lock, then cap_lock.
 *   - None is held across a network wait, a request submission (c->submit
 *     may run on_done before it returns), token_command, a read or write
 *     of spool data, or a call into fs/. Code that must do one of these drops
 *     the lock and looks at the state again after retaking it
 *     (begin_locked, retry_auth_locked, meta.c's fetches).
 *
 * Capture references (refs, under cap_lock): one for the table while
 * in_table, one per reader (acquire .. release), one for the request from
 * its start until on_done. The last put closes the fd and frees it. The
 * checks that read meaning into a count are named: capture_is_unused()
 * (only the table holds it: eviction may take it) and
 * capture_is_queued_for_one_reader() (the last reader is leaving a queued
 * dump).
 *
 * Capture states (capture.state, cap_lock). W: a FUSE worker moves it,
 * T: the transfer thread (on_body/on_done).
 *
 *                  cache_capture_acquire: new, in the table
 *                                 |
 *                                 v
 *   W: its last reader    +---> IDLE <-------------------------------+
 *      leaves the queue   |       |  W: first read (begin_locked)    |
 *                         |       +-------------------+              |
 *                         |       | the app has an    | the app has  |
 *                         |       v active dump       | none         |
 *                         +---- QUEUED                |              |
 *                                 |  T: the app's     |              |
 *                                 |  active dump      |              |
 *                                 |  ended: FIFO head |              |
 *                                 v                   |              |
 *                             FETCHING <--------------+              |
 *                              |     |                               |
 *          T: 200 with a dump  |     |  T: an error, an empty or     |
 *             body, all of it  |     |  text/JSON 200, or ENOSPC     |
 *             in the file      v     v  (cache_max, spool write)     |
 *                        COMPLETE   FAILED --------------------------+
 *                                      W: a 401 on a token_command app:
 *                                         a reader runs token_command
 *                                         (once per capture), then the
 *                                         capture begins again
 *
 *   Out of the table (freed at the last reference): COMPLETE on rm
 *   (cache_capture_drop), on eviction under cache_max when unused, or at
 *   the next acquire after dump_ttl; FAILED at the next acquire (a fresh
 *   capture replaces it). QUEUED and FETCHING ones stay until cache_free().
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

/*
 * Views. Every metadata and capture function takes (app, inst): inst NULL
 * or "" is the app-level view MOUNT/<app>/ (the instance the front end or
 * `instance =` picks), else the view of that one instance,
 * MOUNT/<app>/instances/<inst>/, whose requests are pinned to it and
 * verified (kudu_request.instance). The app-level view's details and dumps
 * are pinned to the instance its process list came from, so a list of one
 * instance and a dump of another never meet under one name.
 */

/* An immutable, reference-counted snapshot of one view's process list. */
struct cache_list {
	atomic_int refs;
	char instance[KUDU_INSTANCE_MAX]; /* the instance that answered; "" if none was named */
	uint64_t gen;                     /* this snapshot's number: a new fetch has a larger one */
	char *raw;                        /* processes.json, byte for byte */
	size_t raw_len;
	struct kudu_proc *procs; /* the model's list: server order, one per pid */
	char **dirnames;         /* parallel to procs: sanitized "<name>-<pid>" */
	size_t nprocs;
	const char *role_holders; /* kudu_model_role_holders(): NULL if no site/scm */
	int64_t *by_pid;          /* pid << 32 | index into procs, sorted */
};

/* Pretty-printed details.json, reference-counted. */
struct cache_blob {
	atomic_int refs;
	char *data;
	size_t len;
	bool is_scm; /* is_scm_site: true (absent means false) */
};

/* cache/cache.c */
int cache_new(struct cache **out, struct kudu_config *cfg, struct kudu_client *client, char *err,
	      size_t errlen);
void cache_free(struct cache *c);
/* cache/spool.c: resolve the default cache_dir and create it private (0700), so that a bad
 * one is reported before the daemon detaches from the terminal. */
int cache_prepare_dir(struct kudu_config *cfg, char *err, size_t errlen);

/* ---- metadata (cache/meta.c) ---- */
int cache_get_list(struct cache *c, size_t app, const char *inst, struct cache_list **out);
/* Another reference to a snapshot the caller holds; returns l. */
struct cache_list *cache_list_get(struct cache_list *l);
void cache_list_put(struct cache_list *l);
/* Index of pid in l->procs, -1 if not listed. */
ssize_t cache_list_find_pid(const struct cache_list *l, int pid);
/* Parses "<name>-<pid>" and checks it against the list; -1 if absent. */
ssize_t cache_list_find_dir(const struct cache_list *l, const char *dirname);
/* Start fetching every process's details in the background (readdir). */
void cache_prefetch_details(struct cache *c, size_t app, const char *inst,
			    const struct cache_list *l);
int cache_get_details(struct cache *c, size_t app, const char *inst, int pid,
		      struct cache_blob **out);
/* A process's JSON documents: details (prefetched by readdir), threads and
 * modules (Windows Kudu only; fetched when read, never prefetched: Kudu
 * walks the process to answer them). Each cached for detail_ttl, errors
 * for negative_ttl. */
enum cache_part { CACHE_PART_DETAILS, CACHE_PART_THREADS, CACHE_PART_MODULES };
int cache_get_part(struct cache *c, size_t app, const char *inst, int pid, enum cache_part part,
		   struct cache_blob **out);
/* The size of a fresh cached part, without fetching; -ENOENT if none (a
 * stat must not make Kudu walk a process). */
int cache_peek_part(struct cache *c, size_t app, const char *inst, int pid, enum cache_part part,
		    size_t *size);
void cache_blob_put(struct cache_blob *b);
/* True when a details request said the process is gone (404, within neg_ttl). */
bool cache_proc_gone(struct cache *c, size_t app, const char *inst, int pid);
/* Target of the site/scm symlink: a dirname, or -ENOENT. */
int cache_find_role(struct cache *c, size_t app, const char *inst, enum kudu_role role,
		    char *dirname, size_t len);
/* The role a listed process holds (kudu_model_role_of on its own details):
 * every site process of a web garden is SITE; the site link names the first.
 * The rule itself lives only in kudu/model.c. */
int cache_proc_role(struct cache *c, size_t app, const char *inst, int pid, enum kudu_role *role);
/* The instance a view's processes belong to: inst itself, or for the
 * app-level view the one its current list came from ("" while unknown). */
void cache_view_instance(struct cache *c, size_t app, const char *inst, char *buf, size_t len);

/* The instances of an app (instances/), an immutable snapshot. */
struct cache_instances {
	atomic_int refs;
	char **ids; /* valid instance ids (kudu_instance_id_is_valid): also their names */
	size_t n;
	enum kudu_inst_source source;
};
/* Cached for list_ttl; refresh forces a new discovery (`ls instances`),
 * shared with one already under way. -EACCES: the configured ARM or Kudu
 * refused the credentials. */
int cache_get_instances(struct cache *c, size_t app, bool refresh, struct cache_instances **out);
void cache_instances_put(struct cache_instances *l);
/* Start fetching every listed instance's process list in the background
 * (`ls instances`), so listing each instance after is served from cache. */
void cache_prefetch_lists(struct cache *c, size_t app, const struct cache_instances *l);
/* Is the len-byte name id one of l's? */
bool cache_instances_has(const struct cache_instances *l, const char *id, size_t len);
/* Why the view's last list request failed (its errmsg, with the
 * dotnet-monitor hint where it applies), "" when the last one worked. */
void cache_list_error(struct cache *c, size_t app, const char *inst, char *buf, size_t len);
/* Sanitize a server-provided name for use in a path component. */
void cache_sanitize_name(const char *in, char *out, size_t outlen);

/* ---- dump captures (cache/capture.c; spool files in cache/spool.c) ---- */
struct capture;

enum capture_state { CAP_IDLE, CAP_QUEUED, CAP_FETCHING, CAP_COMPLETE, CAP_FAILED };

struct capture_info {
	enum capture_state state;
	uint64_t bytes;
	int64_t length;
	double rate; /* bytes/s while fetching, average once complete */
	char url[1024];
	char error[KUDU_ERRLEN];
	char filename[256];
	char instance[KUDU_INSTANCE_MAX]; /* the instance the dump is (to be) taken on; "" unknown
					   */
};

typedef int (*cache_interrupted_fn)(void);

/* Take a reference to the live capture of (app, instance, pid, type),
 * creating and queueing one if none is live. The app-level view's is its
 * list's instance's, so both views of one process share one dump. Starts
 * no request: the first read does. Dumps of one app, whatever the instance
 * or view, are taken one at a time (one %HOME%, one dump file). */
int cache_capture_acquire(struct cache *c, size_t app, const char *inst, int pid,
			  enum kudu_dump_type type, struct capture **out);
/* Read from the spool, starting the download if needed and waiting for the
 * bytes. Returns bytes read (0 at the end of a complete dump) or -errno. */
ssize_t cache_capture_read(struct cache *c, struct capture *cap, char *buf, size_t size, off_t off,
			   cache_interrupted_fn interrupted);
/* Wait until `size` bytes at `off` have arrived (or the dump ended);
 * returns how many are ready, and the spool fd, valid while the reference
 * is held. The last ones may not be in the file yet (the sink's buffer):
 * read them with cache_capture_read. */
ssize_t cache_capture_wait(struct cache *c, struct capture *cap, size_t size, off_t off,
			   cache_interrupted_fn interrupted, int *fd);
void cache_capture_release(struct cache *c, struct capture *cap);
/* The session is about to end with readers still waiting (SIGTERM on a busy
 * mount): every wait, now and later, returns -ENOTCONN. Returns once no
 * reader is waiting any more, or after timeout_ms, so that their replies go
 * out before libfuse cancels its workers (a cancelled worker never replies,
 * and its reader would get the kernel's ECONNABORTED). */
void cache_readers_leave(struct cache *c, int timeout_ms);
/* Size of a complete, unexpired capture, else -ENOENT. */
int cache_capture_size(struct cache *c, size_t app, const char *inst, int pid,
		       enum kudu_dump_type type, uint64_t *size);
/* A reference to the capture of (app, inst, pid, type) only if it is complete
 * and unexpired, and its size; -ENOENT otherwise (nothing is created or
 * started). A handle opened on a finished capture keeps reading this one,
 * whatever happens to the table (rm, dump_ttl, eviction) meanwhile. */
int cache_capture_acquire_complete(struct cache *c, size_t app, const char *inst, int pid,
				   enum kudu_dump_type type, struct capture **out, uint64_t *size);
/* Bits fs/ keeps on a capture (which of its files' kernel caches it has
 * invalidated for this capture); cache/ never interprets them. */
unsigned cache_capture_marks(struct cache *c, struct capture *cap);
void cache_capture_mark(struct cache *c, struct capture *cap, unsigned bits);
void cache_capture_get_info(struct cache *c, size_t app, const char *inst, int pid,
			    enum kudu_dump_type type, struct capture_info *info);
/* unlink(): forget a finished capture; -EBUSY while one is being fetched. */
int cache_capture_drop(struct cache *c, size_t app, const char *inst, int pid,
		       enum kudu_dump_type type);
/* status.json (cache/status.c): malloc'd, NUL-terminated. */
char *cache_status_json(struct cache *c);
const char *cache_state_name(enum capture_state s);

#endif
