// Shared by the observe tests: run a program under ObserveSession and collect what it said.
import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { ObserveEvent, ObserveOptions, ObserveResult, ObserveSession } from '../../server/core/observe';
import type { ObsRecord } from '../../server/protocol/observe';
import { withTimeout } from '../support/waits';

export const root = path.resolve(__dirname, '..', '..');
export const POSTCOPY = path.join(root, 'demo', 'bin', 'postcopy');
export const LIB = path.join(root, 'server', 'observe', 'bin', 'libuffd-observe.so');

export interface Observed {
  stdout: string;
  stderr: string;
  result: ObserveResult;
  events: ObserveEvent[];
  records: ObsRecord[];
  session: ObserveSession;
}

/** Runs a program observed; `onEvent` sees events as they come (for stop tests). */
export async function observe(o: ObserveOptions, ms = 60_000,
  onEvent?: (e: ObserveEvent, s: ObserveSession) => void): Promise<Observed> {
  const session = new ObserveSession();
  const events: ObserveEvent[] = [];
  const records: ObsRecord[] = [];
  let stdout = '';
  let stderr = '';
  session.on('output', (k, d) => { if (k === 'stdout') stdout += d; else stderr += d; });
  session.on('record', (r) => records.push(r));
  session.on('event', (e) => { events.push(e); onEvent?.(e, session); });
  let failure: Error | null = null;
  session.on('error', (e) => { failure = e; });
  await session.start(o);
  const result = await withTimeout(session.wait(), ms, `${path.basename(o.program)} to end`).catch((e) => {
    session.kill();
    throw new Error(`${(e as Error).message}; stderr so far: ${stderr.slice(-2000)}`);
  });
  if (failure) throw failure;
  return { stdout, stderr, result, events, records, session };
}

/** The demo's own counts: `postcopy-handler: reads=R faults=F ...`. */
export function handlerCounts(stderr: string): Record<string, number> {
  const line = stderr.split('\n').find((l) => l.startsWith('postcopy-handler: '));
  if (!line) throw new Error(`no postcopy-handler line in:\n${stderr}`);
  const out: Record<string, number> = {};
  for (const kv of line.slice('postcopy-handler: '.length).trim().split(/\s+/)) {
    const [k, v] = kv.split('=');
    out[k] = Number(v);
  }
  return out;
}

/** Compiles a C test program of this folder into a temporary directory. */
export function buildC(name: string, flags: string[] = ['-O1']): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'uffd-observe-'));
  const out = path.join(dir, name);
  execFileSync('gcc', [...flags, '-g', '-Wall', '-Wextra', '-Werror', '-pthread', '-o', out,
    path.join(__dirname, `${name}.c`)], { stdio: 'inherit' });
  return out;
}
