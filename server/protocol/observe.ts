// The observe channel (docs/protocol.md, "Observe channel"), declared once: the binary records
// libuffd-observe.so writes (server/observe/wire.h is the C side), their decoder, and the
// control commands the launcher writes back.
import { constants as osConstants } from 'node:os';
import type { Access, FaultKind, Hex } from './messages';

/** 2: the library merges runs of ioctls (`ioctl run` records); streams of version 1 decode alike. */
export const OBSERVE_VERSION = 2;
export const HEADER_SIZE = 32;
export const MAX_RECORD = 4096;
const MSG_SIZE = 32;

export type UffdHow = 'syscall' | 'dev' | 'scm' | 'fork-event' | 'inherit';
export type ReadVia = 'read' | 'readv' | 'syscall-read' | 'syscall-readv' | '__read_chk';
export type ResolveOp = 'WAKE' | 'COPY' | 'ZEROPAGE' | 'MOVE' | 'WRITEPROTECT' | 'CONTINUE' | 'POISON';

/** Fields every record carries. `t` is CLOCK_MONOTONIC ns at the start of the call. */
export interface ObsBase {
  pid: number;
  tid: number;
  /** The descriptor the record is about, -1 if none. */
  fd: number;
  /** The library's id of the userfaultfd in process `pid` (inherited over fork), 0 if none. */
  uffd: number;
  /** Per-process record number from 1 (restarts in a forked child). */
  seq: number;
  t: number;
}

export interface ObsHello extends ObsBase { type: 'hello'; version: number; ppid: number; pageSize: number; stopMask: number; exe: string }
export interface ObsFork extends ObsBase { type: 'fork'; ppid: number }
export interface ObsUffd extends ObsBase {
  type: 'uffd';
  how: UffdHow;
  /** userfaultfd(2) flags or the USERFAULTFD_IOC_NEW argument. */
  flags: number;
  result: number;
  errno: string | null;
  /** `fork-event`: the userfaultfd (in this process) whose fork event carried it. */
  fromUffd: number;
}
export interface ObsApi extends ObsBase {
  type: 'api'; api: number; requested: Hex; features: Hex; ioctls: Hex; result: number; errno: string | null;
}
export interface ObsRegister extends ObsBase {
  type: 'register'; start: Hex; len: number; mode: number; ioctls: Hex; result: number; errno: string | null;
}
export interface ObsUnregister extends ObsBase { type: 'unregister'; start: Hex; len: number; result: number; errno: string | null }

export type UffdMessage =
  | { event: 'pagefault'; addr: Hex; flags: number; ptid: number; access: Access; kind: FaultKind }
  | { event: 'fork'; ufd: number }
  | { event: 'remap'; from: Hex; to: Hex; len: number }
  | { event: 'remove' | 'unmap'; start: Hex; end: Hex }
  | { event: 'unknown'; code: number };

export interface ObsRead extends ObsBase {
  type: 'read';
  /** Bytes read, or -1. Records with many messages are split: each carries its own. */
  result: number;
  errno: string | null;
  via: ReadVia;
  /** The reading thread waits for `continue` (stop on read). */
  stopped: boolean;
  msgs: UffdMessage[];
}
export interface ObsIoctl extends ObsBase {
  type: 'ioctl';
  op: ResolveOp;
  start: Hex;
  len: number;
  mode: number;
  /** COPY and MOVE: the source address. */
  src: Hex;
  /** The ioctl's own result field (copy, zeropage, mapped, move, updated): bytes or -errno. */
  done: number;
  result: number;
  errno: string | null;
  durNs: number;
  /** The calling thread waits for `continue` (stop on ioctl error). */
  stopped: boolean;
}
export interface ObsClose extends ObsBase { type: 'close'; result: number; errno: string | null }
export interface ObsDup extends ObsBase { type: 'dup'; newfd: number }
/** Written before sendmsg (result 0), and again with -1 when sendmsg failed. */
export interface ObsSend extends ObsBase { type: 'send'; result: number; errno: string | null }
export interface ObsContinued extends ObsBase { type: 'continued'; stopSeq: number; why: 'continue' | 'channel-closed' }
/**
 * The library's answer to a `resolve` command: the ioctl its control thread made on the stopped
 * read's userfaultfd (`fd`, `uffd`) on the debugger's behalf. `op` null: no ioctl was made
 * (errno ESRCH: the read is no longer stopped; EINVAL: a bad command).
 */
export interface ObsResolve extends ObsBase {
  type: 'resolve'; req: number; op: ResolveOp | null; start: Hex; len: number; stopSeq: number; done: number;
  result: number; errno: string | null;
}

