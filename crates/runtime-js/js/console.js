// isola's console: formats in JavaScript and hands finished lines to the host.
//
// deno_web's console formats in Rust and calls back into JavaScript (custom
// inspect hooks, the print function) under a V8 TryCatch, which swallows a
// pending termination: a function looping inside such a call could outlive
// its CPU and wall limits. Here any user code a format runs (getters,
// toString, Proxy traps, toJSON) runs from JavaScript, where termination
// always propagates.

import { primordials } from "ext:core/mod.js";
import { op_isola_log } from "ext:core/ops";

const {
  ArrayBufferIsView,
  ArrayBufferPrototype,
  ArrayBufferPrototypeGetByteLength,
  DatePrototype,
  ErrorPrototype,
  MapPrototype,
  PromisePrototype,
  RegExpPrototype,
  SetPrototype,
  StringPrototypeIndexOf,
  ArrayIsArray,
  ArrayPrototypeJoin,
  ArrayPrototypePush,
  DatePrototypeGetTime,
  DatePrototypeToISOString,
  DateNow,
  Error,
  JSONStringify,
  MapPrototypeGetSize,
  MathFloor,
  MathMin,
  Number,
  NumberIsNaN,
  NumberParseFloat,
  ObjectKeys,
  ObjectPrototypeIsPrototypeOf,
  ObjectPrototypeToString,
  RegExpPrototypeToString,
  SafeMap,
  SafeMapIterator,
  SafeSet,
  SafeSetIterator,
  SetPrototypeGetSize,
  String,
  StringPrototypeIncludes,
  StringPrototypeStartsWith,
  StringPrototypeTrimStart,
  StringPrototypeSlice,
  StringPrototypeSplit,
  SymbolPrototypeToString,
  TypedArrayPrototypeGetLength,
} = primordials;

/** Longest line kept, in UTF-16 units. */
const MAX_LINE = 64 * 1024;
/** Items and keys shown per array or object. */
const MAX_ITEMS = 100;
/** Nesting shown before `[Object]`. */
const MAX_DEPTH = 4;

/**
 * The function's frames of an error's stack: no frame of the platform's own
 * (`ext:` or `node:`) modules. The same rule as `errors::user_frames` in
 * Rust, which filters the stacks of uncaught errors.
 */
export function userStack(error) {
  let stack;
  try {
    stack = error?.stack;
  } catch {
    stack = undefined;
  }
  if (typeof stack !== "string") return safeString(error);
  const lines = StringPrototypeSplit(stack, "\n");
  const kept = [];
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    const frame = StringPrototypeTrimStart(line);
    const platform = StringPrototypeStartsWith(frame, "at ") &&
      (StringPrototypeIncludes(frame, "ext:") || StringPrototypeIncludes(frame, "node:"));
    if (!platform) {
      ArrayPrototypePush(kept, line);
    }
  }
  return ArrayPrototypeJoin(kept, "\n");
}

function safeString(value) {
  try {
    return typeof value === "symbol" ? SymbolPrototypeToString(value) : String(value);
  } catch {
    return ObjectPrototypeToString(value);
  }
}

function quote(text) {
  return JSONStringify(text);
}

/** A readable form of any value, as `console.log` shows it. */
export function inspect(value, depth = 0, seen = new SafeSet()) {
  switch (typeof value) {
    case "string":
      return depth === 0 ? value : quote(value);
    case "number":
    case "boolean":
    case "undefined":
      return String(value);
    case "bigint":
      return `${value}n`;
    case "symbol":
      return SymbolPrototypeToString(value);
    case "function":
      return `[Function: ${safeString(value.name) || "(anonymous)"}]`;
  }
  if (value === null) return "null";
  if (seen.has(value)) return "[Circular]";
  if (ObjectPrototypeIsPrototypeOf(ErrorPrototype, value)) return userStack(value);
  if (ObjectPrototypeIsPrototypeOf(DatePrototype, value)) {
    return NumberIsNaN(DatePrototypeGetTime(value)) ? "Invalid Date" : DatePrototypeToISOString(value);
  }
  if (ObjectPrototypeIsPrototypeOf(RegExpPrototype, value)) return RegExpPrototypeToString(value);
  if (ObjectPrototypeIsPrototypeOf(PromisePrototype, value)) return "Promise { <pending> }";
  if (ObjectPrototypeIsPrototypeOf(ArrayBufferPrototype, value)) {
    return `ArrayBuffer { byteLength: ${ArrayBufferPrototypeGetByteLength(value)} }`;
  }
  if (depth >= MAX_DEPTH) return ArrayIsArray(value) ? "[Array]" : "[Object]";
  seen.add(value);
  try {
    return inspectContainer(value, depth, seen);
  } finally {
    seen.delete(value);
  }
}

