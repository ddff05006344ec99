// isola's bootstrap, evaluated once while the startup snapshot is made.
//
// Deno's extension crates define the web platform but install no globals:
// this module loads their scripts, installs what a sandboxed function may
// use, and prepares the host object through which the Rust side runs
// invocations. Per-isolate work (anything touching cppgc objects, the time
// origin, deleting `Deno`) happens in `host.init()`, called at runtime.

import { core, internals, primordials } from "ext:core/mod.js";
import * as isolaConsole from "ext:isola_runtime/console.js";
import { makeWebSockets } from "ext:isola_runtime/websocket.js";
import {
  op_isola_body_end,
  op_isola_body_open,
  op_isola_body_recv,
  op_isola_body_send,
  op_isola_kv_atomic,
  op_isola_kv_get,
  op_isola_kv_list,
  op_isola_log,
  op_isola_native_memory,
  op_isola_offload_begin,
  op_isola_offload_end,
} from "ext:core/ops";

const {
  ArrayBufferIsView,
  ArrayBufferPrototypeSlice,
  ArrayPrototypeMap,
  ArrayPrototypePush,
  Error,
  MathFloor,
  MathMax,
  MathMin,
  ArrayFrom,
  FunctionPrototypeApply,
  FunctionPrototypeCall,
  Number,
  ArrayPrototypeIncludes,
  PromiseReject,
  PromiseResolve,
  StringPrototypeToLowerCase,
  TypedArrayPrototypeSubarray,
  NumberIsSafeInteger,
  NumberParseInt,
  ObjectGetOwnPropertyDescriptor,
  TypedArrayPrototypeGetByteLength,
  JSONParse,
  JSONStringify,
  ObjectDefineProperty,
  ObjectFreeze,
  ObjectPrototypeIsPrototypeOf,
  Promise,
  PromisePrototypeThen,
  SafeArrayIterator,
  String,
  TypeError,
  Uint8Array,
} = primordials;

// 1. Telemetry stubs: deno_fetch loads deno_telemetry unless these exist.
const noop = () => {};
internals.__telemetry = {
  TRACING_ENABLED: false,
  PROPAGATORS: [],
  DID_NOT_ENTER: {},
  builtinTracer: () => undefined,
  ContextManager: { active: () => undefined },
  enterSpan: () => undefined,
  exitSpan: noop,
};
internals.__telemetryUtil = {
  updateSpanFromRequest: noop,
  updateSpanFromClientResponse: noop,
  updateSpanFromError: noop,
};

// 2. Error classes raised by ops; an unregistered class reaches JS as `undefined`.
const { DOMException } = core.loadExtScript("ext:deno_web/01_dom_exception.js");
// Registers a builder unless deno_core or an extension already did.
function registerBuilder(className, builder) {
  try {
    core.registerErrorBuilder(className, builder);
  } catch {
    // Already registered: keep the existing one.
  }
}
for (const name of new SafeArrayIterator([
  "Data", "IndexSize", "InvalidAccess", "InvalidCharacter", "InvalidState",
  "NotSupported", "Operation", "QuotaExceeded", "Syntax", "TypeMismatch",
])) {
  registerBuilder(
    `DOMException${name}Error`,
    (message) => new DOMException(message, `${name}Error`),
  );
}
function registerNamedError(className, Base) {
  registerBuilder(className, (message) => {
    const error = new Base(message);
    ObjectDefineProperty(error, "name", { value: className, configurable: true, writable: true });
    return error;
  });
}
// A refused fetch is a TypeError, as the Fetch standard requires.
registerNamedError("NotCapable", TypeError);
for (const name of new SafeArrayIterator([
  "AddrInUse", "AddrNotAvailable", "AlreadyExists", "BadResource", "BrokenPipe",
  "Busy", "ConnectionAborted", "ConnectionRefused", "ConnectionReset", "Http",
  "Interrupted", "InvalidData", "NotConnected", "NotFound", "PermissionDenied",
  "TimedOut", "UnexpectedEof", "WouldBlock", "WriteZero",
])) {
  registerNamedError(name, Error);
}

