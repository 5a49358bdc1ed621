// The adapter ⇄ helper wire protocol, declared once. docs/protocol.md describes it in prose;
// server/native/uffd-helper.c is the other side.

export const PROTOCOL_VERSION = 2;

export type Hex = string; // "0x7f12a000"
export type FaultKind = 'missing' | 'wp' | 'minor';
export type Access = 'read' | 'write';
export type ResolveHow = 'default' | 'zero' | 'wake' | 'copy' | 'continue' | 'unprotect' | 'move' | 'poison';
export type RegisterMode = 'missing' | 'wp' | 'minor';
export type StreamMode = 'all' | 'held' | 'none';

export interface FlagSet { raw: Hex; names: string[] }

export interface Region {
  start: Hex;
  end: Hex;
  /** exec/brk/mmap/mremap: launch tracking; attach/track/scan: attach; untrack: unregistered;
   * unmap/remap: non-cooperative events (a `region` event with action `remove`, or the new
   * place of a moved mapping). */
  via: 'exec' | 'brk' | 'mmap' | 'mremap' | 'attach' | 'track' | 'scan' | 'untrack' | 'unmap' | 'remap'
    /** observe mode: registered by the observed program on its own userfaultfd */
    | 'observe';
  name?: string;
}

export interface HelloBody {
  protocol: number;
  helper: string;
  pid: number;
  kernel: string;
  uffd: {
    available: boolean;
    source: 'syscall' | 'dev' | null;
    api: number;
    features: FlagSet;
    ioctls: FlagSet;
    error: string | null;
  };
}

/** Options of a debugging session, given with `launch` or `attach`. */
export interface SessionOptions {
  /** Negotiate EVENT_FORK: follow forked children (their faults carry `pid`). Default false. */
  followForks?: boolean;
  /** Negotiate WP_ASYNC: write-protect faults are never delivered; `protect` arms dirty
   * tracking read with `dirty`. Default false. */
  wpAsync?: boolean;
  /** Last resort when neither userfaultfd(2) nor /dev/userfaultfd is allowed: create it with
   * UFFD_USER_MODE_ONLY (source `user-mode-only`). Only faults of the program's own
   * instructions are traced; a system call touching a tracked missing page fails with
   * EFAULT instead of waiting. Default false. */
  userModeOnly?: boolean;
}

export interface LaunchArgs extends SessionOptions {
  program: string;
  args: string[];
  cwd: string;
  env: Record<string, string> | null;
}

export interface LaunchBody {
  pid: number;
  uffdSource: 'syscall' | 'dev' | 'user-mode-only';
  features: FlagSet;
  regions: Region[];
}

export interface AddrRange { start: Hex; end: Hex }

export interface Policy {
  hold: Record<FaultKind, boolean>;
  holdNext: boolean;
  stream: StreamMode;
  readAhead: number;
  delayUs: { min: number; max: number } | null;
  holdRange: AddrRange[];
  holdTid: number[];
  holdEvery: number;
  /** Hold the next fault (any thread) after each of these non-cooperative events. */
  holdAfter: NcWhat[];
}

export interface PolicyArgs {
  hold?: Partial<Record<FaultKind, boolean>>;
  holdNext?: boolean;
  stream?: StreamMode;
  readAhead?: number;
  delayUs?: { min: number; max: number } | null;
  holdRange?: AddrRange[];
  holdTid?: number[];
  holdEvery?: number;
  holdAfter?: NcWhat[];
}

/** `copy` takes exactly one of pattern, bytes (base64 of 4096 bytes), file (+offset). */
export interface ResolveArgs {
  seq: number;
  how?: ResolveHow;
  pages?: number;
  pattern?: number;
  bytes?: string;
  file?: string;
  offset?: number;
  from?: Hex;
  keep?: boolean;
}

export interface ResolveBody {
  seq: number;
  page: Hex;
  ioctl: string;
  woken: number[];
  pages: number;
  skipped: Hex[];
  /** With `unprotect` + `keep`: the range's content before the write, base64 (null: unreadable). */
  before?: string | null;
}

export interface RegisterBody { start: Hex; end: Hex; ioctls: string[] }
export interface ProtectBody { start: Hex; end: Hex; pages: number }

