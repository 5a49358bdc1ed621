// demo/spin as a test subject: a long-running process whose printed checksums prove that every
// page it wrote still holds what it wrote (see demo/spin.c), plus procfs probes around it.
import assert from 'node:assert/strict';
import { ChildProcess, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { until } from './waits';

export const SPIN = path.join(path.resolve(__dirname, '..', '..'), 'demo', 'bin', 'spin');

const spins: ChildProcess[] = [];
/** SIGKILLs every spin still running (for `after`). */
export function killSpins(): void {
  for (const p of spins) p.kill('SIGKILL');
}

/** What spin's checksum must be after `iter` iterations over a share of n pages (see demo/spin.c). */
export function expectedChecksum(iter: number, n: number): bigint {
  let sum = 0n;
  for (let k = 0; k < n && k < iter; k++) sum += BigInt(k + 1 + Math.floor((iter - 1 - k) / n) * n);
  return sum;
}

export function procStatus(pid: number, key: string): string | null {
  try {
    return new RegExp(`^${key}:\\s*(.*)$`, 'm').exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? null;
  } catch {
    return null;
  }
}

/** VMAs of pid whose VmFlags carry `um` (registered for missing faults). */
export function uffdVmas(pid: number): string[] {
  const out: string[] = [];
  let vma = '';
  for (const line of readFileSync(`/proc/${pid}/smaps`, 'utf8').split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) vma = line;
    else if (line.startsWith('VmFlags:') && /\bum\b/.test(line)) out.push(vma);
  }
  return out;
}

/** Gone, or a zombie (dead, waiting to be reaped by init). */
export function dead(pid: number): boolean {
  const state = procStatus(pid, 'State');
  return state === null || state.startsWith('Z') || state.startsWith('X');
}

export interface Share { worker: number; tid: number; from: number; to: number }

export class Spin {
  readonly proc: ChildProcess;
  out = '';
  readonly exited: Promise<number | null>;
  constructor(args: string[]) {
    this.proc = spawn(SPIN, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    spins.push(this.proc);
    this.proc.stdout!.setEncoding('utf8');
    this.proc.stdout!.on('data', (d: string) => { this.out += d; });
    this.exited = new Promise((resolve) => this.proc.on('exit', (code) => resolve(code)));
  }
  get pid(): number { return this.proc.pid!; }
  async shares(workers: number): Promise<Share[]> {
    await until(() => (this.out.match(/^worker /gm) ?? []).length === workers, 10_000, `${workers} worker lines from spin: ${this.out}`);
    return [...this.out.matchAll(/^worker (\d+) tid (\d+) pages (\d+)-(\d+)$/gm)]
      .map((w) => ({ worker: Number(w[1]), tid: Number(w[2]), from: Number(w[3]), to: Number(w[4]) }));
  }
  /** Every checksum line must match the formula; the last one of each worker must be at `iterations`. */
  assertChecksums(shares: Share[], iterations: number, what: string): void {
    const lines = [...this.out.matchAll(/^(\d+) iter (\d+) checksum ([0-9a-f]+)$/gm)];
    for (const l of lines) {
      const sh = shares.find((x) => x.worker === Number(l[1]))!;
      assert.equal(BigInt('0x' + l[3]), expectedChecksum(Number(l[2]), sh.to - sh.from), `${what}: worker ${l[1]} checksum at iteration ${l[2]}`);
    }
    for (const sh of shares) {
      assert.ok(lines.some((l) => Number(l[1]) === sh.worker && Number(l[2]) === iterations), `${what}: worker ${sh.worker} printed its final checksum (iteration ${iterations})`);
    }
  }
}

