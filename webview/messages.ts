// Messages between the extension and the timeline panel, declared and validated once.
// Pure TypeScript (no DOM, no vscode) so the extension imports the same validators.
// Events mirror server/protocol/messages.ts; `type: 'event'` is optional here because the
// extension may forward helper events as they are or stripped of the envelope.
//
// extension → panel
//   {type:'events', batch:[fault|resolved|region|nc events]}  append; send a few times a second
//   {type:'reset'}                                            forget the session
//   {type:'import', format:'trace'|'csv', text}               show an exported session
//   {type:'theme'}                                            re-read the theme's colours
// panel → extension
//   {type:'ready'}                       the panel (re)started: answer with reset + every event of
//                                        the session so far (the panel keeps only its view,
//                                        selection and sessions of ≤ 5,000 faults across hide/show)
//   {type:'selectThread', tid, seq}      a held (pending) fault was clicked
//   {type:'reveal', seq, tid}            Enter on the selected fault
//   {type:'step'} / {type:'continue'}    toolbar buttons
//   {type:'export', format, text}        Export buttons: the extension saves `text`
// Both sides drop a message that fails these checks, with a console warning, and never throw.
// Helper `exited`/`detached` events in a batch are ignored without a warning. Fields this file
// does not name (fault pageSize and pid, nc followed/source, ...) are allowed and ignored.

import type { FaultEvent, FaultKind, Hex, NcEvent, NcWhat, ResolvedEvent } from '../server/protocol/messages';

export type { FaultKind, Hex, NcWhat };

// The event shapes are the helper protocol's (declared once, in server/protocol/messages.ts),
// without the envelope tag; the panel is lenient where it also reads imported or older sessions.
type Untagged<T> = Omit<T, 'type'>;

export type TimelineFault = Untagged<FaultEvent>;
export type TimelineResolved = Untagged<ResolvedEvent>;

/** `add` (or no action): registered; `remove`: unmapped or moved away (via 'unmap'/'remap'). */
export interface TimelineRegion {
  event: 'region';
  action?: 'add' | 'remove';
  region: { start: Hex; end: Hex; via: string; name?: string };
  /** Panel-internal, for exports: when a removal was seen (the helper sends no time). */
  t?: number;
}

/** Non-cooperative events; `t` may be missing in imported sessions. */
export type TimelineNc = Omit<Untagged<NcEvent>, 't'> & { t?: number };

export type TimelineEvent = TimelineFault | TimelineResolved | TimelineRegion | TimelineNc;

export type ToPanel =
  | { type: 'events'; batch: TimelineEvent[] }
  | { type: 'reset' }
  | { type: 'import'; format: 'trace' | 'csv'; text: string }
  | { type: 'theme' };

export type FromPanel =
  | { type: 'ready' }
  | { type: 'selectThread'; tid: number; seq: number }
  | { type: 'reveal'; seq: number; tid: number }
  | { type: 'step' }
  | { type: 'continue' }
  | { type: 'export'; format: 'trace' | 'csv'; text: string };

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);
const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
/** Value of "0x" followed by 1–16 hex digits, NaN for anything else. One pass that checks and
 * parses: it runs twice per fault at a million faults. Exact below 2^53 (every user address). */
export function parseHex(v: unknown): number {
  if (typeof v !== 'string' || v.length < 3 || v.length > 18 || v.charCodeAt(0) !== 48 || v.charCodeAt(1) !== 120) {
    return NaN;
  }
  let x = 0;
  for (let i = 2; i < v.length; i++) {
    const c = v.charCodeAt(i);
    let d: number;
    if (c >= 48 && c <= 57) d = c - 48;
    else if (c >= 97 && c <= 102) d = c - 87;
    else if (c >= 65 && c <= 70) d = c - 55;
    else return NaN;
    x = x * 16 + d;
  }
  return x;
}
const isHex = (v: unknown): v is string => !Number.isNaN(parseHex(v));
const optNum = (v: unknown) => v === undefined || isNum(v);
const optHex = (v: unknown) => v === undefined || isHex(v);
const NC_WHAT: readonly string[] = ['fork', 'remap', 'remove', 'unmap'];

