/** The approval dialog: the user allows or denies an agent's tool call (op `approve`). */
import { Dialog } from '@jupyterlab/apputils';
import { Widget } from '@lumino/widgets';
import type { ApprovalSection, Decision, OpArgs } from './protocol';
import { visible } from './text';

/**
 * Ask the user to approve an agent's tool call: Allow / Allow for this session / Deny.
 *
 * Every argument is shown in full (the kernel refuses calls too long to show instead of cutting
 * them): `args.sections` lays out one box per argument ({label, text, kind: 'text' | 'diff'});
 * kernels that predate sections send the same as one text, `args.detail`. The body scrolls and
 * lines wrap, so nothing hides to the right or below the fold; format and control characters
 * that reached here anyway are shown as markers.
 */
export async function askApproval(args: OpArgs<'approve'>): Promise<Decision> {
  const body = document.createElement('div');
  body.className = 'ipymcp-approval';
  const message = document.createElement('p');
  message.textContent = visible(`An agent (${args.client ?? 'MCP client'}) wants to call ${args.tool}.`);
  body.appendChild(message);
  const sections = Array.isArray(args.sections) ? args.sections : [];
  if (sections.length) {
    sections.forEach(section => body.appendChild(approvalSection(section)));
  } else if (args.detail) {
    body.appendChild(approvalSection({ label: '', text: args.detail, kind: 'text' }));
  }
  const dialog = new Dialog({
    title: 'ipymcp: approve the agent\'s action?',
    body: new Widget({ node: body }),
    buttons: [
      Dialog.cancelButton({ label: 'Deny' }),
      Dialog.okButton({ label: 'Allow for this session', displayType: 'default' }),
      Dialog.okButton({ label: 'Allow' })
    ],
    defaultButton: 0
  });
  const timeout = Math.max(1, Number(args.timeout_s ?? 60)) * 1000;
  const timer = window.setTimeout(() => dialog.reject(), timeout);
  try {
    const result = await dialog.launch();
    switch (result.button.label) {
      case 'Allow':
        return result.button.accept ? 'allow' : 'deny';
      case 'Allow for this session':
        return result.button.accept ? 'allow_session' : 'deny';
      default:
        return 'deny';
    }
  } finally {
    window.clearTimeout(timer);
    dialog.dispose();
  }
}

/** One argument of the call: its label, then its text verbatim (a diff colours - and + lines). */
function approvalSection(section: ApprovalSection): HTMLElement {
  const box = document.createElement('section');
  box.className = 'ipymcp-approval-section';
  if (section.label) {
    const label = document.createElement('div');
    label.className = 'ipymcp-approval-label';
    label.textContent = visible(String(section.label));
    box.appendChild(label);
  }
  const pre = document.createElement('pre');
  const text = visible(String(section.text ?? ''));
  if (section.kind === 'diff') {
    pre.className = 'ipymcp-approval-diff';
    for (const line of text.split('\n')) {
      const row = document.createElement('span');
      row.className = line.startsWith('+') ? 'ipymcp-added' : line.startsWith('-') ? 'ipymcp-removed' : '';
      row.textContent = line + '\n';
      pre.appendChild(row);
    }
  } else {
    pre.textContent = text;
  }
  box.appendChild(pre);
  return box;
}
