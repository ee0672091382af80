/*
 * Unit tests for a capture's spool sink (cache/spool.c): the body's bytes
 * land in the file whatever the pieces curl hands over; reads give them
 * back, from any offset, out of the buffer at the download's edge; a failed
 * download's buffered bytes are never served; a sequential reader drops the
 * page cache a step behind it and a reader that jumps drops nothing; a
 * write error comes back as -errno.
 *
 * The page cache is looked at with mincore(2) on a mapping of the file. The
 * file is fsync()ed before the reads, so that every page is clean and the
 * drop (POSIX_FADV_DONTNEED frees clean pages only) is deterministic; tmpfs
 * never drops, so the file lives in the working directory if tmpdir is one.
 */
#include "cache/cache_priv.h"
#include "check.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <linux/magic.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/vfs.h>

#define TOTAL (5 * SPOOL_STEP + 12345)
#define READ_SIZE (128u << 10)

static unsigned char byte_at(uint64_t off)
{
	return (unsigned char)((off * 2654435761u) >> 13);
}

/* Pages of [from, to) of fd in the page cache. */
static size_t resident_pages(int fd, uint64_t from, uint64_t to)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE), n = (size_t)(to - from + page - 1) / page,
	       count = 0;
	unsigned char *vec = malloc(n);
	void *map = mmap(NULL, (size_t)(to - from), PROT_READ, MAP_SHARED, fd, (off_t)from);

	if (!vec || map == MAP_FAILED || mincore(map, (size_t)(to - from), vec) < 0) {
		free(vec);
		if (map != MAP_FAILED)
			munmap(map, (size_t)(to - from));
		return SIZE_MAX;
	}
	for (size_t i = 0; i < n; i++)
		count += vec[i] & 1;
	munmap(map, (size_t)(to - from));
	free(vec);
	return count;
}

static void spool_path(char *path, size_t len)
{
	struct statfs sf;
	const char *dir = tmpdir;

	/* tmpfs keeps every page: nothing to see dropped (the working
	 * directory is the source tree, on disk) */
	if (statfs(tmpdir, &sf) == 0 && sf.f_type == TMPFS_MAGIC)
		dir = ".";
	CHECK(statfs(dir, &sf) == 0 && sf.f_type != TMPFS_MAGIC, "%s: want a disk filesystem", dir);
	snprintf(path, len, "%s/spool-test-%d.dmp", dir, (int)getpid());
}

/* A new spool file (flags: O_RDWR, or O_RDONLY for a write error) and a
 * sink open on it; its fd, or -1 (a failed check). */
