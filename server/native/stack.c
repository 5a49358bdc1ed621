/*
 * `stack`: the registers and the call stack of a thread held on a fault.
 *
 * The thread sleeps in handle_userfault. Its registers need a ptrace stop: in a launched
 * program the helper is already the tracer (tracer.c stops the thread), in an attached one
 * the thread is seized, interrupted, read and detached here. Either way the kernel takes the
 * thread out of the fault; on resume it re-executes the instruction and faults again, and
 * faults.c hides that second message behind the held fault. A fault taken inside a system
 * call (the kernel copying to or from the page) does not give way to ptrace until resolved, so
 * it is not interrupted: /proc's view of the registers is used instead. The stack is unwound with libdw on a Dwfl kept per process, re-reported only
 * when its file mappings change, reading memory through /proc/PID/mem (which fails with EIO
 * on a missing registered page instead of faulting). Results are kept per held fault.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwfl.h>
#include <dwarf.h>
#include <sys/ptrace.h>
#include <sys/user.h>
#include <sys/wait.h>

#include "errnames.h"
#include "faults.h"
#include "log.h"
#include "procstat.h"
#include "session.h"
#include "stack.h"
#include "tracer.h"

#define MAX_FRAMES_DEFAULT 64
#define MAX_FRAMES_LIMIT 512
#define NR_PROCS 4		/* Dwfls kept: the program and a few followed children */
#define NR_CACHED 32		/* stacks kept, one per held fault */
#define STOP_WAIT_NS 2000000000ULL

/* x86_64 DWARF register numbers 0..16: rax rdx rcx rbx rsi rdi rbp rsp r8..r15, return address. */
enum { DW_RSP = 7, DW_NREGS = 17 };

struct proc_dwfl {
	pid_t pid;
	long long start;	/* start time: a reused pid is another process */
	Dwfl *dwfl;
	int mem_fd;
	uint64_t maps_hash;	/* of the file-backed lines of /proc/PID/maps */
	int attached;		/* dwfl_attach_state done */
	uint64_t used;
};

struct snapshot {
	struct user_regs_struct r;
	int full;		/* r is complete (ptrace); else only what procfs shows */
	long nr;		/* procfs: the system call the fault happened in, -1: user mode */
	uint64_t args[6], sp, pc;
	Dwarf_Word dw[DW_NREGS];
	uint32_t dw_mask;	/* which dw[] are known */
	char note[512];
};

struct cached_stack {
	uint64_t seq;
	pid_t tid;
	char *body;		/* the response body without its closing "cached" field */
	size_t len;
};

static struct proc_dwfl procs[NR_PROCS];
static struct cached_stack cache[NR_CACHED];
static size_t cache_next;
static uint64_t use_clock;

/* The thread being unwound, for the Dwfl callbacks. */
static pid_t cur_tid;
static const struct snapshot *cur_snap;

/* ---- registers --------------------------------------------------------------------- */

/*
 * /proc/PID/task/TID/syscall of a sleeping thread: "NR A1..A6 SP PC" inside a system call,
 * "-1 SP PC" in a user-mode fault, "running" otherwise. 0 when parsed.
 */
