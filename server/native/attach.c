/*
 * attach: plant a userfaultfd in a process that is already running, without keeping it under
 * ptrace. Setup seizes every thread (PTRACE_SEIZE + PTRACE_INTERRUPT), injects userfaultfd(2)
 * into one of them (launch.c / inject.c), registers the selected mappings and releases all
 * threads with PTRACE_DETACH: from then on only the userfaultfd ties the helper to the process.
 * New mappings are found by re-reading /proc/PID/maps (on `track`, and every 250 ms when the
 * selection is "all private anonymous memory"); the exit is seen on a pidfd.
 * No seccomp filter here: it could not be removed at detach.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>

#include "attach.h"
#include "errnames.h"
#include "evict.h"
#include "faults.h"
#include "launch.h"
#include "log.h"
#include "session.h"
#include "stream.h"
#include "procstat.h"
#include "tracer.h"
#include "uffd.h"

#define SCAN_INTERVAL_MS 250
#define STOP_TIMEOUT_MS 3000
#define PF_KTHREAD 0x00200000

struct range {
	uint64_t s, e;
};

/* A set of disjoint, sorted ranges. */
struct rset {
	struct range *r;
	size_t n, cap;
};

enum sel_kind { SEL_ANON, SEL_NAMES, SEL_RANGES };

/* Points into the request; valid while it is handled. */
struct selector {
	enum sel_kind kind;
	const struct jval *list;	/* names: strings; ranges: {start, end} */
	struct range *ranges;		/* SEL_RANGES, parsed and page-aligned */
};

struct vma {
	uint64_t s, e;
	char perms[8];
	unsigned long ino;
	char name[256];
};

struct thr {
	pid_t tid;
	int stopped;
	int gone;
	int sig;		/* stopped for this signal: delivered at PTRACE_DETACH */
};

static struct {
	int active;
	pid_t pid;
	int pidfd;
	int timerfd;
	struct rset reg;	/* registered through this helper */
	struct rset busy;	/* owned by another userfaultfd (the process's own): skipped */
} at = { .pidfd = -1, .timerfd = -1 };

/* ---- range sets ---------------------------------------------------------------------- */

static int rset_add(struct rset *set, uint64_t s, uint64_t e)
{
	size_t i, j;

	if (set->n == set->cap) {
		size_t cap = set->cap ? set->cap * 2 : 32;
		struct range *r = realloc(set->r, cap * sizeof(*r));

		if (!r) {
			pr_perror("attach: cannot remember range %#llx-%#llx",
				  (unsigned long long)s, (unsigned long long)e);
			return -1;
		}
		set->r = r;
		set->cap = cap;
	}
	for (i = 0; i < set->n && set->r[i].e < s; i++)
		;
	/* ranges i.. that touch [s, e) merge into it */
	for (j = i; j < set->n && set->r[j].s <= e; j++) {
		if (set->r[j].s < s)
			s = set->r[j].s;
		if (set->r[j].e > e)
			e = set->r[j].e;
	}
	memmove(&set->r[i + 1], &set->r[j], (set->n - j) * sizeof(set->r[0]));
	set->n -= j - i;
	set->n++;
	set->r[i] = (struct range){ s, e };
	return 0;
}

static int rset_covers(const struct rset *set, uint64_t s, uint64_t e)
{
	size_t i;

	for (i = 0; i < set->n; i++)
		if (set->r[i].s <= s && set->r[i].e >= e)
			return 1;
	return 0;
}

/* Keeps only what lies inside `keep` (also sorted and disjoint). */
static void rset_intersect(struct rset *set, const struct rset *keep)
{
	struct rset res = { 0 };
	size_t i, j;

	for (i = 0; i < set->n; i++)
		for (j = 0; j < keep->n; j++) {
			uint64_t s = set->r[i].s > keep->r[j].s ? set->r[i].s : keep->r[j].s;
			uint64_t e = set->r[i].e < keep->r[j].e ? set->r[i].e : keep->r[j].e;

			if (s < e)
				rset_add(&res, s, e);
		}
	free(set->r);
	*set = res;
}

static void rset_remove(struct rset *set, uint64_t s, uint64_t e)
{
	struct rset res = { 0 };
	size_t i;

	for (i = 0; i < set->n; i++) {
		if (set->r[i].s < s)
			rset_add(&res, set->r[i].s, set->r[i].e < s ? set->r[i].e : s);
		if (set->r[i].e > e)
			rset_add(&res, set->r[i].s > e ? set->r[i].s : e, set->r[i].e);
	}
	free(set->r);
	*set = res;
}

/* ---- /proc ----------------------------------------------------------------------------- */

struct vma_list {
	struct vma *v;
	size_t n, cap;
};

static int vma_add(const struct maps_line *l, void *arg)
{
	struct vma_list *L = arg;
	struct vma *v;
	size_t k;

	if (L->n == L->cap) {
		size_t cap = L->cap ? L->cap * 2 : 64;
		struct vma *nv = realloc(L->v, cap * sizeof(*nv));

		if (!nv) {
			pr_perror("attach: reading /proc/PID/maps");
			return -1;
		}
		L->v = nv;
		L->cap = cap;
	}
	v = &L->v[L->n++];
	*v = (struct vma){ .s = l->s, .e = l->e, .ino = l->ino };
	memcpy(v->perms, l->perms, sizeof(v->perms));
	/* Longer names (files deep in a tree) are cut, as the selector compares at most this much. */
	k = strnlen(l->name, sizeof(v->name) - 1);
	memcpy(v->name, l->name, k);
	v->name[k] = 0;
	return 0;
}

static int read_maps(pid_t pid, struct vma **out, size_t *nr)
{
	struct vma_list L = { 0 };

	if (maps_for_each(pid, vma_add, &L)) {
		free(L.v);
		return -1;
	}
	*out = L.v;
	*nr = L.n;
	return 0;
}

/* Private anonymous memory: what the default selection registers. */
static int anon_private(const struct vma *m)
{
	return m->perms[3] == 'p' && m->ino == 0 &&
	       (!m->name[0] || !strcmp(m->name, "[stack]") || !strcmp(m->name, "[heap]") ||
		!strncmp(m->name, "[anon:", 6));
}

