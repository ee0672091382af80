/*
 * Configuration file (libinih), command-line apps and credential resolution.
 */
#include "kudu.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* Size caps of the local files kudufs reads: a password file holds one line,
 * a config or .netrc a few apps; anything bigger is a mistake (a log, a dump,
 * /dev/zero behind a symlink), not a credential. */
#define CONFIG_FILE_MAX (1u << 20)
#define PASSWORD_FILE_MAX (64u << 10)
/* Output of a credential command kept (the first line must be in it); more is
 * read and dropped so the command is never killed by SIGPIPE. */
#define COMMAND_OUTPUT_MAX (64u << 10)

static void set_err(char *err, size_t errlen, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;

	if (!err || !errlen)
		return;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

void kudu_config_init(struct kudu_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->cache_max = 20ULL << 30;
	cfg->dump_ttl = 600;
	cfg->list_ttl = 10;
	cfg->detail_ttl = 30;
	cfg->neg_ttl = 2;
	cfg->connect_timeout = 30;
	cfg->first_byte_timeout = 900;
	cfg->stall_timeout = 60;
	/* list and details answer in seconds; only dumps need first_byte_timeout's
	 * minutes, and a hung list must not hold a FUSE worker that long */
	cfg->meta_timeout = 60;
	cfg->max_conns = 8;
	cfg->prefetch_max = 256;
	/* password_command/token_command: long enough for gpg-agent to ask for a
	 * passphrase, short enough that a hung `az` does not hang the mount */
	cfg->command_timeout = 60;
	/* a body slower than this over stall_timeout is a trickle, not a dump:
	 * it would hold the app's one dump slot for hours */
	cfg->min_rate = 1024;
	/* 100 000 processes at ~300 bytes per list item (Kudu's, pretty-printed;
	 * ARM's envelope is larger per item, but ARM pages it) */
	cfg->max_json = 32ULL << 20;
}

static void app_free(struct kudu_app *app)
{
	if (!app)
		return;
	free(app->name);
	free(app->url);
	free(app->user);
	free(app->password_file);
	free(app->password_command);
	free(app->token_command);
	free(app->netrc_file);
	free(app->instance);
	for (size_t i = 0; i < app->ninstances; i++)
		free(app->instances[i]);
	free(app->instances);
	free(app->arm_resource);
	free(app->arm_endpoint);
	free(app->arm_token_command);
	kudu_secret_free(app->password);
	kudu_secret_free(app->token);
	kudu_secret_free(app->arm_token);
	pthread_mutex_destroy(&app->token_lock);
	free(app);
}

void kudu_config_free(struct kudu_config *cfg)
{
	for (size_t i = 0; i < cfg->napps; i++)
		app_free(cfg->apps[i]);
	free(cfg->apps);
	free(cfg->path);
	free(cfg->cache_dir);
	free(cfg->ca_file);
	free(cfg->arm_endpoint);
	memset(cfg, 0, sizeof(*cfg));
}

void kudu_secret_free(char *s)
{
	if (!s)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

/* "~/x" → "$HOME/x"; everything else is copied. */
static char *expand_home(const char *path)
{
	const char *home = getenv("HOME");
	char *out;

	if (path[0] != '~' || (path[1] && path[1] != '/') || !home)
		return strdup(path);
	if (asprintf(&out, "%s%s", home, path + 1) < 0)
		return NULL;
	return out;
}

bool kudu_name_is_valid(const char *name)
{
	if (!name || !*name || strlen(name) > 200)
		return false;
	if (!strcmp(name, ".") || !strcmp(name, "..") || !strcmp(name, ".kudufs"))
		return false;
	for (const unsigned char *p = (const unsigned char *)name; *p; p++)
		if (*p == '/' || *p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

int kudu_parse_size(const char *s, uint64_t *out)
{
	char *end;
	unsigned long long v;
	uint64_t mul = 1;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoull(s, &end, 10);
	if (errno)
		return -EINVAL;
	/* clang-format off */
	switch (toupper((unsigned char)*end)) {
	case 0: break;
	case 'K': mul = 1ULL << 10; end++; break;
	case 'M': mul = 1ULL << 20; end++; break;
	case 'G': mul = 1ULL << 30; end++; break;
	case 'T': mul = 1ULL << 40; end++; break;
	default: return -EINVAL;
	}
	/* clang-format on */
	if (*end == 'i' || *end == 'I')
		end++;
	if (*end == 'b' || *end == 'B')
		end++;
	if (*end)
		return -EINVAL;
	if (v > UINT64_MAX / mul)
		return -ERANGE;
	*out = v * mul;
	return 0;
}

static int parse_uint(const char *s, unsigned *out)
{
	char *end;
	unsigned long v;

	if (!s || !isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	v = strtoul(s, &end, 10);
	if (errno || *end || v > UINT_MAX)
		return -EINVAL;
	*out = (unsigned)v;
	return 0;
}

static int parse_bool(const char *s, bool *out)
{
	if (!strcasecmp(s, "1") || !strcasecmp(s, "yes") || !strcasecmp(s, "true") ||
	    !strcasecmp(s, "on") || !*s) {
		*out = true;
		return 0;
	}
	if (!strcasecmp(s, "0") || !strcasecmp(s, "no") || !strcasecmp(s, "false") ||
	    !strcasecmp(s, "off")) {
		*out = false;
		return 0;
	}
	return -EINVAL;
}

/* "~/x" expanded, then a relative path made absolute against the cwd now:
 * fuse_daemonize() chdirs to "/" even with -f, after which "ca.pem" or
 * "cache" would name something else. Lexical (cwd + "/" + path) rather than
 * realpath(): it names the same file as before the chdir, works for a
 * cache_dir not created yet, and still follows a symlink that is later
 * re-pointed (rotated secrets, CA bundles). */
static char *config_abs_path(const char *path)
{
	char *home = expand_home(path);
	char cwd[PATH_MAX];
	char *out;

	if (!home || home[0] == '/' || !home[0])
		return home;
	if (!getcwd(cwd, sizeof(cwd)))
		return home; /* cwd gone: nothing better to offer than the path as given */
	while (home[0] == '.' && home[1] == '/')
		memmove(home, home + 2, strlen(home + 2) + 1);
	if (asprintf(&out, "%s%s%s", cwd, strcmp(cwd, "/") ? "/" : "", home) < 0)
		out = NULL;
	free(home);
	return out;
}

static int replace_str(char **dst, const char *value, bool path)
{
	char *v = path ? config_abs_path(value) : strdup(value);

	if (!v)
		return -ENOMEM;
	free(*dst);
	*dst = v;
	return 0;
}

/* The ARM token goes to this host: from the local config only, http(s), no
 * credentials, query or fragment; "https://management.azure.com[/]". */
static int set_arm_endpoint(char **dst, const char *where, const char *url, char *err,
			    size_t errlen)
{
	size_t n;

	if ((strncmp(url, "http://", 7) && strncmp(url, "https://", 8)) || strpbrk(url, "@?# \t")) {
		set_err(err, errlen,
			"arm_endpoint%s%s: '%s' must be an http(s)://host[:port] URL without credentials or query",
			where[0] ? " of " : "", where, url);
		return -EINVAL;
	}
	if (replace_str(dst, url, false) < 0)
		return -ENOMEM;
	n = strlen(*dst);
	while (n > 0 && (*dst)[n - 1] == '/')
		(*dst)[--n] = '\0';
	return 0;
}

int kudu_config_set(struct kudu_config *cfg, const char *key, const char *value, char *err,
		    size_t errlen)
{
	static const struct {
		const char *key;
		size_t off;
	} uints[] = {
		{ "dump_ttl", offsetof(struct kudu_config, dump_ttl) },
		{ "list_ttl", offsetof(struct kudu_config, list_ttl) },
		{ "detail_ttl", offsetof(struct kudu_config, detail_ttl) },
		{ "negative_ttl", offsetof(struct kudu_config, neg_ttl) },
		{ "connect_timeout", offsetof(struct kudu_config, connect_timeout) },
		{ "first_byte_timeout", offsetof(struct kudu_config, first_byte_timeout) },
		{ "stall_timeout", offsetof(struct kudu_config, stall_timeout) },
		{ "meta_timeout", offsetof(struct kudu_config, meta_timeout) },
		{ "max_conns", offsetof(struct kudu_config, max_conns) },
		{ "prefetch_max", offsetof(struct kudu_config, prefetch_max) },
		{ "command_timeout", offsetof(struct kudu_config, command_timeout) },
	};

	for (size_t i = 0; i < sizeof(uints) / sizeof(uints[0]); i++) {
		if (strcmp(key, uints[i].key))
			continue;
		unsigned *dst = (unsigned *)((char *)cfg + uints[i].off);
		if (parse_uint(value, dst) < 0) {
			set_err(err, errlen, "%s: '%s' is not a non-negative integer", key, value);
			return -EINVAL;
		}
		if (!strcmp(key, "max_conns") && (*dst < 1 || *dst > 64)) {
			set_err(err, errlen, "max_conns: must be 1..64");
			return -EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "cache_max")) {
		if (kudu_parse_size(value, &cfg->cache_max) < 0) {
			set_err(err, errlen, "cache_max: '%s' is not a size (e.g. 512M, 20G)",
				value);
			return -EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "min_rate") || !strcmp(key, "max_json")) {
		uint64_t *dst = !strcmp(key, "min_rate") ? &cfg->min_rate : &cfg->max_json;

		if (kudu_parse_size(value, dst) < 0) {
			set_err(err, errlen, "%s: '%s' is not a size in bytes (e.g. 1K, 32M)", key,
				value);
			return -EINVAL;
		}
		if (dst == &cfg->max_json && (*dst < 4096 || *dst > (1ULL << 30))) {
			set_err(err, errlen, "max_json: must be 4K..1G");
			return -EINVAL;
		}
		return 0;
	}
	if (!strcmp(key, "cache_dir"))
		return replace_str(&cfg->cache_dir, value, true);
	if (!strcmp(key, "arm_endpoint"))
		return set_arm_endpoint(&cfg->arm_endpoint, "", value, err, errlen);
	if (!strcmp(key, "ca_file"))
		return replace_str(&cfg->ca_file, value, true);
	if (!strcmp(key, "insecure")) {
		if (parse_bool(value, &cfg->insecure) < 0) {
			set_err(err, errlen, "insecure: '%s' is not a boolean", value);
			return -EINVAL;
		}
		return 0;
	}
	set_err(err, errlen, "unknown option '%s'", key);
	return -EINVAL;
}

static struct kudu_app *find_app(struct kudu_config *cfg, const char *name)
{
	for (size_t i = 0; i < cfg->napps; i++)
		if (!strcmp(cfg->apps[i]->name, name))
			return cfg->apps[i];
	return NULL;
}

static struct kudu_app *new_app(struct kudu_config *cfg, const char *name)
{
	struct kudu_app **apps;
	struct kudu_app *app = calloc(1, sizeof(*app));

	if (!app)
		return NULL;
	app->name = strdup(name);
	/* NOLINTNEXTLINE(bugprone-sizeof-expression): an array of pointers */
	apps = realloc(cfg->apps, (cfg->napps + 1) * sizeof(*apps));
	if (!app->name || !apps) {
		free(app->name);
		free(app);
		if (apps)
			cfg->apps = apps;
		return NULL;
	}
	pthread_mutex_init(&app->token_lock, NULL);
	cfg->apps = apps;
	cfg->apps[cfg->napps++] = app;
	return app;
}

static int set_url(struct kudu_app *app, const char *url, char *err, size_t errlen)
{
	size_t n;
	const char *host = !strncmp(url, "http://", 7)    ? url + 7
			   : !strncmp(url, "https://", 8) ? url + 8
							  : NULL;

	if (!host) {
		set_err(err, errlen, "url '%s' of app '%s' must start with http:// or https://",
			url, app->name);
		return -EINVAL;
	}
	/* found by tests/fuzz/fuzz_config.c: "http://" lost its slashes below
	 * and became "http:" */
	if (!*host || *host == '/' || *host == ':') {
		set_err(err, errlen,
			"url '%s' of app '%s' has no host (expected http(s)://HOST[:PORT][/PREFIX])",
			url, app->name);
		return -EINVAL;
	}
	if (strchr(url, '@')) {
		/* credentials in a URL would end up in logs and error messages */
		set_err(err, errlen,
			"url of app '%s' must not contain credentials; use user/password_file",
			app->name);
		return -EINVAL;
	}
	if (replace_str(&app->url, url, false) < 0)
		return -ENOMEM;
	n = strlen(app->url);
	while (n > 0 && app->url[n - 1] == '/')
		app->url[--n] = '\0';
	return 0;
}

/* An App Service instance id (ARRAffinity value, 64 hex digits from
 * `az webapp list-instances`); it goes into a cookie and names a directory,
 * so no ';', ',', spaces or '/'; "." and ".." are refused too. */
bool kudu_instance_id_is_valid(const char *id)
{
	size_t n = id ? strlen(id) : 0;

	return n > 0 && n < KUDU_INSTANCE_MAX && strcmp(id, ".") && strcmp(id, "..") &&
	       strspn(id, "0123456789abcdefghijklmnopqrstuvwxyz"
			  "ABCDEFGHIJKLMNOPQRSTUVWXYZ-_.") == n;
}

static int set_instance(struct kudu_app *app, const char *value, char *err, size_t errlen)
{
	if (!kudu_instance_id_is_valid(value)) {
		set_err(err, errlen,
			"instance of [app %s] must be an instance id (letters, digits, '-', '_', '.'; e.g. from az webapp list-instances)",
			app->name);
		return -EINVAL;
	}
	return replace_str(&app->instance, value, false);
}

/* instances = ID[, ID...]: commas and/or blanks between ids; a repeated id
 * is listed once. Replaces an earlier instances line of the section. */
static int set_instances(struct kudu_app *app, const char *value, char *err, size_t errlen)
{
	char *copy = strdup(value), *save = NULL;
	char **ids = NULL;
	size_t n = 0;
	int rc = 0;

	if (!copy)
		return -ENOMEM;
	for (char *tok = strtok_r(copy, ", \t", &save); tok; tok = strtok_r(NULL, ", \t", &save)) {
		bool dup = false;
		char **grown;

		if (!kudu_instance_id_is_valid(tok)) {
			set_err(err, errlen,
				"instances of [app %s]: '%.140s' is not an instance id (letters, digits, '-', '_', '.'; e.g. from az webapp list-instances)",
				app->name, tok);
			rc = -EINVAL;
			break;
		}
		for (size_t i = 0; i < n && !dup; i++)
			dup = !strcmp(ids[i], tok);
		if (dup)
			continue;
		grown = realloc(ids, (n + 1) * sizeof(*ids));
		if (!grown || !(grown[n] = strdup(tok))) {
			if (grown)
				ids = grown;
			rc = -ENOMEM;
			break;
		}
		ids = grown;
		n++;
	}
	if (rc == 0 && n == 0) {
		set_err(err, errlen,
			"instances of [app %s] is empty (list instance ids, separated by commas)",
			app->name);
		rc = -EINVAL;
	}
	free(copy);
	if (rc < 0) {
		for (size_t i = 0; i < n; i++)
			free(ids[i]);
		free(ids);
		return rc;
	}
	for (size_t i = 0; i < app->ninstances; i++)
		free(app->instances[i]);
	free(app->instances);
	app->instances = ids;
	app->ninstances = n;
	return 0;
}

/* Case-insensitive prefix match that advances *p past it. */
static bool eat_ci(const char **p, const char *lit)
{
	size_t n = strlen(lit);

	if (strncasecmp(*p, lit, n))
		return false;
	*p += n;
	return true;
}

/* One path segment of an ARM id: non-empty, no '/', '?', '#', '%' or blanks. */
static bool eat_segment(const char **p)
{
	size_t n = strcspn(*p, "/?#% \t\r\n");

	if (n == 0)
		return false;
	*p += n;
	return true;
}

/* /subscriptions/S/resourceGroups/RG/providers/Microsoft.Web/sites/NAME[/slots/SLOT],
 * the form `az webapp show --query id -o tsv` prints; it is pasted into a URL. */
static int set_arm_resource(struct kudu_app *app, const char *value, char *err, size_t errlen)
{
	const char *p = value;
	size_t n;

	if (!(eat_ci(&p, "/subscriptions/") && eat_segment(&p) && eat_ci(&p, "/resourceGroups/") &&
	      eat_segment(&p) && eat_ci(&p, "/providers/Microsoft.Web/sites/") &&
	      eat_segment(&p)) ||
	    (*p && !(eat_ci(&p, "/slots/") && eat_segment(&p))) || (*p && strcmp(p, "/"))) {
		set_err(err, errlen,
			"arm_resource of [app %s] must be /subscriptions/S/resourceGroups/RG/providers/Microsoft.Web/sites/NAME[/slots/SLOT] (az webapp show -g RG -n NAME --query id -o tsv)",
			app->name);
		return -EINVAL;
	}
	if (replace_str(&app->arm_resource, value, false) < 0)
		return -ENOMEM;
	n = strlen(app->arm_resource);
	while (n > 0 && app->arm_resource[n - 1] == '/')
		app->arm_resource[--n] = '\0';
	return 0;
}

struct ini_ctx {
	struct kudu_config *cfg;
	char msg[KUDU_ERRLEN];
	FILE *f;
	int line;         /* lines read so far, counted as inih counts them */
	int section_line; /* line of the last "[NAME]" read ... */
	char section[64]; /* ... and its NAME, as inih copies it */
	struct seen_app {
		char *name;
		int line;
	} * seen; /* [app NAME] headers so far */
	size_t nseen;
	int dup_line, dup_first; /* a second [app NAME]: its line and the first's */
	const char *dup_name;    /* ... and NAME, in seen[] */
};

/* An "[app NAME]" header at line `line`: a second one for the same app is an
 * error (two sections silently merged hide a typo'd or pasted-twice app).
 * Returns false to stop reading. */
static bool config_note_app_header(struct ini_ctx *ctx, const char *hdr, size_t n, int line)
{
	struct seen_app *seen;
	char *name;

	if (n < 4 || strncmp(hdr, "app ", 4))
		return true;
	hdr += 4;
	n -= 4;
	while (n && *hdr == ' ') {
		hdr++;
		n--;
	}
	for (size_t i = 0; i < ctx->nseen; i++) {
		if (strlen(ctx->seen[i].name) == n && !strncmp(ctx->seen[i].name, hdr, n)) {
			ctx->dup_line = line;
			ctx->dup_first = ctx->seen[i].line;
			ctx->dup_name = ctx->seen[i].name;
			return false;
		}
	}
	seen = realloc(ctx->seen, (ctx->nseen + 1) * sizeof(*seen));
	if (!seen)
		return true;
	ctx->seen = seen;
	if (!(name = strndup(hdr, n)))
		return true;
	seen[ctx->nseen].name = name;
	seen[ctx->nseen++].line = line;
	return true;
}

/* inih's reader, counting lines: Debian's libinih is built without
 * INI_HANDLER_LINENO or INI_CALL_HANDLER_ON_NEW_SECTION, so the handler learns
 * neither the line nor when a section starts. Counts one line per call, as
 * inih does (a line longer than INI_MAX_LINE counts more than once there too). */
static char *config_read_line(char *str, int num, void *stream)
{
	struct ini_ctx *ctx = stream;
	const char *p;

	if (!fgets(str, num, ctx->f))
		return NULL;
	ctx->line++;
	p = str;
	if (ctx->line == 1 && !strncmp(p, "\xEF\xBB\xBF", 3))
		p += 3; /* UTF-8 BOM, which inih skips too */
	while (*p == ' ' || *p == '\t')
		p++;
	if (*p == '[') {
		size_t n = strcspn(p + 1, "]\r\n");

		/* an indented "[..." may be a continuation line in inih: the
		 * handler uses the line only when the name matches its section */
		ctx->section_line = ctx->line;
		snprintf(ctx->section, sizeof(ctx->section), "%.*s", (int)n, p + 1);
		/* an unindented one is a header for inih, always */
		if (p == str + (ctx->line == 1 && !strncmp(str, "\xEF\xBB\xBF", 3) ? 3 : 0) &&
		    p[1 + n] == ']' && !config_note_app_header(ctx, p + 1, n, ctx->line))
			return NULL;
	}
	return str;
}

static int config_ini_line(void *user, const char *section, const char *name, const char *value)
{
	struct ini_ctx *ctx = user;
	struct kudu_config *cfg = ctx->cfg;
	char err[KUDU_ERRLEN] = "";
	int rc = 0;

	if (ctx->msg[0])
		return 1; /* keep only the first error; inih reports its line */

	if (!strcmp(section, "kudufs")) {
		if (!name)
			return 1;
		if (!strcmp(name, "config")) {
			snprintf(ctx->msg, sizeof(ctx->msg),
				 "'config' cannot be set inside a config file");
			return 0;
		}
		rc = kudu_config_set(cfg, name, value, err, sizeof(err));
	} else if (!strncmp(section, "app ", 4)) {
		const char *appname = section + 4;
		struct kudu_app *app;

		while (*appname == ' ')
			appname++;
		if (!kudu_name_is_valid(appname)) {
			snprintf(ctx->msg, sizeof(ctx->msg), "invalid app name '%s'", appname);
			return 0;
		}
		app = find_app(cfg, appname);
		if (!app && !(app = new_app(cfg, appname))) {
			snprintf(ctx->msg, sizeof(ctx->msg), "out of memory");
			return 0;
		}
		/* inih calls us from a key line of the section, after its header */
		if (!app->section_line && !strcmp(ctx->section, section))
			app->section_line = ctx->section_line;
		if (!name)
			return 1;
		if (!strcmp(name, "url"))
			rc = set_url(app, value, err, sizeof(err));
		else if (!strcmp(name, "user"))
			rc = replace_str(&app->user, value, false);
		else if (!strcmp(name, "password_file"))
			rc = replace_str(&app->password_file, value, true);
		else if (!strcmp(name, "password_command"))
			rc = replace_str(&app->password_command, value, false);
		else if (!strcmp(name, "token_command"))
			rc = replace_str(&app->token_command, value, false);
		else if (!strcmp(name, "netrc_file"))
			rc = replace_str(&app->netrc_file, value, true);
		else if (!strcmp(name, "instance"))
			rc = set_instance(app, value, err, sizeof(err));
		else if (!strcmp(name, "instances"))
			rc = set_instances(app, value, err, sizeof(err));
		else if (!strcmp(name, "arm_resource")) {
			rc = set_arm_resource(app, value, err, sizeof(err));
			app->arm_resource_line = ctx->line;
		} else if (!strcmp(name, "arm_endpoint")) {
			char where[240];

			snprintf(where, sizeof(where), "[app %s]", app->name);
			rc = set_arm_endpoint(&app->arm_endpoint, where, value, err, sizeof(err));
		} else if (!strcmp(name, "arm_token_command"))
			rc = replace_str(&app->arm_token_command, value, false);
		else if (!strcmp(name, "platform")) {
			rc = kudu_platform_parse(value, &app->platform);
			if (rc < 0)
				snprintf(err, sizeof(err),
					 "platform must be windows, linux or auto, not '%s'",
					 value);
		} else if (!strcmp(name, "password")) {
			snprintf(
				err, sizeof(err),
				"'password' is not allowed in the config; use password_file (mode 0600) or password_command");
			rc = -EINVAL;
		} else {
			snprintf(err, sizeof(err), "unknown key '%s' in [app %s]", name, appname);
			rc = -EINVAL;
		}
	} else {
		snprintf(ctx->msg, sizeof(ctx->msg),
			 "unknown section [%s] (expected [kudufs] or [app NAME])", section);
		return 0;
	}
	if (rc < 0) {
		snprintf(ctx->msg, sizeof(ctx->msg), "%s", err[0] ? err : strerror(-rc));
		return 0;
	}
	return 1;
}

static const char *file_kind(mode_t mode)
{
	switch (mode & S_IFMT) {
	case S_IFDIR:
		return "a directory";
	case S_IFIFO:
		return "a FIFO";
	case S_IFCHR:
		return "a character device";
	case S_IFBLK:
		return "a block device";
	case S_IFSOCK:
		return "a socket";
	default:
		return "not a regular file";
	}
}

/* The checks every secret-bearing file gets, on what is (about to be) read. */
static int check_private_stat(const struct stat *st, const char *path, const char *what,
			      uint64_t max, char *err, size_t errlen)
{
	if (!S_ISREG(st->st_mode)) {
		set_err(err, errlen, "%s %s is %s; it must be a regular file", what, path,
			file_kind(st->st_mode));
		return S_ISDIR(st->st_mode) ? -EISDIR : -EINVAL;
	}
	if (st->st_mode & (S_IRWXG | S_IRWXO)) {
		set_err(err, errlen,
			"%s %s is accessible by group or others (mode %04o); refusing it: run chmod 600 %s",
			what, path, (unsigned)(st->st_mode & 07777), path);
		return -EPERM;
	}
	if ((uint64_t)st->st_size > max) {
		set_err(err, errlen,
			"%s %s is %" PRIu64 " bytes, more than the %" PRIu64 " a %s may have", what,
			path, (uint64_t)st->st_size, max, what);
		return -EFBIG;
	}
	return 0;
}

/* Opens a secret-bearing file for reading after the checks above. stat()
 * first, so a FIFO or device is never opened (opening a FIFO blocks until a
 * writer comes, a device open can have effects); O_NONBLOCK and fstat() on
 * the descriptor so a file swapped in between is caught too. */
static int open_private_file(const char *path, const char *what, uint64_t max, FILE **out,
			     char *err, size_t errlen)
{
	struct stat st, fst;
	int fd, rc, flags;

	if (stat(path, &st) < 0) {
		int e = errno;
		set_err(err, errlen, "%s %s: %s", what, path, strerror(e));
		return -e;
	}
	rc = check_private_stat(&st, path, what, max, err, errlen);
	if (rc < 0)
		return rc;
	fd = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		int e = errno;
		set_err(err, errlen, "%s %s: %s", what, path, strerror(e));
		return -e;
	}
	if (fstat(fd, &fst) < 0 ||
	    (rc = check_private_stat(&fst, path, what, max, err, errlen)) < 0) {
		if (!rc) {
			rc = -errno;
			set_err(err, errlen, "%s %s: %s", what, path, strerror(-rc));
		}
		close(fd);
		return rc;
	}
	flags = fcntl(fd, F_GETFL);
	if (flags >= 0)
		fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
	if (!out) {
		close(fd);
		return 0;
	}
	*out = fdopen(fd, "r");
	if (!*out) {
		close(fd);
		return -ENOMEM;
	}
	return 0;
}

int kudu_check_private_file(const char *path, const char *what, char *err, size_t errlen)
{
	return open_private_file(path, what, CONFIG_FILE_MAX, NULL, err, errlen);
}

int kudu_config_load(struct kudu_config *cfg, const char *path, bool required, char *err,
		     size_t errlen)
{
	struct ini_ctx ctx = { .cfg = cfg };
	FILE *f;
	int rc;

	if (!required && access(path, F_OK) < 0 && errno == ENOENT)
		return 0;
	rc = open_private_file(path, "config", CONFIG_FILE_MAX, &f, err, errlen);
	if (rc < 0)
		return rc;
	ctx.f = f;
	rc = ini_parse_stream(config_read_line, &ctx, config_ini_line, &ctx);
	fclose(f);
	if (rc == 0 && ctx.dup_line) {
		/* reading stopped at the duplicate; an error before it wins (rc > 0) */
		set_err(err, errlen,
			"%s:%d: a second [app %s] section (the first is at line %d); merge them",
			path, ctx.dup_line, ctx.dup_name, ctx.dup_first);
		rc = -1;
	}
	for (size_t i = 0; i < ctx.nseen; i++)
		free(ctx.seen[i].name);
	free(ctx.seen);
	if (rc == -1)
		return -EINVAL;
	if (rc != 0) {
		if (rc > 0)
			set_err(err, errlen, "%s:%d: %s", path, rc,
				ctx.msg[0]
					? ctx.msg
					: "syntax error (expected 'key = value' or '[section]')");
		else
			set_err(err, errlen, "%s: cannot parse (%s)", path,
				rc == -2 ? "out of memory" : "I/O error");
		return -EINVAL;
	}
	free(cfg->path);
	cfg->path = strdup(path);
	return 0;
}

char *kudu_config_default_path(void)
{
	const char *xdg = getenv("XDG_CONFIG_HOME");
	const char *home = getenv("HOME");
	char *p = NULL;

	if (xdg && *xdg) {
		if (asprintf(&p, "%s/kudufs/config", xdg) < 0)
			return NULL;
	} else if (home) {
		if (asprintf(&p, "%s/.config/kudufs/config", home) < 0)
			return NULL;
	}
	return p;
}

int kudu_config_add_app(struct kudu_config *cfg, const char *spec, char *err, size_t errlen)
{
	const char *eq = strchr(spec, '=');
	char *name = eq ? strndup(spec, (size_t)(eq - spec)) : strdup(spec);
	struct kudu_app *app;
	int rc = 0;

	if (!name)
		return -ENOMEM;
	if (!kudu_name_is_valid(name)) {
		set_err(err, errlen, "--app: invalid app name '%s'", name);
		free(name);
		return -EINVAL;
	}
	app = find_app(cfg, name);
	if (!app)
		app = new_app(cfg, name);
	free(name);
	if (!app)
		return -ENOMEM;
	if (eq)
		rc = set_url(app, eq + 1, err, errlen);
	return rc;
}

/* First line of a file or command output, without the newline. */
static char *first_line(FILE *f)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n = getline(&line, &cap, f);

	if (n < 0) {
		free(line);
		return NULL;
	}
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	return line;
}

static double mono_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Runs `sh -c cmd` with stdout on a pipe, read to EOF within timeout seconds
 * (0: no limit). All of the output is read, the first line kept: closing the
 * pipe after one line would kill a command that writes more lines later
 * (`pass show` prints notes after the password) with SIGPIPE. The command runs
 * in its own process group, as timeout(1) runs it, so that on a timeout the
 * whole pipeline is killed, not just the shell. */
static int command_output(const char *cmd, unsigned timeout, char **out, int *status,
			  bool *timed_out)
{
	static const size_t cap = COMMAND_OUTPUT_MAX;
	extern char **environ;
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t attr;
	sigset_t none, dfl;
	char *argv[] = { "sh", "-c", (char *)cmd, NULL };
	char *buf = calloc(1, cap + 1);
	size_t len = 0;
	int pfd[2], rc;
	pid_t pid;
	double deadline = timeout ? mono_now() + timeout : 0;
	double exit_time = 0;
	bool eof = false, exited = false;

	*timed_out = false;
	*out = NULL;
	if (!buf)
		return -ENOMEM;
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		rc = -errno;
		free(buf);
		return rc;
	}
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], STDOUT_FILENO);
	posix_spawnattr_init(&attr);
	sigemptyset(&none);
	/* the daemon's threads block or ignore signals (SIGPIPE is ignored for
	 * libcurl); the command starts with the defaults */
	sigemptyset(&dfl);
	sigaddset(&dfl, SIGPIPE);
	sigaddset(&dfl, SIGINT);
	sigaddset(&dfl, SIGTERM);
	sigaddset(&dfl, SIGHUP);
	posix_spawnattr_setsigmask(&attr, &none);
	posix_spawnattr_setsigdefault(&attr, &dfl);
	posix_spawnattr_setpgroup(&attr, 0);
	posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF |
						POSIX_SPAWN_SETPGROUP);
	fflush(NULL);
	rc = -posix_spawn(&pid, "/bin/sh", &fa, &attr, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&attr);
	close(pfd[1]);
	if (rc < 0) {
		close(pfd[0]);
		free(buf);
		return rc;
	}
	/* read until EOF and exit, or the deadline */
	for (;;) {
		double now = mono_now();
		int wait_ms = 100;

		if (deadline && now >= deadline) {
			*timed_out = true;
			break;
		}
		if (!exited) {
			pid_t w = waitpid(pid, status, WNOHANG);

			if (w == pid) {
				exited = true;
				exit_time = now;
			} else if (w < 0 && errno != EINTR && errno != EAGAIN) {
				*status = -1;
				exited = true; /* not ours to wait for any more */
				exit_time = now;
			}
		}
		if (eof && exited)
			break;
		/* the command exited but something it started still holds its
		 * stdout: what it wrote itself is in the pipe by now */
		if (exited && now - exit_time > 1.0)
			break;
		if (deadline && (deadline - now) * 1000 < wait_ms)
			wait_ms = (int)((deadline - now) * 1000) + 1;
		if (eof) {
			struct timespec ts = { 0, 10L * 1000 * 1000 };

			nanosleep(&ts, NULL);
			continue;
		}
		{
			struct pollfd p = { .fd = pfd[0], .events = POLLIN };
			int n = poll(&p, 1, exited ? 10 : wait_ms);

			if (n < 0 && errno != EINTR)
				eof = true;
			if (n > 0) {
				char tmp[4096];
				ssize_t got = read(pfd[0], tmp, sizeof(tmp));

				if (got == 0 || (got < 0 && errno != EINTR && errno != EAGAIN))
					eof = true;
				else if (got > 0 && len < cap) {
					size_t take = (size_t)got < cap - len ? (size_t)got
									      : cap - len;

					memcpy(buf + len, tmp, take);
					len += take;
				}
				explicit_bzero(tmp, sizeof(tmp));
			}
		}
	}
	close(pfd[0]);
	if (!exited) {
		/* timed out: the whole group goes */
		kill(-pid, SIGKILL);
		while (waitpid(pid, status, 0) < 0 && errno == EINTR)
			;
	}
	buf[len] = '\0';
	*out = buf;
	return 0;
}

