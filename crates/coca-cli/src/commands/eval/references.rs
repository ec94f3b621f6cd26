//! Images with reference captions, the data of retrieval and captioning evaluation: Karpathy-style JSON,
//! CLIP_benchmark's list of `{"image", "caption"}`, COCO caption annotations, open_clip-style CSV, and
//! WebDataset shards.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{ArgGroup, Args};
use coca_data::{ImageData, Input};
use serde_json::Value;

use crate::csv_args::CsvArgs;

/// Where the images and their reference captions are.
#[derive(Debug, Clone, Args)]
#[command(group(ArgGroup::new("references").required(true).args(["annotations", "csv", "shards"])))]
pub struct ReferenceArgs {
    /// A JSON file: Karpathy's {"images": [{"filename", "filepath", "sentences": [{"raw"}], "split"}]},
    /// CLIP_benchmark's [{"image": PATH, "caption": [..]}], or COCO's {"images", "annotations"}.
    #[arg(long, value_name = "FILE.json")]
    pub annotations: Option<PathBuf>,
    /// Where the image paths of --annotations start (default: the folder of the JSON file).
    #[arg(long, value_name = "DIR", requires = "annotations")]
    pub dataset_root: Option<PathBuf>,
    /// A CSV/TSV file with an image column and a caption column (open_clip's --csv-* flags); rows with the
    /// same image are its captions.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    #[command(flatten)]
    pub csv_args: CsvArgs,
    /// WebDataset tar shards (`data/{00000..00009}.tar`): an image and a `.txt` holding one caption per line.
    #[arg(long, value_name = "PATTERN")]
    pub shards: Option<String>,
    /// The Karpathy split to evaluate (default: test).
    #[arg(long, value_name = "NAME")]
    pub split: Option<String>,
    /// Only the first N images.
    #[arg(long, value_name = "N")]
    pub max_images: Option<usize>,
    /// The dataset's name in the result (default: the file or shard name).
    #[arg(long, value_name = "NAME")]
    pub dataset: Option<String>,
}

/// One image and what it should be described as.
#[derive(Debug, Clone)]
pub struct Reference {
    /// Identifies the image, for matching predictions (`image_id`, a JSON number or string kept as given so
    /// saved captions are a COCO results file): Karpathy's `cocoid` (else `imgid`, else the file name), the
    /// list form's `image_id` (else the image path), COCO's image id, the CSV image path, or the WebDataset
    /// key. [`id_string`] gives the text that predictions are matched on.
    pub id: Value,
    /// The image.
    pub image: ImageData,
    /// Its reference captions (at least one, none blank).
    pub captions: Vec<String>,
}

/// The references of a dataset, streamed (shards) or listed (files).
pub struct References {
    /// The dataset's name for the result.
    pub name: String,
    /// How many references there are, when known before reading them all.
    pub len: Option<usize>,
    /// The references in dataset order.
    pub items: Box<dyn Iterator<Item = Result<Reference>> + Send>,
}

impl ReferenceArgs {
    /// Open the references; format problems of files fail here, those of shard samples while streaming.
    pub fn open(&self) -> Result<References> {
        if self.split.is_some() && self.annotations.is_none() {
            bail!("--split selects a split of a Karpathy-style --annotations file; CSV and shards have none");
        }
        if self.max_images == Some(0) {
            bail!("--max-images must be at least 1");
        }
        let (name, len, items): (String, Option<usize>, Box<dyn Iterator<Item = _> + Send>) =
            if let Some(path) = &self.annotations {
                let root = match &self.dataset_root {
                    Some(root) if !root.is_dir() => {
                        bail!(
                            "{}: dataset root does not exist or is not a folder",
                            root.display()
                        )
                    }
                    Some(root) => root.clone(),
                    None => path.parent().map(Path::to_path_buf).unwrap_or_default(),
                };
                let list = read_annotations(path, &root, self.split.as_deref())?;
                (
                    file_stem(path),
                    Some(list.len()),
                    Box::new(list.into_iter().map(Ok)),
                )
            } else if let Some(path) = &self.csv {
                let list = read_csv(path, &self.csv_args)?;
                (
                    file_stem(path),
                    Some(list.len()),
                    Box::new(list.into_iter().map(Ok)),
                )
            } else if let Some(pattern) = &self.shards {
                let samples = coca_data::open(&Input::Shards(pattern.clone()))?;
                (
                    shard_name(pattern),
                    None,
                    Box::new(samples.map(shard_reference)),
                )
            } else {
                bail!("give the references with --annotations, --csv or --shards");
            };
        let (len, items): (_, Box<dyn Iterator<Item = _> + Send>) = match self.max_images {
            Some(n) => (len.map(|l: usize| l.min(n)), Box::new(items.take(n))),
            None => (len, items),
        };
        Ok(References {
            name: self.dataset.clone().unwrap_or(name),
            len,
            items,
        })
    }
}

fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| path.display().to_string())
}

/// `data/{00000..00009}.tar` → `data`; `flickr/test.tar` → `flickr`.
fn shard_name(pattern: &str) -> String {
    let path = Path::new(pattern);
    path.parent()
        .and_then(Path::file_name)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| pattern.to_string())
}

/// Non-blank lines of a caption text, trimmed.
fn caption_lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

fn shard_reference(item: Result<coca_data::Sample, coca_data::DataError>) -> Result<Reference> {
    let sample = item?;
    let captions = sample
        .text
        .as_deref()
        .map(caption_lines)
        .unwrap_or_default();
    if captions.is_empty() {
        bail!(
            "{}: sample `{}` has no caption (a .txt with one caption per line)",
            sample.image.name(),
            sample.key
        );
    }
    Ok(Reference {
        id: Value::String(sample.key),
        image: sample.image,
        captions,
    })
}

/// Group CSV rows by image, in order of first appearance.
fn read_csv(path: &Path, csv: &CsvArgs) -> Result<Vec<Reference>> {
    let options = csv.options()?;
    if options.caption_key.is_none() {
        bail!("--csv needs a caption column for the references; --csv-caption-key is empty");
    }
    let source = coca_data::CsvSource::open(path, &options)?;
    let mut out: Vec<Reference> = Vec::new();
    let mut index: HashMap<PathBuf, usize> = HashMap::new();
    for row in source {
        let sample = row?;
        let Some(text) = sample.text else {
            continue; // a blank caption adds nothing to its image
        };
        let ImageData::Path(image) = sample.image else {
            unreachable!("CSV samples are files")
        };
        match index.get(&image) {
            Some(&i) => out[i].captions.push(text),
            None => {
                index.insert(image.clone(), out.len());
                out.push(Reference {
                    id: Value::String(image.display().to_string()),
                    image: ImageData::Path(image),
                    captions: vec![text],
                });
            }
        }
    }
    if out.is_empty() {
        bail!(
            "{}: no rows with a caption in column `{}`",
            path.display(),
            csv.csv_caption_key
        );
    }
    Ok(out)
}

/// Read a JSON reference file in any of the three layouts.
pub fn read_annotations(path: &Path, root: &Path, split: Option<&str>) -> Result<Vec<Reference>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read the annotations", path.display()))?;
    let value: Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not valid JSON", path.display()))?;
    let file = JsonFile { path, root };
    let refs = match &value {
        Value::Object(o) if o.contains_key("annotations") => {
            file.no_split(split, "COCO caption annotations")?;
            file.coco(o)?
        }
        Value::Object(o) if o.contains_key("images") => file.karpathy(o, split.unwrap_or("test"))?,
        Value::Array(items) => {
            file.no_split(split, "a list of {\"image\", \"caption\"}")?;
            file.list(items)?
        }
        _ => bail!(
            "{}: expected Karpathy's {{\"images\": [...]}}, COCO's {{\"images\", \"annotations\"}} or a list \
             of {{\"image\", \"caption\"}} objects",
            path.display()
        ),
    };
    if refs.is_empty() {
        bail!("{}: no images with captions", path.display());
    }
    Ok(refs)
}

/// A JSON reference file being read: where it is, and where its image paths start.
struct JsonFile<'a> {
    path: &'a Path,
    root: &'a Path,
}

