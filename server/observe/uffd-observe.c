// SPDX-License-Identifier: MIT
/*
 * libuffd-observe.so: loaded with LD_PRELOAD into a program that runs its own userfaultfd
 * handler. It reports what the program does with its userfaultfds (creation, API,
 * registrations, messages read, resolving ioctls) as binary records (wire.h) on a private
 * descriptor inherited from the launcher (UFFD_OBSERVE_FD). The program's behaviour is
 * unchanged apart from timing: every call is passed through unchanged and errno is restored.
 *
 * With UFFD_OBSERVE_CTL (a descriptor the launcher writes obs_ctl commands to) a thread that
 * reads a fault of a kind in the stop mask waits until the launcher continues it.
 *
 * Without UFFD_OBSERVE_FD, or when the channel breaks, the library does nothing at all.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "wire.h"

#include "../native/uffd-uapi.h"

#define MAXFD		65536	/* descriptors above are not tracked (docs/protocol.md) */
#define MAX_STOPPED	64

#define LOG_PREFIX "uffd-observe"

#ifndef MADV_WIPEONFORK
#define MADV_WIPEONFORK 18	/* Linux 4.14 */
#endif

static int chan_fd = -1;
static int chan_is_sock;
static atomic_int chan_ok;
static int ctl_fd = -1;
static char ctl_path[sizeof(((struct sockaddr_un *)0)->sun_path)];	/* UFFD_OBSERVE_CTL_PATH */
static atomic_uint stop_mask;
static atomic_uint rec_seq;
static atomic_uint next_id;
static atomic_int any_tracked;
static _Atomic uint32_t fd_ids[MAXFD];
static __thread uint32_t my_tid;
static uint32_t my_pid;
static pthread_once_t ctl_once = PTHREAD_ONCE_INIT;

static pthread_mutex_t stop_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t stop_cv = PTHREAD_COND_INITIALIZER;
static struct {
	uint32_t seq;
	int used;
	int released;
	int fd;			/* the userfaultfd read (OBS_CMD_RESOLVE acts on it) */
	uint32_t id;
} stopped[MAX_STOPPED];
static int ctl_alive;

/* The real functions, found lazily: a hook may run before this library's constructor. */
static ssize_t (*real_read)(int, void *, size_t);
static ssize_t (*real___read_chk)(int, void *, size_t, size_t);
static ssize_t (*real_readv)(int, const struct iovec *, int);
static int (*real_ioctl)(int, unsigned long, ...);
static long (*real_syscall)(long, ...);
static int (*real_close)(int);
static int (*real_close_range)(unsigned int, unsigned int, int);
static int (*real_dup)(int);
static int (*real_dup2)(int, int);
static int (*real_dup3)(int, int, int);
static int (*real_fcntl)(int, int, ...);
static int (*real_fcntl64)(int, int, ...);
static ssize_t (*real_recvmsg)(int, struct msghdr *, int);
static ssize_t (*real_sendmsg)(int, const struct msghdr *, int);

static void *next_sym(const char *name)
{
	void *p = dlsym(RTLD_NEXT, name);

	if (!p) {
		/* Nothing sensible to call: say so once per symbol and fail the call. */
		fprintf(stderr, LOG_PREFIX "[%d]: symbol %s not found: %s\n", getpid(), name, dlerror());
	}
	return p;
}

#define REAL(name) (real_##name ? real_##name : (real_##name = next_sym(#name)))

static uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint32_t cur_tid(void)
{
	if (!my_tid)
		my_tid = (uint32_t)gettid();
	return my_tid;
}

static uint32_t fd_id(int fd)
{
	if (fd < 0 || fd >= MAXFD)
		return 0;
	return atomic_load_explicit(&fd_ids[fd], memory_order_relaxed);
}

static void fd_set_id(int fd, uint32_t id)
{
	if (fd >= 0 && fd < MAXFD)
		atomic_store_explicit(&fd_ids[fd], id, memory_order_relaxed);
}

/*
 * A process that copied our memory without fork() (a raw clone or clone3 without CLONE_VM,
 * glibc's _Fork(): no pthread_atfork handler runs) must not go on with its parent's state: the
 * parent's pid, its unsent batch (the parent sends it), locks another parent thread may have
 * held, its control descriptor and threads. fork_mark lives in a page advised
 * MADV_WIPEONFORK, which the kernel gives every such child (and fork's) zeroed: each entry
 * point loads fork_mark->live and, on 0, child_init() makes the state this process's own,
 * once, as after_fork_child does. CLONE_VM children (vfork, threads) share our memory and
 * state: they are not followed.
 *
 * A clone or fork made through syscall(2) or glibc's clone() is also handled as fork() is
 * (copy_syscall): the parent's batch goes out first. For the clones we do not see, OBS_UFFD
 * records are sent at once, so that the observer knows the userfaultfds the child inherits
 * when its fork record arrives; the parent's other batched records may come after it.
 *
 * Without MADV_WIPEONFORK (Linux before 4.14) fork_mark stays the constant below and
 * fork_check_pid() compares live_pid with getpid() where a system call is made anyway: reads
 * and ioctls on a userfaultfd, fork, clone through syscall(2) or clone(), exit and exec. Gap:
 * the records of a child made by a clone we do not see, before its first such call (close,
 * dup, sendmsg of a userfaultfd), carry its parent's pid and may repeat the parent's batch.
 */
struct fork_mark {
	atomic_int live;	/* 1: the state is this process's own */
	atomic_int claimed;	/* 1: a thread of this process runs (or ran) child_init */
};

static struct fork_mark fork_mark_always = { 1, 1 };
static struct fork_mark *fork_mark = &fork_mark_always;
static int fork_by_pid;			/* no MADV_WIPEONFORK: the fallback above */
static _Atomic uint32_t live_pid;	/* fallback: the pid whose state this is */
static _Atomic uint32_t claim_pid;	/* fallback: the pid child_init was claimed for */

static void child_init(void);

static inline void fork_check(void)
{
	if (__builtin_expect(!atomic_load_explicit(&fork_mark->live, memory_order_acquire), 0))
		child_init();
}

/* The fallback's check: only where a system call is made anyway. */
static inline void fork_check_pid(void)
{
	if (__builtin_expect(fork_by_pid, 0) &&
	    atomic_load_explicit(&live_pid, memory_order_acquire) != (uint32_t)getpid())
		child_init();
}

