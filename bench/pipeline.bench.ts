// Timeline pipeline: every fault of a fault-heavy run travels helper → adapter (DAP custom
// events `uffd/events`) → a real panel in Debian's chromium, as in VS Code. Prints the sustained
// rate at each end and checks nothing was lost (every seq from 1 to the last arrives once).
// Compared in the same run with the same program under the helper alone (no adapter, no panel),
// by the program's fault rate from the helper's own fault timestamps, in alternating runs.
// Two placements: "shared", every process where the scheduler puts it on this 2-vCPU machine (the
// panel's CPU is then taken from the program), and "separate", the program and the helper on
// vCPU 0, the client side (adapter, browser, this process) on vCPU 1, as on a machine with a core
// to spare for the editor: there the ratio says whether the pipeline keeps up with the helper.
//   node --import tsx bench/pipeline.bench.ts [--pages N] [--rounds N] [--placement shared|separate|both]
// NO_PANEL=1 stops at the adapter (no browser), to tell the adapter's cost from the panel's.
// PROFILE_ADAPTER=DIR writes a CPU profile of the adapter there (node --cpu-prof), PROFILE_PANEL=FILE
// one of the panel's page (devtools protocol) during the run.
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import * as path from 'node:path';
import { DebugClient } from '@vscode/debugadapter-testsupport';
import { DebugProtocol } from '@vscode/debugprotocol';
import { HelperClient } from '../server/core/helperClient';
import { TimelineBatch } from '../server/protocol/messages';

/* eslint-disable @typescript-eslint/no-explicit-any -- page.evaluate callbacks run in the browser */
declare const window: any;

const root = path.resolve(__dirname, '..');
const TOUCH = path.join(root, 'demo', 'bin', 'touch');
const i = process.argv.indexOf('--pages');
const pages = i > 0 ? Number(process.argv[i + 1]) : 65536;
const args = ['--pages', String(pages), '--threads', '2', '--pattern', 'random'];

interface Run {
  faults: number;
  /** Wall clock from the launch request to the program's exit. */
  ms: number;
  /** The program's fault rate from the helper's own timestamps (first to last fault). */
  rate: number;
}

const rateOf = (faults: number, tFirst: number, tLast: number) => (faults - 1) / ((tLast - tFirst) / 1e9);

/** CPU ms (user + system) of one process, 0 when it is gone. */
function cpuMs(pid: number): number {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10; // clock ticks of 10 ms
  } catch {
    return 0;
  }
}

/** CPU ms (user + system) from a /proc/.../stat line, NaN when unreadable. */
function statCpuMs(file: string): number {
  try {
    const st = readFileSync(file, 'utf8');
    const f = st.slice(st.lastIndexOf(')') + 2).split(' ');
    return (Number(f[11]) + Number(f[12])) * 10; // clock ticks of 10 ms
  } catch {
    return NaN;
  }
}

/**
 * CPU of this process's chromium descendants: the whole (every process, threads that ended
 * included) and per process type (`--type=` of its command line; none: the browser process) and
 * thread name, e.g. `renderer/Compositor`, to see where a panel's cost goes outside its JS.
 */
interface ChromiumCpu { total: number; byThread: Map<string, number> }

function chromiumCpu(): ChromiumCpu {
  const parent = new Map<number, number>();
  const names = new Map<number, string>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = readFileSync(`/proc/${d}/stat`, 'utf8');
      names.set(Number(d), st.slice(st.indexOf('(') + 1, st.lastIndexOf(')')));
      parent.set(Number(d), Number(st.slice(st.lastIndexOf(')') + 2).split(' ')[1]));
    } catch { /* gone */ }
  }
  const out: ChromiumCpu = { total: 0, byThread: new Map() };
  for (const [pid, name] of names) {
    if (!name.startsWith('chrom')) continue;
    let ours = false;
    for (let p = parent.get(pid); p !== undefined && p > 1 && !ours; p = parent.get(p)) ours = p === process.pid;
    if (!ours) continue;
    const ms = statCpuMs(`/proc/${pid}/stat`);
    if (Number.isNaN(ms)) continue;
    out.total += ms;
    let type = 'browser';
    try {
      const m = /--type=([\w-]+)/.exec(readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' '));
      if (m) type = m[1];
    } catch { /* gone */ }
    let tasks: string[] = [];
    try { tasks = readdirSync(`/proc/${pid}/task`); } catch { /* gone */ }
    for (const tid of tasks) {
      let comm = '?';
      try { comm = readFileSync(`/proc/${pid}/task/${tid}/comm`, 'utf8').trim(); } catch { /* gone */ }
      const t = statCpuMs(`/proc/${pid}/task/${tid}/stat`);
      if (Number.isNaN(t)) continue;
      // Numbered pool threads (ThreadPoolForeg, CompositorTileW…) are summed by name.
      const key = `${type}/${comm.replace(/\d+$/, '')}`;
      out.byThread.set(key, (out.byThread.get(key) ?? 0) + t);
    }
  }
  return out;
}

