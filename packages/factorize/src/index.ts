/**
 * @topiary/factorize: weight factorization of linear layers. `svd`: truncated SVD to a rank or a
 * parameter budget; `fisher-svd`: FWSVD (Hsu et al., ICLR 2022), the SVD weighted by each output
 * unit's Fisher information. The low-rank layers are core's (`config.lowRank`, `weight_u` / `weight_v`).
 */
import { provide, type TopiaryPlugin } from '@topiary/core';
import { CHAIN_OPTIONS, EMBEDDING_SVD_OPTIONS, SVD_OPTIONS } from './options.js';
import { ChainPruner, EmbeddingSvdPruner, SvdPruner, type SvdOptions } from './factorize.js';

export { ChainPruner, EmbeddingSvdPruner, SvdPruner, fisherRowImportance, withFactorizedEmbeddings, withLowRank, TARGETS } from './factorize.js';
export type { ChainStage, EmbeddingSvdOptions, SvdOptions, Target } from './factorize.js';
export { allocateRanks, lowRankFactors, maxUsefulRank, svd, tallFactors } from './svd.js';
export type { RankCandidate } from './svd.js';

/** The plugin: registers the `svd`, `fisher-svd`, `embedding-svd` and `chain` pruners. */
export function factorizePlugin(): TopiaryPlugin {
  return {
    name: '@topiary/factorize',
    version: '0.1.0',
    register(container) {
      provide(container, {
        kind: 'pruner',
        id: 'svd',
        description: 'truncated SVD of chosen linear layers (targets) to a rank or a parameter budget (paramRatio), optional KD fine-tune',
        options: SVD_OPTIONS,
        create: (o) => new SvdPruner('svd', o as SvdOptions),
      });
      provide(container, {
        kind: 'pruner',
        id: 'fisher-svd',
        description: 'Fisher-weighted SVD (FWSVD, Hsu et al. 2022): SVD weighted by per-output Fisher information',
        options: SVD_OPTIONS,
        create: (o) => new SvdPruner('fisher-svd', o as SvdOptions),
      });
      provide(container, {
        kind: 'pruner',
        id: 'embedding-svd',
        description: 'factorized word embeddings (ALBERT\'s, after training): [vocab, rank] x [rank, hidden] from the table\'s truncated SVD, optional KD fine-tune',
        options: EMBEDDING_SVD_OPTIONS,
        create: (o) => new EmbeddingSvdPruner(o as Partial<import('./factorize.js').EmbeddingSvdOptions>),
      });
      provide(container, {
        kind: 'pruner',
        id: 'chain',
        description: 'runs stages [{method, options}] in order, each on the previous stage\'s compacted model; reports each stage',
        options: CHAIN_OPTIONS,
        create: () => new ChainPruner(),
      });
    },
  };
}

export default factorizePlugin;
