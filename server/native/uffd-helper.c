/*
 * uffd-helper: runs one program with a userfaultfd planted in it and speaks the line
 * protocol of docs/protocol.md on stdin/stdout. Single-threaded: one poll() loop over
 * stdin, the userfaultfd and a signalfd for SIGCHLD (ptrace stops).
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ptrace.h>
#include <sys/signalfd.h>
#include <sys/utsname.h>
#include <sys/wait.h>

#include "attach.h"
#include "dirty.h"
#include "errnames.h"
#include "evict.h"
#include "faults.h"
#include "json.h"
#include "launch.h"
#include "log.h"
#include "mem.h"
#include "output.h"
#include "session.h"
#include "stack.h"
#include "stream.h"
#include "tracer.h"
#include "uffd.h"

#define PROTOCOL_VERSION 2
#define HELPER_VERSION "uffd-helper 0.1.0"
#define MAX_LINE (1024 * 1024)
#define INBUF_SIZE (MAX_LINE + 65536)

extern char **environ;

struct session sess = { .uffd = -1 };
struct jbuf out;
int out_urgent;
static uint64_t out_since;	/* when the oldest unflushed byte was written */

static struct uffd_probe probe;
static int quitting;

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + ts.tv_nsec;
}

void resp_ok_begin(int64_t id)
{
	stream_flush();	/* faults gathered before a line go out before it */
	out_urgent = 1;
	jb_printf(&out, "{\"type\":\"response\",\"id\":%lld,\"ok\":true,\"body\":", (long long)id);
}

void resp_ok_end(void)
{
	jb_puts(&out, "}\n");
}

void resp_ok_empty(int64_t id)
{
	resp_ok_begin(id);
	jb_puts(&out, "{}");
	resp_ok_end();
}

void resp_err(int64_t id, const char *code, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	stream_flush();
	out_urgent = 1;
	jb_printf(&out, "{\"type\":\"response\",\"id\":%lld,\"ok\":false,\"error\":{\"code\":",
		  (long long)id);
	jb_str(&out, code);
	jb_puts(&out, ",\"message\":");
	jb_str(&out, msg);
	jb_puts(&out, "}}\n");
}

void ev_begin(const char *name)
{
	stream_flush();
	out_urgent = 1;
	jb_puts(&out, "{\"type\":\"event\",\"event\":");
	jb_str(&out, name);
}

void ev_end(void)
{
	jb_puts(&out, "}\n");
}

static int flush_out(void)
{
	size_t off = 0;

	stream_flush();
	while (off < out.len) {
		ssize_t n = write(STDOUT_FILENO, out.p + off, out.len - off);

		if (n < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN) {
				struct pollfd p = { .fd = STDOUT_FILENO, .events = POLLOUT };

				poll(&p, 1, -1);
				continue;
			}
			pr_perror("writing protocol output to stdout");
			out.len = 0;
			out_urgent = 0;
			return -1;
		}
		off += n;
	}
	out.len = 0;
	out_urgent = 0;
	out_since = 0;
	return 0;
}

/*
 * Responses and events other than auto-resolved faults go out at the end of the loop
 * iteration that made them. Auto-resolved faults of a busy program are gathered (stream.c)
 * for up to STREAM_DELAY_NS, STREAM_MAX faults or STREAM_BATCH bytes: one write, one client
 * wake-up and one parse per batch (20 ms rather than 5: a client wake-up costs more than
 * the faults it brings). When nothing happens for STREAM_IDLE_MS (the program computes, or
 * waits), what was gathered goes out then, so a lone fault is not held back.
 */
#define STREAM_DELAY_NS 20000000ULL
#define STREAM_BATCH 65536
#define STREAM_IDLE_MS 2

static int pending_out(void)
{
	return out.len || stream_pending();
}

static void maybe_flush(int idle)
{
	if (!pending_out())
		return;
	if (!out_since)
		out_since = now_ns();
	if (out_urgent || idle || out.len >= STREAM_BATCH ||
	    now_ns() - out_since >= STREAM_DELAY_NS)
		flush_out();
}

