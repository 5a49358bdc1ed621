// Observe mode's cost on a handler: demo/bin/postcopy's workload time (a) plain, (b) with
// libuffd-observe.so preloaded and the channel only drained (the library's own cost), (c)
// observed by ObserveSession, every record decoded and analysed (the whole pipeline; Node
// competes for the same 2 vCPUs). Compare ratios, never absolute times: this is a shared VM.
//
// One run of a, b or c varies by ±20 % on its own (five threads on two vCPUs, and other
// engineers' builds), far more than the margin of the target. So: a warm-up round is thrown
// away, then each round runs a, b and c back to back in a rotated order (abc, bca, cab: no
// variant always runs first or after the same one), and the figures are the per-round ratios
// b/a and c/a (a slow spell hits all three alike): their median, quartiles and extremes, and
// a 95 % confidence interval of the median (distribution-free: order statistics of the rounds).
// The target (issue 6: overhead <= 1.15) is met when the median paired ratio is <= 1.15, and
// shown at 95 % when the interval's upper end is too; a median below with the interval across
// 1.15 says the run was noisy (more rounds, a quieter machine).
// The interval takes rounds as independent: load that changes during the run (the load
// averages printed before and after) moves whole runs, so compare a few runs, not one.
// Two shapes: with background pushes (a COPY per page, few faults) and without (every page a
// fault: read + request + COPY).
//   node --import tsx bench/observe.bench.ts [--pages N] [--rounds R] [--shape push|fault|both]
//     [--library PATH]   (another build of libuffd-observe.so, to compare two)
import { spawn } from 'node:child_process';
import { loadavg } from 'node:os';
import type { Readable } from 'node:stream';
import * as path from 'node:path';
import { ObserveSession } from '../server/core/observe';

const root = path.resolve(__dirname, '..');
const POSTCOPY = path.join(root, 'demo', 'bin', 'postcopy');
const TARGET = 1.15;

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const LIB = path.resolve(arg('--library', path.join(root, 'server', 'observe', 'bin', 'libuffd-observe.so')));
const pages = Number(arg('--pages', '16384'));
const rounds = Number(arg('--rounds', '31'));
const which = arg('--shape', 'both');
if (!(pages >= 256 && rounds >= 3 && ['push', 'fault', 'both'].includes(which))) {
  console.error('usage: bench/observe.bench.ts [--pages N>=256] [--rounds R>=3] [--shape push|fault|both]');
  process.exit(2);
}

function workloadMs(stderr: string): number {
  const m = /workload ran ([\d.]+) ms/.exec(stderr);
  if (!m) throw new Error(`no 'workload ran' line in: ${stderr}`);
  return Number(m[1]);
}

interface Run { ms: number; records?: number; cpuUs?: number }

// (a) and (b) are started alike (Node spawns, reads stderr and an fd 3 pipe, nobody writes to
// it in (a)): only the library differs. spawnSync for (a) ran systematically slower than (b) on
// long workloads, a difference of launching, not of observing.
function plain(args: string[]): Promise<Run> {
  return drained(args, false);
}

async function drained(args: string[], library = true): Promise<Run> {
  const cpu0 = process.cpuUsage();
  const env = library ? { ...process.env, LD_PRELOAD: LIB, UFFD_OBSERVE_FD: '3' } : process.env;
  const p = spawn(POSTCOPY, args, { env, stdio: ['ignore', 'ignore', 'pipe', 'pipe'] });
  let stderr = '';
  p.stderr!.setEncoding('utf8').on('data', (d: string) => { stderr += d; });
  (p.stdio[3] as Readable).resume();
  const code = await new Promise<number | null>((r) => p.on('close', r));
  if (code !== 0) throw new Error(`postcopy failed${library ? ' with the library' : ''}: ${stderr}`);
  const cpu = process.cpuUsage(cpu0);
  return { ms: workloadMs(stderr), cpuUs: cpu.user + cpu.system };
}

async function observed(args: string[]): Promise<Run> {
  const s = new ObserveSession();
  let stderr = '';
  let events = 0;
  s.on('output', (k, d) => { if (k === 'stderr') stderr += d; });
  // As the debugger does: a listener takes every event.
  s.on('event', () => { events++; });
  const cpu0 = process.cpuUsage();
  await s.start({ program: POSTCOPY, args, stuckAfterMs: 0, library: LIB });
  const r = await s.wait();
  const cpu = process.cpuUsage(cpu0);
  if (r.code !== 0) throw new Error(`postcopy failed under observation: ${stderr}`);
  if (events === 0) throw new Error('no event from the analyzer');
  return { ms: workloadMs(stderr), records: s.records, cpuUs: cpu.user + cpu.system };
}

