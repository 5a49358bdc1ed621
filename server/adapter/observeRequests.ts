// The DAP side of observe mode (`observe: true`): translates requests into
// ObserveDebugSession calls and its events into DAP events. UffdDebugSession hands every
// request here when the launch asked for observe mode. Logic belongs in server/core/observeDebug.ts.
import {
  CapabilitiesEvent, ContinuedEvent, ExitedEvent, Handles, InitializedEvent, InvalidatedEvent, OutputEvent, Scope, StoppedEvent,
  Thread, Variable,
} from '@vscode/debugadapter';
import { DebugProtocol } from '@vscode/debugprotocol';
import { constants } from 'node:os';
import type { TimelineInput } from '../core/batcher';
import { CONDITION_SYNTAX } from '../core/filters';
import {
  describeObservedFault, IOCTL_CONDITION_SYNTAX, ObserveDebugSession, ObserveLaunchConfig, ObserveStop, ObserveWatch, summaryText,
  WAIT_CONDITION_SYNTAX,
} from '../core/observeDebug';
import { hex } from '../core/procfs';
import { rangeInfo, WatchIds } from './dataBreakpoints';
import { answerFilters, StopFrames } from './observeShared';

/** What the observe branch needs from the DAP session that owns it. */
export interface ObserveHost {
  sendEvent(e: DebugProtocol.Event): void;
  sendResponse(r: DebugProtocol.Response): void;
  fail(r: DebugProtocol.Response, id: number, e: unknown): void;
  timeline(e: TimelineInput): void;
  flushTimeline(): void;
  end(): void;
}

const FAULT_CONDITION = 'e.g. [heap] tid=1234 hit>=3 — a range 0xSTART-0xEND or mapping name, tid=N (the faulting thread), hit>=N | hit=N | every=N';

/** The Breakpoints view in observe mode. */
export const OBSERVE_FILTERS: DebugProtocol.ExceptionBreakpointsFilter[] = [
  { filter: 'missing', label: 'Missing-page faults', default: false, supportsCondition: true, conditionDescription: FAULT_CONDITION,
    description: 'Stop the handler thread right after it reads a missing-page fault, before it resolves it.' },
  { filter: 'wp', label: 'Write-protect faults', default: false, supportsCondition: true, conditionDescription: FAULT_CONDITION,
    description: 'Stop the handler thread right after it reads a write-protect fault.' },
  { filter: 'minor', label: 'Minor faults', default: false, supportsCondition: true, conditionDescription: FAULT_CONDITION,
    description: 'Stop the handler thread right after it reads a minor fault.' },
  { filter: 'ioctlError', label: 'Handler ioctl error', default: false, supportsCondition: true,
    conditionDescription: 'e.g. EEXIST — errno names, a range or mapping name, hit>=N | hit=N | every=N',
    description: 'Stop the handler thread whose resolving ioctl (UFFDIO_COPY, ZEROPAGE, CONTINUE, …) failed, before it sees the error. EAGAIN does not stop unless named.' },
  { filter: 'waitTooLong', label: 'Fault waiting too long', default: false, supportsCondition: true,
    conditionDescription: 'e.g. 200ms [heap] — the wait in ms (default stopOnWaitMs), a range or mapping name, tid=N, a hit count',
    description: 'Show the faulting thread when a fault read by the handler has waited longer than N ms without being resolved (a stuck fault). The thread is already blocked by its handler.' },
];

type Ref = { kind: 'fault'; tid: number } | { kind: 'registers'; tid: number } | { kind: 'uffds' };

export class ObserveRequests {
  /** The Debug Console commands of this mode (for completions). */
  readonly commands = ['summary', 'threads', 'stopped', 'help'];
  readonly core = new ObserveDebugSession();
  private refs = new Handles<Ref>();
  private readonly stops = new StopFrames((tid) => this.core.stack(tid));
  private launched = false;

  constructor(private readonly host: ObserveHost) {
    const c = this.core;
    c.on('timeline', (e) => host.timeline(e));
    c.on('output', (stream, data) => host.sendEvent(new OutputEvent(data, stream)));
    c.on('console', (line) => host.sendEvent(new OutputEvent(`${line}\n`, 'console')));
    c.on('stopped', (s) => this.onStopped(s));
    c.on('continued', (tid) => host.sendEvent(new ContinuedEvent(tid, false)));
    c.on('exited', (x) => {
      host.flushTimeline();
      host.sendEvent(new OutputEvent(x.text, 'console'));
      const code = x.signal ? 128 + (constants.signals[x.signal as NodeJS.Signals] ?? 0) : (x.code ?? 0);
      host.sendEvent(new OutputEvent(`Program ${x.signal ? `was killed by ${x.signal}` : `exited with code ${x.code}`}.\n`, 'console'));
      host.sendEvent(new ExitedEvent(code));
      host.end();
    });
  }

