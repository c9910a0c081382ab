/** Cells as the agent sees and addresses them: by id, with a revision, tagged when the agent wrote them. */
import type { Cell, ICellModel, ICodeCellModel } from '@jupyterlab/cells';
import type { NotebookPanel } from '@jupyterlab/notebook';
import { CellInfo, OpError } from './protocol';
import { revisionOf } from './text';

const AGENT_CLASS = 'ipymcp-agent-cell';
/** The cell metadata key of the agent's provenance mark (and the notebook's share opt-in). */
export const METADATA_KEY = 'ipymcp';

export function isCodeModel(model: ICellModel): model is ICodeCellModel {
  return model.type === 'code';
}

export function revision(cell: Cell): string {
  return revisionOf(cell.model.type, cell.model.sharedModel.getSource());
}

export function describe(panel: NotebookPanel, cell: Cell, index: number, withOutputs: boolean): CellInfo {
  const nb = panel.content;
  const model = cell.model;
  const code = isCodeModel(model);
  return {
    index,
    id: model.id,
    cell_type: model.type,
    source: model.sharedModel.getSource(),
    revision: revision(cell),
    execution_count: code ? model.executionCount ?? null : null,
    outputs: code && withOutputs ? model.outputs.toJSON() : [],
    n_outputs: code ? model.outputs.length : 0,
    agent: model.getMetadata?.(METADATA_KEY) ?? null,
    active: nb.activeCellIndex === index,
    selected: nb.isSelectedOrActive(cell)
  };
}

/** The notebook's path without a drive prefix (jupyter-collaboration opens notebooks as "RTC:…"). */
export function notebookPath(panel: NotebookPanel): string {
  return panel.context.localPath || panel.context.path;
}

export function indexOf(panel: NotebookPanel, cellId: unknown): number {
  const i = panel.content.widgets.findIndex(w => w.model.id === cellId);
  if (i < 0) {
    throw new Error(`no cell with id ${JSON.stringify(cellId)} in ${notebookPath(panel)}; call read_notebook for the current ids`);
  }
  return i;
}

export function checkRevision(cell: Cell, expected: unknown): void {
  if (typeof expected === 'string' && expected !== revision(cell)) {
    throw new OpError(
      'stale_cell',
      `the user changed cell ${cell.model.id} since you last read it; read it again (read_notebook) before writing`
    );
  }
}

/** The "agent" tag under the prompt: shown exactly when the cell's metadata says the agent wrote it. */
export function syncAgentTag(cell: Cell): void {
  cell.toggleClass(AGENT_CLASS, !!cell.model?.getMetadata?.(METADATA_KEY));
}
