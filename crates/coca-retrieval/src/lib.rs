//! Bulk embedding output in clip-retrieval's layout, and exact search over it.
//!
//! `coca embed --output-dir OUT` writes partitions of embeddings with [`EmbeddingOutput`]:
//!
//! ```text
//! OUT/img_emb/img_emb_00000.npy        (rows, dim) float16 (default, as clip-retrieval) or float32
//! OUT/text_emb/text_emb_00000.npy      caption embeddings, row-aligned with the images
//! OUT/metadata/metadata_00000.parquet  image_path, caption, key per row
//! OUT/coca_embed.json                  the run's settings (model, input, partition size, ...)
//! ```
//!
//! Every file is written atomically and a partition's metadata is written last, so a partition is complete
//! exactly when its metadata file exists. A run that is interrupted and started again with the same
//! settings skips the complete partitions and recomputes the rest, giving the same files as an uninterrupted
//! run. Several workers may write one folder at once, each the partitions its [`Share`] owns; [`finalize`]
//! checks that they are all there and writes `coca_collection.json`. [`Index`] searches such a folder (or one written by clip-retrieval) exactly, partition by partition.
//!
//! ```no_run
//! use coca_retrieval::{Index, Modality};
//! let index = Index::open("out")?;
//! let query = vec![0.0f32; 512]; // a text embedding from the model
//! for hit in index.search(&query, Modality::Image, 10)? {
//!     println!("{:.3} {:?}", hit.score, hit.metadata.image_path);
//! }
//! # Ok::<(), coca_retrieval::RetrievalError>(())
//! ```

mod collection;
mod error;
mod layout;
mod metadata;
mod npy;
mod output;
mod search;

pub use collection::{
    finalize, Collection, Finalized, Incomplete, Missing, PartitionSummary, WorkerReport,
};
pub use error::RetrievalError;
pub use layout::{
    Layout, Share, ANN_DIR, COLLECTION_FILE, IMG_DIR, MANIFEST_FILE, METADATA_DIR,
    PARTITION_DIGITS, TEXT_DIR, WORKERS_DIR,
};
pub use metadata::{metadata_rows, read_metadata, write_metadata, MetadataRow};
pub use npy::{npy_shape, read_npy, write_npy, EmbeddingDtype, Matrix};
pub use output::{EmbeddingOutput, Manifest, PartitionData, FORMAT_VERSION};
pub use search::{Hit, Index, Modality};
