// The DAP side: translates requests into FaultSession calls and session events into DAP
// events. Keep logic out of here; it belongs in server/core.
import {
  CapabilitiesEvent, ContinuedEvent, DebugSession, ExitedEvent, Event, Handles, InitializedEvent, LoggingDebugSession, OutputEvent, Scope, Source, StackFrame, StoppedEvent,
  TerminatedEvent, Thread, Variable,
} from '@vscode/debugadapter';
import { DebugProtocol } from '@vscode/debugprotocol';
import { constants } from 'node:os';
import { describeFault, FaultSession, LaunchConfig, StopInfo, Watch } from '../core/session';
import { Batcher } from '../core/batcher';
import { completeConsoleCommand, runConsoleCommand } from '../core/console';
import {
  decodeVmFlags, describePage, findVma, hex, readPagemap, readSmaps, SmapsEntry, uffdModes, vmaName,
} from '../core/procfs';
import { regionLabel } from '../core/summary';
import { availableFilters, resolutionsFor } from '../core/capabilities';
import { dapFrames } from './frames';
import { rangeInfo, WatchIds } from './dataBreakpoints';
import { describeEvent, EVENT_FILTERS } from '../core/filters';
import { readMemory, writeMemory, PartialWriteError } from '../core/memory';
import { regionVariables } from '../core/regionInfo';
import { basename, locationLabel, readUserRegs, registerViews, Symbolizer } from '../core/symbolize';
import { AddrRange, FaultEvent, FlagSet, HelperEvent, ResolveArgs, TrackSelector } from '../protocol/messages';
import { OBSERVE_FILTERS, ObserveHost, ObserveRequests } from './observeRequests';
import { OBSERVE_ATTACH_FILTERS, ObserveAttachRequests } from './observeAttachRequests';

export interface UffdLaunchArguments extends DebugProtocol.LaunchRequestArguments, Omit<LaunchConfig, 'helperPath'> {
  program: string;
  /** Stream every fault to the timeline panel (custom event `uffd/events`); default true. */
  timeline?: boolean;
  /** Observe mode: run the program with libuffd-observe.so; it keeps its own userfaultfd (server/core/observeDebug.ts). */
  observe?: boolean;
  stopOnIoctlError?: boolean;
  stopOnWaitMs?: number;
}

type VarRef =
  | { kind: 'fault'; seq: number }
  | { kind: 'vma'; seq: number }
  | { kind: 'page'; seq: number }
  | { kind: 'registers'; seq: number }
  | { kind: 'vmflags'; flags: string[] }
  | { kind: 'counters'; counters: Record<string, number> }
  | { kind: 'regions' }
  | { kind: 'region'; seq: number };

export interface UffdAttachArguments extends DebugProtocol.AttachRequestArguments {
  pid: number | string;
  /** "anon" (default), a list of mapping names ("[heap]", "/path/lib.so"), or address ranges. */
  track?: 'anon' | (string | AddrRange)[];
  stopOnFirstFault?: boolean;
  timeline?: boolean;
  followForks?: boolean;
  userModeOnly?: boolean;
  wpAsync?: boolean;
  /** Passive observe attach: a process that handles its own userfaultfd, watched through /proc (server/core/observeAttach.ts). */
  observe?: boolean;
  stopOnWaitMs?: number;
}

/** The attach configuration's `track` as the helper's selector. */
export function trackSelector(track: UffdAttachArguments['track']): TrackSelector | undefined {
  if (track === undefined || track === 'anon') return undefined;
  if (!Array.isArray(track) || track.length === 0) {
    throw new Error("'track' is \"anon\", a list of mapping names like \"[heap]\", or a list of {\"start\", \"end\"} ranges");
  }
  if (track.every((t) => typeof t === 'string')) return { names: track as string[] };
  if (track.every((t) => typeof t === 'object' && t !== null && typeof t.start === 'string' && typeof t.end === 'string')) {
    return { ranges: track as AddrRange[] };
  }
  throw new Error("'track' mixes names and ranges: use one kind per configuration (add the other with the 'track' console command)");
}

/** "0xADDR" (+ bytes), "0xSTART-0xEND", rounded out to whole pages; null when not an address. */
export function parseWatchRange(text: string, bytes?: number): [bigint, bigint] | null {
  const m = /^\s*(0x[0-9a-f]+)(?:\s*-\s*(0x[0-9a-f]+))?\s*$/i.exec(text);
  if (!m) return null;
  const start = BigInt(m[1]);
  const end = m[2] ? BigInt(m[2]) : start + BigInt(Math.max(1, bytes ?? 1));
  if (end <= start) return null;
  const lo = start & ~0xfffn;
  const hi = (end + 0xfffn) & ~0xfffn;
  return [lo, hi];
}

const EVENT_LABELS: Record<(typeof EVENT_FILTERS)[number], string> = {
  fork: 'Fork (followForks)',
  remap: 'Remap (mremap moved memory)',
  remove: 'Remove (madvise dropped pages)',
  unmap: 'Unmap (munmap of tracked memory)',
};

const FAULT_CONDITION = 'e.g. [heap] tid=1234 hit>=3 — a range 0xSTART-0xEND or mapping name ([heap], libc.so, name=TEXT), tid=N, hit>=N | hit=N | every=N';
const EVENT_CONDITION = 'e.g. 0x7f0000000000-0x7f0000100000 every=2 — a range or mapping name the event touches, hit>=N | hit=N | every=N';

