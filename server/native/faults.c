#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "errnames.h"
#include "faults.h"
#include "log.h"
#include "session.h"
#include "uffd.h"

#define MSG_BATCH 64
#define EAGAIN_RETRIES 8

struct held {
	uint64_t seq, addr, page, t;
	enum fault_kind kind;
	int write;
	pid_t tid;
};

struct policy policy = { .stream = STREAM_ALL };
const char *const kind_names[K_NR] = { "missing", "wp", "minor" };
const char *const stream_names[3] = { "all", "held", "none" };

static struct held *held;
static size_t nr_held, cap_held;
static uint64_t seq_next = 1, nr_faults[K_NR], nr_resolved;

static int page_held(uint64_t page)
{
	size_t i;

	for (i = 0; i < nr_held; i++)
		if (held[i].page == page)
			return 1;
	return 0;
}

static const char *ioctl_for(int write, enum resolve_how how)
{
	if (how == HOW_WAKE)
		return "UFFDIO_WAKE";
	if (how == HOW_ZERO || !write)
		return "UFFDIO_ZEROPAGE";
	return "UFFDIO_COPY";
}

/*
 * One page, idempotently: EEXIST (already mapped, e.g. by an earlier message for the same
 * page) is success after a wake; EAGAIN (mappings changing) is retried.
 */
static int resolve_page(uint64_t page, const char *ioctl_name)
{
	int i, r;

	for (i = 0;; i++) {
		if (!strcmp(ioctl_name, "UFFDIO_COPY"))
			r = uffd_copy_zeros(sess.uffd, page);
		else if (!strcmp(ioctl_name, "UFFDIO_ZEROPAGE"))
			r = uffd_zeropage(sess.uffd, page);
		else
			r = uffd_wake(sess.uffd, page);
		if (!r)
			return 0;
		if (errno == EEXIST) {
			if (uffd_wake(sess.uffd, page) && errno != ENOENT)
				pr_perror("UFFDIO_WAKE %#llx on fd %d", (unsigned long long)page,
					  sess.uffd);
			return 0;
		}
		if (errno != EAGAIN || i >= EAGAIN_RETRIES)
			return -1;
	}
}

