#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "errnames.h"
#include "inject.h"
#include "launch.h"
#include "log.h"
#include "uffd.h"

#ifndef __x86_64__
#error "uffd-helper launches x86_64 programs only"
#endif

/* What the child reports through the CLOEXEC pipe when it fails before exec. */
enum child_stage { ST_SIGNALS, ST_CHDIR, ST_FDS, ST_TRACEME, ST_NNP, ST_SECCOMP, ST_EXEC };

struct child_report {
	int stage;
	int err;
};

static void child_fail(int fd, int stage)
{
	struct child_report r = { stage, errno };

	if (write(fd, &r, sizeof(r)) < 0) {
		/* the parent then sees a bare exit */
	}
	_exit(127);
}

/* mmap, mremap and brk stop at the tracer (PTRACE_EVENT_SECCOMP); everything else runs. */
static int install_filter(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 0, 5),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mmap, 4, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_mremap, 3, 0),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_brk, 2, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRACE),
	};
	struct sock_fprog prog = { .len = sizeof(f) / sizeof(f[0]), .filter = f };

	return prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog, 0, 0);
}

static void close_fds_except(int keep)
{
	int fd, max;

	if (!syscall(SYS_close_range, 3, keep - 1, 0) &&
	    !syscall(SYS_close_range, keep + 1, ~0U, 0))
		return;
	max = sysconf(_SC_OPEN_MAX);
	for (fd = 3; fd < max; fd++)
		if (fd != keep)
			close(fd);
}

/* Runs in the child; never returns. No allocation: everything was prepared before fork. */
static void child(const struct launch_args *a, pid_t parent, int rep, int o, int e)
{
	sigset_t none;
	int n;

	sigemptyset(&none);
	if (sigprocmask(SIG_SETMASK, &none, NULL) || signal(SIGPIPE, SIG_DFL) == SIG_ERR)
		child_fail(rep, ST_SIGNALS);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) || getppid() != parent)
		_exit(127);
	if (a->cwd && chdir(a->cwd))
		child_fail(rep, ST_CHDIR);
	n = open("/dev/null", O_RDONLY);
	if (n < 0 || dup2(n, 0) < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
		child_fail(rep, ST_FDS);
	close_fds_except(rep);
	if (ptrace(PTRACE_TRACEME, 0, 0, 0))
		child_fail(rep, ST_TRACEME);
	if (geteuid() != 0 && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))
		child_fail(rep, ST_NNP);
	/* From here on mmap/brk need the tracer: nothing but raise and execve follows. */
	if (install_filter())
		child_fail(rep, ST_SECCOMP);
	raise(SIGSTOP);
	execve(a->path, a->argv, a->envp);
	child_fail(rep, ST_EXEC);
}

static void describe_child_failure(const struct launch_args *a, const struct child_report *r,
				   struct launch_err *e)
{
	const char *s = strerror(r->err);

	e->err = r->err;
	switch (r->stage) {
	case ST_CHDIR:
		snprintf(e->msg, sizeof(e->msg), "cannot change to the working directory '%s': %s",
			 a->cwd, s);
		break;
	case ST_FDS:
		snprintf(e->msg, sizeof(e->msg),
			 "cannot connect the program's stdin (/dev/null) and its stdout/stderr "
			 "pipes: %s", s);
		break;
	case ST_TRACEME:
		snprintf(e->msg, sizeof(e->msg),
			 "PTRACE_TRACEME failed: %s; check kernel.yama.ptrace_scope and that the "
			 "helper is not itself traced", s);
		break;
	case ST_NNP:
	case ST_SECCOMP:
		snprintf(e->msg, sizeof(e->msg),
			 "cannot install the seccomp filter that tracks mmap/brk: %s "
			 "(the kernel needs CONFIG_SECCOMP_FILTER)", s);
		break;
	case ST_EXEC:
		if (r->err == ENOENT)
			snprintf(e->msg, sizeof(e->msg),
				 "cannot execute '%s': %s (check the program path, or its ELF "
				 "interpreter if the file exists)", a->path, s);
		else if (r->err == EACCES)
			snprintf(e->msg, sizeof(e->msg),
				 "cannot execute '%s': %s (is it executable, not a directory, and "
				 "not on a noexec mount?)", a->path, s);
		else if (r->err == ENOEXEC)
			snprintf(e->msg, sizeof(e->msg),
				 "cannot execute '%s': %s (not an ELF executable or script with #!)",
				 a->path, s);
		else
			snprintf(e->msg, sizeof(e->msg), "cannot execute '%s': %s", a->path, s);
		break;
	default:
		snprintf(e->msg, sizeof(e->msg), "cannot prepare the program's process: %s", s);
	}
}

