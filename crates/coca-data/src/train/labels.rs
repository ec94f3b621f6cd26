//! Labelled images as captions: an image-classification dataset (class folders, a CSV label column, WebDataset
//! shards with `.cls` labels) trains like an alt-text collection whose caption is a prompt template filled
//! with the class name, as the CoCa paper treats "all labels simply as text".
//!
//! **Labels.** Class folders are labelled by folder, in sorted folder order (torchvision's `ImageFolder`), and
//! the class names must be one per folder, in that order (CLIP_benchmark's `classnames.txt`). A CSV label
//! or a `.cls` file holds a class index (`0`-based decimal, CLIP_benchmark's shards) or else a class name,
//! matched exactly (the first of duplicate names wins). A label that is neither stops the loader with
//! [`DataError::Label`]: the class list does not fit the data, and training on would teach wrong captions. A
//! sample without a label (a blank CSV cell, no `.cls` file) is skipped and counted as a missing caption.
//!
//! **Templates.** Each sample gets one template per epoch, drawn uniformly from the list by a generator
//! keyed by the seed, the epoch and the sample's key ([`LabelPrompts::choose_template`]): the same sample
//! gets the same caption in a resumed run whatever the batch size, worker count or scheduling, and usually
//! another template in the next epoch.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::class_folders::{ClassFolders, ItemKind};
use crate::csv_source::CsvSource;
use crate::error::DataError;
use crate::sample::Sample;
use crate::shards::{ShardRecord, SHARD_TEXT_KEY};

use super::rng::{hash_bytes, Purpose, Rng};
use super::state::SkipKind;

/// The command-line flag that names a CSV file's label column, for messages.
pub const CSV_LABEL_FLAG: &str = "--csv-label-key";

/// The shard member holding a sample's class label (CLIP_benchmark's WebDataset layout).
pub const SHARD_LABEL_KEY: &str = "cls";

/// Fills a template (by index) with a class name.
type Fill = Arc<dyn Fn(usize, &str) -> String + Send + Sync>;

/// Class names and the templates that turn them into captions.
#[derive(Clone)]
pub struct LabelPrompts {
    classes: Vec<String>,
    templates: usize,
    fill: Fill,
}

impl std::fmt::Debug for LabelPrompts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LabelPrompts")
            .field("classes", &self.classes.len())
            .field("templates", &self.templates)
            .finish()
    }
}

impl LabelPrompts {
    /// Class names and templates, with the function that fills a template with a class name: pass
    /// `coca_zeroshot::Template::fill` for parsed templates (the very prompts zero-shot evaluation builds),
    /// or any `Fn(&T, &str) -> String`. Captions are filled when a sample is read, so memory holds the names
    /// and templates, not their product.
    ///
    /// Fails when there is no class name or no template, a class name is blank, or a template fills to a
    /// blank caption.
    pub fn new<T: Send + Sync + 'static>(
        class_names: Vec<String>,
        templates: Vec<T>,
        fill: impl Fn(&T, &str) -> String + Send + Sync + 'static,
    ) -> Result<Self, DataError> {
        let bad = |detail: String| Err(DataError::LabelPrompts { detail });
        if templates.is_empty() {
            return bad(
                "the template list is empty: give at least one, such as `a photo of a {c}.`".into(),
            );
        }
        if class_names.is_empty() {
            return bad("the class-name list is empty".into());
        }
        if let Some(i) = class_names.iter().position(|c| c.trim().is_empty()) {
            return bad(format!("class name {i} is blank"));
        }
        let count = templates.len();
        let fill: Fill = Arc::new(move |t: usize, class: &str| fill(&templates[t], class));
        if let Some(t) = (0..count).find(|&t| fill(t, &class_names[0]).trim().is_empty()) {
            return bad(format!(
                "template {t} gives a blank caption for the class `{}`",
                class_names[0]
            ));
        }
        Ok(Self {
            classes: class_names,
            templates: count,
            fill,
        })
    }

    /// The class names, in label order.
    pub fn class_names(&self) -> &[String] {
        &self.classes
    }

    /// How many templates there are.
    pub fn template_count(&self) -> usize {
        self.templates
    }

    /// The caption of class `label` with template `template`, trimmed (as every training caption is).
    pub fn prompt(&self, label: usize, template: usize) -> String {
        (self.fill)(template, &self.classes[label])
            .trim()
            .to_string()
    }

    /// The template the sample `key` gets in `epoch`: uniform over the list, keyed by `(seed, epoch, key)`
    /// only. `seed` is the loader's seed (for a mixture's later sources, the source's own seed, see
    /// [`super::TrainLoader::mixture`]).
    pub fn choose_template(&self, seed: u64, epoch: u64, key: &str) -> usize {
        let mut rng = Rng::keyed(
            seed,
            Purpose::Template,
            &[epoch, hash_bytes(key.as_bytes())],
        );
        rng.below(self.templates as u64) as usize
    }

    /// The caption of a labelled sample in `epoch`.
    pub(crate) fn caption(&self, label: usize, seed: u64, epoch: u64, key: &str) -> String {
        self.prompt(label, self.choose_template(seed, epoch, key))
    }

    /// The class of a label as stored: a class index, or else a class name.
    fn resolve(&self, text: &str) -> Result<usize, String> {
        let text = text.trim();
        let n = self.classes.len();
        if let Ok(index) = text.parse::<usize>() {
            return if index < n {
                Ok(index)
            } else {
                Err(format!(
                    "label {index} is outside the {n} class names (indices 0 to {})",
                    n - 1
                ))
            };
        }
        self.classes.iter().position(|c| c == text).ok_or_else(|| {
            format!("label {text:?} is neither a class index below {n} nor one of the class names")
        })
    }
}

