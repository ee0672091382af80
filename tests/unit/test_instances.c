/*
 * Unit tests for the instances of a scaled-out app: the config keys
 * (instances, arm_resource, arm_endpoint, arm_token_command), the ARM and
 * /instance/all parsers, the URLs, and the ARM token's generations.
 * Prints one line per failed check and "N passed, M failed".
 */
#include "kudu/kudu.h"
#include "check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Load content; returns rc, err in err. cfg is left loaded for the caller. */
static int load(struct kudu_config *cfg, const char *name, const char *content, char *err,
		size_t len)
{
	kudu_config_init(cfg);
	err[0] = '\0';
	return kudu_config_load(cfg, write_file(name, content, 0600), true, err, len);
}

static void expect_error(const char *name, const char *content, const char *want_line,
			 const char *want)
{
	struct kudu_config cfg;
	char err[KUDU_ERRLEN], prefix[600];
	int rc = load(&cfg, name, content, err, sizeof(err));

	snprintf(prefix, sizeof(prefix), "%s/%s:%s:", tmpdir, name, want_line);
	CHECK(rc < 0 && strstr(err, prefix) && strstr(err, want),
	      "%s: rc=%d err='%s' want '%s' '%s'", name, rc, err, prefix, want);
	kudu_config_free(&cfg);
}

static void test_config_instances(void)
{
	struct kudu_config cfg;
	char err[KUDU_ERRLEN];
	struct kudu_app *a;

	CHECK(load(&cfg, "i1.conf",
		   "[app a]\nurl = http://127.0.0.1:1\ninstances = aa01, bb02,cc03  dd04,aa01\n",
		   err, sizeof(err)) == 0,
	      "%s", err);
	a = cfg.napps ? cfg.apps[0] : NULL;
	CHECK(a && a->ninstances == 4 && !strcmp(a->instances[0], "aa01") &&
		      !strcmp(a->instances[1], "bb02") && !strcmp(a->instances[2], "cc03") &&
		      !strcmp(a->instances[3], "dd04"),
	      "commas and blanks separate, duplicates once: n=%zu", a ? a->ninstances : 0);
	kudu_config_free(&cfg);

	expect_error("i2.conf", "[app a]\n\ninstances = aa01, b;c\n", "3",
		     "'b;c' is not an instance id");
	expect_error("i3.conf", "[app a]\ninstances = , ,\n", "2", "instances of [app a] is empty");
	expect_error("i4.conf", "[app a]\ninstances = ..\n", "2", "not an instance id");
	expect_error("i5.conf", "[kudufs]\ninstances = aa\n", "2", "unknown option 'instances'");
	{
		char big[300];

		memset(big, 'a', 200);
		big[200] = '\0';
		char content[400];
		snprintf(content, sizeof(content), "[app a]\ninstances = %s\n", big);
		expect_error("i6.conf", content, "2", "not an instance id");
	}
	CHECK(kudu_instance_id_is_valid("0a1B-_.z") && !kudu_instance_id_is_valid("") &&
		      !kudu_instance_id_is_valid(".") && !kudu_instance_id_is_valid("a/b") &&
		      !kudu_instance_id_is_valid("a b") && !kudu_instance_id_is_valid("a=b") &&
		      !kudu_instance_id_is_valid(NULL),
	      "instance id rule");
}

