// The Region scope of a stopped fault: what the debugger tracks where the fault is, the policy
// in force, and the session's own counters for that region. Plain name/value pairs; the
// adapter only wraps them.
import { FaultEvent, Policy, Region } from '../protocol/messages';
import { FaultSession } from './session';
import { findVma, hex, readSmaps, SmapsEntry, uffdModes } from './procfs';
import { regionLabel } from './summary';

export interface InfoVariable {
  name: string;
  value: string;
  /** An address the variable denotes (DAP memoryReference). */
  memory?: string;
}

/** The newest registered region that holds `addr` (later registrations may overlap older ones). */
export function regionAt(regions: Region[], addr: bigint): Region | undefined {
  for (let i = regions.length - 1; i >= 0; i--) {
    const r = regions[i];
    if (addr >= BigInt(r.start) && addr < BigInt(r.end)) return r;
  }
  return undefined;
}

const VIA: Record<Region['via'], string> = {
  exec: 'at program start (private anonymous mapping)',
  brk: 'when brk grew the heap',
  mmap: 'when the program mapped it (mmap)',
  mremap: 'when the program resized it (mremap)',
  attach: 'at attach',
  track: 'by the track command',
  scan: 'found by the attach rescan of maps',
  untrack: 'unregistered',
  unmap: 'unmapped',
  remap: 'moved by mremap (registration kept)',
  observe: 'by the observed program itself (UFFDIO_REGISTER on its own userfaultfd)',
};

export function describePolicy(p: Policy | null): string {
  if (!p) return 'not set yet';
  const kinds = (['missing', 'wp', 'minor'] as const).filter((k) => p.hold[k]);
  const parts = [kinds.length ? `hold ${kinds.join(', ')}` : 'hold nothing (resolved in the helper)'];
  if (p.holdRange.length) parts.push(`in ${p.holdRange.length} range${p.holdRange.length === 1 ? '' : 's'}`);
  if (p.holdTid.length) parts.push(`threads ${p.holdTid.join(', ')}`);
  if (p.holdEvery > 1) parts.push(`every ${p.holdEvery}th`);
  if (p.holdNext) parts.push('and the next fault');
  if (p.readAhead > 1) parts.push(`read-ahead ${p.readAhead} pages`);
  if (p.delayUs) parts.push(`delay ${p.delayUs.min}-${p.delayUs.max} µs`);
  parts.push(`stream ${p.stream}`);
  return parts.join('; ');
}

/** `smaps`: the process's smaps as already read for this stop (read here when not given). */
export function regionVariables(s: FaultSession, f: FaultEvent, smaps?: SmapsEntry[]): InfoVariable[] {
  const addr = BigInt(f.addr);
  const r = regionAt(s.regions, addr);
  if (!r) return [{ name: 'region', value: 'not in a region the debugger registered (registered by hand, or by a followed child)' }];
  const start = BigInt(r.start), end = BigInt(r.end);
  const pages = (end - start) / 4096n;
  const c = s.counters.get(r);
  const pendingPages = new Set([...s.held.values()].filter((h) => {
    const p = BigInt(h.page);
    return p >= start && p < end;
  }).map((h) => h.page));
  let modes = '';
  try {
    const v = s.pid !== undefined ? findVma(smaps ?? readSmaps(s.pid), addr) : undefined;
    modes = v ? uffdModes(v.vmFlags).join(', ') || 'none (unregistered since?)' : 'no mapping';
  } catch {
    modes = 'unknown (process gone)';
  }
  const filters = s.filterSet.list().map((x) => (x.text ? `${x.id} [${x.text}]` : x.id));
  const watches = s.watchList.filter((w) => w.start < end && w.end > start);
  return [
    { name: 'range', value: regionLabel(r), memory: hex(start) },
    { name: 'start', value: hex(start), memory: hex(start) },
    { name: 'name', value: r.name && r.name.length > 0 ? r.name : '[anon]' },
    { name: 'registered', value: `via ${r.via}: ${VIA[r.via] ?? r.via}` },
    { name: 'userfaultfd modes', value: modes },
    { name: 'policy', value: describePolicy(s.policy) },
    { name: 'filters', value: filters.length ? filters.join(', ') : 'none (Continue runs to the end)' },
    { name: 'data breakpoints here', value: watches.length ? watches.map((w) => `${hex(w.start)}-${hex(w.end)} ${w.access}`).join(', ') : 'none' },
    { name: 'pages', value: String(pages) },
    { name: 'faults seen', value: `${c.faults.missing + c.faults.wp + c.faults.minor} (missing ${c.faults.missing}, wp ${c.faults.wp}, minor ${c.faults.minor})` },
    { name: 'pages resolved', value: String(c.resolved) },
    { name: 'pages pending', value: `${pendingPages.size} (held now)` },
    { name: 'pages evicted', value: String(c.evicted) },
  ];
}
