/* /proc/PID/stat, read once: shared by attach (state, flags, comm) and fork following (start time). */
#ifndef UFFD_HELPER_PROCSTAT_H
#define UFFD_HELPER_PROCSTAT_H

#include <stddef.h>
#include <sys/types.h>

/*
 * Reads /proc/PID/stat into buf (NUL-terminated) and returns the ')' that closes the comm
 * field (the comm may hold spaces and parentheses, so the last one), or NULL when the process
 * does not exist or the text is not stat.
 */
char *procstat_read(pid_t pid, char *buf, size_t len);

#endif
