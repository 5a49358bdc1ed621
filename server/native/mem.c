#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "errnames.h"
#include "log.h"
#include "mem.h"
#include "session.h"
#include "uffd.h"

#define MAX_UREG 256

/* Ranges registered through requests: their modes and page size. Launch-time anonymous
 * registrations are not listed (4 KiB pages, missing mode). */
struct ureg {
	uint64_t start, end, psize, modes;
};

static struct ureg uregs[MAX_UREG];
static size_t nr_uregs;

uint64_t mem_page_size(uint64_t addr)
{
	size_t i;

	for (i = 0; i < nr_uregs; i++)
		if (addr >= uregs[i].start && addr < uregs[i].end)
			return uregs[i].psize;
	return PAGE_SZ;
}

static const struct ureg *ureg_find(uint64_t addr)
{
	size_t i;

	for (i = 0; i < nr_uregs; i++)
		if (addr >= uregs[i].start && addr < uregs[i].end)
			return &uregs[i];
	return NULL;
}

/* Cuts [start,end) out of the table, then records it unless modes is 0. */
static void ureg_set(uint64_t start, uint64_t end, uint64_t psize, uint64_t modes)
{
	size_t i;

	for (i = 0; i < nr_uregs;) {
		struct ureg *u = &uregs[i];

		if (u->end <= start || u->start >= end) {
			i++;
			continue;
		}
		if (u->start < start && u->end > end && nr_uregs < MAX_UREG) {
			uregs[nr_uregs] = *u;
			uregs[nr_uregs++].start = end;
			u->end = start;
			i++;
		} else if (u->start < start) {
			u->end = start;
			i++;
		} else if (u->end > end) {
			u->start = end;
			i++;
		} else {
			*u = uregs[--nr_uregs];
		}
	}
	if (modes && nr_uregs < MAX_UREG)
		uregs[nr_uregs++] = (struct ureg){ start, end, psize, modes };
	else if (modes)
		pr_warn("more than %d registered ranges: %#" PRIx64 "-%#" PRIx64 " is treated as "
			"4 KiB pages", MAX_UREG, start, end);
}

int mem_addr_arg(const struct jval *v, uint64_t *out)
{
	int64_t n;
	char *end;

	if (!v)
		return -1;
	if (v->type == J_STR) {
		if (!v->str[0] || strlen(v->str) != v->len)
			return -1;
		errno = 0;
		*out = strtoull(v->str, &end, 0);
		return errno || *end ? -1 : 0;
	}
	if (!json_int(v, 0, INT64_MAX, &n))
		return -1;
	*out = (uint64_t)n;
	return 0;
}

int mem_read(uint64_t addr, void *buf, size_t len)
{
	char path[64];
	size_t off = 0;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/mem", sess.pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		pr_perror("cannot open %s", path);
		return -1;
	}
	while (off < len) {
		ssize_t n = pread(fd, (char *)buf + off, len - off, (off_t)(addr + off));

		if (n <= 0) {
			if (n < 0 && errno == EINTR)
				continue;
			if (n == 0)
				errno = EIO;
			pr_perror("reading %zu bytes at %#" PRIx64 " of pid %d", len, addr, sess.pid);
			close(fd);
			return -1;
		}
		off += n;
	}
	close(fd);
	return 0;
}

static int pagemap_entry(uint64_t addr, uint64_t *e)
{
	char path[64];
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "/proc/%d/pagemap", sess.pid);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	n = pread(fd, e, sizeof(*e), (off_t)(addr / PAGE_SZ * sizeof(*e)));
	close(fd);
	return n == sizeof(*e) ? 0 : -1;
}

int mem_wp_marked(uint64_t addr)
{
	const struct ureg *u = ureg_find(addr);
	uint64_t e;

	if (!u || !(u->modes & UFFDIO_REGISTER_MODE_WP) || pagemap_entry(addr, &e))
		return 0;
	return !!(e & (1ULL << 57));	/* PM_UFFD_WP */
}

int mem_page_mapped(uint64_t addr)
{
	uint64_t e;

	if (pagemap_entry(addr, &e))
		return -1;
	return !!(e & (3ULL << 62));	/* bit 63 present, bit 62 swapped */
}

