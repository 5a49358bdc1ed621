#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <stdio.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "attach.h"
#include "b64.h"
#include "errnames.h"
#include "evict.h"
#include "faults.h"
#include "log.h"
#include "mem.h"
#include "move.h"
#include "output.h"
#include "procstat.h"
#include "session.h"
#include "stream.h"
#include "uffd.h"

#define MSG_BATCH 64
/* ~100 ms of EAGAIN_PAUSE_NS pauses: an event in flight (see eagain_pause) */
#define EAGAIN_RETRIES 1000
#define EAGAIN_PAUSE_NS 50000L
/* an automatic resolution that gets EAGAIN is retried from the timer: 100 us later, ~1 s */
#define EAGAIN_DEFER_NS 100000ULL
#define EAGAIN_DEFER_MAX 10000
#define MAX_RESOLVE_BYTES (64ULL << 20)
#define OP_DONTWAKE 1	/* leave threads blocked on the range asleep */
#define OP_WP 2		/* map copies write-protected: the page had the uffd-wp bit */

struct held {
	uint64_t seq, addr, page, t, psize;
	enum fault_kind kind;
	int write;
	pid_t tid;
	int fd;		/* the userfaultfd it came from: the program's or a followed child's */
	unsigned eagain;	/* automatic resolutions deferred by EAGAIN so far */
	pid_t pid;	/* the followed child it happened in; 0: the program */
};

/* A child followed after UFFD_EVENT_FORK (followForks): its own userfaultfd and a pidfd. */
struct kid {
	int fd, pidfd;
	pid_t pid;
};

/* A fault waiting for its policy delay before auto-resolution. */
struct pend {
	struct held h;
	uint64_t deadline;
};

struct policy policy = { .stream = STREAM_ALL };
const char *const kind_names[K_NR] = { "missing", "wp", "minor" };
const char *const stream_names[3] = { "all", "held", "none" };
static const char *const how_names[HOW_NR] = {
	"default", "zero", "wake", "copy", "continue", "unprotect", "move", "poison",
};
static const char *const how_ioctls[HOW_NR] = {
	"", "UFFDIO_ZEROPAGE", "UFFDIO_WAKE", "UFFDIO_COPY", "UFFDIO_CONTINUE",
	"UFFDIO_WRITEPROTECT", "UFFDIO_MOVE", "UFFDIO_POISON",
};

static struct held *held;
static size_t nr_held, cap_held;
static struct pend *pend;		/* sorted by deadline */
static size_t nr_pend, cap_pend;
static int timer_fd = -1;
static uint64_t seq_next = 1, nr_faults[K_NR], nr_resolved, nr_read_ahead, every_count;
static uint64_t rng = 0x9e3779b97f4a7c15ULL;
static int zero_was_copy;	/* the last zero_op fell back to UFFDIO_COPY */
static int op_fd = -1;		/* the userfaultfd the ioctls of the fault in hand go to */
static struct kid kids[FAULTS_MAX_KIDS];
static size_t nr_kids;
static pid_t kids_seen[64];	/* pids ever followed, never taken for a new child again */
static size_t nr_kids_seen;

/* A fault message read while waiting out an event in flight, handled after in order. */
struct backlog_msg {
	struct uffd_msg m;
	uint64_t t;
	int fd;
	pid_t pid;
};

static struct backlog_msg *backlog;
static size_t nr_backlog, backlog_head, cap_backlog;
static int backlogging;	/* inside eagain_pause's read: fault messages go to the backlog */

static void resolved_event(const struct held *h, const char *ioctl_name, uint64_t t_end);
static int pend_insert(const struct held *h, uint64_t deadline);
static void handle_fault(const struct uffd_msg *m, uint64_t t, int fd, pid_t pid);

static int page_held(uint64_t page, int fd)
{
	size_t i;

	for (i = 0; i < nr_held; i++)
		if (held[i].page == page && held[i].fd == fd)
			return 1;
	return 0;
}

static int page_pending(uint64_t page)
{
	size_t i;

	for (i = 0; i < nr_pend; i++)
		if (pend[i].h.page == page)
			return 1;
	return 0;
}

/* What the kernel would have done: see `resolve` in docs/protocol.md. */
static enum resolve_how default_how(const struct held *h)
{
	switch (h->kind) {
	case K_WP:
		return HOW_UNPROTECT;
	case K_MINOR:
		return HOW_CONTINUE;
	default:
		/* hugetlbfs has no UFFDIO_ZEROPAGE */
		return h->write || h->psize != PAGE_SZ ? HOW_COPY : HOW_ZERO;
	}
}

/* A zeroed buffer of at least len bytes (huge pages need one as large as the page). */
static const void *zeros(uint64_t len)
{
	static char small[PAGE_SZ] __attribute__((aligned(4096)));
	static void *big;
	static uint64_t big_len;

	if (len <= PAGE_SZ)
		return small;
	if (len > big_len) {
		void *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

		if (p == MAP_FAILED) {
			pr_perror("cannot map %" PRIu64 " zero bytes", len);
			return NULL;
		}
		if (big)
			munmap(big, big_len);
		big = p;
		big_len = len;
	}
	return big;
}

/*
 * UFFDIO_ZEROPAGE refuses (EEXIST) a page that only holds a write-protect marker (a protected,
 * never-populated page with WP_UNPOPULATED); UFFDIO_COPY accepts it, and fails with EEXIST
 * itself when a page is really there. Without this fallback the thread would be woken, fault
 * again, and loop.
 */
static int zero_op(uint64_t page, uint64_t psize, int flags)
{
	zero_was_copy = 0;
	if (!(flags & OP_WP) && !uffd_zero(op_fd, page, psize, flags & OP_DONTWAKE))
		return 0;
	if (!(flags & OP_WP) && errno != EEXIST)
		return -1;
	zero_was_copy = 1;
	return uffd_copy(op_fd, page, zeros(psize), psize, flags & OP_DONTWAKE,
			 flags & OP_WP);
}

static const char *move_errno_text(int err)
{
	switch (err) {
	case EEXIST:
		return "the destination page is already mapped, and a move never replaces a page";
	case ENOENT:
		return "the source page is not mapped (nothing to move)";
	case EBUSY:
		return "the source page is shared (after fork, KSM) or pinned and cannot be moved";
	case EINVAL:
		return "unaligned, not registered, or not private anonymous memory on both sides";
	case ESRCH:
		return "the program is gone";
	default:
		return strerror(err);
	}
}

/* For a move: the thread to borrow (the faulting one), and why it could not be issued. */
static pid_t move_tid;
static char move_why[512];

/* One ioctl over [dst, dst+len); src is the COPY source, from the MOVE source. */
static int do_op(enum resolve_how how, uint64_t dst, uint64_t len, const void *src,
		 uint64_t from, int flags)
{
	int dontwake = flags & OP_DONTWAKE;

	switch (how) {
	case HOW_COPY:
		if (!src)
			src = zeros(len);
		if (!src) {
			errno = ENOMEM;
			return -1;
		}
		return uffd_copy(op_fd, dst, src, len, dontwake, flags & OP_WP);
	case HOW_ZERO:
		return len == PAGE_SZ ? zero_op(dst, len, flags) :
		       uffd_zero(op_fd, dst, len, dontwake);
	case HOW_CONTINUE:
		return uffd_continue(op_fd, dst, len, dontwake);
	case HOW_UNPROTECT:
		return uffd_writeprotect(op_fd, dst, len, 0, dontwake);
	case HOW_MOVE:
		/* the kernel takes a move only from inside the program's own memory */
		if (op_fd == sess.uffd)
			return move_in_program(dst, from, len, dontwake, move_tid, move_why,
					       sizeof(move_why));
		return uffd_move(op_fd, dst, from, len, dontwake);
	case HOW_POISON:
		return uffd_poison(op_fd, dst, len, dontwake);
	default:
		return uffd_wake_range(op_fd, dst, len);
	}
}