static int poll_timeout(void)
{
	uint64_t waited;

	if (!pending_out())
		return -1;
	waited = now_ns() - out_since;
	if (waited >= STREAM_DELAY_NS)
		return 0;
	return STREAM_IDLE_MS;
}

/* ---- requests ---------------------------------------------------------------------- */

static void cmd_hello(int64_t id, const struct jval *req)
{
	const struct jval *pv = json_get(req, "protocol");
	struct utsname u;
	int64_t v;

	if (!json_int(pv, INT32_MIN, INT32_MAX, &v)) {
		resp_err(id, "EPROTO", "hello needs a numeric 'protocol' (this helper speaks %d)",
			 PROTOCOL_VERSION);
		return;
	}
	if (v != PROTOCOL_VERSION) {
		resp_err(id, "EVERSION", "client speaks protocol %lld, helper speaks %d: "
			 "rebuild the helper (make -C server/native) or update the client",
			 (long long)v, PROTOCOL_VERSION);
		return;
	}
	sess.hello_done = 1;
	uname(&u);
	/* Wire format: HelloBody in server/protocol/messages.ts */
	resp_ok_begin(id);
	jb_printf(&out, "{\"protocol\":%d,\"helper\":\"%s\",\"pid\":%d,\"kernel\":",
		  PROTOCOL_VERSION, HELPER_VERSION, (int)getpid());
	jb_str(&out, u.release);
	jb_printf(&out, ",\"uffd\":{\"available\":%s,\"source\":",
		  probe.available ? "true" : "false");
	if (probe.source)
		jb_str(&out, probe.source);
	else
		jb_puts(&out, "null");
	jb_printf(&out, ",\"api\":%llu,\"features\":", (unsigned long long)probe.api);
	uffd_features_json(&out, probe.features);
	jb_puts(&out, ",\"ioctls\":");
	uffd_ioctls_json(&out, probe.ioctls);
	jb_puts(&out, ",\"error\":");
	if (probe.available)
		jb_puts(&out, "null");
	else
		jb_str(&out, probe.error);
	jb_puts(&out, "}}");
	resp_ok_end();
}

/* PATH lookup for a program name without '/', done before fork. */
static char *find_in_path(const char *prog, char *const *envp)
{
	const char *path = NULL, *p;
	size_t i;

	for (i = 0; envp[i]; i++)
		if (!strncmp(envp[i], "PATH=", 5))
			path = envp[i] + 5;
	if (!path)
		path = "/usr/local/bin:/usr/bin:/bin";
	for (p = path; *p;) {
		const char *end = strchrnul(p, ':');
		char *cand;

		if (asprintf(&cand, "%.*s%s%s", (int)(end - p), p, end == p ? "" : "/", prog) < 0)
			return NULL;
		if (!access(cand, X_OK))
			return cand;
		free(cand);
		p = *end ? end + 1 : end;
	}
	return NULL;
}

static void free_strv(char **v)
{
	size_t i;

	if (!v)
		return;
	for (i = 0; v[i]; i++)
		free(v[i]);
	free(v);
}

