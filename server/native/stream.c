/*
 * Auto-resolved faults go to the client as one `faults` event per batch: columns of small
 * integers instead of one JSON object per fault, about 30 bytes a fault against 200, and one
 * JSON.parse per batch on the client. Faults are kept as numbers until the batch is written,
 * which happens before any other line (responses, events, held faults), so order is kept.
 */
#include <stdint.h>
#include <string.h>

#include "json.h"
#include "session.h"
#include "stream.h"

/* Columns, in the order written; the delta ones hold the step from the previous fault. */
enum { C_SEQ, C_T, C_PAGE, C_OFF, C_FLAGS, C_TID, C_PID, C_IOCTL, C_LAT, C_NR };

static const struct {
	const char *name;
	int delta;
} cols[C_NR] = {
	[C_SEQ] = { "seq", 1 },   [C_T] = { "t", 1 },	      [C_PAGE] = { "page", 1 },
	[C_OFF] = { "off", 0 },   [C_FLAGS] = { "flags", 0 }, [C_TID] = { "tid", 1 },
	[C_PID] = { "pid", 0 },   [C_IOCTL] = { "ioctl", 0 }, [C_LAT] = { "lat", 0 },
};

/* Fits every name the helper resolves with; a new name past it starts a new batch. */
#define STREAM_NAMES 16

static int64_t batch[STREAM_MAX][C_NR];
static size_t nr_batch;
static const char *names[STREAM_NAMES];
static size_t nr_names;

static int page_shift(uint64_t psize)
{
	return psize > PAGE_SZ ? __builtin_ctzll(psize) - 12 : 0;
}

static size_t name_index(const char *ioctl)
{
	size_t i;

	for (i = 0; i < nr_names; i++)
		if (names[i] == ioctl || !strcmp(names[i], ioctl))
			return i;
	names[nr_names] = ioctl;
	return nr_names++;
}

void stream_add(const struct stream_fault *f)
{
	int64_t *v;

	if (nr_batch == STREAM_MAX || nr_names == STREAM_NAMES) {
		stream_flush();
		out_urgent = 1;
	}
	v = batch[nr_batch++];
	v[C_SEQ] = (int64_t)f->seq;
	v[C_T] = (int64_t)f->t;
	v[C_PAGE] = (int64_t)(f->page / PAGE_SZ);
	v[C_OFF] = (int64_t)(f->addr - f->page);
	/* 1: write, the kind times 4, log2 of a huge page's size minus 12 times 16 */
	v[C_FLAGS] = (f->write ? 1 : 0) | f->kind << 2 | page_shift(f->psize) << 4;
	v[C_TID] = f->tid;
	v[C_PID] = f->pid;
	v[C_IOCTL] = (int64_t)name_index(f->ioctl);
	v[C_LAT] = f->latency > INT64_MAX ? 0 : (int64_t)f->latency;	/* never negative on the wire */
}

size_t stream_pending(void)
{
	return nr_batch;
}

void stream_flush(void)
{
	size_t i, c;

	if (!nr_batch)
		return;
	/* at most 20 digits and a comma per value */
	jb_reserve(&out, nr_batch * C_NR * 22 + STREAM_NAMES * 40 + 256);
	/* Wire format: {"type":"event","event":"faults","seq":[..],"t":[..],"page":[..],
	 * "off":[..],"flags":[..],"tid":[..],"pid":[..],"ioctl":[..],"lat":[..],
	 * "ioctls":["UFFDIO_ZEROPAGE",..]}: see `faults` in docs/protocol.md */
	jb_puts(&out, "{\"type\":\"event\",\"event\":\"faults\"");
	for (c = 0; c < C_NR; c++) {
		int64_t prev = 0;

		jb_puts(&out, ",\"");
		jb_puts(&out, cols[c].name);
		jb_puts(&out, "\":[");
		for (i = 0; i < nr_batch; i++) {
			int64_t x = batch[i][c];

			if (i)
				out.p[out.len++] = ',';
			jb_i64(&out, cols[c].delta ? x - prev : x);
			prev = x;
		}
		out.p[out.len++] = ']';
	}
	jb_puts(&out, ",\"ioctls\":[");
	for (i = 0; i < nr_names; i++) {
		if (i)
			jb_puts(&out, ",");
		jb_str(&out, names[i]);
	}
	jb_puts(&out, "]}\n");
	nr_batch = 0;
	nr_names = 0;
}