/*
 * A missing fault on a write-protected page (the marker WP_UNPOPULATED leaves on a protected,
 * never-populated page) is filled write-protected, so the protection holds: the next write is
 * a wp fault.
 */
static int missing_flags(enum fault_kind kind, uint64_t page)
{
	/* the marker is read from the program's pagemap: not for a child's fault */
	return kind == K_MISSING && op_fd == sess.uffd && mem_wp_marked(page) ? OP_WP : 0;
}

/*
 * An ioctl failed with EAGAIN: a non-cooperative event (fork, mremap, madvise, munmap) is in
 * flight on this userfaultfd (the kernel's mmap_changing), and its thread waits for the
 * helper to read the event. So: read what is queued on fd (not from inside such a read),
 * give that thread a moment to finish, and let the caller retry.
 */
static void eagain_pause(int fd)
{
	struct timespec ts = { 0, EAGAIN_PAUSE_NS };
	int saved = op_fd, was_copy = zero_was_copy;

	if (!backlogging) {	/* the kernel delivers events once no fault is pending */
		backlogging = 1;
		faults_read(fd);
		backlogging = 0;
	}
	op_fd = saved;
	zero_was_copy = was_copy;
	nanosleep(&ts, NULL);
}

static int backlog_push(const struct uffd_msg *m, uint64_t t, int fd, pid_t pid)
{
	if (nr_backlog == cap_backlog) {
		size_t cap = cap_backlog ? cap_backlog * 2 : 64;
		struct backlog_msg *n = realloc(backlog, cap * sizeof(*n));

		if (!n)
			return -1;
		backlog = n;
		cap_backlog = cap;
	}
	backlog[nr_backlog++] = (struct backlog_msg){ .m = *m, .t = t, .fd = fd, .pid = pid };
	return 0;
}

/* Handles the faults read while an event was in flight, in the order read. */
static void backlog_drain(void)
{
	if (backlogging)
		return;
	while (backlog_head < nr_backlog) {
		struct backlog_msg b = backlog[backlog_head++];

		handle_fault(&b.m, b.t, b.fd, b.pid);
	}
	nr_backlog = backlog_head = 0;
}

/* Forgets the backlog of one userfaultfd (-1: all). */
static void backlog_forget(int fd)
{
	size_t i, j;

	for (i = backlog_head, j = backlog_head; i < nr_backlog; i++)
		if (fd >= 0 && backlog[i].fd != fd)
			backlog[j++] = backlog[i];
	nr_backlog = j;
}

/*
 * One page, idempotently, for automatic resolution: EEXIST (already mapped, e.g. by an
 * earlier message for the same page) is success after a wake; EAGAIN (an event in flight)
 * is retried after reading the queued messages (eagain_pause), for ~100 ms; then the caller
 * defers the fault to the timer.
 */
static int auto_resolve(const struct held *h, enum resolve_how how)
{
	int i;

	const void *saved = h->kind == K_MISSING ? evict_saved(h->fd, h->page) : NULL;

	if (saved)
		how = HOW_COPY;
	for (i = 0;; i++) {
		if (!do_op(how, h->page, h->psize, saved, 0, missing_flags(h->kind, h->page))) {
			if (saved)
				evict_forget(h->fd, h->page);
			return 0;
		}
		if (errno == EEXIST) {
			if (uffd_wake_range(op_fd, h->page, h->psize) && errno != ENOENT)
				pr_perror("UFFDIO_WAKE %#" PRIx64 " on fd %d", h->page, op_fd);
			return 0;
		}
		/* a fault deferred to the timer already waited: one try per expiry */
		if (errno != EAGAIN || i >= (h->eagain ? 0 : EAGAIN_RETRIES))
			return -1;
		eagain_pause(h->fd);
	}
}

/* A held fault: one `fault` event, after the auto-resolved faults gathered before it. */
static void held_event(const struct held *h)
{
	stream_flush();
	/* Wire format: see `fault` in docs/protocol.md */
	jb_reserve(&out, 320);
	jb_puts(&out, "{\"type\":\"event\",\"event\":\"fault\",\"seq\":");
	jb_u64(&out, h->seq);
	jb_puts(&out, ",\"t\":");
	jb_u64(&out, h->t);
	jb_puts(&out, ",\"addr\":");
	jb_hex(&out, h->addr);
	jb_puts(&out, ",\"page\":");
	jb_hex(&out, h->page);
	jb_puts(&out, h->write ? ",\"access\":\"write\",\"kind\":\"" :
		 ",\"access\":\"read\",\"kind\":\"");
	jb_puts(&out, kind_names[h->kind]);
	jb_puts(&out, "\",\"tid\":");
	jb_u64(&out, (uint64_t)h->tid);
	if (h->pid) {
		jb_puts(&out, ",\"pid\":");
		jb_u64(&out, (uint64_t)h->pid);
	}
	if (h->psize != PAGE_SZ) {
		jb_puts(&out, ",\"pageSize\":");
		jb_u64(&out, h->psize);
	}
	jb_puts(&out, ",\"held\":true}\n");
}

/* An auto-resolved fault, streamed in the next `faults` event (stream.c). */
static void streamed_event(const struct held *h, const char *ioctl_name, uint64_t latency)
{
	struct stream_fault f = {
		.seq = h->seq, .t = h->t, .addr = h->addr, .page = h->page, .psize = h->psize,
		.latency = latency, .tid = h->tid, .pid = h->pid, .write = h->write,
		.kind = h->kind, .ioctl = ioctl_name,
	};

	stream_add(&f);
}

/*
 * policy.readAhead: fill the following pages of a resolved missing fault the same way.
 * Pages with a held or delayed fault are left alone; EEXIST (already there) is skipped;
 * any other error (end of the registered range) stops.
 */
static void read_ahead(const struct held *h, enum resolve_how how)
{
	uint64_t i, p;

	for (i = 1; i < policy.read_ahead; i++) {
		const void *saved;

		p = h->page + i * h->psize;
		if (page_held(p, op_fd) || page_pending(p))
			continue;
		saved = evict_saved(op_fd, p);
		if (do_op(saved ? HOW_COPY : how, p, h->psize, saved, 0,
			  OP_DONTWAKE | missing_flags(K_MISSING, p))) {
			if (errno == EEXIST)
				continue;
			break;
		}
		if (saved)
			evict_forget(op_fd, p);
		nr_read_ahead++;
	}
}

/* Resolves a fault nobody holds with its kind's default, and streams it. */
static void auto_finish(const struct held *h)
{
	enum resolve_how how = default_how(h);

	if (h->kind == K_MISSING && evict_saved(h->fd, h->page))
		how = HOW_COPY;	/* an evicted page comes back with its content */

	op_fd = h->fd;
	/* the following pages first: once woken, the thread would race the read-ahead */
	if (h->kind == K_MISSING && policy.read_ahead > 1)
		read_ahead(h, how);
	if (auto_resolve(h, how)) {
		if (errno == EAGAIN && h->eagain < EAGAIN_DEFER_MAX) {
			struct held d = *h;

			d.eagain++;
			if (!pend_insert(&d, now_ns() + EAGAIN_DEFER_NS))
				return;
			errno = EAGAIN;
		}
		pr_perror("pid %d: %s of page %#" PRIx64 " for tid %d on fd %d failed; waking the "
			  "thread", sess.pid, how_ioctls[how], h->page, h->tid, op_fd);
		if (uffd_wake_range(op_fd, h->page, h->psize))
			pr_perror("UFFDIO_WAKE %#" PRIx64 " on fd %d", h->page, op_fd);
	} else {
		nr_resolved++;
	}
	if (policy.stream == STREAM_ALL)
		streamed_event(h, how == HOW_ZERO && zero_was_copy ? "UFFDIO_COPY" :
			       how_ioctls[how], now_ns() - h->t);
}

