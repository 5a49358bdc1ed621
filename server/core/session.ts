// The session model: one debugged program, its helper, its held faults. The DAP adapter, the
// CLI and the tests all drive this class; it imports neither vscode nor the DAP library.
import { EventEmitter } from 'node:events';
import { accessSync, constants, statSync } from 'node:fs';
import * as path from 'node:path';
import { HelperClient, HelperError } from './helperClient';
import { listTasks, TaskInfo } from './procfs';
import {
  AddrRange, AttachBody, FaultEvent, FaultKind, HelloBody, LaunchBody, NcEvent, Policy, PolicyArgs, Region, ResolveArgs,
  ResolveBody, ResolvedEvent, ResolveHow, SessionOptions, StreamMode, TrackSelector,
} from '../protocol/messages';

export interface LaunchConfig {
  program: string;
  args?: string[];
  cwd?: string;
  /** Added to (or, with a null value, removed from) the adapter's environment. */
  env?: Record<string, string | null>;
  stopOnEntry?: boolean;
  stopOnFirstFault?: boolean;
  stream?: StreamMode;
  helperPath?: string;
  /** Session options of the helper (docs/protocol.md, *Session options*). */
  followForks?: boolean;
  wpAsync?: boolean;
}

export interface AttachConfig {
  pid: number;
  /** What to register: all private anonymous memory by default. */
  track?: TrackSelector;
  stopOnFirstFault?: boolean;
  stream?: StreamMode;
  helperPath?: string;
  followForks?: boolean;
  wpAsync?: boolean;
}

/** The helper's session options of a launch/attach configuration, only those that are set. */
function sessionOptions(c: { followForks?: boolean; wpAsync?: boolean }): SessionOptions {
  return {
    ...(c.followForks !== undefined ? { followForks: c.followForks } : {}),
    ...(c.wpAsync !== undefined ? { wpAsync: c.wpAsync } : {}),
  };
}

export type StopReason = 'entry' | 'page fault' | 'step' | 'pause' | 'data breakpoint';

export interface StopInfo {
  reason: StopReason;
  tid: number;
  fault?: FaultEvent;
  /** Data breakpoints whose range holds the fault. */
  hitWatches?: number[];
}

export type WatchAccess = 'read' | 'write' | 'readWrite';

/** A data breakpoint: page-granular, on a range of the target's memory. */
export interface Watch { id: number; start: bigint; end: bigint; access: WatchAccess }

const USER_TOP = 1n << 47n;

export interface ExitInfo { code: number | null; signal: string | null }

export interface SessionEvents {
  fault: [FaultEvent];
  resolved: [ResolvedEvent];
  stopped: [StopInfo];
  region: [Region];
  /** A region went away (munmap) or moved (mremap: `remove` of the old place, then `region`). */
  regionRemoved: [Region];
  /** A non-cooperative event: fork, remap, remove (madvise), unmap. */
  nc: [NcEvent];
  output: ['stdout' | 'stderr', string];
  exited: [ExitInfo];
  /** The last held fault of this thread was resolved: it runs again. */
  threadResumed: [number];
  /** An attached process was let go; it runs on. */
  detached: [number];
  log: [string];
  /** The helper went away without being asked to: the session is over. */
  helperLost: [string];
}

type State = 'idle' | 'entry' | 'running' | 'exited' | 'detached' | 'disposed';

export class SessionError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = 'SessionError';
  }
}

export function describeFault(f: FaultEvent): string {
  return `${f.kind} ${f.access} at ${f.addr}`;
}

export class FaultSession extends EventEmitter<SessionEvents> {
  readonly helper = new HelperClient();
  hello: HelloBody | null = null;
  launchInfo: LaunchBody | AttachBody | null = null;
  /** True for a process that was running before the debugger came (attach). */
  attached = false;
  regions: Region[] = [];
  /** Faults waiting for the user, by sequence number. */
  readonly held = new Map<number, FaultEvent>();
  private state: State = 'idle';
  private config: LaunchConfig | null = null;
  private stepReason: StopReason | null = null;
  private filters: Record<FaultKind, boolean> = { missing: false, wp: true, minor: true };
  private watches: Watch[] = [];
  /** A step that widens what is held until its first stop (stepIn: one thread; stepOut: outside a VMA). */
  private oneShot: { holdTid?: number[]; holdRange?: AddrRange[] } | null = null;
  /**
   * A write that faulted on a protected, never-populated page comes back as a write-protect
   * fault on the same page once the missing fault is resolved (the page is filled protected).
   * That second fault is the same write: it is resolved without a second stop.
   */
  private retryingWrite = new Map<number, string>();
  exitInfo: ExitInfo | null = null;

