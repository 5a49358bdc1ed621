// Non-cooperative userfaultfd events on the real kernel: demo/bin/events munmaps, madvises,
// mremaps and forks registered memory; the helper reports each as an `nc` event, keeps its
// region list and held faults in step, and (followForks) serves a forked child's faults.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { HelperClient } from '../../server/core/helperClient';
import { FaultEvent, HelperEvent, NcEvent, RegionEvent } from '../../server/protocol/messages';
import { hex, PAGE, root, Target, withTimeout } from './kindsHarness';

const EVENTS = path.join(root, 'demo', 'bin', 'events');
const clients: HelperClient[] = [];
after(async () => { for (const c of clients.splice(0)) await c.stop(); });

async function start(mode: string, followForks?: boolean): Promise<{ t: Target; features: string[] }> {
  const c = new HelperClient();
  clients.push(c);
  await c.start();
  const t = new Target(c);
  const l = await c.request('launch', {
    program: EVENTS, args: ['--mode', mode], cwd: root, env: null,
    ...(followForks === undefined ? {} : { followForks }),
  });
  t.pid = l.pid;
  await c.request('run', {});
  return { t, features: l.features.names };
}

async function ready(t: Target): Promise<bigint> {
  const m = await t.until(() => /ready (0x[0-9a-f]+) pages (\d+)/.exec(t.stdout) ?? undefined, 'ready line');
  assert.equal(m[2], '8');
  return BigInt(m[1]);
}

/** The checksum lines of a run without the helper. */
function plainRun(mode: string): string[] {
  const r = spawnSync(EVENTS, ['--mode', mode, '--no-wait'], { encoding: 'utf8', timeout: 10_000 });
  assert.equal(r.status, 0, `plain run of ${mode}: ${r.stderr}`);
  return checksums(r.stdout);
}

const checksums = (out: string): string[] => out.split('\n').filter((l) => /checksum \d+$/.test(l));

const nc = (t: Target, what: string): NcEvent[] =>
  t.events.filter((e): e is NcEvent => e.event === 'nc' && e.what === what);

/** Faults reported after event e, inside [start, end). */
function faultsAfter(t: Target, e: HelperEvent, start: bigint, end: bigint): FaultEvent[] {
  const i = t.events.indexOf(e);
  assert.ok(i >= 0);
  return t.events.slice(i + 1).filter((f): f is FaultEvent =>
    f.event === 'fault' && BigInt(f.page) >= start && BigInt(f.page) < end);
}

const regionEvents = (t: Target, action: string): RegionEvent[] =>
  t.events.filter((e): e is RegionEvent => e.event === 'region' && e.action === action);

