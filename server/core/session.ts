// The session model: one debugged program, its helper, its held faults. The DAP adapter, the
// CLI and the tests all drive this class; it imports neither vscode nor the DAP library.
import { EventEmitter } from 'node:events';
import { accessSync, constants, statSync } from 'node:fs';
import * as path from 'node:path';
import { HelperClient, HelperError } from './helperClient';
import { findVma, listTasks, readMaps, readSmaps, readStartBrk, TaskInfo, Vma, vmaName } from './procfs';
import { ActiveFilter, FilterRequest, FilterResult, FilterSet, nameMatches, toHoldRanges } from './filters';
import { RegionCounters } from './regionCounters';
import {
  AddrRange, AttachBody, FaultEvent, FaultKind, FaultsEvent, FB_KIND_SHIFT, HelloBody, LaunchBody, NcEvent, NcWhat, Policy, PolicyArgs, Region, ResolveArgs,
  ResolveBody, ResolvedEvent, ResolveHow, SessionOptions, StackBody, StreamMode, TrackSelector,
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
  userModeOnly?: boolean;
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
  userModeOnly?: boolean;
}

const NC_KINDS = ['fork', 'remap', 'remove', 'unmap'] as const;
const FAULT_KINDS: readonly FaultKind[] = ['missing', 'wp', 'minor'];

/** The helper's session options of a launch/attach configuration, only those that are set. */
function sessionOptions(c: { followForks?: boolean; wpAsync?: boolean; userModeOnly?: boolean }): SessionOptions {
  return {
    ...(c.followForks !== undefined ? { followForks: c.followForks } : {}),
    ...(c.wpAsync !== undefined ? { wpAsync: c.wpAsync } : {}),
    ...(c.userModeOnly !== undefined ? { userModeOnly: c.userModeOnly } : {}),
  };
}

export type StopReason = 'entry' | 'page fault' | 'step' | 'pause' | 'data breakpoint' | 'event';

export interface StopInfo {
  reason: StopReason;
  tid: number;
  fault?: FaultEvent;
  /** Data breakpoints whose range holds the fault. */
  hitWatches?: number[];
  /** With reason `event`: the non-cooperative event whose filter stopped (at the next fault). */
  event?: NcEvent;
  /** The exception filter (with its condition) that stopped, if one did. */
  filter?: { id: string; condition: string };
}

export type WatchAccess = 'read' | 'write' | 'readWrite';

/** A data breakpoint: page-granular, on a range of the target's memory. */
export interface Watch { id: number; start: bigint; end: bigint; access: WatchAccess }

const USER_TOP = 1n << 47n;

export interface ExitInfo { code: number | null; signal: string | null }

