// Observe mode's cost on a handler, in one run (compare the ratio, never absolute times: this
// is a VM): demo/bin/postcopy's workload time (a) plain, (b) with libuffd-observe.so preloaded
// and the channel only drained (the library's own cost), (c) observed by ObserveSession, every
// record decoded and analysed (the whole pipeline; Node competes for the same 2 vCPUs), run
// in turn, median of --runs runs each. Also prints Node's CPU time per record in (c).
// Two shapes: with background pushes (a COPY per page, few faults) and without (every page a
// fault: read + request + COPY).
//   node --import tsx bench/observe.bench.ts [--pages N] [--runs R]
import { spawn, spawnSync } from 'node:child_process';
import type { Readable } from 'node:stream';
import * as path from 'node:path';
import { ObserveSession } from '../server/core/observe';

const root = path.resolve(__dirname, '..');
const POSTCOPY = path.join(root, 'demo', 'bin', 'postcopy');

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}
const pages = arg('--pages', 16384);
const runs = arg('--runs', 5);

function workloadMs(stderr: string): number {
  const m = /workload ran ([\d.]+) ms/.exec(stderr);
  if (!m) throw new Error(`no 'workload ran' line in: ${stderr}`);
  return Number(m[1]);
}

function plain(args: string[]): number {
  const r = spawnSync(POSTCOPY, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`postcopy failed: ${r.stderr}`);
  return workloadMs(r.stderr);
}

const LIB = path.join(root, 'server', 'observe', 'bin', 'libuffd-observe.so');

async function drained(args: string[]): Promise<{ ms: number; bytes: number }> {
  const p = spawn(POSTCOPY, args, { env: { ...process.env, LD_PRELOAD: LIB, UFFD_OBSERVE_FD: '3' },
    stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
  let stderr = '';
  let bytes = 0;
  p.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  (p.stdio[3] as Readable).on('data', (b: Buffer) => { bytes += b.length; });
  const code = await new Promise<number | null>((r) => p.on('close', r));
  if (code !== 0) throw new Error(`postcopy failed with the library: ${stderr}`);
  return { ms: workloadMs(stderr), bytes };
}

async function observed(args: string[]): Promise<{ ms: number; records: number; cpuUs: number }> {
  const s = new ObserveSession();
  let stderr = '';
  let records = 0;
  s.on('output', (k, d) => { if (k === 'stderr') stderr += d; });
  s.on('record', () => { records++; });
  const cpu0 = process.cpuUsage();
  await s.start({ program: POSTCOPY, args, stuckAfterMs: 0 });
  const r = await s.wait();
  const cpu = process.cpuUsage(cpu0);
  if (r.code !== 0) throw new Error(`postcopy failed under observation: ${stderr}`);
  return { ms: workloadMs(stderr), records, cpuUs: cpu.user + cpu.system };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

async function shape(name: string, args: string[]): Promise<{ lib: number; all: number }> {
  const a: number[] = [];
  const b: number[] = [];
  const c: number[] = [];
  let records = 0;
  let cpuUs = 0;
  let bytes = 0;
  for (let i = 0; i < runs; i++) {
    a.push(plain(args));
    const d = await drained(args);
    b.push(d.ms);
    bytes = d.bytes;
    const o = await observed(args);
    c.push(o.ms);
    records = o.records;
    cpuUs = o.cpuUs;
  }
  const [ma, mb, mc] = [median(a), median(b), median(c)];
  console.log(`  ${name}: ${records} records, ${(bytes / 1024).toFixed(0)} KiB; Node ${(cpuUs / records).toFixed(1)} µs CPU per record`);
  console.log(`    (a) plain ${ma.toFixed(1).padStart(8)} ms   (b) library, channel drained ${mb.toFixed(1).padStart(8)} ms` +
    `   (c) observed ${mc.toFixed(1).padStart(8)} ms`);
  console.log(`    ratio (b)/(a) ${(mb / ma).toFixed(3)}   (c)/(a) ${(mc / ma).toFixed(3)}`);
  return { lib: mb / ma, all: mc / ma };
}

async function main(): Promise<void> {
  console.log(`observe overhead on demo/bin/postcopy, median of ${runs} runs each, in turn (target ratio <= 1.15)`);
  const fewPages = Math.max(256, Math.floor(pages / 4));
  const r1 = await shape(`push, ${pages} pages`, ['--pages', String(pages), '--threads', '2', '--latency-us', '0']);
  const r2 = await shape(`no push, ${fewPages} pages (all faults)`,
    ['--pages', String(fewPages), '--threads', '2', '--latency-us', '0', '--no-push']);
  console.log(`  worst ratio: library ${Math.max(r1.lib, r2.lib).toFixed(3)}, whole pipeline ${Math.max(r1.all, r2.all).toFixed(3)}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
