//! Exact IPFS CIDs for public files: the root CID that
//! `ipfs add --cid-version 1` (kubo's defaults for that flag) gives the same
//! bytes, so a public DataMesh file can be fetched from IPFS by its CID and
//! the other way round.
//!
//! What kubo builds, and so what we hash:
//! - **Leaves**: the file cut into fixed 262144-byte (256 KiB) chunks, the
//!   last one shorter; each leaf is stored *raw* (CIDv1 implies
//!   `--raw-leaves`): CID codec `raw` (0x55), SHA2-256 of the bytes.
//! - **Single leaf**: a file of at most one chunk (including the empty file)
//!   is that raw leaf; no `dag-pb` node is made.
//! - **Balanced layout**: leaves are grouped, in order, into parents of at
//!   most [`MAX_LINKS`] (174) links; parents are grouped the same way, level
//!   after level, until one node remains. All leaves are at the same depth;
//!   the last node of a level may have a single link (it is *not* collapsed).
//! - **Internal nodes**: `dag-pb` (0x70), SHA2-256, encoded canonically:
//!
//! ```text
//! PBNode  = Links (field 2, repeated, each a PBLink) BEFORE Data (field 1, bytes)
//! PBLink  = Hash (1, bytes: binary CID) · Name (2, string: "" — emitted) · Tsize (3, varint)
//! Data    = UnixFS: Type (1) = 2 File · filesize (3) · blocksizes (4, repeated, not packed)
//! Tsize   = raw leaf: its length; node: its encoded length + Σ Tsize of its links
//! blocksizes[i] = file bytes under link i; filesize = Σ blocksizes
//! ```
//!
//! Every choice above is checked against the JS UnixFS importer configured
//! like kubo (`tests/unixfs_oracle.rs`, `tests/oracle/`), and a few of its
//! answers are pinned in this module's tests.
//!
//! The protobuf encoder is written by hand: the three messages above need
//! only varints and length-delimited fields, about forty lines, while a
//! protobuf crate would add a code generator or a runtime for no gain, and
//! byte-exact canonical output (field order, the empty Name) is easier to
//! guarantee when every byte is ours.
//!
//! [`UnixFsHasher`] is streaming: it holds one leaf and, per tree level, at
//! most [`MAX_LINKS`] links, whatever the file size.

use std::io::{self, Read};

use datamesh_core::cid::{DAG_PB, RAW};
use datamesh_core::{Cid, limits};
use sha2::{Digest, Sha256};

/// Leaf size of `ipfs add`'s default chunker (`size-262144`).
pub const CHUNK_SIZE: usize = 262_144;
/// Most links per node in kubo's balanced layout (`DefaultLinksPerBlock`).
pub const MAX_LINKS: usize = 174;

/// UnixFS `Data.Type` of a file.
const UNIXFS_FILE: u64 = 2;

/// One link in the tree under construction: a leaf or a finished node.
#[derive(Clone)]
struct Link {
    cid: Cid,
    /// Bytes of the whole subtree as stored (what dag-pb calls Tsize).
    tsize: u64,
    /// File bytes under this link (what UnixFS calls a block size).
    filesize: u64,
}

/// Streaming UnixFS hasher: feed bytes in any slicing; memory bounded (one 256 KiB leaf + link lists per level).
pub struct UnixFsHasher {
    chunk_size: usize,
    max_links: usize,
    /// The leaf being filled. A full leaf is hashed only when more bytes
    /// arrive, because a file of exactly one leaf has that leaf as its root
    /// and no parent node.
    leaf: Vec<u8>,
    /// `levels[0]` holds leaf links, `levels[i]` links to nodes of height
    /// `i`. A level is turned into a node only when a link beyond
    /// `max_links` arrives, or at [`finalize`](Self::finalize): a level of
    /// exactly `max_links` links may still be the root.
    levels: Vec<Vec<Link>>,
}

impl UnixFsHasher {
    /// A hasher with kubo's layout: 256 KiB raw leaves, 174 links per node.
    pub fn new() -> Self {
        Self::layout(CHUNK_SIZE, MAX_LINKS)
    }

