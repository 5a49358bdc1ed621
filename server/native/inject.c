#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "inject.h"
#include "log.h"

#ifndef __x86_64__
#error "uffd-helper injects system calls with x86_64 registers only"
#endif

/* The thread group of a tid, from /proc/TID/status; the tid itself if unknown. */
static pid_t tgid_of(pid_t tid)
{
	char path[64], line[128];
	int tgid = tid;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", tid);
	f = fopen(path, "re");
	if (!f)
		return tid;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Tgid: %d", &tgid) == 1)
			break;
	fclose(f);
	return tgid;
}

static int vdso_range(pid_t pid, uint64_t *start, uint64_t *end)
{
	char path[64], line[512];
	FILE *f;
	int ret = -1;

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	f = fopen(path, "re");
	if (!f) {
		pr_perror("cannot open %s", path);
		return -1;
	}
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;

		if (strstr(line, "[vdso]") && sscanf(line, "%lx-%lx", &s, &e) == 2) {
			*start = s;
			*end = e;
			ret = 0;
			break;
		}
	}
	fclose(f);
	return ret;
}

/* Finds 0f 05 (`syscall`) in the vDSO by reading it word by word. */
static int find_syscall_insn(pid_t pid, uint64_t *ip)
{
	uint64_t s, e, a;
	int prev = -1;

	if (vdso_range(pid, &s, &e))
		return -1;
	for (a = s; a < e; a += sizeof(long)) {
		unsigned char b[sizeof(long)];
		long w;
		unsigned i;

		errno = 0;
		w = ptrace(PTRACE_PEEKTEXT, pid, a, 0);
		if (errno) {
			pr_perror("PTRACE_PEEKTEXT %#lx in pid %d", (unsigned long)a, pid);
			return -1;
		}
		memcpy(b, &w, sizeof(b));
		for (i = 0; i < sizeof(b); i++) {
			if (prev == 0x0f && b[i] == 0x05) {
				*ip = a + i - 1;
				return 0;
			}
			prev = b[i];
		}
	}
	return -1;
}

void (*inject_idle)(void);

static int wait_trap(struct inject *in)
{
	struct timespec nap = { 0, 20000 };
	pid_t pid = in->pid, r;
	int st;

	for (;;) {
		r = waitpid(pid, &st, __WALL | (inject_idle ? WNOHANG : 0));
		if (r < 0) {
			if (errno == EINTR)
				continue;
			pr_perror("waitpid for pid %d during injection", pid);
			return -1;
		}
		if (r == 0) {	/* still in the system call: it may wait for us (inject_idle) */
			inject_idle();
			nanosleep(&nap, NULL);
			continue;
		}
		if (WIFEXITED(st) || WIFSIGNALED(st)) {
			pr_err("pid %d ended during syscall injection (status 0x%x)", pid, st);
			errno = ESRCH;
			return -1;
		}
		if (WIFSTOPPED(st) && WSTOPSIG(st) == SIGTRAP)
			return 0;
		/*
		 * Another stop came first (a signal, or a ptrace event stop): the step did not
		 * happen. Keep the signal for inject_end() and step again.
		 */
		if (WIFSTOPPED(st) && !(st >> 16)) {
			if (in->nr_sigs < INJECT_MAX_SIGS)
				in->sigs[in->nr_sigs++] = WSTOPSIG(st);
			else
				pr_warn("tid %d: signal %d during syscall injection dropped", pid,
					WSTOPSIG(st));
		}
		if (ptrace(PTRACE_SINGLESTEP, pid, 0, 0)) {
			pr_perror("PTRACE_SINGLESTEP pid %d", pid);
			return -1;
		}
	}
}

int inject_begin(struct inject *in, pid_t pid)
{
	memset(in, 0, sizeof(*in));
	in->pid = pid;
	if (ptrace(PTRACE_GETREGS, pid, 0, &in->saved)) {
		pr_perror("PTRACE_GETREGS pid %d", pid);
		return -1;
	}
	if (find_syscall_insn(pid, &in->syscall_ip) == 0)
		return 0;

	/* No vDSO: write the instruction over the current one, restored by inject_end(). */
	pr_info("pid %d: no syscall instruction in [vdso], writing one at rip %#llx",
		pid, (unsigned long long)in->saved.rip);
	in->poke_addr = in->saved.rip;
	errno = 0;
	in->poke_word = ptrace(PTRACE_PEEKTEXT, pid, in->poke_addr, 0);
	if (errno) {
		pr_perror("PTRACE_PEEKTEXT rip of pid %d", pid);
		return -1;
	}
	if (ptrace(PTRACE_POKETEXT, pid, in->poke_addr,
		   (in->poke_word & ~0xffffL) | 0x050f)) {
		pr_perror("PTRACE_POKETEXT rip of pid %d", pid);
		return -1;
	}
	in->poked = 1;
	in->syscall_ip = in->poke_addr;
	return 0;
}

