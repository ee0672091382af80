/*
 * libFuzzer harness: process-list parsing (kudu_model_parse_list) and the
 * site/SCM role rule over what it returns. Checks what the tree relies on:
 * one entry per pid, pids in 0..INT_MAX, a name on every entry, and -EIO
 * with a message for anything refused.
 */
#include "kudu/model.h"
#include "kudu/kudu.h"

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct kudu_proc_list l;
	char err[KUDU_ERRLEN] = "";
	int rc;

	memset(&l, 0, sizeof(l));
	rc = kudu_model_parse_list((const char *)data, size, &l, err, sizeof(err));
	if (rc < 0) {
		if (!err[0] || !memchr(err, '\0', sizeof(err)))
			abort();
		return 0;
	}
	if (rc != 0)
		abort();
	for (size_t i = 0; i < l.nprocs; i++) {
		if (l.procs[i].pid < 0 || !l.procs[i].name)
			abort();
		for (size_t j = 0; j < i; j++)
			if (l.procs[j].pid == l.procs[i].pid)
				abort();
	}
	{
		const char *holders = kudu_model_role_holders(l.procs, l.nprocs);

		for (size_t i = 0; i < l.nprocs; i++) {
			enum kudu_role r = kudu_model_role_of(holders, l.procs[i].name, i & 1);

			if (r != KUDU_ROLE_NONE && r != KUDU_ROLE_SITE && r != KUDU_ROLE_SCM)
				abort();
			(void)strlen(kudu_model_role_name(r));
		}
	}
	kudu_model_list_free(&l);
	return 0;
}
