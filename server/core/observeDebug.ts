// Observe mode as a debug session: the program handles its own userfaultfd, so the debugger
// watches it through libuffd-observe.so (ObserveSession) instead of the helper. This turns what
// the library reports into stops a debugger shows: the handler thread after it reads a fault
// (fault filters with the same conditions as the direct mode), the thread whose resolving ioctl
// failed, and the thread whose fault has waited too long. Stacks come from a helper started only
// for that (`stack` with pid + tid: the helper does not debug this process). Knows nothing of
// DAP or VS Code; server/adapter translates.
import { EventEmitter } from 'node:events';
import { accessSync, constants as fsConstants, statSync } from 'node:fs';
import { HelperClient } from './helperClient';
import { ConditionError, CONDITION_SYNTAX, FAULT_FILTERS, FilterCondition, FilterRequest, FilterResult, FilterSet, nameMatches, parseCondition } from './filters';
import { findVma, listTasks, readMaps, TaskInfo, vmaName } from './procfs';
import { findObserveLibrary, ObservedFault, ObserveEvent, ObserveSession, ObserveSummary } from './observe';
import { ResolveHowCode } from '../protocol/observe';
import type { FaultKind, Hex, StackBody } from '../protocol/messages';
import type { TimelineInput } from './batcher';

export const OBSERVE_FILTERS = ['ioctlError', 'waitTooLong'] as const;
export type ObserveFilterId = FaultKind | (typeof OBSERVE_FILTERS)[number];

export const IOCTL_CONDITION_SYNTAX =
  'space-separated terms, all of which must hold: an errno name (EEXIST, ENOENT, …; any of them), ' +
  'an address range 0xSTART-0xEND or mapping name the ioctl touches, and one hit count hit>=N | hit=N | every=N. ' +
  'Without an errno every failure but EAGAIN stops. Example: EEXIST hit>=2';
export const WAIT_CONDITION_SYNTAX =
  'the wait in ms (500 or 500ms; default the launch attribute stopOnWaitMs, else 1000), then optional terms: ' +
  'an address range 0xSTART-0xEND or mapping name, tid=N (the faulting thread), one hit count hit>=N | hit=N | every=N. ' +
  'Example: 200ms [heap]';

export interface ObserveLaunchConfig {
  program: string;
  args?: string[];
  cwd?: string;
  env?: Record<string, string | null>;
  /** Stop on the handler's first fault read (default true). */
  stopOnFirstFault?: boolean;
  /** Enable the ioctl-error filter from the start (the Breakpoints view can change it). */
  stopOnIoctlError?: boolean;
  /** Default wait for the wait-too-long filter, and for reporting stuck faults (ms, default 1000). */
  stopOnWaitMs?: number;
  helperPath?: string;
  library?: string;
}

export type ObserveStopReason = 'page fault' | 'data breakpoint' | 'ioctl error' | 'wait too long';

/** A data breakpoint: faults read on a page of [start, end) with this access stop the reading thread. */
export interface ObserveWatch { id: number; start: bigint; end: bigint; access: 'read' | 'write' | 'readWrite' }

/** Resolve Page… in observe mode: what the library can do on the handler's userfaultfd. */
export type ObserveResolveHow = 'default' | 'zero' | 'copy' | 'wake';

export interface ObserveResolveResult {
  seq: number;
  page: Hex;
  ioctl: string;
  pages: number;
  /** What happened (errno named when the kernel refused), and what the handler will see. */
  message: string;
}

/** A thread shown stopped. Library stops hold the thread until continued; a wait stop only shows a blocked thread. */
export interface ObserveStop {
  reason: ObserveStopReason;
  pid: number;
  /** The stopped thread: the reader, the ioctl's caller, or (wait too long) the faulting thread. */
  tid: number;
  /** The library's stop (the read or ioctl record's seq); 0 for a wait stop (nothing to release). */
  libSeq: number;
  /** Faults concerned: read by the stopped thread, or the one that waited. */
  faults: ObservedFault[];
  ioctlError?: { op: string; start: Hex; len: number; errno: string };
  waitedMs?: number;
  filter?: { id: ObserveFilterId; condition: string };
  /** Data breakpoints that matched the fault (reason 'data breakpoint'). */
  hitBreakpointIds?: number[];
  /** What the debugger placed while the thread was stopped (Resolve Page…). */
  resolvedBy?: string;
  /** One line: the stopped event's description. */
  description: string;
}

