/** One comm between a notebook view and ipymcp in its kernel: requests in, acks and replies out. */
import type { JupyterFrontEnd } from '@jupyterlab/application';
import type { NotebookPanel } from '@jupyterlab/notebook';
import type { Kernel, KernelMessage } from '@jupyterlab/services';
import type { JSONValue } from '@lumino/coreutils';
import { notebookPath } from './cells';
import { focused, handle } from './operations';
import {
  ACK_PROTOCOL,
  failure,
  KernelEvent,
  parseKernelMessage,
  PROTOCOL,
  success,
  unknownOp,
  VIEW_TARGET,
  ViewHello,
  ViewMessage,
  wantsAcks
} from './protocol';

/** What the link tells its PanelWatcher. */
export interface LinkEvents {
  /** Connected or disconnected. */
  changed(): void;
  /** The kernel's `state` event. */
  state(event: KernelEvent): void;
  /** The kernel closed this view's comm (it dropped the view, or ipymcp stopped). */
  closedByKernel(): void;
}

/** One comm per (view, kernel connection); never more than one listener of each kind. */
export class ViewLink {
  private comm: Kernel.IComm | null = null;
  // The protocol the kernel said it speaks on this comm (null: not said yet): acks only from 2 on.
  private kernelProtocol: number | null = null;

  constructor(
    private app: JupyterFrontEnd,
    private panel: NotebookPanel,
    private kernel: Kernel.IKernelConnection,
    private events: LinkEvents
  ) {}

  get connected(): boolean {
    return !!this.comm && !this.comm.isDisposed;
  }

  /** Open the view's comm; `announced`: the protocol in the kernel's announcement, if this answers one. */
  connect(announced: number | null = null): void {
    if (this.connected) {
      this.kernelProtocol = this.kernelProtocol ?? announced;
      return;
    }
    if (this.kernel.isDisposed || this.panel.isDisposed) {
      return;
    }
    const comm = this.kernel.createComm(VIEW_TARGET);
    this.comm = comm;
    this.kernelProtocol = announced;
    comm.onMsg = (msg: KernelMessage.ICommMsgMsg) => this.receive(msg.content.data);
    comm.onClose = () => {
      if (this.comm === comm) {
        this.comm = null;
        this.events.changed();
        this.events.closedByKernel();
      }
    };
    const hello: ViewHello = {
      protocol: PROTOCOL,
      client: this.kernel.clientId,
      path: notebookPath(this.panel),
      app: this.app.name,
      appVersion: this.app.version,
      focused: focused(this.app, this.panel)
    };
    comm.open(hello);
    this.events.changed();
  }

  private receive(data: unknown): void {
    const message = parseKernelMessage(data);
    switch (message.kind) {
      case 'event':
        // Only kernels of protocol >= 2 send events.
        this.kernelProtocol = Math.max(this.kernelProtocol ?? ACK_PROTOCOL, ACK_PROTOCOL);
        this.events.state(message.event);
        return;
      case 'unknown_op':
        this.acknowledge(message.id);
        this.send(unknownOp(message.id, message.op));
        return;
      case 'request': {
        const { id } = message.request;
        this.acknowledge(id);
        // Never return this promise: JupyterLab stops handling kernel messages until a promise
        // returned from a comm handler settles, and execute_cell waits for kernel messages.
        void handle({ app: this.app, panel: this.panel }, message.request).then(
          result => this.send(success(id, result)),
          err => this.send(failure(id, err))
        );
        return;
      }
      case 'ignored':
        return;
    }
  }

  /** Received: the kernel knows at once that this view is alive, however long the work takes. */
  private acknowledge(id: number | string): void {
    if (wantsAcks(this.kernelProtocol)) {
      this.send({ id, ack: true });
    }
  }

  send(message: ViewMessage): void {
    if (this.connected && !this.kernel.isDisposed) {
      try {
        // JSON by construction (undefined fields are dropped on the wire).
        this.comm!.send(message as unknown as JSONValue);
      } catch (err) {
        console.warn('ipymcp: could not reply to the kernel', err);
      }
    }
  }

  disconnect(reason: string): void {
    const comm = this.comm;
    this.comm = null;
    this.events.changed();
    if (comm && !comm.isDisposed && !this.kernel.isDisposed) {
      try {
        comm.close({ reason });
      } catch {
        // the kernel is gone already
      }
    }
  }
}
