// Shared by kinds.test.ts and resolve.test.ts: drives demo/bin/kinds under a real helper.
import assert from 'node:assert/strict';
import * as path from 'node:path';
import { HelperClient } from '../../server/core/helperClient';
import { FaultEvent, faultEvents, HelperEvent, PolicyArgs, ResolvedEvent, unbatched } from '../../server/protocol/messages';
import { withTimeout } from '../support/waits';

export { withTimeout };

export const root = path.resolve(__dirname, '..', '..');
export const KINDS = path.join(root, 'demo', 'bin', 'kinds');
export const TOUCH = path.join(root, 'demo', 'bin', 'touch');
export const PAGE = 4096n;


export const hex = (n: bigint): string => '0x' + n.toString(16);

/** One program under one helper, with everything it said and every event. */
export class Target {
  stdout = '';
  faults: FaultEvent[] = [];
  resolved: ResolvedEvent[] = [];
  events: HelperEvent[] = [];
  pid = 0;
  exit: { code: number | null; signal: string | null } | null = null;
  private waiters: (() => void)[] = [];

  constructor(readonly c: HelperClient) {
    c.on('output', (s, d) => { if (s === 'stdout') { this.stdout += d; this.poke(); } });
    c.on('event', (e) => {
      this.events.push(...unbatched(e));
      this.faults.push(...faultEvents(e));
      if (e.event === 'resolved') this.resolved.push(e);
      if (e.event === 'exited') this.exit = { code: e.code, signal: e.signal };
      this.poke();
    });
    c.on('exit', () => this.poke());
  }

  /** Re-checks the waiters; public for output that does not come through the helper (attach). */
  poke(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  /** Resolves when cond() holds, checked after every output line or event. */
  until<T>(cond: () => T | undefined | false, what: string, ms = 15_000): Promise<T> {
    return withTimeout(new Promise<T>((resolve) => {
      const check = () => {
        const v = cond();
        if (v) resolve(v);
        else this.waiters.push(check);
      };
      check();
    }), ms, `${what} (stdout so far: ${JSON.stringify(this.stdout.slice(-400))}; helper log: ${this.c.lastLog(5)})`);
  }

  async ready(): Promise<{ addr: bigint; pages: number; psize: bigint }> {
    const m = await this.until(() => /ready (0x[0-9a-f]+) pages (\d+) psize (\d+)/.exec(this.stdout) ?? undefined, 'ready line');
    return { addr: BigInt(m[1]), pages: Number(m[2]), psize: BigInt(m[3]) };
  }

  go(): void {
    process.kill(this.pid, 'SIGUSR1');
  }

  heldFault(pred: (f: FaultEvent) => boolean = () => true, what = 'a held fault'): Promise<FaultEvent> {
    return this.until(() => this.faults.find((f) => f.held && pred(f)), what);
  }

  heldFaults(n: number, pred: (f: FaultEvent) => boolean = () => true): Promise<FaultEvent[]> {
    return this.until(() => { const h = this.faults.filter((f) => f.held && pred(f)); return h.length >= n ? h : undefined; }, `${n} held faults`);
  }

  exited(ms = 20_000): Promise<{ code: number | null; signal: string | null }> {
    return this.until(() => this.exit ?? undefined, 'exit of the program', ms);
  }

  /** After exit: the checksum line and the per-page sums and first bytes. */
  async report(): Promise<{ sums: bigint[]; first: number[]; checksum: bigint }> {
    await this.until(() => /checksum \d+/.test(this.stdout), 'checksum line');
    const sums: bigint[] = [];
    const first: number[] = [];
    for (const m of this.stdout.matchAll(/page (\d+) sum (\d+) first (\d+)/g)) {
      sums[Number(m[1])] = BigInt(m[2]);
      first[Number(m[1])] = Number(m[3]);
    }
    return { sums, first, checksum: BigInt(/checksum (\d+)/.exec(this.stdout)![1]) };
  }
}

const clients: HelperClient[] = [];

export async function stopAll(): Promise<void> {
  for (const c of clients.splice(0)) await c.stop();
}

/** Starts a helper, launches the program with args, applies the policy, runs it. */
export async function launch(program: string, args: string[], pol: PolicyArgs = {}): Promise<Target> {
  const c = new HelperClient();
  clients.push(c);
  await c.start();
  const t = new Target(c);
  const l = await c.request('launch', { program, args, cwd: root, env: null });
  t.pid = l.pid;
  if (Object.keys(pol).length) await c.request('policy', pol);
  await c.request('run', {});
  return t;
}

export function inRange(start: bigint, pages: number, psize = PAGE): (f: FaultEvent) => boolean {
  const end = start + BigInt(pages) * psize;
  return (f) => BigInt(f.addr) >= start && BigInt(f.addr) < end;
}

export function pageSum(byte: number, psize = PAGE): bigint {
  return BigInt(byte) * psize;
}

export function assertSum(got: bigint | undefined, byte: number, what: string, psize = PAGE): void {
  assert.equal(got, pageSum(byte, psize), `${what}: every byte is ${byte}`);
}
