export { buildProgram, main, EXIT } from './main.js';
export { RunConfigSchema, readRunConfig, UsageError } from './config.js';
export type { RunConfig } from './config.js';
export { allPlugins, builtinPlugins, loadPluginModule } from './plugins.js';
export { inspectModel } from './inspect.js';
export type { InspectReport } from './inspect.js';
