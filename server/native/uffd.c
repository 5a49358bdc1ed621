#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "log.h"
#include "session.h"
#include "uffd.h"

static const char *const feature_names[] = {
	"PAGEFAULT_FLAG_WP", "EVENT_FORK", "EVENT_REMAP", "EVENT_REMOVE",
	"MISSING_HUGETLBFS", "MISSING_SHMEM", "EVENT_UNMAP", "SIGBUS", "THREAD_ID",
	"MINOR_HUGETLBFS", "MINOR_SHMEM", "EXACT_ADDRESS", "WP_HUGETLBFS_SHMEM",
	"WP_UNPOPULATED", "POISON", "WP_ASYNC", "MOVE",
};

static const char *ioctl_name(unsigned bit)
{
	switch (bit) {
	case _UFFDIO_REGISTER: return "UFFDIO_REGISTER";
	case _UFFDIO_UNREGISTER: return "UFFDIO_UNREGISTER";
	case _UFFDIO_WAKE: return "UFFDIO_WAKE";
	case _UFFDIO_COPY: return "UFFDIO_COPY";
	case _UFFDIO_ZEROPAGE: return "UFFDIO_ZEROPAGE";
	case _UFFDIO_MOVE: return "UFFDIO_MOVE";
	case _UFFDIO_WRITEPROTECT: return "UFFDIO_WRITEPROTECT";
	case _UFFDIO_CONTINUE: return "UFFDIO_CONTINUE";
	case _UFFDIO_POISON: return "UFFDIO_POISON";
	case _UFFDIO_API: return "UFFDIO_API";
	}
	return NULL;
}

/* Wire format: {"raw":"0x..","names":["NAME",...]}; unknown bits appear as "BIT<n>". */
static void flags_json(struct jbuf *b, uint64_t v, const char *(*name)(unsigned))
{
	unsigned i;
	int first = 1;

	jb_puts(b, "{\"raw\":");
	jb_hex(b, v);
	jb_puts(b, ",\"names\":[");
	for (i = 0; i < 64; i++) {
		const char *n;

		if (!(v & (1ULL << i)))
			continue;
		if (!first)
			jb_puts(b, ",");
		first = 0;
		n = name(i);
		if (n)
			jb_str(b, n);
		else
			jb_printf(b, "\"BIT%u\"", i);
	}
	jb_puts(b, "]}");
}

static const char *feature_name(unsigned bit)
{
	return bit < sizeof(feature_names) / sizeof(feature_names[0]) ? feature_names[bit] : NULL;
}

void uffd_features_json(struct jbuf *b, uint64_t features)
{
	flags_json(b, features, feature_name);
}

void uffd_ioctls_json(struct jbuf *b, uint64_t ioctls)
{
	flags_json(b, ioctls, ioctl_name);
}

/* Session options of launch/attach: followForks, wpAsync, userModeOnly. */
static int opt_follow_forks, opt_wp_async, opt_user_mode_only;

int uffd_session_opts(int64_t id, const struct jval *req)
{
	static const char *const names[] = { "followForks", "wpAsync", "userModeOnly" };
	int *const vals[] = { &opt_follow_forks, &opt_wp_async, &opt_user_mode_only };
	size_t i;

	for (i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const struct jval *v = json_get(req, names[i]);

		if (v && v->type != J_BOOL && v->type != J_NULL) {
			resp_err(id, "EPROTO", "'%s' must be true or false", names[i]);
			return -1;
		}
		*vals[i] = v && v->type == J_BOOL && v->boolean;
	}
	return 0;
}

int uffd_user_mode_only(void)
{
	return opt_user_mode_only;
}

int uffd_follow_forks(void)
{
	return opt_follow_forks;
}

uint64_t uffd_launch_features(uint64_t offered)
{
	uint64_t want = UFFD_FEATURE_THREAD_ID | UFFD_FEATURE_PAGEFAULT_FLAG_WP |
			UFFD_FEATURE_WP_UNPOPULATED | UFFD_FEATURE_MISSING_SHMEM |
			UFFD_FEATURE_MISSING_HUGETLBFS | UFFD_FEATURE_MINOR_SHMEM |
			UFFD_FEATURE_MINOR_HUGETLBFS | UFFD_FEATURE_WP_HUGETLBFS_SHMEM |
			UFFD_FEATURE_POISON | UFFD_FEATURE_MOVE |
			/* these block the program until the helper reads them: it reads them in
			 * the same batches as faults, and never holds them */
			UFFD_FEATURE_EVENT_REMAP | UFFD_FEATURE_EVENT_REMOVE |
			UFFD_FEATURE_EVENT_UNMAP;

	if (opt_follow_forks)
		want |= UFFD_FEATURE_EVENT_FORK;
	if (opt_wp_async)
		want |= UFFD_FEATURE_WP_ASYNC;
	return offered & want;
}

