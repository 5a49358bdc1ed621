/*
 * /proc/PID/stat, read once: shared by attach (state, flags, comm) and fork following (start
 * time); /proc/PID/maps, walked line by line for attach and for exec tracking.
 */
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

/* One line of /proc/PID/maps. */
struct maps_line {
	unsigned long s, e, ino;
	char perms[8];
	char name[4096];
};

/*
 * Calls fn for every line of /proc/PID/maps, in order, until it returns nonzero. Returns 0,
 * fn's nonzero value, or -1 (with the reason logged) when the file cannot be opened.
 */
int maps_for_each(pid_t pid, int (*fn)(const struct maps_line *m, void *arg), void *arg);

#endif
