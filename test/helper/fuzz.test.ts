// The helper's request side under libFuzzer (server/native/fuzz/fuzz_protocol.c): arbitrary bytes
// through its real line framing, JSON parser and dispatch, with ASan and UBSan; every output
// line must be one valid JSON object. Needs clang and libFuzzer: never skipped.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';

const root = path.resolve(__dirname, '..', '..');
const NATIVE = path.join(root, 'server', 'native');
const FUZZER = path.join(NATIVE, 'bin', 'fuzz-protocol');
const SEEDS = path.join(NATIVE, 'fuzz', 'corpus');
const HINT = 'install clang and libclang-rt-14-dev (see .ci/run)';

const work = mkdtempSync(path.join(tmpdir(), 'uffd-fuzz-'));
after(() => rmSync(work, { recursive: true, force: true }));

interface Run { code: number | null; signal: NodeJS.Signals | null; log: string; artefacts: string[] }

/** Runs the fuzzer for `seconds` in `mode`, new inputs kept in a scratch corpus (the seeds stay as they are). */
function fuzz(mode: 'none' | 'attached', seconds: number): Promise<Run> {
  if (!existsSync(FUZZER)) return Promise.reject(new Error(`${FUZZER} was not built: ${HINT}`));
  const dir = path.join(work, mode);
  const corpus = path.join(dir, 'corpus');
  const artefacts = path.join(dir, 'artefacts');
  mkdirSync(corpus, { recursive: true });
  mkdirSync(artefacts, { recursive: true });
  const args = [`-max_total_time=${seconds}`, '-timeout=5', '-max_len=4096',
    '-print_final_stats=1', `-artifact_prefix=${artefacts}/`, corpus, SEEDS];
  const env = { ...process.env, UFFD_FUZZ_MODE: mode === 'attached' ? 'attached' : '' };
  return new Promise((resolve, reject) => {
    // the helper logs its errors to stderr: keep only the tail
    let log = '';
    const p = spawn(FUZZER, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (d: Buffer) => { log = (log + d.toString('utf8')).slice(-20_000); };
    p.stdout.on('data', keep);
    p.stderr.on('data', keep);
    const timer = setTimeout(() => { p.kill('SIGKILL'); reject(new Error(`the fuzzer did not end within ${seconds + 60} s:\n${log.slice(-3000)}`)); }, (seconds + 60) * 1000);
    p.on('error', (e) => { clearTimeout(timer); reject(e); });
    p.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, log, artefacts: readdirSync(artefacts) });
    });
  });
}

function assertClean(r: Run, what: string): void {
  const tail = r.log.split('\n').filter((l) => !l.startsWith('uffd-helper[')).slice(-40).join('\n');
  assert.deepEqual(r.artefacts, [], `${what}: crash, leak or timeout inputs were saved:\n${tail}`);
  assert.equal(r.signal, null, `${what}: the fuzzer was killed by ${r.signal}:\n${tail}`);
  assert.equal(r.code, 0, `${what}: the fuzzer exited with ${r.code}:\n${tail}`);
  const runs = /Done (\d+) runs/.exec(r.log);
  assert.ok(runs && Number(runs[1]) > 1000, `${what}: the fuzzer ran (${runs?.[1] ?? 0} inputs):\n${tail}`);
  assert.ok(!/FINDING|ERROR: (Address|Leak)Sanitizer|runtime error:/.test(r.log), `${what}: a finding:\n${tail}`);
}

describe('protocol fuzzing (libFuzzer, ASan, UBSan)', { timeout: 300_000 }, () => {
  test('the fuzzer builds with clang and libFuzzer', () => {
    const clang = spawnSync('clang', ['--version'], { encoding: 'utf8' });
    assert.ok(!clang.error && clang.status === 0, `clang is not installed: ${HINT}`);
    const make = spawnSync('make', ['-C', NATIVE, 'fuzz'], { encoding: 'utf8' });
    const out = `${make.stdout}${make.stderr}`;
    assert.ok(!/libclang_rt\.fuzzer|fsanitize=fuzzer/.test(out) || make.status === 0, `libFuzzer is missing: ${HINT}\n${out.slice(-2000)}`);
    assert.equal(make.status, 0, `make -C server/native fuzz failed:\n${out.slice(-3000)}`);
  });

  test('45 s of arbitrary request bytes with no program: no crash, leak, UB or invalid output line', async () => {
    assertClean(await fuzz('none', 45), 'no program');
  });

  test('15 s of arbitrary request bytes while attached to a sleeping child: no crash, leak, UB or invalid output line', async () => {
    assertClean(await fuzz('attached', 15), 'attached');
  });
});
