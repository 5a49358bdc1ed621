// Stepping requests and data breakpoints on a multi-threaded demo, against the real adapter.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DebugProtocol } from '@vscode/debugprotocol';
import { faultAddr, Harness, onEachTest } from './support';

let h: Harness;

onEachTest((x) => { h = x; });

const PAGE = 4096n;

/** The next stop with this reason; stops of other held threads (reason 'page fault') pass by. */
async function waitStop(h: Harness, reason: string): Promise<DebugProtocol.StoppedEvent> {
  for (let i = 0; i < 100; i++) {
    const e = (await h.dc.waitForEvent('stopped')) as DebugProtocol.StoppedEvent;
    if (e.body.reason === reason) return e;
  }
  throw new Error(`no '${reason}' stop among 100 stops`);
}

describe('stepping and data breakpoints', { timeout: 120_000 }, () => {
  test('stepIn stops on the next fault of the same thread, five times in a row, with 4 threads faulting', async () => {
    await h.launch({ stopOnFirstFault: false }, ['missing'], ['--pages', '400', '--threads', '4', '--pattern', 'seq']);
    const { ev } = await h.stopInRegion(0, 400);
    const tid = ev.body.threadId!;
    // Other workers may be held already (they fault at the same time); from now on only steps stop.
    await h.dc.setExceptionBreakpointsRequest({ filters: [] });
    for (let i = 0; i < 5; i++) {
      const step = waitStop(h, 'step');
      await h.dc.stepInRequest({ threadId: tid });
      const next = await step;
      assert.equal(next.body.threadId, tid, `step ${i + 1} stayed on thread ${tid}`);
    }
    await h.dc.setExceptionBreakpointsRequest({ filters: ['missing'] });
    // The missing filter is back in force afterwards: continue stops again (on any thread).
    const [again] = await Promise.all([h.dc.waitForEvent('stopped'), h.dc.continueRequest({ threadId: tid })]);
    assert.equal(again.body.reason, 'page fault');
  });

  test('continue with singleThread resolves only that thread\'s fault: the other worker stays stopped on its page', async () => {
    await h.launch({ stopOnFirstFault: false }, ['missing'], ['--pages', '64', '--threads', '2', '--pattern', 'seq']);
    const { ev: a } = await h.stopInRegion(0, 64);
    // The other worker faults on its own half of the region meanwhile and is held too.
    let b: DebugProtocol.StoppedEvent;
    do b = await h.nextStop(); while (b.body.threadId === a.body.threadId);
    const held = async () => (await h.dc.evaluateRequest({ expression: 'held', context: 'repl' })).body.result;
    assert.match(await held(), new RegExp(`tid ${b.body.threadId} \\S+ \\S+ 0x${faultAddr(b).toString(16)}$`, 'm'));

    const r = await h.dc.continueRequest({ threadId: a.body.threadId!, singleThread: true });
    assert.equal(r.body.allThreadsContinued, false);
    const next = await h.nextStop();
    assert.equal(next.body.threadId, a.body.threadId, 'only the continued thread ran on to its next fault');
    assert.equal(faultAddr(next), faultAddr(a) + PAGE, 'its next page');
    assert.match(await held(), new RegExp(`tid ${b.body.threadId} \\S+ \\S+ 0x${faultAddr(b).toString(16)}$`, 'm'),
      'the other worker is still held on the same page');
    // A thread that is not stopped cannot be continued alone: a clear error, nothing resolved.
    await assert.rejects(h.dc.continueRequest({ threadId: 999_999, singleThread: true }), /thread 999999 is not stopped on a fault/);

    await h.dc.setExceptionBreakpointsRequest({ filters: [] });
    const exited = h.dc.waitForEvent('exited');
    await h.dc.continueRequest({ threadId: next.body.threadId! });
    assert.equal(((await exited) as DebugProtocol.ExitedEvent).body.exitCode, 0);
  });

  test('stepOut runs until a fault outside the current VMA, or to the end', async () => {
    await h.launch({ stopOnFirstFault: false }, ['missing'], ['--pages', '64', '--pattern', 'seq']);
    const { ev, region } = await h.stopInRegion(0, 64);
    await h.dc.setExceptionBreakpointsRequest({ filters: [] });
    const end = h.dc.waitForEvent('exited').then((e) => ({ kind: 'exited' as const, e }));
    const stop = h.dc.waitForEvent('stopped', 30_000).then((e) => ({ kind: 'stopped' as const, e: e as DebugProtocol.StoppedEvent }));
    await h.dc.stepOutRequest({ threadId: ev.body.threadId! });
    const first = await Promise.race([end, stop]);
    if (first.kind === 'stopped') {
      const a = faultAddr(first.e);
      assert.ok(a < region || a >= region + 64n * PAGE, `stopped outside the region's VMA (at 0x${a.toString(16)})`);
      assert.equal(first.e.body.reason, 'step');
    } else {
      assert.equal(first.e.body.exitCode, 0);
    }
  });

  test('a read-write data breakpoint on pages 8-11 of the region stops there, on each page, and nowhere else', async () => {
    await h.launch({ stopOnFirstFault: false }, ['missing'], ['--pages', '32', '--pattern', 'seq']);
    const { ev, region } = await h.stopInRegion(0, 32);
    const range = `0x${(region + 8n * PAGE).toString(16)}-0x${(region + 12n * PAGE).toString(16)}`;
    const info = await h.dc.dataBreakpointInfoRequest({ name: range });
    assert.equal(info.body.dataId, range);
    assert.deepEqual(info.body.accessTypes, ['read', 'write', 'readWrite']);
    const set = await h.dc.setDataBreakpointsRequest({ breakpoints: [{ dataId: range, accessType: 'readWrite' }] });
    const bp = set.body.breakpoints[0];
    assert.equal(bp.verified, true);
    assert.match(bp.message ?? '', /^Page granularity, 4 pages, no hardware-slot limit/);
    await h.dc.setExceptionBreakpointsRequest({ filters: [] });

    const hits: bigint[] = [];
    let threadId = ev.body.threadId!;
    const exited = h.dc.waitForEvent('exited', 30_000);
    for (;;) {
      const next = h.dc.waitForEvent('stopped', 30_000).then((e) => e as DebugProtocol.StoppedEvent);
      await h.dc.continueRequest({ threadId });
      const r = await Promise.race([next, exited.then(() => null)]);
      if (!r) break;
      assert.equal(r.body.reason, 'data breakpoint');
      assert.deepEqual(r.body.hitBreakpointIds, [bp.id]);
      hits.push(faultAddr(r));
      threadId = r.body.threadId!;
    }
    assert.deepEqual(hits, [8n, 9n, 10n, 11n].map((p) => region + p * PAGE));
  });

  test('a data breakpoint from the Fault scope, and addresses that are not memory', async () => {
    const stopped = h.dc.waitForEvent('stopped');
    await h.launch({});
    const ev = (await stopped) as DebugProtocol.StoppedEvent;
    const scopes = await h.scopesOf(ev.body.threadId!);
    const faultRef = scopes.get('Fault')!.variablesReference;
    const fault = await h.variablesOf(faultRef);
    const page = BigInt(fault.get('page')!.value);
    const info = await h.dc.dataBreakpointInfoRequest({ variablesReference: faultRef, name: 'page' });
    assert.equal(info.body.dataId, `0x${page.toString(16)}-0x${(page + PAGE).toString(16)}`);
    assert.match(info.body.description, /^page 0x[0-9a-f]+ \(1 page\)$/);
    const vmaInfo = await h.dc.dataBreakpointInfoRequest({ variablesReference: scopes.get('VMA')!.variablesReference, name: 'range' });
    assert.match(vmaInfo.body.dataId ?? '', /^0x[0-9a-f]+-0x[0-9a-f]+$/);
    const bad = await h.dc.dataBreakpointInfoRequest({ name: 'not an address' });
    assert.equal(bad.body.dataId, null);
    assert.match(bad.body.description, /data breakpoints take an address/);
    const set = await h.dc.setDataBreakpointsRequest({ breakpoints: [{ dataId: 'garbage' }] });
    assert.equal(set.body.breakpoints[0].verified, false);
  });
});
