/* Page faults read from the userfaultfd: policy, held faults, resolution. */
#ifndef UFFD_HELPER_FAULTS_H
#define UFFD_HELPER_FAULTS_H

#include <poll.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "json.h"

enum fault_kind { K_MISSING, K_WP, K_MINOR, K_NR };
enum stream_mode { STREAM_ALL, STREAM_HELD, STREAM_NONE };
enum resolve_how {
	HOW_DEFAULT, HOW_ZERO, HOW_WAKE, HOW_COPY, HOW_CONTINUE, HOW_UNPROTECT, HOW_MOVE,
	HOW_POISON, HOW_NR
};

#define POLICY_MAX_LIST 32

struct hold_range {
	uint64_t start, end;
};

struct policy {
	int hold[K_NR];
	int hold_next;
	enum stream_mode stream;
	uint64_t read_ahead;		/* pages per auto-resolved missing fault, 0/1: just one */
	uint64_t delay_min_us, delay_max_us;	/* 0/0: resolve at once */
	struct hold_range hold_range[POLICY_MAX_LIST];
	size_t nr_hold_range;		/* 0: anywhere */
	pid_t hold_tid[POLICY_MAX_LIST];
	size_t nr_hold_tid;		/* 0: any thread */
	uint64_t hold_every;		/* 0/1: every matching fault */
	unsigned hold_after;		/* bits of nc_names: hold the next fault after such an event */
};

extern struct policy policy;
extern const char *const kind_names[K_NR];
extern const char *const stream_names[3];

/* Children followed at once after UFFD_EVENT_FORK (followForks); two poll fds each. */
#define FAULTS_MAX_KIDS 8
enum { FAULTS_PFD_NR = 2 * FAULTS_MAX_KIDS };

/*
 * Reads and handles a bounded batch of messages (faults and non-cooperative events) from
 * the program's or a followed child's userfaultfd; -1 when the fd is unusable.
 */
int faults_read(int uffd);
/* Followed children: their userfaultfds and pidfds for the poll loop, and their handling. */
void faults_pollfds(struct pollfd *pfd, int *n, int idx[FAULTS_PFD_NR]);
void faults_ready(const struct pollfd *pfd, const int idx[FAULTS_PFD_NR]);
/* Parses the policy fields faults.c owns (readAhead, delayUs, holdRange, holdTid,
 * holdEvery) into p; on error writes the response for id and returns -1. */
int faults_policy_parse(int64_t id, const struct jval *req, struct policy *p);
void faults_policy_json(struct jbuf *b);
void faults_stats_json(struct jbuf *b);
/* These write the whole response, then the `resolved` events. */
void faults_cmd_resolve(int64_t id, const struct jval *req);
void faults_cmd_resolve_all(int64_t id);
/* `fill`: UFFDIO_COPY into missing pages with no held fault. */
void faults_cmd_fill(int64_t id, const struct jval *req);
/* The thread of held fault seq and its followed child (0: the program); -1: not held. */
int faults_held_thread(uint64_t seq, pid_t *tid, pid_t *pid);
/* The program is gone: held faults have no thread left to wake; followed children are
 * released (their userfaultfds closed). */
void faults_forget_all(void);
/* Delayed auto-resolution (policy delayUs): a timerfd for the poll loop, and its handler. */
int faults_timer_fd(void);
void faults_timer_fire(void);

#endif
