/*
 * Spool directories and files: cache_dir (created private, checked before
 * the daemon detaches), this daemon's spool-<pid> inside it, the spools of
 * daemons that are gone, and one file per capture.
 *
 * Dumps hold process memory: every directory is 0700 and every file 0600,
 * opened O_EXCL so nothing planted in the spool is ever written through.
 */
#include "cache/cache_priv.h"
#include "kudu/log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int mkdir_private(const char *path, char *err, size_t errlen)
{
	struct stat st;

	if (mkdir(path, 0700) < 0 && errno != EEXIST) {
		snprintf(err, errlen, "cache_dir %s: %s", path, strerror(errno));
		return -errno;
	}
	if (stat(path, &st) < 0 || !S_ISDIR(st.st_mode)) {
		snprintf(err, errlen, "cache_dir %s: not a directory", path);
		return -ENOTDIR;
	}
	/* dumps hold process memory: nobody else may look */
	if ((st.st_mode & 077) && chmod(path, 0700) < 0) {
		snprintf(err, errlen, "cache_dir %s: cannot make it private (chmod 700): %s", path,
			 strerror(errno));
		return -EPERM;
	}
	return 0;
}

static int mkdir_parents(const char *path, char *err, size_t errlen)
{
	char *p = strdup(path);
	int rc = 0;

	if (!p)
		return -ENOMEM;
	for (char *s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, 0700) < 0 && errno != EEXIST) {
			snprintf(err, errlen, "cache_dir %s: %s", p, strerror(errno));
			rc = -errno;
		}
		*s = '/';
		if (rc)
			break;
	}
	free(p);
	return rc ? rc : mkdir_private(path, err, errlen);
}

static void remove_tree(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		char *p;

		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		if (asprintf(&p, "%s/%s", dir, de->d_name) >= 0) {
			unlink(p);
			free(p);
		}
	}
	closedir(d);
	rmdir(dir);
}

/* Spool dirs are spool-<pid>: remove those whose daemon is gone. */
static void remove_stale_spools(const char *cache_dir)
{
	DIR *d = opendir(cache_dir);
	struct dirent *de;

	if (!d)
		return;
	while ((de = readdir(d))) {
		char *end, *p;
		long pid;

		if (strncmp(de->d_name, "spool-", 6))
			continue;
		pid = strtol(de->d_name + 6, &end, 10);
		if (*end || pid <= 0)
			continue;
		if (pid != getpid() && kill((pid_t)pid, 0) == 0)
			continue; /* another live kudufs shares this cache_dir */
		if (pid != getpid() && errno != ESRCH)
			continue;
		if (asprintf(&p, "%s/%s", cache_dir, de->d_name) >= 0) {
			kudu_log(LOG_NOTICE, "removing stale spool %s", p);
			remove_tree(p);
			free(p);
		}
	}
	closedir(d);
}

int cache_prepare_dir(struct kudu_config *cfg, char *err, size_t errlen)
{
	if (!cfg->cache_dir) {
		const char *xdg = getenv("XDG_CACHE_HOME");
		const char *home = getenv("HOME");

		if (xdg && *xdg) {
			if (asprintf(&cfg->cache_dir, "%s/kudufs", xdg) < 0)
				return -ENOMEM;
		} else if (asprintf(&cfg->cache_dir, "%s/.cache/kudufs", home ? home : "/tmp") <
			   0) {
			return -ENOMEM;
		}
	}
	return mkdir_parents(cfg->cache_dir, err, errlen);
}

int cache_spool_init(struct cache *c, char *err, size_t errlen)
{
	struct kudu_config *cfg = c->cfg;
	int rc = cache_prepare_dir(cfg, err, errlen);

	if (rc < 0)
		return rc;
	remove_stale_spools(cfg->cache_dir);
	if (asprintf(&c->spool_dir, "%s/spool-%d", cfg->cache_dir, (int)getpid()) < 0) {
		c->spool_dir = NULL;
		return -ENOMEM;
	}
	return mkdir_private(c->spool_dir, err, errlen);
}

int cache_spool_create_locked(struct cache *c, const struct capture *cap, char **path)
{
	int fd;

	if (asprintf(path, "%s/%d-%d-%lu.dmp", c->spool_dir, cap->pid, (int)cap->type, ++c->seq) <
	    0) {
		*path = NULL;
		return -ENOMEM;
	}
	fd = open(*path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0) {
		int e = errno;

		free(*path);
		*path = NULL;
		return -e;
	}
	return fd;
}

void cache_spool_remove_all(struct cache *c)
{
	if (c->spool_dir)
		remove_tree(c->spool_dir);
}
