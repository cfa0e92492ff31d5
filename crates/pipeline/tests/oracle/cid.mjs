// Reference CIDs for DataMesh's UnixFS hasher (crates/pipeline/src/unixfs.rs).
//
// Prints, one per line, the CID that `ipfs add --cid-version 1` gives each
// file named on the command line, computed by the JS UnixFS importer set up
// like kubo's defaults for that flag: CIDv1, raw leaves, fixed 262144-byte
// chunks, balanced layout with at most 174 links per node, a single leaf
// reduced to itself. Blocks are discarded (black-hole blockstore), so memory
// stays small whatever the file size.
//
// Usage: node cid.mjs [--chunk-size N] [--max-links N] FILE...
// The two options exist only to exercise deep trees on small inputs.
//
// Setup (once): npm ci --prefix crates/pipeline/tests/oracle
import { createReadStream } from 'node:fs'
import { BlackHoleBlockstore } from 'blockstore-core/black-hole'
import { importByteStream } from 'ipfs-unixfs-importer'
import { fixedSize } from 'ipfs-unixfs-importer/chunker'
import { balanced } from 'ipfs-unixfs-importer/layout'

let chunkSize = 262144
let maxLinks = 174
const files = []
const args = process.argv.slice(2)
for (let i = 0; i < args.length; i++) {
  if (args[i] === '--chunk-size') chunkSize = Number(args[++i])
  else if (args[i] === '--max-links') maxLinks = Number(args[++i])
  else files.push(args[i])
}
if (files.length === 0 || !(chunkSize > 0) || !(maxLinks > 1)) {
  console.error('usage: node cid.mjs [--chunk-size N] [--max-links N] FILE...')
  process.exit(2)
}

const blockstore = new BlackHoleBlockstore()
for (const file of files) {
  const entry = await importByteStream(createReadStream(file), blockstore, {
    cidVersion: 1,
    rawLeaves: true,
    reduceSingleLeafToSelf: true,
    chunker: fixedSize({ chunkSize }),
    layout: balanced({ maxChildrenPerNode: maxLinks })
  })
  console.log(entry.cid.toString())
}