static void hold(const struct held *h)
{
	if (nr_held == cap_held) {
		size_t cap = cap_held ? cap_held * 2 : 64;
		struct held *n = realloc(held, cap * sizeof(*n));

		if (!n) {
			/* cannot keep it: let the thread go rather than block it forever */
			pr_perror("cannot hold fault %" PRIu64 " of tid %d", h->seq, h->tid);
			op_fd = h->fd;
			if (auto_resolve(h, default_how(h)))
				uffd_wake_range(op_fd, h->page, h->psize);
			return;
		}
		held = n;
		cap_held = cap;
	}
	held[nr_held++] = *h;
	out_urgent = 1;
	output_drain();	/* the program's output before the fault precedes it */
	held_event(h);
}

/* ---- delayed resolution: an ordered list and one timerfd ---------------------------- */

int faults_timer_fd(void)
{
	if (timer_fd < 0) {
		timer_fd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
		if (timer_fd < 0)
			pr_perror("timerfd_create");
	}
	return timer_fd;
}

static void timer_arm(void)
{
	struct itimerspec its = { 0 };

	if (faults_timer_fd() < 0)
		return;
	if (nr_pend) {
		uint64_t d = pend[0].deadline;

		its.it_value.tv_sec = d / 1000000000ULL;
		its.it_value.tv_nsec = d % 1000000000ULL;
		if (!d)
			its.it_value.tv_nsec = 1;
	}
	if (timerfd_settime(timer_fd, TFD_TIMER_ABSTIME, &its, NULL))
		pr_perror("timerfd_settime on fd %d", timer_fd);
}

static int pend_add(const struct held *h)
{
	uint64_t span = policy.delay_max_us - policy.delay_min_us, us;

	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	us = policy.delay_min_us + (span ? rng % (span + 1) : 0);
	return pend_insert(h, h->t + us * 1000);
}

/* Into the deadline-ordered list served by the timerfd. */
static int pend_insert(const struct held *h, uint64_t deadline)
{
	size_t i;

	if (faults_timer_fd() < 0)
		return -1;
	if (nr_pend == cap_pend) {
		size_t cap = cap_pend ? cap_pend * 2 : 64;
		struct pend *n = realloc(pend, cap * sizeof(*n));

		if (!n)
			return -1;
		pend = n;
		cap_pend = cap;
	}
	for (i = nr_pend; i > 0 && pend[i - 1].deadline > deadline; i--)
		pend[i] = pend[i - 1];
	pend[i] = (struct pend){ .h = *h, .deadline = deadline };
	nr_pend++;
	if (i == 0)
		timer_arm();
	return 0;
}

void faults_timer_fire(void)
{
	static struct pend due[64];
	uint64_t expirations, now = now_ns();
	size_t n = 0, i;

	if (timer_fd >= 0 && read(timer_fd, &expirations, sizeof(expirations)) < 0 &&
	    errno != EAGAIN)
		pr_perror("read from timerfd %d", timer_fd);
	while (n < nr_pend && n < sizeof(due) / sizeof(due[0]) && pend[n].deadline <= now)
		n++;
	/* out of the list first: auto_finish may defer a fault into it again (EAGAIN) */
	memcpy(due, pend, n * sizeof(*pend));
	memmove(pend, pend + n, (nr_pend - n) * sizeof(*pend));
	nr_pend -= n;
	for (i = 0; i < n; i++)	/* in deadline order; the rest at the next expiry */
		if (due[i].h.pid || sess.uffd >= 0)	/* a child's pend is dropped with it */
			auto_finish(&due[i].h);
	backlog_drain();
	timer_arm();
}

/* ---- reading faults ------------------------------------------------------------------ */

static int want_hold(const struct held *h)
{
	size_t i;

	if (policy.hold_next)
		return 1;
	if (!policy.hold[h->kind])
		return 0;
	if (policy.nr_hold_range) {
		for (i = 0; i < policy.nr_hold_range; i++)
			if (h->addr >= policy.hold_range[i].start && h->addr < policy.hold_range[i].end)
				break;
		if (i == policy.nr_hold_range)
			return 0;
	}
	if (policy.nr_hold_tid) {
		for (i = 0; i < policy.nr_hold_tid && policy.hold_tid[i] != h->tid; i++)
			;
		if (i == policy.nr_hold_tid)
			return 0;
	}
	if (policy.hold_every > 1)
		return ++every_count % policy.hold_every == 0;
	return 1;
}

/*
 * The same thread again on a page it is held on: it was taken out of the fault (a signal, or
 * `stack` reading its registers) and re-executed the instruction. The held fault stands for
 * this message (docs/protocol.md, `stack`): no new seq, no event; resolving it wakes the thread.
 */
static int held_again(const struct uffd_msg *m, int fd)
{
	uint64_t addr = m->arg.pagefault.address, flags = m->arg.pagefault.flags;
	pid_t tid = m->arg.pagefault.feat.ptid;
	enum fault_kind kind = flags & UFFD_PAGEFAULT_FLAG_MINOR ? K_MINOR :
			       flags & UFFD_PAGEFAULT_FLAG_WP ? K_WP : K_MISSING;
	size_t i;

	for (i = 0; tid && i < nr_held; i++)
		if (held[i].tid == tid && held[i].fd == fd && held[i].kind == kind &&
		    addr - held[i].page < held[i].psize)
			return 1;
	return 0;
}

int faults_held_thread(uint64_t seq, pid_t *tid, pid_t *pid)
{
	size_t i;

	for (i = 0; i < nr_held; i++) {
		if (held[i].seq == seq) {
			*tid = held[i].tid;
			*pid = held[i].pid;
			return 0;
		}
	}
	return -1;
}

static void handle_fault(const struct uffd_msg *m, uint64_t t, int fd, pid_t pid)
{
	uint64_t flags = m->arg.pagefault.flags, addr = m->arg.pagefault.address;
	struct held h = {
		.seq = seq_next++,
		.addr = addr,
		.t = t,
		.write = !!(flags & UFFD_PAGEFAULT_FLAG_WRITE),
		.tid = m->arg.pagefault.feat.ptid,
		.fd = fd,
		.pid = pid,
	};

	if (held_again(m, fd)) {
		seq_next--;
		return;
	}
	h.psize = mem_page_size(addr);
	h.page = addr & ~(h.psize - 1);
	if (flags & UFFD_PAGEFAULT_FLAG_MINOR)
		h.kind = K_MINOR;
	else if (flags & UFFD_PAGEFAULT_FLAG_WP)
		h.kind = K_WP;
	else
		h.kind = K_MISSING;
	nr_faults[h.kind]++;

	if (want_hold(&h) || page_held(h.page, h.fd)) {
		policy.hold_next = 0;
		hold(&h);
		return;
	}
	if ((policy.delay_min_us || policy.delay_max_us) && !pend_add(&h))
		return;
	auto_finish(&h);
}

#define MAX_READ_NS 2000000ULL

/* ---- non-cooperative events: fork, remap, remove, unmap ------------------------------ */

static struct kid *kid_by_fd(int fd)
{
	size_t i;

	for (i = 0; i < nr_kids; i++)
		if (kids[i].fd == fd)
			return &kids[i];
	return NULL;
}

static int kid_seen(pid_t pid)
{
	size_t i;

	for (i = 0; i < nr_kids_seen && i < sizeof(kids_seen) / sizeof(kids_seen[0]); i++)
		if (kids_seen[i] == pid)
			return 1;
	return 0;
}

