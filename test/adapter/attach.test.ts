// Attaching the real adapter to a process it did not start, and letting it go again.
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { DebugClient } from '@vscode/debugadapter-testsupport';
import { DebugProtocol } from '@vscode/debugprotocol';

const root = path.resolve(__dirname, '..', '..');
const ADAPTER = path.join(root, 'dist', 'adapter.js');
const SPIN = path.join(root, 'demo', 'bin', 'spin');

let dc: DebugClient;
let spin: ChildProcess | null = null;
let spinOut = '';

beforeEach(async () => {
  dc = new DebugClient(process.execPath, ADAPTER, 'uffd');
  dc.defaultTimeout = 15_000;
  await dc.start();
});

afterEach(async () => {
  await dc.stop();
  spin?.kill('SIGKILL');
  spin = null;
});

/** Starts spin (not under any debugger) and waits for its first line. */
async function startSpin(args: string[]): Promise<{ pid: number; region: bigint }> {
  spinOut = '';
  spin = spawn(SPIN, args, { stdio: ['pipe', 'pipe', 'inherit'] });
  spin.stdout!.setEncoding('utf8');
  const first = new Promise<RegExpExecArray>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`spin printed no start line: ${spinOut}`)), 10_000);
    spin!.stdout!.on('data', (d: string) => {
      spinOut += d;
      const m = /pid (\d+) region (0x[0-9a-f]+)/.exec(spinOut);
      if (m) { clearTimeout(timer); resolve(m); }
    });
  });
  const m = await first;
  return { pid: Number(m[1]), region: BigInt(m[2]) };
}

function status(pid: number): string {
  return readFileSync(`/proc/${pid}/status`, 'utf8');
}

async function waitSpinOutput(re: RegExp, from: number): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!re.test(spinOut.slice(from))) {
    if (Date.now() > deadline) throw new Error(`spin did not print ${re} after detach: ${spinOut.slice(from)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('uffd debug adapter: attach', { timeout: 120_000 }, () => {
  test('attach, stop on a fault of the running process at its source line, detach: it runs on untouched', async () => {
    const { pid, region } = await startSpin(['--pages', '100000', '--interval-ms', '1']);
    const stopped = dc.waitForEvent('stopped');
    const output = dc.waitForEvent('output');
    await Promise.all([
      dc.waitForEvent('initialized').then(() => dc.setExceptionBreakpointsRequest({ filters: [] }))
        .then(() => dc.configurationDoneRequest()),
      dc.initializeRequest().then(() => dc.attachRequest({ pid: String(pid), stopOnFirstFault: true } as DebugProtocol.AttachRequestArguments)),
    ]);
    assert.match((await output).body.output, new RegExp(`attached to pid ${pid}`));
    const ev = (await stopped) as DebugProtocol.StoppedEvent;
    assert.equal(ev.body.reason, 'page fault');
    const addr = BigInt(/at (0x[0-9a-f]+)/.exec(ev.body.description!)![1]);
    assert.ok(addr >= region && addr < region + 100000n * 4096n, 'the fault is in spin\'s region');
    const threads = await dc.threadsRequest();
    assert.ok(threads.body.threads.some((t) => t.id === ev.body.threadId && /spin/.test(t.name)));
    const st = await dc.stackTraceRequest({ threadId: ev.body.threadId! });
    const top = st.body.stackFrames[1];
    assert.equal(top.source?.path, path.join(root, 'demo', 'spin.c'));
    const lines = readFileSync(path.join(root, 'demo', 'spin.c'), 'utf8').split('\n');
    assert.match(lines[top.line - 1], /\/\* TOUCH \*\//);
    assert.match(status(pid), /^TracerPid:\s+0$/m, 'no ptrace while attached and stopped on a fault');

    // Disconnect detaches (no terminateDebuggee): the held fault is resolved, nothing stays registered.
    const from = spinOut.length;
    await dc.disconnectRequest({});
    await waitSpinOutput(/iter \d+ checksum/, from);
    assert.match(status(pid), /^State:\s+[RS]/m, 'spin is alive');
    assert.doesNotMatch(readFileSync(`/proc/${pid}/smaps`, 'utf8'), /^VmFlags:.*\bum\b/m, 'no range is registered any more');
    assert.doesNotMatch(status(pid), /^TracerPid:\s+[1-9]/m);
  });

  test('attach errors say what is wrong', async () => {
    await dc.initializeRequest();
    await assert.rejects(dc.attachRequest({ pid: 'abc' } as unknown as DebugProtocol.AttachRequestArguments), /'pid' must be a process ID/);
  });

  test('attaching to a process that does not exist names the PID', async () => {
    await dc.initializeRequest();
    await assert.rejects(dc.attachRequest({ pid: 999999999 } as unknown as DebugProtocol.AttachRequestArguments), /999999999/);
  });
});
