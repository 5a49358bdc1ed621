/* The launched program's stdout and stderr: pipes owned by the helper, forwarded as events. */
#ifndef UFFD_HELPER_OUTPUT_H
#define UFFD_HELPER_OUTPUT_H

#include <poll.h>

enum out_stream { OUT_STDOUT, OUT_STDERR, OUT_NR };

/* Takes the read ends (made O_NONBLOCK here); -1 for none. */
void output_set(int out_fd, int err_fd);
/* Adds the open pipes to pfd at *n; idx[stream] gets the slot or -1. */
void output_pollfds(struct pollfd *pfd, int *n, int idx[OUT_NR]);
/* Forwards what poll reported ready; a pipe at EOF is closed. */
void output_ready(const struct pollfd *pfd, const int idx[OUT_NR]);
/*
 * Reads both pipes until EAGAIN (or EOF), emitting `output` events. Called before a held
 * fault or `exited` is written so the program's earlier output precedes it.
 */
void output_drain(void);
void output_close(void);

#endif
