// The session's faults in time-sorted typed arrays (columns grow by doubling), the regions they
// fall in, page states, latency histogram and blocked time per thread. No DOM: the bench and
// tests can drive it directly.
import {
  eventProblem, parseHex, type TimelineBatch, type TimelineEvent, type TimelineFault, type TimelineNc,
  type TimelineRegion, type TimelineResolved, type TimelineStuck,
} from './messages';

export const KINDS = ['missing', 'wp', 'minor'] as const;
export const PAGE_STATES = [
  'untouched', 'pending', 'zero', 'copied', 'write-protected', 'written', 'evicted', 'poisoned', 'moved',
] as const;
export type PageState = (typeof PAGE_STATES)[number];
export const ST = { untouched: 0, pending: 1, zero: 2, copied: 3, wp: 4, written: 5, evicted: 6, poisoned: 7, moved: 8 };

export const PAGE_SIZE = 4096;
/** Pages tracked per region in the page map; larger regions keep state for their first pages only. */
export const MAX_PAGES_PER_REGION = 1 << 22;
/** Latency histogram: bucket 0 is < 1 µs, bucket b ≥ 1 is [2^(b-1), 2^b) µs; the last is open. */
export const HIST_BUCKETS = 24;
export const FLAG_WRITE = 1;
export const FLAG_HELD = 2;
/** Resolved by a later `resolved` event (held faults; observe mode: every fault the handler places). */
export const FLAG_RESOLVED = 4;
/** A `stuck` event named it (observe mode: read by the handler and not resolved in time). */
export const FLAG_STUCK = 8;
/** Implicit regions group faults outside any announced region, per 2 MiB. */
const IMPLICIT_SPAN = 2 * 1024 * 1024;

export interface RegionInfo {
  start: number;
  end: number;
  startHex: string;
  endHex: string;
  via: string;
  name: string;
  pages: number;
  implicit: boolean;
  state: Uint8Array;
  faults: number;
}

export interface NcMark { t: number; what: string; ev: TimelineNc }

/** A stuck fault (observe mode), as its `stuck` event named it; `resolved` once a resolution came. */
export interface StuckMark { ev: TimelineStuck; resolved: boolean }

export function hexToNum(h: string): number {
  return parseHex(h);
}
export function numToHex(n: number): string {
  return '0x' + n.toString(16);
}

export function stateOfIoctl(ioctl: string): number {
  switch (ioctl) {
    case 'UFFDIO_ZEROPAGE': return ST.zero;
    case 'UFFDIO_COPY': return ST.copied;
    case 'UFFDIO_CONTINUE': return ST.copied;
    case 'UFFDIO_WRITEPROTECT': return ST.written;
    case 'UFFDIO_POISON': return ST.poisoned;
    case 'UFFDIO_MOVE': return ST.moved;
    case 'UNMAPPED': return ST.evicted; // the memory went away under a held fault
    case 'REMAPPED': return ST.moved;
    default: return -1; // UFFDIO_WAKE and unknown ioctls leave the page as it was
  }
}

export function latencyBucket(ns: number): number {
  const us = ns / 1000;
  if (!(us >= 1)) return 0;
  return Math.min(HIST_BUCKETS - 1, 1 + Math.floor(Math.log2(us)));
}

export class FaultStore {
  n = 0;
  cap = 0;
  t = new Float64Array(0);
  seq = new Float64Array(0);
  addr = new Float64Array(0);
  /** Page index within its region (the page's address: pageAt). */
  pidx = new Float64Array(0);
  region = new Uint16Array(0);
  kind = new Uint8Array(0);
  flags = new Uint8Array(0);
  tid = new Int32Array(0);
  ioctl = new Uint8Array(0);
  /** NaN while unknown (held and not yet resolved). */
  lat = new Float64Array(0);
  /** y on the timeline (band + page fraction), NaN when the band is hidden; kept so binning reads
   * one column per axis. Recomputed when bands change. Single precision: a position to draw. */
  ycol = new Float32Array(0);
  /** Process of a followed child's fault (protocol `pid`), 0 for the program itself. */
  pid = new Int32Array(0);

