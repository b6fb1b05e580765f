import { describe, expect, it } from 'vitest';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRunContainer, provide, type TopiaryPlugin } from '@topiary/core';
import { builtinPlugins, loadPluginModule } from './plugins.js';

const fixture = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../test-fixtures/topiary-plugin-fixture/index.js');

describe('plugins', () => {
  it('resolves a third-party criterion by id next to a built-in one', async () => {
    const external = await loadPluginModule(fixture);
    const { registry } = await createRunContainer([...builtinPlugins(), external]);
    const ext = registry.criterion('fixture-constant');
    const scores = await ext.score([{ kind: 'head', layer: 0, size: 2 }], {} as never);
    expect([...scores.get('head:0')!]).toEqual([1, 1]);
    const builtin = registry.criterion('magnitude');
    expect(builtin.id).toBe('magnitude');
    const listing = registry.list();
    expect(listing).toContainEqual(expect.objectContaining({ id: 'fixture-constant', kind: 'criterion', plugin: 'topiary-plugin-fixture' }));
    expect(listing).toContainEqual(expect.objectContaining({ id: 'magnitude', kind: 'criterion', plugin: '@topiary/criteria-magnitude' }));
  });

  it('refuses two plugins registering the same id, naming both', async () => {
    const clash: TopiaryPlugin = {
      name: 'my-clashing-plugin',
      register: (c) => provide(c, { kind: 'criterion', id: 'magnitude', description: 'clash', create: () => ({}) as never }),
    };
    await expect(createRunContainer([...builtinPlugins(), clash])).rejects.toThrow(
      "duplicate criterion id 'magnitude': registered by @topiary/criteria-magnitude and by my-clashing-plugin",
    );
  });

  it('tags errors thrown by a plugin hook with the plugin and hook name', async () => {
    const broken: TopiaryPlugin = {
      name: 'broken-plugin',
      register: () => {
        throw new Error('boom');
      },
    };
    await expect(createRunContainer([broken])).rejects.toThrow('[plugin broken-plugin, hook register] boom');
  });

  it('gives each run its own container: registrations do not leak between runs', async () => {
    const a = await createRunContainer([await loadPluginModule(fixture)]);
    const b = await createRunContainer(builtinPlugins());
    expect(a.registry.has('criterion', 'fixture-constant')).toBe(true);
    expect(b.registry.has('criterion', 'fixture-constant')).toBe(false);
  });

  it('says which module failed to load', async () => {
    await expect(loadPluginModule('./no/such/plugin.js')).rejects.toThrow('--plugin ./no/such/plugin.js: cannot load the module');
  });
});
