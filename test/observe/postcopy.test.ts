// Observe mode on the real kernel: the postcopy demo's own counts against what the observer saw,
// and each of its misbehaviours detected and named.
import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { handlerCounts, observe, POSTCOPY } from './support';

function regionOf(stdout: string): bigint {
  const m = /postcopy: region (0x[0-9a-f]+)/.exec(stdout);
  assert.ok(m, `no region line in: ${stdout}`);
  return BigInt(m[1]);
}
const pageHex = (region: bigint, k: number) => '0x' + (region + BigInt(k) * 4096n).toString(16);

describe('observe: postcopy demo', { timeout: 240_000 }, () => {
  it('reports every fault, read, copy and placement the handler counts itself', async () => {
    const r = await observe({ program: POSTCOPY, args: ['--pages', '1024', '--threads', '4'] });
    assert.equal(r.result.code, 0, r.stderr);
    assert.match(r.stdout, /check ok pages=1024/);
    const c = handlerCounts(r.stderr);
    const s = r.result.summary;
    assert.ok(c.faults > 0, 'the demo saw faults');
    assert.equal(s.faults, c.faults, 'fault messages');
    assert.equal(s.reads, c.reads, 'reads that returned messages');
    assert.equal(s.events, c.events, 'non-fault messages');
    assert.equal(s.ioctls.COPY?.ok, c.copies, 'successful UFFDIO_COPY');
    assert.equal(s.duplicates, c.eexist, 'EEXIST');
    assert.equal(s.requested, c.placed_fault, 'pages placed for a waiting fault');
    assert.equal(s.pushed, c.placed_push, 'pages pushed ahead of any fault');
    assert.equal(s.resolved, c.faults, 'every fault resolved');
    assert.deepEqual(s.stuck, []);
    assert.equal(s.unregistered, 0);
    assert.equal(s.uffds.length, 1);
    assert.equal(s.uffds[0].how, 'syscall');
    assert.equal(s.uffds[0].ranges[0].len, 1024 * 4096);
    assert.equal(s.uffds[0].ranges[0].start, '0x' + regionOf(r.stdout).toString(16));
    assert.equal(s.uffds[0].features, '0x100', 'THREAD_ID negotiated');
    // The QEMU-style figures: every resolved fault in the histogram, one entry per faulting thread.
    assert.equal(s.histogram.reduce((a, h) => a + h.count, 0), c.faults);
    const demoTids = [...r.stderr.matchAll(/postcopy: thread (\d+) blocked/g)].map((m) => Number(m[1])).sort();
    assert.deepEqual(s.perThread.map((t) => t.tid).sort(), demoTids);
    assert.ok(s.blockedNs > 0);
    // Events close to the helper's FaultEvent/ResolvedEvent, with latencies.
    const faults = r.events.filter((e) => e.event === 'fault');
    const resolved = r.events.filter((e) => e.event === 'resolved');
    assert.equal(faults.length, c.faults);
    assert.equal(resolved.length, c.faults);
    for (const e of resolved) if (e.event === 'resolved') assert.equal(e.ioctl, 'UFFDIO_COPY');
  });

  it('names the forgotten page as a stuck fault (--forget, ended by the watchdog)', async () => {
    const K = 300;
    const r = await observe({ program: POSTCOPY, args: ['--pages', '512', '--forget', String(K), '--watchdog', '4'],
      stuckAfterMs: 500 });
    assert.equal(r.result.code, 3, 'the demo watchdog ended the run');
    const region = regionOf(r.stdout);
    assert.match(r.stderr, new RegExp(`fault unresolved on page ${K} `));
    const stuck = r.events.filter((e) => e.event === 'stuck');
    assert.ok(stuck.length >= 1, 'a stuck event while the run hung');
    const pages = new Set(r.result.summary.stuck.map((f) => f.page));
    assert.deepEqual([...pages], [pageHex(region, K)], 'only the forgotten page is stuck');
    for (const e of stuck) if (e.event === 'stuck') assert.equal(e.page, pageHex(region, K));
    const c = handlerCounts(r.stderr);
    assert.equal(c.dropped, 1);
    assert.equal(r.result.summary.faults, c.faults);
    assert.equal(r.result.summary.resolved + r.result.summary.stuck.length, c.faults);
  });

  it('reports the second placement of a page as EEXIST (--twice)', async () => {
    const K = 5;
    const r = await observe({ program: POSTCOPY, args: ['--pages', '256', '--twice', String(K)] });
    assert.equal(r.result.code, 0, r.stderr);
    const c = handlerCounts(r.stderr);
    assert.equal(c.eexist, 1);
    const s = r.result.summary;
    assert.equal(s.duplicates, 1);
    const page = pageHex(regionOf(r.stdout), K);
    assert.deepEqual(s.duplicatePages, [page]);
    assert.deepEqual(s.resolvedTwice, [page]);
    const dup = r.events.find((e) => e.event === 'duplicate');
    assert.ok(dup && dup.event === 'duplicate' && dup.op === 'COPY' && dup.page === page);
    assert.equal(s.ioctls.COPY?.failed, 1);
  });

  it('sees a normal run when the handler places wrong content (--wrong): the demo check catches it', async () => {
    const r = await observe({ program: POSTCOPY, args: ['--pages', '256', '--wrong', '7'] });
    assert.equal(r.result.code, 1);
    assert.match(r.stdout, /check FAILED bad=1 first=7/);
    const c = handlerCounts(r.stderr);
    assert.equal(r.result.summary.faults, c.faults);
    assert.equal(r.result.summary.duplicates, 0);
    assert.deepEqual(r.result.summary.stuck, []);
  });

  it('accounts for every fault when the handler dies mid-way (--die-after)', async () => {
    const r = await observe({ program: POSTCOPY, args: ['--pages', '512', '--die-after', '100'] });
    assert.equal(r.result.code, 70);
    const s = r.result.summary;
    assert.equal(s.ioctls.COPY?.ok, 100);
    assert.equal(s.requested + s.pushed, 100);
    assert.equal(s.resolved + s.stuck.length, s.faults);
  });

  it('observes a handler that receives its userfaultfd over SCM_RIGHTS (--scm, /dev/userfaultfd)', async () => {
    const r = await observe({ program: POSTCOPY, args: ['--pages', '512', '--scm', '--uffd-dev'] });
    assert.equal(r.result.code, 0, r.stderr);
    assert.match(r.stdout, /check ok pages=512/);
    const c = handlerCounts(r.stderr);
    const s = r.result.summary;
    const made = r.records.find((x) => x.type === 'uffd' && x.how === 'dev');
    const got = r.records.find((x) => x.type === 'uffd' && x.how === 'scm');
    assert.ok(made && got, 'created in one process and received in another');
    assert.notEqual(made.pid, got.pid);
    assert.ok(r.records.some((x) => x.type === 'send' && x.pid === made.pid));
    // One userfaultfd (the received one is the same file), registered by the workload.
    assert.equal(s.uffds.length, 1);
    assert.equal(s.uffds[0].pid, made.pid);
    assert.equal(s.uffds[0].ranges.length, 1);
    const reads = r.records.filter((x) => x.type === 'read');
    assert.ok(reads.length > 0 && reads.every((x) => x.pid === got.pid), 'faults read by the handler process');
    assert.equal(s.faults, c.faults);
    assert.equal(s.reads, c.reads);
    assert.equal(s.ioctls.COPY?.ok, c.copies);
    assert.equal(s.requested, c.placed_fault);
    assert.equal(s.pushed, c.placed_push);
    assert.equal(s.unregistered, 0, 'the workload\'s registration covers the handler\'s faults');
    assert.deepEqual(s.stuck, []);
  });
});
