/** `%mcp token` (op `show_token`): the bearer token in a dialog with a Copy button; nothing of it in the notebook. */
import { Clipboard, Dialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';
import type { OpArgs } from './protocol';

/** Never a cell output (outputs are saved with the notebook); answers the kernel at once. */
export function showToken(args: OpArgs<'show_token'>): void {
  const token = String(args.token ?? '');
  const body = document.createElement('div');
  body.className = 'ipymcp-token';
  const intro = document.createElement('p');
  intro.textContent = `Bearer token of the MCP server at ${args.url ?? 'this kernel'} (send "Authorization: Bearer <token>"). It is not saved in the notebook; in a terminal, ${args.command ?? 'ipymcp token'} prints it.`;
  const field = document.createElement('input');
  field.className = 'ipymcp-token-value';
  field.readOnly = true;
  field.value = token;
  field.style.flex = '1';
  field.style.fontFamily = 'var(--jp-code-font-family)';
  field.onfocus = () => field.select();
  const copy = document.createElement('button');
  copy.className = 'ipymcp-copy-token jp-Button jp-mod-styled jp-mod-accept';
  copy.textContent = 'Copy';
  copy.onclick = () => {
    Clipboard.copyToSystem(token);
    copy.textContent = 'Copied';
  };
  const row = document.createElement('div');
  row.style.display = 'flex';
  row.style.gap = '8px';
  row.append(field, copy);
  body.append(intro, row);
  const dialog = new Dialog({
    title: 'ipymcp: bearer token',
    body: new Widget({ node: body }),
    buttons: [Dialog.okButton({ label: 'Close' })]
  });
  // The dialog stays until the user closes it.
  void dialog.launch().then(() => dialog.dispose());
}
