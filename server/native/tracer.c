#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/kcmp.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/user.h>
#include <sys/wait.h>

#include "faults.h"
#include "log.h"
#include "procstat.h"
#include "output.h"
#include "session.h"
#include "tracer.h"
#include "uffd.h"

/* One record per traced thread, of the program or of processes it forked. */
struct tid_state {
	pid_t tid;
	int tracked;		/* shares the program's mm: its mappings get registered */
	int in_syscall;		/* stopped at seccomp, waiting for the syscall-exit stop */
	long nr;
	uint64_t args[5];
	int eat_sigstop;	/* SIGSTOPs sent by tracer_stop_thread still to come: not delivered */
	int resume_sig;		/* stopped by tracer_stop_thread at this signal: deliver it */
};

static struct tid_state *tids;
static size_t nr_tids, cap_tids;

static struct tid_state *tid_find(pid_t tid)
{
	size_t i;

	for (i = 0; i < nr_tids; i++)
		if (tids[i].tid == tid)
			return &tids[i];
	return NULL;
}

static struct tid_state *tid_add(pid_t tid, int tracked)
{
	struct tid_state *t = tid_find(tid);

	if (t)
		return t;
	if (nr_tids == cap_tids) {
		size_t cap = cap_tids ? cap_tids * 2 : 16;
		struct tid_state *n = realloc(tids, cap * sizeof(*n));

		if (!n) {
			pr_perror("cannot track tid %d", tid);
			return NULL;
		}
		tids = n;
		cap_tids = cap;
	}
	t = &tids[nr_tids++];
	memset(t, 0, sizeof(*t));
	t->tid = tid;
	t->tracked = tracked;
	return t;
}

static void tid_del(pid_t tid)
{
	struct tid_state *t = tid_find(tid);

	if (t)
		*t = tids[--nr_tids];
}

void tracer_add(pid_t tid, int tracked)
{
	tid_add(tid, tracked);
}

int tracer_traces(pid_t tid)
{
	return tid_find(tid) != NULL;
}

/* Seized threads to PTRACE_DETACH at their next stop (tracer_detach_later). */
static pid_t detach_later[16];
static size_t nr_detach_later;

void tracer_detach_later(pid_t tid)
{
	if (nr_detach_later < sizeof(detach_later) / sizeof(detach_later[0]))
		detach_later[nr_detach_later++] = tid;
	else
		pr_err("tid %d stays seized: too many threads waiting to be detached", tid);
}

static int detach_if_later(pid_t tid, int status)
{
	size_t i;

	for (i = 0; i < nr_detach_later && detach_later[i] != tid; i++)
		;
	if (i == nr_detach_later)
		return 0;
	detach_later[i] = detach_later[--nr_detach_later];
	if (WIFSTOPPED(status) &&
	    ptrace(PTRACE_DETACH, tid, 0, status >> 16 ? 0 : WSTOPSIG(status)) && errno != ESRCH)
		pr_perror("PTRACE_DETACH of tid %d", tid);
	return 1;
}

void tracer_kill_all(void)
{
	size_t i;

	for (i = 0; i < nr_tids; i++)
		if (kill(tids[i].tid, SIGKILL) && errno != ESRCH)
			pr_perror("kill tid %d", tids[i].tid);
}

/* Same mm as the program: its mappings are the userfaultfd's business. */
static int shares_program_mm(pid_t tid)
{
	char path[64], line[128];
	int r, tgid = -1;
	FILE *f;

	if (!sess.alive || sess.mm_lost)
		return 0;
	r = syscall(SYS_kcmp, sess.pid, tid, KCMP_VM, 0, 0);
	if (r >= 0)
		return r == 0;
	snprintf(path, sizeof(path), "/proc/%d/status", tid);
	f = fopen(path, "re");
	if (!f)
		return 0;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Tgid: %d", &tgid) == 1)
			break;
	fclose(f);
	return tgid == sess.pid;
}

static void region_json(struct jbuf *b, uint64_t start, uint64_t end, const char *via,
			const char *name)
{
	jb_puts(b, "{\"start\":");
	jb_hex(b, start);
	jb_puts(b, ",\"end\":");
	jb_hex(b, end);
	jb_puts(b, ",\"via\":");
	jb_str(b, via);
	if (name && *name) {
		jb_puts(b, ",\"name\":");
		jb_str(b, name);
	}
	jb_puts(b, "}");
}

