// Runs of ioctls (docs/protocol.md, `ioctl run`): the library merges consecutive successful
// ioctls of one thread into one record; decoded, a run is exactly the ioctl records it stands
// for, on the path that keeps records and on the in-place path alike.
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { describe, it } from 'node:test';
import type { Readable } from 'node:stream';
import {
  decodeRecord, decodeRun, hexOf, IOCTL, IOCTL_RUN, newIoctlRecord, ObsIoctl, ObsRecord, readRunInto, readRunIoctlInto,
  RecordDecoder,
} from '../../server/protocol/observe';
import { ObserveAnalyzer, ObserveEvent, ObserveSession } from '../../server/core/observe';
import { withTimeout } from '../support/waits';
import { handlerCounts, LIB, observe, POSTCOPY } from './support';

const COPY = 3;
const ZEROPAGE = 4;
const PAGE = 4096;

function header(type: number, len: number, seq: number, t: bigint, tid = 101): Buffer {
  const b = Buffer.alloc(len);
  b.writeUInt16LE(type, 0);
  b.writeUInt16LE(len, 2);
  b.writeUInt32LE(100, 4);
  b.writeUInt32LE(tid, 8);
  b.writeInt32LE(3, 12);
  b.writeUInt32LE(1, 16);
  b.writeUInt32LE(seq, 20);
  b.writeBigUInt64LE(t, 24);
  return b;
}

/** One ioctl as the library saw it. */
interface Io { seq: number; t: bigint; op: number; start: bigint; len: number; mode: number; src: bigint; dur: number; result?: number; errno?: number; done?: number }

/** Its `ioctl` record (type 8). */
function ioctlRec(x: Io): Buffer {
  const b = header(IOCTL, 96, x.seq, x.t);
  b.writeUInt32LE(x.op, 32);
  b.writeBigUInt64LE(x.start, 40);
  b.writeBigUInt64LE(BigInt(x.len), 48);
  b.writeBigUInt64LE(BigInt(x.mode), 56);
  b.writeBigUInt64LE(x.src, 64);
  b.writeBigInt64LE(BigInt(x.done ?? x.len), 72);
  b.writeInt32LE(x.result ?? 0, 80);
  b.writeInt32LE(x.errno ?? 0, 84);
  b.writeBigUInt64LE(BigInt(x.dur), 88);
  return b;
}

/** The `ioctl run` record (type 14) of ioctls that continue each other, laid out as docs/protocol.md says. */
function runRec(xs: Io[]): Buffer {
  const b = header(IOCTL_RUN, 80 + 8 * xs.length, xs[0].seq, xs[0].t);
  b.writeUInt32LE(xs[0].op, 32);
  b.writeUInt32LE(xs.length, 36);
  b.writeBigUInt64LE(xs[0].start, 40);
  b.writeBigUInt64LE(BigInt(xs[0].len), 48);
  b.writeBigUInt64LE(BigInt(xs[0].mode), 56);
  b.writeBigUInt64LE(xs[0].src, 64);
  b.writeBigInt64LE(xs.length > 1 ? xs[1].src - xs[0].src : 0n, 72);
  xs.forEach((x, i) => {
    b.writeUInt32LE(Number(x.t - xs[0].t), 80 + 8 * i);
    b.writeUInt32LE(x.dur, 84 + 8 * i);
  });
  return b;
}

/** n ioctls of a run: consecutive pages, seqs and src step as given, t and durations all different. */
function run(n: number, first: Io, srcStep: bigint): Io[] {
  return Array.from({ length: n }, (_, i) => ({ ...first, seq: first.seq + i, t: first.t + BigInt(i * 1500 + i * i * 7),
    start: first.start + BigInt(i * first.len), src: first.src + BigInt(i) * srcStep, dur: first.dur + i * 13 }));
}

function uffdRec(seq: number): Buffer {
  const b = header(3, 56, seq, 1000n);
  b.writeUInt32LE(1, 32);
  b.writeInt32LE(3, 40);
  return b;
}

function registerRec(seq: number, start: bigint, len: number): Buffer {
  const b = header(5, 72, seq, 2000n);
  b.writeBigUInt64LE(start, 32);
  b.writeBigUInt64LE(BigInt(len), 40);
  b.writeBigUInt64LE(1n, 48);
  return b;
}

