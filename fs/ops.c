/*
 * FUSE operations: a read-only tree over cache/.
 *
 *   /.kudufs/status.json
 *   /<app>/processes.json, /<app>/site, /<app>/scm
 *   /<app>/<name>-<pid>/{details.json,minidump.dmp,fulldump.dmp}
 *       Windows apps also threads.json, modules.json; Linux apps (KuduLite)
 *       withheap.dmp, triage.dmp instead
 *   /<app>/instances/<id>/...   the same view of one instance
 *
 * JSON files are opened with direct_io and served from a snapshot taken at
 * open, so a refresh between stat and read can never truncate them. A dump
 * file is direct_io while its capture downloads (size 0 until complete);
 * opened once the capture is complete, it is a plain file of its real size
 * served through the kernel's page cache (see op_open_dump).
 */
#include "fs/fs.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define XATTR_PREFIX "user.kudufs."

static struct kudufs *fs_self(void)
{
	return fuse_get_context()->private_data;
}

/* What an open file or directory handle holds. */
struct fs_handle {
	enum fs_node_kind kind;
	struct fs_node node;
	char *data; /* JSON snapshot (owned, or from blob/list) */
	size_t len;
	struct cache_blob *blob;
	struct cache_list *list;
	bool list_unread; /* list taken by opendir, not yet listed: readdir at 0 uses it */
	_Atomic(struct capture *) cap; /* dump: taken on first read; reads may race */
	struct fs_handle *prev, *next; /* k->handles, under k->handles_lock */
};

/* The node a request is about. With nullpath_ok, operations on an open
 * handle come without a path: a read waiting minutes for a dump must not
 * hold libfuse's path lock, or an rm of that file would wait as long. */
static int node_of(struct kudufs *k, const char *path, struct fuse_file_info *fi, struct fs_node *n)
{
	if (!path) {
		const struct fs_handle *h = fi ? (const struct fs_handle *)(uintptr_t)fi->fh : NULL;

		if (!h)
			return -EBADF;
		*n = h->node;
		return 0;
	}
	return fs_parse_path(k, path, n);
}

static int find_app(const struct kudu_config *cfg, const char *name, size_t len, size_t *app)
{
	for (size_t i = 0; i < cfg->napps; i++) {
		const char *n = cfg->apps[i]->name;
		if (strlen(n) == len && !memcmp(n, name, len)) {
			*app = i;
			return 0;
		}
	}
	return -ENOENT;
}

/* Is inst (from <app>/instances/<inst>) a listed instance? A discovery
 * error (EACCES: ARM refused the token) is the answer for every path below. */
static int check_instance(struct kudufs *k, size_t app, const char *inst)
{
	struct cache_instances *l;
	int rc = cache_get_instances(k->cache, app, false, &l);

	if (rc < 0)
		return rc;
	rc = cache_instances_has(l, inst, strlen(inst)) ? 0 : -ENOENT;
	cache_instances_put(l);
	return rc;
}

/* Does <view>/<dir> name a listed, not-vanished process? */
static int check_proc_dir(struct kudufs *k, size_t app, const char *inst, const char *dir,
			  size_t len, int *pid)
{
	struct cache_list *l;
	ssize_t i;
	char name[512];
	int rc;

	if (len >= sizeof(name))
		return -ENOENT;
	memcpy(name, dir, len);
	name[len] = '\0';
	rc = cache_get_list(k->cache, app, inst, &l);
	if (rc < 0)
		return rc; /* a network error is never ENOENT */
	i = cache_list_find_dir(l, name);
	rc = i >= 0 ? 0 : -ENOENT;
	if (i >= 0) {
		*pid = l->procs[i].pid;
		if (cache_proc_gone(k->cache, app, inst, *pid))
			rc = -ENOENT;
	}
	cache_list_put(l);
	return rc;
}

/* Is this file of a process directory there on the app's platform (the
 * platform is known once its list came: the list says it)? Linux: four
 * dumps, no threads or modules; Windows (and not yet known): two dumps,
 * threads and modules. */
static bool fs_node_exists_on(enum kudu_platform p, const struct fs_node *n)
{
	if (n->kind == FS_DUMP)
		return kudu_dump_available(p, n->dump);
	if (n->kind == FS_DETAILS && n->part != CACHE_PART_DETAILS)
		return kudu_platform_has_threads(p);
	return true;
}

