/**
 * The notebook protocol between ipymcp in the kernel and this extension in each notebook view:
 * JSON over comms. Its constants (version, comm targets, op and event names, the load code) come
 * from ipymcp/frontend/protocol.json, the file the kernel side reads too (through
 * protocol.generated.ts, written from it at build time); the shapes of each op's arguments and
 * result are typed here.
 *
 *   kernel -> every view   comm_open 'ipymcp.announce' {protocol}      (on %load_ext)
 *   view   -> kernel       comm_open 'ipymcp' {protocol, client, path, app, appVersion, focused}
 *   kernel -> view         comm_msg  {id, op, args}                     (a Request)
 *   view   -> kernel       comm_msg  {id, ack: true}                    (protocol 2: at once, before the work)
 *   view   -> kernel       comm_msg  {id, ok, result | error, code?}   (exactly one per request)
 *   kernel -> view         comm_msg  {event: 'state', came_back}        (protocol 2, on connect and after a restart)
 *   view   -> kernel       comm_msg  {event: 'focus' | 'stop_sharing'}
 *   view   -> kernel       comm_close {reason}                          (view closed, page unloaded)
 *
 * Version skew: this extension is installed in the Jupyter server's environment, ipymcp in the
 * kernel's, and they can be different releases. The rule, both ways:
 * - Older kernel (protocol 1) takes the first message carrying a request's id as the reply, so the
 *   view acknowledges a request only once the kernel said it speaks protocol >= 2: in its
 *   announcement, or by its `state` event (only protocol >= 2 kernels send it, when the view
 *   connects). A view that connected after a page reload has not seen the announcement: until
 *   the state event arrives it answers as protocol 1 does (reply only).
 * - Newer kernel: an op this extension does not know gets `{ok: false, code: 'unknown_op', error}`
 *   (the error keeps the words "unknown op" older kernels look for); unknown fields in a request's
 *   arguments are ignored, missing optional ones take their defaults.
 * - The load code the extension runs in a kernel (after a restart, for a shared notebook) is
 *   ipymcp's public entry point `ipymcp.restart.autoload`: the kernel side keeps that name.
 */
import type { ICodeCellModel } from '@jupyterlab/cells';
import type { JSONObject, JSONValue } from '@lumino/coreutils';
import { spec } from './protocol.generated';

export const PROTOCOL = spec.protocol;
export const ANNOUNCE_TARGET = spec.announce_target;
export const VIEW_TARGET = spec.view_target;
/** %load_ext ipymcp, minus the extension manager's record (the user's own %load_ext then shows the status line). */
export const LOAD_CODE = spec.load_code;
/** Kernels since this protocol wait for each request's ack and send the state event. */
export const ACK_PROTOCOL = 2;

export type Op = (typeof spec.ops)[number];
export type ViewEventName = (typeof spec.view_events)[number];
export type KernelEventName = (typeof spec.kernel_events)[number];

// -- each op's arguments (as the kernel sends them) and result ----------------------------------

export type CellType = 'code' | 'markdown' | 'raw';
export type Output = ReturnType<ICodeCellModel['outputs']['toJSON']>[number];
export interface TextPosition extends JSONObject {
  line: number;
  column: number;
}
export interface TextRange extends JSONObject {
  start: TextPosition;
  end: TextPosition;
}

/** A cell as the agent sees it; `revision` is what a write must quote (stale-write guard). */
export interface CellInfo {
  index: number;
  id: string;
  cell_type: string;
  source: string;
  revision: string;
  execution_count: number | null;
  outputs: Output[];
  n_outputs: number;
  /** metadata.ipymcp: which agent tool wrote the cell, when. */
  agent: JSONValue | null;
  active: boolean;
  selected: boolean;
}

export interface ApprovalSection {
  label?: string;
  text?: string;
  kind?: 'text' | 'diff';
}
export type Decision = 'allow' | 'allow_session' | 'deny';

type NoArgs = Record<string, never>;

/** One entry per op of protocol.json (checked below): what the kernel sends, what the view answers. */
interface Ops {
  hello: { args: NoArgs; result: { path: string; n_cells: number; focused: boolean } };
  read_notebook: {
    args: { include_outputs?: boolean; start?: number; limit?: number | null };
    result: {
      path: string;
      dirty: boolean;
      n_cells: number;
      active_cell_index: number;
      active_cell_id: string | null;
      cells: CellInfo[];
    };
  };
  insert_cell: {
    args: {
      source?: string;
      cell_type?: CellType;
      index?: number | null;
      after_cell_id?: string | null;
      metadata?: JSONObject;
    };
    result: CellInfo;
  };
  edit_cell: {
    args: { cell_id: string; source?: string; revision?: string | null; provenance?: JSONObject | null };
    result: CellInfo;
  };
  delete_cell: { args: { cell_id: string; revision?: string | null }; result: CellInfo };
  move_cell: { args: { cell_id: string; to_index?: number }; result: CellInfo };
  execute_cell: { args: { cell_id: string }; result: CellInfo & { ok: boolean } };
  get_active: {
    args: NoArgs;
    result: {
      path: string;
      index: number;
      cell: CellInfo | null;
      mode: string;
      selected_ids: string[];
      editor_selection: TextRange | null;
      focused: boolean;
    };
  };
  approve: {
    args: {
      tool?: string;
      client?: string;
      message?: string;
      /** The whole call as one text, from kernels that predate sections. */
      detail?: string;
      sections?: ApprovalSection[];
      timeout_s?: number;
    };
    result: { decision: Decision };
  };
  save: { args: NoArgs; result: { path: string; dirty: boolean } };
  restart: { args: { delay_ms?: number }; result: { path: string; restarting: true } };
  share: { args: { share?: boolean }; result: { path: string; share: boolean; saved: boolean } };
  show_token: { args: { token?: string; url?: string; command?: string }; result: { shown: true } };
}

