/*
 * Which Kudu serves an app (Windows Kudu or KuduLite), and the dump kinds
 * each has: the one place that decides an app's platform.
 *
 * Detection (platform = auto): the first evidence wins and is kept for the
 * mount's life, so a tree never changes shape under a reader. Evidence is
 * the shape of a process list's items (Kudu's ProcessInfo with id/href, or
 * dotnet-monitor's with pid/uid: kudu_model_parse_list) and KuduLite's
 * "Not supported on Linux" (kudu_status_says_no_monitor, seen by the
 * client on any route).
 */
#include "kudu.h"
#include "kudu/log.h"

#include <errno.h>
#include <string.h>

/* clang-format off */
const struct kudu_dump_kind kudu_dump_kinds[] = {
	/* Windows: the UI's "Mini Dump" (1, WithDataSegs) and "Full Dump" (2,
	 * WithFullMemory); Linux: dotnet-monitor's dump types */
	{ KUDU_DUMP_MINI, 1, "minidump.dmp", "mini", "Mini" },
	{ KUDU_DUMP_FULL, 2, "fulldump.dmp", "full", "Full" },
	{ KUDU_DUMP_WITHHEAP, 0, "withheap.dmp", "withheap", "WithHeap" },
	{ KUDU_DUMP_TRIAGE, 0, "triage.dmp", "triage", "Triage" },
};
/* clang-format on */
const size_t kudu_dump_nkinds = sizeof(kudu_dump_kinds) / sizeof(kudu_dump_kinds[0]);

const struct kudu_dump_kind *kudu_dump_kind_of(enum kudu_dump_type type)
{
	for (size_t i = 0; i < kudu_dump_nkinds; i++)
		if (kudu_dump_kinds[i].type == type)
			return &kudu_dump_kinds[i];
	return NULL;
}

bool kudu_dump_available(enum kudu_platform p, enum kudu_dump_type type)
{
	const struct kudu_dump_kind *k = kudu_dump_kind_of(type);

	if (!k)
		return false;
	return p == KUDU_PLATFORM_LINUX ? k->linux_type != NULL : k->windows_dump_type != 0;
}

bool kudu_platform_has_threads(enum kudu_platform p)
{
	/* KuduLite answers threads and modules with 400 "Not supported on Linux" */
	return p != KUDU_PLATFORM_LINUX;
}

const char *kudu_platform_name(enum kudu_platform p)
{
	switch (p) {
	case KUDU_PLATFORM_WINDOWS:
		return "windows";
	case KUDU_PLATFORM_LINUX:
		return "linux";
	case KUDU_PLATFORM_AUTO:
		break;
	}
	return "auto";
}

int kudu_platform_parse(const char *s, enum kudu_platform *out)
{
	static const enum kudu_platform all[] = { KUDU_PLATFORM_AUTO, KUDU_PLATFORM_WINDOWS,
						  KUDU_PLATFORM_LINUX };

	for (size_t i = 0; i < sizeof(all) / sizeof(all[0]); i++)
		if (!strcmp(s, kudu_platform_name(all[i]))) {
			*out = all[i];
			return 0;
		}
	return -EINVAL;
}

enum kudu_platform kudu_app_platform(const struct kudu_app *app)
{
	if (app->platform != KUDU_PLATFORM_AUTO)
		return app->platform;
	return (enum kudu_platform)atomic_load(&app->platform_seen);
}

void kudu_app_note_platform(struct kudu_app *app, enum kudu_platform seen, const char *why)
{
	int none = KUDU_PLATFORM_AUTO;

	if (seen == KUDU_PLATFORM_AUTO)
		return;
	/* first evidence only: later answers never reshape the tree */
	if (!atomic_compare_exchange_strong(&app->platform_seen, &none, (int)seen))
		return;
	if (app->platform == KUDU_PLATFORM_AUTO)
		kudu_log(LOG_DEBUG, "%s: %s app (%s)", app->name,
			 seen == KUDU_PLATFORM_LINUX ? "Linux (KuduLite)" : "Windows", why);
	else if (app->platform != seen)
		kudu_log(LOG_WARNING,
			 "%s: configured platform = %s, but Kudu looks like %s (%s); keeping %s",
			 app->name, kudu_platform_name(app->platform), kudu_platform_name(seen),
			 why, kudu_platform_name(app->platform));
}