int fs_path_parse_names(const struct kudu_config *cfg, const char *path, struct fs_node *node,
			const char **dir, size_t *dirlen)
{
	const char *seg[6];
	size_t len[6];
	int n = 0, b = 1; /* b: the first segment below the view's root */

	memset(node, 0, sizeof(*node));
	*dir = NULL;
	*dirlen = 0;
	for (const char *p = path; *p;) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		if (n == 6)
			return -ENOENT;
		seg[n] = p;
		while (*p && *p != '/')
			p++;
		len[n] = (size_t)(p - seg[n]);
		n++;
	}
#define SEG_IS(i, s) (len[i] == strlen(s) && !memcmp(seg[i], s, len[i]))
	if (n == 0) {
		node->kind = FS_ROOT;
		return 0;
	}
	if (SEG_IS(0, ".kudufs")) {
		if (n == 1)
			node->kind = FS_META_DIR;
		else if (n == 2 && SEG_IS(1, "status.json"))
			node->kind = FS_STATUS;
		else
			return -ENOENT;
		return 0;
	}
	if (find_app(cfg, seg[0], len[0], &node->app) < 0)
		return -ENOENT;
	/* <app>/instances/<id>/ is a view of its own: the rest is parsed below
	 * it; whether <id> is listed is fs_parse_path's to ask */
	if (n >= 2 && SEG_IS(1, "instances")) {
		if (n == 2) {
			node->kind = FS_INSTANCES;
			return 0;
		}
		if (len[2] >= sizeof(node->inst))
			return -ENOENT;
		memcpy(node->inst, seg[2], len[2]);
		node->inst[len[2]] = '\0';
		if (!kudu_instance_id_is_valid(node->inst))
			return -ENOENT;
		b = 3;
	}
	if (n == b) {
		node->kind = FS_APP;
		return 0;
	}
	if (n == b + 1 && SEG_IS(b, "processes.json")) {
		node->kind = FS_PROCESSES;
		return 0;
	}
	if (n == b + 1 && (SEG_IS(b, "site") || SEG_IS(b, "scm"))) {
		node->kind = FS_ROLE_LINK;
		node->role = SEG_IS(b, "scm") ? KUDU_ROLE_SCM : KUDU_ROLE_SITE;
		return 0;
	}
	if (n == b + 1) {
		node->kind = FS_PROC_DIR;
	} else if (n == b + 2 && SEG_IS(b + 1, "details.json")) {
		node->kind = FS_DETAILS, node->part = CACHE_PART_DETAILS;
	} else if (n == b + 2 && SEG_IS(b + 1, "threads.json")) {
		node->kind = FS_DETAILS, node->part = CACHE_PART_THREADS;
	} else if (n == b + 2 && SEG_IS(b + 1, "modules.json")) {
		node->kind = FS_DETAILS, node->part = CACHE_PART_MODULES;
	} else if (n == b + 2) {
		/* which dumps the app's platform has is fs_parse_path's to ask */
		for (size_t i = 0; i < kudu_dump_nkinds && node->kind != FS_DUMP; i++)
			if (SEG_IS(b + 1, kudu_dump_kinds[i].file))
				node->kind = FS_DUMP, node->dump = kudu_dump_kinds[i].type;
		if (node->kind != FS_DUMP)
			return -ENOENT;
	} else {
		return -ENOENT;
	}
	*dir = seg[b];
	*dirlen = len[b];
	return 0;
#undef SEG_IS
}

int fs_parse_path(struct kudufs *k, const char *path, struct fs_node *node)
{
	const char *dir;
	size_t dirlen;
	int rc = fs_path_parse_names(k->cfg, path, node, &dir, &dirlen);

	if (rc == 0 && node->inst[0])
		rc = check_instance(k, node->app, node->inst);
	if (rc < 0 || !dir)
		return rc;
	rc = check_proc_dir(k, node->app, node->inst, dir, dirlen, &node->pid);
	if (rc == 0 && !fs_node_exists_on(kudu_app_platform(k->cfg->apps[node->app]), node))
		rc = -ENOENT;
	return rc;
}

static void fill_stat(const struct kudufs *k, struct stat *st, mode_t mode, off_t size)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = mode;
	st->st_nlink = S_ISDIR(mode) ? 2 : 1;
	st->st_uid = k->uid;
	st->st_gid = k->gid;
	st->st_size = size;
	/* cp and cat read st_blksize at a time (at least 128 KiB). Measured on
	 * 2 vCPUs: a 1 MiB buffer made `cp` of a downloading dump 2.5x slower
	 * than 128-256 KiB (12 s against 4.5 s for 2 GiB), the reader copying
	 * out of a buffer the daemon's thread had just filled on the other CPU
	 * and beyond its L2 (README, Performance). */
	st->st_blksize = 128 << 10;
	st->st_blocks = (size + 511) / 512;
	st->st_atime = st->st_mtime = st->st_ctime = k->mounted_at;
}

