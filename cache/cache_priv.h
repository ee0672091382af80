/* Private to cache/: the state shared by meta.c and capture.c. */
#ifndef KUDUFS_CACHE_PRIV_H
#define KUDUFS_CACHE_PRIV_H

#include "cache/cache.h"

#include <pthread.h>

struct detail_entry {
	int pid;
	struct cache_blob *blob;   /* NULL while fetching or after an error */
	int err;                   /* last error (negative errno) */
	double at;                 /* when blob or err was stored */
	bool inflight;
	struct detail_entry *next; /* hash chain */
};

#define DETAIL_BUCKETS 1024

struct app_meta {
	struct cache_list *list;   /* NULL until fetched */
	double list_at;
	int list_err;
	double list_err_at;
	bool list_inflight;
	struct detail_entry *details[DETAIL_BUCKETS];
};

struct app_dumps {
	struct capture *active;    /* the one dump request in flight for this app */
	struct capture *q_head, *q_tail;
};

struct cache {
	struct kudu_config *cfg;
	struct kudu_client *client;

	pthread_mutex_t meta_lock; /* guards apps_meta[*] and every detail_entry */
	pthread_cond_t meta_cond;  /* a list or details fetch finished */
	struct app_meta *meta;

	pthread_mutex_t cap_lock;  /* guards captures, dumps[*], spool_bytes, seq and every capture's fields */
	struct capture *captures;
	struct app_dumps *dumps;
	uint64_t spool_bytes;
	unsigned long seq;
	char *spool_dir;           /* cache_dir/spool-<pid> */
	uint64_t stat_captures, stat_failures;
};

int cache_capture_init(struct cache *c, char *err, size_t errlen);
void cache_capture_free_all(struct cache *c);
void cache_meta_free_all(struct cache *c);

#endif
