#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "b64.h"
#include "errnames.h"
#include "faults.h"
#include "log.h"
#include "mem.h"
#include "output.h"
#include "session.h"
#include "uffd.h"

#define MSG_BATCH 64
#define EAGAIN_RETRIES 8
#define MAX_RESOLVE_BYTES (64ULL << 20)
#define OP_DONTWAKE 1	/* leave threads blocked on the range asleep */
#define OP_WP 2		/* map copies write-protected: the page had the uffd-wp bit */

struct held {
	uint64_t seq, addr, page, t, psize;
	enum fault_kind kind;
	int write;
	pid_t tid;
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

static int page_held(uint64_t page)
{
	size_t i;

	for (i = 0; i < nr_held; i++)
		if (held[i].page == page)
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
	if (!(flags & OP_WP) && !uffd_zero(sess.uffd, page, psize, flags & OP_DONTWAKE))
		return 0;
	if (!(flags & OP_WP) && errno != EEXIST)
		return -1;
	zero_was_copy = 1;
	return uffd_copy(sess.uffd, page, zeros(psize), psize, flags & OP_DONTWAKE,
			 flags & OP_WP);
}

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
		return uffd_copy(sess.uffd, dst, src, len, dontwake, flags & OP_WP);
	case HOW_ZERO:
		return len == PAGE_SZ ? zero_op(dst, len, flags) :
		       uffd_zero(sess.uffd, dst, len, dontwake);
	case HOW_CONTINUE:
		return uffd_continue(sess.uffd, dst, len, dontwake);
	case HOW_UNPROTECT:
		return uffd_writeprotect(sess.uffd, dst, len, 0, dontwake);
	case HOW_MOVE:
		return uffd_move(sess.uffd, dst, from, len, dontwake);
	case HOW_POISON:
		return uffd_poison(sess.uffd, dst, len, dontwake);
	default:
		return uffd_wake_range(sess.uffd, dst, len);
	}
}

/*
 * A missing fault on a write-protected page (the marker WP_UNPOPULATED leaves on a protected,
 * never-populated page) is filled write-protected, so the protection holds: the next write is
 * a wp fault.
 */
static int missing_flags(enum fault_kind kind, uint64_t page)
{
	return kind == K_MISSING && mem_wp_marked(page) ? OP_WP : 0;
}

/*
 * One page, idempotently, for automatic resolution: EEXIST (already mapped, e.g. by an
 * earlier message for the same page) is success after a wake; EAGAIN is retried.
 */
static int auto_resolve(const struct held *h, enum resolve_how how)
{
	int i;

	for (i = 0;; i++) {
		if (!do_op(how, h->page, h->psize, NULL, 0, missing_flags(h->kind, h->page)))
			return 0;
		if (errno == EEXIST) {
			if (uffd_wake_range(sess.uffd, h->page, h->psize) && errno != ENOENT)
				pr_perror("UFFDIO_WAKE %#" PRIx64 " on fd %d", h->page, sess.uffd);
			return 0;
		}
		if (errno != EAGAIN || i >= EAGAIN_RETRIES)
			return -1;
	}
}

static void fault_event(const struct held *h, int is_held, const char *ioctl_name,
			uint64_t latency)
{
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
	if (h->psize != PAGE_SZ) {
		jb_puts(&out, ",\"pageSize\":");
		jb_u64(&out, h->psize);
	}
	if (is_held) {
		jb_puts(&out, ",\"held\":true}\n");
		return;
	}
	jb_puts(&out, ",\"held\":false,\"ioctl\":\"");
	jb_puts(&out, ioctl_name);
	jb_puts(&out, "\",\"latencyNs\":");
	jb_u64(&out, latency);
	jb_puts(&out, "}\n");
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
		p = h->page + i * h->psize;
		if (page_held(p) || page_pending(p))
			continue;
		if (do_op(how, p, h->psize, NULL, 0, OP_DONTWAKE | missing_flags(K_MISSING, p))) {
			if (errno == EEXIST)
				continue;
			break;
		}
		nr_read_ahead++;
	}
}