// 3. The web platform.
const load = (specifier) => core.loadExtScript(specifier);
const url = load("ext:deno_web/00_url.js");
const urlPattern = load("ext:deno_web/01_urlpattern.js");
const consoleMod = load("ext:deno_web/01_console.js");
const event = load("ext:deno_web/02_event.js");
const structuredCloneMod = load("ext:deno_web/02_structured_clone.js");
const timers = load("ext:deno_web/02_timers.js");
const abortSignal = load("ext:deno_web/03_abort_signal.js");
const base64 = load("ext:deno_web/05_base64.js");
const streams = load("ext:deno_web/06_streams.js");
const encoding = load("ext:deno_web/08_text_encoding.js");
const file = load("ext:deno_web/09_file.js");
const fileReader = load("ext:deno_web/10_filereader.js");
const messagePort = load("ext:deno_web/13_message_port.js");
const compression = load("ext:deno_web/14_compression.js");
const performanceMod = load("ext:deno_web/15_performance.js");
const cryptoMod = load("ext:deno_crypto/00_crypto.js");
const headers = load("ext:deno_fetch/20_headers.js");
const formData = load("ext:deno_fetch/21_formdata.js");
const bodyMod = load("ext:deno_fetch/22_body.js");
const request = load("ext:deno_fetch/23_request.js");
const response = load("ext:deno_fetch/23_response.js");
const fetchMod = load("ext:deno_fetch/26_fetch.js");

function refusedMessage(error) {
  const target = /"([^"]+)"/.exec(String(error.message))?.[1] ?? "that address";
  return `fetch refused: network access to ${target} is not allowed (isola functions cannot reach loopback, private, link-local or metadata addresses)`;
}

/**
 * `fetch`, with refusals of the network policy as a clear TypeError
 * (deno_fetch raises `NotCapable` with advice about Deno's flags). The
 * invocation's limits (hops, response bytes, time to headers) are enforced
 * in Rust, by the op that sends each hop (`outbound.rs`).
 */
async function fetch(input, init = undefined) {
  try {
    return await fetchMod.fetch(input, init);
  } catch (error) {
    if (error?.name === "NotCapable") throw new TypeError(refusedMessage(error));
    throw error;
  }
}

// Originals taken before any user code runs, so that a function rewriting
// web-platform prototypes cannot switch the limits below off.
const streamPipeThrough = streams.ReadableStream.prototype.pipeThrough;
const enqueueChunk = streams.TransformStreamDefaultController.prototype.enqueue;

/** Input pieces fed to the decompressor: at most ~1 MiB of output each. */
const DECOMPRESS_PIECE = 1024;
/** Native state of a compressor or decompressor, charged while it lives, in KiB. */
const COMPRESSION_STATE_KIB = 256;
/** Formats as in Workers; brotli's ratio (a million to one) has no safe piece size. */
const COMPRESSION_FORMATS = ["gzip", "deflate", "deflate-raw"];
const compressionState = new FinalizationRegistry(() => op_isola_native_memory(-COMPRESSION_STATE_KIB));

function compressionFormat(format, what) {
  const name = String(format);
  if (!ArrayPrototypeIncludes(COMPRESSION_FORMATS, name)) {
    throw new TypeError(`${what}: unsupported format "${name}" (use "gzip", "deflate" or "deflate-raw")`);
  }
  return name;
}

/** Charges a (de)compressor's native state to the function while `owner` lives. */
function chargeCompression(owner) {
  op_isola_native_memory(COMPRESSION_STATE_KIB);
  compressionState.register(owner, undefined);
}

/** `CompressionStream`, its native state charged to the function. */
class CompressionStream {
  #inner;

  constructor(format) {
    this.#inner = new compression.CompressionStream(compressionFormat(format, "CompressionStream"));
    chargeCompression(this);
  }

  get readable() {
    return this.#inner.readable;
  }

  get writable() {
    return this.#inner.writable;
  }
}

/**
 * `DecompressionStream` fed in small pieces, so that no single native call
 * expands a "zip bomb" past the memory limit before it can be checked:
 * deflate expands at most ~1032:1, so each piece yields at most ~1 MiB.
 */
class DecompressionStream {
  #readable;
  #writable;

