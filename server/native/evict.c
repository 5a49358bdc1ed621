/*
 * evict: make populated private anonymous pages of the attached process missing again, and
 * serve them back from their saved content on the next touch.
 *
 * The saved pages live in a memfd shared by three processes:
 *   - the helper, which resolves a fault on an evicted page with UFFDIO_COPY of its content;
 *   - an episode child, which stops every thread of the process (so nothing writes a page
 *     between its copy and its removal), copies the present pages of the range from
 *     /proc/PID/mem into the store, and injects madvise(MADV_DONTNEED) to drop them;
 *   - the guardian, forked with the first eviction, which holds a copy of the userfaultfd and
 *     of the store. If the helper dies (its end of a pipe closes), the guardian reads the
 *     userfaultfd until a running episode has finished, puts every saved page back with
 *     UFFDIO_COPY and exits: closing the last userfaultfd lets the process run on untracked,
 *     with every page's content in place.
 * A slot is marked saved in the store before its page is dropped and freed only after the
 * page is back, so whenever the helper dies the guardian has what it needs.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "attach.h"
#include "errnames.h"
#include "evict.h"
#include "faults.h"
#include "inject.h"
#include "json.h"
#include "log.h"
#include "mem.h"
#include "session.h"
#include "tracer.h"
#include "uffd.h"

#define EVICT_MAX 65536U	/* pages: 256 MiB of saved content */
#define HASH_SIZE (2 * EVICT_MAX)
#define SLOT_FREE 0
#define SLOT_SAVED 1
#define GUARD_DRAIN_MS 30000

struct slot {
	uint64_t addr;
	uint32_t state;
	uint32_t pad;
};

struct store_hdr {
	uint32_t magic;
	volatile uint32_t episode;	/* an episode child is dropping pages */
	uint64_t unused;
};

#define STORE_MAGIC 0x45564354U
#define TABLE_OFF 4096ULL
#define DATA_OFF (TABLE_OFF + (uint64_t)EVICT_MAX * sizeof(struct slot))
#define STORE_SIZE (DATA_OFF + (uint64_t)EVICT_MAX * PAGE_SZ)

static struct {
	int memfd;
	unsigned char *base;	/* the whole store, MAP_SHARED */
	uint32_t *hash;		/* addr -> slot + 1, open addressing; 0: empty */
	uint64_t count;		/* saved pages (helper's view) */
	pid_t guardian;
	int guard_pipe;		/* write end; the guardian reads EOF when the helper is gone */
	/* the episode in progress */
	pid_t child;
	int sk;
	int64_t id;
	uint64_t start, end;
	int local;		/* a launched program's eviction, run by the helper itself */
	int zap;		/* `zap`: shared memory, page tables dropped, nothing saved */
} ev = { .memfd = -1, .guard_pipe = -1, .sk = -1 };

static struct store_hdr *hdr(void)
{
	return (struct store_hdr *)ev.base;
}

static struct slot *slots(void)
{
	return (struct slot *)(ev.base + TABLE_OFF);
}

static unsigned char *slot_data(uint32_t i)
{
	return ev.base + DATA_OFF + (uint64_t)i * PAGE_SZ;
}

static uint32_t hash_of(uint64_t addr)
{
	return (uint32_t)(((addr >> 12) * 0x9e3779b97f4a7c15ULL) >> 32) % HASH_SIZE;
}

/* Index of addr in ev.hash: its entry, or the empty one where it would go. */
static uint32_t hash_find(uint64_t addr)
{
	uint32_t h = hash_of(addr);

	while (ev.hash[h] && slots()[ev.hash[h] - 1].addr != addr)
		h = (h + 1) % HASH_SIZE;
	return h;
}

static void hash_del(uint64_t addr)
{
	uint32_t h = hash_find(addr), j, k;

	if (!ev.hash[h])
		return;
	ev.hash[h] = 0;
	/* re-insert the run that follows (linear probing deletion) */
	for (j = (h + 1) % HASH_SIZE; ev.hash[j]; j = (j + 1) % HASH_SIZE) {
		uint32_t v = ev.hash[j];

		ev.hash[j] = 0;
		k = hash_find(slots()[v - 1].addr);
		ev.hash[k] = v;
	}
}