static void test_config_arm(void)
{
	struct kudu_config cfg;
	char err[KUDU_ERRLEN];
	const char *res =
		"/subscriptions/0000-11/resourceGroups/rg-1/providers/Microsoft.Web/sites/myfunc";
	char content[1024];

	snprintf(
		content, sizeof(content),
		"[kudufs]\narm_endpoint = http://127.0.0.1:9/arm/\n"
		"[app a]\nurl = http://127.0.0.1:1\narm_resource = %s\narm_token_command = echo t\n"
		"[app b]\nurl = http://127.0.0.1:1\ntoken_command = echo kt\n"
		"arm_resource = %s/slots/staging/\narm_endpoint = https://arm.example\n"
		"[app c]\nurl = http://127.0.0.1:1\n",
		res, res);
	CHECK(load(&cfg, "a1.conf", content, err, sizeof(err)) == 0, "%s", err);
	CHECK(cfg.napps == 3 && !strcmp(cfg.apps[0]->arm_resource, res) &&
		      !strcmp(cfg.apps[0]->arm_token_command, "echo t") &&
		      !cfg.apps[0]->arm_endpoint,
	      "arm keys of [app a]");
	CHECK(cfg.napps == 3 && !strcmp(cfg.apps[1]->arm_endpoint, "https://arm.example") &&
		      strstr(cfg.apps[1]->arm_resource, "/slots/staging") &&
		      cfg.apps[1]->arm_resource[strlen(cfg.apps[1]->arm_resource) - 1] != '/',
	      "slot resource, trailing '/' dropped, section endpoint");
	CHECK(cfg.arm_endpoint && !strcmp(cfg.arm_endpoint, "http://127.0.0.1:9/arm"),
	      "global endpoint: %s", cfg.arm_endpoint ? cfg.arm_endpoint : "(null)");
	unsetenv("KUDUFS_USER");
	CHECK(kudu_config_resolve_credentials(&cfg, err, sizeof(err)) == 0, "resolve: %s", err);
	CHECK(!strcmp(cfg.apps[0]->arm_endpoint, "http://127.0.0.1:9/arm") &&
		      !strcmp(cfg.apps[1]->arm_endpoint, "https://arm.example") &&
		      !strcmp(cfg.apps[2]->arm_endpoint, "http://127.0.0.1:9/arm"),
	      "effective endpoint: section, else [kudufs]");
	{
		char url[1024];

		CHECK(kudu_url_arm_instances(cfg.apps[0], url, sizeof(url)) == 0 &&
			      !strcmp(url,
				      "http://127.0.0.1:9/arm/subscriptions/0000-11/resourceGroups/rg-1/providers/"
				      "Microsoft.Web/sites/myfunc/instances?api-version=2024-11-01"),
		      "ARM url: %s", url);
		CHECK(kudu_url_arm_instances(cfg.apps[2], url, sizeof(url)) == -EINVAL,
		      "no arm_resource");
		CHECK(kudu_url_instance_all(cfg.apps[2], url, sizeof(url)) == 0 &&
			      !strcmp(url, "http://127.0.0.1:1/instance/all"),
		      "instance/all url: %s", url);
	}
	kudu_config_free(&cfg);

	/* the default endpoint */
	CHECK(load(&cfg, "a2.conf", "[app a]\nurl = http://127.0.0.1:1\n", err, sizeof(err)) == 0,
	      "%s", err);
	CHECK(kudu_config_resolve_credentials(&cfg, err, sizeof(err)) == 0 &&
		      !strcmp(cfg.apps[0]->arm_endpoint, "https://management.azure.com"),
	      "default endpoint");
	kudu_config_free(&cfg);

	expect_error(
		"a3.conf", "[app a]\narm_resource = /subscriptions/s/resourceGroups/rg/sites/x\n",
		"2",
		"arm_resource of [app a] must be /subscriptions/S/resourceGroups/RG/providers/Microsoft.Web/sites/NAME");
	expect_error(
		"a4.conf",
		"[app a]\narm_resource = /subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/x/config/web\n",
		"2", "arm_resource of [app a] must be");
	expect_error(
		"a5.conf",
		"[app a]\narm_resource = /subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/x?api-version=1\n",
		"2", "arm_resource of [app a] must be");
	expect_error("a6.conf", "[kudufs]\narm_endpoint = ftp://x\n", "2",
		     "arm_endpoint: 'ftp://x' must be");
	expect_error("a7.conf", "[app a]\n\narm_endpoint = https://u:p@arm.example\n", "3",
		     "arm_endpoint of [app a]");
	expect_error("a8.conf", "[app a]\narm_endpoint = https://arm.example/?x=1\n", "2",
		     "without credentials or query");

	/* arm_resource without any token command: named with its line after parsing */
	CHECK(load(&cfg, "a9.conf",
		   "[app a]\nurl = http://127.0.0.1:1\n\narm_resource = /subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/x\n",
		   err, sizeof(err)) == 0,
	      "%s", err);
	{
		char want[600];

		snprintf(want, sizeof(want),
			 "%s/a9.conf:4: arm_resource of [app a] needs a bearer token", tmpdir);
		CHECK(kudu_config_resolve_credentials(&cfg, err, sizeof(err)) == -EINVAL &&
			      strstr(err, want),
		      "no token command: '%s'", err);
	}
	kudu_config_free(&cfg);
}