  constructor(format) {
    const inner = new compression.DecompressionStream(compressionFormat(format, "DecompressionStream"));
    chargeCompression(this);
    const splitter = new streams.TransformStream({
      transform(chunk, controller) {
        let bytes = chunk;
        if (ObjectPrototypeIsPrototypeOf(ArrayBuffer.prototype, chunk)) bytes = new Uint8Array(chunk);
        else if (ArrayBufferIsView(chunk)) bytes = new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.byteLength);
        if (!ObjectPrototypeIsPrototypeOf(Uint8Array.prototype, bytes)) {
          FunctionPrototypeCall(enqueueChunk, controller, chunk);
          return;
        }
        const length = TypedArrayPrototypeGetByteLength(bytes);
        for (let offset = 0; offset < length; offset += DECOMPRESS_PIECE) {
          const end = MathMin(offset + DECOMPRESS_PIECE, length);
          FunctionPrototypeCall(enqueueChunk, controller, TypedArrayPrototypeSubarray(bytes, offset, end));
        }
      },
    });
    this.#writable = splitter.writable;
    this.#readable = FunctionPrototypeCall(streamPipeThrough, splitter.readable, inner);
  }

  get readable() {
    return this.#readable;
  }

  get writable() {
    return this.#writable;
  }
}

const baseStructuredClone = messagePort.structuredClone ?? structuredCloneMod.structuredClone;
const arrayBufferTransfer = ArrayBuffer.prototype.transfer;
const arrayBufferDetached = ObjectGetOwnPropertyDescriptor(ArrayBuffer.prototype, "detached").get;

/**
 * `structuredClone`, detaching the ArrayBuffers it transfers as the
 * standard requires (the clone owns their contents; the originals read as
 * empty afterwards), as workerd and Deno do.
 */
function structuredClone(value, options = undefined) {
  const clone = FunctionPrototypeApply(baseStructuredClone, undefined, arguments);
  const transfer = options?.transfer;
  if (transfer !== undefined && transfer !== null) {
    for (const item of new SafeArrayIterator(ArrayFrom(transfer))) {
      if (ObjectPrototypeIsPrototypeOf(ArrayBuffer.prototype, item) && !FunctionPrototypeCall(arrayBufferDetached, item)) {
        FunctionPrototypeCall(arrayBufferTransfer, item, 0);
      }
    }
  }
  return clone;
}

/** WebCrypto limits, as in Workers: bounded work per call. */
const MAX_PBKDF2_ITERATIONS = 100_000;
const MAX_DERIVED_BITS = 512;
const MAX_RSA_MODULUS_BITS = 4096;
const RSA_NAMES = ["rsassa-pkcs1-v1_5", "rsa-pss", "rsa-oaep"];
/** The algorithms functions may use (Argon2, for one, is not among them). */
const ALLOWED_ALGORITHMS = [
  ...RSA_NAMES, "ecdsa", "ecdh", "ed25519", "x25519", "aes-ctr", "aes-cbc", "aes-gcm",
  "aes-kw", "hmac", "sha-1", "sha-256", "sha-384", "sha-512", "hkdf", "pbkdf2",
];
/** Where each SubtleCrypto method takes an algorithm. */
const ALGORITHM_ARGUMENTS = {
  encrypt: [0], decrypt: [0], sign: [0], verify: [0], digest: [0], generateKey: [0],
  deriveKey: [0, 2], deriveBits: [0], importKey: [2], exportKey: [], wrapKey: [3], unwrapKey: [3, 4],
};
const cryptoKeyAlgorithm = ObjectGetOwnPropertyDescriptor(cryptoMod.CryptoKey.prototype, "algorithm").get;

function notSupported(message) {
  return new DOMException(message, "NotSupportedError");
}

/**
 * An algorithm as the native code will see it: its name (and every number
 * that sets the cost of the work) read once, as primitives, and checked.
 */
function boundedAlgorithm(algorithm, method, position) {
  const isString = typeof algorithm === "string";
  if (!isString && (algorithm === null || typeof algorithm !== "object")) return algorithm;
  const name = isString ? algorithm : String(algorithm.name);
  const lower = StringPrototypeToLowerCase(name);
  if (!ArrayPrototypeIncludes(ALLOWED_ALGORITHMS, lower)) {
    throw notSupported(`the algorithm ${name} is not supported`);
  }
  if (isString) return name;
  if (lower === "pbkdf2" && position === 0 && (method === "deriveBits" || method === "deriveKey")) {
    const iterations = Number(algorithm.iterations);
    if (!(iterations <= MAX_PBKDF2_ITERATIONS)) {
      throw notSupported(`PBKDF2 iteration counts above ${MAX_PBKDF2_ITERATIONS} are not supported`);
    }
    return { name, hash: plainHash(algorithm.hash), salt: algorithm.salt, iterations };
  }
  if (ArrayPrototypeIncludes(RSA_NAMES, lower) && method === "generateKey") {
    const modulusLength = Number(algorithm.modulusLength);
    if (!(modulusLength <= MAX_RSA_MODULUS_BITS)) {
      throw notSupported(`RSA keys above ${MAX_RSA_MODULUS_BITS} bits are not supported`);
    }
    return { name, modulusLength, publicExponent: algorithm.publicExponent, hash: plainHash(algorithm.hash) };
  }
  if (method === "deriveKey" && position === 2) {
    const length = algorithm.length === undefined ? undefined : Number(algorithm.length);
    if (length !== undefined && !(length <= MAX_DERIVED_BITS)) {
      throw notSupported(`derived keys above ${MAX_DERIVED_BITS} bits are not supported`);
    }
    return { ...plainAlgorithm(algorithm), name, length };
  }
  return { ...plainAlgorithm(algorithm), name };
}

