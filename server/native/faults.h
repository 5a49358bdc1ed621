/* Page faults read from the userfaultfd: policy, held faults, resolution. */
#ifndef UFFD_HELPER_FAULTS_H
#define UFFD_HELPER_FAULTS_H

#include <stdint.h>

#include "json.h"

enum fault_kind { K_MISSING, K_WP, K_MINOR, K_NR };
enum stream_mode { STREAM_ALL, STREAM_HELD, STREAM_NONE };
enum resolve_how { HOW_DEFAULT, HOW_ZERO, HOW_WAKE };

struct policy {
	int hold[K_NR];
	int hold_next;
	enum stream_mode stream;
};

extern struct policy policy;
extern const char *const kind_names[K_NR];
extern const char *const stream_names[3];

/* Reads and handles a bounded batch of messages; -1 when the fd is unusable. */
int faults_read(int uffd);
void faults_policy_json(struct jbuf *b);
void faults_stats_json(struct jbuf *b);
/* These write the whole response, then the `resolved` events. */
void faults_cmd_resolve(int64_t id, uint64_t seq, enum resolve_how how);
void faults_cmd_resolve_all(int64_t id);
/* The program is gone: held faults have no thread left to wake. */
void faults_forget_all(void);

#endif
