// The procfs texts a passive observe attach reads: a userfaultfd's fdinfo (captured from a
// postcopy destination hung on a forgotten page, Linux 6.18) and a zombie's wait status.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { test } from 'node:test';
import {
  decodeUffdFeatures, decodeUffdIoctls, decodeWaitStatus, parseUffdFdinfo, UFFD_FEATURE_NAMES,
} from '../../server/core/observeAttach';

const fixture = (name: string) => readFileSync(path.join(__dirname, 'fixtures', name), 'utf8');

test('parseUffdFdinfo reads pending, total and the API line of a captured fdinfo', () => {
  const i = parseUffdFdinfo(fixture('uffd-fdinfo.txt'));
  assert.ok(i);
  assert.equal(i.pending, 0);
  assert.equal(i.total, 1);
  assert.equal(i.api, 0xaa);
  assert.equal(i.features, 0x80000100n);
  assert.equal(i.ioctls, 0x80000000000001ffn);
});

test('parseUffdFdinfo: not a userfaultfd, and an fdinfo without the API line', () => {
  assert.equal(parseUffdFdinfo('pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t7\neventfd-count:\t0\n'), null);
  assert.deepEqual(parseUffdFdinfo('pending:\t3\ntotal:\t5\n'), { pending: 3, total: 5, api: null, features: null, ioctls: null });
});

test('decodeUffdFeatures names the bits as the helper does, and the kernel\'s initialized bit apart', () => {
  assert.deepEqual(decodeUffdFeatures(0x80000100n), { names: ['THREAD_ID'], negotiated: true });
  assert.deepEqual(decodeUffdFeatures(0x0n), { names: [], negotiated: false });
  assert.deepEqual(decodeUffdFeatures((1n << 16n) | (1n << 0n) | (1n << 20n)).names, ['PAGEFAULT_FLAG_WP', 'MOVE', 'bit 20']);
  assert.equal(UFFD_FEATURE_NAMES.length, 17);
});

test('decodeUffdIoctls names the ioctls this kernel offers', () => {
  assert.deepEqual(decodeUffdIoctls(0x80000000000001ffn),
    ['REGISTER', 'UNREGISTER', 'WAKE', 'COPY', 'ZEROPAGE', 'MOVE', 'WRITEPROTECT', 'CONTINUE', 'POISON', 'API']);
});

test('decodeWaitStatus: an exit code or a signal, as /proc/PID/stat field 52 gives them', () => {
  assert.deepEqual(decodeWaitStatus(3 << 8), { code: 3, signal: null });
  assert.deepEqual(decodeWaitStatus(9), { code: null, signal: 'SIGKILL' });
  assert.deepEqual(decodeWaitStatus(0x80 | 11), { code: null, signal: 'SIGSEGV' }); // core dumped
});