/** Members of WebCrypto's algorithm dictionaries. */
const ALGORITHM_MEMBERS = [
  "hash", "salt", "info", "iterations", "length", "namedCurve", "modulusLength", "publicExponent",
  "iv", "counter", "additionalData", "tagLength", "label", "saltLength", "public",
];
/** Members of a JSON Web Key. */
const JWK_MEMBERS = ["kty", "use", "alg", "ext", "crv", "x", "y", "d", "n", "e", "p", "q", "dp", "dq", "qi", "k"];

/**
 * A plain copy of a dictionary, each member read here, in JavaScript. The
 * native code that converts WebCrypto's arguments reads some of them under
 * a V8 TryCatch, where a getter that loops would swallow the termination
 * that ends it; a plain copy runs no function code there.
 */
function plainDictionary(value, members) {
  const copy = {};
  for (const member of new SafeArrayIterator(members)) {
    const item = value[member];
    if (item === undefined) continue;
    copy[member] = member === "hash" ? plainHash(item) : item;
  }
  return copy;
}

function plainHash(hash) {
  return hash !== null && typeof hash === "object" ? { name: String(hash.name) } : hash;
}

function plainAlgorithm(algorithm) {
  return plainDictionary(algorithm, ALGORITHM_MEMBERS);
}

/** A plain array of strings for a sequence argument (key usages, key_ops). */
function plainStrings(value) {
  return value !== null && typeof value === "object" ? ArrayFrom(value, (item) => String(item)) : value;
}

/** Where each SubtleCrypto method takes key usages. */
const USAGES_ARGUMENT = { generateKey: 2, importKey: 4, deriveKey: 4, unwrapKey: 6 };

/** Checks and fixes the arguments of a SubtleCrypto call (see above). */
function boundedArguments(method, args) {
  for (const position of new SafeArrayIterator(ALGORITHM_ARGUMENTS[method] ?? [])) {
    args[position] = boundedAlgorithm(args[position], method, position);
  }
  const usages = USAGES_ARGUMENT[method];
  if (usages !== undefined) args[usages] = plainStrings(args[usages]);
  if (method === "importKey" && args[0] === "jwk" && args[1] !== null && typeof args[1] === "object") {
    const jwk = plainDictionary(args[1], JWK_MEMBERS);
    if (args[1].key_ops !== undefined) jwk.key_ops = plainStrings(args[1].key_ops);
    args[1] = jwk;
  }
  if (method === "deriveBits" && args[2] !== undefined && args[2] !== null) {
    args[2] = Number(args[2]);
    if (!(args[2] <= MAX_DERIVED_BITS)) throw notSupported(`deriving more than ${MAX_DERIVED_BITS} bits is not supported`);
  }
}

/** Refuses imported RSA keys larger than those functions may generate. */
function checkImportedKey(key) {
  if (!ObjectPrototypeIsPrototypeOf(cryptoMod.CryptoKey.prototype, key)) return key;
  const modulusLength = FunctionPrototypeCall(cryptoKeyAlgorithm, key)?.modulusLength;
  if (modulusLength > MAX_RSA_MODULUS_BITS) {
    throw notSupported(`RSA keys above ${MAX_RSA_MODULUS_BITS} bits are not supported`);
  }
  return key;
}

/**
 * WebCrypto runs its work on other threads. Each SubtleCrypto call of an
 * isolate waits for the previous one, and its time is charged to the
 * invocation as CPU (`op_isola_offload_*`), so parallel calls cannot spend
 * more than the limit.
 */
