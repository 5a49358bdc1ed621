// Stop on read: the library holds the handler thread after it reads a fault until the observer
// continues it; continuing completes the run with the demo's own content check passing.
import { strict as assert } from 'node:assert';
import { readFileSync } from 'node:fs';
import { describe, it } from 'node:test';
import { ResolveHowCode, type ObsResolve } from '../../server/protocol/observe';
import { handlerCounts, observe, POSTCOPY } from './support';

function threadState(pid: number, tid: number): string {
  const stat = readFileSync(`/proc/${pid}/task/${tid}/stat`, 'utf8');
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
}

describe('observe: stop the handler after a fault read', { timeout: 120_000 }, () => {
  it('stops the reading thread, and continuing completes the run', async () => {
    const stops: { readSeq: number; pid: number; tid: number; faults: number[] }[] = [];
    const states: string[] = [];
    const faultsWhileStopped: number[] = [];
    // No background pushes: every page faults, so there are always more than 3 reads to stop on.
    const r = await observe({ program: POSTCOPY, args: ['--pages', '256', '--threads', '2', '--no-push'], stopOn: { missing: true } }, 60_000,
      (e, s) => {
        if (e.event !== 'stopped') return;
        stops.push(e);
        if (stops.length > 3) {
          s.setStop({});
          s.continueAll();
          return;
        }
        // Held: the handler thread sleeps, nothing more is read until we continue.
        const before = s.analyzer.summary(0).faults;
        setTimeout(() => {
          states.push(threadState(e.pid, e.tid));
          faultsWhileStopped.push(s.analyzer.summary(0).faults - before);
          s.continue(e.readSeq);
        }, 150);
      });
    assert.equal(r.result.code, 0, r.stderr);
    assert.match(r.stdout, /check ok pages=256/);
    assert.ok(stops.length >= 4, `stopped ${stops.length} times`);
    assert.deepEqual(states, ['S', 'S', 'S']);
    assert.deepEqual(faultsWhileStopped, [0, 0, 0], 'no fault read while the handler was stopped');
    const cont = r.events.filter((e) => e.event === 'continued');
    assert.deepEqual(cont.slice(0, 3).map((e) => e.event === 'continued' && e.readSeq), stops.slice(0, 3).map((x) => x.readSeq));
    for (const x of stops) assert.ok(x.faults.length >= 1);
    const c = handlerCounts(r.stderr);
    assert.equal(r.result.summary.faults, c.faults);
    assert.equal(r.result.summary.resolved, c.faults);
  });

  it('stops the thread whose resolving ioctl failed, before it sees the error', async () => {
    const stops: { readSeq: number; pid: number; tid: number; errno?: string }[] = [];
    const states: string[] = [];
    const r = await observe({ program: POSTCOPY, args: ['--pages', '64', '--twice', '9'], stopOn: { ioctlError: true } }, 60_000,
      (e, s) => {
        if (e.event !== 'stopped') return;
        stops.push({ readSeq: e.readSeq, pid: e.pid, tid: e.tid, errno: e.ioctlError?.errno });
        setTimeout(() => {
          states.push(threadState(e.pid, e.tid));
          s.continue(e.readSeq);
        }, 150);
      });
    assert.equal(r.result.code, 0, r.stderr);
    assert.match(r.stdout, /check ok pages=64/);
    assert.deepEqual(stops.map((x) => x.errno), ['EEXIST']);
    assert.deepEqual(states, ['S'], 'the thread slept until continued');
    const ioctl = r.records.find((x) => x.type === 'ioctl' && x.stopped);
    assert.ok(ioctl && ioctl.type === 'ioctl' && ioctl.errno === 'EEXIST' && ioctl.seq === stops[0].readSeq);
    assert.ok(r.events.some((e) => e.event === 'continued' && e.readSeq === stops[0].readSeq));
    assert.equal(handlerCounts(r.stderr).eexist, 1, 'the handler saw EEXIST as without the observer');
  });

  it('places the stopped fault\'s page on the handler\'s userfaultfd when asked (resolve command)', async () => {
    const box: { asked?: Promise<{ page: string; placed: ObsResolve; late: ObsResolve; state: string }> } = {};
    const r = await observe({ program: POSTCOPY, args: ['--pages', '32', '--threads', '1', '--no-push'], stopOn: { missing: true } }, 60_000,
      (e, s) => {
        if (e.event !== 'stopped' || box.asked) return;
        s.setStop({});
        const page = s.analyzer.faultBySeq(e.faults[0])!.page;
        box.asked = (async () => {
          const placed = await s.resolve(e.readSeq, BigInt(page), 4096, ResolveHowCode.ZeroPage);
          const state = threadState(e.pid, e.tid);
          // A read that is not stopped (a record that never was): nothing is done.
          const late = await s.resolve(e.readSeq + 100000, BigInt(page), 4096, ResolveHowCode.Wake);
          s.continue(e.readSeq);
          return { page, placed, late, state };
        })();
      });
    assert.ok(box.asked, 'stopped once');
    const { page, placed, late, state } = await box.asked;
    assert.equal(placed.op, 'ZEROPAGE');
    assert.equal(placed.result, 0, String(placed.errno));
    assert.equal(placed.start, page);
    assert.equal(placed.len, 4096);
    assert.equal(state, 'S', 'the handler thread stayed stopped while the library placed the page');
    assert.equal(late.op, null);
    assert.equal(late.errno, 'ESRCH');
    // The handler's own UFFDIO_COPY of that page then fails with EEXIST; the page stays zero.
    assert.equal(handlerCounts(r.stderr).eexist, 1, r.stderr);
    assert.equal(r.result.code, 1);
    assert.match(r.stdout, /check FAILED bad=1 /);
    assert.deepEqual(r.result.summary.byDebugger, [{ op: 'ZEROPAGE', start: page, len: 4096, errno: null }]);
    assert.deepEqual(r.result.summary.duplicatePages, [page]);
    assert.ok(r.events.some((e) => e.event === 'resolved' && e.page === page && e.ioctl === 'UFFDIO_ZEROPAGE (debugger)'));
    assert.equal(r.result.summary.ioctls.ZEROPAGE, undefined, 'not counted as the handler\'s ioctl');
  });

  // --clone-handler: the child is made by syscall(SYS_clone, SIGCHLD, ...): no atfork handler runs.
  for (const mode of ['--scm', '--fork-handler', '--clone-handler']) {
    it(`stops, resolves and continues a handler in another process (${mode})`, async () => {
      type Stop = { pid: number; tid: number; readSeq: number; page: string };
      const box: { asked?: Promise<{ stop: Stop; state: string; placed: ObsResolve }> } = {};
      const r = await observe({ program: POSTCOPY, args: ['--pages', '32', '--threads', '1', '--no-push', mode], stopOn: { missing: true } }, 60_000,
        (e, s) => {
          if (e.event !== 'stopped' || box.asked) return;
          s.setStop({});
          const stop = { pid: e.pid, tid: e.tid, readSeq: e.readSeq, page: s.analyzer.faultBySeq(e.faults[0])!.page };
          box.asked = (async () => {
            // Held for a moment: the handler process sleeps in the library, not in its poll.
            await new Promise((res) => setTimeout(res, 100));
            const state = threadState(stop.pid, stop.tid);
            const placed = await s.resolve(stop.readSeq, BigInt(stop.page), 4096, ResolveHowCode.ZeroPage, 0, stop.pid);
            s.continue(stop.readSeq, stop.pid);
            return { stop, state, placed };
          })();
        });
      assert.ok(box.asked, 'stopped once');
      const { stop, state, placed } = await box.asked;
      assert.notEqual(stop.pid, r.session.pid, 'the stop is in the handler process, not the launched one');
      assert.ok(r.records.some((x) => x.type === 'read' && x.pid === stop.pid && x.seq === stop.readSeq && x.stopped));
      assert.equal(state, 'S');
      assert.equal(placed.op, 'ZEROPAGE');
      assert.equal(placed.result, 0, String(placed.errno));
      assert.equal(placed.pid, stop.pid, 'placed by the library in the handler process');
      assert.ok(r.events.some((e) => e.event === 'continued' && e.pid === stop.pid && e.readSeq === stop.readSeq));
      // The handler's own copy of that page then meets EEXIST, and the page stays zero.
      assert.equal(handlerCounts(r.stderr).eexist, 1, r.stderr);
      assert.equal(r.result.code, 1);
      assert.match(r.stdout, /check FAILED bad=1 /);
      assert.deepEqual(r.result.summary.byDebugger, [{ op: 'ZEROPAGE', start: stop.page, len: 4096, errno: null }]);
      assert.doesNotMatch(r.stderr, /uffd-observe/, 'the library said nothing');
    });
  }

  it('stops and continues a handler made by a raw clone, its records neither lost nor sent twice', async () => {
    const stops: { pid: number; tid: number; readSeq: number }[] = [];
    const states: string[] = [];
    const r = await observe({ program: POSTCOPY, args: ['--pages', '128', '--threads', '2', '--no-push', '--clone-handler'], stopOn: { missing: true } }, 60_000,
      (e, s) => {
        if (e.event !== 'stopped') return;
        stops.push({ pid: e.pid, tid: e.tid, readSeq: e.readSeq });
        if (stops.length >= 3) s.setStop({});
        setTimeout(() => {
          states.push(threadState(e.pid, e.tid));
          s.continue(e.readSeq, e.pid);
        }, 100);
      });
    assert.equal(r.result.code, 0, r.stderr);
    assert.match(r.stdout, /clone-handler/);
    assert.match(r.stdout, /check ok pages=128/);
    assert.ok(stops.length >= 3, `stopped ${stops.length} times`);
    const child = stops[0].pid;
    assert.notEqual(child, r.session.pid, 'the stop is in the cloned handler process, not the launched one');
    assert.ok(stops.every((x) => x.pid === child));
    assert.deepEqual(states.slice(0, 3), ['S', 'S', 'S'], 'the handler slept in the library until continued');
    for (const x of stops) {
      assert.ok(r.events.some((e) => e.event === 'continued' && e.pid === child && e.readSeq === x.readSeq));
    }
    // The child said who it is once, as a forked one does, and is the one that read every fault.
    const forks = r.records.filter((x) => x.type === 'fork' && x.pid === child);
    assert.equal(forks.length, 1, 'one fork record from the cloned child');
    assert.ok(forks[0].type === 'fork' && forks[0].ppid === r.session.pid);
    const reads = r.records.filter((x) => x.type === 'read');
    assert.ok(reads.length > 0 && reads.every((x) => x.pid === child), 'faults read by the cloned child, under its own pid');
    // The parent's batch copied into the child is not sent again: one userfaultfd, one registration.
    assert.equal(r.records.filter((x) => x.type === 'uffd').length, 1);
    assert.equal(r.records.filter((x) => x.type === 'register').length, 1);
    assert.equal(r.records.filter((x) => x.type === 'hello').length, 1);
    const c = handlerCounts(r.stderr);
    const s = r.result.summary;
    assert.equal(s.faults, c.faults, 'fault messages');
    assert.equal(s.reads, c.reads, 'reads that returned messages');
    assert.equal(s.ioctls.COPY?.ok, c.copies, 'successful UFFDIO_COPY');
    assert.equal(s.requested, c.placed_fault);
    assert.equal(s.pushed, c.placed_push);
    assert.equal(s.resolved, c.faults, 'every fault resolved');
    assert.equal(s.unregistered, 0, 'the faults are in the range the parent registered');
    assert.deepEqual(s.stuck, []);
    assert.doesNotMatch(r.stderr, /uffd-observe/, 'the library said nothing');
  });

  it('lets stopped threads go when the observer goes away', async () => {
    let killedChannel = false;
    const r = await observe({ program: POSTCOPY, args: ['--pages', '128'], stopOn: { missing: true } }, 60_000,
      (e, s) => {
        if (e.event === 'stopped' && !killedChannel) {
          killedChannel = true;
          // Closing the control pipe (as a crashed observer would) must release the thread.
          s.closeControl();
        }
      });
    assert.ok(killedChannel);
    assert.equal(r.result.code, 0, r.stderr);
    assert.match(r.stdout, /check ok pages=128/);
    assert.ok(r.events.some((e) => e.event === 'continued'));
  });
});
