/* ptrace stops of the program's threads and processes; tracking of new mappings. */
#ifndef UFFD_HELPER_TRACER_H
#define UFFD_HELPER_TRACER_H

#include <stdint.h>
#include <sys/types.h>

#include "json.h"

/* Reaps every pending ptrace stop and exit (waitpid -1, WNOHANG) and resumes the threads. */
void tracer_reap(void);
void tracer_add(pid_t tid, int tracked);
/* SIGKILLs every process the helper traces. */
void tracer_kill_all(void);
/*
 * Registers [start, end) for missing faults. With list, appends the Region to it (comma
 * separated); otherwise emits a `region` event. 0 on success.
 */
int track_register(uint64_t start, uint64_t end, const char *via, const char *name,
		   struct jbuf *list);
/* Registers the private anonymous VMAs of pid as listed in /proc/PID/maps. */
int track_register_maps(pid_t pid, struct jbuf *list);

#endif
