// Every fault kind on every memory type it applies to, end to end on the real kernel:
// demo/bin/kinds maps the memory, the helper registers/protects it, the test checks the
// faults reported and the bytes the program reads back.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { after, describe, test } from 'node:test';
import { HelperClient, HelperError } from '../../server/core/helperClient';
import { FaultEvent } from '../../server/protocol/messages';
import { assertSum, hex, inRange, KINDS, launch, PAGE, stopAll } from './kindsHarness';

/** Runs fn with 4 huge pages reserved (vm.nr_hugepages), put back afterwards. */
async function withHugePages(fn: () => Promise<void>): Promise<void> {
  const saved = readFileSync(NR_HUGEPAGES, 'utf8').trim();
  writeFileSync(NR_HUGEPAGES, '4');
  try {
    assert.ok(Number(readFileSync(NR_HUGEPAGES, 'utf8')) >= 2, 'the kernel reserved huge pages');
    await fn();
  } finally {
    writeFileSync(NR_HUGEPAGES, saved === '' ? '0' : saved);
  }
}

after(stopAll);

function onePerPage(faults: FaultEvent[], pages: number, kind: string, psize = PAGE): void {
  assert.equal(faults.length, pages, `${pages} ${kind} faults: ${JSON.stringify(faults.map((f) => [f.kind, f.page]))}`);
  assert.equal(new Set(faults.map((f) => f.page)).size, pages, 'one per page');
  for (const f of faults) {
    assert.equal(f.kind, kind);
    assert.equal(BigInt(f.page) % psize, 0n, 'page is aligned to the page size');
    assert.ok(f.tid > 0);
  }
}

const NR_HUGEPAGES = '/proc/sys/vm/nr_hugepages';