static int store_open(void)
{
	if (ev.base)
		return 0;
	ev.memfd = memfd_create("uffd-debug-evicted", MFD_CLOEXEC);
	if (ev.memfd < 0)
		return -1;
	if (ftruncate(ev.memfd, STORE_SIZE))
		goto fail;
	ev.base = mmap(NULL, STORE_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, ev.memfd, 0);
	if (ev.base == MAP_FAILED) {
		ev.base = NULL;
		goto fail;
	}
	ev.hash = calloc(HASH_SIZE, sizeof(*ev.hash));
	if (!ev.hash)
		goto fail;
	hdr()->magic = STORE_MAGIC;
	return 0;
fail:
	if (ev.base)
		munmap(ev.base, STORE_SIZE);
	ev.base = NULL;
	close(ev.memfd);
	ev.memfd = -1;
	return -1;
}

/* ---- the guardian ---------------------------------------------------------------------- */

/* Puts every saved page back; returns how many went back (EEXIST: it never left). */
static uint64_t restore_all(int uffd, int quiet)
{
	uint64_t n = 0;
	uint32_t i;

	for (i = 0; i < EVICT_MAX; i++) {
		struct slot *s = &slots()[i];

		if (s->state != SLOT_SAVED)
			continue;
		if (!uffd_copy(uffd, s->addr, slot_data(i), PAGE_SZ, 0, 0))
			n++;
		else if (errno != EEXIST && !quiet)
			pr_perror("evict: putting page %#" PRIx64 " back", s->addr);
		s->state = SLOT_FREE;
	}
	return n;
}

/*
 * After the helper died: while an episode is still dropping pages, its madvise() waits for
 * its `remove` events to be read, so read them (faults are left for the close to wake);
 * then every saved page goes back and the userfaultfd is closed.
 */
static void guardian_rescue(int uffd)
{
	struct uffd_msg m[16];
	int i;

	for (i = 0; i < GUARD_DRAIN_MS && hdr()->episode; i++) {
		struct pollfd p = { .fd = uffd, .events = POLLIN };

		if (poll(&p, 1, 1) > 0)
			while (read(uffd, m, sizeof(m)) > 0)
				;
	}
	pr_info("evict guardian: the helper is gone; %" PRIu64 " saved pages put back",
		restore_all(uffd, 0));
}

static __attribute__((noreturn)) void guardian_main(int rd, int uffd)
{
	int devnull = open("/dev/null", O_RDWR);
	char c = 0;
	ssize_t n;

	prctl(PR_SET_NAME, "uffd-guardian", 0, 0, 0);
	/* nothing of the protocol: the adapter must see the helper's stdout close with it */
	if (devnull >= 0) {
		dup2(devnull, STDIN_FILENO);
		dup2(devnull, STDOUT_FILENO);
		close(devnull);
	}
	signal(SIGINT, SIG_IGN);
	signal(SIGTERM, SIG_IGN);
	do
		n = read(rd, &c, 1);
	while (n < 0 && errno == EINTR);
	if (n <= 0 || c != 'q')
		guardian_rescue(uffd);
	_exit(0);
}

static int guardian_start(void)
{
	int p[2];

	if (ev.guardian > 0)
		return 0;
	if (pipe2(p, O_CLOEXEC))
		return -1;
	ev.guardian = fork();
	if (ev.guardian < 0) {
		close(p[0]);
		close(p[1]);
		ev.guardian = 0;
		return -1;
	}
	if (ev.guardian == 0) {
		close(p[1]);
		guardian_main(p[0], sess.uffd);
	}
	close(p[0]);
	ev.guard_pipe = p[1];
	return 0;
}

/* The guardian leaves without touching anything (the pages are back, or the process gone). */
static void guardian_stop(void)
{
	if (ev.guardian <= 0)
		return;
	if (write(ev.guard_pipe, "q", 1) < 0)
		pr_perror("evict: telling the guardian %d to leave", ev.guardian);
	close(ev.guard_pipe);
	ev.guard_pipe = -1;
	while (waitpid(ev.guardian, NULL, 0) < 0 && errno == EINTR)
		;
	ev.guardian = 0;
}

/* ---- the episode: every thread stopped, pages copied and dropped ----------------------- */

static int page_present(int pagemap, uint64_t addr)
{
	uint64_t e;

	if (pread(pagemap, &e, sizeof(e), (addr / PAGE_SZ) * sizeof(e)) != sizeof(e))
		return -1;
	return (e >> 63) & 1;
}