static void cmd_launch(int64_t id, const struct jval *req)
{
	const struct jval *args = json_get(req, "args"), *env = json_get(req, "env");
	const struct jval *cwdv = json_get(req, "cwd");
	const char *program = json_cstr(json_get(req, "program")), *cwd = NULL;
	char **argv = NULL, **envp = NULL, *path = NULL;
	struct launch_args la = { 0 };
	struct launch_err le = { 0 };
	struct jbuf regions = { 0 };
	size_t i, n;
	pid_t pid;
	int fd, outp[2];

	if (sess.pid) {
		resp_err(id, "ESTATE", "a program was already launched (pid %d); one helper runs "
			 "one program: start another helper", sess.pid);
		return;
	}
	if (!program || !*program) {
		resp_err(id, "EPROTO", "launch needs 'program', a non-empty string");
		return;
	}
	if (args && args->type != J_ARR && args->type != J_NULL) {
		resp_err(id, "EPROTO", "'args' must be an array of strings");
		return;
	}
	if (cwdv && cwdv->type != J_NULL) {
		cwd = json_cstr(cwdv);
		if (!cwd || !*cwd) {
			resp_err(id, "EPROTO", "'cwd' must be a non-empty string");
			return;
		}
	}
	if (env && env->type != J_OBJ && env->type != J_NULL) {
		resp_err(id, "EPROTO", "'env' must be an object of strings or null");
		return;
	}

	n = args && args->type == J_ARR ? args->n : 0;
	argv = calloc(n + 2, sizeof(*argv));
	if (!argv)
		goto oom;
	argv[0] = strdup(program);
	if (!argv[0])
		goto oom;
	for (i = 0; i < n; i++) {
		const char *s = json_cstr(args->items[i]);

		if (!s) {
			resp_err(id, "EPROTO", "'args[%zu]' must be a string without NUL", i);
			goto out;
		}
		argv[i + 1] = strdup(s);
		if (!argv[i + 1])
			goto oom;
	}
	if (env && env->type == J_OBJ) {
		envp = calloc(env->n + 1, sizeof(*envp));
		if (!envp)
			goto oom;
		for (i = 0; i < env->n; i++) {
			const char *v = json_cstr(env->items[i]);

			if (!v || !*env->keys[i] || strchr(env->keys[i], '=')) {
				resp_err(id, "EPROTO", "'env' entry '%s' needs a name without '=' and "
					 "a string value", env->keys[i]);
				goto out;
			}
			if (asprintf(&envp[i], "%s=%s", env->keys[i], v) < 0) {
				envp[i] = NULL;
				goto oom;
			}
		}
	}

	if (strchr(program, '/')) {
		path = strdup(program);
	} else {
		path = find_in_path(program, envp ? envp : environ);
		if (!path) {
			resp_err(id, "ENOENT", "program '%s' not found in PATH: give its path",
				 program);
			goto out;
		}
	}
	if (!path)
		goto oom;

	if (uffd_session_opts(id, req))	/* followForks, wpAsync */
		goto out;
	la.path = path;
	la.argv = argv;
	la.envp = envp ? envp : environ;
	la.cwd = cwd;
	flush_out();	/* the child must not inherit unwritten protocol output */
	if (launch_exec(&la, &pid, outp, &le)) {
		resp_err(id, errno_name(le.err), "%s", le.msg);
		goto out;
	}
	fd = launch_take_uffd(pid, uffd_launch_features(probe.features), &sess.uffd_source, &le);
	if (fd < 0) {
		kill(pid, SIGKILL);
		while (waitpid(pid, NULL, __WALL) < 0 && errno == EINTR)
			;
		close(outp[0]);
		close(outp[1]);
		resp_err(id, errno_name(le.err), "%s", le.msg);
		goto out;
	}
	output_set(outp[0], outp[1]);
	sess.pid = pid;
	sess.alive = 1;
	sess.uffd = fd;
	sess.uffd_features = uffd_launch_features(probe.features);
	tracer_add(pid, 1);
	track_register_maps(pid, &regions);
	pr_info("launched %s as pid %d, userfaultfd %d (%s)", path, pid, fd, sess.uffd_source);

	/* Wire format: LaunchBody in server/protocol/messages.ts */
	resp_ok_begin(id);
	jb_printf(&out, "{\"pid\":%d,\"uffdSource\":", pid);
	jb_str(&out, sess.uffd_source);
	jb_puts(&out, ",\"features\":");
	uffd_features_json(&out, sess.uffd_features);
	jb_puts(&out, ",\"regions\":[");
	if (regions.len)
		jb_write(&out, regions.p, regions.len);
	jb_puts(&out, "]}");
	resp_ok_end();
	goto out;
oom:
	resp_err(id, "ENOMEM", "out of memory preparing the launch");
out:
	free(regions.p);
	free(path);
	free_strv(argv);
	free_strv(envp);
}

