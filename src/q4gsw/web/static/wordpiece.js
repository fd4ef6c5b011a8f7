// wordpiece.js: text -> token ids through a Hugging Face tokenizer.json of BERT's WordPiece
// kind (all-MiniLM-L6-v2, bert-base-uncased, ...), as the tokenizers library computes them:
// added tokens split out of the raw text; the BertNormalizer (clean text, CJK characters
// spaced, accents stripped, lowercase); the BertPreTokenizer (whitespace removed, punctuation
// isolated); WordPiece's greedy longest match with "##" continuations ([UNK] for a word with
// no match or past max_input_chars_per_word); the TemplateProcessing post-processor ([CLS] A
// [SEP]), truncated as sentence-transformers truncates; the WordPiece decoder.

import { ArgumentError, describe } from "./errors.js";
import { UnsupportedTokenizerError } from "./tokenizer.js";

/** Unicode White_Space (Rust's char::is_whitespace), which differs from JS's \s (U+0085, U+FEFF). */
const WHITESPACE = /[\t\n\v\f\r \u0085\u00A0\u1680\u2000-\u200A\u2028\u2029\u202F\u205F\u3000]/u;
/** The CJK ranges tokenizers' BertNormalizer spaces out (is_chinese_char). */
const CJK = /[\u4E00-\u9FFF\u3400-\u4DBF\u{20000}-\u{2A6DF}\u{2A700}-\u{2B73F}\u{2B740}-\u{2B81F}\u{2B920}-\u{2CEAF}\uF900-\uFAFF\u{2F800}-\u{2FA1F}]/u;
/** BERT's punctuation: ASCII punctuation (symbols included) or Unicode P*. */
const PUNCTUATION = /[!-/:-@[-`{-~\p{P}]/u;
const OTHER = /\p{C}/u;  // Cc, Cf, Cs, Co, Cn: tokenizers' is_control (but \t \n \r)
const NONSPACING_MARK = /\p{Mn}/gu;

function bertNormalizer(spec) {
  const clean = spec.clean_text !== false;
  const chinese = spec.handle_chinese_chars !== false;
  const lowercase = spec.lowercase !== false;
  const strip = spec.strip_accents ?? lowercase;
  return (text) => {
    let out = "";
    for (const c of text) {
      if (clean) {
        const code = c.codePointAt(0);
        if (code === 0 || code === 0xFFFD || (OTHER.test(c) && c !== "\t" && c !== "\n" && c !== "\r")) continue;
        if (WHITESPACE.test(c)) { out += " "; continue; }
      }
      out += chinese && CJK.test(c) ? ` ${c} ` : c;
    }
    if (strip) out = out.normalize("NFD").replace(NONSPACING_MARK, "");
    if (lowercase) out = Array.from(out, (c) => c.toLowerCase()).join("");  // per character, as Rust's char::to_lowercase
    return out;
  };
}

/** BertPreTokenizer: split on whitespace (removed) and punctuation (each its own piece). */
function bertPreTokenize(text) {
  const pieces = [];
  let word = "";
  for (const c of text) {
    if (WHITESPACE.test(c) || PUNCTUATION.test(c)) {
      if (word) pieces.push(word);
      word = "";
      if (!WHITESPACE.test(c)) pieces.push(c);
    } else {
      word += c;
    }
  }
  if (word) pieces.push(word);
  return pieces;
}

export class WordPieceTokenizer {
  /**
   * @param {object} json the parsed tokenizer.json (model WordPiece, BertNormalizer, BertPreTokenizer).
   * @param {{maxLength?: number|null}} options maxLength: truncate to this many ids, the
   *     template's special tokens included (sentence-transformers' max_seq_length); null: never.
   * @throws {UnsupportedTokenizerError} naming what it does not implement.
   */
  static fromJSON(json, options = {}) { return new WordPieceTokenizer(json, options); }

  constructor(json, { maxLength = null } = {}) {
    const model = json.model || {};
    if (model.type !== "WordPiece") throw new UnsupportedTokenizerError(`tokenizer.json: model ${model.type}; WordPieceTokenizer reads WordPiece`);
    const normalizer = json.normalizer;
    if (normalizer && normalizer.type !== "BertNormalizer") throw new UnsupportedTokenizerError(`tokenizer.json: normalizer ${normalizer.type} (WordPieceTokenizer has BertNormalizer)`);
    const pre = json.pre_tokenizer;
    if (!pre || pre.type !== "BertPreTokenizer") throw new UnsupportedTokenizerError(`tokenizer.json: pre_tokenizer ${pre && pre.type} (WordPieceTokenizer has BertPreTokenizer)`);
    if (maxLength !== null && !(Number.isInteger(maxLength) && maxLength >= 3)) {
      throw new ArgumentError("WordPieceTokenizer", "maxLength", "null or an int >= 3", describe(maxLength));
    }
    this.vocab = new Map(Object.entries(model.vocab));
    this.idToToken = new Map([...this.vocab].map(([t, id]) => [id, t]));
    this.prefix = model.continuing_subword_prefix ?? "##";
    this.maxWordChars = model.max_input_chars_per_word ?? 100;
    this.unk = this.vocab.get(model.unk_token);
    if (this.unk === undefined) throw new UnsupportedTokenizerError(`tokenizer.json: unk_token ${model.unk_token} is not in the vocabulary`);
    this.added = (json.added_tokens || []).map((t) => ({ id: t.id, content: t.content, special: t.special }));
    for (const t of this.added) this.idToToken.set(t.id, t.content);
    this.normalize = normalizer ? bertNormalizer(normalizer) : (s) => s;
    const post = json.post_processor;
    if (post && post.type !== "TemplateProcessing") throw new UnsupportedTokenizerError(`tokenizer.json: post_processor ${post.type}`);
    const idsOf = (name) => post.special_tokens[name].ids;
    this.head = post ? post.single.slice(0, post.single.findIndex((i) => i.Sequence)).flatMap((i) => idsOf(i.SpecialToken.id)) : [];
    this.tail = post ? post.single.slice(post.single.findIndex((i) => i.Sequence) + 1).flatMap((i) => idsOf(i.SpecialToken.id)) : [];
    this.maxLength = maxLength;
    this.cleanup = json.decoder?.cleanup !== false;
    const escaped = this.added.map((t) => t.content.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).sort((a, b) => b.length - a.length);
    this._addedRegex = escaped.length ? new RegExp(`(${escaped.join("|")})`, "u") : null;
    this._cache = new Map();
  }

  /**
   * Token ids of text (tokenizers' encode(text).ids, truncated to maxLength).
   * @param {string} text
   * @param {{addSpecialTokens?: boolean}} options the template's [CLS] and [SEP], as Python's default.
   */
  encode(text, { addSpecialTokens = true } = {}) {
    if (typeof text !== "string") throw new ArgumentError("WordPieceTokenizer.encode", "text", "a string", describe(text));
    let ids = [];
    const parts = this._addedRegex ? text.split(this._addedRegex) : [text];
    parts.forEach((part, i) => {
      if (i % 2 === 1) { ids.push(this.added.find((t) => t.content === part).id); return; }
      for (const word of bertPreTokenize(this.normalize(part))) ids.push(...this._wordPiece(word));
    });
    if (!addSpecialTokens) return this.maxLength === null ? ids : ids.slice(0, this.maxLength);
    if (this.maxLength !== null) ids = ids.slice(0, Math.max(0, this.maxLength - this.head.length - this.tail.length));
    return [...this.head, ...ids, ...this.tail];
  }

  _wordPiece(word) {
    if (this._cache.has(word)) return this._cache.get(word);
    const chars = Array.from(word);
    let ids = [];
    if (chars.length > this.maxWordChars) {
      ids = [this.unk];
    } else {
      for (let start = 0; start < chars.length;) {
        let end = chars.length;
        let found;
        for (; end > start; end--) {
          const piece = (start > 0 ? this.prefix : "") + chars.slice(start, end).join("");
          found = this.vocab.get(piece);
          if (found !== undefined) break;
        }
        if (found === undefined) { ids = [this.unk]; break; }
        ids.push(found);
        start = end;
      }
    }
    if (this._cache.size < 100000) this._cache.set(word, ids);
    return ids;
  }

  /**
   * Text of token ids (tokenizers' decode(ids): special tokens skipped, "##" pieces joined,
   * the WordPiece decoder's cleanup of spaces before punctuation and contractions).
   */
  decode(ids, { skipSpecialTokens = true } = {}) {
    const special = new Set(this.added.filter((t) => t.special).map((t) => t.id));
    const tokens = [];
    for (const id of ids) {
      if (skipSpecialTokens && special.has(id)) continue;
      const token = this.idToToken.get(id);
      if (token !== undefined) tokens.push(token);
    }
    const cleanup = (t) => (this.cleanup ? t.replaceAll(" .", ".").replaceAll(" ?", "?").replaceAll(" !", "!")
      .replaceAll(" ,", ",").replaceAll(" ' ", "'").replaceAll(" n't", "n't").replaceAll(" 'm", "'m")
      .replaceAll(" do not", " don't").replaceAll(" 's", "'s").replaceAll(" 've", "'ve").replaceAll(" 're", "'re") : t);
    // per token, as the tokenizers library's WordPiece decoder does
    const text = tokens.map((t, i) => cleanup(i === 0 ? t : t.startsWith(this.prefix) ? t.slice(this.prefix.length) : ` ${t}`)).join("");
    return text;
  }
}
