/*
 * remove: a debuggee for event filters. Maps N private anonymous pages, writes each, drops
 * pages [2,6) with madvise(MADV_DONTNEED) (a userfaultfd `remove` event), waits M ms so the
 * debugger has acted on the event before anything faults again, then reads every page (the
 * dropped ones fault again, as missing reads) and prints the sum of all bytes.
 *
 *   remove [--pages N] [--wait-ms M]
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PAGE 4096UL

int main(int argc, char **argv)
{
	size_t npages = 8, i;
	long wait_ms = 300;
	unsigned char *region;
	uint64_t sum = 0;
	struct timespec ts;
	int a;

	for (a = 1; a + 1 < argc; a += 2) {
		if (!strcmp(argv[a], "--pages"))
			npages = strtoul(argv[a + 1], NULL, 0);
		else if (!strcmp(argv[a], "--wait-ms"))
			wait_ms = strtol(argv[a + 1], NULL, 0);
	}
	if (npages < 6 || wait_ms < 0) {
		fprintf(stderr, "usage: remove [--pages N (6 or more)] [--wait-ms M]\n");
		return 2;
	}
	region = mmap(NULL, npages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (region == MAP_FAILED) {
		perror("remove: mmap");
		return 1;
	}
	for (i = 0; i < npages; i++)
		region[i * PAGE] = 0x11 + i;
	if (madvise(region + 2 * PAGE, 4 * PAGE, MADV_DONTNEED)) {
		perror("remove: madvise");
		return 1;
	}
	ts.tv_sec = wait_ms / 1000;
	ts.tv_nsec = (wait_ms % 1000) * 1000000L;
	nanosleep(&ts, NULL);
	for (i = 0; i < npages; i++)
		sum += region[i * PAGE];	/* TOUCH */
	printf("removed %p %p checksum %llx\n", (void *)(region + 2 * PAGE), (void *)(region + 6 * PAGE),
	       (unsigned long long)sum);
	return 0;
}