int track_register(uint64_t start, uint64_t end, const char *via, const char *name,
		   struct jbuf *list)
{
	if (sess.uffd < 0 || end <= start)
		return -1;
	if (uffd_register(sess.uffd, start, end, UFFDIO_REGISTER_MODE_MISSING, NULL)) {
		if (errno == EINVAL)
			pr_debug("pid %d: %s range %#llx-%#llx not registrable (fd %d): %s", sess.pid,
				 via, (unsigned long long)start, (unsigned long long)end, sess.uffd,
				 strerror(errno));
		else
			pr_perror("pid %d: UFFDIO_REGISTER of %s range %#llx-%#llx on fd %d failed",
				  sess.pid, via, (unsigned long long)start,
				  (unsigned long long)end, sess.uffd);
		return -1;
	}
	sess.nr_regions++;
	if (list) {
		if (list->len)
			jb_puts(list, ",");
		region_json(list, start, end, via, name);
	} else {
		/* Wire format: {"type":"event","event":"region","action":"add","region":Region} */
		ev_begin("region");
		jb_puts(&out, ",\"action\":\"add\",\"region\":");
		region_json(&out, start, end, via, name);
		ev_end();
	}
	return 0;
}

static int registrable_name(const char *name)
{
	return !*name || !strcmp(name, "[stack]") || !strcmp(name, "[heap]") ||
	       !strncmp(name, "[anon:", 6);
}

static int register_line(const struct maps_line *m, void *list)
{
	if (m->perms[3] == 'p' && m->ino == 0 && registrable_name(m->name))
		track_register(m->s, m->e, "exec", m->name, list);
	return 0;
}

int track_register_maps(pid_t pid, struct jbuf *list)
{
	return maps_for_each(pid, register_line, list) ? -1 : 0;
}

/* The syscall stopped at seccomp has returned: register what it mapped. */
static void syscall_done(struct tid_state *t, uint64_t ret)
{
	int failed = ret > (uint64_t)-4096;

	switch (t->nr) {
	case __NR_mmap: {
		uint64_t len = t->args[1], flags = t->args[3];

		if (failed || !(flags & MAP_ANONYMOUS) || (flags & MAP_TYPE) != MAP_PRIVATE ||
		    (flags & MAP_HUGETLB))
			return;
		track_register(ret, ret + PAGE_UP(len), "mmap", NULL, NULL);
		return;
	}
	case __NR_mremap:
		/* moved VMAs lose their registration without EVENT_REMAP: register the result;
		 * with it the registration moves along (faults.c reports the `remap`) */
		if (!failed && (ret == t->args[0] ||
				!(sess.uffd_features & UFFD_FEATURE_EVENT_REMAP)))
			track_register(ret, ret + PAGE_UP(t->args[2]), "mremap", NULL, NULL);
		return;
	case __NR_brk:
		/* growth is a separate, unregistered VMA until registered */
		if (sess.brk_known && ret > sess.last_brk &&
		    PAGE_UP(ret) > PAGE_UP(sess.last_brk))
			track_register(PAGE_UP(sess.last_brk), PAGE_UP(ret), "brk", "[heap]", NULL);
		sess.brk_known = 1;
		sess.last_brk = ret;
		return;
	}
}

static void resume(pid_t tid, int req, int sig)
{
	if (ptrace(req, tid, 0, sig) && errno != ESRCH)
		pr_perror("resuming tid %d (request %d, signal %d)", tid, req, sig);
}

static const char *signal_name(int sig, char *buf, size_t len)
{
	const char *abbr = sigabbrev_np(sig);

	if (abbr)
		snprintf(buf, len, "SIG%s", abbr);
	else
		snprintf(buf, len, "SIG%d", sig);
	return buf;
}

static void program_exited(int status)
{
	char sig[32];

	output_drain();	/* what it wrote before exiting comes first */
	/* Wire format: {"type":"event","event":"exited","pid":N,"code":N|null,"signal":S|null} */
	ev_begin("exited");
	jb_printf(&out, ",\"pid\":%d,\"code\":", sess.pid);
	if (WIFEXITED(status))
		jb_printf(&out, "%d,\"signal\":null", WEXITSTATUS(status));
	else {
		jb_puts(&out, "null,\"signal\":");
		jb_str(&out, signal_name(WTERMSIG(status), sig, sizeof(sig)));
	}
	ev_end();
	pr_info("program %d exited (status 0x%x)", sess.pid, status);
	sess.alive = 0;
	faults_forget_all();
	if (sess.uffd >= 0)
		close(sess.uffd);
	sess.uffd = -1;
}

/* Our own SIGSTOP from tracer_stop_thread: sent by this process with tkill. */
static int own_sigstop(struct tid_state *t, int status)
{
	siginfo_t si;

	if (!t->eat_sigstop || status >> 16 || WSTOPSIG(status) != SIGSTOP ||
	    ptrace(PTRACE_GETSIGINFO, t->tid, 0, &si))
		return 0;
	return si.si_code == SI_TKILL && si.si_pid == getpid();
}