/// An image-classification dataset to caption with [`LabelPrompts`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LabelledInput {
    /// One subfolder per class (ImageNet's layout); images anywhere below a class folder.
    ClassFolders(PathBuf),
    /// A CSV/TSV file with an image-path column and a label column.
    Csv {
        /// The CSV file.
        path: PathBuf,
        /// The image-path column (`--csv-img-key`).
        img_key: String,
        /// The label column ([`CSV_LABEL_FLAG`]).
        label_key: String,
        /// The field separator byte.
        separator: u8,
    },
    /// WebDataset tar shards whose samples hold an image and a `.cls` label: a path or a brace pattern.
    Shards(String),
}

impl std::fmt::Display for LabelledInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LabelledInput::ClassFolders(p) => write!(f, "class folders {}", p.display()),
            LabelledInput::Csv { path, .. } => write!(f, "labelled CSV {}", path.display()),
            LabelledInput::Shards(pattern) => write!(f, "labelled shards {pattern}"),
        }
    }
}

/// A listed sample with its class (`None` for a captioned sample), or why its record is unusable.
pub(crate) type Entry = Result<(Sample, Option<usize>), (SkipKind, String)>;

/// List class folders or a labelled CSV file whole, checking every label.
pub(crate) fn list(input: &LabelledInput, prompts: &LabelPrompts) -> Result<Vec<Entry>, DataError> {
    match input {
        LabelledInput::ClassFolders(root) => class_folder_entries(root, prompts),
        LabelledInput::Csv {
            path,
            img_key,
            label_key,
            separator,
        } => {
            let rows = CsvSource::open_columns(
                path,
                img_key,
                Some((label_key, CSV_LABEL_FLAG)),
                *separator,
            )?;
            let mut entries = Vec::new();
            for row in rows {
                entries.push(match row {
                    Ok(mut sample) => match sample.text.take() {
                        Some(text) => {
                            let label =
                                prompts.resolve(&text).map_err(|detail| DataError::Label {
                                    input: format!("{}: image `{}`", path.display(), sample.key),
                                    detail,
                                })?;
                            Ok((sample, Some(label)))
                        }
                        None => Err((
                            SkipKind::MissingCaption,
                            format!("{}: image `{}` has no label", path.display(), sample.key),
                        )),
                    },
                    Err(e) => Err((SkipKind::BadRecord, e.to_string())),
                });
            }
            Ok(entries)
        }
        LabelledInput::Shards(_) => unreachable!("shards are streamed, not listed"),
    }
}

/// Class folders as listed entries, keyed by their path below `root`.
fn class_folder_entries(root: &Path, prompts: &LabelPrompts) -> Result<Vec<Entry>, DataError> {
    let data = ClassFolders::open(root, ItemKind::Images, None)?;
    let (folders, names) = (data.classes.len(), prompts.class_names().len());
    if folders != names {
        return Err(DataError::Label {
            input: format!("class folders {}", root.display()),
            detail: format!(
                "{folders} class folders but {names} class names: give one name per folder, in sorted folder \
                 order"
            ),
        });
    }
    Ok(data
        .items
        .into_iter()
        .map(|item| {
            let label = item.label;
            Ok((item.into_sample(root), Some(label)))
        })
        .collect())
}

