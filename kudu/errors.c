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

int kudu_errno_from_status(long status, const char *message)
{
	if (status >= 200 && status < 300)
		return 0;
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

static int fmt_url(char *buf, size_t len, const char *fmt, const char *root, int pid, int type)
{
	int n = snprintf(buf, len, fmt, root, pid, type);

	return (n < 0 || (size_t)n >= len) ? -ENAMETOOLONG : 0;
}

int kudu_url_list(const struct kudu_app *app, char *buf, size_t len)
{
	return fmt_url(buf, len, "%s/api/processes", app->url, 0, 0);
}

int kudu_url_details(const struct kudu_app *app, int pid, char *buf, size_t len)
{
	return fmt_url(buf, len, "%s/api/processes/%d", app->url, pid, 0);
}

int kudu_url_dump(const struct kudu_app *app, int pid, enum kudu_dump_type type, char *buf,
		  size_t len)
{
	return fmt_url(buf, len, "%s/api/processes/%d/dump?dumpType=%d", app->url, pid, (int)type);
}
