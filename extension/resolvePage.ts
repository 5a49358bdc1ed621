// "Resolve Page…": resolve the fault the selected thread is held on, by hand, in any way the
// kernel offers for it. The adapter does the work (custom request `uffd/resolve`).
import { readFile } from 'node:fs/promises';
import * as vscode from 'vscode';

interface Way extends vscode.QuickPickItem { how: string; ask?: 'pattern' | 'file' | 'bytes' }

const WAYS: Way[] = [
  { label: 'Default', description: 'what the kernel would have done', how: 'default' },
  { label: 'Zero page', description: 'UFFDIO_ZEROPAGE (a write then copies on write)', how: 'zero' },
  { label: 'Fill with a byte pattern…', description: 'UFFDIO_COPY', how: 'copy', ask: 'pattern' },
  { label: 'Copy from a file…', description: 'UFFDIO_COPY of 4 KiB at an offset', how: 'copy', ask: 'file' },
  { label: 'Copy bytes from a file\'s first page…', description: 'UFFDIO_COPY of exactly 4096 bytes', how: 'copy', ask: 'bytes' },
  { label: 'Continue', description: 'UFFDIO_CONTINUE: map the page-cache page (minor faults)', how: 'continue' },
  { label: 'Un-protect', description: 'UFFDIO_WRITEPROTECT off (write-protect faults)', how: 'unprotect' },
  { label: 'Poison', description: 'UFFDIO_POISON: the next access gets SIGBUS', how: 'poison' },
  { label: 'Wake only', description: 'UFFDIO_WAKE: the thread retries and faults again', how: 'wake' },
];

export async function resolvePage(): Promise<void> {
  const session = vscode.debug.activeDebugSession;
  const item = vscode.debug.activeStackItem;
  if (!session || session.type !== 'uffd' || !item) {
    void vscode.window.showInformationMessage('uffd-debug: select a thread that is paused on a page fault first.');
    return;
  }
  const way = await vscode.window.showQuickPick(WAYS, { title: 'Resolve the page this thread faulted on', matchOnDescription: true });
  if (!way) return;
  const args: Record<string, unknown> = { tid: item.threadId, how: way.how };
  if (way.ask === 'pattern') {
    const v = await vscode.window.showInputBox({
      prompt: 'Byte value to fill the page with (0-255, decimal or 0x..)', value: '0xaa',
      validateInput: (t) => (/^(0x[0-9a-f]{1,2}|\d{1,3})$/i.test(t) && Number(t) <= 255 ? null : 'a byte: 0-255 or 0x00-0xff'),
    });
    if (v === undefined) return;
    args.pattern = Number(v);
  } else if (way.ask === 'file' || way.ask === 'bytes') {
    const f = await vscode.window.showOpenDialog({ canSelectMany: false, title: 'File with the page content' });
    if (!f?.length) return;
    if (way.ask === 'bytes') {
      const buf = Buffer.alloc(4096);
      (await readFile(f[0].fsPath)).copy(buf, 0, 0, 4096);
      args.bytes = buf.toString('base64');
    } else {
      const off = await vscode.window.showInputBox({
        prompt: 'Byte offset in the file (a multiple of 4096)', value: '0',
        validateInput: (t) => (/^\d+$/.test(t) ? null : 'a whole number of bytes'),
      });
      if (off === undefined) return;
      args.file = f[0].fsPath;
      args.offset = Number(off);
    }
  }
  try {
    const r = await session.customRequest('uffd/resolve', args) as { ioctl: string; page: string; pages: number };
    vscode.window.setStatusBarMessage(`uffd-debug: page ${r.page} resolved with ${r.ioctl}`, 5000);
  } catch (e) {
    void vscode.window.showErrorMessage(`uffd-debug: ${(e as Error).message}`);
  }
}
