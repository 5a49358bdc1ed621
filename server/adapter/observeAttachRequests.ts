// The DAP side of a passive observe attach (`"request": "attach", "observe": true`):
// translates requests into PassiveObserveSession calls and its events into DAP events.
// UffdDebugSession hands every request here for such an attach. Logic belongs in
// server/core/observeAttach.ts.
import {
  CapabilitiesEvent, ContinuedEvent, ExitedEvent, Handles, InitializedEvent, OutputEvent, Scope, StoppedEvent, Thread, Variable,
} from '@vscode/debugadapter';
import { DebugProtocol } from '@vscode/debugprotocol';
import { constants } from 'node:os';
import {
  decodeUffdFeatures, decodeUffdIoctls, PASSIVE_LIMITS, PASSIVE_WAIT_SYNTAX, PassiveObserveSession, PassiveStop, PassiveUffd, rangeText,
  WCHAN_FAULT,
} from '../core/observeAttach';
import { findVma, hex, readMaps, Vma } from '../core/procfs';
import { answerFilters, StopFrames } from './observeShared';
import type { ObserveHost } from './observeRequests';

/** The attach configuration of a passive observe attach. */
export interface ObserveAttachArguments {
  pid: number | string;
  /** Default wait of the wait-too-long filter (ms). */
  stopOnWaitMs?: number;
}

/** The Breakpoints view of a passive observe attach: the wait filter is all that can work. */
export const OBSERVE_ATTACH_FILTERS: DebugProtocol.ExceptionBreakpointsFilter[] = [
  { filter: 'waitTooLong', label: 'Fault waiting too long', default: true, supportsCondition: true,
    conditionDescription: 'e.g. 200ms tid=1234 — the wait in ms (default stopOnWaitMs), tid=N, hit>=N | hit=N | every=N',
    description: 'Show a thread that has been blocked on a userfaultfd fault for at least N ms (its handler has not resolved it). ' +
      'The thread is blocked by its own handler; the debugger stops nothing.' },
];

const COMMANDS = 'threads, uffds, blocked, summary, help';

type Ref = { kind: 'blocked'; tid: number } | { kind: 'registers'; tid: number } | { kind: 'uffds' } | { kind: 'uffd'; fd: number };

export class ObserveAttachRequests {
  /** The Debug Console commands of this mode (for completions). */
  readonly commands = COMMANDS.split(', ');
  readonly core = new PassiveObserveSession();
  private refs = new Handles<Ref>();
  private readonly stops = new StopFrames((tid) => this.core.stack(tid));

  constructor(private readonly host: ObserveHost) {
    const c = this.core;
    c.on('timeline', (e) => host.timeline(e));
    c.on('console', (line) => host.sendEvent(new OutputEvent(`${line}\n`, 'console')));
    c.on('stopped', (s) => this.onStopped(s));
    c.on('unblocked', (tid, waitedMs, how) => {
      this.stops.forget(tid);
      host.sendEvent(new OutputEvent(`uffd-debug: thread ${tid} ${how === 'exited' ? 'exited while blocked' :
        'is no longer blocked (its handler resolved the fault)'} after at least ${Math.floor(waitedMs)} ms\n`, 'console'));
      host.sendEvent(new ContinuedEvent(tid, false));
    });
    c.on('exited', (x) => {
      host.flushTimeline();
      host.sendEvent(new OutputEvent(x.text, 'console'));
      const pid = c.pid;
      let line: string;
      let code: number;
      if (x.signal) {
        line = `pid ${pid} was killed by ${x.signal}.`;
        code = 128 + (constants.signals[x.signal as NodeJS.Signals] ?? 0);
      } else if (x.code !== null) {
        line = `pid ${pid} exited with code ${x.code} (read from /proc while it waited for its parent).`;
        code = x.code;
      } else {
        line = `pid ${pid} exited. Its exit status is unknown: it is not the debugger's child, and its parent reaped it ` +
          'before a look saw it (the exited event carries -1 for unknown).';
        code = -1;
      }
      host.sendEvent(new OutputEvent(`${line}\n`, 'console'));
      host.sendEvent(new ExitedEvent(code));
      host.end();
    });
  }

