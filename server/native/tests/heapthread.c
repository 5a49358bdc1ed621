/* Selftest debuggee: heap growth through brk (many small mallocs) and a pthread stack. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void *worker(void *arg)
{
	volatile char buf[64 * 1024];	/* deep enough to fault several stack pages */

	memset((char *)buf, 1, sizeof(buf));
	printf("stack %p\n", (void *)buf);
	return arg;
}

int main(void)
{
	char *first = NULL, *p = NULL;
	pthread_t th;
	int i;

	for (i = 0; i < 4096; i++) {	/* 4096 x 1000 bytes: ~4 MB of brk heap */
		p = malloc(1000);
		memset(p, i, 1000);
		if (!first)
			first = p;
	}
	printf("heap %p %p sbrk %p\n", (void *)first, (void *)p, sbrk(0));
	fflush(stdout);
	if (pthread_create(&th, NULL, worker, NULL) || pthread_join(th, NULL))
		return 1;
	return 0;
}