function readRec(seq: number, t: bigint, addrs: bigint[]): Buffer {
  const b = header(7, 56 + 32 * addrs.length, seq, t);
  b.writeBigInt64LE(BigInt(32 * addrs.length), 32);
  b.writeUInt16LE(1, 44);
  b.writeUInt16LE(addrs.length, 46);
  addrs.forEach((a, i) => {
    b.writeUInt8(0x12, 56 + 32 * i); // UFFD_EVENT_PAGEFAULT, flags 0: a read fault
    b.writeBigUInt64LE(a, 72 + 32 * i);
    b.writeUInt32LE(555, 80 + 32 * i);
  });
  return b;
}

const base = 0x7f1234560000n; // above 2^32: hex formatting of the high part counts
const P = (k: number) => base + BigInt(k * PAGE);
const SRC = 0x55aa00001000n;

// Copies of one buffer (src step 0, as demo/bin/postcopy pushes), a descending src, ZEROPAGE
// with DONTWAKE, and t whose low 32 bits carry into the high ones within the run.
const copies = run(5, { seq: 4, t: 0x5_ffff_f000n, op: COPY, start: P(0), len: PAGE, mode: 0, src: SRC, dur: 900 }, 0n);
const down = run(3, { seq: 12, t: 0x6_0000_0000n, op: COPY, start: P(8), len: 2 * PAGE, mode: 0, src: SRC + 0x100000n, dur: 50 }, -2n * 4096n);
const zeros = run(4, { seq: 16, t: 0x7_0000_0000n, op: ZEROPAGE, start: P(20), len: PAGE, mode: 1, src: 0n, dur: 4_000_000_000 }, 0n);

describe('observe: ioctl runs, byte by byte', () => {
  it('decodes a run to exactly the ioctl records it stands for, cut at any byte', () => {
    for (const xs of [copies, down, zeros]) {
      const separate = new RecordDecoder().push(Buffer.concat(xs.map(ioctlRec)));
      const merged = runRec(xs);
      assert.deepEqual(new RecordDecoder().push(merged), separate);
      assert.deepEqual(decodeRun(merged), separate);
      const d = new RecordDecoder();
      const bytewise: ObsRecord[] = [];
      for (let i = 0; i < merged.length; i++) d.each(merged.subarray(i, i + 1), (r) => bytewise.push(r));
      assert.deepEqual(bytewise, separate);
      assert.equal(d.leftover, 0);
    }
    // Spelled out once: what the first run's third ioctl must be.
    assert.deepEqual(decodeRun(runRec(copies))[2], {
      pid: 100, tid: 101, fd: 3, uffd: 1, seq: 6, t: 0x5_ffff_f000 + 3028, type: 'ioctl', op: 'COPY', start: hexOf(Number(P(2))),
      len: PAGE, mode: 0, src: hexOf(Number(SRC)), done: PAGE, result: 0, errno: null, durNs: 926, stopped: false,
    });
  });

  it('reads a run in place into one object, field by field as the separate records', () => {
    for (const xs of [copies, down, zeros]) {
      const separate = new RecordDecoder().push(Buffer.concat(xs.map(ioctlRec))) as ObsIoctl[];
      const merged = runRec(xs);
      const one = newIoctlRecord();
      const n = readRunInto(merged, 0, one);
      assert.equal(n, xs.length);
      for (let i = 0; i < n; i++) {
        // The analyzer's path: no src, no start string (it formats the number when an event needs it).
        const start = readRunIoctlInto(merged, 0, i, one, false, false);
        assert.equal(one.start, '');
        assert.deepEqual({ ...one, start: hexOf(start), src: separate[i].src }, separate[i]);
        readRunIoctlInto(merged, 0, i, one);
        assert.deepEqual({ ...one }, separate[i]);
      }
    }
  });

  it('derives the same events and summary from runs, in place or decoded, as from separate records', () => {
    const eagain: Io = { seq: 20, t: 0x7_1000_0000n, op: COPY, start: P(40), len: PAGE, mode: 0, src: SRC, dur: 10, result: -1, errno: 11, done: 0 };
    const retried = run(3, { seq: 21, t: 0x7_2000_0000n, op: COPY, start: P(40), len: PAGE, mode: 0, src: SRC, dur: 20 }, 4096n);
    const again = run(2, { seq: 24, t: 0x7_3000_0000n, op: COPY, start: P(1), len: PAGE, mode: 0, src: SRC, dur: 30 }, 0n); // placed twice
    const head = [uffdRec(1), registerRec(2, base, 64 * PAGE), readRec(3, 0x5_0000_0000n, [P(1) + 8n, P(9), P(22) + 16n])];
    const ioctls = [copies, down, zeros, [eagain], retried, again];
    const separate = Buffer.concat([...head, ...ioctls.flat().map(ioctlRec)]);
    const merged = Buffer.concat([...head, ...ioctls.map((xs) => (xs.length > 1 ? runRec(xs) : ioctlRec(xs[0])))]);
    const analyse = (stream: Buffer, inPlace: boolean) => {
      const a = new ObserveAnalyzer();
      const events: ObserveEvent[] = [];
      a.on('event', (e) => events.push(e));
      let records = 0;
      const d = new RecordDecoder();
      for (let i = 0; i < stream.length; i += 7) {
        d.each(stream.subarray(i, i + 7), (r) => { records++; a.feed(r); }, inPlace ? (b, at, len) => {
          const n = a.feedInPlace(b, at, len);
          records += n;
          return n > 0;
        } : undefined);
      }
      return { events, summary: a.summary(0x8_0000_0000), records };
    };
    const want = analyse(separate, false);
    assert.equal(want.records, 3 + 18);
    assert.ok(want.events.some((e) => e.event === 'retry'), 'the EAGAIN retry');
    assert.equal(want.summary.resolvedTwice.length, 2);
    assert.equal(want.summary.resolved, 2, 'the fault on a page placed with DONTWAKE waits on');
    assert.deepEqual(analyse(merged, false), want);
    assert.deepEqual(analyse(merged, true), want);
    assert.deepEqual(analyse(separate, true), want);
  });

  it('names what is wrong with a malformed run', () => {
    const bad = runRec(copies);
    bad.writeUInt32LE(7, 36);
    assert.throws(() => new RecordDecoder().push(bad), /ioctl run record of 120 bytes says 7 ioctls/);
    const op = runRec(copies);
    op.writeUInt32LE(42, 32);
    assert.throws(() => readRunInto(op, 0, newIoctlRecord()), /unknown ioctl number 42/);
    assert.throws(() => decodeRecord(runRec(copies)), /decodeRun/);
  });
});

