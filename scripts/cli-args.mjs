// The option parser the results scripts share: `--name value` pairs are taken out of `args`, so what
// remains are the positional arguments (model or run folders).
export function takeOption(args, name, dflt) {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return dflt;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
}