static void cmd_run(int64_t id)
{
	if (!sess.pid || !sess.alive) {
		resp_err(id, "ESTATE", sess.pid ? "the program has exited" :
			 "nothing to run: send 'launch' first");
		return;
	}
	if (sess.running) {
		resp_err(id, "ESTATE", "the program is already running");
		return;
	}
	if (ptrace(PTRACE_CONT, sess.pid, 0, 0)) {
		resp_err(id, errno_name(errno), "cannot start pid %d: %s", sess.pid,
			 strerror(errno));
		return;
	}
	sess.running = 1;
	resp_ok_empty(id);
}

static int bool_arg(int64_t id, const struct jval *v, const char *what, int *dst, int *ok)
{
	if (!v)
		return 0;
	if (v->type != J_BOOL) {
		resp_err(id, "EPROTO", "'%s' must be true or false", what);
		*ok = 0;
		return -1;
	}
	*dst = v->boolean;
	return 0;
}

static void cmd_policy(int64_t id, const struct jval *req)
{
	const struct jval *h = json_get(req, "hold"), *s = json_get(req, "stream");
	struct policy p = policy;
	int ok = 1, k;
	size_t i;

	if (h && h->type != J_OBJ) {
		resp_err(id, "EPROTO", "'hold' must be an object like {\"missing\":true}");
		return;
	}
	for (i = 0; h && i < h->n; i++) {
		for (k = 0; k < K_NR && strcmp(h->keys[i], kind_names[k]); k++)
			;
		if (k == K_NR) {
			resp_err(id, "EPROTO", "unknown fault kind '%s' in 'hold' (missing, wp, minor)",
				 h->keys[i]);
			return;
		}
		if (bool_arg(id, h->items[i], kind_names[k], &p.hold[k], &ok))
			return;
	}
	if (bool_arg(id, json_get(req, "holdNext"), "holdNext", &p.hold_next, &ok))
		return;
	if (s) {
		const char *v = json_cstr(s);

		for (k = 0; k < 3 && (!v || strcmp(v, stream_names[k])); k++)
			;
		if (k == 3) {
			resp_err(id, "EPROTO", "'stream' must be \"all\", \"held\" or \"none\"");
			return;
		}
		p.stream = k;
	}
	if (faults_policy_parse(id, req, &p))
		return;
	policy = p;
	resp_ok_begin(id);
	faults_policy_json(&out);
	resp_ok_end();
}

static void cmd_resolve(int64_t id, const struct jval *req)
{
	faults_cmd_resolve(id, req);
}

static void cmd_kill(int64_t id)
{
	if (!sess.alive) {
		resp_err(id, "ESTATE", sess.pid ? "the program has already exited" :
			 "no program: nothing to kill");
		return;
	}
	if (kill(sess.pid, SIGKILL)) {
		resp_err(id, errno_name(errno), "kill pid %d: %s", sess.pid, strerror(errno));
		return;
	}
	resp_ok_empty(id);
}

