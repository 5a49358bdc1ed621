/*
 * spin: a long-running debuggee for attaching uffd-debug to a process that is already running.
 * Maps an anonymous region, then keeps touching it, one page per iteration, writing the
 * iteration counter into the page; every 50 iterations prints a checksum of what it wrote.
 *
 *   spin [--pages P] [--interval-ms M] [--threads T] [--block read|sleep] [--sleep-ms S]
 *        [--mmap-every N] [--iterations N] [--own-uffd]
 *
 * Output (one line each, flushed):
 *   pid N region 0x... pages P                     at start
 *   worker W tid N pages A-B                        each toucher's share [A, B) and thread
 *   W iter I checksum X                             every 50 iterations of toucher W
 *   mmap 0x... pages 64                             each --mmap-every range
 *   read N bytes: <text>  /  stdin closed            --block read (main thread)
 *   slept N ms                                       --block sleep (main thread)
 *
 * --own-uffd: the process registers its region with a userfaultfd of its own and serves the
 * faults itself (a thread resolving each with a zeroed page), like a program with its own
 * fault handler; a debugger cannot register that range too (EBUSY).
 *
 * The checksum of toucher W after iteration I (counting from 1) is the sum, over its pages,
 * of the last iteration that wrote each page: page k of a share of n pages holds the largest
 * i <= I with (i - 1) % n == k. A test can compute it from I and n alone.
 */
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <fcntl.h>
#include <poll.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define MMAP_PAGES 64

static unsigned char *region;
static size_t npages = 1024;
static long interval_ms = 10, mmap_every, iterations;
static pthread_mutex_t out_lock = PTHREAD_MUTEX_INITIALIZER;

struct toucher {
	pthread_t th;
	int id;
	size_t from, to;	/* pages of region */
};

static void say(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void say(const char *fmt, ...)
{
	va_list ap;

	pthread_mutex_lock(&out_lock);
	va_start(ap, fmt);
	vprintf(fmt, ap);
	va_end(ap);
	fflush(stdout);
	pthread_mutex_unlock(&out_lock);
}

static void sleep_ms(long ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) && errno == EINTR)
		;
}

/* Only pages already written: reading the others would fault them in (as zero pages). */
static uint64_t checksum(const struct toucher *t, uint64_t iter)
{
	size_t p, end = iter < t->to - t->from ? t->from + iter : t->to;
	uint64_t sum = 0;

	for (p = t->from; p < end; p++)
		sum += *(volatile uint64_t *)(region + p * PAGE);
	return sum;
}

static void *touch_loop(void *arg)
{
	struct toucher *t = arg;
	size_t n = t->to - t->from, mm_next = 0;
	unsigned char *mm = NULL;
	uint64_t i;

	say("worker %d tid %ld pages %zu-%zu\n", t->id, (long)syscall(SYS_gettid), t->from, t->to);
	for (i = 1; !iterations || i <= (uint64_t)iterations; i++) {
		size_t p = t->from + (i - 1) % n;

		*(volatile uint64_t *)(region + p * PAGE) = i;	/* TOUCH */
		if (mmap_every && t->id == 0 && i % mmap_every == 0) {
			mm = mmap(NULL, MMAP_PAGES * PAGE, PROT_READ | PROT_WRITE,
				  MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
			if (mm == MAP_FAILED) {
				perror("spin: mmap");
				exit(1);
			}
			mm_next = 0;
			say("mmap %p pages %d\n", (void *)mm, MMAP_PAGES);
		}
		if (mm && mm_next < MMAP_PAGES)
			*(volatile uint64_t *)(mm + mm_next++ * PAGE) = i;	/* TOUCH mmap */
		if (i % 50 == 0)
			say("%d iter %llu checksum %llx\n", t->id, (unsigned long long)i,
			    (unsigned long long)checksum(t, i));
		if (interval_ms)
			sleep_ms(interval_ms);
	}
	return NULL;
}

/* The process's own fault handler: every missing fault gets a zeroed page. */
static void *own_handler(void *arg)
{
	static char zeros[PAGE] __attribute__((aligned(4096)));
	int fd = (int)(long)arg;

	for (;;) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		struct uffd_msg m;

		if (poll(&p, 1, -1) < 0 || read(fd, &m, sizeof(m)) != sizeof(m))
			continue;
		if (m.event == UFFD_EVENT_PAGEFAULT) {
			struct uffdio_copy c = {
				.dst = m.arg.pagefault.address & ~(PAGE - 1),
				.src = (unsigned long)zeros, .len = PAGE,
			};

			if (ioctl(fd, UFFDIO_COPY, &c) && errno != EEXIST) {
				perror("spin: UFFDIO_COPY");
				exit(1);
			}
		}
	}
	return NULL;
}

