/*
 * fs — the libfuse3 high-level operations, path parsing and main().
 */
#ifndef KUDUFS_FS_H
#define KUDUFS_FS_H

#define FUSE_USE_VERSION 312
#include <fuse.h>
#include <fuse_lowlevel.h>

#include "cache/cache.h"
#include "kudu/kudu.h"

#include <pthread.h>
#include <stdbool.h>
#include <time.h>

/* The FUSE private data: everything the operations need. */
struct kudufs {
	struct kudu_config *cfg;
	struct kudu_client *client;
	struct cache *cache;
	time_t mounted_at;
	bool single_thread; /* -s: one thread answers every request (op_open_dump) */
	uid_t uid;
	gid_t gid;
	/* Open files. When an unmount is forced on a busy mount the kernel never
	 * sends their RELEASE, so teardown frees what is left here. */
	pthread_mutex_t handles_lock; /* guards handles and every handle's prev/next */
	pthread_cond_t handles_gone;  /* broadcast (under handles_lock) when handles empties */
	struct fs_handle *handles;
};

enum fs_node_kind {
	FS_ROOT,
	FS_META_DIR,  /* .kudufs */
	FS_STATUS,    /* .kudufs/status.json */
	FS_APP,       /* <app>, or with inst set <app>/instances/<inst> */
	FS_INSTANCES, /* <app>/instances */
	FS_PROCESSES, /* <app>/processes.json */
	FS_ROLE_LINK, /* <app>/site, <app>/scm */
	FS_PROC_DIR,
	FS_DETAILS, /* details.json, threads.json, modules.json (part) */
	FS_DUMP,
};

struct fs_node {
	enum fs_node_kind kind;
	size_t app;
	char inst[KUDU_INSTANCE_MAX]; /* "" the app-level view, else the instance of
					 instances/<inst>/ */
	int pid;
	enum kudu_role role;
	enum kudu_dump_type dump;
	enum cache_part part; /* FS_DETAILS: which of the process's JSON documents */
};

extern const struct fuse_operations fs_operations;

struct fs_handle;
/* The open-handle list's lock and condition (before the loop). */
void fs_handles_init(struct kudufs *k);
/* After the loop: free the handles the kernel never released. */
void fs_release_handles(struct kudufs *k);
/* Wait up to timeout_ms for every open handle to be released: 0, or
 * -ETIMEDOUT (a reader still holds a file). */
int fs_wait_handles_released(struct kudufs *k, int timeout_ms);

/* The part of path parsing that needs no network (fuzzed on its own): the
 * segments, the fixed names, the app. For a path inside a process directory
 * *dir and *dirlen are that directory's name, for the caller to look up in the
 * app's list; NULL otherwise. */
int fs_path_parse_names(const struct kudu_config *cfg, const char *path, struct fs_node *node,
			const char **dir, size_t *dirlen);
/* Whether the calling FUSE worker's request was interrupted (Ctrl-C, a
 * killed reader) or the session is ending: every wait polls it. */
int fs_reader_should_stop(void);
/* Parse and validate a path (may fetch the app's process list). */
int fs_parse_path(struct kudufs *k, const char *path, struct fs_node *node);

#endif
