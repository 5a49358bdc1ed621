import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Batcher, encodeTimeline, TimelineInput } from '../../server/core/batcher';
import { FaultEvent, TB_HELD, TB_WRITE, TimelineBatch } from '../../server/protocol/messages';

const fault = (seq: number, extra: Partial<FaultEvent> = {}): FaultEvent => ({
  type: 'event', event: 'fault', seq, t: 1_000_000_000 + seq * 1000, addr: `0x7f000000${(seq % 16).toString(16)}123`,
  page: `0x7f000000${(seq % 16).toString(16)}000`, access: seq % 2 ? 'write' : 'read', kind: 'missing', tid: 100 + (seq % 3),
  held: false, ioctl: seq % 2 ? 'UFFDIO_COPY' : 'UFFDIO_ZEROPAGE', latencyNs: 2000 + seq, ...extra,
});

/** The faults of a batch back as protocol fields (as the panel's store reads them). */
function decode(b: TimelineBatch) {
  let seq = 0;
  let t = 0;
  let page = 0;
  let tid = 0;
  return b.seq.map((_, k) => {
    seq += b.seq[k];
    t += b.t[k];
    page += b.page[k];
    tid += b.tid[k];
    return { seq, t, addr: page * 4096 + b.off[k], page: page * 4096, flags: b.flags[k], tid,
      ioctl: b.ioctls[b.ioctl[k]], lat: b.lat[k], pid: b.pid[k] };
  });
}

test('Batcher hands on everything in order, one batch per interval', async () => {
  const batches: TimelineBatch[] = [];
  const b = new Batcher((x) => batches.push(x), 30);
  for (let i = 1; i <= 1000; i++) b.push(fault(i));
  assert.equal(batches.length, 0, 'nothing before the interval');
  await new Promise((r) => setTimeout(r, 80));
  assert.equal(batches.length, 1);
  assert.deepEqual(decode(batches[0]).map((f) => f.seq), Array.from({ length: 1000 }, (_, i) => i + 1));
  b.push(fault(1001));
  b.flush();
  assert.deepEqual(decode(batches[1]).map((f) => f.seq), [1001], 'flush hands on at once');
  b.flush();
  assert.equal(batches.length, 2, 'an empty flush sends nothing');
  b.dispose();
});

test('Batcher hands on a full batch at once, without waiting for the interval', () => {
  const batches: TimelineBatch[] = [];
  const b = new Batcher((x) => batches.push(x), 60_000, 100);
  for (let i = 1; i <= 250; i++) b.push(fault(i));
  assert.deepEqual(batches.map((x) => x.seq.length), [100, 100]);
  b.dispose();
  assert.deepEqual(batches.map((x) => x.seq.length), [100, 100, 50]);
});

test('a batch keeps every fault field exactly, and other events in their place', () => {
  const region: TimelineInput = { type: 'event', event: 'region', action: 'add',
    region: { start: '0x7f0000000000', end: '0x7f0000100000', via: 'mmap' } };
  const events: TimelineInput[] = [
    region,
    fault(1),
    fault(2, { held: true, ioctl: undefined, latencyNs: undefined }),
    { type: 'event', event: 'resolved', seq: 2, t: 1_000_009_000, page: '0x7f0000002000', ioctl: 'UFFDIO_COPY', latencyNs: 7000 },
    fault(3, { kind: 'wp', access: 'write', ioctl: 'UFFDIO_WRITEPROTECT', pid: 4300 }),
    // Huge page: the page is 2 MiB aligned below the address; t may go backwards.
    fault(4, { addr: '0x7f0000234567', page: '0x7f0000200000', pageSize: 2097152, t: 5, kind: 'minor', ioctl: 'UFFDIO_CONTINUE' }),
    { type: 'event', event: 'nc', what: 'remove', t: 1_000_010_000, start: '0x7f0000000000', end: '0x7f0000010000' },
  ];
  const [b] = encodeTimeline(events);
  const f = decode(b);
  assert.deepEqual(f.map((x) => x.seq), [1, 2, 3, 4]);
  assert.deepEqual(f.map((x) => x.t), [1_000_001_000, 1_000_002_000, 1_000_003_000, 5]);
  assert.deepEqual(f.map((x) => x.addr.toString(16)), ['7f0000001123', '7f0000002123', '7f0000003123', '7f0000234567']);
  assert.deepEqual(f.map((x) => x.page.toString(16)), ['7f0000001000', '7f0000002000', '7f0000003000', '7f0000200000']);
  assert.deepEqual(f.map((x) => x.flags), [TB_WRITE, TB_HELD, TB_WRITE | (1 << 2), 2 << 2]);
  assert.deepEqual(f.map((x) => x.ioctl), ['UFFDIO_COPY', '', 'UFFDIO_WRITEPROTECT', 'UFFDIO_CONTINUE']);
  assert.deepEqual(f.map((x) => x.lat), [2001, -1, 2003, 2004]);
  assert.deepEqual(f.map((x) => x.pid), [0, 0, 4300, 0]);
  assert.deepEqual(f.map((x) => x.tid), [101, 102, 100, 101]);
  assert.deepEqual(b.other.map((e) => e.event), ['region', 'resolved', 'nc']);
  assert.deepEqual(b.otherAt, [0, 2, 4], 'each other event knows how many faults came before it');
  assert.ok(b.other.every((e) => !('type' in e)), 'the envelope tag is not sent');
  // Whole batch is plain JSON: what crosses the DAP connection and postMessage.
  assert.deepEqual(JSON.parse(JSON.stringify(b)), b);
});

test('malformed faults are left out and counted, not sent', () => {
  const batches: TimelineBatch[] = [];
  const b = new Batcher((x) => batches.push(x), 60_000);
  b.push(fault(1, { addr: 'zz' }));
  b.push(fault(2, { page: '0x7f0000009000' })); // page above the address
  b.push(fault(6, { page: '0x7f0000005800', addr: '0x7f0000005900' })); // page not 4 KiB aligned
  b.push(fault(3, { t: Number.NaN }));
  b.push(fault(4, { kind: 'odd' as FaultEvent['kind'] }));
  b.push(fault(5));
  b.flush();
  assert.equal(b.skipped, 5);
  assert.deepEqual(decode(batches[0]).map((f) => f.seq), [5]);
});