const FILTERS: DebugProtocol.ExceptionBreakpointsFilter[] = [
  { filter: 'missing', label: 'Missing-page faults', default: false, supportsCondition: true, conditionDescription: FAULT_CONDITION,
    description: 'Stop when a thread touches a page that is not populated yet (first touch of anonymous memory).' },
  { filter: 'wp', label: 'Write-protect faults', default: true, supportsCondition: true, conditionDescription: FAULT_CONDITION,
    description: 'Stop when a thread writes to a write-protected page.' },
  { filter: 'minor', label: 'Minor faults', default: true, supportsCondition: true, conditionDescription: FAULT_CONDITION,
    description: 'Stop when a thread touches a page that is in the page cache but not mapped.' },
  ...EVENT_FILTERS.map((what): DebugProtocol.ExceptionBreakpointsFilter => ({
    filter: what, label: EVENT_LABELS[what], default: false, supportsCondition: true, conditionDescription: EVENT_CONDITION,
    description: `${EVENT_LABELS[what]}: the event does not block the program, so the debugger stops on the next page fault of any thread after it and names the event.`,
  })),
];

const STOP_DESCRIPTION: Record<StopInfo['reason'], string> = {
  event: 'Paused on page fault',
  entry: 'Paused on entry',
  'page fault': 'Paused on page fault',
  step: 'Paused on page fault',
  pause: 'Paused on page fault',
  'data breakpoint': 'Paused on data breakpoint',
};

/**
 * What the extension knows before `initialize` (from the launch configuration): VS Code reads the
 * Breakpoints view's filters from the initialize response only (a later capabilities event changes
 * what the adapter accepts, not what the view lists), so observe mode must answer with its own.
 */
export interface AdapterMode { observe?: boolean; observeAttach?: boolean; stopOnIoctlError?: boolean; followForks?: boolean }

/**
 * `--observe`, `--observe-attach` (an attach with observe: true), `--stop-on-ioctl-error`,
 * `--follow-forks` on the adapter's command line (the extension passes them).
 */
export function adapterModeFromArgs(argv: readonly string[]): AdapterMode {
  const observeAttach = argv.includes('--observe-attach');
  return {
    observe: observeAttach || argv.includes('--observe'), observeAttach, stopOnIoctlError: argv.includes('--stop-on-ioctl-error'),
    followForks: argv.includes('--follow-forks'),
  };
}

export class UffdDebugSession extends LoggingDebugSession {
  private session = new FaultSession();
  private refs = new Handles<VarRef>();
  /** Generated documents behind stack frames: VS Code focuses (and fills Variables for) only frames with a source. */
  private sources = new Handles<() => string>();
  /** Frame id → the held fault it belongs to (0 for the entry stop). */
  private frames = new Handles<number>();
  private symbolizer = new Symbolizer();
  private smapsCache: { at: number; entries: SmapsEntry[] } | null = null;
  private ended = false;
  /**
   * Helper events for the timeline panel, a few column batches per second. Sent past
   * LoggingDebugSession.sendEvent, which stringifies every event for its log even when logging
   * is off: bulk data, twice the cost.
   */
  private timeline = new Batcher((batch) => DebugSession.prototype.sendEvent.call(this, new Event('uffd/events', { batch })));
  /** Set by a launch or an attach with `observe: true`: every request goes there (observeRequests.ts, observeAttachRequests.ts). */
  private observe: ObserveRequests | ObserveAttachRequests | null = null;

  constructor(private readonly mode: AdapterMode = {}) {
    super();
    this.setDebuggerLinesStartAt1(true);
    this.setDebuggerColumnsStartAt1(true);
    const s = this.session;
    const toTimeline = (e: HelperEvent) => {
      if (e.event !== 'exited' && e.event !== 'detached') this.timeline.push(e);
    };
    s.on('fault', toTimeline);
    s.on('faults', toTimeline);
    s.on('resolved', toTimeline);
    s.on('region', (region) => toTimeline({ type: 'event', event: 'region', action: 'add', region }));
    // region removals are not sent: the timeline keeps a band per region ever seen; `nc` marks the unmap
    s.on('nc', toTimeline);
    s.on('stopped', (info) => this.onStopped(info));
    s.on('output', (stream, data) => this.sendEvent(new OutputEvent(data, stream)));
    s.on('log', (line) => this.sendEvent(new Event('uffd/log', { line })));
    s.on('exited', (ex) => {
      if (ex.code === null && ex.signal === null) {
        // An attached process is not the helper's child: its exit status cannot be read.
        this.sendEvent(new OutputEvent('The process exited.\n', 'console'));
      } else {
        const code = ex.signal ? 128 + (constants.signals[ex.signal as NodeJS.Signals] ?? 0) : (ex.code ?? 0);
        const how = ex.signal ? `was killed by ${ex.signal}` : `exited with code ${ex.code}`;
        this.sendEvent(new OutputEvent(`Program ${how}.\n`, 'console'));
        this.sendEvent(new ExitedEvent(code));
      }
      this.end();
    });
    s.on('threadResumed', (tid) => this.sendEvent(new ContinuedEvent(tid, false)));
    s.on('detached', (pid) => {
      this.sendEvent(new OutputEvent(`Detached from pid ${pid}; it runs on.\n`, 'console'));
      this.end();
    });
    s.on('helperLost', (msg) => {
      this.sendEvent(new OutputEvent(`${msg}\n`, 'stderr'));
      this.sendEvent(new Event('uffd/error', { message: msg }));
      this.end();
    });
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    this.timeline.dispose();
    this.sendEvent(new TerminatedEvent());
  }

