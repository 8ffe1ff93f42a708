// Parses AsyncAPI documents with the official parser (npm `@asyncapi/parser`).
//
// Input: file paths (argv[2..]), each an AsyncAPI document in JSON. Output (stdout): a JSON
// object, path -> {"parsed": bool, "diagnostics": [{"severity", "code", "message", "path"}]}
// (severity 0 is an error, 1 a warning, 2 information, 3 a hint). Exit status 0 when every
// file was read, whatever the verdicts.
"use strict";

const fs = require("fs");
const { Parser } = require("@asyncapi/parser");

async function parse(parser, path) {
  const { document, diagnostics } = await parser.parse(fs.readFileSync(path, "utf8"));
  return {
    parsed: document !== undefined,
    diagnostics: diagnostics.map((d) => ({
      severity: d.severity,
      code: String(d.code),
      message: d.message,
      path: d.path.join("/"),
    })),
  };
}

async function main() {
  const parser = new Parser();
  const verdicts = {};
  for (const path of process.argv.slice(2)) {
    verdicts[path] = await parse(parser, path);
  }
  process.stdout.write(JSON.stringify(verdicts));
}

main().catch((error) => {
  process.stderr.write(`${error.stack}\n`);
  process.exit(2);
});