function inspectContainer(value, depth, seen) {
  const parts = [];
  const item = (v) => inspect(v, depth + 1, seen);
  if (ArrayIsArray(value) || ArrayBufferIsView(value)) {
    const length = ArrayIsArray(value) ? value.length : TypedArrayPrototypeGetLength(value);
    for (let i = 0; i < MathMin(length, MAX_ITEMS); i++) ArrayPrototypePush(parts, item(value[i]));
    if (length > MAX_ITEMS) ArrayPrototypePush(parts, `... ${length - MAX_ITEMS} more items`);
    return `[ ${ArrayPrototypeJoin(parts, ", ")} ]`;
  }
  if (ObjectPrototypeIsPrototypeOf(MapPrototype, value)) {
    for (const { 0: k, 1: v } of new SafeMapIterator(value)) {
      if (parts.length >= MAX_ITEMS) break;
      ArrayPrototypePush(parts, `${item(k)} => ${item(v)}`);
    }
    return `Map(${MapPrototypeGetSize(value)}) { ${ArrayPrototypeJoin(parts, ", ")} }`;
  }
  if (ObjectPrototypeIsPrototypeOf(SetPrototype, value)) {
    for (const v of new SafeSetIterator(value)) {
      if (parts.length >= MAX_ITEMS) break;
      ArrayPrototypePush(parts, item(v));
    }
    return `Set(${SetPrototypeGetSize(value)}) { ${ArrayPrototypeJoin(parts, ", ")} }`;
  }
  const keys = ObjectKeys(value);
  for (let i = 0; i < MathMin(keys.length, MAX_ITEMS); i++) {
    ArrayPrototypePush(parts, `${keys[i]}: ${item(value[keys[i]])}`);
  }
  if (keys.length > MAX_ITEMS) ArrayPrototypePush(parts, `... ${keys.length - MAX_ITEMS} more keys`);
  return parts.length === 0 ? "{}" : `{ ${ArrayPrototypeJoin(parts, ", ")} }`;
}

/** `console.log`'s arguments as one line, with printf-style `%` directives. */
export function formatArgs(args) {
  const parts = [];
  let next = 0;
  if (typeof args[0] === "string" && args.length > 1) {
    const format = args[0];
    next = 1;
    let out = "";
    for (let i = 0; i < format.length; i++) {
      if (format[i] !== "%" || i + 1 >= format.length) {
        out += format[i];
        continue;
      }
      const directive = format[i + 1];
      if (directive === "%") {
        out += "%";
      } else if (next < args.length && StringPrototypeIncludes("sdifjoOc", directive)) {
        out += directiveText(directive, args[next++]);
      } else {
        out += format[i] + directive;
      }
      i++;
      if (out.length > MAX_LINE) break;
    }
    ArrayPrototypePush(parts, out);
  }
  for (; next < args.length; next++) {
    ArrayPrototypePush(parts, inspect(args[next]));
    if (parts.length > MAX_ITEMS) break;
  }
  const line = ArrayPrototypeJoin(parts, " ");
  return line.length > MAX_LINE ? StringPrototypeSlice(line, 0, MAX_LINE) + "..." : line;
}

function directiveText(directive, value) {
  switch (directive) {
    case "s":
      return typeof value === "string" ? value : inspect(value, 1);
    case "d":
    case "i":
      return typeof value === "bigint" ? `${value}n` : String(MathFloor(Number(value)));
    case "f":
      return String(NumberParseFloat(value));
    case "j":
      try {
        return JSONStringify(value);
      } catch {
        return "[Circular]";
      }
    case "c":
      return "";
    default:
      return inspect(value, 1);
  }
}

/** deno_web's console levels: debug 0, log/info 1, warn 2, error 3. */
const DEBUG = 0;
const INFO = 1;
const WARN = 2;
const ERROR = 3;

/** The console a function sees; every line goes to its invocation's logs. */
export function makeConsole() {
  let indent = "";
  const counts = new SafeMap();
  const timers = new SafeMap();
  const print = (level, args) => {
    let line = formatArgs(args);
    if (indent !== "") line = indent + line;
    op_isola_log(level, line);
  };
  const console = {
    log: (...args) => print(INFO, args),
    info: (...args) => print(INFO, args),
    debug: (...args) => print(DEBUG, args),
    warn: (...args) => print(WARN, args),
    error: (...args) => print(ERROR, args),
    trace: (...args) => {
      const stack = userStack(new Error());
      print(ERROR, [...args, "\n" + StringPrototypeSlice(stack, StringPrototypeIndexOf(stack, "\n") + 1)]);
    },
    dir: (value) => print(INFO, [inspect(value, 1)]),
    dirxml: (...args) => print(INFO, args),
    table: (...args) => print(INFO, args),
    assert: (condition, ...args) => {
      if (!condition) print(ERROR, ["Assertion failed", ...args]);
    },
    count: (label = "default") => {
      const key = safeString(label);
      const n = (counts.get(key) ?? 0) + 1;
      counts.set(key, n);
      print(INFO, [`${key}: ${n}`]);
    },
    countReset: (label = "default") => counts.delete(safeString(label)),
    time: (label = "default") => timers.set(safeString(label), DateNow()),
    timeLog: (label = "default", ...args) => {
      const key = safeString(label);
      const started = timers.get(key);
      if (started !== undefined) print(INFO, [`${key}: ${DateNow() - started}ms`, ...args]);
    },
    timeEnd: (label = "default") => {
      const key = safeString(label);
      const started = timers.get(key);
      if (started !== undefined) print(INFO, [`${key}: ${DateNow() - started}ms`]);
      timers.delete(key);
    },
    group: (...args) => {
      if (args.length > 0) print(INFO, args);
      indent += "  ";
    },
    groupEnd: () => {
      indent = StringPrototypeSlice(indent, 2);
    },
    clear: () => {},
  };
  console.groupCollapsed = console.group;
  return console;
}