static int op_getattr(const char *path, struct stat *st, struct fuse_file_info *fi)
{
	struct kudufs *k = fs_self();
	struct fs_node n;
	int rc = node_of(k, path, fi, &n);

	if (rc < 0)
		return rc;
	switch (n.kind) {
	case FS_ROOT:
	case FS_META_DIR:
	case FS_APP:
	case FS_INSTANCES:
	case FS_PROC_DIR:
		fill_stat(k, st, S_IFDIR | 0555, 0);
		return 0;
	case FS_STATUS: {
		char *s = cache_status_json(k->cache);
		fill_stat(k, st, S_IFREG | 0444, s ? (off_t)strlen(s) : 0);
		free(s);
		return 0;
	}
	case FS_PROCESSES: {
		struct cache_list *l;
		rc = cache_get_list(k->cache, n.app, n.inst, &l);
		if (rc < 0)
			return rc;
		fill_stat(k, st, S_IFREG | 0444, (off_t)l->raw_len);
		cache_list_put(l);
		return 0;
	}
	case FS_ROLE_LINK: {
		char target[512];
		rc = cache_find_role(k->cache, n.app, n.inst, n.role, target, sizeof(target));
		if (rc < 0)
			return rc;
		fill_stat(k, st, S_IFLNK | 0777, (off_t)strlen(target));
		return 0;
	}
	case FS_DETAILS: {
		struct cache_blob *b;
		size_t size = 0;

		if (n.part != CACHE_PART_DETAILS) {
			/* threads, modules: Kudu walks the process to answer, so a
			 * stat (ls -l) fetches nothing; 0 until read (direct_io) */
			if (cache_peek_part(k->cache, n.app, n.inst, n.pid, n.part, &size) < 0)
				size = 0;
			fill_stat(k, st, S_IFREG | 0444, (off_t)size);
			return 0;
		}
		rc = cache_get_details(k->cache, n.app, n.inst, n.pid, &b);
		if (rc < 0)
			return rc;
		fill_stat(k, st, S_IFREG | 0444, (off_t)b->len);
		cache_blob_put(b);
		return 0;
	}
	case FS_DUMP: {
		uint64_t size = 0;
		if (cache_capture_size(k->cache, n.app, n.inst, n.pid, n.dump, &size) < 0)
			size = 0; /* unknown until a capture completes */
		fill_stat(k, st, S_IFREG | 0400, (off_t)size);
		return 0;
	}
	}
	return -ENOENT;
}

static int op_readlink(const char *path, char *buf, size_t size)
{
	struct kudufs *k = fs_self();
	struct fs_node n;
	int rc = fs_parse_path(k, path, &n);

	if (rc < 0)
		return rc;
	if (n.kind != FS_ROLE_LINK)
		return -EINVAL;
	return cache_find_role(k->cache, n.app, n.inst, n.role, buf, size);
}

/* Directory entries in libfuse's offset mode (an entry's offset is its
 * index + 1): only in this mode does libfuse pass readdirplus attributes on,
 * so `ls -l` of 1000 processes costs no LOOKUP each. */
struct dir_emit {
	void *buf;
	fuse_fill_dir_t fill;
	off_t off;  /* resume here: entries below were delivered */
	off_t next; /* index of the next entry */
	bool plus;
	bool full;
};

static void dir_add(struct dir_emit *e, const char *name, const struct stat *st)
{
	off_t idx = e->next++;

	if (e->full || idx < e->off)
		return;
	if (e->fill(e->buf, name, e->plus ? st : NULL, idx + 1,
		    e->plus && st ? FUSE_FILL_DIR_PLUS : 0))
		e->full = true;
}

