// Per registered region: faults seen, pages resolved, pages evicted (madvise remove), from the
// helper's own events. The Region scope shows them; nothing here asks the helper anything.
import { FaultEvent, FaultKind, NcEvent, Region, ResolvedEvent } from '../protocol/messages';

export interface RegionCount {
  faults: Record<FaultKind, number>;
  /** Faults resolved (by the helper's policy or by hand); a page resolved again after an eviction counts again. */
  resolved: number;
  /** Pages dropped by madvise(MADV_DONTNEED/REMOVE): they fault again on the next touch. */
  evicted: number;
}

interface Entry { start: bigint; end: bigint; key: string }

export class RegionCounters {
  private sorted: Entry[] = [];
  private counts = new Map<string, RegionCount>();

  /** The regions now registered (counts of regions still there are kept). */
  setRegions(regions: Region[]): void {
    this.sorted = regions
      .map((r) => ({ start: BigInt(r.start), end: BigInt(r.end), key: keyOf(r) }))
      .sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  }

  /** The counters of a region (zeros when nothing happened there yet). */
  get(r: Region): RegionCount {
    return this.counts.get(keyOf(r)) ?? { faults: { missing: 0, wp: 0, minor: 0 }, resolved: 0, evicted: 0 };
  }

  onFault(f: FaultEvent): void {
    if (f.pid !== undefined) return; // a followed child's memory is not the program's regions
    this.count(BigInt(f.page), f.kind, !f.held);
  }

  /** A fault of the program's on the page at `page` (the helper's batches give it as a number). */
  count(page: bigint, kind: FaultKind, resolved: boolean): void {
    const c = this.countAt(page);
    if (!c) return;
    c.faults[kind]++;
    if (resolved) c.resolved++;
  }

  onResolved(f: FaultEvent, e: ResolvedEvent): void {
    if (f.pid !== undefined || e.ioctl === 'UNMAPPED' || e.ioctl === 'REMAPPED') return;
    const c = this.countAt(BigInt(e.page));
    if (c) c.resolved++;
  }

  onEvent(e: NcEvent): void {
    if (e.what !== 'remove' || !e.start || !e.end || e.source !== undefined) return;
    const s = BigInt(e.start), end = BigInt(e.end);
    for (const r of this.sorted) {
      const lo = r.start > s ? r.start : s;
      const hi = r.end < end ? r.end : end;
      if (hi > lo) this.entry(r.key).evicted += Number((hi - lo) / 4096n);
    }
  }

  private countAt(addr: bigint): RegionCount | undefined {
    let lo = 0;
    let hi = this.sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.sorted[mid].start <= addr) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo - 1; i >= 0 && i >= lo - 8; i--) {
      const r = this.sorted[i];
      if (addr < r.end) return this.entry(r.key);
    }
    return undefined;
  }

  private entry(key: string): RegionCount {
    let c = this.counts.get(key);
    if (!c) {
      c = { faults: { missing: 0, wp: 0, minor: 0 }, resolved: 0, evicted: 0 };
      this.counts.set(key, c);
    }
    return c;
  }
}

function keyOf(r: Region): string {
  return `${r.start}-${r.end}`;
}
