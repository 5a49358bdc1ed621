// Entry point of the debug adapter: DAP on stdin/stdout (how VS Code starts it), or as a
// server on a TCP port for debugging the adapter itself: `node dist/adapter.js --server=4711`.
import * as net from 'node:net';
import { adapterModeFromArgs, UffdDebugSession } from './uffdDebugSession';

const portArg = process.argv.find((a) => a.startsWith('--server='));
if (portArg) {
  const port = Number(portArg.slice('--server='.length));
  net.createServer((socket) => {
    const session = new UffdDebugSession();
    session.setRunAsServer(true);
    session.start(socket, socket);
  }).listen(port, '127.0.0.1', () => process.stderr.write(`uffd adapter listening on 127.0.0.1:${port}\n`));
} else {
  const session = new UffdDebugSession(adapterModeFromArgs(process.argv));
  process.on('SIGTERM', () => session.shutdown());
  session.start(process.stdin, process.stdout);
}