function meterSubtleCrypto(SubtleCrypto) {
  const prototype = SubtleCrypto.prototype;
  let lane = PromiseResolve(undefined);
  for (const method of new SafeArrayIterator([
    "encrypt", "decrypt", "sign", "verify", "digest", "generateKey", "deriveKey",
    "deriveBits", "importKey", "exportKey", "wrapKey", "unwrapKey",
    "encapsulateKey", "encapsulateBits", "decapsulateKey", "decapsulateBits", "getPublicKey",
  ])) {
    const original = prototype[method];
    if (typeof original !== "function") continue;
    const checksKeys = method === "importKey" || method === "unwrapKey";
    const metered = {
      [method](...args) {
        try {
          boundedArguments(method, args);
        } catch (error) {
          return PromiseReject(error);
        }
        const run = async () => {
          const id = op_isola_offload_begin();
          try {
            const result = await FunctionPrototypeApply(original, this, args);
            return checksKeys ? checkImportedKey(result) : result;
          } finally {
            op_isola_offload_end(id);
          }
        };
        const result = PromisePrototypeThen(lane, run, run);
        lane = PromisePrototypeThen(result, noop, noop);
        return result;
      },
    }[method];
    ObjectDefineProperty(prototype, method, { value: metered, writable: true, enumerable: true, configurable: true });
  }
}
meterSubtleCrypto(cryptoMod.SubtleCrypto);

const { Request, fromInnerRequest } = request;
const { InnerBody } = bodyMod;
const { Response, toInnerResponse } = response;
const { ReadableStream } = streams;
const websockets = makeWebSockets(event, Response, toInnerResponse, (label, error) => {
  let text;
  try {
    text = isolaConsole.inspect(error);
  } catch {
    text = "<unprintable value>";
  }
  op_isola_log(3, `${label} ${text}`);
});

const cls = core.propNonEnumerable;
const fn = core.propWritable;
core.defineGlobalProperties(globalThis, {
  AbortController: cls(abortSignal.AbortController),
  AbortSignal: cls(abortSignal.AbortSignal),
  Blob: cls(file.Blob),
  ByteLengthQueuingStrategy: cls(streams.ByteLengthQueuingStrategy),
  CompressionStream: cls(CompressionStream),
  CountQueuingStrategy: cls(streams.CountQueuingStrategy),
  CustomEvent: cls(event.CustomEvent),
  Crypto: cls(cryptoMod.Crypto),
  CryptoKey: cls(cryptoMod.CryptoKey),
  DecompressionStream: cls(DecompressionStream),
  DOMException: cls(DOMException),
  ErrorEvent: cls(event.ErrorEvent),
  Event: cls(event.Event),
  EventTarget: cls(event.EventTarget),
  File: cls(file.File),
  FileReader: cls(fileReader.FileReader),
  FormData: cls(formData.FormData),
  Headers: cls(headers.Headers),
  MessageEvent: cls(event.MessageEvent),
  Performance: cls(performanceMod.Performance),
  PerformanceEntry: cls(performanceMod.PerformanceEntry),
  PerformanceMark: cls(performanceMod.PerformanceMark),
  PerformanceMeasure: cls(performanceMod.PerformanceMeasure),
  ProgressEvent: cls(event.ProgressEvent),
  PromiseRejectionEvent: cls(event.PromiseRejectionEvent),
  ReadableByteStreamController: cls(streams.ReadableByteStreamController),
  ReadableStream: cls(streams.ReadableStream),
  ReadableStreamBYOBReader: cls(streams.ReadableStreamBYOBReader),
  ReadableStreamBYOBRequest: cls(streams.ReadableStreamBYOBRequest),
  ReadableStreamDefaultController: cls(streams.ReadableStreamDefaultController),
  ReadableStreamDefaultReader: cls(streams.ReadableStreamDefaultReader),
  Request: cls(Request),
  Response: cls(websockets.WorkersResponse),
  CloseEvent: cls(websockets.CloseEvent),
  WebSocket: cls(websockets.WebSocket),
  WebSocketPair: cls(websockets.WebSocketPair),
  SubtleCrypto: cls(cryptoMod.SubtleCrypto),
  TextDecoder: cls(encoding.TextDecoder),
  TextDecoderStream: cls(encoding.TextDecoderStream),
  TextEncoder: cls(encoding.TextEncoder),
  TextEncoderStream: cls(encoding.TextEncoderStream),
  TransformStream: cls(streams.TransformStream),
  TransformStreamDefaultController: cls(streams.TransformStreamDefaultController),
  URL: cls(url.URL),
  URLPattern: cls(urlPattern.URLPattern),
  URLSearchParams: cls(url.URLSearchParams),
  WritableStream: cls(streams.WritableStream),
  WritableStreamDefaultController: cls(streams.WritableStreamDefaultController),
  WritableStreamDefaultWriter: cls(streams.WritableStreamDefaultWriter),
  atob: fn(base64.atob),
  btoa: fn(base64.btoa),
  clearInterval: fn(timers.clearInterval),
  clearTimeout: fn(timers.clearTimeout),
  crypto: core.propGetterOnly(() => cryptoMod.crypto),
  fetch: fn(fetch),
  performance: fn(performanceMod.performance),
  reportError: fn(event.reportError),
  setInterval: fn(timers.setInterval),
  setTimeout: fn(timers.setTimeout),
  structuredClone: fn(structuredClone),
});
event.setEventTargetData(globalThis);
event.saveGlobalThisReference(globalThis);
core.setWasmStreamingCallback(fetchMod.handleWasmStreaming);

