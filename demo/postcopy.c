// SPDX-License-Identifier: MIT
/*
 * postcopy: a small postcopy migration, to watch a userfaultfd handler at work (observe mode).
 *
 * A *source* process holds a memory image (page i filled from i alone) and serves it over a
 * Unix socket: urgent requests first, with --latency-us per request and --bandwidth-mbps on
 * every page sent; between requests it pushes the pages nobody asked for yet, in order from
 * just after the last request. The *destination* maps the region empty, registers it with a
 * userfaultfd for missing faults, and runs --threads workload threads over it; its handler
 * reads each fault, asks the source for the page, and places what arrives with UFFDIO_COPY.
 * At the end the destination checks every page's content and prints the QEMU-style figures:
 * blocked time in total and per faulting thread, a log2 µs latency histogram, pages placed
 * for a fault (requested) and ahead of any fault (pushed).
 *
 *   postcopy [--pages N] [--threads T] [--latency-us L] [--bandwidth-mbps B] [--no-push]
 *            [--scm | --fork-handler | --clone-handler] [--uffd-dev] [--watchdog SEC]
 *            [--forget K] [--twice K] [--wrong K] [--die-after N]
 *   postcopy --help   prints the options below
 *
 *   --scm        the workload process creates and registers the userfaultfd and hands it to a
 *                separate handler process over a Unix socket (SCM_RIGHTS), as Firecracker and
 *                QEMU do; the handler never had it before.
 *   --fork-handler  the handler is a child forked after the userfaultfd is made and registered:
 *                it inherits the descriptor, the workload process closes its own copy.
 *   --clone-handler  as --fork-handler, but the child is made by a raw clone(2) system call
 *                (syscall(SYS_clone, SIGCHLD, ...)): no pthread_atfork handlers run in it.
 *   --uffd-dev   create it with /dev/userfaultfd + USERFAULTFD_IOC_NEW, not userfaultfd(2).
 *   --watchdog   give up after SEC seconds: print the faults still unresolved, exit 3.
 * Misbehaviour on purpose (workshops):
 *   --forget K   the handler drops page K when it arrives: faults on it are never resolved
 *                (the run hangs: use --watchdog).
 *   --twice K    the handler places page K a second time (UFFDIO_COPY fails with EEXIST).
 *   --wrong K    the handler places page K+1's content at page K (the content check fails).
 *   --die-after N  the handler exits (status 70) after placing N pages.
 *
 * The workload's time from its first thread's start to the last one's end goes to stderr as
 *   postcopy: workload ran T ms (P pages/s)
 * The handler's own counts come last, as one line tests can compare with what an observer saw:
 *   postcopy-handler: reads=R faults=F events=E requests=Q received=X copies=C eexist=D
 *     eagain=A errors=Z dropped=P placed_fault=PF placed_push=PP
 * (copies: successful UFFDIO_COPY calls; placed_fault: pages placed while a fault read on them
 * waited; placed_push: pages placed with no fault waiting.) The workload prints
 *   postcopy: check ok pages=N   or   postcopy: check FAILED bad=B first=K
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

#define PAGE 4096UL
#define MAX_THREADS 64
#define HIST 24

struct opts {
	long pages;
	int threads;
	long latency_us;
	long bandwidth_mbps;
	int push;
	int scm;
	int fork_handler;	/* 1: fork(), 2: raw clone(2) (--clone-handler) */
	int dev;
	long watchdog;
	long forget, twice, wrong, die_after;
};

static struct opts o = {
	.pages = 1024, .threads = 4, .latency_us = 100, .bandwidth_mbps = 0, .push = 1,
	.forget = -1, .twice = -1, .wrong = -1, .die_after = -1,
};

/* A page as the source sends it. */
struct page_msg {
	uint64_t index;
	uint32_t flags;		/* 1: answer to a request, 2: background push */
	uint32_t pad;
	unsigned char data[PAGE];
};

static void die(const char *what)
{
	fprintf(stderr, "postcopy[%d]: %s: %s\n", getpid(), what, strerror(errno));
	exit(2);
}

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void fill_page(unsigned char *p, uint64_t index)
{
	uint64_t *w = (uint64_t *)p;

	for (size_t i = 0; i < PAGE / 8; i++)
		w[i] = (index + 1) * 0x9e3779b97f4a7c15ull ^ i;
}