/* Runs in the episode child with every thread of pid stopped; tid may run system calls. */
static int episode(pid_t pid, pid_t tid, void *arg, char *msg, size_t len)
{
	char path[64];
	uint64_t a, run = 0, done = 0;
	uint32_t free_i = 0;
	int memfd, pagemap, r = 0;
	struct inject in;
	long ret;

	/* in a child: the guardian must see the helper's end close even while this runs */
	if (arg && ev.guard_pipe >= 0)
		close(ev.guard_pipe);
	snprintf(path, sizeof(path), "/proc/%d/mem", pid);
	memfd = open(path, O_RDONLY | O_CLOEXEC);
	snprintf(path, sizeof(path), "/proc/%d/pagemap", pid);
	pagemap = open(path, O_RDONLY | O_CLOEXEC);
	if (memfd < 0 || pagemap < 0) {
		snprintf(msg, len, "cannot open /proc/%d/mem or pagemap: %s", pid, strerror(errno));
		r = -1;
		goto out;
	}
	if (inject_begin(&in, tid)) {
		snprintf(msg, len, "cannot prepare syscall injection into tid %d: %s", tid,
			 strerror(errno));
		r = -1;
		goto out;
	}
	if (ev.zap) {	/* shared memory: the page cache keeps the content */
		if (inject_syscall(&in, __NR_madvise, (long)ev.start, (long)(ev.end - ev.start),
				   MADV_DONTNEED, 0, 0, 0, &ret) || ret < 0) {
			snprintf(msg, len, "madvise(MADV_DONTNEED) of 0x%" PRIx64 "-0x%" PRIx64
				 " inside pid %d failed: %s", ev.start, ev.end, pid,
				 strerror(ret < 0 ? (int)-ret : errno));
			r = -1;
		} else {
			done = (ev.end - ev.start) / PAGE_SZ;
		}
		a = ev.end + PAGE_SZ;	/* skip the eviction loop */
	}
	/* a run of consecutive saved pages is dropped with one madvise */
	for (a = ev.zap ? a : ev.start; a <= ev.end; a += PAGE_SZ) {
		int keep = 0;

		if (a < ev.end && page_present(pagemap, a) == 1) {
			while (free_i < EVICT_MAX && slots()[free_i].state != SLOT_FREE)
				free_i++;
			if (free_i == EVICT_MAX) {
				snprintf(msg, len, "the store of evicted pages is full (%u pages): "
					 "touch or resolve some first", EVICT_MAX);
				r = -1;
			} else if (pread(memfd, slot_data(free_i), PAGE_SZ, a) == (ssize_t)PAGE_SZ) {
				slots()[free_i].addr = a;
				__atomic_store_n(&slots()[free_i].state, SLOT_SAVED, __ATOMIC_RELEASE);
				keep = 1;
				run += PAGE_SZ;
			}
		}
		if (r)
			break;
		if (keep || !run)
			continue;
		/* a - run .. a: saved, now dropped */
		if (inject_syscall(&in, __NR_madvise, (long)(a - run), (long)run, MADV_DONTNEED,
				   0, 0, 0, &ret) || ret < 0) {
			snprintf(msg, len, "madvise(MADV_DONTNEED) of %#" PRIx64 "+%#" PRIx64
				 " inside pid %d failed: %s", a - run, run, pid,
				 strerror(ret < 0 ? (int)-ret : errno));
			r = -1;
			break;
		}
		done += run / PAGE_SZ;
		run = 0;
	}
	if (r && run) {
		/* saved, not dropped: forget them (those pages are still in place) */
		uint32_t i;

		for (i = 0; i < EVICT_MAX; i++)
			if (slots()[i].state == SLOT_SAVED && slots()[i].addr >= a - run &&
			    slots()[i].addr < a)
				slots()[i].state = SLOT_FREE;
	}
	if (inject_end(&in) && !r) {
		snprintf(msg, len, "cannot restore tid %d after injection: %s", tid,
			 strerror(errno));
		r = -1;
	}
	if (!r)
		snprintf(msg, len, "%" PRIu64, done);
out:
	if (memfd >= 0)
		close(memfd);
	if (pagemap >= 0)
		close(pagemap);
	return r;
}

/* The episode child's last act: the guardian may now put pages back and close. */
static void episode_exit(void *arg)
{
	(void)arg;
	if (ev.base)
		__atomic_store_n(&hdr()->episode, 0, __ATOMIC_RELEASE);
}


static void index_saved(void);
static void evict_answer(int r, const char *buf);

/* ---- a launched program: the helper is its tracer and does the episode itself ------------ */