  private onStopped(info: StopInfo): void {
    this.timeline.flush();
    const ev = new StoppedEvent(info.reason, info.tid) as DebugProtocol.StoppedEvent;
    ev.body.allThreadsStopped = false;
    if (info.hitWatches?.length) ev.body.hitBreakpointIds = info.hitWatches;
    if (info.fault && info.event) {
      ev.body.description = `${STOP_DESCRIPTION[info.reason]} after ${describeEvent(info.event)}: ${describeFault(info.fault)}`;
      ev.body.text = `${describeFault(info.fault)}, the first fault after ${describeEvent(info.event)} (thread ${info.fault.tid}, fault #${info.fault.seq})`;
    } else if (info.fault) {
      ev.body.description = `${STOP_DESCRIPTION[info.reason]}: ${describeFault(info.fault)}` +
        (info.filter ? ` (${info.filter.id} filter: ${info.filter.condition})` : '');
      ev.body.text = `${describeFault(info.fault)} (page ${info.fault.page}, thread ${info.fault.tid}, fault #${info.fault.seq})`;
    } else {
      ev.body.description = STOP_DESCRIPTION[info.reason];
    }
    this.smapsCache = null;
    this.sendEvent(ev);
  }

  protected override initializeRequest(response: DebugProtocol.InitializeResponse): void {
    response.body = {
      supportsConfigurationDoneRequest: true,
      supportsSingleThreadExecutionRequests: true,
      supportsTerminateRequest: true,
      supportsCompletionsRequest: true,
      supportsDataBreakpoints: true,
      supportsDataBreakpointBytes: true,
      supportsReadMemoryRequest: true,
      supportsWriteMemoryRequest: true,
      supportsExceptionFilterOptions: true,
      completionTriggerCharacters: [],
      supportTerminateDebuggee: true,
      exceptionBreakpointFilters: this.mode.observeAttach ? OBSERVE_ATTACH_FILTERS : this.mode.observe
        ? OBSERVE_FILTERS.map((f) => (f.filter === 'ioctlError' ? { ...f, default: this.mode.stopOnIoctlError === true } : f))
        // The Fork filter only where forks are followed (nothing else reports them).
        : FILTERS.filter((f) => f.filter !== 'fork' || this.mode.followForks === true),
    };
    this.sendResponse(response);
  }

  /** What an observe branch (launch or passive attach) needs from this session. */
  private observeHost(timeline: boolean): ObserveHost {
    return {
      sendEvent: (e) => this.sendEvent(e), sendResponse: (r) => this.sendResponse(r), fail: (r, id, e) => this.fail(r, id, e),
      timeline: (e) => { if (timeline) this.timeline.push(e); }, flushTimeline: () => this.timeline.flush(), end: () => this.end(),
    };
  }

  protected override async launchRequest(response: DebugProtocol.LaunchResponse, args: UffdLaunchArguments): Promise<void> {
    if (args.observe) {
      this.observe = new ObserveRequests(this.observeHost(args.timeline !== false));
      this.observe.launch(response, { ...args, helperPath: process.env.UFFD_HELPER });
      return;
    }
    try {
      const info = await this.session.launch({
        program: args.program,
        args: args.args,
        cwd: args.cwd,
        env: args.env,
        stopOnEntry: args.stopOnEntry ?? false,
        stopOnFirstFault: args.stopOnFirstFault ?? true,
        followForks: args.followForks,
        wpAsync: args.wpAsync,
        userModeOnly: args.userModeOnly,
        stream: args.timeline === false ? 'held' : 'all',
        helperPath: process.env.UFFD_HELPER,
      });
      for (const region of info.regions) this.timeline.push({ event: 'region', action: 'add', region });
      this.sendEvent(new OutputEvent(
        `uffd-debug: pid ${info.pid}, userfaultfd created in the target (${info.uffdSource}), ` +
        `${info.regions.length} anonymous region${info.regions.length === 1 ? '' : 's'} registered, kernel ${this.session.hello?.kernel}\n`, 'console'));
      this.sendResponse(response);
      this.announceFilters(info.features);
      this.sendEvent(new InitializedEvent());
    } catch (e) {
      await this.session.dispose();
      this.fail(response, 1001, e);
    }
  }

  protected override async attachRequest(response: DebugProtocol.AttachResponse, args: UffdAttachArguments): Promise<void> {
    if (args.observe) {
      this.observe = new ObserveAttachRequests(this.observeHost(args.timeline !== false));
      this.observe.attach(response, args);
      return;
    }
    try {
      const pid = typeof args.pid === 'string' ? Number(args.pid.trim()) : args.pid;
      const info = await this.session.attach({
        pid,
        track: trackSelector(args.track),
        stopOnFirstFault: args.stopOnFirstFault ?? false,
        followForks: args.followForks,
        wpAsync: args.wpAsync,
        userModeOnly: args.userModeOnly,
        stream: args.timeline === false ? 'held' : 'all',
        helperPath: process.env.UFFD_HELPER,
      });
      this.sendEvent(new OutputEvent(
        `uffd-debug: attached to pid ${info.pid} (${info.threads.length} thread${info.threads.length === 1 ? '' : 's'}), ` +
        `userfaultfd created in the target (${info.uffdSource}), ${info.regions.length} region${info.regions.length === 1 ? '' : 's'} ` +
        `registered. Disconnect detaches; the process runs on.\n`, 'console'));
      for (const region of info.regions) this.timeline.push({ event: 'region', action: 'add', region });
      this.sendResponse(response);
      this.announceFilters(info.features);
      this.sendEvent(new InitializedEvent());
    } catch (e) {
      await this.session.dispose();
      this.fail(response, 1002, e);
    }
  }