const char *mem_errno_text(int err)
{
	switch (err) {
	case EEXIST:
		return "the page is already mapped (usually another thread's fault on the same page "
		       "was resolved first; a write-protect fault is on a mapped page: use unprotect)";
	case EAGAIN:
		return "the program's mappings changed under us; retry";
	case ENOENT:
		return "no such mapping, the range is not registered with this userfaultfd, or the "
		       "source page of a move is not mapped";
	case ESRCH:
		return "the program is gone";
	case EINVAL:
		return "unaligned address or length, a range outside one registered mapping, or a "
		       "mode/operation this mapping type does not support";
	case EPERM:
	case EOPNOTSUPP:
		return "the userfaultfd feature this needs was not negotiated or is not permitted";
	case EBUSY:
		return "the range is registered with another userfaultfd, or the source page is "
		       "pinned or shared and cannot be moved";
	case ENOMEM:
		return "no mapping covers the range, or the kernel is out of memory";
	case EFAULT:
		return "the helper's source buffer is not readable";
	}
	return strerror(err);
}

/* Common arguments: start/end, page-aligned check left to the kernel. */
static int range_args(int64_t id, const struct jval *req, uint64_t *start, uint64_t *end)
{
	if (mem_addr_arg(json_get(req, "start"), start) ||
	    mem_addr_arg(json_get(req, "end"), end)) {
		resp_err(id, "EPROTO", "needs 'start' and 'end', addresses as \"0x..\" strings");
		return -1;
	}
	if (*end <= *start) {
		resp_err(id, "EINVAL", "empty range: 'end' (0x%" PRIx64 ") must be above 'start' "
			 "(0x%" PRIx64 ")", *end, *start);
		return -1;
	}
	if (!sess.pid) {
		resp_err(id, "ESTATE", "no program: send 'launch' first");
		return -1;
	}
	if (!sess.alive || sess.uffd < 0) {
		resp_err(id, "ESRCH", "the program is gone: its memory can no longer be registered "
			 "or protected");
		return -1;
	}
	return 0;
}

/* KernelPageSize of the VMA holding addr, from /proc/PID/smaps; 4096 when unknown. */
static uint64_t vma_page_size(uint64_t addr)
{
	char path[64], line[512];
	int in = 0;
	uint64_t kb;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/smaps", sess.pid);
	f = fopen(path, "re");
	if (!f)
		return PAGE_SZ;
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;

		if (sscanf(line, "%lx-%lx ", &s, &e) == 2 && strchr(line, '-') < strchr(line, ' '))
			in = addr >= s && addr < e;
		else if (in && sscanf(line, "KernelPageSize: %" SCNu64 " kB", &kb) == 1) {
			fclose(f);
			return kb * 1024;
		}
	}
	fclose(f);
	return PAGE_SZ;
}

static const char *const mode_names[] = { "missing", "wp", "minor" };
static const uint64_t mode_bits[] = {
	UFFDIO_REGISTER_MODE_MISSING, UFFDIO_REGISTER_MODE_WP, UFFDIO_REGISTER_MODE_MINOR,
};

static void range_body(int64_t id, uint64_t start, uint64_t end, uint64_t ioctls, int with_ioctls)
{
	resp_ok_begin(id);
	jb_puts(&out, "{\"start\":");
	jb_hex(&out, start);
	jb_puts(&out, ",\"end\":");
	jb_hex(&out, end);
	if (with_ioctls) {
		jb_puts(&out, ",\"ioctls\":");
		uffd_ioctl_names_json(&out, ioctls);
	}
	jb_puts(&out, "}");
	resp_ok_end();
}

static int do_register(int64_t id, uint64_t start, uint64_t end, uint64_t modes, uint64_t *ioctls)
{
	uint64_t psize;

	if (uffd_register(sess.uffd, start, end, modes, ioctls)) {
		int err = errno;

		pr_perror("pid %d: UFFDIO_REGISTER %#" PRIx64 "-%#" PRIx64 " mode %#" PRIx64
			  " on fd %d failed", sess.pid, start, end, modes, sess.uffd);
		resp_err(id, errno_name(err), "UFFDIO_REGISTER of 0x%" PRIx64 "-0x%" PRIx64
			 " failed: %s (%s)", start, end, mem_errno_text(err), strerror(err));
		return -1;
	}
	psize = vma_page_size(start);
	ureg_set(start, end, psize, modes);
	sess.nr_regions++;
	return 0;
}