/** Why `v` is not a timeline event, or null when it is one. */
export function eventProblem(v: unknown): string | null {
  if (!isObj(v)) return 'not an object';
  switch (v.event) {
    case 'fault':
      if (!isNum(v.seq) || !isNum(v.t) || !isHex(v.addr) || !isHex(v.page) || !isNum(v.tid)) {
        return 'fault needs numeric seq, t, tid and hex addr, page';
      }
      if (v.kind !== 'missing' && v.kind !== 'wp' && v.kind !== 'minor') return `fault kind '${String(v.kind)}'`;
      if (v.access !== 'read' && v.access !== 'write') return `fault access '${String(v.access)}'`;
      if (typeof v.held !== 'boolean') return 'fault held is not boolean';
      if (!(v.ioctl === undefined || typeof v.ioctl === 'string') || !optNum(v.latencyNs) || !optNum(v.pid)) {
        return 'fault ioctl/latencyNs/pid';
      }
      return null;
    case 'resolved':
      if (!isNum(v.seq) || !isNum(v.t) || !isHex(v.page) || typeof v.ioctl !== 'string' || !isNum(v.latencyNs)) {
        return 'resolved needs seq, t, page, ioctl, latencyNs';
      }
      return null;
    case 'region': {
      const r = v.region;
      if (!isObj(r) || !isHex(r.start) || !isHex(r.end) || typeof r.via !== 'string' ||
          !(r.name === undefined || r.name === null || typeof r.name === 'string')) {
        return 'region needs region {start, end, via, name?}';
      }
      if (v.action !== undefined && v.action !== 'add' && v.action !== 'remove') return `region action '${String(v.action)}'`;
      if (!optNum(v.t)) return 'region t is not a number';
      return null;
    }
    case 'nc':
      if (!NC_WHAT.includes(v.what as string)) return `nc what '${String(v.what)}'`;
      if (!optNum(v.t) || !(v.pid === null || optNum(v.pid)) || !optHex(v.start) || !optHex(v.end) || !optHex(v.from) ||
          !optHex(v.to) || !optHex(v.len)) {
        return 'nc fields have the wrong type';
      }
      return null;
    default:
      return `unknown event '${String(v.event)}'`;
  }
}

/** Why `v` is not a message to the panel, or null when it is one. */
export function toPanelProblem(v: unknown): string | null {
  if (!isObj(v)) return 'not an object';
  switch (v.type) {
    case 'events': {
      if (!Array.isArray(v.batch)) return 'events.batch is not an array';
      return null; // events are checked one by one so one bad event does not drop a batch
    }
    case 'reset':
    case 'theme':
      return null;
    case 'import':
      if (v.format !== 'trace' && v.format !== 'csv') return `import format '${String(v.format)}'`;
      if (typeof v.text !== 'string') return 'import text is not a string';
      return null;
    default:
      return `unknown type '${String(v.type)}'`;
  }
}

/** Why `v` is not a message from the panel, or null when it is one. */
export function fromPanelProblem(v: unknown): string | null {
  if (!isObj(v)) return 'not an object';
  switch (v.type) {
    case 'ready':
    case 'step':
    case 'continue':
      return null;
    case 'selectThread':
    case 'reveal':
      return isNum(v.tid) && isNum(v.seq) ? null : `${v.type} needs numeric tid and seq`;
    case 'export':
      if (v.format !== 'trace' && v.format !== 'csv') return `export format '${String(v.format)}'`;
      return typeof v.text === 'string' ? null : 'export text is not a string';
    default:
      return `unknown type '${String(v.type)}'`;
  }
}

export const isToPanel = (v: unknown): v is ToPanel => toPanelProblem(v) === null;
export const isFromPanel = (v: unknown): v is FromPanel => fromPanelProblem(v) === null;
export const isTimelineEvent = (v: unknown): v is TimelineEvent => eventProblem(v) === null;
