// Auto-resolved faults streamed in `faults` batches (protocol 2), on the real kernel: every
// fault arrives once, batched; held faults, responses and other events keep their place among
// them; a fault followed by silence is written at once, not held for a batch to fill.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { HelperClient } from '../../server/core/helperClient';
import { faultEvents, FaultsEvent, StatsBody } from '../../server/protocol/messages';
import { withTimeout } from '../support/waits';

const root = path.resolve(__dirname, '..', '..');
const TOUCH = path.join(root, 'demo', 'bin', 'touch');
const SPIN = path.join(root, 'demo', 'bin', 'spin');

const clients: HelperClient[] = [];
after(async () => {
  for (const c of clients) await c.stop();
});

/** What arrived, in order: faults (batched or held), other events, program output lines. */
type Entry =
  | { kind: 'fault'; seq: number; held: boolean; page: bigint; at: bigint; t: number; batch: number }
  | { kind: 'resolved'; seq: number }
  | { kind: 'output'; text: string };

interface Run { c: HelperClient; log: Entry[]; batches: FaultsEvent[]; exited: Promise<void> }

async function launch(program: string, args: string[]): Promise<Run> {
  const c = new HelperClient();
  clients.push(c);
  await c.start();
  const run: Run = { c, log: [], batches: [], exited: Promise.resolve() };
  run.exited = withTimeout(new Promise<void>((resolve) => c.on('event', (e) => {
    const at = process.hrtime.bigint(); // CLOCK_MONOTONIC, as the helper's `t`
    if (e.event === 'faults') run.batches.push(e);
    for (const f of faultEvents(e)) {
      run.log.push({ kind: 'fault', seq: f.seq, held: f.held, page: BigInt(f.page), at, t: f.t, batch: run.batches.length });
    }
    if (e.event === 'resolved') run.log.push({ kind: 'resolved', seq: e.seq });
    if (e.event === 'exited') resolve();
  })), 60_000, `${path.basename(program)} to exit`);
  c.on('output', (s, text) => { if (s === 'stdout') run.log.push({ kind: 'output', text }); });
  await c.request('launch', { program, args, cwd: root, env: null });
  return run;
}

const faultsOfLog = (log: Entry[]) => log.filter((e): e is Extract<Entry, { kind: 'fault' }> => e.kind === 'fault');

describe('faults streamed in batches', { timeout: 120_000 }, () => {
  test('every fault of a busy program arrives once, in few events, as many as the helper counted', async () => {
    const r = await launch(TOUCH, ['--pages', '4096', '--threads', '2', '--pattern', 'random']);
    await r.c.request('policy', { stream: 'all' });
    await r.c.request('run', {});
    await r.exited;
    const stats: StatsBody = await r.c.request('stats', {});
    const faults = faultsOfLog(r.log);
    const counted = stats.faults.missing + stats.faults.wp + stats.faults.minor;
    assert.equal(faults.length, counted, 'one streamed fault per fault the helper counted');
    assert.deepEqual(faults.map((f) => f.seq), Array.from({ length: counted }, (_, i) => i + 1), 'seq 1.. each once, in order');
    assert.ok(faults.every((f) => !f.held));
    const m = /region (0x[0-9a-f]+) pages 4096/.exec(r.log.map((e) => (e.kind === 'output' ? e.text : '')).join(''));
    assert.ok(m, 'touch printed its region');
    const start = BigInt(m[1]);
    const inRegion = new Set(faults.filter((f) => f.page >= start && f.page < start + 4096n * 4096n).map((f) => f.page));
    assert.equal(inRegion.size, 4096, 'every page of the region faulted');
    // batched: far fewer events than faults (at this rate a 5 ms batch holds dozens)
    assert.ok(r.batches.length * 4 < counted, `${r.batches.length} faults events for ${counted} faults`);
  });

  test('held faults, their resolutions and program output keep their place among streamed faults', async () => {
    const r = await launch(TOUCH, ['--pages', '2000', '--threads', '2', '--pattern', 'random']);
    // every 40th missing fault is held; the rest are streamed in batches around them
    await r.c.request('policy', { hold: { missing: true }, holdEvery: 40, stream: 'all' });
    r.c.on('event', (e) => {
      if (e.event === 'fault' && e.held) void r.c.request('resolve', { seq: e.seq }).catch(() => undefined);
    });
    await r.c.request('run', {});
    await r.exited;
    const faults = faultsOfLog(r.log);
    const held = faults.filter((f) => f.held);
    assert.ok(held.length >= 2000 / 40 - 1, `${held.length} held faults`);
    // no delay policy: faults are handled in seq order, so any line written after a fault
    // (a held fault, a response, an event) must not overtake the batched faults before it
    const seqs = faults.map((f) => f.seq);
    assert.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]), 'seq strictly increasing in arrival order');
    assert.equal(seqs.length, seqs[seqs.length - 1], 'none missing');
    for (const h of held) {
      const at = r.log.findIndex((e) => e.kind === 'fault' && e.seq === h.seq);
      const res = r.log.findIndex((e) => e.kind === 'resolved' && e.seq === h.seq);
      assert.ok(res > at, `resolved ${h.seq} after its held fault`);
    }
    // the region line is printed before any touch of the region: it comes before those faults
    const out = r.log.findIndex((e) => e.kind === 'output' && /region 0x/.test(e.text));
    const m = /region (0x[0-9a-f]+)/.exec((r.log[out] as { text: string }).text)!;
    const start = BigInt(m[1]);
    const firstInRegion = r.log.findIndex((e) => e.kind === 'fault' && e.page >= start && e.page < start + 2000n * 4096n);
    assert.ok(out >= 0 && firstInRegion > out, `region line (${out}) before its first fault (${firstInRegion})`);
  });

  test('a fault followed by silence is written at once, alone', async () => {
    // spin touches one new page every 150 ms and prints nothing in between
    const r = await launch(SPIN, ['--pages', '16', '--interval-ms', '150', '--iterations', '8']);
    await r.c.request('policy', { stream: 'all' });
    await r.c.request('run', {});
    await r.exited;
    const out = r.log.map((e) => (e.kind === 'output' ? e.text : '')).join('');
    const m = /region (0x[0-9a-f]+) pages 16/.exec(out);
    assert.ok(m, `spin printed its region: ${out}`);
    const start = BigInt(m[1]);
    const spaced = faultsOfLog(r.log).filter((f) => f.page >= start && f.page < start + 16n * 4096n);
    assert.equal(spaced.length, 8, 'one fault per iteration');
    for (const f of spaced.slice(1)) {
      const waited = Number(f.at - BigInt(f.t)) / 1e6;
      assert.ok(waited < 100, `fault ${f.seq} reached the client ${waited.toFixed(1)} ms after it was read (the next comes 150 ms later)`);
      assert.equal(spaced.filter((g) => g.batch === f.batch).length, 1, `fault ${f.seq} in a batch of its own`);
    }
  });
});
