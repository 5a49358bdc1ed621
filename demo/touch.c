/*
 * touch: a debuggee for uffd-debug. Maps an anonymous region, prints where it is, touches
 * every page exactly once in a chosen order from one or more threads, prints a checksum.
 *
 *   touch [--pages N] [--pattern seq|random|stride:K] [--threads T] [--read] [--sleep-ms M]
 *         [--populate] [--time]
 *
 * --populate: write every page once first (printing "populated"), before the sleep and the
 * timed touches: then the touches are write-protect faults if someone protected the region.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096UL

static unsigned char *region;
static size_t *order;
static size_t npages = 256;
static int do_read;
static volatile unsigned char sink;

struct share {
	pthread_t th;
	size_t from, to;	/* indexes into order[] */
};

static void *toucher(void *arg)
{
	struct share *s = arg;
	size_t i;

	for (i = s->from; i < s->to; i++) {
		size_t p = order[i];

		if (do_read)
			sink = region[p * PAGE];	/* TOUCH */
		else
			region[p * PAGE] = (p & 0xff) | 1;	/* TOUCH */
	}
	return NULL;
}

static int make_order(const char *pattern)
{
	size_t i, k = 0, n = 0;

	order = malloc(npages * sizeof(*order));
	if (!order)
		return -1;
	if (!strcmp(pattern, "seq")) {
		for (i = 0; i < npages; i++)
			order[i] = i;
	} else if (!strcmp(pattern, "random")) {
		uint64_t x = 0x9e3779b97f4a7c15ULL;	/* fixed seed: reproducible runs */

		for (i = 0; i < npages; i++)
			order[i] = i;
		for (i = npages; i > 1; i--) {
			size_t j;

			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			j = x % i;
			k = order[i - 1];
			order[i - 1] = order[j];
			order[j] = k;
		}
	} else if (!strncmp(pattern, "stride:", 7) && (k = strtoul(pattern + 7, NULL, 0)) > 0) {
		size_t start, p;

		for (start = 0; start < k && start < npages; start++)
			for (p = start; p < npages; p += k)
				order[n++] = p;
	} else {
		fprintf(stderr, "touch: unknown pattern '%s' (seq, random, stride:K)\n", pattern);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	const char *pattern = "seq";
	long threads = 1, sleep_ms = 0;
	int timed = 0, populate = 0;
	struct timespec t0, t1;
	struct share *shares;
	uint64_t sum = 0;
	size_t i;
	long t;

	for (i = 1; i < (size_t)argc; i++) {
		const char *a = argv[i], *v = i + 1 < (size_t)argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--read")) {
			do_read = 1;
			continue;
		}
		if (!strcmp(a, "--time")) {
			timed = 1;
			continue;
		}
		if (!strcmp(a, "--populate")) {
			populate = 1;
			continue;
		}
		if (!v) {
			fprintf(stderr, "touch: %s needs a value\n", a);
			return 2;
		}
		if (!strcmp(a, "--pages"))
			npages = strtoul(v, NULL, 0);
		else if (!strcmp(a, "--pattern"))
			pattern = v;
		else if (!strcmp(a, "--threads"))
			threads = strtol(v, NULL, 0);
		else if (!strcmp(a, "--sleep-ms"))
			sleep_ms = strtol(v, NULL, 0);
		else {
			fprintf(stderr, "usage: touch [--pages N] [--pattern seq|random|stride:K] "
				"[--threads T] [--read] [--sleep-ms M] [--populate] [--time]\n");
			return 2;
		}
		i++;
	}
	if (npages == 0 || threads < 1 || threads > 1024 || make_order(pattern))
		return 2;

	region = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		      -1, 0);
	if (region == MAP_FAILED) {
		perror("touch: mmap");
		return 1;
	}
	printf("region %p pages %zu\n", (void *)region, npages);
	fflush(stdout);
	if (populate) {
		for (i = 0; i < npages; i++)
			region[i * PAGE] = 0;
		printf("populated\n");
		fflush(stdout);
	}
	if (sleep_ms > 0) {
		struct timespec ts = { sleep_ms / 1000, (sleep_ms % 1000) * 1000000L };

		nanosleep(&ts, NULL);
	}

	clock_gettime(CLOCK_MONOTONIC, &t0);
	shares = calloc(threads, sizeof(*shares));
	if (!shares)
		return 1;
	for (t = 0; t < threads; t++) {
		shares[t].from = npages * t / threads;
		shares[t].to = npages * (t + 1) / threads;
		if (threads > 1 && pthread_create(&shares[t].th, NULL, toucher, &shares[t])) {
			perror("touch: pthread_create");
			return 1;
		}
	}
	if (threads == 1)
		toucher(&shares[0]);
	else
		for (t = 0; t < threads; t++)
			pthread_join(shares[t].th, NULL);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	/* Benchmarks read the touching time only, without start-up and exit. */
	if (timed)
		fprintf(stderr, "touch_ns %lld\n", (long long)(t1.tv_sec - t0.tv_sec) * 1000000000LL +
			(t1.tv_nsec - t0.tv_nsec));

	for (i = 0; i < npages * PAGE; i++)
		sum += region[i];
	printf("checksum %llx touched %zu\n", (unsigned long long)sum, npages);
	return 0;
}
