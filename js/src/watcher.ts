/** Follows one notebook panel across kernel changes, restarts, reconnects and collaborators' edits. */
import type { JupyterFrontEnd } from '@jupyterlab/application';
import type { ICellModel } from '@jupyterlab/cells';
import type { NotebookPanel } from '@jupyterlab/notebook';
import type { Kernel, KernelMessage } from '@jupyterlab/services';
import { syncAgentTag } from './cells';
import { ViewLink } from './link';
import { pageViews, restoreUserPlace, UserPlace, userPlace } from './place';
import { ANNOUNCE_TARGET, announcedProtocol, KernelEvent, LOAD_CODE } from './protocol';
import { setShare, ShareNotice, sharedByMetadata } from './share';

/** The Yjs document's transaction events (jupyter-collaboration's remote changes arrive as non-local ones). */
interface TransactionEvents {
  on(name: 'beforeTransaction' | 'afterTransaction', handler: (transaction: { local: boolean }) => void): void;
  off(name: 'beforeTransaction' | 'afterTransaction', handler: (transaction: { local: boolean }) => void): void;
}

function transactionEvents(panel: NotebookPanel): TransactionEvents | null {
  const shared = panel.context.model?.sharedModel;
  const ydoc: unknown = shared && 'ydoc' in shared ? shared.ydoc : null;
  const ok =
    typeof ydoc === 'object' &&
    ydoc !== null &&
    typeof Reflect.get(ydoc, 'on') === 'function' &&
    typeof Reflect.get(ydoc, 'off') === 'function';
  return ok ? (ydoc as TransactionEvents) : null;
}

const watchers = new Map<NotebookPanel, PanelWatcher>();

/** Follow this panel (once). */
export function watch(app: JupyterFrontEnd, panel: NotebookPanel): void {
  if (!watchers.has(panel)) {
    watchers.set(panel, new PanelWatcher(app, panel));
  }
}

export function watcherOf(panel: NotebookPanel): PanelWatcher | undefined {
  return watchers.get(panel);
}

export function everyWatcher(): PanelWatcher[] {
  return [...watchers.values()];
}

export class PanelWatcher {
  private link: ViewLink | null = null;
  private kernel: Kernel.IKernelConnection | null = null;
  private notice: ShareNotice | null = null;
  // Set when the kernel restarts while ipymcp was connected (or the notebook opted in).
  private reloadAfterRestart = false;
  // This view asked the kernel to load ipymcp (once per kernel).
  private loadRequested = false;
  // ipymcp came back after a kernel restart: seen here, or told by the kernel (views opened later).
  private cameBack = false;
  // The user's place before a collaborator's (remote) change: restored after it.
  private placeBeforeRemote: UserPlace | null = null;
  private taggedModels = new WeakSet<ICellModel>();
  private lastFocusSent = 0;

  constructor(
    private app: JupyterFrontEnd,
    private panel: NotebookPanel
  ) {
    pageViews.add(panel);
    panel.sessionContext.kernelChanged.connect(this.onKernelChanged, this);
    panel.disposed.connect(this.dispose, this);
    // The user working in this view makes it the one the agent addresses.
    panel.node.addEventListener('focusin', this.onFocusIn);
    void panel.sessionContext.ready.then(() => this.attach(panel.sessionContext.session?.kernel ?? null));
    void panel.context.ready.then(() => this.loadIfShared());
    void panel.context.ready.then(() => this.followModel());
  }

  // The kernel loads ipymcp after this view is open: it announces itself (and its protocol).
  private onAnnounce = (_: Kernel.IComm, msg: KernelMessage.ICommOpenMsg) =>
    this.link?.connect(announcedProtocol(msg.content.data));

  /** Agent tags from the metadata, in every view; remote changes never move the user. */
  private followModel(): void {
    const model = this.panel.context.model;
    model.cells.changed.connect(this.onCellsChanged, this);
    model.metadataChanged?.connect(this.updateNotice, this);
    this.onCellsChanged();
    const events = transactionEvents(this.panel);
    events?.on('beforeTransaction', this.beforeTransaction);
    events?.on('afterTransaction', this.afterTransaction);
  }

  private onCellsChanged(): void {
    for (const cell of this.panel.content.widgets) {
      syncAgentTag(cell);
      const model = cell.model;
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

  private beforeTransaction = (transaction: { local: boolean }): void => {
    if (!transaction.local && !this.panel.isDisposed && !this.placeBeforeRemote) {
      this.placeBeforeRemote = userPlace(this.panel.content);
    }
  };

  private afterTransaction = (transaction: { local: boolean }): void => {
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
    this.link = new ViewLink(this.app, this.panel, kernel, {
      changed: () => this.updateNotice(),
      state: (event: KernelEvent) => {
        this.cameBack = this.cameBack || event.came_back;
        this.updateNotice();
      },
      // The kernel dropped this view (it was too slow to acknowledge a request) or ipymcp stopped:
      // connect again if ipymcp is still there.
      closedByKernel: () => window.setTimeout(() => this.probe(), 1000)
    });
    kernel.statusChanged.connect(this.onStatus, this);
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
        const content = reply?.content;
        if (content && content.status === 'error') {
          this.showNotice(`ipymcp could not be loaded in this kernel: ${content.ename}: ${content.evalue}`, false);
        } else if (content && content.status !== 'ok') {
          this.showNotice(`ipymcp could not be loaded in this kernel: ${content.status}`, false);
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
      const header = this.panel.contentHeader;
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

  /** Connect if ipymcp is loaded in the kernel (its announce comm is open); it does not say its protocol here. */
  private probe(): void {
    const kernel = this.kernel;
    if (!kernel || kernel.isDisposed) {
      return;
    }
    kernel
      .requestCommInfo({ target_name: ANNOUNCE_TARGET })
      .then(reply => {
        const content = reply.content;
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
    const model = this.panel.context.model;
    model?.cells?.changed.disconnect(this.onCellsChanged, this);
    model?.metadataChanged?.disconnect(this.updateNotice, this);
    const events = transactionEvents(this.panel);
    events?.off('beforeTransaction', this.beforeTransaction);
    events?.off('afterTransaction', this.afterTransaction);
    this.panel.sessionContext.kernelChanged.disconnect(this.onKernelChanged, this);
    this.panel.node.removeEventListener('focusin', this.onFocusIn);
    watchers.delete(this.panel);
    pageViews.delete(this.panel);
  }
}
