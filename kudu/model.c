/*
 * Kudu's data model: the one place that knows the shapes of Kudu's process
 * list and details and the site/SCM rule (see model.h).
 */
#include "kudu/model.h"

#include <errno.h>
#include <jansson.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* ARM wraps each resource's fields in "properties". */
static json_t *model_fields(json_t *item)
{
	json_t *props = json_object_get(item, "properties");

	return json_is_object(props) ? props : item;
}

/* Kudu says id; dotnet-monitor's items (KuduLite proxies them) say pid; ARM
 * identifier. *platform: what the key says of the server. */
static bool model_item_pid(json_t *it, int *pid, enum kudu_platform *platform)
{
	static const char *const keys[] = { "id", "pid", "identifier" };
	static const enum kudu_platform says[] = { KUDU_PLATFORM_WINDOWS, KUDU_PLATFORM_LINUX,
						   KUDU_PLATFORM_AUTO };

	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		json_t *v = json_object_get(it, keys[k]);

		if (!json_is_integer(v))
			continue;
		if (json_integer_value(v) < 0 || json_integer_value(v) > INT32_MAX)
			return false;
		*pid = (int)json_integer_value(v);
		*platform = says[k];
		return true;
	}
	return false;
}

static char *model_machine(json_t *obj)
{
	json_t *m = json_object_get(obj, "machineName");

	return json_is_string(m) ? strdup(json_string_value(m)) : NULL;
}

static int model_cmp_key(const void *a, const void *b)
{
	int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;

	return (x > y) - (x < y);
}

/* One entry per pid, the first in the server's order: a second one could
 * never be told apart in the tree. Keys pid << 32 | index sort by pid, then
 * by position, so every key after the first of its pid is a duplicate. */
static int model_drop_duplicates(struct kudu_proc_list *l)
{
	int64_t *keys = malloc((l->nprocs ? l->nprocs : 1) * sizeof(*keys));
	size_t o = 0;

	if (!keys)
		return -ENOMEM;
	for (size_t i = 0; i < l->nprocs; i++)
		keys[i] = ((int64_t)l->procs[i].pid << 32) | (int64_t)i;
	qsort(keys, l->nprocs, sizeof(*keys), model_cmp_key);
	for (size_t i = 1; i < l->nprocs; i++) {
		if ((keys[i] >> 32) != (keys[i - 1] >> 32))
			continue;
		struct kudu_proc *p = &l->procs[keys[i] & 0xffffffff];

		free(p->name);
		free(p->machine);
		p->name = p->machine = NULL; /* marks it dropped */
		l->duplicates++;
	}
	free(keys);
	for (size_t i = 0; i < l->nprocs; i++)
		if (l->procs[i].name)
			l->procs[o++] = l->procs[i];
	l->nprocs = o;
	return 0;
}

void kudu_model_list_free(struct kudu_proc_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->nprocs; i++) {
		free(l->procs[i].name);
		free(l->procs[i].machine);
	}
	free(l->procs);
	memset(l, 0, sizeof(*l));
}

