// WebSockets in functions, as in Workers: `new WebSocketPair()` makes two
// connected ends; the function calls `accept()` on the server end, returns
// the client end in a `101` response, and the node relays the connection.
// What the client sends arrives through `deliver()`, one event at a time,
// each run under the function's limits; what the server end sends goes
// out through ops, counted against the client's backlog.
//
// A socket keeps its own listeners instead of EventTarget's dispatch: an
// exception a listener throws is logged with the event, as Workers does,
// rather than reported as fatal to the isolate.

import { primordials } from "ext:core/mod.js";
import {
  op_isola_ws_client_close,
  op_isola_ws_client_send_binary,
  op_isola_ws_client_send_text,
  op_isola_ws_close,
  op_isola_ws_connect,
  op_isola_ws_next,
  op_isola_ws_open,
  op_isola_ws_send_binary,
  op_isola_ws_send_text,
} from "ext:core/ops";

const {
  ArrayFrom,
  ArrayBufferIsView,
  ArrayBufferPrototype,
  ArrayPrototypeFilter,
  ArrayPrototypePush,
  ArrayPrototypeSlice,
  FunctionPrototypeCall,
  NumberIsInteger,
  ObjectDefineProperty,
  ObjectPrototypeIsPrototypeOf,
  RangeError,
  ReflectConstruct,
  SafeArrayIterator,
  SafeMap,
  SafeWeakMap,
  String,
  StringPrototypeSlice,
  StringPrototypeStartsWith,
  Symbol,
  TypeError,
  TypedArrayPrototypeGetBuffer,
  TypedArrayPrototypeGetByteLength,
  TypedArrayPrototypeGetByteOffset,
  Uint8Array,
} = primordials;

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

/** What a send op answers (see `websocket.rs`). */
const SENT_CLOSED = 1;
const SENT_TOO_BIG = 2;
const SENT_OVERFLOW = 3;

/** Largest close reason, in bytes (RFC 6455: a control frame's 125 less the code). */
const MAX_REASON = 123;

const token = Symbol("isola.websocket");

/**
 * Makes the WebSocket globals from deno_web's event module and deno_fetch's
 * Response; returns them with what the host needs.
 */