static void handle_request(const char *line, size_t len)
{
	const struct jval *cmdv;
	const char *err = NULL, *cmd;
	struct jval *req;
	int64_t id;

	while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
		len--;
	if (!len)
		return;
	if (len > MAX_LINE) {
		resp_err(0, "EPROTO", "request line of %zu bytes is longer than 1 MiB", len);
		return;
	}
	req = json_parse(line, len, &err);
	if (!req) {
		resp_err(0, "EPROTO", "request is not JSON: %s", err ? err : "parse error");
		return;
	}
	if (req->type != J_OBJ) {
		resp_err(0, "EPROTO", "request must be a JSON object");
		goto out;
	}
	if (!json_int(json_get(req, "id"), 1, INT64_MAX, &id)) {
		resp_err(0, "EPROTO", "request needs a positive integer 'id'");
		goto out;
	}
	cmdv = json_get(req, "cmd");
	cmd = json_cstr(cmdv);
	if (!cmd) {
		resp_err(id, "EPROTO", "request needs 'cmd', a string");
		goto out;
	}
	if (!sess.hello_done && strcmp(cmd, "hello")) {
		static const char *const known[] = { "launch", "run", "policy", "resolve",
			"resolveAll", "stats", "kill", "shutdown", "register", "unregister",
			"protect", "attach", "track", "untrack", "detach", "dirty", "evict", "zap", "fill", "stack" };
		size_t i;

		for (i = 0; i < sizeof(known) / sizeof(known[0]); i++)
			if (!strcmp(cmd, known[i]))
				break;
		if (i < sizeof(known) / sizeof(known[0])) {
			resp_err(id, "ESTATE", "'%s' before 'hello': send hello first", cmd);
			goto out;
		}
	}

	if (!strcmp(cmd, "hello"))
		cmd_hello(id, req);
	else if (!strcmp(cmd, "launch"))
		cmd_launch(id, req);
	else if (!strcmp(cmd, "run"))
		cmd_run(id);
	else if (!strcmp(cmd, "policy"))
		cmd_policy(id, req);
	else if (!strcmp(cmd, "resolve"))
		cmd_resolve(id, req);
	else if (!strcmp(cmd, "resolveAll"))
		faults_cmd_resolve_all(id);
	else if (!strcmp(cmd, "register"))
		mem_cmd_register(id, req);
	else if (!strcmp(cmd, "unregister"))
		mem_cmd_unregister(id, req);
	else if (!strcmp(cmd, "protect"))
		mem_cmd_protect(id, req);
	else if (!strcmp(cmd, "attach")) {
		if (!uffd_session_opts(id, req))	/* followForks, wpAsync */
			attach_cmd_attach(id, req, uffd_launch_features(probe.features));
	}
	else if (!strcmp(cmd, "track"))
		attach_cmd_track(id, req);
	else if (!strcmp(cmd, "untrack"))
		attach_cmd_untrack(id, req);
	else if (!strcmp(cmd, "detach"))
		attach_cmd_detach(id);
	else if (!strcmp(cmd, "dirty"))
		dirty_cmd(id, req);
	else if (!strcmp(cmd, "evict"))
		evict_cmd(id, req);
	else if (!strcmp(cmd, "zap"))
		zap_cmd(id, req);
	else if (!strcmp(cmd, "fill"))
		faults_cmd_fill(id, req);
	else if (!strcmp(cmd, "stack"))
		stack_cmd(id, req);
	else if (!strcmp(cmd, "stats")) {
		resp_ok_begin(id);
		faults_stats_json(&out);
		resp_ok_end();
	} else if (!strcmp(cmd, "kill"))
		cmd_kill(id);
	else if (!strcmp(cmd, "shutdown")) {
		resp_ok_empty(id);
		quitting = 1;
	} else {
		char name[64];

		snprintf(name, sizeof(name), "%s", cmd);
		resp_err(id, "EPROTO", "unknown command '%s'", name);
	}
out:
	json_free(req);
}

/* ---- input framing ----------------------------------------------------------------- */

static char *inbuf;
static size_t inlen;
static int discarding;	/* inside a line longer than MAX_LINE: drop until its newline */

/* Returns -1 at end of input. */
static int read_input(void)
{
	size_t start = 0;
	ssize_t n;

	n = read(STDIN_FILENO, inbuf + inlen, INBUF_SIZE - inlen);
	if (n < 0) {
		if (errno == EINTR || errno == EAGAIN)
			return 0;
		pr_perror("read from stdin");
		return -1;
	}
	if (n == 0) {
		if (inlen && !discarding && !quitting)
			handle_request(inbuf, inlen);
		inlen = 0;
		return -1;
	}
	inlen += n;
	while (!quitting) {
		char *nl = memchr(inbuf + start, '\n', inlen - start);

		if (!nl)
			break;
		if (discarding)
			discarding = 0;
		else
			handle_request(inbuf + start, nl - (inbuf + start));
		start = nl - inbuf + 1;
	}
	if (quitting)
		return 0;
	memmove(inbuf, inbuf + start, inlen - start);
	inlen -= start;
	if (inlen > MAX_LINE) {
		if (!discarding)
			resp_err(0, "EPROTO", "request line longer than 1 MiB: dropped up to its end");
		discarding = 1;
		inlen = 0;
	}
	return 0;
}

/* ---- shutdown ---------------------------------------------------------------------- */

