//! Every bound the format puts on a size or a count, in one place.
//!
//! A parser checks each of these before it allocates, so the memory a hostile file can make a parser use is bounded
//! by the figures below. `docs/FORMAT.md` (section "Limits") lists the same values; a test keeps the two equal.
//! Changing a limit that a writer may reach is a format change (see "Versioning" in FORMAT.md).

/// Size of one content chunk: manifests store the BLAKE3 of every `CHUNK_BYTES` slice of a data file, so a check or
/// a restore can name the damaged MiB of a large file and the copier can verify while it streams.
pub const CHUNK_BYTES: u64 = 1 << 20;

/// Largest data file (atom file or journal slice) a manifest may describe: 1 TiB. Bounds the chunk list of one entry
/// to `MAX_DATA_FILE_BYTES / CHUNK_BYTES` = 1 Mi hashes (32 MiB).
pub const MAX_DATA_FILE_BYTES: u64 = 1 << 40;

/// Largest chunk-hash list of one manifest entry, derived from the two figures above.
pub const MAX_CHUNKS_PER_FILE: u64 = MAX_DATA_FILE_BYTES / CHUNK_BYTES;

/// Largest body of a metadata file (state, manifest, catalog, element info): 256 MiB. A reader refuses a larger
/// file before reading it, so this is also the most memory one metadata read takes for the raw bytes.
pub const MAX_METADATA_BODY_BYTES: u64 = 256 << 20;

/// Longest name (database name, storage group name), in bytes of UTF-8. Matches common file-system name limits.
pub const MAX_NAME_BYTES: usize = 255;

/// Most storage groups a backup set may name. Each costs at most `MAX_NAME_BYTES + 32` bytes decoded.
pub const MAX_STORAGE_GROUPS: usize = 4096;

/// Most elements one backup set may hold (a full, and incrementals and journals after it): a journal hot copy every
/// minute for about two years. One decoded element entry takes 96 bytes, so at most 96 MiB.
pub const MAX_ELEMENTS: usize = 1 << 20;

/// Most files one element's manifest may list: 4 Mi. One decoded entry takes 88 bytes plus its chunk hashes,
/// which `MAX_METADATA_BODY_BYTES` bounds in total.
pub const MAX_MANIFEST_FILES: usize = 1 << 22;

/// Most entries of one atom catalog: 4 Mi atoms. One decoded entry takes 56 bytes, so at most 224 MiB.
pub const MAX_CATALOG_ENTRIES: usize = 1 << 22;

/// Most archives (SMs) that one coordinated hot copy may involve.
pub const MAX_PARTICIPANTS: usize = 1024;

/// Largest payload of one journal commit record: 16 MiB. A writer refuses a larger commit; a reader treats a
/// larger length field as a damaged record.
pub const MAX_RECORD_PAYLOAD_BYTES: u32 = 16 << 20;

/// Largest journal segment file: 4 GiB. Segment writers roll over well before it; a reader refuses a larger file.
pub const MAX_SEGMENT_BYTES: u64 = 4 << 30;

/// Longest last journal segment that can be cut short while it was being created: 4 KiB, one file-system block.
/// FORMAT.md assumes a crash leaves a prefix of an append, or garbage within the last block written, so a segment
/// whose header (in its first block) does not parse was cut in its first block; a longer one had a durable header
/// once, and its loss is damage (FORMAT.md, "Reading records, torn tails and corruption").
pub const MAX_TORN_SEGMENT_BYTES: u64 = 4 << 10;

/// Largest body of an atom file: 256 MiB.
pub const MAX_ATOM_BODY_BYTES: u64 = 256 << 20;

/// Largest element sequence number (`N` in `N.inc`, `N.jnl`).
pub const MAX_ELEMENT_SEQUENCE: u32 = 99_999_999;

const _: () = assert!(MAX_CHUNKS_PER_FILE == 1 << 20);
const _: () = assert!(MAX_ATOM_BODY_BYTES <= MAX_DATA_FILE_BYTES);
const _: () = assert!((MAX_RECORD_PAYLOAD_BYTES as u64) < MAX_SEGMENT_BYTES);
const _: () = assert!(MAX_SEGMENT_BYTES <= MAX_DATA_FILE_BYTES);
