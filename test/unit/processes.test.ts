import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { userInfo } from 'node:os';
import { test } from 'node:test';
import { formatRss, listProcesses, parsePasswd } from '../../server/core/processes';

test('parsePasswd maps uids to names and skips junk', () => {
  const m = parsePasswd('root:x:0:0:root:/root:/bin/bash\nbogus\nnobody:x:65534:65534::/:/usr/sbin/nologin\n');
  assert.equal(m.get(0), 'root');
  assert.equal(m.get(65534), 'nobody');
  assert.equal(m.size, 2);
});

test('listProcesses finds a running child with name, user and RSS, and leaves out kernel threads and itself', async () => {
  const child = spawn('sleep', ['30']);
  try {
    await new Promise((r) => child.once('spawn', r));
    const list = listProcesses();
    const mine = list.find((p) => p.pid === child.pid);
    assert.ok(mine, 'the child is listed');
    assert.equal(mine.name, 'sleep');
    assert.equal(mine.cmdline, 'sleep 30');
    assert.equal(mine.user, userInfo().username);
    assert.ok(mine.rssKiB > 0);
    assert.ok(!list.some((p) => p.pid === process.pid), 'the caller is left out');
    assert.ok(!list.some((p) => p.pid === 2), 'kthreadd is left out');
  } finally {
    child.kill();
  }
});

test('formatRss picks a readable unit', () => {
  assert.equal(formatRss(512), '512 KiB');
  assert.equal(formatRss(2048), '2.0 MiB');
  assert.equal(formatRss(3 * 1024 * 1024), '3.0 GiB');
});