/* state and flags from /proc/PID/stat; -1 when the process does not exist. */
static int proc_stat(pid_t pid, char *state, unsigned *flags, char *comm, size_t comm_len)
{
	char buf[1024], *l, *r;

	r = procstat_read(pid, buf, sizeof(buf));
	if (!r)
		return -1;
	l = strchr(buf, '(');
	if (!l || r < l)
		return -1;
	snprintf(comm, comm_len, "%.*s", (int)(r - l - 1), l + 1);
	if (sscanf(r + 1, " %c %*d %*d %*d %*d %*d %u", state, flags) != 2)
		return -1;
	return 0;
}

static long status_field(pid_t pid, const char *key)
{
	char path[64], line[256];
	size_t kl = strlen(key);
	long v = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", pid);
	f = fopen(path, "re");
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (!strncmp(line, key, kl) && line[kl] == ':') {
			v = strtol(line + kl + 1, NULL, 10);
			break;
		}
	fclose(f);
	return v;
}

static int count_tasks(pid_t pid)
{
	char path[64];
	struct dirent *de;
	int n = 0;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	d = opendir(path);
	if (!d)
		return -1;
	while ((de = readdir(d)))
		if (de->d_name[0] != '.')
			n++;
	closedir(d);
	return n;
}

static const char *ptrace_scope(char *buf, size_t len)
{
	FILE *f = fopen("/proc/sys/kernel/yama/ptrace_scope", "re");
	int v;

	if (!f) {
		snprintf(buf, len, "no Yama LSM (/proc/sys/kernel/yama/ptrace_scope absent)");
		return buf;
	}
	if (fscanf(f, "%d", &v) != 1)
		v = -1;
	fclose(f);
	snprintf(buf, len, "kernel.yama.ptrace_scope is %d%s", v,
		 v == 0 ? "" : v == 1 ? " (only descendants may be traced without "
		 "CAP_SYS_PTRACE: run the helper as root, or `sysctl -w kernel.yama.ptrace_scope=0`)" :
		 v == 2 ? " (only CAP_SYS_PTRACE may trace: run the helper as root)" :
		 v == 3 ? " (ptrace is disabled until reboot)" : "");
	return buf;
}

/* The reasons not to attach that can be told before trying; 0 when none. */
static int refuse(pid_t pid, struct launch_err *e)
{
	char state = 0, comm[64] = "";
	unsigned flags = 0;
	long tgid;

	if (pid == getpid()) {
		e->err = EINVAL;
		snprintf(e->msg, sizeof(e->msg), "pid %d is the uffd helper itself: attach to "
			 "another process", pid);
		return -1;
	}
	if (pid == getppid()) {
		e->err = EINVAL;
		snprintf(e->msg, sizeof(e->msg), "pid %d is the helper's client (the debugger "
			 "that talks to it): its faults would wait for itself; attach to another "
			 "process", pid);
		return -1;
	}
	if (proc_stat(pid, &state, &flags, comm, sizeof(comm))) {
		e->err = ESRCH;
		snprintf(e->msg, sizeof(e->msg), "no process with pid %d (it may have exited): "
			 "check the pid with `ps -p %d`", pid, pid);
		return -1;
	}
	tgid = status_field(pid, "Tgid");
	if (tgid > 0 && tgid != pid) {
		e->err = EINVAL;
		snprintf(e->msg, sizeof(e->msg), "%d is a thread of process %ld (%s): attach to "
			 "pid %ld", pid, tgid, comm, tgid);
		return -1;
	}
	if (flags & PF_KTHREAD) {
		e->err = EPERM;
		snprintf(e->msg, sizeof(e->msg), "pid %d (%s) is a kernel thread: it has no user "
			 "memory to watch; attach to a user-space process", pid, comm);
		return -1;
	}
	if ((state == 'Z' || state == 'X') && count_tasks(pid) <= 1) {
		e->err = ESRCH;
		snprintf(e->msg, sizeof(e->msg), "pid %d (%s) is a zombie: it has exited and waits "
			 "for its parent (pid %ld) to reap it; there is no memory left to watch",
			 pid, comm, status_field(pid, "PPid"));
		return -1;
	}
	return 0;
}

static void seize_error(pid_t pid, pid_t tid, int err, struct launch_err *e)
{
	char scope[256];
	long tracer = status_field(tid, "TracerPid");

	e->err = err;
	if (err == EPERM && tracer > 0 && tracer != getpid())
		snprintf(e->msg, sizeof(e->msg), "pid %d is already traced by pid %ld (a debugger "
			 "or strace?): a thread can have one tracer; detach that one first", pid,
			 tracer);
	else if (err == EPERM)
		snprintf(e->msg, sizeof(e->msg), "not permitted to ptrace pid %d (thread %d): the "
			 "helper runs as uid %d; it needs the target's uid or CAP_SYS_PTRACE (run as "
			 "root), and %s", pid, tid, (int)geteuid(), ptrace_scope(scope, sizeof(scope)));
	else
		snprintf(e->msg, sizeof(e->msg), "PTRACE_SEIZE of thread %d of pid %d failed: %s",
			 tid, pid, strerror(err));
}

/* ---- seizing and releasing threads --------------------------------------------------- */

static struct thr *thr_find(struct thr *tv, size_t n, pid_t tid)
{
	size_t i;

	for (i = 0; i < n; i++)
		if (tv[i].tid == tid)
			return &tv[i];
	return NULL;
}

/* Waits (bounded) for the first stop of a seized, interrupted thread. */
static int wait_first_stop(struct thr *t, struct launch_err *e)
{
	struct timespec ms = { 0, 1000000 };
	int st, i;

	for (i = 0; i < STOP_TIMEOUT_MS; i++) {
		pid_t r = waitpid(t->tid, &st, __WALL | WNOHANG);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {	/* gone already */
			t->gone = 1;
			return 0;
		}
		if (r == 0) {
			nanosleep(&ms, NULL);
			continue;
		}
		if (WIFEXITED(st) || WIFSIGNALED(st)) {
			t->gone = 1;
			return 0;
		}
		if (!WIFSTOPPED(st))
			continue;
		t->stopped = 1;
		/* a signal-delivery stop came before the interrupt: deliver it when releasing */
		if (!(st >> 16))
			t->sig = WSTOPSIG(st);
		return 0;
	}
	e->err = EAGAIN;
	snprintf(e->msg, sizeof(e->msg), "thread %d did not stop within %d ms (in an "
		 "uninterruptible wait, state D?): try again", t->tid, STOP_TIMEOUT_MS);
	return -1;
}