static int page_ok(const unsigned char *p, uint64_t index)
{
	const uint64_t *w = (const uint64_t *)p;

	for (size_t i = 0; i < PAGE / 8; i++) {
		if (w[i] != ((index + 1) * 0x9e3779b97f4a7c15ull ^ i))
			return 0;
	}
	return 1;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *p = buf;

	while (len) {
		ssize_t n = write(fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		p += n;
		len -= (size_t)n;
	}
	return 0;
}

/* ---- source ---- */

static void sleep_ns(uint64_t ns)
{
	struct timespec ts = { (time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull) };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static void source_main(int sock)
{
	unsigned char *sent = calloc((size_t)o.pages, 1);
	uint64_t *queue = calloc((size_t)o.pages + 1, sizeof(uint64_t));
	uint64_t *due = calloc((size_t)o.pages + 1, sizeof(uint64_t));
	long head = 0, tail = 0, cursor = 0, left = o.pages;
	struct page_msg *m = malloc(sizeof(*m));
	uint64_t req;
	size_t got = 0;

	if (!sent || !queue || !due || !m)
		die("source: out of memory");
	while (left > 0) {
		struct pollfd pfd = { .fd = sock, .events = POLLIN };
		struct timespec zero = { 0, 0 }, wait, *timeout = o.push ? &zero : NULL;
		long idx = -1;
		uint32_t flags = 0;
		uint64_t t = now_ns();

		while (head < tail && sent[queue[head]])
			head++;
		if (head < tail) {
			uint64_t ns = due[head] > t ? due[head] - t : 0;

			wait.tv_sec = (time_t)(ns / 1000000000ull);
			wait.tv_nsec = (long)(ns % 1000000000ull);
			timeout = &wait;
		}
		if (ppoll(&pfd, 1, timeout, NULL) < 0 && errno != EINTR)
			die("source: poll");
		if (pfd.revents & (POLLIN | POLLHUP)) {
			ssize_t n = read(sock, (char *)&req + got, sizeof(req) - got);

			if (n <= 0)
				break;	/* the destination is done (or gone) */
			got += (size_t)n;
			if (got == sizeof(req)) {
				got = 0;
				if (req < (uint64_t)o.pages && !sent[req] && tail < o.pages) {
					due[tail] = now_ns() + (uint64_t)o.latency_us * 1000;
					queue[tail++] = req;
				}
			}
			continue;
		}
		/* Urgent first: the oldest request whose latency has passed. */
		if (head < tail && due[head] <= now_ns()) {
			idx = (long)queue[head++];
			flags = 1;
			cursor = idx + 1;
		} else if (head < tail) {
			continue;
		} else if (o.push) {
			for (long k = 0; k < o.pages && sent[cursor % o.pages]; k++)
				cursor++;
			idx = cursor % o.pages;
			flags = 2;
		} else {
			continue;
		}
		if (sent[idx])
			continue;
		sent[idx] = 1;
		left--;
		m->index = (uint64_t)idx;
		m->flags = flags;
		fill_page(m->data, (uint64_t)idx);
		if (o.bandwidth_mbps > 0)
			sleep_ns(8000ull * sizeof(*m) / (uint64_t)o.bandwidth_mbps);
		if (write_all(sock, m, sizeof(*m)) < 0)
			break;
	}
	/* Wait for the destination to hang up, so it never reads a half-closed stream early. */
	while (read(sock, &req, sizeof(req)) > 0)
		;
	exit(0);
}

/* ---- handler ---- */

struct fault {
	uint64_t t;
	uint32_t ptid;
	int32_t next;
};

struct handler {
	int uffd;
	int sock;
	int stop;		/* eventfd (threads) or control socket (--scm) */
	char *base;
	unsigned char *requested, *placed;
	int32_t *pending;	/* per page: first fault in faults[], -1 none */
	struct fault *faults;
	long nfaults, cap;
	pthread_mutex_t mu;
	/* counts */
	long reads, nmsg_fault, nmsg_event, requests, received, copies, eexist, eagain, errors,
	     dropped, placed_fault, placed_push, placed_total;
	/* QEMU-style figures */
	uint64_t blocked_ns;
	uint32_t tids[MAX_THREADS];
	uint64_t tid_ns[MAX_THREADS];
	long hist[HIST];
};

static struct handler H;

static void note_blocked(uint32_t ptid, uint64_t ns)
{
	uint64_t us = ns / 1000;
	int b = 0;

	H.blocked_ns += ns;
	while (us > 1 && b < HIST - 1) {
		us >>= 1;
		b++;
	}
	H.hist[b]++;
	for (int i = 0; i < MAX_THREADS; i++) {
		if (H.tids[i] == ptid || !H.tids[i]) {
			H.tids[i] = ptid;
			H.tid_ns[i] += ns;
			break;
		}
	}
}

static int place(uint64_t idx, const unsigned char *data)
{
	struct uffdio_copy c = {
		.dst = (uint64_t)(uintptr_t)(H.base + idx * PAGE),
		.src = (uint64_t)(uintptr_t)data,
		.len = PAGE,
	};

	for (;;) {
		if (ioctl(H.uffd, UFFDIO_COPY, &c) == 0)
			break;
		if (errno == EAGAIN) {
			/* A non-cooperative event is in flight: retry the rest. */
			H.eagain++;
			if (c.copy > 0) {
				c.dst += (uint64_t)c.copy;
				c.src += (uint64_t)c.copy;
				c.len -= (uint64_t)c.copy;
			}
			c.copy = 0;
			continue;
		}
		if (errno == EEXIST) {
			H.eexist++;
			return 0;
		}
		H.errors++;
		fprintf(stderr, "postcopy: UFFDIO_COPY page %lu: %s\n", (unsigned long)idx, strerror(errno));
		return -1;
	}
	H.copies++;
	pthread_mutex_lock(&H.mu);
	if (!H.placed[idx]) {
		uint64_t t = now_ns();

		H.placed[idx] = 1;
		H.placed_total++;
		if (H.pending[idx] >= 0)
			H.placed_fault++;
		else
			H.placed_push++;
		for (int32_t f = H.pending[idx]; f >= 0; f = H.faults[f].next)
			note_blocked(H.faults[f].ptid, t - H.faults[f].t);
		H.pending[idx] = -1;
	}
	pthread_mutex_unlock(&H.mu);
	return 0;
}

static void handle_msgs(struct uffd_msg *msgs, size_t n)
{
	uint64_t t = now_ns();

	for (size_t i = 0; i < n; i++) {
		uint64_t idx;

		if (msgs[i].event != UFFD_EVENT_PAGEFAULT) {
			H.nmsg_event++;
			continue;
		}
		H.nmsg_fault++;
		idx = (msgs[i].arg.pagefault.address - (uint64_t)(uintptr_t)H.base) / PAGE;
		if (idx >= (uint64_t)o.pages)
			continue;
		pthread_mutex_lock(&H.mu);
		if (H.nfaults == H.cap) {
			H.cap = H.cap ? H.cap * 2 : 1024;
			H.faults = realloc(H.faults, (size_t)H.cap * sizeof(*H.faults));
			if (!H.faults)
				die("handler: out of memory");
		}
		H.faults[H.nfaults] = (struct fault){ t, msgs[i].arg.pagefault.feat.ptid, H.pending[idx] };
		H.pending[idx] = (int32_t)H.nfaults++;
		pthread_mutex_unlock(&H.mu);
		if (!H.requested[idx]) {
			H.requested[idx] = 1;
			H.requests++;
			if (write_all(H.sock, &idx, sizeof(idx)) < 0)
				die("handler: request to the source");
		}
	}
}

static void handle_page(struct page_msg *m)
{
	uint64_t idx = m->index;

	H.received++;
	if ((long)idx == o.forget) {
		H.dropped++;
		return;
	}
	if ((long)idx == o.wrong && idx + 1 < (uint64_t)o.pages)
		fill_page(m->data, idx + 1);
	if (place(idx, m->data) < 0)
		return;
	if ((long)idx == o.twice)
		place(idx, m->data);
	if (o.die_after >= 0 && H.placed_total >= o.die_after) {
		fprintf(stderr, "postcopy: handler dies on purpose after %ld pages\n", H.placed_total);
		_exit(70);
	}
}

static void print_handler_summary(void)
{
	fprintf(stderr, "postcopy: blocked time total %.3f ms over %ld faults\n",
		(double)H.blocked_ns / 1e6, H.nmsg_fault);
	for (int i = 0; i < MAX_THREADS && H.tids[i]; i++)
		fprintf(stderr, "postcopy: thread %u blocked %.3f ms\n", H.tids[i], (double)H.tid_ns[i] / 1e6);
	fprintf(stderr, "postcopy: latency us log2:");
	for (int b = 0; b < HIST; b++) {
		if (H.hist[b])
			fprintf(stderr, " [%lu,%lu)=%ld", b ? 1ul << b : 0ul, 2ul << b, H.hist[b]);
	}
	fprintf(stderr, "\npostcopy: pages requested %ld pushed %ld\n", H.placed_fault, H.placed_push);
	fprintf(stderr,
		"postcopy-handler: reads=%ld faults=%ld events=%ld requests=%ld received=%ld copies=%ld "
		"eexist=%ld eagain=%ld errors=%ld dropped=%ld placed_fault=%ld placed_push=%ld\n",
		H.reads, H.nmsg_fault, H.nmsg_event, H.requests, H.received, H.copies, H.eexist,
		H.eagain, H.errors, H.dropped, H.placed_fault, H.placed_push);
}

/* The handler loop: faults from the userfaultfd, pages from the source, until told to stop. */
static void handler_loop(void)
{
	static struct page_msg in;
	size_t got = 0;
	struct uffd_msg msgs[16];

	for (;;) {
		struct pollfd pfd[3] = {
			{ .fd = H.uffd, .events = POLLIN },
			{ .fd = H.sock, .events = POLLIN },
			{ .fd = H.stop, .events = POLLIN },
		};

		if (poll(pfd, 3, -1) < 0) {
			if (errno == EINTR)
				continue;
			die("handler: poll");
		}
		if (pfd[0].revents & POLLIN) {
			ssize_t n = read(H.uffd, msgs, sizeof(msgs));

			if (n > 0) {
				H.reads++;
				handle_msgs(msgs, (size_t)n / sizeof(msgs[0]));
			} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				die("handler: read userfaultfd");
			}
		}
		if (pfd[1].revents & (POLLIN | POLLHUP)) {
			ssize_t n = read(H.sock, (char *)&in + got, sizeof(in) - got);

			if (n <= 0) {
				pfd[1].fd = -1;
				H.sock = -1;
			} else if ((got += (size_t)n) == sizeof(in)) {
				got = 0;
				handle_page(&in);
			}
		}
		if (pfd[2].revents & (POLLIN | POLLHUP))
			return;
		if (H.sock < 0 && !(pfd[0].revents & POLLIN)) {
			/* Source gone and nothing to read: wait for the stop only. */
			struct pollfd s = { .fd = H.stop, .events = POLLIN };

			poll(&s, 1, -1);
			return;
		}
	}
}

static void *handler_thread(void *unused)
{
	(void)unused;
	/* Names as a debugger shows them (thread list of observe mode). */
	pthread_setname_np(pthread_self(), "pc-handler");
	handler_loop();
	return NULL;
}

static void handler_init(int uffd, int sock, int stop, char *base)
{
	H.uffd = uffd;
	H.sock = sock;
	H.stop = stop;
	H.base = base;
	H.requested = calloc((size_t)o.pages, 1);
	H.placed = calloc((size_t)o.pages, 1);
	H.pending = malloc((size_t)o.pages * sizeof(int32_t));
	if (!H.requested || !H.placed || !H.pending)
		die("handler: out of memory");
	memset(H.pending, 0xff, (size_t)o.pages * sizeof(int32_t));
	pthread_mutex_init(&H.mu, NULL);
}

/* ---- workload ---- */

static char *region;
static volatile uint64_t sums[MAX_THREADS];

static void *worker(void *arg)
{
	long t = (long)arg;
	uint64_t sum = 0;
	char name[16];

	snprintf(name, sizeof(name), "pc-worker-%ld", t);
	pthread_setname_np(pthread_self(), name);

	/* Each thread walks its stripe backwards, so faults of threads interleave. */
	for (long i = o.pages - 1 - t; i >= 0; i -= o.threads)
		sum += *(volatile uint64_t *)(region + (size_t)i * PAGE + 8 * (size_t)(i % 512));
	sums[t] = sum;
	return NULL;
}

static int check_all(void)
{
	long bad = 0, first = -1;

	for (long i = 0; i < o.pages; i++) {
		if (!page_ok((unsigned char *)region + (size_t)i * PAGE, (uint64_t)i)) {
			if (first < 0)
				first = i;
			bad++;
		}
	}
	if (bad) {
		printf("postcopy: check FAILED bad=%ld first=%ld\n", bad, first);
		return 1;
	}
	printf("postcopy: check ok pages=%ld\n", o.pages);
	return 0;
}

static int make_uffd(void)
{
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_THREAD_ID };
	int fd;

	if (o.dev) {
		int dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);

		if (dev < 0)
			die("open /dev/userfaultfd (run as root or without --uffd-dev)");
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
		close(dev);
	} else {
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	}
	if (fd < 0)
		die("userfaultfd (needs root or vm.unprivileged_userfaultfd=1)");
	if (ioctl(fd, UFFDIO_API, &api) < 0)
		die("UFFDIO_API");
	return fd;
}