  /** Only the filters this kernel and session can honour (the handshake says which). */
  private announceFilters(features: FlagSet): void {
    const ok = new Set<string>(availableFilters(features));
    const filters = FILTERS.filter((f) => ok.has(f.filter));
    if (filters.length < FILTERS.length) this.sendEvent(new CapabilitiesEvent({ exceptionBreakpointFilters: filters }));
  }

  protected override async setExceptionBreakPointsRequest(
    response: DebugProtocol.SetExceptionBreakpointsResponse, args: DebugProtocol.SetExceptionBreakpointsArguments,
  ): Promise<void> {
    if (this.observe) return this.observe.setExceptionBreakpoints(response, args);
    // One result per entry of `filters`, then of `filterOptions` (DAP keeps that order).
    const list = [
      ...(args.filters ?? []).map((id) => ({ id })),
      ...(args.filterOptions ?? []).map((f) => ({ id: f.filterId, condition: f.condition })),
    ];
    try {
      const results = await this.session.setFilterList(list);
      response.body = { breakpoints: results.map((r) => ({ verified: r.verified, ...(r.message ? { message: r.message } : {}) })) };
      this.sendResponse(response);
      const bad = results.filter((r) => !r.verified);
      if (bad.length > 0) this.sendEvent(new OutputEvent(`uffd-debug: ${bad.map((r) => r.message).join('\n')}\n`, 'console'));
    } catch (e) {
      this.fail(response, 1003, e);
    }
  }

  protected override async configurationDoneRequest(response: DebugProtocol.ConfigurationDoneResponse): Promise<void> {
    if (this.observe) return this.observe.configurationDone(response);
    this.sendResponse(response);
    try {
      await this.session.start();
    } catch (e) {
      this.sendEvent(new OutputEvent(`uffd-debug: could not start the program: ${(e as Error).message}\n`, 'stderr'));
      this.end();
    }
  }

  protected override threadsRequest(response: DebugProtocol.ThreadsResponse): void {
    if (this.observe) return this.observe.threads(response);
    const tasks = this.session.threads();
    response.body = {
      threads: tasks.length > 0
        ? tasks.map((t) => new Thread(t.tid, `${t.name} [${t.tid}]`))
        : this.session.pid !== undefined && !this.ended ? [new Thread(this.session.pid, `main [${this.session.pid}]`)] : [],
    };
    this.sendResponse(response);
  }

  protected override async stackTraceRequest(response: DebugProtocol.StackTraceResponse, args: DebugProtocol.StackTraceArguments): Promise<void> {
    if (this.observe) return this.observe.stackTrace(response, args);
    const f = this.session.heldFor(args.threadId);
    const frames: DebugProtocol.StackFrame[] = [];
    if (f) {
      const report = new Source(`page fault #${f.seq}`, undefined, this.sources.create(() => this.faultReport(f)));
      const label = new StackFrame(this.frames.create(f.seq), `page fault #${f.seq}: ${describeFault(f)}`) as DebugProtocol.StackFrame;
      label.presentationHint = 'label';
      frames.push(label);
      // The faulting instruction, then its callers: the helper stops the thread once to unwind.
      const stack = await this.session.stack(f.seq).catch((e: Error) => {
        this.sendEvent(new OutputEvent(`uffd-debug: no full stack for fault #${f.seq} (${e.message}); showing the faulting instruction only\n`, 'console'));
        return null;
      });
      const regs = stack ? null : readUserRegs(this.session.pid!, f.tid);
      if (stack) {
        frames.push(...dapFrames(stack, () => this.frames.create(f.seq), report));
      } else if (regs) {
        const loc = this.symbolizer.locate(this.smaps(), regs.pc);
        const frame = loc.sourceAvailable
          ? new StackFrame(this.frames.create(f.seq), loc.func ?? locationLabel(loc), new Source(basename(loc.file!), loc.file!), loc.line!, 1)
          : new StackFrame(this.frames.create(f.seq), locationLabel(loc), report, 1, 1);
        frame.instructionPointerReference = hex(regs.pc);
        frames.push(frame);
      } else {
        frames.push(new StackFrame(this.frames.create(f.seq), 'fault report', report, 1, 1));
      }
    } else if (this.session.isAtEntry) {
      const ref = this.sources.create(() => this.entryReport());
      frames.push(new StackFrame(this.frames.create(0), 'program entry (before the first instruction)', new Source('program entry', undefined, ref), 1, 1));
    }
    const start = args.startFrame ?? 0;
    const levels = args.levels ? args.levels : frames.length;
    response.body = { stackFrames: frames.slice(start, start + levels), totalFrames: frames.length };
    this.sendResponse(response);
  }

  protected override sourceRequest(response: DebugProtocol.SourceResponse, args: DebugProtocol.SourceArguments): void {
    const make = this.sources.get(args.source?.sourceReference ?? args.sourceReference);
    if (!make) {
      this.sendErrorResponse(response, { id: 1006, format: 'this fault report is gone: the fault was resolved' });
      return;
    }
    response.body = { content: make(), mimeType: 'text/plain' };
    this.sendResponse(response);
  }

