/*
 * libFuzzer harness: the config parser (libinih + kudu/config.c's handler,
 * line counting, duplicate-section detection) on arbitrary file contents.
 * The bytes go into a memfd named by /proc/self/fd/N, so kudu_config_load
 * runs exactly as for a file: the regular-file, mode and size checks too.
 * Credentials are never resolved: a fuzzed password_command must not run.
 */
#include "kudu/kudu.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kudu_config cfg;
	char err[KUDU_ERRLEN];
	char path[64];
	int fd = memfd_create("kudufs-fuzz-config", MFD_CLOEXEC);

	if (fd < 0)
		abort();
	if (size && write(fd, data, size) != (ssize_t)size)
		abort();
	if (fchmod(fd, 0600) < 0)
		abort();
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	kudu_config_init(&cfg);
	err[0] = '\0';
	if (kudu_config_load(&cfg, path, true, err, sizeof(err)) == 0) {
		/* what the rest of kudufs relies on after a successful load */
		for (size_t i = 0; i < cfg.napps; i++) {
			const struct kudu_app *a = cfg.apps[i];

			if (!kudu_name_is_valid(a->name))
				abort();
			if (a->url && strncmp(a->url, "http://", 7) &&
			    strncmp(a->url, "https://", 8))
				abort();
			for (size_t j = 0; j < i; j++)
				if (!strcmp(cfg.apps[j]->name, a->name))
					abort(); /* one app per name */
		}
		if (cfg.max_conns < 1 || cfg.max_conns > 64)
			abort();
	} else if (!err[0] || !memchr(err, '\0', sizeof(err))) {
		abort(); /* every failure says why */
	}
	kudu_config_free(&cfg);
	close(fd);
	return 0;
}
