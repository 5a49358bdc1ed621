/* SPDX-License-Identifier: MIT */
/*
 * The observe channel's records (docs/protocol.md, "Observe channel"), written by
 * uffd-observe.c and decoded by server/protocol/observe.ts. Little-endian, naturally aligned,
 * every record a multiple of 8 bytes and at most OBS_MAX_RECORD. Each write() carries whole
 * records and at most OBS_MAX_RECORD bytes, so the records of threads and forked children
 * never interleave.
 */
#ifndef UFFD_OBSERVE_WIRE_H
#define UFFD_OBSERVE_WIRE_H

#include <stdint.h>

#define OBS_VERSION	2	/* 2: OBS_IOCTL_RUN */
#define OBS_MAX_RECORD	4096

enum obs_type {
	OBS_HELLO = 1,		/* the library started in a process (after exec) */
	OBS_FORK = 2,		/* this process is a fork of ppid */
	OBS_UFFD = 3,		/* a userfaultfd appeared (or creating one failed) */
	OBS_API = 4,		/* UFFDIO_API */
	OBS_REGISTER = 5,	/* UFFDIO_REGISTER */
	OBS_UNREGISTER = 6,	/* UFFDIO_UNREGISTER */
	OBS_READ = 7,		/* messages read from a userfaultfd */
	OBS_IOCTL = 8,		/* a resolving ioctl */
	OBS_CLOSE = 9,		/* a userfaultfd descriptor was closed */
	OBS_DUP = 10,		/* a userfaultfd descriptor was duplicated */
	OBS_SEND = 11,		/* a userfaultfd is being sent over SCM_RIGHTS (or failed to be) */
	OBS_CONTINUED = 12,	/* a thread stopped after a read runs again */
	OBS_RESOLVE = 13,	/* the library's answer to OBS_CMD_RESOLVE */
	OBS_IOCTL_RUN = 14,	/* consecutive OBS_IOCTL records of one thread, merged */
};

/* How a userfaultfd appeared (OBS_UFFD.how). */
enum obs_how {
	OBS_HOW_SYSCALL = 1,	/* userfaultfd(2) */
	OBS_HOW_DEV = 2,	/* /dev/userfaultfd + USERFAULTFD_IOC_NEW */
	OBS_HOW_SCM = 3,	/* received over SCM_RIGHTS */
	OBS_HOW_FORK_EVENT = 4,	/* UFFD_EVENT_FORK message read by the handler */
	OBS_HOW_INHERIT = 5,	/* open when the library started (inherited across exec) */
};

/* Which call read the messages (OBS_READ.via). */
enum obs_via {
	OBS_VIA_READ = 1,
	OBS_VIA_READV = 2,
	OBS_VIA_SYSCALL_READ = 3,
	OBS_VIA_SYSCALL_READV = 4,
	OBS_VIA_READ_CHK = 5,
};

#define OBS_READ_STOPPED	1u	/* the reading thread waits for a continue */

/* Control commands (launcher -> library), 16 bytes each. */
enum obs_cmd {
	OBS_CMD_STOP_MASK = 1,	/* arg: stop after reading faults of these kinds */
	OBS_CMD_CONTINUE = 2,	/* seq: the OBS_READ record of the stopped thread */
	OBS_CMD_CONTINUE_ALL = 3,
	OBS_CMD_RESOLVE = 4,	/* seq: a stopped read; arg: request id; struct obs_ctl_resolve follows */
};

/*
 * Library -> launcher, the first 16 bytes on a connection to UFFD_OBSERVE_CTL_PATH (a process
 * other than the first: forked, exec'd, or given its userfaultfd over SCM_RIGHTS): arg is the
 * pid. The launcher answers with OBS_CMD_STOP_MASK first, then commands for that process.
 */
#define OBS_CTL_HELLO	16

/* How OBS_CMD_RESOLVE places the page (struct obs_ctl_resolve.how). */
enum obs_resolve_how {
	OBS_RESOLVE_COPY = 1,		/* UFFDIO_COPY of pages filled with the pattern byte */
	OBS_RESOLVE_ZEROPAGE = 2,	/* UFFDIO_ZEROPAGE */
	OBS_RESOLVE_WAKE = 3,		/* UFFDIO_WAKE only: the thread faults again */
};

#define OBS_STOP_MISSING	1u
#define OBS_STOP_WP		2u
#define OBS_STOP_MINOR		4u
#define OBS_STOP_IOCTL_ERROR	8u	/* after a resolving ioctl failed (not EAGAIN) */

#define OBS_IOCTL_STOPPED	1u	/* the calling thread waits for a continue */

struct obs_hdr {
	uint16_t type;
	uint16_t len;		/* whole record, header included */
	uint32_t pid;
	uint32_t tid;
	int32_t fd;		/* the descriptor concerned, -1 if none */
	uint32_t uffd;		/* the library's id of the userfaultfd (per process), 0 if none */
	uint32_t seq;		/* per-process record number, from 1 */
	uint64_t t;		/* CLOCK_MONOTONIC ns: when a read returned, when other calls started */
};