static int wait_stop(pid_t pid, int *st)
{
	while (waitpid(pid, st, __WALL) < 0) {
		if (errno != EINTR) {
			pr_perror("waitpid pid %d", pid);
			return -1;
		}
	}
	return 0;
}

int launch_exec(const struct launch_args *a, pid_t *pidp, int out[2], struct launch_err *e)
{
	const long opts = PTRACE_O_TRACEEXEC | PTRACE_O_TRACESECCOMP | PTRACE_O_TRACECLONE |
			  PTRACE_O_TRACEFORK | PTRACE_O_TRACEVFORK | PTRACE_O_EXITKILL |
			  PTRACE_O_TRACESYSGOOD;
	pid_t parent = getpid(), pid;
	struct child_report r;
	int p[2], po[2] = { -1, -1 }, pe[2] = { -1, -1 }, st;
	int stage = 0;	/* 0: initial SIGSTOP, 1: exec event, 2: execve exit */
	ssize_t n;

	if (pipe2(p, O_CLOEXEC)) {
		e->err = errno;
		snprintf(e->msg, sizeof(e->msg), "pipe2 failed: %s", strerror(errno));
		return -1;
	}
	/* The helper owns the program's output so it can order it with faults (output.c). */
	if (pipe2(po, O_CLOEXEC) || pipe2(pe, O_CLOEXEC)) {
		e->err = errno;
		snprintf(e->msg, sizeof(e->msg), "cannot create the program's output pipes: %s",
			 strerror(errno));
		pid = -1;
		goto close_pipes;
	}
	pid = fork();
	if (pid < 0) {
		e->err = errno;
		snprintf(e->msg, sizeof(e->msg), "fork failed: %s", strerror(errno));
		goto close_pipes;
	}
	if (pid == 0) {
		close(p[0]);
		child(a, parent, p[1], po[1], pe[1]);
	}
	close(p[1]);
	close(po[1]);
	close(pe[1]);
	po[1] = pe[1] = -1;

	while (stage < 2) {
		if (wait_stop(pid, &st))
			goto kill;
		if (WIFEXITED(st) || WIFSIGNALED(st)) {
			n = read(p[0], &r, sizeof(r));
			if (n == sizeof(r)) {
				describe_child_failure(a, &r, e);
			} else {
				e->err = ECHILD;
				if (WIFEXITED(st))
					snprintf(e->msg, sizeof(e->msg),
						 "the program's process exited with code %d before "
						 "running '%s'", WEXITSTATUS(st), a->path);
				else
					snprintf(e->msg, sizeof(e->msg),
						 "the program's process was killed by signal %d before "
						 "running '%s'", WTERMSIG(st), a->path);
			}
			close(p[0]);
			close(po[0]);
			close(pe[0]);
			return -1;
		}
		if (!WIFSTOPPED(st))
			continue;
		if (stage == 0 && WSTOPSIG(st) == SIGSTOP) {
			if (ptrace(PTRACE_SETOPTIONS, pid, 0, opts)) {
				e->err = errno;
				snprintf(e->msg, sizeof(e->msg), "PTRACE_SETOPTIONS on pid %d: %s",
					 pid, strerror(errno));
				goto kill;
			}
			stage = 1;
			if (ptrace(PTRACE_CONT, pid, 0, 0))
				goto ptrace_err;
		} else if (stage == 1 && (st >> 8) == (SIGTRAP | (PTRACE_EVENT_EXEC << 8))) {
			/* still inside execve: go to its syscall-exit stop before injecting */
			if (ptrace(PTRACE_SYSCALL, pid, 0, 0))
				goto ptrace_err;
			stage = 2;
			if (wait_stop(pid, &st))
				goto kill;
			if (!WIFSTOPPED(st) || WSTOPSIG(st) != (SIGTRAP | 0x80)) {
				e->err = EIO;
				snprintf(e->msg, sizeof(e->msg),
					 "pid %d: expected the execve exit stop, got status 0x%x", pid, st);
				goto kill;
			}
		} else {
			/* a signal before exec: deliver it */
			int sig = (st >> 16) ? 0 : WSTOPSIG(st);

			if (ptrace(PTRACE_CONT, pid, 0, sig))
				goto ptrace_err;
		}
	}
	close(p[0]);
	*pidp = pid;
	out[0] = po[0];
	out[1] = pe[0];
	return 0;

ptrace_err:
	e->err = errno;
	snprintf(e->msg, sizeof(e->msg), "ptrace on pid %d failed: %s", pid, strerror(errno));
kill:
	if (!e->msg[0]) {
		e->err = errno ? errno : EIO;
		snprintf(e->msg, sizeof(e->msg), "lost the program's process %d: %s", pid,
			 strerror(e->err));
	}
	kill(pid, SIGKILL);
	while (waitpid(pid, &st, __WALL) < 0 && errno == EINTR)
		;
close_pipes:
	close(p[0]);
	if (pid < 0)
		close(p[1]);
	if (po[0] >= 0)
		close(po[0]);
	if (po[1] >= 0)
		close(po[1]);
	if (pe[0] >= 0)
		close(pe[0]);
	if (pe[1] >= 0)
		close(pe[1]);
	return -1;
}

