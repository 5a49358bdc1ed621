// SPDX-License-Identifier: MIT
/*
 * behave: what a userfaultfd handler sees of the kernel, printed as text that depends on
 * nothing but the kernel's answers (no addresses, no pids). test/observe/behave.test.ts runs it
 * with and without libuffd-observe.so preloaded: the output must be the same. It covers errno
 * values, EAGAIN on a non-blocking empty read, short reads, poll and epoll readiness, readv,
 * raw syscall(2), dup/fcntl/close, SCM_RIGHTS, /dev/userfaultfd, fork, and bad pointers.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef USERFAULTFD_IOC_NEW
#define USERFAULTFD_IOC_NEW _IO(0xAA, 0x00)
#endif

#define PAGE 4096UL

static char *region;
static char src[PAGE] __attribute__((aligned(4096)));

static const char *en(int e)
{
	static char buf[32];

	switch (e) {
	case 0: return "0";
	case EAGAIN: return "EAGAIN";
	case EINVAL: return "EINVAL";
	case EFAULT: return "EFAULT";
	case EEXIST: return "EEXIST";
	case ENOENT: return "ENOENT";
	case ENOTTY: return "ENOTTY";
	case EBADF: return "EBADF";
	case EBUSY: return "EBUSY";
	case 1234: return "1234";
	default:
		snprintf(buf, sizeof(buf), "errno%d", e);
		return buf;
	}
}

/* Prints the result of a call: "what: r=R errno=E" (errno only on failure). */
static void show(const char *what, long r)
{
	int e = errno;

	printf("%s: r=%ld errno=%s\n", what, r, r < 0 ? en(e) : "-");
}

static void *toucher(void *arg)
{
	long page = (long)arg;

	/* A read fault, resolved by main with ZEROPAGE or COPY. */
	return (void *)(long)*(volatile char *)(region + (size_t)page * PAGE);
}

/* Waits until n faults are queued (fdinfo "total": waiting threads, read or not). */
static int wait_pending(int uffd, int n)
{
	char path[64], buf[256];

	snprintf(path, sizeof(path), "/proc/self/fdinfo/%d", uffd);
	for (int i = 0; i < 5000; i++) {
		FILE *f = fopen(path, "r");
		int total = -1;

		if (f) {
			while (fgets(buf, sizeof(buf), f))
				sscanf(buf, "total: %d", &total);
			fclose(f);
		}
		if (total >= n)
			return 0;
		usleep(1000);
	}
	printf("timed out waiting for %d faults\n", n);
	return -1;
}

/* After exec: a userfaultfd inherited from the previous image (argv[2]) still works. */
static int inherited(const char *num)
{
	struct uffd_msg m;
	int fd = atoi(num);

	show("inherited read", read(fd, &m, sizeof(m)));
	show("inherited close", close(fd));
	printf("done\n");
	return 0;
}