struct obs_hello {
	uint32_t version;
	uint32_t ppid;
	uint32_t page_size;
	uint32_t stop_mask;
	char exe[256];		/* /proc/self/exe, NUL-terminated */
};

struct obs_fork {
	uint32_t ppid;
	uint32_t pad;
};

struct obs_uffd {
	uint32_t how;
	uint32_t flags;		/* userfaultfd(2) flags / USERFAULTFD_IOC_NEW argument */
	int32_t result;
	int32_t err;
	uint32_t from_pid;	/* OBS_HOW_FORK_EVENT: the uffd the event was read from */
	uint32_t from_uffd;
};

struct obs_api {
	uint64_t api;
	uint64_t requested;	/* features asked for */
	uint64_t features;	/* features granted (valid when result is 0) */
	uint64_t ioctls;
	int32_t result;
	int32_t err;
};

struct obs_register {
	uint64_t start;
	uint64_t len;
	uint64_t mode;
	uint64_t ioctls;
	int32_t result;
	int32_t err;
};

struct obs_read {
	int64_t result;
	int32_t err;
	uint16_t via;
	uint16_t nmsg;		/* struct uffd_msg (32 bytes each) follow */
	uint32_t flags;
	uint32_t pad;
};

struct obs_ioctl {
	uint32_t op;		/* _UFFDIO_* number: WAKE 2, COPY 3, ZEROPAGE 4, MOVE 5, WP 6, CONTINUE 7, POISON 8 */
	uint32_t flags;		/* OBS_IOCTL_STOPPED */
	uint64_t start;
	uint64_t len;
	uint64_t mode;
	uint64_t src;		/* COPY and MOVE */
	int64_t done;		/* the ioctl's own result field (bytes, or -errno) */
	int32_t result;
	int32_t err;
	uint64_t dur;		/* ns */
};

/*
 * OBS_IOCTL_RUN: count (>= 2) successful ioctls of one thread that would have been
 * consecutive OBS_IOCTL records, with nothing between them on the channel: the same pid, tid,
 * fd, uffd, op (COPY, ZEROPAGE, CONTINUE), mode and len; result 0, err 0, done == len, flags 0.
 * Ioctl i (from 0) has seq hdr.seq + i, t hdr.t + runs[i].dt, start start + i * len, src
 * src + i * src_step (COPY; else 0) and duration runs[i].dur: the records are rebuilt exactly.
 * The record is count entries long after the body: 80 + 8 * count bytes.
 */
struct obs_ioctl_run {
	uint32_t op;
	uint32_t count;
	uint64_t start;		/* the first ioctl's */
	uint64_t len;		/* every ioctl's (and its done) */
	uint64_t mode;
	uint64_t src;		/* the first ioctl's */
	int64_t src_step;	/* src of ioctl i + 1 minus src of ioctl i */
};

struct obs_run_entry {
	uint32_t dt;		/* t - hdr.t, ns */
	uint32_t dur;		/* ns */
};

#define OBS_RUN_MAX	((OBS_MAX_RECORD - sizeof(struct obs_hdr) - sizeof(struct obs_ioctl_run)) / \
			 sizeof(struct obs_run_entry))

struct obs_close {
	int32_t result;
	int32_t err;
};

struct obs_dup {
	int32_t newfd;
	uint32_t pad;
};

/* Written before sendmsg (result 0) and again when sendmsg failed (result -1). */
struct obs_send {
	int32_t result;
	int32_t err;
};

struct obs_continued {
	uint32_t stop_seq;
	uint32_t why;		/* 1 continue, 2 control channel closed */
};

/*
 * OBS_RESOLVE: the control thread performed OBS_CMD_RESOLVE's ioctl on the stopped read's
 * userfaultfd (the header's fd and uffd); result -1 with err ESRCH when that read is no longer
 * stopped, EINVAL for a bad command.
 */
struct obs_resolve {
	uint32_t req;		/* the command's arg */
	uint32_t op;		/* _UFFDIO_* number, 0 when no ioctl was made */
	uint64_t start;
	uint64_t len;
	uint32_t stop_seq;
	uint32_t pad;
	int64_t done;		/* the ioctl's own result field (bytes, or -errno) */
	int32_t result;
	int32_t err;
};

struct obs_ctl {
	uint32_t cmd;
	uint32_t arg;
	uint64_t seq;
};

/* Follows an OBS_CMD_RESOLVE command. */
struct obs_ctl_resolve {
	uint64_t addr;		/* page-aligned */
	uint64_t len;		/* a multiple of the page size */
	uint32_t how;		/* enum obs_resolve_how */
	uint32_t pattern;	/* OBS_RESOLVE_COPY: the fill byte */
};

#endif
