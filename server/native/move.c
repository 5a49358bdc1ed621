/*
 * UFFDIO_MOVE for the program: the kernel accepts a move only from a task of the memory the
 * userfaultfd belongs to, so the ioctl runs inside the program. One of its threads, stopped,
 * is lent the userfaultfd for the duration (an abstract Unix socket of a random name, then
 * SCM_RIGHTS), issues the ioctl and closes it again; its registers and stack are restored.
 * In an attached process this happens in an episode child with every thread stopped (a killed
 * helper cannot leave a thread with borrowed registers or the program with a userfaultfd);
 * in a launched one the helper, its tracer, stops the faulting thread.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ptrace.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "attach.h"
#include "inject.h"
#include "log.h"
#include "move.h"
#include "session.h"
#include "tracer.h"
#include "uffd.h"

/* What the borrowed thread needs in its memory, at the scratch base B. */
struct move_blob {
	struct sockaddr_un sun;		/* abstract name */
	struct msghdr mh;
	struct iovec iov;
	char cmsg[CMSG_SPACE(sizeof(int))] __attribute__((aligned(8)));
	char data[8];
	struct uffdio_move mv;
};

struct move_req {
	uint64_t dst, src, len;
	int dontwake;
};

static long peek(pid_t tid, uint64_t addr, int *err)
{
	long w;

	errno = 0;
	w = ptrace(PTRACE_PEEKDATA, tid, addr, 0);
	if (errno)
		*err = errno;
	return w;
}

/*
 * In the stopped thread tid: receive uffd, UFFDIO_MOVE, close. Returns bytes moved, or
 * -errno (the ioctl's, or the injection's with why set).
 */
static long move_inject(pid_t tid, int uffd, const struct move_req *q, char *why, size_t wl)
{
	struct move_blob b;
	struct inject in;
	uint64_t base, addr;
	long s = -1, u = -1, r, ret, moved = 0;
	socklen_t alen;
	unsigned char rnd[8];
	int i, lsk = -1, err = 0, fd = -1;

	if (inject_begin(&in, tid)) {
		snprintf(why, wl, "cannot borrow thread %d of the program: %s", tid, strerror(errno));
		return -errno;
	}
	base = inject_scratch_base(&in);
	memset(&b, 0, sizeof(b));
	b.sun.sun_family = AF_UNIX;
	if (getrandom(rnd, sizeof(rnd), 0) != sizeof(rnd))
		memcpy(rnd, &base, sizeof(rnd));
	i = snprintf(b.sun.sun_path + 1, sizeof(b.sun.sun_path) - 1, "uffd-debug-move-");
	for (size_t k = 0; k < sizeof(rnd); k++)
		i += snprintf(b.sun.sun_path + 1 + i, 3, "%02x", rnd[k]);
	alen = offsetof(struct sockaddr_un, sun_path) + 1 + i;
	b.iov.iov_base = (void *)(uintptr_t)(base + offsetof(struct move_blob, data));
	b.iov.iov_len = sizeof(b.data);
	b.mh.msg_iov = (void *)(uintptr_t)(base + offsetof(struct move_blob, iov));
	b.mh.msg_iovlen = 1;
	b.mh.msg_control = (void *)(uintptr_t)(base + offsetof(struct move_blob, cmsg));
	b.mh.msg_controllen = sizeof(b.cmsg);
	b.mv.dst = q->dst;
	b.mv.src = q->src;
	b.mv.len = q->len;
	b.mv.mode = q->dontwake ? UFFDIO_MOVE_MODE_DONTWAKE : 0;
	if (inject_scratch(&in, &b, sizeof(b), &addr) || addr != base) {
		snprintf(why, wl, "cannot write to the stack of thread %d: %s", tid, strerror(errno));
		ret = -(errno ? errno : EIO);
		goto out;
	}
	if (inject_syscall(&in, __NR_socket, AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0, 0, 0, 0, &s) ||
	    s < 0) {
		snprintf(why, wl, "socket() inside the program failed: %s",
			 strerror(s < 0 ? (int)-s : errno));
		ret = s < 0 ? s : -errno;
		s = -1;
		goto out;
	}
	if (inject_syscall(&in, __NR_bind, s, base + offsetof(struct move_blob, sun), alen, 0, 0,
			   0, &r) || r < 0) {
		snprintf(why, wl, "bind() inside the program failed: %s",
			 strerror(r < 0 ? (int)-r : errno));
		ret = r < 0 ? r : -errno;
		goto out;
	}
	/* lend the userfaultfd */
	lsk = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	{
		char cbuf[CMSG_SPACE(sizeof(int))] = { 0 };
		struct iovec iov = { .iov_base = "u", .iov_len = 1 };
		struct msghdr mh = { .msg_name = &b.sun, .msg_namelen = alen, .msg_iov = &iov,
				     .msg_iovlen = 1, .msg_control = cbuf,
				     .msg_controllen = sizeof(cbuf) };
		struct cmsghdr *c = CMSG_FIRSTHDR(&mh);

		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &uffd, sizeof(int));
		if (lsk < 0 || sendmsg(lsk, &mh, MSG_NOSIGNAL) < 0) {
			snprintf(why, wl, "lending the userfaultfd to the program: %s",
				 strerror(errno));
			ret = -errno;
			goto out;
		}
	}
	if (inject_syscall(&in, __NR_recvmsg, s, base + offsetof(struct move_blob, mh),
			   MSG_CMSG_CLOEXEC | MSG_DONTWAIT, 0, 0, 0, &r) || r < 0) {
		snprintf(why, wl, "recvmsg() inside the program failed: %s",
			 strerror(r < 0 ? (int)-r : errno));
		ret = r < 0 ? r : -errno;
		goto out;
	}
	fd = (int)(peek(tid, base + offsetof(struct move_blob, cmsg) +
			CMSG_LEN(0), &err) & 0xffffffff);
	if (err) {
		snprintf(why, wl, "reading the lent descriptor number: %s", strerror(err));
		ret = -err;
		fd = -1;
		goto out;
	}
	u = fd;
	if (inject_syscall(&in, __NR_ioctl, u, UFFDIO_MOVE, base + offsetof(struct move_blob, mv),
			   0, 0, 0, &r)) {
		snprintf(why, wl, "ioctl(UFFDIO_MOVE) inside the program: %s", strerror(errno));
		ret = -errno;
		goto out;
	}
	moved = peek(tid, base + offsetof(struct move_blob, mv) +
		     offsetof(struct uffdio_move, move), &err);
	ret = r < 0 ? r : moved;
	if (r < 0)
		snprintf(why, wl, "%s", strerror((int)-r));