static void release_all(struct thr *tv, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (tv[i].gone)
			continue;
		if (ptrace(PTRACE_DETACH, tv[i].tid, 0, tv[i].sig) && errno != ESRCH)
			pr_perror("attach: PTRACE_DETACH of tid %d (signal %d)", tv[i].tid,
				  tv[i].sig);
	}
}

/*
 * Seizes and stops every thread of pid. Threads may be created meanwhile: /proc/PID/task is
 * read again until a pass finds no new thread with all known ones stopped (stopped threads
 * cannot create more).
 */
static int seize_all(pid_t pid, struct thr **tvp, size_t *np, struct launch_err *e)
{
	struct thr *tv = NULL;
	size_t n = 0, cap = 0, i;
	char path[64];
	int round, added = 1;

	snprintf(path, sizeof(path), "/proc/%d/task", pid);
	for (round = 0; added && round < 1000; round++) {
		struct dirent *de;
		DIR *d = opendir(path);

		added = 0;
		if (!d) {
			e->err = ESRCH;
			snprintf(e->msg, sizeof(e->msg), "pid %d exited while attaching", pid);
			goto fail;
		}
		while ((de = readdir(d))) {
			pid_t tid = (pid_t)strtol(de->d_name, NULL, 10);
			char st = 0, comm[64];
			unsigned fl;

			if (tid <= 0 || thr_find(tv, n, tid))
				continue;
			if (ptrace(PTRACE_SEIZE, tid, 0, 0)) {
				int err = errno;

				if (err == ESRCH)
					continue;	/* exited meanwhile */
				/* an exited thread-group leader (zombie) cannot be seized */
				if (err == EPERM && !proc_stat(tid, &st, &fl, comm, sizeof(comm)) &&
				    (st == 'Z' || st == 'X') && tid == pid)
					continue;
				closedir(d);
				seize_error(pid, tid, err, e);
				goto fail;
			}
			if (n == cap) {
				struct thr *nt;

				cap = cap ? cap * 2 : 16;
				nt = realloc(tv, cap * sizeof(*tv));
				if (!nt) {
					closedir(d);
					e->err = ENOMEM;
					snprintf(e->msg, sizeof(e->msg), "out of memory seizing threads");
					ptrace(PTRACE_DETACH, tid, 0, 0);
					goto fail;
				}
				tv = nt;
			}
			tv[n++] = (struct thr){ .tid = tid };
			added = 1;
			if (ptrace(PTRACE_INTERRUPT, tid, 0, 0) && errno != ESRCH)
				pr_perror("attach: PTRACE_INTERRUPT tid %d", tid);
		}
		closedir(d);
		for (i = 0; i < n; i++)
			if (!tv[i].stopped && !tv[i].gone && wait_first_stop(&tv[i], e))
				goto fail;
	}
	for (i = 0; i < n && tv[i].gone; i++)
		;
	if (i == n) {
		e->err = ESRCH;
		snprintf(e->msg, sizeof(e->msg), "pid %d exited while attaching", pid);
		goto fail;
	}
	*tvp = tv;
	*np = n;
	return 0;
fail:
	/* a thread seized but never seen stopped cannot be detached: wait for it once more */
	for (i = 0; i < n; i++)
		if (!tv[i].stopped && !tv[i].gone) {
			struct launch_err ignore;

			wait_first_stop(&tv[i], &ignore);
		}
	release_all(tv, n);
	free(tv);
	return -1;
}

/*
 * The thread to run injected system calls: one stopped by the interrupt itself (no signal
 * to deliver), the leader if it can. nt: none can.
 */
static size_t pick_thread(const struct thr *tv, size_t nt, pid_t leader)
{
	size_t i;

	for (i = 0; i < nt; i++)
		if (tv[i].tid == leader && !tv[i].gone && !tv[i].sig)
			return i;
	for (i = 0; i < nt && (tv[i].gone || tv[i].sig); i++)
		;
	return i;
}

/* ---- the setup keeper ------------------------------------------------------------------ */

/*
 * The threads are seized and the system call injected by a child of the helper, the keeper:
 * if the helper is killed while a thread's registers are borrowed, the keeper still restores
 * them and releases every thread (a dead tracer cannot restore anything: the thread would run
 * on with the injected registers). The keeper sends the userfaultfd and the thread list over
 * a socket, waits for the word to release the threads (or for the helper to be gone), then
 * releases them and exits.
 */
struct keeper_hdr {
	int err;		/* 0: a userfaultfd is attached (SCM_RIGHTS) */
	char msg[sizeof(((struct launch_err *)0)->msg)];
	char source[8];
	pid_t pick;
	int nt;			/* live threads that follow, one pid_t each */
};

struct keeper {
	pid_t pid;
	int sk;
};

static int send_hdr(int sk, const struct keeper_hdr *h, int fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { .iov_base = (void *)h, .iov_len = sizeof(*h) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };

	if (fd >= 0) {
		struct cmsghdr *c;

		mh.msg_control = cbuf;
		mh.msg_controllen = sizeof(cbuf);
		c = CMSG_FIRSTHDR(&mh);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &fd, sizeof(int));
	}
	return sendmsg(sk, &mh, MSG_NOSIGNAL) < 0 ? -1 : 0;
}

