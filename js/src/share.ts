/**
 * Sharing (ipymcp/restart.py): a notebook with metadata.ipymcp.share = true (`%mcp share on`) gets
 * `%load_ext ipymcp` run silently in its kernel when it is opened; so does a kernel restarted
 * while ipymcp was connected. While ipymcp is connected the view shows a notice with "Stop sharing".
 */
import type { NotebookPanel } from '@jupyterlab/notebook';
import type { PartialJSONObject } from '@lumino/coreutils';
import { Widget } from '@lumino/widgets';
import { METADATA_KEY } from './cells';

function shareMetadata(panel: NotebookPanel): PartialJSONObject | null {
  const value: unknown = panel.context.model?.getMetadata?.(METADATA_KEY);
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as PartialJSONObject) : null;
}

export function sharedByMetadata(panel: NotebookPanel): boolean {
  return shareMetadata(panel)?.share === true;
}

/** metadata.ipymcp.share on or off; saved at once unless the user has unsaved changes of their own. */
export async function setShare(panel: NotebookPanel, share: boolean): Promise<{ share: boolean; saved: boolean }> {
  const model = panel.context.model;
  const wasDirty = model.dirty;
  const meta: PartialJSONObject = { ...(shareMetadata(panel) ?? {}) };
  if (share) {
    meta.share = true;
  } else {
    delete meta.share;
  }
  if (Object.keys(meta).length) {
    model.setMetadata(METADATA_KEY, meta);
  } else {
    model.deleteMetadata(METADATA_KEY);
  }
  if (!wasDirty) {
    await panel.context.save();
  }
  return { share, saved: !wasDirty };
}

/** The notice above the notebook while ipymcp is connected, with a one-click Stop sharing. */
export class ShareNotice extends Widget {
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
