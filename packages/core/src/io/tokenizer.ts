import { promises as fs, existsSync } from 'node:fs';
import * as path from 'node:path';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import { ConfigError } from '../model/config.js';
import { readJsonFile } from './checks.js';

export interface Encoded {
  inputIds: number[];
  tokenTypeIds: number[];
}

/**
 * A tokenizer with its post-processor: BERT's `[CLS] A [SEP] B [SEP]` (segment ids 0 then 1), RoBERTa's
 * `<s> A </s></s> B </s>`, or whatever template `tokenizer.json` declares; truncation as Hugging Face's
 * `longest_first`.
 */
export interface TextTokenizer {
  /** Word pieces of a text without special tokens. */
  pieces(text: string): number[];
  encode(text: string, pair?: string, maxLength?: number): Encoded;
  /** The first special token of a single-text template (`[CLS]`, `<s>`). */
  readonly clsId: number;
  /** The last special token of a single-text template (`[SEP]`, `</s>`). */
  readonly sepId: number;
  readonly padId: number;
  readonly vocabSize: number;
}

/**
 * Truncation as Hugging Face's fast tokenizers do `longest_first` (tokenizers' `truncate_encodings`):
 * room for the special tokens is kept; a pair whose shorter side fits in half keeps it whole and cuts
 * the longer to the rest, else each gets half (the longer the odd token; the second on a tie).
 */
