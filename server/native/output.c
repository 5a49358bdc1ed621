#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

#include "b64.h"
#include "log.h"
#include "output.h"
#include "session.h"

#define CHUNK 49152		/* base64: 64 KiB per event line */
#define MAX_PER_READY (4 * CHUNK)	/* per pipe and loop iteration: requests get their turn */
#define MAX_DRAIN (8 << 20)	/* a program that floods its output cannot stall the helper */

static int pipes[OUT_NR] = { -1, -1 };
static const char *const stream_names_out[OUT_NR] = { "stdout", "stderr" };

void output_set(int out_fd, int err_fd)
{
	int fds[OUT_NR] = { out_fd, err_fd }, i;

	for (i = 0; i < OUT_NR; i++) {
		if (pipes[i] >= 0)
			close(pipes[i]);
		pipes[i] = fds[i];
		if (fds[i] >= 0 && fcntl(fds[i], F_SETFL, O_NONBLOCK))
			pr_perror("output: cannot make the %s pipe (fd %d) non-blocking",
				  stream_names_out[i], fds[i]);
	}
}

/* Reads up to max bytes; returns -1 at EOF or error (pipe closed), 0 otherwise. */
static int pump(int i, size_t max)
{
	static unsigned char buf[CHUNK];
	size_t total = 0;

	while (pipes[i] >= 0 && total < max) {
		ssize_t n = read(pipes[i], buf, sizeof(buf));

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return 0;
			pr_perror("output: read from the program's %s pipe (fd %d)",
				  stream_names_out[i], pipes[i]);
		}
		if (n <= 0) {
			close(pipes[i]);
			pipes[i] = -1;
			return -1;
		}
		/* Wire format: {"type":"event","event":"output","stream":"stdout","data":"<base64>"} */
		ev_begin("output");
		jb_puts(&out, ",\"stream\":\"");
		jb_puts(&out, stream_names_out[i]);
		jb_puts(&out, "\",\"data\":");
		b64_json(&out, buf, n);
		ev_end();
		total += n;
	}
	return 0;
}

void output_pollfds(struct pollfd *pfd, int *n, int idx[OUT_NR])
{
	int i;

	for (i = 0; i < OUT_NR; i++) {
		idx[i] = -1;
		if (pipes[i] < 0)
			continue;
		idx[i] = *n;
		pfd[(*n)++] = (struct pollfd){ .fd = pipes[i], .events = POLLIN };
	}
}

void output_ready(const struct pollfd *pfd, const int idx[OUT_NR])
{
	int i;

	for (i = 0; i < OUT_NR; i++)
		if (idx[i] >= 0 && pfd[idx[i]].revents && pfd[idx[i]].fd == pipes[i])
			pump(i, MAX_PER_READY);
}

void output_drain(void)
{
	int i;

	for (i = 0; i < OUT_NR; i++)
		pump(i, MAX_DRAIN);
}

void output_close(void)
{
	output_set(-1, -1);
}
