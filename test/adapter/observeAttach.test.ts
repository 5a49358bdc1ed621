// Passive observe attach through the real adapter: demo/bin/postcopy, started here without any
// library, hangs on a page its handler forgot (--forget 40); the debugger attaches with
// `observe: true`, watches it through /proc only, shows the blocked worker, and lets it go.
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { DebugClient } from '@vscode/debugadapter-testsupport';
import { DebugProtocol } from '@vscode/debugprotocol';
import { ADAPTER, Harness, root, waitGone } from './support';
import { until } from '../support/waits';

const POSTCOPY = path.join(root, 'demo', 'bin', 'postcopy');
const POSTCOPY_C = path.join(root, 'demo', 'postcopy.c');

let h: Harness;
let procs: ChildProcess[] = [];
let events: { other: { event: string; region?: { start: string; end: string; via: string; name?: string } }[] }[] = [];

beforeEach(async () => {
  // What the extension passes for an attach configuration with observe: true.
  h = await Harness.start(['--observe-attach']);
  events = [];
  h.dc.on('uffd/events', (e: DebugProtocol.Event) => events.push((e.body as { batch: (typeof events)[number] }).batch));
});

afterEach(async () => {
  await h.stop();
  for (const p of procs) p.kill('SIGKILL');
  procs = [];
});

function start(cmd: string, args: string[]): ChildProcess {
  const p = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  p.stdout!.resume();
  p.stderr!.resume();
  procs.push(p);
  return p;
}

const readProc = (file: string): string => {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return '';
  }
};

function tasks(pid: number): { tid: number; comm: string; wchan: string }[] {
  let tids: string[];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  return tids.map((t) => ({
    tid: Number(t), comm: readProc(`/proc/${pid}/task/${t}/comm`).trim(), wchan: readProc(`/proc/${pid}/task/${t}/wchan`).trim(),
  }));
}

const HUNG = ['--pages', '128', '--threads', '2', '--no-push', '--forget', '40'];

/** postcopy hung on page 40: a worker blocked on its fault, which its handler will never resolve. */
async function startHung(): Promise<number> {
  const pid = start(POSTCOPY, [...HUNG, '--watchdog', '30']).pid!;
  await blockedWorker(pid);
  return pid;
}

/**
 * postcopy hung on page 40 until its watchdog ends it (status 3) after `watchdogS`, started by a
 * shell that then becomes `sleep`: a parent that never reaps it, so it stays a zombie whose
 * exit status /proc still shows.
 */
async function startHungUnreaped(watchdogS: number): Promise<number> {
  const sh = start('/bin/sh', ['-c', `'${POSTCOPY}' ${HUNG.join(' ')} --watchdog ${watchdogS} & exec sleep 60`]);
  const children = () => readProc(`/proc/${sh.pid}/task/${sh.pid}/children`).trim();
  await until(() => /^\d+$/.test(children()), 5000, 'postcopy started by the shell');
  const pid = Number(children());
  await blockedWorker(pid);
  return pid;
}

async function blockedWorker(pid: number): Promise<void> {
  await until(() => tasks(pid).some((t) => /^pc-worker/.test(t.comm) && t.wchan === 'handle_userfault'), 10_000,
    `a worker of postcopy ${pid} blocked in handle_userfault`);
}

type FilterOpt = DebugProtocol.ExceptionFilterOptions;

/** initialize, attach with observe, set the filters, configurationDone. */
async function attach(pid: number | string, filterOptions: FilterOpt[]): Promise<DebugProtocol.SetExceptionBreakpointsResponse> {
  let filters: DebugProtocol.SetExceptionBreakpointsResponse | undefined;
  await Promise.all([
    h.dc.waitForEvent('initialized').then(() => h.dc.setExceptionBreakpointsRequest({ filters: [], filterOptions }))
      .then((r) => { filters = r; }).then(() => h.dc.configurationDoneRequest()),
    h.dc.initializeRequest().then(() => h.dc.attachRequest({ pid: String(pid), observe: true } as DebugProtocol.AttachRequestArguments)),
  ]);
  return filters!;
}

function status(pid: number): string {
  return readFileSync(`/proc/${pid}/status`, 'utf8');
}