static int run_command(const struct kudu_app *app, const char *key, const char *cmd, char **out,
		       char *err, size_t errlen)
{
	char *output, *line;
	int st = 0, rc;
	bool timed_out;
	size_t n;

	rc = command_output(cmd, app->command_timeout, &output, &st, &timed_out);
	if (rc < 0) {
		set_err(err, errlen, "app %s: %s: cannot run: %s", app->name, key, strerror(-rc));
		return -EIO;
	}
	if (timed_out) {
		explicit_bzero(output, strlen(output));
		free(output);
		set_err(err, errlen,
			"app %s: %s did not finish within command_timeout (%u s); killed",
			app->name, key, app->command_timeout);
		return -ETIMEDOUT;
	}
	/* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker): 0 sets output */
	n = strcspn(output, "\r\n");
	line = strndup(output, n);
	explicit_bzero(output, strlen(output));
	free(output);
	if (!line)
		return -ENOMEM;
	if (st != 0 || !*line) {
		explicit_bzero(line, strlen(line));
		free(line);
		if (st != 0)
			set_err(err, errlen, "app %s: %s failed (%s %d)", app->name, key,
				WIFSIGNALED(st) ? "killed by signal" : "exit status",
				WIFSIGNALED(st) ? WTERMSIG(st)
				: WIFEXITED(st) ? WEXITSTATUS(st)
						: -1);
		else
			set_err(err, errlen, "app %s: %s printed nothing on its first line",
				app->name, key);
		return -EACCES;
	}
	*out = line;
	return 0;
}