/* The ARM token: arm_token_command's own, else token_command's shared one;
 * a 401 seen by several requests re-runs the command once. */
static void test_arm_token(void)
{
	struct kudu_config cfg;
	char err[KUDU_ERRLEN], content[1024], *h;
	char *counter = write_file("count", "", 0600);
	unsigned gen = 0, gen2 = 0;

	snprintf(
		content, sizeof(content),
		"[app a]\nurl = http://127.0.0.1:1\narm_resource = /subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/x\n"
		"arm_token_command = echo run >> %s; echo arm-tok-$(wc -l < %s)\n"
		"[app b]\nurl = http://127.0.0.1:1\ntoken_command = echo shared-tok\n"
		"arm_resource = /subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/y\n",
		counter, counter);
	CHECK(load(&cfg, "t1.conf", content, err, sizeof(err)) == 0, "%s", err);
	CHECK(kudu_config_resolve_credentials(&cfg, err, sizeof(err)) == 0, "%s", err);
	CHECK(kudu_app_bearer(cfg.apps[0], true, &gen) == NULL,
	      "no ARM token before the first refresh");
	CHECK(kudu_app_refresh_arm_token(cfg.apps[0], 0, err, sizeof(err)) == 0, "%s", err);
	h = kudu_app_bearer(cfg.apps[0], true, &gen);
	CHECK(h && !strcmp(h, "Authorization: Bearer arm-tok-1"), "first: %s", h ? h : "(null)");
	free(h);
	/* two requests saw a 401 with generation gen: the second refresh is a no-op */
	CHECK(kudu_app_refresh_arm_token(cfg.apps[0], gen, err, sizeof(err)) == 0, "%s", err);
	CHECK(kudu_app_refresh_arm_token(cfg.apps[0], gen, err, sizeof(err)) == 0, "%s", err);
	h = kudu_app_bearer(cfg.apps[0], true, &gen2);
	CHECK(h && !strcmp(h, "Authorization: Bearer arm-tok-2") && gen2 == gen + 1,
	      "refreshed once: %s", h ? h : "(null)");
	free(h);
	/* the ARM token is not the Kudu one: app a has no Kudu token */
	h = kudu_app_bearer(cfg.apps[0], false, NULL);
	CHECK(h == NULL, "Kudu bearer of a without token_command");
	free(h);
	/* b shares token_command's token for ARM */
	h = kudu_app_bearer(cfg.apps[1], true, NULL);
	CHECK(h && !strcmp(h, "Authorization: Bearer shared-tok"), "shared: %s", h ? h : "(null)");
	free(h);
	kudu_config_free(&cfg);

	/* a failing command: an error that names the key, not a token */
	CHECK(load(&cfg, "t2.conf",
		   "[app a]\nurl = http://127.0.0.1:1\narm_resource = /subscriptions/s/resourceGroups/rg/providers/Microsoft.Web/sites/x\n"
		   "arm_token_command = exit 3\n",
		   err, sizeof(err)) == 0,
	      "%s", err);
	CHECK(kudu_config_resolve_credentials(&cfg, err, sizeof(err)) == 0, "%s", err);
	CHECK(kudu_app_refresh_arm_token(cfg.apps[0], 0, err, sizeof(err)) == -EACCES &&
		      strstr(err, "arm_token_command failed (exit status 3)"),
	      "failing command: %s", err);
	kudu_config_free(&cfg);
}