static void register_region(int uffd)
{
	struct uffdio_register reg = {
		.range = { .start = (uint64_t)(uintptr_t)region, .len = (uint64_t)o.pages * PAGE },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};

	if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
		die("UFFDIO_REGISTER");
}

static int send_fd(int sock, int fd)
{
	char byte = 'U';
	struct iovec iov = { &byte, 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			      .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&msg);

	memset(u.buf, 0, sizeof(u.buf));
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	return sendmsg(sock, &msg, 0) == 1 ? 0 : -1;
}

static int recv_fd(int sock)
{
	char byte;
	struct iovec iov = { &byte, 1 };
	union {
		char buf[CMSG_SPACE(sizeof(int))];
		struct cmsghdr align;
	} u;
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
			      .msg_controllen = sizeof(u.buf) };
	struct cmsghdr *c;
	int fd;

	if (recvmsg(sock, &msg, MSG_CMSG_CLOEXEC) != 1)
		return -1;
	c = CMSG_FIRSTHDR(&msg);
	if (!c || c->cmsg_type != SCM_RIGHTS)
		return errno = EPROTO, -1;
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

static void *watchdog(void *unused)
{
	(void)unused;
	sleep_ns((uint64_t)o.watchdog * 1000000000ull);
	pthread_mutex_lock(&H.mu);
	fprintf(stderr, "postcopy: watchdog: the run did not finish in %ld s\n", o.watchdog);
	for (long i = 0; H.pending && i < o.pages; i++) {
		if (H.pending[i] >= 0)
			fprintf(stderr, "postcopy: watchdog: fault unresolved on page %ld (%p)\n", i,
				(void *)(region + (size_t)i * PAGE));
	}
	pthread_mutex_unlock(&H.mu);
	if (!o.scm && !o.fork_handler)
		print_handler_summary();
	_exit(3);
	return NULL;
}

