// Attaching the helper to processes that are already running (demo/bin/spin), on the real kernel.
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdtempSync, readdirSync, readFileSync, readlinkSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { findHelper, HelperClient, HelperError } from '../../server/core/helperClient';
import { FaultEvent, faultEvents, HelperEvent, RegionEvent, unbatched } from '../../server/protocol/messages';
import { uffdVmas } from '../support/spin';
import { until, withTimeout } from '../support/waits';

const root = path.resolve(__dirname, '..', '..');
const SPIN = path.join(root, 'demo', 'bin', 'spin');
const PAGE = 4096n;

const clients: HelperClient[] = [];
const spins: Spin[] = [];
after(async () => {
  for (const c of clients) await c.stop();
  for (const s of spins) s.proc.kill('SIGKILL');
});



interface Share { worker: number; tid: number; from: number; to: number }

/** demo/bin/spin started by the test itself (not by the helper), with its output collected. */
class Spin {
  readonly proc: ChildProcess;
  out = '';
  exited: Promise<number | null>;
  /**
   * stdinPipe: stdin is a real pipe (fed by `cat`), not the socket Node makes for 'pipe'.
   * asNobody: runs as uid/gid 65534.
   */
  constructor(args: string[], opts: { stdinPipe?: boolean; asNobody?: boolean } = {}) {
    if (opts.stdinPipe) {
      this.proc = spawn('sh', ['-c', 'cat | exec "$0" "$@"', SPIN, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
    } else if (opts.asNobody) {
      this.proc = spawn('setpriv', ['--reuid=65534', '--regid=65534', '--clear-groups', SPIN, ...args], { stdio: ['pipe', 'pipe', 'inherit'] });
    } else {
      this.proc = spawn(SPIN, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    }
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stdout!.on('data', (d: string) => { this.out += d; });
    this.exited = new Promise((resolve) => this.proc.on('exit', (code) => resolve(code)));
    spins.push(this);
  }
  /** As spin prints it: with stdinPipe the spawned process is the shell. */
  get pid(): number {
    const m = /^pid (\d+) /.exec(this.out);
    assert.ok(m, 'spin printed its pid');
    return Number(m[1]);
  }
  async waitFor(re: RegExp, what: string, ms = 10_000): Promise<RegExpExecArray> {
    let m: RegExpExecArray | null = null;
    await until(() => (m = re.exec(this.out)) !== null, ms, `${what} in spin's output: ${this.out.slice(-300)}`);
    return m!;
  }
  async started(workers: number): Promise<{ region: bigint; pages: number; shares: Share[] }> {
    const m = await this.waitFor(/region (0x[0-9a-f]+) pages (\d+)/, 'its region');
    await until(() => (this.out.match(/^worker /gm) ?? []).length === workers, 10_000, `${workers} worker lines`);
    const shares = [...this.out.matchAll(/^worker (\d+) tid (\d+) pages (\d+)-(\d+)$/gm)]
      .map((w) => ({ worker: Number(w[1]), tid: Number(w[2]), from: Number(w[3]), to: Number(w[4]) }));
    return { region: BigInt(m[1]), pages: Number(m[2]), shares };
  }
  /** Checksum lines "W iter I checksum X" printed from output offset `from` on. */
  checksums(from = 0): { worker: number; iter: number; sum: bigint }[] {
    return [...this.out.slice(from).matchAll(/^(\d+) iter (\d+) checksum ([0-9a-f]+)$/gm)]
      .map((c) => ({ worker: Number(c[1]), iter: Number(c[2]), sum: BigInt('0x' + c[3]) }));
  }
}

/** What spin's checksum must be after `iter` iterations over a share of n pages (see spin.c). */
function expectedChecksum(iter: number, n: number): bigint {
  let sum = 0n;
  for (let k = 0; k < n && k < iter; k++) sum += BigInt(k + 1 + Math.floor((iter - 1 - k) / n) * n);
  return sum;
}

function assertChecksums(s: Spin, shares: Share[], from: number, what: string): number {
  const lines = s.checksums(from);
  for (const l of lines) {
    const sh = shares.find((x) => x.worker === l.worker)!;
    assert.equal(l.sum, expectedChecksum(l.iter, sh.to - sh.from), `${what}: worker ${l.worker} checksum at iteration ${l.iter}`);
  }
  return lines.length;
}

interface Attached { c: HelperClient; faults: FaultEvent[]; events: HelperEvent[] }

async function helper(helperPath?: string): Promise<Attached> {
  const c = new HelperClient();
  clients.push(c);
  await c.start(helperPath);
  const faults: FaultEvent[] = [];
  const events: HelperEvent[] = [];
  c.on('event', (e) => {
    events.push(...unbatched(e));
    faults.push(...faultEvents(e));
  });
  return { c, faults, events };
}

function inRegion(f: FaultEvent, start: bigint, pages: number): boolean {
  const a = BigInt(f.addr);
  return a >= start && a < start + BigInt(pages) * PAGE;
}

function tracerPid(pid: number): number {
  return Number(/TracerPid:\s*(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
}

function fdTargets(pid: number): string[] {
  return readdirSync(`/proc/${pid}/fd`).map((fd) => {
    try { return readlinkSync(`/proc/${pid}/fd/${fd}`); } catch { return ''; }
  });
}

function wchan(pid: number): string {
  try { return readFileSync(`/proc/${pid}/wchan`, 'utf8'); } catch { return ''; }
}

describe('attach to a running process', { timeout: 180_000 }, () => {
  test('built', () => {
    assert.ok(existsSync(SPIN), 'demo/bin/spin is built (npm run build)');
  });

  test('single-threaded: faults with its tid, no ptrace left, no userfaultfd in the target, clean detach', async () => {
    const s = new Spin(['--pages', '3000', '--interval-ms', '3']);
    const { region, pages, shares } = await s.started(1);
    const { c, faults, events } = await helper();
    const body = await c.request('attach', { pid: s.pid });
    assert.equal(body.pid, s.pid);
    assert.deepEqual(body.threads, [s.pid]);
    assert.ok(body.features.names.includes('THREAD_ID'));
    assert.ok(body.regions.some((r) => BigInt(r.start) <= region && BigInt(r.end) > region && r.via === 'attach'),
      `the region ${region.toString(16)} is registered: ${JSON.stringify(body.regions)}`);
    assert.ok(body.regions.some((r) => r.name === '[stack]'));
    assert.equal(tracerPid(s.pid), 0, 'ptrace is released after setup');
    assert.ok(!fdTargets(s.pid).some((t) => t.includes('userfaultfd')), 'the target keeps no userfaultfd');
    await until(() => faults.filter((f) => inRegion(f, region, pages)).length >= 20, 10_000, '20 faults in the region');
    const mine = faults.filter((f) => inRegion(f, region, pages));
    assert.ok(mine.every((f) => f.tid === s.pid && f.kind === 'missing' && f.access === 'write'));
    assert.equal(new Set(mine.map((f) => f.page)).size, mine.length, 'one fault per untouched page');
    const mark = s.out.length;
    await until(() => s.checksums(mark).length >= 2, 10_000, 'two checksum lines while attached');
    assertChecksums(s, shares, 0, 'while attached');
    assert.ok(uffdVmas(s.pid).length > 0, 'registered VMAs show um');

    const d = await c.request('detach', {});
    assert.equal(d.pid, s.pid);
    assert.ok(d.unregistered > 0);
    await until(() => events.some((e) => e.event === 'detached'), 5000, 'the detached event');
    assert.deepEqual(uffdVmas(s.pid), [], 'no VMA keeps um after detach');
    const n = faults.length;
    const afterDetach = s.out.length;
    await until(() => s.checksums(afterDetach).length >= 2, 10_000, 'two checksum lines after detach');
    assertChecksums(s, shares, 0, 'after detach');
    assert.equal(faults.length, n, 'no faults after detach');
    assert.equal(tracerPid(s.pid), 0);
    await assert.rejects(c.request('track', { anon: true }), (e: HelperError) => e.code === 'ESTATE');
  });

  test('four worker threads: every fault in a share comes from the thread that owns it', async () => {
    const s = new Spin(['--pages', '4000', '--interval-ms', '3', '--threads', '4']);
    const { region, pages, shares } = await s.started(4);
    const { c, faults } = await helper();
    const body = await c.request('attach', { pid: s.pid });
    for (const sh of shares) assert.ok(body.threads.includes(sh.tid), `thread ${sh.tid} was seen`);
    assert.equal(body.threads.length, 5, 'main thread and four workers');
    assert.equal(tracerPid(s.pid), 0);
    await until(() => new Set(faults.filter((f) => inRegion(f, region, pages)).map((f) => f.tid)).size === 4, 10_000, 'faults from all four workers');
    for (const f of faults.filter((x) => inRegion(x, region, pages))) {
      const idx = Number((BigInt(f.page) - region) / PAGE);
      const owner = shares.find((sh) => idx >= sh.from && idx < sh.to)!;
      assert.equal(f.tid, owner.tid, `page ${idx} faulted by its owner`);
    }
    const mark = s.out.length;
    await until(() => s.checksums(mark).length >= 4, 10_000, 'checksums while attached');
    assertChecksums(s, shares, 0, 'four threads');
    await c.request('detach', {});
    assert.deepEqual(uffdVmas(s.pid), []);
  });

  test('a main thread blocked in read() on a pipe completes its read correctly, attached and after detach', async () => {
    const s = new Spin(['--pages', '3000', '--interval-ms', '3', '--block', 'read'], { stdinPipe: true });
    const { region, pages, shares } = await s.started(1);
    await until(() => /pipe_read/.test(wchan(s.pid)), 5000, `main thread blocked in read (wchan ${wchan(s.pid)})`);
    const { c, faults } = await helper();
    await c.request('attach', { pid: s.pid });
    await until(() => faults.some((f) => inRegion(f, region, pages) && f.tid === shares[0].tid), 10_000, 'a fault of the worker');
    s.proc.stdin!.write('hello\n');
    await s.waitFor(/^read 6 bytes: hello$/m, 'the read after attach');
    await c.request('detach', {});
    s.proc.stdin!.write('again\n');
    await s.waitFor(/^read 6 bytes: again$/m, 'the read after detach');
    assert.doesNotMatch(s.out, /read failed/);
    assertChecksums(s, shares, 0, 'blocked in read');
    s.proc.stdin!.end();
    assert.equal(await withTimeout(s.exited, 5000, 'spin exit at stdin EOF'), 0);
  });

  test('a main thread in nanosleep sleeps its full time, attached and after detach', async () => {
    const s = new Spin(['--pages', '3000', '--interval-ms', '3', '--block', 'sleep', '--sleep-ms', '400']);
    const { region, pages } = await s.started(1);
    await until(() => /nanosleep/.test(wchan(s.pid)), 5000, `main thread in nanosleep (wchan ${wchan(s.pid)})`);
    const mark = s.out.length;
    const { c, faults } = await helper();
    await c.request('attach', { pid: s.pid });
    await until(() => faults.some((f) => inRegion(f, region, pages)), 10_000, 'a fault while attached');
    await until(() => (s.out.slice(mark).match(/^slept/gm) ?? []).length >= 2, 10_000, 'two sleeps while attached');
    await c.request('detach', {});
    await until(() => (s.out.slice(mark).match(/^slept/gm) ?? []).length >= 3, 10_000, 'a sleep after detach');
    assert.doesNotMatch(s.out, /interrupted/);
    for (const m of s.out.matchAll(/^slept (\d+) ms$/gm)) assert.ok(Number(m[1]) >= 400, `slept ${m[1]} ms, not less than asked`);
  });

  test('detach with a fault held: the thread continues and its memory is intact', async () => {
    const s = new Spin(['--pages', '3000', '--interval-ms', '2', '--threads', '2']);
    const { region, pages, shares } = await s.started(2);
    const { c, faults, events } = await helper();
    await c.request('attach', { pid: s.pid });
    await c.request('policy', { hold: { missing: true } });
    await until(() => faults.some((f) => f.held && inRegion(f, region, pages)), 10_000, 'a held fault in the region');
    const held = faults.find((f) => f.held && inRegion(f, region, pages))!;
    assert.ok(shares.some((sh) => sh.tid === held.tid), 'held on a worker');
    const mark = s.out.length;
    await c.request('detach', {});
    await until(() => events.some((e) => e.event === 'detached'), 5000, 'detached');
    assert.ok(events.some((e) => e.event === 'resolved' && e.seq === held.seq), 'the held fault was resolved by the default');
    await until(() => s.checksums(mark).filter((l) => shares.find((sh) => sh.tid === held.tid)!.worker === l.worker).length >= 2,
      10_000, 'the held thread printing checksums again');
    assertChecksums(s, shares, 0, 'after detach with a held fault');
    assert.deepEqual(uffdVmas(s.pid), []);
  });

  test('a mapping made after attach is registered (region event) and faults', async () => {
    const s = new Spin(['--pages', '200', '--interval-ms', '10', '--mmap-every', '30']);
    await s.started(1);
    const { c, faults, events } = await helper();
    await c.request('attach', { pid: s.pid });
    const mark = s.out.length;
    await until(() => {
      const maps = [...s.out.slice(mark).matchAll(/^mmap (0x[0-9a-f]+) pages (\d+)$/gm)].map((m) => BigInt(m[1]));
      return maps.some((a) => events.some((e) => e.event === 'region' && e.region.via === 'scan' &&
        BigInt(e.region.start) <= a && BigInt(e.region.end) > a) &&
        faults.some((f) => BigInt(f.addr) >= a && BigInt(f.addr) < a + 64n * PAGE));
    }, 15_000, 'a region event and a fault for an mmap made after attach');
    const r = events.find((e) => e.event === 'region' && e.region.via === 'scan') as RegionEvent;
    assert.equal(r.action, 'add');
  });

  test('track and untrack: register by name, then a range, then unregister it', async () => {
    const s = new Spin(['--pages', '3000', '--interval-ms', '3']);
    const { region, pages } = await s.started(1);
    const { c, faults } = await helper();
    const body = await c.request('attach', { pid: s.pid, track: { names: ['[heap]'] } });
    assert.ok(body.regions.length > 0 && body.regions.every((r) => r.name === '[heap]'), JSON.stringify(body.regions));
    const range = { start: '0x' + region.toString(16), end: '0x' + (region + BigInt(pages) * PAGE).toString(16) };
    const t = await c.request('track', { ranges: [range] });
    assert.deepEqual(t.regions.map((r) => [r.start, r.end, r.via]), [[range.start, range.end, 'track']]);
    await until(() => faults.some((f) => inRegion(f, region, pages)), 10_000, 'a fault in the tracked range');
    const again = await c.request('track', { ranges: [range] });
    assert.deepEqual(again.regions, [], 'tracking a registered range again adds nothing');
    const u = await c.request('untrack', { ranges: [range] });
    assert.deepEqual(u.regions.map((r) => [r.start, r.end]), [[range.start, range.end]]);
    const n = faults.filter((f) => inRegion(f, region, pages)).length;
    const mark = s.out.length;
    await until(() => s.checksums(mark).length >= 2, 10_000, 'progress after untrack');
    assert.equal(faults.filter((f) => inRegion(f, region, pages)).length, n, 'no faults in the untracked range');
    await assert.rejects(c.request('attach', { pid: s.pid }), (e: HelperError) => e.code === 'ESTATE');
    await assert.rejects(c.request('track', { names: ['/no/such/file'] }), (e: HelperError) => e.code === 'ENOENT' && /no mapping named/.test(e.message));
    await assert.rejects(c.request('track', { anon: true, names: ['[heap]'] } as never), (e: HelperError) => e.code === 'EPROTO');
  });

  test('the process exits while attached: exited with unknown code', async () => {
    const s = new Spin(['--pages', '400', '--interval-ms', '2', '--iterations', '150']);
    await s.started(1);
    const { c, events } = await helper();
    await c.request('attach', { pid: s.pid });
    assert.equal(await withTimeout(s.exited, 10_000, 'spin exit'), 0);
    await until(() => events.some((e) => e.event === 'exited'), 5000, 'the exited event');
    const ex = events.find((e) => e.event === 'exited')!;
    assert.deepEqual(ex, { type: 'event', event: 'exited', pid: s.pid, code: null, signal: null });
    await assert.rejects(c.request('detach', {}), (e: HelperError) => e.code === 'ESTATE');
  });

  test('the helper ending while attached detaches: the process runs on, unregistered', async () => {
    const s = new Spin(['--pages', '3000', '--interval-ms', '3']);
    const { shares } = await s.started(1);
    const { c } = await helper();
    await c.request('attach', { pid: s.pid });
    assert.ok(uffdVmas(s.pid).length > 0);
    await c.stop(); // shutdown, then end of stdin
    assert.equal(s.proc.exitCode, null, 'the attached process was not killed');
    assert.deepEqual(uffdVmas(s.pid), []);
    const mark = s.out.length;
    await until(() => s.checksums(mark).length >= 1, 10_000, 'progress after the helper ended');
    assertChecksums(s, shares, 0, 'after the helper ended');
  });

  test('memory the process handles with its own userfaultfd is refused with EBUSY, the rest is attached', async () => {
    const s = new Spin(['--pages', '500', '--interval-ms', '3', '--own-uffd']);
    const { region, pages, shares } = await s.started(1);
    const range = { start: '0x' + region.toString(16), end: '0x' + (region + BigInt(pages) * PAGE).toString(16) };
    const { c, faults } = await helper();
    await assert.rejects(c.request('attach', { pid: s.pid, track: { ranges: [range] } }),
      (e: HelperError) => e.code === 'EBUSY' && /already owned by the process's own userfaultfd: use observe mode/.test(e.message));
    assert.equal(tracerPid(s.pid), 0, 'a failed attach leaves no ptrace');
    const body = await c.request('attach', { pid: s.pid });
    assert.ok(!body.regions.some((r) => BigInt(r.start) < region + BigInt(pages) * PAGE && BigInt(r.end) > region),
      'the process\'s own range is not registered by the helper');
    assert.ok(body.regions.some((r) => r.name === '[stack]'), 'the rest is');
    await assert.rejects(c.request('track', { ranges: [range] }),
      (e: HelperError) => e.code === 'EBUSY' && e.message.includes(`range ${range.start}-${range.end} already owned`));
    const mark = s.out.length;
    await until(() => s.checksums(mark).length >= 2, 10_000, 'progress with its own handler');
    assertChecksums(s, shares, 0, 'own userfaultfd');
    assert.ok(!faults.some((f) => inRegion(f, region, pages)), 'its own faults never reach the helper');
    await c.request('detach', {});
  });

  test('without permission to ptrace: EPERM naming the uid and ptrace_scope', async () => {
    const s = new Spin(['--pages', '100', '--interval-ms', '5']);
    await s.started(1);
    const dir = mkdtempSync(path.join(tmpdir(), 'uffd-attach-'));
    const wrapper = path.join(dir, 'helper-as-nobody');
    writeFileSync(wrapper, `#!/bin/sh\nexec setpriv --reuid=65534 --regid=65534 --clear-groups ${findHelper()}\n`);
    chmodSync(wrapper, 0o755);
    const { c } = await helper(wrapper);
    await assert.rejects(c.request('attach', { pid: s.pid }), (e: HelperError) => e.code === 'EPERM' &&
      /not permitted to ptrace/.test(e.message) && /uid 65534/.test(e.message) && /ptrace_scope/.test(e.message));
  });

  test('a process that may not create a userfaultfd: the error says how to allow it', async () => {
    const unpriv = readFileSync('/proc/sys/vm/unprivileged_userfaultfd', 'utf8').trim();
    const devMode = statSync('/dev/userfaultfd', { throwIfNoEntry: false })?.mode ?? 0;
    if (unpriv !== '0' || (devMode & 0o006) !== 0) {
      // this machine lets everyone have a userfaultfd: nothing to refuse
      return;
    }
    const s = new Spin(['--pages', '100', '--interval-ms', '5'], { asNobody: true });
    const { shares } = await s.started(1);
    const { c } = await helper();
    await assert.rejects(c.request('attach', { pid: s.pid }), (e: HelperError) =>
      /cannot create a userfaultfd/.test(e.message) && /vm.unprivileged_userfaultfd/.test(e.message) &&
      /\/dev\/userfaultfd/.test(e.message));
    assert.equal(tracerPid(s.pid), 0, 'released after the failure');
    assert.ok(!fdTargets(s.pid).some((t) => /userfaultfd/.test(t)), 'no descriptor left behind in the process');
    const mark = s.out.length;
    await until(() => s.checksums(mark).length >= 1, 10_000, 'the process running on');
    assertChecksums(s, shares, 0, 'after a refused attach');
  });

  test('attach errors name the cause', async () => {
    const { c } = await helper();
    // a pid that existed and is gone
    const gone = spawn('true');
    await new Promise((r) => gone.on('exit', r));
    await assert.rejects(c.request('attach', { pid: gone.pid! }),
      (e: HelperError) => e.code === 'ESRCH' && /no process with pid/.test(e.message));
    await assert.rejects(c.request('attach', { pid: 2 }),
      (e: HelperError) => e.code === 'EPERM' && /kernel thread/.test(e.message));
    await assert.rejects(c.request('attach', { pid: c.pid! }),
      (e: HelperError) => /helper itself/.test(e.message));
    await assert.rejects(c.request('attach', { pid: process.pid }),
      (e: HelperError) => /client/.test(e.message));
    // a zombie: `sleep 0` whose parent (exec'd into `sleep 30`) never reaps it
    const parent = spawn('sh', ['-c', 'sleep 0 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'inherit'] });
    spins.push({ proc: parent } as Spin);
    let zpid = 0;
    parent.stdout!.setEncoding('utf8');
    parent.stdout!.on('data', (d: string) => { zpid = Number(d.trim()); });
    await until(() => zpid > 0 && /\) Z /.test(readFileSync(`/proc/${zpid}/stat`, 'utf8')), 5000, 'a zombie');
    await assert.rejects(c.request('attach', { pid: zpid }),
      (e: HelperError) => e.code === 'ESRCH' && /zombie/.test(e.message));
    await assert.rejects(c.request('attach', { pid: 0 }), (e: HelperError) => e.code === 'EPROTO');
    // after all that, the helper can still attach
    const s = new Spin(['--pages', '100', '--interval-ms', '5']);
    await s.started(1);
    assert.equal((await c.request('attach', { pid: s.pid })).pid, s.pid);
  });
});
