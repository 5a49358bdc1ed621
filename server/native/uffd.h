/* userfaultfd: probing, feature names and the ioctls the helper issues. */
#ifndef UFFD_HELPER_UFFD_H
#define UFFD_HELPER_UFFD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/ioctl.h>
#include <linux/userfaultfd.h>

#include "json.h"

/* The installed uapi headers are 6.1; these came later. */
#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC		0xAA
#define USERFAULTFD_IOC_NEW	_IO(USERFAULTFD_IOC, 0x00)
#endif
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED	(1 << 13)
#endif
#ifndef UFFD_FEATURE_POISON
#define UFFD_FEATURE_POISON		(1 << 14)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC		(1 << 15)
#endif
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE		(1 << 16)
#endif
#ifndef _UFFDIO_MOVE
#define _UFFDIO_MOVE			(0x05)
#endif
#ifndef _UFFDIO_POISON
#define _UFFDIO_POISON			(0x08)
#endif

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

/* UFFDIO_API; *offered (may be NULL) gets what the kernel supports. */
int uffd_api(int fd, uint64_t features, uint64_t *offered, uint64_t *ioctls);
int uffd_register(int fd, uint64_t start, uint64_t end, uint64_t mode, uint64_t *ioctls);
/* Single-page resolutions; -1 with errno as the kernel set it. */
int uffd_copy_zeros(int fd, uint64_t page);
int uffd_zeropage(int fd, uint64_t page);
int uffd_wake(int fd, uint64_t page);

#define UFFD_PAGE_SIZE 4096UL

#endif
