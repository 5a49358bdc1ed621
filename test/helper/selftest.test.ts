// The helper's own protocol self-test (server/native/selftest.mjs): garbage input, every
// request in every state, holding, waking, kill, EOF; it prints one line per check.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { test } from 'node:test';

test('helper protocol self-test passes every check', { timeout: 120_000 }, () => {
  const script = path.resolve(__dirname, '..', '..', 'server', 'native', 'selftest.mjs');
  const r = spawnSync(process.execPath, [script], { encoding: 'utf8', timeout: 110_000 });
  const failed = r.stdout.split('\n').filter((l) => l.startsWith('FAIL'));
  assert.deepEqual(failed, [], `failed checks:\n${failed.join('\n')}\n${r.stderr}`);
  assert.equal(r.status, 0, `selftest exited ${r.status}:\n${r.stdout.slice(-2000)}\n${r.stderr.slice(-2000)}`);
  assert.match(r.stdout, /all passed/);
  const checks = r.stdout.split('\n').filter((l) => l.startsWith('ok')).length;
  assert.ok(checks >= 90, `ran ${checks} checks`);
});
