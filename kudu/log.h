/*
 * kudu/log — where kudufs's messages go.
 *
 * In the foreground (and before the daemon detaches) messages go to stderr,
 * "kudufs: " first. After fuse_daemonize() stderr is /dev/null, so
 * kudu_log_use_syslog() sends them to syslog (ident "kudufs", LOG_DAEMON)
 * from then on. Levels are syslog's: LOG_ERR, LOG_WARNING, LOG_NOTICE,
 * LOG_INFO, LOG_DEBUG; LOG_DEBUG lines are written only with -d.
 *
 * Messages never contain a password, a token or a header value: callers
 * log URLs, statuses and errno text only.
 */
#ifndef KUDUFS_KUDU_LOG_H
#define KUDUFS_KUDU_LOG_H

#include <stdbool.h>
#include <syslog.h>

/* Start logging to stderr; debug != 0 turns on LOG_DEBUG and tracing (-d). */
void kudu_log_init(int debug);
/* After fuse_daemonize(): openlog("kudufs", LOG_PID, LOG_DAEMON), syslog only. */
void kudu_log_use_syslog(void);
void kudu_log(int level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* True with -d: callers trace requests and captures (kudu_log(LOG_DEBUG, ...)). */
bool kudu_log_tracing(void);

#endif