static void test_parse_arm(void)
{
	struct kudu_instances l = { 0 };
	char err[KUDU_ERRLEN] = "", *next = NULL;
	const char *page1 =
		"{\"value\":[{\"id\":\"/subscriptions/s/.../instances/aa01\",\"name\":\"aa01\","
		"\"type\":\"Microsoft.Web/sites/instances\",\"properties\":{\"state\":\"READY\"}},"
		"{\"name\":\"site/bb02\"},{\"name\":\"bad id;x\"},{\"id\":\"no-name\"},{\"name\":\"aa01\"}],"
		"\"nextLink\":\"https://management.azure.com/subscriptions/s/x?api-version=2024-11-01&$skiptoken=2\"}";
	const char *page2 = "{\"value\":[{\"name\":\"cc03\"}],\"nextLink\":null}";

	CHECK(kudu_instances_parse_arm(&l, page1, strlen(page1), &next, err, sizeof(err)) == 0,
	      "%s", err);
	CHECK(l.n == 2 && !strcmp(l.ids[0], "aa01") && !strcmp(l.ids[1], "bb02"),
	      "names, '<site>/<id>', invalid and duplicate skipped: n=%zu", l.n);
	CHECK(next && strstr(next, "$skiptoken=2"), "nextLink");
	free(next);
	CHECK(kudu_instances_parse_arm(&l, page2, strlen(page2), &next, err, sizeof(err)) == 0 &&
		      !next && l.n == 3 && !strcmp(l.ids[2], "cc03"),
	      "last page appends, null nextLink ends");
	CHECK(kudu_instances_parse_arm(&l, "[]", 2, &next, err, sizeof(err)) == -EIO &&
		      strstr(err, "value"),
	      "no value array: %s", err);
	CHECK(kudu_instances_parse_arm(&l, "{x", 2, &next, err, sizeof(err)) == -EIO, "malformed");
	CHECK(l.n == 3, "errors add nothing");
	kudu_instances_free(&l);
	CHECK(l.n == 0 && !l.ids, "freed");
}

static void test_parse_all(void)
{
	struct kudu_instances l = { 0 };
	char err[KUDU_ERRLEN] = "";
	const char *body = "[\"aa01\", \"bb02\", 7, \"a/b\", {\"name\": \"cc03\"}, \"aa01\"]";

	CHECK(kudu_instances_parse_all(&l, body, strlen(body), err, sizeof(err)) == 0 && l.n == 3 &&
		      !strcmp(l.ids[0], "aa01") && !strcmp(l.ids[1], "bb02") &&
		      !strcmp(l.ids[2], "cc03"),
	      "strings (and {name}), invalid and duplicate skipped: n=%zu", l.n);
	CHECK(kudu_instances_parse_all(&l, "{}", 2, err, sizeof(err)) == -EIO &&
		      strstr(err, "not a JSON array"),
	      "object: %s", err);
	CHECK(kudu_instances_parse_all(&l, "<html>", 6, err, sizeof(err)) == -EIO, "html page");
	kudu_instances_free(&l);
	CHECK(kudu_instances_parse_all(&l, "[]", 2, err, sizeof(err)) == 0 && l.n == 0,
	      "empty array");
	kudu_instances_free(&l);
	CHECK(!strcmp(kudu_instances_source_name(KUDU_INST_ARM), "ARM") &&
		      !strcmp(kudu_instances_source_name(KUDU_INST_KUDU), "Kudu") &&
		      !strcmp(kudu_instances_source_name(KUDU_INST_CONFIG), "config") &&
		      !strcmp(kudu_instances_source_name(KUDU_INST_SEEN), "seen"),
	      "source names");
}

int main(void)
{
	if (check_begin("inst") < 0)
		return 2;
	test_config_instances();
	test_config_arm();
	test_arm_token();
	test_parse_arm();
	test_parse_all();
	return check_end();
}
