// Every way to resolve a held fault, every documented error, and the policy's read-ahead,
// delays and hold conditions, on the real kernel.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { HelperError } from '../../server/core/helperClient';
import { FaultEvent } from '../../server/protocol/messages';
import { assertSum, hex, inRange, KINDS, launch, PAGE, stopAll, Target, TOUCH } from './kindsHarness';

const tmp = mkdtempSync(path.join(tmpdir(), 'uffd-resolve-'));
after(async () => {
  await stopAll();
  rmSync(tmp, { recursive: true, force: true });
});

/** kinds in `mode`, holding the faults of its own pages only. */
async function heldRun(args: string[], kinds: { missing?: boolean; wp?: boolean; minor?: boolean } = { missing: true }):
  Promise<{ t: Target; addr: bigint; pages: number }> {
  const t = await launch(KINDS, args);
  const r = await t.ready();
  const range = { start: hex(r.addr), end: hex(r.addr + BigInt(r.pages) * PAGE) };
  if (args.includes('anon-wp')) await t.c.request('protect', { ...range, on: true });
  if (args.includes('memfd-minor')) await t.c.request('register', { ...range, modes: ['minor'] });
  await t.c.request('policy', { hold: kinds, holdRange: [range] });
  t.go();
  return { t, addr: r.addr, pages: r.pages };
}

const pageOf = (addr: bigint, i: number) => (f: FaultEvent) => BigInt(f.page) === addr + BigInt(i) * PAGE;

function isErr(code: string, re?: RegExp): (e: HelperError) => boolean {
  return (e) => {
    assert.equal(e.code, code, `${e.code}: ${e.message}`);
    if (re) assert.match(e.message, re);
    return true;
  };
}

