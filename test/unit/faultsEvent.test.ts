// The helper's `faults` batches (protocol 2): checked decoding, back to fault events, and
// appended to the timeline's columns exactly as the same faults one by one would be.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { encodeTimeline, TimelineBatchBuilder } from '../../server/core/batcher';
import { decodeMessage, FaultEvent, FaultsEvent, faultEvents, faultsOf, parseHex, toHex, unbatched } from '../../server/protocol/messages';

const fault = (seq: number, extra: Partial<FaultEvent> = {}): FaultEvent => ({
  type: 'event', event: 'fault', seq, t: 5_000_000_000 + seq * 61_000, addr: `0x7f12a${(seq % 16).toString(16)}010`,
  page: `0x7f12a${(seq % 16).toString(16)}000`, access: seq % 2 ? 'write' : 'read', kind: 'missing', tid: 4322 + (seq % 2),
  held: false, ioctl: seq % 2 ? 'UFFDIO_COPY' : 'UFFDIO_ZEROPAGE', latencyNs: 8000 + seq, ...extra,
});

/** What the helper writes for these faults (stream.c), as a test's own encoder. */
function columns(faults: FaultEvent[]): FaultsEvent {
  const e: FaultsEvent = { type: 'event', event: 'faults', seq: [], t: [], page: [], off: [], flags: [], tid: [], pid: [], ioctl: [],
    lat: [], ioctls: [] };
  let seq = 0, t = 0, page = 0, tid = 0;
  for (const f of faults) {
    const p = Number(BigInt(f.page) / 4096n);
    e.seq.push(f.seq - seq);
    e.t.push(f.t - t);
    e.page.push(p - page);
    e.tid.push(f.tid - tid);
    [seq, t, page, tid] = [f.seq, f.t, p, f.tid];
    e.off.push(Number(BigInt(f.addr) - BigInt(f.page)));
    const shift = Math.log2(f.pageSize ?? 4096) - 12;
    e.flags.push((f.access === 'write' ? 1 : 0) | ['missing', 'wp', 'minor'].indexOf(f.kind) << 2 | shift << 4);
    e.pid.push(f.pid ?? 0);
    if (!e.ioctls.includes(f.ioctl!)) e.ioctls.push(f.ioctl!);
    e.ioctl.push(e.ioctls.indexOf(f.ioctl!));
    e.lat.push(f.latencyNs!);
  }
  return e;
}

const line = (e: object) => JSON.stringify(e);

test('a faults event decodes back to the faults it carries, in order', () => {
  const faults = [fault(17), fault(18), fault(19, { kind: 'wp', access: 'write', ioctl: 'UFFDIO_WRITEPROTECT' }),
    fault(21, { pid: 4400, tid: 4401 }), fault(20, { t: 4_000_000_000 }), // delayed: seq and t step back
    fault(22, { addr: '0x7f1200123456', page: '0x7f1200000000', pageSize: 2 << 20, kind: 'minor', ioctl: 'UFFDIO_CONTINUE' }),
    fault(23, { tid: 0 })]; // no thread id from the kernel (user-mode-only, no THREAD_ID)
  const m = decodeMessage(line(columns(faults)));
  assert.ok(m.type === 'event' && m.event === 'faults');
  assert.deepEqual(faultsOf(m), faults);
  assert.deepEqual(faultEvents(m), faults);
  assert.deepEqual(unbatched(m), faults);
  const held = fault(30, { held: true, ioctl: undefined, latencyNs: undefined });
  assert.deepEqual(faultEvents(held), [held]);
  assert.deepEqual(unbatched(held), [held]);
});

test('decodeMessage checks every column of a faults event', () => {
  const good = columns([fault(1), fault(2)]);
  assert.doesNotThrow(() => decodeMessage(line(good)));
  const bad: [string, Partial<Record<keyof FaultsEvent, unknown>>, RegExp][] = [
    ['a column of another length', { lat: [1] }, /lat is not an array of 2/],
    ['a missing column', { pid: undefined }, /pid is not an array/],
    ['a string in a column', { off: ['0', 16] }, /bad page or off/],
    ['seq stepping below 1', { seq: [1, -1] }, /bad seq/],
    ['a fraction', { t: [1.5, 2] }, /bad seq, t or tid/],
    ['the held bit', { flags: [2, 0] }, /bad flags/],
    ['kind 3', { flags: [12, 0] }, /bad flags/],
    ['off past its page', { off: [4096, 0] }, /bad page or off/],
    ['a negative page', { page: [-1, 0] }, /bad page or off/],
    ['an ioctl index past ioctls', { ioctl: [0, 2] }, /bad ioctl/],
    ['a negative latency', { lat: [-1, 5] }, /bad ioctl, lat or pid/],
    ['ioctls not strings', { ioctls: [1] }, /ioctls is not an array of strings/],
  ];
  for (const [what, change, why] of bad) {
    assert.throws(() => decodeMessage(line({ ...good, ...change })), why, what);
  }
  assert.ok(faultsOf(decodeMessage(line({ ...good, off: [4095, 0] })) as FaultsEvent)[0].addr.endsWith('fff'));
});

test('batches appended to the timeline give the columns of the same faults added one by one', () => {
  const all = Array.from({ length: 40 }, (_, i) => fault(i + 1, i === 25 ? { pid: 9, tid: 10 } : {}));
  const held = fault(41, { held: true, ioctl: undefined, latencyNs: undefined });
  const oneByOne = encodeTimeline([...all, held, fault(42)]);
  const b = new TimelineBatchBuilder();
  b.add(columns(all.slice(0, 1)));
  b.add(columns(all.slice(1, 30)));
  b.add({ event: 'resolved', seq: 3, t: 1, page: '0x1000', ioctl: 'UFFDIO_COPY', latencyNs: 1 });
  b.add(columns(all.slice(30)));
  b.add(held);
  b.add(columns([fault(42)]));
  const got = b.take()!;
  const want = oneByOne[0];
  assert.deepEqual({ ...got, other: [], otherAt: [] }, { ...want, other: [], otherAt: [] });
  assert.deepEqual(got.otherAt, [30]);
  assert.equal(b.skipped, 0);
});

test('a huge page fault reaches the timeline without its page size bits', () => {
  const f = fault(5, { addr: '0x7f1200123456', page: '0x7f1200000000', pageSize: 2 << 20, access: 'read' });
  const b = new TimelineBatchBuilder();
  b.add(columns([f]));
  const got = b.take()!;
  assert.deepEqual(got.flags, [0]);
  assert.equal(got.off[0], 0x123456);
});

test('toHex is parseHex backwards, on both sides of 2^24 and up to 2^53', () => {
  for (const n of [0, 1, 0xfff, 0xffffff, 0x1000000, 0x1000001, 0x7f12a000, 0x7ffe12345000, 2 ** 53 - 1]) {
    assert.equal(toHex(n), '0x' + n.toString(16));
    assert.equal(parseHex(toHex(n)), n);
  }
});