export type ObsRecord =
  | ObsHello | ObsFork | ObsUffd | ObsApi | ObsRegister | ObsUnregister | ObsRead | ObsIoctl
  | ObsClose | ObsDup | ObsSend | ObsContinued | ObsResolve;

/** Control commands (launcher → library), 16 bytes each. */
export const enum ObsCmd { StopMask = 1, Continue = 2, ContinueAll = 3, Resolve = 4 }
/**
 * Library → launcher, the first 16 bytes on a connection to UFFD_OBSERVE_CTL_PATH (every process
 * but the first): u32 16, u32 pid, u64 0. The launcher answers with a stop mask first.
 */
export const CTL_HELLO = 16;
/** How a `resolve` command places the page(s). */
export const enum ResolveHowCode { Copy = 1, ZeroPage = 2, Wake = 3 }
export const STOP_MISSING = 1;
export const STOP_WP = 2;
export const STOP_MINOR = 4;
/** Stop the thread whose resolving ioctl failed (not with EAGAIN). */
export const STOP_IOCTL_ERROR = 8;

export function encodeControl(cmd: ObsCmd, arg = 0, seq = 0): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(cmd, 0);
  b.writeUInt32LE(arg >>> 0, 4);
  b.writeBigUInt64LE(BigInt(seq), 8);
  return b;
}

/**
 * `resolve`: the command (arg: request id, seq: the stopped read record) and its 24-byte
 * extension (page-aligned address, length, how, COPY's fill byte).
 */
export function encodeResolve(req: number, readSeq: number, addr: bigint, len: number, how: ResolveHowCode, pattern = 0): Buffer {
  const b = Buffer.alloc(40);
  encodeControl(ObsCmd.Resolve, req, readSeq).copy(b, 0);
  b.writeBigUInt64LE(addr, 16);
  b.writeBigUInt64LE(BigInt(len), 24);
  b.writeUInt32LE(how, 32);
  b.writeUInt32LE(pattern & 0xff, 36);
  return b;
}

const HOW: Record<number, UffdHow> = { 1: 'syscall', 2: 'dev', 3: 'scm', 4: 'fork-event', 5: 'inherit' };
const VIA: Record<number, ReadVia> = { 1: 'read', 2: 'readv', 3: 'syscall-read', 4: 'syscall-readv', 5: '__read_chk' };
const OPS: Record<number, ResolveOp> = { 2: 'WAKE', 3: 'COPY', 4: 'ZEROPAGE', 5: 'MOVE', 6: 'WRITEPROTECT', 7: 'CONTINUE', 8: 'POISON' };
const BODY_SIZE: Record<number, number> = { 1: 272, 2: 8, 3: 24, 4: 40, 5: 40, 6: 40, 7: 24, 8: 64, 9: 8, 10: 8, 11: 8, 12: 8, 13: 48 };
/** Record types read in place (ObserveAnalyzer.feedInPlace). */
export const IOCTL = 8;
/** `ioctl run` (wire.h OBS_IOCTL_RUN): a 48-byte body, then (dt, duration) per ioctl, 8 bytes each. */
export const IOCTL_RUN = 14;
const RUN_BODY = 48;
const RUN_ENTRY = 8;

// The first name wins: EAGAIN, not EWOULDBLOCK; EDEADLK, not EDEADLOCK.
const ERRNO_NAMES = new Map<number, string>();
for (const [name, n] of Object.entries(osConstants.errno)) if (!ERRNO_NAMES.has(n)) ERRNO_NAMES.set(n, name);
export function errnoName(n: number): string | null {
  return n === 0 ? null : ERRNO_NAMES.get(n) ?? `E${n}`;
}

// 64-bit fields as numbers: user addresses (< 2^47), lengths and times are exact below 2^53.
// Feature and ioctl masks can use bit 63: those are read as BigInt (rare records only).
const u64 = (b: Buffer, o: number) => b.readUInt32LE(o) + b.readUInt32LE(o + 4) * 4294967296;
const s64 = (b: Buffer, o: number) => b.readUInt32LE(o) + b.readInt32LE(o + 4) * 4294967296;
const BYTE_HEX: string[] = [];
for (let i = 0; i < 256; i++) BYTE_HEX.push(i.toString(16).padStart(2, '0'));
/**
 * '0x…' of an integer below 2^53. Number#toString(16) of a user address (above 2^31) takes
 * about 0.5 µs in V8, as much as decoding the rest of a record: the high part is small, the
 * low 32 bits go through a table.
 */