  private faultReport(f: FaultEvent): string {
    const lines = [`Page fault #${f.seq}: ${describeFault(f)}`, ''];
    for (const v of this.faultVariables(f)) lines.push(`  ${v.name.padEnd(30)} ${v.value}`);
    const [page] = readPagemap(this.session.pid!, BigInt(f.page));
    if (page) lines.push('', `Page ${f.page}: ${describePage(page)}`);
    const vma = findVma(this.smaps(), BigInt(f.addr));
    if (vma) {
      lines.push('', `VMA ${hex(vma.start)}-${hex(vma.end)} ${vma.perms} ${vmaName(vma)}`);
      for (const d of decodeVmFlags(vma.vmFlags)) lines.push(`  ${d.code}  ${d.meaning}`);
    }
    lines.push('', 'The Call Stack shows where it faulted; Continue or Step to resolve this fault.');
    return lines.join('\n') + '\n';
  }

  private entryReport(): string {
    const lines = [`Program entry: pid ${this.session.pid}, nothing has run yet.`, '', 'Tracked regions:'];
    for (const r of this.session.regions) lines.push(`  ${regionLabel(r)}`);
    return lines.join('\n') + '\n';
  }

  protected override scopesRequest(response: DebugProtocol.ScopesResponse, args: DebugProtocol.ScopesArguments): void {
    if (this.observe) return this.observe.scopes(response, args);
    const scopes: DebugProtocol.Scope[] = [];
    const seq = this.frames.get(args.frameId) ?? 0;
    if (seq > 0 && this.session.held.has(seq)) {
      scopes.push(new Scope('Fault', this.refs.create({ kind: 'fault', seq }), false));
      scopes.push(new Scope('Page', this.refs.create({ kind: 'page', seq }), false));
      scopes.push(new Scope('VMA', this.refs.create({ kind: 'vma', seq }), false));
      scopes.push(new Scope('Region', this.refs.create({ kind: 'region', seq }), false));
      scopes.push(new Scope('Registers', this.refs.create({ kind: 'registers', seq }), false));
    }
    scopes.push(new Scope('Tracked regions', this.refs.create({ kind: 'regions' }), true));
    response.body = { scopes };
    this.sendResponse(response);
  }

  protected override async variablesRequest(response: DebugProtocol.VariablesResponse, args: DebugProtocol.VariablesArguments): Promise<void> {
    if (this.observe) return this.observe.variables(response, args);
    const ref = this.refs.get(args.variablesReference);
    let vars: DebugProtocol.Variable[] = [];
    try {
      if (ref?.kind === 'registers') vars = await this.registerVariables(ref.seq);
      else if (ref) vars = this.variablesOf(ref);
    } catch (e) {
      vars = [new Variable('error', (e as Error).message)];
    }
    response.body = { variables: vars };
    this.sendResponse(response);
  }

  private variablesOf(ref: VarRef): DebugProtocol.Variable[] {
    switch (ref.kind) {
      case 'fault': {
        const f = this.session.held.get(ref.seq);
        if (!f) return [new Variable('state', 'resolved')];
        return this.faultVariables(f);
      }
      case 'vma': {
        const f = this.session.held.get(ref.seq);
        if (!f) return [new Variable('state', 'resolved')];
        const v = findVma(this.smaps(), BigInt(f.addr));
        if (!v) return [new Variable('vma', 'no mapping contains this address')];
        const flags = new Variable('VmFlags', v.vmFlags.join(' '), this.refs.create({ kind: 'vmflags', flags: v.vmFlags }));
        const kib = Number((v.end - v.start) / 1024n);
        return [
          memVar(new Variable('range', `${hex(v.start)}-${hex(v.end)} (${kib} KiB)`), hex(v.start)),
          memVar(new Variable('start', hex(v.start)), hex(v.start)),
          new Variable('permissions', v.perms),
          new Variable('offset', hex(v.offset)),
          new Variable('path', vmaName(v)),
          flags,
          new Variable('userfaultfd modes', uffdModes(v.vmFlags).join(', ') || 'none'),
          new Variable('smaps counters', `Rss ${v.counters.Rss ?? 0} kB`, this.refs.create({ kind: 'counters', counters: v.counters })),
        ];
      }
      case 'page': {
        const f = this.session.held.get(ref.seq);
        if (!f) return [new Variable('state', 'resolved')];
        const [p] = readPagemap(this.session.pid!, BigInt(f.page));
        if (!p) return [new Variable('pagemap', 'no entry (address outside the process)')];
        return [
          new Variable('state', describePage(p)),
          new Variable('present', String(p.present)),
          new Variable('swapped', String(p.swapped)),
          new Variable('file or shared-anon', String(p.fileOrSharedAnon)),
          new Variable('exclusive', String(p.exclusive)),
          new Variable('soft-dirty', String(p.softDirty)),
          new Variable('uffd-wp', String(p.uffdWp)),
          new Variable('guard region', String(p.guard)),
          new Variable('pfn', p.present ? hex(p.pfn) : 'none (not present)'),
        ];
      }
      case 'registers':
        return []; // asynchronous: registerVariables
      case 'vmflags':
        return decodeVmFlags(ref.flags).map((d) => new Variable(d.code, d.meaning));
      case 'counters':
        return Object.entries(ref.counters).map(([k, n]) => new Variable(k, `${n} kB`));
      case 'regions':
        return this.session.regions.map((r, i) => memVar(new Variable(`#${i}`, regionLabel(r)), r.start));
      case 'region': {
        const f = this.session.held.get(ref.seq);
        if (!f) return [new Variable('state', 'resolved')];
        return regionVariables(this.session, f, this.smaps()).map((v) => memVar(new Variable(v.name, v.value), v.memory));
      }
    }
  }

