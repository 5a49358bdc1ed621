/*
 * libFuzzer harness for the helper's request side: arbitrary bytes go through the helper's
 * real stdin framing (read_input), JSON parser and request dispatch (handle_request), and
 * every byte the helper writes as protocol output must be one valid JSON object per line.
 *
 * uffd-helper.c is included (its main renamed) so its static framing and dispatch run
 * unchanged. Nothing here may reach outside the fuzzer: launch_exec is wrapped (no fork),
 * attach only ever reaches the helper's own refusals (its pid, its parent, a pid that
 * cannot exist) or, in attached mode, the sleeping child this harness made; kill and
 * detach of that child are refused so the state holds for every input.
 *
 *   UFFD_FUZZ_MODE=attached   start attached to a sleeping child (default: no program)
 *
 * Build: make -C server/native fuzz  ->  server/native/bin/fuzz-protocol
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/types.h>
#include <sys/wait.h>

static int fuzz_kill(pid_t pid, int sig);
#define kill fuzz_kill
#define main uffd_helper_main
#include "../uffd-helper.c"
#undef main
#undef kill

#include "../launch.h"

static pid_t child;		/* attached mode: the sleeping child */
static int attached_mode;
static int stdin_w = -1;	/* write end of the pipe that is the helper's stdin */
static int stdout_fd = -1;	/* memfd that is the helper's stdout (flush_out) */
static struct policy policy0;

/* The only process the harness lets the helper signal is none at all. */
static int fuzz_kill(pid_t pid, int sig)
{
	(void)pid;
	(void)sig;
	errno = EPERM;
	return -1;
}

int __real_launch_exec(const struct launch_args *a, pid_t *pid, int out[2], struct launch_err *e);
int __wrap_launch_exec(const struct launch_args *a, pid_t *pid, int out[2], struct launch_err *e)
{
	(void)pid;
	(void)out;
	e->err = EACCES;
	snprintf(e->msg, sizeof(e->msg), "fuzz: not launching '%s'", a->path);
	return -1;
}

void __real_attach_cmd_attach(int64_t id, const struct jval *req, uint64_t features);
void __wrap_attach_cmd_attach(int64_t id, const struct jval *req, uint64_t features)
{
	struct jval *pv = json_get(req, "pid");
	int64_t pid;

	/* Keep the argument checks (a pid that is not a positive integer, bad 'track'), but
	 * never let a fuzzed pid reach a real process: only refusals without ptrace remain. */
	if (json_int(pv, 1, INT32_MAX, &pid) && !(child && pid == child)) {
		static const double safe[3] = { 0, 0, 2147483647.0 };
		double s[3] = { getpid(), getppid(), safe[2] };

		pv->num = s[(uint64_t)pid % 3];
	}
	__real_attach_cmd_attach(id, req, features);
}

void __real_attach_cmd_detach(int64_t id);
void __wrap_attach_cmd_detach(int64_t id)
{
	if (attached_mode) {
		resp_err(id, "ESTATE", "fuzz: detach refused to stay attached");
		return;
	}
	__real_attach_cmd_detach(id);
}

/* ---- an independent, strict JSON checker (RFC 8259, UTF-8) --------------------------- */

struct chk {
	const unsigned char *p, *end;
	int depth;
};

static void ws(struct chk *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r'))
		c->p++;
}

