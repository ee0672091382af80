/*
 * What every C unit test shares: CHECK, a private temporary directory and its
 * files, and the report that tests/test_unit.py reads ("N passed, M failed",
 * the last line; exit status non-zero on any failure).
 *
 * Header-only: each tests/unit/test_*.c is one program that includes it once,
 * so its state is plain file-scope statics and its functions static inline
 * (a test that does not use one gets no unused-function warning).
 *
 *   int main(void)
 *   {
 *       if (check_begin("tag") < 0)   // tmpdir = /tmp/kudufs-unit-tag-XXXXXX
 *           return 2;
 *       test_something();             // CHECK(cond, "printf format", ...)
 *       return check_end();           // removes tmpdir, prints the report
 *   }
 */
#ifndef KUDUFS_TESTS_UNIT_CHECK_H
#define KUDUFS_TESTS_UNIT_CHECK_H

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static int passed, failed;
/* the test's private directory ("" without one: check_begin(NULL)) */
static char tmpdir[256];

/* One check: counted, and on failure one line naming the place, the condition
 * and what the test says about it (printf arguments). */
#define CHECK(cond, ...)                                                       \
	do {                                                                   \
		if (cond) {                                                    \
			passed++;                                              \
		} else {                                                       \
			failed++;                                              \
			printf("FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond); \
			printf(__VA_ARGS__);                                   \
			printf("\n");                                          \
		}                                                              \
	} while (0)

/* tmpdir/name. The result lives until 8 more calls (so a few can be the
 * arguments of one call). */
static inline char *path_in_tmp(const char *name)
{
	static char path[8][512];
	static int slot;
	char *p = path[slot++ % 8];

	snprintf(p, 512, "%s/%s", tmpdir, name);
	return p;
}

/* Writes content to tmpdir/name with mode; returns its path (path_in_tmp's). */
static inline char *write_file(const char *name, const char *content, mode_t mode)
{
	char *p = path_in_tmp(name);
	FILE *f = fopen(p, "w");

	if (!f) {
		CHECK(0, "cannot create %s", p);
		return p;
	}
	fputs(content, f);
	fclose(f);
	chmod(p, mode);
	return p;
}

/* Lines in the file at path (0 if it cannot be read): how often a test's
 * command (token_command, say) ran, when it appends a line each time. */
static inline int count_lines(const char *path)
{
	FILE *f = fopen(path, "r");
	int n = 0, ch;

	if (!f)
		return 0;
	while ((ch = fgetc(f)) != EOF)
		n += ch == '\n';
	fclose(f);
	return n;
}

/* Line-buffered stdout (a crash still shows the FAIL lines before it), and
 * with a tag, tmpdir = /tmp/kudufs-unit-<tag>-XXXXXX. 0, or -1 said on stderr. */
static inline int check_begin(const char *tag)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (!tag)
		return 0;
	snprintf(tmpdir, sizeof(tmpdir), "/tmp/kudufs-unit-%s-XXXXXX", tag);
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		tmpdir[0] = '\0';
		return -1;
	}
	return 0;
}

static inline int check_remove_entry(const char *path, const struct stat *st, int type,
				     struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if ((type == FTW_DP ? rmdir(path) : unlink(path)) < 0)
		printf("warning: could not remove %s\n", path);
	return 0;
}

/* Removes tmpdir and all in it (symlinks, FIFOs and sockets the tests made
 * are removed, never followed), prints the report; main's exit status. */
static inline int check_end(void)
{
	if (tmpdir[0])
		nftw(tmpdir, check_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	printf("%d passed, %d failed\n", passed, failed);
	return failed ? 1 : 0;
}

#endif
