/*
 * Asynchronous write-protect (session option wpAsync): "which pages were written since I
 * last looked", without stopping the program. With UFFD_FEATURE_WP_ASYNC the kernel resolves
 * write-protect faults itself (clearing the page's uffd-wp bit) and never delivers them;
 * PAGEMAP_SCAN on /proc/PID/pagemap lists the pages whose bit is clear (PAGE_IS_WRITTEN) and,
 * with PM_SCAN_WP_MATCHING, protects them again.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>
#include <linux/fs.h>

#include "dirty.h"
#include "errnames.h"
#include "log.h"
#include "mem.h"
#include "session.h"
#include "uffd.h"

/* The installed uapi headers are 6.1: PAGEMAP_SCAN came in 6.7 (include/uapi/linux/fs.h). */
#ifndef PAGEMAP_SCAN
#define PAGE_IS_WPALLOWED	(1 << 0)
#define PAGE_IS_WRITTEN		(1 << 1)
#define PAGE_IS_FILE		(1 << 2)
#define PAGE_IS_PRESENT		(1 << 3)
#define PAGE_IS_SWAPPED		(1 << 4)
#define PAGE_IS_PFNZERO		(1 << 5)
#define PAGE_IS_HUGE		(1 << 6)
#define PAGE_IS_SOFT_DIRTY	(1 << 7)

struct page_region {
	__u64 start;
	__u64 end;
	__u64 categories;
};

#define PM_SCAN_WP_MATCHING	(1 << 0)
#define PM_SCAN_CHECK_WPASYNC	(1 << 1)

struct pm_scan_arg {
	__u64 size;
	__u64 flags;
	__u64 start;
	__u64 end;
	__u64 walk_end;
	__u64 vec;
	__u64 vec_len;
	__u64 max_pages;
	__u64 category_inverted;
	__u64 category_mask;
	__u64 category_anyof_mask;
	__u64 return_mask;
};

#define PAGEMAP_IOCTL_MAGIC	'f'
#define PAGEMAP_SCAN		_IOWR(PAGEMAP_IOCTL_MAGIC, 16, struct pm_scan_arg)
#endif

#define DIRTY_MAX_PAGES 65536
#define DIRTY_VEC 512

static int pagemap_fd = -1;
static pid_t pagemap_pid;

static int pagemap_open(void)
{
	char path[64];

	if (pagemap_fd >= 0 && pagemap_pid == sess.pid)
		return pagemap_fd;
	if (pagemap_fd >= 0)
		close(pagemap_fd);
	snprintf(path, sizeof(path), "/proc/%d/pagemap", sess.pid);
	pagemap_fd = open(path, O_RDONLY | O_CLOEXEC);
	pagemap_pid = sess.pid;
	if (pagemap_fd < 0)
		pr_perror("dirty: cannot open %s", path);
	return pagemap_fd;
}

void dirty_cmd(int64_t id, const struct jval *req)
{
	const struct jval *rv = json_get(req, "reset");
	struct page_region vec[DIRTY_VEC];
	uint64_t start, end, count = 0, at;
	int reset = 0, truncated = 0, fd;
	struct jbuf pages = { 0 };

	if (mem_addr_arg(json_get(req, "start"), &start) ||
	    mem_addr_arg(json_get(req, "end"), &end) || end <= start ||
	    (start | end) & (PAGE_SZ - 1)) {
		resp_err(id, "EPROTO", "dirty needs page-aligned 'start' < 'end' (\"0x..\")");
		return;
	}
	if (rv) {
		if (rv->type != J_BOOL) {
			resp_err(id, "EPROTO", "'reset' must be true or false");
			return;
		}
		reset = rv->boolean;
	}
	if (!sess.pid || sess.uffd < 0) {
		resp_err(id, "ESTATE", sess.pid ? "the program is gone" :
			 "dirty before launch/attach: nothing to scan");
		return;
	}
	if (!(sess.uffd_features & UFFD_FEATURE_WP_ASYNC)) {
		resp_err(id, "ESTATE", "dirty needs asynchronous write-protect: launch or attach "
			 "with \"wpAsync\": true (and a kernel offering UFFD_FEATURE_WP_ASYNC), then "
			 "'protect' the range");
		return;
	}
	fd = pagemap_open();
	if (fd < 0) {
		resp_err(id, errno_name(errno), "cannot open /proc/%d/pagemap: %s", sess.pid,
			 strerror(errno));
		return;
	}
	for (at = start; at < end && !truncated;) {
		struct pm_scan_arg a = {
			.size = sizeof(a),
			.flags = PM_SCAN_CHECK_WPASYNC | (reset ? PM_SCAN_WP_MATCHING : 0),
			.start = at,
			.end = end,
			.vec = (uint64_t)(uintptr_t)vec,
			.vec_len = DIRTY_VEC,
			.max_pages = DIRTY_MAX_PAGES - count,
			.category_mask = PAGE_IS_WRITTEN,
			.return_mask = PAGE_IS_WRITTEN,
		};
		long n = ioctl(fd, PAGEMAP_SCAN, &a);
		long i;

		if (n < 0) {
			int err = errno;

			pr_perror("dirty: PAGEMAP_SCAN of %#" PRIx64 "-%#" PRIx64 " on /proc/%d/pagemap "
				  "(fd %d)", at, end, sess.pid, fd);
			if (err == ENOTTY || err == EOPNOTSUPP)
				resp_err(id, "ENOTSUP", "this kernel has no PAGEMAP_SCAN ioctl on "
					 "/proc/PID/pagemap (Linux 6.7+): written pages cannot be listed");
			else if (err == EPERM)
				resp_err(id, "EPERM", "PAGEMAP_SCAN refused the range 0x%" PRIx64 "-0x%"
					 PRIx64 ": part of it is not registered for asynchronous "
					 "write-protect; 'protect' it first (%s)", at, end, strerror(err));
			else
				resp_err(id, errno_name(err), "PAGEMAP_SCAN of 0x%" PRIx64 "-0x%" PRIx64
					 " failed: %s", at, end, strerror(err));
			free(pages.p);
			return;
		}
		for (i = 0; i < n; i++) {
			uint64_t p;

			for (p = vec[i].start; p < vec[i].end; p += PAGE_SZ) {
				if (count)
					jb_puts(&pages, ",");
				jb_hex(&pages, p);
				count++;
			}
		}
		if (a.walk_end <= at || a.walk_end >= end)
			break;
		if (count >= DIRTY_MAX_PAGES)
			truncated = 1;	/* stopped by max_pages with range left */
		at = a.walk_end;
	}
	/* Wire format: DirtyBody in server/protocol/messages.ts */
	resp_ok_begin(id);
	jb_puts(&out, "{\"pages\":[");
	if (pages.len)
		jb_write(&out, pages.p, pages.len);
	jb_printf(&out, "],\"count\":%" PRIu64 ",\"truncated\":%s}", count,
		  truncated ? "true" : "false");
	resp_ok_end();
	free(pages.p);
}