export interface ObserveExit { code: number | null; signal: string | null; summary: ObserveSummary; text: string }

export interface ObserveDebugEvents {
  stopped: [ObserveStop];
  continued: [number];
  output: ['stdout' | 'stderr', string];
  /** A line for the Debug Console (problems as they are found). */
  console: [string];
  timeline: [TimelineInput];
  exited: [ObserveExit];
}

interface ExtraFilter {
  id: 'ioctlError' | 'waitTooLong';
  text: string;
  condition: FilterCondition;
  errnos: string[];
  waitMs: number;
  matches: number;
  spent: boolean;
}

const hex = (n: number): Hex => '0x' + n.toString(16);
const UFFD_MODES = (m: number) => [m & 1 ? 'missing' : '', m & 2 ? 'wp' : '', m & 4 ? 'minor' : ''].filter(Boolean).join('+') || 'none';
const NOTICE_LIMIT = 20;

/** Counts one match of a filter with a hit condition; true when this match stops. */
export function countHit(f: { condition: FilterCondition; matches: number; spent: boolean }): boolean {
  const h = f.condition.hit;
  f.matches++;
  if (!h) return true;
  if (h.op === '>=') return f.matches >= h.n;
  if (h.op === 'every') return f.matches % h.n === 0;
  if (f.matches === h.n) {
    f.spent = true;
    return true;
  }
  return false;
}

export function describeObservedFault(f: ObservedFault): string {
  return `${f.kind} ${f.access} at ${f.addr}`;
}

/** The condition of the ioctl-error and wait-too-long filters; throws a ConditionError. */
export function parseObserveCondition(id: 'ioctlError' | 'waitTooLong', text: string, defaultWaitMs: number):
  { condition: FilterCondition; errnos: string[]; waitMs: number } {
  const errnos: string[] = [];
  let waitMs = defaultWaitMs;
  const rest: string[] = [];
  for (const term of text.trim().split(/\s+/).filter((t) => t.length > 0)) {
    let m: RegExpExecArray | null;
    if (id === 'ioctlError' && (m = /^(?:errno=)?(E[A-Z0-9]+)$/.exec(term))) errnos.push(m[1]);
    else if (id === 'waitTooLong' && (m = /^(?:ms=)?(\d+)(?:ms)?$/.exec(term))) {
      waitMs = Number(m[1]);
      if (!(waitMs >= 1)) throw new ConditionError(`'${term}' needs a wait of 1 ms or more. A condition is ${WAIT_CONDITION_SYNTAX}`);
    } else if (id === 'ioctlError' && /^tid=/.test(term)) {
      throw new ConditionError(`'${term}': the ioctl-error filter takes no thread. A condition is ${IOCTL_CONDITION_SYNTAX}`);
    } else rest.push(term);
  }
  try {
    // A fault kind's parser: ranges, names, tid= and hit counts mean the same here.
    return { condition: parseCondition(rest.join(' '), 'missing'), errnos, waitMs };
  } catch (e) {
    const msg = (e as Error).message.replace(CONDITION_SYNTAX, id === 'ioctlError' ? IOCTL_CONDITION_SYNTAX : WAIT_CONDITION_SYNTAX);
    throw new ConditionError(msg);
  }
}

export class ObserveDebugSession extends EventEmitter<ObserveDebugEvents> {
  readonly observe = new ObserveSession();
  private cfg: ObserveLaunchConfig | null = null;
  private faultFilters = new FilterSet();
  private extra = new Map<ExtraFilter['id'], ExtraFilter>();
  private firstFaultPending = true;
  private stops = new Map<number, ObserveStop>();
  private watches: ObserveWatch[] = [];
  /** Pages the debugger placed (Resolve Page…): the handler's own placement then fails with EEXIST. */
  private placedByDebugger = new Set<string>();
  /** Faults a wait stop already showed (each stops once per filter setting). */
  private waitShown = new Set<number>();
  private waitTimer: NodeJS.Timeout | null = null;
  private stackReader = new ThreadStacks(() => this.cfg?.helperPath);
  private notices = { duplicate: 0, ioctlError: 0, unregistered: 0 };
  private exited: ObserveExit | null = null;
  private started = false;
  pid: number | undefined;

