/* userfaultfd: probing, feature names and the ioctls the helper issues. */
#ifndef UFFD_HELPER_UFFD_H
#define UFFD_HELPER_UFFD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <linux/userfaultfd.h>

#include "json.h"

#include "uffd-uapi.h"

struct uffd_probe {
	int available;
	const char *source;	/* "syscall", "dev" or NULL */
	uint64_t api;
	uint64_t features;	/* offered by UFFDIO_API */
	uint64_t ioctls;	/* API ioctls | range ioctls of an anonymous registration */
	char error[640];
};

/* Probes a throwaway userfaultfd of the helper's own. Always fills p; 0 when available. */
int uffd_probe(struct uffd_probe *p);

void uffd_features_json(struct jbuf *b, uint64_t features);
void uffd_ioctls_json(struct jbuf *b, uint64_t ioctls);

/*
 * What a launch or attach negotiates: every offered feature the helper handles, the
 * EVENT_REMAP/REMOVE/UNMAP events (read in the same batches as faults, never held),
 * EVENT_FORK only with followForks, WP_ASYNC only with wpAsync (it turns write-protect
 * faults into silent dirty tracking); never SIGBUS or EXACT_ADDRESS.
 */
uint64_t uffd_launch_features(uint64_t offered);
/* Parses the session options followForks and wpAsync of a launch/attach request; on a bad
 * value writes the error response for id and returns -1. */
int uffd_session_opts(int64_t id, const struct jval *req);
int uffd_follow_forks(void);
/* The user accepted UFFD_USER_MODE_ONLY as a last resort (session option userModeOnly). */
int uffd_user_mode_only(void);

/* UFFDIO_API; *offered (may be NULL) gets what the kernel supports. */
int uffd_api(int fd, uint64_t features, uint64_t *offered, uint64_t *ioctls);
int uffd_register(int fd, uint64_t start, uint64_t end, uint64_t mode, uint64_t *ioctls);
/* Single-page resolutions; -1 with errno as the kernel set it. */
int uffd_copy_zeros(int fd, uint64_t page);
int uffd_zeropage(int fd, uint64_t page);
int uffd_wake(int fd, uint64_t page);
int uffd_unregister(int fd, uint64_t start, uint64_t end);

/*
 * Range operations: -1 with errno as the kernel set it. dontwake: leave threads blocked on
 * the range asleep. uffd_copy reads len bytes at src (a helper buffer).
 */
/* wp: map the copy write-protected (UFFDIO_COPY_MODE_WP) */
int uffd_copy(int fd, uint64_t dst, const void *src, uint64_t len, int dontwake, int wp);
int uffd_zero(int fd, uint64_t dst, uint64_t len, int dontwake);
int uffd_continue(int fd, uint64_t dst, uint64_t len, int dontwake);
int uffd_writeprotect(int fd, uint64_t start, uint64_t len, int on, int dontwake);
/* src and dst are both addresses of the program (the userfaultfd's mm). */
int uffd_move(int fd, uint64_t dst, uint64_t src, uint64_t len, int dontwake);
int uffd_poison(int fd, uint64_t dst, uint64_t len, int dontwake);
int uffd_wake_range(int fd, uint64_t start, uint64_t len);
/* Names of the ioctls in a UFFDIO_REGISTER ioctls mask, as a JSON array. */
void uffd_ioctl_names_json(struct jbuf *b, uint64_t ioctls);

#define UFFD_PAGE_SIZE 4096UL

#endif