  get pid(): number | undefined {
    return this.launchInfo?.pid;
  }

  get isRunning(): boolean {
    return this.state === 'running';
  }

  get isAtEntry(): boolean {
    return this.state === 'entry';
  }

  /** Starts the helper and the program; the program waits before its first instruction. */
  async launch(config: LaunchConfig): Promise<LaunchBody> {
    if (this.state !== 'idle') throw new SessionError('ESTATE', 'this session has already launched a program');
    this.config = config;
    const program = checkProgram(config.program, config.cwd);
    const cwd = config.cwd ?? path.dirname(program);
    await this.startHelper(config.helperPath);
    const env = config.env ? mergeEnv(process.env, config.env) : null;
    this.launchInfo = await this.helper.request('launch', {
      program, args: config.args ?? [], cwd, env, ...sessionOptions(config),
    });
    this.regions = [...this.launchInfo.regions];
    await this.applyPolicy({ stream: config.stream ?? 'all' });
    return this.launchInfo;
  }

  /** Takes a running process: its memory faults through the debugger's userfaultfd from now on. */
  async attach(config: AttachConfig): Promise<AttachBody> {
    if (this.state !== 'idle') throw new SessionError('ESTATE', 'this session already has a process');
    if (!Number.isInteger(config.pid) || config.pid <= 0) {
      throw new SessionError('EINVAL', `'pid' must be a process ID (a positive whole number), not '${String(config.pid)}'`);
    }
    this.config = { program: '', stopOnFirstFault: config.stopOnFirstFault ?? false };
    this.attached = true;
    await this.startHelper(config.helperPath);
    const body = await this.helper.request('attach', {
      pid: config.pid, ...(config.track ? { track: config.track } : {}), ...sessionOptions(config),
    });
    this.launchInfo = body;
    this.regions = [...body.regions];
    await this.applyPolicy({ stream: config.stream ?? 'all' });
    return body;
  }

  /** Registers more of an attached process (by name, range, or all anonymous memory). */
  async track(selector: TrackSelector): Promise<Region[]> {
    this.requireRunning('track');
    const { regions } = await this.helper.request('track', selector);
    this.regions.push(...regions);
    return regions;
  }

  async untrack(ranges: AddrRange[]): Promise<Region[]> {
    this.requireRunning('untrack');
    const { regions } = await this.helper.request('untrack', { ranges });
    const gone = new Set(regions.map((r) => `${r.start}-${r.end}`));
    this.regions = this.regions.filter((r) => !gone.has(`${r.start}-${r.end}`));
    return regions;
  }

  /** Lets an attached process go: held faults resolved, ranges unregistered; it runs on. */
  async detach(): Promise<void> {
    if (!this.attached || this.state !== 'running') return;
    await this.helper.request('detach', {});
  }

  private async startHelper(helperPath?: string): Promise<void> {
    this.helper.on('event', (e) => this.onHelperEvent(e));
    this.helper.on('log', (l) => this.emit('log', l));
    this.helper.on('output', (s, d) => this.emit('output', s, d));
    this.helper.on('exit', (code, signal) => {
      if (this.state === 'disposed' || this.state === 'exited' || this.state === 'detached') return;
      const why = signal ? `was killed by ${signal}` : `exited with code ${code}`;
      this.emit('helperLost', `the uffd helper ${why} unexpectedly. Last log lines:\n${this.helper.lastLog(10)}`);
    });
    this.hello = await this.helper.start(helperPath);
    if (!this.hello.uffd.available) {
      throw new SessionError('ENOUFFD', `userfaultfd is not available: ${this.hello.uffd.error ?? 'unknown reason'}`);
    }
  }