describe('passive observe attach through the adapter', { timeout: 120_000 }, () => {
  test('stops on a worker blocked on its fault, shows its stack, scopes and userfaultfd; detach leaves it running, untraced', async () => {
    const pid = await startHung();
    const capabilities = h.dc.waitForEvent('capabilities');
    const f = await attach(pid, [{ filterId: 'waitTooLong', condition: '200ms' }]);
    assert.ok(f.body!.breakpoints!.every((b) => b.verified), JSON.stringify(f.body));
    // Only the wait filter is offered, and the console says why once.
    const caps = (await capabilities) as DebugProtocol.CapabilitiesEvent;
    assert.deepEqual(caps.body.capabilities.exceptionBreakpointFilters?.map((x) => x.filter), ['waitTooLong']);
    await h.waitOutput(new RegExp(`observing pid ${pid} \\(postcopy, \\d+ threads\\) passively: userfaultfd fd \\d+, 1 registered range`));
    await h.waitOutput(/only "Fault waiting too long" can stop .*LD_PRELOAD at exec/);

    const ev = await h.nextStop();
    assert.equal(ev.body.reason, 'wait too long');
    assert.equal(ev.body.allThreadsStopped, false);
    const tid = ev.body.threadId!;
    const worker = tasks(pid).find((t) => t.tid === tid);
    assert.ok(worker && /^pc-worker-\d$/.test(worker.comm), `thread ${tid} is a worker of ${pid}: ${JSON.stringify(tasks(pid))}`);
    const m = new RegExp(`^Paused: thread ${tid} \\(pc-worker-\\d\\) has been blocked on a userfaultfd fault for at least (\\d+) ms ` +
      '\\(its handler has not resolved it\\)$').exec(ev.body.description ?? '');
    assert.ok(m && Number(m[1]) >= 200, ev.body.description);
    // Nothing is stopped by the debugger: the process is not traced.
    assert.match(status(pid), /^TracerPid:\s+0$/m);

    const threads = await h.dc.threadsRequest();
    const names = threads.body.threads.map((t) => t.name);
    assert.ok(names.includes(`${worker.comm} [${tid}]`) && names.some((n) => /^pc-handler \[\d+\]$/.test(n)), names.join(' | '));

    // The top frame is the faulting load in worker(), at its source line.
    const st = await h.dc.stackTraceRequest({ threadId: tid });
    const frames = st.body.stackFrames;
    assert.equal(frames[0].presentationHint, 'label');
    const top = frames[1];
    assert.equal(top.name, 'worker', frames.map((x) => x.name).join(' | '));
    assert.equal(top.source?.path, POSTCOPY_C);
    const line = readFileSync(POSTCOPY_C, 'utf8').split('\n')[top.line - 1];
    assert.match(line, /sum \+= \*\(volatile uint64_t \*\)\(region/, `top frame at ${top.line}: ${line}`);

    const sc = await h.dc.scopesRequest({ frameId: frames[0].id });
    const scopes = new Map(sc.body.scopes.map((s) => [s.name, s]));
    assert.deepEqual([...scopes.keys()], ['Blocked', 'Registers', 'Userfaultfds']);
    const blocked = await h.variablesOf(scopes.get('Blocked')!.variablesReference);
    assert.equal(blocked.get('thread')!.value, `${tid} (${worker.comm})`);
    assert.match(blocked.get('blocked')!.value, /^at least \d+ ms, still blocked$/);
    assert.equal(blocked.get('wchan')!.value, 'handle_userfault');
    assert.match(blocked.get('where')!.value, /user-mode access/);
    const pc = blocked.get('pc')!.value;
    assert.match(pc, /^0x[0-9a-f]+$/);
    assert.equal(top.instructionPointerReference, pc, 'the top frame is at the faulting pc');
    assert.match(blocked.get('sp')!.value, /^0x[0-9a-f]+$/);
    assert.match(blocked.get('userfaultfd')!.value, /^fd \d+ \(the process's only userfaultfd\)$/);
    const regs = await h.variablesOf(scopes.get('Registers')!.variablesReference);
    assert.equal(regs.get('rip')!.value, pc);

    // The userfaultfd as fdinfo shows it: the forgotten fault was read by the handler, so it is
    // counted in total (waiting) and no longer in pending (unread).
    const uffds = await h.variablesOf(scopes.get('Userfaultfds')!.variablesReference);
    const fd = [...uffds.values()].find((v) => /^fd \d+$/.test(v.name));
    assert.ok(fd, JSON.stringify([...uffds.values()]));
    const fm = /^pending (\d+), total (\d+), features (.*)$/.exec(fd.value);
    assert.ok(fm && Number(fm[2]) >= 1 && Number(fm[2]) >= Number(fm[1]), fd.value);
    assert.match(fm[3], /\bTHREAD_ID\b/);
    const detail = await h.variablesOf(fd.variablesReference);
    assert.match(detail.get('total')!.value, /^[1-9]\d* \(waiting now/);
    assert.match(detail.get('pending')!.value, /^\d+ \(queued, not yet read by the handler\)$/);
    assert.equal(detail.get('UFFDIO_API done')!.value, 'true');
    assert.match(detail.get('ioctls (this kernel)')!.value, /\bCOPY\b.*\bZEROPAGE\b/);
    const range = [...uffds.values()].find((v) => /^0x[0-9a-f]+-0x[0-9a-f]+$/.test(v.name));
    assert.ok(range, JSON.stringify([...uffds.values()]));
    assert.match(range.value, /mode missing · 128 pages · \[anon\] rw-p$/);

    // Debug Console.
    const out = await h.dc.evaluateRequest({ expression: 'uffds', context: 'repl' });
    assert.match(out.body.result, new RegExp(`^${fd.name}: pending \\d+ \\(queued, not yet read by the handler\\), total [1-9]`, 'm'));
    assert.match(out.body.result, /features THREAD_ID; API 0xaa/);
    assert.match(out.body.result, /^ {2}0x[0-9a-f]+-0x[0-9a-f]+ mode missing · 128 pages/m);
    const bl = await h.dc.evaluateRequest({ expression: 'blocked', context: 'repl' });
    assert.match(bl.body.result, new RegExp(`^thread ${tid} \\(pc-worker-\\d\\): blocked on a userfaultfd fault for at least \\d+ ms at pc ${pc} `, 'm'));
    const th = await h.dc.evaluateRequest({ expression: 'threads', context: 'repl' });
    assert.match(th.body.result, new RegExp(`^${tid} pc-worker-\\d S handle_userfault {2}blocked on a userfaultfd fault`, 'm'));
    await assert.rejects(h.dc.evaluateRequest({ expression: 'maps', context: 'repl' }), /not a passive observe attach command: threads, uffds/);
    // Completions offer this mode's commands, not the direct mode's.
    assert.deepEqual((await h.dc.completionsRequest({ text: 'b', column: 2 })).body.targets.map((t) => t.label), ['blocked']);
    assert.deepEqual((await h.dc.completionsRequest({ text: 'ma', column: 3 })).body.targets, []);
    await assert.rejects(h.dc.pauseRequest({ threadId: tid }), /cannot pause/);

    // The registered range went to the timeline, and nothing per fault.
    await until(() => events.some((b) => b.other.some((o) => o.event === 'region' && o.region?.via === 'observe' &&
      /\(missing\)$/.test(o.region.name ?? ''))), 5000, 'the registered range on the timeline');

    // Continue: the thread goes on waiting by itself; the same wait does not stop again.
    const cont = await h.dc.continueRequest({ threadId: tid });
    assert.equal(cont.body.allThreadsContinued, false);
    await assert.rejects(h.nextStop(1000), /no stop within/);

    await h.dc.disconnectRequest({});
    await h.waitOutput(new RegExp(`detached from pid ${pid}: it was never stopped or traced by the debugger and runs on`));
    // Untouched: alive, not traced, the worker still blocked.
    const s = status(pid);
    assert.match(s, /^State:\s+[SR]/m);
    assert.match(s, /^TracerPid:\s+0$/m);
    assert.equal(readProc(`/proc/${pid}/task/${tid}/wchan`).trim(), 'handle_userfault');
    process.kill(pid, 'SIGKILL');
    await waitGone(pid);
  });

  test('the process ends while attached: exited, terminated and the summary of what was seen', async () => {
    const pid = await startHungUnreaped(3);
    const ended = Promise.all([h.dc.waitForEvent('exited', 15_000), h.dc.waitForEvent('terminated', 15_000)]);
    await attach(pid, [{ filterId: 'waitTooLong', condition: '100ms' }]);
    const ev = await h.nextStop();
    assert.equal(ev.body.reason, 'wait too long');
    const exited = (await ended)[0] as DebugProtocol.ExitedEvent;
    assert.equal(exited.body.exitCode, 3, h.output);
    await h.waitOutput(new RegExp(`pid ${pid} exited with code 3 \\(read from /proc while it waited for its parent\\)`));
    assert.match(h.output, /── passive observe summary ──/);
    assert.match(h.output, new RegExp(`thread ${ev.body.threadId} \\(pc-worker-\\d\\): 1 blocked episode, longest at least \\d+ ms, ` +
      'blocked at least \\d+ ms in all, 1 stop'));
    assert.match(h.output, /longest wait seen: at least \d+ ms; stops: 1/);
    assert.match(h.output, /userfaultfd fd \d+: faults that arrived while attached, at least \d+ \(rises of fdinfo 'total'/);
  });

  test('a stopped thread its handler unblocks is shown running again; its next wait stops again', async () => {
    // Every page takes the source 300 ms: each fault is a wait of about 300 ms, then the next.
    const p = start(POSTCOPY, ['--pages', '6', '--threads', '1', '--no-push', '--latency-us', '300000']);
    await blockedWorker(p.pid!);
    await attach(p.pid!, [{ filterId: 'waitTooLong', condition: '100ms' }]);
    const first = await h.nextStop();
    const tid = first.body.threadId!;
    const continued = (await h.dc.waitForEvent('continued', 5000)) as DebugProtocol.ContinuedEvent;
    assert.equal(continued.body.threadId, tid);
    assert.equal(continued.body.allThreadsContinued, false);
    await h.waitOutput(new RegExp(`thread ${tid} is no longer blocked \\(its handler resolved the fault\\) after at least \\d+ ms`));
    const second = await h.nextStop();
    assert.equal(second.body.threadId, tid, 'the next fault of the same thread is a new wait');
    await h.dc.continueRequest({ threadId: tid });
    const sum = await h.dc.evaluateRequest({ expression: 'summary', context: 'repl' });
    const m = new RegExp(`thread ${tid} \\(pc-worker-0\\): (\\d+) blocked episodes`).exec(sum.body.result);
    assert.ok(m && Number(m[1]) >= 2, sum.body.result);
    await h.dc.disconnectRequest({});
  });

  test('terminate leaves the process running; only a disconnect with terminateDebuggee kills it', async () => {
    const pid = await startHung();
    await attach(pid, []);
    const terminated = h.dc.waitForEvent('terminated', 5000);
    await h.dc.terminateRequest({});
    await terminated;
    await h.waitOutput(new RegExp(`stopped watching pid ${pid}; it runs on, untouched`));
    assert.match(status(pid), /^State:\s+[SR]/m);
    assert.match(status(pid), /^TracerPid:\s+0$/m);
    await h.stop();

    h = await Harness.start(['--observe-attach']);
    await attach(pid, []);
    await h.dc.disconnectRequest({ terminateDebuggee: true });
    await h.waitOutput(new RegExp(`killed pid ${pid} \\(postcopy\\) with SIGKILL, as the disconnect asked \\(terminateDebuggee\\)`));
    await until(() => !/^State:\s+[SR]/m.test(readProc(`/proc/${pid}/status`)), 5000, `pid ${pid} killed`);
  });

  test('refuses conditions and filters that need what /proc cannot tell', async () => {
    const pid = await startHung();
    const f = await attach(pid, [{ filterId: 'waitTooLong', condition: '200ms [heap]' }, { filterId: 'missing' }]);
    const [wait, missing] = f.body!.breakpoints!;
    assert.equal(wait.verified, false);
    assert.match(wait.message!, /cannot tell where a blocked thread faulted/);
    assert.equal(missing.verified, false);
    assert.match(missing.message!, /'missing' cannot stop here: .*launch the handler with "observe": true/i);
    await assert.rejects(h.nextStop(800), /no stop within/);
    await h.dc.disconnectRequest({});
    assert.match(status(pid), /^TracerPid:\s+0$/m);
  });

  test('refuses a pid that does not exist', async () => {
    const pidMax = Number(readFileSync('/proc/sys/kernel/pid_max', 'utf8'));
    await h.dc.initializeRequest();
    await assert.rejects(h.dc.attachRequest({ pid: pidMax, observe: true } as DebugProtocol.AttachRequestArguments),
      new RegExp(`no process with pid ${pidMax}: it has exited, or the pid is wrong`));
  });

  test('refuses a process without a userfaultfd, and says what to do', async () => {
    const sleep = start('sleep', ['30']);
    await until(() => readProc(`/proc/${sleep.pid}/comm`).trim() === 'sleep', 5000, 'sleep to exec');
    await h.dc.initializeRequest();
    await assert.rejects(h.dc.attachRequest({ pid: sleep.pid, observe: true } as DebugProtocol.AttachRequestArguments),
      new RegExp(`no userfaultfd in pid ${sleep.pid} \\(sleep\\): attach without observe to let the debugger handle its faults, ` +
        'or launch with observe: true'));
  });

  test('refuses a process of another user with permission denied, and says what to do', async () => {
    // Runs as root (as every test of this project): the adapter is started as nobody.
    const pid = await startHung();
    // The adapter as nobody, the process root's: /proc/PID/fd is not readable.
    const script = path.join(mkdtempSync(path.join(tmpdir(), 'uffd-adapter-')), 'adapter.sh');
    writeFileSync(script, `exec setpriv --reuid=65534 --regid=65534 --clear-groups '${process.execPath}' '${ADAPTER}' --observe-attach\n`);
    const dc = new DebugClient('/bin/sh', script, 'uffd');
    dc.defaultTimeout = 15_000;
    await dc.start();
    try {
      await dc.initializeRequest();
      await assert.rejects(dc.attachRequest({ pid, observe: true } as DebugProtocol.AttachRequestArguments),
        new RegExp(`cannot read /proc/${pid}/fd: permission denied\\. pid ${pid} \\(postcopy\\) belongs to another user \\(uid 0\\)` +
          '.*run the debugger as root'));
    } finally {
      await dc.stop();
    }
  });
});