/** CPU ms per thread key between two samples; threads that ended in between count in total only. */
function cpuSince(a: ChromiumCpu, b: ChromiumCpu): ChromiumCpu {
  const byThread = new Map<string, number>();
  for (const [k, v] of b.byThread) {
    const d = v - (a.byThread.get(k) ?? 0);
    if (d > 0) byThread.set(k, d);
  }
  return { total: b.total - a.total, byThread };
}

const cpuOfThisProcess = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/** In the separate placement: the helper (and so the program it starts) pinned to vCPU 0. */
let pinnedHelper: string | undefined;

function pinHelperWrapper(): string {
  const sh = path.join(mkdtempSync(path.join(tmpdir(), 'uffd-bench-')), 'helper-on-cpu0');
  const helper = path.join(root, 'server', 'native', 'bin', 'uffd-helper');
  writeFileSync(sh, `#!/bin/sh\nexec taskset -c 0 '${helper}' "$@"\n`);
  chmodSync(sh, 0o755);
  return sh;
}

async function helperAlone(): Promise<Run> {
  const c = new HelperClient();
  await c.start(pinnedHelper);
  let faults = 0;
  let tFirst = 0;
  let tLast = 0;
  const t0 = process.hrtime.bigint();
  // Every fault reaches this process and is parsed, as the adapter gets them: in the helper's
  // `faults` batches (checked by HelperClient), times added up from the batch's steps.
  const done = new Promise<void>((resolve) => c.on('event', (e) => {
    if (e.event === 'faults') {
      let t = 0;
      for (const dt of e.t) {
        t += dt;
        if (!faults++) tFirst = t;
      }
      tLast = t;
    }
    if (e.event === 'exited') resolve();
  }));
  await c.request('launch', { program: TOUCH, args, cwd: root, env: null });
  await c.request('policy', { stream: 'all' });
  await c.request('run', {});
  await done;
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  await c.stop();
  return { faults, ms, rate: rateOf(faults, tFirst, tLast) };
}

/** Node, or with PROFILE_ADAPTER a wrapper that runs it with --cpu-prof (not allowed in NODE_OPTIONS). */
function adapterRuntime(): string {
  const dir = process.env.PROFILE_ADAPTER;
  if (!dir) return process.execPath;
  const sh = path.join(mkdtempSync(path.join(tmpdir(), 'uffd-bench-')), 'node-prof');
  writeFileSync(sh, `#!/bin/sh\nexec '${process.execPath}' --cpu-prof --cpu-prof-dir='${path.resolve(dir)}' "$@"\n`);
  chmodSync(sh, 0o755);
  return sh;
}

// the harness is plain JavaScript
type Harness = any;

interface PipelineRun extends Run {
  atPanel: number;
  lossless: boolean;
  batchesMs: number;
  paintedMs: number;
  /** CPU ms during the run: the adapter, the browser (all its processes), this process (as VS Code and the extension host). */
  cpu: { adapter: number; browser: number; client: number };
  /** The browser's CPU ms by process type and thread. */
  browserThreads: Map<string, number>;
}

