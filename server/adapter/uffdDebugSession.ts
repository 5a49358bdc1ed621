// The DAP side: translates requests into FaultSession calls and session events into DAP
// events. Keep logic out of here; it belongs in server/core.
import {
  ContinuedEvent, ExitedEvent, Event, Handles, InitializedEvent, LoggingDebugSession, OutputEvent, Scope, Source, StackFrame, StoppedEvent,
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
import { basename, locationLabel, readUserRegs, Symbolizer } from '../core/symbolize';
import { AddrRange, FaultEvent, FaultKind, HelperEvent, ResolveArgs, TrackSelector } from '../protocol/messages';

export interface UffdLaunchArguments extends DebugProtocol.LaunchRequestArguments, Omit<LaunchConfig, 'helperPath'> {
  program: string;
  /** Stream every fault to the timeline panel (custom event `uffd/events`); default true. */
  timeline?: boolean;
}

type VarRef =
  | { kind: 'fault'; seq: number }
  | { kind: 'vma'; seq: number }
  | { kind: 'page'; seq: number }
  | { kind: 'registers'; seq: number }
  | { kind: 'vmflags'; flags: string[] }
  | { kind: 'counters'; counters: Record<string, number> }
  | { kind: 'regions' };

export interface UffdAttachArguments extends DebugProtocol.AttachRequestArguments {
  pid: number | string;
  /** "anon" (default), a list of mapping names ("[heap]", "/path/lib.so"), or address ranges. */
  track?: 'anon' | (string | AddrRange)[];
  stopOnFirstFault?: boolean;
  timeline?: boolean;
  followForks?: boolean;
  wpAsync?: boolean;
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

/** A helper event without its envelope tag, as the timeline panel takes it. */
type WithoutType<T> = T extends unknown ? Omit<T, 'type'> : never;

const FILTERS: DebugProtocol.ExceptionBreakpointsFilter[] = [
  { filter: 'missing', label: 'Missing-page faults', default: false,
    description: 'Stop when a thread touches a page that is not populated yet (first touch of anonymous memory).' },
  { filter: 'wp', label: 'Write-protect faults', default: true,
    description: 'Stop when a thread writes to a write-protected page.' },
  { filter: 'minor', label: 'Minor faults', default: true,
    description: 'Stop when a thread touches a page that is in the page cache but not mapped.' },
];

const STOP_DESCRIPTION: Record<StopInfo['reason'], string> = {
  entry: 'Paused on entry',
  'page fault': 'Paused on page fault',
  step: 'Paused on page fault',
  pause: 'Paused on page fault',
  'data breakpoint': 'Paused on data breakpoint',
};

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
  /** Helper events for the timeline panel, a few batches per second. */
  private timeline = new Batcher<WithoutType<HelperEvent>>((batch) => this.sendEvent(new Event('uffd/events', { batch })));

  constructor() {
    super();
    this.setDebuggerLinesStartAt1(true);
    this.setDebuggerColumnsStartAt1(true);
    const s = this.session;
    const toTimeline = (e: HelperEvent) => {
      const { type: _type, ...rest } = e;
      this.timeline.push(rest as WithoutType<HelperEvent>);
    };
    s.on('fault', toTimeline);
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
    if (info.fault) {
      ev.body.description = `${STOP_DESCRIPTION[info.reason]}: ${describeFault(info.fault)}`;
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
      supportsTerminateRequest: true,
      supportsCompletionsRequest: true,
      supportsDataBreakpoints: true,
      supportsDataBreakpointBytes: true,
      completionTriggerCharacters: [],
      supportTerminateDebuggee: true,
      exceptionBreakpointFilters: FILTERS,
    };
    this.sendResponse(response);
  }

  protected override async launchRequest(response: DebugProtocol.LaunchResponse, args: UffdLaunchArguments): Promise<void> {
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
        stream: args.timeline === false ? 'held' : 'all',
        helperPath: process.env.UFFD_HELPER,
      });
      for (const region of info.regions) this.timeline.push({ event: 'region', action: 'add', region });
      this.sendEvent(new OutputEvent(
        `uffd-debug: pid ${info.pid}, userfaultfd created in the target (${info.uffdSource}), ` +
        `${info.regions.length} anonymous region${info.regions.length === 1 ? '' : 's'} registered, kernel ${this.session.hello?.kernel}\n`, 'console'));
      this.sendResponse(response);
      this.sendEvent(new InitializedEvent());
    } catch (e) {
      await this.session.dispose();
      this.fail(response, 1001, e);
    }
  }

  protected override async attachRequest(response: DebugProtocol.AttachResponse, args: UffdAttachArguments): Promise<void> {
    try {
      const pid = typeof args.pid === 'string' ? Number(args.pid.trim()) : args.pid;
      const info = await this.session.attach({
        pid,
        track: trackSelector(args.track),
        stopOnFirstFault: args.stopOnFirstFault ?? false,
        followForks: args.followForks,
        wpAsync: args.wpAsync,
        stream: args.timeline === false ? 'held' : 'all',
        helperPath: process.env.UFFD_HELPER,
      });
      this.sendEvent(new OutputEvent(
        `uffd-debug: attached to pid ${info.pid} (${info.threads.length} thread${info.threads.length === 1 ? '' : 's'}), ` +
        `userfaultfd created in the target (${info.uffdSource}), ${info.regions.length} region${info.regions.length === 1 ? '' : 's'} ` +
        `registered. Disconnect detaches; the process runs on.\n`, 'console'));
      for (const region of info.regions) this.timeline.push({ event: 'region', action: 'add', region });
      this.sendResponse(response);
      this.sendEvent(new InitializedEvent());
    } catch (e) {
      await this.session.dispose();
      this.fail(response, 1002, e);
    }
  }

  protected override async setExceptionBreakPointsRequest(
    response: DebugProtocol.SetExceptionBreakpointsResponse, args: DebugProtocol.SetExceptionBreakpointsArguments,
  ): Promise<void> {
    const on = new Set([...(args.filters ?? []), ...(args.filterOptions ?? []).map((f) => f.filterId)]);
    const filters: Record<FaultKind, boolean> = { missing: on.has('missing'), wp: on.has('wp'), minor: on.has('minor') };
    try {
      await this.session.setFilters(filters);
      response.body = { breakpoints: [...on].map(() => ({ verified: true })) };
      this.sendResponse(response);
    } catch (e) {
      this.fail(response, 1003, e);
    }
  }

  protected override async configurationDoneRequest(response: DebugProtocol.ConfigurationDoneResponse): Promise<void> {
    this.sendResponse(response);
    try {
      await this.session.start();
    } catch (e) {
      this.sendEvent(new OutputEvent(`uffd-debug: could not start the program: ${(e as Error).message}\n`, 'stderr'));
      this.end();
    }
  }

  protected override threadsRequest(response: DebugProtocol.ThreadsResponse): void {
    const tasks = this.session.threads();
    response.body = {
      threads: tasks.length > 0
        ? tasks.map((t) => new Thread(t.tid, `${t.name} [${t.tid}]`))
        : this.session.pid !== undefined && !this.ended ? [new Thread(this.session.pid, `main [${this.session.pid}]`)] : [],
    };
    this.sendResponse(response);
  }

  protected override stackTraceRequest(response: DebugProtocol.StackTraceResponse, args: DebugProtocol.StackTraceArguments): void {
    const f = this.session.heldFor(args.threadId);
    const frames: DebugProtocol.StackFrame[] = [];
    if (f) {
      const report = new Source(`page fault #${f.seq}`, undefined, this.sources.create(() => this.faultReport(f)));
      const label = new StackFrame(this.frames.create(f.seq), `page fault #${f.seq}: ${describeFault(f)}`) as DebugProtocol.StackFrame;
      label.presentationHint = 'label';
      frames.push(label);
      // The faulting instruction, read without disturbing the blocked thread. Callers need the
      // full register set (ptrace), which this version does not take.
      const regs = readUserRegs(this.session.pid!, f.tid);
      if (regs) {
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
    response.body = { stackFrames: frames, totalFrames: frames.length };
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
    lines.push('', 'Stack traces with source lines arrive with DWARF unwinding; Continue or Step to resolve this fault.');
    return lines.join('\n') + '\n';
  }

  private entryReport(): string {
    const lines = [`Program entry: pid ${this.session.pid}, nothing has run yet.`, '', 'Tracked regions:'];
    for (const r of this.session.regions) lines.push(`  ${regionLabel(r)}`);
    return lines.join('\n') + '\n';
  }

  protected override scopesRequest(response: DebugProtocol.ScopesResponse, args: DebugProtocol.ScopesArguments): void {
    const scopes: DebugProtocol.Scope[] = [];
    const seq = this.frames.get(args.frameId) ?? 0;
    if (seq > 0 && this.session.held.has(seq)) {
      scopes.push(new Scope('Fault', this.refs.create({ kind: 'fault', seq }), false));
      scopes.push(new Scope('Page', this.refs.create({ kind: 'page', seq }), false));
      scopes.push(new Scope('VMA', this.refs.create({ kind: 'vma', seq }), false));
      scopes.push(new Scope('Registers', this.refs.create({ kind: 'registers', seq }), false));
    }
    scopes.push(new Scope('Tracked regions', this.refs.create({ kind: 'regions' }), true));
    response.body = { scopes };
    this.sendResponse(response);
  }

  protected override variablesRequest(response: DebugProtocol.VariablesResponse, args: DebugProtocol.VariablesArguments): void {
    const ref = this.refs.get(args.variablesReference);
    let vars: DebugProtocol.Variable[] = [];
    try {
      if (ref) vars = this.variablesOf(ref);
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
          new Variable('range', `${hex(v.start)}-${hex(v.end)} (${kib} KiB)`),
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
      case 'registers': {
        const f = this.session.held.get(ref.seq);
        const regs = f ? readUserRegs(this.session.pid!, f.tid) : null;
        if (!regs) return [new Variable('state', 'not available (the thread is running)')];
        return [
          new Variable('rip', hex(regs.pc), 0),
          new Variable('rsp', hex(regs.sp), 0),
          new Variable('(others)', 'need ptrace: the full register set arrives with stack unwinding'),
        ];
      }
      case 'vmflags':
        return decodeVmFlags(ref.flags).map((d) => new Variable(d.code, d.meaning));
      case 'counters':
        return Object.entries(ref.counters).map(([k, n]) => new Variable(k, `${n} kB`));
      case 'regions':
        return this.session.regions.map((r, i) => new Variable(`#${i}`, regionLabel(r)));
    }
  }

  private faultVariables(f: FaultEvent): DebugProtocol.Variable[] {
    const waitedMs = Number(process.hrtime.bigint() - BigInt(f.t)) / 1e6;
    const task = this.session.threads().find((t) => t.tid === f.tid);
    const samePage = [...this.session.held.values()].filter((h) => h.page === f.page).length;
    return [
      new Variable('address', f.addr),
      new Variable('page', f.page),
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

  private watchIds = new Map<string, number>();
  private nextWatchId = 1;

  protected override dataBreakpointInfoRequest(response: DebugProtocol.DataBreakpointInfoResponse,
    args: DebugProtocol.DataBreakpointInfoArguments): void {
    let range: [bigint, bigint] | null = null;
    let what = '';
    const ref = args.variablesReference ? this.refs.get(args.variablesReference) : undefined;
    if (ref && (ref.kind === 'fault' || ref.kind === 'vma')) {
      const f = this.session.held.get(ref.seq);
      if (f && ref.kind === 'fault' && (args.name === 'address' || args.name === 'page')) {
        range = [BigInt(f.page), BigInt(f.page) + 4096n];
        what = `page ${f.page}`;
      } else if (f && ref.kind === 'vma' && args.name === 'range') {
        const v = findVma(this.smaps(), BigInt(f.addr));
        if (v) {
          range = [v.start, v.end];
          what = `VMA ${hex(v.start)}-${hex(v.end)} ${vmaName(v)}`;
        }
      }
    } else if (!ref) {
      range = parseWatchRange(args.name, args.bytes);
      what = range ? `${hex(range[0])}-${hex(range[1])}` : '';
    }
    if (!range) {
      response.body = { dataId: null, description: 'Not memory: data breakpoints take an address (0x…), a range (0x…-0x…), or the Fault address/page or VMA range variables.' };
    } else {
      const pages = (range[1] - range[0]) / 4096n;
      response.body = {
        dataId: `${hex(range[0])}-${hex(range[1])}`,
        description: `${what} (${pages} page${pages === 1n ? '' : 's'})`,
        accessTypes: ['read', 'write', 'readWrite'],
        canPersist: true,
      };
    }
    this.sendResponse(response);
  }

  protected override async setDataBreakpointsRequest(response: DebugProtocol.SetDataBreakpointsResponse,
    args: DebugProtocol.SetDataBreakpointsArguments): Promise<void> {
    const watches: Watch[] = [];
    const results: DebugProtocol.Breakpoint[] = [];
    for (const bp of args.breakpoints) {
      const r = parseWatchRange(bp.dataId);
      if (!r) {
        results.push({ verified: false, message: `'${bp.dataId}' is not an address range` });
        continue;
      }
      const access = bp.accessType ?? 'write';
      const key = `${bp.dataId}/${access}`;
      let id = this.watchIds.get(key);
      if (id === undefined) {
        id = this.nextWatchId++;
        this.watchIds.set(key, id);
      }
      watches.push({ id, start: r[0], end: r[1], access });
      const pages = (r[1] - r[0]) / 4096n;
      const how = access === 'read' ? 'the first touch of each unpopulated page (a missing fault)'
        : access === 'write' ? 'the first write to each page (a missing or write-protect fault; set it again to re-arm)'
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
      targets: completeConsoleCommand(typed).map((label) => ({ label, type: 'function', start: 0, length: typed.length })),
    };
    this.sendResponse(response);
  }

  /** `uffd/selectThread {tid}` from the timeline: show that thread's held fault in the UI again. */
  protected override customRequest(command: string, response: DebugProtocol.Response,
    args: { tid?: number } & Omit<ResolveArgs, 'seq'>): void {
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

  protected override async continueRequest(response: DebugProtocol.ContinueResponse): Promise<void> {
    await this.run(response, () => this.session.continue(), { allThreadsContinued: true });
  }

  protected override async nextRequest(response: DebugProtocol.NextResponse, args: DebugProtocol.NextArguments): Promise<void> {
    await this.run(response, () => this.session.next(args.threadId));
  }

  protected override async stepInRequest(response: DebugProtocol.StepInResponse, args: DebugProtocol.StepInArguments): Promise<void> {
    await this.run(response, () => this.session.stepIn(args.threadId));
  }

  protected override async stepOutRequest(response: DebugProtocol.StepOutResponse, args: DebugProtocol.StepOutArguments): Promise<void> {
    await this.run(response, async () => {
      const f = this.session.heldFor(args.threadId);
      if (!f) throw new Error(`thread ${args.threadId} is not stopped on a fault: Step Out runs until a fault outside the VMA of the current one`);
      const vma = findVma(this.smaps(), BigInt(f.addr));
      if (!vma) throw new Error(`no mapping contains ${f.addr} any more`);
      await this.session.stepOut(args.threadId, vma.start, vma.end);
    });
  }

  protected override async pauseRequest(response: DebugProtocol.PauseResponse): Promise<void> {
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
    try {
      await this.session.terminate();
      this.sendResponse(response);
    } catch (e) {
      this.fail(response, 1005, e);
    }
  }

  protected override async disconnectRequest(response: DebugProtocol.DisconnectResponse,
    args: DebugProtocol.DisconnectArguments): Promise<void> {
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
