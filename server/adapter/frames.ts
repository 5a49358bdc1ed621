// DAP stack frames from the helper's `stack` answer, for the direct and the observe session.
import { Source, StackFrame } from '@vscode/debugadapter';
import { DebugProtocol } from '@vscode/debugprotocol';
import { hex } from '../core/procfs';
import { basename, frameViews } from '../core/symbolize';
import type { StackBody } from '../protocol/messages';

/**
 * The faulting instruction first, then its callers. A frame without source is `subtle` (not
 * the top one: VS Code focuses only a frame that is not subtle on a stop, and without a focused
 * frame the Variables view stays empty); `topSource` stands in for a top frame without source.
 * An incomplete stack ends with a label saying why.
 */
export function dapFrames(stack: StackBody, id: () => number, topSource?: Source): DebugProtocol.StackFrame[] {
  const frames: DebugProtocol.StackFrame[] = frameViews(stack).map((v, i) => {
    const frame: DebugProtocol.StackFrame = v.sourceAvailable
      ? new StackFrame(id(), v.name, new Source(basename(v.file!), v.file!), v.line!, v.column ?? 1)
      : i === 0 && topSource ? new StackFrame(id(), v.name, topSource, 1, 1)
        : new StackFrame(id(), v.name);
    if (!v.sourceAvailable && i > 0) frame.presentationHint = 'subtle';
    frame.instructionPointerReference = hex(v.pc);
    if (v.module) frame.moduleId = v.module;
    return frame;
  });
  if (stack.note) {
    const end = new StackFrame(id(), `(stack may be incomplete: ${stack.note})`) as DebugProtocol.StackFrame;
    end.presentationHint = 'label';
    frames.push(end);
  }
  return frames;
}
