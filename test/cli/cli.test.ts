// The headless front end, run as a user runs it (the built bundle, a real program).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { test } from 'node:test';

const root = path.resolve(__dirname, '..', '..');
const CLI = path.join(root, 'dist', 'cli.js');
const TOUCH = path.join(root, 'demo', 'bin', 'touch');

function cli(args: string[]) {
  return spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', timeout: 60_000 });
}

test('uffd-debug run: program output untouched on stdout, faults and a summary on stderr', () => {
  const args = ['--pages', '300', '--pattern', 'random', '--threads', '3'];
  const plain = spawnSync(TOUCH, args, { encoding: 'utf8' });
  const r = cli(['run', '--', TOUCH, ...args]);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout.replace(/0x[0-9a-f]+/, 'ADDR'), plain.stdout.replace(/0x[0-9a-f]+/, 'ADDR'));
  assert.match(r.stderr, /^uffd: pid \d+, userfaultfd via (syscall|dev), \d+ regions? registered$/m);
  assert.match(r.stderr, /^uffd: #1 \+ +\d+\.\d{3}ms tid \d+ missing (read|write) 0x[0-9a-f]+ -> UFFDIO_(COPY|ZEROPAGE) [\d.]+µs$/m);
  assert.match(r.stderr, /^uffd: \.\.\. \d+ more faults/m, 'past 20 lines a second, a count replaces the lines');
  assert.match(r.stderr, /^--- uffd-debug summary: exit code 0$/m);
  const faults = Number(/^faults: (\d+) \(missing (\d+),/m.exec(r.stderr)![1]);
  assert.ok(faults >= 300, `at least one fault per page (${faults})`);
  const region = /region (0x[0-9a-f]+) pages/.exec(r.stdout)![1];
  assert.match(r.stderr, new RegExp(`^ +300  mmap ${region}-0x[0-9a-f]+ \\(1200 KiB\\)$`, 'm'), 'the demo region has exactly 300 faults');
  assert.match(r.stderr, /^resolution latency: p50 [\d.]+ µs, p99 [\d.]+ µs, max [\d.]+ µs$/m);
  assert.match(r.stderr, /^total time: [\d.]+ ms$/m);
});

test('uffd-debug run: the exit code is the program\'s, and bad usage says what to do', () => {
  const r = cli(['run', '--quiet', '--', '/bin/sh', '-c', 'exit 7']);
  assert.equal(r.status, 7);
  assert.match(r.stderr, /summary: exit code 7/);
  assert.doesNotMatch(r.stderr, /^uffd: #/m, '--quiet prints no fault lines');
  const missing = cli(['run', '--', '/no/such/program']);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /does not exist/);
  const usage = cli(['frob']);
  assert.equal(usage.status, 2);
  assert.match(usage.stderr, /unknown command 'frob'\nusage: uffd-debug run/);
});
