// Export a session as Chrome Trace Event JSON (opens in Perfetto / chrome://tracing) or CSV, and
// read either back. The exact protocol fields ride along (trace: in args; CSV: one column each),
// so a round trip gives back the same events. No DOM.
import { eventProblem, type TimelineEvent, type TimelineFault, type TimelineNc, type TimelineStuck } from './messages';
import { FaultStore } from './store';

interface TraceEvent {
  name: string;
  cat?: string;
  ph: string;
  ts?: number;
  dur?: number;
  pid?: number;
  tid?: number;
  s?: string;
  args?: Record<string, unknown>;
}

export function exportTrace(st: FaultStore): string {
  const out: TraceEvent[] = [
    { name: 'process_name', ph: 'M', pid: 1, tid: 0, args: { name: 'uffd-debug page faults' } },
  ];
  const t0 = st.n ? st.t[0] / 1000 : 0;
  for (const r of st.regionEvents()) {
    out.push({ name: `region ${r.region.name || r.region.start}`, cat: 'region', ph: 'i', s: 'g', ts: t0, pid: 1,
      tid: 0, args: { ...r.region } });
  }
  for (const r of st.removals) {
    out.push({ name: `region removed ${r.region.name || r.region.start}`, cat: 'region', ph: 'i', s: 'g',
      ts: (r.t ?? 0) / 1000, pid: 1, tid: 0, args: { ...r.region, action: 'remove', t: r.t } });
  }
  for (let i = 0; i < st.n; i++) {
    const f = st.faultEvent(i);
    const lat = st.lat[i];
    const args: Record<string, unknown> = { seq: f.seq, t: f.t, addr: f.addr, page: f.page, kind: f.kind,
      access: f.access, held: f.held, ioctl: st.ioctlNames[st.ioctl[i]] || null,
      latencyNs: Number.isNaN(lat) ? null : lat };
    if (f.pid !== undefined) args.pid = f.pid;
    const rt = st.resolvedT(i);
    if (!Number.isNaN(rt)) args.resolvedT = rt;
    out.push({ name: `${f.kind} ${f.access}`, cat: 'fault', ph: 'X', ts: f.t / 1000,
      dur: Number.isNaN(lat) ? 0 : lat / 1000, pid: 1, tid: f.tid, args });
  }
  for (const m of st.nc) {
    out.push({ name: `nc ${m.what}`, cat: 'nc', ph: 'i', s: 'g', ts: m.t / 1000, pid: 1, tid: 0,
      args: { ...m.ev, t: m.t } });
  }
  for (const { ev } of st.stuck.values()) {
    out.push({ name: 'stuck', cat: 'stuck', ph: 'i', s: 't', ts: ev.t / 1000, pid: 1, tid: ev.tid,
      args: { seq: ev.seq, t: ev.t, page: ev.page, tid: ev.tid, waitedNs: ev.waitedNs } });
  }
  return JSON.stringify({ traceEvents: out, displayTimeUnit: 'ns' });
}

const CSV_COLS = ['type', 'seq', 't_ns', 'addr', 'page', 'access', 'kind', 'tid', 'held', 'ioctl', 'latency_ns',
  'resolved_t_ns', 'start', 'end', 'via', 'name', 'what', 'from', 'to', 'len', 'pid', 'action', 'waited_ns'] as const;
type CsvRow = Partial<Record<(typeof CSV_COLS)[number], string | number | boolean | undefined>>;