static int sink_on_new_file(struct spool_sink *s, char *path, size_t len, int flags)
{
	int fd;

	spool_path(path, len);
	fd = open(path, flags | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	CHECK(fd >= 0, "open %s: %s", path, strerror(errno));
	if (fd < 0)
		return -1;
	cache_spool_sink_init(s);
	cache_spool_sink_open(s, fd);
	return fd;
}

static void test_append_and_read(void)
{
	struct spool_sink s;
	char path[512];
	unsigned char *piece = malloc(100003), *back = malloc(READ_SIZE);
	uint64_t off = 0;
	int fd, bad = 0;
	size_t page = (size_t)sysconf(_SC_PAGESIZE);

	CHECK(piece && back, "malloc");
	if (!piece || !back || (fd = sink_on_new_file(&s, path, sizeof(path), O_RDWR)) < 0) {
		free(piece);
		free(back);
		return;
	}
	/* odd pieces, as curl hands them over, across every step boundary */
	while (off < TOTAL) {
		size_t n = TOTAL - off < 100003 ? (size_t)(TOTAL - off) : 100003;

		for (size_t i = 0; i < n; i++)
			piece[i] = byte_at(off + i);
		if (cache_spool_append(&s, (const char *)piece, n) < 0)
			break;
		off += n;
	}
	CHECK(off == TOTAL && s.flushed + s.fill == TOTAL && s.fill == TOTAL % SPOOL_CHUNK,
	      "appended %llu of %u: %llu in the file, %zu in the buffer", (unsigned long long)off,
	      (unsigned)TOTAL, (unsigned long long)s.flushed, s.fill);
	CHECK(s.kicked == 5ull * SPOOL_STEP, "writeback started for every whole step: %llu",
	      (unsigned long long)s.kicked);

	/* at the download's edge: out of the buffer, and across into the file */
	ssize_t n = cache_spool_read(&s, fd, (char *)back, 1000, TOTAL - 1000);
	CHECK(n == 1000 && back[0] == byte_at(TOTAL - 1000) && back[999] == byte_at(TOTAL - 1),
	      "the last bytes, still in the buffer: %zd", n);
	n = cache_spool_read(&s, fd, (char *)back, 1000, (off_t)s.flushed - 500);
	CHECK(n == 1000 && back[0] == byte_at(s.flushed - 500) &&
		      back[999] == byte_at(s.flushed + 499),
	      "a read across the file and the buffer: %zd", n);
	CHECK(cache_spool_finish(&s) == 0 && s.flushed == TOTAL && !s.buf,
	      "finish: all in the file, the buffer gone");
	CHECK(fsync(fd) == 0, "fsync");

	/* a reader that jumps in the middle reads right and drops nothing */
	n = cache_spool_read(&s, fd, (char *)back, 1000, 3 * SPOOL_STEP + 7);
	CHECK(n == 1000 && back[0] == byte_at(3 * SPOOL_STEP + 7) &&
		      back[999] == byte_at(3 * SPOOL_STEP + 1006),
	      "read at an odd offset: %zd", n);
	CHECK(s.dropped == 0 && resident_pages(fd, 0, 2 * SPOOL_STEP) == 2 * SPOOL_STEP / page,
	      "a jump past two steps drops nothing: dropped %llu", (unsigned long long)s.dropped);

	/* a sequential reader from 0 to the end: every byte right */
	for (off = 0; off < TOTAL; off += (uint64_t)n) {
		n = cache_spool_read(&s, fd, (char *)back, READ_SIZE, (off_t)off);
		if (n <= 0)
			break;
		for (ssize_t i = 0; i < n; i++)
			bad += back[i] != byte_at(off + (uint64_t)i);
	}
	CHECK(off == TOTAL && bad == 0, "read back %llu bytes, %d wrong", (unsigned long long)off,
	      bad);
	CHECK(cache_spool_read(&s, fd, (char *)back, READ_SIZE, TOTAL) == 0, "EOF after the end");

	/* behind it, two steps from the end: dropped; the last step: kept */
	uint64_t dropped_to = (TOTAL / SPOOL_STEP - 1) * (uint64_t)SPOOL_STEP;
	size_t left = resident_pages(fd, 0, dropped_to);
	size_t kept = resident_pages(fd, dropped_to + SPOOL_STEP, TOTAL);

	CHECK(s.dropped == dropped_to, "dropped below %llu, want %llu",
	      (unsigned long long)s.dropped, (unsigned long long)dropped_to);
	CHECK(left == 0, "%zu pages of the %llu bytes behind the reader still cached", left,
	      (unsigned long long)dropped_to);
	CHECK(kept == (TOTAL - dropped_to - SPOOL_STEP + page - 1) / page,
	      "the last bytes read stay cached: %zu pages", kept);

	/* a reader coming back reads the file (from disk) again */
	n = cache_spool_read(&s, fd, (char *)back, READ_SIZE, 0);
	CHECK(n == READ_SIZE && back[0] == byte_at(0) &&
		      back[READ_SIZE - 1] == byte_at(READ_SIZE - 1),
	      "read again from 0: %zd", n);
	cache_spool_sink_destroy(&s);
	close(fd);
	unlink(path);
	free(piece);
	free(back);
}

/* A download that fails takes its buffer away: a reader of those bytes
 * gets a short read (capture.c makes it the capture's error), never bytes
 * that were not there. */
static void test_failed_download(void)
{
	struct spool_sink s;
	char path[512], back[16];
	int fd;

	if ((fd = sink_on_new_file(&s, path, sizeof(path), O_RDWR)) < 0)
		return;
	CHECK(cache_spool_append(&s, "0123456789", 10) == 0, "append");
	CHECK(cache_spool_read(&s, fd, back, 4, 3) == 4 && !memcmp(back, "3456", 4),
	      "read from the buffer");
	cache_spool_sink_close(&s);
	CHECK(cache_spool_read(&s, fd, back, 4, 3) == 0, "after the failure: nothing");
	cache_spool_sink_destroy(&s);
	close(fd);
	unlink(path);
}

/* The transfer thread appending while a reader reads at the download's
 * edge, as cp does: the bytes a reader may ask for (published after the
 * append, as on_body publishes cap->bytes under cap_lock) are always the
 * right ones, across every flush of the buffer. ASan (make asan) would see
 * a copy out of a freed buffer. */
struct race {
	struct spool_sink s;
	int fd;
	_Atomic uint64_t published;
	_Atomic bool done;
};

static void *race_appender(void *arg)
{
	struct race *r = arg;
	char piece[16384];
	uint64_t off = 0;

	while (off < 3 * SPOOL_STEP) {
		size_t n = 16384 - (off % 7) * 1000; /* uneven, like curl's */

		for (size_t i = 0; i < n; i++)
			piece[i] = (char)byte_at(off + i);
		if (cache_spool_append(&r->s, piece, n) < 0)
			break;
		off += n;
		atomic_store(&r->published, off);
	}
	cache_spool_finish(&r->s);
	atomic_store(&r->done, true);
	return NULL;
}

static void test_reader_at_the_edge(void)
{
	struct race r = { .fd = -1 };
	char path[512];
	unsigned char back[READ_SIZE];
	uint64_t at = 0;
	int bad = 0, reads = 0, from_buffer = 0;
	pthread_t t;

	if ((r.fd = sink_on_new_file(&r.s, path, sizeof(path), O_RDWR)) < 0)
		return;
	atomic_init(&r.published, 0);
	atomic_init(&r.done, false);
	if (pthread_create(&t, NULL, race_appender, &r) != 0) {
		CHECK(0, "pthread_create");
		return;
	}
	for (;;) {
		uint64_t have = atomic_load(&r.published);
		bool done = atomic_load(&r.done);
		size_t want = have - at < READ_SIZE ? (size_t)(have - at) : READ_SIZE;
		ssize_t n;

		if (want == 0) {
			if (done)
				break;
			sched_yield();
			continue;
		}
		pthread_mutex_lock(&r.s.lock);
		from_buffer += at >= r.s.flushed;
		pthread_mutex_unlock(&r.s.lock);
		n = cache_spool_read(&r.s, r.fd, (char *)back, want, (off_t)at);
		reads++;
		if (n != (ssize_t)want) {
			bad++;
			break;
		}
		for (ssize_t i = 0; i < n; i++)
			bad += back[i] != byte_at(at + (uint64_t)i);
		at += (uint64_t)n;
	}
	pthread_join(t, NULL);
	CHECK(at == atomic_load(&r.published) && at >= 3 * SPOOL_STEP && bad == 0,
	      "read %llu bytes at the edge in %d reads, %d wrong", (unsigned long long)at, reads,
	      bad);
	CHECK(from_buffer > 0, "some reads were served from the buffer (%d)", from_buffer);
	cache_spool_sink_destroy(&r.s);
	close(r.fd);
	unlink(path);
}

static void test_write_error(void)
{
	struct spool_sink s;
	char path[512];
	int fd;

	if ((fd = sink_on_new_file(&s, path, sizeof(path), O_RDONLY)) < 0)
		return;
	CHECK(cache_spool_append(&s, "dump", 4) == 0, "buffered");
	CHECK(cache_spool_finish(&s) == -EBADF, "a write error is its -errno");
	cache_spool_sink_destroy(&s);
	close(fd);
	unlink(path);
}

int main(void)
{
	if (check_begin("spool") < 0)
		return 2;
	test_append_and_read();
	test_failed_download();
	test_reader_at_the_edge();
	test_write_error();
	return check_end();
}