/** Runs postcopy with the library, the channel read raw (a Unix socket, as ObserveSession makes). */
async function rawChannel(args: string[]): Promise<{ stream: Buffer; stderr: string; code: number | null }> {
  const p = spawn(POSTCOPY, args, { env: { ...process.env, LD_PRELOAD: LIB, UFFD_OBSERVE_FD: '3' },
    stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
  const chunks: Buffer[] = [];
  let stderr = '';
  p.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  const chan = p.stdio[3] as Readable;
  chan.on('data', (d: Buffer) => chunks.push(d));
  const ended = new Promise<void>((r) => chan.once('close', r));
  const code = await withTimeout(new Promise<number | null>((r) => p.once('exit', r)), 60_000, 'postcopy to end');
  await withTimeout(ended, 5000, 'the channel to close');
  return { stream: Buffer.concat(chunks), stderr, code };
}

/** The record types on the channel, in order, and each record's offset. */
function walk(stream: Buffer): { type: number; at: number }[] {
  const out: { type: number; at: number }[] = [];
  for (let at = 0; at < stream.length; at += stream.readUInt16LE(at + 2)) out.push({ type: stream.readUInt16LE(at), at });
  return out;
}

/** Every pid's records carry each seq from 1 to their number exactly once: none lost, none made up. */
function assertSeqsComplete(records: ObsRecord[]): void {
  const byPid = new Map<number, number[]>();
  for (const r of records) {
    const l = byPid.get(r.pid);
    if (l) l.push(r.seq); else byPid.set(r.pid, [r.seq]);
  }
  for (const [pid, seqs] of byPid) {
    seqs.sort((x, y) => x - y);
    assert.deepEqual(seqs, Array.from({ length: seqs.length }, (_, i) => i + 1), `pid ${pid}: seqs 1..${seqs.length}`);
  }
}

describe('observe: ioctl runs on the real kernel', { timeout: 240_000 }, () => {
  const PUSH = ['--pages', '4096', '--threads', '2', '--latency-us', '0'];

  it('merges background pushes into runs; a failed ioctl stays a record of its own', async () => {
    const { stream, stderr, code } = await rawChannel([...PUSH, '--twice', '100']);
    assert.equal(code, 0, stderr);
    const c = handlerCounts(stderr);
    const recs = walk(stream);
    const runs = recs.filter((x) => x.type === IOCTL_RUN);
    assert.ok(runs.length > 0, 'runs on the channel');
    let merged = 0;
    for (const { at } of runs) {
      const n = stream.readUInt32LE(at + 36);
      assert.ok(n >= 2 && n <= 502, `a run of ${n}`);
      assert.equal(stream.readUInt16LE(at + 2), 80 + 8 * n);
      merged += n;
    }
    const failed = recs.filter((x) => x.type === IOCTL && stream.readInt32LE(x.at + 80) !== 0);
    assert.equal(failed.length, 1, 'the EEXIST, not merged');
    assert.equal(stream.readInt32LE(failed[0].at + 84), 17);
    // Decoded, the records the handler counts, each seq once.
    const records = new RecordDecoder().push(stream);
    assertSeqsComplete(records);
    const ioctls = records.filter((r) => r.type === 'ioctl');
    assert.equal(ioctls.length, c.copies + c.eexist);
    assert.ok(merged > ioctls.length / 2, `${merged} of ${ioctls.length} ioctls in runs`);
    // Both of the launcher's paths derive the same, and what the demo counts.
    const analyse = (inPlace: boolean) => {
      const a = new ObserveAnalyzer();
      const events: ObserveEvent[] = [];
      a.on('event', (e) => events.push(e));
      new RecordDecoder().each(stream, (r) => a.feed(r), inPlace ? (b, at, len) => a.feedInPlace(b, at, len) > 0 : undefined);
      return { events, summary: a.summary(0) };
    };
    const decoded = analyse(false);
    assert.deepEqual(analyse(true), decoded);
    const s = decoded.summary;
    assert.equal(s.ioctls.COPY?.ok, c.copies);
    assert.equal(s.ioctls.COPY?.failed, 1);
    assert.equal(s.duplicates, 1);
    assert.equal(s.requested, c.placed_fault);
    assert.equal(s.pushed, c.placed_push);
    assert.equal(s.faults, c.faults);
    assert.equal(s.resolved, c.faults);
  });

  it('counts what the push demo counts, with records kept (one per ioctl)', async () => {
    const r = await observe({ program: POSTCOPY, args: PUSH });
    assert.equal(r.result.code, 0, r.stderr);
    assert.match(r.stdout, /check ok pages=4096/);
    const c = handlerCounts(r.stderr);
    const s = r.result.summary;
    assert.equal(s.ioctls.COPY?.ok, c.copies);
    assert.equal(s.pushed, c.placed_push);
    assert.equal(s.requested, c.placed_fault);
    assert.match(r.stderr, new RegExp(`pages requested ${s.requested} pushed ${s.pushed}\\n`));
    assert.equal(s.faults, c.faults);
    assert.equal(s.reads, c.reads);
    assert.equal(s.resolved, c.faults);
    assert.equal(r.session.records, r.records.length);
    assert.equal(r.records.filter((x) => x.type === 'ioctl').length, c.copies);
    assertSeqsComplete(r.records);
  });

  it('counts what the push demo counts, read in place (no record listener)', async () => {
    const session = new ObserveSession();
    let stderr = '';
    let pushes = 0;
    let failure: Error | null = null;
    session.on('output', (k, d) => { if (k === 'stderr') stderr += d; });
    session.on('event', (e) => { if (e.event === 'push') pushes += e.pages; });
    session.on('error', (e) => { failure = e; });
    await session.start({ program: POSTCOPY, args: PUSH, stuckAfterMs: 0 });
    const result = await withTimeout(session.wait(), 60_000, 'postcopy to end');
    assert.equal(failure, null);
    assert.equal(result.code, 0, stderr);
    const c = handlerCounts(stderr);
    const s = result.summary;
    assert.equal(s.ioctls.COPY?.ok, c.copies);
    assert.equal(s.pushed, c.placed_push);
    assert.equal(pushes, c.placed_push, 'push events name every pushed page');
    assert.equal(s.requested, c.placed_fault);
    assert.equal(s.faults, c.faults);
    assert.equal(s.reads, c.reads);
    assert.equal(s.resolved, c.faults);
    // Every ioctl counts as a record: at least the copies and the reads, plus hello, uffd, api, register.
    assert.ok(session.records >= c.copies + c.reads + 4, `${session.records} records`);
  });
});
