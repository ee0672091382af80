/*
 * .kudufs/status.json: the configured apps and every capture in the table,
 * rendered from one consistent snapshot taken under cap_lock.
 */
#include "cache/cache_priv.h"

#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

const char *cache_state_name(enum capture_state s)
{
	static const char *const names[] = { "idle", "queued", "fetching", "complete", "failed" };
	return names[s];
}

char *cache_status_json(struct cache *c)
{
	json_t *root = json_object();
	json_t *caps = json_array();
	json_t *apps = json_array();
	double now = kudu_now();
	char *out;

	for (size_t i = 0; i < c->cfg->napps; i++)
		json_array_append_new(
			apps,
			json_pack("{s:s, s:s, s:s, s:s, s:s}", "name", c->cfg->apps[i]->name, "url",
				  c->cfg->apps[i]->url, "credentials", c->cfg->apps[i]->cred_desc,
				  /* "auto" while nothing has said which */
				  "platform",
				  kudu_platform_name(kudu_app_platform(c->cfg->apps[i])),
				  "platform_source",
				  c->cfg->apps[i]->platform != KUDU_PLATFORM_AUTO ? "config"
										  : "detected"));
	pthread_mutex_lock(&c->cap_lock);
	for (struct capture *cap = c->captures; cap; cap = cap->next) {
		struct capture_info info;
		char started[32] = "";
		struct tm tm;

		cache_capture_info_locked(c, cap, &info, now);
		if (cap->started_wall && gmtime_r(&cap->started_wall, &tm))
			strftime(started, sizeof(started), "%Y-%m-%dT%H:%M:%SZ", &tm);
		json_array_append_new(
			caps,
			json_pack("{s:s, s:s, s:i, s:s, s:s, s:I, s:I, s:f, s:s, s:s, s:s, s:s}",
				  "app", c->cfg->apps[cap->app]->name, "instance", info.instance,
				  "pid", cap->pid, "type", kudu_dump_kind_of(cap->type)->name,
				  "state", cache_state_name(info.state), "bytes",
				  (json_int_t)info.bytes, "length", (json_int_t)info.length,
				  "rate_bytes_per_sec", info.rate, "started_at", started, "url",
				  info.url, "error", info.error, "filename", info.filename));
	}
	json_object_set_new(root, "version", json_string(KUDUFS_VERSION));
	json_object_set_new(root, "apps", apps);
	json_object_set_new(root, "captures", caps);
	json_object_set_new(root, "spool_bytes", json_integer((json_int_t)c->spool_bytes));
	json_object_set_new(root, "cache_max", json_integer((json_int_t)c->cfg->cache_max));
	json_object_set_new(root, "captures_started", json_integer((json_int_t)c->stat_captures));
	json_object_set_new(root, "captures_failed", json_integer((json_int_t)c->stat_failures));
	pthread_mutex_unlock(&c->cap_lock);
	out = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	if (out) {
		size_t n = strlen(out);
		char *o = realloc(out, n + 2);
		if (o) {
			o[n] = '\n';
			o[n + 1] = '\0';
			out = o;
		}
	}
	return out;
}
