#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"

int log_debug_on;
static char prefix[48];

void log_init(void)
{
	const char *d = getenv("UFFD_HELPER_DEBUG");

	log_debug_on = d && *d && *d != '0';
	snprintf(prefix, sizeof(prefix), "uffd-helper[%d]: ", (int)getpid());
}

/* One write(2) per line so lines from several processes do not interleave. */
void log_line(const char *level, const char *fmt, ...)
{
	char line[1024];
	int e = errno, n, m;
	va_list ap;

	n = snprintf(line, sizeof(line), "%s%s", prefix, level);
	if (n < 0 || n >= (int)sizeof(line))
		n = 0;
	va_start(ap, fmt);
	m = vsnprintf(line + n, sizeof(line) - n - 1, fmt, ap);
	va_end(ap);
	if (m < 0)
		m = 0;
	n += m;
	if (n > (int)sizeof(line) - 2)
		n = sizeof(line) - 2;
	line[n++] = '\n';
	if (write(STDERR_FILENO, line, n) < 0) {
		/* nowhere left to report it */
	}
	errno = e;
}
