/*
 * kudu/model — Kudu's data model: what a process list and a process's
 * details say, and which processes are the site's and Kudu's (SCM) own.
 *
 * Pure functions over response bodies: no HTTP, no FUSE, no locks. Every
 * other module (cache/, fs/, --check) asks this one rather than reading
 * Kudu's JSON or naming "w3wp" itself. Functions return 0 or a negative
 * errno; error text goes into err and quotes nothing from a request.
 */
#ifndef KUDUFS_KUDU_MODEL_H
#define KUDUFS_KUDU_MODEL_H

#include "kudu/kudu.h"

#include <stdbool.h>
#include <stddef.h>

/* One listed process: only what the tree needs. */
struct kudu_proc {
	int pid;
	char *name;    /* as the server sent it (not sanitized) */
	char *machine; /* machineName, NULL if the item has none */
};

struct kudu_proc_list {
	struct kudu_proc *procs; /* in the server's order, one per pid */
	size_t nprocs;
	size_t skipped;    /* items without a usable id (0..INT_MAX) or name */
	size_t duplicates; /* items whose pid an earlier item had: the first is kept */
	/* What the items' shape says (kudu_app_note_platform's evidence):
	 * Kudu's ProcessInfo (id) is Windows, dotnet-monitor's (pid, uid) is
	 * KuduLite's; AUTO when empty or mixed. */
	enum kudu_platform platform;
};

/*
 * Parse /api/processes. Accepts a JSON array, or ARM's envelope
 * {"value": [...]}; an item's fields may sit in its "properties" object
 * (ARM). The pid is the first integer of "id" (Kudu), "pid" (dotnet-monitor,
 * which KuduLite proxies), "identifier" (ARM). Malformed JSON or no array:
 * -EIO. On success *out owns everything; free it with kudu_model_list_free.
 */
int kudu_model_parse_list(const char *body, size_t len, struct kudu_proc_list *out, char *err,
			  size_t errlen);
void kudu_model_list_free(struct kudu_proc_list *l);

/* One process's details, as details.json shows them. */
struct kudu_details {
	char *json; /* the server's object, pretty-printed, keys in its order, '\n'-ended */
	size_t len;
	bool is_scm_site; /* Kudu's own process; absent means false */
	char *machine;    /* machineName, NULL if none */
};

/* Parse /api/processes/{pid}: an object (ARM: fields in "properties").
 * Anything else is -EIO. Free with kudu_model_details_free. */
int kudu_model_parse_details(const char *body, size_t len, struct kudu_details *out, char *err,
			     size_t errlen);
void kudu_model_details_free(struct kudu_details *d);

/* Any JSON document (threads, modules: arrays), pretty-printed as
 * details.json is: the server's keys in its order, '\n'-ended. -EIO if it
 * is not an array or object. *out is malloc'd. */
int kudu_model_pretty_json(const char *body, size_t len, char **out, size_t *outlen, char *err,
			   size_t errlen);

/* ---- the site and SCM roles ---- */

enum kudu_role { KUDU_ROLE_NONE, KUDU_ROLE_SITE, KUDU_ROLE_SCM };

/*
 * The rule. On Windows both the site and Kudu run in a w3wp, told apart by
 * is_scm_site; apps without w3wp (Linux, Functions) run dotnet. So the role
 * holders of a list are its w3wp processes when it has any (never falling
 * back to dotnet then), else its dotnet processes, else none.
 *
 * kudu_model_role_holders: the name role holders have in this list, NULL
 * if no process can hold a role (so no details need fetching).
 * kudu_model_role_of: the role a process holds by its details, given the
 * list's holder name; KUDU_ROLE_NONE for every other process.
 * When two processes hold one role, the first in list order is the one
 * named (the <app>/site and <app>/scm links, the role xattr).
 */
const char *kudu_model_role_holders(const struct kudu_proc *procs, size_t nprocs);
enum kudu_role kudu_model_role_of(const char *holders, const char *name, bool is_scm_site);
/* "site", "scm", "" */
const char *kudu_model_role_name(enum kudu_role role);

#endif
