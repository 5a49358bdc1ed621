// The helper's `stack` request on the real kernel: registers by ptrace, libdw unwinding to
// source lines, the hidden duplicate fault, launch and attach, and a fault inside a system call.
import assert from 'node:assert/strict';
import { ChildProcess, execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { HelperClient, HelperError } from '../../server/core/helperClient';
import { FaultEvent, faultEvents, HelperEvent, StackBody, unbatched } from '../../server/protocol/messages';
import { until, withTimeout } from '../support/waits';

const root = path.resolve(__dirname, '..', '..');
const TOUCH = path.join(root, 'demo', 'bin', 'touch');
const TOUCH_C = path.join(root, 'demo', 'touch.c');
const SPIN = path.join(root, 'demo', 'bin', 'spin');
const SPIN_C = path.join(root, 'demo', 'spin.c');

const clients: HelperClient[] = [];
const procs: ChildProcess[] = [];
after(async () => {
  for (const c of clients) await c.stop();
  for (const p of procs) p.kill('SIGKILL');
});

interface Run { c: HelperClient; out: string; faults: FaultEvent[]; events: HelperEvent[] }

async function helper(): Promise<Run> {
  const c = new HelperClient();
  clients.push(c);
  await c.start();
  const run: Run = { c, out: '', faults: [], events: [] };
  c.on('output', (_s, d) => { run.out += d; });
  c.on('event', (e) => {
    run.events.push(...unbatched(e));
    run.faults.push(...faultEvents(e));
  });
  return run;
}

function lineWith(file: string, text: string): number {
  const i = readFileSync(file, 'utf8').split('\n').findIndex((l) => l.includes(text));
  assert.ok(i >= 0, `'${text}' in ${file}`);
  return i + 1;
}

function task(pid: number, tid: number, file: string): string {
  return readFileSync(`/proc/${pid}/task/${tid}/${file}`, 'utf8');
}

const hx = (n: bigint) => '0x' + n.toString(16);

/** Launches `program args`, then holds missing faults on the region it prints. */
async function launchHolding(program: string, args: string[], pages: number): Promise<Run & { pid: number; held: FaultEvent }> {
  const r = await helper();
  const { pid } = await r.c.request('launch', { program, args, cwd: root, env: null });
  await r.c.request('run', {});
  await until(() => /region (0x[0-9a-f]+)/.test(r.out), 10_000, `the region line of ${program}`);
  const start = BigInt(/region (0x[0-9a-f]+)/.exec(r.out)![1]);
  await r.c.request('policy', { hold: { missing: true }, holdRange: [{ start: hx(start), end: hx(start + BigInt(pages) * 4096n) }] });
  await until(() => r.faults.some((f) => f.held), 10_000, 'a held fault in the region');
  return Object.assign(r, { pid, held: r.faults.find((f) => f.held)! });
}

function names(s: StackBody): string {
  return s.frames.map((f) => f.function ?? f.symbol ?? f.pc).join(' < ');
}

describe('stack: registers and call stack of a held fault', { timeout: 180_000 }, () => {
  test('launch: ptrace registers, frames to source lines through main into libc; the re-fault is hidden', async () => {
    const r = await launchHolding(TOUCH, ['--pages', '8', '--sleep-ms', '300'], 8);
    const f = r.held;
    const before = await r.c.request('stats', {});
    const s = await r.c.request('stack', { seq: f.seq });
    assert.equal(s.seq, f.seq);
    assert.equal(s.tid, f.tid);
    assert.equal(s.registersFrom, 'ptrace');
    assert.equal(s.note, null);
    assert.equal(s.cached, false);
    const [top] = s.frames;
    assert.equal(top.function, 'toucher');
    assert.equal(top.symbol, 'toucher');
    assert.equal(top.module, TOUCH);
    assert.equal(top.file, TOUCH_C);
    assert.equal(top.line, lineWith(TOUCH_C, 'region[p * PAGE] = (p & 0xff) | 1;	/* TOUCH */'));
    assert.equal(s.registers.rip, top.pc, 'the top frame is the faulting instruction');
    const main = s.frames.find((x) => x.function === 'main');
    assert.ok(main, `main among the callers: ${names(s)}`);
    assert.equal(main.line, lineWith(TOUCH_C, 'toucher(&shares[0]);'), 'a caller is at its call (pc - 1)');
    const libc = s.frames.find((x) => /\/libc\.so\.6$/.test(x.module ?? ''));
    assert.ok(libc?.symbol, `a frame in libc with its symbol: ${names(s)}`);
    assert.equal(s.registers.orig_rax, '0xffffffffffffffff');
    assert.ok(s.registers.r15 && s.registers.fs_base && s.registers.eflags, 'the full register set');

    // The interrupted thread re-executed the instruction and faulted again: that message is
    // the held fault's, not a new one (no event, no seq), and the thread waits on the fault.
    await until(() => task(r.pid, f.tid, 'wchan') === 'handle_userfault', 5000, 'the thread back in the fault');
    await new Promise((res) => setTimeout(res, 200));
    assert.equal(r.faults.filter((x) => x.tid === f.tid && x.page === f.page).length, 1, 'one fault event for the page and thread');
    const after1 = await r.c.request('stats', {});
    assert.equal(after1.held, 1);
    assert.equal(after1.faults.missing, before.faults.missing, 'the hidden message takes no seq');
    assert.match(task(r.pid, f.tid, 'status'), /^State:\s+S/m, 'not left stopped');

    const again = await r.c.request('stack', { seq: f.seq });
    assert.equal(again.cached, true, 'the second request does not stop the thread again');
    assert.deepEqual(again.frames, s.frames);
    const one = await r.c.request('stack', { seq: f.seq, maxFrames: 1 });
    assert.ok(one.frames.length >= 1);

    // Resolving the held fault wakes the thread: the program finishes with the right checksum.
    await r.c.request('policy', { hold: { missing: false }, holdRange: [] });
    const exited = new Promise<number | null>((res) => r.c.on('event', (e) => { if (e.event === 'exited') res(e.code); }));
    await r.c.request('resolve', { seq: f.seq, how: 'default' });
    assert.equal(await withTimeout(exited, 30_000, 'touch to exit'), 0);
    await until(() => /checksum/.test(r.out), 5000, 'the checksum line');
    assert.match(r.out, /checksum 20 touched 8/);
  });

  test('errors: unknown or resolved seq is ESTATE, bad arguments EPROTO; the helper carries on', async () => {
    const r = await helper();
    await assert.rejects(r.c.request('stack', { seq: 5 }), (e: HelperError) => e.code === 'ESTATE' && /not held/.test(e.message));
    await assert.rejects(r.c.request('stack', { seq: 'x' } as unknown as { seq: number }), (e: HelperError) => e.code === 'EPROTO');
    await assert.rejects(r.c.request('stack', { seq: 1, maxFrames: 0 }), (e: HelperError) => e.code === 'EPROTO');
    assert.ok(await r.c.request('stats', {}));
  });

  test('attach: seized, read and detached; the fault stays held once; resolving lets it run on', async () => {
    const p = spawn(SPIN, ['--pages', '64', '--interval-ms', '1'], { stdio: ['ignore', 'pipe', 'inherit'] });
    procs.push(p);
    let out = '';
    p.stdout!.setEncoding('utf8');
    p.stdout!.on('data', (d: string) => { out += d; });
    await until(() => /pid \d+ region/.test(out), 10_000, 'spin\'s start line');
    const pid = Number(/pid (\d+) region/.exec(out)![1]);
    const r = await helper();
    await r.c.request('attach', { pid });
    await r.c.request('policy', { hold: { missing: true } });
    await until(() => r.faults.some((f) => f.held), 10_000, 'a held fault');
    const f = r.faults.find((x) => x.held)!;
    const s = await r.c.request('stack', { seq: f.seq });
    assert.equal(s.registersFrom, 'ptrace');
    assert.equal(s.frames[0].function, 'touch_loop');
    assert.equal(s.frames[0].file, SPIN_C);
    assert.equal(s.frames[0].line, lineWith(SPIN_C, '*(volatile uint64_t *)(region + p * PAGE) = i;	/* TOUCH */'));
    assert.ok(s.frames.some((x) => x.function === 'main'), names(s));
    assert.match(task(pid, f.tid, 'status'), /^TracerPid:\s+0$/m, 'detached again');
    await until(() => task(pid, f.tid, 'wchan') === 'handle_userfault', 5000, 'the thread back in the fault');
    await new Promise((res) => setTimeout(res, 200));
    assert.equal(r.faults.filter((x) => x.tid === f.tid && x.page === f.page).length, 1, 'no second fault event');
    assert.equal((await r.c.request('stats', {})).held, 1);

    await r.c.request('policy', { hold: { missing: false } });
    await r.c.request('resolve', { seq: f.seq, how: 'default' });
    const from = out.length;
    await until(() => /iter \d+ checksum/.test(out.slice(from)), 10_000, 'spin running on');
    await r.c.request('detach', {});
    assert.match(readFileSync(`/proc/${pid}/status`, 'utf8'), /^TracerPid:\s+0$/m);
  });

  test('a fault inside a system call is not interrupted: /proc registers, and the call still succeeds', async () => {
    // read(2) from a pipe straight into an untouched page: the fault is the kernel's copy.
    const dir = mkdtempSync(path.join(tmpdir(), 'uffd-stack-'));
    const src = path.join(dir, 'sysread.c');
    writeFileSync(src, `#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
int main(void)
{
	int fds[2];
	char *region = mmap(NULL, 4096 * 4, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct timespec ts = { 0, 300000000 };
	if (region == MAP_FAILED || pipe(fds))
		return 1;
	printf("region %p\\n", (void *)region);
	fflush(stdout);
	nanosleep(&ts, NULL);
	if (write(fds[1], "0123456789abcdef", 16) != 16)
		return 1;
	ssize_t n = read(fds[0], region, 16);
	printf("read %zd %.16s\\n", n, region);
	return 0;
}
`);
    const bin = path.join(dir, 'sysread');
    execFileSync('gcc', ['-g', '-O0', '-o', bin, src]);
    const r = await launchHolding(bin, [], 4);
    const s = await r.c.request('stack', { seq: r.held.seq });
    assert.equal(s.registersFrom, 'procfs');
    assert.match(s.note ?? '', /inside system call 0/);
    assert.equal(s.registers.orig_rax, '0x0', 'read(2)');
    assert.ok(s.registers.rip && s.registers.rsp && s.registers.rdi);
    assert.ok(s.frames.length >= 1);
    assert.match(task(r.pid, r.held.tid, 'wchan'), /handle_userfault/, 'still in the fault, never interrupted');

    await r.c.request('policy', { hold: { missing: false }, holdRange: [] });
    await r.c.request('resolve', { seq: r.held.seq, how: 'default' });
    await until(() => /read \d+/.test(r.out), 10_000, 'the read result');
    assert.match(r.out, /read 16 0123456789abcdef/, 'the system call completed normally');
  });
});