/* starttime (clock ticks since boot) of a process, or -1 (gone, or a zombie). */
static long long proc_start_ticks(pid_t pid)
{
	char buf[1024], *p;
	long long st = -1;
	int field;

	p = procstat_read(pid, buf, sizeof(buf));
	if (!p || p[1] != ' ' || p[2] == 'Z')
		return -1;
	/* field 3 is the state, right after ") "; starttime is field 22 */
	for (field = 2; *p && field < 22; p++)
		if (*p == ' ')
			field++;
	if (field == 22)
		st = strtoll(p, NULL, 10);
	return st;
}

/*
 * The pid of the child whose fork event was just read. The event carries only the child's
 * userfaultfd; the forking thread, released by the read, then gives the child its pid and
 * start time. So: the newest child of parent (any thread) started no earlier than the event
 * (less a margin for the clock tick), never followed before. Waits up to 200 ms for it.
 */
static pid_t fork_child_pid(pid_t parent)
{
	long tick_ns = 1000000000L / sysconf(_SC_CLK_TCK);
	struct timespec bt, nap = { 0, 200000 };
	long long min_ticks, best_st = -1;
	pid_t best = 0;
	int tries;

	clock_gettime(CLOCK_BOOTTIME, &bt);
	min_ticks = ((long long)bt.tv_sec * 1000000000LL + bt.tv_nsec - 20000000LL) / tick_ns;
	for (tries = 0; tries < 1000 && !best; tries++) {
		char path[64], line[4096];
		struct dirent *de;
		DIR *d;

		if (tries)
			nanosleep(&nap, NULL);
		snprintf(path, sizeof(path), "/proc/%d/task", parent);
		d = opendir(path);
		if (!d)
			return 0;
		while ((de = readdir(d))) {
			char *tok, *save;
			ssize_t n;
			int fd;

			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "/proc/%d/task/%.16s/children", parent,
				 de->d_name);
			fd = open(path, O_RDONLY | O_CLOEXEC);
			if (fd < 0)
				continue;
			n = read(fd, line, sizeof(line) - 1);
			close(fd);
			if (n <= 0)
				continue;
			line[n] = 0;
			for (tok = strtok_r(line, " \n", &save); tok; tok = strtok_r(NULL, " \n", &save)) {
				pid_t c = (pid_t)atoi(tok);
				long long st;

				if (c <= 0 || kid_seen(c))
					continue;
				st = proc_start_ticks(c);
				if (st < min_ticks)
					continue;
				if (st > best_st || (st == best_st && c > best)) {
					best_st = st;
					best = c;
				}
			}
		}
		closedir(d);
	}
	return best;
}

/* Wire format: {"type":"event","event":"nc","what":"fork|remap|remove|unmap","t":ns,...} */
static const char *const nc_names[] = { "fork", "remap", "remove", "unmap" };

static void nc_begin(const char *what, uint64_t t)
{
	size_t i;

	/* policy.holdAfter: the debugger stops on the first fault after this event */
	for (i = 0; i < sizeof(nc_names) / sizeof(nc_names[0]); i++)
		if (!strcmp(what, nc_names[i]) && policy.hold_after & (1U << i))
			policy.hold_next = 1;
	ev_begin("nc");
	jb_puts(&out, ",\"what\":");
	jb_str(&out, what);
	jb_puts(&out, ",\"t\":");
	jb_u64(&out, t);
}

static void nc_source(pid_t source)
{
	if (source) {
		jb_puts(&out, ",\"source\":");
		jb_u64(&out, (uint64_t)source);
	}
}

/* Wire format: {"type":"event","event":"region","action":"add|remove","region":Region} */
static void region_event(const char *action, uint64_t start, uint64_t end, const char *via)
{
	ev_begin("region");
	jb_puts(&out, ",\"action\":");
	jb_str(&out, action);
	jb_puts(&out, ",\"region\":{\"start\":");
	jb_hex(&out, start);
	jb_puts(&out, ",\"end\":");
	jb_hex(&out, end);
	jb_puts(&out, ",\"via\":");
	jb_str(&out, via);
	jb_puts(&out, "}");
	ev_end();
}

static void nc_fork(const struct uffd_msg *m, uint64_t t, pid_t source)
{
	int ufd = (int)m->arg.fork.ufd, pidfd = -1;
	pid_t parent = source ? source : sess.pid, child;

	child = fork_child_pid(parent);
	if (fcntl(ufd, F_SETFL, O_NONBLOCK) || fcntl(ufd, F_SETFD, FD_CLOEXEC))
		pr_perror("fork of pid %d: cannot make the child's userfaultfd %d non-blocking",
			  parent, ufd);
	if (child > 0) {
		kids_seen[nr_kids_seen++ % (sizeof(kids_seen) / sizeof(kids_seen[0]))] = child;
		pidfd = (int)syscall(SYS_pidfd_open, child, 0);
		if (pidfd < 0)
			pr_perror("fork of pid %d: pidfd_open of child %d", parent, child);
	} else {
		pr_warn("fork of pid %d: the child's pid was not found; its userfaultfd %d is "
			"closed (the child runs unwatched)", parent, ufd);
	}
	if (pidfd >= 0 && nr_kids == FAULTS_MAX_KIDS) {
		pr_warn("fork of pid %d: already following %d children; child %d runs unwatched "
			"(userfaultfd %d closed)", parent, FAULTS_MAX_KIDS, child, ufd);
		close(pidfd);
		pidfd = -1;
	}
	if (pidfd >= 0) {
		kids[nr_kids++] = (struct kid){ .fd = ufd, .pidfd = pidfd, .pid = child };
		pr_info("following child %d of pid %d on userfaultfd %d", child, parent, ufd);
	} else {
		close(ufd);	/* the kernel unregisters the child's ranges and wakes it */
	}
	nc_begin("fork", t);
	jb_puts(&out, ",\"pid\":");
	if (child > 0)
		jb_u64(&out, (uint64_t)child);
	else
		jb_puts(&out, "null");
	jb_puts(&out, pidfd >= 0 ? ",\"followed\":true" : ",\"followed\":false");
	nc_source(source);
	ev_end();
}

/*
 * Faults of fd held or delayed in [start, end) whose memory went away (munmap, or moved
 * by mremap): their threads are woken (they retry, and find no mapping) and the faults
 * dropped, reported with ioctl `why`.
 */
static void drop_range(int fd, uint64_t start, uint64_t end, const char *why, uint64_t t)
{
	size_t k, j;

	op_fd = fd;
	for (k = 0; k < nr_held;) {
		struct held h = held[k];

		if (h.fd != fd || h.page + h.psize <= start || h.page >= end) {
			k++;
			continue;
		}
		if (uffd_wake_range(fd, h.page, h.psize) && errno != ENOENT)
			pr_perror("UFFDIO_WAKE %#" PRIx64 " on fd %d", h.page, fd);
		held[k] = held[--nr_held];
		resolved_event(&h, why, t);
	}
	for (k = 0, j = 0; k < nr_pend; k++) {
		struct held *h = &pend[k].h;

		if (h->fd != fd || h->page + h->psize <= start || h->page >= end) {
			pend[j++] = pend[k];
			continue;
		}
		if (uffd_wake_range(fd, h->page, h->psize) && errno != ENOENT)
			pr_perror("UFFDIO_WAKE %#" PRIx64 " on fd %d", h->page, fd);
		if (policy.stream == STREAM_ALL)
			streamed_event(h, why, t - h->t);
	}
	if (j != nr_pend) {
		nr_pend = j;
		timer_arm();
	}
}