  private onStopped(s: ObserveStop): void {
    this.host.flushTimeline();
    this.stops.forget(s.tid);
    const ev = new StoppedEvent(s.reason, s.tid) as DebugProtocol.StoppedEvent;
    ev.body.allThreadsStopped = false;
    ev.body.description = s.description;
    if (s.hitBreakpointIds?.length) ev.body.hitBreakpointIds = s.hitBreakpointIds;
    const f = s.faults[0];
    ev.body.text = s.ioctlError
      ? `UFFDIO_${s.ioctlError.op} ${s.ioctlError.start} (+${s.ioctlError.len}) failed with ${s.ioctlError.errno} in thread ${s.tid}`
      : f ? `${describeObservedFault(f)} (page ${f.page}, faulting thread ${f.tid}, read by thread ${f.reader}, fault #${f.seq})` : s.description;
    this.host.sendEvent(ev);
  }

  launch(response: DebugProtocol.LaunchResponse, cfg: ObserveLaunchConfig): void {
    try {
      const { library } = this.core.prepare(cfg);
      this.launched = true;
      this.host.sendEvent(new OutputEvent(
        `uffd-debug observe mode: ${cfg.program} runs with ${library} preloaded and keeps its own userfaultfd; ` +
        `faults stop the handler thread after it reads them (filters in the Breakpoints view)\n`, 'console'));
      this.host.sendResponse(response);
      // stopOnIoctlError: that filter starts enabled in the Breakpoints view.
      const filters = OBSERVE_FILTERS.map((f) => (f.filter === 'ioctlError' ? { ...f, default: cfg.stopOnIoctlError === true } : f));
      this.host.sendEvent(new CapabilitiesEvent({ exceptionBreakpointFilters: filters }));
      this.host.sendEvent(new InitializedEvent());
    } catch (e) {
      this.host.fail(response, 1101, e);
    }
  }

  setExceptionBreakpoints(response: DebugProtocol.SetExceptionBreakpointsResponse, args: DebugProtocol.SetExceptionBreakpointsArguments): void {
    answerFilters(this.host, response, args, (list) => this.core.setFilters(list));
  }

  async configurationDone(response: DebugProtocol.ConfigurationDoneResponse): Promise<void> {
    this.host.sendResponse(response);
    try {
      const pid = await this.core.start();
      this.host.sendEvent(new OutputEvent(`uffd-debug: observing pid ${pid}\n`, 'console'));
    } catch (e) {
      this.host.sendEvent(new OutputEvent(`uffd-debug: could not start the program: ${(e as Error).message}\n`, 'stderr'));
      this.host.end();
    }
  }

  threads(response: DebugProtocol.ThreadsResponse): void {
    const tasks = this.core.threads();
    const threads = tasks.map((t) => new Thread(t.tid, `${t.name} [${t.tid}]`));
    // A stopped thread of a forked handler process (not in the program's own task list).
    for (const s of this.core.allStops()) if (!tasks.some((t) => t.tid === s.tid)) threads.push(new Thread(s.tid, `pid ${s.pid} [${s.tid}]`));
    response.body = { threads };
    this.host.sendResponse(response);
  }

  async stackTrace(response: DebugProtocol.StackTraceResponse, args: DebugProtocol.StackTraceArguments): Promise<void> {
    response.body = await this.stops.stackTrace(this.core.stopFor(args.threadId), args);
    this.host.sendResponse(response);
  }

  scopes(response: DebugProtocol.ScopesResponse, args: DebugProtocol.ScopesArguments): void {
    const tid = this.stops.tidOf(args.frameId);
    const s = tid !== undefined ? this.core.stopFor(tid) : undefined;
    const scopes: DebugProtocol.Scope[] = [];
    if (s) {
      scopes.push(new Scope(s.ioctlError ? 'Ioctl error' : 'Fault', this.refs.create({ kind: 'fault', tid: s.tid }), false));
      scopes.push(new Scope('Registers', this.refs.create({ kind: 'registers', tid: s.tid }), true));
    }
    scopes.push(new Scope('Userfaultfds', this.refs.create({ kind: 'uffds' }), true));
    response.body = { scopes };
    this.host.sendResponse(response);
  }

