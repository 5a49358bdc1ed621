/* Evicting pages of an attached process: saved, dropped, served back on the next touch. */
#ifndef UFFD_HELPER_EVICT_H
#define UFFD_HELPER_EVICT_H

#include <poll.h>
#include <stdint.h>

#include "json.h"

/* `evict {start, end}`: answered when the episode child is done (see evict_ready). */
void evict_cmd(int64_t id, const struct jval *req);
/* `zap {start, end}`: shared memory's page tables dropped (content stays in the page cache):
 * the next accesses are minor faults if the range is registered for them. Same answering. */
void zap_cmd(int64_t id, const struct jval *req);
/* The running episode's socket for the poll loop (*idx -1: none), and its answer. */
void evict_pollfd(struct pollfd *pfd, int *n, int *idx);
void evict_ready(const struct pollfd *pfd, int idx);
/* 1: a UFFD_EVENT_REMOVE of [start, end) is the eviction's own madvise. */
int evict_claims_remove(uint64_t start, uint64_t end);
/* The saved content of page on fd (the process's own userfaultfd), or NULL. */
const void *evict_saved(int fd, uint64_t page);
/* The page is back (or replaced by the user's choice): drop its saved copy. */
void evict_forget(int fd, uint64_t page);
/* The same for every page of [start, end) (munmap, mremap, madvise by the program, fill). */
void evict_forget_range(int fd, uint64_t start, uint64_t end);
uint64_t evict_count(void);
/* Detach (restore 1: put every saved page back first) or exit: the guardian leaves. */
void evict_end(int restore);

#endif