static void fault_event(uint64_t seq, uint64_t t, uint64_t addr, uint64_t page, int write,
			enum fault_kind kind, pid_t tid, int is_held, const char *ioctl_name,
			uint64_t latency)
{
	/* Wire format: see `fault` in docs/protocol.md */
	jb_reserve(&out, 320);
	jb_puts(&out, "{\"type\":\"event\",\"event\":\"fault\",\"seq\":");
	jb_u64(&out, seq);
	jb_puts(&out, ",\"t\":");
	jb_u64(&out, t);
	jb_puts(&out, ",\"addr\":");
	jb_hex(&out, addr);
	jb_puts(&out, ",\"page\":");
	jb_hex(&out, page);
	jb_puts(&out, write ? ",\"access\":\"write\",\"kind\":\"" : ",\"access\":\"read\",\"kind\":\"");
	jb_puts(&out, kind_names[kind]);
	jb_puts(&out, "\",\"tid\":");
	jb_u64(&out, (uint64_t)tid);
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

static void hold(const struct held *h)
{
	if (nr_held == cap_held) {
		size_t cap = cap_held ? cap_held * 2 : 64;
		struct held *n = realloc(held, cap * sizeof(*n));

		if (!n) {
			/* cannot keep it: let the thread go rather than block it forever */
			pr_perror("cannot hold fault %llu of tid %d", (unsigned long long)h->seq,
				  h->tid);
			if (resolve_page(h->page, ioctl_for(h->write, HOW_DEFAULT)))
				uffd_wake(sess.uffd, h->page);
			return;
		}
		held = n;
		cap_held = cap;
	}
	held[nr_held++] = *h;
	out_urgent = 1;
	fault_event(h->seq, h->t, h->addr, h->page, h->write, h->kind, h->tid, 1, NULL, 0);
}

static void handle_fault(const struct uffd_msg *m, uint64_t t)
{
	uint64_t flags = m->arg.pagefault.flags, addr = m->arg.pagefault.address;
	struct held h = {
		.seq = seq_next++,
		.addr = addr,
		.page = PAGE_DOWN(addr),
		.t = t,
		.write = !!(flags & UFFD_PAGEFAULT_FLAG_WRITE),
		.tid = m->arg.pagefault.feat.ptid,
	};
	const char *ioctl_name;

	if (flags & UFFD_PAGEFAULT_FLAG_MINOR)
		h.kind = K_MINOR;
	else if (flags & UFFD_PAGEFAULT_FLAG_WP)
		h.kind = K_WP;
	else
		h.kind = K_MISSING;
	nr_faults[h.kind]++;

	if (policy.hold[h.kind] || policy.hold_next || page_held(h.page)) {
		policy.hold_next = 0;
		hold(&h);
		return;
	}
	ioctl_name = ioctl_for(h.write, HOW_DEFAULT);
	if (resolve_page(h.page, ioctl_name)) {
		pr_perror("pid %d: %s of page %#llx for tid %d on fd %d failed; waking the thread",
			  sess.pid, ioctl_name, (unsigned long long)h.page, h.tid, sess.uffd);
		if (uffd_wake(sess.uffd, h.page))
			pr_perror("UFFDIO_WAKE %#llx on fd %d", (unsigned long long)h.page,
				  sess.uffd);
	} else {
		nr_resolved++;
	}
	if (policy.stream == STREAM_ALL)
		fault_event(h.seq, t, addr, h.page, h.write, h.kind, h.tid, 0, ioctl_name,
			    now_ns() - t);
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

static const char *resolve_error_text(int err)
{
	switch (err) {
	case EEXIST: return "the page is already mapped";
	case ESRCH: return "the program is gone";
	case EINVAL: return "bad range: the page is not in a registered mapping of a supported type";
	case ENOENT: return "the mapping is gone or no longer registered";
	case EAGAIN: return "the program's mappings are changing; retry";
	case EFAULT: return "the helper's source page is not readable";
	}
	return strerror(err);
}

/*
 * Resolves every fault held on the page of held[idx]. Writes the response for id (when
 * id != 0: with "resolved" events after it) or appends the seqs to list. Returns the number
 * of faults resolved or -1.
 */
static int resolve_held_page(size_t idx, enum resolve_how how, int64_t id, struct jbuf *list)
{
	uint64_t page = held[idx].page, seq = held[idx].seq, t_end;
	const char *ioctl_name = ioctl_for(held[idx].write, how);
	struct held *done;
	size_t i, n = 0;
	int err;

	if (sess.uffd < 0) {
		if (id)
			resp_err(id, "ESRCH", "the program is gone; its held faults are void");
		return -1;
	}
	if (resolve_page(page, ioctl_name)) {
		err = errno;
		pr_perror("pid %d: %s of held page %#llx on fd %d failed", sess.pid, ioctl_name,
			  (unsigned long long)page, sess.uffd);
		if (id)
			resp_err(id, errno_name(err), "%s of page 0x%llx failed: %s (%s)", ioctl_name,
				 (unsigned long long)page, resolve_error_text(err), strerror(err));
		if (err == ESRCH) {	/* nothing left to wake */
			for (i = 0; i < nr_held;)
				if (held[i].page == page)
					held[i] = held[--nr_held];
				else
					i++;
		}
		return -1;
	}
	t_end = now_ns();
	done = malloc(nr_held * sizeof(*done));
	if (!done) {
		pr_perror("resolving page %#llx", (unsigned long long)page);
		abort();
	}
	for (i = 0; i < nr_held;) {
		if (held[i].page == page) {
			done[n++] = held[i];
			held[i] = held[--nr_held];
		} else {
			i++;
		}
	}
	/* keep seq order among them */
	for (i = 1; i < n; i++) {
		struct held h = done[i];
		size_t j = i;

		while (j > 0 && done[j - 1].seq > h.seq) {
			done[j] = done[j - 1];
			j--;
		}
		done[j] = h;
	}
	if (how != HOW_WAKE)
		nr_resolved += n;
	if (id) {
		resp_ok_begin(id);
		jb_puts(&out, "{\"seq\":");
		jb_u64(&out, seq);
		jb_puts(&out, ",\"page\":");
		jb_hex(&out, page);
		jb_puts(&out, ",\"ioctl\":");
		jb_str(&out, ioctl_name);
		jb_puts(&out, ",\"woken\":[");
		for (i = 0; i < n; i++) {
			if (i)
				jb_puts(&out, ",");
			jb_u64(&out, done[i].seq);
		}
		jb_puts(&out, "]}");
		resp_ok_end();
	}
	for (i = 0; i < n; i++) {
		if (list) {
			if (list->len)
				jb_puts(list, ",");
			jb_u64(list, done[i].seq);
		}
		resolved_event(&done[i], ioctl_name, t_end);
	}
	free(done);
	return (int)n;
}

void faults_cmd_resolve(int64_t id, uint64_t seq, enum resolve_how how)
{
	size_t i;

	for (i = 0; i < nr_held; i++)
		if (held[i].seq == seq)
			break;
	if (i == nr_held) {
		resp_err(id, "ESTATE", "no held fault with seq %llu (unknown or already resolved)",
			 (unsigned long long)seq);
		return;
	}
	resolve_held_page(i, how, id, NULL);
}

void faults_cmd_resolve_all(int64_t id)
{
	struct jbuf list = { 0 }, events, saved = out;
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
			resolve_held_page(i, HOW_DEFAULT, 0, &list);
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
	if (nr_held)
		pr_info("program %d is gone: dropping %zu held faults", sess.pid, nr_held);
	nr_held = 0;
	policy.hold_next = 0;
}

void faults_policy_json(struct jbuf *b)
{
	jb_printf(b, "{\"hold\":{\"missing\":%s,\"wp\":%s,\"minor\":%s},\"holdNext\":%s,"
		  "\"stream\":\"%s\"}",
		  policy.hold[K_MISSING] ? "true" : "false", policy.hold[K_WP] ? "true" : "false",
		  policy.hold[K_MINOR] ? "true" : "false", policy.hold_next ? "true" : "false",
		  stream_names[policy.stream]);
}

void faults_stats_json(struct jbuf *b)
{
	jb_printf(b, "{\"faults\":{\"missing\":%llu,\"wp\":%llu,\"minor\":%llu},\"held\":%zu,"
		  "\"resolved\":%llu,\"regions\":%llu,\"eventsDropped\":0}",
		  (unsigned long long)nr_faults[K_MISSING], (unsigned long long)nr_faults[K_WP],
		  (unsigned long long)nr_faults[K_MINOR], nr_held,
		  (unsigned long long)nr_resolved, (unsigned long long)sess.nr_regions);
}