static __attribute__((noreturn)) void keeper_main(int sk, pid_t pid, uint64_t features)
{
	struct keeper_hdr h = { 0 };
	struct launch_err e = { 0 };
	const char *source = "";
	struct thr *tv = NULL;
	pid_t *tids = NULL;
	size_t nt = 0, i, pick;
	int fd = -1, n = 0;
	char c;

	prctl(PR_SET_NAME, "uffd-keeper", 0, 0, 0);
	if (seize_all(pid, &tv, &nt, &e))
		goto fail;
	pick = pick_thread(tv, nt, pid);
	if (pick == nt) {
		release_all(tv, nt);
		e.err = EAGAIN;
		snprintf(e.msg, sizeof(e.msg), "no thread of pid %d could run the setup (all had "
			 "signals pending): try again", pid);
		goto fail;
	}
	fd = launch_take_uffd_from(tv[pick].tid, pid, features, &source, &e);
	if (fd < 0) {
		release_all(tv, nt);
		goto fail;
	}
	tids = calloc(nt ? nt : 1, sizeof(*tids));
	if (!tids) {
		release_all(tv, nt);
		e.err = ENOMEM;
		snprintf(e.msg, sizeof(e.msg), "out of memory listing the threads of pid %d", pid);
		goto fail;
	}
	for (i = 0; i < nt; i++)
		if (!tv[i].gone)
			tids[n++] = tv[i].tid;
	snprintf(h.source, sizeof(h.source), "%s", source);
	h.pick = tv[pick].tid;
	h.nt = n;
	if (send_hdr(sk, &h, fd) == 0 && n)
		send(sk, tids, n * sizeof(*tids), MSG_NOSIGNAL);
	close(fd);
	/* the helper registers while every thread is stopped; one byte, or EOF if it died */
	while (read(sk, &c, 1) < 0 && errno == EINTR)
		;
	release_all(tv, nt);
	_exit(0);
fail:
	h.err = e.err ? e.err : EIO;
	memcpy(h.msg, e.msg, sizeof(h.msg));
	send_hdr(sk, &h, -1);
	_exit(0);
}

static void keeper_reap(struct keeper *k)
{
	if (k->sk >= 0)
		close(k->sk);
	k->sk = -1;
	while (k->pid > 0 && waitpid(k->pid, NULL, 0) < 0 && errno == EINTR)
		;
	k->pid = 0;
}

/* The keeper releases every thread; returns when it has (and has exited). */
static void keeper_release(struct keeper *k)
{
	if (k->sk >= 0 && send(k->sk, "r", 1, MSG_NOSIGNAL) < 0)
		pr_perror("attach: telling the keeper %d to release the threads", k->pid);
	keeper_reap(k);
}

static int recv_hdr(int sk, struct keeper_hdr *h, int *fd)
{
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { .iov_base = h, .iov_len = sizeof(*h) };
	struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf,
			     .msg_controllen = sizeof(cbuf) };
	struct cmsghdr *c;
	ssize_t n;

	*fd = -1;
	do
		n = recvmsg(sk, &mh, MSG_CMSG_CLOEXEC);
	while (n < 0 && errno == EINTR);
	if (n != (ssize_t)sizeof(*h)) {
		if (n >= 0)
			errno = EPIPE;
		return -1;
	}
	for (c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
		if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS)
			memcpy(fd, CMSG_DATA(c), sizeof(int));
	return 0;
}

/*
 * Seizes pid's threads and plants the userfaultfd through a keeper. On success the threads
 * stay stopped until keeper_release(); *tids lists them (malloc'd).
 */
static int keeper_setup(pid_t pid, uint64_t features, struct keeper *k, int *fdp,
			const char **source, pid_t **tids, size_t *nt, pid_t *pick,
			struct launch_err *e)
{
	static char src[8];
	struct keeper_hdr h;
	int sv[2], fd;

	k->pid = 0;
	k->sk = -1;
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv)) {
		e->err = errno;
		snprintf(e->msg, sizeof(e->msg), "socketpair for the attach keeper: %s",
			 strerror(errno));
		return -1;
	}
	k->pid = fork();
	if (k->pid < 0) {
		e->err = errno;
		snprintf(e->msg, sizeof(e->msg), "fork of the attach keeper: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (k->pid == 0) {
		close(sv[0]);
		keeper_main(sv[1], pid, features);
	}
	close(sv[1]);
	k->sk = sv[0];
	if (recv_hdr(k->sk, &h, &fd)) {
		e->err = errno;
		snprintf(e->msg, sizeof(e->msg), "the attach keeper %d ended without an answer: %s",
			 k->pid, strerror(errno));
		keeper_reap(k);
		return -1;
	}
	if (h.err || fd < 0) {
		e->err = h.err ? h.err : EIO;
		h.msg[sizeof(h.msg) - 1] = 0;
		snprintf(e->msg, sizeof(e->msg), "%s", h.msg);
		if (fd >= 0)
			close(fd);
		keeper_reap(k);
		return -1;
	}
	*tids = calloc(h.nt ? h.nt : 1, sizeof(**tids));
	if (!*tids || (h.nt && recv(k->sk, *tids, h.nt * sizeof(**tids), 0) !=
				(ssize_t)(h.nt * sizeof(**tids)))) {
		e->err = *tids ? errno : ENOMEM;
		snprintf(e->msg, sizeof(e->msg), "reading the thread list from the attach keeper: %s",
			 strerror(e->err));
		free(*tids);
		*tids = NULL;
		close(fd);
		keeper_release(k);
		return -1;
	}
	*nt = h.nt;
	*pick = h.pick;
	h.source[sizeof(h.source) - 1] = 0;
	memcpy(src, h.source, sizeof(src));
	*source = !strcmp(src, "dev") ? "dev" : "syscall";
	*fdp = fd;
	return 0;
}


/* ---- episodes: work done with every thread stopped, by a child of the helper ------------ */

int attach_episode(int (*fn)(pid_t pid, pid_t tid, void *arg, char *msg, size_t len),
		   void (*at_exit)(void *arg), void *arg, pid_t *child, int *sk, char *why,
		   size_t why_len)
{
	int sv[2];

	if (!at.active) {
		errno = ESRCH;
		snprintf(why, why_len, "no process is attached");
		return -1;
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv)) {
		snprintf(why, why_len, "socketpair: %s", strerror(errno));
		return -1;
	}
	*child = fork();
	if (*child < 0) {
		snprintf(why, why_len, "fork: %s", strerror(errno));
		close(sv[0]);
		close(sv[1]);
		return -1;
	}
	if (*child == 0) {
		struct launch_err e = { 0 };
		struct thr *tv = NULL;
		char buf[sizeof(int) + sizeof(e.msg)];
		int devnull = open("/dev/null", O_RDWR | O_CLOEXEC);
		size_t nt = 0, pick;
		int r;

		close(sv[0]);
		/* the protocol stream is the helper's alone: its end must close with it */
		if (devnull >= 0)
			dup2(devnull, STDOUT_FILENO);
		prctl(PR_SET_NAME, "uffd-episode", 0, 0, 0);
		memset(buf, 0, sizeof(buf));
		if (seize_all(at.pid, &tv, &nt, &e)) {
			r = -(e.err ? e.err : EIO);
			snprintf(buf + sizeof(int), sizeof(buf) - sizeof(int), "%s", e.msg);
		} else {
			pick = pick_thread(tv, nt, at.pid);
			if (pick == nt) {
				r = -EAGAIN;
				snprintf(buf + sizeof(int), sizeof(buf) - sizeof(int), "no thread of "
					 "pid %d could run a system call (all had signals pending): "
					 "try again", at.pid);
			} else {
				r = fn(at.pid, tv[pick].tid, arg, buf + sizeof(int),
				       sizeof(buf) - sizeof(int));
			}
		}
		memcpy(buf, &r, sizeof(int));
		send(sv[1], buf, sizeof(int) + strlen(buf + sizeof(int)) + 1, MSG_NOSIGNAL);
		/* the helper takes note of the result before the threads run: a byte, or EOF */
		if (tv) {
			char c;

			while (read(sv[1], &c, 1) < 0 && errno == EINTR)
				;
			release_all(tv, nt);
		}
		if (at_exit)
			at_exit(arg);
		_exit(0);
	}
	close(sv[1]);
	*sk = sv[0];
	return 0;
}

