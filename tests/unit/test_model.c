/*
 * Unit tests for kudu/model.c: process list shapes, duplicates, details,
 * and the site/SCM rule. Prints "N passed, M failed"; exits non-zero on failure.
 */
#include "kudu/model.h"
#include "check.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* a string literal and its length */
#define B(s) (s), (sizeof(s) - 1)

static int parse(const char *json, struct kudu_proc_list *l)
{
	char err[256] = "";

	return kudu_model_parse_list(json, strlen(json), l, err, sizeof(err));
}

static void test_list_shapes(void)
{
	struct kudu_proc_list l;
	int rc;

	/* Kudu (Windows) */
	rc = parse("[{\"id\":4100,\"name\":\"w3wp\",\"machineName\":\"RD01\",\"href\":\"x\"},"
		   "{\"id\":4292,\"name\":\"w3wp\"}]",
		   &l);
	CHECK(rc == 0 && l.nprocs == 2 && l.procs[0].pid == 4100 &&
		      !strcmp(l.procs[0].name, "w3wp") && l.procs[0].machine &&
		      !strcmp(l.procs[0].machine, "RD01") && !l.procs[1].machine,
	      "kudu shape rc=%d n=%zu", rc, l.nprocs);
	kudu_model_list_free(&l);

	/* dotnet-monitor's items through KuduLite */
	rc = parse("[{\"pid\":1,\"uid\":\"a\",\"name\":\"dotnet\"}]", &l);
	CHECK(rc == 0 && l.nprocs == 1 && l.procs[0].pid == 1 && !strcmp(l.procs[0].name, "dotnet"),
	      "pid shape");
	kudu_model_list_free(&l);

	/* ARM: an envelope, fields in properties, identifier */
	rc = parse("{\"value\":[{\"id\":\"/subscriptions/x/processes/7\",\"properties\":"
		   "{\"identifier\":7,\"name\":\"php-cgi\"}}]}",
		   &l);
	CHECK(rc == 0 && l.nprocs == 1 && l.procs[0].pid == 7 &&
		      !strcmp(l.procs[0].name, "php-cgi"),
	      "ARM shape rc=%d n=%zu", rc, l.nprocs);
	kudu_model_list_free(&l);

	/* id wins over pid when both are integers */
	rc = parse("[{\"id\":5,\"pid\":6,\"name\":\"n\"}]", &l);
	CHECK(rc == 0 && l.nprocs == 1 && l.procs[0].pid == 5, "id first");
	kudu_model_list_free(&l);

	/* unusable items are skipped and counted */
	rc = parse("[{\"id\":-1,\"name\":\"a\"},{\"id\":4294967296,\"name\":\"b\"},{\"id\":3},"
		   "{\"name\":\"c\"},{\"id\":\"4\",\"name\":\"d\"},7,{\"id\":8,\"name\":\"ok\"}]",
		   &l);
	CHECK(rc == 0 && l.nprocs == 1 && l.skipped == 6 && l.procs[0].pid == 8,
	      "skipped n=%zu skipped=%zu", l.nprocs, l.skipped);
	kudu_model_list_free(&l);

	rc = parse("[]", &l);
	CHECK(rc == 0 && l.nprocs == 0 && l.skipped == 0 && l.duplicates == 0, "empty list");
	kudu_model_list_free(&l);
}

static void test_list_duplicates(void)
{
	struct kudu_proc_list l;
	int rc = parse(
		"[{\"id\":9,\"name\":\"first\"},{\"id\":3,\"name\":\"x\"},"
		"{\"id\":9,\"name\":\"second\"},{\"id\":3,\"name\":\"y\"},{\"id\":9,\"name\":\"third\"},"
		"{\"id\":1,\"name\":\"z\"}]",
		&l);

	CHECK(rc == 0 && l.nprocs == 3 && l.duplicates == 3, "n=%zu dups=%zu", l.nprocs,
	      l.duplicates);
	CHECK(l.nprocs == 3 && l.procs[0].pid == 9 && !strcmp(l.procs[0].name, "first") &&
		      l.procs[1].pid == 3 && !strcmp(l.procs[1].name, "x") && l.procs[2].pid == 1,
	      "the first of each pid, in server order");
	kudu_model_list_free(&l);
}