export interface StatsBody {
  faults: Record<FaultKind, number>;
  held: number;
  resolved: number;
  regions: number;
  eventsDropped: number;
  delayed: number;
  readAhead: number;
}

/** Which mappings of an attached process to register: default all private anonymous ones. */
export type TrackSelector = { anon: true } | { names: string[] } | { ranges: AddrRange[] };

export interface AttachArgs extends SessionOptions { pid: number; track?: TrackSelector }

export interface AttachBody {
  pid: number;
  uffdSource: 'syscall' | 'dev' | 'user-mode-only';
  features: FlagSet;
  regions: Region[];
  /** The threads seen (and briefly stopped) during setup. */
  threads: number[];
}

export interface DetachBody { pid: number; unregistered: number }

/** `dirty`: pages written in [start, end) since protected (or since the last reset). */
export interface DirtyArgs { start: Hex; end: Hex; reset?: boolean }
export interface DirtyBody {
  pages: Hex[];
  count: number;
  /** The list stopped at 65536 pages with part of the range not scanned. */
  truncated: boolean;
}

/**
 * `stack`: the registers and call stack of the thread held on fault `seq`, or (`pid` + `tid`)
 * of a blocked thread of a process this helper does not debug (observe mode).
 */
export type StackArgs = { seq: number; maxFrames?: number } | { pid: number; tid: number; maxFrames?: number };

/** One frame, innermost first; a field is absent when unknown. */
export interface StackFrameInfo {
  pc: Hex;
  /** Path of the ELF file (or "[vdso]") that holds pc, and where it is loaded. */
  module?: string;
  moduleBase?: Hex;
  /** ELF symbol containing pc and pc's offset from it. */
  symbol?: string;
  offset?: number;
  /** Function from DWARF (an inlined one when `inlined`). */
  function?: string;
  inlined?: boolean;
  /** Source position from DWARF (of the call, for caller frames). */
  file?: string;
  line?: number;
  column?: number;
}

export type RegisterName =
  | 'rax' | 'rbx' | 'rcx' | 'rdx' | 'rsi' | 'rdi' | 'rbp' | 'rsp' | 'r8' | 'r9' | 'r10' | 'r11' | 'r12' | 'r13'
  | 'r14' | 'r15' | 'rip' | 'eflags' | 'orig_rax' | 'fs_base' | 'gs_base' | 'cs' | 'ss' | 'ds' | 'es' | 'fs' | 'gs';

export interface StackBody {
  seq: number;
  tid: number;
  /** A followed child's fault (followForks); absent: the program. */
  pid?: number;
  /** `ptrace`: every register; `procfs`: rip and rsp (and the argument registers inside a system call). */
  registersFrom: 'ptrace' | 'procfs';
  registers: Partial<Record<RegisterName, Hex>>;
  /** Why registers or frames are missing, in words; null when complete. */
  note: string | null;
  frames: StackFrameInfo[];
  /** libdw's reason for ending the unwind early, when it gave one. */
  unwindEnd: string | null;
  /** Served from the helper's copy for this fault (the thread was not stopped again). */
  cached: boolean;
}

/** `evict` (attached processes): present pages of [start, end) saved and dropped; the next
 * touch of each is a missing fault served back with the saved content. */
export interface EvictBody { start: Hex; end: Hex; pages: number; saved: number }

/** `zap`: the page tables of a shared (shmem/memfd/hugetlbfs) range dropped; the content stays
 * in the page cache, so the next accesses are minor faults where minor mode is registered. */
export interface ZapBody { start: Hex; end: Hex; bytes: number }