  get ended(): boolean {
    return this.exited !== null;
  }

  /** Checks what can be checked before the program runs; throws an error saying what to do. */
  prepare(cfg: ObserveLaunchConfig): { library: string } {
    if (!cfg.program) throw new Error("observe mode needs 'program': the handler program to run");
    if (cfg.program.includes('/')) {
      let st;
      try {
        st = statSync(cfg.program);
      } catch {
        throw new Error(`program ${cfg.program} does not exist: check 'program' in the launch configuration`);
      }
      try {
        accessSync(cfg.program, fsConstants.X_OK);
      } catch {
        throw new Error(`program ${cfg.program} is not executable (chmod +x it)`);
      }
      if (!st.isFile()) throw new Error(`program ${cfg.program} is not a file`);
    }
    if (cfg.stopOnWaitMs !== undefined && !(Number.isFinite(cfg.stopOnWaitMs) && cfg.stopOnWaitMs >= 1)) {
      throw new Error(`'stopOnWaitMs' is ${cfg.stopOnWaitMs}: give a wait in milliseconds, 1 or more`);
    }
    const library = cfg.library ?? findObserveLibrary();
    this.cfg = { ...cfg, library };
    this.firstFaultPending = cfg.stopOnFirstFault ?? true;
    if (cfg.stopOnIoctlError) this.setExtra('ioctlError', '');
    return { library };
  }

  private get waitDefault(): number {
    return this.cfg?.stopOnWaitMs ?? 1000;
  }

  private setExtra(id: ExtraFilter['id'], text: string): FilterResult {
    try {
      const p = parseObserveCondition(id, text, this.waitDefault);
      const old = this.extra.get(id);
      const same = old && old.text === text;
      this.extra.set(id, { id, text, ...p, matches: same ? old.matches : 0, spent: same ? old.spent : false });
      if (id === 'waitTooLong' && !same) this.waitShown.clear();
      const what = id === 'waitTooLong' ? `stops when a fault has waited ${p.waitMs} ms` : '';
      return { verified: true, ...(text || what ? { message: [what, text ? `where: ${text}` : ''].filter(Boolean).join(', ') } : {}) };
    } catch (e) {
      this.extra.delete(id);
      return { verified: false, message: (e as Error).message };
    }
  }

  /** The Breakpoints view's filters: fault kinds, `ioctlError`, `waitTooLong`. One result per request. */
  setFilters(requests: FilterRequest[]): FilterResult[] {
    const kinds = requests.filter((r) => FAULT_FILTERS.includes(r.id as FaultKind));
    const kindResults = this.faultFilters.set(kinds);
    const seen = new Set<string>();
    const results = requests.map((r): FilterResult => {
      if (FAULT_FILTERS.includes(r.id as FaultKind)) return kindResults[kinds.indexOf(r)];
      if (r.id === 'ioctlError' || r.id === 'waitTooLong') {
        seen.add(r.id);
        return this.setExtra(r.id, (r.condition ?? '').trim());
      }
      return { verified: false, message: `'${r.id}' is not available in observe mode: ${[...FAULT_FILTERS, ...OBSERVE_FILTERS].join(', ')}` };
    });
    for (const id of OBSERVE_FILTERS) if (!seen.has(id)) this.extra.delete(id);
    this.applyMask();
    return results;
  }

  private mask(): { missing: boolean; wp: boolean; minor: boolean; ioctlError: boolean } {
    const on = new Set(this.faultFilters.list().filter((f) => !f.spent).map((f) => f.id));
    // A data breakpoint matches faults of every kind: the library stops them all, this side picks.
    const first = this.firstFaultPending || this.watches.length > 0;
    return { missing: first || on.has('missing'), wp: first || on.has('wp'), minor: first || on.has('minor'),
      ioctlError: this.extra.has('ioctlError') && !this.extra.get('ioctlError')!.spent };
  }

  private applyMask(): void {
    if (this.started && !this.exited) this.observe.setStop(this.mask());
    this.armWaitTimer();
  }

