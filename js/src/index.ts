/**
 * ipymcp labextension: lets the MCP server inside the kernel read and write the cells of the
 * notebook view the user is looking at.
 *
 * Protocol (JSON over comms, version PROTOCOL):
 *   kernel -> every view   comm_open 'ipymcp.announce' {protocol}      (on %load_ext)
 *   view   -> kernel       comm_open 'ipymcp' {protocol, client, path, app, appVersion, focused}
 *   kernel -> view         comm_msg  {id, op, args}
 *   view   -> kernel       comm_msg  {id, ack: true}                    (protocol 2: at once, before the work)
 *   view   -> kernel       comm_msg  {id, ok, result | error}           (exactly one per request)
 *   kernel -> view         comm_msg  {event: 'state', came_back}        (ipymcp came back after a restart)
 *   view   -> kernel       comm_msg  {event: 'focus'}                   (this view got the focus)
 *   view   -> kernel       comm_msg  {event: 'stop_sharing'}            (the user clicked Stop sharing)
 *   op 'show_token' {token, url, command}: `%mcp token` shows the bearer token in a dialog with a
 *   Copy button (never as a cell output: outputs are saved with the notebook); answers at once.
 *   view   -> kernel       comm_close {reason}                          (view closed, page unloaded)
 *
 * Edits go through the shared (Yjs) model, so they reach real-time collaboration too. The agent
 * never moves the user: its changes leave every view's mode, active cell, focus and selection as
 * they were (keepingUserPlace; remote changes in collaborators' views too), and cells run without
 * NotebookActions' UI side effects (command mode, focus, scrolling).
 *
 * Sharing (ipymcp/restart.py): a notebook with metadata.ipymcp.share = true (`%mcp share on`) gets
 * `%load_ext ipymcp` run silently in its kernel when it is opened; so does a kernel restarted while
 * ipymcp was connected. While ipymcp is connected the view shows a notice with "Stop sharing".
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Clipboard, Dialog } from '@jupyterlab/apputils';
import { Cell, CodeCell, MarkdownCell } from '@jupyterlab/cells';
import { INotebookTracker, Notebook, NotebookActions, NotebookPanel } from '@jupyterlab/notebook';
import { Kernel, KernelMessage } from '@jupyterlab/services';
import { Widget } from '@lumino/widgets';

const ANNOUNCE_TARGET = 'ipymcp.announce';
const VIEW_TARGET = 'ipymcp';
const PROTOCOL = 2;
const AGENT_CLASS = 'ipymcp-agent-cell';
// %load_ext ipymcp, minus the extension manager's record (ipymcp/restart.py autoload): the user's
// own %load_ext later shows the status line instead of "already loaded".
const LOAD_CODE = "__import__('ipymcp.restart', fromlist=['autoload']).autoload(get_ipython())";

type Json = any;

class StaleError extends Error {}

/** A short content hash (FNV-1a, 32 bit): the "revision" the agent must quote to write a cell. */
function revision(cell: Cell): string {
  const text = cell.model.type + '\u0000' + cell.model.sharedModel.getSource();
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    hash ^= text.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash.toString(16).padStart(8, '0');
}

function describe(panel: NotebookPanel, cell: Cell, index: number, withOutputs: boolean): Json {
  const nb = panel.content;
  const model: Json = cell.model;
  const code = model.type === 'code';
  return {
    index,
    id: model.id,
    cell_type: model.type,
    source: model.sharedModel.getSource(),
    revision: revision(cell),
    execution_count: code ? model.executionCount ?? null : null,
    outputs: code && withOutputs ? model.outputs.toJSON() : [],
    n_outputs: code ? model.outputs.length : 0,
    agent: model.getMetadata ? model.getMetadata('ipymcp') ?? null : null,
    active: nb.activeCellIndex === index,
    selected: nb.isSelectedOrActive(cell)
  };
}

/** The notebook's path without a drive prefix (jupyter-collaboration opens notebooks as "RTC:…"). */
function notebookPath(panel: NotebookPanel): string {
  return (panel.context as Json).localPath || panel.context.path;
}

