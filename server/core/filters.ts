// Exception breakpoint filters with conditions: one filter per fault kind and per
// non-cooperative event. A condition narrows where a filter stops (address ranges or mapping
// names, threads, hit counts). What the helper's policy can express goes there, so unwanted
// faults stay in the helper; the rest is checked here, only for faults the helper handed over.
import { AddrRange, FaultEvent, FaultKind, NcEvent, NcWhat } from '../protocol/messages';

export type FilterId = FaultKind | NcWhat;
export const FAULT_FILTERS: readonly FaultKind[] = ['missing', 'wp', 'minor'];
export const EVENT_FILTERS: readonly NcWhat[] = ['fork', 'remap', 'remove', 'unmap'];

export const CONDITION_SYNTAX =
  'space-separated terms, all of which must hold: an address range 0xSTART-0xEND, a mapping name ' +
  '([heap], [stack], or part of a path such as libc.so or /tmp/data; name=TEXT for any other text), ' +
  'tid=N (fault filters only), and one hit count: hit>=N (from the Nth match on), hit=N (only the Nth) ' +
  'or every=N (every Nth match). Example: [heap] tid=1234 hit>=3';

export interface HitCount { op: '>=' | '=' | 'every'; n: number }

export interface FilterCondition {
  /** Half-open address ranges; the location matches when it is in any of them or any name matches. */
  ranges: [bigint, bigint][];
  /** Mapping names: `[heap]` matches exactly, other text is a substring of the mapping's path. */
  names: string[];
  tids: number[];
  hit: HitCount | null;
}

export class ConditionError extends Error {}

const EMPTY: FilterCondition = { ranges: [], names: [], tids: [], hit: null };

/** Parses a filter condition; throws a ConditionError naming the accepted syntax. */
export function parseCondition(text: string, id: FilterId): FilterCondition {
  const c: FilterCondition = { ranges: [], names: [], tids: [], hit: null };
  const bad = (term: string, why: string) =>
    new ConditionError(`'${term}' ${why}. A condition is ${CONDITION_SYNTAX}`);
  for (const term of text.trim().split(/\s+/).filter((t) => t.length > 0)) {
    let m: RegExpExecArray | null;
    if ((m = /^(0x[0-9a-f]+)-(0x[0-9a-f]+)$/i.exec(term))) {
      const start = BigInt(m[1]), end = BigInt(m[2]);
      if (end <= start) throw bad(term, 'is an empty range (the end must be above the start)');
      c.ranges.push([start, end]);
    } else if ((m = /^tid=(\d+)$/.exec(term))) {
      if (!FAULT_FILTERS.includes(id as FaultKind)) throw bad(term, `does not apply to '${id}' events: they carry no thread`);
      const tid = Number(m[1]);
      if (tid <= 0) throw bad(term, 'is not a thread id');
      c.tids.push(tid);
    } else if ((m = /^(hit>=|hit=|every=)(\d+)$/.exec(term))) {
      if (c.hit) throw bad(term, 'is a second hit count (give one)');
      const n = Number(m[2]);
      if (!Number.isSafeInteger(n) || n < 1) throw bad(term, 'needs a count of 1 or more');
      c.hit = { op: m[1] === 'hit>=' ? '>=' : m[1] === 'hit=' ? '=' : 'every', n };
    } else if ((m = /^name=(.+)$/.exec(term))) {
      c.names.push(m[1]);
    } else if (/^\[.+\]$/.test(term) || term.includes('/') || term.includes('.')) {
      c.names.push(term);
    } else {
      throw bad(term, 'is not a condition term');
    }
  }
  return c;
}

/** True when `name` (a mapping path or [heap]-style name) is what the condition's `want` means. */
export function nameMatches(want: string, name: string): boolean {
  return want.startsWith('[') ? name === want : name.includes(want);
}

export interface ActiveFilter {
  id: FilterId;
  text: string;
  condition: FilterCondition;
  /** Matches seen here (conditions counted in core). */
  matches: number;
  /** hit=N reached: the filter stops no more. */
  spent: boolean;
  /** hit>=N reached. */
  reached: boolean;
}

