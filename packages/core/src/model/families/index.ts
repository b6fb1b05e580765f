import { albertFamily } from './albert.js';
import { bertFamily } from './bert.js';
import { distilbertFamily } from './distilbert.js';
import { electraFamily } from './electra.js';
import type { ModelFamily } from './family.js';
import { robertaFamily, xlmRobertaFamily } from './roberta.js';

/** The families core registers (`corePlugin`); a plugin adds more with `provide(container, { kind: 'family', ... })`. */
export const BUILTIN_FAMILIES: readonly ModelFamily[] = [bertFamily, robertaFamily, xlmRobertaFamily, distilbertFamily, electraFamily, albertFamily];

export { albertFamily, bertFamily, distilbertFamily, electraFamily, robertaFamily, xlmRobertaFamily };
export { architectureName, canonicalParams, exportByRenaming, familyFor, importByRenaming, renameFields } from './family.js';
export type { LayerPart, ModelFamily, RenamingSpec } from './family.js';