function csvCell(v: unknown): string {
  if (v === undefined || v === null) return '';
  const s = String(v);
  return /[",\n\r]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export function exportCsv(st: FaultStore): string {
  const lines = [CSV_COLS.join(',')];
  const row = (r: CsvRow) => lines.push(CSV_COLS.map((c) => csvCell(r[c])).join(','));
  for (const r of st.regionEvents()) {
    row({ type: 'region', start: r.region.start, end: r.region.end, via: r.region.via, name: r.region.name });
  }
  for (const r of st.removals) {
    row({ type: 'region', action: 'remove', t_ns: r.t, start: r.region.start, end: r.region.end, via: r.region.via,
      name: r.region.name });
  }
  for (let i = 0; i < st.n; i++) {
    const f = st.faultEvent(i);
    const lat = st.lat[i];
    row({ type: 'fault', seq: f.seq, t_ns: f.t, addr: f.addr, page: f.page, access: f.access, kind: f.kind,
      tid: f.tid, held: f.held, ioctl: st.ioctlNames[st.ioctl[i]] || undefined,
      latency_ns: Number.isNaN(lat) ? undefined : lat,
      resolved_t_ns: Number.isNaN(st.resolvedT(i)) ? undefined : st.resolvedT(i), pid: f.pid });
  }
  for (const m of st.nc) {
    const e = m.ev;
    row({ type: 'nc', what: e.what, t_ns: m.t, start: e.start, end: e.end, from: e.from, to: e.to, len: e.len,
      pid: e.pid ?? undefined });
  }
  for (const { ev } of st.stuck.values()) {
    row({ type: 'stuck', seq: ev.seq, t_ns: ev.t, page: ev.page, tid: ev.tid, waited_ns: ev.waitedNs });
  }
  return lines.join('\n') + '\n';
}

function parseCsv(text: string): string[][] {
  const rows: string[][] = [];
  let row: string[] = [];
  let cell = '';
  let q = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (q) {
      if (c === '"') {
        if (text[i + 1] === '"') { cell += '"'; i++; } else q = false;
      } else cell += c;
    } else if (c === '"') q = true;
    else if (c === ',') { row.push(cell); cell = ''; }
    else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') i++;
      row.push(cell); cell = '';
      if (row.length > 1 || row[0] !== '') rows.push(row);
      row = [];
    } else cell += c;
  }
  if (cell !== '' || row.length) { row.push(cell); rows.push(row); }
  return rows;
}

const num = (s: unknown): number | undefined => {
  if (s === undefined || s === null || s === '') return undefined;
  const n = Number(s);
  return Number.isFinite(n) ? n : undefined;
};
const str = (s: unknown): string | undefined => (typeof s === 'string' && s !== '' ? s : undefined);

/** Fault (and, for a fault resolved by a later event, held or observed, its `resolved` event) from flat fields. */
function faultFrom(f: Record<string, unknown>, out: TimelineEvent[]): void {
  const held = f.held === true || f.held === 'true';
  const lat = num(f.latencyNs);
  const ioctl = str(f.ioctl);
  const ev: TimelineFault = { event: 'fault', seq: num(f.seq) ?? NaN, t: num(f.t) ?? NaN, addr: String(f.addr),
    page: String(f.page), access: f.access === 'write' ? 'write' : 'read', kind: f.kind as TimelineFault['kind'],
    tid: num(f.tid) ?? NaN, held };
  const pid = num(f.pid);
  if (pid !== undefined) ev.pid = pid;
  const rt = num(f.resolvedT);
  if (!held && rt === undefined) {
    if (ioctl) ev.ioctl = ioctl;
    if (lat !== undefined) ev.latencyNs = lat;
  }
  out.push(ev);
  if (rt !== undefined && lat !== undefined) {
    out.push({ event: 'resolved', seq: ev.seq, t: rt, page: ev.page, ioctl: ioctl ?? '', latencyNs: lat });
  }
}

function stuckFrom(f: Record<string, unknown>): TimelineStuck {
  return { event: 'stuck', seq: num(f.seq) ?? NaN, t: num(f.t) ?? NaN, page: String(f.page), tid: num(f.tid) ?? NaN,
    waitedNs: num(f.waitedNs) ?? NaN };
}

function ncFrom(f: Record<string, unknown>): TimelineNc {
  const e: TimelineNc = { event: 'nc', what: f.what as TimelineNc['what'] };
  const t = num(f.t);
  if (t !== undefined) e.t = t;
  for (const k of ['start', 'end', 'from', 'to', 'len'] as const) {
    const v = str(f[k]);
    if (v) e[k] = v;
  }
  const pid = num(f.pid);
  if (pid !== undefined) e.pid = pid;
  return e;
}

export interface Imported { events: TimelineEvent[]; dropped: number }

/** Regions first, then everything else in time order, as it streamed (page states depend on the
 * order); at equal times resolutions, then nc events, then faults. Invalid events are dropped. */
