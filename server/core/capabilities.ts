// What this kernel and this session can do, from the helper's handshake and the features
// negotiated at launch/attach: which exception filters make sense, and which resolutions a
// held fault can take. The adapter hides the rest from the UI.
import { FaultEvent, FlagSet, NcWhat } from '../protocol/messages';

export type FilterId = 'missing' | 'wp' | 'minor' | NcWhat;

/** Filters the negotiated features allow (a fork filter only when forks are followed). */
export function availableFilters(features: FlagSet): FilterId[] {
  const has = (n: string) => features.names.includes(n);
  const out: FilterId[] = ['missing'];
  if (has('PAGEFAULT_FLAG_WP')) out.push('wp');
  if (has('MINOR_SHMEM') || has('MINOR_HUGETLBFS')) out.push('minor');
  if (has('EVENT_FORK')) out.push('fork');
  if (has('EVENT_REMAP')) out.push('remap');
  if (has('EVENT_REMOVE')) out.push('remove');
  if (has('EVENT_UNMAP')) out.push('unmap');
  return out;
}

/**
 * Ways to resolve a held fault by hand, as the Resolve Page… picker names them: `default`,
 * `zero`, `copy-pattern`, `copy-file`, `copy-bytes`, `move`, `continue`, `unprotect`,
 * `poison`, `wake`. Each is one the kernel accepts for that fault's kind and page.
 */
export function resolutionsFor(f: Pick<FaultEvent, 'kind' | 'pageSize'>, features: FlagSet): string[] {
  const has = (n: string) => features.names.includes(n);
  const huge = (f.pageSize ?? 4096) !== 4096;
  switch (f.kind) {
    case 'missing':
      return [
        'default', ...(huge ? [] : ['zero']), 'copy-pattern', 'copy-file', 'copy-bytes',
        ...(has('MOVE') && !huge ? ['move'] : []), ...(has('POISON') ? ['poison'] : []), 'wake',
      ];
    case 'wp':
      return ['default', 'unprotect', 'wake'];
    case 'minor':
      return ['default', 'continue', ...(has('POISON') ? ['poison'] : []), 'wake'];
  }
}
