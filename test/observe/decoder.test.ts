// The observe channel decoder: records cut at any byte boundary, malformed input named.
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import {
  decodeRecord, encodeControl, encodeResolve, HEADER_SIZE, newIoctlRecord, ObsCmd, readIoctlInto, RecordDecoder, ResolveHowCode,
} from '../../server/protocol/observe';
import { ObserveAnalyzer } from '../../server/core/observe';

function header(type: number, len: number, seq: number, t: number, uffd = 1, pid = 100, tid = 101, fd = 3): Buffer {
  const b = Buffer.alloc(len);
  b.writeUInt16LE(type, 0);
  b.writeUInt16LE(len, 2);
  b.writeUInt32LE(pid, 4);
  b.writeUInt32LE(tid, 8);
  b.writeInt32LE(fd, 12);
  b.writeUInt32LE(uffd, 16);
  b.writeUInt32LE(seq, 20);
  b.writeBigUInt64LE(BigInt(t), 24);
  return b;
}

function uffdRec(seq: number): Buffer {
  const b = header(3, 56, seq, 1000);
  b.writeUInt32LE(1, 32); // syscall
  b.writeInt32LE(3, 40);
  return b;
}

function registerRec(seq: number, start: bigint, len: number): Buffer {
  const b = header(5, 72, seq, 2000);
  b.writeBigUInt64LE(start, 32);
  b.writeBigUInt64LE(BigInt(len), 40);
  b.writeBigUInt64LE(1n, 48);
  return b;
}

function readRec(seq: number, t: number, addrs: bigint[], ptid = 555): Buffer {
  const b = header(7, 32 + 24 + 32 * addrs.length, seq, t);
  b.writeBigInt64LE(BigInt(32 * addrs.length), 32);
  b.writeUInt16LE(1, 44);
  b.writeUInt16LE(addrs.length, 46);
  addrs.forEach((a, i) => {
    const o = 56 + 32 * i;
    b.writeUInt8(0x12, o);
    b.writeBigUInt64LE(1n, o + 8); // write
    b.writeBigUInt64LE(a, o + 16);
    b.writeUInt32LE(ptid, o + 24);
  });
  return b;
}

function copyRec(seq: number, t: number, dst: bigint, len: number, result = 0, errno = 0, done = len): Buffer {
  const b = header(8, 96, seq, t);
  b.writeUInt32LE(3, 32);
  b.writeBigUInt64LE(dst, 40);
  b.writeBigUInt64LE(BigInt(len), 48);
  b.writeBigInt64LE(BigInt(done), 72);
  b.writeInt32LE(result, 80);
  b.writeInt32LE(errno, 84);
  b.writeBigUInt64LE(500n, 88);
  return b;
}