    /// A hasher with another chunk size and fan-out, as `ipfs add
    /// --chunker=size-N` or an importer's `maxChildrenPerNode` would use
    /// (e.g. IPIP-499's `unixfs-v1-2025` profile: 1 MiB and 1024). Still raw
    /// leaves, balanced layout, CIDv1. None when `chunk_size` is 0 or above
    /// [`limits::MAX_CHUNK_SIZE`], or `max_links` is below 2 (a tree that
    /// never narrows).
    pub fn with_layout(chunk_size: usize, max_links: usize) -> Option<Self> {
        (chunk_size > 0 && chunk_size <= limits::MAX_CHUNK_SIZE && max_links >= 2)
            .then(|| Self::layout(chunk_size, max_links))
    }

    fn layout(chunk_size: usize, max_links: usize) -> Self {
        UnixFsHasher { chunk_size, max_links, leaf: Vec::new(), levels: Vec::new() }
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.leaf.len() == self.chunk_size {
                // More bytes follow, so the full leaf is not the whole file.
                let leaf = std::mem::take(&mut self.leaf);
                self.push_leaf(&leaf);
                self.leaf = leaf;
                self.leaf.clear();
            }
            if self.leaf.is_empty() && data.len() > self.chunk_size {
                // A whole leaf with more after it: hash in place, no copy.
                let (leaf, rest) = data.split_at(self.chunk_size);
                self.push_leaf(leaf);
                data = rest;
                continue;
            }
            if self.leaf.capacity() == 0 {
                self.leaf.reserve_exact(self.chunk_size.min(data.len().max(4096)));
            }
            let n = (self.chunk_size - self.leaf.len()).min(data.len());
            self.leaf.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
    }

    /// The root CID of everything fed so far.
    pub fn finalize(mut self) -> Cid {
        if self.levels.is_empty() {
            // At most one leaf: it is the root (the empty file included).
            return raw_leaf_cid(&self.leaf);
        }
        if !self.leaf.is_empty() {
            let leaf = std::mem::take(&mut self.leaf);
            self.push_leaf(&leaf);
        }
        let mut height = 0;
        loop {
            let top = height + 1 == self.levels.len();
            let links = std::mem::take(&mut self.levels[height]);
            if top && links.len() == 1 {
                return links[0].cid;
            }
            if !links.is_empty() {
                let node = node_link(&links);
                self.push_link(height + 1, node);
            }
            height += 1;
        }
    }

    fn push_leaf(&mut self, leaf: &[u8]) {
        let link = Link { cid: raw_leaf_cid(leaf), tsize: leaf.len() as u64, filesize: leaf.len() as u64 };
        self.push_link(0, link);
    }

    /// Appends `link` to `levels[height]`, first closing that level into a
    /// node one level up if it is full.
    fn push_link(&mut self, height: usize, link: Link) {
        if self.levels.len() == height {
            self.levels.push(Vec::with_capacity(self.max_links));
        }
        if self.levels[height].len() == self.max_links {
            let full = std::mem::replace(&mut self.levels[height], Vec::with_capacity(self.max_links));
            let node = node_link(&full);
            self.push_link(height + 1, node);
        }
        self.levels[height].push(link);
    }
}

impl Default for UnixFsHasher {
    fn default() -> Self {
        Self::new()
    }
}