static int op_readdir(const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
		      struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
	struct kudufs *k = fs_self();
	struct fs_node n;
	int rc = node_of(k, path, fi, &n);
	struct dir_emit e = { buf, fill, off, 0, (flags & FUSE_READDIR_PLUS) != 0, false };
	struct stat dir_st, st;

	if (rc < 0)
		return rc;
	fill_stat(k, &dir_st, S_IFDIR | 0555, 0);
	dir_add(&e, ".", NULL);
	dir_add(&e, "..", NULL);
	switch (n.kind) {
	case FS_ROOT:
		dir_add(&e, ".kudufs", &dir_st);
		for (size_t i = 0; i < k->cfg->napps; i++)
			dir_add(&e, k->cfg->apps[i]->name, &dir_st);
		return 0;
	case FS_META_DIR:
		dir_add(&e, "status.json", NULL);
		return 0;
	case FS_APP: {
		struct cache_list *l;

		/* One snapshot per listing: libfuse calls readdir again for the
		 * rest of a big directory, and those calls must see the same list
		 * (and cost no request, whatever list_ttl says). */
		struct fs_handle *h = fi ? (struct fs_handle *)(uintptr_t)fi->fh : NULL;

		if (h && (off > 0 || h->list_unread) && h->list) {
			h->list_unread = false;
			l = cache_list_get(h->list);
		} else {
			rc = cache_get_list(k->cache, n.app, n.inst, &l);
			if (rc < 0)
				return rc;
			if (h) {
				cache_list_put(h->list);
				h->list = cache_list_get(l);
			}
		}
		/* So a grep over every details.json right after is served from
		 * cache. Details are Kudu's slow call (it runs KuduHandles.exe per
		 * process): an app bigger than prefetch_max is fetched on demand. */
		if (off == 0 && l->nprocs <= k->cfg->prefetch_max)
			cache_prefetch_details(k->cache, n.app, n.inst, l);
		fill_stat(k, &st, S_IFREG | 0444, (off_t)l->raw_len);
		dir_add(&e, "processes.json", &st);
		for (size_t i = 0; i < l->nprocs; i++)
			if (!cache_proc_gone(k->cache, n.app, n.inst, l->procs[i].pid))
				dir_add(&e, l->dirnames[i], &dir_st);
		/* found through details: left to a lookup */
		if (l->role_holders) {
			dir_add(&e, "scm", NULL);
			dir_add(&e, "site", NULL);
		}
		/* Listed so that `ls` finds it, in the app-level view only (an
		 * instance's view has no instances/ of its own). Listing it asks
		 * nothing: discovery runs when instances/ itself is listed. */
		if (!n.inst[0])
			dir_add(&e, "instances", &dir_st);
		cache_list_put(l);
		return 0;
	}
	case FS_INSTANCES: {
		struct cache_instances *l;

		/* `ls instances` asks discovery again (ARM, /instance/all): an
		 * operator looking for a new instance should not wait list_ttl */
		rc = cache_get_instances(k->cache, n.app, off == 0, &l);
		if (rc < 0)
			return rc;
		/* so listing each instance after, or a grep over every instance's
		 * processes.json finds the lists fetched, in parallel */
		if (off == 0)
			cache_prefetch_lists(k->cache, n.app, l);
		for (size_t i = 0; i < l->n; i++)
			dir_add(&e, l->ids[i], &dir_st);
		cache_instances_put(l);
		return 0;
	}
	case FS_PROC_DIR: {
		enum kudu_platform p = kudu_app_platform(k->cfg->apps[n.app]);

		/* names only: nothing here is fetched by a listing */
		dir_add(&e, "details.json", NULL);
		for (size_t i = 0; i < kudu_dump_nkinds; i++)
			if (kudu_dump_available(p, kudu_dump_kinds[i].type))
				dir_add(&e, kudu_dump_kinds[i].file, NULL);
		if (kudu_platform_has_threads(p)) {
			dir_add(&e, "modules.json", NULL);
			dir_add(&e, "threads.json", NULL);
		}
		return 0;
	}
	default:
		return -ENOTDIR;
	}
}

/* A waiting reader gives up on Ctrl-C, and on unmount/SIGTERM: libfuse
 * joins its workers at exit, so none may sleep until a dump finishes. */
int fs_reader_should_stop(void)
{
	struct fuse_context *ctx = fuse_get_context();

	return fuse_interrupted() ||
	       (ctx && ctx->fuse && fuse_session_exited(fuse_get_session(ctx->fuse)));
}

static void handle_register(struct kudufs *k, struct fs_handle *h, struct fuse_file_info *fi)
{
	pthread_mutex_lock(&k->handles_lock);
	h->next = k->handles;
	if (h->next)
		h->next->prev = h;
	k->handles = h;
	pthread_mutex_unlock(&k->handles_lock);
	fi->fh = (uint64_t)(uintptr_t)h;
}

/* Which of a capture's two files (the app-level view's, the instance view's)
 * has had its kernel cache invalidated for it: cache_capture_mark bits. */
static unsigned view_mark(const struct fs_node *n)
{
	return n->inst[0] ? 2u : 1u;
}

/* A dump file opened after its capture is complete: no direct_io, so the
 * page cache serves repeated reads, readers share one copy and mmap works.
 * The handle holds that capture (reads never start another one, whatever
 * rm, dump_ttl or eviction do to the table meanwhile). The first such open
 * of each capture on each path invalidates the kernel's attributes (it may
 * still hold size 0 from the download, or an older capture's size) and
 * pages (an older capture's, after dump_ttl or eviction) of that file;
 * after that keep_cache. A capture still downloading keeps direct_io.
 * Single-threaded (-s) mounts stay direct_io: the invalidation may wait
 * for a page that a queued READ of another reader holds locked, and the
 * one thread that would answer it is this one. */