static int own_uffd(void)
{
	struct uffdio_api api = { .api = UFFD_API };
	struct uffdio_register reg = {
		.range = { .start = (unsigned long)region, .len = npages * PAGE },
		.mode = UFFDIO_REGISTER_MODE_MISSING,
	};
	pthread_t th;
	int fd = syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);

	if (fd < 0 || ioctl(fd, UFFDIO_API, &api) || ioctl(fd, UFFDIO_REGISTER, &reg) ||
	    pthread_create(&th, NULL, own_handler, (void *)(long)fd)) {
		perror("spin: own userfaultfd");
		return -1;
	}
	return 0;
}

static void block_read(void)
{
	char buf[256];

	for (;;) {
		ssize_t n = read(0, buf, sizeof(buf) - 1);	/* BLOCK read */

		if (n < 0) {
			say("read failed: %s\n", strerror(errno));
			exit(1);
		}
		if (n == 0) {
			say("stdin closed\n");
			exit(0);
		}
		buf[n] = 0;
		buf[strcspn(buf, "\n")] = 0;
		say("read %zd bytes: %s\n", n, buf);
	}
}

static void block_sleep(long ms)
{
	for (;;) {
		struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L }, a, b;

		clock_gettime(CLOCK_MONOTONIC, &a);
		if (nanosleep(&ts, NULL)) {	/* BLOCK sleep */
			say("sleep interrupted: %s\n", strerror(errno));
			exit(1);
		}
		clock_gettime(CLOCK_MONOTONIC, &b);
		say("slept %lld ms\n", (long long)((b.tv_sec - a.tv_sec) * 1000 +
						  (b.tv_nsec - a.tv_nsec) / 1000000));
	}
}

int main(int argc, char **argv)
{
	const char *block = NULL;
	int own = 0;
	long threads = 0, block_sleep_ms = 1000, t;
	struct toucher *ts;
	int i;

	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--own-uffd")) {
			own = 1;
			continue;
		}
		if (!v) {
			fprintf(stderr, "spin: %s needs a value\n", a);
			return 2;
		}
		if (!strcmp(a, "--pages"))
			npages = strtoul(v, NULL, 0);
		else if (!strcmp(a, "--interval-ms"))
			interval_ms = strtol(v, NULL, 0);
		else if (!strcmp(a, "--threads"))
			threads = strtol(v, NULL, 0);
		else if (!strcmp(a, "--block"))
			block = v;
		else if (!strcmp(a, "--sleep-ms"))
			block_sleep_ms = strtol(v, NULL, 0);
		else if (!strcmp(a, "--mmap-every"))
			mmap_every = strtol(v, NULL, 0);
		else if (!strcmp(a, "--iterations"))
			iterations = strtol(v, NULL, 0);
		else {
			fprintf(stderr, "usage: spin [--pages P] [--interval-ms M] [--threads T] "
				"[--block read|sleep] [--sleep-ms S] [--mmap-every N] "
				"[--iterations N] [--own-uffd]\n");
			return 2;
		}
		i++;
	}
	if (block && strcmp(block, "read") && strcmp(block, "sleep")) {
		fprintf(stderr, "spin: --block read or --block sleep\n");
		return 2;
	}
	if (block && threads < 1)
		threads = 1;	/* someone has to keep touching while main blocks */
	if (npages == 0 || threads < 0 || threads > 256 || (threads && npages < (size_t)threads)) {
		fprintf(stderr, "spin: bad --pages/--threads\n");
		return 2;
	}
	region = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		      -1, 0);
	if (region == MAP_FAILED) {
		perror("spin: mmap");
		return 1;
	}
	if (own && own_uffd())
		return 1;
	say("pid %d region %p pages %zu\n", (int)getpid(), (void *)region, npages);
	if (!threads) {
		struct toucher one = { .id = 0, .from = 0, .to = npages };

		touch_loop(&one);
		return 0;
	}
	ts = calloc(threads, sizeof(*ts));
	if (!ts)
		return 1;
	for (t = 0; t < threads; t++) {
		ts[t].id = t;
		ts[t].from = npages * t / threads;
		ts[t].to = npages * (t + 1) / threads;
	}
	for (t = 0; t < threads; t++)
		if (pthread_create(&ts[t].th, NULL, touch_loop, &ts[t])) {
			perror("spin: pthread_create");
			return 1;
		}
	if (block && !strcmp(block, "read"))
		block_read();
	if (block)
		block_sleep(block_sleep_ms);
	for (t = 0; t < threads; t++)
		pthread_join(ts[t].th, NULL);
	return 0;
}
