/*
 * libFuzzer harness: FUSE path parsing (fs_path_parse_names, the part of
 * fs_parse_path that needs no network) against a config with a few apps.
 * Checks the invariants fs/ops.c relies on, not just the absence of crashes.
 */
#include "fs/fs.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct kudu_config *fuzz_cfg(void)
{
	static struct kudu_config cfg;
	static int done;
	static const char *names[] = { "demo", "my app", "a", "site", "x.y-z" };

	if (!done) {
		char err[KUDU_ERRLEN];

		kudu_config_init(&cfg);
		for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
			if (kudu_config_add_app(&cfg, names[i], err, sizeof(err)) < 0)
				abort();
		done = 1;
	}
	return &cfg;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kudu_config *cfg = fuzz_cfg();
	struct fs_node node;
	const char *dir;
	size_t dirlen;
	char *path = malloc(size + 1);
	int rc;

	if (!path)
		return 0;
	memcpy(path, data, size);
	path[size] = '\0'; /* FUSE paths are C strings */
	rc = fs_path_parse_names(cfg, path, &node, &dir, &dirlen);
	if (rc != 0 && rc != -ENOENT)
		abort();
	if (rc == 0) {
		if (node.kind > FS_DUMP)
			abort();
		if (node.kind != FS_ROOT && node.kind != FS_META_DIR && node.kind != FS_STATUS &&
		    node.app >= cfg->napps)
			abort();
		if ((node.kind == FS_PROC_DIR || node.kind == FS_DETAILS || node.kind == FS_DUMP) !=
		    !!dir)
			abort(); /* a process path, and only one, names its directory */
		if (dir) {
			/* inside the path, one non-empty segment without '/' */
			if (dir < path || dir + dirlen > path + strlen(path) || !dirlen ||
			    memchr(dir, '/', dirlen))
				abort();
		}
		if (node.kind == FS_DUMP && !kudu_dump_kind_of(node.dump))
			abort();
	}
	free(path);
	return 0;
}
