// Collects the events the timeline panel shows and hands them on as TimelineBatch columns, at
// most once per interval: the timeline wants every fault, but a few updates per second, never
// one message per fault, and in a form that costs little to serialize at every hop.
import {
  FaultEvent, FaultsEvent, parseHex, TB_HELD, TB_KIND_SHIFT, TB_WRITE, TIMELINE_BATCH_VERSION, TimelineBatch, TimelineOtherEvent,
} from '../protocol/messages';

/** A helper event the timeline takes, with or without its envelope tag. */
export type TimelineInput =
  | (Omit<FaultEvent, 'type'> & { type?: 'event' })
  | (Omit<FaultsEvent, 'type'> & { type?: 'event' })
  | (TimelineOtherEvent & { type?: 'event' });

function emptyBatch(): TimelineBatch {
  return { v: TIMELINE_BATCH_VERSION, seq: [], t: [], page: [], off: [], flags: [], tid: [], ioctl: [], lat: [], pid: [],
    ioctls: [''], other: [], otherAt: [] };
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/** Builds one TimelineBatch from events in order. */
export class TimelineBatchBuilder {
  private b = emptyBatch();
  private codes = new Map<string, number>();
  private lastSeq = 0;
  private lastT = 0;
  private lastPage = 0;
  private lastTid = 0;
  /** Faults left out because a field had the wrong type (decodeMessage checks less than the panel needs). */
  skipped = 0;

  /** Events in the batch being built. */
  get size(): number {
    return this.b.seq.length + this.b.other.length;
  }

  add(e: TimelineInput): void {
    if (e.event === 'fault') {
      this.addFault(e);
      return;
    }
    if (e.event === 'faults') {
      this.addFaults(e);
      return;
    }
    const { type: _type, ...rest } = e;
    this.b.other.push(rest as TimelineOtherEvent);
    this.b.otherAt.push(this.b.seq.length);
  }

  private addFault(f: Omit<FaultEvent, 'type'>): void {
    const addr = parseHex(f.addr);
    const page = parseHex(f.page);
    const off = addr - page;
    const kind = f.kind === 'missing' ? 0 : f.kind === 'wp' ? 1 : f.kind === 'minor' ? 2 : -1;
    const lat = f.latencyNs;
    const pid = f.pid;
    if (!isNum(f.seq) || !isNum(f.t) || !isNum(f.tid) || !(off >= 0) || page % 4096 !== 0 || kind < 0 ||
        typeof f.held !== 'boolean' ||
        (f.access !== 'read' && f.access !== 'write') || !(lat === undefined || (isNum(lat) && lat >= 0)) ||
        !(pid === undefined || isNum(pid)) || !(f.ioctl === undefined || typeof f.ioctl === 'string')) {
      this.skipped++;
      return;
    }
    const b = this.b;
    b.seq.push(f.seq - this.lastSeq);
    b.t.push(f.t - this.lastT);
    this.lastSeq = f.seq;
    this.lastT = f.t;
    b.page.push(page / 4096 - this.lastPage);
    this.lastPage = page / 4096;
    b.off.push(off);
    b.flags.push((f.access === 'write' ? TB_WRITE : 0) | (f.held ? TB_HELD : 0) | (kind << TB_KIND_SHIFT));
    b.tid.push(f.tid - this.lastTid);
    this.lastTid = f.tid;
    b.ioctl.push(f.ioctl ? this.code(f.ioctl) : 0);
    b.lat.push(lat ?? -1);
    b.pid.push(pid ?? 0);
  }

  /**
   * A helper batch, checked by decodeMessage: its columns step from fault to fault as ours do,
   * so only the first fault's steps are taken from the last fault here, the rest are copied.
   */
  private addFaults(e: Omit<FaultsEvent, 'type'>): void {
    const n = e.seq.length;
    if (n === 0) return;
    const b = this.b;
    const codes = e.ioctls.map((name) => this.code(name));
    let seq = e.seq[0], t = e.t[0], page = e.page[0], tid = e.tid[0];
    b.seq.push(seq - this.lastSeq);
    b.t.push(t - this.lastT);
    b.page.push(page - this.lastPage);
    b.tid.push(tid - this.lastTid);
    for (let k = 1; k < n; k++) {
      seq += e.seq[k];
      t += e.t[k];
      page += e.page[k];
      tid += e.tid[k];
    }
    appendFrom(b.seq, e.seq);
    appendFrom(b.t, e.t);
    appendFrom(b.page, e.page);
    appendFrom(b.tid, e.tid);
    const { off, flags, ioctl, lat, pid } = e;
    for (let k = 0; k < n; k++) {
      b.off.push(off[k]);
      b.flags.push(flags[k] & (TB_WRITE | (3 << TB_KIND_SHIFT))); // never held; the page size is not carried
      b.ioctl.push(codes[ioctl[k]]);
      b.lat.push(lat[k]);
      b.pid.push(pid[k]);
    }
    this.lastSeq = seq;
    this.lastT = t;
    this.lastPage = page;
    this.lastTid = tid;
  }

  private code(ioctl: string): number {
    let c = this.codes.get(ioctl);
    if (c === undefined) {
      c = this.b.ioctls.length;
      this.b.ioctls.push(ioctl);
      this.codes.set(ioctl, c);
    }
    return c;
  }

  /** The batch built so far (null when empty); the next one starts empty. */
  take(): TimelineBatch | null {
    if (this.size === 0) return null;
    const b = this.b;
    this.b = emptyBatch();
    this.codes.clear();
    this.lastSeq = 0;
    this.lastT = 0;
    this.lastPage = 0;
    this.lastTid = 0;
    return b;
  }
}

/** Appends from[1..] to `to`. */
function appendFrom(to: number[], from: number[]): void {
  for (let k = 1; k < from.length; k++) to.push(from[k]);
}

/**
 * Events as batches of at most `per` events (the CLI's report, tests, benches). Lenient in the
 * type of events other than faults (exported or recorded sessions): the panel checks those.
 */
export function encodeTimeline(events: readonly { event: string }[], per = 50000): TimelineBatch[] {
  const out: TimelineBatch[] = [];
  const bb = new TimelineBatchBuilder();
  for (const e of events) {
    bb.add(e as TimelineInput);
    if (bb.size >= per) out.push(bb.take()!);
  }
  const last = bb.take();
  if (last) out.push(last);
  return out;
}

/** Hands on the timeline events pushed, as one batch per interval (or per `maxEvents`). */
export class Batcher {
  private builder = new TimelineBatchBuilder();
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly flushTo: (batch: TimelineBatch) => void, private readonly intervalMs = 250,
    private readonly maxEvents = 50000) {}

  /** Faults left out as malformed so far. */
  get skipped(): number {
    return this.builder.skipped;
  }

  push(e: TimelineInput): void {
    this.builder.add(e);
    if (this.builder.size >= this.maxEvents) this.flush();
    else if (!this.timer) this.timer = setTimeout(() => this.flush(), this.intervalMs);
  }

  /** Hands on what is pending now (before a stop, so the panel shows the held fault at once). */
  flush(): void {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
    const batch = this.builder.take();
    if (batch) this.flushTo(batch);
  }

  dispose(): void {
    this.flush();
  }
}
