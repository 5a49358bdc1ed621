// The adapter ⇄ helper wire protocol, declared once. docs/protocol.md describes it in prose;
// server/native/uffd-helper.c is the other side.

export const PROTOCOL_VERSION = 1;

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
  via: 'exec' | 'brk' | 'mmap' | 'mremap' | 'attach' | 'track' | 'scan' | 'untrack' | 'unmap' | 'remap';
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
}

export interface LaunchArgs extends SessionOptions {
  program: string;
  args: string[];
  cwd: string;
  env: Record<string, string> | null;
}

export interface LaunchBody {
  pid: number;
  uffdSource: 'syscall' | 'dev';
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
  uffdSource: 'syscall' | 'dev';
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

export type HelperEvent = FaultEvent | ResolvedEvent | RegionEvent | NcEvent | ExitedEvent | DetachedEvent;
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

export function encodeRequest<C extends Command>(id: number, cmd: C, args: Requests[C][0]): string {
  return JSON.stringify({ id, cmd, ...args }) + '\n';
}
