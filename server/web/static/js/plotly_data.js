// Plotly figure data as plain arrays. plotly.py >= 6 sends every numpy array as a typed array
// spec, {"dtype": "f8", "bdata": "<base64 of the raw little-endian values>", "shape": "6, 8"},
// anywhere an array may stand (x, y, z, text, marker.color, cells.values...). decodeFigure
// turns each one into nested JS arrays, so the drawing code only ever sees arrays.

const TYPED = {
  i1: Int8Array, u1: Uint8Array, u1c: Uint8ClampedArray, c1: Uint8ClampedArray,
  i2: Int16Array, u2: Uint16Array, i4: Int32Array, u4: Uint32Array,
  f4: Float32Array, f8: Float64Array, i8: BigInt64Array, u8: BigUint64Array,
  int8: Int8Array, uint8: Uint8Array, uint8c: Uint8ClampedArray, int16: Int16Array,
  uint16: Uint16Array, int32: Int32Array, uint32: Uint32Array, float32: Float32Array,
  float64: Float64Array, int64: BigInt64Array, uint64: BigUint64Array,
};

export function isTypedSpec(value) {
  return Boolean(value) && typeof value === "object" && !Array.isArray(value) &&
    typeof value.dtype === "string" && "bdata" in value;
}

function bytesOf(bdata) {
  if (bdata instanceof ArrayBuffer) return new Uint8Array(bdata);
  if (ArrayBuffer.isView(bdata)) return new Uint8Array(bdata.buffer, bdata.byteOffset, bdata.byteLength);
  const text = atob(String(bdata).replace(/\s+/g, ""));
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i += 1) bytes[i] = text.charCodeAt(i);
  return bytes;
}

// "6, 8", "6,8", [6, 8] or 6 -> [6, 8]; absent -> null (a flat array).
export function parseShape(shape) {
  if (shape === undefined || shape === null || shape === "") return null;
  const dims = (Array.isArray(shape) ? shape : String(shape).split(",")).map((d) => Number(String(d).trim()));
  if (dims.some((d) => !Number.isInteger(d) || d < 0)) throw new Error(`bad typed array shape ${JSON.stringify(shape)}`);
  return dims;
}

function reshape(flat, dims, start = 0) {
  if (dims.length <= 1) return flat.slice(start, start + (dims.length ? dims[0] : flat.length));
  const [n, ...rest] = dims;
  const size = rest.reduce((a, b) => a * b, 1);
  return Array.from({ length: n }, (_, i) => reshape(flat, rest, start + i * size));
}

export function decodeTyped(spec) {
  const Type = TYPED[spec.dtype];
  if (!Type) throw new Error(`unknown typed array dtype ${JSON.stringify(spec.dtype)}`);
  const bytes = bytesOf(spec.bdata);
  if (bytes.byteLength % Type.BYTES_PER_ELEMENT) {
    throw new Error(`typed array of dtype ${spec.dtype}: ${bytes.byteLength} bytes is not a whole number of values`);
  }
  const copy = bytes.slice();  // a fresh, aligned buffer
  const flat = Array.from(new Type(copy.buffer), (v) => (typeof v === "bigint" ? Number(v) : v));
  const dims = parseShape(spec.shape);
  return dims ? reshape(flat, dims) : flat;
}

// A copy of `value` with every typed array spec decoded (figures are small; plain recursion).
export function decodeFigure(value) {
  if (Array.isArray(value)) return value.map(decodeFigure);
  if (ArrayBuffer.isView(value)) return Array.from(value);
  if (!value || typeof value !== "object") return value;
  if (isTypedSpec(value)) return decodeTyped(value);
  const out = {};
  for (const [key, item] of Object.entries(value)) out[key] = decodeFigure(item);
  return out;
}

// Anything a trace may hold where an array is expected, as an array: a typed array spec, a typed
// array, a lone value (one point), or nothing (no points).
export function asArray(value) {
  if (value === null || value === undefined) return [];
  if (Array.isArray(value)) return value;
  if (isTypedSpec(value)) return decodeTyped(value);
  if (ArrayBuffer.isView(value)) return Array.from(value);
  return [value];
}

export function toNumber(v) {
  if (v === null || v === undefined || v === "" || typeof v === "boolean") return null;
  const n = Number(v);
  return Number.isFinite(n) ? n : null;
}

export function numbers(values) {
  return asArray(values).map(toNumber);
}

// A 2-D array (rows of values) from z: a flat array counts as one row.
export function matrix(values) {
  const rows = asArray(values);
  return rows.length && !rows.some((r) => Array.isArray(r) || isTypedSpec(r)) ? [rows] : rows.map(asArray);
}