function indexOf(panel: NotebookPanel, cellId: unknown): number {
  const i = panel.content.widgets.findIndex(w => w.model.id === cellId);
  if (i < 0) {
    throw new Error(`no cell with id ${JSON.stringify(cellId)} in ${notebookPath(panel)}; call read_notebook for the current ids`);
  }
  return i;
}

function checkRevision(cell: Cell, expected: unknown): void {
  if (typeof expected === 'string' && expected !== revision(cell)) {
    throw new StaleError(
      `the user changed cell ${cell.model.id} since you last read it; read it again (read_notebook) before writing`
    );
  }
}

/** The "agent" tag under the prompt: shown exactly when the cell's metadata says the agent wrote it. */
function syncAgentTag(cell: Cell): void {
  const model: Json = cell.model;
  cell.toggleClass(AGENT_CLASS, !!model?.getMetadata?.('ipymcp'));
}

/** Where the user is in one view: what the agent's changes must leave as it was. */
interface UserPlace {
  activeId: string | null;
  activeWidget: Cell | null;
  mode: string;
  editorFocused: boolean;
  cellFocused: boolean;
  selectedIds: string[];
  editorSelections: Json[] | null;
}

function userPlace(nb: Notebook): UserPlace {
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

/** Put the user back where they were, changing only what differs (their typing is never touched). */
function restoreUserPlace(nb: Notebook, place: UserPlace): void {
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
    const setMode: Json = (nb as Json).setMode;
    if (typeof setMode === 'function') {
      setMode.call(nb, place.mode, { focus: false }); // JupyterLab >= 4.1
    } else {
      nb.mode = place.mode as Json;
    }
  }
  const selected = nb.widgets.filter(w => nb.isSelected(w)).map(w => w.model.id);
  if (selected.join() !== place.selectedIds.join()) {
    nb.widgets.forEach(w => (place.selectedIds.includes(w.model.id) ? nb.select(w) : nb.deselect(w)));
  }
  const cell = nb.widgets[index];
  const recreated = cell !== place.activeWidget; // a moved cell is a new widget
  const refocus = () => {
    if (recreated && place.editorSelections && cell.editor) {
      cell.editor.setSelections(place.editorSelections as Json);
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
function keepingUserPlace<T>(panel: NotebookPanel, change: () => T): T {
  const views = [...watchers.keys()].filter(p => p.context.model === panel.context.model && !p.isDisposed);
  const places = views.map(p => [p.content, userPlace(p.content)] as const);
  try {
    return change();
  } finally {
    places.forEach(([nb, place]) => restoreUserPlace(nb, place));
  }
}

function focused(app: JupyterFrontEnd, panel: NotebookPanel): boolean {
  return app.shell.currentWidget === panel && document.hasFocus();
}

/**
 * Run one cell for the agent as Shift+Enter would (the prompt shows [*], then its execution
 * count; NotebookActions.executed fires), but without NotebookActions.runCells' UI side effects:
 * it switches the notebook to command mode, scrolls and takes the focus, so the user's next
 * keystrokes would become command shortcuts.
 */
async function execute(panel: NotebookPanel, cell: Cell): Promise<boolean> {
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
  emitNotebookSignal('executionScheduled', { notebook, cell });
  let reply: KernelMessage.IExecuteReplyMsg | void;
  try {
    const metadata = { recordTiming: !!(notebook.notebookConfig as Json)?.recordTiming };
    reply = await keepingUserPlace(panel, () => CodeCell.execute(cell as CodeCell, session, metadata));
  } catch (err: Json) {
    emitNotebookSignal('executed', { notebook, cell, success: false, error: err });
    if (String(err?.message ?? '').startsWith('Canceled')) {
      return false; // the kernel restarted or the run was cancelled
    }
    throw err;
  }
  const ok = !!reply && reply.content.status === 'ok';
  emitNotebookSignal('executed', { notebook, cell, success: ok });
  if (reply && ok) {
    applySetNextInput(panel, cell, reply.content as Json);
  }
  return ok;
}

/** NotebookActions' public signals (their `emit` is there at run time) for extensions that listen. */
function emitNotebookSignal(name: 'executionScheduled' | 'executed', args: Json): void {
  const signal: Json = (NotebookActions as Json)[name];
  if (typeof signal?.emit === 'function') {
    signal.emit(args);
  }
}

/** set_next_input (e.g. %load) from the agent's run: as JupyterLab does, without moving the user. */
function applySetNextInput(panel: NotebookPanel, cell: Cell, content: Json): void {
  const next = (content.payload ?? []).find((p: Json) => p.source === 'set_next_input');
  if (!next || cell.isDisposed) {
    return;
  }
  keepingUserPlace(panel, () => {
    if (next.replace) {
      cell.model.sharedModel.setSource(next.text);
    } else {
      const index = panel.content.widgets.indexOf(cell);
      panel.context.model.sharedModel.insertCell(index + 1, {
        cell_type: 'code',
        source: next.text,
        metadata: { trusted: false }
      } as Json);
    }
  });
}

async function apply(app: JupyterFrontEnd, panel: NotebookPanel, op: string, args: Json): Promise<Json> {
  await panel.context.ready;
  const nb = panel.content;
  const shared = panel.context.model.sharedModel;
  switch (op) {
    case 'hello':
      return { path: notebookPath(panel), n_cells: nb.widgets.length, focused: focused(app, panel) };
    case 'read_notebook': {
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
    }
    case 'insert_cell': {
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
        } as Json);
        const inserted = nb.widgets[index];
        if (inserted.model.type === 'markdown') {
          (inserted as MarkdownCell).rendered = true;
        }
        return inserted;
      });
      return describe(panel, cell, nb.widgets.indexOf(cell), false);
    }
    case 'edit_cell': {
      const i = indexOf(panel, args.cell_id);
      const cell = nb.widgets[i];
      checkRevision(cell, args.revision);
      keepingUserPlace(panel, () => {
        cell.model.sharedModel.setSource(args.source ?? '');
        if (args.provenance) {
          (cell.model as Json).setMetadata('ipymcp', args.provenance);
        }
        if (cell.model.type === 'markdown' && !(cell === nb.activeCell && nb.mode === 'edit')) {
          (cell as MarkdownCell).rendered = true;
        }
      });
      return describe(panel, cell, i, false);
    }
    case 'delete_cell': {
      const i = indexOf(panel, args.cell_id);
      const cell = nb.widgets[i];
      checkRevision(cell, args.revision);
      const gone = describe(panel, cell, i, false);
      keepingUserPlace(panel, () => shared.deleteCell(i));
      return gone;
    }
    case 'move_cell': {
      const from = indexOf(panel, args.cell_id);
      const to = Math.max(0, Math.min(args.to_index ?? 0, nb.widgets.length - 1));
      if (from !== to) {
        keepingUserPlace(panel, () => shared.moveCell(from, to));
      }
      return describe(panel, nb.widgets[to], to, false);
    }
    case 'execute_cell': {
      const i = indexOf(panel, args.cell_id);
      const cell = nb.widgets[i];
      const ok = await execute(panel, cell);
      const now = nb.widgets.indexOf(cell);
      return { ok, ...describe(panel, cell, now < 0 ? i : now, true) };
    }
    case 'get_active': {
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
    }
    case 'approve':
      return { decision: await askApproval(args) };
    case 'save':
      await panel.context.save();
      return { path: notebookPath(panel), dirty: panel.context.model.dirty };
    case 'restart': {
      // Reply first (the kernel that asks is the one going away), then restart as the button does.
      const delay = Math.max(0, Number(args.delay_ms ?? 300));
      window.setTimeout(() => void panel.sessionContext.restartKernel(), delay);
      return { path: panel.context.path, restarting: true };
    }
    case 'share':
      return { path: panel.context.path, ...(await setShare(panel, !!args.share)) };
    case 'show_token':
      showToken(args);
      return { shown: true };
    default:
      throw new Error(`unknown op ${op} (frontend protocol ${PROTOCOL}); update the ipymcp labextension`);
  }
}