export function hexOf(v: number): Hex {
  if (v < 0x80000000) return '0x' + v.toString(16);
  const hi = Math.floor(v / 4294967296);
  const lo = v - hi * 4294967296;
  const low = BYTE_HEX[lo >>> 24] + BYTE_HEX[(lo >>> 16) & 255] + BYTE_HEX[(lo >>> 8) & 255] + BYTE_HEX[lo & 255];
  return hi ? '0x' + hi.toString(16) + low : '0x' + low; // hi 0: v >= 2^31, no leading zero
}
const hex = hexOf;
const bigHex = (b: Buffer, o: number): Hex => '0x' + b.readBigUInt64LE(o).toString(16);

function decodeMsg(b: Buffer, o: number): UffdMessage {
  const event = b[o];
  switch (event) {
    case 0x12: {
      const flags = u64(b, o + 8);
      const kind: FaultKind = flags & 2 ? 'wp' : flags & 4 ? 'minor' : 'missing';
      return { event: 'pagefault', addr: hex(u64(b, o + 16)), flags, ptid: b.readUInt32LE(o + 24),
        access: flags & 1 ? 'write' : 'read', kind };
    }
    case 0x13:
      return { event: 'fork', ufd: b.readUInt32LE(o + 8) };
    case 0x14:
      return { event: 'remap', from: hex(u64(b, o + 8)), to: hex(u64(b, o + 16)), len: u64(b, o + 24) };
    case 0x15:
    case 0x16:
      return { event: event === 0x15 ? 'remove' : 'unmap', start: hex(u64(b, o + 8)), end: hex(u64(b, o + 16)) };
    default:
      return { event: 'unknown', code: event };
  }
}

/** Decodes the record at `at` of `b` (whole records only). Throws on a malformed one. */
export function decodeRecord(b: Buffer, at = 0): ObsRecord {
  const type = b.readUInt16LE(at);
  const len = b.readUInt16LE(at + 2);
  const pid = b.readUInt32LE(at + 4);
  const tid = b.readUInt32LE(at + 8);
  const fd = b.readInt32LE(at + 12);
  const uffd = b.readUInt32LE(at + 16);
  const seq = b.readUInt32LE(at + 20);
  const t = u64(b, at + 24);
  if (type === IOCTL_RUN) {
    throw new Error('observe channel: an ioctl run record stands for several ioctl records: decode it with decodeRun');
  }
  const need = BODY_SIZE[type];
  if (need === undefined) {
    throw new Error(`observe channel: unknown record type ${type} (length ${len}): the library may be newer than this adapter ` +
      `(it reads channel versions 1 to ${OBSERVE_VERSION}); rebuild both (npm run build)`);
  }
  if (len < HEADER_SIZE + need) throw new Error(`observe channel: record type ${type} is ${len} bytes, needs ${HEADER_SIZE + need}`);
  const o = at + HEADER_SIZE;
  switch (type) {
    case 1: {
      const version = b.readUInt32LE(o);
      if (version > OBSERVE_VERSION) {
        throw new Error(`observe channel: the library speaks version ${version}, this adapter reads versions 1 to ${OBSERVE_VERSION}: ` +
          'they come from different builds; rebuild both (npm run build)');
      }
      const raw = b.subarray(o + 16, o + 272);
      const nul = raw.indexOf(0);
      return { pid, tid, fd, uffd, seq, t, type: 'hello', version, ppid: b.readUInt32LE(o + 4),
        pageSize: b.readUInt32LE(o + 8), stopMask: b.readUInt32LE(o + 12),
        exe: raw.subarray(0, nul < 0 ? raw.length : nul).toString('utf8') };
    }
    case 2:
      return { pid, tid, fd, uffd, seq, t, type: 'fork', ppid: b.readUInt32LE(o) };
    case 3:
      return { pid, tid, fd, uffd, seq, t, type: 'uffd', how: HOW[b.readUInt32LE(o)] ?? 'syscall',
        flags: b.readUInt32LE(o + 4), result: b.readInt32LE(o + 8), errno: errnoName(b.readInt32LE(o + 12)),
        fromUffd: b.readUInt32LE(o + 20) };
    case 4:
      return { pid, tid, fd, uffd, seq, t, type: 'api', api: u64(b, o), requested: bigHex(b, o + 8),
        features: bigHex(b, o + 16), ioctls: bigHex(b, o + 24), result: b.readInt32LE(o + 32),
        errno: errnoName(b.readInt32LE(o + 36)) };
    case 5:
      return { pid, tid, fd, uffd, seq, t, type: 'register', start: hex(u64(b, o)), len: u64(b, o + 8),
        mode: u64(b, o + 16), ioctls: bigHex(b, o + 24), result: b.readInt32LE(o + 32),
        errno: errnoName(b.readInt32LE(o + 36)) };
    case 6:
      return { pid, tid, fd, uffd, seq, t, type: 'unregister', start: hex(u64(b, o)), len: u64(b, o + 8),
        result: b.readInt32LE(o + 32), errno: errnoName(b.readInt32LE(o + 36)) };
    case 7: {
      const nmsg = b.readUInt16LE(o + 14);
      if (len !== HEADER_SIZE + 24 + nmsg * MSG_SIZE) {
        throw new Error(`observe channel: read record of ${len} bytes says ${nmsg} messages`);
      }
      const msgs: UffdMessage[] = [];
      for (let i = 0; i < nmsg; i++) msgs.push(decodeMsg(b, o + 24 + i * MSG_SIZE));
      return { pid, tid, fd, uffd, seq, t, type: 'read', result: s64(b, o), errno: errnoName(b.readInt32LE(o + 8)),
        via: VIA[b.readUInt16LE(o + 12)] ?? 'read', stopped: (b.readUInt32LE(o + 16) & 1) !== 0, msgs };
    }
    case 8: {
      const r = newIoctlRecord();
      readIoctlInto(b, at, r);
      return r;
    }
    case 9:
      return { pid, tid, fd, uffd, seq, t, type: 'close', result: b.readInt32LE(o), errno: errnoName(b.readInt32LE(o + 4)) };
    case 10:
      return { pid, tid, fd, uffd, seq, t, type: 'dup', newfd: b.readInt32LE(o) };
    case 11:
      return { pid, tid, fd, uffd, seq, t, type: 'send', result: b.readInt32LE(o), errno: errnoName(b.readInt32LE(o + 4)) };
    case 13:
      return { pid, tid, fd, uffd, seq, t, type: 'resolve', req: b.readUInt32LE(o), op: OPS[b.readUInt32LE(o + 4)] ?? null,
        start: hex(u64(b, o + 8)), len: u64(b, o + 16), stopSeq: b.readUInt32LE(o + 24), done: s64(b, o + 32),
        result: b.readInt32LE(o + 40), errno: errnoName(b.readInt32LE(o + 44)) };
    default:
      return { pid, tid, fd, uffd, seq, t, type: 'continued', stopSeq: b.readUInt32LE(o),
        why: b.readUInt32LE(o + 4) === 1 ? 'continue' : 'channel-closed' };
  }
}

