// Exception breakpoint filters with conditions (fault kinds and events) and data breakpoints by
// access type, against the real adapter, helper and kernel: each stops where it should and
// nowhere else.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { DebugProtocol } from '@vscode/debugprotocol';
import { faultAddr, Harness, root, TOUCH, onEachTest } from './support';

let h: Harness;

onEachTest((x) => { h = x; });

const PAGE = 4096n;
const EVENTS = path.join(root, 'demo', 'bin', 'events');
const REMOVE = path.join(root, 'demo', 'bin', 'remove');
const hex = (n: bigint) => '0x' + n.toString(16);

/** initialize, launch, the given filters (with conditions), configurationDone. */
async function launch(program: string, args: string[], options: DebugProtocol.ExceptionFilterOptions[] = [],
  extra: Record<string, unknown> = {}): Promise<void> {
  await Promise.all([
    h.dc.waitForEvent('initialized').then(() => h.dc.setExceptionBreakpointsRequest({ filters: [], filterOptions: options }))
      .then(() => h.dc.configurationDoneRequest()),
    h.dc.launch({ program, args, cwd: root, stopOnFirstFault: false, ...extra } as DebugProtocol.LaunchRequestArguments),
  ]);
}

/** Continues from each stop until the program exits; returns every stop on the way. */
async function stopsUntilExit(first?: DebugProtocol.StoppedEvent): Promise<DebugProtocol.StoppedEvent[]> {
  const stops: DebugProtocol.StoppedEvent[] = [];
  const exited = h.dc.waitForEvent('exited', 60_000).then(() => null);
  let ev = first;
  for (;;) {
    const next = h.dc.waitForEvent('stopped', 60_000).then((e) => e as DebugProtocol.StoppedEvent);
    if (ev) await h.dc.continueRequest({ threadId: ev.body.threadId! });
    const r = await Promise.race([next, exited]);
    if (!r) return stops;
    stops.push(r);
    ev = r;
  }
}

/** The region touch printed (it sleeps after printing, so filters can be set for it). */
async function touchRegion(): Promise<bigint> {
  return BigInt((await h.waitOutput(/region (0x[0-9a-f]+) pages/))[1]);
}

const pagesOf = (stops: DebugProtocol.StoppedEvent[], region: bigint) => stops.map((s) => Number((faultAddr(s) - region) / PAGE));