describe('observe channel decoder', () => {
  it('names a library of a newer channel version, and an unknown record type, with what to do', () => {
    const hello = header(1, 32 + 272, 1, 10);
    hello.writeUInt32LE(99, 32);
    assert.throws(() => decodeRecord(hello, 0), /library speaks version 99, this adapter reads versions 1 to \d+: .*rebuild both \(npm run build\)/);
    hello.writeUInt32LE(1, 32);
    assert.equal((decodeRecord(hello, 0) as { version: number }).version, 1, 'an older library is read');
    assert.throws(() => decodeRecord(header(77, 40, 1, 10), 0), /unknown record type 77 .*rebuild both/);
  });

  it('decodes records split at every byte', () => {
    const stream = Buffer.concat([uffdRec(1), registerRec(2, 0x10000n, 0x4000), readRec(3, 5000, [0x10008n, 0x11000n]),
      copyRec(4, 6000, 0x10000n, 4096)]);
    const whole = new RecordDecoder().push(stream);
    assert.deepEqual(whole.map((r) => r.type), ['uffd', 'register', 'read', 'ioctl']);
    const d = new RecordDecoder();
    const bytewise = [];
    for (let i = 0; i < stream.length; i++) bytewise.push(...d.push(stream.subarray(i, i + 1)));
    assert.deepEqual(bytewise, whole);
    assert.equal(d.leftover, 0);
    const read = whole[2];
    assert.ok(read.type === 'read');
    assert.deepEqual(read.msgs[0], { event: 'pagefault', addr: '0x10008', flags: 1, ptid: 555, access: 'write', kind: 'missing' });
  });

  it('names what is wrong with a malformed stream', () => {
    assert.throws(() => new RecordDecoder().push(Buffer.from([7, 0, 4, 0])), /bad record length 4/);
    assert.throws(() => decodeRecord(header(99, 32, 1, 0)), /unknown record type 99/);
    const short = readRec(1, 0, [0x1000n]);
    short.writeUInt16LE(3, 46);
    assert.throws(() => decodeRecord(short), /says 3 messages/);
  });

  it('encodes control commands as 16 bytes', () => {
    const b = encodeControl(ObsCmd.Continue, 0, 42);
    assert.equal(b.length, 16);
    assert.equal(b.readUInt32LE(0), 2);
    assert.equal(b.readBigUInt64LE(8), 42n);
  });

  it('encodes the resolve command with its 24-byte extension, and decodes its answer', () => {
    const c = encodeResolve(7, 42, 0x7f0000001000n, 8192, ResolveHowCode.Copy, 0x1aa);
    assert.equal(c.length, 40);
    assert.deepEqual([c.readUInt32LE(0), c.readUInt32LE(4), Number(c.readBigUInt64LE(8))], [4, 7, 42]);
    assert.deepEqual([c.readBigUInt64LE(16), c.readBigUInt64LE(24), c.readUInt32LE(32), c.readUInt32LE(36)], [0x7f0000001000n, 8192n, 1, 0xaa]);
    const b = Buffer.alloc(HEADER_SIZE + 48);
    b.writeUInt16LE(13, 0);
    b.writeUInt16LE(b.length, 2);
    b.writeInt32LE(5, 12);
    b.writeUInt32LE(7, HEADER_SIZE);
    b.writeUInt32LE(3, HEADER_SIZE + 4);
    b.writeBigUInt64LE(0x7f0000001000n, HEADER_SIZE + 8);
    b.writeBigUInt64LE(8192n, HEADER_SIZE + 16);
    b.writeUInt32LE(42, HEADER_SIZE + 24);
    b.writeBigInt64LE(-17n, HEADER_SIZE + 32);
    b.writeInt32LE(-1, HEADER_SIZE + 40);
    b.writeInt32LE(17, HEADER_SIZE + 44);
    const r = decodeRecord(b);
    assert.equal(r.type, 'resolve');
    assert.deepEqual(r.type === 'resolve' && [r.req, r.op, r.start, r.len, r.stopSeq, r.done, r.result, r.errno, r.fd],
      [7, 'COPY', '0x7f0000001000', 8192, 42, -17, -1, 'EEXIST', 5]);
  });
});

/** A read record of non-fault messages: [event code, a, b, c] each (REMAP 0x14: from, to, len; REMOVE 0x15: start, end). */
function eventRec(seq: number, t: number, msgs: [number, bigint, bigint, bigint][]): Buffer {
  const b = header(7, 32 + 24 + 32 * msgs.length, seq, t);
  b.writeBigInt64LE(BigInt(32 * msgs.length), 32);
  b.writeUInt16LE(1, 44);
  b.writeUInt16LE(msgs.length, 46);
  msgs.forEach(([code, x, y, z], i) => {
    const o = 56 + 32 * i;
    b.writeUInt8(code, o);
    b.writeBigUInt64LE(x, o + 8);
    b.writeBigUInt64LE(y, o + 16);
    b.writeBigUInt64LE(z, o + 24);
  });
  return b;
}