int attach_tracks(uint64_t s, uint64_t e)
{
	return rset_covers(&at.reg, s, e);
}

/* ---- registration ---------------------------------------------------------------------- */

struct scan_result {
	int nr_new, nr_had, nr_busy, nr_bad;
	struct range busy, bad;
	int bad_err;
	struct rset added;	/* registered by this scan, for rollback */
};

static void region_list_json(struct jbuf *b, uint64_t s, uint64_t e, const char *via,
			     const char *name)
{
	if (b->len)
		jb_puts(b, ",");
	jb_puts(b, "{\"start\":");
	jb_hex(b, s);
	jb_puts(b, ",\"end\":");
	jb_hex(b, e);
	jb_puts(b, ",\"via\":");
	jb_str(b, via);
	if (name && *name) {
		jb_puts(b, ",\"name\":");
		jb_str(b, name);
	}
	jb_puts(b, "}");
}

/* One part of a VMA that this helper has not registered. */
static void scan_part(uint64_t s, uint64_t e, const struct vma *m, const char *via,
		      struct jbuf *list, struct scan_result *r)
{
	int err;

	if (rset_covers(&at.busy, s, e)) {
		err = EBUSY;	/* known already: no new warning */
	} else if (!track_register(s, e, via, m->name, list)) {
		rset_add(&at.reg, s, e);
		rset_add(&r->added, s, e);
		r->nr_new++;
		return;
	} else {
		err = errno;
		if (err == EBUSY) {
			pr_warn("attach: pid %d: %#llx-%#llx %s is registered with the process's "
				"own userfaultfd: not tracked", at.pid, (unsigned long long)s,
				(unsigned long long)e, m->name);
			rset_add(&at.busy, s, e);
		}
	}
	if (err == EBUSY) {
		if (!r->nr_busy)
			r->busy = (struct range){ s, e };
		r->nr_busy++;
		return;
	}
	if (!r->nr_bad) {
		r->bad = (struct range){ s, e };
		r->bad_err = err;
	}
	r->nr_bad++;
}

/*
 * One candidate range [s, e) of one VMA: registers the parts not registered yet (a grown
 * stack or heap VMA adds just its new part).
 */
static void scan_one(uint64_t s, uint64_t e, const struct vma *m, const char *via,
		     struct jbuf *list, struct scan_result *r)
{
	struct range gaps[64];
	uint64_t cur = s;
	size_t i, ng = 0;

	for (i = 0; i < at.reg.n && cur < e && ng < 63; i++) {
		if (at.reg.r[i].e <= cur)
			continue;
		if (at.reg.r[i].s >= e)
			break;
		if (at.reg.r[i].s > cur)
			gaps[ng++] = (struct range){ cur, at.reg.r[i].s };
		cur = at.reg.r[i].e;
	}
	if (cur < e)
		gaps[ng++] = (struct range){ cur, e };
	if (!ng) {
		r->nr_had++;
		return;
	}
	for (i = 0; i < ng; i++)
		scan_part(gaps[i].s, gaps[i].e, m, via, list, r);
}

static int name_selected(const struct selector *sel, const char *name)
{
	size_t i;

	for (i = 0; i < sel->list->n; i++)
		if (!strcmp(json_cstr(sel->list->items[i]), name))
			return 1;
	return 0;
}

/*
 * Registers what the selector picks from the current maps and is not registered yet. Region
 * JSON goes to list (or events when list is NULL). Also forgets registrations of memory that
 * is gone. *unmatched gets the first name of a names selector that matched no mapping.
 */
static int scan(const struct selector *sel, const char *via, struct jbuf *list,
		struct scan_result *r, const char **unmatched)
{
	struct rset anon = { 0 };
	struct vma *v;
	size_t n, i, k;

	memset(r, 0, sizeof(*r));
	if (unmatched)
		*unmatched = NULL;
	if (read_maps(at.pid, &v, &n))
		return -1;
	/* memory unmapped since the last look is no longer registered; new memory may reuse it */
	for (i = 0; i < n; i++)
		if (anon_private(&v[i]) || v[i].perms[3] == 's')
			rset_add(&anon, v[i].s, v[i].e);
	rset_intersect(&at.reg, &anon);
	rset_intersect(&at.busy, &anon);
	free(anon.r);

	for (i = 0; i < n; i++) {
		const struct vma *m = &v[i];

		switch (sel->kind) {
		case SEL_ANON:
			if (anon_private(m))
				scan_one(m->s, m->e, m, via, list, r);
			break;
		case SEL_NAMES:
			if (m->name[0] && name_selected(sel, m->name))
				scan_one(m->s, m->e, m, via, list, r);
			break;
		case SEL_RANGES:
			for (k = 0; k < sel->list->n; k++) {
				uint64_t s = sel->ranges[k].s > m->s ? sel->ranges[k].s : m->s;
				uint64_t e = sel->ranges[k].e < m->e ? sel->ranges[k].e : m->e;

				/* file-backed private memory cannot be registered: skip it */
				if (s < e && (anon_private(m) || m->perms[3] == 's'))
					scan_one(s, e, m, via, list, r);
			}
			break;
		}
	}
	if (sel->kind == SEL_NAMES && unmatched) {
		for (k = 0; k < sel->list->n && !*unmatched; k++) {
			const char *want = json_cstr(sel->list->items[k]);

			for (i = 0; i < n && strcmp(v[i].name, want); i++)
				;
			if (i == n)
				*unmatched = want;
		}
	}
	free(v);
	return 0;
}