  /** The data breakpoints (replacing the previous ones). */
  setWatches(watches: ObserveWatch[]): void {
    this.watches = watches.map((w) => ({ ...w }));
    this.applyMask();
  }

  private watchHits(f: ObservedFault): number[] {
    const page = BigInt(f.page);
    return this.watches.filter((w) => page < w.end && page + 4096n > w.start &&
      (w.access === 'readWrite' || w.access === f.access)).map((w) => w.id);
  }

  /** Runs the program (configurationDone). */
  async start(): Promise<number> {
    if (!this.cfg) throw new Error('observe session not prepared');
    if (this.started) throw new Error('the program was already started');
    this.started = true;
    this.observe.on('event', (e) => this.onEvent(e));
    this.observe.on('output', (k, d) => this.emit('output', k, d));
    this.observe.on('error', (e) => this.emit('console', `uffd-debug: observe channel: ${e.message}`));
    const pid = await this.observe.start({
      program: this.cfg.program, args: this.cfg.args, cwd: this.cfg.cwd, env: this.cfg.env, library: this.cfg.library,
      stopOn: this.mask(), stuckAfterMs: this.waitDefault,
    });
    this.pid = pid;
    this.armWaitTimer();
    void this.observe.wait().then((r) => {
      if (this.waitTimer) clearInterval(this.waitTimer);
      this.waitTimer = null;
      this.stops.clear();
      this.exited = { code: r.code, signal: r.signal, summary: r.summary, text: summaryText(r.summary) };
      this.emit('exited', this.exited);
    });
    return pid;
  }

  private onEvent(e: ObserveEvent): void {
    switch (e.event) {
      case 'fault': {
        const { pid, reader: _r, uffd: _u, unregistered, stopped: _s, ...f } = e;
        this.emit('timeline', pid === this.pid ? f : { ...f, pid });
        if (unregistered && this.notices.unregistered++ < NOTICE_LIMIT) {
          this.emit('console', `uffd-debug: fault at ${e.addr} (thread ${e.tid}) is outside every range registered on userfaultfd ${e.uffd}`);
        }
        break;
      }
      case 'resolved':
        this.emit('timeline', { event: 'resolved', seq: e.seq, t: e.t, page: e.page, ioctl: e.ioctl, latencyNs: e.latencyNs,
          ...(e.pid !== this.pid ? { pid: e.pid } : {}) });
        break;
      case 'stuck':
        this.emit('timeline', { event: 'stuck', seq: e.seq, t: Number(process.hrtime.bigint()), page: e.page, tid: e.tid, waitedNs: e.waitedNs });
        this.emit('console', `uffd-debug: stuck fault: page ${e.page} (thread ${e.tid}) has waited ${(e.waitedNs / 1e6).toFixed(0)} ms ` +
          `and its handler has not resolved it (fault #${e.seq}, userfaultfd ${e.uffd})`);
        break;
      case 'duplicate':
        if (this.notices.duplicate++ < NOTICE_LIMIT) {
          this.emit('console', `uffd-debug: EEXIST: UFFDIO_${e.op} of page ${e.page} (pid ${e.pid}): the page was already there ` +
            (this.placedByDebugger.has(e.page) ? '(the debugger placed it: Resolve Page… while the handler was stopped)'
              : '(placed twice, or placed by another thread first)'));
        }
        break;
      case 'ioctlError':
        if (this.notices.ioctlError++ < NOTICE_LIMIT) {
          this.emit('console', `uffd-debug: handler ioctl error: UFFDIO_${e.op} ${e.start} (+${e.len}) failed with ${e.errno} (thread ${e.tid})`);
        }
        break;
      case 'register':
        if (e.ok) {
          this.emit('timeline', { event: 'region', action: 'add', region: { start: e.start, end: hex(Number(e.start) + e.len),
            via: 'observe', name: `userfaultfd ${e.uffd} (${UFFD_MODES(e.mode)})` } });
        }
        break;
      case 'stopped':
        this.onLibraryStop(e);
        break;
      default:
        break;
    }
  }

  private nameAt(pid = this.pid!): (addr: bigint) => string | undefined {
    let maps: ReturnType<typeof readMaps> | null = null;
    return (addr) => {
      if (!maps) {
        try {
          maps = readMaps(pid);
        } catch {
          maps = [];
        }
      }
      const v = findVma(maps, addr);
      return v ? vmaName(v) : undefined;
    };
  }

