/* Logging to stderr only: stdout carries protocol lines and nothing else. */
#ifndef UFFD_HELPER_LOG_H
#define UFFD_HELPER_LOG_H

#include <errno.h>
#include <string.h>

void log_init(void);
extern int log_debug_on;
void log_line(const char *level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define pr_err(fmt, ...)   log_line("error: ", fmt, ##__VA_ARGS__)
#define pr_warn(fmt, ...)  log_line("warning: ", fmt, ##__VA_ARGS__)
#define pr_info(fmt, ...)  log_line("", fmt, ##__VA_ARGS__)
#define pr_debug(fmt, ...) \
	do { if (log_debug_on) log_line("debug: ", fmt, ##__VA_ARGS__); } while (0)
/* Appends the errno text; errno is preserved for the caller. */
#define pr_perror(fmt, ...) \
	do { int __e = errno; \
	     log_line("error: ", fmt ": %s", ##__VA_ARGS__, strerror(__e)); \
	     errno = __e; } while (0)

#endif
