// Figures for the end of a session: faults by kind and by region, resolution latency
// percentiles. Used by the CLI; fed with the session's fault events.
import { FaultEvent, FaultKind, Region } from '../protocol/messages';

export interface RegionCount { label: string; faults: number }

export interface Summary {
  total: number;
  byKind: Record<FaultKind, number>;
  byRegion: RegionCount[];
  latencyUs: { p50: number; p99: number; max: number } | null;
  elapsedMs: number;
}

export class SummaryCollector {
  private byKind: Record<FaultKind, number> = { missing: 0, wp: 0, minor: 0 };
  private latencies: number[] = [];
  private regionCounts = new Map<number, number>();
  private unmatched = 0;
  private sorted: { start: bigint; end: bigint; index: number }[] = [];
  private total = 0;

  constructor(private regions: Region[], private readonly startedAt = process.hrtime.bigint()) {
    this.reindex();
  }

  addRegion(r: Region): void {
    this.regions.push(r);
    this.reindex();
  }

  private reindex(): void {
    this.sorted = this.regions
      .map((r, index) => ({ start: BigInt(r.start), end: BigInt(r.end), index }))
      .sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  }

  add(f: FaultEvent): void {
    this.total++;
    this.byKind[f.kind]++;
    if (f.latencyNs !== undefined) this.latencies.push(f.latencyNs);
    const idx = this.regionOf(BigInt(f.page));
    if (idx === undefined) this.unmatched++;
    else this.regionCounts.set(idx, (this.regionCounts.get(idx) ?? 0) + 1);
  }

  addLatency(ns: number): void {
    this.latencies.push(ns);
  }

  /** The newest registration that covers `page` (later registrations may overlap older ones). */
  private regionOf(page: bigint): number | undefined {
    let best: number | undefined;
    let lo = 0;
    let hi = this.sorted.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (this.sorted[mid].start <= page) lo = mid + 1;
      else hi = mid;
    }
    for (let i = lo - 1; i >= 0; i--) {
      const r = this.sorted[i];
      if (page < r.end && (best === undefined || r.index > best)) best = r.index;
    }
    return best;
  }

  summary(): Summary {
    const lat = Float64Array.from(this.latencies).sort();
    const pct = (p: number) => lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))] / 1000;
    const byRegion: RegionCount[] = [...this.regionCounts.entries()]
      .map(([i, faults]) => ({ label: regionLabel(this.regions[i]), faults }))
      .sort((a, b) => b.faults - a.faults);
    if (this.unmatched > 0) byRegion.push({ label: '(outside registered regions)', faults: this.unmatched });
    return {
      total: this.total,
      byKind: { ...this.byKind },
      byRegion,
      latencyUs: lat.length > 0 ? { p50: pct(50), p99: pct(99), max: lat[lat.length - 1] / 1000 } : null,
      elapsedMs: Number(process.hrtime.bigint() - this.startedAt) / 1e6,
    };
  }
}

export function regionLabel(r: Region): string {
  const name = r.name && r.name.length > 0 ? r.name : r.via === 'exec' ? '[anon]' : r.via;
  const kib = Number((BigInt(r.end) - BigInt(r.start)) / 1024n);
  return `${name} ${r.start}-${r.end} (${kib} KiB)`;
}

export function formatSummary(s: Summary, exit: string): string {
  const lines = [
    `--- uffd-debug summary: ${exit}`,
    `faults: ${s.total} (missing ${s.byKind.missing}, write-protect ${s.byKind.wp}, minor ${s.byKind.minor})`,
  ];
  if (s.byRegion.length > 0) {
    lines.push('by region:');
    for (const r of s.byRegion.slice(0, 10)) lines.push(`  ${String(r.faults).padStart(8)}  ${r.label}`);
    if (s.byRegion.length > 10) lines.push(`  ... ${s.byRegion.length - 10} more regions`);
  }
  if (s.latencyUs) {
    lines.push(`resolution latency: p50 ${s.latencyUs.p50.toFixed(1)} µs, p99 ${s.latencyUs.p99.toFixed(1)} µs, max ${s.latencyUs.max.toFixed(1)} µs`);
  }
  lines.push(`total time: ${s.elapsedMs.toFixed(1)} ms`);
  return lines.join('\n');
}