async function throughPipeline(harness: Harness, browser: Harness, origin: string): Promise<PipelineRun> {
  const panel = await harness.openPanel(browser.context, origin, 'dark');
  const dc = new DebugClient(adapterRuntime(), path.join(root, 'dist', 'adapter.js'), 'uffd');
  dc.defaultTimeout = 120_000;
  await dc.start();
  let atAdapter = 0;
  let forwarding = Promise.resolve();
  const seqs = new Set<number>();
  let firstBatch = 0;
  let lastBatch = 0;
  let invalid = 0;
  let tFirst = 0;
  let tLast = 0;
  dc.on('uffd/events', (e: DebugProtocol.Event) => {
    const batch = (e.body as { batch: TimelineBatch }).batch;
    const now = performance.now();
    if (!firstBatch) firstBatch = now;
    lastBatch = now;
    let seq = 0;
    let t = 0;
    for (let k = 0; k < batch.seq.length; k++) {
      seq += batch.seq[k];
      t += batch.t[k];
      seqs.add(seq);
      if (!tFirst) tFirst = t;
      tLast = t;
    }
    atAdapter += batch.seq.length;
    // As the extension does: check the message, then one postMessage per batch, in order.
    // VS Code serializes a webview message as JSON in the extension host and the panel gets
    // it parsed; the same here, instead of the devtools protocol's own (slower) serialization.
    const m = { type: 'events', batch };
    if (harness.nodeSide.toPanelProblem(m) !== null) invalid++;
    else if (!process.env.NO_PANEL) {
      const text = JSON.stringify(m);
      forwarding = forwarding.then(() => panel.page.evaluate((s: string) => window.postMessage(JSON.parse(s), '*'), text));
    }
  });
  const cdp = process.env.PROFILE_PANEL ? await panel.page.context().newCDPSession(panel.page) : null;
  if (cdp) {
    await cdp.send('Profiler.enable');
    await cdp.send('Profiler.start');
  }
  const browserCpu0 = chromiumCpu();
  const clientCpu0 = cpuOfThisProcess();
  const t0 = performance.now();
  const exited = dc.waitForEvent('exited');
  await Promise.all([
    dc.waitForEvent('initialized').then(() => dc.setExceptionBreakpointsRequest({ filters: [] })).then(() => dc.configurationDoneRequest()),
    dc.launch({ program: TOUCH, args, cwd: root, stopOnFirstFault: false } as DebugProtocol.LaunchRequestArguments),
  ]);
  await exited;
  const ms = performance.now() - t0;
  await forwarding;
  if (!process.env.NO_PANEL) {
    await panel.page.waitForFunction((n: number) => window.__timeline.stats().events === n, atAdapter, { timeout: 120_000 })
      .catch(() => undefined);
  }
  await panel.page.evaluate(() => window.__timeline.frame());
  const paintedMs = performance.now() - t0;
  if (cdp) writeFileSync(process.env.PROFILE_PANEL!, JSON.stringify((await cdp.send('Profiler.stop')).profile));
  const atPanel = await panel.page.evaluate(() => window.__timeline.stats().events);
  let maxSeq = 0;
  for (const q of seqs) if (q > maxSeq) maxSeq = q;
  const browserCpu = cpuSince(browserCpu0, chromiumCpu());
  const cpu = { adapter: cpuMs((dc as unknown as { _adapterProcess: { pid: number } })._adapterProcess.pid),
    browser: browserCpu.total, client: cpuOfThisProcess() - clientCpu0 };
  await dc.stop();
  await panel.page.close();
  const lossless = (atAdapter === atPanel || !!process.env.NO_PANEL) && seqs.size === maxSeq && atAdapter === maxSeq && !invalid;
  if (invalid) console.log(`  ${invalid} batches failed the panel's check`);
  return { faults: atAdapter, ms, rate: rateOf(atAdapter, tFirst, tLast), atPanel, lossless,
    batchesMs: lastBatch - firstBatch, paintedMs, cpu, browserThreads: browserCpu.byThread };
}

interface PlacementResult { ratios: number[]; lossless: boolean; cpus: PipelineRun['cpu'][]; aloneRates: number[];
  mainThreadUs: number[]; faults: number[]; busyLoop?: number[] }

async function placement(harness: Harness, origin: string, rounds: number, name: 'shared' | 'separate'): Promise<PlacementResult> {
  if (name === 'separate') {
    // This process and all it starts from now on (browser, adapter) on vCPU 1; the helper and
    // the program through the wrapper on vCPU 0 (the adapter finds it through UFFD_HELPER).
    execFileSync('taskset', ['-a', '-p', '-c', '1', String(process.pid)], { stdio: 'ignore' });
    pinnedHelper = pinHelperWrapper();
    process.env.UFFD_HELPER = pinnedHelper;
  }
  const browser = await harness.launchBrowser();
  const perS = (x: Run) => `${x.faults} faults in ${x.ms.toFixed(0)} ms, program at ${x.rate.toFixed(0)} faults/s`;
  console.log(`placement ${name}: ${name === 'shared' ? 'as the scheduler places every process' :
    'program + helper on vCPU 0, adapter + browser + this process on vCPU 1'}`);
  // Alternating runs: alone, pipeline, alone, ... so a change in the machine's load shows.
  let before = await helperAlone();
  console.log(`  helper alone:            ${perS(before)}`);
  const out: PlacementResult = { ratios: [], lossless: true, cpus: [], aloneRates: [before.rate], mainThreadUs: [],
    faults: [] };
  for (let k = 0; k < rounds; k++) {
    const p = await throughPipeline(harness, browser, origin);
    const after = await helperAlone();
    const ratio = p.rate / ((before.rate + after.rate) / 2);
    out.ratios.push(ratio);
    out.aloneRates.push(after.rate);
    out.lossless &&= p.lossless;
    console.log(`  through adapter + panel: ${perS(p)} (batches over ${p.batchesMs.toFixed(0)} ms; all painted ` +
      `${p.paintedMs.toFixed(0)} ms after launch); counts: adapter ${p.faults}, panel ${p.atPanel} -> ` +
      `${p.lossless ? 'no loss' : 'LOSS'}`);
    const us = (x: number) => `${(x * 1000 / p.faults).toFixed(1)} µs`;
    console.log(`    CPU per fault: adapter ${us(p.cpu.adapter)} (whole process, start-up included), browser ` +
      `${us(p.cpu.browser)}, this process as VS Code + extension host ${us(p.cpu.client)}`);
    const top = [...p.browserThreads].sort((a, b) => b[1] - a[1]).filter(([, v]) => v >= p.cpu.browser * 0.02);
    console.log(`    browser CPU per fault by process/thread: ${top.map(([k, v]) => `${k} ${us(v)}`).join(', ')}`);
    out.cpus.push(p.cpu);
    out.faults.push(p.faults);
    out.mainThreadUs.push(((p.browserThreads.get('renderer/chromium') ?? NaN) * 1000) / p.faults);
    console.log(`  helper alone:            ${perS(after)}`);
    console.log(`  ratio (pipeline rate)/(helper alone rate, mean of the runs either side) ${ratio.toFixed(2)}`);
    before = after;
  }
  await browser.close();
  if (name === 'separate') {
    // Control: the same helper-alone run with vCPU 1 kept busy by a loop that neither faults nor
    // talks to anything. On this VM a busy vCPU slows page faults on the other one; this says by
    // how much, to compare with the pipeline's ratio.
    const busy: number[] = [];
    for (let k = 0; k < 2; k++) {
      const loop = spawn('taskset', ['-c', '1', 'sh', '-c', 'while :; do :; done'], { stdio: 'ignore' });
      const withLoop = await helperAlone();
      loop.kill();
      const plain = await helperAlone();
      busy.push(withLoop.rate / plain.rate);
      console.log(`  helper alone, vCPU 1 busy in a loop: ${perS(withLoop)}; then idle: ${perS(plain)}; ratio ` +
        `${(withLoop.rate / plain.rate).toFixed(2)}`);
    }
    out.busyLoop = busy;
  }
  return out;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return (s[(s.length - 1) >> 1] + s[s.length >> 1]) / 2;
};

