/*
 * The log sink: stderr until the daemon detaches, syslog after (log.h).
 */
#include "kudu/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/*
 * The one global in kudufs, on purpose: every module logs, from every
 * thread (FUSE workers, the transfer thread inside libcurl's callbacks, the
 * signal thread), mostly from functions that have no other reason to carry
 * a context; and where messages go is a property of the process anyway:
 * syslog's openlog() is process-wide, and stderr is /dev/null after
 * fuse_daemonize() for every thread alike. Both fields are set by main()
 * before the first thread starts; atomics only so that a late reader can
 * never see a torn value.
 */
static struct {
	atomic_bool debug;  /* -d: LOG_DEBUG lines and request/capture tracing */
	atomic_bool syslog; /* daemonized: syslog only */
} kudu_log_sink;

void kudu_log_init(int debug)
{
	atomic_store(&kudu_log_sink.debug, debug != 0);
	atomic_store(&kudu_log_sink.syslog, false);
}

void kudu_log_use_syslog(void)
{
	openlog("kudufs", LOG_PID, LOG_DAEMON);
	atomic_store(&kudu_log_sink.syslog, true);
}

bool kudu_log_tracing(void)
{
	return atomic_load(&kudu_log_sink.debug);
}

void kudu_log(int level, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	size_t n;
	int len;

	if (level >= LOG_DEBUG && !kudu_log_tracing())
		return;
	va_start(ap, fmt);
	len = vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (len < 0)
		return;
	n = strlen(msg);
	while (n > 0 && msg[n - 1] == '\n')
		msg[--n] = '\0';
	if (atomic_load(&kudu_log_sink.syslog)) {
		syslog(level, "%s", msg);
	} else {
		char line[sizeof(msg) + 16];
		int l = snprintf(line, sizeof(line), "kudufs: %s\n", msg);

		/* one write per line: lines from concurrent threads never interleave */
		if (l > 0 && write(STDERR_FILENO, line,
				   (size_t)l < sizeof(line) ? (size_t)l : sizeof(line) - 1) < 0)
			return;
	}
}