/** Request name → [arguments, response body]. */
export interface Requests {
  hello: [{ protocol: number }, HelloBody];
  launch: [LaunchArgs, LaunchBody];
  run: [Record<string, never>, Record<string, never>];
  policy: [PolicyArgs, Policy];
  resolve: [ResolveArgs, ResolveBody];
  resolveAll: [Record<string, never>, { resolved: number[] }];
  stats: [Record<string, never>, StatsBody];
  kill: [Record<string, never>, Record<string, never>];
  shutdown: [Record<string, never>, Record<string, never>];
  attach: [AttachArgs, AttachBody];
  track: [TrackSelector, { regions: Region[] }];
  untrack: [{ ranges: AddrRange[] }, { regions: Region[] }];
  detach: [Record<string, never>, DetachBody];
  register: [AddrRange & { modes: RegisterMode[] }, RegisterBody];
  unregister: [AddrRange, AddrRange];
  protect: [AddrRange & { on: boolean }, ProtectBody];
  dirty: [DirtyArgs, DirtyBody];
  evict: [AddrRange, EvictBody];
  zap: [AddrRange, ZapBody];
  fill: [{ addr: Hex; pages?: number; pattern?: number; bytes?: string; file?: string; offset?: number }, { addr: Hex; pages: number }];
  stack: [StackArgs, StackBody];
}
export type Command = keyof Requests;

export interface ErrorInfo { code: string; message: string }

export type Response =
  | { type: 'response'; id: number; ok: true; body: unknown }
  | { type: 'response'; id: number; ok: false; error: ErrorInfo };

export interface FaultEvent {
  type: 'event';
  event: 'fault';
  seq: number;
  t: number;
  addr: Hex;
  page: Hex;
  access: Access;
  kind: FaultKind;
  tid: number;
  held: boolean;
  ioctl?: string;
  latencyNs?: number;
  /** Only for huge pages: the page size in bytes (4096 otherwise). */
  pageSize?: number;
  /** A fault of a child followed after a fork (`followForks`); absent: the program itself. */
  pid?: number;
}

/**
 * Auto-resolved faults (protocol 2), a batch in columns: fault k is entry k of every fault
 * column, all of the same length. `seq`, `t`, `page` (page address / 4096) and `tid` hold the
 * step from the previous fault of the batch (fault 0: the value itself). Held faults never
 * come this way: they are `fault` events. docs/protocol.md, `faults`, describes it in prose.
 */
export interface FaultsEvent {
  type: 'event';
  event: 'faults';
  seq: number[];
  t: number[];
  page: number[];
  /** Fault address minus its page's address (a huge page's start for a huge page). */
  off: number[];
  /** FB_WRITE | kind << FB_KIND_SHIFT | (log2(pageSize) - 12) << FB_PAGE_SHIFT. */
  flags: number[];
  tid: number[];
  /** The followed child the fault happened in; 0: the program itself. */
  pid: number[];
  /** Index into `ioctls`. */
  ioctl: number[];
  /** latencyNs: from the read of the message to the end of the ioctl. */
  lat: number[];
  /** The ioctls that resolved the faults (or UNMAPPED/REMAPPED), named once per batch. */
  ioctls: string[];
}

/** `flags` bits of a fault in a FaultsEvent: write access; kind (0 missing, 1 wp, 2 minor); page size. */
export const FB_WRITE = 1;
export const FB_KIND_SHIFT = 2;
export const FB_PAGE_SHIFT = 4;

export interface ResolvedEvent {
  type: 'event';
  event: 'resolved';
  seq: number;
  t: number;
  page: Hex;
  /** An ioctl name, or `UNMAPPED`/`REMAPPED`: the memory went away (munmap, mremap), the
   * thread was woken and the fault dropped. */
  ioctl: string;
  latencyNs: number;
  /** As in FaultEvent: a followed child's fault. */
  pid?: number;
}

/** `add`: registered; `remove`: unmapped (munmap) or moved away (mremap). */
export interface RegionEvent { type: 'event'; event: 'region'; action: 'add' | 'remove'; region: Region }

export type NcWhat = 'fork' | 'remap' | 'remove' | 'unmap';

/**
 * A non-cooperative userfaultfd event, read in the same batch as faults (never held).
 * fork: `pid` the child (null: not found), `followed`; remap: `from`/`to`/`len`;
 * remove (MADV_DONTNEED/REMOVE) and unmap: `start`/`end`. `source`: the followed child
 * it happened in (absent: the program itself).
 */
export interface NcEvent {
  type: 'event';
  event: 'nc';
  what: NcWhat;
  t: number;
  start?: Hex;
  end?: Hex;
  from?: Hex;
  to?: Hex;
  len?: Hex;
  pid?: number | null;
  followed?: boolean;
  source?: number;
}