static void op_open_dump(struct kudufs *k, const char *path, struct fs_handle *h,
			 struct fuse_file_info *fi)
{
	const struct fs_node *n = &h->node;
	struct capture *cap;
	uint64_t size;
	unsigned mark = view_mark(n);

	if (k->single_thread || cache_capture_acquire_complete(k->cache, n->app, n->inst, n->pid,
							       n->dump, &cap, &size) < 0)
		return;
	if (!(cache_capture_marks(k->cache, cap) & mark)) {
		/* -ENOENT: the kernel has no inode for it yet, nothing to drop */
		fuse_invalidate_path(fuse_get_context()->fuse, path);
		cache_capture_mark(k->cache, cap, mark);
	}
	atomic_store(&h->cap, cap);
	fi->direct_io = 0;
	fi->keep_cache = 1;
}

static int op_open(const char *path, struct fuse_file_info *fi)
{
	struct kudufs *k = fs_self();
	struct fs_handle *h;
	struct fs_node n;
	int rc;

	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
		return -EROFS;
	rc = fs_parse_path(k, path, &n);
	if (rc < 0)
		return rc;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->kind = n.kind;
	h->node = n;
	fi->direct_io = 1;
	switch (n.kind) {
	case FS_STATUS:
		h->data = cache_status_json(k->cache);
		h->len = h->data ? strlen(h->data) : 0;
		break;
	case FS_PROCESSES:
		rc = cache_get_list(k->cache, n.app, n.inst, &h->list);
		if (rc == 0) {
			h->data = h->list->raw;
			h->len = h->list->raw_len;
		}
		break;
	case FS_DETAILS:
		rc = cache_get_part(k->cache, n.app, n.inst, n.pid, n.part, &h->blob);
		if (rc == 0) {
			h->data = h->blob->data;
			h->len = h->blob->len;
		}
		break;
	case FS_DUMP:
		/* Nothing is fetched on open: a dump pauses the process. */
		op_open_dump(k, path, h, fi);
		break;
	default:
		rc = -EISDIR;
		break;
	}
	if (rc < 0) {
		cache_blob_put(h->blob);
		cache_list_put(h->list);
		free(h);
		return rc;
	}
	handle_register(k, h, fi);
	return 0;
}

static int op_opendir(const char *path, struct fuse_file_info *fi)
{
	struct kudufs *k = fs_self();
	struct fs_handle *h;
	struct fs_node n;
	int rc = fs_parse_path(k, path, &n);

	if (rc < 0)
		return rc;
	if (n.kind != FS_ROOT && n.kind != FS_META_DIR && n.kind != FS_APP &&
	    n.kind != FS_INSTANCES && n.kind != FS_PROC_DIR)
		return -ENOTDIR;
	h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->kind = n.kind;
	h->node = n;
	if (n.kind == FS_APP) {
		/* The list now, so that its error is opendir's: a readdir error
		 * of ENOENT (the app is gone: Kudu's 404) is taken by glibc's
		 * readdir for the end of the directory, and `ls` would show an
		 * empty app without a word. */
		rc = cache_get_list(k->cache, n.app, n.inst, &h->list);
		if (rc < 0) {
			free(h);
			return rc;
		}
		h->list_unread = true;
	}
	handle_register(k, h, fi);
	return 0;
}

static int op_read(const char *path, char *buf, size_t size, off_t off, struct fuse_file_info *fi)
{
	struct kudufs *k = fs_self();
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;
	int rc;

	(void)path;
	if (h->kind == FS_DUMP) {
		struct capture *cap = atomic_load(&h->cap);

		if (!cap) {
			struct capture *none = NULL;

			rc = cache_capture_acquire(k->cache, h->node.app, h->node.inst, h->node.pid,
						   h->node.dump, &cap);
			if (rc < 0)
				return rc;
			/* two first reads on one handle (threads, AIO): one reference stays */
			if (!atomic_compare_exchange_strong(&h->cap, &none, cap)) {
				cache_capture_release(k->cache, cap);
				cap = none;
			}
		}
		return (int)cache_capture_read(k->cache, cap, buf, size, off,
					       fs_reader_should_stop);
	}
	if (off < 0 || (size_t)off >= h->len)
		return 0;
	if (size > h->len - (size_t)off)
		size = h->len - (size_t)off;
	memcpy(buf, h->data + off, size);
	return (int)size;
}