  regions: RegionInfo[] = [];
  /** Region indexes sorted by start address, for look-up and for band order. */
  private byStart: number[] = [];
  /** Band (row) of each region on the y axis, -1 when hidden (empty implicit region). */
  band: Int32Array = new Int32Array(0);
  bands: number[] = [];
  ioctlNames: string[] = [''];
  private ioctlCode = new Map<string, number>([['', 0]]);
  /** Page state each ioctl code leaves (stateOfIoctl), -1: unchanged. */
  private ioctlState: number[] = [-1];
  /** Held faults resolved: seq → time of the `resolved` event (a few per cent of faults: not a column). */
  private resolvedAt = new Map<number, number>();
  /** Held faults not yet resolved: seq → index. */
  pending = new Map<number, number>();
  nc: NcMark[] = [];
  /** Stuck faults by seq, in arrival order (a handful per session). */
  stuck = new Map<number, StuckMark>();
  /** Region removals, with the time they were seen, for exports. */
  removals: TimelineRegion[] = [];
  kindCounts = new Float64Array(3);
  hist = new Float64Array(HIST_BUCKETS);
  /** Blocked ns per tid, in a mutable box so adding does not allocate a number per fault. */
  private blockedBox = new Map<number, { ns: number }>();
  get blocked(): Map<number, number> {
    return new Map([...this.blockedBox].map(([tid, b]) => [tid, b.ns]));
  }
  /** Bumped on every change so views know to redraw. */
  version = 0;
  private lastRegion = -1;

  constructor(initialCap = 1024) {
    this.grow(initialCap);
  }

  get tMin(): number { return this.n ? this.t[0] : 0; }
  get tMax(): number {
    let m = this.n ? this.t[this.n - 1] : 0;
    if (this.nc.length) m = Math.max(m, this.nc[this.nc.length - 1].t);
    return m;
  }

  /**
   * Makes room for `want` faults. Fresh memory costs a page fault per 4 KiB on its first write
   * (tens of µs each on a VM: most of the cost of storing a million faults), and a copy into new
   * columns writes again where the old ones were. So past 65,536 faults the columns grow in one
   * step to room for 2^20: capacity never written costs nothing (its pages are never touched).
   */
  private grow(want: number): void {
    if (want <= this.cap) return;
    let cap = Math.max(1024, this.cap);
    while (cap < want) cap = cap < 1 << 16 ? cap * 2 : Math.max(cap * 2, 1 << 20);
    const g = <T extends Float64Array | Float32Array | Uint16Array | Uint8Array | Int32Array>(a: T,
      C: new (n: number) => T): T => {
      const b = new C(cap);
      b.set(a.subarray(0, this.n));
      return b;
    };
    this.t = g(this.t, Float64Array);
    this.seq = g(this.seq, Float64Array);
    this.addr = g(this.addr, Float64Array);
    this.pidx = g(this.pidx, Float64Array);
    this.region = g(this.region, Uint16Array);
    this.kind = g(this.kind, Uint8Array);
    this.flags = g(this.flags, Uint8Array);
    this.tid = g(this.tid, Int32Array);
    this.ioctl = g(this.ioctl, Uint8Array);
    this.lat = g(this.lat, Float64Array);
    this.ycol = g(this.ycol, Float32Array);
    this.pid = g(this.pid, Int32Array);
    this.cap = cap;
  }

  clear(): void {
    const fresh = new FaultStore();
    Object.assign(this, fresh);
    this.version++;
  }

  /**
   * Validates and appends untrusted events in one pass: faults (nearly all of a batch) are checked
   * field by field as they are stored; other events go through eventProblem. Invalid events are
   * skipped and counted.
   */
  ingest(batch: readonly unknown[]): { dropped: number; firstProblem: string } {
    this.grow(this.n + batch.length);
    let dropped = 0;
    let firstProblem = '';
    for (let k = 0; k < batch.length; k++) {
      const e = batch[k] as Record<string, unknown> | null;
      if (e !== null && typeof e === 'object' && e.event === 'fault') {
        const seq = e.seq, t = e.t, tid = e.tid, kind = e.kind, access = e.access, held = e.held;
        const ioctl = e.ioctl, lat = e.latencyNs, pid = e.pid;
        const addr = parseHex(e.addr);
        const page = parseHex(e.page);
        const k3 = kind === 'missing' ? 0 : kind === 'wp' ? 1 : kind === 'minor' ? 2 : -1;
        if (typeof seq === 'number' && Number.isFinite(seq) && typeof t === 'number' && Number.isFinite(t) &&
            typeof tid === 'number' && Number.isFinite(tid) && addr === addr && page === page && k3 >= 0 &&
            (access === 'read' || access === 'write') && typeof held === 'boolean' &&
            (ioctl === undefined || typeof ioctl === 'string') &&
            (lat === undefined || (typeof lat === 'number' && Number.isFinite(lat))) &&
            (pid === undefined || typeof pid === 'number')) {
          this.addFaultFields(seq, t, addr, page, k3, access === 'write', held, tid, this.code(ioctl as string | undefined),
            lat as number | undefined, (pid as number | undefined) ?? 0);
          continue;
        }
      }
      if (e !== null && typeof e === 'object' && (e.event === 'exited' || e.event === 'detached')) continue;
      const p = eventProblem(e);
      if (p !== null) {
        if (dropped++ === 0) firstProblem = p;
        continue;
      }
      this.appendOne(e as unknown as TimelineEvent);
    }
    this.version++;
    return { dropped, firstProblem };
  }