  /** All registers of the held thread (from the helper's `stack`); rip and rsp from /proc when that fails. */
  private async registerVariables(seq: number): Promise<DebugProtocol.Variable[]> {
    const f = this.session.held.get(seq);
    if (!f) return [new Variable('state', 'resolved')];
    let stack;
    try {
      stack = await this.session.stack(seq);
    } catch (e) {
      const regs = readUserRegs(this.session.pid!, f.tid);
      if (!regs) return [new Variable('state', `not available: ${(e as Error).message}`)];
      return [
        memVar(new Variable('rip', hex(regs.pc)), hex(regs.pc)),
        memVar(new Variable('rsp', hex(regs.sp)), hex(regs.sp)),
        new Variable('(others)', `not available: ${(e as Error).message}`),
      ];
    }
    const vmas = this.smaps();
    const vars = registerViews(stack, (a) => findVma(vmas, a) !== undefined)
      .map((r) => memVar(new Variable(r.name, r.value), r.address !== null ? hex(r.address) : undefined));
    if (stack.note) vars.push(new Variable('(note)', stack.note));
    return vars;
  }

  private faultVariables(f: FaultEvent): DebugProtocol.Variable[] {
    const waitedMs = Number(process.hrtime.bigint() - BigInt(f.t)) / 1e6;
    const task = this.session.threads().find((t) => t.tid === f.tid);
    const samePage = [...this.session.held.values()].filter((h) => h.page === f.page).length;
    return [
      memVar(new Variable('address', f.addr), f.addr),
      memVar(new Variable('page', f.page), f.page),
      new Variable('access', f.access),
      new Variable('kind', f.kind),
      new Variable('thread', task ? `${f.tid} (${task.name})` : String(f.tid)),
      new Variable('waited', `${waitedMs.toFixed(1)} ms`),
      new Variable('threads waiting on this page', String(samePage)),
      new Variable('sequence', `#${f.seq}`),
    ];
  }

  /** smaps is read once per stop: scopes and variables of one stop share it. */
  private smaps(): SmapsEntry[] {
    const now = Date.now();
    if (!this.smapsCache || now - this.smapsCache.at > 1000) {
      this.smapsCache = { at: now, entries: readSmaps(this.session.pid!) };
    }
    return this.smapsCache.entries;
  }

  /** Memory view: never blocks on a missing page (those bytes come back unreadable). */
  protected override readMemoryRequest(response: DebugProtocol.ReadMemoryResponse, args: DebugProtocol.ReadMemoryArguments): void {
    if (this.observe) return this.observe.unsupported(response);
    try {
      const addr = memoryAddress(args.memoryReference, args.offset);
      const count = Math.max(0, Math.min(args.count, 16 << 20));
      const r = readMemory(this.requirePid(), addr, count);
      response.body = { address: hex(addr), data: r.data.toString('base64'), ...(r.unreadable > 0 ? { unreadableBytes: r.unreadable } : {}) };
      this.sendResponse(response);
    } catch (e) {
      this.sendErrorResponse(response, { id: 1014, format: (e as Error).message });
    }
  }

  /** Writes through /proc/PID/mem; into a missing page with a held fault: resolves it with those bytes. */
  protected override async writeMemoryRequest(response: DebugProtocol.WriteMemoryResponse, args: DebugProtocol.WriteMemoryArguments): Promise<void> {
    if (this.observe) return this.observe.unsupported(response);
    let addr = 0n;
    try {
      addr = memoryAddress(args.memoryReference, args.offset);
      const data = Buffer.from(args.data, 'base64');
      const r = await writeMemory(this.session, addr, data);
      response.body = { bytesWritten: r.bytesWritten };
      this.sendResponse(response);
      this.sendEvent(new Event('memory', { memoryReference: args.memoryReference, offset: args.offset ?? 0, count: data.length }));
    } catch (e) {
      const pe = e as PartialWriteError;
      if (args.allowPartial && pe.bytesWritten > 0) {
        response.body = { bytesWritten: pe.bytesWritten };
        this.sendResponse(response);
        this.sendEvent(new OutputEvent(`uffd-debug: wrote ${pe.bytesWritten} bytes at ${hex(addr)}, then: ${pe.message}\n`, 'console'));
      } else {
        this.sendErrorResponse(response, { id: 1015, format: pe.message, showUser: true });
      }
    }
  }

  private requirePid(): number {
    if (this.session.pid === undefined || this.session.exitInfo || this.ended) throw new Error('no process: the program has exited');
    return this.session.pid;
  }

  private watchIds = new WatchIds();