  private onStopped(s: PassiveStop): void {
    this.host.flushTimeline();
    this.stops.forget(s.tid);
    const ev = new StoppedEvent(s.reason, s.tid) as DebugProtocol.StoppedEvent;
    ev.body.allThreadsStopped = false;
    ev.body.description = s.description;
    ev.body.text = s.at
      ? `thread ${s.tid} at pc ${hex(s.at.pc)} sp ${hex(s.at.sp)}${s.at.syscall !== null ? ` in system call ${s.at.syscall}` : ', a user-mode access'}`
      : s.description;
    this.host.sendEvent(ev);
  }

  attach(response: DebugProtocol.AttachResponse, args: ObserveAttachArguments): void {
    try {
      const info = this.core.attach({ pid: args.pid, stopOnWaitMs: args.stopOnWaitMs, helperPath: process.env.UFFD_HELPER });
      const c = this.core;
      const fds = info.uffds.map((u) => `fd ${u.fd}`).join(', ');
      this.host.sendEvent(new OutputEvent(
        `uffd-debug: observing pid ${c.pid} (${c.name}, ${info.threads.length} thread${info.threads.length === 1 ? '' : 's'}) passively: ` +
        `${info.uffds.length ? `userfaultfd ${fds}` : 'no userfaultfd descriptor in it (its handler holds it elsewhere)'}, ` +
        `${info.ranges.length} registered range${info.ranges.length === 1 ? '' : 's'}. Nothing is injected, interposed or traced; ` +
        'the process runs on as it was, and Disconnect leaves it so.\n', 'console'));
      this.host.sendEvent(new OutputEvent(`uffd-debug: ${PASSIVE_LIMITS}.\n`, 'console'));
      if (c.registersNote) this.host.sendEvent(new OutputEvent(`uffd-debug: ${c.registersNote}.\n`, 'console'));
      this.host.sendResponse(response);
      this.host.sendEvent(new CapabilitiesEvent({
        exceptionBreakpointFilters: OBSERVE_ATTACH_FILTERS, supportsDataBreakpoints: false, supportsReadMemoryRequest: false,
        supportsWriteMemoryRequest: false,
      }));
      this.host.sendEvent(new InitializedEvent());
    } catch (e) {
      void this.core.dispose();
      this.host.fail(response, 1111, e);
    }
  }

  setExceptionBreakpoints(response: DebugProtocol.SetExceptionBreakpointsResponse, args: DebugProtocol.SetExceptionBreakpointsArguments): void {
    answerFilters(this.host, response, args, (list) => this.core.setFilters(list));
  }

  configurationDone(response: DebugProtocol.ConfigurationDoneResponse): void {
    this.core.start();
    this.host.sendResponse(response);
  }