export interface SessionEvents {
  /** A held fault (a stop, or held with one), or a fault held by the policy and resolved here at once. */
  fault: [FaultEvent];
  /** Faults the helper resolved itself, a batch in columns (faultsOf() gives them one by one). */
  faults: [FaultsEvent];
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
  /** Exception breakpoint filters: fault kinds and events, with conditions. */
  readonly filterSet = defaultFilters();
  private watches: Watch[] = [];
  /** An event filter matched: the next fault of any thread is held and reported with it. */
  private pendingEvent: NcEvent | null = null;
  /** The helper's policy as last answered (the Region scope shows it). */
  policy: Policy | null = null;
  /** Faults resolved, held and pages evicted per registered region, from the helper's events. */
  readonly counters = new RegionCounters();
  /** Policy fields from filters and watches, recomputed when they (or the regions) change. */
  private basePolicy: PolicyArgs | null = null;
  /** `holdEvery` as last sent: sending it again restarts the helper's count. */
  private sentEvery = 0;
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
    this.counters.setRegions(this.regions);
    await this.applyPolicy({ stream: config.stream ?? 'all' });
    return this.launchInfo;
  }

  /** Takes a running process: its memory faults through the debugger's userfaultfd from now on. */
  async attach(config: AttachConfig): Promise<AttachBody> {
    if (this.state !== 'idle') throw new SessionError('ESTATE', 'this session already has a process');
    if (!Number.isInteger(config.pid) || config.pid <= 0) {
      throw new SessionError('EINVAL', `'pid' must be a process ID (a positive whole number), not '${String(config.pid)}'`);
    }
    this.config = { program: '', stopOnFirstFault: config.stopOnFirstFault ?? false, userModeOnly: config.userModeOnly };
    this.attached = true;
    await this.startHelper(config.helperPath);
    const body = await this.helper.request('attach', {
      pid: config.pid, ...(config.track ? { track: config.track } : {}), ...sessionOptions(config),
    });
    this.launchInfo = body;
    this.regions = [...body.regions];
    this.counters.setRegions(this.regions);
    await this.applyPolicy({ stream: config.stream ?? 'all' });
    return body;
  }

  /** Registers more of an attached process (by name, range, or all anonymous memory). */
  async track(selector: TrackSelector): Promise<Region[]> {
    this.requireRunning('track');
    const { regions } = await this.helper.request('track', selector);
    this.regions.push(...regions);
    this.counters.setRegions(this.regions);
    return regions;
  }

  async untrack(ranges: AddrRange[]): Promise<Region[]> {
    this.requireRunning('untrack');
    const { regions } = await this.helper.request('untrack', { ranges });
    const gone = new Set(regions.map((r) => `${r.start}-${r.end}`));
    this.regions = this.regions.filter((r) => !gone.has(`${r.start}-${r.end}`));
    this.counters.setRegions(this.regions);
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
    if (!this.hello.uffd.available && !this.config?.userModeOnly) {
      throw new SessionError('ENOUFFD', `userfaultfd is not available: ${this.hello.uffd.error ?? 'unknown reason'}`);
    }
  }

  /**
   * The exception filters in force: fault kinds (`missing`, `wp`, `minor`) and events (`fork`,
   * `remap`, `remove`, `unmap`), each with an optional condition (filters.ts). A filter absent
   * from the list is off. One result per entry; a bad condition leaves that filter off.
   */
  async setFilterList(list: FilterRequest[]): Promise<FilterResult[]> {
    const results = this.filterSet.set(list);
    await this.refreshPolicy();
    return results;
  }

  /** Turns fault-kind filters on or off, keeping their conditions (the CLI's and tests' way). */
  async setFilters(filters: Partial<Record<FaultKind, boolean>>): Promise<Policy> {
    const list: FilterRequest[] = this.filterSet.list()
      .filter((f) => !(f.id in filters))
      .map((f) => ({ id: f.id, condition: f.text }));
    for (const [id, on] of Object.entries(filters)) {
      if (on) list.push({ id, condition: this.filterSet.get(id as FaultKind)?.text });
    }
    this.filterSet.set(list);
    await this.refreshPolicy();
    return this.policy!;
  }

  /** Recomputes what filters and watches ask of the helper and sends it (after region changes too). */
  async refreshPolicy(): Promise<void> {
    this.basePolicy = null;
    if (!this.helper.running || this.state === 'exited' || this.state === 'detached' || this.state === 'disposed') return;
    await this.applyPolicy({});
  }

  /**
   * The helper's policy from what the user asked: the exception filters (fault kinds, narrowed
   * by their conditions where the helper can), data breakpoints (faults held in their ranges),
   * and a step in progress.
   */
  private policyArgs(): PolicyArgs {
    if (this.oneShot) {
      return {
        hold: { missing: true, wp: true, minor: true }, holdTid: this.oneShot.holdTid ?? [],
        holdRange: this.oneShot.holdRange ?? [], holdEvery: 0,
      };
    }
    if (!this.basePolicy) this.basePolicy = this.computePolicy();
    return this.basePolicy;
  }

  private computePolicy(): PolicyArgs {
    const watches = this.watches;
    let maps: Vma[] | null = null;
    const currentMaps = () => (maps ??= this.pid !== undefined ? safely(() => readMaps(this.pid!)) ?? [] : []);
    const startBrk = () => (this.pid !== undefined ? readStartBrk(this.pid) : null);
    const fp = this.filterSet.policy((names) => rangesNamed(currentMaps(), this.regions, names, startBrk()), watches.length > 0);
    const hold = { ...fp.hold };
    if (watches.length > 0) {
      // Data breakpoints: missing faults in their ranges, and write-protect faults of write watches.
      hold.missing = true;
      if (watches.some((w) => w.access !== 'read')) hold.wp = true;
    }
    const anyFilter = fp.hold.missing || fp.hold.wp || fp.hold.minor;
    let ranges: [bigint, bigint][] | null = anyFilter ? fp.ranges : [];
    if (ranges && watches.length > 0) ranges = [...ranges, ...watches.map((w): [bigint, bigint] => [w.start, w.end])];
    if (ranges === null && (watches.length > 0 || this.filterSet.list().some((f) => f.id === 'missing'))) {
      // An unconditioned write-protect or minor filter holds those faults anywhere, but they only
      // happen in mappings registered for them (uw, ui): hold there, keeping a narrowed missing
      // filter or the data breakpoints narrow.
      ranges = this.narrowedWithKinds(watches);
    }
    let tids: number[] = [];
    if (fp.tids && watches.length === 0) tids = fp.tids;
    const holdRange = ranges === null ? [] : ranges.length === 0 ? [NOWHERE] : toHoldRanges(ranges);
    // Event filters: the helper holds the first fault after such an event itself (no round trip).
    const holdAfter = this.filterSet.list().map((f) => f.id).filter((id): id is NcWhat => (NC_KINDS as readonly string[]).includes(id));
    return { hold, holdRange, holdTid: tids.slice(0, 32), holdEvery: fp.every, holdAfter };
  }

  /**
   * Ranges when every missing-fault source is narrowed and only unconditioned write-protect or
   * minor filters are not; null when a missing source is not narrowed either.
   */
  private narrowedWithKinds(watches: Watch[]): [bigint, bigint][] | null {
    const filters = this.filterSet.list().filter((f) => ['missing', 'wp', 'minor'].includes(f.id) && !f.spent);
    const missing = filters.find((f) => f.id === 'missing');
    if (missing && missing.condition.ranges.length === 0 && missing.condition.names.length === 0) return null;
    if (filters.some((f) => f.id !== 'missing' && (f.condition.ranges.length > 0 || f.condition.names.length > 0))) return null;
    if (this.pid === undefined) return null;
    const smaps = safely(() => readSmaps(this.pid!));
    if (!smaps) return null;
    const out: [bigint, bigint][] = watches.map((w): [bigint, bigint] => [w.start, w.end]);
    if (missing) out.push(...missing.condition.ranges, ...rangesNamed(smaps, this.regions, missing.condition.names, readStartBrk(this.pid)));
    for (const f of filters) {
      if (f.id === 'missing') continue;
      const code = f.id === 'wp' ? 'uw' : 'ui';
      for (const v of smaps) if (v.vmFlags.includes(code)) out.push([v.start, v.end]);
    }
    return out;
  }

  private applyPolicy(extra: { holdNext?: boolean; stream?: StreamMode }): Promise<Policy> {
    const args: PolicyArgs = { ...this.policyArgs(), ...extra };
    // Sending holdEvery restarts the helper's count: only when it changes.
    if (args.holdEvery === this.sentEvery) delete args.holdEvery;
    else this.sentEvery = args.holdEvery ?? this.sentEvery;
    return this.helper.request('policy', args).then((p) => {
      this.policy = p;
      return p;
    });
  }

  /**
   * Data breakpoints. `read` stops on the first touch of each unpopulated page in the range
   * (missing faults); `write` also write-protects the range when it is set, so the first write
   * to each page stops (once per page: resolving un-protects it); `readWrite` both.
   */
  async setWatches(watches: Watch[]): Promise<void> {
    const old = this.watches;
    this.watches = watches;
    this.basePolicy = null;
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

  /** The data breakpoints in force. */
  get watchList(): readonly Watch[] {
    return this.watches;
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

  /**
   * Resolves the held faults by policy and runs until the next breakpoint: every held fault, or
   * with `tid` only that thread's (the others stay stopped: DAP's single-thread continue).
   */
  async continue(tid: number | null = null): Promise<void> {
    if (this.state === 'entry') return this.run();
    this.requireRunning('continue');
    if (tid !== null && this.heldFor(tid) === undefined) {
      throw new SessionError('ESTATE', `thread ${tid} is not stopped on a fault (it was resolved meanwhile): continue all threads instead`);
    }
    this.stepReason = null;
    await this.resolveHeld(tid, 'default');
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

  /** Fills missing pages nobody is held on (UFFDIO_COPY of `bytes`, base64 of whole pages). */
  async fill(addr: bigint, bytes: string): Promise<{ addr: string; pages: number }> {
    this.requireRunning('fill');
    return this.helper.request('fill', { addr: `0x${addr.toString(16)}`, bytes });
  }

  /** Evicts the present pages of [start, end): saved, dropped, served back on the next touch. */
  async evict(start: bigint, end: bigint): Promise<{ pages: number; saved: number }> {
    this.requireRunning('evict');
    return this.helper.request('evict', { start: `0x${start.toString(16)}`, end: `0x${end.toString(16)}` });
  }

  /** Drops the page tables of shared memory in [start, end): accesses become minor faults. */
  async zap(start: bigint, end: bigint): Promise<{ bytes: number }> {
    this.requireRunning('zap');
    return this.helper.request('zap', { start: `0x${start.toString(16)}`, end: `0x${end.toString(16)}` });
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

  /**
   * Registers and call stack of the thread held on fault `seq` (the helper stops the thread
   * once, briefly, and keeps the result for this fault; the fault stays held).
   */
  async stack(seq: number, maxFrames?: number): Promise<StackBody> {
    if (!this.held.has(seq)) throw new SessionError('ESTATE', `fault #${seq} is not held (it may have been resolved already)`);
    return this.helper.request('stack', { seq, ...(maxFrames ? { maxFrames } : {}) });
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

  /** An event filter that matches holds the next fault of any thread and stops there with the event. */
  private onEventFilter(e: NcEvent): void {
    if (this.state !== 'running' || !this.filterSet.matchEvent(e, (a) => this.nameAt(a))) return;
    this.pendingEvent = e;
    this.stepReason = 'event';
    if (this.policy?.holdAfter?.includes(e.what)) return;  // the helper holds it already
    this.applyPolicy({ holdNext: true }).catch((err: Error) => this.emit('log', `holding the next fault after ${e.what} failed: ${err.message}`));
  }

  /** The name of the mapping at `addr` (maps path, [heap], or a registered region's name). */
  nameAt(addr: bigint): string | undefined {
    if (this.pid === undefined) return undefined;
    const v = findVma(safely(() => readMaps(this.pid!)) ?? [], addr);
    if (v && v.path) return v.path;
    const r = this.regions.find((x) => addr >= BigInt(x.start) && addr < BigInt(x.end));
    return r?.name ?? (v ? vmaName(v) : undefined);
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
          const stepping = this.oneShot !== null || this.stepReason !== null;
          let filter: ActiveFilter | undefined;
          let watched: Watch[] = [];
          if (!stepping) {
            watched = hits.filter((w) => watchStops(w, e));
            filter = this.filterSet.matchFault(e, (a) => this.nameAt(a), this.watches.length > 0);
            const samePage = [...this.held.values()].some((h) => h.page === e.page && h.pid === e.pid);
            if (!filter && watched.length === 0 && !samePage) {
              // Held because the helper's policy is wider than what was asked (a condition it
              // cannot express, a read in a write watch): not a stop.
              this.counters.onFault({ ...e, held: false });
              this.emit('fault', e);
              this.helper.request('resolve', { seq: e.seq, how: 'default' }).catch(() => { /* resolved with its page */ });
              break;
            }
            if (filter && (filter.spent || filter.reached)) this.refreshPolicy().catch((err: Error) => this.emit('log', `policy update failed: ${err.message}`));
            if (!filter && watched.length === 0) {
              // Another thread on a page where a fault is already held: held with it, no new stop.
              this.held.set(e.seq, e);
              this.counters.onFault(e);
              this.emit('fault', e);
              break;
            }
          }
          this.held.set(e.seq, e);
          this.counters.onFault(e);
          const event = this.pendingEvent;
          this.pendingEvent = null;
          const reason = this.stepReason ?? (filter ? 'page fault' : watched.length > 0 ? 'data breakpoint' : 'page fault');
          this.stepReason = null;
          if (this.oneShot) {
            this.oneShot = null;
            this.applyPolicy({}).catch((err: Error) => this.emit('log', `restoring the policy after a step failed: ${err.message}`));
          }
          this.emit('fault', e);
          this.emit('stopped', {
            reason, tid: e.tid, fault: e, hitWatches: (stepping ? hits : watched).map((w) => w.id),
            ...(reason === 'event' && event ? { event } : {}),
            ...(filter && filter.text ? { filter: { id: filter.id, condition: filter.text } } : {}),
          });
        } else {
          this.counters.onFault(e);
          this.emit('fault', e);
        }
        break;
      case 'faults':
        this.countFaults(e);
        this.emit('faults', e);
        break;
      case 'resolved': {
        const f = this.held.get(e.seq);
        this.held.delete(e.seq);
        if (f) this.counters.onResolved(f, e);
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
          this.counters.setRegions(this.regions);
          this.emit('regionRemoved', e.region);
        } else {
          this.regions.push(e.region);
          this.counters.setRegions(this.regions);
          this.emit('region', e.region);
        }
        if (this.filterSet.hasNames()) {
          this.refreshPolicy().catch((err: Error) => this.emit('log', `policy update after a region change failed: ${err.message}`));
        }
        break;
      case 'nc':
        this.counters.onEvent(e);
        this.onEventFilter(e);
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

  /** The region counters of a batch (every fault resolved by the helper), from its numbers. */
  private countFaults(e: FaultsEvent): void {
    let page = 0;
    for (let k = 0; k < e.page.length; k++) {
      page += e.page[k];
      if (e.pid[k]) continue; // a followed child's memory is not the program's regions
      this.counters.count(BigInt(page * 4096), FAULT_KINDS[(e.flags[k] >> FB_KIND_SHIFT) & 3], true);
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

/** Never mapped: a hold range that holds nothing (an empty list would mean "anywhere"). */
const NOWHERE: AddrRange = { start: '0x0', end: '0x1000' };

/** Whether a fault in a data breakpoint's range is one it stops on. */
function watchStops(w: Watch, f: FaultEvent): boolean {
  if (w.access === 'read') return f.kind === 'missing';
  if (w.access === 'write') return f.access === 'write';
  return f.kind === 'missing' || f.access === 'write';
}

/** How far the heap and the stack may grow beyond what maps shows now (faults there are checked by name). */
const HEAP_GROWTH = 1n << 36n;
const STACK_GROWTH = 64n << 20n;

/**
 * The ranges of the mappings (and registered regions) whose name a condition names. [heap] and
 * [stack] grow: their ranges reach as far as they may grow, so faults in memory they gain before
 * the policy is refreshed are held too (and checked by name here).
 */
function rangesNamed(maps: Vma[], regions: Region[], names: string[], startBrk: bigint | null): [bigint, bigint][] {
  const out: [bigint, bigint][] = [];
  if (names.includes('[heap]') && startBrk !== null && startBrk > 0n) out.push([startBrk, startBrk + HEAP_GROWTH]);
  if (names.includes('[stack]')) {
    for (const v of maps) if (v.path === '[stack]') out.push([v.end > STACK_GROWTH ? v.end - STACK_GROWTH : 0n, v.end]);
  }
  for (const v of maps) if (v.path && names.some((n) => nameMatches(n, v.path))) out.push([v.start, v.end]);
  for (const r of regions) if (r.name && names.some((n) => nameMatches(n, r.name!))) out.push([BigInt(r.start), BigInt(r.end)]);
  return out;
}

function safely<T>(f: () => T): T | null {
  try {
    return f();
  } catch {
    return null;
  }
}

function defaultFilters(): FilterSet {
  const f = new FilterSet();
  f.set([{ id: 'wp' }, { id: 'minor' }]);
  return f;
}
