// tokenizer.js: text <-> token ids through a Hugging Face tokenizer.json of the byte-level BPE
// kind (GPT-2, Llama 3, Qwen2, q4gsw's random checkpoints): added tokens, an NFC/NFKC
// normalizer, the ByteLevel or Split + ByteLevel pre-tokenizer, BPE merges by rank, a
// TemplateProcessing post-processor, the ByteLevel decoder. Other kinds (SentencePiece's
// Metaspace / byte fallback) are refused with UnsupportedTokenizerError: pass token ids then.

import { Q4gswError } from "./errors.js";

/** tokenizer.json holds a model, normalizer, pre-tokenizer or decoder this file does not implement. */
export class UnsupportedTokenizerError extends Q4gswError {}

/** The GPT-2 split of ByteLevel(use_regex=true). */
const GPT2_PATTERN = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/** GPT-2's bytes_to_unicode: byte -> a printable character, and back. */
function byteTables() {
  const keep = [];
  for (let b = 33; b <= 126; b++) keep.push(b);
  for (let b = 161; b <= 172; b++) keep.push(b);
  for (let b = 174; b <= 255; b++) keep.push(b);
  const toChar = new Array(256);
  let extra = 0;
  for (let b = 0; b < 256; b++) toChar[b] = String.fromCodePoint(keep.includes(b) ? b : 256 + extra++);
  const toByte = new Map(toChar.map((c, b) => [c, b]));
  return { toChar, toByte };
}
const BYTES = byteTables();

/** A JS RegExp (flags "gu") of a tokenizer.json (Rust / Oniguruma) pattern. */
export function compilePattern(pattern) {
  // possessive quantifiers (x?+ x*+ x++ x{n,m}+) as greedy ones: the same splits for these patterns
  const source = pattern.replace(/(?<!\\)([?*+])\+/g, "$1").replace(/(\{\d+(?:,\d*)?\})\+/g, "$1");
  try {
    return new RegExp(source, "gu");
  } catch (err) {  // engines without (?i:...) groups: spell their letters out as [xX]
    const expanded = source.replace(/\(\?i:((?:[^()\\]|\\.)*)\)/g, (_, body) =>
      `(?:${body.replace(/\\.|[a-zA-Z]/g, (c) => (c.length === 1 ? `[${c.toLowerCase()}${c.toUpperCase()}]` : c))})`);
    return new RegExp(expanded, "gu");
  }
}

function splitIsolated(pieces, regex) {
  const out = [];
  for (const piece of pieces) {
    let at = 0;
    for (const match of piece.matchAll(regex)) {
      if (match.index > at) out.push(piece.slice(at, match.index));
      if (match[0].length) out.push(match[0]);
      at = match.index + match[0].length;
    }
    if (at < piece.length) out.push(piece.slice(at));
  }
  return out;
}

export class Tokenizer {
  /**
   * @param {object} json the parsed tokenizer.json.
   * @throws {UnsupportedTokenizerError} naming what it does not implement.
   */
  static fromJSON(json) { return new Tokenizer(json); }

  constructor(json) {
    const model = json.model || {};
    if (model.type !== "BPE") throw new UnsupportedTokenizerError(`tokenizer.json: model ${model.type}; q4gsw.js reads byte-level BPE only`);
    if (model.byte_fallback) throw new UnsupportedTokenizerError("tokenizer.json: BPE with byte_fallback (SentencePiece); q4gsw.js reads byte-level BPE only");
    this.vocab = new Map(Object.entries(model.vocab));
    this.ignoreMerges = Boolean(model.ignore_merges);
    this.ranks = new Map((model.merges || []).map((m, i) => [Array.isArray(m) ? `${m[0]} ${m[1]}` : m, i]));
    this.added = (json.added_tokens || []).map((t) => ({ id: t.id, content: t.content, special: t.special }));
    this.idToToken = new Map([...this.vocab].map(([t, id]) => [id, t]));
    for (const t of this.added) this.idToToken.set(t.id, t.content);
    this.normalize = normalizer(json.normalizer);
    this.splits = preTokenizer(json.pre_tokenizer);
    this.template = template(json.post_processor, this.added);
    const decoder = json.decoder;
    if (!decoder || decoder.type !== "ByteLevel") throw new UnsupportedTokenizerError(`tokenizer.json: decoder ${decoder && decoder.type}; q4gsw.js decodes ByteLevel only`);
    this._cache = new Map();
    const escaped = this.added.map((t) => t.content.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).sort((a, b) => b.length - a.length);
    this._addedRegex = escaped.length ? new RegExp(`(${escaped.join("|")})`, "u") : null;
  }

  /**
   * Token ids of text (tokenizers' Tokenizer.encode(text).ids).
   * @param {string} text
   * @param {{addSpecialTokens?: boolean}} options the post-processor's tokens (e.g. BOS), as Python's default.
   */
  encode(text, { addSpecialTokens = true } = {}) {
    const ids = [];
    const parts = this._addedRegex ? text.split(this._addedRegex) : [text];
    parts.forEach((part, i) => {
      if (i % 2 === 1) { ids.push(this.added.find((t) => t.content === part).id); return; }
      if (!part) return;
      for (const piece of this.splits(this.normalize(part))) {
        const word = Array.from(new TextEncoder().encode(piece), (b) => BYTES.toChar[b]).join("");
        ids.push(...this._bpe(word));
      }
    });
    return addSpecialTokens && this.template ? this.template(ids) : ids;
  }

