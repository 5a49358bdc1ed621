// Where did it fault: full call stacks to source lines and the Registers scope, through the
// real adapter, helper and demo programs (built with -g), launched and attached.
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { DebugProtocol } from '@vscode/debugprotocol';
import { Harness, markerLine, root } from './support';
import { until } from '../support/waits';

const TOUCH_C = path.join(root, 'demo', 'touch.c');
const SPIN = path.join(root, 'demo', 'bin', 'spin');
const SPIN_C = path.join(root, 'demo', 'spin.c');

let h: Harness;
let spin: ChildProcess | null = null;

beforeEach(async () => {
  h = await Harness.start();
});

afterEach(async () => {
  await h.stop();
  spin?.kill('SIGKILL');
  spin = null;
});

/** The line of `text` in file (1-based), for callers (no marker comment there). */
function lineOf(file: string, text: string): number {
  const i = readFileSync(file, 'utf8').split('\n').findIndex((l) => l.includes(text));
  assert.ok(i >= 0, `'${text}' in ${file}`);
  return i + 1;
}

/** touch's checksum for --pages n (each page p holds (p & 0xff) | 1 in its first byte). */
function touchChecksum(n: number): string {
  let sum = 0;
  for (let p = 0; p < n; p++) sum += (p & 0xff) | 1;
  return sum.toString(16);
}

function threadStatus(pid: number, tid: number): { state: string; tracer: number; wchan: string } {
  const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
  return {
    state: /^State:\s+(\S)/m.exec(status)![1],
    tracer: Number(/^TracerPid:\s+(\d+)/m.exec(status)![1]),
    wchan: readFileSync(`/proc/${pid}/task/${tid}/wchan`, 'utf8'),
  };
}

async function registers(threadId: number): Promise<Map<string, DebugProtocol.Variable>> {
  const scopes = await h.scopesOf(threadId);
  return h.variablesOf(scopes.get('Registers')!.variablesReference);
}

/** No `stopped` event within ms (a duplicate fault would bring one). */
async function noStopWithin(ms: number): Promise<void> {
  await assert.rejects(h.dc.waitForEvent('stopped', ms), /no event 'stopped' received/, 'no second stop for the same fault');
}