  threads(response: DebugProtocol.ThreadsResponse): void {
    response.body = { threads: this.core.threads().map((t) => new Thread(t.tid, `${t.name} [${t.tid}]`)) };
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
      scopes.push(new Scope('Blocked', this.refs.create({ kind: 'blocked', tid: s.tid }), false));
      scopes.push(new Scope('Registers', this.refs.create({ kind: 'registers', tid: s.tid }), true));
    }
    scopes.push(new Scope('Userfaultfds', this.refs.create({ kind: 'uffds' }), false));
    response.body = { scopes };
    this.host.sendResponse(response);
  }

  async variables(response: DebugProtocol.VariablesResponse, args: DebugProtocol.VariablesArguments): Promise<void> {
    const ref = this.refs.get(args.variablesReference);
    let vars: DebugProtocol.Variable[] = [];
    try {
      if (ref?.kind === 'blocked') vars = this.blockedVariables(ref.tid);
      else if (ref?.kind === 'registers') {
        let maps: Vma[] = [];
        try {
          maps = readMaps(this.core.pid);
        } catch {
          // exited: no value is shown as a pointer
        }
        vars = await this.stops.registers(ref.tid, (a) => findVma(maps, a) !== undefined);
      } else if (ref?.kind === 'uffds') vars = this.uffdVariables();
      else if (ref?.kind === 'uffd') vars = this.uffdDetail(ref.fd);
    } catch (e) {
      vars = [new Variable('error', (e as Error).message)];
    }
    response.body = { variables: vars };
    this.host.sendResponse(response);
  }

  private blockedVariables(tid: number): DebugProtocol.Variable[] {
    const s = this.core.stopFor(tid);
    if (!s) return [new Variable('state', 'no longer shown stopped')];
    const ep = s.episode;
    const still = this.core.episodeOf(tid) === ep;
    const waited = (still ? performance.now() : ep.ended ?? ep.lastSeen) - ep.firstSeen;
    const task = this.core.threads().find((t) => t.tid === tid);
    return [
      new Variable('thread', `${tid} (${s.name})`),
      new Variable('blocked', still ? `at least ${Math.floor(waited)} ms, still blocked` : `at least ${Math.floor(waited)} ms, then unblocked`),
      new Variable('waiting for', ep.on === 'fault'
        ? 'its handler to resolve a page fault (procfs does not show the address)'
        : 'its handler to read a non-cooperative event (fork, mremap, madvise or munmap)'),
      new Variable('first seen blocked', `${new Date(ep.firstSeenWall).toISOString()} (a look every ${this.core.pollMs} ms: the wait began earlier)`),
      new Variable('pc', s.at ? hex(s.at.pc) : `not known${this.core.registersNote ? ' (no ptrace access)' : ''}`),
      new Variable('sp', s.at ? hex(s.at.sp) : 'not known'),
      new Variable('where', s.at ? (s.at.syscall === null ? 'a user-mode access (pc is the faulting instruction)'
        : `inside system call ${s.at.syscall}: the kernel touched the page for it`) : 'not known'),
      new Variable('wchan', task?.wchan || ep.wchan),
      new Variable('state', task ? task.state : 'exited'),
      new Variable('userfaultfd', this.core.uffdOfBlocked()),
      new Variable('resolve', 'the debugger did not stop this thread: its own handler has not resolved the fault. ' +
        'Continue keeps watching; it stops again only for a new wait'),
    ];
  }

  private uffdVariables(): DebugProtocol.Variable[] {
    const vars: DebugProtocol.Variable[] = this.core.uffds().map((u) =>
      new Variable(`fd ${u.fd}`, uffdSummary(u), this.refs.create({ kind: 'uffd', fd: u.fd })));
    if (vars.length === 0) vars.push(new Variable('(none)', 'this process holds no userfaultfd: its handler holds it in another process'));
    for (const r of this.core.ranges()) vars.push(new Variable(`${hex(r.start)}-${hex(r.end)}`, rangeText(r, false)));
    return vars;
  }

  private uffdDetail(fd: number): DebugProtocol.Variable[] {
    const u = this.core.uffds().find((x) => x.fd === fd);
    if (!u?.info) return [new Variable('state', 'closed')];
    const i = u.info;
    const feat = i.features !== null ? decodeUffdFeatures(i.features) : null;
    return [
      new Variable('pending', `${i.pending} (queued, not yet read by the handler)`),
      new Variable('total', `${i.total} (waiting now: pending + read and not resolved)`),
      new Variable('read, not resolved', String(i.total - i.pending)),
      new Variable('features', feat ? feat.names.join(' ') || 'none' : 'unknown'),
      new Variable('UFFDIO_API done', feat ? String(feat.negotiated) : 'unknown'),
      new Variable('API', i.api !== null ? `0x${i.api.toString(16)}` : 'unknown'),
      new Variable('ioctls (this kernel)', i.ioctls !== null ? decodeUffdIoctls(i.ioctls).join(' ') : 'unknown'),
      new Variable('arrived while attached', `at least ${u.arrived} (rises of total between looks)`),
      new Variable('most waiting at once', `${u.peakTotal} (${u.peakPending} unread)`),
    ];
  }

  unsupported(response: DebugProtocol.Response): void {
    this.host.fail(response, 1112, new Error(`a passive observe attach does not support '${response.command}': it only watches ` +
      'the process through /proc (no memory view, no data breakpoints, no Resolve Page…). Launch the handler with "observe": true for more'));
  }

  dataBreakpointInfo(response: DebugProtocol.DataBreakpointInfoResponse, _args: DebugProtocol.DataBreakpointInfoArguments,
    _parse: (text: string, bytes?: number) => [bigint, bigint] | null): void {
    response.body = { dataId: null, description: `No data breakpoints in a passive observe attach: ${PASSIVE_LIMITS}.` };
    this.host.sendResponse(response);
  }

  setDataBreakpoints(response: DebugProtocol.SetDataBreakpointsResponse, args: DebugProtocol.SetDataBreakpointsArguments,
    _parse: (text: string, bytes?: number) => [bigint, bigint] | null): void {
    response.body = { breakpoints: args.breakpoints.map(() => ({ verified: false, message: `not in a passive observe attach: ${PASSIVE_LIMITS}` })) };
    this.host.sendResponse(response);
  }

  resolutions(response: DebugProtocol.Response, _tid: number): void {
    this.unsupported(response);
  }

  resolve(response: DebugProtocol.Response, _args: { tid: number; how: string; pattern?: number; pages?: number }): void {
    this.unsupported(response);
  }

  /** Nothing was stopped: Continue only stops showing the thread(s) as stopped; watching goes on. */
  continue(response: DebugProtocol.ContinueResponse, threadId: number | null): void {
    try {
      this.resetRefs();
      const all = threadId === null ? this.core.continueAll() : [];
      if (threadId !== null) this.core.continueThread(threadId);
      // Never all threads (none was stopped): each thread that was shown stopped is said to run.
      response.body = { allThreadsContinued: false };
      this.host.sendResponse(response);
      for (const tid of all) this.host.sendEvent(new ContinuedEvent(tid, false));
    } catch (e) {
      this.host.fail(response, 1113, e);
    }
  }

  step(response: DebugProtocol.Response, _threadId: number): void {
    this.host.fail(response, 1114, new Error('a passive observe attach cannot step: the thread is blocked by its own handler, not by ' +
      'the debugger. Continue keeps watching'));
  }

  pause(response: DebugProtocol.PauseResponse): void {
    this.host.fail(response, 1115, new Error('a passive observe attach cannot pause the process: it only watches it through /proc. ' +
      'The "Fault waiting too long" filter shows a thread blocked on a userfaultfd fault'));
  }

  evaluate(response: DebugProtocol.EvaluateResponse, args: DebugProtocol.EvaluateArguments): void {
    const cmd = args.expression.trim();
    let result: string;
    if (cmd === 'threads') result = this.core.threadsText();
    else if (cmd === 'uffds') result = this.core.uffdsText();
    else if (cmd === 'blocked') result = this.core.blockedText();
    else if (cmd === 'summary' || cmd === 'stats') result = this.core.summaryText().trim();
    else if (cmd === 'help' || cmd === '') {
      result = `passive observe attach commands: threads (state and wait channel; ${WCHAN_FAULT} means blocked on a fault), ` +
        'uffds (each userfaultfd: pending, total, features; the registered ranges), blocked (threads blocked now, for how long ' +
        'at least, pc and sp), summary, help.\n' +
        `Fault waiting too long: ${PASSIVE_WAIT_SYNTAX}\n${PASSIVE_LIMITS}.`;
    } else {
      this.host.fail(response, 1116, new Error(`'${cmd}' is not a passive observe attach command: ${COMMANDS}`));
      return;
    }
    response.body = { result, variablesReference: 0 };
    this.host.sendResponse(response);
  }

  /** `terminate` never kills a process observed passively: it ends the session and leaves the process running. */
  async terminate(response: DebugProtocol.TerminateResponse): Promise<void> {
    await this.core.dispose();
    this.host.sendEvent(new OutputEvent(`uffd-debug: stopped watching pid ${this.core.pid}; it runs on, untouched (a passive ` +
      'attach kills it only on a disconnect with terminateDebuggee).\n', 'console'));
    this.host.sendResponse(response);
    this.host.end();
  }

  /** Detaches: the process runs on. Only `terminateDebuggee: true` kills it. */
  async disconnect(response: DebugProtocol.DisconnectResponse, args: DebugProtocol.DisconnectArguments): Promise<void> {
    try {
      const ended = this.core.ended;
      const line = !ended && args?.terminateDebuggee === true ? this.core.kill()
        : ended ? '' : `detached from pid ${this.core.pid}: it was never stopped or traced by the debugger and runs on`;
      await this.core.dispose();
      if (line) this.host.sendEvent(new OutputEvent(`uffd-debug: ${line}.\n`, 'console'));
    } finally {
      this.host.sendResponse(response);
    }
  }

  private resetRefs(): void {
    this.refs.reset();
    this.stops.reset();
  }
}

function uffdSummary(u: PassiveUffd): string {
  if (!u.info) return 'closed';
  const feat = u.info.features !== null ? decodeUffdFeatures(u.info.features) : null;
  return `pending ${u.info.pending}, total ${u.info.total}, features ${feat ? feat.names.join(' ') || 'none' : '?'}`;
}