int main(int argc, char **argv)
{
	struct uffdio_api api = { .api = UFFD_API, .features = UFFD_FEATURE_THREAD_ID };
	struct uffd_msg msgs[4];
	pthread_t t1, t2;
	int uffd, d, d2, d3, s[2], epfd, status, devfd, nu;
	long r;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc == 3 && !strcmp(argv[1], "--inherited"))
		return inherited(argv[2]);
	d = open("/dev/null", O_RDONLY);
	printf("first open gives fd %d\n", d);
	close(d);

	errno = 0;
	uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
	show("userfaultfd", uffd < 0 ? -1 : 0);
	if (uffd < 0)
		return 1;
	r = ioctl(uffd, UFFDIO_API, &api);
	show("api", r);
	printf("api thread_id %s\n", (api.features & UFFD_FEATURE_THREAD_ID) ? "yes" : "no");
	r = ioctl(uffd, UFFDIO_API, &api);
	show("api again", r);

	msgs[0].event = 0;
	r = read(uffd, msgs, sizeof(msgs));
	show("read empty non-blocking", r);
	r = read(uffd, msgs, 8);
	show("read short buffer", r);
	/* A count known only at run time: built with _FORTIFY_SOURCE this is __read_chk. */
	r = read(uffd, msgs, (size_t)argc * 8);
	show("read short buffer, run-time count", r);
	r = syscall(SYS_read, uffd, msgs, sizeof(msgs));
	show("syscall read empty", r);
	{
		struct pollfd p = { .fd = uffd, .events = POLLIN };

		show("poll empty", poll(&p, 1, 0));
	}
	r = ioctl(uffd, 0x1234, NULL);
	show("ioctl unknown", r);
	r = ioctl(uffd, UFFDIO_REGISTER, NULL);
	show("register NULL", r);
	r = ioctl(uffd, UFFDIO_COPY, (void *)8);
	show("copy bad pointer", r);

	region = mmap(NULL, 4 * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	{
		struct uffdio_register reg = {
			.range = { .start = (uint64_t)(uintptr_t)region, .len = 4 * PAGE },
			.mode = UFFDIO_REGISTER_MODE_MISSING,
		};
		struct uffdio_register bad = reg;

		bad.range.len = 100;
		show("register unaligned", ioctl(uffd, UFFDIO_REGISTER, &bad));
		show("register", ioctl(uffd, UFFDIO_REGISTER, &reg));
		printf("register ioctls copy %s\n", (reg.ioctls & (1ULL << _UFFDIO_COPY)) ? "yes" : "no");
	}

	/* Two faults queued; a read with room for one message gets one (a short read). */
	pthread_create(&t1, NULL, toucher, (void *)0L);
	wait_pending(uffd, 1);
	pthread_create(&t2, NULL, toucher, (void *)1L);
	wait_pending(uffd, 2);
	{
		struct pollfd p = { .fd = uffd, .events = POLLIN };

		show("poll with faults", poll(&p, 1, 0));
		printf("poll revents %s\n", (p.revents & POLLIN) ? "POLLIN" : "none");
	}
	epfd = epoll_create1(EPOLL_CLOEXEC);
	{
		struct epoll_event ev = { .events = EPOLLIN }, got;

		epoll_ctl(epfd, EPOLL_CTL_ADD, uffd, &ev);
		show("epoll with faults", epoll_wait(epfd, &got, 1, 0));
	}
	r = read(uffd, msgs, sizeof(msgs[0]));
	show("read one of two", r);
	printf("message event 0x%x\n", msgs[0].event);
	{
		/* The second, through readv, split across two iovecs. */
		struct iovec iov[2] = { { (char *)&msgs[1], 16 }, { (char *)&msgs[1] + 16, 16 } };

		r = readv(uffd, iov, 2);
		show("readv the other", r);
		printf("message event 0x%x\n", msgs[1].event);
	}
	r = read(uffd, msgs + 2, sizeof(msgs[0]));
	show("read after both", r);

	errno = 1234;
	{
		struct uffdio_zeropage z = {
			.range = { .start = (uint64_t)(uintptr_t)region, .len = PAGE },
		};

		r = ioctl(uffd, UFFDIO_ZEROPAGE, &z);
		printf("zeropage: r=%ld errno after success %s zeropage=%lld\n", r, en(errno), (long long)z.zeropage);
	}
	memset(src, 0x5a, sizeof(src));
	{
		struct uffdio_copy c = {
			.dst = (uint64_t)(uintptr_t)(region + PAGE), .src = (uint64_t)(uintptr_t)src, .len = PAGE,
		};

		errno = 1234;
		r = ioctl(uffd, UFFDIO_COPY, &c);
		printf("copy: r=%ld errno after success %s copy=%lld\n", r, en(errno), (long long)c.copy);
		c.copy = 0;
		r = ioctl(uffd, UFFDIO_COPY, &c);
		show("copy again", r);
		printf("copy again copy=%lld\n", (long long)c.copy);
		c.src = 8;
		c.dst = (uint64_t)(uintptr_t)(region + 2 * PAGE);
		c.copy = 0;
		r = ioctl(uffd, UFFDIO_COPY, &c);
		show("copy from bad source", r);
	}
	pthread_join(t1, NULL);
	pthread_join(t2, NULL);
	printf("page 1 byte 0x%x\n", (unsigned char)region[PAGE]);
	{
		struct uffdio_range w = { (uint64_t)(uintptr_t)region, 4 * PAGE };

		show("wake", ioctl(uffd, UFFDIO_WAKE, &w));
	}

	/* Descriptors: copies behave as the original. */
	d = dup(uffd);
	show("dup read", read(d, msgs, sizeof(msgs)));
	d2 = fcntl(uffd, F_DUPFD_CLOEXEC, 100);
	printf("fcntl dupfd >= 100: %s\n", d2 >= 100 ? "yes" : "no");
	show("fcntl dup read", read(d2, msgs, sizeof(msgs)));
	d3 = dup2(d, 60);
	show("dup2", d3 == 60 ? 0 : -1);
	close(d);
	close(d2);
	show("read closed", read(d, msgs, sizeof(msgs)));
	show("syscall close twice", syscall(SYS_close, d));
	show("dup2 copy read", read(d3, msgs, sizeof(msgs)));
	close(d3);

	/* SCM_RIGHTS to ourselves. */
	socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, s);
	{
		char b = 'u';
		struct iovec iov = { &b, 1 };
		union {
			char buf[CMSG_SPACE(sizeof(int))];
			struct cmsghdr align;
		} u;
		struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf) };
		struct cmsghdr *c;
		int got = -1;

		memset(u.buf, 0, sizeof(u.buf));
		c = CMSG_FIRSTHDR(&m);
		c->cmsg_level = SOL_SOCKET;
		c->cmsg_type = SCM_RIGHTS;
		c->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(c), &uffd, sizeof(int));
		show("sendmsg", sendmsg(s[0], &m, 0));
		memset(u.buf, 0, sizeof(u.buf));
		m.msg_controllen = sizeof(u.buf);
		show("recvmsg", recvmsg(s[1], &m, MSG_CMSG_CLOEXEC));
		c = CMSG_FIRSTHDR(&m);
		if (c)
			memcpy(&got, CMSG_DATA(c), sizeof(int));
		show("received read", read(got, msgs, sizeof(msgs)));
		close(got);
	}

	/* /dev/userfaultfd */
	devfd = open("/dev/userfaultfd", O_RDWR | O_CLOEXEC);
	show("open /dev/userfaultfd", devfd < 0 ? -1 : 0);
	if (devfd >= 0) {
		struct uffdio_api a2 = { .api = UFFD_API };

		nu = ioctl(devfd, USERFAULTFD_IOC_NEW, O_CLOEXEC | O_NONBLOCK);
		show("ioc new", nu < 0 ? -1 : 0);
		show("ioc new api", ioctl(nu, UFFDIO_API, &a2));
		show("ioc new read", read(nu, msgs, sizeof(msgs)));
		close(nu);
		close(devfd);
	}

	/* fork: the child keeps working with its copy of the descriptor. */
	fflush(stdout);
	if (fork() == 0) {
		r = read(uffd, msgs, sizeof(msgs));
		printf("child read: r=%ld errno=%s\n", r, en(errno));
		r = read(uffd, msgs, 8);
		printf("child short read: r=%ld errno=%s\n", r, en(errno));
		fflush(stdout);
		_exit(7);
	}
	wait(&status);
	printf("child exit %d\n", WEXITSTATUS(status));
	show("parent read after fork", read(uffd, msgs, sizeof(msgs)));
	printf("first free fd %d\n", d = open("/dev/null", O_RDONLY));
	close(d);
	close(epfd);
	close(s[0]);
	close(s[1]);
	/* Descriptors the program never opened stay closed to it; closing everything is fine. */
	show("close 960", close(960));
	show("close 1000", close(1000));
	show("dup2 onto 1000", dup2(uffd, 1000) == 1000 ? 0 : -1);
	show("read 1000", read(1000, msgs, sizeof(msgs)));
	show("close 1000 again", close(1000));
	show("close uffd", close(uffd));
	closefrom(3);
	nu = (int)syscall(SYS_userfaultfd, O_NONBLOCK);
	show("userfaultfd after closefrom", nu < 0 ? -1 : 0);
	{
		char num[16];

		snprintf(num, sizeof(num), "%d", nu);
		fflush(stdout);
		execl("/proc/self/exe", argv[0], "--inherited", num, (char *)NULL);
		show("exec", -1);
	}
	return 1;
}