/*
 * evict: [s, e) is private anonymous memory registered for missing faults (VmFlags `um`);
 * zap: shared memory (shmem, memfd, hugetlbfs) registered in any mode (`um`, `uw`, `ui`).
 */
static int range_ok(uint64_t s, uint64_t e, int zap, char *why, size_t len)
{
	char path[64], line[512], cur[256] = "";
	uint64_t vs = 0, ve = 0, a = s;
	int anon = 0, shared = 0;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/smaps", sess.pid);
	f = fopen(path, "re");
	if (!f) {
		snprintf(why, len, "cannot read %s: %s", path, strerror(errno));
		return -1;
	}
	while (fgets(line, sizeof(line), f) && a < e) {
		unsigned long long x, y, ino;
		char perms[8], name[256] = "";

		if (sscanf(line, "%llx-%llx %7s %*s %*s %llu %255[^\n]", &x, &y, perms, &ino,
			   name) >= 4 && line[0] != 'V') {
			const char *n = name;

			while (*n == ' ')
				n++;
			vs = x;
			ve = y;
			anon = perms[3] == 'p' && !ino && (!*n || *n == '[');
			shared = perms[3] == 's';
			snprintf(cur, sizeof(cur), "%s", *n ? n : "anonymous");
			continue;
		}
		if (strncmp(line, "VmFlags:", 8) || ve <= a || vs >= e)
			continue;
		if (vs > a)
			break;
		if (zap ? !shared || !(strstr(line, " um") || strstr(line, " uw") ||
				       strstr(line, " ui")) :
			  !anon || !strstr(line, " um")) {
			snprintf(why, len, "0x%" PRIx64 "-0x%" PRIx64 " (%s) is %s", vs, ve, cur,
				 zap && !shared ? "not shared memory; zap drops the page tables of "
				 "shmem, memfd or hugetlbfs mappings (their content stays in the page "
				 "cache)" : !zap && !anon ? "not private anonymous memory; only that can "
				 "be evicted" : "not tracked (registered): register it first");
			fclose(f);
			return -1;
		}
		a = ve;
	}
	fclose(f);
	if (a < e) {
		snprintf(why, len, "0x%" PRIx64 " is not mapped", a);
		return -1;
	}
	return 0;
}

static void pump(void)
{
	if (sess.uffd >= 0)
		faults_read(sess.uffd);	/* the eviction's own `remove` events among them */
}

/* Every thread stopped (those blocked in the kernel on a fault cannot write), pages saved and
 * dropped, threads resumed; answered at once. */
static void evict_launched(void)
{
	char path[64], msg[1024] = "";
	pid_t *tids = NULL, pick = 0;
	size_t n = 0, cap = 0, i;
	struct dirent *de;
	int r = -EAGAIN;
	DIR *d;

	snprintf(path, sizeof(path), "/proc/%d/task", sess.pid);
	d = opendir(path);
	while (d && (de = readdir(d))) {
		pid_t tid = (pid_t)strtol(de->d_name, NULL, 10);

		if (tid <= 0)
			continue;
		if (n == cap) {
			pid_t *nt = realloc(tids, (cap = cap ? 2 * cap : 16) * sizeof(*tids));

			if (!nt)
				break;
			tids = nt;
		}
		if (tracer_stop_thread(tid)) {
			pr_info("evict: thread %d did not stop (%s): blocked in the kernel, it "
				"cannot write meanwhile", tid, strerror(errno));
			continue;
		}
		tids[n++] = tid;
		if (!pick)
			pick = tid;
	}
	if (d)
		closedir(d);
	if (!pick) {
		snprintf(msg, sizeof(msg), "no thread of pid %d could be stopped to run madvise: "
			 "try again", sess.pid);
	} else {
		ev.local = 1;
		inject_idle = pump;
		r = episode(sess.pid, pick, NULL, msg, sizeof(msg));
		inject_idle = NULL;
		ev.local = 0;
	}
	index_saved();
	for (i = 0; i < n; i++)
		tracer_resume_thread(tids[i]);
	free(tids);
	evict_answer(r, msg);
}

/* ---- requests and the poll loop -------------------------------------------------------- */

static int parse_addr(const struct jval *v, uint64_t *out)
{
	const char *s = json_cstr(v);
	char *end;

	if (!s || strncmp(s, "0x", 2))
		return -1;
	errno = 0;
	*out = strtoull(s + 2, &end, 16);
	return errno || *end || end == s + 2 ? -1 : 0;
}

