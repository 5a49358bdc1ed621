// Fault cost, three ways, in one run (compare ratios, never absolute times: this is a VM):
//   (a) demo/bin/touch with no userfaultfd,
//   (b) bench/bin/minhandler: the same touches under a minimal handler process (read + COPY),
//   (c) demo/bin/touch under the helper, every fault auto-resolved in the helper and streamed
//       to this process in the helper's `faults` batches.
// Each is the median of --runs runs of touching --pages fresh pages (default 65536, 3 runs).
// Then the same for write-protect tracking: the pages are populated first and protected, and
// each timed write is a wp fault un-protected by the handler (b) or by the helper (c).
// Every measurement is made twice: as the scheduler places the processes, and with all of them
// pinned to one vCPU (taskset), because on this VM a wake-up across vCPUs costs tens of µs and
// decides the result: the minimal handler, a fork of the program, tends to share its vCPU, the
// helper does not. Pinned, the comparison is the handlers' own cost (KERNEL-FACTS: a handler on
// the other vCPU is erratic, on the same vCPU stable).
//   node --import tsx bench/faults.bench.ts [--pages N] [--runs R] [--read] [--no-wp] [--no-pinned]
import { execFileSync, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { HelperClient } from '../server/core/helperClient';
import { FB_KIND_SHIFT } from '../server/protocol/messages';

const root = path.resolve(__dirname, '..');
const TOUCH = path.join(root, 'demo', 'bin', 'touch');
const MINHANDLER = path.join(root, 'bench', 'bin', 'minhandler');

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(name);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}
const pages = arg('--pages', 65536);
const runs = arg('--runs', 3);
const read = process.argv.includes('--read');
const touchArgs = ['--pages', String(pages), '--time', ...(read ? ['--read'] : [])];

function touchNs(stderr: string): number {
  const m = /touch_ns (\d+)/.exec(stderr);
  if (!m) throw new Error(`no touch_ns in: ${stderr}`);
  return Number(m[1]);
}

type Kind = 'missing' | 'wp';

let pinned = false;
/** The command, pinned to vCPU 0 when measuring pinned. */
const run = (cmd: string, args: string[]) => (pinned ? spawnSync('taskset', ['-c', '0', cmd, ...args], { encoding: 'utf8' }) : spawnSync(cmd, args, { encoding: 'utf8' }));

function plain(kind: Kind): number {
  const r = run(TOUCH, kind === 'wp' ? [...touchArgs, '--populate'] : touchArgs);
  if (r.status !== 0) throw new Error(`touch failed: ${r.stderr}`);
  return touchNs(r.stderr);
}

function minimal(kind: Kind): number {
  const r = run(MINHANDLER, ['--pages', String(pages), ...(kind === 'wp' ? ['--wp'] : read ? ['--read'] : [])]);
  if (r.status !== 0) throw new Error(`minhandler failed: ${r.stderr}`);
  return touchNs(r.stderr);
}

async function underHelper(kind: Kind): Promise<{ ns: number; events: number }> {
  const c = new HelperClient();
  await c.start();
  // the program inherits the helper's affinity
  if (pinned) execFileSync('taskset', ['-p', '-c', '0', String(c.pid)], { stdio: 'ignore' });
  let stderr = '';
  let stdout = '';
  let events = 0;
  const kindCode = kind === 'wp' ? 1 : 0;
  let protect: Promise<unknown> | null = null;
  c.on('output', (s, d) => {
    if (s === 'stderr') stderr += d;
    else stdout += d;
    // wp: protect the populated region while touch sleeps before its timed writes
    const m = /region (0x[0-9a-f]+) pages (\d+)\npopulated\n/.exec(stdout);
    if (kind === 'wp' && m && !protect) {
      const start = BigInt(m[1]);
      protect = c.request('protect', { start: m[1], end: `0x${(start + BigInt(Number(m[2]) * 4096)).toString(16)}`, on: true });
    }
  });
  const exited = new Promise<void>((resolve) => c.on('event', (e) => {
    // auto-resolved faults come in batches (`faults`), a held one alone (none are held here)
    if (e.event === 'faults') for (const f of e.flags) events += +(((f >> FB_KIND_SHIFT) & 3) === kindCode);
    if (e.event === 'fault' && e.kind === kind) events++;
    if (e.event === 'exited') resolve();
  }));
  const args = kind === 'wp' ? [...touchArgs, '--populate', '--sleep-ms', '1500'] : touchArgs;
  await c.request('launch', { program: TOUCH, args, cwd: root, env: null });
  await c.request('policy', { stream: 'all' });
  await c.request('run', {});
  await exited;
  if (protect) await protect;
  // The program's last stderr line may trail the exit event.
  for (let i = 0; i < 100 && !/touch_ns/.test(stderr); i++) await new Promise((r) => setTimeout(r, 10));
  await c.stop();
  return { ns: touchNs(stderr), events };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function measure(kind: Kind): Promise<number> {
  const a: number[] = [];
  const b: number[] = [];
  const c: number[] = [];
  let events = 0;
  // Interleaved, so a burst of load on the machine hits every variant alike.
  for (let i = 0; i < runs; i++) {
    a.push(plain(kind));
    b.push(minimal(kind));
    const h = await underHelper(kind);
    c.push(h.ns);
    events = h.events;
  }
  const us = (ns: number) => (ns / pages / 1000).toFixed(2);
  const [ma, mb, mc] = [median(a), median(b), median(c)];
  const what = kind === 'wp' ? 'write-protect faults (populated, protected pages written)' : `${read ? 'read' : 'write'} missing faults`;
  console.log(`fault cost, ${pages} ${what}, median of ${runs} runs, ${pinned ? 'all on vCPU 0 (taskset)' : 'placed by the scheduler'}`);
  console.log(`  (a) no userfaultfd          ${(ma / 1e6).toFixed(1).padStart(8)} ms  ${us(ma)} µs/page`);
  console.log(`  (b) minimal handler         ${(mb / 1e6).toFixed(1).padStart(8)} ms  ${us(mb)} µs/page`);
  console.log(`  (c) uffd-debug helper       ${(mc / 1e6).toFixed(1).padStart(8)} ms  ${us(mc)} µs/page  (${events} ${kind} fault events streamed)`);
  console.log(`  ratio (b)/(a) ${(mb / ma).toFixed(2)}   (c)/(a) ${(mc / ma).toFixed(2)}   (c)/(b) ${(mc / mb).toFixed(2)}  (target (c)/(b) <= 1.15)`);
  return mc / mb;
}

async function main(): Promise<void> {
  execFileSync('make', ['-s', '-C', path.join(root, 'bench')], { stdio: 'inherit' });
  for (const pin of process.argv.includes('--no-pinned') ? [false] : [false, true]) {
    pinned = pin;
    await measure('missing');
    if (!process.argv.includes('--no-wp')) await measure('wp');
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