export interface ExitedEvent {
  type: 'event';
  event: 'exited';
  pid: number;
  code: number | null;
  signal: string | null;
}

/** The launched program's stdout/stderr bytes, base64; ordered with faults and `exited`. */
export interface OutputEvent {
  type: 'event';
  event: 'output';
  stream: 'stdout' | 'stderr';
  data: string;
}

/** After `detach`: the process runs on, no longer debugged. */
export interface DetachedEvent { type: 'event'; event: 'detached'; pid: number }

export type HelperEvent = FaultEvent | FaultsEvent | ResolvedEvent | RegionEvent | NcEvent | ExitedEvent | DetachedEvent;
/** Output events are delivered separately (HelperClient's 'output'), not as HelperEvent. */
export type HelperMessage = Response | HelperEvent | OutputEvent;

const FAULT_KINDS: readonly string[] = ['missing', 'wp', 'minor'];

/** Decodes one protocol line; throws with a precise reason when the line is not a message. */
export function decodeMessage(line: string): HelperMessage {
  let v: unknown;
  try {
    v = JSON.parse(line);
  } catch (e) {
    throw new Error(`helper sent a line that is not JSON (${(e as Error).message}): ${line.slice(0, 200)}`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) {
    throw new Error(`helper sent a non-object: ${line.slice(0, 200)}`);
  }
  const m = v as Record<string, unknown>;
  if (m.type === 'response') {
    if (typeof m.id !== 'number' || typeof m.ok !== 'boolean') {
      throw new Error(`malformed response: ${line.slice(0, 200)}`);
    }
    if (!m.ok) {
      const err = m.error as Record<string, unknown> | undefined;
      if (!err || typeof err.code !== 'string' || typeof err.message !== 'string') {
        throw new Error(`malformed error response: ${line.slice(0, 200)}`);
      }
    }
    return m as unknown as Response;
  }
  if (m.type === 'event') {
    switch (m.event) {
      case 'fault':
        if (typeof m.seq !== 'number' || typeof m.addr !== 'string' || typeof m.page !== 'string' ||
            typeof m.tid !== 'number' || !FAULT_KINDS.includes(m.kind as string) ||
            (m.access !== 'read' && m.access !== 'write')) {
          throw new Error(`malformed fault event: ${line.slice(0, 200)}`);
        }
        return m as unknown as FaultEvent;
      case 'faults': {
        const why = faultsProblem(m);
        if (why) throw new Error(`malformed faults event (${why}): ${line.slice(0, 200)}`);
        return m as unknown as FaultsEvent;
      }
      case 'resolved':
        if (typeof m.seq !== 'number' || typeof m.page !== 'string') {
          throw new Error(`malformed resolved event: ${line.slice(0, 200)}`);
        }
        return m as unknown as ResolvedEvent;
      case 'output':
        if ((m.stream !== 'stdout' && m.stream !== 'stderr') || typeof m.data !== 'string' ||
            !/^[A-Za-z0-9+/]*={0,2}$/.test(m.data)) {
          throw new Error(`malformed output event: ${line.slice(0, 200)}`);
        }
        return m as unknown as OutputEvent;
      case 'detached':
        if (typeof m.pid !== 'number') throw new Error(`malformed detached event: ${line.slice(0, 200)}`);
        return m as unknown as DetachedEvent;
      case 'nc': {
        const hexOk = (k: string) => m[k] === undefined || typeof m[k] === 'string';
        if (!['fork', 'remap', 'remove', 'unmap'].includes(m.what as string) || typeof m.t !== 'number' ||
            !['start', 'end', 'from', 'to', 'len'].every(hexOk) ||
            (m.what === 'fork' && m.pid !== null && typeof m.pid !== 'number')) {
          throw new Error(`malformed nc event: ${line.slice(0, 200)}`);
        }
        return m as unknown as NcEvent;
      }
      case 'region': {
        const r = m.region as Record<string, unknown> | undefined;
        if ((m.action !== 'add' && m.action !== 'remove') || !r || typeof r.start !== 'string' ||
            typeof r.end !== 'string') {
          throw new Error(`malformed region event: ${line.slice(0, 200)}`);
        }
        return m as unknown as RegionEvent;
      }
      case 'exited':
        return m as unknown as HelperEvent;
      default:
        throw new Error(`unknown helper event '${String(m.event)}'`);
    }
  }
  throw new Error(`helper message has no known type: ${line.slice(0, 200)}`);
}

const FAULTS_COLUMNS = ['seq', 't', 'page', 'off', 'flags', 'tid', 'pid', 'ioctl', 'lat'] as const;
const MAX_EXACT = 2 ** 53;
const KINDS: readonly FaultKind[] = ['missing', 'wp', 'minor'];

/**
 * Why a `faults` event is not one (null: it is). One pass over the columns, checking the
 * values the steps add up to, so its users take the numbers as they are.
 */
function faultsProblem(m: Record<string, unknown>): string | null {
  const seq = m.seq;
  if (!Array.isArray(seq)) return 'seq is not an array';
  const n = seq.length;
  for (const c of FAULTS_COLUMNS) {
    const col = m[c];
    if (!Array.isArray(col) || col.length !== n) return `${c} is not an array of ${n} numbers`;
  }
  const ioctls = m.ioctls;
  if (!Array.isArray(ioctls) || !ioctls.every((x) => typeof x === 'string')) return 'ioctls is not an array of strings';
  const t = m.t as unknown[], page = m.page as unknown[], off = m.off as unknown[], flags = m.flags as unknown[];
  const tid = m.tid as unknown[], pid = m.pid as unknown[], ioctl = m.ioctl as unknown[], lat = m.lat as unknown[];
  let s = 0, tt = 0, p = 0, d = 0;
  for (let k = 0; k < n; k++) {
    s += seq[k] as number;
    tt += t[k] as number;
    p += page[k] as number;
    d += tid[k] as number;
    const f = flags[k] as number, o = off[k] as number, x = ioctl[k] as number, l = lat[k] as number, q = pid[k] as number;
    if (!(Number.isSafeInteger(s) && s >= 1 && Number.isSafeInteger(tt) && tt >= 0 && Number.isSafeInteger(d) && d >= 0)) { // tid 0: the kernel gave none (no THREAD_ID)
      return `fault ${k}: bad seq, t or tid`;
    }
    if (!(Number.isInteger(f) && f >= 0 && (f & 2) === 0 && ((f >> FB_KIND_SHIFT) & 3) < 3 && f >> FB_PAGE_SHIFT <= 18)) {
      return `fault ${k}: bad flags`;
    }
    if (!(Number.isInteger(p) && p >= 0 && Number.isInteger(o) && o >= 0 && o < 4096 << (f >> FB_PAGE_SHIFT) &&
        p * 4096 + o < MAX_EXACT)) {
      return `fault ${k}: bad page or off`;
    }
    if (!(Number.isInteger(x) && x >= 0 && x < ioctls.length && Number.isSafeInteger(l) && l >= 0 &&
        Number.isSafeInteger(q) && q >= 0)) {
      return `fault ${k}: bad ioctl, lat or pid`;
    }
  }
  return null;
}

/** The faults of a `faults` event as `fault` events (the CLI, tests; the timeline takes the columns as they are). */
export function faultsOf(e: FaultsEvent): FaultEvent[] {
  const out: FaultEvent[] = [];
  let seq = 0, t = 0, page = 0, tid = 0;
  for (let k = 0; k < e.seq.length; k++) {
    seq += e.seq[k];
    t += e.t[k];
    page += e.page[k];
    tid += e.tid[k];
    const flags = e.flags[k];
    const pageSize = 4096 << (flags >> FB_PAGE_SHIFT);
    const f: FaultEvent = {
      type: 'event', event: 'fault', seq, t, addr: toHex(page * 4096 + e.off[k]), page: toHex(page * 4096),
      access: flags & FB_WRITE ? 'write' : 'read', kind: KINDS[(flags >> FB_KIND_SHIFT) & 3], tid, held: false,
      ioctl: e.ioctls[e.ioctl[k]], latencyNs: e.lat[k],
    };
    if (pageSize !== 4096) f.pageSize = pageSize;
    if (e.pid[k]) f.pid = e.pid[k];
    out.push(f);
  }
  return out;
}

/** The faults an event carries, one `fault` each: a held fault itself, a batch's faults; none for other events. */
export function faultEvents(e: HelperEvent): FaultEvent[] {
  return e.event === 'fault' ? [e] : e.event === 'faults' ? faultsOf(e) : [];
}

/** A `faults` batch as its faults one by one; any other event as itself (tests keep events in order so). */
export function unbatched(e: HelperEvent): HelperEvent[] {
  return e.event === 'faults' ? faultsOf(e) : [e];
}

export function encodeRequest<C extends Command>(id: number, cmd: C, args: Requests[C][0]): string {
  return JSON.stringify({ id, cmd, ...args }) + '\n';
}

// ---------------------------------------------------------------- adapter → timeline panel

/**
 * Observe mode only (not sent by the helper): fault `seq` was read by the program's handler and
 * has waited `waitedNs` without being resolved (a stuck fault, the classic postcopy hang).
 * Sent once per fault, at `t`; a later `resolved` for the same `seq` ends it.
 */
export interface StuckEvent { type: 'event'; event: 'stuck'; seq: number; t: number; page: Hex; tid: number; waitedNs: number }

/** What the timeline takes besides faults, as the helper sends it without the envelope tag. */
export type TimelineOtherEvent =
  | Omit<ResolvedEvent, 'type'> | Omit<RegionEvent, 'type'> | Omit<NcEvent, 'type'> | Omit<StuckEvent, 'type'>;

/** Value of "0x" followed by 1–16 hex digits, NaN for anything else. One pass that checks and
 * parses: it runs once or twice per fault at a million faults. Exact below 2^53 (every user address). */
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

/** "0x" and the hex digits of n (an integer, 0 ≤ n < 2^53): parseHex's inverse. In two parts
 * below 2^31, because Number.prototype.toString(16) of a larger (double) value is ~5x slower. */
export function toHex(n: number): Hex {
  const hi = Math.floor(n / 0x1000000);
  const lo = n - hi * 0x1000000;
  return hi === 0 ? '0x' + lo.toString(16) : '0x' + hi.toString(16) + (lo + 0x1000000).toString(16).slice(1);
}

export const TIMELINE_BATCH_VERSION = 1;
/** `flags` bits of a fault in a TimelineBatch; the kind is `flags >> 2` (0 missing, 1 wp, 2 minor). */
export const TB_WRITE = 1;
export const TB_HELD = 2;
export const TB_KIND_SHIFT = 2;

/**
 * Timeline events in columns: the body `{batch}` of the adapter's DAP event `uffd/events`, and
 * the timeline panel's `events` message. A fault is one entry in each fault column (all of the
 * same length), so a batch is a few arrays of numbers, cheap to serialize at every hop:
 * adapter → VS Code → extension host → panel. Other events are few and stay objects.
 * docs/protocol.md, "Timeline batches", describes it in prose.
 */
export interface TimelineBatch {
  v: typeof TIMELINE_BATCH_VERSION;
  /** seq minus the previous fault's seq in this batch (the first fault: its seq). */
  seq: number[];
  /** t (ns) minus the previous fault's t in this batch (the first fault: its t); may be negative. */
  t: number[];
  /** Page number (page address / 4096) minus the previous fault's in this batch (the first fault:
   * its page number): small steps, few digits. */
  page: number[];
  /** Fault address minus its page's address (addr = page × 4096 + off; a huge page's start). */
  off: number[];
  /** TB_WRITE | TB_HELD | kind << TB_KIND_SHIFT. */
  flags: number[];
  /** Thread id minus the previous fault's in this batch (the first fault: its tid). */
  tid: number[];
  /** Index into `ioctls` of the ioctl that resolved the fault; 0: none (held). */
  ioctl: number[];
  /** latencyNs; -1: none (held). */
  lat: number[];
  /** The followed child the fault happened in; 0: the program itself. */
  pid: number[];
  /** ioctl names for `ioctl`; ioctls[0] is ''. */
  ioctls: string[];
  /** resolved, region and nc events, in order. */
  other: TimelineOtherEvent[];
  /** For each of `other`: how many faults of this batch came before it (non-decreasing). */
  otherAt: number[];
}
