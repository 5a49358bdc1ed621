// The adapter ⇄ helper wire protocol, declared once. docs/protocol.md describes it in prose;
// server/native/uffd-helper.c is the other side.

export const PROTOCOL_VERSION = 1;

export type Hex = string; // "0x7f12a000"
export type FaultKind = 'missing' | 'wp' | 'minor';
export type Access = 'read' | 'write';
export type ResolveHow = 'default' | 'zero' | 'wake';
export type StreamMode = 'all' | 'held' | 'none';

export interface FlagSet { raw: Hex; names: string[] }

export interface Region {
  start: Hex;
  end: Hex;
  via: 'exec' | 'brk' | 'mmap' | 'mremap';
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

export interface LaunchArgs {
  program: string;
  args: string[];
  cwd: string;
  env: Record<string, string> | null;
  stdoutFd?: number;
  stderrFd?: number;
}

export interface LaunchBody {
  pid: number;
  uffdSource: 'syscall' | 'dev';
  features: FlagSet;
  regions: Region[];
}

export interface Policy {
  hold: Record<FaultKind, boolean>;
  holdNext: boolean;
  stream: StreamMode;
}

export interface PolicyArgs {
  hold?: Partial<Record<FaultKind, boolean>>;
  holdNext?: boolean;
  stream?: StreamMode;
}

export interface ResolveBody { seq: number; page: Hex; ioctl: string; woken: number[] }

export interface StatsBody {
  faults: Record<FaultKind, number>;
  held: number;
  resolved: number;
  regions: number;
  eventsDropped: number;
}

/** Request name → [arguments, response body]. */
export interface Requests {
  hello: [{ protocol: number }, HelloBody];
  launch: [LaunchArgs, LaunchBody];
  run: [Record<string, never>, Record<string, never>];
  policy: [PolicyArgs, Policy];
  resolve: [{ seq: number; how: ResolveHow }, ResolveBody];
  resolveAll: [Record<string, never>, { resolved: number[] }];
  stats: [Record<string, never>, StatsBody];
  kill: [Record<string, never>, Record<string, never>];
  shutdown: [Record<string, never>, Record<string, never>];
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
}

export interface ResolvedEvent {
  type: 'event';
  event: 'resolved';
  seq: number;
  t: number;
  page: Hex;
  ioctl: string;
  latencyNs: number;
}

export interface RegionEvent { type: 'event'; event: 'region'; action: 'add'; region: Region }

export interface ExitedEvent {
  type: 'event';
  event: 'exited';
  pid: number;
  code: number | null;
  signal: string | null;
}

export type HelperEvent = FaultEvent | ResolvedEvent | RegionEvent | ExitedEvent;
export type HelperMessage = Response | HelperEvent;

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
      case 'region':
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