static void handle_free(struct kudufs *k, struct fs_handle *h)
{
	struct capture *cap = atomic_load(&h->cap);

	if (cap)
		cache_capture_release(k->cache, cap);
	if (h->kind == FS_STATUS)
		free(h->data);
	cache_blob_put(h->blob);
	cache_list_put(h->list);
	free(h);
}

static int op_release(const char *path, struct fuse_file_info *fi)
{
	struct kudufs *k = fs_self();
	struct fs_handle *h = (struct fs_handle *)(uintptr_t)fi->fh;

	(void)path;
	if (!h)
		return 0;
	pthread_mutex_lock(&k->handles_lock);
	if (h->prev)
		h->prev->next = h->next;
	else
		k->handles = h->next;
	if (h->next)
		h->next->prev = h->prev;
	if (!k->handles)
		pthread_cond_broadcast(&k->handles_gone);
	pthread_mutex_unlock(&k->handles_lock);
	handle_free(k, h);
	return 0;
}

void fs_handles_init(struct kudufs *k)
{
	pthread_condattr_t ca;

	pthread_mutex_init(&k->handles_lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC); /* fs_wait_handles_released's clock */
	pthread_cond_init(&k->handles_gone, &ca);
	pthread_condattr_destroy(&ca);
}

int fs_wait_handles_released(struct kudufs *k, int timeout_ms)
{
	struct timespec end = kudu_deadline_in(CLOCK_MONOTONIC, timeout_ms);
	int rc = 0;

	pthread_mutex_lock(&k->handles_lock);
	while (k->handles && rc != ETIMEDOUT)
		rc = pthread_cond_timedwait(&k->handles_gone, &k->handles_lock, &end);
	rc = k->handles ? -ETIMEDOUT : 0;
	pthread_mutex_unlock(&k->handles_lock);
	return rc;
}

void fs_release_handles(struct kudufs *k)
{
	/* the loop has ended: no operation runs, the lock is for form only */
	pthread_mutex_lock(&k->handles_lock);
	while (k->handles) {
		struct fs_handle *h = k->handles;

		k->handles = h->next;
		handle_free(k, h);
	}
	pthread_mutex_unlock(&k->handles_lock);
}

static int op_unlink(const char *path)
{
	struct kudufs *k = fs_self();
	struct fs_node n;
	int rc = fs_parse_path(k, path, &n);

	if (rc < 0)
		return rc;
	if (n.kind != FS_DUMP)
		return -EROFS;
	/* rm of a dump file forgets its capture; the next read fetches anew */
	return cache_capture_drop(k->cache, n.app, n.inst, n.pid, n.dump);
}

static const char *const xattr_names[] = { "state", "bytes", "url", "error", "filename" };
/* A process directory's: site, scm or empty, as the <app>/site and <app>/scm links say. */
#define XATTR_ROLE XATTR_PREFIX "role"
/* An app directory's (either view), while its list fails: why (with the
 * dotnet-monitor hint on a Linux app without it). */
#define XATTR_LIST_ERROR XATTR_PREFIX "error"
/* A process directory's and dump file's, in both views: the instance id it belongs to. */
#define XATTR_INSTANCE XATTR_PREFIX "instance"

static int xattr_reply(const char *v, char *value, size_t size)
{
	size_t len = strlen(v);

	if (size == 0)
		return (int)len;
	if (size < len)
		return -ERANGE;
	/* NOLINTNEXTLINE(bugprone-not-null-terminated-result): an xattr value has no NUL */
	memcpy(value, v, len);
	return (int)len;
}

/* The instance a process directory or dump file belongs to: its
 * instances/<id>/ view's, or in the app-level view the instance its list
 * came from, and for a dump the instance that answered it ("" unknown:
 * the server named none). */
static void fs_node_instance(struct kudufs *k, const struct fs_node *n, char *buf, size_t len)
{
	if (n->kind == FS_DUMP) {
		struct capture_info info;

		cache_capture_get_info(k->cache, n->app, n->inst, n->pid, n->dump, &info);
		snprintf(buf, len, "%s", info.instance);
	} else {
		cache_view_instance(k->cache, n->app, n->inst, buf, len);
	}
}

