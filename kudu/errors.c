/*
 * The design's error table and URL building: pure functions, unit-tested.
 */
#include "kudu.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>

const char *kudu_status_reason(long status)
{
	/* clang-format off */
	switch (status) {
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 429: return "Too Many Requests";
	case 500: return "Internal Server Error";
	case 502: return "Bad Gateway";
	case 503: return "Service Unavailable";
	case 504: return "Gateway Timeout";
	default: return "HTTP error";
	}
	/* clang-format on */
}

bool kudu_status_is_retryable(long status)
{
	return status == 429 || status == 502 || status == 503;
}

bool kudu_text_says_timed_out(const char *text, size_t len)
{
	static const char needle[] = "timed out";
	const size_t n = sizeof(needle) - 1;

	/* bytes, not a C string: an error page may hold NULs or be cut mid-way */
	if (!text)
		return false;
	for (size_t i = 0; i + n <= len; i++) {
		size_t j = 0;

		while (j < n && tolower((unsigned char)text[i + j]) == needle[j])
			j++;
		if (j == n)
			return true;
	}
	return false;
}

bool kudu_status_says_no_monitor(long status, const char *message)
{
	/* KuduLite's LinuxProcessController: text/plain on every process route
	 * without dotnet-monitor (a JSON string on threads/modules/kill) */
	if (!message)
		return false;
	if (status == 400)
		return strstr(message, "Not supported on Linux") != NULL;
	if (status == 404)
		return strstr(message, "dotnet-monitor tool is not configured") != NULL;
	return false;
}

int kudu_errno_from_status(long status, const char *message)
{
	if (status >= 200 && status < 300)
		return 0;
	if (kudu_status_says_no_monitor(status, message))
		return -EOPNOTSUPP;
	switch (status) {
	case 401:
	case 403:
		return -EACCES;
	case 404:
		return -ENOENT;
	case 504:
		return -ETIMEDOUT;
	case 500:
		/* App Service's front end cuts requests at ~230 s: "Request Timed Out",
		 * "500 - The request timed out.", depending on the layer that answers */
		if (message && kudu_text_says_timed_out(message, strlen(message)))
			return -ETIMEDOUT;
		return -EIO;
	default:
		return -EIO;
	}
}

/* snprintf's result: 0, or -ENAMETOOLONG when buf was too short */
static int url_done(int n, size_t len)
{
	return (n < 0 || (size_t)n >= len) ? -ENAMETOOLONG : 0;
}

int kudu_url_list(const struct kudu_app *app, char *buf, size_t len)
{
	return url_done(snprintf(buf, len, "%s/api/processes", app->url), len);
}

int kudu_url_details(const struct kudu_app *app, int pid, char *buf, size_t len)
{
	return url_done(snprintf(buf, len, "%s/api/processes/%d", app->url, pid), len);
}

int kudu_url_proc_part(const struct kudu_app *app, int pid, const char *part, char *buf, size_t len)
{
	return url_done(snprintf(buf, len, "%s/api/processes/%d/%s", app->url, pid, part), len);
}

int kudu_url_dump(const struct kudu_app *app, int pid, enum kudu_dump_type type, char *buf,
		  size_t len)
{
	const struct kudu_dump_kind *k = kudu_dump_kind_of(type);
	enum kudu_platform p = kudu_app_platform(app);
	int n;

	if (!k || !kudu_dump_available(p, type))
		return -ENOENT;
	/* KuduLite reads type= and ignores dumpType= (it would answer its
	 * default, WithHeap, for any dumpType) */
	if (p == KUDU_PLATFORM_LINUX)
		n = snprintf(buf, len, "%s/api/processes/%d/dump?type=%s", app->url, pid,
			     k->linux_type);
	else
		n = snprintf(buf, len, "%s/api/processes/%d/dump?dumpType=%d", app->url, pid,
			     k->windows_dump_type);
	return url_done(n, len);
}

int kudu_url_settings(const struct kudu_app *app, char *buf, size_t len)
{
	return url_done(snprintf(buf, len, "%s/api/settings", app->url), len);
}
