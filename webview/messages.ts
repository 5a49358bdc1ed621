// Messages between the extension and the timeline panel, declared and validated once.
// Pure TypeScript (no DOM, no vscode) so the extension imports the same validators.
// Events mirror server/protocol/messages.ts; `type: 'event'` is optional here because the
// extension may forward helper events as they are or stripped of the envelope.
//
// extension → panel
//   {type:'events', batch:TimelineBatch}                      append; a few times a second. Faults in
//                                                             columns (server/protocol/messages.ts);
//                                                             other: resolved, region, nc, stuck
//   {type:'reset'}                                            forget the session
//   {type:'import', format:'trace'|'csv', text}               show an exported session
//   {type:'theme'}                                            re-read the theme's colours
//   {type:'visibility', visible}                              the panel was hidden or shown: a hidden
//                                                             panel stores events and draws nothing
// panel → extension
//   {type:'ready'}                       the panel (re)started: answer with reset + every event of
//                                        the session so far (the panel keeps only its view,
//                                        selection and sessions of ≤ 5,000 faults across hide/show)
//   {type:'selectThread', tid, seq}      a held (pending) fault was clicked
//   {type:'reveal', seq, tid}            Enter on the selected fault
//   {type:'step'} / {type:'continue'}    toolbar buttons
//   {type:'export', format, text}        Export buttons: the extension saves `text`
// Both sides drop a message that fails these checks, with a console warning, and never throw.
// A batch is checked as a whole, column by column (one bad fault drops its batch: the adapter
// builds them); its few other events one by one when stored (a bad one is dropped alone, helper
// `exited`/`detached` without a warning). Fields this file does not name (nc followed/source,
// ...) are allowed and ignored.

import {
  parseHex, TIMELINE_BATCH_VERSION, type FaultEvent, type FaultKind, type Hex, type NcEvent, type NcWhat, type ResolvedEvent,
  type StuckEvent, type TimelineBatch,
} from '../server/protocol/messages';

export { parseHex };
export type { FaultKind, Hex, NcWhat, TimelineBatch };

// The event shapes are the helper protocol's (declared once, in server/protocol/messages.ts),
// without the envelope tag; the panel is lenient where it also reads imported or older sessions.
type Untagged<T> = Omit<T, 'type'>;

export type TimelineFault = Untagged<FaultEvent>;
export type TimelineResolved = Untagged<ResolvedEvent>;
/** Observe mode: fault `seq` was read by the program's handler and has waited `waitedNs` unresolved. */
export type TimelineStuck = Untagged<StuckEvent>;

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

export type TimelineEvent = TimelineFault | TimelineResolved | TimelineRegion | TimelineNc | TimelineStuck;

export type ToPanel =
  | { type: 'events'; batch: TimelineBatch }
  | { type: 'reset' }
  | { type: 'import'; format: 'trace' | 'csv'; text: string }
  | { type: 'theme' }
  | { type: 'visibility'; visible: boolean };

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
    case 'stuck':
      if (!isNum(v.seq) || !isNum(v.t) || !isHex(v.page) || !isNum(v.tid) || !isNum(v.waitedNs) || v.waitedNs < 0) {
        return 'stuck needs numeric seq, t, tid, waitedNs ≥ 0 and hex page';
      }
      return null;
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

const FAULT_COLUMNS = ['seq', 't', 'page', 'off', 'flags', 'tid', 'ioctl', 'lat', 'pid'] as const;
/** Largest |seq| or |t| step in a batch: sums of a million stay finite and exact enough. */
const MAX_STEP = 2 ** 53;
/** Offsets within a (huge) page. */
const MAX_OFF = 2 ** 32;
const num = (x: unknown) => typeof x === 'number';

/**
 * Why `v` is not a TimelineBatch, or null when it is one. One pass over the columns with plain
 * comparisons (a million faults take milliseconds); `other` events are checked when stored.
 */
export function batchProblem(v: unknown): string | null {
  if (Array.isArray(v)) return 'events.batch is a list of events, not a batch of columns: the adapter is older than the panel; rebuild both';
  if (!isObj(v)) return 'events.batch is not an object';
  if (v.v !== TIMELINE_BATCH_VERSION) {
    return `events.batch version ${String(v.v)}, this panel reads version ${TIMELINE_BATCH_VERSION}: reload the window`;
  }
  const seq = v.seq;
  if (!Array.isArray(seq)) return 'events.batch.seq is not an array';
  const n = seq.length;
  for (const c of FAULT_COLUMNS) {
    const a = v[c];
    if (!Array.isArray(a) || a.length !== n) return `events.batch.${c} is not an array of ${n} numbers`;
  }
  const ioctls = v.ioctls;
  if (!Array.isArray(ioctls) || ioctls.length < 1 || ioctls.length > 256 || ioctls[0] !== '' ||
      !ioctls.every((s) => typeof s === 'string')) {
    return "events.batch.ioctls is not an array of up to 256 strings starting with ''";
  }
  const { t, page, off, flags, tid, ioctl, lat, pid } = v as unknown as TimelineBatch;
  const ni = ioctls.length;
  let pn = 0; // page number, accumulated
  let tk = 0; // tid, accumulated
  for (let k = 0; k < n; k++) {
    const s = seq[k], dt = t[k], dp = page[k], o = off[k], f = flags[k], dtid = tid[k], io = ioctl[k], l = lat[k];
    if (num(dp)) pn += dp;
    if (num(dtid)) tk += dtid;
    if (!(num(s) && s >= -MAX_STEP && s <= MAX_STEP && num(dt) && dt >= -MAX_STEP && dt <= MAX_STEP &&
        num(dp) && pn >= 0 && Number.isInteger(pn) && num(o) && o >= 0 && o < MAX_OFF && pn * 4096 + o <= MAX_STEP &&
        num(f) && (f | 0) === f && f >= 0 && f <= 11 && num(io) && (io | 0) === io && io >= 0 && io < ni &&
        num(l) && l >= -1 && l <= Number.MAX_VALUE && num(dtid) && Number.isSafeInteger(tk) && isNum(pid[k]))) {
      return `events.batch fault ${k} has a field out of range ` +
        `(seq ${String(s)}, t ${String(dt)}, page ${String(dp)}, off ${String(o)}, flags ${String(f)}, ioctl ${String(io)}, ` +
        `lat ${String(l)}, tid ${String(dtid)}, pid ${String(pid[k])})`;
    }
  }
  const other = v.other;
  const at = v.otherAt;
  if (!Array.isArray(other) || !Array.isArray(at) || at.length !== other.length) {
    return 'events.batch.other and otherAt are not arrays of the same length';
  }
  let prev = 0;
  for (let j = 0; j < at.length; j++) {
    const x = at[j];
    if (!(num(x) && (x | 0) === x && x >= prev && x <= n)) return `events.batch.otherAt[${j}] is not a fault count in order`;
    prev = x;
  }
  return null;
}

/** Why `v` is not a message to the panel, or null when it is one. */
export function toPanelProblem(v: unknown): string | null {
  if (!isObj(v)) return 'not an object';
  switch (v.type) {
    case 'events':
      return batchProblem(v.batch);
    case 'reset':
    case 'theme':
      return null;
    case 'visibility':
      return typeof v.visible === 'boolean' ? null : 'visibility without a boolean visible';
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