int kudu_model_parse_list(const char *body, size_t len, struct kudu_proc_list *out, char *err,
			  size_t errlen)
{
	json_error_t jerr;
	json_t *root = json_loadb(body, len, 0, &jerr);
	json_t *arr = root;
	struct kudu_proc_list l = { 0 };
	size_t n;
	bool seen[3] = { false, false, false }; /* by enum kudu_platform */

	memset(out, 0, sizeof(*out));
	if (json_is_object(root))
		arr = json_object_get(root, "value"); /* ARM envelope */
	if (!arr || !json_is_array(arr)) {
		snprintf(err, errlen, "malformed process list from server%s%s", root ? "" : ": ",
			 root ? "" : jerr.text);
		json_decref(root);
		return -EIO;
	}
	n = json_array_size(arr);
	l.procs = calloc(n ? n : 1, sizeof(*l.procs));
	if (!l.procs) {
		json_decref(root);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	for (size_t i = 0; i < n; i++) {
		json_t *it = model_fields(json_array_get(arr, i));
		json_t *name = json_object_get(it, "name");
		struct kudu_proc *p = &l.procs[l.nprocs];
		enum kudu_platform says = KUDU_PLATFORM_AUTO;
		int pid;

		if (!json_is_object(it) || !model_item_pid(it, &pid, &says) ||
		    !json_is_string(name)) {
			l.skipped++;
			continue;
		}
		seen[says] = true;
		p->pid = pid;
		p->name = strdup(json_string_value(name));
		p->machine = model_machine(it);
		if (!p->name) {
			free(p->machine);
			json_decref(root);
			kudu_model_list_free(&l);
			snprintf(err, errlen, "out of memory");
			return -ENOMEM;
		}
		l.nprocs++;
	}
	json_decref(root);
	if (seen[KUDU_PLATFORM_WINDOWS] != seen[KUDU_PLATFORM_LINUX])
		l.platform = seen[KUDU_PLATFORM_LINUX] ? KUDU_PLATFORM_LINUX
						       : KUDU_PLATFORM_WINDOWS;
	if (model_drop_duplicates(&l) < 0) {
		kudu_model_list_free(&l);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	*out = l;
	return 0;
}

void kudu_model_details_free(struct kudu_details *d)
{
	if (!d)
		return;
	free(d->json);
	free(d->machine);
	memset(d, 0, sizeof(*d));
}

/* faithful: the server's whole document, its key order kept, '\n'-ended */
static int model_pretty(json_t *root, char **out, size_t *outlen, char *err, size_t errlen)
{
	char *text = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	char *grown;
	size_t tlen;

	if (!text || !(grown = realloc(text, (tlen = strlen(text)) + 2))) {
		free(text);
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	grown[tlen++] = '\n';
	grown[tlen] = '\0';
	*out = grown;
	*outlen = tlen;
	return 0;
}

int kudu_model_pretty_json(const char *body, size_t len, char **out, size_t *outlen, char *err,
			   size_t errlen)
{
	json_error_t jerr;
	json_t *root = json_loadb(body, len, 0, &jerr);
	int rc;

	*out = NULL;
	*outlen = 0;
	if (!root) {
		snprintf(err, errlen, "malformed JSON from server: %s", jerr.text);
		return -EIO;
	}
	rc = model_pretty(root, out, outlen, err, errlen);
	json_decref(root);
	return rc;
}

int kudu_model_parse_details(const char *body, size_t len, struct kudu_details *out, char *err,
			     size_t errlen)
{
	json_error_t jerr;
	json_t *root = json_loadb(body, len, 0, &jerr);
	json_t *obj;
	int rc;

	memset(out, 0, sizeof(*out));
	if (!root || !json_is_object(root)) {
		snprintf(err, errlen, "malformed process details from server%s%s", root ? "" : ": ",
			 root ? "" : jerr.text);
		json_decref(root);
		return -EIO;
	}
	obj = model_fields(root);
	rc = model_pretty(root, &out->json, &out->len, err, errlen);
	if (rc < 0) {
		json_decref(root);
		return rc;
	}
	out->is_scm_site = json_is_true(json_object_get(obj, "is_scm_site"));
	out->machine = model_machine(obj);
	json_decref(root);
	return 0;
}

/* In order of preference: the first name with a listed process holds the roles. */
static const char *const model_role_names[] = { "w3wp", "dotnet" };

const char *kudu_model_role_holders(const struct kudu_proc *procs, size_t nprocs)
{
	for (size_t k = 0; k < sizeof(model_role_names) / sizeof(model_role_names[0]); k++)
		for (size_t i = 0; i < nprocs; i++)
			if (procs[i].name && !strcasecmp(procs[i].name, model_role_names[k]))
				return model_role_names[k];
	return NULL;
}

enum kudu_role kudu_model_role_of(const char *holders, const char *name, bool is_scm_site)
{
	if (!holders || !name || strcasecmp(name, holders))
		return KUDU_ROLE_NONE;
	return is_scm_site ? KUDU_ROLE_SCM : KUDU_ROLE_SITE;
}

const char *kudu_model_role_name(enum kudu_role role)
{
	switch (role) {
	case KUDU_ROLE_SITE:
		return "site";
	case KUDU_ROLE_SCM:
		return "scm";
	case KUDU_ROLE_NONE:
		break;
	}
	return "";
}
