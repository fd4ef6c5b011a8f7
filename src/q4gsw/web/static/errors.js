// errors.js: the errors q4gsw.js throws on purpose (the same classes as q4gsw/errors.py, plus
// the bundle's and the device's), and the argument checks that name what they refuse.

/** Base class of every error q4gsw.js throws on purpose. */
export class Q4gswError extends Error {
  constructor(message, options) {
    super(message, options);
    this.name = new.target.name;
  }
}

/** An argument is malformed: names the function, the argument, what was expected and what came. */
export class ArgumentError extends Q4gswError {
  constructor(fn, argument, expected, got) {
    super(`${fn}: argument '${argument}': expected ${expected}, got ${got}`);
    this.function = fn;
    this.argument = argument;
    this.expected = expected;
    this.got = got;
  }
}
export class DTypeError extends ArgumentError {}
export class ShapeError extends ArgumentError {}
export class GroupSizeError extends ArgumentError {}
/** A size exceeds what the device can bind or dispatch (or the bundle's chunks exceed a binding). */
export class SizeLimitError extends ArgumentError {}
/**
 * An option needs a WebGPU feature the device was created without (kvCache: "f16" without
 * `shader-f16`): names the option, what it expected and what came; `feature`: the feature.
 */
export class FeatureError extends ArgumentError {
  constructor(fn, argument, expected, got, feature) {
    super(fn, argument, expected, got);
    this.feature = feature;
  }
}
/** A kernel was asked for a problem it does not support (the reason is in the message). */
export class UnsupportedShapeError extends Q4gswError {}
/** No WebGPU adapter or device. */
export class DeviceError extends Q4gswError {}

/**
 * The device was lost (driver reset, tab in the background too long, device.destroy()). Every
 * call on its Runtime throws this afterwards; make a new Runtime (and load the model again).
 */
export class DeviceLostError extends DeviceError {
  /** @param {string} reason GPUDeviceLostInfo.reason ("destroyed" or "unknown"). */
  constructor(reason, message, options) {
    super(`the WebGPU device was lost (${reason}): ${message}; create a new runtime`, options);
    this.reason = reason;
    this.deviceMessage = message;
  }
}

/** A kernel failed to compile; names the kernel key and its .wgsl files (`key`: the key). */
export class ShaderError extends Q4gswError {
  constructor(message, key = null) {
    super(message);
    this.key = key;
  }
}

/** The bundle is not one this q4gsw.js reads (format, version, a missing file or entry). */
export class BundleError extends Q4gswError {}

/** A bundle file is not what its manifest says: truncated, too long, or another sha256. */
export class IntegrityError extends BundleError {
  constructor(file, expected, got) {
    super(`${file}: expected ${expected}, got ${got} (a corrupt or stale bundle: export it again)`);
    this.file = file;
    this.expected = expected;
    this.got = got;
  }
}

/** A short description of a value for error messages: type and length or value. */
export function describe(value) {
  if (value === null) return "null";
  if (value === undefined) return "undefined";
  if (ArrayBuffer.isView(value)) return `${value.constructor.name} length=${value.length}`;
  if (Array.isArray(value)) return `Array length=${value.length}`;
  if (typeof value === "string") return `string ${JSON.stringify(value.slice(0, 40))}`;
  if (typeof value === "object") {
    const name = value.constructor ? value.constructor.name : "object";
    return value.shape ? `${name} shape=[${value.shape}]` : name;
  }
  return `${typeof value} ${String(value).slice(0, 40)}`;
}

/** value if it is an int >= min, else ErrorClass(fn, argument, ...). */
export function checkInt(fn, argument, value, { min = 1, ErrorClass = ArgumentError } = {}) {
  if (typeof value !== "number" || !Number.isInteger(value) || value < min) {
    throw new ErrorClass(fn, argument, `an int >= ${min}`, describe(value));
  }
  return value;
}

/** A positive int, else GroupSizeError (or ErrorClass) naming the argument. */
export function positiveInt(fn, argument, value, ErrorClass = GroupSizeError) {
  return checkInt(fn, argument, value, { min: 1, ErrorClass });
}