/* Writes out len bytes; blocks (never drops) when the reader is slow. */
static void chan_write(const char *p, size_t len)
{
	size_t off = 0;

	while (off < len) {
		ssize_t n;

		if (chan_is_sock) {
			n = send(chan_fd, p + off, len - off, MSG_NOSIGNAL);
		} else {
			sigset_t all, old;

			/* A closed pipe must not kill the program with SIGPIPE. */
			sigfillset(&all);
			pthread_sigmask(SIG_BLOCK, &all, &old);
			n = write(chan_fd, p + off, len - off);
			if (n < 0 && errno == EPIPE) {
				struct timespec zero = { 0, 0 };
				sigset_t pipe;

				sigemptyset(&pipe);
				sigaddset(&pipe, SIGPIPE);
				sigtimedwait(&pipe, NULL, &zero);
			}
			pthread_sigmask(SIG_SETMASK, &old, NULL);
		}
		if (n > 0) {
			off += (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && errno == EAGAIN) {
			struct pollfd pfd = { .fd = chan_fd, .events = POLLOUT };

			poll(&pfd, 1, 100);
		} else {
			/* The launcher went away: stop reporting, keep the program running. */
			atomic_store(&chan_ok, 0);
			return;
		}
	}
}

/*
 * Records are batched per process and sent when the batch is full (OUT_BUF), when urgent (a
 * stop, a send), at fork, exec and exit, and otherwise by the flusher thread ("uffd-observe",
 * started with the first userfaultfd) FLUSH_NS after the batch began. Before there is a
 * userfaultfd, records are written at once. What costs is the reader's wake-up (about 0.1 ms
 * of CPU per wake-up for Node on a small VM), not the write: so a batch is up to 64 KiB, sent
 * as back-to-back writes of whole records, none over OBS_MAX_RECORD (atomic on a pipe or socket
 * shared with forked children), which the reader takes in few wake-ups.
 *
 * Two buffers: while one is written (wr_mu, which also keeps batches in order) the program's
 * threads fill the other under out_mu. Lock order: out_mu, then wr_mu.
 */
#define FLUSH_NS 5000000L
#define OUT_BUF (16 * OBS_MAX_RECORD)

static pthread_mutex_t out_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t wr_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t out_cv = PTHREAD_COND_INITIALIZER;
static char out_bufs[2][OUT_BUF] __attribute__((aligned(8)));
static char *out_buf = out_bufs[0];
static size_t out_len;
static int flusher_state;	/* 0 none, 1 running, -1 could not start: write each record */
static atomic_int own_threads;	/* threads of ours running in this process */

/* Writes a batch in pieces of whole records, each at most OBS_MAX_RECORD bytes. */
static void chan_write_batch(const char *p, size_t len)
{
	while (len && atomic_load_explicit(&chan_ok, memory_order_relaxed)) {
		size_t n = 0;

		while (n < len) {
			uint16_t rlen;

			memcpy(&rlen, p + n + offsetof(struct obs_hdr, len), sizeof(rlen));
			if (n && n + rlen > OBS_MAX_RECORD)
				break;
			n += rlen;
		}
		chan_write(p, n);
		p += n;
		len -= n;
	}
}

/*
 * Sends the batch. Called with out_mu held and returns with it held, but drops it while
 * writing. until: give up (-1, the batch stays) if the writer is busy that long (exit paths).
 */
static int flush_locked(const struct timespec *until)
{
	char *b = out_buf;
	size_t len = out_len;

	if (!len)
		return 0;
	if (until ? pthread_mutex_timedlock(&wr_mu, until) : pthread_mutex_lock(&wr_mu))
		return -1;
	out_buf = b == out_bufs[0] ? out_bufs[1] : out_bufs[0];
	out_len = 0;
	pthread_mutex_unlock(&out_mu);
	chan_write_batch(b, len);
	pthread_mutex_unlock(&wr_mu);
	pthread_mutex_lock(&out_mu);
	return 0;
}

static void *flusher_main(void *unused)
{
	struct timespec delay = { 0, FLUSH_NS };

	(void)unused;
	pthread_mutex_lock(&out_mu);
	for (;;) {
		while (!out_len)
			pthread_cond_wait(&out_cv, &out_mu);
		pthread_mutex_unlock(&out_mu);
		nanosleep(&delay, NULL);
		pthread_mutex_lock(&out_mu);
		flush_locked(NULL);
	}
	return NULL;
}

/* Called with out_mu held. */
static void flusher_start(void)
{
	sigset_t all, old;
	pthread_attr_t attr;
	pthread_t th;

	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	if (pthread_create(&th, &attr, flusher_main, NULL) == 0) {
		flusher_state = 1;
		atomic_fetch_add(&own_threads, 1);
		pthread_setname_np(th, "uffd-observe");
	} else {
		flusher_state = -1;
	}
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
}

/* Fills in the header of a record about to be appended. */
static void fill_hdr(struct obs_hdr *h, uint16_t type, size_t len, int fd, uint32_t id, uint64_t t)
{
	h->type = type;
	h->len = (uint16_t)len;
	h->pid = my_pid;
	h->tid = cur_tid();
	h->fd = fd;
	h->uffd = id;
	if (!h->seq)
		h->seq = atomic_fetch_add(&rec_seq, 1) + 1;
	h->t = t;
}

/*
 * Where the last record appended to out_buf starts: valid while out_len is last_off plus that
 * record's length (a flush or child_init empties the buffer, every append moves it).
 */
static size_t last_off;

/* Appends a record whose header is filled in. Called with out_mu held; returns with it held. */
static void append_locked(const void *rec, size_t len, int urgent)
{
	int was_empty;

	while (out_len + len > OUT_BUF)
		flush_locked(NULL);
	was_empty = out_len == 0;
	memcpy(out_buf + out_len, rec, len);
	last_off = out_len;
	out_len += len;
	/* No thread of ours in a process that has no userfaultfd (nor in a fork's handler). */
	if (!urgent && !flusher_state && atomic_load_explicit(&any_tracked, memory_order_relaxed))
		flusher_start();
	/* Holding out_mu since the copy: this thread writes its own record before it returns. */
	if (urgent || flusher_state <= 0)
		flush_locked(NULL);
	else if (was_empty)
		pthread_cond_signal(&out_cv);
}

/* emit_urgent without the fork check: child_init's own record. */
static void emit_rec(void *rec, uint16_t type, size_t len, int fd, uint32_t id, uint64_t t,
		     int urgent)
{
	if (!atomic_load_explicit(&chan_ok, memory_order_relaxed))
		return;
	fill_hdr(rec, type, len, fd, id, t);
	pthread_mutex_lock(&out_mu);
	append_locked(rec, len, urgent);
	pthread_mutex_unlock(&out_mu);
}

static void emit_urgent(void *rec, uint16_t type, size_t len, int fd, uint32_t id, uint64_t t,
			int urgent)
{
	fork_check();
	emit_rec(rec, type, len, fd, id, t, urgent);
}

static void emit(void *rec, uint16_t type, size_t len, int fd, uint32_t id, uint64_t t)
{
	emit_urgent(rec, type, len, fd, id, t, 0);
}

/*
 * Runs of ioctls (wire.h, OBS_IOCTL_RUN). A handler pushing pages in the background makes long
 * runs of UFFDIO_COPY of consecutive pages, one thread after another: instead of a 96-byte
 * record each, an ioctl that continues the run the last record of the batch holds adds 8 bytes
 * to it. Only records that nobody waits for are merged (successful, not stopped, not urgent),
 * only into the record just before in the batch being filled, under out_mu: the channel carries
 * the same records in the same order, at the same time. Anything unusual starts a new record.
 */
struct ioctl_rec {
	struct obs_hdr h;
	struct obs_ioctl b;
};

struct run_head {
	struct obs_hdr h;
	struct obs_ioctl_run b;
};

/* Below 2^52, start + i * len and src + i * src_step are exact in the reader's doubles. */
#define RUN_ADDR_LIMIT	(1ull << 52)

static int run_member(const struct obs_ioctl *b)
{
	return (b->op == _UFFDIO_COPY || b->op == _UFFDIO_ZEROPAGE || b->op == _UFFDIO_CONTINUE) &&
	       !b->flags && !b->result && !b->err && b->len && b->done >= 0 &&
	       (uint64_t)b->done == b->len && b->dur <= UINT32_MAX &&
	       b->start < RUN_ADDR_LIMIT && b->src < RUN_ADDR_LIMIT;
}

/*
 * Called with out_mu held and r's header filled in: merges r into the last record of the batch
 * when that record is an ioctl (or a run) r continues. Returns 1 when merged.
 */
static int run_extend(const struct ioctl_rec *r)
{
	struct run_head run;
	struct obs_run_entry e;
	char *at = out_buf + last_off;
	uint64_t dt;

	if (flusher_state <= 0 || last_off >= out_len || !run_member(&r->b))
		return 0;
	/* The buffer is only char: records are read and written with memcpy. */
	memcpy(&run.h, at, sizeof(run.h));
	if (last_off + run.h.len != out_len || run.h.pid != r->h.pid || run.h.tid != r->h.tid ||
	    run.h.fd != r->h.fd || run.h.uffd != r->h.uffd || r->h.seq <= run.h.seq ||
	    r->h.t < run.h.t || r->h.t - run.h.t > UINT32_MAX)
		return 0;
	dt = r->h.t - run.h.t;
	e.dt = (uint32_t)dt;
	e.dur = (uint32_t)r->b.dur;
	if (run.h.type == OBS_IOCTL) {
		struct ioctl_rec prev;
		struct obs_run_entry first;

		/* A run of two is exactly as long as the ioctl record it replaces. */
		_Static_assert(sizeof(run) + 2 * sizeof(e) == sizeof(prev), "run of two != ioctl");
		memcpy(&prev, at, sizeof(prev));
		if (!run_member(&prev.b) || prev.b.op != r->b.op || prev.b.mode != r->b.mode ||
		    prev.b.len != r->b.len || r->h.seq != prev.h.seq + 1 ||
		    r->b.start != prev.b.start + prev.b.len ||
		    (r->b.op != _UFFDIO_COPY && r->b.src != prev.b.src))
			return 0;
		run.h.type = OBS_IOCTL_RUN;
		run.h.len = sizeof(prev);
		run.b.op = prev.b.op;
		run.b.count = 2;
		run.b.start = prev.b.start;
		run.b.len = prev.b.len;
		run.b.mode = prev.b.mode;
		run.b.src = prev.b.src;
		run.b.src_step = (int64_t)(r->b.src - prev.b.src);
		first.dt = 0;
		first.dur = (uint32_t)prev.b.dur;
		memcpy(at, &run, sizeof(run));
		memcpy(at + sizeof(run), &first, sizeof(first));
		memcpy(at + sizeof(run) + sizeof(first), &e, sizeof(e));
		return 1;
	}
	if (run.h.type != OBS_IOCTL_RUN)
		return 0;
	memcpy(&run.b, at + sizeof(run.h), sizeof(run.b));
	if (run.b.op != r->b.op || run.b.mode != r->b.mode || run.b.len != r->b.len ||
	    r->h.seq != run.h.seq + run.b.count ||
	    r->b.start != run.b.start + run.b.count * run.b.len ||
	    r->b.src != run.b.src + run.b.count * (uint64_t)run.b.src_step ||
	    run.b.count >= OBS_RUN_MAX || out_len + sizeof(e) > OUT_BUF)
		return 0;
	memcpy(out_buf + out_len, &e, sizeof(e));
	out_len += sizeof(e);
	run.h.len += sizeof(e);
	run.b.count++;
	memcpy(at, &run, sizeof(run));
	return 1;
}

/* emit() of a resolving ioctl record: it may extend a run instead. */
static void emit_ioctl(struct ioctl_rec *r, int fd, uint32_t id, uint64_t t)
{
	fork_check();
	if (!atomic_load_explicit(&chan_ok, memory_order_relaxed))
		return;
	fill_hdr(&r->h, OBS_IOCTL, sizeof(*r), fd, id, t);
	pthread_mutex_lock(&out_mu);
	if (!run_extend(r))
		append_locked(r, sizeof(*r), 0);
	pthread_mutex_unlock(&out_mu);
}

/*
 * Before exit and exec. A bounded wait for the lock: _exit from a signal handler that
 * interrupted this very thread inside emit() must not hang (that batch is then lost).
 */
static void flush_now(void)
{
	int err = errno;
	struct timespec until;

	fork_check();
	fork_check_pid();
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_nsec += 100000000L;
	if (until.tv_nsec >= 1000000000L) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000L;
	}
	if (pthread_mutex_timedlock(&out_mu, &until) == 0) {
		flush_locked(&until);
		/* A batch another thread is writing must be out too: exec and exit end that thread. */
		if (pthread_mutex_timedlock(&wr_mu, &until) == 0)
			pthread_mutex_unlock(&wr_mu);
		pthread_mutex_unlock(&out_mu);
	}
	errno = err;
}