static void evict_or_zap(int64_t id, const struct jval *req, int zap)
{
	const char *cmd = zap ? "zap" : "evict";
	char why[256];
	uint64_t s, e;

	if (!attach_active() && !(sess.alive && sess.uffd >= 0 && !sess.mm_lost)) {
		resp_err(id, "ESTATE", "%s needs a running program (launched or attached)", cmd);
		return;
	}
	if (ev.child) {
		resp_err(id, "EBUSY", "an eviction or zap is still in progress: wait for its "
			 "answer");
		return;
	}
	if (parse_addr(json_get(req, "start"), &s) || parse_addr(json_get(req, "end"), &e) ||
	    e <= s || (s | e) & (PAGE_SZ - 1)) {
		resp_err(id, "EPROTO", "%s needs 'start' and 'end', page-aligned \"0x..\" "
			 "addresses with start < end", cmd);
		return;
	}
	if (!zap && e - s > (uint64_t)EVICT_MAX * PAGE_SZ) {
		resp_err(id, "E2BIG", "evict at most %u pages (%u MiB) at a time", EVICT_MAX,
			 EVICT_MAX / 256);
		return;
	}
	if (!zap && attach_active() && !attach_tracks(s, e)) {
		resp_err(id, "EINVAL", "cannot evict 0x%" PRIx64 "-0x%" PRIx64 ": not all of it is "
			 "tracked (registered) by this helper: track it first", s, e);
		return;
	}
	if (range_ok(s, e, zap, why, sizeof(why))) {
		resp_err(id, "EINVAL", "cannot %s 0x%" PRIx64 "-0x%" PRIx64 ": %s", cmd, s, e,
			 why);
		return;
	}
	if (!zap && (store_open() || (attach_active() && guardian_start()))) {
		resp_err(id, errno_name(errno), "cannot set up the store of evicted pages: %s",
			 strerror(errno));
		return;
	}
	ev.start = s;
	ev.end = e;
	ev.id = id;
	ev.zap = zap;
	if (!attach_active()) {
		evict_launched();
		return;
	}
	/* set for the child's whole life: the guardian waits for it to end */
	if (ev.base)
		__atomic_store_n(&hdr()->episode, 1, __ATOMIC_RELEASE);
	if (attach_episode(episode, episode_exit, &ev, &ev.child, &ev.sk, why, sizeof(why))) {
		if (ev.base)
			hdr()->episode = 0;
		ev.child = 0;
		resp_err(id, errno_name(errno), "%s", why);
	}
}

void evict_cmd(int64_t id, const struct jval *req)
{
	evict_or_zap(id, req, 0);
}

void zap_cmd(int64_t id, const struct jval *req)
{
	evict_or_zap(id, req, 1);
}

/* The episode answered: index what it saved and answer the request. */
static void episode_done(void)
{
	char buf[1024] = { 0 };
	int r = -1;
	ssize_t len;

	len = recv(ev.sk, buf, sizeof(buf) - 1, 0);
	if (len > (ssize_t)sizeof(int)) {
		memcpy(&r, buf, sizeof(int));
		memmove(buf, buf + sizeof(int), len - sizeof(int));
		buf[len - sizeof(int)] = 0;
	} else {
		snprintf(buf, sizeof(buf), "the eviction process %d ended without an answer",
			 ev.child);
	}
	index_saved();
	/* only now may the threads run (and touch what was dropped) */
	if (send(ev.sk, "r", 1, MSG_NOSIGNAL) < 0 && errno != EPIPE)
		pr_perror("evict: releasing the episode %d", ev.child);
	close(ev.sk);
	ev.sk = -1;
	while (waitpid(ev.child, NULL, 0) < 0 && errno == EINTR)
		;
	ev.child = 0;
	if (ev.base)
		hdr()->episode = 0;
	evict_answer(r, buf);
}

/* Indexes every saved slot (also after a failure: what was dropped must come back). */
static void index_saved(void)
{
	uint32_t i;

	if (!ev.base)
		return;
	for (i = 0; i < EVICT_MAX; i++) {
		struct slot *sl = &slots()[i];
		uint32_t h;

		if (sl->state != SLOT_SAVED)
			continue;
		h = hash_find(sl->addr);
		if (ev.hash[h] == i + 1)
			continue;
		if (ev.hash[h]) {	/* an older copy of that page: this one is newer */
			slots()[ev.hash[h] - 1].state = SLOT_FREE;
			ev.count--;
		}
		ev.hash[h] = i + 1;
		ev.count++;
	}
}

