/*
 * The cache object: its locks, its per-app arrays and the spool directory,
 * made and torn down in one place.
 */
#include "cache/cache_priv.h"

#include <errno.h>
#include <stdlib.h>

int cache_new(struct cache **out, struct kudu_config *cfg, struct kudu_client *client, char *err,
	      size_t errlen)
{
	struct cache *c = calloc(1, sizeof(*c));
	int rc;

	if (!c)
		return -ENOMEM;
	c->cfg = cfg;
	c->client = client;
	c->submit = kudu_client_submit;
	c->meta = calloc(cfg->napps, sizeof(*c->meta));
	c->dumps = calloc(cfg->napps, sizeof(*c->dumps));
	if (!c->meta || !c->dumps) {
		free(c->meta);
		free(c->dumps);
		free(c);
		return -ENOMEM;
	}
	pthread_mutex_init(&c->meta_lock, NULL);
	pthread_cond_init(&c->meta_cond, NULL);
	pthread_mutex_init(&c->cap_lock, NULL);
	pthread_cond_init(&c->readers_left, NULL);
	rc = cache_spool_init(c, err, errlen);
	if (rc < 0) {
		cache_free(c);
		return rc;
	}
	*out = c;
	return 0;
}

/* After kudu_client_free(): no callback can arrive any more. */
void cache_free(struct cache *c)
{
	if (!c)
		return;
	cache_capture_free_all(c);
	cache_spool_remove_all(c);
	cache_meta_free_all(c);
	pthread_mutex_destroy(&c->meta_lock);
	pthread_cond_destroy(&c->meta_cond);
	pthread_mutex_destroy(&c->cap_lock);
	pthread_cond_destroy(&c->readers_left);
	free(c->meta);
	free(c->dumps);
	free(c->spool_dir);
	free(c);
}
