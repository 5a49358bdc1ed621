/* The one program a helper runs, and the protocol output stream. */
#ifndef UFFD_HELPER_SESSION_H
#define UFFD_HELPER_SESSION_H

#include <stdint.h>
#include <sys/types.h>

#include "json.h"

struct session {
	int hello_done;
	pid_t pid;		/* launched program (thread-group leader), 0 before launch */
	int running;		/* `run` was accepted */
	int alive;		/* launched and not yet reaped */
	int mm_lost;		/* the program exec'd again: the userfaultfd is for its old mm */
	int uffd;		/* the helper's copy of the program's userfaultfd, or -1 */
	const char *uffd_source;
	uint64_t uffd_features;	/* negotiated */
	int brk_known;
	uint64_t last_brk;
	uint64_t nr_regions;
};

extern struct session sess;
/* Protocol lines, flushed to stdout once per event-loop iteration. */
extern struct jbuf out;
/* Set by anything but a streamed auto-resolved fault: flush at the end of this iteration. */
extern int out_urgent;

#define PAGE_SZ 4096ULL
#define PAGE_DOWN(x) ((x) & ~(PAGE_SZ - 1))
#define PAGE_UP(x) (((x) + PAGE_SZ - 1) & ~(PAGE_SZ - 1))

uint64_t now_ns(void);

/* Wire format: {"type":"response","id":N,"ok":true,"body":<written by caller>} */
void resp_ok_begin(int64_t id);
void resp_ok_end(void);
void resp_ok_empty(int64_t id);
/* Wire format: {"type":"response","id":N,"ok":false,"error":{"code":"..","message":".."}} */
void resp_err(int64_t id, const char *code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
/* Wire format: {"type":"event","event":"<name>", <fields written by caller>} */
void ev_begin(const char *name);
void ev_end(void);

#endif