impl JsonFile<'_> {
    fn error(&self, at: &str, problem: impl std::fmt::Display) -> anyhow::Error {
        anyhow::anyhow!("{}: {at}: {problem}", self.path.display())
    }

    fn no_split(&self, split: Option<&str>, layout: &str) -> Result<()> {
        match split {
            Some(s) => Err(self.error(
                "--split",
                format!("`{s}` cannot be selected: {layout} has no splits"),
            )),
            None => Ok(()),
        }
    }

    fn str_field<'v>(&self, obj: &'v Value, key: &str, at: &str) -> Result<&'v str> {
        match obj.get(key) {
            Some(Value::String(s)) => Ok(s),
            Some(other) => Err(self.error(at, format!("\"{key}\" must be a string, got {other}"))),
            None => Err(self.error(at, format!("missing \"{key}\""))),
        }
    }

    fn array<'v>(&self, value: Option<&'v Value>, key: &str, at: &str) -> Result<&'v Vec<Value>> {
        match value {
            Some(Value::Array(a)) => Ok(a),
            Some(other) => {
                Err(self.error(at, format!("\"{key}\" must be a list, got {}", kind(other))))
            }
            None => Err(self.error(at, format!("missing \"{key}\""))),
        }
    }

    /// Karpathy's `dataset_coco.json` / `dataset_flickr30k.json`, one split.
    fn karpathy(&self, o: &serde_json::Map<String, Value>, split: &str) -> Result<Vec<Reference>> {
        let images = self.array(o.get("images"), "images", "top level")?;
        let mut splits = BTreeSet::new();
        let mut out = Vec::new();
        for (i, img) in images.iter().enumerate() {
            let at = format!("images[{i}]");
            if !img.is_object() {
                return Err(self.error(&at, format!("expected an object, got {}", kind(img))));
            }
            let img_split = self.str_field(img, "split", &at)?;
            splits.insert(img_split.to_string());
            if img_split != split {
                continue;
            }
            let filename = self.str_field(img, "filename", &at)?;
            let mut image = self.root.to_path_buf();
            if let Some(dir) = img.get("filepath").and_then(Value::as_str) {
                image.push(dir);
            }
            image.push(filename);
            let mut captions = Vec::new();
            for (j, s) in self
                .array(img.get("sentences"), "sentences", &at)?
                .iter()
                .enumerate()
            {
                let raw = self.str_field(s, "raw", &format!("{at}.sentences[{j}]"))?;
                captions.extend(caption_lines(raw));
            }
            if captions.is_empty() {
                return Err(self.error(&at, format!("{filename} has no captions")));
            }
            let id = ["cocoid", "imgid"]
                .iter()
                .find_map(|k| img.get(*k).filter(|v| id_string(v).is_some()).cloned())
                .unwrap_or_else(|| Value::String(filename.to_string()));
            out.push(Reference {
                id,
                image: ImageData::Path(image),
                captions,
            });
        }
        if !splits.contains(split) {
            let known: Vec<_> = splits.into_iter().collect();
            bail!(
                "{}: unknown split `{split}` (the file has: {})",
                self.path.display(),
                known.join(", ")
            );
        }
        Ok(out)
    }

    /// CLIP_benchmark's `[{"image": path, "caption": [..] or ".."}]` (its flickr/mscoco JSON files).
    fn list(&self, items: &[Value]) -> Result<Vec<Reference>> {
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let at = format!("[{i}]");
            if !item.is_object() {
                return Err(self.error(&at, format!("expected an object, got {}", kind(item))));
            }
            let image = self.str_field(item, "image", &at)?;
            let captions = match item.get("caption") {
                Some(Value::String(s)) => caption_lines(s),
                Some(Value::Array(list)) => {
                    let mut captions = Vec::new();
                    for (j, c) in list.iter().enumerate() {
                        let Value::String(s) = c else {
                            return Err(self.error(
                                &format!("{at}.caption[{j}]"),
                                format!("expected a string, got {}", kind(c)),
                            ));
                        };
                        captions.extend(caption_lines(s));
                    }
                    captions
                }
                Some(other) => {
                    return Err(self.error(
                        &at,
                        format!(
                            "\"caption\" must be a string or a list of strings, got {}",
                            kind(other)
                        ),
                    ))
                }
                None => return Err(self.error(&at, "missing \"caption\"")),
            };
            if captions.is_empty() {
                return Err(self.error(&at, format!("{image} has no captions")));
            }
            out.push(Reference {
                id: item
                    .get("image_id")
                    .filter(|v| id_string(v).is_some())
                    .cloned()
                    .unwrap_or_else(|| Value::String(image.to_string())),
                image: ImageData::Path(self.root.join(image)),
                captions,
            });
        }
        Ok(out)
    }

    /// COCO's `captions_val2014.json`: `images` with `id` and `file_name`, `annotations` with `image_id`
    /// and `caption`. Images without captions are left out.
    fn coco(&self, o: &serde_json::Map<String, Value>) -> Result<Vec<Reference>> {
        let images = self.array(o.get("images"), "images", "top level")?;
        let annotations = self.array(o.get("annotations"), "annotations", "top level")?;
        let mut out = Vec::with_capacity(images.len());
        let mut by_id = HashMap::new();
        for (i, img) in images.iter().enumerate() {
            let at = format!("images[{i}]");
            let id = img
                .get("id")
                .filter(|v| id_string(v).is_some())
                .ok_or_else(|| self.error(&at, "missing \"id\" (a number or string)"))?;
            let file = self.str_field(img, "file_name", &at)?;
            by_id.insert(id_string(id).unwrap_or_default(), out.len());
            out.push(Reference {
                id: id.clone(),
                image: ImageData::Path(self.root.join(file)),
                captions: Vec::new(),
            });
        }
        for (i, ann) in annotations.iter().enumerate() {
            let at = format!("annotations[{i}]");
            let id = ann
                .get("image_id")
                .and_then(id_string)
                .ok_or_else(|| self.error(&at, "missing \"image_id\""))?;
            let caption = self.str_field(ann, "caption", &at)?;
            let Some(&index) = by_id.get(&id) else {
                return Err(self.error(&at, format!("image_id {id} is not among the images")));
            };
            out[index].captions.extend(caption_lines(caption));
        }
        let before = out.len();
        out.retain(|r| !r.captions.is_empty());
        if out.len() < before {
            tracing::warn!(
                "{}: {} images have no captions and are left out",
                self.path.display(),
                before - out.len()
            );
        }
        Ok(out)
    }
}

