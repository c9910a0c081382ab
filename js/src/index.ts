/**
 * ipymcp labextension: lets the MCP server inside the kernel read and write the cells of the
 * notebook view the user is looking at.
 *
 * The house: protocol.ts (the wire, typed; constants from ipymcp/frontend/protocol.json),
 * operations.ts (one handler per op) over cells.ts, run.ts and place.ts (the agent never moves
 * the user), approval.ts and token.ts (the dialogs), link.ts (one view's comm), watcher.ts (a
 * panel across kernels, restarts and reloads) with share.ts (the opt-in and its notice), and this
 * file, which starts a watcher for every notebook panel.
 */
import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { INotebookTracker } from '@jupyterlab/notebook';
import { everyWatcher, watch, watcherOf } from './watcher';

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
        watcherOf(panel)?.focus();
      }
    };
    tracker.currentChanged.connect(focusCurrent);
    window.addEventListener('focus', focusCurrent);
    // A reloaded or closed page never disposes its panels: say goodbye, or the kernel would keep
    // addressing a view that is gone.
    const goodbye = () => everyWatcher().forEach(watcher => watcher.goodbye());
    window.addEventListener('beforeunload', goodbye);
    window.addEventListener('pagehide', goodbye);
    console.log(`ipymcp labextension activated in ${app.name} ${app.version}`);
  }
};

export default plugin;
