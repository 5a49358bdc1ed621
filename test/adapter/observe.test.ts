// Observe mode through the real adapter: demo/bin/postcopy runs its own userfaultfd handler with
// libuffd-observe.so preloaded; the debugger stops the handler thread after it reads a fault,
// shows the handler's own stack, and reports stuck faults, EEXIST and ioctl errors.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { DebugProtocol } from '@vscode/debugprotocol';
import { Harness, root } from './support';

const POSTCOPY = path.join(root, 'demo', 'bin', 'postcopy');
const POSTCOPY_C = path.join(root, 'demo', 'postcopy.c');

let h: Harness;
let events: { event: string; body: unknown }[] = [];

beforeEach(async () => {
  h = await Harness.start();
  events = [];
  h.dc.on('uffd/events', (e: DebugProtocol.Event) => events.push({ event: e.event, body: e.body }));
});

afterEach(async () => {
  await h.stop();
});

type FilterOpt = DebugProtocol.ExceptionFilterOptions;

/** initialize, launch postcopy observed, set filters, configurationDone. */
async function launch(args: string[], filterOptions: FilterOpt[], extra: Record<string, unknown> = {}): Promise<void> {
  await Promise.all([
    h.dc.waitForEvent('initialized').then(() => h.dc.setExceptionBreakpointsRequest({ filters: [], filterOptions }))
      .then((r) => assert.ok(r.body?.breakpoints?.every((b) => b.verified), JSON.stringify(r.body)))
      .then(() => h.dc.configurationDoneRequest()),
    h.dc.launch({ program: POSTCOPY, args, cwd: root, observe: true, stopOnFirstFault: false, ...extra } as DebugProtocol.LaunchRequestArguments),
  ]);
}

async function exitCode(): Promise<number> {
  const ev = (await h.dc.waitForEvent('exited', 60_000)) as DebugProtocol.ExitedEvent;
  return ev.body.exitCode;
}