out:
	if (u >= 0)
		inject_syscall(&in, __NR_close, u, 0, 0, 0, 0, 0, &r);
	if (s >= 0)
		inject_syscall(&in, __NR_close, s, 0, 0, 0, 0, 0, &r);
	if (lsk >= 0)
		close(lsk);
	if (inject_end(&in)) {
		snprintf(why, wl, "cannot restore thread %d after the move: %s", tid,
			 strerror(errno));
		if (ret >= 0)
			ret = -EIO;
	}
	return ret;
}

static struct move_req cur;

static int move_episode(pid_t pid, pid_t tid, void *arg, char *msg, size_t len)
{
	long r;

	(void)pid;
	(void)arg;
	r = move_inject(tid, sess.uffd, &cur, msg, len);
	if (r >= 0)
		snprintf(msg, len, "%ld", r);
	return r < 0 ? (int)r : 0;
}

/* An episode, waited for here (a move raises no event the helper must read meanwhile). */
static long move_attached(char *why, size_t wl)
{
	char buf[1024] = { 0 };
	struct pollfd p;
	pid_t child;
	ssize_t n;
	int sk, r = -EIO;

	if (attach_episode(move_episode, NULL, NULL, &child, &sk, why, wl))
		return -errno;
	p = (struct pollfd){ .fd = sk, .events = POLLIN };
	if (poll(&p, 1, 10000) == 1) {
		n = recv(sk, buf, sizeof(buf) - 1, 0);
		if (n > (ssize_t)sizeof(int)) {
			memcpy(&r, buf, sizeof(int));
			snprintf(why, wl, "%s", buf + sizeof(int));
		}
	} else {
		snprintf(why, wl, "the program's threads did not stop within 10 s");
		r = -ETIMEDOUT;
	}
	if (send(sk, "r", 1, MSG_NOSIGNAL) < 0)
		pr_perror("move: releasing the episode %d", child);
	close(sk);
	while (waitpid(child, NULL, 0) < 0 && errno == EINTR)
		;
	return r < 0 ? r : (long)strtoull(why, NULL, 10);
}

int move_in_program(uint64_t dst, uint64_t src, uint64_t len, int dontwake, pid_t tid,
		    char *why, size_t wl)
{
	long r;

	cur = (struct move_req){ .dst = dst, .src = src, .len = len, .dontwake = dontwake };
	why[0] = 0;
	if (attach_active()) {
		r = move_attached(why, wl);
	} else {
		if (tracer_stop_thread(tid) && (tid == sess.pid || tracer_stop_thread(tid = sess.pid))) {
			snprintf(why, wl, "cannot stop a thread of the program to issue the move: %s",
				 strerror(errno));
			return -1;
		}
		r = move_inject(tid, sess.uffd, &cur, why, wl);
		tracer_resume_thread(tid);
	}
	if (r < 0) {
		errno = (int)-r;
		return -1;
	}
	if ((uint64_t)r != len) {
		snprintf(why, wl, "moved %ld of %" PRIu64 " bytes", r, len);
		errno = EAGAIN;
		return -1;
	}
	return 0;
}