int uffd_api(int fd, uint64_t features, uint64_t *offered, uint64_t *ioctls)
{
	struct uffdio_api api = { .api = UFFD_API, .features = features };

	if (ioctl(fd, UFFDIO_API, &api)) {
		pr_perror("UFFDIO_API on fd %d (features 0x%llx) failed", fd,
			  (unsigned long long)features);
		return -1;
	}
	if (offered)
		*offered = api.features;
	if (ioctls)
		*ioctls = api.ioctls;
	return 0;
}

int uffd_register(int fd, uint64_t start, uint64_t end, uint64_t mode, uint64_t *ioctls)
{
	struct uffdio_register reg = {
		.range = { .start = start, .len = end - start },
		.mode = mode,
	};

	if (ioctl(fd, UFFDIO_REGISTER, &reg))
		return -1;
	if (ioctls)
		*ioctls = reg.ioctls;
	return 0;
}

int uffd_copy_zeros(int fd, uint64_t page)
{
	static char zeros[UFFD_PAGE_SIZE] __attribute__((aligned(4096)));
	struct uffdio_copy c = {
		.dst = page, .src = (uint64_t)(unsigned long)zeros, .len = UFFD_PAGE_SIZE,
	};

	return ioctl(fd, UFFDIO_COPY, &c) ? -1 : 0;
}

int uffd_zeropage(int fd, uint64_t page)
{
	struct uffdio_zeropage z = { .range = { .start = page, .len = UFFD_PAGE_SIZE } };

	return ioctl(fd, UFFDIO_ZEROPAGE, &z) ? -1 : 0;
}

int uffd_wake(int fd, uint64_t page)
{
	struct uffdio_range r = { .start = page, .len = UFFD_PAGE_SIZE };

	return ioctl(fd, UFFDIO_WAKE, &r) ? -1 : 0;
}

int uffd_unregister(int fd, uint64_t start, uint64_t end)
{
	struct uffdio_range r = { .start = start, .len = end - start };

	return ioctl(fd, UFFDIO_UNREGISTER, &r) ? -1 : 0;
}

int uffd_copy(int fd, uint64_t dst, const void *src, uint64_t len, int dontwake, int wp)
{
	struct uffdio_copy c = {
		.dst = dst, .src = (uint64_t)(unsigned long)src, .len = len,
		.mode = (dontwake ? UFFDIO_COPY_MODE_DONTWAKE : 0) | (wp ? UFFDIO_COPY_MODE_WP : 0),
	};

	return ioctl(fd, UFFDIO_COPY, &c) ? -1 : 0;
}

int uffd_zero(int fd, uint64_t dst, uint64_t len, int dontwake)
{
	struct uffdio_zeropage z = {
		.range = { .start = dst, .len = len },
		.mode = dontwake ? UFFDIO_ZEROPAGE_MODE_DONTWAKE : 0,
	};

	return ioctl(fd, UFFDIO_ZEROPAGE, &z) ? -1 : 0;
}

int uffd_continue(int fd, uint64_t dst, uint64_t len, int dontwake)
{
	struct uffdio_continue c = {
		.range = { .start = dst, .len = len },
		.mode = dontwake ? UFFDIO_CONTINUE_MODE_DONTWAKE : 0,
	};

	return ioctl(fd, UFFDIO_CONTINUE, &c) ? -1 : 0;
}

int uffd_writeprotect(int fd, uint64_t start, uint64_t len, int on, int dontwake)
{
	struct uffdio_writeprotect w = {
		.range = { .start = start, .len = len },
		.mode = (on ? UFFDIO_WRITEPROTECT_MODE_WP : 0) |
			(dontwake ? UFFDIO_WRITEPROTECT_MODE_DONTWAKE : 0),
	};

	return ioctl(fd, UFFDIO_WRITEPROTECT, &w) ? -1 : 0;
}

int uffd_move(int fd, uint64_t dst, uint64_t src, uint64_t len, int dontwake)
{
	struct uffdio_move m = {
		.dst = dst, .src = src, .len = len,
		.mode = dontwake ? UFFDIO_MOVE_MODE_DONTWAKE : 0,
	};

	return ioctl(fd, UFFDIO_MOVE, &m) ? -1 : 0;
}