/** metadata.ipymcp.share on or off; saved at once unless the user has unsaved changes of their own. */
async function setShare(panel: NotebookPanel, share: boolean): Promise<Json> {
  const model: Json = panel.context.model;
  const wasDirty = model.dirty;
  const meta = { ...(model.getMetadata('ipymcp') ?? {}) };
  if (share) {
    meta.share = true;
  } else {
    delete meta.share;
  }
  if (Object.keys(meta).length) {
    model.setMetadata('ipymcp', meta);
  } else {
    model.deleteMetadata('ipymcp');
  }
  if (!wasDirty) {
    await panel.context.save();
  }
  return { share, saved: !wasDirty };
}

function sharedByMetadata(panel: NotebookPanel): boolean {
  const model: Json = panel.context.model;
  return model?.getMetadata?.('ipymcp')?.share === true;
}

/**
 * Ask the user to approve an agent's tool call: Allow / Allow for this session / Deny.
 *
 * Every argument is shown in full (the kernel refuses calls too long to show instead of cutting
 * them): `args.sections` lays out one box per argument ({label, text, kind: 'text' | 'diff'});
 * kernels that predate sections send the same as one text, `args.detail`. The body scrolls and
 * lines wrap, so nothing hides to the right or below the fold; format and control characters
 * that reached here anyway are shown as markers.
 */
