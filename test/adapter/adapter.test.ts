// The real debug adapter, helper and demo program, driven the way VS Code drives them.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import { DebugClient } from '@vscode/debugadapter-testsupport';
import { DebugProtocol } from '@vscode/debugprotocol';
import { faultAddr, Harness, markerLine, root, waitGone } from './support';

let h: Harness;
let dc: DebugClient;

beforeEach(async () => {
  h = await Harness.start();
  dc = h.dc;
});

afterEach(async () => {
  await h.stop();
});

const startSession = (extra: Record<string, unknown>, filters: string[] = [], args?: string[]) => h.launch(extra, filters, args);
const variablesOf = (ref: number) => h.variablesOf(ref);
const scopesOf = (threadId: number) => h.scopesOf(threadId);
const waitOutput = (re: RegExp) => h.waitOutput(re);

describe('uffd debug adapter', { timeout: 120_000 }, () => {
  test('initialize advertises one exception filter per fault kind, missing off by default', async () => {
    const r = await dc.initializeRequest();
    const filters = r.body?.exceptionBreakpointFilters ?? [];
    assert.deepEqual(filters.map((f) => f.filter).slice(0, 3), ['missing', 'wp', 'minor']);
    assert.equal(filters[0].default, false);
    assert.equal(r.body?.supportsConfigurationDoneRequest, true);
    assert.equal(r.body?.supportsSingleThreadExecutionRequests, true, 'continue can resume one thread');
  });

  test('stopOnEntry stops before the first instruction; continue runs to the end with exit code 0', async () => {
    const stopped = dc.waitForEvent('stopped');
    await startSession({ stopOnEntry: true });
    const ev = await stopped;
    assert.equal(ev.body.reason, 'entry');
    const threads = await dc.threadsRequest();
    assert.equal(threads.body.threads.length, 1);
    assert.equal(threads.body.threads[0].id, ev.body.threadId);
    const exited = dc.waitForEvent('exited');
    const terminated = dc.waitForEvent('terminated');
    await dc.continueRequest({ threadId: ev.body.threadId });
    assert.equal((await exited).body.exitCode, 0);
    await terminated;
    await waitOutput(/checksum [0-9a-f]+ touched 64/);
  });

  test('the first page fault stops the program; next stops on the following fault', async () => {
    const stopped = dc.waitForEvent('stopped');
    await startSession({});
    const first = (await stopped) as DebugProtocol.StoppedEvent;
    assert.equal(first.body.reason, 'page fault');
    assert.match(first.body.description ?? '', /^Paused on page fault: missing (read|write) at 0x[0-9a-f]+$/);
    assert.equal(first.body.allThreadsStopped, false);
    const scopes1 = await scopesOf(first.body.threadId!);
    const fault1 = await variablesOf(scopes1.get('Fault')!.variablesReference);

    const [second] = await Promise.all([dc.waitForEvent('stopped'), dc.nextRequest({ threadId: first.body.threadId! })]);
    assert.equal(second.body.reason, 'step');
    const fault2 = await variablesOf((await scopesOf(second.body.threadId)).get('Fault')!.variablesReference);
    assert.notEqual(fault2.get('sequence')!.value, fault1.get('sequence')!.value);
    assert.ok(Number(fault2.get('sequence')!.value.slice(1)) > Number(fault1.get('sequence')!.value.slice(1)));

    const exited = dc.waitForEvent('exited');
    await dc.continueRequest({ threadId: second.body.threadId });
    assert.equal((await exited).body.exitCode, 0, 'with the missing filter off, continue runs to the end');
  });

  test('with the missing filter on, the debugger stops at the address the demo prints; Fault and VMA scopes are filled', async () => {
    const caps = dc.waitForEvent('capabilities') as Promise<DebugProtocol.CapabilitiesEvent>;
    await startSession({ stopOnFirstFault: false }, ['missing'], ['--pages', '16', '--pattern', 'seq']);
    // The handshake decides what the UI offers: without followForks there is no Fork filter.
    const filters = (await caps).body.capabilities.exceptionBreakpointFilters!.map((f) => f.filter);
    assert.deepEqual(filters, ['missing', 'wp', 'minor', 'remap', 'remove', 'unmap']);
    // Startup faults (stack, libc, heap) come first; continue past them to the demo's region.
    const { ev: hit, region } = await h.stopInRegion();
    assert.equal(hit.body.reason, 'page fault');
    assert.equal(faultAddr(hit), region, 'the first touch is the first page of the region');
    // The stack: a label naming the fault, then the instruction that touched the page, at the
    // marker line of the demo's source.
    const st = await dc.stackTraceRequest({ threadId: hit.body.threadId! });
    const [label, top] = st.body.stackFrames;
    assert.equal(label.presentationHint, 'label');
    assert.match(label.name, /^page fault #\d+: missing write at 0x/);
    assert.equal(top.name, 'toucher');
    assert.equal(top.source?.path, path.join(root, 'demo', 'touch.c'));
    assert.equal(top.line, markerLine(path.join(root, 'demo', 'touch.c'), 'region[p * PAGE] = '));
    assert.match(top.instructionPointerReference ?? '', /^0x[0-9a-f]+$/);
    // Resolve Page… offers what the kernel accepts for a missing anonymous page.
    const ways = (await dc.customRequest('uffd/resolutions', { tid: hit.body.threadId })).body.ways as string[];
    assert.deepEqual(ways, ['default', 'zero', 'copy-pattern', 'copy-file', 'copy-bytes', 'move', 'poison', 'wake']);
    const scopes = await scopesOf(hit.body.threadId!);
    assert.deepEqual([...scopes.keys()].slice(0, 3), ['Fault', 'Page', 'VMA']);
    const fault = await variablesOf(scopes.get('Fault')!.variablesReference);
    assert.equal(fault.get('address')!.value, '0x' + region.toString(16));
    assert.equal(fault.get('page')!.value, '0x' + region.toString(16));
    assert.equal(fault.get('kind')!.value, 'missing');
    assert.equal(fault.get('access')!.value, 'write');
    assert.match(fault.get('thread')!.value, new RegExp(`^${hit.body.threadId} \\(touch\\)`));
    assert.match(fault.get('waited')!.value, /^\d+\.\d ms$/);
    const vma = await variablesOf(scopes.get('VMA')!.variablesReference);
    assert.equal(vma.get('permissions')!.value, 'rw-p');
    assert.equal(vma.get('path')!.value, '[anon]');
    assert.match(vma.get('VmFlags')!.value, /\bum\b/);
    assert.equal(vma.get('userfaultfd modes')!.value, 'missing');
    const flags = await variablesOf(vma.get('VmFlags')!.variablesReference);
    assert.equal(flags.get('um')!.value, 'userfaultfd missing tracking');
    assert.equal(flags.get('rd')!.value, 'readable');
    assert.equal(flags.get('wr')!.value, 'writeable');
  });

  test('Page scope and Debug Console commands describe the held page without faulting it', async () => {
    const stopped = dc.waitForEvent('stopped');
    await startSession({});
    const ev = (await stopped) as DebugProtocol.StoppedEvent;
    const scopes = await scopesOf(ev.body.threadId!);
    assert.deepEqual([...scopes.keys()].filter((k) => k !== 'Region'), ['Fault', 'Page', 'VMA', 'Registers', 'Tracked regions']);
    const page = await variablesOf(scopes.get('Page')!.variablesReference);
    assert.equal(page.get('present')!.value, 'false', 'a page held on a missing fault is not present');
    assert.equal(page.get('state')!.value, 'not present');
    const fault = await variablesOf(scopes.get('Fault')!.variablesReference);
    const addr = fault.get('page')!.value;

    const repl = (expression: string) => dc.evaluateRequest({ expression, context: 'repl' });
    assert.match((await repl('help')).body.result, /^maps \[TEXT\]/m);
    assert.match((await repl('maps')).body.result, /\[uffd: missing\]/);
    const pageOut = (await repl(`page ${addr} 2`)).body.result.split('\n');
    assert.match(pageOut[0], /^in 0x[0-9a-f]+-0x[0-9a-f]+ rw-p/);
    assert.equal(pageOut[1], `${addr}  not present`);
    assert.match((await repl('held')).body.result, new RegExp(`tid ${ev.body.threadId} missing (read|write) 0x`));
    assert.match((await repl('stats')).body.result, /held 1,/);
    assert.match((await repl('threads')).body.result, /handle_userfault/, 'the stopped thread waits in handle_userfault');
    assert.match((await repl('policy readAhead=4 delay=5-10us')).body.result, /readAhead 4, delay 5-10 µs/);
    assert.match((await repl('policy readAhead=1 delay=off')).body.result, /hold: .*\nreadAhead 1, delay off/);
    await assert.rejects(repl('policy speed=11'), /not a policy setting/);
    await assert.rejects(repl('zap 0x1000-0x2000'), /not tracked|not mapped|cannot zap/);
    await assert.rejects(repl('frobnicate'), /unknown command 'frobnicate': type 'help'/);
    await assert.rejects(repl('page nowhere'), /not an address/);
    const comp = await dc.completionsRequest({ text: 'ma', column: 3 });
    assert.deepEqual(comp.body.targets.map((t) => t.label), ['maps']);
    // Nothing above touched the page: the fault is still the same held one.
    assert.match((await repl('held')).body.result, new RegExp(fault.get('sequence')!.value));
  });

  test('resolving by hand: wake refaults, a pattern fills the page, and the program sees those bytes', async () => {
    await startSession({ stopOnFirstFault: false }, ['missing'], ['--pages', '4', '--pattern', 'seq']);
    const { ev, region } = await h.stopInRegion(0, 1);
    const frameId = (await dc.stackTraceRequest({ threadId: ev.body.threadId! })).body.stackFrames[1].id;

    // Wake only: the thread retries the instruction and faults again on the same page.
    const again = dc.waitForEvent('stopped');
    const woke = await dc.customRequest('uffd/resolve', { tid: ev.body.threadId, how: 'wake' });
    assert.equal(woke.body.ioctl, 'UFFDIO_WAKE');
    const ev2 = (await again) as DebugProtocol.StoppedEvent;
    assert.equal(faultAddr(ev2), region, 'the same page faults again');

    // Fill it with 0xaa from the Debug Console; the demo then writes its one byte on top.
    const frame2 = (await dc.stackTraceRequest({ threadId: ev2.body.threadId! })).body.stackFrames[1].id;
    assert.notEqual(frame2, frameId);
    const r = await dc.evaluateRequest({ expression: 'resolve pattern 0xaa', context: 'repl', frameId: frame2 });
    assert.match(r.body.result, new RegExp(`^resolved fault #\\d+ at 0x${region.toString(16)} with UFFDIO_COPY \\(1 page\\)`));
    await assert.rejects(dc.evaluateRequest({ expression: 'resolve pattern 300', context: 'repl', frameId: frame2 }), /byte value 0-255/);
    const exited = dc.waitForEvent('exited');
    await dc.setExceptionBreakpointsRequest({ filters: [] });
    await dc.continueRequest({ threadId: ev2.body.threadId! });
    assert.equal((await exited).body.exitCode, 0);
    const sum = BigInt('0x' + (await waitOutput(/checksum ([0-9a-f]+) touched 4/))[1]);
    // Plain run: pages 0..3 hold (p & 0xff) | 1 at offset 0 → 1+1+3+3 = 8; page 0 now also has 4095 bytes of 0xaa.
    assert.equal(sum, 8n + 4095n * 0xaan);
  });

  test('disconnect while stopped on a fault ends the program and the helper', async () => {
    const stopped = dc.waitForEvent('stopped');
    await startSession({}, [], ['--pages', '64', '--sleep-ms', '100']);
    await stopped;
    const pid = h.pid();
    assert.ok(existsSync(`/proc/${pid}`));
    await dc.disconnectRequest({ terminateDebuggee: true });
    await waitGone(pid);
  });

  test('a program that does not exist gives a clear launch error', async () => {
    await dc.initializeRequest();
    await assert.rejects(dc.launchRequest({ program: '/no/such/program', args: [], cwd: root } as DebugProtocol.LaunchRequestArguments), /does not exist/);
  });
});