/* Resolves a fault nobody holds with its kind's default, and streams it. */
static void auto_finish(const struct held *h)
{
	enum resolve_how how = default_how(h);

	/* the following pages first: once woken, the thread would race the read-ahead */
	if (h->kind == K_MISSING && policy.read_ahead > 1)
		read_ahead(h, how);
	if (auto_resolve(h, how)) {
		pr_perror("pid %d: %s of page %#" PRIx64 " for tid %d on fd %d failed; waking the "
			  "thread", sess.pid, how_ioctls[how], h->page, h->tid, sess.uffd);
		if (uffd_wake_range(sess.uffd, h->page, h->psize))
			pr_perror("UFFDIO_WAKE %#" PRIx64 " on fd %d", h->page, sess.uffd);
	} else {
		nr_resolved++;
	}
	if (policy.stream == STREAM_ALL)
		fault_event(h, 0, how == HOW_ZERO && zero_was_copy ? "UFFDIO_COPY" :
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
			if (auto_resolve(h, default_how(h)))
				uffd_wake_range(sess.uffd, h->page, h->psize);
			return;
		}
		held = n;
		cap_held = cap;
	}
	held[nr_held++] = *h;
	out_urgent = 1;
	output_drain();	/* the program's output before the fault precedes it */
	fault_event(h, 1, NULL, 0);
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
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	us = policy.delay_min_us + (span ? rng % (span + 1) : 0);
	for (i = nr_pend; i > 0 && pend[i - 1].deadline > h->t + us * 1000; i--)
		pend[i] = pend[i - 1];
	pend[i] = (struct pend){ .h = *h, .deadline = h->t + us * 1000 };
	nr_pend++;
	if (i == 0)
		timer_arm();
	return 0;
}