function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  const i = (s.length - 1) * q;
  const lo = Math.floor(i);
  return s[lo] + (s[Math.min(lo + 1, s.length - 1)] - s[lo]) * (i - lo);
}
const f3 = (x: number) => x.toFixed(3);

/**
 * A confidence interval (>= 95 %) of the median of xs from its order statistics: the largest k
 * with P(Binomial(n, 1/2) < k) <= 2.5 %, then [x(k), x(n+1-k)] (1-based, sorted).
 */
function medianCi(xs: number[]): [number, number] {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  let k = 0;
  let below = 0; // P(B < k + 1)
  let term = 0.5 ** n; // P(B = 0)
  for (let j = 0; j < n; j++) {
    below += term;
    if (below > 0.025) break;
    k = j + 1;
    term = (term * (n - j)) / (j + 1);
  }
  return k >= 1 ? [s[k - 1], s[n - k]] : [s[0], s[n - 1]];
}
const spread = (xs: number[]) => {
  const [lo, hi] = medianCi(xs);
  return `median ${f3(quantile(xs, 0.5))} (95 % CI ${f3(lo)}–${f3(hi)})  IQR ${f3(quantile(xs, 0.25))}–${f3(quantile(xs, 0.75))}  ` +
    `min–max ${f3(Math.min(...xs))}–${f3(Math.max(...xs))}`;
};

const VARIANTS = [plain, drained, observed];

async function shape(name: string, args: string[]): Promise<{ lib: number[]; all: number[] }> {
  const ms: number[][] = [[], [], []];
  const lib: number[] = [];
  const all: number[] = [];
  const perRecord: number[] = [];
  const analysis: number[] = [];
  let records = 0;
  for (let round = -1; round < rounds; round++) {
    const got: Run[] = [];
    for (let k = 0; k < 3; k++) {
      const v = (k + Math.max(0, round)) % 3;
      got[v] = await VARIANTS[v](args);
    }
    if (round < 0) continue; // warm-up: page cache, JIT, the first spawn
    got.forEach((g, v) => ms[v].push(g.ms));
    lib.push(got[1].ms / got[0].ms);
    all.push(got[2].ms / got[0].ms);
    records = got[2].records!;
    perRecord.push(got[2].cpuUs! / records);
    analysis.push((got[2].cpuUs! - got[1].cpuUs!) / records);
  }
  const med = ms.map((x) => quantile(x, 0.5).toFixed(1).padStart(7));
  // Spawning from Node costs it CPU (fork, then a write-protect fault per heap page it touches
  // until the child has exec'd), and draining the channel costs reads: (b) pays both too, so
  // (c) - (b) is what decoding and analysis cost.
  console.log(`  ${name}: ${records} records; Node CPU per record: median ${quantile(perRecord, 0.5).toFixed(2)} µs in all, ` +
    `${quantile(analysis, 0.5).toFixed(2)} µs beyond draining (c - b)`);
  console.log(`    median ms  (a) plain ${med[0]}   (b) library, channel drained ${med[1]}   (c) observed ${med[2]}`);
  console.log(`    (b)/(a) paired: ${spread(lib)}`);
  console.log(`    (c)/(a) paired: ${spread(all)}`);
  return { lib, all };
}

async function main(): Promise<void> {
  const load0 = loadavg();
  console.log(`observe overhead on demo/bin/postcopy: ${rounds} rounds (+1 warm-up), a/b/c back to back in rotated order, ` +
    `ratios paired per round; target (c)/(a) <= ${TARGET}`);
  console.log(`  library ${path.relative(root, LIB) || LIB}; load average before: ${load0.map((x) => x.toFixed(2)).join(' ')}`);
  const out: { name: string; all: number[] }[] = [];
  if (which !== 'fault') {
    const r = await shape(`push, ${pages} pages`, ['--pages', String(pages), '--threads', '2', '--latency-us', '0']);
    out.push({ name: 'push', all: r.all });
  }
  if (which !== 'push') {
    const few = Math.max(256, Math.floor(pages / 4));
    const r = await shape(`no push, ${few} pages (every page a fault)`,
      ['--pages', String(few), '--threads', '2', '--latency-us', '0', '--no-push']);
    out.push({ name: 'fault', all: r.all });
  }
  console.log(`  load average after: ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
  for (const o of out) {
    const med = quantile(o.all, 0.5);
    const [, hi] = medianCi(o.all);
    const verdict = hi <= TARGET ? 'met, and shown at 95 % (the interval is below too)'
      : med <= TARGET ? 'met by the median; not shown at 95 % (the interval reaches above: a noisy run)' : 'NOT met';
    console.log(`  target (c)/(a) <= ${TARGET}, ${o.name}: median ${f3(med)}, 95 % CI upper end ${f3(hi)}: ${verdict}`);
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