static int utf8(struct chk *c)
{
	const unsigned char *s = c->p;
	size_t n = c->end - s, len, i;
	unsigned cp;

	if (s[0] < 0x80)
		return c->p++, 1;
	if ((s[0] & 0xe0) == 0xc0)
		len = 2, cp = s[0] & 0x1f;
	else if ((s[0] & 0xf0) == 0xe0)
		len = 3, cp = s[0] & 0x0f;
	else if ((s[0] & 0xf8) == 0xf0)
		len = 4, cp = s[0] & 0x07;
	else
		return 0;
	if (len > n)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		cp = cp << 6 | (s[i] & 0x3f);
	}
	if ((len == 2 && cp < 0x80) || (len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	c->p += len;
	return 1;
}

static int value(struct chk *c);

static int string(struct chk *c)
{
	if (c->p >= c->end || *c->p != '"')
		return 0;
	c->p++;
	while (c->p < c->end && *c->p != '"') {
		if (*c->p < 0x20)
			return 0;
		if (*c->p == '\\') {
			if (++c->p >= c->end)
				return 0;
			if (*c->p == 'u') {
				int i;

				for (i = 1; i <= 4; i++)
					if (c->p + i >= c->end || !strchr("0123456789abcdefABCDEF", c->p[i]) ||
					    !c->p[i])
						return 0;
				c->p += 5;
			} else if (strchr("\"\\/bfnrt", *c->p) && *c->p) {
				c->p++;
			} else {
				return 0;
			}
		} else if (!utf8(c)) {
			return 0;
		}
	}
	if (c->p >= c->end)
		return 0;
	c->p++;
	return 1;
}

static int digits(struct chk *c)
{
	const unsigned char *s = c->p;

	while (c->p < c->end && *c->p >= '0' && *c->p <= '9')
		c->p++;
	return c->p > s;
}

static int number(struct chk *c)
{
	if (c->p < c->end && *c->p == '-')
		c->p++;
	if (c->p < c->end && *c->p == '0')
		c->p++;
	else if (!digits(c))
		return 0;
	if (c->p < c->end && *c->p == '.') {
		c->p++;
		if (!digits(c))
			return 0;
	}
	if (c->p < c->end && (*c->p == 'e' || *c->p == 'E')) {
		c->p++;
		if (c->p < c->end && (*c->p == '+' || *c->p == '-'))
			c->p++;
		if (!digits(c))
			return 0;
	}
	return 1;
}

static int word(struct chk *c, const char *w)
{
	size_t n = strlen(w);

	if ((size_t)(c->end - c->p) < n || memcmp(c->p, w, n))
		return 0;
	c->p += n;
	return 1;
}

static int members(struct chk *c, char close, int keyed)
{
	c->p++;
	ws(c);
	if (c->p < c->end && *c->p == close)
		return c->p++, 1;
	for (;;) {
		ws(c);
		if (keyed) {
			if (!string(c))
				return 0;
			ws(c);
			if (c->p >= c->end || *c->p++ != ':')
				return 0;
		}
		if (!value(c))
			return 0;
		ws(c);
		if (c->p >= c->end)
			return 0;
		if (*c->p == close)
			return c->p++, 1;
		if (*c->p++ != ',')
			return 0;
	}
}

static int value(struct chk *c)
{
	int ok;

	ws(c);
	if (c->p >= c->end)
		return 0;
	if (++c->depth > 64)
		return 0;
	switch (*c->p) {
	case '{': ok = members(c, '}', 1); break;
	case '[': ok = members(c, ']', 0); break;
	case '"': ok = string(c); break;
	case 't': ok = word(c, "true"); break;
	case 'f': ok = word(c, "false"); break;
	case 'n': ok = word(c, "null"); break;
	default: ok = number(c); break;
	}
	c->depth--;
	ws(c);
	return ok;
}

static void finding(const char *why, const char *line, size_t len)
{
	fprintf(stderr, "fuzz-protocol: FINDING: %s in output line (%zu bytes): %.*s\n", why, len,
		(int)(len > 2000 ? 2000 : len), line);
	abort();
}

/* One protocol line: a JSON object that is a response or an event, with their fields. */
static void check_line(const char *line, size_t len)
{
	struct chk c = { (const unsigned char *)line, (const unsigned char *)line + len, 0 };
	const char *err = NULL, *type;
	struct jval *v;

	if (!len || line[0] != '{' || !value(&c) || c.p != c.end)
		finding("not one strict JSON object", line, len);
	v = json_parse(line, len, &err);
	if (!v || v->type != J_OBJ)
		finding("the helper's own parser rejects it", line, len);
	type = json_cstr(json_get(v, "type"));
	if (type && !strcmp(type, "response")) {
		const struct jval *ok = json_get(v, "ok"), *e = json_get(v, "error");
		int64_t id;

		if (!json_int(json_get(v, "id"), 0, INT64_MAX, &id) || !ok || ok->type != J_BOOL)
			finding("response without integer id or boolean ok", line, len);
		if (ok->boolean ? !json_get(v, "body") :
		    (!e || !json_cstr(json_get(e, "code")) || !json_cstr(json_get(e, "message"))))
			finding("response without body or error code and message", line, len);
	} else if (!type || strcmp(type, "event") || !json_cstr(json_get(v, "event"))) {
		finding("neither a response nor an event", line, len);
	}
	json_free(v);
}

static void check_output(const char *p, size_t len)
{
	size_t start = 0;

	while (start < len) {
		const char *nl = memchr(p + start, '\n', len - start);

		if (!nl)
			finding("unterminated", p + start, len - start);
		check_line(p + start, nl - (p + start));
		start = nl - p + 1;
	}
}

/* ---- setup and the entry point ---------------------------------------------------- */

static void check_long_line(void);

static int has(const char *p, size_t len, const char *needle)
{
	return memmem(p, len, needle, strlen(needle)) != NULL;
}

static void die(const char *what)
{
	perror(what);
	exit(2);
}

/* At the fuzzer's exit: the child is reaped here, not left as a zombie of init. */
static void reap_child(void)
{
	if (child > 0 && !kill(child, SIGKILL))
		waitpid(child, NULL, 0);
}

static void start_attached(void)
{
	char req[128];
	int sync[2];
	char b;

	if (pipe(sync))
		die("pipe");
	child = fork();
	if (child < 0)
		die("fork");
	if (!child) {
		void *m;

		prctl(PR_SET_PDEATHSIG, SIGKILL);
		if (getppid() == 1)
			_exit(0);
		m = mmap(NULL, 64 << 12, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (m == MAP_FAILED)
			_exit(1);
		((volatile char *)m)[0] = 1;
		if (write(sync[1], "r", 1) != 1)
			_exit(1);
		for (;;)
			pause();
	}
	close(sync[1]);
	atexit(reap_child);
	if (read(sync[0], &b, 1) != 1)
		die("waiting for the sleeping child");
	close(sync[0]);
	snprintf(req, sizeof(req), "{\"id\":1,\"cmd\":\"attach\",\"pid\":%d}", (int)child);
	handle_request(req, strlen(req));
	if (!sess.pid || !attach_active()) {
		fprintf(stderr, "fuzz-protocol: could not attach to the sleeping child %d: %.*s\n",
			(int)child, (int)out.len, out.p);
		exit(2);
	}
	check_output(out.p, out.len);
	out.len = 0;
}

static void init(void)
{
	const char *mode = getenv("UFFD_FUZZ_MODE");
	const char *hello = "{\"id\":1,\"cmd\":\"hello\",\"protocol\":2}";

	attached_mode = mode && !strcmp(mode, "attached");
	log_init();
	signal(SIGPIPE, SIG_IGN);
	inbuf = malloc(INBUF_SIZE);
	if (!inbuf)
		die("malloc");
	stdout_fd = memfd_create("fuzz-protocol-stdout", MFD_CLOEXEC);
	if (stdout_fd < 0 || dup2(stdout_fd, STDOUT_FILENO) < 0)
		die("memfd as stdout");
	uffd_probe(&probe);
	handle_request(hello, strlen(hello));
	check_output(out.p, out.len);
	out.len = 0;
	if (!sess.hello_done) {
		fprintf(stderr, "fuzz-protocol: hello failed\n");
		exit(2);
	}
	check_long_line();
	if (attached_mode)
		start_attached();
	policy0 = policy;
}

/*
 * Inputs the fuzzer cannot make (-max_len is small): a line over 1 MiB, arriving in pipe-sized
 * pieces, must get exactly one id 0 EPROTO response and the next line its own answer.
 */
static void check_long_line(void)
{
	static const char next[] = "\n{\"id\":7,\"cmd\":\"stats\"}\n";
	size_t len = MAX_LINE + 100000, off = 0, total = len + sizeof(next) - 1;
	char *data = malloc(total);
	int p[2], lines;

	if (!data || pipe2(p, O_CLOEXEC) || dup2(p[0], STDIN_FILENO) < 0)
		die("long line setup");
	close(p[0]);
	if (fcntl(p[1], F_SETFL, O_NONBLOCK))
		die("fcntl");
	memset(data, 'x', len);
	memcpy(data + len, next, sizeof(next) - 1);
	while (off < total) {
		ssize_t n = write(p[1], data + off, total - off);

		if (n > 0)
			off += n;
		read_input();
	}
	close(p[1]);
	while (read_input() >= 0)
		;
	free(data);
	check_output(out.p, out.len);
	for (off = 0, lines = 0; off < out.len; off++)
		lines += out.p[off] == '\n';
	if (lines != 2 || !has(out.p, out.len, "\"id\":0,\"ok\":false,\"error\":{\"code\":\"EPROTO\"") ||
	    !has(out.p, out.len, "\"id\":7,\"ok\":true"))
		finding("a line over 1 MiB is not answered by one id 0 EPROTO, then the next line",
			out.p, out.len);
	out.len = 0;
}

/* What the helper wrote to stdout itself (flush_out), then emptied. */
static void check_flushed(void)
{
	static char buf[1 << 20];
	off_t end = lseek(STDOUT_FILENO, 0, SEEK_CUR);
	ssize_t n;

	if (end <= 0)
		return;
	if (end > (off_t)sizeof(buf))
		end = sizeof(buf);
	n = pread(STDOUT_FILENO, buf, end, 0);
	if (n > 0)
		check_output(buf, n);
	if (ftruncate(STDOUT_FILENO, 0) || lseek(STDOUT_FILENO, 0, SEEK_SET))
		die("resetting the stdout memfd");
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int ready;
	size_t off = 0;
	int p[2];

	if (!ready) {
		init();
		ready = 1;
	}
	if (pipe2(p, O_CLOEXEC) || dup2(p[0], STDIN_FILENO) < 0)
		die("pipe as stdin");
	close(p[0]);
	stdin_w = p[1];
	if (fcntl(stdin_w, F_SETFL, O_NONBLOCK))
		die("fcntl");
	inlen = 0;
	discarding = 0;
	quitting = 0;
	policy = policy0;

	/* Written in pipe-sized pieces, each read by the helper's own read_input(). */
	while (off < size && !quitting) {	/* after shutdown the helper reads no more */
		ssize_t n = write(stdin_w, data + off, size - off);

		if (n < 0 && errno != EAGAIN)
			die("write to the stdin pipe");
		if (n > 0)
			off += n;
		read_input();
	}
	close(stdin_w);
	while (!quitting && read_input() >= 0)
		;
	check_output(out.p, out.len);
	out.len = 0;
	out_urgent = 0;
	out_since = 0;
	check_flushed();
	return 0;
}