static long num_arg(int argc, char **argv, int *i)
{
	char *end;
	long v;

	if (*i + 1 >= argc) {
		fprintf(stderr, "postcopy: %s needs a number\n", argv[*i]);
		exit(2);
	}
	v = strtol(argv[++*i], &end, 0);
	if (*end || v < 0) {
		fprintf(stderr, "postcopy: %s: '%s' is not a number >= 0\n", argv[*i - 1], argv[*i]);
		exit(2);
	}
	return v;
}

/* postcopy --help: the options of the comment at the top of this file. */
static const char usage[] =
	"usage: postcopy [--pages N] [--threads T] [--latency-us L] [--bandwidth-mbps B] [--no-push]\n"
	"                [--scm | --fork-handler | --clone-handler] [--uffd-dev] [--watchdog SEC]\n"
	"                [--forget K] [--twice K] [--wrong K] [--die-after N]\n"
	"A small postcopy migration: a source process serves pages, the destination's userfaultfd\n"
	"handler places them as its --threads T workload threads fault on its --pages N pages.\n"
	"  --latency-us L     the source answers each request after L us (default 100)\n"
	"  --bandwidth-mbps B the source sends at most B Mbit/s (default: unlimited)\n"
	"  --no-push          no background pushes: only requested pages are sent\n"
	"  --scm              the handler is a separate process that receives the userfaultfd over\n"
	"                     a Unix socket (SCM_RIGHTS)\n"
	"  --fork-handler     the handler is a child forked after the userfaultfd is made and\n"
	"                     registered: it inherits the descriptor\n"
	"  --clone-handler    as --fork-handler, but the child is made by a raw clone(2) system call:\n"
	"                     no pthread_atfork handlers run in it\n"
	"  --uffd-dev         create the userfaultfd with /dev/userfaultfd + USERFAULTFD_IOC_NEW\n"
	"  --watchdog SEC     give up after SEC seconds: print the unresolved faults, exit 3\n"
	"Misbehaviour on purpose:\n"
	"  --forget K         the handler drops page K: its faults are never resolved (use --watchdog)\n"
	"  --twice K          the handler places page K twice (UFFDIO_COPY fails with EEXIST)\n"
	"  --wrong K          the handler places page K+1's content at page K (the check fails)\n"
	"  --die-after N      the handler exits (status 70) after placing N pages\n";