export interface FilterRequest { id: string; condition?: string }
export interface FilterResult { verified: boolean; message?: string }

/** Where a fault or event is: its mapping's name, when known. */
export type NameAt = (addr: bigint) => string | undefined;

/** The part of the helper's policy the filters decide. */
export interface FilterPolicy {
  hold: Record<FaultKind, boolean>;
  /** null: no restriction (every source of stops has none). */
  ranges: [bigint, bigint][] | null;
  tids: number[] | null;
  /** The helper counts `every`/`hit` itself (one filter is the only source of stops). */
  every: number;
}

export class FilterSet {
  private active = new Map<FilterId, ActiveFilter>();

  /**
   * Replaces the enabled filters. One result per request, in order; a bad id or condition is
   * `verified: false` with a message, and that filter is not enabled.
   */
  set(requests: FilterRequest[]): FilterResult[] {
    const next = new Map<FilterId, ActiveFilter>();
    const results = requests.map((r): FilterResult => {
      const id = r.id as FilterId;
      if (!FAULT_FILTERS.includes(id as FaultKind) && !EVENT_FILTERS.includes(id as NcWhat)) {
        return { verified: false, message: `unknown filter '${r.id}': ${[...FAULT_FILTERS, ...EVENT_FILTERS].join(', ')}` };
      }
      const text = (r.condition ?? '').trim();
      try {
        const condition = text ? parseCondition(text, id) : EMPTY;
        const old = this.active.get(id);
        const same = old && old.text === text;
        next.set(id, {
          id, text, condition, matches: same ? old.matches : 0, spent: same ? old.spent : false, reached: same ? old.reached : false,
        });
        return text ? { verified: true, message: `stops where: ${text}` } : { verified: true };
      } catch (e) {
        return { verified: false, message: (e as Error).message };
      }
    });
    this.active = next;
    return results;
  }

  get(id: FilterId): ActiveFilter | undefined {
    return this.active.get(id);
  }

  list(): ActiveFilter[] {
    return [...this.active.values()];
  }

  /** Fault filters still able to stop. */
  private faultFilters(): ActiveFilter[] {
    return this.list().filter((f) => FAULT_FILTERS.includes(f.id as FaultKind) && !f.spent);
  }

  hasNames(): boolean {
    return this.list().some((f) => f.condition.names.length > 0);
  }

  /**
   * The policy for the fault filters. `rangesOfNames` turns mapping names into the ranges of
   * the mappings that carry them now (re-applied when regions change). `otherSources`: data
   * breakpoints also hold faults (then the helper cannot count hits for one filter).
   */
  policy(rangesOfNames: (names: string[]) => [bigint, bigint][], otherSources: boolean): FilterPolicy {
    const filters = this.faultFilters();
    const hold: Record<FaultKind, boolean> = { missing: false, wp: false, minor: false };
    for (const f of filters) hold[f.id as FaultKind] = true;
    let ranges: [bigint, bigint][] | null = [];
    let tids: number[] | null = [];
    for (const f of filters) {
      const c = f.condition;
      if (ranges && (c.ranges.length > 0 || c.names.length > 0)) {
        ranges.push(...c.ranges, ...(c.names.length > 0 ? rangesOfNames(c.names) : []));
      } else {
        ranges = null;
      }
      if (tids && c.tids.length > 0) tids.push(...c.tids);
      else tids = null;
    }
    if (filters.length === 0) {
      ranges = null;
      tids = null;
    }
    let every = 0;
    if (filters.length === 1 && !otherSources) {
      const h = filters[0].condition.hit;
      if (h && !(h.op === '>=' && filters[0].reached)) every = h.n;
    }
    return { hold, ranges, tids, every };
  }

  /** True when the helper counts hits (see `policy`); then a held fault already met the count. */
  private helperCounts(otherSources: boolean): boolean {
    return this.faultFilters().length === 1 && !otherSources;
  }