static void nc_event(const struct uffd_msg *m, uint64_t t, int fd, pid_t source)
{
	uint64_t start, end;

	switch (m->event) {
	case UFFD_EVENT_FORK:
		nc_fork(m, t, source);
		return;
	case UFFD_EVENT_REMAP:
		start = m->arg.remap.from;
		end = start + m->arg.remap.len;
		nc_begin("remap", t);
		jb_puts(&out, ",\"from\":");
		jb_hex(&out, m->arg.remap.from);
		jb_puts(&out, ",\"to\":");
		jb_hex(&out, m->arg.remap.to);
		jb_puts(&out, ",\"len\":");
		jb_hex(&out, m->arg.remap.len);
		nc_source(source);
		ev_end();
		drop_range(fd, start, end, "REMAPPED", t);
		if (!source) {	/* the registration moved with the mapping */
			region_event("remove", start, end, "remap");
			region_event("add", m->arg.remap.to, m->arg.remap.to + m->arg.remap.len,
				     "remap");
			attach_range_moved(start, end, m->arg.remap.to);
		}
		/* saved copies of evicted pages there: the pages moved or went */
		if (!source)
			evict_forget_range(fd, start, end);
		return;
	case UFFD_EVENT_REMOVE:
	case UFFD_EVENT_UNMAP:
		start = m->arg.remove.start;
		end = m->arg.remove.end;
		/* the pages an eviction drops: not the program's doing */
		if (m->event == UFFD_EVENT_REMOVE && !source && evict_claims_remove(start, end))
			return;
		/* the program dropped evicted pages itself: their saved copies are void */
		if (!source)
			evict_forget_range(fd, start, end);
		nc_begin(m->event == UFFD_EVENT_UNMAP ? "unmap" : "remove", t);
		jb_puts(&out, ",\"start\":");
		jb_hex(&out, start);
		jb_puts(&out, ",\"end\":");
		jb_hex(&out, end);
		nc_source(source);
		ev_end();
		/* remove (MADV_DONTNEED/REMOVE) keeps the mapping: held faults stay held */
		if (m->event == UFFD_EVENT_UNMAP) {
			drop_range(fd, start, end, "UNMAPPED", t);
			if (!source) {
				region_event("remove", start, end, "unmap");
				attach_range_moved(start, end, 0);
			}
		}
		return;
	default:
		pr_warn("fd %d: unexpected userfaultfd event 0x%x ignored", fd, m->event);
	}
}

/* A followed child is gone (or its userfaultfd unusable): close, drop its faults. */
static void kid_release(size_t i)
{
	struct kid k = kids[i];
	size_t j, n = 0;

	for (j = 0; j < nr_held;)
		if (held[j].fd == k.fd) {
			held[j] = held[--nr_held];
			n++;
		} else {
			j++;
		}
	for (j = 0; j < nr_pend;)
		if (pend[j].h.fd == k.fd) {
			memmove(pend + j, pend + j + 1, (nr_pend - j - 1) * sizeof(*pend));
			nr_pend--;
			n++;
		} else {
			j++;
		}
	backlog_forget(k.fd);
	pr_info("child %d released (userfaultfd %d closed, %zu held or delayed faults "
		"dropped)", k.pid, k.fd, n);
	close(k.fd);
	close(k.pidfd);
	kids[i] = kids[--nr_kids];
	timer_arm();
}

/*
 * Drains the fd: many messages per read, reads until EAGAIN. Bounded in time so ptrace
 * stops and requests get their turn, and cut short when a fault is held so the client
 * sees it at once. (Spinning on EAGAIN was tried: no measurable gain on this 2-vCPU VM,
 * since the woken thread may queue behind the spinner.) Non-cooperative events block
 * their thread until read: they are answered in the same batch, never held.
 */
int faults_read(int uffd)
{
	struct uffd_msg msgs[MSG_BATCH];
	uint64_t start = now_ns(), t;
	size_t held_before = nr_held;
	struct kid *k = kid_by_fd(uffd);
	pid_t pid = k ? k->pid : 0;
	int i;

	for (;;) {
		ssize_t n = read(uffd, msgs, sizeof(msgs));

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return 0;
			pr_perror("read from userfaultfd %d of pid %d", uffd, pid ? pid : sess.pid);
			return -1;
		}
		if (n == 0)
			return -1;
		t = now_ns();
		for (i = 0; i < (int)(n / sizeof(msgs[0])); i++) {
			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				nc_event(&msgs[i], t, uffd, pid);
			else if (!backlogging || backlog_push(&msgs[i], t, uffd, pid))
				handle_fault(&msgs[i], t, uffd, pid);
			backlog_drain();
		}
		if (nr_held != held_before || t - start > MAX_READ_NS)
			return 0;
	}
}

void faults_pollfds(struct pollfd *pfd, int *n, int idx[FAULTS_PFD_NR])
{
	size_t i;

	for (i = 0; i < FAULTS_PFD_NR; i++)
		idx[i] = -1;
	for (i = 0; i < nr_kids; i++) {
		idx[2 * i] = *n;
		pfd[(*n)++] = (struct pollfd){ .fd = kids[i].fd, .events = POLLIN };
		idx[2 * i + 1] = *n;
		pfd[(*n)++] = (struct pollfd){ .fd = kids[i].pidfd, .events = POLLIN };
	}
}

void faults_ready(const struct pollfd *pfd, const int idx[FAULTS_PFD_NR])
{
	int gone[FAULTS_MAX_KIDS] = { 0 };
	size_t i, n = nr_kids;

	/* kids[] may grow while reading (a child forks): only the first n were polled */
	for (i = 0; i < n && i < FAULTS_MAX_KIDS; i++) {
		const struct pollfd *u = idx[2 * i] >= 0 ? &pfd[idx[2 * i]] : NULL;
		const struct pollfd *p = idx[2 * i + 1] >= 0 ? &pfd[idx[2 * i + 1]] : NULL;

		if (!u || !p || u->fd != kids[i].fd || p->fd != kids[i].pidfd)
			continue;
		if (u->revents & POLLIN && faults_read(kids[i].fd))
			gone[i] = 1;
		if (u->revents & (POLLERR | POLLNVAL))
			gone[i] = 1;
		if (p->revents) {
			faults_read(kids[i].fd);	/* what it sent before exiting */
			gone[i] = 1;
		}
	}
	for (i = n; i-- > 0;)
		if (gone[i])
			kid_release(i);
}

/* ---- resolution by request ----------------------------------------------------------- */

static void resolved_event(const struct held *h, const char *ioctl_name, uint64_t t_end)
{
	/* Wire format: {"type":"event","event":"resolved","seq":N,"t":ns,"page":..,"ioctl":..,
	 * "latencyNs":N}; latency counts from the read of the message. */
	ev_begin("resolved");
	jb_puts(&out, ",\"seq\":");
	jb_u64(&out, h->seq);
	jb_puts(&out, ",\"t\":");
	jb_u64(&out, t_end);
	jb_puts(&out, ",\"page\":");
	jb_hex(&out, h->page);
	jb_puts(&out, ",\"ioctl\":");
	jb_str(&out, ioctl_name);
	jb_puts(&out, ",\"latencyNs\":");
	jb_u64(&out, t_end - h->t);
	if (h->pid) {
		jb_puts(&out, ",\"pid\":");
		jb_u64(&out, (uint64_t)h->pid);
	}
	ev_end();
}

/* How to resolve a held fault, from a `resolve` request or the defaults. */
struct rspec {
	enum resolve_how how;	/* HOW_DEFAULT: the kind's default, EEXIST tolerated */
	uint64_t pages;		/* consecutive pages from the faulting one */
	const unsigned char *src;	/* COPY source of pages * psize bytes; NULL: zeros */
	uint64_t from;		/* MOVE source address */
	int keep;		/* UNPROTECT: return the content before the write */
};

