// SPDX-License-Identifier: MIT
/*
 * minhandler: the baseline for bench/faults.bench.ts. The same workload as demo/touch
 * (write one byte to each page of a fresh anonymous region, in order) with a minimal
 * userfaultfd handler in a second process: poll, read a batch of messages, UFFDIO_COPY a
 * zeroed page (UFFDIO_ZEROPAGE for reads), nothing else. It is what an external page server
 * costs at the least, so (helper)/(minhandler) is the debugger's own overhead.
 *
 *   minhandler --pages N [--read]      prints "touch_ns N" to stderr like touch --time
 *   minhandler --pages N --wp           the pages are populated first and write-protected; each
 *                                       timed write is a wp fault, un-protected by the handler
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL

static char zeros[PAGE] __attribute__((aligned(4096)));

static int handle(int uffd)
{
	struct uffd_msg msgs[64];
	struct pollfd pfd = { .fd = uffd, .events = POLLIN };

	for (;;) {
		ssize_t n;
		int i;

		if (poll(&pfd, 1, -1) < 0) {
			if (errno == EINTR)
				continue;
			fprintf(stderr, "minhandler: poll: %s\n", strerror(errno));
			return -1;
		}
		if (pfd.revents & (POLLERR | POLLHUP))
			return 0;
		n = read(uffd, msgs, sizeof(msgs));
		if (n < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			fprintf(stderr, "minhandler: read uffd %d: %s\n", uffd, strerror(errno));
			return -1;
		}
		for (i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++) {
			unsigned long page = msgs[i].arg.pagefault.address & ~(PAGE - 1);

			if (msgs[i].event != UFFD_EVENT_PAGEFAULT)
				continue;
			if (msgs[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
				struct uffdio_writeprotect w = { .range = { .start = page, .len = PAGE } };

				if (ioctl(uffd, UFFDIO_WRITEPROTECT, &w))
					fprintf(stderr, "minhandler: UFFDIO_WRITEPROTECT %#lx: %s\n", page, strerror(errno));
			} else if (msgs[i].arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WRITE) {
				struct uffdio_copy c = { .dst = page, .src = (unsigned long)zeros, .len = PAGE };

				if (ioctl(uffd, UFFDIO_COPY, &c) && errno != EEXIST)
					fprintf(stderr, "minhandler: UFFDIO_COPY %#lx: %s\n", page, strerror(errno));
			} else {
				struct uffdio_zeropage z = { .range = { .start = page, .len = PAGE } };

				if (ioctl(uffd, UFFDIO_ZEROPAGE, &z) && errno != EEXIST)
					fprintf(stderr, "minhandler: UFFDIO_ZEROPAGE %#lx: %s\n", page, strerror(errno));
			}
		}
	}
}

int main(int argc, char **argv)
{
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_THREAD_ID };
	struct uffdio_register reg = { .mode = UFFDIO_REGISTER_MODE_MISSING };
	unsigned long npages = 65536, i;
	struct timespec t0, t1;
	int do_read = 0, do_wp = 0, uffd, status;
	volatile char sink;
	char *region;
	pid_t child;

	for (i = 1; i < (unsigned long)argc; i++) {
		if (!strcmp(argv[i], "--read"))
			do_read = 1;
		else if (!strcmp(argv[i], "--wp"))
			do_wp = 1;
		else if (!strcmp(argv[i], "--pages") && i + 1 < (unsigned long)argc)
			npages = strtoul(argv[++i], NULL, 0);
		else {
			fprintf(stderr, "usage: minhandler [--pages N] [--read | --wp]\n");
			return 2;
		}
	}
	region = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED) {
		fprintf(stderr, "minhandler: mmap: %s\n", strerror(errno));
		return 1;
	}
	uffd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (uffd < 0) {
		fprintf(stderr, "minhandler: userfaultfd: %s\n", strerror(errno));
		return 1;
	}
	reg.range.start = (unsigned long)region;
	reg.range.len = npages * PAGE;
	if (do_wp) {
		struct uffdio_writeprotect w = { .range = reg.range, .mode = UFFDIO_WRITEPROTECT_MODE_WP };

		for (i = 0; i < npages; i++)
			region[i * PAGE] = 0;
		reg.mode = UFFDIO_REGISTER_MODE_WP;
		if (ioctl(uffd, UFFDIO_API, &api) || ioctl(uffd, UFFDIO_REGISTER, &reg) ||
		    ioctl(uffd, UFFDIO_WRITEPROTECT, &w)) {
			fprintf(stderr, "minhandler: UFFDIO_API/REGISTER/WRITEPROTECT on %d: %s\n", uffd,
				strerror(errno));
			return 1;
		}
	} else if (ioctl(uffd, UFFDIO_API, &api) || ioctl(uffd, UFFDIO_REGISTER, &reg)) {
		fprintf(stderr, "minhandler: UFFDIO_API/REGISTER on %d: %s\n", uffd, strerror(errno));
		return 1;
	}
	/* The handler is another process, as the debugger's helper is; the userfaultfd keeps
	 * referring to this process's memory. */
	child = fork();
	if (child < 0) {
		fprintf(stderr, "minhandler: fork: %s\n", strerror(errno));
		return 1;
	}
	if (child == 0)
		_exit(handle(uffd) ? 1 : 0);

	clock_gettime(CLOCK_MONOTONIC, &t0);
	for (i = 0; i < npages; i++) {
		if (do_read)
			sink = region[i * PAGE];
		else
			region[i * PAGE] = (i & 0xff) | 1;
	}
	clock_gettime(CLOCK_MONOTONIC, &t1);
	(void)sink;
	fprintf(stderr, "touch_ns %lld\n", (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL +
		(t1.tv_nsec - t0.tv_nsec));
	kill(child, SIGKILL);
	waitpid(child, &status, 0);
	return 0;
}