  private onLibraryStop(e: Extract<ObserveEvent, { event: 'stopped' }>): void {
    const release = () => this.observe.continue(e.readSeq, e.pid);
    if (e.ioctlError) {
      const f = this.extra.get('ioctlError');
      const x = e.ioctlError;
      const start = BigInt(x.start);
      const ok = f && !f.spent && (f.errnos.length ? f.errnos.includes(x.errno) : x.errno !== 'EAGAIN') &&
        locationOk(f.condition, start, start + BigInt(Math.max(1, x.len)), this.nameAt(e.pid)) && countHit(f);
      if (!ok) {
        release();
        return;
      }
      if (f.spent) this.applyMask();
      this.addStop({ reason: 'ioctl error', pid: e.pid, tid: e.tid, libSeq: e.readSeq, faults: [], ioctlError: x,
        filter: { id: 'ioctlError', condition: f.text },
        description: `Paused on handler ioctl error: UFFDIO_${x.op} at ${x.start} failed with ${x.errno}` });
      return;
    }
    const faults = e.faults.map((seq) => this.observe.analyzer.faultBySeq(seq)).filter((f): f is ObservedFault => f !== undefined);
    let hit: { id: ObserveFilterId; condition: string } | undefined;
    let first: ObservedFault | undefined;
    let watchIds: number[] = [];
    if (this.firstFaultPending && faults.length) {
      this.firstFaultPending = false;
      first = faults[0];
      this.applyMask();
    } else if ((first = faults.find((f) => (watchIds = this.watchHits(f)).length > 0))) {
      const r = this.watches.filter((w) => watchIds.includes(w.id)).map((w) => `${hex(Number(w.start))}-${hex(Number(w.end))} ${w.access}`);
      this.addStop({ reason: 'data breakpoint', pid: e.pid, tid: e.tid, libSeq: e.readSeq, faults: [first, ...faults.filter((f) => f !== first)],
        hitBreakpointIds: watchIds,
        description: `Paused on data breakpoint: the handler read a page fault: ${describeObservedFault(first)} (watching ${r.join(', ')})` });
      return;
    } else {
      const nameAt = this.nameAt(e.pid);
      for (const f of faults) {
        const a = this.faultFilters.matchFault(f, nameAt, true);
        if (a) {
          hit = { id: a.id as FaultKind, condition: a.text };
          first = f;
          if (a.spent) this.applyMask();
          break;
        }
      }
    }
    if (!first) {
      release();
      return;
    }
    const more = faults.length > 1 ? ` (+${faults.length - 1} more read with it)` : '';
    this.addStop({ reason: 'page fault', pid: e.pid, tid: e.tid, libSeq: e.readSeq, faults: [first, ...faults.filter((f) => f !== first)],
      filter: hit, description: `Paused after the handler read a page fault: ${describeObservedFault(first)}${more}` +
        (hit?.condition ? ` (${hit.id} filter: ${hit.condition})` : '') });
  }

  private addStop(s: ObserveStop): void {
    this.stops.set(s.tid, s);
    this.emit('stopped', s);
  }

  private armWaitTimer(): void {
    const f = this.extra.get('waitTooLong');
    if (!f || f.spent || !this.started || this.exited) {
      if (this.waitTimer) clearInterval(this.waitTimer);
      this.waitTimer = null;
      return;
    }
    if (this.waitTimer) clearInterval(this.waitTimer);
    this.waitTimer = setInterval(() => this.checkWaits(), Math.max(10, Math.min(250, f.waitMs / 4)));
  }

