// Client side of the helper protocol: spawns the native helper, frames JSON lines, matches
// responses to requests, and emits the helper's events. Knows nothing of DAP or VS Code.
import { spawn, ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { StringDecoder } from 'node:string_decoder';
import {
  Command, decodeMessage, encodeRequest, ErrorInfo, HelperEvent, HelloBody, PROTOCOL_VERSION, Requests,
} from '../protocol/messages';

export class HelperError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = 'HelperError';
  }
}

/** Where the helper binary is: UFFD_HELPER, or next to the bundle / the sources. */
export function findHelper(): string {
  const fromEnv = process.env.UFFD_HELPER;
  if (fromEnv) return fromEnv;
  const candidates = [
    path.join(__dirname, '..', 'server', 'native', 'bin', 'uffd-helper'), // dist/*.js
    path.join(__dirname, '..', 'native', 'bin', 'uffd-helper'), // server/core/*.ts
  ];
  for (const c of candidates) if (existsSync(c)) return c;
  throw new HelperError('ENOENT',
    `the native helper was not found (looked in ${candidates.join(', ')}); run 'npm run build' to build it`);
}

interface Pending { cmd: string; resolve: (v: unknown) => void; reject: (e: Error) => void }

export interface HelperClientEvents {
  event: [HelperEvent];
  log: [string];
  output: ['stdout' | 'stderr', string];
  exit: [number | null, string | null];
}

export class HelperClient extends EventEmitter<HelperClientEvents> {
  private proc: ChildProcess | null = null;
  private nextId = 1;
  private pending = new Map<number, Pending>();
  private buf = '';
  private logTail: string[] = [];
  private exited = false;
  /** One per stream: a UTF-8 character may be split across two output events. */
  private decoders = { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') };
  exitCode: number | null = null;
  hello: HelloBody | null = null;

  /** Starts the helper and performs the versioned handshake. */
  async start(helperPath = findHelper()): Promise<HelloBody> {
    if (!existsSync(helperPath)) {
      throw new HelperError('ENOENT', `the native helper ${helperPath} does not exist; run 'npm run build'`);
    }
    // fd 1 is only protocol; the program's own output arrives in it as `output` events.
    const proc = spawn(helperPath, [], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc = proc;
    proc.stdout!.setEncoding('utf8');
    proc.stdout!.on('data', (chunk: string) => this.onData(chunk));
    proc.stdout!.on('end', () => {
      // an incomplete UTF-8 sequence at the very end comes out as U+FFFD
      for (const name of ['stdout', 'stderr'] as const) {
        const rest = this.decoders[name].end();
        if (rest) this.emit('output', name, rest);
      }
    });
    let errBuf = '';
    proc.stderr!.setEncoding('utf8');
    proc.stderr!.on('data', (chunk: string) => {
      errBuf += chunk;
      let nl: number;
      while ((nl = errBuf.indexOf('\n')) >= 0) {
        const line = errBuf.slice(0, nl);
        errBuf = errBuf.slice(nl + 1);
        this.logTail.push(line);
        if (this.logTail.length > 200) this.logTail.shift();
        this.emit('log', line);
      }
    });
    proc.stdin!.on('error', () => { /* the helper died; 'exit' reports it */ });
    const spawned = new Promise<void>((resolve, reject) => {
      proc.once('spawn', resolve);
      proc.once('error', (e) => reject(new HelperError('ENOEXEC', `cannot start the helper ${helperPath}: ${e.message}`)));
    });
    proc.on('exit', (code, signal) => {
      this.exited = true;
      this.exitCode = code;
      const why = signal ? `killed by ${signal}` : `exited with code ${code}`;
      for (const p of this.pending.values()) {
        p.reject(new HelperError('EHELPER', `the helper ${why} during '${p.cmd}'. Last log lines:\n${this.lastLog(10)}`));
      }
      this.pending.clear();
      this.emit('exit', code, signal);
    });
    await spawned;
    const hello = await this.request('hello', { protocol: PROTOCOL_VERSION });
    if (hello.protocol !== PROTOCOL_VERSION) {
      throw new HelperError('EVERSION', `helper speaks protocol ${hello.protocol}, adapter ${PROTOCOL_VERSION}; rebuild with 'npm run build'`);
    }
    this.hello = hello;
    return hello;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  get running(): boolean {
    return this.proc !== null && !this.exited;
  }

  lastLog(n = 50): string {
    return this.logTail.slice(-n).join('\n');
  }

  request<C extends Command>(cmd: C, args: Requests[C][0]): Promise<Requests[C][1]> {
    if (!this.proc || this.exited) {
      return Promise.reject(new HelperError('EHELPER', `the helper is not running (request '${cmd}')`));
    }
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { cmd, resolve: resolve as (v: unknown) => void, reject });
      this.proc!.stdin!.write(encodeRequest(id, cmd, args));
    });
  }

  private onData(chunk: string): void {
    this.buf += chunk;
    let nl: number;
    while ((nl = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, nl);
      this.buf = this.buf.slice(nl + 1);
      if (line.length === 0) continue;
      let msg;
      try {
        msg = decodeMessage(line);
      } catch (e) {
        this.emit('log', `protocol error: ${(e as Error).message}`);
        continue;
      }
      if (msg.type === 'response') {
        const p = this.pending.get(msg.id);
        if (!p) {
          this.emit('log', `protocol error: response to unknown request ${msg.id}`);
          continue;
        }
        this.pending.delete(msg.id);
        if (msg.ok) p.resolve(msg.body);
        else p.reject(toError(msg.error));
      } else if (msg.event === 'output') {
        const text = this.decoders[msg.stream].write(Buffer.from(msg.data, 'base64'));
        if (text) this.emit('output', msg.stream, text);
      } else {
        this.emit('event', msg);
      }
    }
  }

  /** Asks the helper to end (it kills a launched program, detaches an attached one), then waits for it to exit. */
  async stop(timeoutMs = 3000): Promise<void> {
    const proc = this.proc;
    if (!proc || this.exited) return;
    const gone = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
    this.request('shutdown', {}).catch(() => { /* it may exit before answering */ });
    proc.stdin!.end();
    const timer = setTimeout(() => proc.kill('SIGKILL'), timeoutMs);
    await gone;
    clearTimeout(timer);
  }
}

function toError(e: ErrorInfo): HelperError {
  return new HelperError(e.code, e.message);
}
