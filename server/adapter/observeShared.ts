// What both observe modes (launch with the library, passive attach) answer alike: the Call
// Stack and Registers of a stopped thread, and the exception filters of the Breakpoints view.
import { Handles, OutputEvent, StackFrame, Variable } from '@vscode/debugadapter';
import { DebugProtocol } from '@vscode/debugprotocol';
import { registerViews } from '../core/symbolize';
import type { StackBody } from '../protocol/messages';
import { dapFrames } from './frames';

/**
 * A stopped thread's frames: a label frame that says why it stopped, then the stack the native
 * helper read once for this stop (kept until the thread runs again).
 */
export class StopFrames {
  private frames = new Handles<number>();
  private stacks = new Map<number, Promise<StackBody>>();

  /** read: the stack of a stopped thread (the helper's `stack`), asked once per stop. */
  constructor(private readonly read: (tid: number) => Promise<StackBody>) {}

  /** The thread a frame id belongs to. */
  tidOf(frameId: number): number | undefined {
    return this.frames.get(frameId);
  }

  stackOf(tid: number): Promise<StackBody> {
    let p = this.stacks.get(tid);
    if (!p) {
      p = this.read(tid);
      this.stacks.set(tid, p);
      p.catch(() => this.stacks.delete(tid));
    }
    return p;
  }

  /** The thread stopped again or ran on: its next stack is read afresh. */
  forget(tid: number): void {
    this.stacks.delete(tid);
  }

  /** Everything runs on: frame ids and stacks of this stop are void. */
  reset(): void {
    this.frames.reset();
    this.stacks.clear();
  }

  /** The stackTrace body for `stop` (none: no frames), paged as the request asks. */
  async stackTrace(stop: { tid: number; description: string } | undefined, args: DebugProtocol.StackTraceArguments):
    Promise<{ stackFrames: DebugProtocol.StackFrame[]; totalFrames: number }> {
    const frames: DebugProtocol.StackFrame[] = [];
    if (stop) {
      const tid = stop.tid;
      frames.push(label(this.frames.create(tid), stop.description));
      try {
        frames.push(...dapFrames(await this.stackOf(tid), () => this.frames.create(tid)));
      } catch (e) {
        frames.push(label(this.frames.create(tid), `(no stack: ${(e as Error).message})`));
      }
    }
    const start = args.startFrame ?? 0;
    const levels = args.levels ? args.levels : frames.length;
    return { stackFrames: frames.slice(start, start + levels), totalFrames: frames.length };
  }

  /** The Registers scope: each register, shown as a pointer where `isPointer` says so. */
  async registers(tid: number, isPointer: (a: bigint) => boolean): Promise<DebugProtocol.Variable[]> {
    const stack = await this.stackOf(tid);
    const vars = registerViews(stack, isPointer).map((r) => new Variable(r.name, r.value));
    if (stack.note) vars.push(new Variable('(note)', stack.note));
    return vars;
  }
}

function label(id: number, name: string): DebugProtocol.StackFrame {
  const f = new StackFrame(id, name) as DebugProtocol.StackFrame;
  f.presentationHint = 'label';
  return f;
}

/** A filter's answer from the session model: verified, or why not. */
export interface FilterResult { verified: boolean; message?: string }

/**
 * setExceptionBreakpoints: the filters and their conditions go to the model (`set`); the answer
 * says per filter whether it holds, and the Debug Console names the refused ones.
 */
export function answerFilters(
  host: { sendResponse(r: DebugProtocol.Response): void; sendEvent(e: DebugProtocol.Event): void },
  response: DebugProtocol.SetExceptionBreakpointsResponse, args: DebugProtocol.SetExceptionBreakpointsArguments,
  set: (list: { id: string; condition?: string }[]) => FilterResult[],
): void {
  const results = set([
    ...(args.filters ?? []).map((id) => ({ id })),
    ...(args.filterOptions ?? []).map((f) => ({ id: f.filterId, condition: f.condition })),
  ]);
  response.body = { breakpoints: results.map((r) => ({ verified: r.verified, ...(r.message ? { message: r.message } : {}) })) };
  host.sendResponse(response);
  const bad = results.filter((r) => !r.verified);
  if (bad.length > 0) host.sendEvent(new OutputEvent(`uffd-debug: ${bad.map((r) => r.message).join('\n')}\n`, 'console'));
}
