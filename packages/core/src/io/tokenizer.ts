import { promises as fs, existsSync } from 'node:fs';
import * as path from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { ConfigError } from '../model/config.js';
import { readJsonFile } from './checks.js';

export interface Encoded {
  inputIds: number[];
  tokenTypeIds: number[];
}

/** A BERT tokenizer: `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]`, segment ids 0 then 1. */
export interface TextTokenizer {
  /** Word pieces of a text without special tokens. */
  pieces(text: string): number[];
  encode(text: string, pair?: string, maxLength?: number): Encoded;
  readonly clsId: number;
  readonly sepId: number;
  readonly padId: number;
  readonly vocabSize: number;
}

/**
 * Truncation as Hugging Face's `longest_first`: drop one token at a time from the longer sequence
 * (the second one on ties), leaving room for the special tokens.
 */
function truncatePair(a: number[], b: number[] | undefined, maxLength: number): [number[], number[] | undefined] {
  const special = b ? 3 : 2;
  let excess = a.length + (b?.length ?? 0) + special - maxLength;
  if (excess <= 0) return [a, b];
  a = a.slice();
  b = b?.slice();
  while (excess-- > 0) {
    if (b && b.length > a.length) b.pop();
    else if (b && b.length === a.length && b.length > 0) b.pop();
    else a.pop();
  }
  return [a, b];
}

abstract class BertTokenizerBase implements TextTokenizer {
  abstract pieces(text: string): number[];
  abstract clsId: number;
  abstract sepId: number;
  abstract padId: number;
  abstract vocabSize: number;
  encode(text: string, pair?: string, maxLength = 512): Encoded {
    const [a, b] = truncatePair(this.pieces(text), pair === undefined ? undefined : this.pieces(pair), maxLength);
    const inputIds = [this.clsId, ...a, this.sepId];
    const tokenTypeIds = inputIds.map(() => 0);
    if (b) {
      inputIds.push(...b, this.sepId);
      tokenTypeIds.push(...b.map(() => 1), 1);
    }
    return { inputIds, tokenTypeIds };
  }
}

/** `tokenizer.json` through `@huggingface/tokenizers` (reproduces Hugging Face's ids). */
class JsonTokenizer extends BertTokenizerBase {
  clsId: number;
  sepId: number;
  padId: number;
  vocabSize: number;
  constructor(private readonly tok: HfTokenizer, vocab: Record<string, number>, file: string) {
    super();
    const id = (t: string) => {
      const v = vocab[t];
      if (v === undefined) throw new ConfigError(`${file}: vocabulary has no '${t}' token, expected a BERT vocabulary ([CLS], [SEP], [PAD], [UNK])`);
      return v;
    };
    this.clsId = id('[CLS]');
    this.sepId = id('[SEP]');
    this.padId = id('[PAD]');
    this.vocabSize = Object.keys(vocab).length;
  }
  pieces(text: string): number[] {
    return this.tok.encode(text, { add_special_tokens: false }).ids;
  }
}

const isPunct = (cp: number): boolean =>
  (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) || (cp >= 123 && cp <= 126) || /\p{P}/u.test(String.fromCodePoint(cp));
const isCjk = (cp: number): boolean =>
  (cp >= 0x4e00 && cp <= 0x9fff) || (cp >= 0x3400 && cp <= 0x4dbf) || (cp >= 0x20000 && cp <= 0x2a6df) ||
  (cp >= 0x2a700 && cp <= 0x2b73f) || (cp >= 0x2b740 && cp <= 0x2b81f) || (cp >= 0x2b820 && cp <= 0x2ceaf) ||
  (cp >= 0xf900 && cp <= 0xfaff) || (cp >= 0x2f800 && cp <= 0x2fa1f);

