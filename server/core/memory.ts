// Reading and writing the debugged program's memory without ever blocking on a page that is
// still missing. /proc/PID/mem goes through the kernel's remote access path, which cannot wait
// for a userfault: on a registered, unpopulated page it fails at once with EIO and raises no
// fault (process_vm_readv would wait for the page like the program's own threads do).
import { closeSync, openSync, readSync, writeSync } from 'node:fs';
import { FaultSession, SessionError } from './session';
import { readPagemap } from './procfs';

const PAGE = 4096n;

export interface MemoryRead {
  /** The readable bytes from the start address. */
  data: Buffer;
  /** Unreadable bytes right after `data` (missing or unmapped pages), 0 when all was read. */
  unreadable: number;
}

/** Splits [addr, addr+count) at page boundaries. */
function* pieces(addr: bigint, count: number): Generator<{ at: bigint; len: number; off: number }> {
  let off = 0;
  while (off < count) {
    const at = addr + BigInt(off);
    const len = Math.min(count - off, Number(PAGE - (at % PAGE)));
    yield { at, len, off };
    off += len;
  }
}

function openMem(pid: number, flags: 'r' | 'r+'): number {
  try {
    return openSync(`/proc/${pid}/mem`, flags);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new SessionError(err.code ?? 'EIO', `cannot open /proc/${pid}/mem (${err.code}: ${err.message}): ` +
      (err.code === 'ENOENT' ? 'the process has exited' : 'the debugger needs ptrace access to the process (run as root or its owner)'));
  }
}

/**
 * Reads up to `count` bytes at `addr`, page by page: the readable prefix, then how many bytes
 * after it cannot be read (the run of missing or unmapped pages, up to the next readable one).
 */
export function readMemory(pid: number, addr: bigint, count: number): MemoryRead {
  const buf = Buffer.alloc(count);
  let got = 0;
  let unreadable = 0;
  const fd = openMem(pid, 'r');
  try {
    for (const p of pieces(addr, count)) {
      let n = 0;
      try {
        n = readSync(fd, buf, p.off, p.len, Number(p.at));
      } catch {
        n = 0; // EIO: a missing page (registered, not populated) or no mapping
      }
      if (unreadable === 0) {
        got += n;
        if (n < p.len) unreadable = p.len - n;
      } else if (n > 0) {
        break; // readable again: the unreadable run ends here
      } else {
        unreadable += p.len;
      }
    }
  } finally {
    closeSync(fd);
  }
  return { data: buf.subarray(0, got), unreadable };
}

export interface MemoryWrite {
  bytesWritten: number;
  /** Held faults resolved by the write (a missing page filled with the written bytes). */
  resolved: number[];
}

/**
 * Writes `data` at `addr`. A page that is present is written through /proc/PID/mem; a missing
 * page with a held fault on it is resolved with a page of zeros carrying the written bytes
 * (UFFDIO_COPY); a missing page with nothing held is filled the same way (the helper's
 * `fill`). Stops at the first page that fails; what was
 * written before stays written (`bytesWritten`).
 */
export async function writeMemory(s: FaultSession, addr: bigint, data: Buffer): Promise<MemoryWrite> {
  const pid = s.pid;
  if (pid === undefined || s.exitInfo) throw new SessionError('ESRCH', 'no process: the program has exited');
  const out: MemoryWrite = { bytesWritten: 0, resolved: [] };
  const fd = openMem(pid, 'r+');
  try {
    for (const p of pieces(addr, data.length)) {
      const page = p.at - (p.at % PAGE);
      const [pm] = readPagemap(pid, page);
      const fault = [...s.held.values()].find((f) => BigInt(f.page) === page && f.kind === 'missing' && f.pid === undefined);
      if (pm && !pm.present && !pm.swapped && fault) {
        if ((fault.pageSize ?? 4096) !== 4096) {
          throw partial(out, new SessionError('EINVAL', `page ${fault.page} is a huge page: writing it from the memory view is not supported; use Resolve Page`));
        }
        const bytes = Buffer.alloc(4096);
        data.copy(bytes, Number(p.at - page), p.off, p.off + p.len);
        try {
          await s.resolve(fault.seq, 'copy', { bytes: bytes.toString('base64') });
        } catch (e) {
          throw partial(out, e as Error);
        }
        out.resolved.push(fault.seq);
        out.bytesWritten += p.len;
        continue;
      }
      let n = -1;
      let why = '';
      try {
        n = writeSync(fd, data, p.off, p.len, Number(p.at));
      } catch (e) {
        why = (e as NodeJS.ErrnoException).code ?? (e as Error).message;
      }
      if (n === p.len) {
        out.bytesWritten += n;
        continue;
      }
      const where = `0x${page.toString(16)}`;
      if (pm && !pm.present && !pm.swapped) {
        // missing, nobody held on it: fill it (a page of zeros carrying the written bytes)
        const bytes = Buffer.alloc(4096);
        data.copy(bytes, Number(p.at - page), p.off, p.off + p.len);
        try {
          await s.fill(page, bytes.toString('base64'));
        } catch (e) {
          throw partial(out, new SessionError((e as { code?: string }).code ?? 'EIO',
            `page ${where} is missing and could not be filled: ${(e as Error).message}`));
        }
        out.bytesWritten += p.len;
        continue;
      }
      if (pm?.uffdWp) {
        throw partial(out, new SessionError('EACCES', `page ${where} is write-protected by the debugger (${why}): resolve its write-protect fault (Resolve Page › Un-protect) or remove the data breakpoint first`));
      }
      throw partial(out, new SessionError('EIO', `cannot write page ${where} (${why || 'short write'}): it is not mapped writable in the process`));
    }
  } finally {
    closeSync(fd);
  }
  return out;
}

/** An error that carries how much was written before it. */
export interface PartialWriteError extends Error { bytesWritten: number; resolved: number[] }

function partial(out: MemoryWrite, e: Error): PartialWriteError {
  return Object.assign(e, { bytesWritten: out.bytesWritten, resolved: out.resolved });
}