static int cmp_seq(const void *a, const void *b)
{
	const struct held *x = a, *y = b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/*
 * Resolves held[idx] per s: the faulting page first (a failure there fails the request
 * and keeps the fault held), then the rest of the range (EEXIST pages are skipped, another
 * error ends the range early). Every fault held on a resolved page is woken. Writes the
 * response for id (when id != 0: with `resolved` events after it) or appends the seqs to
 * list. Returns the number of faults resolved or -1.
 */
static int resolve_held(size_t idx, const struct rspec *s, int64_t id, struct jbuf *list)
{
	struct held f = held[idx];
	enum resolve_how how = s->how == HOW_DEFAULT ? default_how(&f) : s->how;
	const void *src;
	const char *ioctl_name = how_ioctls[how];
	uint64_t len = s->pages * f.psize, done, t_end;
	unsigned char *before = NULL;
	struct jbuf skipped = { 0 };
	struct held *woken;
	size_t n = 0, k;
	int err, r, tries;

	if (!f.pid && sess.uffd < 0) {
		if (id)
			resp_err(id, "ESRCH", "the program is gone; its held faults are void");
		return -1;
	}
	op_fd = f.fd;
	if (s->keep) {
		before = malloc(len);
		if (before && mem_read(f.page, before, len)) {
			free(before);
			before = NULL;
		}
	}
	if (how == HOW_MOVE && mem_page_mapped(f.page) == 1) {
		if (id)
			resp_err(id, "EEXIST", "UFFDIO_MOVE refused: the destination page 0x%" PRIx64
				 " is already mapped, and a move never replaces a page. The fault stays "
				 "held: resolve it another way.", f.page);
		free(before);
		return -1;
	}
	src = s->src;
	if (!src && s->how == HOW_DEFAULT && f.kind == K_MISSING &&
	    (src = evict_saved(f.fd, f.page)))
		how = HOW_COPY;	/* an evicted page comes back with its content */
	ioctl_name = how_ioctls[how];
	move_tid = f.tid;
	move_why[0] = 0;
	for (tries = 0;; tries++) {
		r = do_op(how, f.page, f.psize, src, s->from, missing_flags(f.kind, f.page));
		if (!r || errno != EAGAIN || tries >= EAGAIN_RETRIES)
			break;
		eagain_pause(f.fd);
	}
	if (!r && how == HOW_ZERO && zero_was_copy)
		ioctl_name = "UFFDIO_COPY";
	if (!r)
		evict_forget(f.fd, f.page);	/* back, or replaced by the user's choice */
	if (r && errno == EEXIST && s->how == HOW_DEFAULT) {
		/* the default is idempotent: already mapped counts as resolved, after a wake */
		if (uffd_wake_range(op_fd, f.page, f.psize) && errno != ENOENT)
			pr_perror("UFFDIO_WAKE %#" PRIx64 " on fd %d", f.page, op_fd);
		r = 0;
	}
	if (r) {
		err = errno;
		pr_perror("pid %d: %s of held page %#" PRIx64 " on fd %d failed", sess.pid,
			  ioctl_name, f.page, op_fd);
		if (id && how == HOW_MOVE)
			resp_err(id, errno_name(err), "UFFDIO_MOVE of 0x%" PRIx64 " to page 0x%"
				 PRIx64 " failed: %s%s%s. The fault stays held: resolve it another "
				 "way.", s->from, f.page, move_errno_text(err), move_why[0] ? ": " : "",
				 move_why);
		else if (id)
			resp_err(id, errno_name(err), "%s of page 0x%" PRIx64 " failed: %s (%s). "
				 "The fault stays held: resolve it another way or with \"wake\".",
				 ioctl_name, f.page, mem_errno_text(err), strerror(err));
		if (err == ESRCH) {	/* nothing left to wake */
			for (k = 0; k < nr_held;)
				if (held[k].page == f.page && held[k].fd == f.fd)
					held[k] = held[--nr_held];
				else
					k++;
		}
		free(before);
		return -1;
	}
	for (done = 1; done < s->pages; done++) {
		uint64_t p = f.page + done * f.psize;

		r = do_op(how, p, f.psize, s->src ? s->src + done * f.psize : NULL,
			  s->from + done * f.psize, missing_flags(f.kind, p));
		if (r && errno == EEXIST) {
			if (skipped.len)
				jb_puts(&skipped, ",");
			jb_hex(&skipped, p);
			continue;
		}
		if (r) {
			pr_perror("pid %d: %s of page %#" PRIx64 " (page %" PRIu64 " of the range) "
				  "failed; the range ends there", sess.pid, ioctl_name, p, done);
			break;
		}
	}
	t_end = now_ns();
	woken = malloc((nr_held + 1) * sizeof(*woken));
	if (!woken) {
		pr_perror("resolving page %#" PRIx64, f.page);
		abort();
	}
	for (k = 0; k < nr_held;) {
		if (held[k].fd == f.fd && held[k].page >= f.page &&
		    held[k].page < f.page + done * f.psize) {
			woken[n++] = held[k];
			held[k] = held[--nr_held];
		} else {
			k++;
		}
	}
	qsort(woken, n, sizeof(*woken), cmp_seq);
	if (how != HOW_WAKE)
		nr_resolved += n;
	if (id) {
		/* Wire format: ResolveBody in server/protocol/messages.ts */
		resp_ok_begin(id);
		jb_puts(&out, "{\"seq\":");
		jb_u64(&out, f.seq);
		jb_puts(&out, ",\"page\":");
		jb_hex(&out, f.page);
		jb_puts(&out, ",\"ioctl\":");
		jb_str(&out, ioctl_name);
		jb_puts(&out, ",\"woken\":[");
		for (k = 0; k < n; k++) {
			if (k)
				jb_puts(&out, ",");
			jb_u64(&out, woken[k].seq);
		}
		jb_puts(&out, "],\"pages\":");
		jb_u64(&out, done);
		jb_puts(&out, ",\"skipped\":[");
		if (skipped.len)
			jb_write(&out, skipped.p, skipped.len);
		jb_puts(&out, "]");
		if (s->keep) {
			jb_puts(&out, ",\"before\":");
			if (before)
				b64_json(&out, before, len);
			else
				jb_puts(&out, "null");
		}
		jb_puts(&out, "}");
		resp_ok_end();
	}
	for (k = 0; k < n; k++) {
		if (list) {
			if (list->len)
				jb_puts(list, ",");
			jb_u64(list, woken[k].seq);
		}
		resolved_event(&woken[k], ioctl_name, t_end);
	}
	free(skipped.p);
	free(woken);
	free(before);
	return (int)n;
}

/* The COPY source of a `resolve`: exactly one of pattern, bytes, file(+offset). */
static unsigned char *copy_source(int64_t id, const struct jval *req, uint64_t len)
{
	const struct jval *pv = json_get(req, "pattern"), *bv = json_get(req, "bytes");
	const struct jval *fv = json_get(req, "file");
	unsigned char *buf;
	int64_t n;

	if (!!pv + !!bv + !!fv != 1) {
		resp_err(id, "EPROTO", "\"copy\" needs exactly one source: \"pattern\" (a byte "
			 "0..255), \"bytes\" (base64 of 4096 bytes) or \"file\" (a path, with an "
			 "optional \"offset\")");
		return NULL;
	}
	buf = malloc(len);
	if (!buf) {
		resp_err(id, "ENOMEM", "cannot allocate %" PRIu64 " bytes for the copy", len);
		return NULL;
	}
	if (pv) {
		if (!json_int(pv, 0, 255, &n)) {
			resp_err(id, "EPROTO", "'pattern' must be a byte value 0..255");
			goto fail;
		}
		memset(buf, (int)n, len);
	} else if (bv) {
		uint64_t off;
		long got = bv->type == J_STR ?
			   b64_decode(bv->str, bv->len, buf, PAGE_SZ) : -1;

		if (got != (long)PAGE_SZ) {
			resp_err(id, "EPROTO", "'bytes' must be the base64 text of exactly 4096 bytes");
			goto fail;
		}
		for (off = PAGE_SZ; off < len; off += PAGE_SZ)	/* one page, repeated */
			memcpy(buf + off, buf, PAGE_SZ);
	} else {
		const char *path = json_cstr(fv);
		const struct jval *ov = json_get(req, "offset");
		uint64_t done = 0;
		int fd;

		n = 0;
		if (!path || !*path || (ov && !json_int(ov, 0, INT64_MAX, &n))) {
			resp_err(id, "EPROTO", "'file' must be a path and 'offset' a byte offset >= 0");
			goto fail;
		}
		fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0) {
			resp_err(id, errno_name(errno), "cannot open '%s' for the copy: %s", path,
				 strerror(errno));
			goto fail;
		}
		while (done < len) {
			ssize_t r = pread(fd, buf + done, len - done, (off_t)(n + done));

			if (r < 0 && errno == EINTR)
				continue;
			if (r < 0) {
				resp_err(id, errno_name(errno), "reading '%s' at offset %" PRIu64
					 ": %s", path, n + done, strerror(errno));
				close(fd);
				goto fail;
			}
			if (r == 0)
				break;
			done += r;
		}
		close(fd);
		memset(buf + done, 0, len - done);	/* past the end of the file: zeros */
	}
	return buf;
fail:
	free(buf);
	return NULL;
}