function truncatePair(a: number[], b: number[] | undefined, maxLength: number, special = b ? 3 : 2): [number[], number[] | undefined] {
  const room = Math.max(0, maxLength - special);
  if (!b) return [a.length > room ? a.slice(0, room) : a, b];
  if (a.length + b.length <= room) return [a, b];
  const swap = a.length > b.length;
  let n1 = swap ? b.length : a.length; // the shorter
  let n2 = n1 > room ? n1 : Math.max(n1, room - n1);
  if (n1 + n2 > room) {
    n1 = Math.floor(room / 2);
    n2 = n1 + (room % 2);
  }
  const [na, nb] = swap ? [n2, n1] : [n1, n2];
  return [a.slice(0, na), b.slice(0, nb)];
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

/** One item of a post-processor template: special tokens' ids, or sequence A / B, with a type id. */
type TemplatePiece = { ids: number[]; typeId: number } | { sequence: 'A' | 'B'; typeId: number };
interface Template {
  single: TemplatePiece[];
  pair: TemplatePiece[];
}

/**
 * The special-token template of `tokenizer.json`'s `post_processor`: `TemplateProcessing` as declared,
 * `BertProcessing` (`[CLS] A [SEP] B [SEP]`, types 0 then 1), `RobertaProcessing` (`<s> A </s></s> B </s>`,
 * all type 0, as transformers gives RoBERTa), or the first of these in a `Sequence`.
 */
function parseTemplate(pp: any, file: string, fallback: () => Template): Template {
  if (!pp) return fallback();
  switch (pp.type) {
    case 'Sequence': {
      const inner = (pp.processors ?? []).find((p: any) => ['TemplateProcessing', 'BertProcessing', 'RobertaProcessing'].includes(p?.type));
      return inner ? parseTemplate(inner, file, fallback) : fallback();
    }
    case 'BertProcessing':
    case 'RobertaProcessing': {
      const cls = { ids: [Number(pp.cls[1])], typeId: 0 };
      const sep = { ids: [Number(pp.sep[1])], typeId: 0 };
      const roberta = pp.type === 'RobertaProcessing';
      const sep1 = { ...sep, typeId: roberta ? 0 : 1 };
      return {
        single: [cls, { sequence: 'A', typeId: 0 }, sep],
        pair: roberta ? [cls, { sequence: 'A', typeId: 0 }, sep, sep, { sequence: 'B', typeId: 0 }, sep] : [cls, { sequence: 'A', typeId: 0 }, sep, { sequence: 'B', typeId: 1 }, sep1],
      };
    }
    case 'TemplateProcessing': {
      const items = (list: any[], field: string): TemplatePiece[] =>
        list.map((it, i) => {
          if (it.Sequence) return { sequence: it.Sequence.id === 'B' ? 'B' : 'A', typeId: Number(it.Sequence.type_id ?? 0) };
          const sp = pp.special_tokens?.[it.SpecialToken?.id];
          if (!sp || !Array.isArray(sp.ids)) throw new Error(`${file}: field 'post_processor.${field}[${i}]' names special token ${JSON.stringify(it.SpecialToken?.id)}, not in 'post_processor.special_tokens'`);
          return { ids: sp.ids.map(Number), typeId: Number(it.SpecialToken.type_id ?? 0) };
        });
      return { single: items(pp.single ?? [], 'single'), pair: items(pp.pair ?? [], 'pair') };
    }
    default:
      return fallback();
  }
}

const specialCount = (t: TemplatePiece[]) => t.reduce((n, p) => n + ('ids' in p ? p.ids.length : 0), 0);
/** `tokenizer_config.json`'s token fields are a string or `{ content }`. */
const tokenText = (v: unknown): string | undefined => (typeof v === 'string' ? v : v && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string' ? (v as { content: string }).content : undefined);

/**
 * `tokenizer.json` through `@huggingface/tokenizers` (its normalizer, pre-tokenizer and model reproduce
 * Hugging Face's pieces); the post-processor's template and `longest_first` truncation are applied here,
 * since the library does not truncate.
 */
class JsonTokenizer implements TextTokenizer {
  clsId: number;
  sepId: number;
  padId: number;
  vocabSize: number;
  private readonly template: Template;
  constructor(private readonly tok: HfTokenizer, json: any, cfg: Record<string, unknown>, file: string) {
    const id = (t: string, field: string) => {
      const v = tok.token_to_id(t);
      if (v === undefined) throw new ConfigError(`${file}: vocabulary has no '${t}' token (${field}), expected the tokenizer's special tokens in its vocabulary`);
      return v;
    };
    const cls = tokenText(cfg['cls_token']) ?? '[CLS]';
    const sep = tokenText(cfg['sep_token']) ?? '[SEP]';
    this.template = parseTemplate(json.post_processor, file, () => {
      const [c, s] = [id(cls, 'cls_token'), id(sep, 'sep_token')];
      return {
        single: [{ ids: [c], typeId: 0 }, { sequence: 'A', typeId: 0 }, { ids: [s], typeId: 0 }],
        pair: [{ ids: [c], typeId: 0 }, { sequence: 'A', typeId: 0 }, { ids: [s], typeId: 0 }, { sequence: 'B', typeId: 1 }, { ids: [s], typeId: 1 }],
      };
    });
    const specials = this.template.single.filter((p): p is { ids: number[]; typeId: number } => 'ids' in p);
    this.clsId = specials[0]?.ids[0] ?? id(cls, 'cls_token');
    this.sepId = specials[specials.length - 1]?.ids.at(-1) ?? id(sep, 'sep_token');
    // The padding token: tokenizer_config.json's pad_token, else tokenizer.json's padding, else [PAD].
    const pad = tokenText(cfg['pad_token']);
    this.padId = pad !== undefined ? id(pad, 'pad_token') : Number.isInteger(json.padding?.pad_id) ? json.padding.pad_id : id('[PAD]', 'pad_token');
    this.vocabSize = tok.get_vocab().size;
  }
  pieces(text: string): number[] {
    return this.tok.encode(text, { add_special_tokens: false }).ids;
  }
  encode(text: string, pair?: string, maxLength = 512): Encoded {
    const template = pair === undefined ? this.template.single : this.template.pair;
    const [a, b] = truncatePair(this.pieces(text), pair === undefined ? undefined : this.pieces(pair), maxLength, specialCount(template));
    const inputIds: number[] = [];
    const tokenTypeIds: number[] = [];
    for (const p of template) {
      const ids = 'ids' in p ? p.ids : p.sequence === 'A' ? a : (b ?? []);
      for (const i of ids) {
        inputIds.push(i);
        tokenTypeIds.push(p.typeId);
      }
    }
    return { inputIds, tokenTypeIds };
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
    if (!json?.model || typeof json.model !== 'object') throw new ConfigError(`${jsonFile}: field 'model' must be the tokenizer model (WordPiece, BPE, Unigram)`);
    let tok: HfTokenizer;
    try {
      tok = new HfTokenizer(json, cfg);
      tok.encode('a', { add_special_tokens: false });
    } catch (err) {
      throw new ConfigError(`${jsonFile}: not a tokenizer @huggingface/tokenizers can load (${(err as Error).message})`);
    }
    return new JsonTokenizer(tok, json, cfg, jsonFile);
  }
  const vocabFile = path.join(dir, 'vocab.txt');
  if (!existsSync(vocabFile)) throw new ConfigError(`${dir}: no tokenizer.json or vocab.txt, expected the tokenizer files of a Hugging Face checkpoint`);
  const lines = (await fs.readFile(vocabFile, 'utf8')).split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const vocab = new Map(lines.map((t, i) => [t.replace(/\r$/, ''), i]));
  return new WordPieceTokenizer(vocab, cfg.do_lower_case ?? true, vocabFile);
}