describe('resolving held faults on the real kernel', { timeout: 120_000 }, () => {
  test('copy from a pattern, from base64 bytes, from a file; zero', async () => {
    const { t, addr } = await heldRun(['--mode', 'anon-missing', '--pages', '4']);
    const bytes = Buffer.alloc(4096);
    for (let i = 0; i < 4096; i++) bytes[i] = i % 251;
    const file = path.join(tmp, 'src');
    writeFileSync(file, Buffer.concat([Buffer.alloc(8192, 0x11), Buffer.alloc(4096, 0x77)]));
    let f = await t.heldFault(pageOf(addr, 0));
    const r0 = await t.c.request('resolve', { seq: f.seq, how: 'copy', pattern: 0xab });
    assert.equal(r0.ioctl, 'UFFDIO_COPY');
    assert.deepEqual(r0.woken, [f.seq]);
    f = await t.heldFault(pageOf(addr, 1));
    await t.c.request('resolve', { seq: f.seq, how: 'copy', bytes: bytes.toString('base64') });
    f = await t.heldFault(pageOf(addr, 2));
    await t.c.request('resolve', { seq: f.seq, how: 'copy', file, offset: 8192 });
    f = await t.heldFault(pageOf(addr, 3));
    assert.equal((await t.c.request('resolve', { seq: f.seq, how: 'zero' })).ioctl, 'UFFDIO_ZEROPAGE');
    assert.deepEqual(await t.exited(), { code: 0, signal: null });
    const rep = await t.report();
    assertSum(rep.sums[0], 0xab, 'page 0 (pattern)');
    assert.equal(rep.sums[1], BigInt(bytes.reduce((a, b) => a + b, 0)), 'page 1 holds the bytes');
    assertSum(rep.sums[2], 0x77, 'page 2 (file at offset 8192)');
    assert.equal(rep.sums[3], 0n, 'page 3 (zero page)');
  });

  test('a range: pages N resolves the faulting page and the next N-1 with one request', async () => {
    const { t, addr } = await heldRun(['--mode', 'anon-missing', '--pages', '6']);
    const f = await t.heldFault(pageOf(addr, 0));
    const r = await t.c.request('resolve', { seq: f.seq, how: 'copy', pattern: 0x5c, pages: 4 });
    assert.equal(r.pages, 4);
    assert.deepEqual(r.skipped, []);
    const g = await t.heldFault(pageOf(addr, 4), 'the fault after the range');
    await t.c.request('resolve', { seq: g.seq, how: 'copy', pattern: 1, pages: 2 });
    await t.exited();
    const rep = await t.report();
    for (let i = 0; i < 4; i++) assertSum(rep.sums[i], 0x5c, `page ${i}`);
    assert.equal(t.faults.filter(inRange(addr, 6)).length, 2, 'two faults for six pages');
  });

  test('continue resolves a minor fault with the page-cache page', async () => {
    const { t, addr } = await heldRun(['--mode', 'memfd-minor', '--pages', '2'], { minor: true });
    const f = await t.heldFault(pageOf(addr, 0));
    assert.equal(f.kind, 'minor');
    assert.equal((await t.c.request('resolve', { seq: f.seq, how: 'continue', pages: 2 })).ioctl, 'UFFDIO_CONTINUE');
    await t.exited();
    const rep = await t.report();
    assertSum(rep.sums[0], 0x20, 'page 0');
    assertSum(rep.sums[1], 0x21, 'page 1');
  });

  test('unprotect with keep returns the content from before the write', async () => {
    const { t, addr } = await heldRun(['--mode', 'anon-wp', '--pages', '3'], { wp: true });
    for (let i = 0; i < 3; i++) {
      const f = await t.heldFault(pageOf(addr, i));
      assert.equal(f.kind, 'wp');
      assert.equal(f.access, 'write');
      const r = await t.c.request('resolve', { seq: f.seq, how: 'unprotect', keep: true });
      assert.equal(r.ioctl, 'UFFDIO_WRITEPROTECT');
      const before = Buffer.from(r.before!, 'base64');
      assert.equal(before.length, 4096);
      assert.ok(before.every((b) => b === 0x10 + i), `page ${i} was 0x${(0x10 + i).toString(16)} before the write`);
    }
    await t.exited();
    assertSum((await t.report()).sums[2], 0x82, 'the write happened after');
  });

  test('move: issued inside the program, the source page moves to the faulting one; ENOENT, EINVAL, EEXIST explained', async () => {
    // UFFDIO_MOVE checks ctx->mm == current->mm: the helper lends the userfaultfd to a stopped
    // thread of the program, which issues it.
    const { t, addr } = await heldRun(['--mode', 'anon-missing', '--pages', '3', '--prefill', '1']);
    const f = await t.heldFault(pageOf(addr, 1));
    await assert.rejects(t.c.request('resolve', { seq: f.seq, how: 'move', from: hex(addr + 1n) }), isErr('EINVAL', /unaligned.*stays held/));
    await assert.rejects(t.c.request('resolve', { seq: f.seq, how: 'move', from: hex(addr + 2n * PAGE) }), isErr('ENOENT', /source page is not mapped/));
    await assert.rejects(t.c.request('resolve', { seq: f.seq, how: 'move' }), isErr('EPROTO', /from/));
    // Still held: the move works.
    const r = await t.c.request('resolve', { seq: f.seq, how: 'move', from: hex(addr) });
    assert.deepEqual(r.woken, [f.seq]);
    assert.equal(r.ioctl, 'UFFDIO_MOVE');
    await t.c.request('policy', { hold: { missing: false } });
    await t.c.request('resolveAll', {});
    await t.exited();
    const rep = await t.report();
    assertSum(rep.sums[1], 0x40, 'page 1 has what page 0 held');
    assertSum(rep.sums[0], 0, 'page 0 moved away: missing again, read back as zeros');

    const w = await heldRun(['--mode', 'anon-wp', '--pages', '2'], { wp: true });
    const g = await w.t.heldFault(pageOf(w.addr, 0));
    await assert.rejects(w.t.c.request('resolve', { seq: g.seq, how: 'move', from: hex(w.addr + PAGE) }),
      isErr('EEXIST', /already mapped.*never replaces/));
    assert.deepEqual((await w.t.c.request('resolve', { seq: g.seq })).woken, [g.seq]);
    await w.t.c.request('policy', { hold: { wp: false } });
    await w.t.c.request('resolveAll', {});
    assert.equal((await w.t.exited()).code, 0);
  });

  test('poison: the program gets SIGBUS at the page when it touches it', async () => {
    const { t, addr } = await heldRun(['--mode', 'anon-missing', '--pages', '2']);
    const f = await t.heldFault(pageOf(addr, 0));
    assert.equal((await t.c.request('resolve', { seq: f.seq, how: 'poison' })).ioctl, 'UFFDIO_POISON');
    assert.deepEqual(await t.exited(), { code: 3, signal: null });
    const m = /sigbus (0x[0-9a-f]+)/.exec(t.stdout);
    assert.ok(m, t.stdout);
    assert.equal(BigInt(m[1]), addr);
  });

  test('wake: the thread retries and the same page faults again with a higher seq', async () => {
    const { t, addr } = await heldRun(['--mode', 'anon-missing', '--pages', '1']);
    const f = await t.heldFault(pageOf(addr, 0));
    const r = await t.c.request('resolve', { seq: f.seq, how: 'wake' });
    assert.equal(r.ioctl, 'UFFDIO_WAKE');
    const g = await t.heldFault((x) => pageOf(addr, 0)(x) && x.seq > f.seq, 'the fault again');
    assert.equal(g.tid, f.tid);
    await t.c.request('resolve', { seq: g.seq });
    assert.equal((await t.exited()).code, 0);
  });

  test('errors: EEXIST, EINVAL, ESTATE, EPROTO, ESRCH', async () => {
    const { t, addr } = await heldRun(['--mode', 'anon-wp', '--pages', '1'], { wp: true });
    const f = await t.heldFault(pageOf(addr, 0));
    await assert.rejects(t.c.request('resolve', { seq: f.seq, how: 'copy', pattern: 1 }), isErr('EEXIST', /already mapped.*stays held/));
    await assert.rejects(t.c.request('resolve', { seq: f.seq, how: 'copy' }), isErr('EPROTO', /exactly one source/));
    await assert.rejects(t.c.request('resolve', { seq: f.seq, how: 'copy', bytes: 'AAAA' }), isErr('EPROTO', /4096/));
    await assert.rejects(t.c.request('resolve', { seq: f.seq, how: 'copy', file: path.join(tmp, 'nope') }), isErr('ENOENT', /nope/));
    await assert.rejects(t.c.request('resolve', { seq: f.seq, how: 'sideways' as 'zero' }), isErr('EPROTO'));
    await assert.rejects(t.c.request('resolve', { seq: f.seq + 1000 }), isErr('ESTATE'));
    await assert.rejects(t.c.request('protect', { start: hex(addr + 1n), end: hex(addr + PAGE), on: true }), isErr('EINVAL', /unaligned/));
    await t.c.request('resolve', { seq: f.seq, how: 'unprotect' });
    await t.exited();
    await assert.rejects(t.c.request('protect', { start: hex(addr), end: hex(addr + PAGE), on: true }), isErr('ESRCH', /gone/));
    await assert.rejects(t.c.request('resolve', { seq: f.seq }), isErr('ESTATE'));
  });

  test('readAhead: N pages per missing fault, N times fewer faults', async () => {
    const t = await launch(TOUCH, ['--pages', '256', '--pattern', 'seq'], { readAhead: 8 });
    await t.exited();
    const m = /region (0x[0-9a-f]+) pages (\d+)/.exec(t.stdout);
    assert.ok(m, t.stdout);
    const mine = t.faults.filter(inRange(BigInt(m[1]), 256));
    assert.equal(mine.length, 32, '256 pages / 8');
    assert.ok((await t.c.request('stats', {})).readAhead >= 224);
    assert.equal((await t.c.request('policy', {})).readAhead, 8);
  });

  test('delayUs: every resolution waits at least min, and threads are not serialized', async () => {
    const t = await launch(TOUCH, ['--pages', '120', '--pattern', 'seq', '--threads', '4'], { delayUs: { min: 3000, max: 4000 } });
    await t.exited(60_000);
    const m = /region (0x[0-9a-f]+) pages (\d+)/.exec(t.stdout)!;
    const mine = t.faults.filter(inRange(BigInt(m[1]), 120));
    assert.equal(mine.length, 120);
    for (const f of mine) assert.ok(f.latencyNs! >= 3_000_000, `#${f.seq} waited ${f.latencyNs} ns`);
    // Faults of different threads overlap in time: one delay does not hold up the others.
    let overlapping = 0;
    const iv = mine.map((f) => [f.t, f.t + f.latencyNs!, f.tid]);
    for (const a of iv) if (iv.some((b) => b !== a && b[2] !== a[2] && b[0] < a[1] && a[0] < b[1])) overlapping++;
    assert.ok(overlapping >= mine.length / 2, `${overlapping} of ${mine.length} faults overlapped another thread's`);
    const span = Math.max(...iv.map((x) => x[1])) - Math.min(...iv.map((x) => x[0]));
    assert.ok(span < 120 * 3_000_000 * 0.75, `span ${span} ns is well under the serial ${120 * 3} ms`);
    assert.equal((await t.c.request('policy', { delayUs: null })).delayUs, null);
  });

  test('hold conditions: holdEvery, holdTid, holdRange', async () => {
    const t = await launch(KINDS, ['--mode', 'anon-missing', '--pages', '40']);
    const r = await t.ready();
    t.c.on('event', (e) => { if (e.event === 'fault' && e.held) void t.c.request('resolve', { seq: e.seq }).catch(() => undefined); });
    const pol = await t.c.request('policy', { hold: { missing: true }, holdRange: [{ start: hex(r.addr), end: hex(r.addr + 40n * PAGE) }], holdEvery: 4 });
    assert.equal(pol.holdEvery, 4);
    assert.deepEqual(pol.holdRange, [{ start: hex(r.addr), end: hex(r.addr + 40n * PAGE) }]);
    t.go();
    await t.exited();
    const mine = t.faults.filter(inRange(r.addr, 40));
    assert.equal(mine.length, 40);
    assert.equal(mine.filter((f) => f.held).length, 10, 'every 4th');
    assert.ok(t.faults.filter((f) => !inRange(r.addr, 40)(f)).every((f) => !f.held), 'nothing outside the range held');

    const u = await launch(KINDS, ['--mode', 'anon-missing', '--pages', '8', '--threads', '2']);
    const ur = await u.ready();
    u.c.on('event', (e) => { if (e.event === 'fault' && e.held) void u.c.request('resolve', { seq: e.seq }).catch(() => undefined); });
    await u.c.request('policy', { hold: { missing: true }, holdTid: [u.pid] });
    u.go();
    await u.exited();
    const held = u.faults.filter((f) => f.held);
    assert.ok(held.length > 0, 'the main thread faulted after the policy (thread stacks, TLS)');
    assert.ok(held.every((f) => f.tid === u.pid), 'only the main thread is held');
    assert.ok(u.faults.filter(inRange(ur.addr, 8)).every((f) => !f.held && f.tid !== u.pid), 'workers run free');
  });
});
