//! Writing, resuming and searching an output folder without a model: embeddings are made-up unit vectors.

use std::collections::BTreeMap;
use std::path::Path;

use coca_retrieval::{
    EmbeddingDtype, EmbeddingOutput, Index, Manifest, MetadataRow, Modality, PartitionData,
    RetrievalError, FORMAT_VERSION,
};

fn manifest(dim: usize, text: bool) -> Manifest {
    let mut settings = BTreeMap::new();
    settings.insert("model".into(), serde_json::json!("demo"));
    settings.insert("input".into(), serde_json::json!("folder imgs"));
    Manifest {
        format: FORMAT_VERSION,
        partition_size: 2,
        dim,
        dtype: EmbeddingDtype::F32,
        image_embeddings: true,
        text_embeddings: text,
        settings,
    }
}

/// Unit vector along axis `i` (mod dim), slightly tilted towards the next axis.
fn unit(i: usize, dim: usize) -> Vec<f32> {
    let mut v = vec![0.0; dim];
    v[i % dim] = 0.8;
    v[(i + 1) % dim] = 0.6;
    v
}

fn row(i: usize) -> MetadataRow {
    MetadataRow {
        image_path: Some(format!("imgs/{i}.png")),
        caption: i.is_multiple_of(2).then(|| format!("caption {i}")),
        key: Some(format!("{i}")),
        ..MetadataRow::default()
    }
}

/// Partitions of two samples each: 0..5 gives partitions 0, 1 and a final one of one sample.
fn fill(out: &mut EmbeddingOutput, samples: std::ops::Range<usize>, dim: usize) {
    let text = out.manifest().text_embeddings;
    let mut part = PartitionData::default();
    for i in samples.clone() {
        let t = unit(i + 3, dim);
        part.push(Some(&unit(i, dim)), text.then_some(&t[..]), row(i));
        if part.len() == 2 || i + 1 == samples.end {
            out.write_partition(i / 2, &part).unwrap();
            part = PartitionData::default();
        }
    }
}

fn files(dir: &Path) -> Vec<String> {
    let mut all = Vec::new();
    for sub in ["", "img_emb", "text_emb", "metadata"] {
        if let Ok(entries) = std::fs::read_dir(dir.join(sub)) {
            for e in entries.flatten() {
                if e.file_type().unwrap().is_file() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    all.push(if sub.is_empty() {
                        name
                    } else {
                        format!("{sub}/{name}")
                    });
                }
            }
        }
    }
    all.sort();
    all
}

#[test]
fn partitions_are_written_in_clip_retrieval_layout_and_searched() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = EmbeddingOutput::create_or_resume(dir.path(), manifest(4, true)).unwrap();
    fill(&mut out, 0..5, 4);
    assert_eq!(
        files(dir.path()),
        [
            "coca_embed.json",
            "img_emb/img_emb_00000.npy",
            "img_emb/img_emb_00001.npy",
            "img_emb/img_emb_00002.npy",
            "metadata/metadata_00000.parquet",
            "metadata/metadata_00001.parquet",
            "metadata/metadata_00002.parquet",
            "text_emb/text_emb_00000.npy",
            "text_emb/text_emb_00001.npy",
            "text_emb/text_emb_00002.npy",
        ]
    );
    assert_eq!(
        coca_retrieval::npy_shape(&dir.path().join("img_emb/img_emb_00002.npy")).unwrap(),
        (1, 4)
    );

    let index = Index::open(dir.path()).unwrap();
    assert_eq!(index.len().unwrap(), 5);
    assert_eq!(index.partitions(), [0, 1, 2]);
    // Query = sample 2's image embedding (axis 2): sample 2 scores 1, sample 1 (axes 1,2) 0.48, ...
    let hits = index.search(&unit(2, 4), Modality::Image, 3).unwrap();
    let keys: Vec<_> = hits
        .iter()
        .map(|h| h.metadata.key.clone().unwrap())
        .collect();
    assert_eq!(keys, ["2", "1", "3"]);
    assert!((hits[0].score - 1.0).abs() < 1e-6);
    assert_eq!((hits[0].partition, hits[0].row), (1, 0));
    assert_eq!(hits[0].metadata.caption.as_deref(), Some("caption 2"));
    assert_eq!(hits[0].metadata.image_path.as_deref(), Some("imgs/2.png"));
    // Scaling the query does not change cosine scores.
    let scaled: Vec<f32> = unit(2, 4).iter().map(|x| x * 7.0).collect();
    assert_eq!(index.search(&scaled, Modality::Image, 3).unwrap(), hits);
    // Sample i's text embedding is unit(i + 3), so the query unit(2) is exactly sample 3's text (6 ≡ 2 mod 4).
    let text_hits = index.search(&unit(2, 4), Modality::Text, 1).unwrap();
    assert_eq!(text_hits[0].metadata.key.as_deref(), Some("3"));

    let err = index
        .search(&[1.0, 0.0], Modality::Image, 3)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("img_emb_00000.npy") && err.contains("dimension 4, expected 2"),
        "{err}"
    );
}