/** Compiles only while Ops has exactly the ops of protocol.json. */
type SameKeys<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
export type OpsMatchProtocolJson = Assert<SameKeys<keyof Ops, Op>>;
type Assert<T extends true> = T;

export type OpArgs<K extends Op> = Ops[K]['args'];
export type OpResult<K extends Op> = Ops[K]['result'];

/** What a view does for each op: a handler table of this type is a compile error when an op is missing. */
export type OpHandlers<Context> = {
  [K in Op]: (context: Context, args: OpArgs<K>) => OpResult<K> | Promise<OpResult<K>>;
};

// -- messages on the wire ----------------------------------------------------------------------

export type RequestId = number | string;
export type Request = { [K in Op]: { id: RequestId; op: K; args: OpArgs<K> } }[Op];

interface KernelEvents {
  state: { came_back: boolean };
}
export type KernelEventsMatchProtocolJson = Assert<SameKeys<keyof KernelEvents, KernelEventName>>;
export type KernelEvent = { [E in KernelEventName]: { event: E } & KernelEvents[E] }[KernelEventName];
export type ViewEvent = { [E in ViewEventName]: { event: E } }[ViewEventName];

export type ErrorCode = 'unknown_op' | 'stale_cell';
export interface Ack {
  id: RequestId;
  ack: true;
}
export interface Success {
  id: RequestId;
  ok: true;
  result: OpResult<Op>;
}
export interface Failure {
  id: RequestId;
  ok: false;
  error: string;
  code?: ErrorCode;
  /** Older kernels test this flag; newer ones the code. */
  stale?: boolean;
}
export type Reply = Success | Failure;
export type ViewMessage = Ack | Reply | ViewEvent;

/** comm_open data of the view's comm. */
export type ViewHello = {
  protocol: number;
  client: string;
  path: string;
  app: string;
  appVersion: string;
  focused: boolean;
};

/** A kernel message as the view handles it. */
export type Incoming =
  | { kind: 'request'; request: Request }
  | { kind: 'unknown_op'; id: RequestId; op: string }
  | { kind: 'event'; event: KernelEvent }
  | { kind: 'ignored' };

const OPS: readonly string[] = spec.ops;

export function isOp(op: unknown): op is Op {
  return typeof op === 'string' && OPS.includes(op);
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Sort a comm message from the kernel. The kernel is trusted to send each op's argument types
 * (it is the user's own kernel); the handlers still cope with a missing optional field.
 */
export function parseKernelMessage(data: unknown): Incoming {
  if (!isObject(data)) {
    return { kind: 'ignored' };
  }
  if (data.event === 'state') {
    return { kind: 'event', event: { event: 'state', came_back: !!data.came_back } };
  }
  const id = data.id;
  if (typeof id !== 'number' && typeof id !== 'string') {
    return { kind: 'ignored' };
  }
  if (!isOp(data.op)) {
    return { kind: 'unknown_op', id, op: String(data.op) };
  }
  const args = isObject(data.args) ? data.args : {};
  return { kind: 'request', request: { id, op: data.op, args } as Request };
}

/** The protocol a kernel announced (comm_open data of 'ipymcp.announce'); null if it did not say. */
export function announcedProtocol(data: unknown): number | null {
  return isObject(data) && typeof data.protocol === 'number' ? data.protocol : null;
}

/** Whether a kernel of this protocol (null: not known yet) wants acks; see the version-skew rule. */
export function wantsAcks(kernelProtocol: number | null): boolean {
  return kernelProtocol !== null && kernelProtocol >= ACK_PROTOCOL;
}

/** A failure the kernel tells apart by its code. */
export class OpError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string
  ) {
    super(message);
  }
}

export function success<K extends Op>(id: RequestId, result: OpResult<K>): Success {
  return { id, ok: true, result };
}

export function failure(id: RequestId, err: unknown): Failure {
  const error = err instanceof Error ? err.message : String(err);
  if (err instanceof OpError) {
    return { id, ok: false, error, code: err.code, stale: err.code === 'stale_cell' };
  }
  return { id, ok: false, error, stale: false };
}

export function unknownOp(id: RequestId, op: string): Failure {
  return failure(
    id,
    new OpError('unknown_op', `unknown op ${op} (frontend protocol ${PROTOCOL}); update the ipymcp labextension`)
  );
}