static void parse(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (!strcmp(a, "--pages"))
			o.pages = num_arg(argc, argv, &i);
		else if (!strcmp(a, "--threads"))
			o.threads = (int)num_arg(argc, argv, &i);
		else if (!strcmp(a, "--latency-us"))
			o.latency_us = num_arg(argc, argv, &i);
		else if (!strcmp(a, "--bandwidth-mbps"))
			o.bandwidth_mbps = num_arg(argc, argv, &i);
		else if (!strcmp(a, "--no-push"))
			o.push = 0;
		else if (!strcmp(a, "--scm"))
			o.scm = 1;
		else if (!strcmp(a, "--fork-handler"))
			o.fork_handler = o.fork_handler && o.fork_handler != 1 ? -1 : 1;	/* -1: both */
		else if (!strcmp(a, "--clone-handler"))
			o.fork_handler = o.fork_handler && o.fork_handler != 2 ? -1 : 2;
		else if (!strcmp(a, "--uffd-dev"))
			o.dev = 1;
		else if (!strcmp(a, "--watchdog"))
			o.watchdog = num_arg(argc, argv, &i);
		else if (!strcmp(a, "--forget"))
			o.forget = num_arg(argc, argv, &i);
		else if (!strcmp(a, "--twice"))
			o.twice = num_arg(argc, argv, &i);
		else if (!strcmp(a, "--wrong"))
			o.wrong = num_arg(argc, argv, &i);
		else if (!strcmp(a, "--die-after"))
			o.die_after = num_arg(argc, argv, &i);
		else if (!strcmp(a, "--help") || !strcmp(a, "-h"))
			exit(fputs(usage, stdout) < 0 ? 2 : 0);
		else {
			fprintf(stderr, "postcopy: unknown option '%s' (see postcopy --help)\n", a);
			exit(2);
		}
	}
	if ((o.scm && o.fork_handler) || o.fork_handler < 0) {
		fprintf(stderr, "postcopy: --scm, --fork-handler and --clone-handler are ways to run the handler apart: pick one\n");
		exit(2);
	}
	if (o.pages < 1 || o.threads < 1 || o.threads > MAX_THREADS) {
		fprintf(stderr, "postcopy: need --pages >= 1 and 1 <= --threads <= %d\n", MAX_THREADS);
		exit(2);
	}
}