int uffd_poison(int fd, uint64_t dst, uint64_t len, int dontwake)
{
	struct uffdio_poison p = {
		.range = { .start = dst, .len = len },
		.mode = dontwake ? UFFDIO_POISON_MODE_DONTWAKE : 0,
	};

	return ioctl(fd, UFFDIO_POISON, &p) ? -1 : 0;
}

int uffd_wake_range(int fd, uint64_t start, uint64_t len)
{
	struct uffdio_range r = { .start = start, .len = len };

	return ioctl(fd, UFFDIO_WAKE, &r) ? -1 : 0;
}

void uffd_ioctl_names_json(struct jbuf *b, uint64_t ioctls)
{
	unsigned i;
	int first = 1;

	jb_puts(b, "[");
	for (i = 0; i < 64; i++) {
		const char *n;

		if (!(ioctls & (1ULL << i)))
			continue;
		n = ioctl_name(i);
		if (!first)
			jb_puts(b, ",");
		first = 0;
		if (n)
			jb_str(b, n);
		else
			jb_printf(b, "\"BIT%u\"", i);
	}
	jb_puts(b, "]");
}

/* A fresh userfaultfd of the helper's own: userfaultfd(2) first, then /dev/userfaultfd. */
static int open_own(struct uffd_probe *p)
{
	int fd, dev, e1, e2 = 0;

	fd = syscall(__NR_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	if (fd >= 0) {
		p->source = "syscall";
		return fd;
	}
	e1 = errno;
	dev = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	if (dev >= 0) {
		fd = ioctl(dev, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
		if (fd < 0)
			e2 = errno;
		close(dev);
		if (fd >= 0) {
			p->source = "dev";
			return fd;
		}
		snprintf(p->error, sizeof(p->error),
			 "userfaultfd(2) failed: %s; /dev/userfaultfd USERFAULTFD_IOC_NEW failed: %s. "
			 "The kernel may lack CONFIG_USERFAULTFD.", strerror(e1), strerror(e2));
	} else {
		e2 = errno;
		snprintf(p->error, sizeof(p->error),
			 "userfaultfd(2) failed: %s; opening /dev/userfaultfd failed: %s. "
			 "Fix: run as root, or allow unprivileged use with "
			 "`sysctl -w vm.unprivileged_userfaultfd=1`, or give this user read/write "
			 "access to /dev/userfaultfd (e.g. a udev rule setting its group and mode 0660). "
			 "Last resort: the session option userModeOnly (UFFD_USER_MODE_ONLY: system "
			 "calls touching a tracked missing page then fail with EFAULT).",
			 strerror(e1), strerror(e2));
	}
	pr_err("no userfaultfd: %s", p->error);
	return -1;
}

int uffd_probe(struct uffd_probe *p)
{
	uint64_t api_ioctls = 0, range_ioctls = 0;
	void *area = MAP_FAILED;
	int fd, fd2 = -1, ret = -1;

	memset(p, 0, sizeof(*p));
	fd = open_own(p);
	if (fd < 0)
		return -1;
	if (uffd_api(fd, 0, &p->features, &api_ioctls)) {
		snprintf(p->error, sizeof(p->error), "UFFDIO_API failed: %s", strerror(errno));
		goto out;
	}
	p->api = UFFD_API;
	p->ioctls = api_ioctls;

	/* UFFDIO_API works once per fd: the registration probe needs a second one. */
	fd2 = open_own(&(struct uffd_probe){ 0 });
	area = mmap(NULL, 4 * UFFD_PAGE_SIZE, PROT_READ | PROT_WRITE,
		    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (fd2 < 0 || area == MAP_FAILED) {
		pr_perror("cannot set up the registration probe (fd %d)", fd2);
	} else if (uffd_api(fd2, p->features & UFFD_FEATURE_PAGEFAULT_FLAG_WP, NULL, NULL) == 0) {
		uint64_t s = (uint64_t)(unsigned long)area, e = s + 4 * UFFD_PAGE_SIZE;

		if (uffd_register(fd2, s, e, UFFDIO_REGISTER_MODE_MISSING | UFFDIO_REGISTER_MODE_WP,
				  &range_ioctls) &&
		    uffd_register(fd2, s, e, UFFDIO_REGISTER_MODE_MISSING, &range_ioctls))
			pr_perror("probe registration of %#llx on fd %d failed",
				  (unsigned long long)s, fd2);
		p->ioctls |= range_ioctls;
	}
	p->available = 1;
	ret = 0;
out:
	if (area != MAP_FAILED)
		munmap(area, 4 * UFFD_PAGE_SIZE);
	if (fd2 >= 0)
		close(fd2);
	close(fd);
	return ret;
}
