// Prints the client's size: minified with esbuild (ES module, as a bundler would ship it) and
// then gzipped (level 9). `npm run size`.
import { build } from 'esbuild';
import { gzipSync } from 'node:zlib';

const out = await build({
  entryPoints: [new URL('../src/index.js', import.meta.url).pathname],
  bundle: true,
  minify: true,
  format: 'esm',
  target: 'es2022',
  write: false,
});
const code = out.outputFiles[0].contents;
const gz = gzipSync(code, { level: 9 });
console.log(`src/index.js: ${code.length} bytes minified, ${gz.length} bytes minified + gzipped`);
