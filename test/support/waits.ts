// Waits shared by the tests: every one has a deadline and says what it waited for.
import { existsSync, readFileSync } from 'node:fs';

export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p.finally(() => clearTimeout(timer)),
    new Promise<T>((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms); }),
  ]);
}

/** Polls `cond` every `everyMs` until it holds; fails after `ms`. */
export async function until(cond: () => boolean, ms: number, what: string, everyMs = 10): Promise<void> {
  const deadline = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/** Waits until PID no longer exists (a zombie counts as gone only once reaped). */
export async function waitGone(pid: number, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (existsSync(`/proc/${pid}`)) {
    if (Date.now() > deadline) {
      let status = '';
      try {
        status = readFileSync(`/proc/${pid}/status`, 'utf8').split('\n').slice(0, 3).join(' ');
      } catch {
        // reaped just now
      }
      throw new Error(`process ${pid} still exists: ${status}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
