// Timeline pipeline: every fault of a fault-heavy run travels helper → adapter (DAP custom
// events `uffd/events`) → a real panel in Debian's chromium, as in VS Code. Prints the sustained
// rate at each end and checks nothing was lost (every seq from 1 to the last arrives once).
// Compared in the same run with the same program under the helper alone (no adapter, no panel).
//   node --import tsx bench/pipeline.bench.ts [--pages N]
// NO_PANEL=1 stops at the adapter (no browser), to tell the adapter's cost from the panel's.
import * as path from 'node:path';
import { DebugClient } from '@vscode/debugadapter-testsupport';
import { DebugProtocol } from '@vscode/debugprotocol';
import { HelperClient } from '../server/core/helperClient';

/* eslint-disable @typescript-eslint/no-explicit-any -- page.evaluate callbacks run in the browser */
declare const window: any;

const root = path.resolve(__dirname, '..');
const TOUCH = path.join(root, 'demo', 'bin', 'touch');
const i = process.argv.indexOf('--pages');
const pages = i > 0 ? Number(process.argv[i + 1]) : 65536;
const args = ['--pages', String(pages), '--threads', '2', '--pattern', 'random'];

async function helperAlone(): Promise<{ faults: number; ms: number }> {
  const c = new HelperClient();
  await c.start();
  let faults = 0;
  const t0 = process.hrtime.bigint();
  const done = new Promise<void>((resolve) => c.on('event', (e) => {
    if (e.event === 'fault') faults++;
    if (e.event === 'exited') resolve();
  }));
  await c.request('launch', { program: TOUCH, args, cwd: root, env: null });
  await c.request('policy', { stream: 'all' });
  await c.request('run', {});
  await done;
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  await c.stop();
  return { faults, ms };
}

async function main(): Promise<void> {
  const { launchBrowser, openPanel, startServer } = await import('../test/webview/harness.mjs' as string);
  const server = await startServer();
  const browser = await launchBrowser();
  const panel = await openPanel(browser.context, server.origin, 'dark');
  const dc = new DebugClient(process.execPath, path.join(root, 'dist', 'adapter.js'), 'uffd');
  dc.defaultTimeout = 120_000;
  await dc.start();
  let atAdapter = 0;
  let forwarding = Promise.resolve();
  const seqs = new Set<number>();
  let firstBatch = 0;
  let lastBatch = 0;
  dc.on('uffd/events', (e: DebugProtocol.Event) => {
    const batch = (e.body as { batch: { event: string; seq?: number }[] }).batch;
    const now = performance.now();
    if (!firstBatch) firstBatch = now;
    lastBatch = now;
    for (const ev of batch) {
      if (ev.event === 'fault') {
        atAdapter++;
        seqs.add(ev.seq!);
      }
    }
    // As the extension does: one postMessage per batch, in order.
    if (!process.env.NO_PANEL) forwarding = forwarding.then(() => panel.send({ type: 'events', batch }));
  });
  const t0 = performance.now();
  const exited = dc.waitForEvent('exited');
  await Promise.all([
    dc.waitForEvent('initialized').then(() => dc.setExceptionBreakpointsRequest({ filters: [] })).then(() => dc.configurationDoneRequest()),
    dc.launch({ program: TOUCH, args, cwd: root, stopOnFirstFault: false } as DebugProtocol.LaunchRequestArguments),
  ]);
  await exited;
  const runMs = performance.now() - t0;
  await forwarding;
  if (!process.env.NO_PANEL) {
    await panel.page.waitForFunction((n: number) => window.__timeline.stats().events === n, atAdapter, { timeout: 120_000 })
      .catch(() => undefined);
  }
  await panel.page.evaluate(() => window.__timeline.frame());
  const paintedMs = performance.now() - t0;
  const atPanel = await panel.page.evaluate(() => window.__timeline.stats().events);
  const maxSeq = Math.max(...seqs);
  await dc.stop();
  await browser.close();
  await server.close();
  const alone = await helperAlone();

  console.log(`timeline pipeline, touch ${args.join(' ')}`);
  console.log(`  helper alone:            ${alone.faults} faults in ${alone.ms.toFixed(0)} ms = ${(alone.faults / alone.ms * 1000).toFixed(0)} faults/s`);
  console.log(`  through adapter + panel: ${atAdapter} faults in ${runMs.toFixed(0)} ms = ${(atAdapter / runMs * 1000).toFixed(0)} faults/s ` +
    `(batches over ${(lastBatch - firstBatch).toFixed(0)} ms; all painted ${paintedMs.toFixed(0)} ms after launch)`);
  console.log(`  counts: adapter ${atAdapter}, panel ${atPanel}, distinct seqs ${seqs.size}, highest seq ${maxSeq} -> ` +
    `${(atAdapter === atPanel || process.env.NO_PANEL) && seqs.size === maxSeq && atAdapter === maxSeq ? 'no loss' : 'LOSS'}`);
  console.log(`  ratio (pipeline rate)/(helper alone rate) ${((atAdapter / runMs) / (alone.faults / alone.ms)).toFixed(2)}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