describe('filters with conditions and data breakpoints', { timeout: 240_000 }, () => {
  test('each fault kind and each event is a filter that takes a condition', async () => {
    const init = await h.dc.initializeRequest();
    const filters = init.body?.exceptionBreakpointFilters ?? [];
    // No Fork filter unless the adapter is told forks are followed (--follow-forks, from the extension).
    assert.deepEqual(filters.map((f) => f.filter), ['missing', 'wp', 'minor', 'remap', 'remove', 'unmap']);
    assert.ok(filters.every((f) => f.supportsCondition && f.conditionDescription), 'every filter takes a condition');
    assert.equal(init.body?.supportsExceptionFilterOptions, true);
    // The extension starts the adapter with --follow-forks for a followForks configuration.
    const forks = await Harness.start(['--follow-forks']);
    try {
      const i2 = await forks.dc.initializeRequest();
      assert.deepEqual(i2.body?.exceptionBreakpointFilters?.map((f) => f.filter), ['missing', 'wp', 'minor', 'fork', 'remap', 'remove', 'unmap']);
    } finally {
      await forks.stop();
    }
  });

  test('a bad condition is refused with the accepted syntax; the good ones are verified, in request order', async () => {
    await launch(TOUCH, ['--pages', '4']);
    const r = await h.dc.setExceptionBreakpointsRequest({
      filters: ['wp'],
      filterOptions: [
        { filterId: 'missing', condition: 'tid=abc' },
        { filterId: 'minor', condition: '[heap] tid=12 hit>=3' },
        { filterId: 'unmap', condition: 'tid=5' },
        { filterId: 'remove', condition: '0x2000-0x1000' },
      ],
    });
    const bps = r.body?.breakpoints ?? [];
    assert.equal(bps.length, 5);
    assert.equal(bps[0].verified, true);
    assert.equal(bps[1].verified, false);
    assert.match(bps[1].message ?? '', /'tid=abc' is not a condition term.*0xSTART-0xEND.*tid=N.*hit>=N/);
    assert.equal(bps[2].verified, true);
    assert.equal(bps[3].verified, false);
    assert.match(bps[3].message ?? '', /carry no thread/);
    assert.equal(bps[4].verified, false);
    assert.match(bps[4].message ?? '', /empty range/);
  });

  test('an address range condition stops on those pages only', async () => {
    await launch(TOUCH, ['--pages', '16', '--sleep-ms', '3000']);
    const region = await touchRegion();
    const cond = `${hex(region + 5n * PAGE)}-${hex(region + 8n * PAGE)}`;
    const set = await h.dc.setExceptionBreakpointsRequest({ filters: [], filterOptions: [{ filterId: 'missing', condition: cond }] });
    assert.equal(set.body?.breakpoints?.[0].verified, true);
    const stops = await stopsUntilExit();
    assert.deepEqual(pagesOf(stops, region), [5, 6, 7]);
    assert.ok(stops.every((s) => s.body.reason === 'page fault' && s.body.description?.includes(cond)));
  });

  test('range, thread and hit>=N combined (the helper counts): the 3rd match on and later ones; another thread never', async () => {
    await launch(TOUCH, ['--pages', '12', '--sleep-ms', '3000']);
    const region = await touchRegion();
    const pid = h.pid(); // touch with one thread touches from its main thread
    const range = `${hex(region + 2n * PAGE)}-${hex(region + 8n * PAGE)}`;
    await h.dc.setExceptionBreakpointsRequest({
      filters: [],
      filterOptions: [{ filterId: 'missing', condition: `${range} tid=${pid} hit>=3` }],
    });
    const stops = await stopsUntilExit();
    assert.deepEqual(pagesOf(stops, region), [4, 5, 6, 7]);
    assert.ok(stops.every((s) => s.body.threadId === pid));
  });

  test('a condition on another thread never stops; every=N stops on every Nth match', async () => {
    await launch(TOUCH, ['--pages', '12', '--sleep-ms', '3000']);
    const region = await touchRegion();
    const pid = h.pid();
    await h.dc.setExceptionBreakpointsRequest({
      filters: [],
      filterOptions: [
        { filterId: 'missing', condition: `${hex(region)}-${hex(region + 12n * PAGE)} every=3` },
        // A second filter: the hit count of the first is kept here, not in the helper.
        { filterId: 'minor', condition: `tid=${pid + 100000}` },
      ],
    });
    const stops = await stopsUntilExit();
    assert.deepEqual(pagesOf(stops, region), [2, 5, 8, 11]);
  });

  test('hit=N stops once, on the Nth match', async () => {
    await launch(TOUCH, ['--pages', '8', '--sleep-ms', '3000']);
    const region = await touchRegion();
    await h.dc.setExceptionBreakpointsRequest({
      filters: ['wp'],
      filterOptions: [{ filterId: 'missing', condition: `${hex(region)}-${hex(region + 8n * PAGE)} hit=2` }],
    });
    const stops = await stopsUntilExit();
    assert.deepEqual(pagesOf(stops, region), [1]);
  });

  test('a mapping-name condition ([heap]) stops on heap faults only', async () => {
    const stopped = h.dc.waitForEvent('stopped', 30_000) as Promise<DebugProtocol.StoppedEvent>;
    await launch(TOUCH, ['--pages', '4'], [{ filterId: 'missing', condition: '[heap]' }]);
    const first = await stopped;
    const maps = readFileSync(`/proc/${h.pid()}/maps`, 'utf8').split('\n').filter((l) => l.endsWith('[heap]'));
    assert.equal(maps.length, 1, 'the program has a heap');
    const [lo, hi] = maps[0].split(' ')[0].split('-').map((x) => BigInt('0x' + x));
    const a = faultAddr(first);
    assert.ok(a >= lo && a < hi, `stopped in the heap ${maps[0]} at ${hex(a)}`);
    const rest = await stopsUntilExit(first);
    // Whatever more the heap faults, never outside it (the heap only grows upwards from lo).
    for (const s of rest) assert.ok(faultAddr(s) >= lo, `stop at ${hex(faultAddr(s))} is in the heap`);
  });

  test('an event filter stops at the next fault after the event and names it, once', async () => {
    const stopped = h.dc.waitForEvent('stopped', 30_000) as Promise<DebugProtocol.StoppedEvent>;
    // remove waits after its madvise: the event's stop then does not race its next faults.
    await launch(REMOVE, ['--pages', '8', '--wait-ms', '500'], [{ filterId: 'remove' }]);
    const ev = await stopped;
    assert.equal(ev.body.reason, 'event');
    const m = /after madvise remove of (0x[0-9a-f]+)-(0x[0-9a-f]+): missing read at 0x/.exec(ev.body.description ?? '');
    assert.ok(m, `the stop names the event: ${ev.body.description}`);
    assert.equal(BigInt(m[2]) - BigInt(m[1]), 4n * PAGE, 'remove drops 4 pages');
    const a = faultAddr(ev);
    assert.ok(a >= BigInt(m[1]) && a < BigInt(m[2]), 'the next fault is a removed page read again');
    const rest = await stopsUntilExit(ev);
    assert.equal(rest.length, 0);
    assert.equal(a, BigInt(m[1]), 'the first page read again after the event');
    await h.waitOutput(/removed 0x[0-9a-f]+ 0x[0-9a-f]+ checksum 52/);
  });

  test('an event filter whose range the event does not touch never stops', async () => {
    await launch(EVENTS, ['--mode', 'remove', '--pages', '8', '--no-wait'], [{ filterId: 'remove', condition: '0x1000-0x2000' }]);
    const stops = await stopsUntilExit();
    assert.equal(stops.length, 0);
    await h.waitOutput(/checksum/);
  });

  test('data breakpoints: read stops on missing faults, write on write faults (armed for populated pages), each only in its range', async () => {
    await launch(TOUCH, ['--pages', '12', '--sleep-ms', '3000', '--read']);
    const region = await touchRegion();
    const readRange = `${hex(region + 2n * PAGE)}-${hex(region + 4n * PAGE)}`;
    const writeRange = `${hex(region + 6n * PAGE)}-${hex(region + 8n * PAGE)}`;
    const info = await h.dc.dataBreakpointInfoRequest({ name: readRange });
    assert.equal(info.body.dataId, readRange);
    const addrInfo = await h.dc.dataBreakpointInfoRequest({ name: hex(region + 6n * PAGE + 8n), asAddress: true, bytes: 8192 } as DebugProtocol.DataBreakpointInfoArguments);
    assert.equal(addrInfo.body.dataId, `${hex(region + 6n * PAGE)}-${hex(region + 9n * PAGE)}`);
    // A mapping name typed by the user: that whole VMA.
    const heap = readFileSync(`/proc/${h.pid()}/maps`, 'utf8').split('\n').find((l) => l.endsWith('[heap]'))!.split(' ')[0];
    const nameInfo = await h.dc.dataBreakpointInfoRequest({ name: '[heap]' });
    assert.equal(nameInfo.body.dataId, heap.split('-').map((x) => '0x' + x.replace(/^0+/, '')).join('-'));
    assert.match(nameInfo.body.description, /^VMA 0x[0-9a-f]+-0x[0-9a-f]+ \[heap\]/);
    const set = await h.dc.setDataBreakpointsRequest({
      breakpoints: [{ dataId: readRange, accessType: 'read' }, { dataId: writeRange, accessType: 'write' }],
    });
    for (const bp of set.body.breakpoints) {
      assert.equal(bp.verified, true);
      assert.match(bp.message ?? '', /Page granularity, 2 pages, no hardware-slot limit/);
    }
    // touch --read only reads: the read watch stops on pages 2 and 3, the write watch never.
    const stops = await stopsUntilExit();
    assert.deepEqual(pagesOf(stops, region), [2, 3]);
    assert.ok(stops.every((s) => s.body.reason === 'data breakpoint' && s.body.hitBreakpointIds?.[0] === set.body.breakpoints[0].id));
  });

  test('a write data breakpoint stops on the first write to each page of its range, nowhere else', async () => {
    await launch(TOUCH, ['--pages', '12', '--sleep-ms', '3000']);
    const region = await touchRegion();
    const writeRange = `${hex(region + 6n * PAGE)}-${hex(region + 8n * PAGE)}`;
    const set = await h.dc.setDataBreakpointsRequest({ breakpoints: [{ dataId: writeRange, accessType: 'write' }] });
    const stops = await stopsUntilExit();
    assert.deepEqual(pagesOf(stops, region), [6, 7]);
    assert.ok(stops.every((s) => s.body.reason === 'data breakpoint' && s.body.hitBreakpointIds?.[0] === set.body.breakpoints[0].id));
    await h.waitOutput(/checksum/);
  });
});
