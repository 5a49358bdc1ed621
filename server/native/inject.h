/* Running system calls inside a ptrace-stopped thread (x86_64). */
#ifndef UFFD_HELPER_INJECT_H
#define UFFD_HELPER_INJECT_H

#include <stdint.h>
#include <sys/types.h>
#include <sys/user.h>

#define INJECT_SCRATCH_WORDS 32
#define INJECT_MAX_SIGS 8

struct inject {
	pid_t pid;
	struct user_regs_struct saved;
	uint64_t syscall_ip;	/* address of a `syscall` instruction */
	int poked;		/* the instruction was written at rip: restore poke_word */
	uint64_t poke_addr;
	long poke_word;
	uint64_t scratch_addr;	/* below the red zone; words saved for restore */
	long scratch_save[INJECT_SCRATCH_WORDS];
	int scratch_n;
	int sigs[INJECT_MAX_SIGS];	/* signals that interrupted a step, queued again at the end */
	int nr_sigs;
};

/*
 * Called while an injected system call has not returned yet, when set: for a call that
 * waits for the helper itself (madvise raising a userfaultfd event the helper must read).
 */
extern void (*inject_idle)(void);

/* The thread must be in a ptrace stop. Saves its registers. */
int inject_begin(struct inject *in, pid_t pid);
/* Runs one system call; *ret is the raw return value (-errno on failure). */
int inject_syscall(struct inject *in, long nr, long a0, long a1, long a2, long a3,
		   long a4, long a5, long *ret);
/* Where inject_scratch() will write: known before, for data that points into itself. */
uint64_t inject_scratch_base(const struct inject *in);
/* Copies up to INJECT_SCRATCH_WORDS words onto the thread's stack, below rsp. */
int inject_scratch(struct inject *in, const void *data, size_t len, uint64_t *addr);
/*
 * Restores memory and registers exactly (a thread stopped inside a blocking system call then
 * restarts it when resumed) and queues again, with tgkill, the signals that arrived while
 * stepping; the thread stays stopped.
 */
int inject_end(struct inject *in);

#endif
