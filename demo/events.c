/*
 * events: a debuggee for the userfaultfd non-cooperative events (munmap, madvise, mremap,
 * fork). Maps N private anonymous pages (registered by the debugger at mmap), prints
 *   ready 0x<addr> pages <N>
 * waits for SIGUSR1 (unless --no-wait), writes every page (page i with 0x11+i), then:
 *
 *   events --mode unmap   munmaps pages [2,5), prints `unmapped 0x<start> 0x<end>`, sums
 *                         the pages left.
 *   events --mode remove  madvise(MADV_DONTNEED) on pages [2,6) (they read as zeros again),
 *                         prints `removed 0x<start> 0x<end>`, reads every page.
 *   events --mode remap   mremap of the N pages to 2N (it must move: a page right after them
 *                         is kept mapped), prints `moved 0x<from> 0x<to>`, writes pages
 *                         [N,2N) of the new mapping with 0x31+i, sums all 2N.
 *   events --mode fork    forks after writing pages [0,N/2) only; the child prints
 *                         `child <pid> ready`, waits for SIGUSR1 (unless --no-wait), writes
 *                         pages [N/2,N) with 0x61+i, prints `child checksum <sum>` and exits;
 *                         the parent waits for it, then reads every page.
 *   events --mode unmap-held  after the first SIGUSR1 a thread reads page 3 (the debugger may
 *                         hold that fault); after a second SIGUSR1 the main thread munmaps
 *                         pages [2,5): the thread, woken, gets SIGSEGV and prints `segv`
 *                         (or `read ok` when it was quicker); the rest as for unmap.
 *   events --mode sysread  read(2) from a pipe into page 3, never touched: prints `sysread 16 ok`
 *                         (the kernel waits for the debugger to fill the page), or
 *                         `sysread -1 EFAULT` (a UFFD_USER_MODE_ONLY userfaultfd: no waiting).
 *   events --mode dirty --sets "1,3;2"  writes every page before `ready` (populated); then
 *                         per set: waits for SIGUSR1, writes those pages with 0x71+i, prints
 *                         `wrote <k>`; then waits once more before the checksum.
 * Last line: `checksum <sum of the bytes of every page still mapped>`. The output is the same
 * with and without a debugger (addresses and pids aside).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#define PAGE 4096UL

static size_t npages = 8;
static int no_wait;
static sigset_t usr1;
static unsigned char *region;
static volatile unsigned char sink;
static sigjmp_buf reader_jb;

static void on_segv(int sig)
{
	(void)sig;
	siglongjmp(reader_jb, 1);	/* only the reader thread touches unmapped memory */
}

static void *reader(void *arg)
{
	(void)arg;
	if (sigsetjmp(reader_jb, 1)) {
		printf("segv\n");
		return NULL;
	}
	sink = region[3 * PAGE];	/* MARK held read */
	printf("read ok\n");
	return NULL;
}

static void wait_go(void)
{
	int sig;

	if (!no_wait)
		sigwait(&usr1, &sig);
}

static uint64_t sum_pages(const unsigned char *p, size_t n)
{
	uint64_t s = 0;
	size_t i;

	for (i = 0; i < n * PAGE; i++)
		s += p[i];	/* TOUCH read */
	return s;
}

static void fill(unsigned char *p, size_t from, size_t to, int base)
{
	size_t i;

	for (i = from; i < to; i++)
		memset(p + i * PAGE, (base + (int)i) & 0xff, PAGE);	/* TOUCH write */
}

