/* Starting a program under ptrace and planting a userfaultfd in it. */
#ifndef UFFD_HELPER_LAUNCH_H
#define UFFD_HELPER_LAUNCH_H

#include <sys/types.h>

struct launch_args {
	const char *path;	/* what execve gets */
	char *const *argv;
	char *const *envp;
	const char *cwd;	/* NULL: the helper's */
};

struct launch_err {
	int err;		/* errno value for the response code */
	char msg[768];
};

/*
 * Forks and executes a->path traced, with the mmap/mremap/brk seccomp trap installed.
 * On success *pid is stopped at the syscall-exit of its execve, and out[0]/out[1] are the
 * read ends of the pipes that are the program's stdout and stderr (its stdin is /dev/null).
 */
int launch_exec(const struct launch_args *a, pid_t *pid, int out[2], struct launch_err *e);

/*
 * Creates a userfaultfd inside the stopped pid and takes it over: returns the helper's
 * O_NONBLOCK copy with UFFDIO_API done for `features`; the program's copy is closed.
 */
int launch_take_uffd(pid_t pid, unsigned long long features, const char **source,
		     struct launch_err *e);
/* The same, injecting into thread tid (ptrace-stopped) of process pid. */
int launch_take_uffd_from(pid_t tid, pid_t pid, unsigned long long features,
			  const char **source, struct launch_err *e);

#endif
