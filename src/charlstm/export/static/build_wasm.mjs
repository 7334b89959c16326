// Rebuild WASM_MATVEC in charlstm.js from matvec.wat: `npm install wabt && node build_wasm.mjs` in this folder.
import fs from "node:fs";
import wabtInit from "wabt";

const wabt = await wabtInit();
const mod = wabt.parseWat("matvec.wat", fs.readFileSync("matvec.wat", "utf8"), { simd: true });
const { buffer } = mod.toBinary({});
const b64 = Buffer.from(buffer).toString("base64");
const js = fs.readFileSync("charlstm.js", "utf8").replace(/const WASM_MATVEC = "[^"]*";/, `const WASM_MATVEC = "${b64}";`);
fs.writeFileSync("charlstm.js", js);
console.log(`matvec.wasm: ${buffer.length} bytes`);
