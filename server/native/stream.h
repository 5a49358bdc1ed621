/* Auto-resolved faults streamed to the client in columns: the `faults` event. */
#ifndef UFFD_HELPER_STREAM_H
#define UFFD_HELPER_STREAM_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* One auto-resolved fault as streamed (see `faults` in docs/protocol.md). */
struct stream_fault {
	uint64_t seq, t, addr, page, psize, latency;
	pid_t tid, pid;		/* pid: the followed child, 0 for the program */
	int write;
	int kind;		/* enum fault_kind */
	const char *ioctl;	/* a name that outlives the batch (a string constant) */
};

/* Faults gathered before the helper writes a batch on its own. */
#define STREAM_MAX 2048

/* Gathers a fault; a full batch is written into `out` (and marked urgent) at once. */
void stream_add(const struct stream_fault *f);
/* Faults gathered and not yet written into `out`. */
size_t stream_pending(void);
/*
 * Writes the gathered faults into `out` as one `faults` event. Called before any other
 * protocol line is begun, so the faults keep their place among the helper's messages.
 */
void stream_flush(void);

#endif