describe('non-cooperative events', { timeout: 120_000 }, () => {
  test('negotiates REMAP/REMOVE/UNMAP always and FORK only with followForks', async () => {
    const offered = (await start('unmap')).features;
    for (const f of ['EVENT_REMAP', 'EVENT_REMOVE', 'EVENT_UNMAP']) assert.ok(offered.includes(f), `${f} negotiated`);
    assert.ok(!offered.includes('EVENT_FORK'), 'no EVENT_FORK by default');
    assert.ok(!offered.includes('WP_ASYNC'));
    const follow = (await start('unmap', true)).features;
    assert.ok(follow.includes('EVENT_FORK'), 'EVENT_FORK with followForks');
    await stopAllNow();
  });

  test('munmap of part of a region: nc unmap with the exact range, region removed, no faults there after', async () => {
    const { t } = await start('unmap');
    const addr = await ready(t);
    t.go();
    assert.deepEqual(await t.exited(), { code: 0, signal: null });
    const [u, ...more] = nc(t, 'unmap');
    assert.ok(u, `an nc unmap event (events: ${JSON.stringify(t.events.filter((e) => e.event !== 'fault'))})`);
    assert.equal(more.length, 0, 'exactly one unmap');
    const lo = addr + 2n * PAGE, hi = addr + 5n * PAGE;
    assert.equal(u.start, hex(lo));
    assert.equal(u.end, hex(hi));
    assert.ok(typeof u.t === 'number' && u.t > 0);
    assert.ok(t.stdout.includes(`unmapped ${hex(lo)} ${hex(hi)}`));
    const rm = regionEvents(t, 'remove');
    assert.deepEqual(rm.map((r) => [r.region.start, r.region.end, r.region.via]), [[hex(lo), hex(hi), 'unmap']]);
    assert.equal(faultsAfter(t, u, lo, hi).length, 0, 'no faults in the unmapped range afterwards');
    // the pages were written (one missing fault each) before
    assert.equal(t.faults.filter((f) => BigInt(f.page) >= addr && BigInt(f.page) < addr + 8n * PAGE).length, 8);
    assert.deepEqual(checksums(t.stdout), plainRun('unmap'));
  });

  test('munmap under a held fault: the thread is woken, the fault dropped as UNMAPPED', async () => {
    const { t } = await start('unmap-held');
    const addr = await ready(t);
    const page3 = addr + 3n * PAGE;
    await t.c.request('policy', { hold: { missing: true }, holdRange: [{ start: hex(page3), end: hex(page3 + PAGE) }] });
    t.go();
    const h = await t.heldFault((f) => f.page === hex(page3), 'held read of page 3');
    t.go();	// the main thread munmaps pages [2,5)
    const r = await t.until(() => t.resolved.find((x) => x.seq === h.seq), 'the held fault dropped');
    assert.equal(r.ioctl, 'UNMAPPED');
    assert.equal(r.page, hex(page3));
    const [u] = nc(t, 'unmap');
    assert.ok(u && u.start === hex(addr + 2n * PAGE) && u.end === hex(addr + 5n * PAGE));
    assert.ok(t.events.indexOf(u) < t.events.indexOf(r), 'nc unmap first');
    assert.deepEqual(await t.exited(), { code: 0, signal: null });
    assert.match(t.stdout, /^segv$/m, 'the woken thread found no mapping');
    assert.equal((await t.c.request('stats', {})).held, 0);
    assert.deepEqual(checksums(t.stdout), plainRun('unmap-held'));
  });

  test('madvise(MADV_DONTNEED): nc remove, and the next touches fault again as missing', async () => {
    const { t } = await start('remove');
    const addr = await ready(t);
    t.go();
    assert.deepEqual(await t.exited(), { code: 0, signal: null });
    const [r] = nc(t, 'remove');
    assert.ok(r, 'an nc remove event');
    const lo = addr + 2n * PAGE, hi = addr + 6n * PAGE;
    assert.equal(r.start, hex(lo));
    assert.equal(r.end, hex(hi));
    const again = faultsAfter(t, r, lo, hi);
    assert.equal(again.length, 4, `one new fault per removed page: ${JSON.stringify(again.map((f) => f.page))}`);
    assert.ok(again.every((f) => f.kind === 'missing' && f.access === 'read' && f.pid === undefined));
    assert.equal(faultsAfter(t, r, addr, lo).length + faultsAfter(t, r, hi, addr + 8n * PAGE).length, 0,
      'pages kept their content: no new faults');
    assert.equal(regionEvents(t, 'remove').length, 0, 'the mapping stays');
    assert.deepEqual(checksums(t.stdout), plainRun('remove'));
  });

  test('holdAfter: the helper holds the first fault after a remove event itself', async () => {
    const { t } = await start('remove');
    await ready(t);
    const p = await t.c.request('policy', { holdAfter: ['remove'] });
    assert.deepEqual(p.holdAfter, ['remove']);
    await assert.rejects(t.c.request('policy', { holdAfter: ['explode' as never] }), /holdAfter/);
    t.go();
    await t.until(() => t.events.some((e) => e.event === 'fault' && e.held) || undefined, 'a held fault');
    const [r] = nc(t, 'remove');
    assert.ok(r, 'the remove event came first');
    const heldOnes = t.events.filter((e): e is FaultEvent => e.event === 'fault' && e.held);
    assert.equal(heldOnes.length, 1, 'exactly one fault held');
    assert.ok(t.events.indexOf(heldOnes[0]) > t.events.indexOf(r), 'held after the event');
    assert.ok(!t.events.slice(0, t.events.indexOf(r)).some((e) => e.event === 'fault' && e.held), 'nothing held before it');
    await t.c.request('policy', { holdAfter: [] });
    await t.c.request('resolveAll', {});
    assert.deepEqual(await t.exited(), { code: 0, signal: null });
    assert.deepEqual(checksums(t.stdout), plainRun('remove'));
  });

  test('mremap (move): nc remap with from/to/len, region moves, next touches fault at the new address', async () => {
    const { t } = await start('remap');
    const addr = await ready(t);
    t.go();
    assert.deepEqual(await t.exited(), { code: 0, signal: null });
    const m = /moved (0x[0-9a-f]+) (0x[0-9a-f]+)/.exec(t.stdout);
    assert.ok(m, 'moved line');
    const to = BigInt(m[2]);
    assert.equal(BigInt(m[1]), addr);
    assert.notEqual(to, addr);
    const [r] = nc(t, 'remap');
    assert.ok(r, 'an nc remap event');
    assert.deepEqual([r.from, r.to, r.len], [hex(addr), hex(to), hex(8n * PAGE)]);
    const news = faultsAfter(t, r, to + 8n * PAGE, to + 16n * PAGE);
    assert.equal(news.length, 8, 'the grown part of the moved mapping faults, one per page');
    assert.ok(news.every((f) => f.kind === 'missing' && f.access === 'write'));
    assert.equal(faultsAfter(t, r, to, to + 8n * PAGE).length, 0, 'moved pages keep their content');
    const rm = regionEvents(t, 'remove').find((e) => e.region.via === 'remap');
    assert.ok(rm && rm.region.start === hex(addr) && rm.region.end === hex(addr + 8n * PAGE));
    const add = regionEvents(t, 'add').find((e) => e.region.via === 'remap');
    assert.ok(add && add.region.start === hex(to));
    assert.deepEqual(checksums(t.stdout), plainRun('remap'));
  });

  test('fork with followForks: nc fork with the child pid; the child faults are tagged, held and resolved', async () => {
    const { t } = await start('fork', true);
    const addr = await ready(t);
    t.go();
    const cm = await t.until(() => /child (\d+) ready/.exec(t.stdout) ?? undefined, 'child ready');
    const child = Number(cm[1]);
    const f = await t.until(() => nc(t, 'fork')[0], 'nc fork');
    assert.equal(f.pid, child);
    assert.equal(f.followed, true);
    const lo = addr + 4n * PAGE, hi = addr + 8n * PAGE;
    await t.c.request('policy', { hold: { missing: true }, holdTid: [child], holdRange: [{ start: hex(lo), end: hex(hi) }] });
    process.kill(child, 'SIGUSR1');
    for (let n = 0; n < 4; n++) {
      const h = await t.heldFault((x) => !t.resolved.some((r) => r.seq === x.seq), `held child fault ${n + 1}`);
      assert.equal(h.pid, child, 'tagged with the child pid');
      assert.equal(h.tid, child);
      assert.ok(BigInt(h.page) >= lo && BigInt(h.page) < hi, `${h.page} in the child's pages`);
      const body = await t.c.request('resolve', { seq: h.seq });
      assert.deepEqual(body.woken, [h.seq]);
      await t.until(() => t.resolved.find((r) => r.seq === h.seq), 'resolved event');
    }
    assert.ok(t.resolved.every((r) => r.pid === child));
    await t.c.request('policy', { hold: { missing: false }, holdTid: [], holdRange: [] });
    assert.deepEqual(await t.exited(), { code: 0, signal: null });
    assert.deepEqual(checksums(t.stdout), plainRun('fork'));
    // the parent's own faults carry no pid
    assert.ok(t.faults.some((x) => x.pid === undefined && BigInt(x.page) >= lo && BigInt(x.page) < hi));
  });

  test('attach with followForks: the fork of an attached process is followed too', async () => {
    const proc = spawn(EVENTS, ['--mode', 'fork'], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    proc.stdout.setEncoding('utf8');
    const exited = new Promise<number | null>((r) => proc.on('exit', (code) => r(code)));
    try {
      const c = new HelperClient();
      clients.push(c);
      await c.start();
      const t = new Target(c);
      proc.stdout.on('data', (d: string) => { out += d; t.stdout = out; t.poke(); });
      const addr = await ready(t);
      const body = await c.request('attach', { pid: proc.pid!, followForks: true });
      assert.ok(body.features.names.includes('EVENT_FORK'));
      t.pid = proc.pid!;
      t.go();
      const cm = await t.until(() => /child (\d+) ready/.exec(t.stdout) ?? undefined, 'child ready');
      const child = Number(cm[1]);
      const f = await t.until(() => nc(t, 'fork')[0], 'nc fork');
      assert.equal(f.pid, child);
      process.kill(child, 'SIGUSR1');
      assert.equal(await withTimeout(exited, 15_000, 'exit of the attached process'), 0);
      await t.exited();	// the helper saw it exit: every fault event before it has arrived
      const lo = addr + 4n * PAGE, hi = addr + 8n * PAGE;
      const mine = t.faults.filter((x) => x.pid === child && BigInt(x.page) >= lo && BigInt(x.page) < hi);
      assert.equal(mine.length, 4, `the child's first touches of pages 4..7 came through its userfaultfd: ${JSON.stringify(t.faults.filter((x) => x.pid))}`);
      assert.deepEqual(checksums(out), plainRun('fork'));
    } finally {
      if (proc.exitCode === null) proc.kill('SIGKILL');
    }
  });

  test('fork without followForks: no event, the child runs normally unwatched', async () => {
    const { t } = await start('fork');
    await ready(t);
    t.go();
    const cm = await t.until(() => /child (\d+) ready/.exec(t.stdout) ?? undefined, 'child ready');
    process.kill(Number(cm[1]), 'SIGUSR1');
    assert.deepEqual(await t.exited(), { code: 0, signal: null });
    assert.equal(nc(t, 'fork').length, 0);
    assert.ok(t.faults.every((x) => x.pid === undefined));
    assert.deepEqual(checksums(t.stdout), plainRun('fork'));
  });
});

async function stopAllNow(): Promise<void> {
  for (const c of clients.splice(0)) await c.stop();
}