/* Reads len bytes of our own memory without faulting on a bad pointer. */
static int safe_copy(void *dst, const void *src, size_t len)
{
	struct iovec local = { dst, len }, remote = { (void *)src, len };

	return process_vm_readv(getpid(), &local, 1, &remote, 1, 0) == (ssize_t)len ? 0 : -1;
}

/* Reads an ioctl argument after the call: directly unless the kernel said it is bad. */
static int arg_copy(void *dst, const void *src, size_t len, int r, int err)
{
	if (r == 0 || err != EFAULT) {
		memcpy(dst, src, len);
		return 0;
	}
	return safe_copy(dst, src, len);
}

static int is_uffd(int fd)
{
	char path[64], target[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return 0;
	target[n] = 0;
	return strcmp(target, "anon_inode:[userfaultfd]") == 0;
}

static int is_uffd_dev(int fd)
{
	char path[64], target[64];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return 0;
	target[n] = 0;
	return strcmp(target, "/dev/userfaultfd") == 0;
}

static void ctl_start(void);

static uint32_t track_new(int fd, uint32_t how, uint32_t flags, int r, int err, uint64_t t,
			  uint32_t from_id)
{
	struct {
		struct obs_hdr h;
		struct obs_uffd b;
	} rec = { 0 };
	uint32_t id = 0;

	if (r >= 0) {
		id = atomic_fetch_add(&next_id, 1) + 1;
		fd_set_id(fd, id);
		atomic_store(&any_tracked, 1);
		if (ctl_fd >= 0 || ctl_path[0])
			pthread_once(&ctl_once, ctl_start);
	}
	rec.b.how = how;
	rec.b.flags = flags;
	rec.b.result = r < 0 ? -1 : r;
	rec.b.err = r < 0 ? err : 0;
	rec.b.from_pid = from_id ? my_pid : 0;
	rec.b.from_uffd = from_id;
	/*
	 * At once, not batched: a child copied from this process by a clone we do not see (inline
	 * system call, _Fork()) sends its fork record without waiting for our batch, and the
	 * observer can give the child this userfaultfd only if it knows it by then.
	 */
	emit_urgent(&rec, OBS_UFFD, sizeof(rec), r < 0 ? -1 : fd, id, t, 1);
	return id;
}

/* ---- stop on read ---- */

/* Reads exactly len bytes of the control pipe; -1 at its end or on an error. */
static int ctl_read_full(void *buf, size_t len)
{
	size_t got = 0;

	while (got < len) {
		ssize_t n = real_read(ctl_fd, (char *)buf + got, len - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return -1;
		got += (size_t)n;
	}
	return 0;
}

/*
 * OBS_CMD_RESOLVE: the debugger resolves a stopped read's fault. The ioctl is made here, in
 * the control thread, on the userfaultfd the stopped thread read (it cannot be closed under
 * us: its reader is stopped, though another thread may still close it: then EBADF). The
 * result goes back as an OBS_RESOLVE record; the stopped thread stays stopped.
 */
static void ctl_resolve(const struct obs_ctl *c, const struct obs_ctl_resolve *x)
{
	static unsigned char *src;
	static size_t src_len;
	struct {
		struct obs_hdr h;
		struct obs_resolve b;
	} rec = { 0 };
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	int fd = -1, r = -1, err = 0;
	uint32_t id = 0;

	pthread_mutex_lock(&stop_mu);
	for (int i = 0; i < MAX_STOPPED; i++) {
		if (stopped[i].used && !stopped[i].released && stopped[i].seq == (uint32_t)c->seq) {
			fd = stopped[i].fd;
			id = stopped[i].id;
			break;
		}
	}
	pthread_mutex_unlock(&stop_mu);
	rec.b.req = c->arg;
	rec.b.start = x->addr;
	rec.b.len = x->len;
	rec.b.stop_seq = (uint32_t)c->seq;
	if (fd < 0) {
		err = ESRCH;
	} else if (!x->len || x->len % page || x->addr % page) {
		err = EINVAL;
	} else if (!REAL(ioctl)) {
		err = ENOSYS;
	} else if (x->how == OBS_RESOLVE_COPY) {
		struct uffdio_copy a = { .dst = x->addr, .len = x->len };

		if (src_len < x->len) {
			void *p = mmap(NULL, x->len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

			if (p == MAP_FAILED) {
				err = errno;
				goto out;
			}
			if (src)
				munmap(src, src_len);
			src = p;
			src_len = x->len;
		}
		memset(src, (int)(x->pattern & 0xff), x->len);
		a.src = (uintptr_t)src;
		rec.b.op = _UFFDIO_COPY;
		r = real_ioctl(fd, UFFDIO_COPY, &a);
		err = r < 0 ? errno : 0;
		rec.b.done = a.copy;
	} else if (x->how == OBS_RESOLVE_ZEROPAGE) {
		struct uffdio_zeropage a = { .range = { .start = x->addr, .len = x->len } };

		rec.b.op = _UFFDIO_ZEROPAGE;
		r = real_ioctl(fd, UFFDIO_ZEROPAGE, &a);
		err = r < 0 ? errno : 0;
		rec.b.done = a.zeropage;
	} else if (x->how == OBS_RESOLVE_WAKE) {
		struct uffdio_range a = { .start = x->addr, .len = x->len };

		rec.b.op = _UFFDIO_WAKE;
		r = real_ioctl(fd, UFFDIO_WAKE, &a);
		err = r < 0 ? errno : 0;
		rec.b.done = r < 0 ? 0 : (int64_t)x->len;
	} else {
		err = EINVAL;
	}
out:
	rec.b.result = r < 0 ? -1 : 0;
	rec.b.err = r < 0 ? err : 0;
	emit_urgent(&rec, OBS_RESOLVE, sizeof(rec), fd, id, now_ns(), 1);
}

static void *ctl_main(void *unused)
{
	struct obs_ctl c;
	size_t got = 0;

	(void)unused;
	for (;;) {
		ssize_t n;

		if (!REAL(read))
			break;
		n = real_read(ctl_fd, (char *)&c + got, sizeof(c) - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		got += (size_t)n;
		if (got < sizeof(c))
			continue;
		got = 0;
		if (c.cmd == OBS_CMD_RESOLVE) {
			struct obs_ctl_resolve x;

			if (ctl_read_full(&x, sizeof(x)) < 0)
				break;
			ctl_resolve(&c, &x);
			continue;
		}
		pthread_mutex_lock(&stop_mu);
		if (c.cmd == OBS_CMD_STOP_MASK) {
			atomic_store(&stop_mask, c.arg);
		} else {
			for (int i = 0; i < MAX_STOPPED; i++) {
				if (stopped[i].used &&
				    (c.cmd == OBS_CMD_CONTINUE_ALL || stopped[i].seq == (uint32_t)c.seq))
					stopped[i].released = 1;
			}
			pthread_cond_broadcast(&stop_cv);
		}
		pthread_mutex_unlock(&stop_mu);
	}
	/* The launcher is gone: nobody may stay stopped. */
	pthread_mutex_lock(&stop_mu);
	ctl_alive = 0;
	atomic_store(&stop_mask, 0);
	pthread_cond_broadcast(&stop_cv);
	pthread_mutex_unlock(&stop_mu);
	atomic_fetch_sub(&own_threads, 1);
	return NULL;
}

static int lift_fd(int fd, int cloexec);

/*
 * A process other than the first (forked, exec'd, or handed its userfaultfd over SCM_RIGHTS)
 * has no control descriptor: it connects to the launcher's socket, says its pid, and waits
 * (bounded) for the stop mask, so that its first read already stops as the debugger asked.
 */
static int ctl_connect(void)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	struct obs_ctl hello = { .cmd = OBS_CTL_HELLO, .arg = my_pid }, c;
	size_t got = 0;
	int fd;

	memcpy(a.sun_path, ctl_path, sizeof(a.sun_path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0 ||
	    send(fd, &hello, sizeof(hello), MSG_NOSIGNAL) != (ssize_t)sizeof(hello)) {
		fprintf(stderr, LOG_PREFIX "[%d]: cannot reach the launcher at %s (%s): this process does not stop\n",
			getpid(), ctl_path, strerror(errno));
		if (fd >= 0 && REAL(close))
			real_close(fd);
		return -1;
	}
	while (got < sizeof(c)) {
		struct pollfd pfd = { .fd = fd, .events = POLLIN };
		ssize_t n;

		if (poll(&pfd, 1, 2000) <= 0)
			break;	/* no answer: run on, the mask comes with the control thread */
		n = recv(fd, (char *)&c + got, sizeof(c) - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
	}
	if (got && (got < sizeof(c) || c.cmd != OBS_CMD_STOP_MASK)) {
		fprintf(stderr, LOG_PREFIX "[%d]: the launcher's first answer is not a stop mask: this process does not stop\n",
			getpid());
		if (REAL(close))
			real_close(fd);
		return -1;
	}
	if (got)
		atomic_store(&stop_mask, c.arg);
	ctl_fd = lift_fd(fd, 1);
	return 0;
}

static void ctl_start(void)
{
	sigset_t all, old;
	pthread_t th;
	pthread_attr_t attr;
	int err;

	if (ctl_fd < 0 && (!ctl_path[0] || ctl_connect() < 0))
		return;
	/* The control thread takes none of the program's signals. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	pthread_attr_init(&attr);
	pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	pthread_mutex_lock(&stop_mu);
	ctl_alive = 1;
	pthread_mutex_unlock(&stop_mu);
	atomic_fetch_add(&own_threads, 1);
	err = pthread_create(&th, &attr, ctl_main, NULL);
	pthread_attr_destroy(&attr);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (err) {
		atomic_fetch_sub(&own_threads, 1);
		fprintf(stderr, LOG_PREFIX "[%d]: cannot start the control thread: %s; stopping disabled\n",
			getpid(), strerror(err));
		pthread_mutex_lock(&stop_mu);
		ctl_alive = 0;
		atomic_store(&stop_mask, 0);
		pthread_mutex_unlock(&stop_mu);
	}
}

static int stop_slot(uint32_t seq, int fd, uint32_t id)
{
	int slot = -1;

	pthread_mutex_lock(&stop_mu);
	for (int i = 0; ctl_alive && i < MAX_STOPPED; i++) {
		if (!stopped[i].used) {
			stopped[i].used = 1;
			stopped[i].released = 0;
			stopped[i].seq = seq;
			stopped[i].fd = fd;
			stopped[i].id = id;
			slot = i;
			break;
		}
	}
	pthread_mutex_unlock(&stop_mu);
	return slot;
}

static void stop_wait(int slot, int fd, uint32_t id)
{
	struct {
		struct obs_hdr h;
		struct obs_continued b;
	} rec = { 0 };

	pthread_mutex_lock(&stop_mu);
	while (ctl_alive && !stopped[slot].released)
		pthread_cond_wait(&stop_cv, &stop_mu);
	rec.b.stop_seq = stopped[slot].seq;
	rec.b.why = stopped[slot].released ? 1 : 2;
	stopped[slot].used = 0;
	pthread_mutex_unlock(&stop_mu);
	emit(&rec, OBS_CONTINUED, sizeof(rec), fd, id, now_ns());
}

static int wants_stop(const struct uffd_msg *m, unsigned int n)
{
	unsigned int mask = atomic_load_explicit(&stop_mask, memory_order_relaxed);

	if (!mask)
		return 0;
	for (unsigned int i = 0; i < n; i++) {
		uint64_t f = m[i].arg.pagefault.flags;
		unsigned int kind;

		if (m[i].event != UFFD_EVENT_PAGEFAULT)
			continue;
		kind = (f & UFFD_PAGEFAULT_FLAG_WP) ? OBS_STOP_WP :
		       (f & UFFD_PAGEFAULT_FLAG_MINOR) ? OBS_STOP_MINOR : OBS_STOP_MISSING;
		if (mask & kind)
			return 1;
	}
	return 0;
}

/* ---- reads ---- */

#define MSGS_PER_RECORD ((OBS_MAX_RECORD - sizeof(struct obs_hdr) - sizeof(struct obs_read)) / \
			 sizeof(struct uffd_msg))

/* Reports the messages of one read (msgs: a contiguous copy of what was read). */
static void note_read(int fd, uint32_t id, const void *buf, ssize_t r, int err, uint16_t via,
		      uint64_t t)
{
	struct {
		struct obs_hdr h;
		struct obs_read b;
		struct uffd_msg m[MSGS_PER_RECORD];
	} rec;
	size_t total = r > 0 ? (size_t)r / sizeof(struct uffd_msg) : 0, done = 0;

	if (r < 0 && (err == EAGAIN || err == EINTR))
		return;	/* a non-blocking poll loop's empty reads: not worth a record each */
	do {
		size_t n = total - done < MSGS_PER_RECORD ? total - done : MSGS_PER_RECORD;
		int slot = -1;

		memset(&rec.h, 0, sizeof(rec.h) + sizeof(rec.b));
		rec.b.result = r < 0 ? -1 : r;
		rec.b.err = r < 0 ? err : 0;
		rec.b.via = via;
		rec.b.nmsg = (uint16_t)n;
		memcpy(rec.m, (const struct uffd_msg *)buf + done, n * sizeof(struct uffd_msg));
		for (size_t i = 0; i < n; i++) {
			if (rec.m[i].event == UFFD_EVENT_FORK)
				track_new((int)rec.m[i].arg.fork.ufd, OBS_HOW_FORK_EVENT, 0,
					  (int)rec.m[i].arg.fork.ufd, 0, t, id);
		}
		if (n && wants_stop(rec.m, (unsigned int)n)) {
			rec.h.seq = atomic_fetch_add(&rec_seq, 1) + 1;
			slot = stop_slot(rec.h.seq, fd, id);
			if (slot >= 0)
				rec.b.flags |= OBS_READ_STOPPED;
		}
		emit_urgent(&rec, OBS_READ, sizeof(rec.h) + sizeof(rec.b) + n * sizeof(struct uffd_msg), fd, id,
			    t, slot >= 0);
		if (slot >= 0)
			stop_wait(slot, fd, id);
		done += n;
	} while (done < total);
}

static void note_readv(int fd, uint32_t id, const struct iovec *iov, int cnt, ssize_t r, int err,
		       uint16_t via, uint64_t t)
{
	char buf[64 * sizeof(struct uffd_msg)];
	size_t left = r > 0 ? (size_t)r : 0, off = 0;

	if (r <= 0) {
		note_read(fd, id, NULL, r, err, via, t);
		return;
	}
	/* Gather in pieces of whole messages; iov is valid: the kernel just wrote through it. */
	for (int i = 0; left && i < cnt;) {
		size_t fill = 0;

		while (left && fill < sizeof(buf) && i < cnt) {
			size_t take = iov[i].iov_len - off;

			if (take > left)
				take = left;
			if (take > sizeof(buf) - fill)
				take = sizeof(buf) - fill;
			memcpy(buf + fill, (char *)iov[i].iov_base + off, take);
			fill += take;
			left -= take;
			off += take;
			if (off == iov[i].iov_len) {
				i++;
				off = 0;
			}
		}
		note_read(fd, id, buf, (ssize_t)fill, 0, via, t);
	}
}

ssize_t read(int fd, void *buf, size_t n)
{
	uint32_t id = fd_id(fd);
	uint64_t t;
	ssize_t r;
	int err;

	fork_check();
	if (!REAL(read))
		return errno = ENOSYS, -1;
	if (!id)
		return real_read(fd, buf, n);
	fork_check_pid();
	r = real_read(fd, buf, n);
	err = errno;
	t = now_ns();
	note_read(fd, id, buf, r, err, OBS_VIA_READ, t);
	errno = err;
	return r;
}

ssize_t __read_chk(int fd, void *buf, size_t n, size_t buflen)
{
	uint32_t id = fd_id(fd);
	uint64_t t;
	ssize_t r;
	int err;

	fork_check();
	if (!REAL(__read_chk))
		return errno = ENOSYS, -1;
	if (!id)
		return real___read_chk(fd, buf, n, buflen);
	fork_check_pid();
	r = real___read_chk(fd, buf, n, buflen);
	err = errno;
	t = now_ns();
	note_read(fd, id, buf, r, err, OBS_VIA_READ_CHK, t);
	errno = err;
	return r;
}

ssize_t readv(int fd, const struct iovec *iov, int cnt)
{
	uint32_t id = fd_id(fd);
	uint64_t t;
	ssize_t r;
	int err;

	fork_check();
	if (!REAL(readv))
		return errno = ENOSYS, -1;
	if (!id)
		return real_readv(fd, iov, cnt);
	fork_check_pid();
	r = real_readv(fd, iov, cnt);
	err = errno;
	t = now_ns();
	note_readv(fd, id, iov, cnt, r, err, OBS_VIA_READV, t);
	errno = err;
	return r;
}

/* ---- ioctls ---- */

/* Performs the ioctl through libc's ioctl or syscall, as the program did. */
static long do_ioctl(int via_syscall, int fd, unsigned long req, void *arg)
{
	if (via_syscall)
		return REAL(syscall) ? real_syscall(SYS_ioctl, fd, req, arg) : (errno = ENOSYS, -1);
	return REAL(ioctl) ? real_ioctl(fd, req, arg) : (errno = ENOSYS, -1);
}

static void note_range_ioctl(int fd, uint32_t id, uint32_t op, const void *arg, int r, int err,
			     uint64_t t, uint64_t dur)
{
	struct ioctl_rec rec = { 0 };
	union {
		struct uffdio_range range;
		struct uffdio_copy copy;
		struct uffdio_zeropage zero;
		struct uffdio_writeprotect wp;
		struct uffdio_continue cont;
		struct uffdio_move move;
		struct uffdio_poison poison;
	} a;
	size_t size;

	switch (op) {
	case _UFFDIO_WAKE:
		size = sizeof(a.range);
		break;
	case _UFFDIO_COPY:
		size = sizeof(a.copy);
		break;
	case _UFFDIO_ZEROPAGE:
		size = sizeof(a.zero);
		break;
	case _UFFDIO_WRITEPROTECT:
		size = sizeof(a.wp);
		break;
	case _UFFDIO_CONTINUE:
		size = sizeof(a.cont);
		break;
	case _UFFDIO_MOVE:
		size = sizeof(a.move);
		break;
	default:
		size = sizeof(a.poison);
		break;
	}
	memset(&a, 0, sizeof(a));
	if (arg_copy(&a, arg, size, r, err) < 0)
		memset(&a, 0, sizeof(a));
	rec.b.op = op;
	switch (op) {
	case _UFFDIO_COPY:
		rec.b.start = a.copy.dst;
		rec.b.len = a.copy.len;
		rec.b.mode = a.copy.mode;
		rec.b.src = a.copy.src;
		rec.b.done = a.copy.copy;
		break;
	case _UFFDIO_MOVE:
		rec.b.start = a.move.dst;
		rec.b.len = a.move.len;
		rec.b.mode = a.move.mode;
		rec.b.src = a.move.src;
		rec.b.done = a.move.move;
		break;
	default:
		/* Every other one starts with a uffdio_range, then mode where it has one. */
		rec.b.start = a.range.start;
		rec.b.len = a.range.len;
		if (op == _UFFDIO_ZEROPAGE) {
			rec.b.mode = a.zero.mode;
			rec.b.done = a.zero.zeropage;
		} else if (op == _UFFDIO_WRITEPROTECT) {
			rec.b.mode = a.wp.mode;
		} else if (op == _UFFDIO_CONTINUE) {
			rec.b.mode = a.cont.mode;
			rec.b.done = a.cont.mapped;
		} else if (op == _UFFDIO_POISON) {
			rec.b.mode = a.poison.mode;
			rec.b.done = a.poison.updated;
		}
		break;
	}
	rec.b.result = r;
	rec.b.err = r < 0 ? err : 0;
	rec.b.dur = dur;
	/* Stop on a failed resolution; EAGAIN is not a failure (the handler retries). */
	if (r < 0 && err != EAGAIN &&
	    (atomic_load_explicit(&stop_mask, memory_order_relaxed) & OBS_STOP_IOCTL_ERROR)) {
		int slot;

		rec.h.seq = atomic_fetch_add(&rec_seq, 1) + 1;
		slot = stop_slot(rec.h.seq, fd, id);
		if (slot >= 0)
			rec.b.flags |= OBS_IOCTL_STOPPED;
		emit_urgent(&rec, OBS_IOCTL, sizeof(rec), fd, id, t, slot >= 0);
		if (slot >= 0)
			stop_wait(slot, fd, id);
		return;
	}
	emit_ioctl(&rec, fd, id, t);
}

static long observed_ioctl(int via_syscall, int fd, uint32_t id, unsigned long req, void *arg)
{
	uint64_t t = now_ns(), dur;
	struct uffdio_api api_in = { 0 };
	long r;
	int err;

	if (req == USERFAULTFD_IOC_NEW) {
		r = do_ioctl(via_syscall, fd, req, arg);
		err = errno;
		if ((r >= 0 && is_uffd((int)r)) || (r < 0 && is_uffd_dev(fd)))
			track_new((int)r, OBS_HOW_DEV, (uint32_t)(uintptr_t)arg, (int)r, err, t, 0);
		errno = err;
		return r;
	}
	if (req == UFFDIO_API && safe_copy(&api_in, arg, sizeof(api_in)) < 0)
		memset(&api_in, 0, sizeof(api_in));
	r = do_ioctl(via_syscall, fd, req, arg);
	err = errno;
	dur = now_ns() - t;
	switch (req) {
	case UFFDIO_API: {
		struct {
			struct obs_hdr h;
			struct obs_api b;
		} rec = { 0 };
		struct uffdio_api out = { 0 };

		if (r == 0)
			memcpy(&out, arg, sizeof(out));
		rec.b.api = api_in.api;
		rec.b.requested = api_in.features;
		rec.b.features = out.features;
		rec.b.ioctls = out.ioctls;
		rec.b.result = (int32_t)r;
		rec.b.err = r < 0 ? err : 0;
		emit(&rec, OBS_API, sizeof(rec), fd, id, t);
		break;
	}
	case UFFDIO_REGISTER: {
		struct {
			struct obs_hdr h;
			struct obs_register b;
		} rec = { 0 };
		struct uffdio_register reg = { 0 };

		if (arg_copy(&reg, arg, sizeof(reg), (int)r, err) < 0)
			memset(&reg, 0, sizeof(reg));
		rec.b.start = reg.range.start;
		rec.b.len = reg.range.len;
		rec.b.mode = reg.mode;
		rec.b.ioctls = r == 0 ? reg.ioctls : 0;
		rec.b.result = (int32_t)r;
		rec.b.err = r < 0 ? err : 0;
		emit(&rec, OBS_REGISTER, sizeof(rec), fd, id, t);
		break;
	}
	case UFFDIO_UNREGISTER: {
		struct {
			struct obs_hdr h;
			struct obs_register b;
		} rec = { 0 };
		struct uffdio_range range = { 0 };

		if (arg_copy(&range, arg, sizeof(range), (int)r, err) < 0)
			memset(&range, 0, sizeof(range));
		rec.b.start = range.start;
		rec.b.len = range.len;
		rec.b.result = (int32_t)r;
		rec.b.err = r < 0 ? err : 0;
		emit(&rec, OBS_UNREGISTER, sizeof(rec), fd, id, t);
		break;
	}
	case UFFDIO_WAKE:
	case UFFDIO_COPY:
	case UFFDIO_ZEROPAGE:
	case UFFDIO_WRITEPROTECT:
	case UFFDIO_CONTINUE:
	case UFFDIO_MOVE:
	case UFFDIO_POISON:
		note_range_ioctl(fd, id, _IOC_NR(req), arg, (int)r, err, t, dur);
		break;
	default:
		break;	/* FIONBIO, FIONREAD, ...: not the handler's business */
	}
	errno = err;
	return r;
}

int ioctl(int fd, unsigned long req, ...)
{
	va_list ap;
	void *arg;
	uint32_t id = fd_id(fd);

	va_start(ap, req);
	arg = va_arg(ap, void *);
	va_end(ap);
	fork_check();
	if (!id && req != USERFAULTFD_IOC_NEW)
		return REAL(ioctl) ? real_ioctl(fd, req, arg) : (errno = ENOSYS, -1);
	fork_check_pid();
	if (!atomic_load_explicit(&chan_ok, memory_order_relaxed))
		return (int)do_ioctl(0, fd, req, arg);
	return (int)observed_ioctl(0, fd, id, req, arg);
}

/* ---- descriptors ---- */

static void env_set_fd(const char *name, int fd);

static int is_ours(int fd)
{
	return fd >= 0 && (fd == chan_fd || fd == ctl_fd);
}

/* The program wants this number: move our channel out of its way first. */
static void make_room(int fd)
{
	int nfd;

	if (fd < 0 || (fd != chan_fd && fd != ctl_fd))
		return;
	/* Nobody may write to it meanwhile. */
	pthread_mutex_lock(&out_mu);
	pthread_mutex_lock(&wr_mu);
	nfd = REAL(fcntl) ? real_fcntl(fd, fd == chan_fd ? F_DUPFD : F_DUPFD_CLOEXEC, fd + 1) : -1;
	if (nfd < 0) {
		pthread_mutex_unlock(&wr_mu);
		pthread_mutex_unlock(&out_mu);
		return;
	}
	if (fd == chan_fd) {
		/* Programs exec'd later find the channel under its new number. */
		chan_fd = nfd;
		env_set_fd("UFFD_OBSERVE_FD", nfd);
	} else {
		ctl_fd = nfd;
	}
	if (REAL(close))
		real_close(fd);
	pthread_mutex_unlock(&wr_mu);
	pthread_mutex_unlock(&out_mu);
}

static void note_close(int fd, uint32_t id, int r, int err, uint64_t t)
{
	struct {
		struct obs_hdr h;
		struct obs_close b;
	} rec = { 0 };

	/* Linux releases the descriptor even when close fails, unless it was not open. */
	if (r < 0 && err == EBADF)
		return;
	fd_set_id(fd, 0);
	rec.b.result = r;
	rec.b.err = r < 0 ? err : 0;
	emit(&rec, OBS_CLOSE, sizeof(rec), fd, id, t);
}

static void note_dup(int oldfd, uint32_t id, int newfd, uint64_t t)
{
	struct {
		struct obs_hdr h;
		struct obs_dup b;
	} rec = { 0 };
	uint32_t had = fd_id(newfd);

	if (had && newfd != oldfd) {
		/* dup2/dup3 over a userfaultfd closes it. */
		note_close(newfd, had, 0, 0, t);
	}
	if (!id)
		return;
	fd_set_id(newfd, id);
	rec.b.newfd = newfd;
	emit(&rec, OBS_DUP, sizeof(rec), oldfd, id, t);
}

int close(int fd)
{
	uint32_t id = fd_id(fd);
	int r, err;

	fork_check();
	if (!REAL(close))
		return errno = ENOSYS, -1;
	if (is_ours(fd))
		return errno = EBADF, -1;	/* not open as far as the program knows */
	r = real_close(fd);
	if (id) {
		err = errno;
		note_close(fd, id, r, err, now_ns());
		errno = err;
	}
	return r;
}

static void note_close_range(unsigned int first, unsigned int last, int flags)
{
	uint64_t t = now_ns();

	if (flags & CLOSE_RANGE_CLOEXEC)
		return;
	for (unsigned int fd = first; fd <= last && fd < MAXFD; fd++) {
		uint32_t id = fd_id((int)fd);

		if (id)
			note_close((int)fd, id, 0, 0, t);
	}
}

/*
 * close_range over [first, last] except our descriptors (daemons close everything before
 * exec; the channel must survive for the children to report). via_syscall: the program used
 * syscall(2).
 */
static int close_range_sparing(unsigned int first, unsigned int last, int flags, int via_syscall)
{
	unsigned int skip[2];
	int n = 0, r = 0, err = 0;

	if (chan_fd >= 0 && (unsigned int)chan_fd >= first && (unsigned int)chan_fd <= last)
		skip[n++] = (unsigned int)chan_fd;
	if (ctl_fd >= 0 && (unsigned int)ctl_fd >= first && (unsigned int)ctl_fd <= last)
		skip[n++] = (unsigned int)ctl_fd;
	if (n == 2 && skip[0] > skip[1]) {
		unsigned int x = skip[0];

		skip[0] = skip[1];
		skip[1] = x;
	}
	for (int i = 0; i <= n; i++) {
		unsigned int lo = i ? skip[i - 1] + 1 : first;
		unsigned int hi = i < n ? skip[i] - 1 : last;
		int rr;

		if (i && skip[i - 1] == UINT_MAX)
			break;
		if ((i < n && skip[i] == 0) || lo > hi)
			continue;
		rr = via_syscall ? (int)real_syscall(SYS_close_range, lo, hi, flags) : real_close_range(lo, hi, flags);
		if (rr < 0 && !r) {
			r = rr;
			err = errno;
		}
	}
	if (r == 0)
		note_close_range(first, last, flags);
	errno = err;
	return r;
}

int close_range(unsigned int first, unsigned int last, int flags)
{
	int saved = errno, r;

	fork_check();
	if (!REAL(close_range))
		return errno = ENOSYS, -1;
	r = close_range_sparing(first, last, flags, 0);
	if (r == 0)
		errno = saved;
	return r;
}

void closefrom(int lowfd)
{
	int err = errno;

	fork_check();
	if (!REAL(close_range) || lowfd < 0)
		return;
	close_range_sparing((unsigned int)lowfd, UINT_MAX, 0, 0);
	errno = err;
}

int dup(int fd)
{
	uint32_t id = fd_id(fd);
	int r, err;

	fork_check();
	if (!REAL(dup))
		return errno = ENOSYS, -1;
	r = real_dup(fd);
	if (id && r >= 0) {
		err = errno;
		note_dup(fd, id, r, now_ns());
		errno = err;
	}
	return r;
}

int dup2(int fd, int nfd)
{
	uint32_t id = fd_id(fd);
	int r, err;

	fork_check();
	if (!REAL(dup2))
		return errno = ENOSYS, -1;
	if (fd != nfd)
		make_room(nfd);
	r = real_dup2(fd, nfd);
	if (r >= 0 && (id || fd_id(nfd)) && fd != nfd) {
		err = errno;
		note_dup(fd, id, r, now_ns());
		errno = err;
	}
	return r;
}

int dup3(int fd, int nfd, int flags)
{
	uint32_t id = fd_id(fd);
	int r, err;

	fork_check();
	if (!REAL(dup3))
		return errno = ENOSYS, -1;
	if (fd != nfd)
		make_room(nfd);
	r = real_dup3(fd, nfd, flags);
	if (r >= 0 && (id || fd_id(nfd))) {
		err = errno;
		note_dup(fd, id, r, now_ns());
		errno = err;
	}
	return r;
}

static int fcntl_common(int (*real)(int, int, ...), int fd, int cmd, long arg)
{
	uint32_t id = fd_id(fd);
	int r, err;

	fork_check();
	if (!real)
		return errno = ENOSYS, -1;
	r = real(fd, cmd, arg);
	if (id && r >= 0 && (cmd == F_DUPFD || cmd == F_DUPFD_CLOEXEC)) {
		err = errno;
		note_dup(fd, id, r, now_ns());
		errno = err;
	}
	return r;
}

int fcntl(int fd, int cmd, ...)
{
	va_list ap;
	long arg;

	va_start(ap, cmd);
	arg = va_arg(ap, long);
	va_end(ap);
	return fcntl_common(REAL(fcntl), fd, cmd, arg);
}

int fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	long arg;

	va_start(ap, cmd);
	arg = va_arg(ap, long);
	va_end(ap);
	return fcntl_common(REAL(fcntl64), fd, cmd, arg);
}

/* ---- SCM_RIGHTS ---- */

static void note_recvmsg(const struct msghdr *msg, uint64_t t)
{
	struct cmsghdr *c;

	if (!msg->msg_control || msg->msg_controllen < sizeof(struct cmsghdr))
		return;
	for (c = CMSG_FIRSTHDR(msg); c; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
		size_t n;
		int fds[256];

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0))
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		if (n > 256)
			n = 256;
		memcpy(fds, CMSG_DATA(c), n * sizeof(int));
		for (size_t i = 0; i < n; i++) {
			if (fds[i] >= 0 && is_uffd(fds[i]))
				track_new(fds[i], OBS_HOW_SCM, 0, fds[i], 0, t, 0);
		}
	}
}

/*
 * The userfaultfds a sendmsg is about to pass. Read before the call (with safe copies: the
 * pointers are unchecked yet), so the OBS_SEND record is on the channel before the receiver
 * can report what it got.
 */
static int send_scan(const struct msghdr *umsg, int *fds, uint32_t *ids, int max)
{
	struct msghdr m;
	union {
		char buf[1024];
		struct cmsghdr align;
	} u;
	struct cmsghdr *c;
	int found = 0;

	if (!atomic_load_explicit(&any_tracked, memory_order_relaxed) || safe_copy(&m, umsg, sizeof(m)) < 0)
		return 0;
	if (!m.msg_control || m.msg_controllen < sizeof(struct cmsghdr))
		return 0;
	if (m.msg_controllen > sizeof(u.buf))
		m.msg_controllen = sizeof(u.buf);
	if (safe_copy(u.buf, m.msg_control, m.msg_controllen) < 0)
		return 0;
	m.msg_control = u.buf;
	for (c = CMSG_FIRSTHDR(&m); c; c = CMSG_NXTHDR(&m, c)) {
		size_t n;

		if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS || c->cmsg_len < CMSG_LEN(0) ||
		    (char *)c + c->cmsg_len > u.buf + m.msg_controllen)
			continue;
		n = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
		for (size_t i = 0; i < n && found < max; i++) {
			int fd;

			memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
			if (fd_id(fd)) {
				fds[found] = fd;
				ids[found++] = fd_id(fd);
			}
		}
	}
	return found;
}

static void note_send(const int *fds, const uint32_t *ids, int n, int r, int err, uint64_t t)
{
	for (int i = 0; i < n; i++) {
		struct {
			struct obs_hdr h;
			struct obs_send b;
		} rec = { 0 };

		rec.b.result = r;
		rec.b.err = r < 0 ? err : 0;
		/* At once: it must reach the channel before the receiver's OBS_UFFD can. */
		emit_urgent(&rec, OBS_SEND, sizeof(rec), fds[i], ids[i], t, 1);
	}
}

ssize_t recvmsg(int fd, struct msghdr *msg, int flags)
{
	uint64_t t;
	ssize_t r;
	int err;

	fork_check();
	if (!REAL(recvmsg))
		return errno = ENOSYS, -1;
	if (!atomic_load_explicit(&chan_ok, memory_order_relaxed))
		return real_recvmsg(fd, msg, flags);
	t = now_ns();
	r = real_recvmsg(fd, msg, flags);
	err = errno;
	if (r >= 0)
		note_recvmsg(msg, t);
	errno = err;
	return r;
}

ssize_t sendmsg(int fd, const struct msghdr *msg, int flags)
{
	uint64_t t;
	ssize_t r;
	int err;

	fork_check();
	if (!REAL(sendmsg))
		return errno = ENOSYS, -1;
	if (!atomic_load_explicit(&chan_ok, memory_order_relaxed))
		return real_sendmsg(fd, msg, flags);
	int fds[16], n;
	uint32_t ids[16];

	t = now_ns();
	n = send_scan(msg, fds, ids, 16);
	note_send(fds, ids, n, 0, 0, t);
	r = real_sendmsg(fd, msg, flags);
	err = errno;
	if (r < 0)
		note_send(fds, ids, n, -1, err, now_ns());
	errno = err;
	return r;
}

/* ---- syscall(2): raw users, dispatched by number ---- */

static void before_fork(void);
static void after_fork_parent(void);
static void after_fork_child(void);

/*
 * fork, or clone or clone3 without CLONE_VM, through syscall(2): as fork() does with our
 * pthread_atfork handlers, so that the child's fork record follows everything the parent
 * recorded before.
 */
static long copy_syscall(long n, const long *a)
{
	long r;
	int err;

	before_fork();
	r = real_syscall(n, a[0], a[1], a[2], a[3], a[4], a[5]);
	err = errno;
	if (r == 0)
		after_fork_child();
	else
		after_fork_parent();
	errno = err;
	return r;
}

long syscall(long n, ...)
{
	va_list ap;
	long a[6], r;
	int err;
	uint32_t id;
	uint64_t t;

	va_start(ap, n);
	for (int i = 0; i < 6; i++)
		a[i] = va_arg(ap, long);
	va_end(ap);
	fork_check();
	if (!REAL(syscall))
		return errno = ENOSYS, -1;
	if (!atomic_load_explicit(&chan_ok, memory_order_relaxed))
		return real_syscall(n, a[0], a[1], a[2], a[3], a[4], a[5]);
	switch (n) {
#ifdef SYS_fork
	case SYS_fork:
		return copy_syscall(n, a);
#endif
	case SYS_clone:
		if ((unsigned long)a[0] & CLONE_VM)
			break;
		return copy_syscall(n, a);
	case SYS_clone3: {
		uint64_t flags;

		/* Read with a safe copy: the kernel has not checked the pointer yet. */
		if ((size_t)a[1] < sizeof(flags) || safe_copy(&flags, (void *)a[0], sizeof(flags)) < 0 ||
		    (flags & CLONE_VM))
			break;
		return copy_syscall(n, a);
	}
	case SYS_userfaultfd:
		fork_check_pid();
		t = now_ns();
		r = real_syscall(n, a[0], a[1], a[2], a[3], a[4], a[5]);
		err = errno;
		track_new((int)r, OBS_HOW_SYSCALL, (uint32_t)a[0], (int)r, err, t, 0);
		errno = err;
		return r;
	case SYS_read:
		id = fd_id((int)a[0]);
		if (!id)
			break;
		fork_check_pid();
		r = real_syscall(n, a[0], a[1], a[2]);
		err = errno;
		t = now_ns();
		note_read((int)a[0], id, (void *)a[1], r, err, OBS_VIA_SYSCALL_READ, t);
		errno = err;
		return r;
	case SYS_readv:
		id = fd_id((int)a[0]);
		if (!id)
			break;
		fork_check_pid();
		r = real_syscall(n, a[0], a[1], a[2]);
		err = errno;
		t = now_ns();
		note_readv((int)a[0], id, (const struct iovec *)a[1], (int)a[2], r, err,
			   OBS_VIA_SYSCALL_READV, t);
		errno = err;
		return r;
	case SYS_ioctl:
		id = fd_id((int)a[0]);
		if (!id && (unsigned long)a[1] != USERFAULTFD_IOC_NEW)
			break;
		fork_check_pid();
		return observed_ioctl(1, (int)a[0], id, (unsigned long)a[1], (void *)a[2]);
	case SYS_close:
		id = fd_id((int)a[0]);
		if (is_ours((int)a[0]))
			return errno = EBADF, -1;
		r = real_syscall(n, a[0]);
		err = errno;
		if (id)
			note_close((int)a[0], id, (int)r, err, now_ns());
		errno = err;
		return r;
	case SYS_close_range:
		err = errno;
		r = close_range_sparing((unsigned int)a[0], (unsigned int)a[1], (int)a[2], 1);
		if (r == 0)
			errno = err;
		return r;
	case SYS_dup:
	case SYS_dup2:
	case SYS_dup3:
	case SYS_fcntl:
		id = fd_id((int)a[0]);
		if (n != SYS_dup && n != SYS_fcntl && a[0] != a[1])
			make_room((int)a[1]);
		r = real_syscall(n, a[0], a[1], a[2]);
		err = errno;
		if (r >= 0 && (n != SYS_fcntl || a[1] == F_DUPFD || a[1] == F_DUPFD_CLOEXEC) &&
		    (int)r != (int)a[0])
			note_dup((int)a[0], id, (int)r, now_ns());
		errno = err;
		return r;
	case SYS_recvmsg:
		t = now_ns();
		r = real_syscall(n, a[0], a[1], a[2]);
		err = errno;
		if (r >= 0)
			note_recvmsg((struct msghdr *)a[1], t);
		errno = err;
		return r;
	case SYS_sendmsg: {
		int fds[16], nf;
		uint32_t ids[16];

		t = now_ns();
		nf = send_scan((const struct msghdr *)a[1], fds, ids, 16);
		note_send(fds, ids, nf, 0, 0, t);
		r = real_syscall(n, a[0], a[1], a[2]);
		err = errno;
		if (r < 0)
			note_send(fds, ids, nf, -1, err, now_ns());
		errno = err;
		return r;
	}
	case SYS_exit_group:
	case SYS_execve:
	case SYS_execveat:
		flush_now();
		break;
	default:
		break;
	}
	return real_syscall(n, a[0], a[1], a[2], a[3], a[4], a[5]);
}

/* ---- exit: what is batched goes out first ---- */

static void (*real__exit)(int);
static void (*real__Exit)(int);

void _exit(int status)
{
	flush_now();
	if (REAL(_exit))
		real__exit(status);
	for (;;)
		pause();	/* unreachable: libc's _exit exists */
}

void _Exit(int status)
{
	flush_now();
	if (REAL(_Exit))
		real__Exit(status);
	for (;;)
		pause();
}

/* exec replaces the memory the batch is in: send it first. */
static int (*real_execve)(const char *, char *const[], char *const[]);
static int (*real_execv)(const char *, char *const[]);
static int (*real_execvp)(const char *, char *const[]);
static int (*real_execvpe)(const char *, char *const[], char *const[]);
static int (*real_fexecve)(int, char *const[], char *const[]);

int execve(const char *path, char *const argv[], char *const envp[])
{
	flush_now();
	return REAL(execve) ? real_execve(path, argv, envp) : (errno = ENOSYS, -1);
}

int execv(const char *path, char *const argv[])
{
	flush_now();
	return REAL(execv) ? real_execv(path, argv) : (errno = ENOSYS, -1);
}

int execvp(const char *file, char *const argv[])
{
	flush_now();
	return REAL(execvp) ? real_execvp(file, argv) : (errno = ENOSYS, -1);
}

int execvpe(const char *file, char *const argv[], char *const envp[])
{
	flush_now();
	return REAL(execvpe) ? real_execvpe(file, argv, envp) : (errno = ENOSYS, -1);
}

int fexecve(int fd, char *const argv[], char *const envp[])
{
	flush_now();
	return REAL(fexecve) ? real_fexecve(fd, argv, envp) : (errno = ENOSYS, -1);
}

/* The execl family: collect the arguments, then the matching execv call. */
#define MAX_EXEC_ARGS 4096
#define COLLECT_ARGS(first, ap, argv, n)					\
	do {									\
		argv[0] = (char *)(first);					\
		for (n = 1; argv[n - 1] && n < MAX_EXEC_ARGS; n++)		\
			argv[n] = va_arg(ap, char *);				\
	} while (0)

int execl(const char *path, const char *arg, ...)
{
	char *argv[MAX_EXEC_ARGS + 1];
	va_list ap;
	int n;

	va_start(ap, arg);
	COLLECT_ARGS(arg, ap, argv, n);
	va_end(ap);
	if (argv[n - 1])
		return errno = E2BIG, -1;
	return execv(path, argv);
}

int execlp(const char *file, const char *arg, ...)
{
	char *argv[MAX_EXEC_ARGS + 1];
	va_list ap;
	int n;

	va_start(ap, arg);
	COLLECT_ARGS(arg, ap, argv, n);
	va_end(ap);
	if (argv[n - 1])
		return errno = E2BIG, -1;
	return execvp(file, argv);
}

int execle(const char *path, const char *arg, ...)
{
	char *argv[MAX_EXEC_ARGS + 1];
	char *const *envp;
	va_list ap;
	int n;

	va_start(ap, arg);
	COLLECT_ARGS(arg, ap, argv, n);
	envp = va_arg(ap, char *const *);
	va_end(ap);
	if (argv[n - 1])
		return errno = E2BIG, -1;
	return execve(path, argv, envp);
}

__attribute__((destructor)) static void observe_fini(void)
{
	flush_now();
}

/* ---- start-up, fork and clone ---- */

static void before_fork(void)
{
	/* A raw-cloned child forking before any other call of ours: its state first. */
	fork_check();
	fork_check_pid();
	/*
	 * The child must not send the parent's batch again, and its fork record must come after
	 * everything the parent recorded before: wait for a batch being written too.
	 */
	pthread_mutex_lock(&out_mu);
	flush_locked(NULL);
	pthread_mutex_lock(&wr_mu);
}

static void after_fork_parent(void)
{
	pthread_mutex_unlock(&wr_mu);
	pthread_mutex_unlock(&out_mu);
}

/*
 * Makes the state copied from the parent this process's own (see struct fork_mark), once.
 * Only the thread that made the copy exists in a new child, but it may have started threads
 * before its first call of ours: the first caller claims the work, the others wait for it.
 */
static void child_init(void)
{
	static const pthread_once_t ctl_once_init = PTHREAD_ONCE_INIT;
	struct {
		struct obs_hdr h;
		struct obs_fork b;
	} rec = { 0 };
	uint32_t parent = my_pid, pid = (uint32_t)getpid();
	sigset_t all, old;
	int err = errno;

	/* A signal handler's call of ours must not find the state half made. */
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	if (!fork_by_pid) {
		int zero = 0;

		if (!atomic_compare_exchange_strong(&fork_mark->claimed, &zero, 1)) {
			while (!atomic_load(&fork_mark->live))
				sched_yield();
			goto out;
		}
	} else {
		uint32_t seen = atomic_load(&claim_pid);

		if (seen == pid || !atomic_compare_exchange_strong(&claim_pid, &seen, pid)) {
			while (atomic_load(&live_pid) != pid)
				sched_yield();
			goto out;
		}
	}
	/* Our locks may have been held by threads that do not exist here; ours do not either. */
	pthread_mutex_init(&out_mu, NULL);
	pthread_mutex_init(&wr_mu, NULL);
	pthread_cond_init(&out_cv, NULL);
	pthread_mutex_init(&stop_mu, NULL);
	pthread_cond_init(&stop_cv, NULL);
	out_len = 0;	/* the parent's unsent batch: the parent sends it */
	flusher_state = 0;
	atomic_store(&own_threads, 0);
	my_tid = 0;
	my_pid = pid;
	atomic_store(&rec_seq, 0);
	/* The parent's control descriptor carries the parent's commands: the child has its own. */
	if (ctl_fd >= 0) {
		if (REAL(close))
			real_close(ctl_fd);
		ctl_fd = -1;
	}
	atomic_store(&stop_mask, 0);
	ctl_alive = 0;
	memset(stopped, 0, sizeof(stopped));
	ctl_once = ctl_once_init;
	/* The process whose memory this is a copy of (getppid() may be another: CLONE_PARENT). */
	rec.b.ppid = parent;
	emit_rec(&rec, OBS_FORK, sizeof(rec), -1, 0, now_ns(), 1);
	/* A handler forked with its userfaultfd in hand may read a fault right away. */
	if (ctl_path[0] && atomic_load(&any_tracked))
		pthread_once(&ctl_once, ctl_start);
	if (fork_by_pid)
		atomic_store(&live_pid, pid);
	else
		atomic_store(&fork_mark->live, 1);
out:
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	errno = err;
}

/* Also reached from syscall(2)'s clone; another atfork handler may have called us first. */
static void after_fork_child(void)
{
	fork_check();
	fork_check_pid();
}

/* Threads of this process (entries of /proc/self/task); -1 when unknown. */
static int count_threads(void)
{
	char buf[1024] __attribute__((aligned(8)));
	size_t name = offsetof(struct dirent64, d_name), reclen = offsetof(struct dirent64, d_reclen);
	int fd, n = 0;
	long got;

	if (!REAL(syscall) || !REAL(close))
		return -1;
	fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	while ((got = real_syscall(SYS_getdents64, fd, buf, sizeof(buf))) > 0) {
		for (long off = 0; off + (long)name < got;) {
			unsigned short len;

			memcpy(&len, buf + off + reclen, sizeof(len));
			if (!len)
				break;
			if (buf[off + name] != '.')
				n++;
			off += len;
		}
	}
	real_close(fd);
	return got < 0 ? -1 : n;
}

/*
 * glibc's clone(fn, ...) without CLONE_VM: as fork() (see copy_syscall). When fn returns, glibc
 * ends the child with exit(2), which ends only the calling thread: with our threads left the
 * process would not end, so then it ends with exit_group as it would have without them.
 */
struct clone_start {
	int (*fn)(void *);
	void *arg;
};

static int (*real_clone)(int (*)(void *), void *, int, void *, ...);

static int clone_child_main(void *p)
{
	struct clone_start s = *(struct clone_start *)p;	/* the parent's stack, copied */
	int r, mine;

	after_fork_child();
	r = s.fn(s.arg);
	flush_now();
	mine = atomic_load(&own_threads);
	if (mine > 0 && count_threads() == mine + 1 && REAL(_exit))
		real__exit(r);
	return r;
}

int clone(int (*fn)(void *), void *stack, int flags, void *arg, ...)
{
	struct clone_start s = { fn, arg };
	va_list ap;
	pid_t *ptid, *ctid;
	void *tls;
	int r, err;

	va_start(ap, arg);
	ptid = va_arg(ap, pid_t *);
	tls = va_arg(ap, void *);
	ctid = va_arg(ap, pid_t *);
	va_end(ap);
	fork_check();
	if (!REAL(clone))
		return errno = ENOSYS, -1;
	/* With CLONE_SETTLS the child has a thread block of the program's: run nothing of ours on it. */
	if ((flags & (CLONE_VM | CLONE_SETTLS)) || !fn ||
	    !atomic_load_explicit(&chan_ok, memory_order_relaxed))
		return real_clone(fn, stack, flags, arg, ptid, tls, ctid);
	before_fork();
	r = real_clone(clone_child_main, stack, flags, &s, ptid, tls, ctid);
	err = errno;
	after_fork_parent();
	errno = err;
	return r;
}

/* Sets up fork_mark (see there) or its fallback. */
static void fork_mark_init(void)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	struct fork_mark *m = mmap(NULL, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	if (m != MAP_FAILED && madvise(m, page, MADV_WIPEONFORK) == 0) {
		atomic_store(&m->claimed, 1);
		atomic_store(&m->live, 1);
		fork_mark = m;
		return;
	}
	if (m != MAP_FAILED)
		munmap(m, page);
	atomic_store(&live_pid, my_pid);
	atomic_store(&claim_pid, my_pid);
	fork_by_pid = 1;
}

/* Userfaultfds already open at start (inherited across exec) are tracked too. */
static void scan_inherited(void)
{
	DIR *d = opendir("/proc/self/fd");
	struct dirent *e;
	uint64_t t = now_ns();

	if (!d)
		return;
	while ((e = readdir(d))) {
		char *end;
		long fd = strtol(e->d_name, &end, 10);

		if (*end || end == e->d_name || fd == dirfd(d) || is_ours((int)fd) || fd >= MAXFD)
			continue;
		if (is_uffd((int)fd))
			track_new((int)fd, OBS_HOW_INHERIT, 0, (int)fd, 0, t, 0);
	}
	closedir(d);
}

/* Moves a launcher descriptor above the program's usual numbers, so that its own descriptors
 * get the numbers they get without us. */
static int lift_fd(int fd, int cloexec)
{
	struct rlimit rl;
	long min = 1000;
	int nfd;

	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
	    (long)rl.rlim_cur - 64 < min)
		min = (long)rl.rlim_cur - 64;
	if (min <= fd)
		return fd;
	nfd = REAL(fcntl) ? real_fcntl(fd, cloexec ? F_DUPFD_CLOEXEC : F_DUPFD, min) : -1;
	if (nfd < 0)
		return fd;
	if (REAL(close))
		real_close(fd);
	return nfd;
}