static int read_syscall_file(pid_t pid, pid_t tid, struct snapshot *s)
{
	char path[80], buf[256], *p, *end;
	uint64_t v[9];
	ssize_t n;
	int fd, i;

	snprintf(path, sizeof(path), "/proc/%d/task/%d/syscall", pid, tid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = 0;
	p = buf;
	s->nr = strtol(p, &end, 10);
	if (end == p) {
		errno = EBUSY;	/* "running" */
		return -1;
	}
	for (i = 0, p = end; i < 9; i++, p = end) {
		v[i] = strtoull(p, &end, 0);
		if (end == p)
			break;
	}
	if (i != 2 && i != 8) {
		errno = EPROTO;
		return -1;
	}
	if (i == 8)
		memcpy(s->args, v, sizeof(s->args));
	s->sp = v[i - 2];
	s->pc = v[i - 1];
	return 0;
}

static void snapshot_from_procfs(struct snapshot *s)
{
	s->full = 0;
	memset(s->dw, 0, sizeof(s->dw));
	s->dw[DW_RSP] = s->sp;
	s->dw[16] = s->pc;
	s->dw_mask = 1u << DW_RSP | 1u << 16;
	if (s->nr >= 0) {	/* the argument registers as the system call left them */
		s->dw[5] = s->args[0];	/* rdi */
		s->dw[4] = s->args[1];	/* rsi */
		s->dw[1] = s->args[2];	/* rdx */
		s->dw[10] = s->args[3];	/* r10 */
		s->dw[8] = s->args[4];	/* r8 */
		s->dw[9] = s->args[5];	/* r9 */
		s->dw_mask |= 1u << 5 | 1u << 4 | 1u << 1 | 1u << 10 | 1u << 8 | 1u << 9;
	}
}

static void snapshot_from_regs(struct snapshot *s)
{
	const struct user_regs_struct *r = &s->r;
	const Dwarf_Word dw[DW_NREGS] = {
		r->rax, r->rdx, r->rcx, r->rbx, r->rsi, r->rdi, r->rbp, r->rsp,
		r->r8, r->r9, r->r10, r->r11, r->r12, r->r13, r->r14, r->r15, r->rip,
	};

	memcpy(s->dw, dw, sizeof(dw));
	s->dw_mask = (1u << DW_NREGS) - 1;
	s->full = 1;
}

/* Waits (bounded) for a stop of a thread this helper traces; 0 with *status. */
static int wait_stop(pid_t tid, int *status)
{
	struct timespec nap = { 0, 50000 };
	uint64_t deadline = now_ns() + STOP_WAIT_NS;

	for (;;) {
		pid_t r = waitpid(tid, status, __WALL | WNOHANG);

		if (r == tid)
			return 0;
		if (r < 0 && errno != EINTR)
			return -1;
		if (now_ns() > deadline) {
			errno = ETIMEDOUT;
			return -1;
		}
		nanosleep(&nap, NULL);
	}
}

/*
 * An attached process: the helper is not its tracer. Seize the one thread, interrupt it,
 * read, detach. A signal that stopped it first is handed back at the detach.
 */
static int regs_by_seize(pid_t pid, pid_t tid, struct snapshot *s)
{
	int status, sig = 0, err;

	if (ptrace(PTRACE_SEIZE, tid, 0, 0)) {
		err = errno;
		snprintf(s->note, sizeof(s->note), "PTRACE_SEIZE of thread %d of pid %d failed: %s%s",
			 tid, pid, strerror(err), err == EPERM ? " (the helper needs the target's "
			 "uid or CAP_SYS_PTRACE, and kernel.yama.ptrace_scope allowing it)" : "");
		errno = err;
		return -1;
	}
	if (ptrace(PTRACE_INTERRUPT, tid, 0, 0)) {
		err = errno;
		snprintf(s->note, sizeof(s->note), "PTRACE_INTERRUPT of thread %d failed: %s", tid,
			 strerror(err));
		/* not stopped, so not detachable: the tracer loop detaches it when it stops */
		tracer_detach_later(tid);
		errno = err;
		return -1;
	}
	if (wait_stop(tid, &status)) {
		err = errno;
		snprintf(s->note, sizeof(s->note), "thread %d did not stop for ptrace: %s", tid,
			 strerror(err));
		if (err == ETIMEDOUT)
			tracer_detach_later(tid);
		errno = err;
		return -1;
	}
	if (!WIFSTOPPED(status)) {
		snprintf(s->note, sizeof(s->note), "thread %d is gone", tid);
		errno = ESRCH;
		return -1;
	}
	/* a signal-delivery-stop (not our interrupt, not a group-stop) keeps its signal */
	if (status >> 16 == 0)
		sig = WSTOPSIG(status);
	err = 0;
	if (ptrace(PTRACE_GETREGS, tid, 0, &s->r)) {
		err = errno;
		snprintf(s->note, sizeof(s->note), "PTRACE_GETREGS of thread %d failed: %s", tid,
			 strerror(err));
	}
	if (ptrace(PTRACE_DETACH, tid, 0, sig) && errno != ESRCH)
		pr_perror("stack: PTRACE_DETACH of tid %d (signal %d)", tid, sig);
	errno = err;
	return err ? -1 : 0;
}

/* A launched program: the tracer stops the thread for us. */
static int regs_by_tracer(pid_t tid, struct snapshot *s)
{
	int err = 0;

	if (tracer_stop_thread(tid)) {
		err = errno;
		snprintf(s->note, sizeof(s->note), "could not stop thread %d for ptrace: %s", tid,
			 strerror(err));
		errno = err;
		return -1;
	}
	if (ptrace(PTRACE_GETREGS, tid, 0, &s->r)) {
		err = errno;
		snprintf(s->note, sizeof(s->note), "PTRACE_GETREGS of thread %d failed: %s", tid,
			 strerror(err));
	}
	tracer_resume_thread(tid);
	errno = err;
	return err ? -1 : 0;
}

/*
 * Fills s for thread tid of pid. 0 with at least pc and sp (s->note says what is missing),
 * -1 when the thread is not blocked (errno).
 */
static int take_registers(pid_t pid, pid_t tid, struct snapshot *s)
{
	if (read_syscall_file(pid, tid, s))
		return -1;
	if (s->nr >= 0) {
		snprintf(s->note, sizeof(s->note), "thread %d faulted inside system call %ld (the "
			 "kernel was copying to or from the page), where ptrace cannot stop it until "
			 "the fault is resolved: only the registers /proc shows are known, and the stack "
			 "may end early", tid, s->nr);
		snapshot_from_procfs(s);
		return 0;
	}
	if (!(tracer_traces(tid) ? regs_by_tracer(tid, s) : regs_by_seize(pid, tid, s))) {
		snapshot_from_regs(s);
		return 0;
	}
	pr_warn("stack: %s; using /proc/%d/task/%d/syscall (pc and sp only)", s->note, pid, tid);
	snprintf(s->note + strlen(s->note), sizeof(s->note) - strlen(s->note),
		 "; only pc and sp are known (from /proc), the stack may end early");
	snapshot_from_procfs(s);
	return 0;
}

/*
 * A thread of a process this helper does not debug (observe mode: the process owns its
 * userfaultfd). Inside a system call (a handler stopped by the observe library waits in
 * futex) it is seized and interrupted: the call restarts. Blocked in user mode it waits on a
 * page fault of the process's own userfaultfd: interrupting it would send that fault to the
 * handler a second time, so only /proc's pc and sp are used.
 */
static int take_thread_registers(pid_t pid, pid_t tid, struct snapshot *s)
{
	if (read_syscall_file(pid, tid, s))
		return -1;
	if (s->nr < 0) {
		snprintf(s->note, sizeof(s->note), "thread %d waits on a page fault of its own "
			 "process's userfaultfd; it is not interrupted (its handler would read the "
			 "fault twice): only pc and sp are known, the stack may end early", tid);
		snapshot_from_procfs(s);
		return 0;
	}
	if (!regs_by_seize(pid, tid, s)) {
		snapshot_from_regs(s);
		return 0;
	}
	snprintf(s->note + strlen(s->note), sizeof(s->note) - strlen(s->note),
		 "; only pc and sp are known (from /proc), the stack may end early");
	snapshot_from_procfs(s);
	return 0;
}

static void regs_json(struct jbuf *b, const struct snapshot *s)
{
	const struct user_regs_struct *r = &s->r;
	const struct { const char *name; uint64_t v; } all[] = {
		{ "rax", r->rax }, { "rbx", r->rbx }, { "rcx", r->rcx }, { "rdx", r->rdx },
		{ "rsi", r->rsi }, { "rdi", r->rdi }, { "rbp", r->rbp }, { "rsp", r->rsp },
		{ "r8", r->r8 }, { "r9", r->r9 }, { "r10", r->r10 }, { "r11", r->r11 },
		{ "r12", r->r12 }, { "r13", r->r13 }, { "r14", r->r14 }, { "r15", r->r15 },
		{ "rip", r->rip }, { "eflags", r->eflags }, { "orig_rax", r->orig_rax },
		{ "fs_base", r->fs_base }, { "gs_base", r->gs_base }, { "cs", r->cs },
		{ "ss", r->ss }, { "ds", r->ds }, { "es", r->es }, { "fs", r->fs }, { "gs", r->gs },
	};
	size_t i;

	jb_puts(b, "{");
	if (s->full) {
		for (i = 0; i < sizeof(all) / sizeof(all[0]); i++) {
			jb_printf(b, "%s\"%s\":", i ? "," : "", all[i].name);
			jb_hex(b, all[i].v);
		}
	} else {
		jb_puts(b, "\"rip\":");
		jb_hex(b, s->pc);
		jb_puts(b, ",\"rsp\":");
		jb_hex(b, s->sp);
		if (s->nr >= 0) {
			static const char *const argn[6] = { "rdi", "rsi", "rdx", "r10", "r8", "r9" };

			jb_printf(b, ",\"orig_rax\":");
			jb_hex(b, (uint64_t)s->nr);
			for (i = 0; i < 6; i++) {
				jb_printf(b, ",\"%s\":", argn[i]);
				jb_hex(b, s->args[i]);
			}
		}
	}
	jb_puts(b, "}");
}

/* ---- libdw ------------------------------------------------------------------------- */

static pid_t cb_next_thread(Dwfl *dwfl, void *arg, void **thread_argp)
{
	(void)dwfl;
	if (*thread_argp)
		return 0;
	*thread_argp = arg;
	return cur_tid;
}

static bool cb_get_thread(Dwfl *dwfl, pid_t tid, void *arg, void **thread_argp)
{
	(void)dwfl;
	if (tid != cur_tid)
		return false;
	*thread_argp = arg;
	return true;
}

/* pread of /proc/PID/mem: EIO on a missing registered page, never a fault. */
static bool cb_memory_read(Dwfl *dwfl, Dwarf_Addr addr, Dwarf_Word *result, void *arg)
{
	const struct proc_dwfl *p = arg;

	(void)dwfl;
	return pread(p->mem_fd, result, sizeof(*result), (off_t)addr) == sizeof(*result);
}

static bool cb_set_initial_registers(Dwfl_Thread *thread, void *arg)
{
	const struct snapshot *s = cur_snap;
	int i;

	(void)arg;
	for (i = 0; i < DW_NREGS; i++)
		if (s->dw_mask & 1u << i && !dwfl_thread_state_registers(thread, i, 1, &s->dw[i]))
			return false;
	dwfl_thread_state_register_pc(thread, s->dw[16]);
	return true;
}

static const Dwfl_Thread_Callbacks thread_cbs = {
	.next_thread = cb_next_thread,
	.get_thread = cb_get_thread,
	.memory_read = cb_memory_read,
	.set_initial_registers = cb_set_initial_registers,
};

static char *debuginfo_path;
static const Dwfl_Callbacks dwfl_cbs = {
	.find_elf = dwfl_linux_proc_find_elf,
	.find_debuginfo = dwfl_standard_find_debuginfo,
	.debuginfo_path = &debuginfo_path,
};

static long long start_ticks(pid_t pid)
{
	char buf[1024], *p;
	int field;

	p = procstat_read(pid, buf, sizeof(buf));
	if (!p)
		return -1;
	for (field = 2; *p && field < 22; p++)	/* starttime is field 22 */
		if (*p == ' ')
			field++;
	return field == 22 ? strtoll(p, NULL, 10) : -1;
}

/* /proc/PID/maps, whole, NUL-terminated; NULL on failure (errno). */
static char *read_maps(pid_t pid, size_t *len)
{
	char path[64], *buf = NULL;
	size_t cap = 0, n = 0;
	ssize_t r;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/maps", pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return NULL;
	for (;;) {
		if (cap - n < 4097) {
			char *nb = realloc(buf, cap ? cap * 2 : 65536);

			if (!nb) {
				free(buf);
				close(fd);
				errno = ENOMEM;
				return NULL;
			}
			buf = nb;
			cap = cap ? cap * 2 : 65536;
		}
		r = read(fd, buf + n, cap - n - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		n += r;
	}
	close(fd);
	if (r < 0) {
		free(buf);
		return NULL;
	}
	buf[n] = 0;
	*len = n;
	return buf;
}

/* FNV-1a over the lines that name a file or the vDSO: anonymous churn is not a module change. */
static uint64_t modules_hash(const char *maps)
{
	uint64_t h = 0xcbf29ce484222325ULL;
	const char *line = maps, *nl;

	for (; *line; line = nl ? nl + 1 : line + strlen(line)) {
		const char *name;

		nl = strchr(line, '\n');
		name = memchr(line, '/', nl ? (size_t)(nl - line) : strlen(line));
		if (!name)
			name = strstr(line, "[vdso]");
		if (name && (!nl || name < nl)) {
			const char *c;

			for (c = line; c < (nl ? nl : line + strlen(line)); c++) {
				h ^= (unsigned char)*c;
				h *= 0x100000001b3ULL;
			}
		}
		if (!nl)
			break;
	}
	return h;
}

/* mem_fd is valid (an fd or -1) only while dwfl is set. */
static void proc_drop(struct proc_dwfl *p)
{
	if (p->dwfl) {
		dwfl_end(p->dwfl);
		if (p->mem_fd >= 0)
			close(p->mem_fd);
	}
	memset(p, 0, sizeof(*p));
}

/* The Dwfl of pid, created or brought up to date with its mappings; NULL with msg. */
static struct proc_dwfl *proc_get(pid_t pid, char *msg, size_t msglen)
{
	struct proc_dwfl *p = NULL, *lru = &procs[0];
	long long start = start_ticks(pid);
	char *maps;
	size_t i, len;
	static int env_done;
	uint64_t h;
	FILE *f;

	if (!env_done) {	/* never fetch debug info over the network inside a session */
		unsetenv("DEBUGINFOD_URLS");
		env_done = 1;
	}
	for (i = 0; i < NR_PROCS; i++) {
		if (procs[i].dwfl && procs[i].pid == pid) {
			p = &procs[i];
			break;
		}
		if (!procs[i].dwfl || procs[i].used < lru->used)
			lru = &procs[i];
	}
	if (p && p->start != start)
		proc_drop(p);
	if (!p || !p->dwfl) {
		p = p ? p : lru;
		proc_drop(p);
		p->dwfl = dwfl_begin(&dwfl_cbs);
		if (!p->dwfl) {
			snprintf(msg, msglen, "dwfl_begin: %s", dwfl_errmsg(-1));
			return NULL;
		}
		p->mem_fd = -1;
		p->pid = pid;
		p->start = start;
	}
	p->used = ++use_clock;
	if (p->mem_fd < 0) {
		char path[64];

		snprintf(path, sizeof(path), "/proc/%d/mem", pid);
		p->mem_fd = open(path, O_RDONLY | O_CLOEXEC);
		if (p->mem_fd < 0) {
			snprintf(msg, msglen, "cannot open %s: %s", path, strerror(errno));
			proc_drop(p);
			return NULL;
		}
	}
	maps = read_maps(pid, &len);
	if (!maps) {
		snprintf(msg, msglen, "cannot read /proc/%d/maps: %s", pid, strerror(errno));
		proc_drop(p);
		return NULL;
	}
	h = modules_hash(maps);
	if (h != p->maps_hash || !p->attached) {
		f = fmemopen(maps, len ? len : 1, "r");
		if (!f) {
			snprintf(msg, msglen, "fmemopen of the maps: %s", strerror(errno));
			free(maps);
			proc_drop(p);
			return NULL;
		}
		dwfl_report_begin(p->dwfl);	/* modules reported again unchanged are kept */
		if (dwfl_linux_proc_maps_report(p->dwfl, f) != 0)
			pr_warn("stack: reading the modules of pid %d: %s", pid, dwfl_errmsg(-1));
		fclose(f);
		if (dwfl_report_end(p->dwfl, NULL, NULL)) {
			snprintf(msg, msglen, "dwfl_report_end for pid %d: %s", pid, dwfl_errmsg(-1));
			free(maps);
			proc_drop(p);
			return NULL;
		}
		p->maps_hash = h;
		if (!p->attached) {
			if (!dwfl_attach_state(p->dwfl, NULL, pid, &thread_cbs, p)) {
				snprintf(msg, msglen, "dwfl_attach_state for pid %d: %s", pid,
					 dwfl_errmsg(-1));
				free(maps);
				proc_drop(p);
				return NULL;
			}
			p->attached = 1;
		}
	}
	free(maps);
	return p;
}

struct unwind_out {
	struct jbuf *b;
	Dwfl *dwfl;
	int n, max;
};

/* The innermost function (an inlined one included) that holds addr, from DWARF. */
static const char *dwarf_function(Dwfl_Module *mod, Dwarf_Addr addr, int *inlined)
{
	Dwarf_Die *cu, *scopes = NULL;
	Dwarf_Addr bias;
	const char *name = NULL;
	int n, i;

	*inlined = 0;
	cu = dwfl_module_addrdie(mod, addr, &bias);
	if (!cu)
		return NULL;
	n = dwarf_getscopes(cu, addr - bias, &scopes);
	for (i = 0; i < n; i++) {
		int tag = dwarf_tag(&scopes[i]);

		if (tag == DW_TAG_subprogram || tag == DW_TAG_inlined_subroutine) {
			name = dwarf_diename(&scopes[i]);
			*inlined = tag == DW_TAG_inlined_subroutine;
			break;
		}
	}
	free(scopes);
	return name;
}

static void frame_json(struct jbuf *b, Dwfl *dwfl, Dwarf_Addr pc, int activation)
{
	/* a return address points after the call: look up the call itself */
	Dwarf_Addr look = activation ? pc : pc - 1, start = 0, bias;
	Dwfl_Module *mod = dwfl_addrmodule(dwfl, look);
	const char *name, *mainfile = NULL, *sym, *file, *func;
	GElf_Off off = 0;
	GElf_Sym s;
	Dwfl_Line *l;
	int line = 0, col = 0, inlined;

	jb_puts(b, "{\"pc\":");
	jb_hex(b, pc);
	if (!mod) {
		jb_puts(b, "}");
		return;
	}
	dwfl_module_getelf(mod, &bias);	/* finds the file: mainfile below */
	name = dwfl_module_info(mod, NULL, &start, NULL, NULL, NULL, &mainfile, NULL);
	jb_puts(b, ",\"module\":");
	jb_str(b, mainfile ? mainfile : name ? name : "?");
	jb_puts(b, ",\"moduleBase\":");
	jb_hex(b, start);
	sym = dwfl_module_addrinfo(mod, look, &off, &s, NULL, NULL, NULL);
	if (sym && *sym) {
		jb_puts(b, ",\"symbol\":");
		jb_str(b, sym);
		jb_puts(b, ",\"offset\":");
		jb_u64(b, pc - (look - off));
	}
	func = dwarf_function(mod, look, &inlined);
	if (func) {
		jb_puts(b, ",\"function\":");
		jb_str(b, func);
		if (inlined)
			jb_puts(b, ",\"inlined\":true");
	}
	l = dwfl_module_getsrc(mod, look);
	file = l ? dwfl_lineinfo(l, NULL, &line, &col, NULL, NULL) : NULL;
	if (file && line > 0) {
		const char *dir = file[0] == '/' ? NULL : dwfl_line_comp_dir(l);

		jb_puts(b, ",\"file\":");
		if (dir) {
			char *full;

			if (asprintf(&full, "%s/%s", dir, file) < 0)
				full = NULL;
			jb_str(b, full ? full : file);
			free(full);
		} else {
			jb_str(b, file);
		}
		jb_printf(b, ",\"line\":%d", line);
		if (col > 0)
			jb_printf(b, ",\"column\":%d", col);
	}
	jb_puts(b, "}");
}

static int frame_cb(Dwfl_Frame *frame, void *arg)
{
	struct unwind_out *o = arg;
	Dwarf_Addr pc;
	bool activation;

	if (!dwfl_frame_pc(frame, &pc, &activation))
		return -1;
	if (o->n)
		jb_puts(o->b, ",");
	frame_json(o->b, o->dwfl, pc, activation);
	return ++o->n >= o->max ? DWARF_CB_ABORT : DWARF_CB_OK;
}

/* ---- the request ------------------------------------------------------------------- */

static struct cached_stack *cache_find(uint64_t seq, pid_t tid)
{
	size_t i;

	for (i = 0; i < NR_CACHED; i++)
		if (cache[i].body && cache[i].seq == seq && cache[i].tid == tid)
			return &cache[i];
	return NULL;
}

static void cache_put(uint64_t seq, pid_t tid, const char *body, size_t len)
{
	struct cached_stack *c = &cache[cache_next++ % NR_CACHED];

	free(c->body);
	c->body = malloc(len);
	if (!c->body)
		return;
	memcpy(c->body, body, len);
	c->len = len;
	c->seq = seq;
	c->tid = tid;
}

static void stack_respond(int64_t id, uint64_t seq, pid_t pid, pid_t tid, pid_t child,
			  struct snapshot *snapp, int max);

static void respond(int64_t id, const char *body, size_t len, int cached)
{
	resp_ok_begin(id);
	jb_write(&out, body, len);
	jb_printf(&out, ",\"cached\":%s}", cached ? "true" : "false");
	resp_ok_end();
}

void stack_cmd(int64_t id, const struct jval *req)
{
	struct snapshot snap = { .nr = -1 };
	struct cached_stack *c;
	int64_t seq, max = MAX_FRAMES_DEFAULT;
	pid_t tid, child, pid;

	if (json_get(req, "maxFrames") &&
	    !json_int(json_get(req, "maxFrames"), 1, MAX_FRAMES_LIMIT, &max)) {
		resp_err(id, "EPROTO", "'maxFrames' must be a whole number from 1 to %d",
			 MAX_FRAMES_LIMIT);
		return;
	}
	if (json_get(req, "tid")) {	/* any thread of a process not debugged here */
		int64_t pp, t;

		if (!json_int(json_get(req, "pid"), 1, INT32_MAX, &pp) ||
		    !json_int(json_get(req, "tid"), 1, INT32_MAX, &t)) {
			resp_err(id, "EPROTO", "stack of a thread needs 'pid' and 'tid', positive "
				 "whole numbers");
			return;
		}
		if (sess.pid && (pid_t)pp == sess.pid) {
			resp_err(id, "ESTATE", "pid %lld is debugged by this helper: ask for the stack "
				 "of a held fault with 'seq'", (long long)pp);
			return;
		}
		if (take_thread_registers((pid_t)pp, (pid_t)t, &snap)) {
			resp_err(id, errno == EBUSY ? "ESTATE" : "ESRCH", errno == EBUSY ?
				 "thread %lld of pid %lld is running: its stack can be read only while "
				 "it is blocked" : "no thread %lld in pid %lld", (long long)t,
				 (long long)pp);
			return;
		}
		stack_respond(id, 0, (pid_t)pp, (pid_t)t, (pid_t)pp, &snap, (int)max);
		return;
	}
	if (!json_int(json_get(req, "seq"), 1, INT64_MAX, &seq)) {
		resp_err(id, "EPROTO", "stack needs 'seq', the sequence number of a held fault "
			 "(or 'pid' and 'tid' for a thread of a process not debugged here)");
		return;
	}
	if (!sess.alive || faults_held_thread((uint64_t)seq, &tid, &child)) {
		resp_err(id, "ESTATE", "fault %lld is not held (resolved already, or the program "
			 "is gone): a stack exists only while its thread waits on the fault",
			 (long long)seq);
		return;
	}
	pid = child ? child : sess.pid;
	c = cache_find((uint64_t)seq, tid);
	if (c) {
		respond(id, c->body, c->len, 1);
		return;
	}
	if (take_registers(pid, tid, &snap)) {
		resp_err(id, errno == EBUSY ? "ESTATE" : errno_name(errno), errno == EBUSY ?
			 "thread %d of pid %d is running, not blocked on fault %lld" :
			 "cannot read /proc/%d/task/%d/syscall for fault %lld: the thread is gone",
			 tid, pid, (long long)seq);
		return;
	}
	stack_respond(id, (uint64_t)seq, pid, tid, child, &snap, (int)max);
}

/* Unwinds from snap and answers; seq 0: a thread, not a held fault (not cached). */
static void stack_respond(int64_t id, uint64_t seq, pid_t pid, pid_t tid, pid_t child,
			  struct snapshot *snapp, int max)
{
	struct snapshot snap = *snapp;
	struct unwind_out uo;
	struct proc_dwfl *p;
	struct jbuf b = { 0 };
	char msg[512] = "";
	int r;

	/* Wire format: StackBody in server/protocol/messages.ts */
	jb_printf(&b, "{\"seq\":%lld,\"tid\":%d", (long long)seq, tid);
	if (child)
		jb_printf(&b, ",\"pid\":%d", child);
	jb_printf(&b, ",\"registersFrom\":\"%s\",\"registers\":", snap.full ? "ptrace" : "procfs");
	regs_json(&b, &snap);
	jb_puts(&b, ",\"note\":");
	if (snap.note[0])
		jb_str(&b, snap.note);
	else
		jb_puts(&b, "null");
	jb_puts(&b, ",\"frames\":[");
	p = proc_get(pid, msg, sizeof(msg));
	uo = (struct unwind_out){ .b = &b, .dwfl = p ? p->dwfl : NULL, .max = (int)max };
	if (p) {
		cur_tid = tid;
		cur_snap = &snap;
		r = dwfl_getthread_frames(p->dwfl, tid, frame_cb, &uo);
		if (r == -1 && uo.n < uo.max)
			snprintf(msg, sizeof(msg), "%s", dwfl_errmsg(-1));
		cur_snap = NULL;
	}
	if (!uo.n) {	/* nothing unwound: at least the faulting instruction */
		jb_puts(&b, "{\"pc\":");
		jb_hex(&b, snap.full ? snap.r.rip : snap.pc);
		jb_puts(&b, "}");
	}
	jb_puts(&b, "],\"unwindEnd\":");
	if (msg[0])
		jb_str(&b, msg);
	else
		jb_puts(&b, "null");
	if (b.p) {
		if (seq)
			cache_put(seq, tid, b.p, b.len);
		respond(id, b.p, b.len, 0);
	} else {
		resp_err(id, "ENOMEM", "out of memory writing the stack of fault %lld",
			 (long long)seq);
	}
	free(b.p);
}
