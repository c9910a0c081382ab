/** Running a cell for the agent, as Shift+Enter would, without moving the user. */
import { CodeCell } from '@jupyterlab/cells';
import type { Cell, MarkdownCell } from '@jupyterlab/cells';
import { NotebookActions } from '@jupyterlab/notebook';
import type { KernelError, NotebookPanel } from '@jupyterlab/notebook';
import type { KernelMessage } from '@jupyterlab/services';
import type { ISignal } from '@lumino/signaling';
import { keepingUserPlace } from './place';

/**
 * Run one cell (the prompt shows [*], then its execution count; NotebookActions.executed fires),
 * but without NotebookActions.runCells' UI side effects: it switches the notebook to command mode,
 * scrolls and takes the focus, so the user's next keystrokes would become command shortcuts.
 * Resolves to false when the run failed, was cancelled or the kernel restarted.
 */
export async function runCell(panel: NotebookPanel, cell: Cell): Promise<boolean> {
  // By the model's type, not instanceof: the cell classes come from JupyterLab's shared modules.
  if (cell.model.type === 'markdown') {
    keepingUserPlace(panel, () => ((cell as MarkdownCell).rendered = true));
    return true;
  }
  if (cell.model.type !== 'code') {
    return true;
  }
  const session = panel.sessionContext;
  if (session.pendingInput) {
    throw new Error(
      "the user's running cell waits for input (an input() box in the notebook); the cell can run once the user has answered it"
    );
  }
  const notebook = panel.content;
  emit(NotebookActions.executionScheduled, { notebook, cell });
  let reply: KernelMessage.IExecuteReplyMsg | void;
  try {
    const metadata = { recordTiming: !!notebook.notebookConfig?.recordTiming };
    reply = await keepingUserPlace(panel, () => CodeCell.execute(cell as CodeCell, session, metadata));
  } catch (err) {
    // As NotebookActions does: listeners get whatever the run threw.
    emit(NotebookActions.executed, { notebook, cell, success: false, error: err as KernelError });
    if (err instanceof Error && err.message.startsWith('Canceled')) {
      return false; // the kernel restarted or the run was cancelled
    }
    throw err;
  }
  const ok = !!reply && reply.content.status === 'ok';
  emit(NotebookActions.executed, { notebook, cell, success: ok });
  if (reply && reply.content.status === 'ok') {
    applySetNextInput(panel, cell, reply.content.payload ?? []);
  }
  return ok;
}

/** NotebookActions' public signals, for extensions that listen (their `emit` is there at run time). */
function emit<T>(signal: ISignal<unknown, T>, args: T): void {
  const send: unknown = Reflect.get(signal, 'emit');
  if (typeof send === 'function') {
    send.call(signal, args);
  }
}

/** set_next_input (e.g. %load) from the agent's run: as JupyterLab does, without moving the user. */
function applySetNextInput(panel: NotebookPanel, cell: Cell, payload: ReadonlyArray<Record<string, unknown>>): void {
  const next = payload.find(p => p.source === 'set_next_input');
  if (!next || cell.isDisposed) {
    return;
  }
  const text = String(next.text ?? '');
  keepingUserPlace(panel, () => {
    if (next.replace) {
      cell.model.sharedModel.setSource(text);
    } else {
      const index = panel.content.widgets.indexOf(cell);
      panel.context.model.sharedModel.insertCell(index + 1, {
        cell_type: 'code',
        source: text,
        metadata: { trusted: false }
      });
    }
  });
}