static int op_getxattr(const char *path, const char *name, char *value, size_t size)
{
	struct kudufs *k = fs_self();
	struct capture_info info;
	struct fs_node n;
	char num[32];
	const char *v;
	int rc;

	/* ls -l asks every entry for security.selinux and its ACLs. "Not
	 * supported" (no labels, no ACLs here) makes ls stop asking for the
	 * rest of the listing (it remembers the device), where "no data" costs
	 * two round trips per entry; answered before looking at the path,
	 * which takes the list's lock. */
	if (strncmp(name, "user.", 5) != 0)
		return -EOPNOTSUPP;
	if (strncmp(name, XATTR_PREFIX, strlen(XATTR_PREFIX)) != 0)
		return -ENODATA;
	rc = fs_parse_path(k, path, &n);
	if (rc < 0)
		return rc;
	if ((n.kind == FS_PROC_DIR || n.kind == FS_DUMP) && !strcmp(name, XATTR_INSTANCE)) {
		char inst[KUDU_INSTANCE_MAX];

		fs_node_instance(k, &n, inst, sizeof(inst));
		return inst[0] ? xattr_reply(inst, value, size) : -ENODATA;
	}
	if (n.kind == FS_APP && !strcmp(name, XATTR_LIST_ERROR)) {
		char err[KUDU_ERRLEN];

		cache_list_error(k->cache, n.app, n.inst, err, sizeof(err));
		return err[0] ? xattr_reply(err, value, size) : -ENODATA;
	}
	if (n.kind == FS_PROC_DIR && !strcmp(name, XATTR_ROLE)) {
		enum kudu_role role;

		rc = cache_proc_role(k->cache, n.app, n.inst, n.pid, &role);
		return rc < 0 ? rc : xattr_reply(kudu_model_role_name(role), value, size);
	}
	if (n.kind != FS_DUMP)
		return -ENODATA;
	name += strlen(XATTR_PREFIX);
	cache_capture_get_info(k->cache, n.app, n.inst, n.pid, n.dump, &info);
	if (!strcmp(name, "state")) {
		v = cache_state_name(info.state);
	} else if (!strcmp(name, "bytes")) {
		snprintf(num, sizeof(num), "%llu", (unsigned long long)info.bytes);
		v = num;
	} else if (!strcmp(name, "url")) {
		v = info.url;
	} else if (!strcmp(name, "error")) {
		v = info.error;
	} else if (!strcmp(name, "filename")) {
		v = info.filename;
	} else {
		return -ENODATA;
	}
	return xattr_reply(v, value, size);
}

static int op_listxattr(const char *path, char *list, size_t size)
{
	struct kudufs *k = fs_self();
	struct fs_node n;
	char inst[KUDU_INSTANCE_MAX];
	size_t need = 0;
	bool has_inst;
	int rc = fs_parse_path(k, path, &n);

	if (rc < 0)
		return rc;
	if (n.kind == FS_APP) {
		char err[KUDU_ERRLEN];

		cache_list_error(k->cache, n.app, n.inst, err, sizeof(err));
		if (!err[0])
			return 0;
		need = strlen(XATTR_LIST_ERROR) + 1;
		if (size == 0)
			return (int)need;
		if (size < need)
			return -ERANGE;
		memcpy(list, XATTR_LIST_ERROR, need);
		return (int)need;
	}
	if (n.kind != FS_PROC_DIR && n.kind != FS_DUMP)
		return 0;
	fs_node_instance(k, &n, inst, sizeof(inst));
	has_inst = inst[0] != '\0';
	if (has_inst)
		need += strlen(XATTR_INSTANCE) + 1;
	if (n.kind == FS_PROC_DIR)
		need += strlen(XATTR_ROLE) + 1;
	else
		for (size_t i = 0; i < sizeof(xattr_names) / sizeof(xattr_names[0]); i++)
			need += strlen(XATTR_PREFIX) + strlen(xattr_names[i]) + 1;
	if (size == 0)
		return (int)need;
	if (size < need)
		return -ERANGE;
	if (has_inst)
		list += sprintf(list, "%s", XATTR_INSTANCE) + 1;
	if (n.kind == FS_PROC_DIR)
		sprintf(list, "%s", XATTR_ROLE);
	else
		for (size_t i = 0; i < sizeof(xattr_names) / sizeof(xattr_names[0]); i++)
			list += sprintf(list, "%s%s", XATTR_PREFIX, xattr_names[i]) + 1;
	return (int)need;
}

static int op_statfs(const char *path, struct statvfs *sv)
{
	(void)path;
	memset(sv, 0, sizeof(*sv));
	sv->f_bsize = sv->f_frsize = 1 << 20;
	sv->f_namemax = 255;
	sv->f_flag = ST_RDONLY | ST_NOSUID | ST_NODEV;
	return 0;
}