void faults_cmd_resolve(int64_t id, const struct jval *req)
{
	const struct jval *hv = json_get(req, "how"), *kv = json_get(req, "keep");
	const struct jval *pgv = json_get(req, "pages");
	struct rspec s = { .how = HOW_DEFAULT, .pages = 1 };
	unsigned char *src = NULL;
	int64_t seq, pages = 1;
	size_t i;
	int k;

	if (!json_int(json_get(req, "seq"), 1, INT64_MAX, &seq)) {
		resp_err(id, "EPROTO", "resolve needs 'seq', the positive number of a held fault");
		return;
	}
	if (hv) {
		const char *h = json_cstr(hv);

		for (k = 0; k < HOW_NR && (!h || strcmp(h, how_names[k])); k++)
			;
		if (k == HOW_NR) {
			resp_err(id, "EPROTO", "'how' must be one of default, zero, wake, copy, "
				 "continue, unprotect, move, poison");
			return;
		}
		s.how = k;
	}
	if (pgv && !json_int(pgv, 1, 1 << 20, &pages)) {
		resp_err(id, "EPROTO", "'pages' must be a count of pages >= 1");
		return;
	}
	s.pages = (uint64_t)pages;
	if (kv) {
		if (kv->type != J_BOOL || (kv->boolean && s.how != HOW_UNPROTECT)) {
			resp_err(id, "EPROTO", "'keep' is a boolean for \"how\":\"unprotect\"");
			return;
		}
		s.keep = kv->boolean;
	}
	if (s.how == HOW_MOVE && mem_addr_arg(json_get(req, "from"), &s.from)) {
		resp_err(id, "EPROTO", "\"move\" needs 'from', the program address (\"0x..\") of "
			 "the page to move into the faulting page");
		return;
	}
	for (i = 0; i < nr_held; i++)
		if (held[i].seq == (uint64_t)seq)
			break;
	if (i == nr_held) {
		resp_err(id, "ESTATE", "no held fault with seq %lld (unknown, already resolved, or "
			 "its program is gone)", (long long)seq);
		return;
	}
	if (s.pages * held[i].psize > MAX_RESOLVE_BYTES) {
		resp_err(id, "EINVAL", "%llu pages of %llu bytes is more than the %llu MiB one "
			 "resolve may cover", (unsigned long long)s.pages,
			 (unsigned long long)held[i].psize, MAX_RESOLVE_BYTES >> 20);
		return;
	}
	if (s.how == HOW_COPY) {
		src = copy_source(id, req, s.pages * held[i].psize);
		if (!src)
			return;
		s.src = src;
	}
	resolve_held(i, &s, id, NULL);
	backlog_drain();	/* faults read while waiting out an event: after the response */
	free(src);
}

void faults_cmd_resolve_all(int64_t id)
{
	struct jbuf list = { 0 }, events, saved = out;
	const struct rspec s = { .how = HOW_DEFAULT, .pages = 1 };
	struct held *pages = malloc((nr_held + 1) * sizeof(*pages));	/* page + fd */
	size_t np = 0, i, j;

	if (!pages) {
		resp_err(id, "ENOMEM", "cannot list the held pages: %s", strerror(errno));
		return;
	}
	for (i = 0; i < nr_held; i++) {
		for (j = 0; j < np && (pages[j].page != held[i].page || pages[j].fd != held[i].fd);
		     j++)
			;
		if (j == np)
			pages[np++] = held[i];
	}
	/* `resolved` events must follow the response: collect them in a side buffer */
	out = (struct jbuf){ 0 };
	for (j = 0; j < np; j++) {
		for (i = 0; i < nr_held && (held[i].page != pages[j].page ||
					    held[i].fd != pages[j].fd); i++)
			;
		if (i < nr_held)	/* a page that fails stays held */
			resolve_held(i, &s, 0, &list);
	}
	backlog_drain();
	events = out;
	out = saved;
	resp_ok_begin(id);
	jb_puts(&out, "{\"resolved\":[");
	if (list.len)
		jb_write(&out, list.p, list.len);
	jb_puts(&out, "]}");
	resp_ok_end();
	if (events.len)
		jb_write(&out, events.p, events.len);
	free(events.p);
	free(list.p);
	free(pages);
}

void faults_forget_all(void)
{
	if (nr_held || nr_pend)
		pr_info("program %d is gone: dropping %zu held and %zu delayed faults", sess.pid,
			nr_held, nr_pend);
	/* followed children are let go with it: closing their userfaultfds wakes them */
	while (nr_kids)
		kid_release(nr_kids - 1);
	backlog_forget(-1);
	nr_held = 0;
	nr_pend = 0;
	policy.hold_next = 0;
	timer_arm();
}

/* ---- policy -------------------------------------------------------------------------- */

