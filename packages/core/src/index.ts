/**
 * @topiary/core: the BERT encoder with maskable structures, Hugging Face checkpoint and tokenizer I/O,
 * datasets, the training/pruning engine, the contracts plugins implement, the plugin container and
 * the run event stream.
 */
import 'reflect-metadata';

export { tf } from './tf.js';
export type { Tensor, Scalar, Tensor1D, Tensor2D, Tensor3D, Variable } from './tf.js';

export { BACKEND_NAMES, BackendError, activeBackend, isBackendInstalled, onBackendActivated, useBackend } from './backend/backend.js';
export type { BackendInfo, BackendName } from './backend/backend.js';

export { BERT_ARCHITECTURE, ConfigError, parseBertConfig, parseEncoderConfig, serializeBertConfig } from './model/config.js';
export type { BertConfig, EncoderArchitecture } from './model/config.js';
export { BUILTIN_FAMILIES, albertFamily, architectureName, bertFamily, canonicalParams, distilbertFamily, electraFamily, exportByRenaming, familyFor, importByRenaming, renameFields, robertaFamily, xlmRobertaFamily } from './model/families/index.js';
export type { LayerPart, ModelFamily, RenamingSpec } from './model/families/index.js';
export { BertModel, EMBEDDINGS_PROJECT, WORD_EMBEDDINGS, clsOf, encoderLinearNames, isLinearWeight, layerParamNames, lowRankOf } from './model/bert.js';
export { encoderFlops, paramCount, wordEmbeddingParams } from './model/cost.js';
export { checkLatencyTable, fitPiecewiseLatency, measureLatencyTable, piecewiseAt, profileModel, syntheticBatch, tableLatency, timeMs } from './model/profile.js';
export type { LatencyCurve, LatencyTable, LatencyTableOptions, ModelProfile, ModuleProfile, PiecewiseLatency, ProfileOptions } from './model/profile.js';
export type { Batch, ForwardOptions, ForwardOutput, StructuredMasks, WeightMasks } from './model/bert.js';
export { Rng, expectShape, gelu, geluNew, layerNorm, linear } from './model/ops.js';

export { parseSafetensors, readSafetensors, serializeSafetensors, writeSafetensors, SafetensorsError } from './io/safetensors.js';
export type { NamedTensor } from './io/safetensors.js';
export { familyOf, loadBert, readCheckpointConfig, readConfig, saveBert, exportTensors, TOKENIZER_FILES } from './io/checkpoint.js';
export type { LoadOptions } from './io/checkpoint.js';
export { loadTokenizer, WordPieceTokenizer } from './io/tokenizer.js';
export type { Encoded, TextTokenizer } from './io/tokenizer.js';
export { writeDirAtomic, writeFileAtomic } from './io/atomic.js';
export type { WriteDirOptions } from './io/atomic.js';
export { EVENTS_FILE, openEventLog, parseEventLog, readEventLog } from './io/event-log.js';
export type { EventLog, EventLogOptions } from './io/event-log.js';
export { MARKER_FILE, OutputError, foreignEntries, outputMarker, prepareOutput, pseudoFilesystem, readMarker, realPath, removeStaleTemps } from './io/outputs.js';
export type { OutputMarker, PrepareOutputOptions } from './io/outputs.js';
export { assertCheckpointFolder, assertFinite, assertTokenizerFits, checkpointLabels, defaultLabels, headLabels, readJsonFile } from './io/checks.js';

export { DataError, Dataset, loadDataset, makeBatch, readExamples, readLabels } from './data/dataset.js';
export type { EncodedExample, LoadDataOptions, ReadOptions, TextExample } from './data/dataset.js';

export { MaskSet, bindMasks, sparsityOf } from './pruning/masks.js';