/** WordPiece from `vocab.txt` with BERT's basic tokenizer (lower-casing, accent stripping). */
export class WordPieceTokenizer extends BertTokenizerBase {
  clsId: number;
  sepId: number;
  padId: number;
  unkId: number;
  vocabSize: number;
  constructor(private readonly vocab: Map<string, number>, private readonly lowerCase = true, file = 'vocab.txt') {
    super();
    const id = (t: string) => {
      const v = vocab.get(t);
      if (v === undefined) throw new ConfigError(`${file}: vocabulary has no '${t}' token, expected a BERT vocabulary ([CLS], [SEP], [PAD], [UNK])`);
      return v;
    };
    this.clsId = id('[CLS]');
    this.sepId = id('[SEP]');
    this.padId = id('[PAD]');
    this.unkId = id('[UNK]');
    this.vocabSize = vocab.size;
  }

  private basic(text: string): string[] {
    let clean = '';
    for (const ch of text) {
      const cp = ch.codePointAt(0)!;
      if (cp === 0 || cp === 0xfffd || (/\p{Cc}|\p{Cf}/u.test(ch) && !/\s/.test(ch))) continue;
      clean += isCjk(cp) ? ` ${ch} ` : /\s/.test(ch) ? ' ' : ch;
    }
    const words: string[] = [];
    for (let word of clean.trim().split(/\s+/)) {
      if (!word) continue;
      if (this.lowerCase) word = word.toLowerCase().normalize('NFD').replace(/\p{Mn}/gu, '');
      let cur = '';
      for (const ch of word) {
        if (isPunct(ch.codePointAt(0)!)) {
          if (cur) words.push(cur);
          words.push(ch);
          cur = '';
        } else cur += ch;
      }
      if (cur) words.push(cur);
    }
    return words;
  }

  pieces(text: string): number[] {
    const ids: number[] = [];
    for (const word of this.basic(text)) {
      const chars = [...word];
      if (chars.length > 100) {
        ids.push(this.unkId);
        continue;
      }
      const out: number[] = [];
      let start = 0;
      let bad = false;
      while (start < chars.length) {
        let end = chars.length;
        let found: number | undefined;
        while (start < end) {
          const sub = (start > 0 ? '##' : '') + chars.slice(start, end).join('');
          found = this.vocab.get(sub);
          if (found !== undefined) break;
          end--;
        }
        if (found === undefined) {
          bad = true;
          break;
        }
        out.push(found);
        start = end;
      }
      if (bad) ids.push(this.unkId);
      else ids.push(...out);
    }
    return ids;
  }
}

/** Loads a checkpoint folder's tokenizer: `tokenizer.json` when present, else `vocab.txt`. */
export async function loadTokenizer(dir: string): Promise<TextTokenizer> {
  const jsonFile = path.join(dir, 'tokenizer.json');
  const cfgFile = path.join(dir, 'tokenizer_config.json');
  const cfg = (existsSync(cfgFile) ? await readJsonFile(cfgFile, 'a tokenizer config object') : {}) as Record<string, any>;
  if (!cfg || typeof cfg !== 'object' || Array.isArray(cfg)) throw new ConfigError(`${cfgFile}: expected a JSON object (the tokenizer config), got ${JSON.stringify(cfg)}`);
  if (existsSync(jsonFile)) {
    const json = (await readJsonFile(jsonFile, 'a Hugging Face tokenizer')) as any;
    const vocab = json?.model?.vocab;
    if (!vocab || typeof vocab !== 'object' || Array.isArray(vocab)) throw new ConfigError(`${jsonFile}: field 'model.vocab' must be the WordPiece vocabulary (an object of token ids)`);
    let tok: HfTokenizer;
    try {
      tok = new HfTokenizer(json, cfg);
      tok.encode('a', { add_special_tokens: false });
    } catch (err) {
      throw new ConfigError(`${jsonFile}: not a tokenizer @huggingface/tokenizers can load (${(err as Error).message})`);
    }
    return new JsonTokenizer(tok, vocab, jsonFile);
  }
  const vocabFile = path.join(dir, 'vocab.txt');
  if (!existsSync(vocabFile)) throw new ConfigError(`${dir}: no tokenizer.json or vocab.txt, expected the tokenizer files of a Hugging Face checkpoint`);
  const lines = (await fs.readFile(vocabFile, 'utf8')).split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const vocab = new Map(lines.map((t, i) => [t.replace(/\r$/, ''), i]));
  return new WordPieceTokenizer(vocab, cfg.do_lower_case ?? true, vocabFile);
}