static void evict_answer(int r, const char *buf)
{
	int err = EIO;
	uint64_t n;

	if (r < 0) {
		if (r < -1)
			err = -r;
		resp_err(ev.id, errno_name(err), "%s", buf);
		return;
	}
	n = strtoull(buf, NULL, 10);
	if (ev.zap) {
		pr_info("zapped 0x%" PRIx64 "-0x%" PRIx64, ev.start, ev.end);
		/* Wire format: ZapBody in server/protocol/messages.ts */
		resp_ok_begin(ev.id);
		jb_printf(&out, "{\"start\":\"0x%" PRIx64 "\",\"end\":\"0x%" PRIx64 "\",\"bytes\":%"
			  PRIu64 "}", ev.start, ev.end, ev.end - ev.start);
		resp_ok_end();
		return;
	}
	pr_info("evicted %" PRIu64 " pages of 0x%" PRIx64 "-0x%" PRIx64 " (%" PRIu64 " saved "
		"in all)", n, ev.start, ev.end, ev.count);
	/* Wire format: EvictBody in server/protocol/messages.ts */
	resp_ok_begin(ev.id);
	jb_printf(&out, "{\"start\":\"0x%" PRIx64 "\",\"end\":\"0x%" PRIx64 "\",\"pages\":%"
		  PRIu64 ",\"saved\":%" PRIu64 "}", ev.start, ev.end, n, ev.count);
	resp_ok_end();
}

void evict_pollfd(struct pollfd *pfd, int *n, int *idx)
{
	*idx = -1;
	if (ev.sk < 0)
		return;
	*idx = *n;
	pfd[(*n)++] = (struct pollfd){ .fd = ev.sk, .events = POLLIN };
}

void evict_ready(const struct pollfd *pfd, int idx)
{
	if (idx >= 0 && pfd[idx].revents)
		episode_done();
}

int evict_claims_remove(uint64_t start, uint64_t end)
{
	return (ev.child || ev.local) && start >= ev.start && end <= ev.end;
}

const void *evict_saved(int fd, uint64_t page)
{
	uint32_t h;

	if (!ev.count || fd != sess.uffd)
		return NULL;
	h = hash_find(page);
	return ev.hash[h] ? slot_data(ev.hash[h] - 1) : NULL;
}

void evict_forget(int fd, uint64_t page)
{
	uint32_t h, i;

	if (!ev.count || fd != sess.uffd)
		return;
	h = hash_find(page);
	if (!ev.hash[h])
		return;
	i = ev.hash[h] - 1;
	hash_del(page);
	slots()[i].state = SLOT_FREE;
	ev.count--;
	/* give the memory back */
	if (fallocate(ev.memfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      DATA_OFF + (uint64_t)i * PAGE_SZ, PAGE_SZ))
		pr_perror("evict: freeing the saved copy of %#" PRIx64, page);
}

void evict_forget_range(int fd, uint64_t start, uint64_t end)
{
	uint32_t i;

	if (!ev.count || fd != sess.uffd)
		return;
	if ((end - start) / PAGE_SZ <= ev.count) {
		for (; start < end; start += PAGE_SZ)
			evict_forget(fd, start);
		return;
	}
	/* a range larger than what is saved (a big munmap): look through the saved pages */
	for (i = 0; i < EVICT_MAX && ev.count; i++)
		if (slots()[i].state == SLOT_SAVED && slots()[i].addr >= start &&
		    slots()[i].addr < end)
			evict_forget(fd, slots()[i].addr);
}

uint64_t evict_count(void)
{
	return ev.count;
}

void evict_end(int restore)
{
	if (ev.child) {	/* an episode cannot be abandoned: its threads are stopped */
		struct pollfd p = { .fd = ev.sk, .events = POLLIN };

		while (ev.child && poll(&p, 1, 10) >= 0) {
			if (sess.uffd >= 0)
				faults_read(sess.uffd);
			if (p.revents) {
				episode_done();
				break;
			}
		}
	}
	if (ev.base && restore && sess.uffd >= 0 && ev.count) {
		uint64_t n = restore_all(sess.uffd, 0);

		pr_info("evict: %" PRIu64 " saved pages put back", n);
	}
	guardian_stop();
	if (ev.base) {
		munmap(ev.base, STORE_SIZE);
		close(ev.memfd);
		free(ev.hash);
	}
	ev.base = NULL;
	ev.hash = NULL;
	ev.memfd = -1;
	ev.count = 0;
}
