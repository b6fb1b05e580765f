import { createRequire } from 'node:module';
import { tf } from '../tf.js';
import { accelerateWasm } from './accelerate.js';

/** The compute backends Topiary can run on, fastest first. */
export const BACKEND_NAMES = ['tensorflow-gpu', 'tensorflow', 'wasm', 'cpu'] as const;
export type BackendName = (typeof BACKEND_NAMES)[number];

/** The npm package that provides each optional native backend (optional peers, never required). */
const NATIVE_PACKAGES: Partial<Record<BackendName, string>> = {
  'tensorflow-gpu': '@tensorflow/tfjs-node-gpu',
  tensorflow: '@tensorflow/tfjs-node',
};

/** The tfjs backend name each Topiary backend registers under. */
const TFJS_NAME: Record<BackendName, string> = {
  'tensorflow-gpu': 'tensorflow',
  tensorflow: 'tensorflow',
  wasm: 'wasm',
  cpu: 'cpu',
};

const require = createRequire(import.meta.url);

/** True when the package for `name` can be resolved from here (wasm and cpu always can). */
export function isBackendInstalled(name: BackendName): boolean {
  const pkg = NATIVE_PACKAGES[name];
  if (!pkg) return true;
  try {
    require.resolve(pkg);
    return true;
  } catch {
    return false;
  }
}

export class BackendError extends Error {
  override name = 'BackendError';
}

export interface BackendInfo {
  name: BackendName;
  tfjsBackend: string;
  /** Replacement kernels Topiary registered on this backend (see `accelerate.ts`). */
  accelerated: string[];
}

let active: BackendInfo | undefined;
const acceleratorHooks: Array<(backend: BackendName) => string[]> = [];

/** Lets the kernel package add its replacement kernels whenever a backend is activated. */
export function onBackendActivated(hook: (backend: BackendName) => string[]): void {
  acceleratorHooks.push(hook);
}

/**
 * Activates a backend by name, or the fastest installed one for `auto`. Asking for a native backend
 * that is not installed is an error naming the package to install.
 */
export async function useBackend(requested: BackendName | 'auto' = 'auto'): Promise<BackendInfo> {
  if (requested !== 'auto' && !BACKEND_NAMES.includes(requested)) {
    throw new BackendError(`unknown backend '${String(requested)}': expected one of ${BACKEND_NAMES.join(', ')} or auto`);
  }
  const name: BackendName =
    requested === 'auto' ? (BACKEND_NAMES.find((b) => isBackendInstalled(b)) ?? 'wasm') : requested;
  if (active?.name === name) return active;
  const pkg = NATIVE_PACKAGES[name];
  if (pkg) {
    if (!isBackendInstalled(name)) {
      throw new BackendError(`backend '${name}' needs the optional package ${pkg}, which is not installed (npm install ${pkg})`);
    }
    await import(pkg);
  } else if (name === 'wasm') {
    await import('@tensorflow/tfjs-backend-wasm');
  }
  const ok = await tf.setBackend(TFJS_NAME[name]);
  if (!ok) throw new BackendError(`backend '${name}' failed to initialise`);
  await tf.ready();
  const accelerated = [...(name === 'wasm' ? accelerateWasm() : []), ...acceleratorHooks.flatMap((hook) => hook(name))];
  active = { name, tfjsBackend: TFJS_NAME[name], accelerated };
  return active;
}

/** The backend activated by `useBackend`, if any. */
export function activeBackend(): BackendInfo | undefined {
  return active;
}