static void test_list_malformed(void)
{
	static const char *const bad[] = { "", "{", "{\"value\":3}", "\"x\"", "{\"a\":[]}", "null" };
	struct kudu_proc_list l;
	char err[256];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		int rc = kudu_model_parse_list(bad[i], strlen(bad[i]), &l, err, sizeof(err));

		CHECK(rc == -EIO && strstr(err, "malformed process list") && l.procs == NULL,
		      "'%s': rc=%d err=%s", bad[i], rc, err);
	}
}

static void test_details(void)
{
	static const char body[] = "{\"id\":4100,\"name\":\"w3wp\",\"is_scm_site\":true,"
				   "\"machineName\":\"RD01\",\"zeta\":1,\"alpha\":[1,2]}";
	struct kudu_details d;
	char err[256];
	int rc = kudu_model_parse_details(body, strlen(body), &d, err, sizeof(err));

	CHECK(rc == 0 && d.is_scm_site && d.machine && !strcmp(d.machine, "RD01"), "rc=%d", rc);
	CHECK(rc == 0 && d.len == strlen(d.json) && d.json[d.len - 1] == '\n' &&
		      strstr(d.json, "\n  \"id\": 4100,") &&
		      strstr(d.json, "\"zeta\"") < strstr(d.json, "\"alpha\""),
	      "pretty, key order kept: %s", d.json);
	kudu_model_details_free(&d);

	rc = kudu_model_parse_details(B("{\"id\":1,\"name\":\"w3wp\"}"), &d, err, sizeof(err));
	CHECK(rc == 0 && !d.is_scm_site && !d.machine, "absent is_scm_site is false");
	kudu_model_details_free(&d);

	rc = kudu_model_parse_details(B("{\"id\":1,\"is_scm_site\":\"true\"}"), &d, err,
				      sizeof(err));
	CHECK(rc == 0 && !d.is_scm_site, "only JSON true counts");
	kudu_model_details_free(&d);

	rc = kudu_model_parse_details(
		B("{\"properties\":{\"is_scm_site\":true,\"machineName\":\"M\"}}"), &d, err,
		sizeof(err));
	CHECK(rc == 0 && d.is_scm_site && d.machine && !strcmp(d.machine, "M") &&
		      strstr(d.json, "properties"),
	      "ARM details: fields in properties, the whole object shown");
	kudu_model_details_free(&d);

	rc = kudu_model_parse_details(B("[1]"), &d, err, sizeof(err));
	CHECK(rc == -EIO && strstr(err, "malformed process details") && !d.json,
	      "array is malformed");
	rc = kudu_model_parse_details(B("<html>"), &d, err, sizeof(err));
	CHECK(rc == -EIO && !d.json, "html is malformed");
}