static void unregister_set(const struct rset *set)
{
	size_t i;

	for (i = 0; i < set->n; i++) {
		if (sess.uffd >= 0 && uffd_unregister(sess.uffd, set->r[i].s, set->r[i].e))
			pr_perror("attach: pid %d: UFFDIO_UNREGISTER %#llx-%#llx on fd %d", at.pid,
				  (unsigned long long)set->r[i].s, (unsigned long long)set->r[i].e,
				  sess.uffd);
		rset_remove(&at.reg, set->r[i].s, set->r[i].e);
	}
}

/*
 * Turns a scan of an explicit request into an error when it must be one; rolls back what
 * it registered then. 0 when the request succeeded.
 */
static int scan_verdict(const struct selector *sel, struct scan_result *r, const char *unmatched,
			struct launch_err *e)
{
	e->err = 0;
	if (unmatched) {
		e->err = ENOENT;
		snprintf(e->msg, sizeof(e->msg), "no mapping named '%s' in /proc/%d/maps: give "
			 "the name exactly as maps shows it ([heap], [stack], /path/of/file)",
			 unmatched, at.pid);
	} else if (r->nr_busy && (sel->kind != SEL_ANON || !(r->nr_new + r->nr_had))) {
		e->err = EBUSY;
		snprintf(e->msg, sizeof(e->msg), "range 0x%llx-0x%llx already owned by the "
			 "process's own userfaultfd: use observe mode (a range can have one "
			 "userfaultfd; this process handles its own faults there)",
			 (unsigned long long)r->busy.s, (unsigned long long)r->busy.e);
	} else if (!(r->nr_new + r->nr_had)) {
		e->err = r->nr_bad ? r->bad_err : EINVAL;
		if (r->nr_bad)
			snprintf(e->msg, sizeof(e->msg), "cannot register 0x%llx-0x%llx of pid %d: "
				 "%s (only private anonymous, shmem and hugetlb memory can be "
				 "registered)", (unsigned long long)r->bad.s,
				 (unsigned long long)r->bad.e, at.pid, strerror(r->bad_err));
		else
			snprintf(e->msg, sizeof(e->msg), "nothing to register in pid %d: the "
				 "selection holds no private anonymous or shared memory", at.pid);
	}
	if (!e->err)
		return 0;
	unregister_set(&r->added);
	return -1;
}

/* ---- selectors ------------------------------------------------------------------------- */

static int parse_hex(const struct jval *v, uint64_t *out)
{
	const char *s = json_cstr(v);
	char *end;

	if (!s || strncmp(s, "0x", 2) || !s[2])
		return -1;
	errno = 0;
	*out = strtoull(s + 2, &end, 16);
	return errno || *end ? -1 : 0;
}

/* `track` selector: absent/null = {"anon":true}. Writes the error response itself. */
static int parse_selector(int64_t id, const struct jval *v, struct selector *sel)
{
	const struct jval *l;
	size_t i;

	memset(sel, 0, sizeof(*sel));
	sel->kind = SEL_ANON;
	if (!v || v->type == J_NULL)
		return 0;
	if (v->type != J_OBJ || v->n != 1)
		goto bad;
	l = v->items[0];
	if (!strcmp(v->keys[0], "anon")) {
		if (l->type != J_BOOL || !l->boolean)
			goto bad;
		return 0;
	}
	if (l->type != J_ARR || !l->n)
		goto bad;
	sel->list = l;
	if (!strcmp(v->keys[0], "names")) {
		sel->kind = SEL_NAMES;
		for (i = 0; i < l->n; i++)
			if (!json_cstr(l->items[i]) || !*json_cstr(l->items[i])) {
				resp_err(id, "EPROTO", "'names' must hold non-empty strings like "
					 "\"[heap]\" or \"/path\"");
				return -1;
			}
		return 0;
	}
	if (strcmp(v->keys[0], "ranges"))
		goto bad;
	sel->kind = SEL_RANGES;
	sel->ranges = calloc(l->n, sizeof(*sel->ranges));
	if (!sel->ranges) {
		resp_err(id, "ENOMEM", "out of memory parsing 'ranges'");
		return -1;
	}
	for (i = 0; i < l->n; i++) {
		uint64_t s, e;

		if (l->items[i]->type != J_OBJ ||
		    parse_hex(json_get(l->items[i], "start"), &s) ||
		    parse_hex(json_get(l->items[i], "end"), &e) || PAGE_UP(e) <= PAGE_DOWN(s)) {
			resp_err(id, "EPROTO", "'ranges[%zu]' must be {\"start\":\"0x..\",\"end\":"
				 "\"0x..\"} with start < end", i);
			free(sel->ranges);
			sel->ranges = NULL;
			return -1;
		}
		sel->ranges[i] = (struct range){ PAGE_DOWN(s), PAGE_UP(e) };
	}
	return 0;
bad:
	resp_err(id, "EPROTO", "'track' must be {\"anon\":true}, {\"names\":[\"[heap]\",...]} "
		 "or {\"ranges\":[{\"start\":\"0x..\",\"end\":\"0x..\"}]}");
	return -1;
}

/* ---- commands -------------------------------------------------------------------------- */

static void stop_tracking(void)
{
	if (at.timerfd >= 0)
		close(at.timerfd);
	if (at.pidfd >= 0)
		close(at.pidfd);
	at.timerfd = at.pidfd = -1;
	at.active = 0;
	free(at.reg.r);
	free(at.busy.r);
	at.reg = at.busy = (struct rset){ 0 };
	sess.alive = 0;
}

