'use strict';
// Loads the compiled kernels (GEMM and fused) when they were built (`node scripts/build.mjs`); otherwise exports
// `binding: undefined` and the reason, so callers fall back to wasm kernels.
const path = require('node:path');

let binding;
let loadError;
if (process.env.TOPIARY_NATIVE === '0') {
  loadError = 'disabled by TOPIARY_NATIVE=0';
} else {
  try {
    binding = require(path.join(__dirname, 'build', 'topiary_native.node'));
    // Several runs side by side on few cores: one thread each avoids oversubscription.
    const threads = Number(process.env.TOPIARY_NATIVE_THREADS);
    if (Number.isInteger(threads) && threads > 0) binding.setThreads(threads);
  } catch (e) {
    loadError = `not built (${String(e && e.message).split('\n')[0]}); run: npm run build:native -w @topiary/native`;
  }
}

module.exports = { binding, loadError };
