/* Attaching to a running process, tracking its new mappings, and detaching. */
#ifndef UFFD_HELPER_ATTACH_H
#define UFFD_HELPER_ATTACH_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "json.h"

/*
 * Each writes its whole response (and events after it). `features` are the userfaultfd
 * features to negotiate.
 */
void attach_cmd_attach(int64_t id, const struct jval *req, uint64_t features);
void attach_cmd_track(int64_t id, const struct jval *req);
void attach_cmd_untrack(int64_t id, const struct jval *req);
void attach_cmd_detach(int64_t id);

/* A registered range was unmapped (to 0) or moved to `to` (mremap): what is registered. */
void attach_range_moved(uint64_t start, uint64_t end, uint64_t to);

/* 1 while a process is attached (not yet detached or exited). */
int attach_active(void);
/* Detaches quietly (end of input, shutdown): the process runs on as if never debugged. */
void attach_release(void);

/*
 * Runs fn in a child of the helper with every thread of the attached process stopped (fn
 * may inject system calls into tid). The child answers on *sk: an int (fn's result, or
 * -errno) and a message, then waits for one byte on *sk (or its close) before releasing the
 * threads and calling at_exit; the caller polls *sk and reaps *child. A killed helper cannot
 * leave a thread stopped or with borrowed registers: the child finishes on its own.
 */
int attach_episode(int (*fn)(pid_t pid, pid_t tid, void *arg, char *msg, size_t len),
		   void (*at_exit)(void *arg), void *arg, pid_t *child, int *sk, char *why,
		   size_t why_len);
/* 1 if all of [s, e) is registered through this helper. */
int attach_tracks(uint64_t s, uint64_t e);

enum { ATTACH_PFD_NR = 2 };
/* Adds the exit pidfd and the rescan timer to pfd at *n; idx gets the slots or -1. */
void attach_pollfds(struct pollfd *pfd, int *n, int idx[ATTACH_PFD_NR]);
/* Handles what poll reported: the process exited, or it is time to look for new mappings. */
void attach_ready(const struct pollfd *pfd, const int idx[ATTACH_PFD_NR]);

#endif