  protected override dataBreakpointInfoRequest(response: DebugProtocol.DataBreakpointInfoResponse,
    args: DebugProtocol.DataBreakpointInfoArguments): void {
    if (this.observe) return this.observe.dataBreakpointInfo(response, args, parseWatchRange);
    let range: [bigint, bigint] | null = null;
    let what = '';
    const ref = args.variablesReference ? this.refs.get(args.variablesReference) : undefined;
    if (ref && !args.asAddress) {
      // A variable that denotes memory: a range variable watches its whole VMA or region, any
      // other the page(s) at its address.
      let v: DebugProtocol.Variable | undefined;
      try {
        v = this.variablesOf(ref).find((x) => x.name === args.name);
      } catch {
        v = undefined;
      }
      if (v?.memoryReference) {
        const whole = /(0x[0-9a-f]+)-(0x[0-9a-f]+)/.exec(v.value);
        if (args.name === 'range' && whole) {
          range = [BigInt(whole[1]), BigInt(whole[2])];
          what = `${ref.kind === 'vma' ? 'VMA' : 'region'} ${whole[1]}-${whole[2]}`;
        } else {
          range = parseWatchRange(v.memoryReference, args.bytes);
          what = range && range[1] - range[0] === 4096n ? `page ${hex(range[0])}` : `${args.name} ${v.memoryReference}`;
        }
      }
    } else {
      // Typed by the user: an address (with bytes), a range, or a mapping name ([heap], libc.so).
      range = parseWatchRange(args.name, args.bytes);
      what = range ? `${hex(range[0])}-${hex(range[1])}` : '';
      if (!range && !args.asAddress && this.session.pid !== undefined && args.name.trim()) {
        const name = args.name.trim();
        const v = this.smaps().find((x) => (name.startsWith('[') ? x.path === name : x.path.includes(name)));
        if (v) {
          range = [v.start, v.end];
          what = `VMA ${hex(v.start)}-${hex(v.end)} ${vmaName(v)}`;
        }
      }
    }
    response.body = rangeInfo(range, what, 'Not memory: data breakpoints take an address (0x…), a range (0x…-0x…), a mapping name ' +
      '([heap], libc.so), or a variable that denotes memory (Fault address/page, VMA or Region range).');
    this.sendResponse(response);
  }

  protected override async setDataBreakpointsRequest(response: DebugProtocol.SetDataBreakpointsResponse,
    args: DebugProtocol.SetDataBreakpointsArguments): Promise<void> {
    if (this.observe) return this.observe.setDataBreakpoints(response, args, parseWatchRange);
    const watches: Watch[] = [];
    const results: DebugProtocol.Breakpoint[] = [];
    for (const bp of args.breakpoints) {
      const r = parseWatchRange(bp.dataId);
      if (!r) {
        results.push({ verified: false, message: `'${bp.dataId}' is not an address range` });
        continue;
      }
      const access = bp.accessType ?? 'write';
      const id = this.watchIds.idFor(bp.dataId, access);
      watches.push({ id, start: r[0], end: r[1], access });
      const pages = (r[1] - r[0]) / 4096n;
      const how = access === 'read' ? 'the first touch of each unpopulated page (a missing fault)'
        : access === 'write' ? 'the first write to each page (write-protect is armed for populated pages; a first touch that writes is a missing fault; set it again to re-arm)'
          : 'the first touch of each unpopulated page and the first write to each page (set it again to re-arm)';
      results.push({
        id, verified: true,
        message: `Page granularity, ${pages} page${pages === 1n ? '' : 's'}, no hardware-slot limit: stops on ${how}.`,
      });
    }
    try {
      await this.session.setWatches(watches);
      response.body = { breakpoints: results };
      this.sendResponse(response);
    } catch (e) {
      this.fail(response, 1013, e);
    }
  }

  protected override async evaluateRequest(response: DebugProtocol.EvaluateResponse, args: DebugProtocol.EvaluateArguments): Promise<void> {
    if (this.observe && args.context === 'repl') return this.observe.evaluate(response, args);
    if (args.context !== 'repl') {
      this.sendErrorResponse(response, { id: 1007, format: 'uffd-debug evaluates Debug Console commands only (type help there)' });
      return;
    }
    try {
      const seq = args.frameId !== undefined ? this.frames.get(args.frameId) : undefined;
      response.body = {
        result: await runConsoleCommand(this.session, args.expression, { seq: seq || undefined }),
        variablesReference: 0,
      };
      this.sendResponse(response);
    } catch (e) {
      this.sendErrorResponse(response, { id: 1008, format: (e as Error).message });
    }
  }

  protected override completionsRequest(response: DebugProtocol.CompletionsResponse, args: DebugProtocol.CompletionsArguments): void {
    const typed = args.text.slice(0, args.column - 1);
    response.body = {
      // Observe modes have their own few commands.
      targets: completeConsoleCommand(typed, this.observe?.commands).map((label) => ({ label, type: 'function', start: 0, length: typed.length })),
    };
    this.sendResponse(response);
  }