  async variables(response: DebugProtocol.VariablesResponse, args: DebugProtocol.VariablesArguments): Promise<void> {
    const ref = this.refs.get(args.variablesReference);
    let vars: DebugProtocol.Variable[] = [];
    try {
      if (ref?.kind === 'fault') vars = this.stopVariables(ref.tid);
      else if (ref?.kind === 'registers') {
        vars = await this.stops.registers(ref.tid, () => false);
      } else if (ref?.kind === 'uffds') {
        vars = this.core.summaryNow().uffds.map((u) => new Variable(u.id, `${u.how}, features ${u.features ?? '?'}, ` +
          (u.ranges.map((r) => `${r.start} +${r.len} mode ${r.mode}`).join(', ') || 'no range registered')));
      }
    } catch (e) {
      vars = [new Variable('error', (e as Error).message)];
    }
    response.body = { variables: vars };
    this.host.sendResponse(response);
  }

  private stopVariables(tid: number): DebugProtocol.Variable[] {
    const s = this.core.stopFor(tid);
    if (!s) return [new Variable('state', 'running again')];
    if (s.ioctlError) {
      const x = s.ioctlError;
      return [
        new Variable('ioctl', `UFFDIO_${x.op}`),
        new Variable('start', x.start),
        new Variable('length', `${x.len} bytes`),
        new Variable('errno', x.errno),
        new Variable('thread', String(s.tid)),
        new Variable('resolve', 'Continue: the handler sees the error as it would without the debugger'),
      ];
    }
    const now = Number(process.hrtime.bigint());
    const vars: DebugProtocol.Variable[] = [];
    s.faults.forEach((f, i) => {
      const p = i === 0 ? '' : `#${f.seq} `;
      vars.push(
        new Variable(`${p}address`, f.addr),
        new Variable(`${p}page`, f.page),
        new Variable(`${p}access`, f.access),
        new Variable(`${p}kind`, f.kind),
        new Variable(`${p}faulting thread`, String(f.tid)),
        new Variable(`${p}read by`, `thread ${f.reader} of pid ${f.pid}`),
        new Variable(`${p}userfaultfd`, f.uffd + (f.unregistered ? ' (outside every registered range)' : '')),
        new Variable(`${p}waited`, `${((now - f.t) / 1e6).toFixed(1)} ms`),
        new Variable(`${p}sequence`, `#${f.seq}`),
      );
    });
    vars.push(new Variable('resolve', s.reason === 'wait too long'
      ? 'the handler has not resolved it; Continue keeps watching (the thread still waits)'
      : s.resolvedBy ?? 'Continue lets the handler resolve it, or Resolve Page… places it now on the handler\'s userfaultfd ' +
        '(its own placement then fails with EEXIST)'));
    return vars;
  }

  /**
   * A data breakpoint typed by the user: an address (+ bytes), a range, or a mapping name of the
   * observed program. `parse` is the direct mode's parser (page-rounded range or null).
   */
  dataBreakpointInfo(response: DebugProtocol.DataBreakpointInfoResponse, args: DebugProtocol.DataBreakpointInfoArguments,
    parse: (text: string, bytes?: number) => [bigint, bigint] | null): void {
    let range = parse(args.name, args.bytes);
    let what = range ? `${hex(range[0])}-${hex(range[1])}` : '';
    if (!range && !args.asAddress && args.name.trim()) {
      const v = this.core.mappingNamed(args.name.trim());
      if (v) {
        range = [v.start, v.end];
        what = `VMA ${hex(v.start)}-${hex(v.end)} ${v.name}`;
      }
    }
    response.body = rangeInfo(range, what,
      'Not memory: data breakpoints take an address (0x…), a range (0x…-0x…) or a mapping name of the observed program ([heap], …).');
    this.host.sendResponse(response);
  }

  private watchIds = new WatchIds();

  setDataBreakpoints(response: DebugProtocol.SetDataBreakpointsResponse, args: DebugProtocol.SetDataBreakpointsArguments,
    parse: (text: string, bytes?: number) => [bigint, bigint] | null): void {
    const watches: ObserveWatch[] = [];
    const results: DebugProtocol.Breakpoint[] = args.breakpoints.map((bp) => {
      const r = parse(bp.dataId);
      if (!r) return { verified: false, message: `'${bp.dataId}' is not an address range` };
      const access = bp.accessType ?? 'readWrite';
      const id = this.watchIds.idFor(bp.dataId, access);
      watches.push({ id, start: r[0], end: r[1], access });
      const pages = (r[1] - r[0]) / 4096n;
      const which = access === 'read' ? 'read faults' : access === 'write' ? 'write faults' : 'faults';
      return { id, verified: true, message: `observe mode, page granularity, ${pages} page${pages === 1n ? '' : 's'}: ` +
        `stops the handler thread when it reads ${which} on these pages (before it resolves them)` };
    });
    this.core.setWatches(watches);
    response.body = { breakpoints: results };
    this.host.sendResponse(response);
  }