static pid_t fork_child(void)
{
	pid_t pid = fork();

	if (pid < 0)
		die("fork");
	if (pid == 0)
		prctl(PR_SET_PDEATHSIG, SIGTERM);
	return pid;
}

/*
 * --clone-handler: a child copied by the clone system call itself, as some runtimes make them.
 * libc's fork() bookkeeping and pthread_atfork handlers do not run; the child uses only what
 * the --fork-handler child uses, with no other thread of this program running at that point
 * (the workload threads start later).
 */
static pid_t clone_child(void)
{
	pid_t pid = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);

	if (pid < 0)
		die("clone");
	if (pid == 0)
		prctl(PR_SET_PDEATHSIG, SIGTERM);
	return pid;
}

/* --scm: the handler process receives the userfaultfd, serves until the workload says done. */
static void scm_handler_main(int ctl, int sock)
{
	int uffd = recv_fd(ctl);

	if (uffd < 0)
		die("handler: receive the userfaultfd");
	handler_init(uffd, sock, ctl, (char *)region);
	handler_loop();
	print_handler_summary();
	exit(0);
}

/*
 * --fork-handler, --clone-handler: the handler process already holds the userfaultfd
 * (inherited over fork or clone).
 */
static pid_t fork_handler(int uffd, int sock, int ctl[2])
{
	pid_t pid;

	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) < 0)
		die("socketpair");
	pid = o.fork_handler == 2 ? clone_child() : fork_child();
	if (pid == 0) {
		close(ctl[0]);
		handler_init(uffd, sock, ctl[1], region);
		handler_loop();
		print_handler_summary();
		exit(0);
	}
	close(ctl[1]);
	close(sock);
	close(uffd);
	return pid;
}

