/**
 * What the view does for each op of the protocol. Edits go through the shared (Yjs) model, so
 * they reach real-time collaboration too, and keep the user's place in every view (place.ts).
 */
import type { JupyterFrontEnd } from '@jupyterlab/application';
import type { MarkdownCell } from '@jupyterlab/cells';
import type { NotebookPanel } from '@jupyterlab/notebook';
import { askApproval } from './approval';
import { checkRevision, describe, indexOf, METADATA_KEY, notebookPath } from './cells';
import { keepingUserPlace } from './place';
import { Op, OpArgs, OpHandlers, OpResult, Request } from './protocol';
import { runCell } from './run';
import { setShare } from './share';
import { showToken } from './token';

/** The view a request is for. */
export interface View {
  app: JupyterFrontEnd;
  panel: NotebookPanel;
}

/** The user is looking at this view. */
export function focused(app: JupyterFrontEnd, panel: NotebookPanel): boolean {
  return app.shell.currentWidget === panel && document.hasFocus();
}

// One handler per op of protocol.json: an op added there and not here does not compile.
const handlers: OpHandlers<View> = {
  hello: ({ app, panel }) => ({
    path: notebookPath(panel),
    n_cells: panel.content.widgets.length,
    focused: focused(app, panel)
  }),

  read_notebook: ({ panel }, args) => {
    const nb = panel.content;
    const start = Math.max(0, args.start ?? 0);
    const stop = args.limit == null ? nb.widgets.length : Math.min(nb.widgets.length, start + args.limit);
    const cells = [];
    for (let i = start; i < stop; i++) {
      cells.push(describe(panel, nb.widgets[i], i, args.include_outputs !== false));
    }
    return {
      path: notebookPath(panel),
      dirty: panel.context.model.dirty,
      n_cells: nb.widgets.length,
      active_cell_index: nb.activeCellIndex,
      active_cell_id: nb.activeCell?.model.id ?? null,
      cells
    };
  },

  insert_cell: ({ panel }, args) => {
    const nb = panel.content;
    const shared = panel.context.model.sharedModel;
    const n = shared.cells.length;
    let index = n;
    if (typeof args.after_cell_id === 'string') {
      index = indexOf(panel, args.after_cell_id) + 1;
    } else if (typeof args.index === 'number') {
      index = args.index < 0 ? n + 1 + args.index : args.index;
    }
    index = Math.max(0, Math.min(index, n));
    const cell = keepingUserPlace(panel, () => {
      shared.insertCell(index, {
        cell_type: args.cell_type ?? 'code',
        source: args.source ?? '',
        metadata: args.metadata ?? {}
      });
      const inserted = nb.widgets[index];
      if (inserted.model.type === 'markdown') {
        (inserted as MarkdownCell).rendered = true;
      }
      return inserted;
    });
    return describe(panel, cell, nb.widgets.indexOf(cell), false);
  },

  edit_cell: ({ panel }, args) => {
    const nb = panel.content;
    const i = indexOf(panel, args.cell_id);
    const cell = nb.widgets[i];
    checkRevision(cell, args.revision);
    keepingUserPlace(panel, () => {
      cell.model.sharedModel.setSource(args.source ?? '');
      if (args.provenance) {
        cell.model.setMetadata(METADATA_KEY, args.provenance);
      }
      if (cell.model.type === 'markdown' && !(cell === nb.activeCell && nb.mode === 'edit')) {
        (cell as MarkdownCell).rendered = true;
      }
    });
    return describe(panel, cell, i, false);
  },

  delete_cell: ({ panel }, args) => {
    const i = indexOf(panel, args.cell_id);
    const cell = panel.content.widgets[i];
    checkRevision(cell, args.revision);
    const gone = describe(panel, cell, i, false);
    keepingUserPlace(panel, () => panel.context.model.sharedModel.deleteCell(i));
    return gone;
  },

  move_cell: ({ panel }, args) => {
    const nb = panel.content;
    const from = indexOf(panel, args.cell_id);
    const to = Math.max(0, Math.min(args.to_index ?? 0, nb.widgets.length - 1));
    if (from !== to) {
      keepingUserPlace(panel, () => panel.context.model.sharedModel.moveCell(from, to));
    }
    return describe(panel, nb.widgets[to], to, false);
  },

  execute_cell: async ({ panel }, args) => {
    const nb = panel.content;
    const i = indexOf(panel, args.cell_id);
    const cell = nb.widgets[i];
    const ok = await runCell(panel, cell);
    const now = nb.widgets.indexOf(cell);
    return { ok, ...describe(panel, cell, now < 0 ? i : now, true) };
  },

  get_active: ({ app, panel }) => {
    const nb = panel.content;
    const cell = nb.activeCell;
    return {
      path: notebookPath(panel),
      index: nb.activeCellIndex,
      cell: cell ? describe(panel, cell, nb.activeCellIndex, false) : null,
      mode: nb.mode,
      selected_ids: nb.widgets.filter(w => nb.isSelectedOrActive(w)).map(w => w.model.id),
      editor_selection: cell?.editor?.getSelection() ?? null,
      focused: focused(app, panel)
    };
  },

  approve: async (_, args) => ({ decision: await askApproval(args) }),

  save: async ({ panel }) => {
    await panel.context.save();
    return { path: notebookPath(panel), dirty: panel.context.model.dirty };
  },

  restart: ({ panel }, args) => {
    // Reply first (the kernel that asks is the one going away), then restart as the button does.
    const delay = Math.max(0, Number(args.delay_ms ?? 300));
    window.setTimeout(() => void panel.sessionContext.restartKernel(), delay);
    return { path: panel.context.path, restarting: true };
  },

  share: async ({ panel }, args) => ({ path: panel.context.path, ...(await setShare(panel, !!args.share)) }),

  show_token: (_, args) => {
    showToken(args);
    return { shown: true };
  }
};

async function perform<K extends Op>(view: View, op: K, args: OpArgs<K>): Promise<OpResult<K>> {
  await view.panel.context.ready;
  return handlers[op](view, args);
}

/** Do what the kernel asked in this view; rejects with the error the reply carries. */
export function handle(view: View, request: Request): Promise<OpResult<Op>> {
  return perform(view, request.op, request.args);
}
