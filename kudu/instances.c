/*
 * The instances of a scaled-out app: where their ids come from.
 *
 * First that applies (kudu-api.md §6): the config's `instances =`; ARM's
 * WebApps_ListInstanceIdentifiers with an ARM bearer token (arm_resource);
 * Kudu's own, undocumented GET /instance/all with the app's credentials;
 * else the ids the front end has named in Set-Cookie: ARRAffinity so far.
 * A refused credential is an error (an operator must see it); anything else
 * falls through to the next source and says why in out->why.
 *
 * Ids are opaque, but they go into a Cookie header and name a directory:
 * one that is not [A-Za-z0-9._-] is skipped rather than pasted into either.
 */
#include "kudu.h"
#include "kudu/log.h"

#include <curl/curl.h>
#include <errno.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ARM_MAX_PAGES 100 /* a loop of nextLinks must end */

void kudu_instances_free(struct kudu_instances *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->ids[i]);
	free(l->ids);
	l->ids = NULL;
	l->n = 0;
}

const char *kudu_instances_source_name(enum kudu_inst_source s)
{
	switch (s) {
	case KUDU_INST_CONFIG:
		return "config";
	case KUDU_INST_ARM:
		return "ARM";
	case KUDU_INST_KUDU:
		return "Kudu";
	case KUDU_INST_SEEN:
		return "seen";
	}
	return "?";
}

int kudu_instances_add(struct kudu_instances *l, const char *id)
{
	char **grown;

	if (!kudu_instance_id_is_valid(id))
		return -EINVAL;
	for (size_t i = 0; i < l->n; i++)
		if (!strcmp(l->ids[i], id))
			return 0;
	grown = realloc(l->ids, (l->n + 1) * sizeof(*grown));
	if (!grown)
		return -ENOMEM;
	l->ids = grown;
	if (!(l->ids[l->n] = strdup(id)))
		return -ENOMEM;
	l->n++;
	return 0;
}

/* ARM names an instance "<id>"; tolerate "<site>/<id>" as child resources
 * are sometimes named. */
static int add_arm_name(struct kudu_instances *l, const char *name)
{
	const char *slash = strrchr(name, '/');

	return kudu_instances_add(l, slash ? slash + 1 : name);
}

int kudu_instances_parse_arm(struct kudu_instances *l, const char *body, size_t len,
			     char **next_link, char *err, size_t errlen)
{
	json_error_t jerr;
	json_t *root = json_loadb(body, len, 0, &jerr);
	json_t *value, *next, *it;
	size_t i;
	int rc = 0;

	*next_link = NULL;
	value = json_is_object(root) ? json_object_get(root, "value") : NULL;
	if (!json_is_array(value)) {
		snprintf(err, errlen, "ARM instance list: %s",
			 root ? "no \"value\" array" : jerr.text);
		json_decref(root);
		return -EIO;
	}
	json_array_foreach(value, i, it) {
		const char *name = json_string_value(json_object_get(it, "name"));

		if (!name)
			continue;
		rc = add_arm_name(l, name);
		if (rc == -EINVAL) {
			kudu_log(
				LOG_WARNING,
				"ARM listed an instance named '%.140s', not an instance id: skipped",
				name);
			rc = 0;
		}
		if (rc < 0)
			break;
	}
	next = json_object_get(root, "nextLink");
	if (rc == 0 && json_is_string(next) && json_string_length(next) > 0 &&
	    !(*next_link = strdup(json_string_value(next))))
		rc = -ENOMEM;
	json_decref(root);
	return rc;
}

int kudu_instances_parse_all(struct kudu_instances *l, const char *body, size_t len, char *err,
			     size_t errlen)
{
	json_error_t jerr;
	json_t *root = json_loadb(body, len, 0, &jerr);
	json_t *it;
	size_t i;
	int rc = 0;

	if (!json_is_array(root)) {
		snprintf(err, errlen, "/instance/all: %s", root ? "not a JSON array" : jerr.text);
		json_decref(root);
		return -EIO;
	}
	json_array_foreach(root, i, it) {
		const char *id = json_string_value(it);

		if (!id) /* tolerate [{"name": id}] too */
			id = json_string_value(json_object_get(it, "name"));
		if (!id)
			continue;
		rc = kudu_instances_add(l, id);
		if (rc == -EINVAL) {
			kudu_log(LOG_WARNING,
				 "/instance/all listed '%.140s', not an instance id: skipped", id);
			rc = 0;
		}
		if (rc < 0)
			break;
	}
	json_decref(root);
	return rc;
}