int main(int argc, char **argv)
{
	pthread_t th[MAX_THREADS], hth, wd;
	int src[2], ctl[2] = { -1, -1 }, uffd, status, rc;
	pid_t source, handler = -1;
	uint64_t run_ns;

	parse(argc, argv);
	setvbuf(stdout, NULL, _IOLBF, 0);
	region = mmap(NULL, (size_t)o.pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED)
		die("mmap");
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, src) < 0)
		die("socketpair");
	source = fork_child();
	if (source == 0) {
		close(src[0]);
		source_main(src[1]);
	}
	close(src[1]);
	if (o.scm) {
		/* The handler exists before the userfaultfd does: it can only get it by SCM_RIGHTS. */
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ctl) < 0)
			die("socketpair");
		handler = fork_child();
		if (handler == 0) {
			close(ctl[0]);
			scm_handler_main(ctl[1], src[0]);
		}
		close(ctl[1]);
		close(src[0]);
	}
	uffd = make_uffd();
	register_region(uffd);
	printf("postcopy: region %p pages %ld threads %d%s\n", (void *)region, o.pages, o.threads,
	       o.scm ? " scm" : o.fork_handler == 2 ? " clone-handler" : o.fork_handler ? " fork-handler" : "");
	if (o.fork_handler) {
		handler = fork_handler(uffd, src[0], ctl);
	} else if (o.scm) {
		if (send_fd(ctl[0], uffd) < 0)
			die("send the userfaultfd");
		close(uffd);
	} else {
		int stop = eventfd(0, EFD_CLOEXEC);

		if (stop < 0)
			die("eventfd");
		handler_init(uffd, src[0], stop, region);
		if (pthread_create(&hth, NULL, handler_thread, NULL))
			die("pthread_create");
	}
	if (o.watchdog > 0 && pthread_create(&wd, NULL, watchdog, NULL))
		die("pthread_create");
	run_ns = now_ns();
	for (long t = 0; t < o.threads; t++) {
		if (pthread_create(&th[t], NULL, worker, (void *)t))
			die("pthread_create");
	}
	for (long t = 0; t < o.threads; t++)
		pthread_join(th[t], NULL);
	run_ns = now_ns() - run_ns;
	fprintf(stderr, "postcopy: workload ran %.3f ms (%.0f pages/s)\n", (double)run_ns / 1e6,
		(double)o.pages * 1e9 / (double)run_ns);
	rc = check_all();
	if (o.scm || o.fork_handler) {
		shutdown(ctl[0], SHUT_WR);
		if (waitpid(handler, &status, 0) == handler && !(WIFEXITED(status) && WEXITSTATUS(status) == 0)) {
			fprintf(stderr, "postcopy: handler ended with status 0x%x\n", status);
			rc = 1;
		}
	} else {
		uint64_t one = 1;

		if (write(H.stop, &one, sizeof(one)) != sizeof(one))
			die("eventfd write");
		pthread_join(hth, NULL);
		print_handler_summary();
		close(src[0]);
	}
	waitpid(source, &status, 0);
	return rc;
}