static void handle_stop(struct tid_state *t, int status, int fresh)
{
	struct user_regs_struct r;
	int sig = WSTOPSIG(status), ev = (unsigned)status >> 16;
	siginfo_t si;

	if (ev == PTRACE_EVENT_SECCOMP) {
		if (!t->tracked || ptrace(PTRACE_GETREGS, t->tid, 0, &r)) {
			resume(t->tid, PTRACE_CONT, 0);
			return;
		}
		t->nr = r.orig_rax;
		t->args[0] = r.rdi;
		t->args[1] = r.rsi;
		t->args[2] = r.rdx;
		t->args[3] = r.r10;
		t->args[4] = r.r8;
		t->in_syscall = 1;
		resume(t->tid, PTRACE_SYSCALL, 0);
		return;
	}
	if (sig == (SIGTRAP | 0x80)) {
		if (t->in_syscall && !ptrace(PTRACE_GETREGS, t->tid, 0, &r)) {
			t->in_syscall = 0;
			if (t->tracked)
				syscall_done(t, r.rax);
		}
		t->in_syscall = 0;
		resume(t->tid, PTRACE_CONT, 0);
		return;
	}
	if (ev == PTRACE_EVENT_EXEC) {
		/* the exec stop is reported under the thread-group leader's pid */
		if (t->tid == sess.pid && sess.running && !sess.mm_lost) {
			size_t i;

			pr_warn("program %d called execve again: its new memory is not tracked",
				sess.pid);
			sess.mm_lost = 1;
			for (i = 0; i < nr_tids; i++)
				tids[i].tracked = 0;
		}
		t->tracked = 0;	/* a vfork child that shared the mm has its own now */
	}
	if (ev) {		/* clone/fork/vfork/exec events: the new tids report on their own */
		resume(t->tid, PTRACE_CONT, 0);
		return;
	}
	if (fresh && sig == SIGSTOP) {	/* the initial stop of an auto-attached thread */
		resume(t->tid, PTRACE_CONT, 0);
		return;
	}
	if (own_sigstop(t, status)) {	/* late, after tracer_stop_thread took another stop */
		t->eat_sigstop--;
		resume(t->tid, PTRACE_CONT, 0);
		return;
	}
	if (ptrace(PTRACE_GETSIGINFO, t->tid, 0, &si) && errno == EINVAL) {
		/* group-stop (without PTRACE_SEIZE it cannot be kept): let it run */
		resume(t->tid, PTRACE_CONT, 0);
		return;
	}
	resume(t->tid, PTRACE_CONT, sig);
}

static void thread_gone(pid_t tid, int status)
{
	tid_del(tid);
	if (tid == sess.pid && sess.alive)
		program_exited(status);
}

int tracer_stop_thread(pid_t tid)
{
	struct timespec nap = { 0, 50000 };
	uint64_t deadline = now_ns() + 2000000000ULL;
	struct tid_state *t = tid_find(tid);
	int status;
	pid_t r;

	if (!t) {
		errno = ESRCH;
		return -1;
	}
	if (syscall(SYS_tkill, tid, SIGSTOP))
		return -1;
	t->eat_sigstop++;
	for (;;) {
		r = waitpid(tid, &status, __WALL | WNOHANG);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			return -1;
		if (r == 0) {
			if (now_ns() > deadline) {
				errno = ETIMEDOUT;	/* the SIGSTOP is eaten when it comes */
				return -1;
			}
			nanosleep(&nap, NULL);
			continue;
		}
		if (WIFEXITED(status) || WIFSIGNALED(status)) {
			thread_gone(tid, status);
			errno = ESRCH;
			return -1;
		}
		if (!WIFSTOPPED(status))
			continue;
		if (own_sigstop(t, status)) {
			t->eat_sigstop--;
			t->resume_sig = 0;
			return 0;
		}
		if (!(status >> 16) && WSTOPSIG(status) != (SIGTRAP | 0x80)) {
			siginfo_t si;

			/* another signal stopped it first: stopped all the same; deliver it after */
			if (!ptrace(PTRACE_GETSIGINFO, tid, 0, &si)) {
				t->resume_sig = WSTOPSIG(status);
				return 0;
			}
		}
		handle_stop(t, status, 0);	/* anything else: as the tracer loop would */
	}
}

void tracer_resume_thread(pid_t tid)
{
	struct tid_state *t = tid_find(tid);

	if (!t)
		return;
	resume(tid, PTRACE_CONT, t->resume_sig);
	t->resume_sig = 0;
}

void tracer_reap(void)
{
	for (;;) {
		struct tid_state *t;
		int status, fresh;
		pid_t tid;

		tid = waitpid(-1, &status, __WALL | WNOHANG);
		if (tid < 0 && errno == EINTR)
			continue;
		if (tid <= 0)
			return;
		if (detach_if_later(tid, status))
			continue;
		if (WIFEXITED(status) || WIFSIGNALED(status)) {
			thread_gone(tid, status);
			continue;
		}
		if (!WIFSTOPPED(status))
			continue;
		fresh = !tid_find(tid);
		t = tid_add(tid, fresh ? shares_program_mm(tid) : 0);
		if (!t) {
			resume(tid, PTRACE_CONT, 0);
			continue;
		}
		handle_stop(t, status, fresh);
	}
}