  /** `uffd/selectThread {tid}` from the timeline: show that thread's held fault in the UI again. */
  protected override customRequest(command: string, response: DebugProtocol.Response,
    args: { tid?: number } & Omit<ResolveArgs, 'seq'>): void {
    if (this.observe && command === 'uffd/resolve' && typeof args?.tid === 'number' && typeof args.how === 'string') {
      void this.observe.resolve(response, { tid: args.tid, how: args.how, pattern: args.pattern, pages: args.pages });
      return;
    }
    if (this.observe && command === 'uffd/resolutions' && typeof args?.tid === 'number') return this.observe.resolutions(response, args.tid);
    if (this.observe && command.startsWith('uffd/')) return this.observe.unsupported(response);
    if (command === 'uffd/resolve' && typeof args?.tid === 'number' && typeof args.how === 'string') {
      const f = this.session.heldFor(args.tid);
      if (!f) {
        this.sendErrorResponse(response, { id: 1011, format: `thread ${args.tid} is not stopped on a fault` });
        return;
      }
      const { tid: _tid, how, ...extra } = args;
      this.session.resolve(f.seq, how, extra).then((body) => {
        response.body = body;
        this.sendResponse(response);
      }, (e) => this.fail(response, 1012, e));
      return;
    }
    if (command === 'uffd/resolutions' && typeof args?.tid === 'number') {
      const f = this.session.heldFor(args.tid);
      const features = this.session.launchInfo?.features;
      if (!f || !features) {
        this.sendErrorResponse(response, { id: 1011, format: `thread ${args.tid} is not stopped on a fault` });
        return;
      }
      response.body = { kind: f.kind, page: f.page, ways: resolutionsFor(f, features) };
      this.sendResponse(response);
      return;
    }
    if (command === 'uffd/selectThread' && typeof args?.tid === 'number') {
      const f = this.session.heldFor(args.tid);
      if (!f) {
        this.sendErrorResponse(response, { id: 1009, format: `thread ${args.tid} is not stopped on a fault (it was resolved meanwhile)` });
        return;
      }
      this.sendResponse(response);
      this.onStopped({ reason: 'page fault', tid: f.tid, fault: f });
      return;
    }
    this.sendErrorResponse(response, { id: 1010, format: `unknown request '${command}'` });
  }

  protected override async continueRequest(response: DebugProtocol.ContinueResponse, args: DebugProtocol.ContinueArguments): Promise<void> {
    const one = args.singleThread === true;
    if (this.observe) return this.observe.continue(response, one ? args.threadId : null);
    await this.run(response, () => this.session.continue(one ? args.threadId : null), { allThreadsContinued: !one });
  }

  protected override async nextRequest(response: DebugProtocol.NextResponse, args: DebugProtocol.NextArguments): Promise<void> {
    if (this.observe) return this.observe.step(response, args.threadId);
    await this.run(response, () => this.session.next(args.threadId));
  }

  protected override async stepInRequest(response: DebugProtocol.StepInResponse, args: DebugProtocol.StepInArguments): Promise<void> {
    if (this.observe) return this.observe.step(response, args.threadId);
    await this.run(response, () => this.session.stepIn(args.threadId));
  }

  protected override async stepOutRequest(response: DebugProtocol.StepOutResponse, args: DebugProtocol.StepOutArguments): Promise<void> {
    if (this.observe) return this.observe.step(response, args.threadId);
    await this.run(response, async () => {
      const f = this.session.heldFor(args.threadId);
      if (!f) throw new Error(`thread ${args.threadId} is not stopped on a fault: Step Out runs until a fault outside the VMA of the current one`);
      const vma = findVma(this.smaps(), BigInt(f.addr));
      if (!vma) throw new Error(`no mapping contains ${f.addr} any more`);
      await this.session.stepOut(args.threadId, vma.start, vma.end);
    });
  }

  protected override async pauseRequest(response: DebugProtocol.PauseResponse): Promise<void> {
    if (this.observe) return this.observe.pause(response);
    await this.run(response, () => this.session.pause());
  }

  private async run(response: DebugProtocol.Response, action: () => Promise<void>, body?: object): Promise<void> {
    try {
      this.refs.reset();
      this.sources.reset();
      this.frames.reset();
      await action();
      if (body) response.body = body;
      this.sendResponse(response);
    } catch (e) {
      this.fail(response, 1004, e);
    }
  }

  protected override async terminateRequest(response: DebugProtocol.TerminateResponse): Promise<void> {
    if (this.observe) return this.observe.terminate(response);
    try {
      await this.session.terminate();
      this.sendResponse(response);
    } catch (e) {
      this.fail(response, 1005, e);
    }
  }

  protected override async disconnectRequest(response: DebugProtocol.DisconnectResponse,
    args: DebugProtocol.DisconnectArguments): Promise<void> {
    if (this.observe) return this.observe.disconnect(response, args);
    try {
      // An attached process is only killed when the user asks for it; otherwise it is detached.
      if (this.session.attached && args?.terminateDebuggee === true) await this.session.terminate();
      await this.session.dispose();
    } finally {
      this.sendResponse(response);
    }
  }

  private fail(response: DebugProtocol.Response, id: number, e: unknown): void {
    const err = e as Error & { code?: string };
    const log = this.session.helper.lastLog(5);
    this.sendErrorResponse(response, {
      id,
      // Plain text: formatPII would leave a '{message}' placeholder unexpanded in response.message.
      format: err.message,
      showUser: true,
    });
    if (log) this.sendEvent(new OutputEvent(`uffd-debug helper log:\n${log}\n`, 'console'));
  }
}

/** A variable that denotes memory: VS Code offers the memory view (readMemory) and data breakpoints on it. */
function memVar(v: Variable, address: string | undefined): DebugProtocol.Variable {
  const dv = v as DebugProtocol.Variable;
  if (address) dv.memoryReference = address;
  return dv;
}

/** A memoryReference (an address in hex or decimal) plus an offset. */
function memoryAddress(ref: string, offset = 0): bigint {
  if (!/^(0x[0-9a-f]+|\d+)$/i.test(ref.trim())) throw new Error(`'${ref}' is not a memory reference: give an address such as 0x7f0000001000`);
  const a = BigInt(ref.trim()) + BigInt(offset);
  if (a < 0n || a >= 1n << 47n) throw new Error(`${hex(a)} is outside the user address space`);
  return a;
}