/*
 * The environment is edited in place, not with setenv/unsetenv: some programs (bash) define
 * their own, which do nothing before their main runs.
 */
extern char **environ;

static char **env_find(const char *name)
{
	size_t len = strlen(name);

	for (char **e = environ; e && *e; e++) {
		if (!strncmp(*e, name, len) && (*e)[len] == '=')
			return e;
	}
	return NULL;
}

static const char *env_get(const char *name)
{
	char **e = env_find(name);

	return e ? *e + strlen(name) + 1 : NULL;
}

static void env_drop(const char *name)
{
	char **e;

	while ((e = env_find(name))) {
		for (; *e; e++)
			e[0] = e[1];
	}
}

/* Replaces the value of an existing variable (the launcher always set it). */
static void env_set_fd(const char *name, int fd)
{
	static char buf[2][48];
	static int which;
	char **e = env_find(name);

	if (!e)
		return;
	which ^= 1;
	snprintf(buf[which], sizeof(buf[which]), "%s=%d", name, fd);
	*e = buf[which];
}

static int env_fd(const char *name)
{
	const char *s = env_get(name);
	char *end;
	long v;

	if (!s || !*s)
		return -1;
	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || *end || v < 0 || v > INT_MAX || fcntl(v, F_GETFD) < 0) {
		fprintf(stderr, LOG_PREFIX "[%d]: %s=%s is not an open descriptor (%s): not observing\n",
			getpid(), name, s, errno ? strerror(errno) : "not a number");
		/* Said once: the programs this one runs stay quiet. */
		env_drop(name);
		return -1;
	}
	return (int)v;
}