const EMPTY = Buffer.alloc(0);

/** An ioctl record to fill with readIoctlInto (every field set, so all have one shape). */
export function newIoctlRecord(): ObsIoctl {
  return { pid: 0, tid: 0, fd: -1, uffd: 0, seq: 0, t: 0, type: 'ioctl', op: 'WAKE', start: '0x0', len: 0, mode: 0, src: '0x0',
    done: 0, result: 0, errno: null, durNs: 0, stopped: false };
}

/**
 * Reads the ioctl record at `at` (type 8, length checked) into `r` in place and returns its start
 * address as a number. `src` false leaves `src` alone (the analyzer never reads it): the
 * launcher's path for the most common record, with no allocation but the start's hex.
 */
export function readIoctlInto(b: Buffer, at: number, r: ObsIoctl, src = true): number {
  const o = at + HEADER_SIZE;
  const op = OPS[b.readUInt32LE(o)];
  if (!op) throw new Error(`observe channel: unknown ioctl number ${b.readUInt32LE(o)}`);
  const start = u64(b, o + 8);
  r.pid = b.readUInt32LE(at + 4);
  r.tid = b.readUInt32LE(at + 8);
  r.fd = b.readInt32LE(at + 12);
  r.uffd = b.readUInt32LE(at + 16);
  r.seq = b.readUInt32LE(at + 20);
  r.t = u64(b, at + 24);
  r.op = op;
  r.start = hex(start);
  r.len = u64(b, o + 16);
  r.mode = u64(b, o + 24);
  if (src) r.src = hex(u64(b, o + 32));
  r.done = s64(b, o + 40);
  r.result = b.readInt32LE(o + 48);
  r.errno = errnoName(b.readInt32LE(o + 52));
  r.durNs = u64(b, o + 56);
  r.stopped = (b.readUInt32LE(o + 4) & 1) !== 0;
  return start;
}

/**
 * Reads the fields every ioctl of the run record at `at` shares into `r` (pid, tid, fd, uffd,
 * op, len, mode, done, result, errno, stopped) and returns how many ioctls it holds. Throws on
 * a malformed run. Then readRunIoctlInto fills in each ioctl's own fields.
 */
