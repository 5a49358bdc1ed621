// The native helper on the real kernel, driven through the same client the adapter uses.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readlinkSync } from 'node:fs';
import { release } from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { HelperClient, HelperError } from '../../server/core/helperClient';
import { FaultEvent, faultEvents, HelperEvent, PROTOCOL_VERSION, unbatched } from '../../server/protocol/messages';
import { waitGone, withTimeout } from '../support/waits';

const root = path.resolve(__dirname, '..', '..');
const TOUCH = path.join(root, 'demo', 'bin', 'touch');

const clients: HelperClient[] = [];
after(async () => {
  for (const c of clients) await c.stop();
});

async function startHelper(): Promise<HelperClient> {
  const c = new HelperClient();
  clients.push(c);
  await c.start();
  return c;
}


interface Run { stdout: string; faults: FaultEvent[]; events: HelperEvent[]; code: number | null; pid: number }

/** Launches touch under a fresh helper; `onFault` may resolve held faults. */
async function runUnderHelper(args: string[], opts: { hold?: boolean } = {}): Promise<Run> {
  const c = await startHelper();
  let stdout = '';
  const faults: FaultEvent[] = [];
  const events: HelperEvent[] = [];
  c.on('output', (s, d) => { if (s === 'stdout') stdout += d; });
  const exited = new Promise<number | null>((resolve) => {
    c.on('event', (e) => {
      events.push(...unbatched(e));
      faults.push(...faultEvents(e));
      if (e.event === 'fault') {
        if (e.held) c.request('resolve', { seq: e.seq, how: 'default' }).catch((err: HelperError) => {
          if (err.code !== 'ESTATE') throw err; // already resolved with another fault on its page
        });
      }
      if (e.event === 'exited') resolve(e.code);
    });
  });
  const launched = await c.request('launch', { program: TOUCH, args, cwd: root, env: null });
  await c.request('policy', { hold: { missing: opts.hold ?? false }, stream: 'all' });
  await c.request('run', {});
  const code = await withTimeout(exited, 60_000, `exit of touch ${args.join(' ')}`);
  // Output written just before exit may still be in the pipe.
  await withTimeout(new Promise<void>((r) => { const check = () => (/checksum/.test(stdout) ? r() : setTimeout(check, 10)); check(); }), 5000, 'program output');
  return { stdout, faults, events, code, pid: launched.pid };
}


function regionOf(stdout: string): { start: bigint; pages: number } {
  const m = /region (0x[0-9a-f]+) pages (\d+)/.exec(stdout);
  assert.ok(m, `touch printed its region: ${stdout}`);
  return { start: BigInt(m[1]), pages: Number(m[2]) };
}

function faultsIn(faults: FaultEvent[], start: bigint, pages: number): FaultEvent[] {
  const end = start + BigInt(pages) * 4096n;
  return faults.filter((f) => BigInt(f.addr) >= start && BigInt(f.addr) < end);
}