  private checkWaits(): void {
    const f = this.extra.get('waitTooLong');
    if (!f || f.spent || this.exited) return;
    const now = Number(process.hrtime.bigint());
    for (const p of this.observe.analyzer.pending(now)) {
      if (p.waitedNs < f.waitMs * 1e6 || this.waitShown.has(p.seq) || this.stops.has(p.tid)) continue;
      this.waitShown.add(p.seq);
      if (f.condition.tids.length && !f.condition.tids.includes(p.tid)) continue;
      const addr = BigInt(p.addr);
      if (!locationOk(f.condition, addr, addr + 1n, this.nameAt(p.pid)) || !countHit(f)) continue;
      const fault = this.observe.analyzer.faultBySeq(p.seq);
      if (!fault) continue;
      const waitedMs = Math.round(p.waitedNs / 1e6);
      this.addStop({ reason: 'wait too long', pid: p.pid, tid: p.tid, libSeq: 0, faults: [fault], waitedMs,
        filter: { id: 'waitTooLong', condition: f.text },
        description: `Paused: fault on page ${p.page} has waited ${waitedMs} ms (more than ${f.waitMs} ms) for its handler` });
      if (f.spent) this.armWaitTimer();
      return; // one stop per check
    }
  }

  /** The observed program's mapping whose path is `name` ([heap]) or contains it (libc.so). */
  mappingNamed(name: string): { start: bigint; end: bigint; name: string } | undefined {
    if (this.pid === undefined || this.exited) return undefined;
    let maps: ReturnType<typeof readMaps>;
    try {
      maps = readMaps(this.pid);
    } catch {
      return undefined;
    }
    const v = maps.find((x) => (name.startsWith('[') ? x.path === name : x.path.includes(name)));
    return v ? { start: v.start, end: v.end, name: vmaName(v) } : undefined;
  }

  stopFor(tid: number): ObserveStop | undefined {
    return this.stops.get(tid);
  }

  allStops(): ObserveStop[] {
    return [...this.stops.values()];
  }

  threads(): TaskInfo[] {
    return this.pid !== undefined && !this.exited ? listTasks(this.pid) : [];
  }

  /** Lets one stopped thread run on (a wait stop: stops showing it; the thread still waits for its handler). */
  continueThread(tid: number): void {
    const s = this.stops.get(tid);
    if (!s) throw new Error(`thread ${tid} is not stopped`);
    this.stops.delete(tid);
    if (s.libSeq) this.observe.continue(s.libSeq, s.pid);
    this.emit('continued', tid);
  }

  continueAll(): void {
    const had = [...this.stops.values()];
    this.stops.clear();
    for (const s of had) if (s.libSeq) this.observe.continue(s.libSeq, s.pid);
  }

  /**
   * The stopped thread's own stack, from a helper started for stacks only. Frames of the observe
   * library (where the thread waits) are left out: the top frame is the handler's call.
   */
  async stack(tid: number): Promise<StackBody> {
    const s = this.stops.get(tid);
    if (!s) throw new Error(`thread ${tid} is not stopped`);
    const body = await this.stackReader.read(s.pid, tid);
    const lib = this.cfg?.library ?? '';
    const last = body.frames.map((f) => f.module === lib || (f.module ?? '').endsWith('/libuffd-observe.so')).lastIndexOf(true);
    return last >= 0 ? { ...body, frames: body.frames.slice(last + 1) } : body;
  }

  /** What Resolve Page… cannot do in observe mode. */
  static readonly RESOLVE_REFUSAL =
    'observe mode: the userfaultfd belongs to the program; the debugger can only ask the observe library to place the ' +
    'page of a fault the handler thread is stopped on (Resolve Page…: zeros, zero page, a byte pattern, or wake). ' +
    'Continue lets the handler resolve the fault itself.';

  /** The ways Resolve Page… offers for the fault `tid` is stopped on (ids of the picker). */
  resolutions(tid: number): { kind: FaultKind; page: Hex; ways: string[] } {
    const { fault } = this.resolvable(tid);
    return { kind: fault.kind, page: fault.page, ways: fault.kind === 'missing' ? ['default', 'zero', 'copy-pattern', 'wake'] : ['wake'] };
  }

  private resolvable(tid: number): { stop: ObserveStop; fault: ObservedFault } {
    const s = this.stops.get(tid);
    if (!s || !s.libSeq || s.faults.length === 0 || (s.reason !== 'page fault' && s.reason !== 'data breakpoint')) {
      throw new Error(`thread ${tid} is not a handler thread stopped after reading a fault (observe mode resolves only those)`);
    }
    return { stop: s, fault: s.faults[0] };
  }

