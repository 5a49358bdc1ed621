// What an attach can track, as a list to pick from: the target's VMAs that userfaultfd can
// register (private anonymous, shared memory, hugetlbfs), each with its size, path and a
// summary of its VmFlags. The extension shows it; the choice becomes the `track` setting.
import { AddrRange } from '../protocol/messages';
import { hex, SmapsEntry, vmaName } from './procfs';

export interface VmaChoice {
  label: string;
  description: string;
  detail: string;
  /** 'anon' for the default entry, otherwise the VMA's range. */
  track: 'anon' | AddrRange;
  picked: boolean;
}

const SPECIAL = new Set(['[vvar]', '[vvar_vclock]', '[vdso]', '[vsyscall]', '[uprobes]']);

/** Whether userfaultfd can register this VMA (missing mode): anonymous, shmem or hugetlbfs memory. */
export function registrable(v: SmapsEntry): boolean {
  if (SPECIAL.has(v.path)) return false;
  if (v.vmFlags.includes('ht')) return true;
  if (v.inode === 0) return true; // private or shared anonymous, [heap], [stack], [anon:name]
  // shmem: /dev/shm files, memfd, SysV segments
  return v.perms[3] === 's' && (v.path.startsWith('/dev/shm/') || v.path.startsWith('/memfd:') || v.path.startsWith('/SYSV'));
}

export function formatSize(bytes: bigint): string {
  const kib = Number(bytes / 1024n);
  if (kib < 1024) return `${kib} KiB`;
  if (kib < 1024 * 1024) return `${(kib / 1024).toFixed(kib < 10 * 1024 ? 1 : 0)} MiB`;
  return `${(kib / 1024 / 1024).toFixed(1)} GiB`;
}

/** A few words on the VmFlags that matter when choosing what to track. */
export function flagSummary(v: SmapsEntry): string {
  const f = new Set(v.vmFlags);
  const parts: string[] = [];
  parts.push(f.has('sh') ? 'shared' : 'private');
  if (f.has('gd')) parts.push('stack (grows down)');
  if (f.has('ht')) parts.push('hugetlb');
  if (f.has('lo')) parts.push('locked');
  if (f.has('dc')) parts.push('not copied on fork');
  if (f.has('hg')) parts.push('THP advised');
  const uffd = ['um', 'uw', 'ui'].filter((c) => f.has(c));
  if (uffd.length) parts.push(`already registered with a userfaultfd (${uffd.join(' ')}): attach gets EBUSY unless it is ours`);
  return `${parts.join(', ')} · VmFlags ${v.vmFlags.join(' ')}`;
}

/** The picker's entries: "all private anonymous (default)" first, then each registrable VMA. */
export function vmaChoices(smaps: SmapsEntry[]): VmaChoice[] {
  const anon = smaps.filter((v) => v.inode === 0 && v.perms[3] === 'p' && !SPECIAL.has(v.path));
  const anonBytes = anon.reduce((n, v) => n + (v.end - v.start), 0n);
  const out: VmaChoice[] = [{
    label: 'All private anonymous memory (default)',
    description: `${anon.length} VMAs, ${formatSize(anonBytes)}`,
    detail: 'heap, stacks, anonymous mmaps, and new anonymous mappings as they appear',
    track: 'anon',
    picked: true,
  }];
  for (const v of smaps) {
    if (!registrable(v)) continue;
    out.push({
      label: vmaName(v),
      description: `${formatSize(v.end - v.start)} ${v.perms} · Rss ${v.counters.Rss ?? 0} kB`,
      detail: `${hex(v.start)}-${hex(v.end)} · ${flagSummary(v)}`,
      track: { start: hex(v.start), end: hex(v.end) },
      picked: false,
    });
  }
  return out;
}

/** The `track` value for what was picked: "anon" when the default is among them, else the ranges. */
export function trackFromChoices(picked: VmaChoice[]): 'anon' | AddrRange[] | undefined {
  if (picked.length === 0) return undefined;
  if (picked.some((c) => c.track === 'anon')) return 'anon';
  return picked.map((c) => c.track as AddrRange);
}