describe('fault kinds on the real kernel', { timeout: 120_000 }, () => {
  test('launch negotiates every fault-handling feature the kernel offers, and no fork events', async () => {
    const c = new HelperClient();
    await c.start();
    try {
      const offered = c.hello!.uffd.features.names;
      const body = await c.request('launch', { program: KINDS, args: ['--no-wait', '--pages', '1'], cwd: '/', env: null });
      const names = body.features.names;
      for (const f of ['THREAD_ID', 'PAGEFAULT_FLAG_WP', 'WP_UNPOPULATED', 'MISSING_SHMEM', 'MISSING_HUGETLBFS',
        'MINOR_SHMEM', 'MINOR_HUGETLBFS', 'WP_HUGETLBFS_SHMEM', 'POISON', 'MOVE']) {
        if (offered.includes(f)) assert.ok(names.includes(f), `${f} negotiated (${names.join(',')})`);
      }
      // EVENT_REMAP/REMOVE/UNMAP are negotiated too (test/helper/events.test.ts); FORK only with followForks
      for (const f of names) {
        assert.ok(f !== 'EVENT_FORK' && f !== 'WP_ASYNC' && f !== 'SIGBUS' && f !== 'EXACT_ADDRESS', `${f} not negotiated`);
      }
    } finally {
      await c.stop();
    }
  });

  test('anonymous missing: read faults map the zero page, one per page', async () => {
    const t = await launch(KINDS, ['--mode', 'anon-missing', '--pages', '16']);
    const r = await t.ready();
    t.go();
    assert.deepEqual(await t.exited(), { code: 0, signal: null });
    const mine = t.faults.filter(inRange(r.addr, 16));
    onePerPage(mine, 16, 'missing');
    assert.ok(mine.every((f) => f.access === 'read' && f.ioctl === 'UFFDIO_ZEROPAGE'));
    assert.equal((await t.report()).checksum, 0n);
  });

  test('anonymous write-protect: protect, every write is a wp fault, default un-protects', async () => {
    const t = await launch(KINDS, ['--mode', 'anon-wp', '--pages', '8']);
    const r = await t.ready();
    const end = r.addr + 8n * PAGE;
    const p = await t.c.request('protect', { start: hex(r.addr), end: hex(end), on: true });
    assert.deepEqual(p, { start: hex(r.addr), end: hex(end), pages: 8 });
    t.go();
    assert.deepEqual(await t.exited(), { code: 0, signal: null });
    const wp = t.faults.filter((f) => inRange(r.addr, 8)(f) && f.kind === 'wp');
    onePerPage(wp, 8, 'wp');
    assert.ok(wp.every((f) => f.access === 'write' && f.ioctl === 'UFFDIO_WRITEPROTECT' && !f.held));
    const rep = await t.report();
    for (let i = 0; i < 8; i++) assertSum(rep.sums[i], 0x80 + i, `page ${i} has the program's write`);
    assert.equal((await t.c.request('stats', {})).faults.wp, 8);
  });

  test('write-protect off again: no more wp faults', async () => {
    const t = await launch(KINDS, ['--mode', 'anon-wp', '--pages', '4']);
    const r = await t.ready();
    const range = { start: hex(r.addr), end: hex(r.addr + 4n * PAGE) };
    await t.c.request('protect', { ...range, on: true });
    await t.c.request('protect', { ...range, on: false });
    t.go();
    await t.exited();
    assert.equal(t.faults.filter((f) => f.kind === 'wp').length, 0);
    assertSum((await t.report()).sums[3], 0x83, 'page 3');
  });

  test('write-protect on never-populated memory: missing fault first, filled protected, then a wp fault', async () => {
    for (const write of [false, true]) {
      const t = await launch(KINDS, ['--mode', 'anon-missing', '--pages', '3', ...(write ? ['--write'] : [])]);
      const r = await t.ready();
      await t.c.request('protect', { start: hex(r.addr), end: hex(r.addr + 3n * PAGE), on: true });
      t.go();
      assert.deepEqual(await t.exited(), { code: 0, signal: null }, 'no refault loop');
      const mine = t.faults.filter(inRange(r.addr, 3));
      const expect = write ? ['missing', 'wp', 'missing', 'wp', 'missing', 'wp'] : ['missing', 'missing', 'missing'];
      assert.deepEqual(mine.map((f) => f.kind), expect);
      // UFFDIO_ZEROPAGE refuses the write-protect marker: a protected zeroed copy instead.
      assert.ok(mine.filter((f) => f.kind === 'missing').every((f) => f.ioctl === 'UFFDIO_COPY'), JSON.stringify(mine));
      const rep = await t.report();
      for (let i = 0; i < 3; i++) assertSum(rep.sums[i], write ? 0x80 + i : 0, `page ${i}`);
    }
  });

  test('memfd (shmem) missing: register, read faults resolved with the zero page, writes with a copy', async () => {
    for (const write of [false, true]) {
      const t = await launch(KINDS, ['--mode', 'memfd-missing', '--pages', '6', ...(write ? ['--write'] : [])]);
      const r = await t.ready();
      const reg = await t.c.request('register', { start: hex(r.addr), end: hex(r.addr + 6n * PAGE), modes: ['missing'] });
      assert.equal(reg.start, hex(r.addr));
      for (const i of ['UFFDIO_COPY', 'UFFDIO_ZEROPAGE', 'UFFDIO_WAKE']) assert.ok(reg.ioctls.includes(i), `${i} in ${reg.ioctls.join(',')}`);
      t.go();
      assert.deepEqual(await t.exited(), { code: 0, signal: null });
      const mine = t.faults.filter(inRange(r.addr, 6));
      onePerPage(mine, 6, 'missing');
      assert.ok(mine.every((f) => f.access === (write ? 'write' : 'read') && f.ioctl === (write ? 'UFFDIO_COPY' : 'UFFDIO_ZEROPAGE')));
      const rep = await t.report();
      for (let i = 0; i < 6; i++) assertSum(rep.sums[i], write ? 0x80 + i : 0, `page ${i}`);
    }
  });

  test('memfd (shmem) minor: page cache filled, mapping empty, CONTINUE maps the cached page', async () => {
    const t = await launch(KINDS, ['--mode', 'memfd-minor', '--pages', '5']);
    const r = await t.ready();
    const reg = await t.c.request('register', { start: hex(r.addr), end: hex(r.addr + 5n * PAGE), modes: ['minor'] });
    assert.ok(reg.ioctls.includes('UFFDIO_CONTINUE'), reg.ioctls.join(','));
    t.go();
    assert.deepEqual(await t.exited(), { code: 0, signal: null });
    const mine = t.faults.filter(inRange(r.addr, 5));
    onePerPage(mine, 5, 'minor');
    assert.ok(mine.every((f) => f.ioctl === 'UFFDIO_CONTINUE'));
    const rep = await t.report();
    for (let i = 0; i < 5; i++) assertSum(rep.sums[i], 0x20 + i, `page ${i} is the page-cache content`);
  });

  test('hugetlb missing: 2 MiB faults, resolved with a 2 MiB copy', async () => {
    await withHugePages(async () => {
      const HUGE = 2n << 20n;
      const t = await launch(KINDS, ['--mode', 'hugetlb-missing', '--pages', '2', '--write']);
      const r = await t.ready();
      assert.equal(r.psize, HUGE);
      const reg = await t.c.request('register', { start: hex(r.addr), end: hex(r.addr + 2n * HUGE), modes: ['missing'] });
      assert.ok(reg.ioctls.includes('UFFDIO_COPY'));
      t.go();
      assert.deepEqual(await t.exited(), { code: 0, signal: null });
      const mine = t.faults.filter(inRange(r.addr, 2, HUGE));
      onePerPage(mine, 2, 'missing', HUGE);
      assert.ok(mine.every((f) => f.pageSize === 2 << 20 && f.ioctl === 'UFFDIO_COPY'), JSON.stringify(mine));
      const rep = await t.report();
      for (let i = 0; i < 2; i++) assertSum(rep.sums[i], 0x80 + i, `huge page ${i}`, HUGE);
      await t.c.stop();
    });
  });

  test('memfd (shmem) write-protect: register wp, protect, every write is a wp fault, default un-protects', async () => {
    const t = await launch(KINDS, ['--mode', 'memfd-wp', '--pages', '4']);
    const r = await t.ready();
    const end = r.addr + 4n * PAGE;
    const reg = await t.c.request('register', { start: hex(r.addr), end: hex(end), modes: ['wp'] });
    assert.ok(reg.ioctls.includes('UFFDIO_WRITEPROTECT'), reg.ioctls.join(','));
    await t.c.request('protect', { start: hex(r.addr), end: hex(end), on: true });
    t.go();
    assert.deepEqual(await t.exited(), { code: 0, signal: null });
    const wp = t.faults.filter((f) => inRange(r.addr, 4)(f) && f.kind === 'wp');
    onePerPage(wp, 4, 'wp');
    assert.ok(wp.every((f) => f.access === 'write' && f.ioctl === 'UFFDIO_WRITEPROTECT'));
    const rep = await t.report();
    for (let i = 0; i < 4; i++) assertSum(rep.sums[i], 0x80 + i, `page ${i} has the program's write`);
  });

  test('zap of a populated memfd mapping: page tables dropped, content kept, each access a minor fault served with CONTINUE', async () => {
    const t = await launch(KINDS, ['--mode', 'memfd-populated', '--pages', '5']);
    const r = await t.ready();
    const end = r.addr + 5n * PAGE;
    await t.c.request('register', { start: hex(r.addr), end: hex(end), modes: ['minor'] });
    const z = await t.c.request('zap', { start: hex(r.addr), end: hex(end) });
    assert.deepEqual(z, { start: hex(r.addr), end: hex(end), bytes: 5 * 4096 });
    await assert.rejects(t.c.request('zap', { start: hex(r.addr), end: hex(end + PAGE * 4096n) }), (e: HelperError) => e.code === 'EINVAL');
    t.go();
    assert.deepEqual(await t.exited(), { code: 0, signal: null });
    const mine = t.faults.filter(inRange(r.addr, 5));
    onePerPage(mine, 5, 'minor');
    assert.ok(mine.every((f) => f.ioctl === 'UFFDIO_CONTINUE'));
    const rep = await t.report();
    for (let i = 0; i < 5; i++) assertSum(rep.sums[i], 0x20 + i, `page ${i} is the page-cache content`);
  });

  test('hugetlb minor: a populated hugetlbfs memfd zapped, 2 MiB minor faults served with CONTINUE', async () => {
    await withHugePages(async () => {
      const HUGE = 2n << 20n;
      const t = await launch(KINDS, ['--mode', 'hugetlb-populated', '--pages', '2']);
      const r = await t.ready();
      assert.equal(r.psize, HUGE);
      const end = r.addr + 2n * HUGE;
      const reg = await t.c.request('register', { start: hex(r.addr), end: hex(end), modes: ['minor'] });
      assert.ok(reg.ioctls.includes('UFFDIO_CONTINUE'), reg.ioctls.join(','));
      await t.c.request('zap', { start: hex(r.addr), end: hex(end) });
      t.go();
      assert.deepEqual(await t.exited(), { code: 0, signal: null });
      const mine = t.faults.filter(inRange(r.addr, 2, HUGE));
      onePerPage(mine, 2, 'minor', HUGE);
      assert.ok(mine.every((f) => f.pageSize === 2 << 20 && f.ioctl === 'UFFDIO_CONTINUE'), JSON.stringify(mine));
      const rep = await t.report();
      for (let i = 0; i < 2; i++) assertSum(rep.sums[i], 0x20 + i, `huge page ${i} is the page-cache content`, HUGE);
      await t.c.stop();
    });
  });

  test('unregister: the range stops faulting through the helper', async () => {
    const t = await launch(KINDS, ['--mode', 'memfd-missing', '--pages', '4']);
    const r = await t.ready();
    const range = { start: hex(r.addr), end: hex(r.addr + 4n * PAGE) };
    await t.c.request('register', { ...range, modes: ['missing'] });
    assert.deepEqual(await t.c.request('unregister', range), range);
    t.go();
    await t.exited();
    assert.equal(t.faults.filter(inRange(r.addr, 4)).length, 0);
  });

  test('many threads on one page: each fault reported, one resolution wakes them all', async () => {
    const T = 4;
    const t = await launch(KINDS, ['--mode', 'anon-missing', '--pages', '2', '--threads', String(T), '--same-page']);
    const r = await t.ready();
    await t.c.request('policy', { hold: { missing: true }, holdRange: [{ start: hex(r.addr), end: hex(r.addr + 2n * PAGE) }] });
    t.go();
    const held = await t.heldFaults(T, inRange(r.addr, 2));
    assert.equal(new Set(held.map((f) => f.page)).size, 1, 'all on one page');
    assert.equal(new Set(held.map((f) => f.tid)).size, T, 'from every thread');
    await t.c.request('policy', { hold: { missing: false } }); // the report reads page 1
    const res = await t.c.request('resolve', { seq: held[0].seq });
    assert.deepEqual(res.woken, held.map((f) => f.seq).sort((a, b) => a - b));
    assert.deepEqual(await t.exited(), { code: 0, signal: null });
    for (const f of held) assert.equal(t.resolved.filter((e) => e.seq === f.seq).length, 1, `#${f.seq} resolved once`);
    await assert.rejects(t.c.request('resolve', { seq: held[1].seq }), (e: HelperError) => e.code === 'ESTATE');
  });

  test('register errors say what is wrong', async () => {
    const t = await launch(KINDS, ['--mode', 'memfd-missing', '--pages', '2']);
    const r = await t.ready();
    await assert.rejects(t.c.request('register', { start: hex(r.addr + 1n), end: hex(r.addr + PAGE), modes: ['missing'] }),
      (e: HelperError) => e.code === 'EINVAL' && /unaligned/.test(e.message));
    await assert.rejects(t.c.request('register', { start: hex(r.addr), end: hex(r.addr + PAGE), modes: ['sideways' as 'wp'] }),
      (e: HelperError) => e.code === 'EPROTO');
    t.go();
    await t.exited();
  });
});