int kudu_url_arm_instances(const struct kudu_app *app, char *buf, size_t len)
{
	int n;

	if (!app->arm_resource || !app->arm_endpoint)
		return -EINVAL;
	n = snprintf(buf, len, "%s%s/instances?api-version=" KUDU_ARM_API_VERSION,
		     app->arm_endpoint, app->arm_resource);
	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int kudu_url_instance_all(const struct kudu_app *app, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s/instance/all", app->url);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

/* One JSON GET; on error err gets the client's message. */
static int get_json(struct kudu_client *c, struct kudu_app *app, const char *url, bool arm,
		    char **body, size_t *len, long *status, char *err, size_t errlen)
{
	struct kudu_request req;
	int rc;

	kudu_request_init(&req, app, KUDU_REQ_JSON);
	req.arm = arm;
	snprintf(req.url, sizeof(req.url), "%s", url);
	rc = kudu_client_fetch(c, &req);
	*status = req.status;
	if (rc < 0) {
		snprintf(err, errlen, "%s", req.errmsg);
		kudu_request_reset(&req);
		return rc;
	}
	*body = req.body;
	*len = req.body_len;
	return 0;
}

static int discover_arm(struct kudu_client *c, struct kudu_app *app, struct kudu_instances *out,
			char *err, size_t errlen)
{
	char url[1024], msg[KUDU_ERRLEN];
	int rc = kudu_url_arm_instances(app, url, sizeof(url));

	if (rc < 0) {
		snprintf(err, errlen, "arm_resource too long for a URL");
		return -EIO;
	}
	/* the token is fetched here, off the transfer thread; a failing command
	 * is a refused credential */
	rc = kudu_app_refresh_arm_token(app, 0, msg, sizeof(msg));
	if (rc < 0) {
		snprintf(err, errlen, "%s", msg);
		return -EACCES;
	}
	for (int page = 0; page < ARM_MAX_PAGES; page++) {
		char *body = NULL, *next = NULL;
		size_t len = 0;
		long status = 0;

		rc = get_json(c, app, url, true, &body, &len, &status, msg, sizeof(msg));
		if (rc < 0) {
			snprintf(err, errlen, "%s", msg);
			return rc;
		}
		rc = kudu_instances_parse_arm(out, body, len, &next, msg, sizeof(msg));
		free(body);
		if (rc < 0) {
			snprintf(err, errlen, "%s", msg);
			return rc;
		}
		if (!next)
			return 0;
		/* a nextLink on another host than arm_endpoint is refused by the
		 * client (EPERM), before the token goes anywhere */
		if (strlen(next) >= sizeof(url)) {
			snprintf(err, errlen, "ARM's nextLink is longer than %zu bytes",
				 sizeof(url) - 1);
			free(next);
			return -EIO;
		}
		snprintf(url, sizeof(url), "%s", next);
		free(next);
	}
	snprintf(err, errlen, "ARM instance list: more than %d pages", ARM_MAX_PAGES);
	return -EIO;
}

static int discover_kudu(struct kudu_client *c, struct kudu_app *app, struct kudu_instances *out,
			 char *err, size_t errlen)
{
	char url[1024], *body = NULL;
	size_t len = 0;
	long status = 0;
	int rc = kudu_url_instance_all(app, url, sizeof(url));

	if (rc == 0)
		rc = get_json(c, app, url, false, &body, &len, &status, err, errlen);
	if (rc == 0) {
		rc = kudu_instances_parse_all(out, body, len, err, errlen);
		free(body);
	}
	return rc;
}

static void append_why(struct kudu_instances *out, const char *what, const char *msg)
{
	size_t n = strlen(out->why);

	snprintf(out->why + n, sizeof(out->why) - n, "%s%s: %s", n ? "; " : "", what, msg);
}

int kudu_instances_discover(struct kudu_client *c, struct kudu_app *app, struct kudu_instances *out,
			    char *err, size_t errlen)
{
	char msg[KUDU_ERRLEN];
	char **seen = NULL;
	size_t nseen;
	int rc;

	memset(out, 0, sizeof(*out));
	if (app->ninstances) {
		out->source = KUDU_INST_CONFIG;
		for (size_t i = 0; i < app->ninstances; i++)
			if ((rc = kudu_instances_add(out, app->instances[i])) < 0)
				goto fail;
		return 0;
	}
	if (app->arm_resource) {
		out->source = KUDU_INST_ARM;
		rc = discover_arm(c, app, out, msg, sizeof(msg));
		if (rc == 0)
			return 0;
		if (rc == -EACCES) {
			snprintf(err, errlen, "ARM instance list of %s: %s", app->name, msg);
			goto fail;
		}
		kudu_instances_free(out);
		append_why(out, "ARM", msg);
	}
	out->source = KUDU_INST_KUDU;
	rc = discover_kudu(c, app, out, msg, sizeof(msg));
	if (rc == 0)
		return 0;
	if (rc == -EACCES) {
		snprintf(err, errlen, "%s/instance/all: %s", app->url, msg);
		goto fail;
	}
	kudu_instances_free(out);
	append_why(out, "Kudu /instance/all", msg);

	/* Last resort: the instances the front end has named. Nothing named yet
	 * (a fresh mount): one list request lets it name the one it picks. */
	out->source = KUDU_INST_SEEN;
	nseen = kudu_client_seen_instances(c, app, &seen);
	if (nseen == 0) {
		char url[1024], *body = NULL;
		size_t len = 0;
		long status = 0;

		kudu_url_list(app, url, sizeof(url));
		if (get_json(c, app, url, false, &body, &len, &status, msg, sizeof(msg)) == 0)
			free(body);
		nseen = kudu_client_seen_instances(c, app, &seen);
	}
	rc = 0;
	for (size_t i = 0; i < nseen; i++) {
		if (rc == 0)
			rc = kudu_instances_add(out, seen[i]);
		free(seen[i]);
	}
	free(seen);
	if (rc < 0)
		goto fail;
	return 0;
fail:
	kudu_instances_free(out);
	return rc;
}