// 4. The console, captured into the invocation's logs, without colours.
//    Formatted in JavaScript (console.js), never by Rust code that calls back
//    into the function's code.
core.defineGlobalProperties(globalThis, { console: cls(isolaConsole.makeConsole()) });

// 5. Unhandled rejections are logged, never fatal: a result already
//    produced stands. Stacks keep the function's frames only.
const { userStack } = isolaConsole;
core.setUnhandledPromiseRejectionHandler((_promise, reason) => {
  let text;
  try {
    text = isolaConsole.inspect(reason);
  } catch {
    text = "<unprintable value>";
  }
  op_isola_log(3, `Uncaught (in promise) ${text}`);
  return true;
});

// 6. KV: `env.<binding>` of a function with a KV binding.
const textEncoder = new encoding.TextEncoder();
const textDecoder = new encoding.TextDecoder();

function kvBytes(value) {
  if (typeof value === "string") return textEncoder.encode(value);
  if (ObjectPrototypeIsPrototypeOf(ArrayBuffer.prototype, value)) return new Uint8Array(value);
  if (ArrayBufferIsView(value)) {
    return new Uint8Array(ArrayBufferPrototypeSlice(value.buffer, value.byteOffset, value.byteOffset + value.byteLength));
  }
  throw new TypeError("KV values must be strings, ArrayBuffers or typed arrays: use JSON.stringify for objects");
}

function kvValue(bytes, type) {
  switch (type ?? "text") {
    case "text":
      return textDecoder.decode(bytes);
    case "json":
      return JSONParse(textDecoder.decode(bytes));
    case "arrayBuffer":
      return ArrayBufferPrototypeSlice(bytes.buffer, bytes.byteOffset, bytes.byteOffset + bytes.byteLength);
    default:
      throw new TypeError(`Unknown KV value type "${type}": use "text", "json" or "arrayBuffer"`);
  }
}

function kvTtl(options) {
  const ttl = options?.expirationTtl;
  if (ttl === undefined || ttl === null) return null;
  if (!(ttl >= 0)) throw new TypeError("expirationTtl must be a number of seconds, 0 or more");
  // At most about a hundred years.
  return MathMin(MathFloor(ttl), 3_153_600_000);
}

function kvType(options) {
  return typeof options === "string" ? options : options?.type;
}

/** Most checks and most mutations in one atomic commit. */
const KV_MAX_CHECKS = 128;
const KV_MAX_MUTATIONS = 128;
/** Longest key, in UTF-16 units (the store checks bytes, at most 512). */
const KV_MAX_KEY = 512;

function kvKey(key) {
  const text = String(key);
  if (text.length > KV_MAX_KEY) throw new TypeError(`KV keys may be at most ${KV_MAX_KEY} bytes long`);
  return text;
}

class KvAtomicOperation {
  #checks = [];
  #mutations = [];