int main(int argc, char **argv)
{
	const char *mode = "unmap", *sets = "";
	unsigned char *moved;
	uint64_t sum = 0;
	int i;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--mode") && i + 1 < argc)
			mode = argv[++i];
		else if (!strcmp(argv[i], "--pages") && i + 1 < argc)
			npages = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--sets") && i + 1 < argc)
			sets = argv[++i];
		else if (!strcmp(argv[i], "--no-wait"))
			no_wait = 1;
		else {
			fprintf(stderr, "usage: events --mode unmap|remove|remap|fork|sysread|dirty [--pages N] "
				"[--no-wait]\n");
			return 2;
		}
	}
	if (npages < 8)
		npages = 8;
	sigemptyset(&usr1);
	sigaddset(&usr1, SIGUSR1);
	sigprocmask(SIG_BLOCK, &usr1, NULL);

	/* one page more, kept mapped after the N: mremap to 2N must move */
	region = mmap(NULL, (npages + 1) * PAGE, PROT_READ | PROT_WRITE,
		      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);	/* MARK mmap */
	if (region == MAP_FAILED) {
		perror("mmap");
		return 1;
	}
	if (!strcmp(mode, "dirty"))
		fill(region, 0, npages, 0x11);	/* populated before the debugger protects */
	printf("ready %p pages %zu\n", (void *)region, npages);
	fflush(stdout);
	if (!strcmp(mode, "dirty")) {
		const char *p = sets;
		int k = 0;

		for (;;) {
			wait_go();
			while (*p && *p != ';') {
				size_t pg = strtoul(p, (char **)&p, 10);

				if (pg < npages)
					fill(region, pg, pg + 1, 0x71);	/* MARK dirty write */
				if (*p == ',')
					p++;
			}
			printf("wrote %d\n", k++);
			fflush(stdout);
			if (!*p)
				break;
			p++;
		}
		wait_go();
		printf("checksum %llu\n", (unsigned long long)sum_pages(region, npages));
		return 0;
	}
	wait_go();

	if (!strcmp(mode, "sysread")) {
		int p[2];
		ssize_t n;

		if (pipe(p) || write(p[1], "0123456789abcdef", 16) != 16) {
			perror("pipe");
			return 1;
		}
		n = read(p[0], region + 3 * PAGE, 16);	/* MARK sysread */
		printf("sysread %zd %s\n", n, n < 0 ? (errno == EFAULT ? "EFAULT" : strerror(errno)) : "ok");
		fflush(stdout);
		fill(region, 0, npages, 0x11);
		sum = sum_pages(region, npages);
	} else if (!strcmp(mode, "unmap-held")) {
		struct sigaction sa = { .sa_handler = on_segv };
		pthread_t th;

		fill(region, 0, 2, 0x11);
		fill(region, 5, npages, 0x11);
		sigaction(SIGSEGV, &sa, NULL);
		pthread_create(&th, NULL, reader, NULL);
		wait_go();
		munmap(region + 2 * PAGE, 3 * PAGE);	/* MARK unmap held */
		pthread_join(th, NULL);
		sum = sum_pages(region, 2) + sum_pages(region + 5 * PAGE, npages - 5);
	} else if (!strcmp(mode, "unmap")) {
		fill(region, 0, npages, 0x11);
		munmap(region + 2 * PAGE, 3 * PAGE);	/* MARK unmap */
		printf("unmapped %p %p\n", (void *)(region + 2 * PAGE), (void *)(region + 5 * PAGE));
		sum = sum_pages(region, 2) + sum_pages(region + 5 * PAGE, npages - 5);
	} else if (!strcmp(mode, "remove")) {
		fill(region, 0, npages, 0x11);
		madvise(region + 2 * PAGE, 4 * PAGE, MADV_DONTNEED);	/* MARK remove */
		printf("removed %p %p\n", (void *)(region + 2 * PAGE), (void *)(region + 6 * PAGE));
		sum = sum_pages(region, npages);	/* pages 2..5 fault again */
	} else if (!strcmp(mode, "remap")) {
		fill(region, 0, npages, 0x11);
		moved = mremap(region, npages * PAGE, 2 * npages * PAGE, MREMAP_MAYMOVE);	/* MARK remap */
		if (moved == MAP_FAILED) {
			perror("mremap");
			return 1;
		}
		printf("moved %p %p\n", (void *)region, (void *)moved);
		fill(moved, npages, 2 * npages, 0x31);	/* MARK after remap */
		sum = sum_pages(moved, 2 * npages) + sum_pages(region + npages * PAGE, 1);
	} else if (!strcmp(mode, "fork")) {
		pid_t child;
		int st;

		fill(region, 0, npages / 2, 0x11);
		fflush(stdout);
		child = fork();	/* MARK fork */
		if (child < 0) {
			perror("fork");
			return 1;
		}
		if (child == 0) {
			printf("child %d ready\n", (int)getpid());
			fflush(stdout);
			wait_go();
			fill(region, npages / 2, npages, 0x61);	/* MARK child touch */
			printf("child checksum %llu\n",
			       (unsigned long long)sum_pages(region, npages + 1));
			fflush(stdout);
			_exit(0);
		}
		while (waitpid(child, &st, 0) < 0)
			;
		if (!WIFEXITED(st) || WEXITSTATUS(st)) {
			printf("child failed (status 0x%x)\n", st);
			return 1;
		}
		sum = sum_pages(region, npages + 1);
	} else {
		fprintf(stderr, "unknown mode '%s'\n", mode);
		return 2;
	}
	printf("checksum %llu\n", (unsigned long long)sum);
	return 0;
}