function finish(all: TimelineEvent[]): Imported {
  const ok = all.filter((e) => eventProblem(e) === null);
  const rank = (e: TimelineEvent) =>
    e.event === 'region' ? (e.action === 'remove' ? 2 : 0) : e.event === 'resolved' ? 1 : e.event === 'nc' ? 2
      : e.event === 'stuck' ? 4 : 3;
  const time = (e: TimelineEvent) =>
    e.event === 'region' ? (e.action === 'remove' ? e.t ?? Infinity : -Infinity) : e.t ?? 0;
  ok.sort((a, b) => time(a) - time(b) || rank(a) - rank(b));
  return { events: ok, dropped: all.length - ok.length };
}

export function importTrace(text: string): Imported {
  const doc = JSON.parse(text) as unknown;
  const list = Array.isArray(doc) ? doc : (doc as { traceEvents?: unknown }).traceEvents;
  if (!Array.isArray(list)) throw new Error('not a Chrome trace: no traceEvents array');
  const out: TimelineEvent[] = [];
  for (const x of list as TraceEvent[]) {
    if (typeof x !== 'object' || x === null) continue;
    const a = (x.args ?? {}) as Record<string, unknown>;
    if (x.cat === 'region') {
      const ev: TimelineEvent = { event: 'region', action: a.action === 'remove' ? 'remove' : 'add',
        region: { start: String(a.start), end: String(a.end), via: String(a.via ?? 'mmap'), name: str(a.name) ?? '' } };
      if (a.action === 'remove' && num(a.t) !== undefined) ev.t = num(a.t);
      out.push(ev);
    } else if (x.cat === 'fault' && x.ph === 'X') {
      // Traces from elsewhere may lack the exact args: fall back to ts/dur (µs) and tid.
      faultFrom({ ...a, t: a.t ?? (x.ts ?? NaN) * 1000, tid: a.tid ?? x.tid,
        latencyNs: a.latencyNs !== undefined ? a.latencyNs : x.dur !== undefined ? x.dur * 1000 : undefined }, out);
    } else if (x.cat === 'nc') {
      out.push(ncFrom({ ...a, t: a.t ?? (x.ts ?? NaN) * 1000 }));
    } else if (x.cat === 'stuck') {
      out.push(stuckFrom({ ...a, t: a.t ?? (x.ts ?? NaN) * 1000, tid: a.tid ?? x.tid }));
    }
  }
  return finish(out);
}

export function importCsv(text: string): Imported {
  const rows = parseCsv(text);
  if (!rows.length) throw new Error('empty CSV');
  const head = rows[0];
  const col = (name: string) => head.indexOf(name);
  if (col('type') < 0 || col('t_ns') < 0) throw new Error('not a uffd-debug CSV: header lacks type, t_ns');
  const out: TimelineEvent[] = [];
  for (const r of rows.slice(1)) {
    const g = (name: string) => { const k = col(name); return k >= 0 ? r[k] : undefined; };
    switch (g('type')) {
      case 'region': {
        const remove = g('action') === 'remove';
        const ev: TimelineEvent = { event: 'region', action: remove ? 'remove' : 'add',
          region: { start: g('start') ?? '', end: g('end') ?? '', via: g('via') || 'mmap', name: g('name') ?? '' } };
        if (remove && num(g('t_ns')) !== undefined) ev.t = num(g('t_ns'));
        out.push(ev);
        break;
      }
      case 'fault':
        faultFrom({ seq: g('seq'), t: g('t_ns'), addr: g('addr'), page: g('page'), access: g('access'),
          kind: g('kind'), tid: g('tid'), held: g('held'), ioctl: g('ioctl'), latencyNs: g('latency_ns'),
          resolvedT: g('resolved_t_ns'), pid: g('pid') }, out);
        break;
      case 'nc':
        out.push(ncFrom({ what: g('what'), t: g('t_ns'), start: g('start'), end: g('end'), from: g('from'),
          to: g('to'), len: g('len'), pid: g('pid') }));
        break;
      case 'stuck':
        out.push(stuckFrom({ seq: g('seq'), t: g('t_ns'), page: g('page'), tid: g('tid'), waitedNs: g('waited_ns') }));
        break;
    }
  }
  return finish(out);
}