  /**
   * Whether a fault the helper held is a stop for its kind's filter: location and thread are
   * checked, and the hit count when the helper does not keep it. Counts the match.
   * Returns the filter that stops, or undefined.
   */
  matchFault(f: FaultEvent, nameAt: NameAt, otherSources: boolean): ActiveFilter | undefined {
    const a = this.active.get(f.kind);
    if (!a || a.spent) return undefined;
    const c = a.condition;
    if (c.tids.length > 0 && !c.tids.includes(f.tid)) return undefined;
    if (!locationMatches(c, BigInt(f.addr), BigInt(f.addr) + 1n, nameAt)) return undefined;
    if (this.helperCounts(otherSources) && c.hit) {
      // The helper held the Nth match: this is it.
      if (c.hit.op === '=') a.spent = true;
      if (c.hit.op === '>=') a.reached = true;
      return a;
    }
    return countHit(a) ? a : undefined;
  }

  /** Whether an event's filter stops on it (location and hit count, all counted here). */
  matchEvent(e: NcEvent, nameAt: NameAt): ActiveFilter | undefined {
    const a = this.active.get(e.what);
    if (!a || a.spent) return undefined;
    const [start, end] = eventRange(e);
    if (start !== null && end !== null) {
      if (!locationMatches(a.condition, start, end, nameAt)) return undefined;
    } else if (a.condition.ranges.length > 0 || a.condition.names.length > 0) {
      return undefined;
    }
    return countHit(a) ? a : undefined;
  }
}

function countHit(a: ActiveFilter): boolean {
  const h = a.condition.hit;
  a.matches++;
  if (!h) return true;
  if (h.op === '>=') return a.matches >= h.n;
  if (h.op === 'every') return a.matches % h.n === 0;
  if (a.matches === h.n) {
    a.spent = true;
    return true;
  }
  return false;
}

/** The location part of a condition against [start, end) (a fault: one byte; an event: its range). */
function locationMatches(c: FilterCondition, start: bigint, end: bigint, nameAt: NameAt): boolean {
  if (c.ranges.length === 0 && c.names.length === 0) return true;
  if (c.ranges.some(([s, e]) => start < e && end > s)) return true;
  if (c.names.length === 0) return false;
  const name = nameAt(start);
  return name !== undefined && c.names.some((n) => nameMatches(n, name));
}

/** The memory an event is about: unmap/remove their range, remap where it came from. */
export function eventRange(e: NcEvent): [bigint | null, bigint | null] {
  if (e.start && e.end) return [BigInt(e.start), BigInt(e.end)];
  if (e.from && e.len) return [BigInt(e.from), BigInt(e.from) + BigInt(e.len)];
  return [null, null];
}

export function describeEvent(e: NcEvent): string {
  switch (e.what) {
    case 'fork': return `fork (child ${e.pid ?? 'not found'}${e.followed === false ? ', not followed' : ''})`;
    case 'remap': return `mremap of ${e.len} bytes from ${e.from} to ${e.to}`;
    case 'remove': return `madvise remove of ${e.start}-${e.end}`;
    case 'unmap': return `munmap of ${e.start}-${e.end}`;
  }
}

/** Ranges for the helper, merged and capped at its limit of 32. */
export function toHoldRanges(ranges: [bigint, bigint][], max = 32): AddrRange[] {
  const sorted = [...ranges].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const merged: [bigint, bigint][] = [];
  for (const r of sorted) {
    const last = merged[merged.length - 1];
    if (last && r[0] <= last[1]) last[1] = r[1] > last[1] ? r[1] : last[1];
    else merged.push([r[0], r[1]]);
  }
  // Too many for the helper: join the closest neighbours (holding more, checked here after).
  while (merged.length > max) {
    let best = 1;
    for (let i = 2; i < merged.length; i++) {
      if (merged[i][0] - merged[i - 1][1] < merged[best][0] - merged[best - 1][1]) best = i;
    }
    merged[best - 1][1] = merged[best][1];
    merged.splice(best, 1);
  }
  return merged.map(([s, e]) => ({ start: '0x' + s.toString(16), end: '0x' + e.toString(16) }));
}