static void *op_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	/* No splice: measured 3.5x slower than pread + copy for 1 MiB replies
	 * from a page-cached spool file on this kernel (README, Performance). */
	/* No POSIX ACLs (the kernel then forwards an ACL getxattr to us, and
	 * op_getxattr's "not supported" ends ls's asking). Every listing is a
	 * readdirplus, not only its first chunk: `ls -l` of 1000 processes
	 * then finds every entry's attributes fresh, with no LOOKUP or
	 * GETATTR per entry, however long after the last listing it runs. */
	conn->want &= ~(unsigned)FUSE_CAP_READDIRPLUS_AUTO;
	cfg->entry_timeout = 1;
	cfg->attr_timeout = 1;
	cfg->negative_timeout = 0;
	cfg->use_ino = 0;
	/* rm of an open dump file must reach op_unlink (to drop or refuse the
	 * capture), not become a rename to .fuse_hidden, which is EROFS here */
	cfg->hard_remove = 1;
	cfg->nullpath_ok = 1;
	return fuse_get_context()->private_data;
}

/* poll(2)/epoll on a file (Go programs such as azcopy add every file they
 * open to their netpoller). Regular files are always ready, so -ENOSYS: the
 * kernel then stops asking and reports them ready itself. This op exists only
 * to free the poll handle: libfuse 3.14's high-level API allocates one for
 * FUSE_POLL_SCHEDULE_NOTIFY and, with no .poll, leaks it (fixed upstream in
 * baebe3cd "fuse: prevent possible fuse_pollhandle leak"; LeakSanitizer saw
 * the 16 bytes once per mount). */
static int op_poll(const char *path, struct fuse_file_info *fi, struct fuse_pollhandle *ph,
		   unsigned *reventsp)
{
	(void)path;
	(void)fi;
	*reventsp = 0; /* unused with -ENOSYS */
	fuse_pollhandle_destroy(ph);
	return -ENOSYS;
}

/* Every write-type operation: the tree mirrors the server, read-only. */
/* clang-format off */
static int op_erofs_path(const char *path, mode_t mode) { (void)path; (void)mode; return -EROFS; }
static int op_erofs_dev(const char *p, mode_t m, dev_t d) { (void)p; (void)m; (void)d; return -EROFS; }
static int op_erofs_path1(const char *path) { (void)path; return -EROFS; }
static int op_erofs_2(const char *a, const char *b) { (void)a; (void)b; return -EROFS; }
static int op_erofs_rename(const char *a, const char *b, unsigned int f)
{ (void)a; (void)b; (void)f; return -EROFS; }
static int op_erofs_chmod(const char *p, mode_t m, struct fuse_file_info *fi)
{ (void)p; (void)m; (void)fi; return -EROFS; }
static int op_erofs_chown(const char *p, uid_t u, gid_t g, struct fuse_file_info *fi)
{ (void)p; (void)u; (void)g; (void)fi; return -EROFS; }
static int op_erofs_truncate(const char *p, off_t o, struct fuse_file_info *fi)
{ (void)p; (void)o; (void)fi; return -EROFS; }
static int op_erofs_write(const char *p, const char *b, size_t s, off_t o, struct fuse_file_info *fi)
{ (void)p; (void)b; (void)s; (void)o; (void)fi; return -EROFS; }
static int op_erofs_create(const char *p, mode_t m, struct fuse_file_info *fi)
{ (void)p; (void)m; (void)fi; return -EROFS; }
static int op_erofs_utimens(const char *p, const struct timespec tv[2], struct fuse_file_info *fi)
{ (void)p; (void)tv; (void)fi; return -EROFS; }
static int op_erofs_setxattr(const char *p, const char *n, const char *v, size_t s, int f)
{ (void)p; (void)n; (void)v; (void)s; (void)f; return -EROFS; }
static int op_erofs_removexattr(const char *p, const char *n) { (void)p; (void)n; return -EROFS; }
/* clang-format on */

const struct fuse_operations fs_operations = {
	.init = op_init,
	.getattr = op_getattr,
	.readlink = op_readlink,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.releasedir = op_release,
	.open = op_open,
	.read = op_read,
	.release = op_release,
	.unlink = op_unlink,
	.getxattr = op_getxattr,
	.listxattr = op_listxattr,
	.statfs = op_statfs,
	.poll = op_poll,
	.mkdir = op_erofs_path,
	.mknod = op_erofs_dev,
	.rmdir = op_erofs_path1,
	.symlink = op_erofs_2,
	.link = op_erofs_2,
	.rename = op_erofs_rename,
	.chmod = op_erofs_chmod,
	.chown = op_erofs_chown,
	.truncate = op_erofs_truncate,
	.write = op_erofs_write,
	.create = op_erofs_create,
	.utimens = op_erofs_utimens,
	.setxattr = op_erofs_setxattr,
	.removexattr = op_erofs_removexattr,
};