  _bpe(word) {
    if (this._cache.has(word)) return this._cache.get(word);
    let ids;
    if (this.ignoreMerges && this.vocab.has(word)) {
      ids = [this.vocab.get(word)];
    } else {
      let symbols = Array.from(word);
      for (;;) {
        let best = -1;
        let rank = Infinity;
        for (let i = 0; i + 1 < symbols.length; i++) {
          const r = this.ranks.get(`${symbols[i]} ${symbols[i + 1]}`);
          if (r !== undefined && r < rank) { rank = r; best = i; }
        }
        if (best < 0) break;
        const pair = `${symbols[best]} ${symbols[best + 1]}`;
        const merged = [];
        for (let i = 0; i < symbols.length; i++) {  // every occurrence of the pair, left to right
          if (i + 1 < symbols.length && `${symbols[i]} ${symbols[i + 1]}` === pair) { merged.push(symbols[i] + symbols[i + 1]); i++; } else merged.push(symbols[i]);
        }
        symbols = merged;
      }
      ids = symbols.map((s) => {
        if (!this.vocab.has(s)) throw new UnsupportedTokenizerError(`tokenizer.json: no token for ${JSON.stringify(s)} (and no unk_token)`);
        return this.vocab.get(s);
      });
    }
    if (this._cache.size < 100000) this._cache.set(word, ids);
    return ids;
  }

  /**
   * Text of token ids (tokenizers' decode(ids), skip_special_tokens=true by default).
   * @param {number[]} ids
   * @param {{skipSpecialTokens?: boolean}} options
   */
  decode(ids, { skipSpecialTokens = true } = {}) {
    const special = new Set(this.added.filter((t) => t.special).map((t) => t.id));
    const added = new Set(this.added.map((t) => t.id));
    let text = "";
    let bytes = [];
    const flush = () => { text += new TextDecoder().decode(Uint8Array.from(bytes)); bytes = []; };
    for (const id of ids) {
      if (skipSpecialTokens && special.has(id)) continue;
      const token = this.idToToken.get(id);
      if (token === undefined) continue;
      if (added.has(id)) { flush(); text += token; continue; }
      for (const c of token) bytes.push(BYTES.toByte.has(c) ? BYTES.toByte.get(c) : 0x3F);
    }
    flush();
    return text;
  }
}

function normalizer(spec) {
  if (!spec) return (s) => s;
  const forms = { NFC: "NFC", NFKC: "NFKC", NFD: "NFD", NFKD: "NFKD" };
  if (forms[spec.type]) return (s) => s.normalize(forms[spec.type]);
  if (spec.type === "Sequence") {
    const steps = spec.normalizers.map(normalizer);
    return (s) => steps.reduce((acc, f) => f(acc), s);
  }
  throw new UnsupportedTokenizerError(`tokenizer.json: normalizer ${spec.type}`);
}

function preTokenizer(spec) {
  if (!spec) throw new UnsupportedTokenizerError("tokenizer.json: no pre_tokenizer (byte-level BPE has ByteLevel)");
  const steps = spec.type === "Sequence" ? spec.pretokenizers : [spec];
  const fns = steps.map((step) => {
    if (step.type === "ByteLevel") {
      if (step.add_prefix_space) throw new UnsupportedTokenizerError("tokenizer.json: ByteLevel with add_prefix_space");
      const regex = step.use_regex === false ? null : compilePattern(GPT2_PATTERN);
      return (pieces) => (regex ? splitIsolated(pieces, regex) : pieces);
    }
    if (step.type === "Split" && step.behavior === "Isolated" && !step.invert) {
      const regex = step.pattern.Regex !== undefined ? compilePattern(step.pattern.Regex)
        : new RegExp(step.pattern.String.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"), "gu");
      return (pieces) => splitIsolated(pieces, regex);
    }
    throw new UnsupportedTokenizerError(`tokenizer.json: pre_tokenizer ${step.type}${step.behavior ? ` (${step.behavior})` : ""}`);
  });
  return (text) => fns.reduce((pieces, f) => f(pieces), [text]);
}

function template(spec, added) {
  if (!spec) return null;
  const steps = spec.type === "Sequence" ? spec.processors : [spec];
  const found = steps.find((s) => s.type === "TemplateProcessing");
  if (!found) {
    const other = steps.find((s) => s.type !== "ByteLevel");
    if (other) throw new UnsupportedTokenizerError(`tokenizer.json: post_processor ${other.type}`);
    return null;
  }
  const idsOf = (name) => found.special_tokens[name]?.ids ?? [added.find((t) => t.content === name).id];
  return (ids) => found.single.flatMap((item) => (item.Sequence ? ids : idsOf(item.SpecialToken.id)));
}
