// Observe mode: runs a program that handles its own userfaultfd with libuffd-observe.so
// preloaded, decodes what the library reports on its private channel (docs/protocol.md,
// "Observe channel") and derives what a debugger shows: per-fault latency from the read to the
// resolution that woke it, stuck faults, background pushes, EEXIST duplicates, EAGAIN retries,
// pages resolved twice, faults outside any registered range, and the QEMU-style summary.
// Knows nothing of DAP or VS Code.
import { spawn, ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { createServer, Server, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { Readable, Writable } from 'node:stream';
import type { FaultEvent, Hex, ResolvedEvent } from '../protocol/messages';
import {
  CTL_HELLO, encodeControl, encodeResolve, HEADER_SIZE, hexOf, IOCTL, IOCTL_RUN, newIoctlRecord, ObsCmd, ObsIoctl, ObsRead, ObsRecord,
  ObsResolve, readIoctlInto, readRunInto, readRunIoctlInto, RecordDecoder, ResolveHowCode, ResolveOp,
  STOP_IOCTL_ERROR, STOP_MINOR, STOP_MISSING, STOP_WP, UffdHow,
} from '../protocol/observe';

const PAGE = 4096;
/** Addresses as numbers: user addresses are below 2^47, exact in a double. */
const pageOf = (a: number) => a - (a % PAGE);
const UFFDIO_COPY_MODE_DONTWAKE = 1;
const UFFDIO_WRITEPROTECT_MODE_WP = 1;
const UFFDIO_WRITEPROTECT_MODE_DONTWAKE = 2;
const HIST_BUCKETS = 24;

/** A fault the handler read: FaultEvent's fields (tid is the faulting thread) plus who read it. */
export type ObservedFault = FaultEvent & {
  /** The process and thread that read the message. */
  pid: number;
  reader: number;
  /** `pid:id` of the userfaultfd it was read from (the first process that had it). */
  uffd: string;
  /** No range registered on that userfaultfd contains the address (known ranges only). */
  unregistered: boolean;
  /** The reading thread is stopped until `continue`. */
  stopped: boolean;
};

/** A fault woken by the handler's ioctl: ResolvedEvent's fields plus who resolved it. */
export type ObservedResolved = ResolvedEvent & { pid: number; resolver: number; uffd: string; tid: number };

export type ObserveEvent =
  | ObservedFault
  | ObservedResolved
  | { type: 'event'; event: 'push'; t: number; pid: number; uffd: string; op: ResolveOp; start: Hex; pages: number }
  | { type: 'event'; event: 'duplicate'; t: number; pid: number; uffd: string; op: ResolveOp; page: Hex; pages: number }
  | { type: 'event'; event: 'retry'; t: number; pid: number; uffd: string; op: ResolveOp; start: Hex }
  | { type: 'event'; event: 'ioctlError'; t: number; pid: number; tid: number; uffd: string; op: ResolveOp; start: Hex; len: number; errno: string }
  | { type: 'event'; event: 'stuck'; seq: number; page: Hex; tid: number; pid: number; uffd: string; waitedNs: number }
  | { type: 'event'; event: 'uffd'; t: number; pid: number; uffd: string; how: UffdHow; ok: boolean; errno: string | null }
  | { type: 'event'; event: 'register'; t: number; pid: number; uffd: string; start: Hex; len: number; mode: number; ok: boolean; errno: string | null }
  /** A thread waits for `continue`: after a read (`faults`: what it read) or a failed ioctl (`ioctlError`). */
  | { type: 'event'; event: 'stopped'; t: number; pid: number; tid: number; readSeq: number; faults: number[];
      ioctlError?: { op: ResolveOp; start: Hex; len: number; errno: string } }
  | { type: 'event'; event: 'continued'; t: number; pid: number; tid: number; readSeq: number };

export interface StuckFault { seq: number; page: Hex; addr: Hex; tid: number; pid: number; uffd: string; waitedNs: number }

export interface ObserveSummary {
  processes: number[];
  uffds: { id: string; pid: number; how: UffdHow; features: Hex | null; ranges: { start: Hex; len: number; mode: number }[] }[];
  /** read() calls that returned messages (records; a long read may be split in several). */
  reads: number;
  faults: number;
  events: number;
  resolved: number;
  ioctls: Partial<Record<ResolveOp, { calls: number; ok: number; failed: number }>>;
  /** Pages placed while a fault read on them waited, and ahead of any fault. */
  requested: number;
  pushed: number;
  duplicates: number;
  duplicatePages: Hex[];
  retries: number;
  resolvedTwice: Hex[];
  unregistered: number;
  ioctlErrors: number;
  stuck: StuckFault[];
  blockedNs: number;
  perThread: { tid: number; faults: number; blockedNs: number }[];
  /** Log2 µs buckets: [lo, hi) µs and the count of faults whose latency falls in it. */
  histogram: { loUs: number; hiUs: number; count: number }[];
  latencyNs: { p50: number; p99: number; max: number } | null;
  /** Resolutions the debugger made on the handler's userfaultfd (Resolve Page… while stopped). */
  byDebugger: { op: ResolveOp; start: Hex; len: number; errno: string | null }[];
}

interface Fault { ev: ObservedFault; space: Space; page: number }

const CHUNK_PAGES = 32768;

/**
 * Page addresses, one byte per page in chunks of 2^15 pages (128 MiB of address space): adding
 * and testing allocate nothing, where a Set boxes every address above 2^31 (most of the
 * analyzer's time per UFFDIO_COPY went there).
 */
class PageSet {
  private chunks = new Map<number, Uint8Array>();
  private lastKey = -1;
  private last: Uint8Array | undefined;

  private chunk(key: number, make: boolean): Uint8Array | undefined {
    if (key === this.lastKey) return this.last;
    let c = this.chunks.get(key);
    if (!c && make) this.chunks.set(key, (c = new Uint8Array(CHUNK_PAGES)));
    if (c) { this.lastKey = key; this.last = c; }
    return c;
  }

  has(page: number): boolean {
    const n = page / PAGE;
    const key = Math.floor(n / CHUNK_PAGES);
    const c = this.chunk(key, false);
    return c !== undefined && c[n - key * CHUNK_PAGES] === 1;
  }

  add(page: number): void {
    const n = page / PAGE;
    const key = Math.floor(n / CHUNK_PAGES);
    this.chunk(key, true)![n - key * CHUNK_PAGES] = 1;
  }

  /** Removes the pages in [start, end) and returns them. */
  takeRange(start: number, end: number): number[] {
    const out: number[] = [];
    const first = Math.ceil(start / PAGE);
    const stop = Math.ceil(end / PAGE);
    for (const [key, c] of this.chunks) {
      const base = key * CHUNK_PAGES;
      const lo = Math.max(first, base) - base;
      const hi = Math.min(stop, base + CHUNK_PAGES) - base;
      for (let i = lo; i < hi; i++) {
        if (c[i]) {
          c[i] = 0;
          out.push((base + i) * PAGE);
        }
      }
    }
    return out;
  }
}

interface Space {
  id: string;
  pid: number;
  how: UffdHow;
  features: Hex | null;
  ranges: { start: number; len: number; mode: number }[];
  pending: Map<number, Fault[]>;
  placed: PageSet;
  eagain: Set<string>;
}

const key = (pid: number, id: number) => `${pid}:${id}`;

function inRanges(ranges: Space['ranges'], addr: number): boolean {
  for (const x of ranges) if (addr >= x.start && addr < x.start + x.len) return true;
  return false;
}
const hex = hexOf;

/** Turns records into events and a summary. Pure: feed it records in channel order. */
export class ObserveAnalyzer extends EventEmitter<{ event: [ObserveEvent] }> {
  private spaces = new Map<string, Space>();
  private sends: Space[] = [];
  private faults = new Map<number, Fault>();
  /** Per resolved fault, in parallel (no object per fault): the faulting thread and its latency. */
  private resolvedTids: number[] = [];
  private resolvedLat: number[] = [];
  private nextSeq = 1;
  private pids = new Set<number>();
  private counts = { reads: 0, faults: 0, events: 0, requested: 0, pushed: 0, duplicates: 0, retries: 0, unregistered: 0, ioctlErrors: 0 };
  private dupPages = new Set<number>();
  private twice = new Set<number>();
  private ioctls: ObserveSummary['ioctls'] = {};
  private stuckSent = new Set<number>();
  private allSpaces: Space[] = [];
  private byDebugger: ObserveSummary['byDebugger'] = [];
  private lastSpace: { pid: number; uffd: number; key: string; space: Space } | null = null;
  /** feedInPlace's one ioctl record. */
  private scratch = newIoctlRecord();

  feed(r: ObsRecord): void {
    this.pids.add(r.pid);
    switch (r.type) {
      case 'hello':
        // A new program image in this pid (exec): its ids start again.
        for (const k of [...this.spaces.keys()]) if (k.startsWith(`${r.pid}:`)) this.spaces.delete(k);
        break;
      case 'fork':
        for (const [k, s] of [...this.spaces]) {
          if (k.startsWith(`${r.ppid}:`)) this.spaces.set(key(r.pid, Number(k.split(':')[1])), s);
        }
        break;
      case 'uffd': {
        if (r.result < 0) {
          this.emit('event', { type: 'event', event: 'uffd', t: r.t, pid: r.pid, uffd: '', how: r.how, ok: false, errno: r.errno });
          break;
        }
        let s: Space | undefined;
        if (r.how === 'scm') s = this.sends.shift(); // the same open file, sent by an observed process
        if (!s) {
          s = { id: key(r.pid, r.uffd), pid: r.pid, how: r.how, features: null, ranges: [], pending: new Map(),
            placed: new PageSet(), eagain: new Set() };
          this.allSpaces.push(s);
        }
        this.spaces.set(key(r.pid, r.uffd), s);
        this.emit('event', { type: 'event', event: 'uffd', t: r.t, pid: r.pid, uffd: s.id, how: r.how, ok: true, errno: null });
        break;
      }
      case 'send': {
        const s = this.spaces.get(key(r.pid, r.uffd));
        if (s && r.result === 0) this.sends.push(s);
        else if (s && this.sends.includes(s)) this.sends.splice(this.sends.lastIndexOf(s), 1); // it failed
        break;
      }
      case 'api': {
        const s = this.spaces.get(key(r.pid, r.uffd));
        // UFFDIO_API answers with every feature the kernel offers; the enabled ones are those asked for.
        if (s && r.result === 0) s.features = hex(Number(BigInt(r.requested) & BigInt(r.features)));
        break;
      }
      case 'register': {
        const s = this.spaces.get(key(r.pid, r.uffd));
        if (s && r.result === 0) s.ranges.push({ start: Number(r.start), len: Number(r.len), mode: r.mode });
        this.emit('event', { type: 'event', event: 'register', t: r.t, pid: r.pid, uffd: s?.id ?? '', start: r.start,
          len: r.len, mode: r.mode, ok: r.result === 0, errno: r.errno });
        break;
      }
      case 'unregister': {
        const s = this.spaces.get(key(r.pid, r.uffd));
        if (s && r.result === 0) this.unregister(s, Number(r.start), Number(r.start) + Number(r.len));
        break;
      }
      case 'read':
        this.read(r);
        break;
      case 'ioctl':
        this.ioctl(r, '', Number(r.start));
        break;
      case 'resolve':
        // The debugger's own ioctl on the handler's userfaultfd: it resolves faults like one of the handler's.
        if (r.op) {
          this.byDebugger.push({ op: r.op, start: r.start, len: r.len, errno: r.errno });
          this.ioctl({ ...r, type: 'ioctl', op: r.op, mode: 0, src: '0x0', durNs: 0, stopped: false }, ' (debugger)', Number(r.start));
        }
        break;
      case 'continued':
        this.emit('event', { type: 'event', event: 'continued', t: r.t, pid: r.pid, tid: r.tid, readSeq: r.stopSeq });
        break;
      default:
        break;
    }
  }

  private space(pid: number, id: number): Space {
    // Records of one userfaultfd come in long runs: skip building the key string for each.
    const c = this.lastSpace;
    if (c && c.pid === pid && c.uffd === id && this.spaces.get(c.key) === c.space) return c.space;
    const k = key(pid, id);
    let s = this.spaces.get(k);
    if (!s) {
      // A userfaultfd the library did not see appear (e.g. a descriptor above its table).
      s = { id: key(pid, id), pid, how: 'syscall', features: null, ranges: [], pending: new Map(), placed: new PageSet(),
        eagain: new Set() };
      this.spaces.set(k, s);
      this.allSpaces.push(s);
    }
    this.lastSpace = { pid, uffd: id, key: k, space: s };
    return s;
  }

  private unregister(s: Space, start: number, end: number): void {
    const out: Space['ranges'] = [];
    for (const r of s.ranges) {
      const rEnd = r.start + r.len;
      if (rEnd <= start || r.start >= end) { out.push(r); continue; }
      if (r.start < start) out.push({ start: r.start, len: start - r.start, mode: r.mode });
      if (rEnd > end) out.push({ start: end, len: rEnd - end, mode: r.mode });
    }
    s.ranges = out;
  }

  private read(r: ObsRead): void {
    const s = this.space(r.pid, r.uffd);
    if (r.msgs.length) this.counts.reads++;
    const seqs: number[] = [];
    for (const m of r.msgs) {
      if (m.event !== 'pagefault') {
        this.counts.events++;
        if (m.event === 'remove' || m.event === 'unmap') this.forget(s, Number(m.start), Number(m.end), r.t);
        if (m.event === 'remap') this.remap(s, Number(m.from), Number(m.to), Number(m.len));
        continue;
      }
      this.counts.faults++;
      const addr = Number(m.addr);
      const page = pageOf(addr);
      const unregistered = s.ranges.length > 0 && !inRanges(s.ranges, addr);
      if (unregistered) this.counts.unregistered++;
      const ev: ObservedFault = {
        type: 'event', event: 'fault', seq: this.nextSeq++, t: r.t, addr: m.addr, page: hex(page), access: m.access,
        kind: m.kind, tid: m.ptid, held: r.stopped, pid: r.pid, reader: r.tid, uffd: s.id, unregistered, stopped: r.stopped,
      };
      const f: Fault = { ev, space: s, page };
      this.faults.set(ev.seq, f);
      const list = s.pending.get(page);
      if (list) list.push(f); else s.pending.set(page, [f]);
      seqs.push(ev.seq);
      this.emit('event', ev);
    }
    if (r.stopped) this.emit('event', { type: 'event', event: 'stopped', t: r.t, pid: r.pid, tid: r.tid, readSeq: r.seq, faults: seqs });
  }

  /** Memory gone (munmap, MADV_DONTNEED): what was placed there faults again; waiters were woken. */
  private forget(s: Space, start: number, end: number, t: number): void {
    s.placed.takeRange(start, end);
    for (const [p, list] of [...s.pending]) {
      if (p < start || p >= end) continue;
      for (const f of list) this.resolve(f, t, 'UNMAPPED', f.ev.pid, f.ev.reader);
      s.pending.delete(p);
    }
  }

  private remap(s: Space, from: number, to: number, len: number): void {
    for (const p of s.placed.takeRange(from, from + len)) s.placed.add(p - from + to);
  }

  private resolve(f: Fault, t: number, ioctl: string, pid: number, resolver: number): void {
    const latencyNs = Math.max(0, t - f.ev.t);
    this.faults.delete(f.ev.seq);
    this.resolvedTids.push(f.ev.tid);
    this.resolvedLat.push(latencyNs);
    this.emit('event', { type: 'event', event: 'resolved', seq: f.ev.seq, t, page: f.ev.page, ioctl, latencyNs, pid,
      resolver, uffd: f.space.id, tid: f.ev.tid });
  }

  /** Wakes every fault pending on [start, end): the kernel woke their threads. */
  private wake(s: Space, start: number, end: number, t: number, op: string, pid: number, tid: number): void {
    if (s.pending.size === 0) return;
    if ((end - start) / PAGE <= s.pending.size) {
      for (let p = start; p < end; p += PAGE) {
        const list = s.pending.get(p);
        if (!list) continue;
        s.pending.delete(p);
        for (const f of list) this.resolve(f, t, op, pid, tid);
      }
      return;
    }
    // Deleting the entry being visited is safe in a Map iteration.
    for (const [p, list] of s.pending) {
      if (p + PAGE <= start || p >= end) continue;
      s.pending.delete(p);
      for (const f of list) this.resolve(f, t, op, pid, tid);
    }
  }

  /**
   * feed() of the `ioctl` or `ioctl run` record at `at` of `b`, read in place into one object
   * (no allocation per ioctl; a run's start addresses are formatted only for the events that
   * name them). Returns how many ioctl records it stood for; 0: another type, decode it.
   */
  feedInPlace(b: Buffer, at: number, len: number): number {
    const type = b.readUInt16LE(at);
    const r = this.scratch;
    if (type === IOCTL) {
      if (len < HEADER_SIZE + 64) return 0; // decodeRecord names the problem
      this.feedIoctl(r, readIoctlInto(b, at, r, false));
      return 1;
    }
    if (type !== IOCTL_RUN) return 0;
    const n = readRunInto(b, at, r);
    this.pids.add(r.pid);
    for (let i = 0; i < n; i++) this.ioctl(r, '', readRunIoctlInto(b, at, i, r, false, false));
    return n;
  }

  /**
   * feed() of an ioctl record whose start address is already a number (ObserveSession reads
   * these in place: `r` may be reused once this returns, nothing keeps it). `r.start` may be ''
   * (not formatted): events that name the start format `startAddr`.
   */
  feedIoctl(r: ObsIoctl, startAddr: number): void {
    this.pids.add(r.pid);
    this.ioctl(r, '', startAddr);
  }

  /** `by`: ' (debugger)' for the debugger's own ioctl (not the handler's: not in its counts or problems). */
  private ioctl(r: ObsIoctl, by: string, startAddr: number): void {
    const s = this.space(r.pid, r.uffd);
    if (!by) {
      const c = this.ioctls[r.op] ?? (this.ioctls[r.op] = { calls: 0, ok: 0, failed: 0 });
      c.calls++;
      if (r.result === 0) c.ok++; else c.failed++;
    }
    const end = r.t + r.durNs;
    const start = pageOf(startAddr);
    const rkey = s.eagain.size ? `${r.op}:${r.start || hex(startAddr)}` : '';
    if (rkey && s.eagain.has(rkey)) {
      s.eagain.delete(rkey);
      this.counts.retries++;
      this.emit('event', { type: 'event', event: 'retry', t: r.t, pid: r.pid, uffd: s.id, op: r.op, start: r.start || hex(startAddr) });
    }
    const places = r.op === 'COPY' || r.op === 'ZEROPAGE' || r.op === 'CONTINUE' || r.op === 'MOVE' || r.op === 'POISON';
    // Bytes actually done: the whole range on success, the ioctl's own count on a partial failure.
    const doneBytes = r.result === 0 ? r.len : Math.max(0, r.done);
    if (places && doneBytes > 0) {
      let pushedPages = 0;
      for (let p = start; p < start + doneBytes; p += PAGE) {
        if (s.placed.has(p)) this.twice.add(p);
        else s.placed.add(p);
        if (s.pending.has(p)) this.counts.requested++;
        else { this.counts.pushed++; pushedPages++; }
      }
      if (pushedPages) {
        this.emit('event', { type: 'event', event: 'push', t: r.t, pid: r.pid, uffd: s.id, op: r.op, start: r.start || hex(startAddr),
          pages: pushedPages });
      }
      const dontwake = (r.op === 'COPY' || r.op === 'ZEROPAGE' || r.op === 'CONTINUE' || r.op === 'POISON') &&
        (r.mode & UFFDIO_COPY_MODE_DONTWAKE) !== 0;
      if (!dontwake) this.wake(s, start, start + doneBytes, end, 'UFFDIO_' + r.op + by, r.pid, r.tid);
    }
    if (r.result === 0 && r.op === 'WAKE') this.wake(s, start, start + r.len, end, 'UFFDIO_WAKE' + by, r.pid, r.tid);
    if (r.result === 0 && r.op === 'WRITEPROTECT' &&
        !(r.mode & UFFDIO_WRITEPROTECT_MODE_WP) && !(r.mode & UFFDIO_WRITEPROTECT_MODE_DONTWAKE)) {
      this.wake(s, start, start + r.len, end, 'UFFDIO_WRITEPROTECT', r.pid, r.tid);
    }
    if (r.result === 0 || by) return;
    if (r.errno === 'EEXIST') {
      // The page after the part done is already there.
      const p = start + doneBytes;
      if (s.placed.has(p)) this.twice.add(p);
      this.counts.duplicates++;
      this.dupPages.add(p);
      this.emit('event', { type: 'event', event: 'duplicate', t: r.t, pid: r.pid, uffd: s.id, op: r.op, page: hex(p),
        pages: Math.max(1, (r.len - doneBytes) / PAGE) });
    } else if (r.errno === 'EAGAIN') {
      s.eagain.add(`${r.op}:${hex(startAddr + doneBytes)}`);
    } else {
      this.counts.ioctlErrors++;
      this.emit('event', { type: 'event', event: 'ioctlError', t: r.t, pid: r.pid, tid: r.tid, uffd: s.id, op: r.op,
        start: r.start || hex(startAddr), len: r.len, errno: r.errno ?? 'E?' });
    }
    if (r.stopped) {
      this.emit('event', { type: 'event', event: 'stopped', t: r.t, pid: r.pid, tid: r.tid, readSeq: r.seq, faults: [],
        ioctlError: { op: r.op, start: hex(startAddr + doneBytes), len: r.len - doneBytes, errno: r.errno ?? 'E?' } });
    }
  }

  /** A fault read and not resolved yet. */
  faultBySeq(seq: number): ObservedFault | undefined {
    return this.faults.get(seq)?.ev;
  }

  /** Faults read and still unresolved. `nowNs`: CLOCK_MONOTONIC now (process.hrtime). */
  pending(nowNs: number): StuckFault[] {
    return [...this.faults.values()].map((f) => ({ seq: f.ev.seq, page: f.ev.page, addr: f.ev.addr, tid: f.ev.tid,
      pid: f.ev.pid, uffd: f.space.id, waitedNs: Math.max(0, nowNs - f.ev.t) }));
  }

  /** Emits `stuck` once for each fault that has waited longer than `ms`. */
  checkStuck(nowNs: number, ms: number): StuckFault[] {
    const out = this.pending(nowNs).filter((f) => f.waitedNs >= ms * 1e6 && !this.stuckSent.has(f.seq));
    for (const f of out) {
      this.stuckSent.add(f.seq);
      this.emit('event', { type: 'event', event: 'stuck', seq: f.seq, page: f.page, tid: f.tid, pid: f.pid, uffd: f.uffd, waitedNs: f.waitedNs });
    }
    return out;
  }

  summary(nowNs: number): ObserveSummary {
    const per = new Map<number, { tid: number; faults: number; blockedNs: number }>();
    const hist = new Array<number>(HIST_BUCKETS).fill(0);
    let blocked = 0;
    for (let i = 0; i < this.resolvedLat.length; i++) {
      const tid = this.resolvedTids[i];
      const latencyNs = this.resolvedLat[i];
      blocked += latencyNs;
      const t = per.get(tid) ?? { tid, faults: 0, blockedNs: 0 };
      t.faults++;
      t.blockedNs += latencyNs;
      per.set(tid, t);
      let us = Math.floor(latencyNs / 1000);
      let b = 0;
      while (us > 1 && b < HIST_BUCKETS - 1) { us = Math.floor(us / 2); b++; }
      hist[b]++;
    }
    const lat = Float64Array.from(this.resolvedLat).sort();
    const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
    return {
      processes: [...this.pids],
      uffds: this.allSpaces.map((s) => ({ id: s.id, pid: s.pid, how: s.how, features: s.features,
        ranges: s.ranges.map((r) => ({ start: hex(r.start), len: Number(r.len), mode: r.mode })) })),
      reads: this.counts.reads,
      faults: this.counts.faults,
      events: this.counts.events,
      resolved: this.resolvedLat.length,
      ioctls: this.ioctls,
      requested: this.counts.requested,
      pushed: this.counts.pushed,
      duplicates: this.counts.duplicates,
      duplicatePages: [...this.dupPages].map(hex),
      retries: this.counts.retries,
      resolvedTwice: [...this.twice].map(hex),
      unregistered: this.counts.unregistered,
      ioctlErrors: this.counts.ioctlErrors,
      stuck: this.pending(nowNs),
      blockedNs: blocked,
      perThread: [...per.values()],
      histogram: hist.map((count, b) => ({ loUs: b ? 2 ** b : 0, hiUs: 2 ** (b + 1), count })).filter((h) => h.count),
      latencyNs: lat.length ? { p50: q(0.5), p99: q(0.99), max: lat[lat.length - 1] } : null,
      byDebugger: [...this.byDebugger],
    };
  }
}

/** Where libuffd-observe.so is: UFFD_OBSERVE_LIB, or next to the bundle / the sources. */
export function findObserveLibrary(): string {
  const fromEnv = process.env.UFFD_OBSERVE_LIB;
  if (fromEnv) return fromEnv;
  const candidates = [
    path.join(__dirname, '..', 'server', 'observe', 'bin', 'libuffd-observe.so'), // dist/*.js
    path.join(__dirname, '..', 'observe', 'bin', 'libuffd-observe.so'), // server/core/*.ts
  ];
  for (const c of candidates) if (existsSync(c)) return c;
  throw new Error(`the observe library was not found (looked in ${candidates.join(', ')}); run 'npm run build' to build it`);
}

export interface ObserveOptions {
  program: string;
  args?: string[];
  cwd?: string;
  /** Additions to this process's environment; null removes a variable. */
  env?: Record<string, string | null>;
  /** Stop the reading thread after it reads a fault of these kinds, until `continue`. */
  stopOn?: { missing?: boolean; wp?: boolean; minor?: boolean; ioctlError?: boolean };
  /** Report faults unresolved for this long as `stuck` events (default 1000 ms; 0: never). */
  stuckAfterMs?: number;
  library?: string;
}

export interface ObserveResult {
  code: number | null;
  signal: string | null;
  summary: ObserveSummary;
  /** Bytes of a record cut short (the program died while writing one). */
  truncated: number;
}

export interface ObserveSessionEvents {
  event: [ObserveEvent];
  record: [ObsRecord];
  output: ['stdout' | 'stderr', string];
  error: [Error];
}

function stopMask(s: ObserveOptions['stopOn']): number {
  return (s?.missing ? STOP_MISSING : 0) | (s?.wp ? STOP_WP : 0) | (s?.minor ? STOP_MINOR : 0) |
    (s?.ioctlError ? STOP_IOCTL_ERROR : 0);
}

/** One observed program: spawn with the library, stream events, end with a summary. */
export class ObserveSession extends EventEmitter<ObserveSessionEvents> {
  readonly analyzer = new ObserveAnalyzer();
  private proc: ChildProcess | null = null;
  private ctl: Writable | null = null;
  private decoder = new RecordDecoder();
  private timer: NodeJS.Timeout | null = null;
  private done: Promise<ObserveResult> | null = null;
  private resolving = new Map<number, { resolve: (r: ObsResolve) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  private nextReq = 1;
  /** Records decoded so far. */
  records = 0;
  /** Where processes other than the first connect for their own control channel (forked, exec'd, SCM_RIGHTS). */
  private ctlServer: Server | null = null;
  private ctlDir: string | null = null;
  private conns = new Map<number, Socket>();
  private controlClosed = false;
  private mask = 0;
  pid = 0;

  constructor() {
    super();
    this.analyzer.on('event', (e) => this.emit('event', e));
  }

  /** Spawns the program; resolves once it runs (rejects when it cannot be started). */
  async start(o: ObserveOptions): Promise<number> {
    const lib = o.library ?? findObserveLibrary();
    if (!existsSync(lib)) throw new Error(`the observe library ${lib} does not exist; run 'npm run build'`);
    const env: Record<string, string> = {};
    for (const [k, v] of Object.entries(process.env)) if (v !== undefined) env[k] = v;
    for (const [k, v] of Object.entries(o.env ?? {})) {
      if (v === null) delete env[k]; else env[k] = v;
    }
    env.LD_PRELOAD = env.LD_PRELOAD ? `${lib} ${env.LD_PRELOAD}` : lib;
    env.UFFD_OBSERVE_FD = '3';
    env.UFFD_OBSERVE_CTL = '4';
    this.mask = stopMask(o.stopOn);
    env.UFFD_OBSERVE_STOP = String(this.mask);
    env.UFFD_OBSERVE_CTL_PATH = await this.listenControl();
    const proc = spawn(o.program, o.args ?? [], { cwd: o.cwd, env, stdio: ['ignore', 'pipe', 'pipe', 'pipe', 'pipe'] });
    this.proc = proc;
    const chan = proc.stdio[3] as Readable;
    this.ctl = proc.stdio[4] as Writable;
    this.ctl.on('error', () => { /* the program closed it or exited: nothing to stop any more */ });
    proc.stdout!.setEncoding('utf8').on('data', (d: string) => this.emit('output', 'stdout', d));
    proc.stderr!.setEncoding('utf8').on('data', (d: string) => this.emit('output', 'stderr', d));
    const onRecord = (r: ObsRecord) => {
      this.records++;
      if (this.listenerCount('record')) this.emit('record', r);
      this.analyzer.feed(r);
      if (r.type === 'resolve') this.settleResolve(r);
    };
    // UFFDIO_COPY and friends are most records: read in place, unless someone keeps records
    // ('record' listeners get their own).
    const inPlace = (b: Buffer, at: number, len: number): boolean => {
      if (this.listenerCount('record')) return false;
      const n = this.analyzer.feedInPlace(b, at, len);
      this.records += n;
      return n > 0;
    };
    chan.on('data', (chunk: Buffer) => {
      try {
        this.decoder.each(chunk, onRecord, inPlace);
      } catch (e) {
        this.emit('error', e as Error);
        chan.destroy();
      }
    });
    const stuckMs = o.stuckAfterMs ?? 1000;
    if (stuckMs > 0) {
      this.timer = setInterval(() => this.analyzer.checkStuck(Number(process.hrtime.bigint()), stuckMs),
        Math.max(10, Math.min(250, stuckMs / 2)));
    }
    const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) =>
      proc.once('exit', (code, signal) => resolve({ code, signal })));
    const chanEnd = new Promise<void>((resolve) => { chan.once('close', resolve); chan.once('end', resolve); });
    this.done = exited.then(async (x) => {
      // Children may still hold the channel: wait for its end, at most 2 s after the exit.
      let t: NodeJS.Timeout | undefined;
      await Promise.race([chanEnd, new Promise<void>((r) => { t = setTimeout(r, 2000); })]);
      clearTimeout(t);
      if (this.timer) clearInterval(this.timer);
      this.timer = null;
      this.closeServer();
      for (const [req, p] of [...this.resolving]) this.failResolve(req, p, 'the program exited before the library answered');
      const now = Number(process.hrtime.bigint());
      if (stuckMs > 0) this.analyzer.checkStuck(now, 0);
      return { ...x, summary: this.analyzer.summary(now), truncated: this.decoder.leftover };
    });
    await new Promise<void>((resolve, reject) => {
      proc.once('spawn', () => resolve());
      proc.once('error', (e) => {
        if (this.timer) clearInterval(this.timer);
        this.timer = null;
        this.closeServer();
        reject(new Error(`cannot start ${o.program}: ${e.message}` +
          ((e as NodeJS.ErrnoException).code === 'ENOENT' ? ' (check the path and that it is executable)' : '')));
      });
    });
    this.pid = proc.pid ?? 0;
    return this.pid;
  }

  /** Resolves when the program has exited and the channel is drained. */
  wait(): Promise<ObserveResult> {
    if (!this.done) return Promise.reject(new Error('observe session not started'));
    return this.done;
  }

  /**
   * A private socket (0700 directory) for processes other than the first: each connects, says its
   * pid, gets the stop mask, then that process's commands. Resolves with its path.
   */
  private async listenControl(): Promise<string> {
    this.ctlDir = mkdtempSync(path.join(tmpdir(), 'uffd-observe-ctl-'));
    const where = path.join(this.ctlDir, 'ctl');
    const server = createServer((sock) => this.onControlConnection(sock));
    this.ctlServer = server;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(where, () => { server.off('error', reject); resolve(); });
    });
    server.on('error', (e) => this.emit('error', new Error(`observe control socket ${where}: ${e.message}`)));
    return where;
  }

  private onControlConnection(sock: Socket): void {
    if (this.controlClosed) { sock.destroy(); return; }
    let hello = Buffer.alloc(0);
    let pid = 0;
    sock.on('error', () => { /* the process exited */ });
    sock.on('close', () => { if (pid && this.conns.get(pid) === sock) this.conns.delete(pid); });
    sock.on('data', (d: Buffer) => {
      if (pid) return; // the library sends nothing after its hello
      hello = Buffer.concat([hello, d]);
      if (hello.length < 16) return;
      if (hello.readUInt32LE(0) !== CTL_HELLO || hello.readUInt32LE(4) === 0) {
        this.emit('error', new Error(`observe control socket: a connection did not say hello (command ${hello.readUInt32LE(0)})`));
        sock.destroy();
        return;
      }
      pid = hello.readUInt32LE(4);
      this.conns.get(pid)?.destroy(); // the same pid after exec
      this.conns.set(pid, sock);
      sock.write(encodeControl(ObsCmd.StopMask, this.mask));
    });
  }

  private closeServer(): void {
    this.ctlServer?.close();
    this.ctlServer = null;
    for (const c of this.conns.values()) c.destroy();
    this.conns.clear();
    if (this.ctlDir) rmSync(this.ctlDir, { recursive: true, force: true });
    this.ctlDir = null;
  }

  /** The control channel of process `pid`: its own connection, else (the first process) the inherited pipe. */
  private control(pid: number): Writable | null {
    const c = this.conns.get(pid);
    if (c && c.writable) return c;
    return pid === this.pid && this.ctl?.writable ? this.ctl : null;
  }

  private broadcast(b: Buffer): void {
    if (this.ctl?.writable) this.ctl.write(b);
    for (const c of this.conns.values()) if (c.writable) c.write(b);
  }

  /** Stop after reading faults of these kinds from now on (every process of the program). */
  setStop(stopOn: ObserveOptions['stopOn']): void {
    this.mask = stopMask(stopOn);
    this.broadcast(encodeControl(ObsCmd.StopMask, this.mask));
  }

  /** Lets the thread of process `pid` stopped after its read (or ioctl) record `readSeq` run on. */
  continue(readSeq: number, pid = this.pid): void {
    this.control(pid)?.write(encodeControl(ObsCmd.Continue, 0, readSeq));
  }

  continueAll(): void {
    this.broadcast(encodeControl(ObsCmd.ContinueAll));
  }

  /**
   * Has the library place (COPY of `pattern` bytes, ZEROPAGE) or wake `len` bytes at `addr` on
   * the userfaultfd the thread stopped after read record `readSeq` of process `pid` read, on the
   * debugger's behalf. Resolves with the library's answer (check `result` and `errno`); rejects
   * when it cannot ask.
   */
  resolve(readSeq: number, addr: bigint, len: number, how: ResolveHowCode, pattern = 0, pid = this.pid): Promise<ObsResolve> {
    const ctl = this.control(pid);
    if (!ctl) return Promise.reject(new Error(`the control channel to process ${pid} is closed`));
    const req = this.nextReq++;
    return new Promise<ObsResolve>((resolve, reject) => {
      const timer = setTimeout(() => {
        const p = this.resolving.get(req);
        if (p) this.failResolve(req, p, 'the observe library did not answer within 5 s');
      }, 5000);
      this.resolving.set(req, { resolve, reject, timer });
      ctl.write(encodeResolve(req, readSeq, addr, len, how, pattern));
    });
  }

  private settleResolve(r: ObsResolve): void {
    const p = this.resolving.get(r.req);
    if (!p) return;
    this.resolving.delete(r.req);
    clearTimeout(p.timer);
    p.resolve(r);
  }

  private failResolve(req: number, p: { reject: (e: Error) => void; timer: NodeJS.Timeout }, why: string): void {
    this.resolving.delete(req);
    clearTimeout(p.timer);
    p.reject(new Error(why));
  }

  /** Closes the control channels: every stopped thread runs on and none stops again (disconnect). */
  closeControl(): void {
    this.controlClosed = true;
    this.ctl?.destroy();
    this.ctl = null;
    for (const c of this.conns.values()) c.destroy();
    this.conns.clear();
  }

  /** Only on the user's request: ends the program. */
  kill(signal: NodeJS.Signals = 'SIGKILL'): void {
    if (this.proc && this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
  }
}