  /** Commit only if `key` still has `version` (null: does not exist). */
  check(key, version) {
    if (this.#checks.length >= KV_MAX_CHECKS) throw new TypeError(`an atomic commit may hold at most ${KV_MAX_CHECKS} checks`);
    ArrayPrototypePush(this.#checks, [kvKey(key), version === null || version === undefined ? null : String(version)]);
    return this;
  }

  set(key, value, options) {
    this.#room();
    ArrayPrototypePush(this.#mutations, { key: kvKey(key), value: kvBytes(value), ttl: kvTtl(options) });
    return this;
  }

  delete(key) {
    this.#room();
    ArrayPrototypePush(this.#mutations, { key: kvKey(key), value: null, ttl: null });
    return this;
  }

  #room() {
    if (this.#mutations.length >= KV_MAX_MUTATIONS) throw new TypeError(`an atomic commit may hold at most ${KV_MAX_MUTATIONS} mutations`);
  }

  async commit() {
    const version = await op_isola_kv_atomic(this.#checks, this.#mutations);
    return version === null ? { ok: false } : { ok: true, version };
  }
}

class KvNamespace {
  async get(key, options) {
    const entry = await op_isola_kv_get(String(key));
    return entry === null ? null : kvValue(entry.value, kvType(options));
  }

  /** The value and its version, for check-and-set with `atomic()`. */
  async getWithVersion(key, options) {
    const entry = await op_isola_kv_get(String(key));
    return entry === null
      ? { value: null, version: null }
      : { value: kvValue(entry.value, kvType(options)), version: entry.version };
  }

  async put(key, value, options) {
    await op_isola_kv_atomic([], [{ key: String(key), value: kvBytes(value), ttl: kvTtl(options) }]);
  }

  async delete(key) {
    await op_isola_kv_atomic([], [{ key: String(key), value: null, ttl: null }]);
  }

  async list(options) {
    const limit = MathMin(MathMax(1, MathFloor(options?.limit ?? 1000)), 1000);
    const page = await op_isola_kv_list(String(options?.prefix ?? ""), limit, options?.cursor ?? null);
    return {
      keys: ArrayPrototypeMap(page.keys, ({ 0: name, 1: version }) => ({ name, version })),
      list_complete: page.cursor === null,
      cursor: page.cursor ?? undefined,
    };
  }

  atomic() {
    return new KvAtomicOperation();
  }
}

// 7. The host object: how Rust drives a function. Kept off `globalThis`
//    once `init` has run.
/**
 * An invocation's context (`ctx`): its own fields, and methods on one
 * prototype rather than closures made anew per request.
 */
class InvocationContext {
  constructor(invocationId, functionName, env) {
    this.env = env;
    this.invocationId = invocationId;
    this.functionName = functionName;
    ObjectFreeze(this);
  }

  // What it waits for runs on after the response: the worker drives the
  // event loop until it is idle (or the deadline passes).
  waitUntil(promise) {
    PromisePrototypeThen(PromiseResolve(promise), noop, (e) => {
      op_isola_log(3, `waitUntil promise rejected: ${userStack(e)}`);
    });
  }

  passThroughOnException() {}
}
ObjectFreeze(InvocationContext.prototype);

function makeContext(invocationId, functionName, env) {
  return new InvocationContext(invocationId, functionName, env);
}

/** A request body the host streams in while the function runs. */
function streamedRequestBody(id) {
  return new ReadableStream({
    async pull(controller) {
      const chunk = await op_isola_body_recv(id);
      if (chunk === null) controller.close();
      else controller.enqueue(chunk);
    },
  });
}

const BODY_CHUNK = 64 * 1024;

/** Sends a streamed body to the host, chunk by chunk, with backpressure. */
async function pumpBody(stream, sinkId) {
  const reader = stream.getReader();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      const bytes = typeof value === "string" ? textEncoder.encode(value) : value;
      if (!ObjectPrototypeIsPrototypeOf(Uint8Array.prototype, bytes)) {
        throw new TypeError("a response body stream must yield Uint8Array chunks");
      }
      // At most 64 KiB per chunk in flight: the host buffers a few chunks
      // per response, so their size must be bounded, not only their count.
      let open = true;
      const length = TypedArrayPrototypeGetByteLength(bytes);
      for (let offset = 0; open && offset < length; offset += BODY_CHUNK) {
        const piece = length <= BODY_CHUNK ? bytes : TypedArrayPrototypeSubarray(bytes, offset, MathMin(offset + BODY_CHUNK, length));
        open = await op_isola_body_send(sinkId, piece);
      }
      if (!open) {
        await reader.cancel();
        break;
      }
    }
    op_isola_body_end(sinkId, null);
  } catch (error) {
    op_isola_body_end(sinkId, String(error?.message ?? error));
  }
}

/**
 * The inner request of an incoming request: the fields deno_fetch's
 * `newInnerRequest` gives, but from one class, so that making one is a
 * plain allocation (an object literal with accessors defines them anew on
 * every request).
 */
class IncomingInner {
  constructor(method, url, headerList, body) {
    this.methodInner = method;
    this.headerListInner = headerList;
    this.body = body;
    this.redirectMode = "follow";
    this.redirectCount = 0;
    this.urlList = [() => url];
    this.urlListProcessed = [url];
    this.clientRid = null;
    this.blobUrlEntry = null;
  }

  get method() {
    return this.methodInner;
  }

  set method(value) {
    this.methodInner = value;
  }

  get headerList() {
    return this.headerListInner;
  }

  set headerList(value) {
    this.headerListInner = value;
  }

  url() {
    return this.urlListProcessed[0];
  }

  currentUrl() {
    const last = this.urlList.length - 1;
    if (this.urlListProcessed[last] === undefined) {
      this.urlListProcessed[last] = this.urlList[last]();
    }
    return this.urlListProcessed[last];
  }
}
ObjectFreeze(IncomingInner.prototype);

/**
 * The function's view of an incoming request, built as `deno serve` builds
 * it: from the parts, with its URL and headers taken as they are (the host
 * made them) and its headers immutable, as in Workers and Deno.
 */
function incomingRequest(method, url, headerList, body) {
  let innerBody = null;
  if (body !== null && method !== "GET" && method !== "HEAD") {
    if (typeof body === "number") {
      innerBody = new InnerBody(streamedRequestBody(body));
    } else {
      innerBody = new InnerBody({ body, consumed: false });
      innerBody.source = body;
      innerBody.length = TypedArrayPrototypeGetByteLength(body);
    }
  }
  return fromInnerRequest(new IncomingInner(method, url, headerList, innerBody), "immutable");
}

const host = {
  /** Called once per isolate, outside the snapshot; returns the frozen `env`. */
  init(envJson, kvBinding) {
    performanceMod.setTimeOrigin();
    delete globalThis.Deno;
    delete globalThis.__bootstrap;
    delete globalThis.__isolaHost;
    const env = JSONParse(envJson);
    if (kvBinding) env[kvBinding] = new KvNamespace();
    return ObjectFreeze(env);
  },

  /** Runs a JSON handler: JSON text in, JSON text out. */
  async invokeJson(handler, payloadText, invocationId, functionName, env) {
    const payload = payloadText === "" ? null : JSONParse(payloadText);
    const value = await handler(payload, makeContext(invocationId, functionName, env));
    let text;
    try {
      text = value === undefined ? "null" : JSONStringify(value);
    } catch (error) {
      // Not serialisable (a BigInt, a cycle): reported as invalid_output.
      return [undefined, String(error?.message ?? error)];
    }
    return [text ?? "null"];
  },

  /**
   * Runs a Workers-style handler: a request in, [status, headers, body,
   * streaming] out. The headers are one flat list of names and
   * values; a body given whole is a string or bytes.
   */
  async invokeFetch(handler, method, url, headerList, body, invocationId, functionName, env) {
    const res = await handler.fetch(incomingRequest(method, url, headerList, body), env, makeContext(invocationId, functionName, undefined));
    if (!ObjectPrototypeIsPrototypeOf(Response.prototype, res)) {
      throw new TypeError("The fetch handler must return a Response, got " + isolaConsole.inspect(res));
    }
    if (res.bodyUsed) throw new TypeError("The response body was already used");
    const inner = toInnerResponse(res);
    const list = inner.headerList;
    const outHeaders = [];
    for (let i = 0; i < list.length; i++) ArrayPrototypePush(outHeaders, list[i][0], list[i][1]);
    const socket = websockets.socketOf(res);
    if (socket !== undefined) return [101, outHeaders, "", false, socket];
    // A body given whole (text, bytes) goes back at once; a stream is sent
    // chunk by chunk after the head, while the host relays it.
    const innerBody = inner.body;
    if (innerBody === null) return [inner.status, outHeaders, "", false];
    const whole = innerBody.streamOrStatic;
    if (!ObjectPrototypeIsPrototypeOf(ReadableStream.prototype, whole) && !whole.consumed) {
      return [inner.status, outHeaders, whole.body, false];
    }
    if (res.body.locked) throw new TypeError("The response body is locked to a reader");
    pumpBody(res.body, op_isola_body_open());
    return [inner.status, outHeaders, "", true];
  },

  /**
   * What a client sent to socket `id`: kind 0 text, 1 binary (bytes),
   * 2 its close (code, reason).
   */
  socketEvent(id, kind, data, code, reason) {
    websockets.deliver(id, kind, data, code, reason);
  },
};

ObjectDefineProperty(globalThis, "__isolaHost", {
  value: ObjectFreeze(host),
  configurable: true,
  enumerable: false,
  writable: false,
});