describe('uffd-helper on the real kernel', { timeout: 180_000 }, () => {
  test('built', () => {
    assert.ok(existsSync(TOUCH), 'demo/bin/touch is built (npm run build)');
  });

  test('handshake reports kernel, features and ioctls by name', async () => {
    const c = await startHelper();
    const h = c.hello!;
    assert.equal(h.protocol, PROTOCOL_VERSION);
    assert.ok(release().startsWith(h.kernel), `kernel ${h.kernel} is the running one (${release()})`);
    assert.ok(h.uffd.available, `userfaultfd available: ${h.uffd.error}`);
    assert.ok(h.uffd.source === 'syscall' || h.uffd.source === 'dev');
    for (const f of ['THREAD_ID', 'MISSING_SHMEM', 'PAGEFAULT_FLAG_WP']) assert.ok(h.uffd.features.names.includes(f), `feature ${f}`);
    for (const i of ['UFFDIO_COPY', 'UFFDIO_ZEROPAGE', 'UFFDIO_WAKE']) assert.ok(h.uffd.ioctls.names.includes(i), `ioctl ${i}`);
    assert.equal(BigInt(h.uffd.features.raw) & 0x100n, 0x100n);
  });

  test('a second hello with another protocol version is refused with EVERSION', async () => {
    const c = await startHelper();
    await assert.rejects(c.request('hello', { protocol: 99 }), (e: HelperError) => e.code === 'EVERSION' && /99/.test(e.message));
  });

  test('launching a missing program fails with a clear error', async () => {
    const c = await startHelper();
    await assert.rejects(
      c.request('launch', { program: '/nonexistent/prog', args: [], cwd: '/', env: null }),
      (e: HelperError) => e.code === 'ENOENT' && /nonexistent/.test(e.message));
    // The helper is still serving.
    assert.equal((await c.request('stats', {})).held, 0);
  });

  test('requests in the wrong state are refused, the helper keeps running', async () => {
    const c = await startHelper();
    await assert.rejects(c.request('run', {}), (e: HelperError) => e.code === 'ESTATE');
    await assert.rejects(c.request('resolve', { seq: 999, how: 'default' }), (e: HelperError) => e.code === 'ESTATE');
    assert.equal((await c.request('hello', { protocol: PROTOCOL_VERSION })).protocol, PROTOCOL_VERSION);
  });

  test('exactly one missing fault per touched page, each with a thread id and time', async () => {
    const r = await runUnderHelper(['--pages', '1000', '--pattern', 'seq']);
    assert.equal(r.code, 0);
    const { start, pages } = regionOf(r.stdout);
    const mine = faultsIn(r.faults, start, pages);
    assert.equal(mine.length, 1000);
    assert.equal(new Set(mine.map((f) => f.page)).size, 1000);
    for (const f of mine) {
      assert.equal(f.kind, 'missing');
      assert.equal(f.access, 'write');
      assert.ok(f.tid > 0);
      assert.equal(f.ioctl, 'UFFDIO_COPY');
    }
    const seqs = r.faults.map((f) => f.seq);
    assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), 'seq increases');
    assert.ok(r.faults.every((f, i) => i === 0 || f.t >= r.faults[i - 1].t), 'timestamps are monotonic');
  });

  test('read touches are resolved with the zero page', async () => {
    const r = await runUnderHelper(['--pages', '64', '--read']);
    const { start, pages } = regionOf(r.stdout);
    const mine = faultsIn(r.faults, start, pages);
    assert.equal(mine.length, 64);
    assert.ok(mine.every((f) => f.access === 'read' && f.ioctl === 'UFFDIO_ZEROPAGE'));
  });

  for (const args of [
    ['--pages', '2000', '--pattern', 'random'],
    ['--pages', '1500', '--pattern', 'stride:7', '--threads', '4'],
    ['--pages', '512', '--read', '--threads', '3'],
  ]) {
    test(`output is identical to a run without the debugger: touch ${args.join(' ')}`, async () => {
      const plain = spawnSync(TOUCH, args, { encoding: 'utf8' });
      assert.equal(plain.status, 0);
      const r = await runUnderHelper(args);
      assert.equal(r.code, 0);
      const strip = (s: string) => s.replace(/region 0x[0-9a-f]+/, 'region ADDR');
      assert.equal(strip(r.stdout), strip(plain.stdout));
      const { start, pages } = regionOf(r.stdout);
      assert.equal(faultsIn(r.faults, start, pages).length, pages);
      if (args.includes('--threads')) {
        const tids = new Set(faultsIn(r.faults, start, pages).map((f) => f.tid));
        assert.equal(tids.size, Number(args[args.indexOf('--threads') + 1]), 'faults come from every worker thread');
      }
    });
  }

  test('held faults resolved one by one by the client give the same result', async () => {
    const args = ['--pages', '300', '--pattern', 'random', '--threads', '2'];
    const plain = spawnSync(TOUCH, args, { encoding: 'utf8' });
    const r = await runUnderHelper(args, { hold: true });
    assert.equal(r.code, 0);
    assert.equal(r.stdout.split('\n')[1], plain.stdout.split('\n')[1], 'checksum line');
    const held = r.faults.filter((f) => f.held);
    const resolved = new Set(r.events.filter((e) => e.event === 'resolved').map((e) => (e as { seq: number }).seq));
    assert.ok(held.length >= 300);
    for (const f of held) assert.ok(resolved.has(f.seq), `held fault #${f.seq} was resolved`);
  });

  test('program output precedes the held fault that follows it (no sleeps)', async () => {
    const c = await startHelper();
    let stdout = '';
    const seen: { f: FaultEvent; stdoutThen: string }[] = [];
    c.on('output', (s, d) => { if (s === 'stdout') stdout += d; });
    const exited = new Promise<number | null>((resolve) => {
      c.on('event', (e) => {
        if (e.event === 'fault' && e.held) {
          seen.push({ f: e, stdoutThen: stdout });
          c.request('resolve', { seq: e.seq, how: 'default' }).catch((err: HelperError) => {
            if (err.code !== 'ESTATE') throw err;
          });
        }
        if (e.event === 'exited') resolve(e.code);
      });
    });
    await c.request('launch', { program: TOUCH, args: ['--pages', '8', '--pattern', 'seq'], cwd: root, env: null });
    await c.request('policy', { hold: { missing: true }, stream: 'all' });
    await c.request('run', {});
    assert.equal(await withTimeout(exited, 60_000, 'exit of touch'), 0);
    // No waiting for stragglers: `exited` comes after everything the program wrote.
    assert.match(stdout, /checksum [0-9a-f]+ touched 8\n$/, 'all output arrived before exited');
    const { start } = regionOf(stdout);
    const first = seen.find((s) => BigInt(s.f.page) === start);
    assert.ok(first, `a held fault on the region's first page 0x${start.toString(16)}`);
    assert.match(first.stdoutThen, new RegExp(`region 0x${start.toString(16)} pages 8\n`),
      'the region line was received before the held fault on its first page');
  });

  test('the program keeps no userfaultfd of its own, and shutdown leaves no process', async () => {
    const c = await startHelper();
    const l = await c.request('launch', { program: TOUCH, args: ['--pages', '8', '--sleep-ms', '30000'], cwd: root, env: null });
    assert.ok(l.regions.some((r) => r.name === '[stack]'), 'the stack is registered at exec');
    await c.request('run', {});
    const fds = readdirSync(`/proc/${l.pid}/fd`).map((fd) => {
      try { return readlinkSync(`/proc/${l.pid}/fd/${fd}`); } catch { return ''; }
    });
    assert.ok(!fds.some((t) => t.includes('userfaultfd')), `no userfaultfd among ${fds.join(', ')}`);
    const helperPid = c.pid!;
    await c.stop();
    await waitGone(l.pid);
    await waitGone(helperPid);
  });
});