  /** `uffd/resolutions {tid}`: the ways Resolve Page… offers in observe mode. */
  resolutions(response: DebugProtocol.Response, tid: number): void {
    try {
      response.body = this.core.resolutions(tid);
      this.host.sendResponse(response);
    } catch (e) {
      this.host.fail(response, 1011, e);
    }
  }

  /** `uffd/resolve {tid, how, pattern?, pages?}`: the library places the page on the handler's userfaultfd. */
  async resolve(response: DebugProtocol.Response, args: { tid: number; how: string; pattern?: number; pages?: number }): Promise<void> {
    try {
      const r = await this.core.resolve(args.tid, args.how, { pattern: args.pattern, pages: args.pages });
      response.body = r;
      this.host.sendResponse(response);
      // The thread stays stopped; its Fault scope now says what was placed.
      this.host.sendEvent(new InvalidatedEvent(['variables'], args.tid));
    } catch (e) {
      this.host.fail(response, 1012, e);
    }
  }

  /** Continue: every stopped handler thread, or with `threadId` (single-thread continue) only that one. */
  continue(response: DebugProtocol.ContinueResponse, threadId: number | null): void {
    try {
      this.resetRefs();
      if (threadId === null) this.core.continueAll();
      else this.core.continueThread(threadId);
      response.body = { allThreadsContinued: threadId === null };
      this.host.sendResponse(response);
    } catch (e) {
      this.host.fail(response, 1004, e);
    }
  }

  /** Step Over / Into / Out: only this thread runs on (the handler stops again on the next filter match). */
  step(response: DebugProtocol.Response, threadId: number): void {
    try {
      this.resetRefs();
      this.core.continueThread(threadId);
      this.host.sendResponse(response);
    } catch (e) {
      this.host.fail(response, 1102, e);
    }
  }

  pause(response: DebugProtocol.PauseResponse): void {
    this.host.fail(response, 1103, new Error('observe mode cannot pause the program: enable a fault filter in the Breakpoints ' +
      'view to stop the handler on its next fault read'));
  }

  unsupported(response: DebugProtocol.Response): void {
    this.host.fail(response, 1104, new Error(`observe mode does not support '${response.command}': ${ObserveDebugSession.RESOLVE_REFUSAL}`));
  }

  evaluate(response: DebugProtocol.EvaluateResponse, args: DebugProtocol.EvaluateArguments): void {
    const cmd = args.expression.trim();
    let result: string;
    if (cmd === 'summary' || cmd === 'stats') result = summaryText(this.core.summaryNow()).trim();
    else if (cmd === 'threads') result = this.core.threads().map((t) => `${t.tid} ${t.name} ${t.state} ${t.wchan}`).join('\n');
    else if (cmd === 'stopped') {
      result = this.core.allStops().map((s) => `thread ${s.tid}: ${s.description}`).join('\n') || 'no thread is stopped';
    } else if (cmd === 'help' || cmd === '') {
      result = 'observe mode commands: summary (figures and problems so far), threads, stopped, help.\n' +
        `Fault filter conditions: ${CONDITION_SYNTAX}\nHandler ioctl error: ${IOCTL_CONDITION_SYNTAX}\nFault waiting too long: ${WAIT_CONDITION_SYNTAX}`;
    } else {
      this.host.fail(response, 1105, new Error(`'${cmd}' is not an observe mode command: summary, threads, stopped, help`));
      return;
    }
    response.body = { result, variablesReference: 0 };
    this.host.sendResponse(response);
  }

  terminate(response: DebugProtocol.TerminateResponse): void {
    this.core.terminate();
    this.host.sendResponse(response);
  }

  async disconnect(response: DebugProtocol.DisconnectResponse, args: DebugProtocol.DisconnectArguments): Promise<void> {
    try {
      // A launched program ends with the session unless the client asks to keep it.
      await this.core.dispose(this.launched && args?.terminateDebuggee !== false && !this.core.ended);
    } finally {
      this.host.sendResponse(response);
    }
  }

  private resetRefs(): void {
    this.refs.reset();
    this.stops.reset();
  }
}