static int injected(struct inject *in, long nr, long a0, long a1, long a2, long *ret,
		    struct launch_err *e, const char *what)
{
	if (inject_syscall(in, nr, a0, a1, a2, 0, 0, 0, ret)) {
		e->err = errno;
		snprintf(e->msg, sizeof(e->msg), "cannot run %s inside pid %d: %s", what, in->pid,
			 strerror(errno));
		return -1;
	}
	return 0;
}

int launch_take_uffd(pid_t pid, unsigned long long features, const char **source,
		     struct launch_err *e)
{
	return launch_take_uffd_from(pid, pid, features, source, e);
}

int launch_take_uffd_from(pid_t tid, pid_t pid, unsigned long long features,
			  const char **source, struct launch_err *e)
{
	static const char dev_path[] = "/dev/userfaultfd";
	long tfd, dfd, r;
	uint64_t path_addr;
	struct inject in;
	int pidfd = -1, fd = -1, e1;

	if (inject_begin(&in, tid)) {
		e->err = errno;
		snprintf(e->msg, sizeof(e->msg), "cannot prepare syscall injection into pid %d: %s",
			 pid, strerror(errno));
		return -1;
	}
	/* The userfaultfd belongs to the mm of whoever creates it: the program must. */
	if (injected(&in, __NR_userfaultfd, O_CLOEXEC, 0, 0, &tfd, e, "userfaultfd(2)"))
		goto out;
	*source = "syscall";
	if (tfd < 0) {
		e1 = -tfd;
		pr_info("pid %d: userfaultfd(2) in the program failed (%s), trying /dev/userfaultfd",
			pid, strerror(e1));
		if (inject_scratch(&in, dev_path, sizeof(dev_path), &path_addr)) {
			e->err = errno;
			snprintf(e->msg, sizeof(e->msg), "cannot write to the stack of pid %d: %s",
				 pid, strerror(errno));
			goto out;
		}
		if (injected(&in, __NR_openat, AT_FDCWD, path_addr, O_RDWR | O_CLOEXEC, &dfd, e,
			     "openat(/dev/userfaultfd)"))
			goto out;
		if (dfd < 0 && e1 == EPERM && uffd_user_mode_only()) {
			/* the last resort the user accepted: user-mode faults only */
			if (injected(&in, __NR_userfaultfd, O_CLOEXEC | UFFD_USER_MODE_ONLY, 0, 0,
				     &tfd, e, "userfaultfd(2, UFFD_USER_MODE_ONLY)"))
				goto out;
			if (tfd >= 0) {
				*source = "user-mode-only";
				goto take;
			}
		}
		if (dfd < 0) {
			e->err = e1;
			snprintf(e->msg, sizeof(e->msg),
				 "the program cannot create a userfaultfd: userfaultfd(2) failed with "
				 "%s and opening /dev/userfaultfd failed with %s. Fix: run the program "
				 "as root, or `sysctl -w vm.unprivileged_userfaultfd=1`, or give its "
				 "user read/write access to /dev/userfaultfd. Last resort: "
				 "\"userModeOnly\": true (UFFD_USER_MODE_ONLY) traces only faults of "
				 "the program's own instructions; a system call that touches a tracked "
				 "missing page (read(2) into it, for one) then fails with EFAULT "
				 "instead of waiting, which changes what the program does",
				 errno_name(e1), errno_name((int)-dfd));
			goto out;
		}
		if (injected(&in, __NR_ioctl, dfd, USERFAULTFD_IOC_NEW, O_CLOEXEC, &tfd, e,
			     "ioctl(USERFAULTFD_IOC_NEW)"))
			goto out;
		injected(&in, __NR_close, dfd, 0, 0, &r, e, "close");
		if (tfd < 0) {
			e->err = (int)-tfd;
			snprintf(e->msg, sizeof(e->msg),
				 "USERFAULTFD_IOC_NEW on /dev/userfaultfd inside pid %d failed: %s",
				 pid, strerror(e->err));
			goto out;
		}
		*source = "dev";
	}

take:
	pidfd = syscall(SYS_pidfd_open, pid, 0);
	if (pidfd >= 0)
		fd = syscall(SYS_pidfd_getfd, pidfd, (int)tfd, 0);
	if (fd < 0) {
		e->err = errno;
		snprintf(e->msg, sizeof(e->msg),
			 "cannot take the userfaultfd (fd %ld) from pid %d with pidfd_getfd: %s "
			 "(needs Linux 5.6 and ptrace access to the program)", tfd, pid,
			 strerror(errno));
		pr_perror("pidfd_getfd fd %ld from pid %d", tfd, pid);
	}
	/* The helper's copy must be the only one: the program never sees a userfaultfd. */
	if (injected(&in, __NR_close, tfd, 0, 0, &r, e, "close") || r < 0)
		pr_err("pid %d: closing the program's userfaultfd %ld failed (%ld)", pid, tfd, r);
out:
	if (inject_end(&in) && fd >= 0) {
		e->err = errno;
		snprintf(e->msg, sizeof(e->msg), "cannot restore pid %d after injection: %s", pid,
			 strerror(errno));
		close(fd);
		fd = -1;
	}
	if (pidfd >= 0)
		close(pidfd);
	if (fd < 0)
		return -1;
	if (fcntl(fd, F_SETFL, O_NONBLOCK) || uffd_api(fd, features, NULL, NULL)) {
		e->err = errno;
		snprintf(e->msg, sizeof(e->msg),
			 "cannot set up the userfaultfd of pid %d (fd %d): %s", pid, fd,
			 strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}