  /**
   * Appends a batch that passed batchProblem (messages.ts): faults straight from its columns;
   * its few other events are checked one by one, and a bad one is skipped and counted.
   */
  ingestBatch(b: TimelineBatch): { dropped: number; firstProblem: string } {
    const n = b.seq.length;
    this.grow(this.n + n);
    const codes = b.ioctls.map((s) => this.code(s));
    const { seq: dseq, t: dt, page: dpage, off, flags, tid: dtid, ioctl, lat, pid, other, otherAt } = b;
    let dropped = 0;
    let firstProblem = '';
    let seq = 0;
    let t = 0;
    let pn = 0;
    let tid = 0;
    let j = 0;
    for (let k = 0; k <= n; k++) {
      for (; j < other.length && otherAt[j] <= k; j++) {
        const e = other[j] as unknown as Record<string, unknown>;
        if (e !== null && typeof e === 'object' && (e.event === 'exited' || e.event === 'detached')) continue;
        const p = eventProblem(e);
        if (p !== null) {
          if (dropped++ === 0) firstProblem = p;
          continue;
        }
        this.appendOne(e as unknown as TimelineEvent);
      }
      if (k === n) break;
      seq += dseq[k];
      t += dt[k];
      pn += dpage[k];
      tid += dtid[k];
      const page = pn * PAGE_SIZE;
      const f = flags[k];
      const l = lat[k];
      this.addFaultFields(seq, t, page + off[k], page, f >> 2, (f & 1) !== 0, (f & 2) !== 0, tid, codes[ioctl[k]],
        l < 0 ? undefined : l, pid[k]);
    }
    this.version++;
    return { dropped, firstProblem };
  }

  private appendOne(e: TimelineEvent): void {
    switch (e.event) {
      case 'fault': this.addFault(e); break;
      case 'resolved': this.addResolved(e); break;
      case 'region': this.addRegion(e); break;
      case 'nc': this.addNc(e); break;
      case 'stuck': this.addStuck(e); break;
    }
  }

  /** Appends events already validated (imports, state snapshots). */
  append(batch: readonly TimelineEvent[]): void {
    this.grow(this.n + batch.length);
    for (const e of batch) this.appendOne(e);
    this.version++;
  }

  private code(ioctl: string | undefined): number {
    if (!ioctl) return 0;
    let c = this.ioctlCode.get(ioctl);
    if (c === undefined) {
      c = this.ioctlNames.length;
      if (c > 255) return 0;
      this.ioctlNames.push(ioctl);
      this.ioctlState.push(stateOfIoctl(ioctl));
      this.ioctlCode.set(ioctl, c);
    }
    return c;
  }

  private addFault(e: TimelineFault): void {
    this.addFaultFields(e.seq, e.t, hexToNum(e.addr), hexToNum(e.page), KINDS.indexOf(e.kind), e.access === 'write',
      e.held, e.tid, this.code(e.ioctl), e.latencyNs, e.pid ?? 0);
  }

