/* ptrace stops of the program's threads and processes; tracking of new mappings. */
#ifndef UFFD_HELPER_TRACER_H
#define UFFD_HELPER_TRACER_H

#include <stdint.h>
#include <sys/types.h>

#include "json.h"

/* Reaps every pending ptrace stop and exit (waitpid -1, WNOHANG) and resumes the threads. */
void tracer_reap(void);
void tracer_add(pid_t tid, int tracked);
/* 1 when tid is a thread the helper traces (a launched program and its children). */
int tracer_traces(pid_t tid);
/*
 * Stops one traced thread (tkill SIGSTOP: a PTRACE_TRACEME tracee has no PTRACE_INTERRUPT)
 * and waits for it, at most 2 s. 0: stopped, registers readable; tracer_resume_thread must
 * follow. -1 with errno (ESRCH not traced or gone, ETIMEDOUT).
 */
int tracer_stop_thread(pid_t tid);
/* Resumes it; the SIGSTOP is never delivered (a signal that stopped it first is). */
void tracer_resume_thread(pid_t tid);
/* A thread seized (not by the tracer loop) that has not stopped yet: detach it when it does. */
void tracer_detach_later(pid_t tid);
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
