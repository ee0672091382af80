/*
 * kudu_fetch — drive kudu/ directly, for the client tests (no FUSE):
 *
 *   kudu_fetch [-o key=value]... URL list
 *   kudu_fetch [-o key=value]... URL details PID
 *   kudu_fetch [-o key=value]... URL dump PID TYPE OUTFILE
 *
 * Credentials come from the environment (KUDUFS_USER/KUDUFS_PASSWORD) or
 * ~/.netrc, as for kudufs. Prints "OK status=... bytes=... filename=..." or
 * "ERR errno=NAME status=... msg=...", exits 0 or 1.
 */
#include "kudu/kudu.h"

#include <curl/curl.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *errno_name(int e)
{
	/* clang-format off */
	switch (e) {
	case 0: return "0";
	case EACCES: return "EACCES";
	case ENOENT: return "ENOENT";
	case EIO: return "EIO";
	case ETIMEDOUT: return "ETIMEDOUT";
	case ENOSPC: return "ENOSPC";
	case EINTR: return "EINTR";
	case ECANCELED: return "ECANCELED";
	case EFBIG: return "EFBIG";
	default: return "OTHER";
	}
	/* clang-format on */
}

/* A whole decimal int, or -1 (no PID or dump type is negative). */
static int arg_int(const char *s)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end || v < 0 || v > INT_MAX)
		return -1;
	return (int)v;
}

/* The dump's output file: req->arg is kudu_client_fetch's own. */
static FILE *out;

/* the dump body to the output file, as the cache's sink does to a spool */
static int write_body(struct kudu_request *req, const char *data, size_t n)
{
	(void)req;
	return fwrite(data, 1, n, out) == n ? 0 : EIO;
}

int main(int argc, char **argv)
{
	struct kudu_config cfg;
	struct kudu_client *client;
	struct kudu_request req;
	char err[KUDU_ERRLEN];
	int rc, i, pid;
	double t0;

	kudu_config_init(&cfg);
	while (getopt(argc, argv, "o:") != -1) {
		char *eq = strchr(optarg, '=');
		if (!eq)
			return 2;
		*eq = '\0';
		if (kudu_config_set(&cfg, optarg, eq + 1, err, sizeof(err)) < 0) {
			fprintf(stderr, "%s\n", err);
			return 2;
		}
	}
	if (argc - optind < 2)
		return 2;
	{
		char spec[1100];
		snprintf(spec, sizeof(spec), "app=%s", argv[optind]);
		if (kudu_config_add_app(&cfg, spec, err, sizeof(err)) < 0 ||
		    kudu_config_resolve_credentials(&cfg, err, sizeof(err)) < 0) {
			fprintf(stderr, "%s\n", err);
			return 2;
		}
	}
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (kudu_client_new(&client, &cfg) < 0)
		return 2;
	i = optind + 1;
	if (!strcmp(argv[i], "list")) {
		kudu_request_init(&req, cfg.apps[0], KUDU_REQ_JSON);
		kudu_url_list(cfg.apps[0], req.url, sizeof(req.url));
	} else if (!strcmp(argv[i], "details") && i + 1 < argc &&
		   (pid = arg_int(argv[i + 1])) >= 0) {
		kudu_request_init(&req, cfg.apps[0], KUDU_REQ_JSON);
		kudu_url_details(cfg.apps[0], pid, req.url, sizeof(req.url));
	} else if (!strcmp(argv[i], "dump") && i + 3 < argc && (pid = arg_int(argv[i + 1])) >= 0 &&
		   arg_int(argv[i + 2]) >= 0) {
		kudu_request_init(&req, cfg.apps[0], KUDU_REQ_DUMP);
		kudu_url_dump(cfg.apps[0], pid, (enum kudu_dump_type)arg_int(argv[i + 2]), req.url,
			      sizeof(req.url));
		if (!(out = fopen(argv[i + 3], "w")))
			return 2;
		req.on_body = write_body;
	} else {
		return 2;
	}
	t0 = kudu_now();
	rc = kudu_client_fetch(client, &req);
	if (rc == 0)
		printf("OK status=%ld bytes=%llu attempts=%d secs=%.2f filename=%s\n", req.status,
		       (unsigned long long)req.bytes, req.attempts, kudu_now() - t0, req.filename);
	else
		printf("ERR errno=%s status=%ld attempts=%d secs=%.2f msg=%s\n", errno_name(-rc),
		       req.status, req.attempts, kudu_now() - t0, req.errmsg);
	if (req.kind == KUDU_REQ_JSON && rc == 0)
		fprintf(stderr, "%s", req.body);
	if (out && fclose(out) != 0 && rc == 0)
		rc = -EIO;
	kudu_request_reset(&req);
	kudu_client_free(client);
	kudu_config_free(&cfg);
	curl_global_cleanup();
	return rc == 0 ? 0 : 1;
}