/// An image id as text: numbers and strings both work (`42` and `"42"` are the same image).
pub fn id_string(v: &Value) -> Option<String> {
    match v {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// A JSON value's kind, for messages.
pub fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn karpathy_split_paths_and_ids() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "k.json",
            r#"{"images": [
                {"filename": "a.jpg", "filepath": "val2014", "cocoid": 7, "split": "test",
                 "sentences": [{"raw": "A cat. "}, {"raw": "a feline"}]},
                {"filename": "b.jpg", "imgid": 3, "split": "train", "sentences": [{"raw": "x"}]},
                {"filename": "c.jpg", "split": "test", "sentences": [{"raw": "a dog"}]}
            ]}"#,
        );
        let refs = read_annotations(&f, Path::new("/data"), Some("test")).unwrap();
        assert_eq!(refs.len(), 2);
        assert_eq!(refs[0].id, 7);
        assert_eq!(refs[0].image, ImageData::Path("/data/val2014/a.jpg".into()));
        assert_eq!(refs[0].captions, ["A cat.", "a feline"]);
        assert_eq!(refs[1].id, "c.jpg");
        let err = read_annotations(&f, Path::new("/data"), Some("val")).unwrap_err();
        assert!(
            format!("{err:#}").contains("unknown split `val` (the file has: test, train)"),
            "{err:#}"
        );
    }

    #[test]
    fn list_and_coco_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let f = write(
            dir.path(),
            "l.json",
            r#"[{"image": "x/1.png", "caption": ["one", "uno"]}, {"image": "2.png", "caption": "two"}]"#,
        );
        let refs = read_annotations(&f, Path::new("r"), None).unwrap();
        assert_eq!(refs[0].image, ImageData::Path("r/x/1.png".into()));
        assert_eq!(refs[0].id, "x/1.png");
        assert_eq!(refs[1].captions, ["two"]);
        let f = write(
            dir.path(),
            "c.json",
            r#"{"images": [{"id": 1, "file_name": "1.jpg"}, {"id": 2, "file_name": "2.jpg"}],
                "annotations": [{"image_id": 2, "caption": "b"}, {"image_id": 2, "caption": "c"}]}"#,
        );
        let refs = read_annotations(&f, Path::new("r"), None).unwrap();
        assert_eq!(refs.len(), 1, "image 1 has no caption");
        assert_eq!((&refs[0].id, refs[0].captions.len()), (&Value::from(2), 2));
    }

    #[test]
    fn malformed_files_name_the_place() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            ("{\"images\": [", "not valid JSON"),
            (
                "{\"images\": [{\"filename\": \"a\", \"split\": \"test\"}]}",
                "images[0]: missing \"sentences\"",
            ),
            (
                "[{\"image\": 3, \"caption\": \"x\"}]",
                "[0]: \"image\" must be a string, got 3",
            ),
            (
                "[{\"image\": \"a\", \"caption\": [1]}]",
                "[0].caption[0]: expected a string, got a number",
            ),
            (
                "[{\"image\": \"a\", \"caption\": \"  \"}]",
                "[0]: a has no captions",
            ),
            ("{\"x\": 1}", "expected Karpathy's"),
            ("[]", "no images with captions"),
        ];
        for (i, (text, want)) in cases.iter().enumerate() {
            let f = write(dir.path(), &format!("{i}.json"), text);
            let err = format!("{:#}", read_annotations(&f, dir.path(), None).unwrap_err());
            assert!(err.contains(want), "{text}: {err}");
            assert!(err.contains(&format!("{i}.json")), "{err}");
        }
    }
}