  private addFaultFields(seq: number, t: number, addr: number, page: number, kind: number, write: boolean,
    held: boolean, tid: number, ioctl: number, lat: number | undefined, pid: number): void {
    let i = this.n;
    if (i > 0 && t < this.t[i - 1]) i = this.makeRoom(t); // rare: keep time order
    const r = this.regionFor(page);
    const reg = this.regions[r];
    const pidx = Math.floor((page - reg.start) / PAGE_SIZE);
    this.t[i] = t;
    this.seq[i] = seq;
    this.addr[i] = addr;
    this.region[i] = r;
    this.pidx[i] = pidx;
    this.kind[i] = kind;
    this.flags[i] = (write ? FLAG_WRITE : 0) | (held ? FLAG_HELD : 0) |
      (this.stuck.size && this.stuck.has(seq) ? FLAG_STUCK : 0);
    this.tid[i] = tid;
    this.pid[i] = pid;
    this.ioctl[i] = ioctl;
    this.lat[i] = lat ?? NaN;
    this.n++;
    if (reg.faults++ === 0 && reg.implicit) this.layoutBands();
    const b = this.band[r];
    this.ycol[i] = b < 0 ? NaN : b + (pidx + 0.5) / reg.pages;
    this.kindCounts[kind]++;
    if (held && lat === undefined) {
      this.pending.set(seq, i);
      this.setPage(r, pidx, ST.pending);
    } else if (lat === undefined && !ioctl) {
      // Observe mode: read by the program's handler, waiting for its resolution.
      this.setPage(r, pidx, ST.pending);
    } else {
      if (lat !== undefined) this.account(tid, lat);
      const s = ioctl ? this.ioctlState[ioctl] : kind === 1 ? ST.wp : -1;
      if (s >= 0) this.setPage(r, pidx, s);
    }
  }

  /** Opens a slot for an event that arrived out of time order; returns its index. */
  private makeRoom(t: number): number {
    const i = this.upperBound(t);
    const cols = [this.t, this.seq, this.addr, this.pidx, this.region, this.kind, this.flags,
      this.tid, this.ioctl, this.lat, this.ycol, this.pid];
    for (const c of cols) c.copyWithin(i + 1, i, this.n);
    for (const [s, j] of this.pending) if (j >= i) this.pending.set(s, j + 1);
    return i;
  }

  private account(tid: number, ns: number): void {
    this.hist[latencyBucket(ns)]++;
    const b = this.blockedBox.get(tid);
    if (b) b.ns += ns;
    else this.blockedBox.set(tid, { ns });
  }

  private addResolved(e: TimelineResolved): void {
    let i = this.pending.get(e.seq);
    if (i === undefined) {
      i = this.indexOfSeq(e.seq);
      if (i < 0 || !Number.isNaN(this.lat[i])) return; // unknown or already resolved
    }
    this.pending.delete(e.seq);
    this.lat[i] = e.latencyNs;
    this.flags[i] |= FLAG_RESOLVED;
    this.resolvedAt.set(e.seq, e.t);
    const sm = this.stuck.get(e.seq);
    if (sm) sm.resolved = true;
    this.ioctl[i] = this.code(e.ioctl);
    this.account(this.tid[i], e.latencyNs);
    const s = stateOfIoctl(e.ioctl);
    this.setPage(this.region[i], this.pidx[i], s >= 0 ? s : ST.untouched);
  }

  private addRegion(e: TimelineRegion): void {
    const start = hexToNum(e.region.start);
    const end = hexToNum(e.region.end);
    if (!(end > start)) return;
    if (e.action === 'remove') {
      this.removals.push({ ...e, t: e.t ?? this.tMax });
      // The lane stays (its faults are history); its pages show what became of them.
      this.markRange(start, end, e.region.via === 'remap' ? ST.moved : ST.evicted);
      return;
    }
    const r = this.newRegion(start, end, e.region.start, e.region.end, e.region.via, e.region.name ?? '', false);
    // Faults seen before their region was announced move from implicit regions into it.
    const moved = this.regions.some((g) => g.implicit && g.start < end && g.end > start);
    if (moved) {
      for (let i = 0; i < this.n; i++) {
        const old = this.regions[this.region[i]];
        if (!old.implicit) continue;
        const page = this.pageAt(i);
        if (page < start || page >= end) continue;
        old.faults--;
        this.regions[r].faults++;
        this.region[i] = r;
        this.pidx[i] = Math.floor((page - start) / PAGE_SIZE);
        const st = old.state[Math.floor((page - old.start) / PAGE_SIZE)];
        if (st) this.setPage(r, this.pidx[i], st);
      }
      this.layoutBands();
    }
  }