#[test]
fn image_only_output_has_no_text_to_search() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = EmbeddingOutput::create_or_resume(dir.path(), manifest(3, false)).unwrap();
    fill(&mut out, 0..3, 3);
    assert!(!dir.path().join("text_emb").exists());
    let index = Index::open(dir.path()).unwrap();
    assert!(index.has(Modality::Image) && !index.has(Modality::Text));
    let err = index
        .search(&[1.0, 0.0, 0.0], Modality::Text, 1)
        .unwrap_err();
    assert!(matches!(err, RetrievalError::MissingKind { .. }), "{err}");
    assert!(err.to_string().contains("no text embeddings"), "{err}");
}

#[test]
fn resuming_keeps_complete_partitions_and_drops_leftovers() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = EmbeddingOutput::create_or_resume(dir.path(), manifest(4, true)).unwrap();
    fill(&mut out, 0..4, 4);
    // Simulate a run killed while writing partition 1: its metadata is gone, a temporary file is left.
    std::fs::remove_file(dir.path().join("metadata/metadata_00001.parquet")).unwrap();
    let stale = dir.path().join("img_emb/.img_emb_00002.npy.tmp.99999.0");
    std::fs::write(&stale, b"half").unwrap();

    let out = EmbeddingOutput::create_or_resume(dir.path(), manifest(4, true)).unwrap();
    assert!(out.is_complete(0));
    assert!(!out.is_complete(1));
    assert_eq!(out.rows_in(0).unwrap(), 2);
    assert!(
        !stale.exists(),
        "temporary file of the interrupted run kept"
    );
}

#[test]
fn a_folder_of_another_run_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut out = EmbeddingOutput::create_or_resume(dir.path(), manifest(4, true)).unwrap();
    fill(&mut out, 0..2, 4);
    let mut other = manifest(4, true);
    other.partition_size = 3;
    other
        .settings
        .insert("model".into(), serde_json::json!("big"));
    let err = EmbeddingOutput::create_or_resume(dir.path(), other)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("coca_embed.json")
            && err.contains("partition_size: was 2, now 3")
            && err.contains("model: was \"demo\", now \"big\"")
            && err.contains("--output-dir"),
        "{err}"
    );

    std::fs::remove_file(dir.path().join("coca_embed.json")).unwrap();
    let err = EmbeddingOutput::create_or_resume(dir.path(), manifest(4, true)).unwrap_err();
    assert!(matches!(err, RetrievalError::ForeignOutput { .. }), "{err}");
}

#[test]
fn an_empty_folder_is_not_an_index() {
    let dir = tempfile::tempdir().unwrap();
    let err = Index::open(dir.path()).unwrap_err().to_string();
    assert!(err.contains("no embeddings found"), "{err}");
}