static void test_roles(void)
{
	struct kudu_proc win[] = { { 1, "php-cgi", NULL },
				   { 2, "W3WP", NULL },
				   { 3, "dotnet", NULL } };
	struct kudu_proc linux_[] = { { 1, "node", NULL }, { 2, "dotnet", NULL } };
	struct kudu_proc none[] = { { 1, "node", NULL } };
	const char *h;

	h = kudu_model_role_holders(win, 3);
	CHECK(h && !strcmp(h, "w3wp"), "w3wp present: holders are w3wp");
	CHECK(kudu_model_role_of(h, "dotnet", false) == KUDU_ROLE_NONE,
	      "no fallback to dotnet with w3wp");
	CHECK(kudu_model_role_of(h, "w3wp", false) == KUDU_ROLE_SITE,
	      "w3wp without is_scm_site: site");
	CHECK(kudu_model_role_of(h, "w3wp", true) == KUDU_ROLE_SCM, "w3wp with is_scm_site: scm");
	CHECK(kudu_model_role_of(h, "php-cgi", false) == KUDU_ROLE_NONE, "others: none");

	h = kudu_model_role_holders(linux_, 2);
	CHECK(h && !strcmp(h, "dotnet"), "no w3wp: dotnet");
	CHECK(kudu_model_role_of(h, "DotNet", true) == KUDU_ROLE_SCM, "case-insensitive");

	CHECK(kudu_model_role_holders(none, 1) == NULL && kudu_model_role_holders(NULL, 0) == NULL,
	      "no holders");
	CHECK(kudu_model_role_of(NULL, "w3wp", false) == KUDU_ROLE_NONE, "NULL holders: none");
	CHECK(!strcmp(kudu_model_role_name(KUDU_ROLE_SITE), "site") &&
		      !strcmp(kudu_model_role_name(KUDU_ROLE_SCM), "scm") &&
		      !strcmp(kudu_model_role_name(KUDU_ROLE_NONE), ""),
	      "role names");
}

/* The items' shape is the platform's evidence (kudu_app_note_platform). */
static void test_list_platform(void)
{
	struct kudu_proc_list l;

	CHECK(parse("[{\"id\":1,\"name\":\"w3wp\",\"href\":\"h\"}]", &l) == 0 &&
		      l.platform == KUDU_PLATFORM_WINDOWS,
	      "Kudu's ProcessInfo: %d", l.platform);
	kudu_model_list_free(&l);
	CHECK(parse("[{\"pid\":85,\"uid\":\"u\",\"name\":\"dotnet\",\"isDefault\":true}]", &l) ==
			      0 &&
		      l.platform == KUDU_PLATFORM_LINUX && l.nprocs == 1 && l.procs[0].pid == 85,
	      "dotnet-monitor's items: %d", l.platform);
	kudu_model_list_free(&l);
	CHECK(parse("[]", &l) == 0 && l.platform == KUDU_PLATFORM_AUTO, "empty: no evidence");
	kudu_model_list_free(&l);
	CHECK(parse("[{\"id\":1,\"name\":\"a\"},{\"pid\":2,\"name\":\"b\"}]", &l) == 0 &&
		      l.platform == KUDU_PLATFORM_AUTO,
	      "mixed: no evidence");
	kudu_model_list_free(&l);
	CHECK(parse("{\"value\":[{\"properties\":{\"id\":4,\"name\":\"w3wp\"}}]}", &l) == 0 &&
		      l.platform == KUDU_PLATFORM_WINDOWS,
	      "ARM envelope of Kudu's items");
	kudu_model_list_free(&l);
}

static void test_pretty_json(void)
{
	char err[256] = "", *out = NULL;
	size_t len = 0;

	CHECK(kudu_model_pretty_json(B("[{\"id\":1,\"state\":\"Wait\",\"a\":2}]"), &out, &len, err,
				     sizeof(err)) == 0 &&
		      !strcmp(out,
			      "[\n  {\n    \"id\": 1,\n    \"state\": \"Wait\",\n    \"a\": 2\n  }\n]\n") &&
		      len == strlen(out),
	      "array, key order kept: %s", out ? out : err);
	free(out);
	CHECK(kudu_model_pretty_json(B("\"Not supported on Linux\""), &out, &len, err,
				     sizeof(err)) == -EIO &&
		      out == NULL,
	      "a bare string is no document");
	CHECK(kudu_model_pretty_json(B("[1,"), &out, &len, err, sizeof(err)) == -EIO, "cut");
}

int main(void)
{
	check_begin(NULL);
	test_list_platform();
	test_pretty_json();
	test_list_shapes();
	test_list_duplicates();
	test_list_malformed();
	test_details();
	test_roles();
	return check_end();
}
