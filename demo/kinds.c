/*
 * kinds: a debuggee for every userfaultfd fault kind. Maps memory of one kind, prints
 *   ready 0x<addr> pages <N> psize <bytes>
 * waits for SIGUSR1 (so the debugger can register, protect or set a policy), touches every
 * page, then prints one line per page and a total, from the content it reads back:
 *   page <i> sum <sum of its bytes> first <its first byte>
 *   checksum <sum of all pages>
 *
 *   kinds --mode anon-missing|anon-wp|memfd-missing|memfd-minor|hugetlb-missing|memfd-wp|
 *                memfd-populated|hugetlb-populated
 *         [--pages N] [--threads T] [--same-page] [--write] [--prefill K] [--no-wait]
 *
 * anon-missing   private anonymous pages (registered by the debugger at mmap); pages
 *                [0,K) are written first with 0x40+i (--prefill K), the rest touched after
 *                the signal (read, or written with 0x80+i with --write).
 * anon-wp        pages filled with 0x10+i before `ready`; after the signal each page is
 *                overwritten with 0x80+i (write-protect faults once protected).
 * memfd-missing  a MAP_SHARED memfd mapping, touched after the signal.
 * memfd-minor    a memfd filled with 0x20+i through one mapping; a second MAP_SHARED mapping
 *                (MADV_DONTNEED'd) is announced and read after the signal: minor faults.
 * hugetlb-missing  MAP_PRIVATE|MAP_HUGETLB anonymous huge pages (vm.nr_hugepages > 0).
 * memfd-wp       a MAP_SHARED memfd mapping filled with 0x10+i before `ready`; after the
 *                signal each page is overwritten with 0x80+i (shmem write-protect faults).
 * memfd-populated  a MAP_SHARED memfd mapping filled with 0x20+i (mapped and in the page
 *                cache), read after the signal: minor faults once the debugger zaps it.
 * hugetlb-populated  the same with a MFD_HUGETLB memfd: 2 MiB pages (vm.nr_hugepages > 0).
 * --threads T touches the pages from T threads; --same-page makes them all touch page K
 * (the first one not prefilled) at once. A SIGBUS (poisoned page) prints `sigbus 0x<addr>`
 * and exits with status 3.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define PAGE 4096UL

static unsigned char *region;
static size_t npages = 8, psize = PAGE, prefill, nthreads = 1;
static int do_write, same_page;
static volatile unsigned char sink;
static pthread_barrier_t start_line;

struct worker {
	pthread_t th;
	size_t index;
};

static void touch_page(size_t i)
{
	if (do_write)
		memset(region + i * psize, (int)((0x80 + i) & 0xff), psize);	/* TOUCH write */
	else
		sink = region[i * psize];	/* TOUCH read */
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	size_t i;

	pthread_barrier_wait(&start_line);
	if (same_page) {
		touch_page(prefill);
		return NULL;
	}
	for (i = prefill + w->index; i < npages; i += nthreads)
		touch_page(i);
	return NULL;
}

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	char line[64];
	int n;

	(void)sig;
	(void)uc;
	n = snprintf(line, sizeof(line), "sigbus %p\n", si->si_addr);
	if (write(STDOUT_FILENO, line, n) < 0)
		_exit(4);
	_exit(3);
}

static void wait_go(int wait)
{
	sigset_t set;
	siginfo_t si;

	if (!wait)
		return;
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	while (sigwaitinfo(&set, &si) < 0)
		;
}

static void report(void)
{
	unsigned long long total = 0;
	size_t i, j;

	for (i = 0; i < npages; i++) {
		unsigned long long sum = 0;
		const unsigned char *p = region + i * psize;

		for (j = 0; j < psize; j++)
			sum += p[j];
		total += sum;
		printf("page %zu sum %llu first %u\n", i, sum, p[0]);
	}
	printf("checksum %llu\n", total);
}

static int run_threads(void)
{
	struct worker *w = calloc(nthreads, sizeof(*w));
	size_t i;

	if (!w)
		return -1;
	pthread_barrier_init(&start_line, NULL, nthreads);
	for (i = 0; i < nthreads; i++) {
		w[i].index = i;
		if (pthread_create(&w[i].th, NULL, worker_main, &w[i])) {
			perror("pthread_create");
			return -1;
		}
	}
	for (i = 0; i < nthreads; i++)
		pthread_join(w[i].th, NULL);
	free(w);
	return 0;
}