int kudu_app_refresh_token(struct kudu_app *app, char *err, size_t errlen)
{
	char *tok = NULL;
	int rc;

	if (!app->token_command)
		return -EACCES;
	rc = run_command(app, "token_command", app->token_command, &tok, err, errlen);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&app->token_lock);
	kudu_secret_free(app->token);
	app->token = tok;
	app->token_gen++;
	pthread_mutex_unlock(&app->token_lock);
	return 0;
}

/* Without arm_token_command, ARM and Kudu share token_command's token (an
 * ARM-audience token is accepted by both), so one refresh serves both. */
int kudu_app_refresh_arm_token(struct kudu_app *app, unsigned gen, char *err, size_t errlen)
{
	const char *key = app->arm_token_command ? "arm_token_command" : "token_command";
	const char *cmd = app->arm_token_command ? app->arm_token_command : app->token_command;
	char **slot = app->arm_token_command ? &app->arm_token : &app->token;
	unsigned *slot_gen = app->arm_token_command ? &app->arm_token_gen : &app->token_gen;
	char *tok = NULL;
	int rc;

	if (!cmd) {
		set_err(err, errlen, "app %s: no arm_token_command or token_command for ARM",
			app->name);
		return -EACCES;
	}
	/* several requests got the same 401: the first one's refresh serves all */
	pthread_mutex_lock(&app->token_lock);
	rc = *slot && *slot_gen != gen;
	pthread_mutex_unlock(&app->token_lock);
	if (rc)
		return 0;
	rc = run_command(app, key, cmd, &tok, err, errlen);
	if (rc < 0)
		return rc;
	pthread_mutex_lock(&app->token_lock);
	kudu_secret_free(*slot);
	*slot = tok;
	(*slot_gen)++;
	pthread_mutex_unlock(&app->token_lock);
	return 0;
}

