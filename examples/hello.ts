// The smallest sandboxed script: `buntime run examples/hello.ts`.
const runtime: string = `Bun ${Bun.version}`;
console.log(`hello from ${runtime} in a buntime sandbox`);
