/**
 * The agent never moves the user: its changes leave every view's mode, active cell, focus and
 * selection as they were (collaborators' remote changes too, see PanelWatcher).
 */
import type { Cell } from '@jupyterlab/cells';
import type { Notebook, NotebookMode, NotebookPanel } from '@jupyterlab/notebook';

type EditorSelections = ReturnType<NonNullable<Cell['editor']>['getSelections']>;

/** Where the user is in one view: what the agent's changes must leave as it was. */
export interface UserPlace {
  activeId: string | null;
  activeWidget: Cell | null;
  mode: NotebookMode;
  editorFocused: boolean;
  cellFocused: boolean;
  selectedIds: string[];
  editorSelections: EditorSelections | null;
}

/** Every notebook view of this page (a PanelWatcher each): a change to a document keeps the user's place in all of its views. */
export const pageViews = new Set<NotebookPanel>();

export function userPlace(nb: Notebook): UserPlace {
  const cell = nb.activeCell;
  const focus = document.activeElement;
  return {
    activeId: cell?.model.id ?? null,
    activeWidget: cell,
    mode: nb.mode,
    editorFocused: !!cell?.editor?.hasFocus(),
    cellFocused: !!cell && !!focus && cell.node.contains(focus),
    selectedIds: nb.widgets.filter(w => nb.isSelected(w)).map(w => w.model.id),
    editorSelections: cell?.editor?.getSelections() ?? null
  };
}

/** The mode, without the focus `nb.mode = …` takes (Notebook.setMode: JupyterLab >= 4.1, protected in its types). */
function setModeQuietly(nb: Notebook, mode: NotebookMode): void {
  const setMode: unknown = Reflect.get(nb, 'setMode');
  if (typeof setMode === 'function') {
    setMode.call(nb, mode, { focus: false });
  } else {
    nb.mode = mode;
  }
}

/** Put the user back where they were, changing only what differs (their typing is never touched). */
export function restoreUserPlace(nb: Notebook, place: UserPlace): void {
  if (nb.isDisposed || place.activeId === null) {
    return;
  }
  const index = nb.widgets.findIndex(w => w.model.id === place.activeId);
  if (index < 0) {
    return; // the active cell itself was deleted: nothing to keep
  }
  if (nb.activeCellIndex !== index) {
    nb.activeCellIndex = index;
  }
  if (nb.mode !== place.mode) {
    setModeQuietly(nb, place.mode);
  }
  const selected = nb.widgets.filter(w => nb.isSelected(w)).map(w => w.model.id);
  if (selected.join() !== place.selectedIds.join()) {
    nb.widgets.forEach(w => (place.selectedIds.includes(w.model.id) ? nb.select(w) : nb.deselect(w)));
  }
  const cell = nb.widgets[index];
  const recreated = cell !== place.activeWidget; // a moved cell is a new widget
  const refocus = () => {
    if (recreated && place.editorSelections && cell.editor) {
      cell.editor.setSelections(place.editorSelections);
    }
    if (place.editorFocused && !cell.editor?.hasFocus()) {
      cell.editor?.focus();
    } else if (place.cellFocused && !place.editorFocused && !cell.node.contains(document.activeElement)) {
      cell.node.focus({ preventScroll: true });
    }
  };
  if (cell.editor) {
    refocus();
  } else {
    void cell.ready.then(refocus); // not rendered yet (windowed notebook)
  }
}

/**
 * Apply the agent's change in this view while every view of the same document model (this
 * page's panels) keeps the user's mode, active cell, focus and selection.
 */
export function keepingUserPlace<T>(panel: NotebookPanel, change: () => T): T {
  const views = [...pageViews].filter(p => p.context.model === panel.context.model && !p.isDisposed);
  const places = views.map(p => [p.content, userPlace(p.content)] as const);
  try {
    return change();
  } finally {
    places.forEach(([nb, place]) => restoreUserPlace(nb, place));
  }
}
