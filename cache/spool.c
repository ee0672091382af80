/*
 * Spool directories and files: cache_dir (created private, checked before
 * the daemon detaches), this daemon's spool-<pid> inside it, the spools of
 * daemons that are gone, and one file per capture; and each capture's
 * sink, the way its body goes into that file and back out to readers
 * (the block above struct spool_sink in cache_priv.h says why so).
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

/* ---- a capture's spool sink (struct spool_sink in cache_priv.h) ---- */

void cache_spool_sink_init(struct spool_sink *s)
{
	memset(s, 0, sizeof(*s));
	pthread_mutex_init(&s->lock, NULL);
	s->fd = -1;
}

/* At a start, under cap_lock: no reader reads before the first body byte,
 * so the lock is not needed (and is never taken under cap_lock). */
void cache_spool_sink_open(struct spool_sink *s, int fd)
{
	s->fd = fd;
	s->fill = 0;
	s->flushed = s->kicked = s->read_next = s->dropped = 0;
}

void cache_spool_sink_close(struct spool_sink *s)
{
	pthread_mutex_lock(&s->lock);
	free(s->buf); /* a reader copying out of it holds the lock */
	s->buf = NULL;
	pthread_mutex_unlock(&s->lock);
	s->fill = 0;
}

void cache_spool_sink_destroy(struct spool_sink *s)
{
	free(s->buf);
	pthread_mutex_destroy(&s->lock);
}

/* The buffer to the file; readers copy out of it meanwhile (both only read
 * it), and read the file once flushed has moved. */
static int flush_buffer(struct spool_sink *s)
{
	const char *p = s->buf;
	size_t n = s->fill;
	uint64_t off = s->flushed;

	while (n > 0) {
		ssize_t w = pwrite(s->fd, p, n, (off_t)off);

		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		if (w == 0)
			return -EIO;
		p += w;
		n -= (size_t)w;
		off += (uint64_t)w;
	}
	pthread_mutex_lock(&s->lock);
	s->flushed = off;
	pthread_mutex_unlock(&s->lock);
	s->fill = 0;
	if (off - s->kicked >= SPOOL_STEP) {
		uint64_t to = off / SPOOL_STEP * SPOOL_STEP;

		/* start writing the finished steps out now (asynchronous), so
		 * that they are clean, and so can be dropped, once the reader
		 * is past them; an error here is only a lost hint */
		(void)sync_file_range(s->fd, (off_t)s->kicked, (off_t)(to - s->kicked),
				      SYNC_FILE_RANGE_WRITE);
		s->kicked = to;
	}
	return 0;
}

int cache_spool_append(struct spool_sink *s, const char *data, size_t n)
{
	int rc;

	while (n > 0) {
		size_t k;

		if (!s->buf) {
			/* no lock: no reader looks at buf before bytes are in it */
			if (!(s->buf = malloc(SPOOL_CHUNK)))
				return -ENOMEM;
		}
		k = SPOOL_CHUNK - s->fill < n ? SPOOL_CHUNK - s->fill : n;
		memcpy(s->buf + s->fill, data, k);
		s->fill += k;
		data += k;
		n -= k;
		if (s->fill == SPOOL_CHUNK && (rc = flush_buffer(s)) < 0)
			return rc;
	}
	return 0;
}

int cache_spool_finish(struct spool_sink *s)
{
	int rc = s->fill ? flush_buffer(s) : 0;

	cache_spool_sink_close(s);
	return rc;
}

/* A sequential reader (this read starts where the last one ended) drops
 * the page cache a step behind it. */
static void drop_behind(struct spool_sink *s, int fd, off_t off, uint64_t end)
{
	uint64_t from = 0, to = 0;

	pthread_mutex_lock(&s->lock);
	if ((uint64_t)off == s->read_next && end >= s->dropped + 2 * SPOOL_STEP) {
		from = s->dropped;
		to = s->dropped = end / SPOOL_STEP * SPOOL_STEP - SPOOL_STEP;
	}
	s->read_next = end;
	pthread_mutex_unlock(&s->lock);
	if (to > from)
		(void)posix_fadvise(fd, (off_t)from, (off_t)(to - from), POSIX_FADV_DONTNEED);
}

ssize_t cache_spool_read(struct spool_sink *s, int fd, char *buf, size_t size, off_t off)
{
	size_t done = 0;

	while (done < size) {
		uint64_t at = (uint64_t)off + done, flushed;
		size_t want = size - done;
		ssize_t n;

		pthread_mutex_lock(&s->lock);
		flushed = s->flushed;
		if (at >= flushed) {
			/* at the download's edge: the bytes are in the buffer,
			 * unless the download failed and took it away */
			bool have = s->buf && at - flushed + want <= SPOOL_CHUNK;

			if (have) {
				memcpy(buf + done, s->buf + (at - flushed), want);
				done += want;
			}
			pthread_mutex_unlock(&s->lock);
			break;
		}
		pthread_mutex_unlock(&s->lock);
		if (want > flushed - at)
			want = (size_t)(flushed - at);
		n = pread(fd, buf + done, want, (off_t)at);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		done += (size_t)n;
	}
	drop_behind(s, fd, off, (uint64_t)off + done);
	return (ssize_t)done;
}