/** Names of the functions in the demo's source, to recognise the handler's frames. */
function demoFunctions(): Set<string> {
  const src = readFileSync(POSTCOPY_C, 'utf8');
  return new Set([...src.matchAll(/^static (?:void|int|\w+ \*?)\s*\*?(\w+)\(/gm)].map((m) => m[1]));
}

describe('observe mode through the adapter', { timeout: 180_000 }, () => {
  test('stops the handler thread after its fault read, shows its stack, and continuing completes the run', async () => {
    const stopped = h.dc.waitForEvent('stopped', 30_000);
    await launch(['--pages', '256', '--threads', '2'], [{ filterId: 'missing' }]);
    const ev = (await stopped) as DebugProtocol.StoppedEvent;
    assert.equal(ev.body.reason, 'page fault');
    assert.match(ev.body.description!, /handler read a page fault: missing read at 0x[0-9a-f]+/);
    const tid = ev.body.threadId!;
    // The stopped thread is the handler's reading thread, and it really is stopped.
    const threads = await h.dc.threadsRequest();
    const me = threads.body.threads.find((t) => t.id === tid);
    assert.ok(me, `thread ${tid} listed: ${JSON.stringify(threads.body.threads)}`);
    assert.match(me.name, /pc-handler/);
    assert.ok(threads.body.threads.some((t) => /pc-worker-0/.test(t.name)), 'workers listed');
    // Debug Console completions are this mode's commands.
    assert.deepEqual((await h.dc.completionsRequest({ text: 's', column: 2 })).body.targets.map((t) => t.label), ['summary', 'stopped']);
    const st = await h.dc.stackTraceRequest({ threadId: tid });
    const names = st.body.stackFrames.map((f) => f.name);
    const fns = demoFunctions();
    const own = st.body.stackFrames.filter((f) => fns.has(f.name) && f.source?.path === POSTCOPY_C);
    assert.ok(own.some((f) => f.name === 'handler_loop'), `handler_loop among ${names.join(' | ')}`);
    assert.ok(own.some((f) => f.name === 'handler_thread'), `handler_thread among ${names.join(' | ')}`);
    assert.ok(!names.some((n) => /note_read|stop_wait/.test(n)), `library frames hidden: ${names.join(' | ')}`);
    // The top frame with source is the read() call of the handler loop.
    const top = st.body.stackFrames.find((f) => f.source?.path)!;
    const line = readFileSync(POSTCOPY_C, 'utf8').split('\n')[top.line - 1];
    assert.match(line, /read\(H\.uffd/, `top frame at ${top.name}:${top.line}: ${line}`);
    // The Fault scope shows the fault read.
    const sc = await h.dc.scopesRequest({ frameId: st.body.stackFrames[0].id });
    const fault = sc.body.scopes.find((s) => s.name === 'Fault')!;
    const vars = await h.variablesOf(fault.variablesReference);
    assert.match(vars.get('address')!.value, /^0x[0-9a-f]+$/);
    assert.equal(vars.get('kind')!.value, 'missing');
    assert.match(vars.get('read by')!.value, new RegExp(`thread ${tid} `));
    assert.match(vars.get('resolve')!.value, /Continue lets the handler resolve it, or Resolve Page… places it now/);
    // Off with the filter, Continue runs to the end; the demo's own check passes.
    await h.dc.setExceptionBreakpointsRequest({ filters: [] });
    const code = exitCode();
    await h.dc.continueRequest({ threadId: tid });
    assert.equal(await code, 0, h.output);
    assert.match(h.output, /check ok pages=256/);
    assert.match(h.output, /observe summary/);
    assert.match(h.output, /blocked time total [\d.]+ ms/);
    assert.match(h.output, /pages requested \d+, pushed \d+/);
    assert.match(h.output, /latency histogram/);
    assert.match(h.output, /problems: none found/);
    // The timeline got the faults and their resolutions.
    const batches = events.map((e) => (e.body as { batch: { seq: number[]; other: { event: string }[] } }).batch);
    const faults = batches.reduce((n, b) => n + b.seq.length, 0);
    const resolved = batches.reduce((n, b) => n + b.other.filter((o) => o.event === 'resolved').length, 0);
    assert.ok(faults > 0 && resolved === faults, `timeline: ${faults} faults, ${resolved} resolved`);
    assert.ok(batches.some((b) => b.other.some((o) => o.event === 'region')), 'the registered region reaches the timeline');
  });

  test('stops the handler in the process that received the userfaultfd over SCM_RIGHTS, and continues it', async () => {
    const stopped = h.dc.waitForEvent('stopped', 30_000);
    await launch(['--pages', '64', '--threads', '1', '--no-push', '--scm'], [{ filterId: 'missing' }]);
    const ev = (await stopped) as DebugProtocol.StoppedEvent;
    assert.equal(ev.body.reason, 'page fault');
    const tid = ev.body.threadId!;
    // Not a thread of the launched process: listed by its process.
    const threads = await h.dc.threadsRequest();
    const me = threads.body.threads.find((t) => t.id === tid);
    assert.ok(me, `thread ${tid} listed: ${JSON.stringify(threads.body.threads)}`);
    const pid = Number(/^pid (\d+) /.exec(me.name)?.[1]);
    assert.ok(pid > 0 && readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8').includes(') S '), `${me.name} is asleep`);
    const st = await h.dc.stackTraceRequest({ threadId: tid });
    const names = st.body.stackFrames.map((f) => f.name);
    assert.ok(names.includes('handler_loop') && names.some((n) => /^scm_handler_main\b/.test(n)), names.join(' | '));
    await h.dc.setExceptionBreakpointsRequest({ filters: [] });
    const code = exitCode();
    await h.dc.continueRequest({ threadId: tid });
    assert.equal(await code, 0, h.output);
    assert.match(h.output, /check ok pages=64/);
  });

  test('a forgotten page: the wait-too-long filter stops on the faulting thread, the stuck fault is named', async () => {
    const stopped = h.dc.waitForEvent('stopped', 30_000);
    await launch(['--pages', '64', '--threads', '1', '--forget', '5', '--watchdog', '3'], [{ filterId: 'waitTooLong', condition: '300ms' }],
      { stopOnWaitMs: 300 });
    const ev = (await stopped) as DebugProtocol.StoppedEvent;
    assert.equal(ev.body.reason, 'wait too long');
    const m = /fault on page (0x[0-9a-f]+) has waited (\d+) ms/.exec(ev.body.description!);
    assert.ok(m, ev.body.description);
    assert.ok(Number(m[2]) >= 300);
    // The faulting thread is a worker; its stack (pc and sp from /proc, never interrupted) names the worker.
    const threads = await h.dc.threadsRequest();
    assert.match(threads.body.threads.find((t) => t.id === ev.body.threadId)!.name, /pc-worker-0/);
    const st = await h.dc.stackTraceRequest({ threadId: ev.body.threadId! });
    assert.ok(st.body.stackFrames.some((f) => f.name === 'worker'), st.body.stackFrames.map((f) => f.name).join(' | '));
    await h.waitOutput(new RegExp(`stuck fault: page ${m[1]} \\(thread ${ev.body.threadId}\\)`));
    const code = exitCode();
    await h.dc.continueRequest({ threadId: ev.body.threadId! });
    assert.equal(await code, 3, 'the demo\'s watchdog gives up with 3');
    assert.match(h.output, new RegExp(`problems:\\n  stuck fault: page ${m[1]}`));
    const stuck = events.flatMap((e) => (e.body as { batch: { other: { event: string; page?: string }[] } }).batch.other)
      .filter((o) => o.event === 'stuck');
    assert.deepEqual(stuck.map((o) => o.page), [m[1]], 'the timeline marks the stuck fault once');
  });

  test('a page placed twice: the ioctl-error filter stops the handler before it sees EEXIST, reported as a duplicate', async () => {
    const stopped = h.dc.waitForEvent('stopped', 30_000);
    await launch(['--pages', '64', '--threads', '2', '--twice', '7'], [{ filterId: 'ioctlError', condition: 'EEXIST' }]);
    const ev = (await stopped) as DebugProtocol.StoppedEvent;
    assert.equal(ev.body.reason, 'ioctl error');
    assert.match(ev.body.description!, /UFFDIO_COPY at (0x[0-9a-f]+) failed with EEXIST/);
    const st = await h.dc.stackTraceRequest({ threadId: ev.body.threadId! });
    const names = st.body.stackFrames.map((f) => f.name);
    assert.equal(names.find((n) => !n.startsWith('Paused')), 'place', names.join(' | '));
    assert.ok(names.some((n) => /^handle_page( \[inlined\])?$/.test(n)), names.join(' | '));
    const sc = await h.dc.scopesRequest({ frameId: st.body.stackFrames[0].id });
    const vars = await h.variablesOf(sc.body.scopes.find((s) => s.name === 'Ioctl error')!.variablesReference);
    assert.equal(vars.get('errno')!.value, 'EEXIST');
    const code = exitCode();
    await h.dc.continueRequest({ threadId: ev.body.threadId! });
    assert.equal(await code, 0, h.output);
    assert.match(h.output, /check ok pages=64/);
    assert.match(h.output, /EEXIST: UFFDIO_COPY of page 0x[0-9a-f]+/);
    assert.match(h.output, /EEXIST duplicates: 1 \(pages 0x[0-9a-f]+\)/);
    assert.match(h.output, /eexist=1/, 'the demo counted the same one');
  });

  /** The postcopy region's start, from the Userfaultfds scope of a stopped thread. */
  async function regionStart(tid: number): Promise<bigint> {
    const st = await h.dc.stackTraceRequest({ threadId: tid });
    const sc = await h.dc.scopesRequest({ frameId: st.body.stackFrames[0].id });
    const u = await h.variablesOf(sc.body.scopes.find((x) => x.name === 'Userfaultfds')!.variablesReference);
    const m = /(0x[0-9a-f]+) \+(\d+)/.exec([...u.values()].map((v) => v.value).join(' '));
    assert.ok(m, `a registered range in ${JSON.stringify([...u.values()])}`);
    assert.equal(Number(m[2]), 64 * 4096);
    return BigInt(m[1]);
  }

  async function faultVars(tid: number): Promise<Map<string, DebugProtocol.Variable>> {
    const st = await h.dc.stackTraceRequest({ threadId: tid });
    const sc = await h.dc.scopesRequest({ frameId: st.body.stackFrames[0].id });
    return h.variablesOf(sc.body.scopes.find((x) => x.name === 'Fault')!.variablesReference);
  }

  test('a data breakpoint on one page stops the handler on that page\'s fault only; continuing completes the run', async () => {
    const first = h.dc.waitForEvent('stopped', 30_000);
    // One thread, no background pushes: every page is read once, through a fault.
    await launch(['--pages', '64', '--threads', '1', '--no-push'], [], { stopOnFirstFault: true });
    const ev0 = (await first) as DebugProtocol.StoppedEvent;
    assert.equal(ev0.body.reason, 'page fault');
    const base = await regionStart(ev0.body.threadId!);
    const page = base + 20n * 4096n;
    const info = await h.dc.dataBreakpointInfoRequest({ name: '0x' + (page + 100n).toString(16), bytes: 8 });
    assert.equal(info.body.dataId, `0x${page.toString(16)}-0x${(page + 4096n).toString(16)}`);
    assert.deepEqual(info.body.accessTypes, ['read', 'write', 'readWrite']);
    // A write breakpoint on another page: the workload only reads, so it never stops.
    const other = await h.dc.dataBreakpointInfoRequest({ name: `0x${(base + 30n * 4096n).toString(16)}` });
    const set = await h.dc.setDataBreakpointsRequest({ breakpoints: [
      { dataId: info.body.dataId!, accessType: 'read' }, { dataId: other.body.dataId!, accessType: 'write' }] });
    assert.ok(set.body.breakpoints.every((b) => b.verified), JSON.stringify(set.body));
    const stops: DebugProtocol.StoppedEvent[] = [];
    h.dc.on('stopped', (e) => stops.push(e as DebugProtocol.StoppedEvent));
    const hit = h.dc.waitForEvent('stopped', 30_000);
    await h.dc.continueRequest({ threadId: ev0.body.threadId! });
    const ev = (await hit) as DebugProtocol.StoppedEvent;
    assert.equal(ev.body.reason, 'data breakpoint');
    assert.deepEqual(ev.body.hitBreakpointIds, [set.body.breakpoints[0].id]);
    assert.match(ev.body.description!, /data breakpoint.*missing read at/);
    const vars = await faultVars(ev.body.threadId!);
    assert.equal(vars.get('page')!.value, '0x' + page.toString(16));
    assert.equal(vars.get('access')!.value, 'read');
    const code = exitCode();
    await h.dc.continueRequest({ threadId: ev.body.threadId! });
    assert.equal(await code, 0, h.output);
    assert.match(h.output, /check ok pages=64/);
    assert.equal(stops.length, 1, `one data breakpoint stop: ${stops.map((s) => s.body.description).join(' | ')}`);
    assert.match(h.output, /problems: none found/);
  });

  test('Resolve Page… while the handler is stopped: the library places the page, the handler then gets EEXIST', async () => {
    const first = h.dc.waitForEvent('stopped', 30_000);
    await launch(['--pages', '64', '--threads', '1', '--no-push'], [], { stopOnFirstFault: true });
    const ev = (await first) as DebugProtocol.StoppedEvent;
    const tid = ev.body.threadId!;
    const before = await faultVars(tid);
    const page = before.get('page')!.value;
    const base = await regionStart(tid);
    const index = (BigInt(page) - base) / 4096n;
    const ways = await h.dc.customRequest('uffd/resolutions', { tid });
    assert.deepEqual(ways.body, { kind: 'missing', page, ways: ['default', 'zero', 'copy-pattern', 'wake'] });
    const r = await h.dc.customRequest('uffd/resolve', { tid, how: 'copy', pattern: 0xaa });
    assert.equal(r.body.ioctl, 'UFFDIO_COPY');
    assert.equal(r.body.page, page);
    assert.match(r.body.message, /UFFDIO_COPY with byte 0xaa placed 1 page .*its own placement of that page fails with EEXIST/);
    // A thread that is not stopped on a fault read is refused.
    await assert.rejects(h.dc.customRequest('uffd/resolve', { tid: 1, how: 'zero' }), /not a handler thread stopped/);
    const after = await faultVars(tid);
    assert.match(after.get('resolve')!.value, /UFFDIO_COPY with byte 0xaa placed/);
    const code = exitCode();
    await h.dc.continueRequest({ threadId: tid });
    // The handler's own UFFDIO_COPY of that page failed with EEXIST (it counts it), and the page
    // keeps the debugger's pattern: the demo's content check names exactly that page.
    assert.equal(await code, 1, h.output);
    assert.match(h.output, new RegExp(`check FAILED bad=1 first=${index}\\b`));
    assert.match(h.output, /eexist=1/);
    assert.match(h.output, new RegExp(`EEXIST: UFFDIO_COPY of page ${page} .*the debugger placed it`));
    assert.match(h.output, new RegExp(`resolved by the debugger: UFFDIO_COPY ${page} \\(\\+4096\\): the handler's own placement then failed with EEXIST`));
    assert.match(h.output, new RegExp(`EEXIST duplicates: 1 \\(pages ${page}\\)`));
  });

  test('bad input is refused with what to do', async () => {
    await assert.rejects(h.dc.launch({ program: '/nonexistent/handler', observe: true } as DebugProtocol.LaunchRequestArguments),
      /does not exist: check 'program'/);
  });

  test('a bad filter condition is refused with the syntax', async () => {
    const init = h.dc.waitForEvent('initialized');
    await h.dc.launch({ program: POSTCOPY, args: ['--pages', '16'], observe: true } as DebugProtocol.LaunchRequestArguments);
    await init;
    const r = await h.dc.setExceptionBreakpointsRequest({ filters: [], filterOptions: [{ filterId: 'waitTooLong', condition: 'soon' }] });
    assert.equal(r.body!.breakpoints![0].verified, false);
    assert.match(r.body!.breakpoints![0].message!, /'soon' is not a condition term.*the wait in ms/);
  });
});