  /** Which fault kinds stop the program (exception breakpoint filters). */
  async setFilters(filters: Partial<Record<FaultKind, boolean>>): Promise<Policy> {
    this.filters = { ...this.filters, ...filters };
    return this.applyPolicy({});
  }

  /**
   * The helper's policy from what the user asked: the exception filters (fault kinds held
   * anywhere), data breakpoints (faults held in their ranges), and a step in progress.
   */
  private policyArgs(): PolicyArgs {
    if (this.oneShot) {
      return { hold: { missing: true, wp: true, minor: true }, holdTid: this.oneShot.holdTid ?? [], holdRange: this.oneShot.holdRange ?? [] };
    }
    const hold = { ...this.filters };
    let holdRange: AddrRange[] = [];
    if (this.watches.length > 0 && !hold.missing) {
      // Only the watched ranges: missing faults there, and write-protect faults of write watches.
      hold.missing = true;
      if (this.watches.some((w) => w.access !== 'read')) hold.wp = true;
      holdRange = this.watches.map((w) => ({ start: hexOf(w.start), end: hexOf(w.end) }));
    }
    return { hold, holdRange, holdTid: [] };
  }

  private applyPolicy(extra: { holdNext?: boolean; stream?: StreamMode }): Promise<Policy> {
    return this.helper.request('policy', { ...this.policyArgs(), ...extra });
  }

  /**
   * Data breakpoints. `read` stops on the first touch of each unpopulated page in the range
   * (missing faults); `write` also write-protects the range when it is set, so the first write
   * to each page stops (once per page: resolving un-protects it); `readWrite` both.
   */
  async setWatches(watches: Watch[]): Promise<void> {
    const old = this.watches;
    this.watches = watches;
    await this.applyPolicy({});
    for (const w of old) {
      if (w.access !== 'read' && !watches.some((n) => n.start === w.start && n.end === w.end && n.access !== 'read')) {
        await this.protect(w, false);
      }
    }
    for (const w of watches) if (w.access !== 'read' && !old.some((o) => o.id === w.id)) await this.protect(w, true);
  }

  private async protect(w: Watch, on: boolean): Promise<void> {
    if (!this.helper.running || this.state === 'exited' || this.state === 'detached') return;
    try {
      await this.helper.request('protect', { start: hexOf(w.start), end: hexOf(w.end), on });
    } catch (e) {
      this.emit('log', `write watch ${hexOf(w.start)}-${hexOf(w.end)}: protect ${on ? 'on' : 'off'} failed: ${(e as Error).message}`);
    }
  }

  private watchesHit(f: FaultEvent): Watch[] {
    const a = BigInt(f.addr);
    return this.watches.filter((w) => a >= w.start && a < w.end);
  }

  /** After configuration: stop at entry, or run (holding the first fault if asked). */
  async start(): Promise<void> {
    this.requireState('idle', 'start');
    if (this.config?.stopOnEntry) {
      this.state = 'entry';
      this.emitLater('stopped', { reason: 'entry', tid: this.pid! });
      return;
    }
    if (this.config?.stopOnFirstFault) {
      this.stepReason = 'page fault';
      await this.applyPolicy({ holdNext: true });
    }
    if (this.attached) {
      this.state = 'running'; // it never stopped
      return;
    }
    await this.run();
  }

  private async run(): Promise<void> {
    this.state = 'running';
    await this.helper.request('run', {});
  }

  /** Resolves every held fault by policy and runs until the next breakpoint. */
  async continue(): Promise<void> {
    if (this.state === 'entry') return this.run();
    this.requireRunning('continue');
    this.stepReason = null;
    await this.resolveHeld(null, 'default');
  }

  /** Resolves this thread's fault and stops at the next fault of the same thread (any kind). */
  async stepIn(tid: number): Promise<void> {
    if (this.state === 'entry') return this.next(null);
    this.requireRunning('step in');
    this.stepReason = 'step';
    this.oneShot = { holdTid: [tid] };
    await this.applyPolicy({});
    await this.resolveHeld(tid, 'default');
  }