/// A labelled shard sample: its image and class. A missing or unreadable `.cls` is a caption error (the
/// sample is skipped); a label outside the classes is [`DataError::Label`] (the loader stops).
pub(crate) fn shard_sample(
    mut record: ShardRecord,
    prompts: &LabelPrompts,
) -> Result<(Sample, Option<usize>), DataError> {
    let name = record.label(SHARD_LABEL_KEY);
    let unusable = |detail: &str| DataError::Caption {
        path: PathBuf::from(&name),
        detail: detail.to_string(),
    };
    let text = match record.file(SHARD_LABEL_KEY) {
        Some(bytes) => std::str::from_utf8(bytes)
            .map_err(|_| unusable("the label is not UTF-8"))?
            .to_string(),
        None => return Err(unusable("no .cls label in this sample")),
    };
    let label = prompts.resolve(&text).map_err(|detail| DataError::Label {
        input: name.clone(),
        detail,
    })?;
    // The caption is the label's: a `.txt` member is not read (nor refused when unreadable).
    record.files.retain(|(ext, _)| ext != SHARD_TEXT_KEY);
    Ok((record.into_sample()?, Some(label)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompts(templates: &[&str]) -> LabelPrompts {
        let classes = ["cat", "dog", "bird"].map(String::from).to_vec();
        let templates: Vec<String> = templates.iter().map(|t| t.to_string()).collect();
        LabelPrompts::new(classes, templates, |t: &String, c: &str| {
            t.replace("{c}", c)
        })
        .unwrap()
    }

    #[test]
    fn labels_are_indices_or_names() {
        let p = prompts(&["a {c}"]);
        assert_eq!(p.resolve(" 2\n"), Ok(2));
        assert_eq!(p.resolve("dog"), Ok(1));
        let err = p.resolve("3").unwrap_err();
        assert!(
            err.contains("label 3 is outside the 3 class names (indices 0 to 2)"),
            "{err}"
        );
        let err = p.resolve("fish").unwrap_err();
        assert!(
            err.contains("\"fish\" is neither a class index below 3"),
            "{err}"
        );
        assert_eq!(p.prompt(1, 0), "a dog");
    }

    #[test]
    fn templates_are_drawn_evenly_and_reproducibly() {
        let p = prompts(&["a {c}", "the {c}", "one {c}", "my {c}"]);
        let mut counts = [0u32; 4];
        for i in 0..4000 {
            let key = format!("{i:06}");
            let t = p.choose_template(9, 0, &key);
            assert_eq!(t, p.choose_template(9, 0, &key));
            counts[t] += 1;
        }
        // Binomial(4000, 1/4): standard deviation about 27; allow 5 of them.
        assert!(
            counts.iter().all(|&c| (865..=1135).contains(&c)),
            "{counts:?}"
        );
        let changed = (0..100)
            .filter(|i| {
                let key = i.to_string();
                p.choose_template(9, 0, &key) != p.choose_template(9, 1, &key)
            })
            .count();
        assert!(
            changed > 50,
            "{changed} of 100 changed template with the epoch"
        );
    }

    #[test]
    fn unusable_names_and_templates_are_refused() {
        let fill = |t: &String, c: &str| t.replace("{c}", c);
        let names = || vec!["cat".to_string()];
        let err = LabelPrompts::new(names(), Vec::<String>::new(), fill).unwrap_err();
        assert!(err.to_string().contains("template list is empty"), "{err}");
        let err = LabelPrompts::new(Vec::new(), vec!["{c}".to_string()], fill).unwrap_err();
        assert!(
            err.to_string().contains("class-name list is empty"),
            "{err}"
        );
        let err = LabelPrompts::new(
            vec!["cat".into(), " ".into()],
            vec!["{c}".to_string()],
            fill,
        )
        .unwrap_err();
        assert!(err.to_string().contains("class name 1 is blank"), "{err}");
        let err = LabelPrompts::new(names(), vec!["{c}".into(), " ".into()], fill).unwrap_err();
        assert!(
            err.to_string().contains("template 1 gives a blank caption"),
            "{err}"
        );
    }
}
