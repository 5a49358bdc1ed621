// evict on the real kernel: pages of an attached process are saved and dropped, and come back
// with their content on the next touch; through a detach, and through the helper's SIGKILL
// (the guardian puts them back). demo/spin's checksums prove every page's content.
import assert from 'node:assert/strict';
import { closeSync, existsSync, openSync, readdirSync, readlinkSync, readSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import { findHelper, HelperClient, HelperError } from '../../server/core/helperClient';
import { FaultEvent, HelperEvent, unbatched } from '../../server/protocol/messages';
import { dead, expectedChecksum, killSpins, procStatus, Share, Spin, SPIN, uffdVmas } from '../support/spin';
import { until, withTimeout } from '../support/waits';

const clients: HelperClient[] = [];
after(async () => {
  for (const c of clients) await c.stop();
  killSpins();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const hex = (n: bigint) => `0x${n.toString(16)}`;

const WORKERS = 2;
const PAGES = 128;   // 64 per worker: all written after 64 iterations
const ITERATIONS = 700;

async function helper(): Promise<{ c: HelperClient; events: HelperEvent[] }> {
  const c = new HelperClient();
  clients.push(c);
  await withTimeout(c.start(findHelper()), 5000, 'the helper handshake');
  const events: HelperEvent[] = [];
  c.on('event', (e: HelperEvent) => events.push(...unbatched(e)));
  return { c, events };
}

/** A spin whose region is fully written, attached; returns the region's range. */
async function attachedSpin(c: HelperClient): Promise<{ s: Spin; shares: Share[]; start: bigint; end: bigint }> {
  const s = new Spin(['--pages', String(PAGES), '--threads', String(WORKERS), '--interval-ms', '3', '--iterations', String(ITERATIONS)]);
  const shares = await s.shares(WORKERS);
  const m = /region (0x[0-9a-f]+) pages (\d+)/.exec(s.out);
  assert.ok(m, `spin's region line: ${s.out}`);
  const start = BigInt(m[1]);
  const end = start + BigInt(Number(m[2]) * 4096);
  await until(() => /^1 iter 100 /m.test(s.out), 10_000, 'every page written once (iteration 100)');
  await withTimeout(c.request('attach', { pid: s.pid }), 10_000, 'attach');
  return { s, shares, start, end };
}

/** Pages of [start, end) present in pid's memory (pagemap bit 63). */
function presentPages(pid: number, start: bigint, end: bigint): number {
  const buf = Buffer.alloc(8 * Number((end - start) / 4096n));
  const f = openSync(`/proc/${pid}/pagemap`, 'r');
  try {
    readSync(f, buf, 0, buf.length, Number((start / 4096n) * 8n));
  } finally {
    closeSync(f);
  }
  let n = 0;
  for (let i = 0; i < buf.length; i += 8) if (buf.readBigUInt64LE(i) >> 63n) n++;
  return n;
}

describe('evict: pages dropped and served back with their content', { timeout: 180_000 }, () => {
  test('built', () => {
    assert.ok(existsSync(findHelper()), 'helper binary');
    assert.ok(existsSync(SPIN), 'demo/bin/spin');
  });

  test('evicted pages are missing, fault again, come back with COPY of their content; no remove event', async () => {
    const { c, events } = await helper();
    const { s, shares, start, end } = await attachedSpin(c);
    for (let round = 0; round < 5; round++) {
      const before = events.length;
      const r = await withTimeout(c.request('evict', { start: hex(start), end: hex(end) }), 10_000, 'evict');
      assert.ok(r.pages > 0 && r.pages <= PAGES, `round ${round}: pages evicted (${r.pages})`);
      assert.equal(r.start, hex(start));
      // the workers touch one page each per iteration: the evicted ones fault back in
      await until(() => events.slice(before).filter((e) => e.event === 'fault').length >= 4, 5000, 'faults on evicted pages');
      const faults = events.slice(before).filter((e): e is FaultEvent => e.event === 'fault');
      assert.ok(faults.every((f) => f.ioctl === 'UFFDIO_COPY'), `round ${round}: served with UFFDIO_COPY: ${JSON.stringify(faults.slice(0, 3))}`);
      assert.ok(!events.slice(before).some((e) => e.event === 'nc' && e.what === 'remove'), 'the eviction is not reported as the program\'s madvise');
      await sleep(60);
    }
    const code = await withTimeout(s.exited, 30_000, 'spin to finish');
    assert.equal(code, 0, `spin exit code; tail ${s.out.slice(-200)}`);
    s.assertChecksums(shares, ITERATIONS, 'after five evictions');
  });

  test('detach with evicted pages: every page is put back first, the process finishes intact', async () => {
    const { c } = await helper();
    const { s, shares, start, end } = await attachedSpin(c);
    await c.request('policy', { hold: { missing: true } });  // nothing comes back by itself
    const r = await c.request('evict', { start: hex(start), end: hex(end) });
    assert.ok(r.pages > 100, `most pages evicted (${r.pages})`);
    assert.ok(presentPages(s.pid, start, end) < PAGES - 100, 'the pages are gone from the process');
    await c.request('detach', {});
    assert.ok(presentPages(s.pid, start, end) >= r.pages, 'every evicted page is back after detach');
    assert.deepEqual(uffdVmas(s.pid), [], 'nothing registered');
    const code = await withTimeout(s.exited, 30_000, 'spin to finish');
    assert.equal(code, 0);
    s.assertChecksums(shares, ITERATIONS, 'after detach');
  });

  for (const moment of ['after the eviction answered', 'during the eviction'] as const) {
    for (let round = 0; round < 3; round++) {
      test(`the helper SIGKILLed ${moment} (round ${round + 1}): the guardian puts every page back`, async () => {
        const { c } = await helper();
        const { s, shares, start, end } = await attachedSpin(c);
        if (moment === 'after the eviction answered') {
          await c.request('policy', { hold: { missing: true } });
          await c.request('evict', { start: hex(start), end: hex(end) });
          await sleep(Math.random() * 50);
        } else {
          c.request('evict', { start: hex(start), end: hex(end) }).catch(() => { /* killed */ });
          const t0 = performance.now();
          const delay = Math.random() * 4;
          while (performance.now() - t0 < delay) { /* spin: sub-millisecond */ }
        }
        const gone = new Promise<void>((r) => c.once('exit', () => r()));
        process.kill(c.pid!, 'SIGKILL');
        await withTimeout(gone, 5000, 'the helper to die');
        await until(() => dead(s.pid) || uffdVmas(s.pid).length === 0, 10_000, 'the userfaultfd released (guardian done)');
        assert.ok(dead(s.pid) || procStatus(s.pid, 'TracerPid') === '0', 'no ptrace left');
        const code = await withTimeout(s.exited, 30_000, 'spin to finish');
        assert.equal(code, 0, `spin exit code; tail ${s.out.slice(-300)}`);
        s.assertChecksums(shares, ITERATIONS, `killed ${moment}`);
      });
    }
  }

  test('move in an attached process: issued by a stopped thread of it, the program keeps no userfaultfd', async () => {
    const { c, events } = await helper();
    const { s, start } = await attachedSpin(c);
    await c.request('policy', { hold: { missing: true } });
    const page0 = start;
    await c.request('evict', { start: hex(page0), end: hex(page0 + 4096n) });
    await until(() => events.some((e) => e.event === 'fault' && e.held && BigInt(e.page) === page0), 5000, 'a held fault on the evicted page');
    const f = events.find((e): e is FaultEvent => e.event === 'fault' && e.held && BigInt(e.page) === page0)!;
    const src = page0 + 4096n * 10n;
    assert.equal(presentPages(s.pid, src, src + 4096n), 1, 'the source page is present');
    const r = await c.request('resolve', { seq: f.seq, how: 'move', from: hex(src) });
    assert.equal(r.ioctl, 'UFFDIO_MOVE');
    assert.ok(r.woken.includes(f.seq));
    assert.equal(presentPages(s.pid, page0, page0 + 4096n), 1, 'the destination is mapped');
    assert.equal(procStatus(s.pid, 'TracerPid'), '0', 'no ptrace left');
    const fds = readdirSync(`/proc/${s.pid}/fd`).map((n) => { try { return readlinkSync(`/proc/${s.pid}/fd/${n}`); } catch { return ''; } });
    assert.ok(!fds.some((l) => /userfaultfd/.test(l)), `no userfaultfd left in the program: ${fds.join(' ')}`);
    await c.request('detach', {});
    s.proc.kill('SIGKILL');
  });

  test('a launched program: evicted pages come back with their content (the helper, its tracer, stops it)', async () => {
    const { c, events } = await helper();
    let out = '';
    c.on('output', (st: string, d: string) => { if (st === 'stdout') out += d; });
    await c.request('launch', { program: SPIN, args: ['--pages', String(PAGES), '--threads', String(WORKERS), '--interval-ms', '3', '--iterations', String(ITERATIONS)], cwd: process.cwd(), env: null });
    await c.request('run', {});
    await until(() => /^1 iter 100 /m.test(out), 10_000, 'every page written once');
    const m = /region (0x[0-9a-f]+) pages (\d+)/.exec(out)!;
    const start = BigInt(m[1]);
    const end = start + BigInt(Number(m[2]) * 4096);
    for (let round = 0; round < 3; round++) {
      const before = events.length;
      const r = await withTimeout(c.request('evict', { start: hex(start), end: hex(end) }), 10_000, 'evict');
      assert.ok(r.pages > 0, `round ${round}: pages evicted (${r.pages})`);
      await until(() => events.slice(before).filter((e) => e.event === 'fault').length >= 4, 5000, 'faults on evicted pages');
      const faults = events.slice(before).filter((e): e is FaultEvent => e.event === 'fault');
      assert.ok(faults.every((f) => f.ioctl === 'UFFDIO_COPY'), `round ${round}: served with UFFDIO_COPY`);
      assert.ok(!events.slice(before).some((e) => e.event === 'nc' && e.what === 'remove'), 'no remove event for the eviction');
      await sleep(60);
    }
    await until(() => events.some((e) => e.event === 'exited'), 30_000, 'spin to finish');
    const exited = events.find((e) => e.event === 'exited');
    assert.equal(exited && exited.event === 'exited' ? exited.code : null, 0, `exit code; tail ${out.slice(-200)}`);
    const shares = [...out.matchAll(/^worker (\d+) tid \d+ pages (\d+)-(\d+)$/gm)].map((w) => ({ worker: Number(w[1]), n: Number(w[3]) - Number(w[2]) }));
    const lines = [...out.matchAll(/^(\d+) iter (\d+) checksum ([0-9a-f]+)$/gm)];
    assert.ok(lines.length >= WORKERS * (ITERATIONS / 50), 'every checksum line');
    for (const l of lines) {
      const sh = shares.find((x) => x.worker === Number(l[1]))!;
      assert.equal(BigInt('0x' + l[3]), expectedChecksum(Number(l[2]), sh.n), `worker ${l[1]} checksum at iteration ${l[2]}`);
    }
  });

  test('errors: no program, unaligned, untracked', async () => {
    const { c } = await helper();
    await assert.rejects(c.request('evict', { start: '0x1000', end: '0x2000' }),
      (e: HelperError) => e.code === 'ESTATE' && /running program/.test(e.message));
    const { s, start, end } = await attachedSpin(c);
    await assert.rejects(c.request('evict', { start: hex(start + 1n), end: hex(end) }),
      (e: HelperError) => e.code === 'EPROTO' && /page-aligned/.test(e.message));
    await assert.rejects(c.request('evict', { start: '0x1000', end: '0x2000' }),
      (e: HelperError) => e.code === 'EINVAL' && /track it first/.test(e.message));
    await c.request('detach', {});
    s.proc.kill('SIGKILL');
  });
});