  private addStuck(e: TimelineStuck): void {
    if (this.stuck.has(e.seq)) return; // named once; the first report stands
    const i = this.indexOfSeq(e.seq);
    this.stuck.set(e.seq, { ev: { event: 'stuck', seq: e.seq, t: e.t, page: e.page, tid: e.tid, waitedNs: e.waitedNs },
      resolved: i >= 0 && !Number.isNaN(this.lat[i]) });
    if (i >= 0) this.flags[i] |= FLAG_STUCK;
  }

  /** The stuck mark of fault i, or undefined. */
  stuckOf(i: number): StuckMark | undefined {
    return this.flags[i] & FLAG_STUCK ? this.stuck.get(this.seq[i]) : undefined;
  }

  /** Stuck faults whose resolution has not come. */
  get stuckOpen(): number {
    let n = 0;
    for (const m of this.stuck.values()) if (!m.resolved) n++;
    return n;
  }

  private addNc(e: TimelineNc): void {
    const t = e.t ?? this.tMax;
    this.nc.push({ t, what: e.what, ev: e });
    if (this.nc.length > 1 && t < this.nc[this.nc.length - 2].t) this.nc.sort((a, b) => a.t - b.t);
    const range = (a?: string, b?: string, len?: string): [number, number] | null => {
      if (!a) return null;
      const s = hexToNum(a);
      const end = b ? hexToNum(b) : len ? s + hexToNum(len) : NaN;
      return end > s ? [s, end] : null;
    };
    const mark = (rg: [number, number] | null, st: number) => {
      if (rg) this.markRange(rg[0], rg[1], st);
    };
    if (e.what === 'remove' || e.what === 'unmap') mark(range(e.start, e.end, e.len), ST.evicted);
    if (e.what === 'remap') mark(range(e.from ?? e.start, undefined, e.len), ST.moved);
  }

  private markRange(start: number, end: number, st: number): void {
    for (let r = 0; r < this.regions.length; r++) {
      const g = this.regions[r];
      const lo = Math.max(g.start, start);
      const hi = Math.min(g.end, end, g.start + g.state.length * PAGE_SIZE);
      for (let p = lo; p < hi; p += PAGE_SIZE) this.setPage(r, Math.floor((p - g.start) / PAGE_SIZE), st);
    }
  }

  private setPage(r: number, p: number, s: number): void {
    const st = this.regions[r].state;
    if (p >= 0 && p < st.length) st[p] = s;
  }

  private newRegion(start: number, end: number, sh: string, eh: string, via: string, name: string,
    implicit: boolean): number {
    const pages = Math.max(1, Math.ceil((end - start) / PAGE_SIZE));
    const r = this.regions.length;
    this.regions.push({
      start, end, startHex: sh, endHex: eh, via, name, pages, implicit, faults: 0,
      state: new Uint8Array(Math.min(pages, MAX_PAGES_PER_REGION)),
    });
    this.byStart.push(r);
    this.byStart.sort((a, b) => this.regions[a].start - this.regions[b].start || b - a);
    this.lastRegion = -1;
    this.layoutBands();
    return r;
  }

  /** Bands follow address order; implicit regions without faults get none. */
  layoutBands(): void {
    this.band = new Int32Array(this.regions.length).fill(-1);
    this.bands = [];
    for (const r of this.byStart) {
      const g = this.regions[r];
      if (g.implicit && g.faults === 0) continue;
      this.band[r] = this.bands.length;
      this.bands.push(r);
    }
    for (let i = 0; i < this.n; i++) {
      const r = this.region[i];
      const b = this.band[r];
      this.ycol[i] = b < 0 ? NaN : b + (this.pidx[i] + 0.5) / this.regions[r].pages;
    }
  }

  private regionFor(page: number): number {
    const c = this.lastRegion;
    if (c >= 0 && page >= this.regions[c].start && page < this.regions[c].end) return c;
    // Newest region wins on overlap: scan regions starting at or below `page`, newest first.
    let lo = 0;
    let hi = this.byStart.length;
    while (lo < hi) {
      const m = (lo + hi) >> 1;
      if (this.regions[this.byStart[m]].start <= page) lo = m + 1; else hi = m;
    }
    let best = -1;
    for (let k = lo - 1; k >= 0; k--) {
      const r = this.byStart[k];
      const g = this.regions[r];
      if (page < g.end && r > best) best = r;
      if (lo - k > 64) break;
    }
    if (best < 0) {
      const s = Math.floor(page / IMPLICIT_SPAN) * IMPLICIT_SPAN;
      best = this.newRegion(s, s + IMPLICIT_SPAN, numToHex(s), numToHex(s + IMPLICIT_SPAN), 'unannounced',
        'unannounced', true);
    }
    this.lastRegion = best;
    return best;
  }

