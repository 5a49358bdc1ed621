// HelperClient against a scripted stand-in for the native helper: framing and output decoding.
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { HelperClient } from '../../server/core/helperClient';
import { PROTOCOL_VERSION } from '../../server/protocol/messages';

/** A fake helper: answers hello, then writes the given protocol lines and waits for stdin EOF. */
function fakeHelper(lines: object[]): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'uffd-fake-helper-'));
  const file = path.join(dir, 'helper.js');
  const hello = { type: 'response', id: 1, ok: true, body: { protocol: PROTOCOL_VERSION, helper: 'fake', pid: 0, kernel: 'x', uffd: { available: true } } };
  writeFileSync(file, `#!${process.execPath}
let buf = '';
process.stdin.on('data', (d) => {
  buf += d;
  if (!buf.includes('\\n')) return;
  buf = '';
  process.stdout.write(${JSON.stringify([hello, ...lines].map((l) => JSON.stringify(l)).join('\n') + '\n')});
});
process.stdin.on('end', () => process.exit(0));
`);
  chmodSync(file, 0o755);
  return file;
}

const b64 = (bytes: number[]) => Buffer.from(bytes).toString('base64');

test('output events: a UTF-8 character split across two events is decoded whole, per stream', async () => {
  const e = [...Buffer.from('é€')]; // c3 a9 e2 82 ac
  const helper = fakeHelper([
    { type: 'event', event: 'output', stream: 'stdout', data: b64([0x68, e[0]]) },
    { type: 'event', event: 'output', stream: 'stderr', data: b64([e[2], e[3]]) },
    { type: 'event', event: 'output', stream: 'stdout', data: b64([e[1], 0x0a]) },
    { type: 'event', event: 'output', stream: 'stderr', data: b64([e[4]]) },
    { type: 'event', event: 'exited', pid: 1, code: 0, signal: null },
  ]);
  const c = new HelperClient();
  const got: [string, string][] = [];
  c.on('output', (s, d) => got.push([s, d]));
  const exited = new Promise<void>((resolve) => c.on('event', (ev) => { if (ev.event === 'exited') resolve(); }));
  await c.start(helper);
  await exited;
  assert.equal(got.filter(([s]) => s === 'stdout').map(([, d]) => d).join(''), 'hé\n');
  assert.equal(got.filter(([s]) => s === 'stderr').map(([, d]) => d).join(''), '€');
  assert.ok(got.every(([, d]) => !d.includes('\ufffd')), `no replacement characters: ${JSON.stringify(got)}`);
  assert.ok(got.findIndex(([s, d]) => s === 'stdout' && d.includes('\n')) >= 0);
  await c.stop();
});
