/* UFFDIO_MOVE issued from inside the program (the kernel refuses moves from another mm). */
#ifndef UFFD_HELPER_MOVE_H
#define UFFD_HELPER_MOVE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Moves [src, src+len) of the program to dst (registered, missing) with the program's own
 * userfaultfd, issued by one of its threads (tid preferred in a launched program). 0, or -1
 * with errno: the ioctl's (EEXIST, ENOENT, EBUSY, EINVAL...) and why set when the move
 * could not be issued at all.
 */
int move_in_program(uint64_t dst, uint64_t src, uint64_t len, int dontwake, pid_t tid,
		    char *why, size_t wl);

#endif
