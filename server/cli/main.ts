// uffd-debug: the headless front end. Runs a program under the helper with every fault resolved
// by policy, prints faults as they happen (to stderr, like strace; the program's own output is
// untouched on stdout), and a summary at the end.
import { readFileSync, writeFileSync } from 'node:fs';
import { constants } from 'node:os';
import * as path from 'node:path';
import { FaultSession } from '../core/session';
import { formatSummary, SummaryCollector } from '../core/summary';
import { FaultEvent, faultsOf } from '../protocol/messages';
import { TimelineEvent } from '../../webview/messages';
import { reportHtml } from '../../webview/report';

const USAGE = `usage: uffd-debug run [options] -- PROGRAM [ARGS...]

Runs PROGRAM with its anonymous memory under a userfaultfd held by uffd-debug.
Every page fault is resolved as the kernel would have; each one is printed to stderr
(at most --lines per second, then a rate line), followed by a summary.

options:
  --quiet         print only the summary
  --lines N       fault lines printed per second before switching to rate lines (default 20)
  --cwd DIR       working directory of the program (default: current directory)
  --report FILE   write the fault timeline as one self-contained HTML file
  -h, --help      this text

Needs root, or read/write access to /dev/userfaultfd and ptrace permission (see README).`;

interface Options { quiet: boolean; lines: number; cwd: string; program: string; args: string[]; report: string | null }

function parseArgs(argv: string[]): Options {
  if (argv.length === 0 || argv[0] === '-h' || argv[0] === '--help') {
    console.log(USAGE);
    process.exit(argv.length === 0 ? 2 : 0);
  }
  if (argv[0] !== 'run') fail(`unknown command '${argv[0]}'`);
  const o: Options = { quiet: false, lines: 20, cwd: process.cwd(), program: '', args: [], report: null };
  let i = 1;
  for (; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--') { i++; break; }
    if (a === '--quiet') o.quiet = true;
    else if (a === '--lines') o.lines = Number(argv[++i]);
    else if (a === '--cwd') o.cwd = argv[++i];
    else if (a === '--report') o.report = argv[++i] ?? fail('--report takes a file name');
    else if (a === '-h' || a === '--help') { console.log(USAGE); process.exit(0); }
    else if (a.startsWith('-')) fail(`unknown option '${a}'`);
    else break;
  }
  if (!Number.isInteger(o.lines) || o.lines < 0) fail('--lines takes a whole number');
  if (i >= argv.length) fail('no program given');
  o.program = argv[i];
  o.args = argv.slice(i + 1);
  return o;
}

function fail(msg: string): never {
  process.stderr.write(`uffd-debug: ${msg}\n${USAGE}\n`);
  process.exit(2);
}

function faultLine(f: FaultEvent, t0: number): string {
  const ms = ((f.t - t0) / 1e6).toFixed(3).padStart(10);
  const lat = f.latencyNs !== undefined ? ` ${(f.latencyNs / 1000).toFixed(1)}µs` : '';
  return `uffd: #${f.seq} +${ms}ms tid ${f.tid} ${f.kind} ${f.access} ${f.addr} -> ${f.ioctl ?? 'held'}${lat}`;
}

async function main(): Promise<number> {
  const o = parseArgs(process.argv.slice(2));
  const session = new FaultSession();
  const err = (s: string) => process.stderr.write(s + '\n');
  session.on('output', (stream, data) => (stream === 'stdout' ? process.stdout : process.stderr).write(data));
  if (process.env.UFFD_DEBUG_LOG) session.on('log', (l) => err(l));

  let collector: SummaryCollector | null = null;
  const timeline: TimelineEvent[] = [];
  if (o.report) {
    session.on('resolved', ({ type: _t, ...r }) => timeline.push(r));
    session.on('region', (region) => timeline.push({ event: 'region', action: 'add', region }));
  }
  let t0 = -1;
  let window = 0;
  let suppressed = 0;
  const onFault = (f: FaultEvent) => {
    if (o.report) {
      const { type: _t, ...rest } = f;
      timeline.push(rest);
    }
    collector?.add(f);
    if (o.quiet) return;
    if (t0 < 0) t0 = f.t;
    if (window < o.lines) { window++; err(faultLine(f, t0)); } else suppressed++;
  };
  session.on('fault', onFault);
  // auto-resolved faults come in batches: each is printed and counted as a held one is
  session.on('faults', (b) => faultsOf(b).forEach(onFault));
  session.on('region', (r) => collector?.addRegion(r));
  const ticker = setInterval(() => {
    if (suppressed > 0) err(`uffd: ... ${suppressed} more faults in the last second (${window + suppressed} faults/s)`);
    window = 0;
    suppressed = 0;
  }, 1000);

  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve, reject) => {
    session.on('exited', resolve);
    session.on('helperLost', (m) => reject(new Error(m)));
  });
  const stop = () => { void session.terminate(); };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  try {
    const info = await session.launch({ program: o.program, args: o.args, cwd: o.cwd, stream: 'all' });
    collector = new SummaryCollector([...info.regions]);
    timeline.unshift(...info.regions.map((region): TimelineEvent => ({ event: 'region', action: 'add', region })));
    if (!o.quiet) err(`uffd: pid ${info.pid}, userfaultfd via ${info.uffdSource}, ${info.regions.length} regions registered`);
    await session.start();
    const ex = await exited;
    clearInterval(ticker);
    if (suppressed > 0) err(`uffd: ... ${suppressed} more faults`);
    const how = ex.signal ? `killed by ${ex.signal}` : `exit code ${ex.code}`;
    err(formatSummary(collector.summary(), how));
    if (o.report) writeReport(o, timeline);
    return ex.signal ? 128 + signalNumber(ex.signal) : (ex.code ?? 1);
  } catch (e) {
    clearInterval(ticker);
    err(`uffd-debug: ${(e as Error).message}`);
    return 1;
  } finally {
    await session.dispose();
  }
}

function writeReport(o: Options, events: TimelineEvent[]): void {
  // dist/cli.js sits beside dist/webview.js; the style is in media/.
  const script = readFileSync(path.join(__dirname, 'webview.js'), 'utf8');
  const style = readFileSync(path.join(__dirname, '..', 'media', 'timeline.css'), 'utf8');
  const title = `uffd-debug: ${path.basename(o.program)} ${o.args.join(' ')}`.trim();
  writeFileSync(o.report!, reportHtml({ title, script, style, events }));
  process.stderr.write(`uffd: timeline report (${events.length} events) written to ${o.report}\n`);
}

function signalNumber(name: string): number {
  return constants.signals[name as NodeJS.Signals] ?? 0;
}

main().then((code) => process.exit(code), (e) => {
  process.stderr.write(`uffd-debug: ${(e as Error).stack}\n`);
  process.exit(1);
});