  /** Resolves this thread's fault and runs until a fault outside the VMA `[start, end)`. */
  async stepOut(tid: number, start: bigint, end: bigint): Promise<void> {
    this.requireRunning('step out');
    this.stepReason = 'step';
    const outside: AddrRange[] = [];
    if (start > 0n) outside.push({ start: '0x0', end: hexOf(start) });
    if (end < USER_TOP) outside.push({ start: hexOf(end), end: hexOf(USER_TOP) });
    this.oneShot = { holdRange: outside };
    await this.applyPolicy({});
    await this.resolveHeld(tid, 'default');
  }

  /** Resolves the fault(s) held on `tid` (all when null) and stops at the next fault of any thread. */
  async next(tid: number | null): Promise<void> {
    if (this.state !== 'entry') this.requireRunning('next');
    this.stepReason = 'step';
    await this.applyPolicy({ holdNext: true });
    if (this.state === 'entry') return this.run();
    await this.resolveHeld(tid, 'default');
  }

  /** Holds the next fault of any thread. */
  async pause(): Promise<void> {
    this.requireRunning('pause');
    this.stepReason = 'pause';
    await this.applyPolicy({ holdNext: true });
  }

  /**
   * Resolves a held fault by hand: any way the helper offers (zero, copy from a pattern, bytes
   * or a file, continue, unprotect, poison, wake...). On failure the fault stays held.
   */
  async resolve(seq: number, how: ResolveHow, extra: Omit<ResolveArgs, 'seq' | 'how'> = {}): Promise<ResolveBody> {
    this.requireRunning('resolve');
    const f = this.held.get(seq);
    if (!f) throw new SessionError('ESTATE', `fault #${seq} is not held (it may have been resolved already)`);
    return this.helper.request('resolve', { seq, how, ...extra });
  }

  private async resolveHeld(tid: number | null, how: ResolveHow): Promise<void> {
    const pages = new Map<string, number>();
    for (const f of this.held.values()) {
      if (tid === null || f.tid === tid) {
        if (!pages.has(f.page)) pages.set(f.page, f.seq);
      }
    }
    for (const seq of pages.values()) {
      try {
        await this.helper.request('resolve', { seq, how });
      } catch (e) {
        // Resolved together with another fault on the same page in the meantime.
        if (!(e instanceof HelperError && e.code === 'ESTATE')) throw e;
      }
    }
  }

  heldFor(tid: number): FaultEvent | undefined {
    for (const f of this.held.values()) if (f.tid === tid) return f;
    return undefined;
  }

  threads(): TaskInfo[] {
    if (this.pid === undefined || this.state === 'exited' || this.state === 'detached') return [];
    return listTasks(this.pid);
  }

  /** Ends the program (it is killed); `exited` follows. */
  async terminate(): Promise<void> {
    if (this.state === 'exited' || this.state === 'detached' || this.state === 'disposed' || !this.helper.running) return;
    await this.helper.request('kill', {});
  }

  /**
   * Ends the helper. A launched program still running is killed with it; an attached process
   * is detached and runs on (the helper detaches on shutdown too, as a second guard).
   */
  async dispose(): Promise<void> {
    if (this.state === 'disposed') return;
    if (this.attached && this.state === 'running' && this.helper.running) {
      try {
        await this.detach();
      } catch (e) {
        this.emit('log', `detach failed (${(e as Error).message}); the helper detaches as it exits`);
      }
    }
    this.state = 'disposed';
    await this.helper.stop();
  }