  /**
   * Has the observe library, in the handler process, resolve the stopped fault's page on the
   * handler's userfaultfd: `default` copies zeros (UFFDIO_COPY), `zero` maps the zero page,
   * `copy` fills with `pattern`, `wake` only wakes. The handler thread stays stopped; when
   * continued, its own placement of that page fails with EEXIST.
   */
  async resolve(tid: number, how: string, opts: { pages?: number; pattern?: number } = {}): Promise<ObserveResolveResult> {
    const { stop, fault } = this.resolvable(tid);
    const ways = this.resolutions(tid).ways;
    const way = how === 'copy' ? 'copy-pattern' : how;
    if (!ways.includes(way)) {
      throw new Error(`'${how}' cannot resolve a ${fault.kind} fault in observe mode: ${ways.map((w) => (w === 'copy-pattern' ? 'copy' : w)).join(', ')}`);
    }
    const pages = opts.pages ?? 1;
    if (!Number.isInteger(pages) || pages < 1) throw new Error(`'pages' is ${opts.pages}: give a whole number of pages, 1 or more`);
    const pattern = how === 'copy' ? opts.pattern ?? 0 : 0;
    if (!Number.isInteger(pattern) || pattern < 0 || pattern > 255) throw new Error(`'pattern' is ${opts.pattern}: give a byte, 0-255`);
    const code = how === 'zero' ? ResolveHowCode.ZeroPage : how === 'wake' ? ResolveHowCode.Wake : ResolveHowCode.Copy;
    const r = await this.observe.resolve(stop.libSeq, BigInt(fault.page), pages * 4096, code, pattern, stop.pid);
    if (!r.op) {
      throw new Error(r.errno === 'ESRCH' ? `thread ${tid} is no longer stopped (ESRCH)` : `the observe library refused the request (${r.errno})`);
    }
    const ioctl = `UFFDIO_${r.op}`;
    const what = how === 'copy' ? ` with byte 0x${pattern.toString(16).padStart(2, '0')}` : how === 'default' ? ' with zeros' : '';
    if (r.result !== 0) {
      throw new Error(`${ioctl} of ${pages} page${pages === 1 ? '' : 's'} at ${fault.page} failed with ${r.errno}` +
        (r.done > 0 ? ` after ${r.done} bytes` : '') + (r.errno === 'EEXIST' ? ' (the page is already there)' : ''));
    }
    const places = r.op !== 'WAKE';
    if (places) for (let i = 0; i < pages; i++) this.placedByDebugger.add(hex(Number(fault.page) + i * 4096));
    const message = places
      ? `${ioctl}${what} placed ${pages} page${pages === 1 ? '' : 's'} at ${fault.page} on the handler's userfaultfd; ` +
        'the handler thread is still stopped: when continued, its own placement of that page fails with EEXIST'
      : `${ioctl} woke the threads waiting on ${fault.page} without placing it: they fault again, and the handler reads that fault next`;
    stop.resolvedBy = message;
    this.emit('console', `uffd-debug: ${message}`);
    return { seq: fault.seq, page: fault.page, ioctl, pages, message };
  }

  summaryNow(): ObserveSummary {
    return this.observe.analyzer.summary(Number(process.hrtime.bigint()));
  }

  /** Ends the program (only on the user's request). */
  terminate(): void {
    this.observe.kill();
  }

  /** Releases every stopped thread (closing the control pipe), stops the stack helper. */
  async dispose(killProgram: boolean): Promise<void> {
    if (this.waitTimer) clearInterval(this.waitTimer);
    this.waitTimer = null;
    this.stops.clear();
    this.observe.closeControl();
    if (killProgram) this.observe.kill();
    await this.stackReader.stop();
  }
}

/**
 * Stacks of threads of a process the helper does not debug (`stack` with pid + tid), from a
 * helper started on first use for that only. Shared by observe launch and passive observe attach.
 */
export class ThreadStacks {
  private starting: Promise<HelperClient> | null = null;

  constructor(private readonly helperPath: () => string | undefined) {}

  async read(pid: number, tid: number, maxFrames = 64): Promise<StackBody> {
    const helper = await this.start();
    return helper.request('stack', { pid, tid, maxFrames });
  }

  private start(): Promise<HelperClient> {
    if (!this.starting) {
      const h = new HelperClient();
      this.starting = h.start(this.helperPath()).then(() => h, (e: Error) => {
        this.starting = null;
        throw new Error(`stacks need the native helper: ${e.message}`);
      });
    }
    return this.starting;
  }