void attach_cmd_attach(int64_t id, const struct jval *req, uint64_t features)
{
	struct jbuf regions = { 0 };
	struct launch_err e = { 0 };
	struct scan_result sr;
	struct selector sel;
	struct keeper k = { 0, -1 };
	const char *unmatched = NULL, *source = NULL;
	pid_t *tids = NULL, pick = 0;
	size_t nt = 0, i;
	int64_t pid;
	int fd;

	if (sess.pid) {
		resp_err(id, "ESTATE", "this helper already has a program (pid %d); one helper "
			 "debugs one process: start another helper", sess.pid);
		return;
	}
	if (!json_int(json_get(req, "pid"), 1, INT32_MAX, &pid)) {
		resp_err(id, "EPROTO", "attach needs 'pid', a positive process id");
		return;
	}
	if (parse_selector(id, json_get(req, "track"), &sel))
		return;
	if (refuse((pid_t)pid, &e) ||
	    keeper_setup((pid_t)pid, features, &k, &fd, &source, &tids, &nt, &pick, &e)) {
		resp_err(id, errno_name(e.err), "%s", e.msg);
		goto out;
	}
	/* opened while it is stopped: an exit right after the release is still seen */
	at.pidfd = syscall(SYS_pidfd_open, (pid_t)pid, 0);
	if (at.pidfd < 0)
		pr_perror("attach: pidfd_open %lld: its exit will not be noticed", (long long)pid);
	sess.pid = (pid_t)pid;
	sess.uffd = fd;
	sess.uffd_source = source;
	sess.uffd_features = features;
	at.pid = (pid_t)pid;
	at.active = 1;
	/* registered while every thread is stopped: a consistent view of the mappings */
	if (scan(&sel, "attach", &regions, &sr, &unmatched) ||
	    scan_verdict(&sel, &sr, unmatched, &e)) {
		if (!e.err) {
			e.err = ESRCH;
			snprintf(e.msg, sizeof(e.msg), "cannot read the mappings of pid %lld",
				 (long long)pid);
		}
		free(sr.added.r);
		close(fd);
		sess.uffd = -1;
		sess.pid = 0;
		keeper_release(&k);
		stop_tracking();
		resp_err(id, errno_name(e.err), "%s", e.msg);
		goto out;
	}
	free(sr.added.r);
	keeper_release(&k);
	if (sel.kind == SEL_ANON) {
		struct itimerspec it = {
			.it_interval = { 0, SCAN_INTERVAL_MS * 1000000L },
			.it_value = { 0, SCAN_INTERVAL_MS * 1000000L },
		};

		at.timerfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
		if (at.timerfd < 0 || timerfd_settime(at.timerfd, 0, &it, NULL))
			pr_perror("attach: rescan timer for pid %lld: new mappings are tracked "
				  "on `track` only", (long long)pid);
	}
	sess.alive = 1;
	sess.running = 1;
	pr_info("attached to pid %lld (%zu threads, injected in tid %d), userfaultfd %d (%s), "
		"%d regions; ptrace released", (long long)pid, nt, pick, fd, source, sr.nr_new);

	/* Wire format: AttachBody in server/protocol/messages.ts */
	resp_ok_begin(id);
	jb_printf(&out, "{\"pid\":%lld,\"uffdSource\":", (long long)pid);
	jb_str(&out, source);
	jb_puts(&out, ",\"features\":");
	uffd_features_json(&out, features);
	jb_puts(&out, ",\"regions\":[");
	if (regions.len)
		jb_write(&out, regions.p, regions.len);
	jb_puts(&out, "],\"threads\":[");
	for (i = 0; i < nt; i++)
		jb_printf(&out, "%s%d", i ? "," : "", tids[i]);
	jb_puts(&out, "]}");
	resp_ok_end();
out:
	free(sel.ranges);
	free(regions.p);
	free(tids);
}

/* Wire format: {"regions":[Region...]}, the list already written as JSON in regions */
static void regions_response(int64_t id, const struct jbuf *regions)
{
	resp_ok_begin(id);
	jb_puts(&out, "{\"regions\":[");
	if (regions->len)
		jb_write(&out, regions->p, regions->len);
	jb_puts(&out, "]}");
	resp_ok_end();
}

static int require_attached(int64_t id, const char *cmd)
{
	if (at.active)
		return 0;
	resp_err(id, "ESTATE", "'%s' works on an attached process; %s", cmd,
		 sess.pid ? "this helper's program was launched (its mappings are tracked as "
		 "they are made) or is gone" : "send 'attach' first");
	return -1;
}

/* track/untrack carry the selector in the request itself: exactly one of anon/names/ranges. */
static int request_selector(int64_t id, const struct jval *req, struct selector *sel)
{
	static const char *const keys[] = { "anon", "names", "ranges" };
	struct jval one = { .type = J_OBJ, .n = 1 };
	struct jval *item = NULL;
	char *key = NULL;
	size_t i, found = 0;

	for (i = 0; i < 3; i++)
		if (json_get(req, keys[i])) {
			found++;
			key = (char *)keys[i];
			item = json_get(req, keys[i]);
		}
	if (found != 1) {
		resp_err(id, "EPROTO", "give exactly one of 'anon': true, 'names': [...] or "
			 "'ranges': [{\"start\":\"0x..\",\"end\":\"0x..\"}]");
		return -1;
	}
	one.keys = &key;
	one.items = &item;
	return parse_selector(id, &one, sel);
}

void attach_cmd_track(int64_t id, const struct jval *req)
{
	struct jbuf regions = { 0 };
	struct launch_err e = { 0 };
	struct scan_result sr;
	struct selector sel;
	const char *unmatched = NULL;

	if (require_attached(id, "track") || request_selector(id, req, &sel))
		return;
	if (scan(&sel, "track", &regions, &sr, &unmatched) ||
	    scan_verdict(&sel, &sr, unmatched, &e)) {
		if (!e.err) {
			e.err = ESRCH;
			snprintf(e.msg, sizeof(e.msg), "cannot read the mappings of pid %d", at.pid);
		}
		resp_err(id, errno_name(e.err), "%s", e.msg);
	} else {
		regions_response(id, &regions);	/* the ranges registered by this request */
	}
	free(sr.added.r);
	free(sel.ranges);
	free(regions.p);
}

void attach_cmd_untrack(int64_t id, const struct jval *req)
{
	struct jbuf regions = { 0 };
	struct rset gone = { 0 };
	struct selector sel;
	size_t i, k;

	if (require_attached(id, "untrack") || request_selector(id, req, &sel))
		return;
	if (sel.kind != SEL_RANGES) {
		resp_err(id, "EPROTO", "untrack takes 'ranges': [{\"start\":\"0x..\",\"end\":\"0x..\"}]");
		free(sel.ranges);
		return;
	}
	for (k = 0; k < sel.list->n; k++)
		for (i = 0; i < at.reg.n; i++) {
			uint64_t s = sel.ranges[k].s > at.reg.r[i].s ? sel.ranges[k].s : at.reg.r[i].s;
			uint64_t e = sel.ranges[k].e < at.reg.r[i].e ? sel.ranges[k].e : at.reg.r[i].e;

			if (s < e)
				rset_add(&gone, s, e);
		}
	/* unregistering wakes threads waiting on faults there: they fault again, unwatched */
	unregister_set(&gone);
	for (i = 0; i < gone.n; i++)
		region_list_json(&regions, gone.r[i].s, gone.r[i].e, "untrack", NULL);
	regions_response(id, &regions);	/* the ranges no longer registered */
	free(gone.r);
	free(sel.ranges);
	free(regions.p);
}

