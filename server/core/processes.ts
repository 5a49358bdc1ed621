// The process list for "Attach to Process…": name, PID, user, RSS, command line, from /proc.
import { readFileSync, readdirSync } from 'node:fs';
import { parseStat } from './procfs';

export interface ProcessInfo {
  pid: number;
  name: string;
  user: string;
  rssKiB: number;
  cmdline: string;
  state: string;
}

/** uid → user name from an /etc/passwd text. */
export function parsePasswd(text: string): Map<number, string> {
  const users = new Map<number, string>();
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length >= 3 && /^\d+$/.test(f[2])) users.set(Number(f[2]), f[0]);
  }
  return users;
}

function readUsers(): Map<number, string> {
  try {
    return parsePasswd(readFileSync('/etc/passwd', 'utf8'));
  } catch {
    return new Map();
  }
}

/**
 * User processes that could be attached to: kernel threads (empty cmdline, no memory) and
 * zombies are left out, and so is `exclude` (the caller itself).
 */
export function listProcesses(exclude: number[] = [process.pid]): ProcessInfo[] {
  const users = readUsers();
  const out: ProcessInfo[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const pid = Number(entry);
    if (exclude.includes(pid)) continue;
    try {
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter((s) => s).join(' ');
      if (cmdline.length === 0) continue; // kernel thread, or a zombie
      const stat = parseStat(readFileSync(`/proc/${pid}/stat`, 'utf8'));
      if (stat.state === 'Z' || stat.state === 'X') continue;
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const uid = Number(/^Uid:\s+(\d+)/m.exec(status)?.[1] ?? -1);
      const rssKiB = Number(/^VmRSS:\s+(\d+)/m.exec(status)?.[1] ?? 0);
      out.push({ pid, name: stat.name, user: users.get(uid) ?? String(uid), rssKiB, cmdline, state: stat.state });
    } catch {
      // exited while we looked, or not ours to read
    }
  }
  return out.sort((a, b) => b.pid - a.pid);
}

export function formatRss(kib: number): string {
  return kib >= 1024 * 1024 ? `${(kib / 1024 / 1024).toFixed(1)} GiB` : kib >= 1024 ? `${(kib / 1024).toFixed(1)} MiB` : `${kib} KiB`;
}