int inject_syscall(struct inject *in, long nr, long a0, long a1, long a2, long a3,
		   long a4, long a5, long *ret)
{
	struct user_regs_struct r = in->saved;

	r.rip = in->syscall_ip;
	r.rax = nr;
	r.orig_rax = -1;	/* no syscall-restart handling on the way out */
	r.rdi = a0;
	r.rsi = a1;
	r.rdx = a2;
	r.r10 = a3;
	r.r8 = a4;
	r.r9 = a5;
	if (ptrace(PTRACE_SETREGS, in->pid, 0, &r)) {
		pr_perror("PTRACE_SETREGS pid %d", in->pid);
		return -1;
	}
	if (ptrace(PTRACE_SINGLESTEP, in->pid, 0, 0)) {
		pr_perror("PTRACE_SINGLESTEP pid %d", in->pid);
		return -1;
	}
	if (wait_trap(in))
		return -1;
	if (ptrace(PTRACE_GETREGS, in->pid, 0, &r)) {
		pr_perror("PTRACE_GETREGS pid %d", in->pid);
		return -1;
	}
	if (r.rip != in->syscall_ip + 2) {
		pr_err("pid %d: injected syscall %ld did not run (rip %#llx)", in->pid, nr,
		       (unsigned long long)r.rip);
		errno = EIO;
		return -1;
	}
	*ret = (long)r.rax;
	pr_debug("pid %d: injected syscall %ld -> %ld", in->pid, nr, *ret);
	return 0;
}

uint64_t inject_scratch_base(const struct inject *in)
{
	/* well below the 128-byte red zone; the stack VMA is at least 128 KiB after exec */
	return (in->saved.rsp - 1024) & ~15ULL;
}

int inject_scratch(struct inject *in, const void *data, size_t len, uint64_t *addr)
{
	int i, n = (len + sizeof(long) - 1) / sizeof(long);

	if (n > INJECT_SCRATCH_WORDS || in->scratch_n) {
		errno = E2BIG;
		return -1;
	}
	in->scratch_addr = inject_scratch_base(in);
	for (i = 0; i < n; i++) {
		uint64_t a = in->scratch_addr + i * sizeof(long);
		long w = 0;

		errno = 0;
		in->scratch_save[i] = ptrace(PTRACE_PEEKDATA, in->pid, a, 0);
		if (errno) {
			pr_perror("PTRACE_PEEKDATA %#llx in pid %d", (unsigned long long)a, in->pid);
			return -1;
		}
		in->scratch_n = i + 1;
		memcpy(&w, (const char *)data + i * sizeof(long),
		       len - i * sizeof(long) < sizeof(long) ? len - i * sizeof(long) : sizeof(long));
		if (ptrace(PTRACE_POKEDATA, in->pid, a, w)) {
			pr_perror("PTRACE_POKEDATA %#llx in pid %d", (unsigned long long)a, in->pid);
			return -1;
		}
	}
	*addr = in->scratch_addr;
	return 0;
}

int inject_end(struct inject *in)
{
	int i, ret = 0;

	for (i = 0; i < in->scratch_n; i++) {
		if (ptrace(PTRACE_POKEDATA, in->pid, in->scratch_addr + i * sizeof(long),
			   in->scratch_save[i])) {
			pr_perror("restoring the stack of pid %d", in->pid);
			ret = -1;
		}
	}
	in->scratch_n = 0;
	if (in->poked && ptrace(PTRACE_POKETEXT, in->pid, in->poke_addr, in->poke_word)) {
		pr_perror("restoring the code at rip of pid %d", in->pid);
		ret = -1;
	}
	in->poked = 0;
	if (ptrace(PTRACE_SETREGS, in->pid, 0, &in->saved)) {
		pr_perror("restoring the registers of pid %d", in->pid);
		ret = -1;
	}
	for (i = 0; i < in->nr_sigs; i++) {
		pr_info("tid %d: signal %d arrived during syscall injection: queued again",
			in->pid, in->sigs[i]);
		if (syscall(SYS_tgkill, tgid_of(in->pid), in->pid, in->sigs[i]))
			pr_perror("tgkill tid %d signal %d", in->pid, in->sigs[i]);
	}
	in->nr_sigs = 0;
	return ret;
}