/*
 * Held faults resolved by the default policy (their `resolved` events go to *events),
 * every registration removed, the userfaultfd closed. Returns the number of ranges
 * unregistered.
 */
static size_t detach_now(struct jbuf *events)
{
	struct jbuf saved, tmp;
	struct rset all = { 0 };
	size_t nr, off = 0;

	/* faults_cmd_resolve_all writes a response and `resolved` events: keep the events;
	 * faults gathered before stay before them, in `out` */
	stream_flush();
	saved = out;
	out = (struct jbuf){ 0 };
	faults_cmd_resolve_all(0);
	tmp = out;
	out = saved;
	while (off < tmp.len) {
		char *nl = memchr(tmp.p + off, '\n', tmp.len - off);
		size_t len = nl ? (size_t)(nl - (tmp.p + off)) + 1 : tmp.len - off;

		if (strncmp(tmp.p + off, "{\"type\":\"response\"", 18))
			jb_write(events, tmp.p + off, len);
		off += len;
	}
	free(tmp.p);
	faults_forget_all();	/* any that could not be resolved: unregistering wakes them */
	evict_end(1);		/* every evicted page back in place */

	nr = at.reg.n;
	all.r = at.reg.r;
	all.n = all.cap = at.reg.n;
	at.reg = (struct rset){ 0 };
	at.active = 0;
	for (off = 0; off < all.n; off++)
		if (sess.uffd >= 0 && uffd_unregister(sess.uffd, all.r[off].s, all.r[off].e))
			pr_perror("attach: pid %d: UFFDIO_UNREGISTER %#llx-%#llx on fd %d", at.pid,
				  (unsigned long long)all.r[off].s, (unsigned long long)all.r[off].e,
				  sess.uffd);
	free(all.r);
	if (sess.uffd >= 0)
		close(sess.uffd);
	sess.uffd = -1;
	stop_tracking();
	pr_info("detached from pid %d: %zu ranges unregistered, userfaultfd closed", at.pid, nr);
	return nr;
}

static void detached_event(void)
{
	/* Wire format: {"type":"event","event":"detached","pid":N} */
	ev_begin("detached");
	jb_printf(&out, ",\"pid\":%d", at.pid);
	ev_end();
}

void attach_cmd_detach(int64_t id)
{
	struct jbuf events = { 0 };
	size_t nr;

	if (require_attached(id, "detach"))
		return;
	nr = detach_now(&events);
	resp_ok_begin(id);
	jb_printf(&out, "{\"pid\":%d,\"unregistered\":%zu}", at.pid, nr);
	resp_ok_end();
	if (events.len)
		jb_write(&out, events.p, events.len);
	free(events.p);
	detached_event();
}

void attach_range_moved(uint64_t start, uint64_t end, uint64_t to)
{
	if (!at.active)
		return;
	rset_remove(&at.reg, start, end);
	if (to && rset_add(&at.reg, to, to + (end - start)))
		pr_perror("attach: remembering the moved range %#llx", (unsigned long long)to);
}

int attach_active(void)
{
	return at.active;
}

void attach_release(void)
{
	struct jbuf events = { 0 };

	if (!at.active)
		return;
	detach_now(&events);
	if (events.len)
		jb_write(&out, events.p, events.len);
	free(events.p);
	detached_event();
}

void attach_pollfds(struct pollfd *pfd, int *n, int idx[ATTACH_PFD_NR])
{
	idx[0] = idx[1] = -1;
	if (!at.active)
		return;
	if (at.pidfd >= 0) {
		idx[0] = *n;
		pfd[(*n)++] = (struct pollfd){ .fd = at.pidfd, .events = POLLIN };
	}
	if (at.timerfd >= 0) {
		idx[1] = *n;
		pfd[(*n)++] = (struct pollfd){ .fd = at.timerfd, .events = POLLIN };
	}
}

static void target_exited(void)
{
	/* Wire format: {"type":"event","event":"exited","pid":N,"code":null,"signal":null}:
	 * not the helper's child, so its exit status cannot be read */
	ev_begin("exited");
	jb_printf(&out, ",\"pid\":%d,\"code\":null,\"signal\":null", at.pid);
	ev_end();
	pr_info("attached process %d exited", at.pid);
	faults_forget_all();
	evict_end(0);
	if (sess.uffd >= 0)
		close(sess.uffd);
	sess.uffd = -1;
	stop_tracking();
}

void attach_ready(const struct pollfd *pfd, const int idx[ATTACH_PFD_NR])
{
	struct selector anon = { .kind = SEL_ANON };
	struct scan_result sr;

	if (!at.active)
		return;
	if (idx[0] >= 0 && pfd[idx[0]].revents) {
		target_exited();
		return;
	}
	if (idx[1] >= 0 && pfd[idx[1]].revents & POLLIN) {
		uint64_t ticks;

		if (read(at.timerfd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
			pr_perror("attach: reading the rescan timer");
		/* new private anonymous mappings: registered, announced as `region` events */
		if (!scan(&anon, "scan", NULL, &sr, NULL) && sr.nr_new)
			pr_debug("attach: pid %d: %d new regions", at.pid, sr.nr_new);
		free(sr.added.r);
		if (sr.nr_bad && (sr.bad_err == ENOMEM || sr.bad_err == ESRCH) && !sr.nr_new) {
			/* the userfaultfd's mm is gone while the process lives on: it exec'd */
			pr_warn("attach: pid %d has new memory (execve?): the userfaultfd belongs to "
				"its old one; no more mappings are tracked (UFFDIO_REGISTER: %s)",
				at.pid, strerror(sr.bad_err));
			close(at.timerfd);
			at.timerfd = -1;
		}
	}
}
