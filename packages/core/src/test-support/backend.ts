import 'reflect-metadata';
import { useBackend, type BackendName } from '../backend/backend.js';

/** Tests run on the default embedded backend unless TOPIARY_TEST_BACKEND says otherwise. */
export async function testBackend(): Promise<void> {
  await useBackend((process.env['TOPIARY_TEST_BACKEND'] as BackendName | undefined) ?? 'wasm');
}