  /** First index with t > x. */
  upperBound(x: number): number {
    let lo = 0;
    let hi = this.n;
    while (lo < hi) {
      const m = (lo + hi) >> 1;
      if (this.t[m] <= x) lo = m + 1; else hi = m;
    }
    return lo;
  }

  /** First index with t >= x. */
  lowerBound(x: number): number {
    let lo = 0;
    let hi = this.n;
    while (lo < hi) {
      const m = (lo + hi) >> 1;
      if (this.t[m] < x) lo = m + 1; else hi = m;
    }
    return lo;
  }

  /** Index of the fault with this seq, -1 if none. Seqs grow with time, so search, then scan near. */
  indexOfSeq(seq: number): number {
    let lo = 0;
    let hi = this.n;
    while (lo < hi) {
      const m = (lo + hi) >> 1;
      if (this.seq[m] < seq) lo = m + 1; else hi = m;
    }
    for (let d = 0; d < 64; d++) {
      if (lo + d < this.n && this.seq[lo + d] === seq) return lo + d;
      if (lo - d - 1 >= 0 && this.seq[lo - d - 1] === seq) return lo - d - 1;
    }
    for (let i = 0; i < this.n; i++) if (this.seq[i] === seq) return i;
    return -1;
  }

  /** Address of the page of fault i (4 KiB pages from its region's start; a huge page's first). */
  pageAt(i: number): number {
    return this.regions[this.region[i]].start + this.pidx[i] * PAGE_SIZE;
  }

  /** Time of the `resolved` event of fault i (held, or observed), NaN when it has none (yet). */
  resolvedT(i: number): number {
    if (!(this.flags[i] & FLAG_RESOLVED)) return NaN;
    return this.resolvedAt.get(this.seq[i]) ?? NaN;
  }

  /** y position of fault i: band + page fraction, page 0 at the top of the band. */
  y(i: number): number {
    return this.ycol[i];
  }

  kindName(i: number): (typeof KINDS)[number] {
    return KINDS[this.kind[i]];
  }

  /** The fault at index i as a protocol event (plus its resolution, when it had one). */
  faultEvent(i: number): TimelineFault {
    const e: TimelineFault = {
      event: 'fault', seq: this.seq[i], t: this.t[i], addr: numToHex(this.addr[i]), page: numToHex(this.pageAt(i)),
      access: this.flags[i] & FLAG_WRITE ? 'write' : 'read', kind: this.kindName(i), tid: this.tid[i],
      held: (this.flags[i] & FLAG_HELD) !== 0,
    };
    if (this.pid[i]) e.pid = this.pid[i];
    // A held (or observed) fault's ioctl and latency come with its `resolved` event, not the fault.
    if (!e.held && !(this.flags[i] & FLAG_RESOLVED)) {
      if (this.ioctl[i]) e.ioctl = this.ioctlNames[this.ioctl[i]];
      if (!Number.isNaN(this.lat[i])) e.latencyNs = this.lat[i];
    }
    return e;
  }

  resolvedEvent(i: number): TimelineResolved | null {
    const t = this.resolvedT(i);
    if (Number.isNaN(t)) return null;
    return { event: 'resolved', seq: this.seq[i], t, page: numToHex(this.pageAt(i)),
      ioctl: this.ioctlNames[this.ioctl[i]], latencyNs: this.lat[i] };
  }

  regionEvents(): TimelineRegion[] {
    return this.regions.filter((g) => !g.implicit).map((g) => ({
      event: 'region', action: 'add', region: { start: g.startHex, end: g.endHex, via: g.via, name: g.name },
    }));
  }

  pageStateCounts(): Record<PageState, number> {
    const c = new Float64Array(PAGE_STATES.length);
    for (const g of this.regions) {
      if (g.implicit && g.faults === 0) continue;
      const st = g.state;
      for (let p = 0; p < st.length; p++) c[st[p]]++;
    }
    const out = {} as Record<PageState, number>;
    PAGE_STATES.forEach((s, k) => { out[s] = c[k]; });
    return out;
  }
}