void faults_timer_fire(void)
{
	uint64_t expirations, now = now_ns();
	size_t n = 0, i;

	if (timer_fd >= 0 && read(timer_fd, &expirations, sizeof(expirations)) < 0 &&
	    errno != EAGAIN)
		pr_perror("read from timerfd %d", timer_fd);
	while (n < nr_pend && pend[n].deadline <= now)
		n++;
	/* in deadline order; auto_finish may not touch pend[] */
	for (i = 0; i < n; i++)
		if (sess.uffd >= 0)
			auto_finish(&pend[i].h);
	memmove(pend, pend + n, (nr_pend - n) * sizeof(*pend));
	nr_pend -= n;
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

static void handle_fault(const struct uffd_msg *m, uint64_t t)
{
	uint64_t flags = m->arg.pagefault.flags, addr = m->arg.pagefault.address;
	struct held h = {
		.seq = seq_next++,
		.addr = addr,
		.t = t,
		.write = !!(flags & UFFD_PAGEFAULT_FLAG_WRITE),
		.tid = m->arg.pagefault.feat.ptid,
	};

	h.psize = mem_page_size(addr);
	h.page = addr & ~(h.psize - 1);
	if (flags & UFFD_PAGEFAULT_FLAG_MINOR)
		h.kind = K_MINOR;
	else if (flags & UFFD_PAGEFAULT_FLAG_WP)
		h.kind = K_WP;
	else
		h.kind = K_MISSING;
	nr_faults[h.kind]++;

	if (want_hold(&h) || page_held(h.page)) {
		policy.hold_next = 0;
		hold(&h);
		return;
	}
	if ((policy.delay_min_us || policy.delay_max_us) && !pend_add(&h))
		return;
	auto_finish(&h);
}

/*
 * Drains the fd: many messages per read, reads until EAGAIN. Bounded in time so ptrace
 * stops and requests get their turn, and cut short when a fault is held so the client
 * sees it at once. (Spinning on EAGAIN was tried: no measurable gain on this 2-vCPU VM,
 * since the woken thread may queue behind the spinner.)
 */
#define MAX_READ_NS 2000000ULL

int faults_read(int uffd)
{
	struct uffd_msg msgs[MSG_BATCH];
	uint64_t start = now_ns(), t;
	size_t held_before = nr_held;
	int i;

	for (;;) {
		ssize_t n = read(uffd, msgs, sizeof(msgs));

		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return 0;
			pr_perror("read from userfaultfd %d of pid %d", uffd, sess.pid);
			return -1;
		}
		if (n == 0)
			return -1;
		t = now_ns();
		for (i = 0; i < (int)(n / sizeof(msgs[0])); i++) {
			if (msgs[i].event == UFFD_EVENT_PAGEFAULT)
				handle_fault(&msgs[i], t);
			else
				pr_warn("fd %d: unexpected userfaultfd event 0x%x ignored", uffd,
					msgs[i].event);
		}
		if (nr_held != held_before || t - start > MAX_READ_NS)
			return 0;
	}
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
	const char *ioctl_name = how_ioctls[how];
	uint64_t len = s->pages * f.psize, done, t_end;
	unsigned char *before = NULL;
	struct jbuf skipped = { 0 };
	struct held *woken;
	size_t n = 0, k;
	int err, r, tries;

	if (sess.uffd < 0) {
		if (id)
			resp_err(id, "ESRCH", "the program is gone; its held faults are void");
		return -1;
	}
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
	for (tries = 0;; tries++) {
		r = do_op(how, f.page, f.psize, s->src, s->from, missing_flags(f.kind, f.page));
		if (!r || errno != EAGAIN || tries >= EAGAIN_RETRIES)
			break;
	}
	if (!r && how == HOW_ZERO && zero_was_copy)
		ioctl_name = "UFFDIO_COPY";
	if (r && errno == EEXIST && s->how == HOW_DEFAULT) {
		/* the default is idempotent: already mapped counts as resolved, after a wake */
		if (uffd_wake_range(sess.uffd, f.page, f.psize) && errno != ENOENT)
			pr_perror("UFFDIO_WAKE %#" PRIx64 " on fd %d", f.page, sess.uffd);
		r = 0;
	}
	if (r) {
		err = errno;
		pr_perror("pid %d: %s of held page %#" PRIx64 " on fd %d failed", sess.pid,
			  ioctl_name, f.page, sess.uffd);
		if (id && how == HOW_MOVE && err == EINVAL)
			resp_err(id, "EINVAL", "UFFDIO_MOVE of 0x%" PRIx64 " to page 0x%" PRIx64
				 " failed (%s): the kernel only accepts moves issued from inside the "
				 "program's own process (no cross-mm moves), and the helper works from "
				 "outside; unaligned or unregistered addresses give the same error. "
				 "The fault stays held: resolve it another way.", s->from, f.page,
				 strerror(err));
		else if (id)
			resp_err(id, errno_name(err), "%s of page 0x%" PRIx64 " failed: %s (%s). "
				 "The fault stays held: resolve it another way or with \"wake\".",
				 ioctl_name, f.page, mem_errno_text(err), strerror(err));
		if (err == ESRCH) {	/* nothing left to wake */
			for (k = 0; k < nr_held;)
				if (held[k].page == f.page)
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
		if (held[k].page >= f.page && held[k].page < f.page + done * f.psize) {
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
	free(src);
}

void faults_cmd_resolve_all(int64_t id)
{
	struct jbuf list = { 0 }, events, saved = out;
	const struct rspec s = { .how = HOW_DEFAULT, .pages = 1 };
	uint64_t *pages = malloc((nr_held + 1) * sizeof(*pages));
	size_t np = 0, i, j;

	if (!pages) {
		resp_err(id, "ENOMEM", "cannot list the held pages: %s", strerror(errno));
		return;
	}
	for (i = 0; i < nr_held; i++) {
		for (j = 0; j < np && pages[j] != held[i].page; j++)
			;
		if (j == np)
			pages[np++] = held[i].page;
	}
	/* `resolved` events must follow the response: collect them in a side buffer */
	out = (struct jbuf){ 0 };
	for (j = 0; j < np; j++) {
		for (i = 0; i < nr_held && held[i].page != pages[j]; i++)
			;
		if (i < nr_held)	/* a page that fails stays held */
			resolve_held(i, &s, 0, &list);
	}
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
	const struct jval *he = json_get(req, "holdEvery");
	int64_t n, m;
	size_t i;

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
	return 0;
}

void faults_policy_json(struct jbuf *b)
{
	size_t i;

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
	jb_printf(b, "],\"holdEvery\":%llu}", (unsigned long long)policy.hold_every);
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