int faults_policy_parse(int64_t id, const struct jval *req, struct policy *p)
{
	const struct jval *ra = json_get(req, "readAhead"), *dl = json_get(req, "delayUs");
	const struct jval *hr = json_get(req, "holdRange"), *ht = json_get(req, "holdTid");
	const struct jval *he = json_get(req, "holdEvery"), *ha = json_get(req, "holdAfter");
	int64_t n, m;
	size_t i, k;

	if (ra) {
		if (!json_int(ra, 0, 1 << 16, &n)) {
			resp_err(id, "EPROTO", "'readAhead' must be a page count 0..65536");
			return -1;
		}
		p->read_ahead = (uint64_t)n;
	}
	if (dl) {
		if (dl->type == J_NULL) {
			p->delay_min_us = p->delay_max_us = 0;
		} else if (dl->type != J_OBJ ||
			   !json_int(json_get(dl, "min"), 0, 60000000, &n) ||
			   !json_int(json_get(dl, "max"), n, 60000000, &m)) {
			resp_err(id, "EPROTO", "'delayUs' must be null or {\"min\":us,\"max\":us} with "
				 "0 <= min <= max <= 60000000");
			return -1;
		} else {
			p->delay_min_us = (uint64_t)n;
			p->delay_max_us = (uint64_t)m;
		}
	}
	if (hr) {
		if (hr->type != J_ARR || hr->n > POLICY_MAX_LIST) {
			resp_err(id, "EPROTO", "'holdRange' must be an array of at most %d "
				 "{\"start\":\"0x..\",\"end\":\"0x..\"}", POLICY_MAX_LIST);
			return -1;
		}
		for (i = 0; i < hr->n; i++) {
			struct hold_range *r = &p->hold_range[i];

			if (hr->items[i]->type != J_OBJ ||
			    mem_addr_arg(json_get(hr->items[i], "start"), &r->start) ||
			    mem_addr_arg(json_get(hr->items[i], "end"), &r->end) || r->end <= r->start) {
				resp_err(id, "EPROTO", "'holdRange[%zu]' needs 'start' < 'end', "
					 "addresses as \"0x..\" strings", i);
				return -1;
			}
		}
		p->nr_hold_range = hr->n;
	}
	if (ht) {
		if (ht->type != J_ARR || ht->n > POLICY_MAX_LIST) {
			resp_err(id, "EPROTO", "'holdTid' must be an array of at most %d thread ids",
				 POLICY_MAX_LIST);
			return -1;
		}
		for (i = 0; i < ht->n; i++) {
			if (!json_int(ht->items[i], 1, INT32_MAX, &n)) {
				resp_err(id, "EPROTO", "'holdTid[%zu]' must be a thread id", i);
				return -1;
			}
			p->hold_tid[i] = (pid_t)n;
		}
		p->nr_hold_tid = ht->n;
	}
	if (he) {
		if (!json_int(he, 0, INT32_MAX, &n)) {
			resp_err(id, "EPROTO", "'holdEvery' must be a count >= 0 (0 or 1: every fault)");
			return -1;
		}
		p->hold_every = (uint64_t)n;
		every_count = 0;
	}
	if (ha) {
		unsigned bits = 0;

		for (i = 0; ha->type == J_ARR && i < ha->n; i++) {
			const char *w = json_cstr(ha->items[i]);

			for (k = 0; w && k < sizeof(nc_names) / sizeof(nc_names[0]); k++)
				if (!strcmp(w, nc_names[k]))
					break;
			if (!w || k == sizeof(nc_names) / sizeof(nc_names[0]))
				break;
			bits |= 1U << k;
		}
		if (ha->type != J_ARR || i < ha->n) {
			resp_err(id, "EPROTO", "'holdAfter' must be an array of event names: fork, "
				 "remap, remove, unmap");
			return -1;
		}
		p->hold_after = bits;
	}
	return 0;
}

void faults_policy_json(struct jbuf *b)
{
	size_t i, k;

	jb_printf(b, "{\"hold\":{\"missing\":%s,\"wp\":%s,\"minor\":%s},\"holdNext\":%s,"
		  "\"stream\":\"%s\",\"readAhead\":%llu,\"delayUs\":",
		  policy.hold[K_MISSING] ? "true" : "false", policy.hold[K_WP] ? "true" : "false",
		  policy.hold[K_MINOR] ? "true" : "false", policy.hold_next ? "true" : "false",
		  stream_names[policy.stream], (unsigned long long)policy.read_ahead);
	if (policy.delay_min_us || policy.delay_max_us)
		jb_printf(b, "{\"min\":%llu,\"max\":%llu}", (unsigned long long)policy.delay_min_us,
			  (unsigned long long)policy.delay_max_us);
	else
		jb_puts(b, "null");
	jb_puts(b, ",\"holdRange\":[");
	for (i = 0; i < policy.nr_hold_range; i++) {
		jb_puts(b, i ? ",{\"start\":" : "{\"start\":");
		jb_hex(b, policy.hold_range[i].start);
		jb_puts(b, ",\"end\":");
		jb_hex(b, policy.hold_range[i].end);
		jb_puts(b, "}");
	}
	jb_puts(b, "],\"holdTid\":[");
	for (i = 0; i < policy.nr_hold_tid; i++)
		jb_printf(b, i ? ",%d" : "%d", (int)policy.hold_tid[i]);
	jb_printf(b, "],\"holdEvery\":%llu,\"holdAfter\":[", (unsigned long long)policy.hold_every);
	for (i = 0, k = 0; i < sizeof(nc_names) / sizeof(nc_names[0]); i++)
		if (policy.hold_after & (1U << i)) {
			jb_puts(b, k++ ? ",\"" : "\"");
			jb_puts(b, nc_names[i]);
			jb_puts(b, "\"");
		}
	jb_puts(b, "]}");
}

void faults_stats_json(struct jbuf *b)
{
	jb_printf(b, "{\"faults\":{\"missing\":%llu,\"wp\":%llu,\"minor\":%llu},\"held\":%zu,"
		  "\"resolved\":%llu,\"regions\":%llu,\"eventsDropped\":0,\"delayed\":%zu,"
		  "\"readAhead\":%llu}",
		  (unsigned long long)nr_faults[K_MISSING], (unsigned long long)nr_faults[K_WP],
		  (unsigned long long)nr_faults[K_MINOR], nr_held,
		  (unsigned long long)nr_resolved, (unsigned long long)sess.nr_regions, nr_pend,
		  (unsigned long long)nr_read_ahead);
}

/*
 * `fill {addr, pages?, pattern|bytes|file+offset}`: UFFDIO_COPY into missing pages nobody is
 * held on (writing memory the program has not touched yet). A page with a held fault must
 * be resolved with `resolve`, which also accounts for the fault.
 */
void faults_cmd_fill(int64_t id, const struct jval *req)
{
	const struct jval *pgv = json_get(req, "pages");
	unsigned char *src;
	int64_t pages = 1;
	uint64_t addr, len, p;
	int r, tries;

	if (sess.uffd < 0) {
		resp_err(id, "ESTATE", "fill needs a running program");
		return;
	}
	if (mem_addr_arg(json_get(req, "addr"), &addr) || addr & (PAGE_SZ - 1)) {
		resp_err(id, "EPROTO", "fill needs 'addr', a page-aligned program address \"0x..\"");
		return;
	}
	if (pgv && !json_int(pgv, 1, MAX_RESOLVE_BYTES / PAGE_SZ, &pages)) {
		resp_err(id, "EPROTO", "'pages' must be a count of pages from 1 to %llu",
			 MAX_RESOLVE_BYTES / PAGE_SZ);
		return;
	}
	len = (uint64_t)pages * PAGE_SZ;
	for (p = addr; p < addr + len; p += PAGE_SZ)
		if (page_held(p, sess.uffd)) {
			resp_err(id, "EBUSY", "a fault is held on page 0x%" PRIx64 ": resolve it with "
				 "`resolve` (seq) instead", p);
			return;
		}
	src = copy_source(id, req, len);
	if (!src)
		return;
	op_fd = sess.uffd;
	for (tries = 0;; tries++) {
		r = uffd_copy(op_fd, addr, src, len, 0, 0);
		if (!r || errno != EAGAIN || tries >= EAGAIN_RETRIES)
			break;
		eagain_pause(sess.uffd);
	}
	free(src);
	if (r) {
		int err = errno;

		resp_err(id, errno_name(err), "UFFDIO_COPY of 0x%" PRIx64 "+%" PRIu64 " pages failed: "
			 "%s (%s)", addr, (uint64_t)pages, mem_errno_text(err), strerror(err));
		return;
	}
	evict_forget_range(sess.uffd, addr, addr + len);	/* replaced by the user's bytes */
	/* Wire format: {"addr":"0x..","pages":N} */
	resp_ok_begin(id);
	jb_printf(&out, "{\"addr\":\"0x%" PRIx64 "\",\"pages\":%" PRId64 "}", addr, pages);
	resp_ok_end();
	backlog_drain();
}
