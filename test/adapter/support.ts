// Shared by the adapter tests: the real adapter under DebugClient, with the program's output
// collected, and the small waits every test needs (each with a timeout).
import assert from 'node:assert/strict';
import { afterEach, beforeEach } from 'node:test';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { DebugClient } from '@vscode/debugadapter-testsupport';
import { DebugProtocol } from '@vscode/debugprotocol';
import { waitGone } from '../support/waits';

export { waitGone };

export const root = path.resolve(__dirname, '..', '..');
export const ADAPTER = path.join(root, 'dist', 'adapter.js');
export const TOUCH = path.join(root, 'demo', 'bin', 'touch');

export class Harness {
  output = '';

  /** Every stop, in order, from the start: DebugClient's waitForEvent misses a second stop that
   *  arrives in the same read as the first, a queue does not. */
  private readonly stops: DebugProtocol.StoppedEvent[] = [];
  private stopWaiter: (() => void) | null = null;

  private constructor(readonly dc: DebugClient) {
    dc.on('output', (e: DebugProtocol.OutputEvent) => { this.output += e.body.output; });
    dc.on('stopped', (e: DebugProtocol.StoppedEvent) => {
      this.stops.push(e);
      this.stopWaiter?.();
    });
  }

  /** The next stop not yet taken from the queue (waits up to `ms`). */
  async nextStop(ms = 15_000): Promise<DebugProtocol.StoppedEvent> {
    const deadline = Date.now() + ms;
    while (this.stops.length === 0) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no stop within ${ms} ms; console: ${this.output}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.stopWaiter = () => { clearTimeout(t); resolve(); };
      });
      this.stopWaiter = null;
    }
    return this.stops.shift()!;
  }

  /** adapterArgs: what the extension passes on the adapter's command line (--follow-forks, --observe). */
  static async start(adapterArgs: string[] = []): Promise<Harness> {
    let dc: DebugClient;
    if (adapterArgs.length) {
      // DebugClient runs `runtime executable` without arguments: a script carries them.
      const script = path.join(mkdtempSync(path.join(tmpdir(), 'uffd-adapter-')), 'adapter.sh');
      writeFileSync(script, `exec '${process.execPath}' '${ADAPTER}' ${adapterArgs.map((a) => `'${a}'`).join(' ')}\n`);
      dc = new DebugClient('/bin/sh', script, 'uffd');
    } else {
      dc = new DebugClient(process.execPath, ADAPTER, 'uffd');
    }
    dc.defaultTimeout = 15_000;
    const h = new Harness(dc);
    await dc.start();
    return h;
  }

  stop(): Promise<void> {
    return this.dc.stop();
  }

  /** initialize, launch touch, set the exception filters, configurationDone. */
  async launch(extra: Record<string, unknown>, filters: string[] = [], args = ['--pages', '64']): Promise<void> {
    await Promise.all([
      this.dc.waitForEvent('initialized').then(() => this.dc.setExceptionBreakpointsRequest({ filters }))
        .then(() => this.dc.configurationDoneRequest()),
      this.dc.launch({ program: TOUCH, args, cwd: root, ...extra } as DebugProtocol.LaunchRequestArguments),
    ]);
  }

  async variablesOf(ref: number): Promise<Map<string, DebugProtocol.Variable>> {
    const r = await this.dc.variablesRequest({ variablesReference: ref });
    return new Map(r.body.variables.map((v) => [v.name, v]));
  }

  async scopesOf(threadId: number): Promise<Map<string, DebugProtocol.Scope>> {
    const st = await this.dc.stackTraceRequest({ threadId });
    assert.ok(st.body.stackFrames.length > 0, 'a stopped thread has a frame');
    const sc = await this.dc.scopesRequest({ frameId: st.body.stackFrames[0].id });
    return new Map(sc.body.scopes.map((s) => [s.name, s]));
  }

  async waitOutput(re: RegExp): Promise<RegExpExecArray> {
    const deadline = Date.now() + 10_000;
    for (;;) {
      const m = re.exec(this.output);
      if (m) return m;
      if (Date.now() > deadline) throw new Error(`no output matching ${re} in: ${this.output}`);
      await this.dc.waitForEvent('output', 1000).catch(() => undefined);
    }
  }

  pid(): number {
    const m = /pid (\d+)/.exec(this.output);
    assert.ok(m, `the adapter announced the pid: ${this.output}`);
    return Number(m[1]);
  }

  /**
   * With the missing filter on, continues past start-up faults (stack, libc, heap) until a stop
   * on a page in [page, pages) of the region touch prints; returns that stop and the region's
   * start. Each stop passed over is continued alone (DAP single-thread continue), so a region
   * stop of another thread stays held until it is taken here.
   */
  async stopInRegion(page = 0, pages = 16): Promise<{ ev: DebugProtocol.StoppedEvent; region: bigint }> {
    let region: bigint | null = null;
    for (let i = 0; i < 5000; i++) {
      const ev = await this.nextStop();
      const m = /region (0x[0-9a-f]+) pages/.exec(this.output);
      if (m) region = BigInt(m[1]);
      const addr = faultAddr(ev);
      if (region !== null && addr >= region + BigInt(page) * 4096n && addr < region + BigInt(pages) * 4096n) {
        return { ev, region };
      }
      await this.dc.continueRequest({ threadId: ev.body.threadId!, singleThread: true });
    }
    throw new Error(`never stopped in the region: ${this.output}`);
  }
}

export function faultAddr(ev: DebugProtocol.StoppedEvent): bigint {
  const m = /at (0x[0-9a-f]+)/.exec(ev.body.description ?? '');
  assert.ok(m, `a fault stop names its address: ${ev.body.description}`);
  return BigInt(m[1]);
}

/** The line (1-based) that holds both `text` and the TOUCH marker comment. */
export function markerLine(file: string, text: string): number {
  const lines = readFileSync(file, 'utf8').split('\n');
  const i = lines.findIndex((l) => l.includes(text) && l.includes('/* TOUCH */'));
  assert.ok(i >= 0, `marker '${text}' /* TOUCH */ in ${file}`);
  return i + 1;
}


/** A fresh adapter for every test of the file, stopped after it: `onEachTest((x) => { h = x; })`. */
export function onEachTest(set: (h: Harness) => void, adapterArgs: string[] = []): void {
  let cur: Harness | undefined;
  beforeEach(async () => {
    cur = await Harness.start(adapterArgs);
    set(cur);
  });
  afterEach(async () => {
    await cur?.stop();
    cur = undefined;
  });
}