static void finish(void)
{
	struct timespec ms = { 0, 1000000 };
	int i, st;

	attach_release();	/* never kill a process that was attached: let it run on */
	flush_out();
	if (sess.alive || sess.pid)
		tracer_kill_all();
	if (sess.alive && kill(sess.pid, SIGKILL) && errno != ESRCH)
		pr_perror("kill pid %d", sess.pid);
	/* reap every tracee, for at most ~2 s */
	for (i = 0; i < 2000; i++) {
		pid_t p = waitpid(-1, &st, __WALL | WNOHANG);

		if (p < 0 && errno == ECHILD)
			break;
		if (p <= 0)
			nanosleep(&ms, NULL);
	}
	if (sess.uffd >= 0)
		close(sess.uffd);
}

int main(void)
{
	struct pollfd pfd[12 + FAULTS_PFD_NR];
	int sfd, stdin_open = 1;
	sigset_t chld;

	log_init();
	signal(SIGPIPE, SIG_IGN);
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &chld, NULL)) {
		pr_perror("blocking SIGCHLD");
		return 1;
	}
	sfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
	if (sfd < 0) {
		pr_perror("signalfd");
		return 1;
	}
	inbuf = malloc(INBUF_SIZE);
	if (!inbuf) {
		pr_perror("allocating the input buffer");
		return 1;
	}
	uffd_probe(&probe);

	while (!quitting) {
		int n = 0, i_uffd = -1, i_in = -1, i_sig, i_out[OUT_NR], i_tmr, ready;
		int i_att[ATTACH_PFD_NR], i_kid[FAULTS_PFD_NR], i_evict;

		i_sig = n;
		pfd[n++] = (struct pollfd){ .fd = sfd, .events = POLLIN };
		if (sess.uffd >= 0) {
			i_uffd = n;
			pfd[n++] = (struct pollfd){ .fd = sess.uffd, .events = POLLIN };
		}
		if (stdin_open) {
			i_in = n;
			pfd[n++] = (struct pollfd){ .fd = STDIN_FILENO, .events = POLLIN };
		}
		output_pollfds(pfd, &n, i_out);
		i_tmr = -1;
		if (faults_timer_fd() >= 0) {	/* policy delayUs */
			i_tmr = n;
			pfd[n++] = (struct pollfd){ .fd = faults_timer_fd(), .events = POLLIN };
		}
		attach_pollfds(pfd, &n, i_att);	/* attached process: exit, mapping rescans */
		faults_pollfds(pfd, &n, i_kid);	/* children followed after a fork */
		evict_pollfd(pfd, &n, &i_evict);	/* an eviction in progress */
		ready = poll(pfd, n, poll_timeout());
		if (ready < 0) {
			if (errno == EINTR)
				continue;
			pr_perror("poll");
			break;
		}
		output_ready(pfd, i_out);
		if (i_uffd >= 0 && pfd[i_uffd].revents) {
			if ((pfd[i_uffd].revents & POLLIN && faults_read(sess.uffd)) ||
			    (pfd[i_uffd].revents & (POLLERR | POLLNVAL))) {
				pr_err("userfaultfd %d of pid %d is unusable; faults are no longer "
				       "served", sess.uffd, sess.pid);
				close(sess.uffd);
				sess.uffd = -1;
			}
		}
		faults_ready(pfd, i_kid);
		if (i_tmr >= 0 && pfd[i_tmr].revents & POLLIN)
			faults_timer_fire();
		attach_ready(pfd, i_att);
		evict_ready(pfd, i_evict);
		/* ptrace stops and exits raise SIGCHLD (blocked, read here): reap only then, not
		 * with a wait4 per fault batch */
		if (pfd[i_sig].revents & POLLIN) {
			struct signalfd_siginfo si[16];

			while (read(sfd, si, sizeof(si)) > 0)
				;
			tracer_reap();
		}
		if (i_in >= 0 && pfd[i_in].revents) {
			if (read_input() < 0) {
				stdin_open = 0;
				quitting = 1;
			}
		}
		maybe_flush(ready == 0);
	}
	finish();
	return 0;
}