void mem_cmd_register(int64_t id, const struct jval *req)
{
	const struct jval *mv = json_get(req, "modes");
	uint64_t start, end, modes = 0, ioctls = 0;
	size_t i, k;

	if (!mv || mv->type != J_ARR || !mv->n) {
		resp_err(id, "EPROTO", "register needs 'modes', a non-empty array of "
			 "\"missing\", \"wp\", \"minor\"");
		return;
	}
	for (i = 0; i < mv->n; i++) {
		const char *s = json_cstr(mv->items[i]);

		for (k = 0; k < 3 && (!s || strcmp(s, mode_names[k])); k++)
			;
		if (k == 3) {
			resp_err(id, "EPROTO", "unknown mode in 'modes' (missing, wp, minor)");
			return;
		}
		modes |= mode_bits[k];
	}
	if (range_args(id, req, &start, &end) || do_register(id, start, end, modes, &ioctls))
		return;
	range_body(id, start, end, ioctls, 1);
}

void mem_cmd_unregister(int64_t id, const struct jval *req)
{
	uint64_t start, end;
	int err;

	if (range_args(id, req, &start, &end))
		return;
	if (uffd_unregister(sess.uffd, start, end)) {
		err = errno;
		pr_perror("pid %d: UFFDIO_UNREGISTER %#" PRIx64 "-%#" PRIx64 " on fd %d failed",
			  sess.pid, start, end, sess.uffd);
		resp_err(id, errno_name(err), "UFFDIO_UNREGISTER of 0x%" PRIx64 "-0x%" PRIx64
			 " failed: %s (%s)", start, end, mem_errno_text(err), strerror(err));
		return;
	}
	ureg_set(start, end, 0, 0);
	range_body(id, start, end, 0, 0);
}

void mem_cmd_protect(int64_t id, const struct jval *req)
{
	const struct jval *onv = json_get(req, "on");
	const struct ureg *u;
	uint64_t start, end;
	int err;

	if (!onv || onv->type != J_BOOL) {
		resp_err(id, "EPROTO", "protect needs 'on': true to write-protect, false to "
			 "remove the protection");
		return;
	}
	if (range_args(id, req, &start, &end))
		return;
	u = ureg_find(start);
	/* Re-registering a registered range with more modes is allowed: add WP, keep the rest. */
	if (!u || u->end < end || !(u->modes & UFFDIO_REGISTER_MODE_WP)) {
		uint64_t modes = (u ? u->modes : UFFDIO_REGISTER_MODE_MISSING) |
				 UFFDIO_REGISTER_MODE_WP;

		if (do_register(id, start, end, modes, NULL))
			return;
	}
	/* Removing the protection leaves threads blocked on held wp faults asleep: resolving
	 * them is the client's call. */
	if (uffd_writeprotect(sess.uffd, start, end - start, onv->boolean, !onv->boolean)) {
		err = errno;
		pr_perror("pid %d: UFFDIO_WRITEPROTECT %#" PRIx64 "-%#" PRIx64 " (%s) on fd %d "
			  "failed", sess.pid, start, end, onv->boolean ? "on" : "off", sess.uffd);
		resp_err(id, errno_name(err), "UFFDIO_WRITEPROTECT of 0x%" PRIx64 "-0x%" PRIx64
			 " failed: %s (%s)", start, end, mem_errno_text(err), strerror(err));
		return;
	}
	resp_ok_begin(id);
	jb_puts(&out, "{\"start\":");
	jb_hex(&out, start);
	jb_puts(&out, ",\"end\":");
	jb_hex(&out, end);
	jb_puts(&out, ",\"pages\":");
	jb_u64(&out, (end - start + PAGE_SZ - 1) / PAGE_SZ);
	jb_puts(&out, "}");
	resp_ok_end();
}