async function askApproval(args: Json): Promise<string> {
  const body = document.createElement('div');
  body.className = 'ipymcp-approval';
  const message = document.createElement('p');
  message.textContent = visible(`An agent (${args.client ?? 'MCP client'}) wants to call ${args.tool}.`);
  body.appendChild(message);
  const sections: Json[] = Array.isArray(args.sections) ? args.sections : [];
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

/** `%mcp token`: the bearer token in a dialog with a Copy button; nothing of it in the notebook. */
function showToken(args: Json): void {
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
  // Answer the kernel now; the dialog stays until the user closes it.
  void dialog.launch().then(() => dialog.dispose());
}

/** One argument of the call: its label, then its text verbatim (a diff colours - and + lines). */
function approvalSection(section: Json): HTMLElement {
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

/** Format (bidi controls, zero-width) and control characters as visible markers, e.g. ⟦U+202E⟧. */
function visible(text: string): string {
  return text.replace(/[\p{Cf}\p{Cc}\p{Zl}\p{Zp}]/gu, ch =>
    ch === '\n' || ch === '\t' ? ch : `⟦U+${ch.codePointAt(0)!.toString(16).toUpperCase().padStart(4, '0')}⟧`
  );
}

/** One comm per (view, kernel connection); never more than one listener of each kind. */
class ViewLink {
  private comm: Kernel.IComm | null = null;

  constructor(
    private app: JupyterFrontEnd,
    private panel: NotebookPanel,
    private kernel: Kernel.IKernelConnection,
    private onChange: () => void = () => undefined,
    private onState: (state: Json) => void = () => undefined,
    private onClosedByKernel: () => void = () => undefined
  ) {}

  get connected(): boolean {
    return !!this.comm && !this.comm.isDisposed;
  }

  connect(): void {
    if (this.connected || this.kernel.isDisposed || this.panel.isDisposed) {
      return;
    }
    const comm = this.kernel.createComm(VIEW_TARGET);
    this.comm = comm;
    comm.onMsg = (msg: KernelMessage.ICommMsgMsg) => {
      const { id, op, args, event } = msg.content.data as Json;
      if (event === 'state') {
        this.onState(msg.content.data);
        return;
      }
      if (id === undefined) {
        return;
      }
      // Received: the kernel knows at once that this view is alive, however long the work takes.
      this.send({ id, ack: true });
      // Never return this promise: JupyterLab stops handling kernel messages until a promise
      // returned from a comm handler settles, and execute_cell waits for kernel messages.
      void apply(this.app, this.panel, op, args ?? {}).then(
        result => this.send({ id, ok: true, result }),
        err => this.send({ id, ok: false, stale: err instanceof StaleError, error: String(err?.message ?? err) })
      );
    };
    comm.onClose = () => {
      if (this.comm === comm) {
        this.comm = null;
        this.onChange();
        this.onClosedByKernel();
      }
    };
    comm.open({
      protocol: PROTOCOL,
      client: this.kernel.clientId,
      path: notebookPath(this.panel),
      app: this.app.name,
      appVersion: this.app.version,
      focused: focused(this.app, this.panel)
    });
    this.onChange();
  }

  send(data: Json): void {
    if (this.connected && !this.kernel.isDisposed) {
      try {
        this.comm!.send(data);
      } catch (err) {
        console.warn('ipymcp: could not reply to the kernel', err);
      }
    }
  }

  disconnect(reason: string): void {
    const comm = this.comm;
    this.comm = null;
    this.onChange();
    if (comm && !comm.isDisposed && !this.kernel.isDisposed) {
      try {
        comm.close({ reason });
      } catch {
        // the kernel is gone already
      }
    }
  }
}

/** Follows one notebook panel across kernel changes, restarts and reconnects. */
class PanelWatcher {
  private link: ViewLink | null = null;
  private kernel: Kernel.IKernelConnection | null = null;
  private onAnnounce = () => this.link?.connect();
  private notice: ShareNotice | null = null;
  // Set when the kernel restarts while ipymcp was connected (or the notebook opted in).
  private reloadAfterRestart = false;
  // This view asked the kernel to load ipymcp (once per kernel).
  private loadRequested = false;
  // ipymcp came back after a kernel restart: seen here, or told by the kernel (views opened later).
  private cameBack = false;
  // The user's place before a collaborator's (remote) change: restored after it.
  private placeBeforeRemote: UserPlace | null = null;

  constructor(
    private app: JupyterFrontEnd,
    private panel: NotebookPanel
  ) {
    panel.sessionContext.kernelChanged.connect(this.onKernelChanged, this);
    panel.disposed.connect(this.dispose, this);
    // The user working in this view makes it the one the agent addresses.
    panel.node.addEventListener('focusin', this.onFocusIn);
    void panel.sessionContext.ready.then(() => this.attach(panel.sessionContext.session?.kernel ?? null));
    void panel.context.ready.then(() => this.loadIfShared());
    void panel.context.ready.then(() => this.followModel());
  }

  /** Agent tags from the metadata, in every view; remote changes never move the user. */
  private followModel(): void {
    const model: Json = this.panel.context.model;
    model.cells.changed.connect(this.onCellsChanged, this);
    model.metadataChanged?.connect(this.updateNotice, this);
    this.onCellsChanged();
    // Collaborators' changes (jupyter-collaboration) arrive as non-local Yjs transactions.
    const ydoc: Json = model.sharedModel?.ydoc;
    ydoc?.on?.('beforeTransaction', this.beforeTransaction);
    ydoc?.on?.('afterTransaction', this.afterTransaction);
  }

  private taggedModels = new WeakSet<object>();
  private onCellsChanged(): void {
    for (const cell of this.panel.content.widgets) {
      syncAgentTag(cell);
      const model: Json = cell.model;
      if (!this.taggedModels.has(model) && model.metadataChanged) {
        this.taggedModels.add(model);
        model.metadataChanged.connect(() => {
          const widget = this.panel.content.widgets.find(w => w.model === model);
          if (widget) {
            syncAgentTag(widget);
          }
        });
      }
    }
  }

  private beforeTransaction = (transaction: Json): void => {
    if (!transaction.local && !this.panel.isDisposed && !this.placeBeforeRemote) {
      this.placeBeforeRemote = userPlace(this.panel.content);
    }
  };

  private afterTransaction = (transaction: Json): void => {
    const place = this.placeBeforeRemote;
    if (!transaction.local && place) {
      this.placeBeforeRemote = null;
      restoreUserPlace(this.panel.content, place);
    }
  };

  /** The page is going away (reload, tab closed): tell the kernel now, it cannot notice otherwise. */
  goodbye(): void {
    this.link?.disconnect('page unloaded');
    // Still here a moment later (the user cancelled leaving the page): connect again.
    window.setTimeout(() => this.probe(), 2000);
  }

  private lastFocusSent = 0;
  private onFocusIn = () => {
    if (Date.now() - this.lastFocusSent > 1000) {
      this.focus();
    }
  };

  focus(): void {
    this.lastFocusSent = Date.now();
    this.link?.send({ event: 'focus' });
  }

  private onKernelChanged(_: unknown, change: { newValue: Kernel.IKernelConnection | null }): void {
    this.attach(change.newValue);
  }

  private attach(kernel: Kernel.IKernelConnection | null): void {
    if (kernel === this.kernel) {
      return;
    }
    this.detach();
    this.kernel = kernel;
    this.loadRequested = false;
    this.cameBack = false;
    if (!kernel || !kernel.handleComms) {
      return;
    }
    const link = new ViewLink(
      this.app,
      this.panel,
      kernel,
      () => this.updateNotice(),
      state => {
        this.cameBack = this.cameBack || !!state.came_back;
        this.updateNotice();
      },
      // The kernel dropped this view (it was too slow to acknowledge a request) or ipymcp stopped:
      // connect again if ipymcp is still there.
      () => window.setTimeout(() => this.probe(), 1000)
    );
    this.link = link;
    kernel.statusChanged.connect(this.onStatus, this);
    // The kernel loads ipymcp after this view is open: it announces itself.
    kernel.registerCommTarget(ANNOUNCE_TARGET, this.onAnnounce);
    kernel.connectionStatusChanged.connect(this.onConnectionStatus, this);
    // This view opened (or the page reloaded) after ipymcp was loaded: ask whether it is there.
    void kernel.info.then(() => this.probe());
    this.loadIfShared();
  }

  /** The notebook opted in (metadata.ipymcp.share): load ipymcp in its kernel, once per kernel. */
  private loadIfShared(): void {
    if (this.kernel && this.panel.context.isReady && sharedByMetadata(this.panel) && !this.loadRequested) {
      this.load();
    }
  }

  private onStatus(kernel: Kernel.IKernelConnection, status: Kernel.Status): void {
    if (kernel !== this.kernel) {
      return;
    }
    if (status === 'restarting' || status === 'autorestarting') {
      this.reloadAfterRestart = this.reloadAfterRestart || !!this.link?.connected || sharedByMetadata(this.panel);
      this.loadRequested = false;
      this.cameBack = false;
    } else if (status === 'idle' && this.reloadAfterRestart) {
      this.reloadAfterRestart = false;
      this.cameBack = true;
      this.load();
    }
  }

  /** Silent %load_ext ipymcp (no history, nothing in a cell); a second load is a no-op. */
  private load(): void {
    const kernel = this.kernel;
    if (!kernel || kernel.isDisposed) {
      return;
    }
    this.loadRequested = true;
    this.updateNotice(); // the helper in the kernel may have been faster
    const future = kernel.requestExecute({
      code: LOAD_CODE,
      silent: true,
      store_history: false,
      allow_stdin: false,
      stop_on_error: false
    });
    future.done.then(
      reply => {
        const content: Json = reply?.content;
        if (content && content.status !== 'ok') {
          this.showNotice(`ipymcp could not be loaded in this kernel: ${content.ename}: ${content.evalue}`, false);
        }
      },
      () => undefined
    );
  }

  /** The same text in every view: it says only what every view knows (metadata, the kernel's word). */
  private updateNotice(): void {
    if (this.link?.connected) {
      const why = this.cameBack
        ? ' (loaded again after the kernel restart)'
        : sharedByMetadata(this.panel)
          ? ' (this notebook is shared: %mcp share on)'
          : '';
      this.showNotice(`AI agents can use this notebook through ipymcp${why}`, true);
    } else if (this.notice?.canStop) {
      this.notice.dispose();
      this.notice = null;
    }
  }

  private showNotice(text: string, canStop: boolean): void {
    if (!this.notice || this.notice.isDisposed) {
      this.notice = new ShareNotice(() => void this.stopSharing());
      // A banner above the cells: a toolbar item would overflow into the "..." menu on narrow views.
      const header: Json = (this.panel as Json).contentHeader;
      if (header?.addWidget) {
        header.addWidget(this.notice);
      } else {
        this.panel.toolbar.addItem('ipymcp-share', this.notice);
      }
    }
    this.notice.setText(text, canStop);
  }

  /** One click: ipymcp stops in the kernel and the notebook's opt-in is removed. */
  async stopSharing(): Promise<void> {
    this.reloadAfterRestart = false;
    this.link?.send({ event: 'stop_sharing' });
    if (sharedByMetadata(this.panel)) {
      await setShare(this.panel, false);
    }
    this.notice?.dispose();
    this.notice = null;
  }

  private onConnectionStatus(kernel: Kernel.IKernelConnection, status: Kernel.ConnectionStatus): void {
    if (status === 'connected' && kernel === this.kernel && !this.link?.connected) {
      this.probe();
    }
  }

  private probe(): void {
    const kernel = this.kernel;
    if (!kernel || kernel.isDisposed) {
      return;
    }
    kernel
      .requestCommInfo({ target_name: ANNOUNCE_TARGET })
      .then(reply => {
        const content: Json = reply.content;
        if (content.status === 'ok' && Object.keys(content.comms ?? {}).length > 0) {
          this.link?.connect();
        }
      })
      .catch(() => undefined);
  }

  private detach(): void {
    const kernel = this.kernel;
    this.link?.disconnect('kernel changed');
    this.link = null;
    this.kernel = null;
    if (kernel && !kernel.isDisposed) {
      kernel.connectionStatusChanged.disconnect(this.onConnectionStatus, this);
      kernel.statusChanged.disconnect(this.onStatus, this);
      try {
        kernel.removeCommTarget(ANNOUNCE_TARGET, this.onAnnounce);
      } catch {
        // comms are not handled on this connection
      }
    }
  }

  dispose(): void {
    this.link?.disconnect('view closed');
    this.detach();
    const model: Json = this.panel.context.model;
    model?.cells?.changed.disconnect(this.onCellsChanged, this);
    model?.metadataChanged?.disconnect(this.updateNotice, this);
    model?.sharedModel?.ydoc?.off?.('beforeTransaction', this.beforeTransaction);
    model?.sharedModel?.ydoc?.off?.('afterTransaction', this.afterTransaction);
    this.panel.sessionContext.kernelChanged.disconnect(this.onKernelChanged, this);
    this.panel.node.removeEventListener('focusin', this.onFocusIn);
    watchers.delete(this.panel);
  }
}

/** The notice in the notebook's toolbar while ipymcp is connected, with a one-click Stop sharing. */
class ShareNotice extends Widget {
  private label = document.createElement('span');
  private button = document.createElement('button');
  canStop = false;

  constructor(onStop: () => void) {
    super();
    this.addClass('ipymcp-share-notice');
    this.button.className = 'ipymcp-stop-sharing jp-Button';
    this.button.textContent = 'Stop sharing';
    this.button.onclick = onStop;
    this.node.append(this.label, this.button);
  }

  setText(text: string, canStop: boolean): void {
    this.canStop = canStop;
    this.label.textContent = text;
    this.node.title = text;
    this.button.style.display = canStop ? '' : 'none';
  }
}

const watchers = new Map<NotebookPanel, PanelWatcher>();

function watch(app: JupyterFrontEnd, panel: NotebookPanel): void {
  if (!watchers.has(panel)) {
    watchers.set(panel, new PanelWatcher(app, panel));
  }
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: 'ipymcp:plugin',
  description: 'Lets the ipymcp MCP server in the kernel read and write this notebook.',
  autoStart: true,
  requires: [INotebookTracker],
  activate: (app: JupyterFrontEnd, tracker: INotebookTracker) => {
    tracker.forEach(panel => watch(app, panel));
    tracker.widgetAdded.connect((_, panel) => watch(app, panel));
    const focusCurrent = () => {
      const panel = tracker.currentWidget;
      if (panel && document.hasFocus()) {
        watchers.get(panel)?.focus();
      }
    };
    tracker.currentChanged.connect(focusCurrent);
    window.addEventListener('focus', focusCurrent);
    // A reloaded or closed page never disposes its panels: say goodbye, or the kernel would keep
    // addressing a view that is gone.
    const goodbye = () => watchers.forEach(watcher => watcher.goodbye());
    window.addEventListener('beforeunload', goodbye);
    window.addEventListener('pagehide', goodbye);
    console.log(`ipymcp labextension activated in ${app.name} ${app.version}`);
  }
};

export default plugin;