export function readRunInto(b: Buffer, at: number, r: ObsIoctl): number {
  const len = b.readUInt16LE(at + 2);
  const o = at + HEADER_SIZE;
  const count = len >= HEADER_SIZE + RUN_BODY ? b.readUInt32LE(o + 4) : -1;
  if (count < 1 || len !== HEADER_SIZE + RUN_BODY + count * RUN_ENTRY) {
    throw new Error(`observe channel: ioctl run record of ${len} bytes says ${count} ioctls`);
  }
  const op = OPS[b.readUInt32LE(o)];
  if (!op) throw new Error(`observe channel: unknown ioctl number ${b.readUInt32LE(o)}`);
  r.pid = b.readUInt32LE(at + 4);
  r.tid = b.readUInt32LE(at + 8);
  r.fd = b.readInt32LE(at + 12);
  r.uffd = b.readUInt32LE(at + 16);
  r.op = op;
  r.len = u64(b, o + 16);
  r.mode = u64(b, o + 24);
  r.done = r.len;
  r.result = 0;
  r.errno = null;
  r.stopped = false;
  return count;
}

/**
 * Sets ioctl `i` of the run record at `at` in `r` (seq, t, durNs, start, src; readRunInto set the
 * rest) and returns its start address. As in readIoctlInto, `src` false leaves `src` alone;
 * `start` false sets `start` to '' (the analyzer formats the address only when an event needs it).
 */
export function readRunIoctlInto(b: Buffer, at: number, i: number, r: ObsIoctl, src = true, start = true): number {
  const o = at + HEADER_SIZE;
  const e = o + RUN_BODY + i * RUN_ENTRY;
  const len = u64(b, o + 16);
  const addr = u64(b, o + 8) + i * len;
  // t as u64() reads the ioctl's own t: the same double even above 2^53 ns.
  let lo = b.readUInt32LE(at + 24) + b.readUInt32LE(e);
  let hi = b.readUInt32LE(at + 28);
  if (lo >= 4294967296) { lo -= 4294967296; hi++; }
  r.seq = b.readUInt32LE(at + 20) + i;
  r.t = lo + hi * 4294967296;
  r.durNs = b.readUInt32LE(e + 4);
  r.start = start ? hex(addr) : '';
  if (src) r.src = hex(u64(b, o + 32) + i * s64(b, o + 40));
  return addr;
}

/** The ioctl records an `ioctl run` record stands for, exactly as if they had come one by one. */
export function decodeRun(b: Buffer, at = 0): ObsIoctl[] {
  const first = newIoctlRecord();
  const n = readRunInto(b, at, first);
  const out: ObsIoctl[] = [];
  for (let i = 0; i < n; i++) {
    const r = i ? { ...first } : first;
    readRunIoctlInto(b, at, i, r);
    out.push(r);
  }
  return out;
}

/** Cuts the channel's byte stream into records; keeps a partial record for the next chunk. */
export class RecordDecoder {
  private pending: Buffer = EMPTY;

  push(chunk: Buffer): ObsRecord[] {
    const out: ObsRecord[] = [];
    this.each(chunk, (r) => { out.push(r); });
    return out;
  }

  /**
   * As push, handing each record to `fn` as it is decoded (no array per chunk); an `ioctl run`
   * as the ioctl records it stands for, one by one. `inPlace` sees each whole record first
   * (runs included), at `at` of `b` (valid during the call only): true when it took it.
   */
  each(chunk: Buffer, fn: (r: ObsRecord) => void, inPlace?: (b: Buffer, at: number, len: number) => boolean): void {
    const b = this.pending.length ? Buffer.concat([this.pending, chunk]) : chunk;
    let off = 0;
    while (b.length - off >= 4) {
      const len = b.readUInt16LE(off + 2);
      if (len < HEADER_SIZE || len > MAX_RECORD) {
        throw new Error(`observe channel: bad record length ${len} at byte ${off} (type ${b.readUInt16LE(off)})`);
      }
      if (b.length - off < len) break;
      if (inPlace && inPlace(b, off, len)) {
        off += len;
        continue;
      }
      if (b.readUInt16LE(off) === IOCTL_RUN) {
        const rs = decodeRun(b, off);
        off += len;
        for (const r of rs) fn(r);
        continue;
      }
      const r = decodeRecord(b, off);
      off += len;
      fn(r);
    }
    // Only a record cut at the chunk's end is kept (copied: the chunk's memory is reused).
    this.pending = off === b.length ? EMPTY : Buffer.from(b.subarray(off));
  }

  /** Bytes of an incomplete record left over (non-zero at the end: the writer died mid-record). */
  get leftover(): number {
    return this.pending.length;
  }
}