describe('observe analyzer', () => {
  it('derives the same from ioctl records read in place into one object as from decoded ones', () => {
    const stream = Buffer.concat([uffdRec(1), registerRec(2, 0x7f0000010000n, 0x4000),
      readRec(3, 10_000, [0x7f0000010008n, 0x7f0000011000n]), copyRec(4, 12_000, 0x7f0000012000n, 4096),
      copyRec(5, 13_000, 0x7f0000010000n, 8192), copyRec(6, 14_000, 0x7f0000010000n, 4096, -1, 17, -17),
      copyRec(7, 15_000, 0x7f0000013000n, 4096, -1, 11, 0), copyRec(8, 16_000, 0x7f0000013000n, 4096)]);
    const run = (inPlace: boolean) => {
      const a = new ObserveAnalyzer();
      const events: unknown[] = [];
      a.on('event', (e) => events.push(e));
      const one = newIoctlRecord();
      // Cut at every byte: records are whole when they reach either path.
      const d = new RecordDecoder();
      for (let i = 0; i < stream.length; i++) {
        d.each(stream.subarray(i, i + 1), (r) => a.feed(r), inPlace ? (b, at) => {
          if (b.readUInt16LE(at) !== 8) return false;
          a.feedIoctl(one, readIoctlInto(b, at, one, false));
          return true;
        } : undefined);
      }
      return { events, summary: a.summary(1_000_000) };
    };
    assert.deepEqual(run(true), run(false));
  });

  it('forgets pages removed, follows pages remapped (placed again: not twice)', () => {
    const a = new ObserveAnalyzer();
    const base = 0x7f0000000000n; // above 2^32: the page sets must keep such addresses exact
    const P = (k: number) => base + BigInt(k) * 4096n;
    const recs = [
      uffdRec(1), registerRec(2, base, 64 * 4096),
      copyRec(3, 1000, P(0), 8 * 4096), // pages 0-7 pushed
      eventRec(4, 2000, [[0x15, P(2), P(4), 0n]]), // MADV_DONTNEED of pages 2-3
      copyRec(5, 3000, P(2), 2 * 4096), // placed again after the remove: not twice
      eventRec(6, 4000, [[0x14, P(4), P(40), 2n * 4096n]]), // mremap of pages 4-5 to 40-41
      copyRec(7, 5000, P(4), 4096), // the old place is empty: not twice
      copyRec(8, 6000, P(41), 4096), // the new place was placed: twice
    ];
    for (const r of new RecordDecoder().push(Buffer.concat(recs))) a.feed(r);
    const s = a.summary(0);
    assert.equal(s.pushed, 12);
    assert.equal(s.events, 2);
    assert.deepEqual(s.resolvedTwice, ['0x' + P(41).toString(16)]);
  });


  it('derives latency, pushes, duplicates, retries, stuck and unregistered faults', () => {
    const a = new ObserveAnalyzer();
    const events: string[] = [];
    a.on('event', (e) => events.push(e.event));
    const recs = [
      uffdRec(1), registerRec(2, 0x10000n, 0x4000),
      readRec(3, 10_000, [0x10008n, 0x10010n, 0x20000n]), // two faults on page 0x10000, one outside
      copyRec(4, 12_000, 0x11000n, 4096), // a push: nobody waits on 0x11000
      copyRec(5, 13_000, 0x10000n, 4096), // resolves both faults on 0x10000
      copyRec(6, 14_000, 0x10000n, 4096, -1, 17, -17), // EEXIST
      copyRec(7, 15_000, 0x12000n, 4096, -1, 11, 0), // EAGAIN
      copyRec(8, 16_000, 0x12000n, 4096), // the retry
    ];
    for (const r of new RecordDecoder().push(Buffer.concat(recs))) a.feed(r);
    const s = a.summary(1_000_000_000);
    assert.equal(s.faults, 3);
    assert.equal(s.resolved, 2);
    assert.equal(s.unregistered, 1);
    assert.equal(s.pushed, 2, '0x11000 and the retried 0x12000');
    assert.equal(s.requested, 1);
    assert.equal(s.duplicates, 1);
    assert.deepEqual(s.duplicatePages, ['0x10000']);
    assert.deepEqual(s.resolvedTwice, ['0x10000']);
    assert.equal(s.retries, 1);
    assert.equal(s.stuck.length, 1);
    assert.equal(s.stuck[0].page, '0x20000');
    assert.equal(s.perThread[0].blockedNs, 2 * (13_000 + 500 - 10_000));
    assert.deepEqual(s.histogram, [{ loUs: 2, hiUs: 4, count: 2 }]);
    assert.equal(a.checkStuck(1_000_000_000, 100).length, 1);
    assert.equal(a.checkStuck(1_000_000_000, 100).length, 0, 'stuck is reported once');
    assert.ok(events.includes('push') && events.includes('duplicate') && events.includes('retry') && events.includes('stuck'));
  });
});