export { groupKey } from './contracts.js';
export type {
  CriterionContext,
  DistillationLoss,
  GroupKind,
  ImportanceCriterion,
  LossInput,
  MaskScheduler,
  PrunableGroup,
  PruneContext,
  PruneResult,
  Pruner,
  ResolvePlugin,
  ScheduleLevel,
  Scores,
  TrainingOptions,
} from './contracts.js';

export { createRun, RunAborted } from './events.js';
export type { LossTerms, MemoryPlan, Metrics, RunControl, RunEvent, RunEventType, RunFailure, SparsityReport } from './events.js';

export { PluginError, componentDefinitions, pluginOf, provide, registerPlugins } from './plugins/plugin.js';
export type { PluginFactory, TopiaryPlugin } from './plugins/plugin.js';
export { PluginRegistry, createRunContainer } from './plugins/registry.js';
export type { ComponentListing } from './plugins/registry.js';
export { COMPONENT_KINDS, TOKENS } from './plugins/tokens.js';
export { checkOptions, componentRef, describeOptions, fractionOption, isOptionsSchema, z } from './plugins/options.js';
export type { OptionIssue, OptionListing, OptionsSchema } from './plugins/options.js';
export { validateRunOptions } from './plugins/validate.js';
export type { RunOptionIssue } from './plugins/validate.js';
export type { ComponentDefinition, ComponentInstance, ComponentKind } from './plugins/tokens.js';

export { AdamW, clipByGlobalNorm, decays, defaultFinetuneLearningRate, linearSchedule } from './engine/optimizer.js';
export type { ParamGroup } from './engine/optimizer.js';
export { CrossEntropyLoss, KdLoss, crossEntropy, kdLoss } from './engine/losses.js';
export type { KdOptions } from './engine/losses.js';
export { classificationMetrics, evaluate } from './engine/evaluate.js';
export type { EvaluateOptions } from './engine/evaluate.js';
export { budgetSteps, trainLoop } from './engine/train.js';
export { MemoryLimitError, MemoryMonitor, STEP_MEMORY, WASM_HEAP_LIMIT, backendMemoryLimit, chooseMicroBatch, configParamCount, estimateStepBytes, formatBytes, isWasmFailure, memoryFailure, planMicroBatch, splitBatch, wasmHeapBytes } from './engine/micro.js';
export type { BatchPart, StepMemoryInput } from './engine/micro.js';
export type { TrainLoopOptions, TrainLoopResult } from './engine/train.js';
export { DEFAULT_TRAINING, disposeInputs, loadRunInputs, runFinetune, runInputPaths, runPruning, saveRunCheckpoint } from './engine/run.js';
export type { DataSpec, FinetuneSpec, RunInputs, RunOptions, RunSpec } from './engine/run.js';
export { RunCheckpoints, STATE_FILE, STATE_TENSORS_FILE, configDifferences, flattenConfig, readSavedState, registerParts, stage, tensorState } from './engine/checkpoint.js';
export type { ComponentState, SavedState, Stateful } from './engine/checkpoint.js';

export { compact, compactedParamCount, dropLayers } from './pruning/compact.js';
export { structureFromWeightMasks } from './pruning/weight-structure.js';
export type { WeightStructure } from './pruning/weight-structure.js';
export { MASKS_FILE, loadMasks, saveMasks } from './pruning/mask-io.js';
export { CubicScheduler, IterativeScheduler, OneShotScheduler } from './pruning/schedulers.js';
export { resolveParts } from './pruning/spec.js';
export type { ComponentSpec } from './pruning/spec.js';
export { corePlugin } from './plugins/builtins.js';
export { StructuredPruner, UnstructuredPruner } from './pruning/structured.js';
export type { LevelReport } from './pruning/structured.js';
export { determinePruningSequence, keepTopFraction, normalizePerLayer, pruneHeadMask, pruneLayerMask, pruneNeuronMask, weightMasksTopFraction } from './pruning/selection.js';
export type { PruningSequence } from './pruning/selection.js';
export { accelerateWasm, nativeGemm } from './backend/accelerate.js';