char *kudu_app_bearer(struct kudu_app *app, bool arm, unsigned *gen)
{
	bool own = arm && app->arm_token_command;
	char **slot = own ? &app->arm_token : &app->token;
	char *h = NULL;

	/* never runs a command: this is called on the transfer thread; the ARM
	 * token is fetched by discovery (kudu_app_refresh_arm_token) first */
	pthread_mutex_lock(&app->token_lock);
	if (gen)
		*gen = own ? app->arm_token_gen : app->token_gen;
	if (*slot && asprintf(&h, "Authorization: Bearer %s", *slot) < 0)
		h = NULL;
	pthread_mutex_unlock(&app->token_lock);
	return h;
}

static int resolve_one(struct kudu_config *cfg, struct kudu_app *app, char *err, size_t errlen)
{
	const char *env_user = getenv("KUDUFS_USER");
	const char *env_pass = getenv("KUDUFS_PASSWORD");
	const char *where = cfg->path ? cfg->path : "command line";
	int rc;

	/* a copy: token_command is re-run later from the app alone */
	app->command_timeout = cfg->command_timeout;
	if (!app->url) {
		char *u;
		if (asprintf(&u, "https://%s.scm.azurewebsites.net", app->name) < 0)
			return -ENOMEM;
		app->url = u;
	}
	if (!app->arm_endpoint &&
	    replace_str(&app->arm_endpoint,
			cfg->arm_endpoint ? cfg->arm_endpoint : KUDU_ARM_ENDPOINT_DEFAULT,
			false) < 0)
		return -ENOMEM;
	if (app->arm_resource && !app->arm_token_command && !app->token_command) {
		set_err(err, errlen,
			"%s:%d: arm_resource of [app %s] needs a bearer token for ARM: set arm_token_command (e.g. az account get-access-token --query accessToken -o tsv) or token_command",
			where, app->arm_resource_line, app->name);
		return -EINVAL;
	}
	if (app->token_command) {
		rc = kudu_app_refresh_token(app, err, errlen);
		if (rc < 0)
			return rc;
		app->cred = KUDU_CRED_TOKEN;
		snprintf(app->cred_desc, sizeof(app->cred_desc), "token_command of [app %s]",
			 app->name);
		return 0;
	}
	if (app->password_file || app->password_command) {
		if (!app->user) {
			if (cfg->path && app->section_line > 0)
				set_err(err, errlen,
					"%s:%d: [app %s] has a password source but no 'user'",
					cfg->path, app->section_line, app->name);
			else
				set_err(err, errlen,
					"%s: [app %s] has a password source but no 'user'", where,
					app->name);
			return -EINVAL;
		}
		if (app->password_file) {
			FILE *f;

			rc = open_private_file(app->password_file, "password file",
					       PASSWORD_FILE_MAX, &f, err, errlen);
			if (rc < 0)
				return rc;
			/* NOLINTNEXTLINE(clang-analyzer-core.CallAndMessage): 0 sets f */
			app->password = first_line(f);
			fclose(f);
			if (!app->password || !*app->password) {
				set_err(err, errlen,
					app->password ? "password file %s has an empty first line"
						      : "password file %s is empty",
					app->password_file);
				return -EACCES;
			}
			snprintf(app->cred_desc, sizeof(app->cred_desc), "password_file %s",
				 app->password_file);
		} else {
			rc = run_command(app, "password_command", app->password_command,
					 &app->password, err, errlen);
			if (rc < 0)
				return rc;
			snprintf(app->cred_desc, sizeof(app->cred_desc),
				 "password_command of [app %s]", app->name);
		}
		app->cred = KUDU_CRED_BASIC;
		return 0;
	}
	if (env_user && *env_user && env_pass && cfg->napps == 1) {
		free(app->user);
		app->user = strdup(env_user);
		app->password = strdup(env_pass);
		if (!app->user || !app->password)
			return -ENOMEM;
		app->cred = KUDU_CRED_BASIC;
		snprintf(app->cred_desc, sizeof(app->cred_desc), "KUDUFS_USER/KUDUFS_PASSWORD");
		return 0;
	}
	{
		char *netrc = app->netrc_file ? strdup(app->netrc_file) : expand_home("~/.netrc");
		struct stat st;

		if (!netrc)
			return -ENOMEM;
		if (stat(netrc, &st) == 0) {
			rc = kudu_check_private_file(netrc, "netrc file", err, errlen);
			if (rc < 0) {
				free(netrc);
				return rc;
			}
			if (app->netrc_file)
				snprintf(app->cred_desc, sizeof(app->cred_desc), "netrc %s", netrc);
			else
				snprintf(app->cred_desc, sizeof(app->cred_desc), "~/.netrc");
			free(app->netrc_file);
			app->netrc_file = netrc;
			app->cred = KUDU_CRED_NETRC;
			return 0;
		}
		free(netrc);
	}
	app->cred = KUDU_CRED_NONE;
	snprintf(
		app->cred_desc, sizeof(app->cred_desc),
		"no credentials found: set user + password_file in [app %s], KUDUFS_USER/KUDUFS_PASSWORD, or ~/.netrc",
		app->name);
	return 0;
}

int kudu_config_resolve_credentials(struct kudu_config *cfg, char *err, size_t errlen)
{
	if (cfg->napps == 0) {
		set_err(err, errlen,
			"no apps configured: use --app NAME[=URL] or an [app NAME] section in %s",
			cfg->path ? cfg->path : "the config file");
		return -EINVAL;
	}
	for (size_t i = 0; i < cfg->napps; i++) {
		int rc = resolve_one(cfg, cfg->apps[i], err, errlen);
		if (rc < 0)
			return rc;
	}
	return 0;
}