  private onHelperEvent(e: import('../protocol/messages').HelperEvent): void {
    switch (e.event) {
      case 'fault':
        if (e.held) {
          const retried = this.retryingWrite.get(e.tid);
          this.retryingWrite.delete(e.tid);
          if (retried === e.page && e.kind === 'wp') {
            this.emit('fault', e);
            this.helper.request('resolve', { seq: e.seq, how: 'default' }).catch(() => { /* resolved with its page */ });
            break;
          }
          const hits = this.watchesHit(e);
          if (!this.oneShot && this.stepReason === null && hits.length > 0 && !this.filters[e.kind] &&
              e.access === 'read' && hits.every((w) => w.access === 'write')) {
            // Held for a write watch, but only read: not a stop. (Only faults inside a watched
            // range take this round trip.)
            this.emit('fault', e);
            this.helper.request('resolve', { seq: e.seq, how: 'default' }).catch(() => { /* resolved with its page */ });
            break;
          }
          this.held.set(e.seq, e);
          const reason = this.stepReason ?? (hits.length > 0 && !this.filters[e.kind] ? 'data breakpoint' : 'page fault');
          this.stepReason = null;
          if (this.oneShot) {
            this.oneShot = null;
            this.applyPolicy({}).catch((err: Error) => this.emit('log', `restoring the policy after a step failed: ${err.message}`));
          }
          this.emit('fault', e);
          this.emit('stopped', { reason, tid: e.tid, fault: e, hitWatches: hits.map((w) => w.id) });
        } else {
          this.emit('fault', e);
        }
        break;
      case 'resolved': {
        const f = this.held.get(e.seq);
        this.held.delete(e.seq);
        if (f && f.kind === 'missing' && f.access === 'write' && this.watchesHit(f).length > 0) this.retryingWrite.set(f.tid, f.page);
        this.emit('resolved', e);
        if (f && !this.heldFor(f.tid)) this.emit('threadResumed', f.tid);
        break;
      }
      case 'region':
        if (e.action === 'remove') {
          const s = BigInt(e.region.start), end = BigInt(e.region.end);
          this.regions = this.regions.flatMap((r) => {
            const rs = BigInt(r.start), re = BigInt(r.end);
            if (re <= s || rs >= end) return [r];
            const left = rs < s ? [{ ...r, end: e.region.start }] : [];
            const right = re > end ? [{ ...r, start: e.region.end }] : [];
            return [...left, ...right];
          });
          this.emit('regionRemoved', e.region);
        } else {
          this.regions.push(e.region);
          this.emit('region', e.region);
        }
        break;
      case 'nc':
        this.emit('nc', e);
        break;
      case 'detached':
        this.state = 'detached';
        this.held.clear();
        this.emit('detached', e.pid);
        break;
      case 'exited':
        this.state = 'exited';
        this.held.clear();
        this.exitInfo = { code: e.code, signal: e.signal };
        this.emit('exited', this.exitInfo);
        break;
    }
  }

  private emitLater<K extends keyof SessionEvents>(name: K, ...args: SessionEvents[K]): void {
    // Like the reference adapter: a response leaves before the events it causes.
    setImmediate(() => (this.emit as (n: K, ...a: SessionEvents[K]) => boolean)(name, ...args));
  }

  private requireState(s: State, what: string): void {
    if (this.state !== s) throw new SessionError('ESTATE', `cannot ${what} now: the program is ${this.state}`);
  }

  private requireRunning(what: string): void {
    if (this.state === 'exited') throw new SessionError('ESTATE', `cannot ${what}: the program has exited`);
    if (this.state !== 'running') throw new SessionError('ESTATE', `cannot ${what}: the program is ${this.state}`);
  }
}

function hexOf(n: bigint): string {
  return '0x' + n.toString(16);
}

function checkProgram(program: string, cwd?: string): string {
  if (!program) throw new SessionError('EINVAL', "the launch configuration has no 'program': set it to the path of the executable to debug");
  const abs = path.resolve(cwd ?? process.cwd(), program);
  let st;
  try {
    st = statSync(abs);
  } catch {
    throw new SessionError('ENOENT', `program '${abs}' does not exist: check 'program' in the launch configuration (build it first?)`);
  }
  if (!st.isFile()) throw new SessionError('EINVAL', `program '${abs}' is not a regular file`);
  try {
    accessSync(abs, constants.X_OK);
  } catch {
    throw new SessionError('EACCES', `program '${abs}' is not executable: chmod +x it`);
  }
  return abs;
}

function mergeEnv(base: NodeJS.ProcessEnv, extra: Record<string, string | null>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(base)) if (v !== undefined) out[k] = v;
  for (const [k, v] of Object.entries(extra)) {
    if (v === null) delete out[k];
    else out[k] = v;
  }
  return out;
}
