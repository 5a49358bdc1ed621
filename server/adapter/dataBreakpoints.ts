// What direct and observe mode share about data breakpoints: the answer to dataBreakpointInfo
// for a page-rounded range, and breakpoint ids that stay the same for the same range and access.
import { DebugProtocol } from '@vscode/debugprotocol';
import { hex } from '../core/procfs';

/** The same dataId and access keep their breakpoint id across setDataBreakpoints requests. */
export class WatchIds {
  private ids = new Map<string, number>();
  private next = 1;

  idFor(dataId: string, access: string): number {
    const key = `${dataId}/${access}`;
    let id = this.ids.get(key);
    if (id === undefined) {
      id = this.next++;
      this.ids.set(key, id);
    }
    return id;
  }
}

/** dataBreakpointInfo's body: the range `what` names (its pages), or `notMemory` when there is none. */
export function rangeInfo(range: [bigint, bigint] | null, what: string, notMemory: string): DebugProtocol.DataBreakpointInfoResponse['body'] {
  if (!range) return { dataId: null, description: notMemory };
  const pages = (range[1] - range[0]) / 4096n;
  return {
    dataId: `${hex(range[0])}-${hex(range[1])}`,
    description: `${what} (${pages} page${pages === 1n ? '' : 's'})`,
    accessTypes: ['read', 'write', 'readWrite'],
    canPersist: true,
  };
}