  /** Stops the helper, also one still starting. */
  async stop(): Promise<void> {
    const starting = this.starting;
    this.starting = null;
    const h = await starting?.catch(() => null);
    if (h) await h.stop();
  }
}

function locationOk(c: FilterCondition, start: bigint, end: bigint, nameAt: (a: bigint) => string | undefined): boolean {
  if (c.ranges.length === 0 && c.names.length === 0) return true;
  if (c.ranges.some(([s, e]) => start < e && end > s)) return true;
  if (c.names.length === 0) return false;
  const name = nameAt(start);
  return name !== undefined && c.names.some((n) => nameMatches(n, name));
}

const ms = (ns: number) => `${(ns / 1e6).toFixed(3)} ms`;

/** The end-of-session report, QEMU-style figures first, then the problems by name. */
export function summaryText(s: ObserveSummary): string {
  const L: string[] = ['', '── observe summary ──'];
  L.push(`faults read ${s.faults} (in ${s.reads} reads), events ${s.events}, resolved ${s.resolved}`);
  L.push(`blocked time total ${ms(s.blockedNs)}`);
  for (const t of s.perThread) L.push(`  thread ${t.tid}: ${ms(t.blockedNs)} over ${t.faults} fault${t.faults === 1 ? '' : 's'}`);
  if (s.latencyNs) L.push(`latency p50 ${ms(s.latencyNs.p50)}, p99 ${ms(s.latencyNs.p99)}, max ${ms(s.latencyNs.max)}`);
  if (s.histogram.length) {
    L.push('latency histogram (µs, log2):');
    const top = Math.max(...s.histogram.map((h) => h.count));
    for (const h of s.histogram) {
      L.push(`  [${String(h.loUs).padStart(7)}, ${String(h.hiUs).padStart(7)}) ${String(h.count).padStart(7)} ${'#'.repeat(Math.max(1, Math.round((h.count / top) * 40)))}`);
    }
  }
  L.push(`pages requested ${s.requested}, pushed ${s.pushed}`);
  const ioctls = Object.entries(s.ioctls).map(([op, c]) => `${op} ${c!.calls}${c!.failed ? ` (${c!.failed} failed)` : ''}`);
  if (ioctls.length) L.push(`ioctls: ${ioctls.join(', ')}`);
  for (const u of s.uffds) {
    L.push(`userfaultfd ${u.id} (${u.how}): ${u.ranges.map((r) => `${r.start} +${r.len} ${UFFD_MODES(r.mode)}`).join(', ') || 'no range registered'}`);
  }
  const problems: string[] = [];
  for (const f of s.stuck) {
    problems.push(`stuck fault: page ${f.page} (address ${f.addr}, thread ${f.tid}) waited ${ms(f.waitedNs)} and was never resolved`);
  }
  if (s.duplicates) problems.push(`EEXIST duplicates: ${s.duplicates} (pages ${s.duplicatePages.slice(0, 8).join(', ')}${s.duplicatePages.length > 8 ? ', …' : ''})`);
  if (s.resolvedTwice.length) problems.push(`pages resolved twice: ${s.resolvedTwice.length} (${s.resolvedTwice.slice(0, 8).join(', ')}${s.resolvedTwice.length > 8 ? ', …' : ''})`);
  for (const d of s.byDebugger ?? []) {
    L.push(`resolved by the debugger: UFFDIO_${d.op} ${d.start} (+${d.len})${d.errno ? ` failed with ${d.errno}` : ''}` +
      (!d.errno && d.op !== 'WAKE' && s.duplicatePages.includes(d.start) ? ': the handler\'s own placement then failed with EEXIST' : ''));
  }
  if (s.retries) problems.push(`retries after EAGAIN: ${s.retries}`);
  if (s.unregistered) problems.push(`faults on unregistered ranges: ${s.unregistered}`);
  if (s.ioctlErrors) problems.push(`failed ioctls (other than EEXIST and EAGAIN): ${s.ioctlErrors}`);
  L.push(problems.length ? 'problems:' : 'problems: none found');
  for (const p of problems) L.push(`  ${p}`);
  return L.join('\n') + '\n';
}