__attribute__((constructor)) static void observe_init(void)
{
	struct {
		struct obs_hdr h;
		struct obs_hello b;
	} rec = { 0 };
	int saved = errno;
	struct stat st;
	ssize_t n;
	int fd;

	my_pid = (uint32_t)getpid();
	fd = env_fd("UFFD_OBSERVE_FD");
	if (fd < 0 || fstat(fd, &st) < 0 || (!S_ISSOCK(st.st_mode) && !S_ISFIFO(st.st_mode))) {
		if (fd >= 0) {
			fprintf(stderr, LOG_PREFIX "[%d]: UFFD_OBSERVE_FD %d is not a pipe or socket: not observing\n",
				getpid(), fd);
			env_drop("UFFD_OBSERVE_FD");
		}
		errno = saved;
		return;
	}
	chan_is_sock = S_ISSOCK(st.st_mode);
	/* The channel stays open across exec (children report too) under its new number. */
	chan_fd = lift_fd(fd, 0);
	env_set_fd("UFFD_OBSERVE_FD", chan_fd);
	fd = env_fd("UFFD_OBSERVE_CTL");
	env_drop("UFFD_OBSERVE_CTL");
	/* Kept in the environment: programs this one runs connect there too. */
	if (env_get("UFFD_OBSERVE_CTL_PATH") && strlen(env_get("UFFD_OBSERVE_CTL_PATH")) < sizeof(ctl_path))
		strcpy(ctl_path, env_get("UFFD_OBSERVE_CTL_PATH"));
	else if (env_get("UFFD_OBSERVE_CTL_PATH"))
		fprintf(stderr, LOG_PREFIX "[%d]: UFFD_OBSERVE_CTL_PATH is longer than %zu bytes: only this process stops\n",
			getpid(), sizeof(ctl_path) - 1);
	if (fd >= 0)
		ctl_fd = lift_fd(fd, 1);
	if (ctl_fd >= 0 && env_get("UFFD_OBSERVE_STOP"))
		atomic_store(&stop_mask, (unsigned int)strtoul(env_get("UFFD_OBSERVE_STOP"), NULL, 0));
	env_drop("UFFD_OBSERVE_STOP");
	fork_mark_init();
	atomic_store(&chan_ok, 1);
	pthread_atfork(before_fork, after_fork_parent, after_fork_child);
	rec.b.version = OBS_VERSION;
	rec.b.ppid = (uint32_t)getppid();
	rec.b.page_size = (uint32_t)sysconf(_SC_PAGESIZE);
	rec.b.stop_mask = atomic_load(&stop_mask);
	n = readlink("/proc/self/exe", rec.b.exe, sizeof(rec.b.exe) - 1);
	rec.b.exe[n > 0 ? n : 0] = 0;
	emit(&rec, OBS_HELLO, sizeof(rec), -1, 0, now_ns());
	scan_inherited();
	errno = saved;
}
