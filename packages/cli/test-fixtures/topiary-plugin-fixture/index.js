// A third-party plugin as a user would publish it: plain ESM, no dependency on Topiary at load time.
// It registers through the container it is given, under core's token for criteria.
const CRITERION = Symbol.for('topiary.criterion');

export default function fixturePlugin(options = {}) {
  const id = options.id ?? 'fixture-constant';
  return {
    name: 'topiary-plugin-fixture',
    version: '1.0.0',
    register(container) {
      container.register(CRITERION, {
        useValue: {
          kind: 'criterion',
          id,
          description: 'scores every element 1 (test fixture)',
          create: () => ({
            id,
            kinds: ['head', 'neuron', 'weight'],
            async score(groups) {
              const key = (g) => (g.param !== undefined ? `${g.kind}:${g.param}` : g.layer !== undefined ? `${g.kind}:${g.layer}` : g.kind);
              return new Map(groups.map((g) => [key(g), new Float32Array(g.size).fill(1)]));
            },
          }),
        },
      });
    },
  };
}