export function makeWebSockets(event, Response, toInnerResponse, logError) {
  const { Event, EventTarget, MessageEvent, CloseEvent, ErrorEvent } = event;
  /** Accepted server ends, by id: where the client's events go. */
  const accepted = new SafeMap();
  /** The client end each 101 response carries. */
  const responseSockets = new SafeWeakMap();

  class WebSocket extends EventTarget {
    #id;
    #client;
    #accepted = false;
    #readyState = OPEN;
    #outbound = false;
    #url = null;
    #protocol = "";
    #listeners = new SafeMap();
    #handlers = new SafeMap();

    constructor(key, id = undefined, client = undefined) {
      super();
      if (key === token) {
        this.#id = id;
        this.#client = client;
        return;
      }
      // `new WebSocket(url, protocols)`: a connection out of the function.
      let url = String(key);
      if (StringPrototypeStartsWith(url, "http:")) url = "ws:" + StringPrototypeSlice(url, 5);
      if (StringPrototypeStartsWith(url, "https:")) url = "wss:" + StringPrototypeSlice(url, 6);
      const protocols = id === undefined ? [] : typeof id === "string" ? [id] : ArrayFrom(id, String);
      this.#url = url;
      this.#outbound = true;
      this.#accepted = true;
      this.#readyState = CONNECTING;
      this.#connect(url, protocols);
    }

    async #connect(url, protocols) {
      let opened;
      try {
        opened = await op_isola_ws_connect(url, protocols);
      } catch (error) {
        this.#readyState = CLOSED;
        this.#fire("error", new ErrorEvent("error", { message: error?.message ?? String(error), error }));
        this.#fire("close", new CloseEvent("close", { code: 1006, reason: "", wasClean: false }));
        return;
      }
      this.#id = opened[0];
      this.#protocol = opened[1];
      if (this.#readyState === CONNECTING) this.#readyState = OPEN;
      this.#fire("open", new Event("open"));
      for (;;) {
        const next = await op_isola_ws_next(this.#id);
        if (next === null) return;
        const [kind, text, bytes, code, reason] = next;
        if (kind === 2) {
          this.#readyState = CLOSED;
          this.#fire("close", new CloseEvent("close", { code, reason, wasClean: code !== 1006 }));
          return;
        }
        const data = kind === 0 ? text : TypedArrayPrototypeGetBuffer(bytes);
        this.#fire("message", new MessageEvent("message", { data }));
      }
    }

    get readyState() {
      return this.#readyState;
    }

    get url() {
      return this.#url;
    }

    get protocol() {
      return this.#protocol;
    }

    get extensions() {
      return "";
    }

    accept() {
      if (this.#client) {
        throw new TypeError("accept() the server end; return the client end in a 101 Response");
      }
      if (this.#accepted) throw new TypeError("this WebSocket was accepted already");
      this.#accepted = true;
      accepted.set(this.#id, this);
    }

    send(data) {
      if (this.#client) throw new TypeError("the client end belongs to the client: send on the server end");
      if (!this.#accepted) throw new TypeError("call accept() before send()");
      if (this.#readyState === CONNECTING) throw new TypeError("the WebSocket is still connecting: send after its open event");
      // As the WHATWG WebSocket: sending on a closing or closed socket does
      // nothing (a timer that outlives its client must not fail the isolate).
      if (this.#readyState !== OPEN) return;
      const sendText = this.#outbound ? op_isola_ws_client_send_text : op_isola_ws_send_text;
      const sendBinary = this.#outbound ? op_isola_ws_client_send_binary : op_isola_ws_send_binary;
      let sent;
      if (typeof data === "string") {
        sent = sendText(this.#id, data);
      } else if (ObjectPrototypeIsPrototypeOf(ArrayBufferPrototype, data)) {
        sent = sendBinary(this.#id, new Uint8Array(data));
      } else if (ArrayBufferIsView(data)) {
        const bytes = new Uint8Array(
          data.buffer,
          data.byteOffset,
          data.byteLength,
        );
        sent = sendBinary(this.#id, bytes);
      } else {
        sent = sendText(this.#id, String(data));
      }
      if (sent === SENT_TOO_BIG) {
        throw new RangeError("the message is larger than the function's websocket_message_kb limit");
      }
      if (sent === SENT_OVERFLOW || sent === SENT_CLOSED) {
        // Dropped by the node or gone: its close event follows, if it can.
        this.#readyState = CLOSED;
      }
    }

    close(code = 1000, reason = "") {
      if (this.#client) throw new TypeError("the client end belongs to the client: close the server end");
      code = +code;
      if (!NumberIsInteger(code) || (code !== 1000 && !(code >= 3000 && code <= 4999))) {
        throw new RangeError(`the close code must be 1000 or between 3000 and 4999, got ${code}`);
      }
      reason = String(reason);
      if (new TextEncoder().encode(reason).length > MAX_REASON) {
        throw new RangeError(`the close reason must be at most ${MAX_REASON} bytes`);
      }
      if (this.#readyState === CONNECTING) {
        throw new TypeError("the WebSocket is still connecting: close it after its open event");
      }
      if (this.#readyState !== OPEN) return;
      this.#readyState = CLOSING;
      if (this.#outbound) {
        op_isola_ws_client_close(this.#id, code, reason);
      } else {
        op_isola_ws_close(this.#id, code, reason);
      }
    }

    addEventListener(type, listener, options = undefined) {
      if (listener == null) return;
      const once = typeof options === "object" && options !== null && !!options.once;
      const list = this.#listeners.get(type) ?? [];
      for (const entry of new SafeArrayIterator(list)) {
        if (entry.listener === listener) return;
      }
      ArrayPrototypePush(list, { listener, once });
      this.#listeners.set(type, list);
    }

    removeEventListener(type, listener) {
      const list = this.#listeners.get(type);
      if (list) {
        this.#listeners.set(type, ArrayPrototypeFilter(list, (e) => e.listener !== listener));
      }
    }

    dispatchEvent(event) {
      this.#fire(event.type, event);
      return true;
    }

    /** Runs the listeners of `type`, logging what they throw. */
    #fire(type, event) {
      const handler = this.#handlers.get(type);
      const list = ArrayPrototypeSlice(this.#listeners.get(type) ?? [], 0);
      if (handler) ArrayPrototypePush(list, { listener: handler, once: false });
      for (const entry of new SafeArrayIterator(list)) {
        if (entry.once) this.removeEventListener(type, entry.listener);
        try {
          if (typeof entry.listener === "function") {
            FunctionPrototypeCall(entry.listener, this, event);
          } else if (typeof entry.listener?.handleEvent === "function") {
            FunctionPrototypeCall(entry.listener.handleEvent, entry.listener, event);
          }
        } catch (error) {
          logError(`Uncaught (in WebSocket ${type} listener)`, error);
        }
      }
    }

    /** What the client sent (host only). */
    static deliver(id, kind, data, code, reason) {
      const socket = accepted.get(id);
      if (socket === undefined) return;
      if (kind === 2) {
        accepted.delete(id);
        socket.#readyState = CLOSED;
        const wasClean = code !== 1006;
        socket.#fire("close", new CloseEvent("close", { code, reason, wasClean }));
        return;
      }
      if (socket.#readyState !== OPEN && socket.#readyState !== CLOSING) return;
      if (kind === 1) {
        const whole = TypedArrayPrototypeGetByteOffset(data) === 0 &&
          TypedArrayPrototypeGetByteLength(data) === TypedArrayPrototypeGetBuffer(data).byteLength;
        data = whole ? TypedArrayPrototypeGetBuffer(data) : new Uint8Array(data).buffer;
      }
      socket.#fire("message", new MessageEvent("message", { data }));
    }

    static isClient(value) {
      return ObjectPrototypeIsPrototypeOf(WebSocket.prototype, value) && value.#client;
    }

    static idOf(value) {
      return value.#id;
    }

    static setHandler(socket, type, value) {
      socket.#handlers.set(type, typeof value === "function" ? value : null);
    }

    static handler(socket, type) {
      return socket.#handlers.get(type) ?? null;
    }
  }
  for (const type of new SafeArrayIterator(["open", "message", "close", "error"])) {
    ObjectDefineProperty(WebSocket.prototype, `on${type}`, {
      get() {
        return WebSocket.handler(this, type);
      },
      set(value) {
        WebSocket.setHandler(this, type, value);
      },
      enumerable: true,
      configurable: true,
    });
  }
  for (const [name, value] of new SafeArrayIterator([["CONNECTING", 0], ["OPEN", 1], ["CLOSING", 2], ["CLOSED", 3]])) {
    ObjectDefineProperty(WebSocket, name, { value, enumerable: true });
    ObjectDefineProperty(WebSocket.prototype, name, { value, enumerable: true });
  }

  class WebSocketPair {
    constructor() {
      const id = op_isola_ws_open();
      if (id < 0) {
        throw new RangeError(
          "too many WebSockets: the function holds as many as its websocket_connections limit allows",
        );
      }
      this[0] = new WebSocket(token, id, true);
      this[1] = new WebSocket(token, id, false);
    }
  }

  // `new Response(null, { status: 101, webSocket: client })`: Response
  // itself refuses 101, so the constructor makes a 200 and sets 101 on
  // its inner response. Same prototype: `instanceof Response` still holds
  // for every response, fetched ones included.
  function WorkersResponse(body = null, init = undefined) {
    if (new.target === undefined) throw new TypeError("Response must be called with new");
    const target = new.target === WorkersResponse ? Response : new.target;
    const socket = init?.webSocket;
    if (socket == null) return ReflectConstruct(Response, [body, init], target);
    if (!WebSocket.isClient(socket)) {
      throw new TypeError("webSocket must be the client end of a WebSocketPair");
    }
    if (init.status !== 101) throw new RangeError("a Response with a webSocket must have status 101");
    const response = ReflectConstruct(Response, [body, {
      headers: init.headers,
      statusText: init.statusText,
    }], target);
    toInnerResponse(response).status = 101;
    responseSockets.set(response, socket);
    return response;
  }
  WorkersResponse.prototype = Response.prototype;
  ObjectDefineProperty(Response.prototype, "constructor", { value: WorkersResponse, configurable: true, writable: true });
  ObjectDefineProperty(Response.prototype, "webSocket", {
    get() {
      return responseSockets.get(this) ?? null;
    },
    configurable: true,
  });
  for (const name of new SafeArrayIterator(["json", "redirect", "error"])) {
    ObjectDefineProperty(WorkersResponse, name, { value: Response[name], writable: true, configurable: true });
  }

  /** The socket id a response accepted, or undefined. */
  function socketOf(response) {
    const client = responseSockets.get(response);
    if (client === undefined) return undefined;
    const id = WebSocket.idOf(client);
    if (!accepted.has(id)) {
      throw new TypeError("call accept() on the server end before returning the client end");
    }
    return id;
  }

  return {
    WebSocket,
    WebSocketPair,
    WorkersResponse,
    CloseEvent,
    ErrorEvent,
    socketOf,
    deliver: WebSocket.deliver,
  };
}