describe('uffd debug adapter: stacks and registers', { timeout: 180_000 }, () => {
  test('launch: the stack runs from the touching line through main into libc; registers; the fault stays held once', async () => {
    await h.launch({ stopOnFirstFault: false }, ['missing'], ['--pages', '16', '--pattern', 'seq']);
    const { ev } = await h.stopInRegion();
    const tid = ev.body.threadId!;

    const st = await h.dc.stackTraceRequest({ threadId: tid });
    const [label, top, ...callers] = st.body.stackFrames;
    assert.equal(label.presentationHint, 'label');
    assert.equal(top.name, 'toucher');
    assert.equal(top.source?.path, TOUCH_C);
    assert.equal(top.line, markerLine(TOUCH_C, 'region[p * PAGE] = '));
    assert.ok((top.column ?? 0) > 1, 'DWARF gives the column');
    assert.match(top.instructionPointerReference ?? '', /^0x[0-9a-f]+$/);
    const main = callers.find((f) => f.name === 'main');
    assert.ok(main, `main is a caller: ${st.body.stackFrames.map((f) => f.name).join(' < ')}`);
    assert.equal(main.source?.path, TOUCH_C);
    assert.equal(main.line, lineOf(TOUCH_C, 'toucher(&shares[0]);'), 'main\'s frame is at the call');
    const libc = callers.find((f) => /\(libc\.so\.6\)$/.test(f.name));
    assert.ok(libc, `a frame in libc names its module: ${st.body.stackFrames.map((f) => f.name).join(' < ')}`);
    assert.equal(libc.presentationHint, 'subtle', 'a frame without source here is subtle');
    assert.ok(callers.indexOf(main) < callers.indexOf(libc), 'main before its caller in libc');

    const regs = await registers(tid);
    for (const r of ['rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rbp', 'rsp', 'r8', 'r15', 'rip', 'eflags', 'orig_rax', 'fs_base', 'gs_base']) {
      assert.ok(regs.has(r), `register ${r} is shown`);
    }
    assert.equal(regs.get('rip')!.value, top.instructionPointerReference, 'rip is the top frame\'s pc');
    assert.equal(regs.get('rip')!.memoryReference, top.instructionPointerReference);
    assert.match(regs.get('rsp')!.memoryReference ?? '', /^0x7ff[0-9a-f]+$/, 'rsp points into the stack');
    assert.match(regs.get('eflags')!.value, /^0x[0-9a-f]+ \[.*\bIF\b.*\]$/);
    assert.match(regs.get('orig_rax')!.value, /^0xffffffffffffffff/, 'a user-mode fault is not in a system call');

    // The thread was stopped to read its registers: it faulted again on resume, and that second
    // message is the same fault. No second stop, the fault is held once, the thread waits on it.
    await noStopWithin(500);
    const pid = h.pid();
    await until(() => threadStatus(pid, tid).wchan === 'handle_userfault', 5000, 'the thread back in handle_userfault');
    assert.equal(threadStatus(pid, tid).state, 'S', 'not left stopped');
    const repl = async (expression: string) => (await h.dc.evaluateRequest({ expression, context: 'repl' })).body.result;
    assert.match(await repl('stats'), /held 1,/);
    assert.equal((await repl('held')).split('\n').filter((l) => l.includes(`tid ${tid} `)).length, 1);

    // A second look does not stop the thread again and shows the same stack.
    const again = await h.dc.stackTraceRequest({ threadId: tid });
    assert.deepEqual(again.body.stackFrames.map((f) => [f.name, f.line]), st.body.stackFrames.map((f) => [f.name, f.line]));

    // Resolving it lets the program finish with the right checksum.
    await h.dc.setExceptionBreakpointsRequest({ filters: [] });
    const exited = h.dc.waitForEvent('exited');
    await h.dc.continueRequest({ threadId: tid });
    assert.equal((await exited).body.exitCode, 0);
    await h.waitOutput(new RegExp(`checksum ${touchChecksum(16)} touched 16`));
  });

  test('launch, a worker thread: its thread function at the touching line, called from libc\'s thread start', async () => {
    await h.launch({ stopOnFirstFault: false }, ['missing'], ['--pages', '8', '--threads', '2']);
    const { ev } = await h.stopInRegion(0, 8);
    const st = await h.dc.stackTraceRequest({ threadId: ev.body.threadId! });
    const [, top, ...callers] = st.body.stackFrames;
    // When it fails, say why: the frames and the adapter's console (it names a stack it could not get).
    assert.ok(top, `frames below the fault: ${JSON.stringify(st.body.stackFrames)}; console: ${h.output}`);
    assert.equal(top.name, 'toucher');
    assert.equal(top.source?.path, TOUCH_C);
    assert.equal(top.line, markerLine(TOUCH_C, 'region[p * PAGE] = '));
    assert.notEqual(ev.body.threadId, h.pid(), 'a worker, not the main thread');
    assert.ok(callers.some((f) => /^start_thread\b.*\(libc\.so\.6\)$/.test(f.name)),
      `called from libc's start_thread: ${st.body.stackFrames.map((f) => f.name).join(' < ')}`);
    assert.ok(!callers.some((f) => f.name === 'main'), 'a worker\'s stack does not run through main');

    await h.dc.setExceptionBreakpointsRequest({ filters: [] });
    const exited = h.dc.waitForEvent('exited');
    await h.dc.continueRequest({ threadId: ev.body.threadId! });
    assert.equal((await exited).body.exitCode, 0);
    await h.waitOutput(new RegExp(`checksum ${touchChecksum(8)} touched 8`));
  });

  test('attach: the stack to the touching line, registers, no tracer left, the fault held once; disconnect lets it run', async () => {
    spin = spawn(SPIN, ['--pages', '100000', '--interval-ms', '1'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    spin.stdout!.setEncoding('utf8');
    spin.stdout!.on('data', (d: string) => { out += d; });
    await until(() => /pid \d+ region/.test(out), 10_000, 'spin\'s start line');
    const pid = Number(/pid (\d+) region/.exec(out)![1]);

    const stopped = h.dc.waitForEvent('stopped');
    await Promise.all([
      h.dc.waitForEvent('initialized').then(() => h.dc.setExceptionBreakpointsRequest({ filters: [] }))
        .then(() => h.dc.configurationDoneRequest()),
      h.dc.initializeRequest().then(() => h.dc.attachRequest({ pid: String(pid), stopOnFirstFault: true } as DebugProtocol.AttachRequestArguments)),
    ]);
    const ev = (await stopped) as DebugProtocol.StoppedEvent;
    const tid = ev.body.threadId!;
    const st = await h.dc.stackTraceRequest({ threadId: tid });
    const [, top, ...callers] = st.body.stackFrames;
    assert.equal(top.name, 'touch_loop');
    assert.equal(top.source?.path, SPIN_C);
    assert.equal(top.line, markerLine(SPIN_C, '*(volatile uint64_t *)(region + p * PAGE) = i;'));
    const main = callers.find((f) => f.name === 'main');
    assert.ok(main, `main is a caller: ${st.body.stackFrames.map((f) => f.name).join(' < ')}`);
    assert.equal(main.source?.path, SPIN_C);
    assert.equal(main.line, lineOf(SPIN_C, 'touch_loop(&one);'));
    assert.ok(callers.some((f) => /\(libc\.so\.6\)$/.test(f.name)), 'libc frames are named with their module');

    const regs = await registers(tid);
    assert.equal(regs.get('rip')!.value, top.instructionPointerReference);
    assert.ok(regs.has('r15') && regs.has('fs_base'), 'the full register set, read with ptrace');

    // Seized, read and detached: nothing traces the process, the thread waits on the fault again.
    await noStopWithin(500);
    await until(() => threadStatus(pid, tid).wchan === 'handle_userfault', 5000, 'the thread back in handle_userfault');
    const s = threadStatus(pid, tid);
    assert.equal(s.tracer, 0, 'no ptrace left on the thread');
    assert.equal(s.state, 'S');
    const repl = async (expression: string) => (await h.dc.evaluateRequest({ expression, context: 'repl' })).body.result;
    assert.match(await repl('stats'), /held 1,/);

    const from = out.length;
    await h.dc.disconnectRequest({});
    await until(() => /iter \d+ checksum/.test(out.slice(from)), 10_000, 'spin running on after the detach');
    assert.match(readFileSync(`/proc/${pid}/status`, 'utf8'), /^TracerPid:\s+0$/m);
  });
});