async function main(): Promise<void> {
  const r = process.argv.indexOf('--rounds');
  const rounds = r > 0 ? Number(process.argv[r + 1]) : 3;
  const pl = process.argv.indexOf('--placement');
  const which = pl > 0 ? process.argv[pl + 1] : 'both';
  if (!['shared', 'separate', 'both'].includes(which)) throw new Error('--placement takes shared, separate or both');
  const harness = await import('../test/webview/harness.mjs' as string);
  const server = await harness.startServer();
  console.log(`timeline pipeline, touch ${args.join(' ')}${process.env.NO_PANEL ? ' (NO_PANEL: adapter only)' : ''}`);
  console.log(`load average at start: ${loadavg().map((x) => x.toFixed(2)).join(' ')} (runs alternate, each pipeline ` +
    'run is compared with the helper-alone runs either side)');
  const results = new Map<string, PlacementResult>();
  // Shared first: pinning this process to vCPU 1 cannot be undone for its children.
  for (const name of ['shared', 'separate'] as const) {
    if (which === name || which === 'both') results.set(name, await placement(harness, server.origin, rounds, name));
  }
  await server.close();
  console.log(`load average at end: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  for (const [name, res] of results) {
    const med = median(res.ratios);
    console.log(`result, ${name}: ratios ${res.ratios.map((x) => x.toFixed(2)).join(', ')} (median ${med.toFixed(2)}; ` +
      `target ≥ 0.95: ${med >= 0.95 ? 'met' : 'MISSED'}), ${res.lossless ? 'no event lost' : 'EVENTS LOST'}`);
    const medOf = (f: (c: PipelineRun['cpu']) => number) => median(res.cpus.map(f));
    console.log(`  CPU of the pipeline (median ms per run): adapter ${medOf((c) => c.adapter).toFixed(0)}, browser ` +
      `${medOf((c) => c.browser).toFixed(0)}, VS Code stand-in ${medOf((c) => c.client).toFixed(0)}`);
    // Each stage is one thread of work per fault: its CPU per fault bounds the rate it can carry.
    const faults = median(res.faults);
    const stage = (ms: number) => faults / (ms / 1000);
    const mainUs = median(res.mainThreadUs);
    console.log(`  rate each stage could carry at its measured CPU per fault (faults/s): adapter ` +
      `${stage(medOf((c) => c.adapter)).toFixed(0)}, panel main thread ${(1e6 / mainUs).toFixed(0)}, VS Code stand-in ` +
      `${stage(medOf((c) => c.client)).toFixed(0)}; helper alone ran at ${median(res.aloneRates).toFixed(0)} (median)`);
    if (res.busyLoop) {
      console.log(`  control: the helper alone with vCPU 1 busy in a plain loop ran at ratio ` +
        `${res.busyLoop.map((x) => x.toFixed(2)).join(', ')} of its idle-vCPU rate`);
    }
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
