// Validates an AsyncAPI document with the official parser (@asyncapi/parser,
// a devDependency in package.json): `node tests/asyncapi_validate.mjs [FILE]`,
// or the document on stdin. Exits 1 printing the diagnostics of severity
// error; warnings and hints are style advice, not invalidity, so they pass.
import { readFileSync } from "node:fs";
import { DiagnosticSeverity, Parser } from "@asyncapi/parser";

const source = readFileSync(process.argv[2] ?? 0, "utf8");
const diagnostics = await new Parser().validate(source);
const errors = diagnostics.filter((d) => d.severity === DiagnosticSeverity.Error);
for (const d of errors) {
  console.error(`${d.code}: ${d.message} at /${d.path.join("/")}`);
}
if (errors.length) {
  process.exit(1);
}
console.log(`valid (${diagnostics.length} warnings or hints)`);