static void *map_memfd_flags(int *fd_out, unsigned flags)
{
	int fd = memfd_create("kinds", MFD_CLOEXEC | flags);
	void *p;

	if (fd < 0 || ftruncate(fd, npages * psize)) {
		perror("memfd");
		exit(2);
	}
	p = mmap(NULL, npages * psize, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	if (p == MAP_FAILED) {
		perror("mmap memfd");
		exit(2);
	}
	*fd_out = fd;
	return p;
}

static void *map_memfd(int *fd_out)
{
	return map_memfd_flags(fd_out, 0);
}

int main(int argc, char **argv)
{
	const char *mode = "anon-missing";
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };
	int wait = 1, i, fd;
	sigset_t set;
	size_t k;

	for (i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--mode") && i + 1 < argc)
			mode = argv[++i];
		else if (!strcmp(argv[i], "--pages") && i + 1 < argc)
			npages = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
			nthreads = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--prefill") && i + 1 < argc)
			prefill = strtoul(argv[++i], NULL, 0);
		else if (!strcmp(argv[i], "--same-page"))
			same_page = 1;
		else if (!strcmp(argv[i], "--write"))
			do_write = 1;
		else if (!strcmp(argv[i], "--no-wait"))
			wait = 0;
		else {
			fprintf(stderr, "usage: kinds --mode anon-missing|anon-wp|memfd-missing|"
				"memfd-minor|hugetlb-missing|memfd-wp|memfd-populated|hugetlb-populated [--pages N] [--threads T] [--same-page] "
				"[--write] [--prefill K] [--no-wait]\n");
			return 2;
		}
	}
	if (!npages || !nthreads || prefill >= npages) {
		fprintf(stderr, "kinds: need pages > prefill, threads > 0\n");
		return 2;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	sigaction(SIGBUS, &sa, NULL);
	/* SIGUSR1 stays blocked in every thread: sigwaitinfo takes it */
	sigemptyset(&set);
	sigaddset(&set, SIGUSR1);
	sigprocmask(SIG_BLOCK, &set, NULL);

	if (!strcmp(mode, "anon-missing") || !strcmp(mode, "anon-wp")) {
		region = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (region == MAP_FAILED) {
			perror("mmap");
			return 2;
		}
		if (!strcmp(mode, "anon-wp")) {
			for (k = 0; k < npages; k++)
				memset(region + k * PAGE, (int)(0x10 + k) & 0xff, PAGE);
			prefill = 0;
			do_write = 1;
		}
		for (k = 0; k < prefill; k++)
			memset(region + k * PAGE, (int)(0x40 + k) & 0xff, PAGE);
	} else if (!strcmp(mode, "memfd-missing")) {
		region = map_memfd(&fd);
		prefill = 0;
	} else if (!strcmp(mode, "memfd-minor")) {
		unsigned char *filler = map_memfd(&fd);

		for (k = 0; k < npages; k++)
			memset(filler + k * PAGE, (int)(0x20 + k) & 0xff, PAGE);
		region = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
		if (region == MAP_FAILED) {
			perror("mmap memfd again");
			return 2;
		}
		/* a fresh mapping has no page table entries; make sure of it */
		madvise(region, npages * PAGE, MADV_DONTNEED);
		prefill = 0;
	} else if (!strcmp(mode, "memfd-wp")) {
		region = map_memfd(&fd);
		for (k = 0; k < npages; k++)
			memset(region + k * PAGE, (int)(0x10 + k) & 0xff, PAGE);
		prefill = 0;
		do_write = 1;
	} else if (!strcmp(mode, "memfd-populated") || !strcmp(mode, "hugetlb-populated")) {
		if (mode[0] == 'h')
			psize = 2UL << 20;
		region = map_memfd_flags(&fd, mode[0] == 'h' ? MFD_HUGETLB : 0);
		for (k = 0; k < npages; k++)
			memset(region + k * psize, (int)(0x20 + k) & 0xff, psize);
		prefill = 0;
	} else if (!strcmp(mode, "hugetlb-missing")) {
		psize = 2UL << 20;
		region = mmap(NULL, npages * psize, PROT_READ | PROT_WRITE,
			      MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB, -1, 0);
		if (region == MAP_FAILED) {
			perror("mmap MAP_HUGETLB (is vm.nr_hugepages > 0?)");
			return 2;
		}
		prefill = 0;
	} else {
		fprintf(stderr, "kinds: unknown mode '%s'\n", mode);
		return 2;
	}
	printf("ready %p pages %zu psize %zu\n", (void *)region, npages, psize);
	wait_go(wait);
	if (run_threads())
		return 2;
	report();
	return 0;
}