/// The CID `ipfs add --cid-version 1` gives the bytes of `reader`.
pub fn unixfs_cid(mut reader: impl Read) -> io::Result<Cid> {
    let mut h = UnixFsHasher::new();
    let mut buf = vec![0u8; CHUNK_SIZE];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return Ok(h.finalize()),
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

fn raw_leaf_cid(bytes: &[u8]) -> Cid {
    Cid::from_sha256(RAW, &Sha256::digest(bytes).into())
}

/// Encodes the UnixFS file node over `links` and returns the link to it.
fn node_link(links: &[Link]) -> Link {
    let block = encode_node(links);
    let filesize = links.iter().map(|l| l.filesize).sum();
    let tsize = block.len() as u64 + links.iter().map(|l| l.tsize).sum::<u64>();
    Link { cid: Cid::from_sha256(DAG_PB, &Sha256::digest(&block).into()), tsize, filesize }
}

/// The canonical dag-pb bytes of a UnixFS file node over `links`.
fn encode_node(links: &[Link]) -> Vec<u8> {
    // UnixFS Data: Type, filesize, then one blocksize per link (proto2
    // repeated scalars are not packed).
    let mut data = Vec::with_capacity(16 + links.len() * 5);
    pb::varint_field(&mut data, 1, UNIXFS_FILE);
    pb::varint_field(&mut data, 3, links.iter().map(|l| l.filesize).sum());
    for l in links {
        pb::varint_field(&mut data, 4, l.filesize);
    }

    let mut node = Vec::with_capacity(data.len() + links.len() * 48);
    let mut link_buf = Vec::with_capacity(48);
    for l in links {
        link_buf.clear();
        pb::bytes_field(&mut link_buf, 1, &l.cid.to_bytes());
        // kubo (go-merkledag) and the JS importer both set Name to "" and
        // dag-pb emits a present-but-empty string: `12 00`.
        pb::bytes_field(&mut link_buf, 2, b"");
        pb::varint_field(&mut link_buf, 3, l.tsize);
        // dag-pb's canonical form puts Links (field 2) before Data (field 1).
        pb::bytes_field(&mut node, 2, &link_buf);
    }
    pb::bytes_field(&mut node, 1, &data);
    node
}

/// The protobuf wire format, as much of it as UnixFS file nodes need.
mod pb {
    const VARINT: u64 = 0;
    const LEN: u64 = 2;

    /// Base-128 varint, least significant group first.
    pub(super) fn varint(out: &mut Vec<u8>, mut v: u64) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn key(out: &mut Vec<u8>, field: u64, wire_type: u64) {
        varint(out, (field << 3) | wire_type);
    }

    pub(super) fn varint_field(out: &mut Vec<u8>, field: u64, v: u64) {
        key(out, field, VARINT);
        varint(out, v);
    }

    pub(super) fn bytes_field(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
        key(out, field, LEN);
        varint(out, bytes.len() as u64);
        out.extend_from_slice(bytes);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // The oracle tests' content.
    use datamesh_core::testdata::pseudo_random as bytes;

    fn cid_of(data: &[u8]) -> String {
        let mut h = UnixFsHasher::new();
        h.update(data);
        h.finalize().to_string()
    }

    fn cid_with(data: &[u8], chunk: usize, links: usize) -> String {
        let Some(mut h) = UnixFsHasher::with_layout(chunk, links) else { panic!("bad layout") };
        h.update(data);
        h.finalize().to_string()
    }

    #[test]
    fn varints() {
        let mut v = Vec::new();
        for n in [0u64, 1, 127, 128, 300, 262_144, u64::MAX] {
            v.clear();
            pb::varint(&mut v, n);
            let mut back = 0u64;
            for (i, b) in v.iter().enumerate() {
                back |= ((b & 0x7f) as u64) << (7 * i);
            }
            assert_eq!(back, n);
            assert_eq!(v.last().map(|b| b & 0x80), Some(0));
        }
        v.clear();
        pb::varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
    }

    #[test]
    fn empty_file_is_the_empty_raw_leaf() {
        assert_eq!(cid_of(b""), "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku");
        assert_eq!(unixfs_cid(&b""[..]).unwrap().to_string(), cid_of(b""));
    }

    #[test]
    fn bad_layouts_are_refused() {
        assert!(UnixFsHasher::with_layout(0, 174).is_none());
        assert!(UnixFsHasher::with_layout(limits::MAX_CHUNK_SIZE + 1, 174).is_none());
        assert!(UnixFsHasher::with_layout(1024, 1).is_none());
        assert!(UnixFsHasher::with_layout(1, 2).is_some());
    }

    /// CIDs printed by the oracle (`tests/oracle/cid.mjs`, the JS UnixFS
    /// importer set up like kubo) for `bytes(n, n)`, so that `cargo test`
    /// alone checks exactness.
    #[test]
    fn default_layout_matches_pinned_oracle_cids() {
        for (n, cid) in [
            (1, "bafkreigrxpltxmersc73rayfm5y6eluzova62iahs6j36m4xl7qwkrmbym"),
            (1000, "bafkreicbr3vslhx257lrxhadeo2yonupcgv5dtad4grfkce6uojuzqf2li"),
            (262_143, "bafkreih36gjkyvbdwlbdu6svlpl5as56bjgrb7h7h6ifj34fudb6q6cwme"),
            // Exactly one chunk: still the raw leaf, no parent node.
            (262_144, "bafkreibmmlk3pf7eexlfdmzgm5vzcazgbi2mmrm2ihkf7dizlqdtxqnxwm"),
            // One byte more: a dag-pb node over two leaves.
            (262_145, "bafybeidl74hzw2ovik3nrqxlfs3xp5tsg65bfkfent7tf56q474zllinci"),
            (524_288, "bafybeig6gmbw7zr5654zy43vdflsuh755hfgquhoansffr2gixlzdac22m"),
            (600_000, "bafybeigsf2aaxz3l6zy67q3jzuvinbnmupxhuu2wnftxx6tjpdqdexvqoy"),
        ] {
            let data = bytes(n, n as u64);
            assert_eq!(cid_of(&data), cid, "{n} bytes");
            assert_eq!(unixfs_cid(&data[..]).unwrap().to_string(), cid, "{n} bytes via a reader");
        }
    }

    /// The same oracle with 10-byte chunks and at most 3 links per node
    /// (`--chunk-size 10 --max-links 3`): trees up to 5 levels deep, full and
    /// partial, on inputs small enough to pin here. 1000 bytes is 100 leaves
    /// under levels of 34, 12, 4, 2 and 1 nodes, most ending in a one-link
    /// node.
    #[test]
    fn deep_trees_match_pinned_oracle_cids() {
        for (n, cid) in [
            (0, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
            (1, "bafkreigrxpltxmersc73rayfm5y6eluzova62iahs6j36m4xl7qwkrmbym"),
            (10, "bafkreihbevmlamauy5t3lx3klczr7ko777s37y7d6ermazqvf2h6dbtmiy"),
            (11, "bafybeihjpkqc54enyo4cauvxrqatrtzpwyhjgjetzimlp4kyevxbftsmti"),
            (30, "bafybeifgni6nexll6quncsrbj7qjgup7rooe5ztjmxo6ip5fnxmgy53wvy"),
            (31, "bafybeig6mzhcxloeqnhfe3okojvkhyxhomlkjf5slc4exmfaydzab4eriy"),
            (100, "bafybeiapcmsuydut4uhqxc6rtjtjr5gareh3xrjctgm77ti5eqmxbfmtgq"),
            (121, "bafybeiaf2nuwgpmso7rkkt2vnbale67xuk7tzhmovtynnovltb5idscwoi"),
            (1000, "bafybeia72lcuf2b2a5uz4iyxxbvf557lkahvtbk7knhnbmdycslt6xew6i"),
            (1001, "bafybeidxkvncuu4pxivi4te2x7qieikggkfdvtu2evjkuryx6vswfdu66i"),
            (3000, "bafybeifcr7algxmdipdsic4whkmsb4zbpndox7ijnfv56ygvstpml2322y"),
        ] {
            assert_eq!(cid_with(&bytes(n, n as u64), 10, 3), cid, "{n} bytes");
        }
    }

    #[test]
    fn a_two_leaf_node_is_encoded_canonically() {
        // Leaves "ab" and "c" under 2-byte chunks: check every byte of the
        // node against the format in the module doc.
        let leaf = |b: &[u8]| Cid::from_sha256(RAW, &Sha256::digest(b).into()).to_bytes();
        let mut expect = Vec::new();
        for (l, size) in [(leaf(b"ab"), 2u8), (leaf(b"c"), 1)] {
            expect.extend([0x12, (2 + l.len() + 2 + 2) as u8, 0x0a, l.len() as u8]);
            expect.extend(&l);
            expect.extend([0x12, 0x00, 0x18, size]);
        }
        expect.extend([0x0a, 0x08, 0x08, 0x02, 0x18, 0x03, 0x20, 0x02, 0x20, 0x01]);
        let links: Vec<Link> = [&b"ab"[..], b"c"]
            .iter()
            .map(|b| Link { cid: raw_leaf_cid(b), tsize: b.len() as u64, filesize: b.len() as u64 })
            .collect();
        assert_eq!(encode_node(&links), expect);
        let node = node_link(&links);
        assert_eq!(node.tsize, expect.len() as u64 + 3);
        assert_eq!(node.filesize, 3);
        assert_eq!(cid_with(b"abc", 2, 174), node.cid.to_string());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]

        /// The CID does not depend on how the bytes were sliced.
        #[test]
        fn slicing_does_not_matter(
            len in 0usize..6000,
            cuts in proptest::collection::vec(0usize..6000, 0..12),
            chunk in 1usize..700,
            links in 2usize..6,
        ) {
            let data = bytes(len, len as u64);
            let whole = cid_with(&data, chunk, links);
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(len)).collect();
            cuts.sort_unstable();
            let Some(mut h) = UnixFsHasher::with_layout(chunk, links) else { panic!("bad layout") };
            let mut at = 0;
            for c in cuts {
                h.update(&data[at..c]);
                at = c;
            }
            h.update(&data[at..]);
            prop_assert_eq!(h.finalize().to_string(), whole);
        }
    }
}
